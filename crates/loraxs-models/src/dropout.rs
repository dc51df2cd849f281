//! Dropout whose mask is drawn on the host by a fast generator on the CPU
//! backends.
//!
//! burn's `Dropout` samples a Bernoulli tensor element by element through
//! a general distribution sampler, then multiplies twice (mask, then
//! `1 / keep`). On the CPU backends that sampling ran on one core and took
//! ~13% of a MiniLM training step (`perf`, issue #5). Here the mask is
//! drawn from a SplitMix64 stream, four 16-bit draws per word, with the
//! values `0` and `1 / keep` already in it, so dropout costs one multiply;
//! blocks of the mask are drawn on all threads, each from its own offset
//! into the same stream (the mask does not depend on the thread count).
//! On other backends (CUDA, …) burn's on-device sampling is used: uploading
//! a host mask would cost more than it saves.

use std::sync::Mutex;

use burn::module::Module;
use burn::nn::DropoutConfig;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use rayon::prelude::*;

/// The next stream state; every masked call takes one.
static STATE: Mutex<u64> = Mutex::new(0x853c_49e6_748f_ea9b);

/// Seeds the masks of every [`FastDropout`] in this process (the training
/// harness does it per epoch, next to `Backend::seed`, so a resumed run
/// draws the same masks as an uninterrupted one).
pub fn seed_dropout(seed: u64) {
    let mut state = seed ^ 0x853c_49e6_748f_ea9b;
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = splitmix64(&mut state);
}

fn next_stream() -> u64 {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    splitmix64(&mut state)
}

/// SplitMix64's increment.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `B` samples random tensors on the host anyway (then a host mask
/// costs no transfer).
fn host_backend<B: Backend>(device: &B::Device) -> bool {
    let name = B::name(device);
    name.contains("flex") || name.contains("ndarray")
}

/// The mask for `n` elements: each `1 / keep'` with probability `keep'`,
/// else 0, where `keep' = round(keep · 65536) / 65536` (the mask's mean is
/// exactly 1).
pub fn dropout_mask(n: usize, prob: f64, stream: u64) -> Vec<f32> {
    let threshold = ((1.0 - prob) * 65536.0).round().clamp(0.0, 65536.0) as u32;
    let scale = if threshold == 0 {
        0.0
    } else {
        65536.0 / threshold as f32
    };
    // SplitMix64's state after w words is `stream + w·γ`, so each block of
    // the mask starts its own copy of the stream at its first word: the
    // same mask as one sequential pass, drawn on every thread.
    const WORDS: usize = 4096;
    let mut mask = vec![0.0f32; n];
    mask.par_chunks_mut(4 * WORDS)
        .enumerate()
        .for_each(|(block, out)| {
            let mut state = stream.wrapping_add(((block * WORDS) as u64).wrapping_mul(GAMMA));
            for quad in out.chunks_mut(4) {
                let word = splitmix64(&mut state);
                for (k, m) in quad.iter_mut().enumerate() {
                    let draw = ((word >> (16 * k)) & 0xffff) as u32;
                    *m = if draw < threshold { scale } else { 0.0 };
                }
            }
        });
    mask
}

/// Dropout with probability `prob` while training (autodiff backends),
/// the identity otherwise.
#[derive(Module, Clone, Debug)]
pub struct FastDropout {
    /// Probability of zeroing an element.
    pub prob: f64,
}

impl FastDropout {
    /// Dropout with probability `prob` (clamped to `[0, 1]`; 1 zeroes
    /// everything).
    pub fn new(prob: f64) -> Self {
        Self {
            prob: prob.clamp(0.0, 1.0),
        }
    }

