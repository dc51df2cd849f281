//! Deterministic random initialisation, identical on every backend.
//!
//! Values are drawn on the host from ChaCha8 and uploaded, instead of using
//! the backend's generator: a seed then means the same adapter on `ndarray`,
//! `flex` and `cuda`, and each module's stream is derived from its name so
//! that injection order does not matter.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a random stream is for; part of the stream's key so that, for
/// instance, LoRA's `A` and the VeRA matrices never share values.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    XsR,
    XsRandomA,
    XsRandomB,
    LoraA,
    VeraA,
    VeraB,
}

/// A generator keyed by the config seed, the module name and the purpose.
pub(crate) fn rng(seed: u64, module: &str, stream: Stream) -> ChaCha8Rng {
    let h = fnv1a(module.bytes().chain([0xff, stream as u8]));
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&h.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// FNV-1a over `bytes`: stable across Rust versions and platforms, unlike
/// `Hash`. Keys random streams and parameter ids.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` values from `N(0, std²)` (Box–Muller).
pub(crate) fn normal(rng: &mut ChaCha8Rng, len: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let angle = std::f64::consts::TAU * u2;
        out.push((radius * angle.cos()) as f32);
        out.push((radius * angle.sin()) as f32);
    }
    out.truncate(len);
    out
}

/// `len` values from PyTorch's default `nn.Linear` init,
/// `kaiming_uniform_(a = √5)`: `U(−1/√fan_in, 1/√fan_in)`.
pub(crate) fn kaiming_uniform(rng: &mut ChaCha8Rng, len: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    (0..len)
        .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
        .collect()
}
