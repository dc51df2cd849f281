//! Errors of injection, merging and adapter files.

use std::path::PathBuf;

/// Everything that can go wrong building, merging, saving or loading an
/// adapter. Each variant names the module, tensor, field or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// A configuration value is out of range.
    #[error("invalid adapter config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A target pattern selects no module of the model.
    #[error("target `{pattern}` matches no linear layer; available: {}", available.join(", "))]
    TargetNotFound {
        /// The pattern.
        pattern: String,
        /// Every adaptable linear layer of the model.
        available: Vec<String>,
    },
    /// A module was targeted that already carries an adapter.
    #[error("module `{module}` already has a {method} adapter")]
    AlreadyAdapted {
        /// The module.
        module: String,
        /// The method it carries.
        method: &'static str,
    },
    /// The rank exceeds what the module's shape allows.
    #[error("module `{module}`: rank {rank} exceeds min(out, in) = {max}")]
    RankTooLarge {
        /// The module.
        module: String,
        /// The requested rank.
        rank: usize,
        /// `min(out, in)`.
        max: usize,
    },
    /// The SVD of a module's weight failed.
    #[error("module `{module}`: {source}")]
    Svd {
        /// The module.
        module: String,
        /// The SVD error.
        source: loraxs_svd::SvdError,
    },
    /// The operation needs an unmerged adapter.
    #[error("module `{module}` is merged; unmerge it first")]
    Merged {
        /// The module.
        module: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file (truncated, corrupt).
    #[error("{}: not a valid adapter file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A metadata field is missing or unreadable.
    #[error("{}: metadata field `{field}` {reason}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The adapter was trained on other base weights.
    #[error(
        "{}: adapter was made for base weights with fingerprint {expected}, this model has {found}",
        path.display()
    )]
    BaseMismatch {
        /// The file.
        path: PathBuf,
        /// Fingerprint stored in the file.
        expected: String,
        /// Fingerprint of the model it is being loaded into.
        found: String,
    },
    /// The file lacks a tensor the model needs.
    #[error("{}: tensor `{tensor}` is missing", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// The file holds a tensor the model has no place for.
    #[error("{}: unexpected tensor `{tensor}` (no such module in this model)", path.display())]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// A tensor has the wrong shape.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has an unsupported element type.
    #[error("{}: tensor `{tensor}` has dtype {dtype}, expected F32, F16 or BF16", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor value is NaN or infinite.
    #[error("{}: tensor `{tensor}` holds a non-finite value", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// An adapter cannot join an [`AdapterBank`](crate::AdapterBank): it
    /// was made for another base model, rank, method or target set.
    #[error("{}: cannot join the adapter bank: {field} {reason}", path.display())]
    BankMismatch {
        /// The adapter file.
        path: PathBuf,
        /// What differs (`method`, `rank`, `targets`, …).
        field: String,
        /// The adapter's value and the bank's.
        reason: String,
    },
    /// No adapter of this name is in the bank.
    #[error("no adapter named `{name}` is loaded")]
    UnknownAdapter {
        /// The name asked for.
        name: String,
    },
    /// An adapter of this name is already in the bank.
    #[error("an adapter named `{name}` is already loaded")]
    DuplicateAdapter {
        /// The name.
        name: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = AdapterError> = core::result::Result<T, E>;
