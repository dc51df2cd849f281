//! Errors of the truncated SVD.

/// Why a truncated SVD could not be computed.
///
/// Every invalid input is reported as an error, never as a panic, so that a
/// caller injecting adapters into hundreds of modules can say which module
/// failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SvdError {
    /// The matrix has no rows or no columns.
    #[error("cannot decompose an empty {rows}×{cols} matrix")]
    Empty {
        /// Number of rows.
        rows: usize,
        /// Number of columns.
        cols: usize,
    },
    /// A rank of zero was requested.
    #[error("rank must be at least 1")]
    ZeroRank,
    /// The rank exceeds `min(rows, cols)`.
    #[error("rank {rank} exceeds min(rows, cols) = {max} of a {rows}×{cols} matrix")]
    RankTooLarge {
        /// The requested rank.
        rank: usize,
        /// The largest possible rank, `min(rows, cols)`.
        max: usize,
        /// Number of rows.
        rows: usize,
        /// Number of columns.
        cols: usize,
    },
    /// The matrix holds a NaN or an infinity.
    #[error("matrix entry ({row}, {col}) is not finite ({value})")]
    NonFinite {
        /// Row of the first offending entry.
        row: usize,
        /// Column of the first offending entry.
        col: usize,
        /// The value, as `f64`.
        value: f64,
    },
    /// A row-major buffer does not have `rows × cols` elements.
    #[error("buffer holds {len} values, expected {rows}×{cols} = {}", rows * cols)]
    BufferLength {
        /// Length of the buffer.
        len: usize,
        /// Number of rows.
        rows: usize,
        /// Number of columns.
        cols: usize,
    },
    /// The underlying solver did not converge.
    #[error("the {method} SVD did not converge")]
    NoConvergence {
        /// The method that failed.
        method: &'static str,
    },
}
