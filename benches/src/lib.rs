//! loraxs benchmarks. Two kinds live here:
//!
//! - criterion suites of the kernels (`cargo bench -p loraxs-benches`):
//!   SVD, adapter forward/backward, merge, on matrices with a realistic,
//!   slowly decaying spectrum built by [`weight`];
//! - whole-model [`workload`]s (training step, inference, SVD
//!   initialisation, adapter files) run one per process by the
//!   `loraxs-workload` binary, which the `loraxs-bench` runner ([`runner`],
//!   `cargo xtask bench`) starts side by side with the PyTorch reference in
//!   `benches/torch_reference/`, judging the figures against the targets
//!   in `benches/targets.json` ([`targets`]).
//!
//! ```
//! let w = loraxs_benches::weight(8, 6, 1);
//! assert_eq!(w.len(), 48);
//! assert_eq!(w, loraxs_benches::weight(8, 6, 1)); // deterministic
//! ```

pub mod memory;
pub mod report;
pub mod runner;
pub mod scale;
pub mod serve;
pub mod targets;
pub mod workload;

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A `rows × cols` row-major weight whose singular values decay like
/// `1 / i` (pretrained weights decay slowly; an i.i.d. matrix would make
/// the partial SVD methods look better than they are). Built as a sum of
/// random rank-one terms, so it is cheap even at 4096 columns.
pub fn weight(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let terms = rows.min(cols).min(64);
    let mut w = vec![0.0f32; rows * cols];
    for k in 0..terms {
        let u: Vec<f32> = (0..rows).map(|_| rng.random::<f32>() - 0.5).collect();
        let v: Vec<f32> = (0..cols).map(|_| rng.random::<f32>() - 0.5).collect();
        let s = 1.0 / (k + 1) as f32;
        for i in 0..rows {
            let su = s * u[i];
            for (j, vj) in v.iter().enumerate() {
                w[i * cols + j] += su * vj;
            }
        }
    }
    // A full-rank noise floor, as in real weights.
    for x in w.iter_mut() {
        *x += 1e-3 * (rng.random::<f32>() - 0.5);
    }
    w
}

/// A frozen `d_in → d_out` linear layer with bias from [`weight`].
pub fn frozen_linear<B: Backend>(d_out: usize, d_in: usize, seed: u64, device: &B::Device) -> Linear<B> {
    let bias = vec![0.01; d_out];
    loraxs::interop::linear_from_torch(weight(d_out, d_in, seed), d_out, d_in, Some(bias), device)
}
