//! Errors of reading data files (GLUE TSVs, math JSON).

use std::path::PathBuf;

/// Why a task could not be read. Row problems name the file and the
/// 1-based line; nothing is dropped silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// No data folder was given.
    #[error(
        "no data folder: pass --data-dir or set LORAXS_DATA_DIR (layout <dir>/glue/<TASK>/{{train,dev}}.tsv)"
    )]
    NoDataDir,
    /// A task's file is not there.
    #[error("{task}: {} not found (expected the original GLUE TSV)", path.display())]
    MissingFile {
        /// The task.
        task: &'static str,
        /// The file looked for.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The header lacks a needed column.
    #[error("{}:1: header has no column `{column}` (found: {found})", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: &'static str,
        /// The header as read.
        found: String,
    },
    /// A row has the wrong number of tab-separated fields.
    #[error("{}:{line}: expected {expected} tab-separated fields, found {found}", path.display())]
    FieldCount {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Fields expected.
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A label is not one of the task's labels.
    #[error("{}:{line}: label `{value}` is not one of {expected}", path.display())]
    Label {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The value found.
        value: String,
        /// The allowed values.
        expected: String,
    },
    /// A score is not a number in range.
    #[error("{}:{line}: score `{value}` is not a number in [0, 5]", path.display())]
    Score {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The value found.
        value: String,
    },
    /// The file is not UTF-8.
    #[error("{}:{line}: not valid UTF-8", path.display())]
    Encoding {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A row (a JSON line) is malformed or lacks what it must hold.
    #[error("{}:{line}: {reason}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// An element of a JSON-array file is malformed.
    #[error("{}: element {index}: {reason}", path.display())]
    Element {
        /// The file.
        path: PathBuf,
        /// 1-based position in the array.
        index: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The file has no data rows.
    #[error("{}: no data rows", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = core::result::Result<T, E>;
