//! The truncated SVD itself: input checks, method choice, truncation, signs
//! and error metrics.

use faer::{Mat, MatRef};

use crate::{Element, SignConvention, SvdError, krylov, randomized};

/// Which algorithm computes the top-`r` singular triplets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SvdMethod {
    /// [`SvdMethod::Exact`] up to 1,024 on the short side (every encoder
    /// up to RoBERTa-large) or for large ranks, [`SvdMethod::Krylov`]
    /// beyond (decoder widths, where the exact SVD costs seconds per
    /// module). Krylov is 2–5× faster from a few hundred columns on
    /// (`docs/results/bench-*.md`) but restarted Lanczos can skip a
    /// singular value inside a cluster (all-MiniLM-L6-v2, layer 0 `value`,
    /// rank 25: σ21 1.7153 where the exact 21st is 1.7071) and, on f32
    /// weights at rank 20, ran over 15 minutes without returning.
    #[default]
    Auto,
    /// The full thin SVD (faer's divide and conquer), then truncation.
    /// Accurate to working precision; `O(m n min(m, n))`.
    Exact,
    /// Randomized range finder (Halko, Martinsson & Tropp 2011) with
    /// QR-orthonormalised power iterations, as in scikit-learn's
    /// `randomized_svd`, which the LoRA-XS paper's code uses.
    /// `O(m n (r + oversamples) (2 power_iterations + 2))`.
    Randomized {
        /// Extra sampled directions beyond the rank.
        oversamples: usize,
        /// Power iterations; more sharpen a slowly decaying spectrum.
        power_iterations: usize,
        /// Seed of the Gaussian test matrix (a fixed seed keeps factors
        /// reproducible).
        seed: u64,
    },
    /// Restarted Lanczos bidiagonalisation (faer's matrix-free
    /// `partial_svd`), converged to working precision on the top `r`
    /// triplets. Falls back to [`SvdMethod::Exact`] when the Krylov subspace
    /// would not be smaller than the matrix, or when the triplets have not
    /// converged after 30 restarts (both recorded by
    /// [`TruncatedSvd::method`]). See [`SvdMethod::Auto`] for its failures
    /// on encoder weights.
    Krylov,
}

impl SvdMethod {
    /// The randomized method with scikit-learn's defaults for a small rank
    /// (10 oversamples, 4 power iterations) and seed 0.
    pub const fn randomized() -> Self {
        SvdMethod::Randomized {
            oversamples: 10,
            power_iterations: 4,
            seed: 0,
        }
    }

    /// A stable, human-readable name with all parameters, written into
    /// adapter files so a reader knows how factors were derived.
    pub fn name(&self) -> String {
        match self {
            SvdMethod::Auto => "auto".into(),
            SvdMethod::Exact => "exact".into(),
            SvdMethod::Krylov => "krylov".into(),
            SvdMethod::Randomized {
                oversamples,
                power_iterations,
                seed,
            } => format!(
                "randomized(oversamples={oversamples},power_iterations={power_iterations},seed={seed})"
            ),
        }
    }

    /// Parses a name produced by [`SvdMethod::name`]; `"randomized"` alone
    /// means [`SvdMethod::randomized`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => return Some(SvdMethod::Auto),
            "exact" => return Some(SvdMethod::Exact),
            "krylov" => return Some(SvdMethod::Krylov),
            "randomized" => return Some(SvdMethod::randomized()),
            _ => {}
        }
        let inner = name.strip_prefix("randomized(")?.strip_suffix(')')?;
        let (mut p, mut q, mut s) = (None, None, None);
        for part in inner.split(',') {
            let (key, value) = part.split_once('=')?;
            match key.trim() {
                "oversamples" => p = value.trim().parse().ok(),
                "power_iterations" => q = value.trim().parse().ok(),
                "seed" => s = value.trim().parse().ok(),
                _ => return None,
            }
        }
        Some(SvdMethod::Randomized {
            oversamples: p?,
            power_iterations: q?,
            seed: s?,
        })
    }

    /// The concrete method [`SvdMethod::Auto`] picks for an `m×n` matrix at
    /// rank `r`; other methods resolve to themselves.
    ///
    /// Exact is chosen up to 1,024 on the short side, or when the rank is
    /// over an eighth of it (there the Krylov subspace is nearly the whole
    /// matrix); Krylov otherwise. Auto never picks the randomized method:
    /// it is faster still, but its accuracy depends on how fast the
    /// spectrum decays.
    pub fn resolve(&self, rows: usize, cols: usize, rank: usize) -> SvdMethod {
        match self {
            SvdMethod::Auto => {
                let k = rows.min(cols);
                if k <= 1024 || rank * 8 > k {
                    SvdMethod::Exact
                } else {
                    SvdMethod::Krylov
                }
            }
            other => *other,
        }
    }
}