    /// Applies dropout.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let device = x.device();
        if self.prob == 0.0 || !B::ad_enabled(&device) {
            return x;
        }
        if !host_backend::<B>(&device) {
            return DropoutConfig::new(self.prob).init().forward(x);
        }
        let shape = x.shape();
        let mask = dropout_mask(shape.num_elements(), self.prob, next_stream());
        x * Tensor::<B, D>::from_data(TensorData::new(mask, shape), &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask drawn in one sequential pass over the stream.
    fn sequential_mask(n: usize, prob: f64, stream: u64) -> Vec<f32> {
        let threshold = ((1.0 - prob) * 65536.0).round() as u32;
        let scale = 65536.0 / threshold as f32;
        let mut state = stream;
        let mut mask = Vec::with_capacity(n);
        while mask.len() < n {
            let word = splitmix64(&mut state);
            for k in 0..4.min(n - mask.len()) {
                let draw = ((word >> (16 * k)) & 0xffff) as u32;
                mask.push(if draw < threshold { scale } else { 0.0 });
            }
        }
        mask
    }

    #[test]
    fn blocks_drawn_in_parallel_equal_one_sequential_pass() {
        // Lengths around the 16,384-element blocks, and not multiples of 4.
        for n in [0, 1, 7, 16_383, 16_384, 16_385, 3 * 16_384 + 5, 200_001] {
            assert_eq!(dropout_mask(n, 0.1, 99), sequential_mask(n, 0.1, 99), "n = {n}");
        }
    }

    #[test]
    fn mask_keeps_the_expected_fraction_with_mean_one() {
        let n = 1 << 20;
        let mask = dropout_mask(n, 0.1, 42);
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64 / n as f64;
        assert!((kept - 0.9).abs() < 0.002, "kept {kept}");
        let mean = mask.iter().map(|&m| m as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.003, "mean {mean}");
        let zeros = mask.iter().filter(|&&m| m == 0.0).count();
        let scaled = mask
            .iter()
            .filter(|&&m| (m - 65536.0 / 58982.0).abs() < 1e-6)
            .count();
        assert_eq!(zeros + scaled, n, "only 0 and 1/keep appear");
    }

    #[test]
    fn streams_differ_and_repeat() {
        assert_eq!(dropout_mask(1000, 0.5, 7), dropout_mask(1000, 0.5, 7));
        assert_ne!(dropout_mask(1000, 0.5, 7), dropout_mask(1000, 0.5, 8));
        assert_eq!(dropout_mask(5, 0.5, 1).len(), 5);
    }

    /// Active on autodiff backends (training), the identity on the inner
    /// backends (evaluation, `valid()`).
    #[test]
    fn dropout_is_on_in_training_and_off_in_evaluation() {
        use burn::backend::{Autodiff, Flex, NdArray};
        fn check<B: Backend>(training: bool) {
            let device = B::Device::default();
            let x = Tensor::<B, 2>::ones([64, 64], &device);
            let y = loraxs::interop::tensor_values(FastDropout::new(0.25).forward(x));
            let zeros = y.iter().filter(|&&v| v == 0.0).count();
            if training {
                assert!((700..1350).contains(&zeros), "{} zeros of 4096", zeros);
                assert!(
                    y.iter()
                        .all(|&v| v == 0.0 || (v - 65536.0 / 49152.0).abs() < 1e-6)
                );
            } else {
                assert!(y.iter().all(|&v| v == 1.0), "{}: identity", B::name(&device));
            }
        }
        check::<Autodiff<NdArray<f32>>>(true);
        check::<Autodiff<Flex>>(true);
        check::<NdArray<f32>>(false);
        check::<Flex>(false);
        // Probability 0 never masks, even while training.
        let x = Tensor::<Autodiff<Flex>, 1>::ones([100], &Default::default());
        assert!(
            loraxs::interop::tensor_values(FastDropout::new(0.0).forward(x))
                .iter()
                .all(|&v| v == 1.0)
        );
    }

    #[test]
    fn seeding_repeats_the_sequence_of_masks() {
        seed_dropout(3);
        let a = (next_stream(), next_stream());
        seed_dropout(3);
        assert_eq!(a, (next_stream(), next_stream()));
    }
}
