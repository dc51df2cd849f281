//! Tokenisation with Hugging Face `tokenizer.json` (the `tokenizers` crate,
//! without network features).

use std::path::{Path, PathBuf};

use tokenizers::{EncodeInput, PaddingParams, Tokenizer, TruncationParams, TruncationStrategy};

use crate::{ModelError, Result};

/// The default maximum sequence length (the paper's GLUE setting).
pub const DEFAULT_MAX_LENGTH: usize = 128;

/// A tokenised batch padded to its longest sequence, row-major
/// `[batch, seq_len]` buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Number of sequences.
    pub batch: usize,
    /// Length after padding.
    pub seq_len: usize,
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Segment ids (0 for the first sentence, 1 for the second).
    pub token_type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
}

/// A tokenizer that truncates to `max_length` (longest-first for pairs)
/// and pads each batch to its longest member.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, replacing its own padding and truncation
    /// settings with dynamic padding and truncation to `max_length`.
    pub fn from_file(path: impl AsRef<Path>, max_length: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bad = |reason: String| ModelError::Tokenizer {
            path: path.clone(),
            reason,
        };
        if !path.exists() {
            return Err(ModelError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            });
        }
        let mut inner = Tokenizer::from_file(&path).map_err(|e| bad(e.to_string()))?;
        let pad_id = inner.get_padding().map_or(0, |p| p.pad_id);
        let pad_token = inner
            .get_padding()
            .map_or("[PAD]".to_string(), |p| p.pad_token.clone());
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| bad(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Self {
            inner,
            path,
            max_length,
        })
    }

    /// The maximum length in tokens, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenises single sentences or sentence pairs (`(first, second)`).
    pub fn encode(&self, texts: &[(&str, Option<&str>)]) -> Result<TokenBatch> {
        if texts.is_empty() {
            return Err(ModelError::Input("cannot tokenise an empty batch".into()));
        }
        let inputs: Vec<EncodeInput> = texts
            .iter()
            .map(|&(a, b)| match b {
                Some(b) => (a, b).into(),
                None => a.into(),
            })
            .collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let seq_len = encodings[0].get_ids().len();
        let mut batch = TokenBatch {
            batch: encodings.len(),
            seq_len,
            input_ids: Vec::with_capacity(encodings.len() * seq_len),
            token_type_ids: Vec::with_capacity(encodings.len() * seq_len),
            attention_mask: Vec::with_capacity(encodings.len() * seq_len),
        };
        for e in &encodings {
            batch.input_ids.extend_from_slice(e.get_ids());
            batch.token_type_ids.extend_from_slice(e.get_type_ids());
            batch.attention_mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(batch)
    }
}
