//! Text to token ids: a Hugging Face `tokenizer.json` (through the
//! `tokenizers` crate, without network features) with truncation to a
//! maximum length and dynamic padding into [`TokenBatch`]es for encoders,
//! and [`CausalTokenizer`] for decoders (stop tokens, Jinja chat templates
//! through `minijinja`).
//!
//! It sits below both the models (which turn a batch into tensors) and the
//! data crate (which tokenises a dataset once and batches it many times),
//! so neither drags in the other: parsing a TSV needs no tensor library.
//!
//! ```
//! use loraxs_tokenizer::{TokenBatch, TokenSequence};
//! let a = TokenSequence { ids: vec![101, 7, 102], type_ids: vec![0, 0, 0] };
//! let b = TokenSequence { ids: vec![101, 102], type_ids: vec![0, 0] };
//! let batch = TokenBatch::pad(&[&a, &b], 0);
//! assert_eq!((batch.batch, batch.seq_len), (2, 3));
//! assert_eq!(batch.input_ids, [101, 7, 102, 101, 102, 0]);
//! assert_eq!(batch.attention_mask, [1, 1, 1, 1, 1, 0]);
//! ```

#![warn(missing_docs)]

mod causal;
mod tokenizer;

use std::path::PathBuf;

pub use causal::{CausalTokenizer, ChatMessage, SpecialTokens, render_chat};
pub use tokenizer::{DEFAULT_MAX_LENGTH, TextTokenizer, TokenBatch, TokenSequence};

/// What went wrong loading a tokenizer or tokenising text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The tokenizer file cannot be used, or tokenisation failed.
    #[error("{}: {reason}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Input that cannot be tokenised.
    #[error("{0}")]
    Input(String),
}

/// Result alias of this crate.
pub type Result<T, E = TokenizerError> = core::result::Result<T, E>;
