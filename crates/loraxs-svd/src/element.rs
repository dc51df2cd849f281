//! The real scalar types the SVD is computed in.

use faer::traits::RealField;

/// A real floating-point type faer can decompose: `f32` or `f64`.
///
/// Weights are usually stored in `f32`; computing in `f64` costs about twice
/// the time and buys accuracy on ill-conditioned matrices.
pub trait Element: RealField + Copy + Send + Sync + core::fmt::Debug + 'static {
    /// Converts to `f64` for error metrics.
    fn to_f64(self) -> f64;
    /// Converts from `f64`.
    fn from_f64(value: f64) -> Self;
    /// True unless the value is NaN or infinite.
    fn is_finite_value(self) -> bool;
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn is_finite_value(self) -> bool {
        self.is_finite()
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(value: f64) -> Self {
        value
    }
    fn is_finite_value(self) -> bool {
        self.is_finite()
    }
}
