//! Errors of a training run.

use std::path::PathBuf;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] loraxs_data::DataError),
    /// A metric could not be computed (e.g. an empty dev set).
    #[error("evaluation: {0}")]
    Metric(#[from] loraxs_data::TooFewExamples),
    /// Loading the model or tokenising failed.
    #[error(transparent)]
    Model(#[from] loraxs_models::ModelError),
    /// Tokenising failed.
    #[error(transparent)]
    Tokenizer(#[from] loraxs_tokenizer::TokenizerError),
    /// Injecting, saving or loading the adapter failed.
    #[error(transparent)]
    Adapter(#[from] loraxs::AdapterError),
    /// The loss became NaN or infinite.
    #[error(
        "the loss is {loss} at epoch {epoch}, step {step} (adapter lr {lr:.3e}, head lr {head_lr:.3e}): \
         the run diverged; lower the learning rates"
    )]
    NonFinite {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based global step.
        step: usize,
        /// Adapter learning rate at that step.
        lr: f64,
        /// Head learning rate at that step.
        head_lr: f64,
        /// The loss value.
        loss: f64,
    },
    /// Data-parallel training failed: bad settings, burn's collective, or
    /// this peer.
    #[error("data-parallel training: {0}")]
    Parallel(String),
    /// Data-parallel training stopped because another peer failed (that
    /// peer reports why).
    #[error("data-parallel training: {0}")]
    PeerFailed(String),
    /// A checkpoint could not be written or read.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}
