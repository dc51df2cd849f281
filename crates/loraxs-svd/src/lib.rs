//! Truncated singular value decomposition for LoRA-XS adapter initialisation.
//!
//! LoRA-XS freezes `A = Σ_r V_rᵀ` and `B = U_r` taken from the truncated SVD of
//! each pretrained weight, and trains only a tiny `r × r` matrix between them.
//! An adapter file therefore stores only `R`: the factors are recomputed from
//! the base weights when the adapter is loaded. That only works if the same
//! weight always yields the same factors, so this crate fixes the one freedom
//! an SVD leaves open — the sign of each singular-vector pair — with a
//! documented [sign convention](SignConvention).
//!
//! The crate has no burn dependency: it works on [`faer`] matrices and on
//! plain row-major slices.
//!
//! ```
//! use loraxs_svd::{truncated_svd_row_major, SvdMethod};
//!
//! // A 3×2 matrix in row-major order (PyTorch layout: out × in).
//! let w = [3.0_f64, 0.0, 0.0, 2.0, 0.0, 0.0];
//! let svd = truncated_svd_row_major(&w, 3, 2, 1, SvdMethod::Exact).unwrap();
//! assert_eq!(svd.rank(), 1);
//! assert!((svd.singular_values()[0] - 3.0).abs() < 1e-12);
//! // The largest-magnitude entry of each left singular vector is positive.
//! assert!(svd.u()[(0, 0)] > 0.0);
//! assert!((svd.energy_kept() - 9.0 / 13.0).abs() < 1e-12);
//! ```

mod element;
mod error;
mod krylov;
mod randomized;
mod sign;
mod truncated;

pub use element::Element;
pub use error::SvdError;
pub use sign::SignConvention;
pub use truncated::{SvdMethod, TruncatedSvd, truncated_svd, truncated_svd_row_major, truncated_svd_with};

/// Re-export of the matrix library, so callers can build inputs without a
/// separate (possibly mismatched) `faer` dependency.
pub use faer;
