//! Errors of model loading and tokenisation.

use std::path::PathBuf;

/// What went wrong loading a model folder or tokenising text. Each variant
/// names the file and, where it applies, the tensor or field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A model folder lacks one of its files.
    #[error("{}: missing {file} (a model folder needs config.json, model.safetensors and tokenizer.json)", dir.display())]
    MissingFile {
        /// The folder.
        dir: PathBuf,
        /// The missing file name.
        file: &'static str,
    },
    /// `config.json` is not valid JSON or lacks a required field.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The safetensors file cannot be parsed.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A GGUF file is malformed, or lacks a metadata key or tensor the
    /// model needs: the key or tensor is named.
    #[error("{}: {reason}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the metadata key or tensor.
        reason: String,
    },
    /// Tensors are missing, mis-shaped or of an unusable type; every
    /// problem is listed.
    #[error("{}: {} problem(s) with the weights:\n  {}", path.display(), problems.len(), problems.join("\n  "))]
    Tensors {
        /// The file.
        path: PathBuf,
        /// One line per problem, naming the tensor and the expected shape.
        problems: Vec<String>,
    },
    /// The tokenizer file cannot be used, or tokenisation failed.
    #[cfg(feature = "burn")]
    #[error(transparent)]
    Tokenizer(#[from] loraxs_tokenizer::TokenizerError),
    /// Input the model cannot take.
    #[error("{0}")]
    Input(String),
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = core::result::Result<T, E>;