/// The top-`r` singular triplets of a matrix `W ≈ U diag(s) Vᵀ`, sorted by
/// decreasing singular value, with signs fixed by a [`SignConvention`].
#[derive(Debug, Clone)]
pub struct TruncatedSvd<T: Element> {
    u: Mat<T>,
    s: Vec<T>,
    v: Mat<T>,
    frobenius_sq: f64,
    method: SvdMethod,
    sign: SignConvention,
}

impl<T: Element> TruncatedSvd<T> {
    /// The rank `r` kept.
    pub fn rank(&self) -> usize {
        self.s.len()
    }

    /// Left singular vectors, `m × r` (the LoRA-XS `B`).
    pub fn u(&self) -> MatRef<'_, T> {
        self.u.as_ref()
    }

    /// Right singular vectors, `n × r`.
    pub fn v(&self) -> MatRef<'_, T> {
        self.v.as_ref()
    }

    /// Singular values, non-increasing.
    pub fn singular_values(&self) -> &[T] {
        &self.s
    }

    /// The concrete method that produced the factors ([`SvdMethod::Auto`]
    /// resolved, Krylov fallbacks recorded as [`SvdMethod::Exact`]).
    pub fn method(&self) -> SvdMethod {
        self.method
    }

    /// The sign convention the factors follow.
    pub fn sign_convention(&self) -> SignConvention {
        self.sign
    }

    /// Fraction of the spectral energy kept: `Σ_{i≤r} σ_i² / ‖W‖_F²`
    /// (1 for a zero matrix).
    pub fn energy_kept(&self) -> f64 {
        if self.frobenius_sq == 0.0 {
            return 1.0;
        }
        let kept: f64 = self.s.iter().map(|x| x.to_f64().powi(2)).sum();
        (kept / self.frobenius_sq).min(1.0)
    }

    /// Relative reconstruction error `‖W − U_r Σ_r V_rᵀ‖_F / ‖W‖_F`,
    /// computed from the spectrum (0 for a zero matrix).
    pub fn relative_error(&self) -> f64 {
        (1.0 - self.energy_kept()).max(0.0).sqrt()
    }

    /// `A = Σ_r V_rᵀ` as an `r × n` row-major buffer (LoRA-XS layout).
    pub fn a_row_major(&self) -> Vec<T> {
        let (n, r) = (self.v.nrows(), self.rank());
        let mut out = Vec::with_capacity(r * n);
        for i in 0..r {
            let s = self.s[i];
            out.extend((0..n).map(|j| s * self.v[(j, i)]));
        }
        out
    }

    /// `B = U_r` as an `m × r` row-major buffer (LoRA-XS layout).
    pub fn b_row_major(&self) -> Vec<T> {
        let (m, r) = (self.u.nrows(), self.rank());
        let mut out = Vec::with_capacity(m * r);
        for i in 0..m {
            out.extend((0..r).map(|j| self.u[(i, j)]));
        }
        out
    }

    /// `U_r Σ_r V_rᵀ`, the best rank-`r` approximation (for checks).
    pub fn reconstruct(&self) -> Mat<T> {
        let (m, n, r) = (self.u.nrows(), self.v.nrows(), self.rank());
        let us = Mat::from_fn(m, r, |i, j| self.u[(i, j)] * self.s[j]);
        let mut out = Mat::zeros(m, n);
        faer::linalg::matmul::matmul(
            out.as_mut(),
            faer::Accum::Replace,
            us.as_ref(),
            self.v.as_ref().transpose(),
            T::from_f64(1.0),
            faer::get_global_parallelism(),
        );
        out
    }
}

/// Truncated SVD of `matrix` to `rank` with the default sign convention.
pub fn truncated_svd<T: Element>(
    matrix: MatRef<'_, T>,
    rank: usize,
    method: SvdMethod,
) -> Result<TruncatedSvd<T>, SvdError> {
    truncated_svd_with(matrix, rank, method, SignConvention::default())
}

