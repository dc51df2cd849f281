//! Restarted Lanczos bidiagonalisation through faer's matrix-free
//! `partial_svd`.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::matrix_free::eigen::{PartialEigenParams, partial_svd, partial_svd_scratch};
use faer::{Col, Mat, MatRef};

use crate::truncated::Triplets;
use crate::{Element, SvdError};

/// faer's smallest Krylov subspace dimension.
const MIN_DIM: usize = 32;

/// Restarts before giving up (faer's default is 1,000): slow convergence
/// ends in the exact SVD instead. It does not bound every case: on
/// all-MiniLM-L6-v2's f32 weights at rank 20 (layer 0
/// `attention.output.dense`) faer 0.24.4's `iterate_lanczos` ran for over
/// 15 minutes without returning (perf: inside one Lanczos iteration), which
/// is why [`crate::SvdMethod::Auto`] keeps encoder widths on the exact SVD.
const MAX_RESTARTS: usize = 30;

/// The top `rank` triplets of `a`, or `None` when the Krylov subspace would
/// be as large as the matrix or the triplets do not converge to working
/// precision within [`MAX_RESTARTS`] restarts (then the exact SVD is the
/// better tool, and the caller uses it).
pub(crate) fn top_triplets<T: Element>(
    a: MatRef<'_, T>,
    rank: usize,
    frobenius: f64,
) -> Result<Option<Triplets<T>>, SvdError> {
    let (m, n) = a.shape();
    let k = m.min(n);
    let max_dim = (2 * MIN_DIM).max(2 * rank);
    if max_dim >= k {
        return Ok(None);
    }
    let params = PartialEigenParams {
        max_dim,
        max_restarts: MAX_RESTARTS,
        ..Default::default()
    };
    let par = faer::get_global_parallelism();
    let mut u = Mat::<T>::zeros(m, rank);
    let mut v = Mat::<T>::zeros(n, rank);
    let mut s = vec![T::from_f64(0.0); rank];
    // A deterministic start vector keeps the result reproducible.
    let v0 = Col::<T>::from_fn(n, |i| T::from_f64(1.0 + (i % 7) as f64 / 7.0));
    // Residuals are absolute: scale working precision by the matrix norm.
    let eps = if core::mem::size_of::<T>() == 4 {
        f32::EPSILON as f64
    } else {
        f64::EPSILON
    };
    let tolerance = T::from_f64((frobenius * eps * 8.0).max(f64::MIN_POSITIVE));
    let mut buffer = MemBuffer::new(partial_svd_scratch::<T>(&a, rank, par, params));
    let info = partial_svd(
        u.as_mut(),
        v.as_mut(),
        &mut s,
        &a,
        v0.as_ref(),
        tolerance,
        par,
        MemStack::new(&mut buffer),
        params,
    );
    if info.n_converged_eigen < rank {
        return Ok(None);
    }
    Ok(Some((u, s, v)))
}
