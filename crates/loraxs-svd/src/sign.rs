//! The deterministic sign convention for singular-vector pairs.
//!
//! An SVD is unique only up to flipping the sign of a pair `(u_i, v_i)`
//! together (for distinct singular values). Solvers make that choice
//! differently depending on the algorithm, thread count and SIMD width, so
//! without a convention two machines would derive different LoRA-XS factors
//! from the same weight, and an adapter holding only `R` would not transfer.

use faer::MatMut;

use crate::Element;

/// How the sign of each singular-vector pair is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SignConvention {
    /// The entry of largest magnitude in each left singular vector `u_i` is
    /// positive; the first such index wins a tie. `v_i` is flipped with it.
    #[default]
    MaxAbsLeftPositive,
}

impl SignConvention {
    /// A stable name, written into adapter files.
    pub fn name(self) -> &'static str {
        match self {
            SignConvention::MaxAbsLeftPositive => "max-abs-left-positive",
        }
    }

    /// Parses the name written by [`SignConvention::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "max-abs-left-positive" => Some(SignConvention::MaxAbsLeftPositive),
            _ => None,
        }
    }

    /// Flips column pairs of `u` (m×k) and `v` (n×k) in place so that they
    /// follow this convention.
    pub fn apply<T: Element>(self, mut u: MatMut<'_, T>, mut v: MatMut<'_, T>) {
        match self {
            SignConvention::MaxAbsLeftPositive => {
                for j in 0..u.ncols() {
                    let mut best = T::from_f64(0.0);
                    let mut best_abs = -1.0f64;
                    for i in 0..u.nrows() {
                        let x = u[(i, j)];
                        let a = x.to_f64().abs();
                        if a > best_abs {
                            best_abs = a;
                            best = x;
                        }
                    }
                    if best.to_f64() < 0.0 {
                        for i in 0..u.nrows() {
                            u[(i, j)] = -u[(i, j)];
                        }
                        for i in 0..v.nrows() {
                            v[(i, j)] = -v[(i, j)];
                        }
                    }
                }
            }
        }
    }
}