/// Truncated SVD of a row-major `rows × cols` buffer (the PyTorch weight
/// layout) with the default sign convention.
pub fn truncated_svd_row_major<T: Element>(
    data: &[T],
    rows: usize,
    cols: usize,
    rank: usize,
    method: SvdMethod,
) -> Result<TruncatedSvd<T>, SvdError> {
    if data.len() != rows * cols {
        return Err(SvdError::BufferLength {
            len: data.len(),
            rows,
            cols,
        });
    }
    let matrix = MatRef::from_row_major_slice(data, rows, cols);
    truncated_svd(matrix, rank, method)
}

/// Truncated SVD of `matrix` to `rank`, signs fixed by `sign`.
pub fn truncated_svd_with<T: Element>(
    matrix: MatRef<'_, T>,
    rank: usize,
    method: SvdMethod,
    sign: SignConvention,
) -> Result<TruncatedSvd<T>, SvdError> {
    let (m, n) = matrix.shape();
    let frobenius_sq = check_input(matrix, rank)?;
    let method = method.resolve(m, n, rank);

    let (mut u, s, mut v, method) = match method {
        SvdMethod::Exact => {
            let (u, s, v) = exact(matrix)?;
            (u, s, v, SvdMethod::Exact)
        }
        SvdMethod::Randomized {
            oversamples,
            power_iterations,
            seed,
        } => {
            let (u, s, v) = randomized::top_triplets(matrix, rank, oversamples, power_iterations, seed)?;
            (u, s, v, method)
        }
        SvdMethod::Krylov => match krylov::top_triplets(matrix, rank, frobenius_sq.sqrt())? {
            Some((u, s, v)) => (u, s, v, SvdMethod::Krylov),
            None => {
                let (u, s, v) = exact(matrix)?;
                (u, s, v, SvdMethod::Exact)
            }
        },
        SvdMethod::Auto => unreachable!("resolve() never returns Auto"),
    };

    // Keep the r largest, in non-increasing order, whatever order the
    // solver returned them in.
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].to_f64().total_cmp(&s[a].to_f64()).then(a.cmp(&b)));
    order.truncate(rank);
    if order.iter().enumerate().any(|(i, &j)| i != j) || u.ncols() != rank {
        u = Mat::from_fn(m, rank, |i, j| u[(i, order[j])]);
        v = Mat::from_fn(n, rank, |i, j| v[(i, order[j])]);
    }
    let s: Vec<T> = order.iter().map(|&j| s[j]).collect();

    sign.apply(u.as_mut(), v.as_mut());
    Ok(TruncatedSvd {
        u,
        s,
        v,
        frobenius_sq,
        method,
        sign,
    })
}

/// Validates shape, rank and values; returns `‖W‖_F²` accumulated in `f64`.
fn check_input<T: Element>(matrix: MatRef<'_, T>, rank: usize) -> Result<f64, SvdError> {
    let (rows, cols) = matrix.shape();
    if rows == 0 || cols == 0 {
        return Err(SvdError::Empty { rows, cols });
    }
    if rank == 0 {
        return Err(SvdError::ZeroRank);
    }
    let max = rows.min(cols);
    if rank > max {
        return Err(SvdError::RankTooLarge {
            rank,
            max,
            rows,
            cols,
        });
    }
    let mut sum = 0.0f64;
    for row in 0..rows {
        for col in 0..cols {
            let value = matrix[(row, col)];
            if !value.is_finite_value() {
                return Err(SvdError::NonFinite {
                    row,
                    col,
                    value: value.to_f64(),
                });
            }
            sum += value.to_f64().powi(2);
        }
    }
    Ok(sum)
}

/// Left vectors (columns), singular values, right vectors (columns).
pub(crate) type Triplets<T> = (Mat<T>, Vec<T>, Mat<T>);

/// Thin SVD: `U` is m×k, `V` n×k, `k = min(m, n)`.
pub(crate) fn exact<T: Element>(matrix: MatRef<'_, T>) -> Result<Triplets<T>, SvdError> {
    let svd = matrix
        .thin_svd()
        .map_err(|_| SvdError::NoConvergence { method: "exact" })?;
    let s = svd.S().column_vector().iter().copied().collect();
    Ok((svd.U().to_owned(), s, svd.V().to_owned()))
}
