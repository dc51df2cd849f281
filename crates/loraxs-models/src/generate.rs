//! Text generation with a [`Decoder`]: greedy or sampled (temperature,
//! top-p, seeded), batched prompts left-padded, a KV cache, stop tokens.

use burn::tensor::backend::Backend;
use loraxs::interop::tensor_values;

use crate::decoder::{Decoder, KvCache};
use crate::dropout::splitmix64;
use crate::{ModelError, Result};

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens generated per prompt.
    pub max_new_tokens: usize,
    /// 0 for greedy decoding; otherwise logits are divided by it before
    /// sampling.
    pub temperature: f32,
    /// Nucleus sampling: the smallest set of tokens whose probabilities
    /// reach `top_p` (1 keeps every token).
    pub top_p: f32,
    /// Seed of the sampler (each prompt draws from its own stream).
    pub seed: u64,
    /// Ids that end a sequence (not included in its output).
    pub stop_ids: Vec<u32>,
    /// Decode with the KV cache (each step runs only the new token);
    /// without it every step reruns the whole sequence.
    pub use_cache: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_ids: Vec::new(),
            use_cache: true,
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token came.
    Stop,
    /// `max_new_tokens` were generated.
    Length,
    /// The caller stopped the sequence ([`generate_with`]'s callback
    /// returned `false`: a stop text was seen, a stream was closed).
    Cancelled,
}

/// What generation produced, per prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The new tokens of each prompt, without the stop token.
    pub tokens: Vec<Vec<u32>>,
    /// Why each ended.
    pub finish: Vec<FinishReason>,
}

/// Picks the next token from one row of logits.
fn pick(logits: &[f32], config: &GenerationConfig, state: &mut u64) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if config.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let t = config.temperature as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - max) as f64 / t).exp()))
        .collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1 / total;
        if mass >= config.top_p as f64 {
            break;
        }
    }
    probs.truncate(kept);
    let kept_total: f64 = probs.iter().map(|p| p.1).sum();
    let u = (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64 * kept_total;
    let mut acc = 0.0;
    for &(id, p) in &probs {
        acc += p;
        if u < acc {
            return id;
        }
    }
    probs.last().map_or_else(argmax, |p| p.0)
}

/// Generates from each prompt (token ids, no padding); prompts of
/// different lengths are left-padded with `pad_id` into one batch.
pub fn generate<B: Backend>(
    model: &Decoder<B>,
    prompts: &[Vec<u32>],
    pad_id: u32,
    config: &GenerationConfig,
    device: &B::Device,
) -> Result<Generated> {
    generate_with(model, prompts, pad_id, config, device, &mut |_, _| true)
}

/// [`generate`], telling `on_token(prompt, token)` of every token as it is
/// generated (stop tokens excepted), for streaming. When it returns
/// `false` that prompt's sequence ends there ([`FinishReason::Cancelled`];
/// the token is kept) and the others go on; the batch stops when every
/// sequence has ended.
pub fn generate_with<B: Backend>(
    model: &Decoder<B>,
    prompts: &[Vec<u32>],
    pad_id: u32,
    config: &GenerationConfig,
    device: &B::Device,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Generated> {
    if prompts.is_empty() {
        return Ok(Generated {
            tokens: Vec::new(),
            finish: Vec::new(),
        });
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Input(format!("prompt {i} is empty")));
    }
    let top_p_ok = config.top_p > 0.0 && config.top_p <= 1.0;
    if !top_p_ok || !config.temperature.is_finite() {
        return Err(ModelError::Input(format!(
            "top_p must be in (0, 1] and temperature finite (got {} and {})",
            config.top_p, config.temperature
        )));
    }
    let n = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + config.max_new_tokens > model.max_positions {
        return Err(ModelError::Input(format!(
            "the longest prompt ({longest} tokens) plus max_new_tokens ({}) exceeds the model's context of {} tokens",
            config.max_new_tokens, model.max_positions
        )));
    }
    let mut ids = Vec::with_capacity(n * longest);
    let mut mask = Vec::with_capacity(n * longest);
    for p in prompts {
        let pad = longest - p.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0u32, pad).chain(std::iter::repeat_n(1, p.len())));
    }
    let mut states: Vec<u64> = (0..n as u64)
        .map(|i| config.seed ^ (i.wrapping_add(1)).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let mut out = vec![Vec::new(); n];
    let mut finish: Vec<Option<FinishReason>> = vec![None; n];
    let mut cache = config.use_cache.then(|| KvCache::new(model.layers.len(), n));
    let vocab = model.vocab_size();
    let mut step_ids = ids.clone();
    for _ in 0..config.max_new_tokens {
        let hidden = model.forward_hidden(&step_ids, n, &mask, cache.as_mut(), device)?;
        let [_, t, h] = hidden.dims();
        let last = hidden.slice([0..n, t - 1..t, 0..h]);
        let logits = tensor_values(model.logits(last));
        let mut next = Vec::with_capacity(n);
        for b in 0..n {
            let token = if finish[b].is_some() {
                pad_id
            } else {
                let token = pick(&logits[b * vocab..(b + 1) * vocab], config, &mut states[b]);
                if config.stop_ids.contains(&token) {
                    finish[b] = Some(FinishReason::Stop);
                } else {
                    out[b].push(token);
                    if !on_token(b, token) {
                        finish[b] = Some(FinishReason::Cancelled);
                    }
                }
                token
            };
            next.push(token);
        }
        if finish.iter().all(Option::is_some) {
            break;
        }
        // Append the new column to ids and mask.
        let keys = mask.len() / n;
        let mut grown_mask = Vec::with_capacity(n * (keys + 1));
        let mut grown_ids = Vec::with_capacity(n * (keys + 1));
        for b in 0..n {
            grown_mask.extend_from_slice(&mask[b * keys..(b + 1) * keys]);
            grown_mask.push(1);
            grown_ids.extend_from_slice(&ids[b * keys..(b + 1) * keys]);
            grown_ids.push(next[b]);
        }
        mask = grown_mask;
        ids = grown_ids;
        step_ids = if cache.is_some() { next } else { ids.clone() };
    }
    Ok(Generated {
        tokens: out,
        finish: finish
            .into_iter()
            .map(|f| f.unwrap_or(FinishReason::Length))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_sampling_respects_top_p() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut state = 7;
        assert_eq!(pick(&logits, &GenerationConfig::default(), &mut state), 1);
        // top_p small enough to keep only the best token: always it.
        let narrow = GenerationConfig {
            temperature: 1.0,
            top_p: 0.3,
            ..Default::default()
        };
        assert!((0..200).all(|_| pick(&logits, &narrow, &mut state) == 1));
        // The full distribution at temperature 1: tokens 1 and 3 dominate
        // in proportion e^3 : e^2.9, and token 0 is rare.
        let wide = GenerationConfig {
            temperature: 1.0,
            ..Default::default()
        };
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[pick(&logits, &wide, &mut state) as usize] += 1;
        }
        let expected: Vec<f64> = logits.iter().map(|&l| (l as f64).exp()).collect();
        let total: f64 = expected.iter().sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = expected[i] / total;
            let sd = (4000.0 * p * (1.0 - p)).sqrt();
            assert!(
                (c as f64 - 4000.0 * p).abs() < 4.0 * sd + 1.0,
                "token {i}: {c} of 4000, p = {p}"
            );
        }
    }
}
