//! Randomized SVD (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.1).

use faer::{Accum, Mat, MatRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::truncated::Triplets;
use crate::{Element, SvdError};

/// Approximates the top `rank + oversamples` singular triplets of `a`.
///
/// The Gaussian test matrix comes from ChaCha8 seeded with `seed`, so the
/// result depends only on the input, the parameters and the floating-point
/// arithmetic of the machine.
pub(crate) fn top_triplets<T: Element>(
    a: MatRef<'_, T>,
    rank: usize,
    oversamples: usize,
    power_iterations: usize,
    seed: u64,
) -> Result<Triplets<T>, SvdError> {
    let (m, n) = a.shape();
    let l = (rank + oversamples).min(m.min(n));

    let omega = gaussian::<T>(n, l, seed);
    let mut q = orthonormal_basis(product(a, omega.as_ref()).as_ref());
    for _ in 0..power_iterations {
        // Re-orthonormalise after each application: without it the columns
        // collapse onto the top singular vector in floating point.
        let z = orthonormal_basis(product(a.transpose(), q.as_ref()).as_ref());
        q = orthonormal_basis(product(a, z.as_ref()).as_ref());
    }

    // Project onto the range and decompose the small l×n matrix exactly.
    let small = product(q.as_ref().transpose(), a);
    let (u_small, s, v) = crate::truncated::exact(small.as_ref())
        .map_err(|_| SvdError::NoConvergence { method: "randomized" })?;
    let u = product(q.as_ref(), u_small.as_ref());
    Ok((u, s, v))
}

fn product<T: Element>(lhs: MatRef<'_, T>, rhs: MatRef<'_, T>) -> Mat<T> {
    let mut out = Mat::zeros(lhs.nrows(), rhs.ncols());
    faer::linalg::matmul::matmul(
        out.as_mut(),
        Accum::Replace,
        lhs,
        rhs,
        T::from_f64(1.0),
        faer::get_global_parallelism(),
    );
    out
}

fn orthonormal_basis<T: Element>(y: MatRef<'_, T>) -> Mat<T> {
    y.qr().compute_thin_Q()
}

/// A `rows × cols` matrix of standard normal values (Box–Muller).
fn gaussian<T: Element>(rows: usize, cols: usize, seed: u64) -> Mat<T> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(rows * cols + 1);
    while values.len() < rows * cols {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        values.push(radius * angle.cos());
        values.push(radius * angle.sin());
    }
    Mat::from_fn(rows, cols, |i, j| T::from_f64(values[j * rows + i]))
}
