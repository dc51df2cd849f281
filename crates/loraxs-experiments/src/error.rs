//! Errors of planning, running and reporting experiments.

use std::path::PathBuf;

/// What went wrong; each variant names the file, line, field or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExperimentError {
    /// A profile is unreadable, or a value in it (or a flag overriding it)
    /// is unusable.
    #[error("profile {profile}: {reason}")]
    Profile {
        /// The profile's name or file.
        profile: String,
        /// What is wrong.
        reason: String,
    },
    /// A results file cannot be read or written.
    #[error("{}: {reason}", path.display())]
    Results {
        /// The file, with `:line` where one line is at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading data failed.
    #[error(transparent)]
    Data(#[from] loraxs_data::DataError),
    /// Fetching a model or data set failed.
    #[error(transparent)]
    Fetch(#[from] loraxs_models::fetch::FetchError),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] loraxs_models::ModelError),
    /// The adapter configuration is invalid.
    #[error(transparent)]
    Adapter(#[from] loraxs::AdapterError),
    /// A run failed.
    #[error("{run}: {source}")]
    Run {
        /// The run's key.
        run: String,
        /// Why.
        source: loraxs_train::TrainError,
    },
    /// The backend is unknown or not compiled in.
    #[error("{0}")]
    Backend(String),
    /// Writing a table failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = ExperimentError> = core::result::Result<T, E>;
