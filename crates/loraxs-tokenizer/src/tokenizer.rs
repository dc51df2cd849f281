//! Tokenisation with Hugging Face `tokenizer.json` (the `tokenizers` crate,
//! without network features).

use std::path::{Path, PathBuf};

use tokenizers::{EncodeInput, Tokenizer, TruncationParams, TruncationStrategy};

use crate::{Result, TokenizerError};

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
    pad_id: u32,
}

/// One tokenised sequence, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSequence {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
}

impl TokenBatch {
    /// Pads `sequences` to the longest with `pad_id` (segment 0, mask 0).
    pub fn pad(sequences: &[&TokenSequence], pad_id: u32) -> Self {
        let seq_len = sequences.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let n = sequences.len();
        let mut batch = TokenBatch {
            batch: n,
            seq_len,
            input_ids: Vec::with_capacity(n * seq_len),
            token_type_ids: Vec::with_capacity(n * seq_len),
            attention_mask: Vec::with_capacity(n * seq_len),
        };
        for s in sequences {
            let pad = seq_len - s.ids.len();
            batch
                .input_ids
                .extend(s.ids.iter().copied().chain(std::iter::repeat_n(pad_id, pad)));
            batch
                .token_type_ids
                .extend(s.type_ids.iter().copied().chain(std::iter::repeat_n(0, pad)));
            batch
                .attention_mask
                .extend(std::iter::repeat_n(1, s.ids.len()).chain(std::iter::repeat_n(0, pad)));
        }
        batch
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, replacing its own padding and truncation
    /// settings with dynamic padding and truncation to `max_length`.
    pub fn from_file(path: impl AsRef<Path>, max_length: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bad = |reason: String| TokenizerError::Tokenizer {
            path: path.clone(),
            reason,
        };
        if !path.exists() {
            return Err(TokenizerError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            });
        }
        let mut inner = Tokenizer::from_file(&path).map_err(|e| bad(e.to_string()))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t)))
            .ok_or_else(|| bad("no padding token ([PAD] or <pad>) in the vocabulary".into()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| bad(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            path,
            max_length,
            pad_id,
        })
    }

    /// The maximum length in tokens, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenises single sentences or sentence pairs (`(first, second)`),
    /// padded to the longest.
    pub fn encode(&self, texts: &[(&str, Option<&str>)]) -> Result<TokenBatch> {
        if texts.is_empty() {
            return Err(TokenizerError::Input("cannot tokenise an empty batch".into()));
        }
        let sequences = self.encode_each(texts)?;
        Ok(TokenBatch::pad(
            &sequences.iter().collect::<Vec<_>>(),
            self.pad_id,
        ))
    }

    /// Tokenises each text on its own, unpadded (for datasets tokenised
    /// once and batched many times).
    pub fn encode_each(&self, texts: &[(&str, Option<&str>)]) -> Result<Vec<TokenSequence>> {
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
            .map_err(|e| TokenizerError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(encodings
            .iter()
            .map(|e| TokenSequence {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }
}
