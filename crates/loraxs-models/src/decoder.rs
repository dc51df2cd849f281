//! The Llama-family decoder (Llama, Mistral, SmolLM2), layer for layer as
//! Hugging Face transformers computes it: RMSNorm, rotary position
//! embeddings (rotate-half layout, with the config's base and `linear` /
//! `llama3` scaling), grouped-query attention, SwiGLU, tied or separate
//! output embeddings. Every linear layer is a `loraxs::AdaptedLinear` under
//! its Hugging Face name (`model.layers.3.self_attn.q_proj`), so the seven
//! LoRA-XS targets select seven modules per layer.

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use loraxs::interop::{frozen, linear_from_torch};
use loraxs::{AdaptedLinear, AdapterHost, ParamCount};

use crate::arch::DecoderConfig;
use crate::weights::LoadReport;
use crate::{ModelError, Result};

/// Where decoder weights come from, by Hugging Face name.
pub trait WeightSource {
    /// The values of `name` as `f32`, checked against `shape`; a problem is
    /// recorded (and zeros returned) when the tensor is missing or unusable.
    fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32>;
    /// Whether the source has `name`.
    fn contains(&self, name: &str) -> bool;
    /// Fails with every recorded problem, or reports what was left unused.
    fn finish(self: Box<Self>, absent_optional: Vec<String>) -> Result<LoadReport>;
}

/// `x / sqrt(mean(x²) + eps) · (offset + weight)`, over the last
/// dimension (`offset` 0, or 1 for Gemma).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// The scale (`weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Epsilon.
    pub eps: f64,
    /// Added to `weight` (Gemma stores `w` and scales by `1 + w`).
    pub offset: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Normalises `[batch, tokens, width]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.weight.dims()[0];
        let ms = x.clone().powi_scalar(2).mean_dim(2);
        let scale = self.weight.val().add_scalar(self.offset).reshape([1, 1, h]);
        x * (ms + self.eps).sqrt().recip() * scale
    }
}

/// One decoder layer (`model.layers.N`).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm<B>,
    /// `self_attn.q_proj`.
    pub q_proj: AdaptedLinear<B>,
    /// `self_attn.k_proj`.
    pub k_proj: AdaptedLinear<B>,
    /// `self_attn.v_proj`.
    pub v_proj: AdaptedLinear<B>,
    /// `self_attn.o_proj`.
    pub o_proj: AdaptedLinear<B>,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm<B>,
    /// `mlp.gate_proj`.
    pub gate_proj: AdaptedLinear<B>,
    /// `mlp.up_proj`.
    pub up_proj: AdaptedLinear<B>,
    /// `mlp.down_proj`.
    pub down_proj: AdaptedLinear<B>,
    /// Query heads.
    pub heads: usize,
    /// GeGLU with tanh-approximated GELU (Gemma) instead of SwiGLU.
    pub gelu_tanh: bool,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

/// A Llama-family decoder with its language-model head.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// `model.embed_tokens`.
    pub embed_tokens: Embedding<B>,
    /// `model.layers.*`.
    pub layers: Vec<DecoderLayer<B>>,
    /// `model.norm`.
    pub norm: RmsNorm<B>,
    /// `lm_head`; `None` when tied to the embeddings.
    pub lm_head: Option<AdaptedLinear<B>>,
    /// Rotary inverse frequencies, `head_dim / 2` of them (scaling applied).
    #[module(skip)]
    pub inv_freq: Vec<f64>,
    /// Linear rotary scaling: positions are divided by this.
    pub position_scale: f64,
    /// The context length (`max_position_embeddings`): longer inputs are
    /// refused.
    pub max_positions: usize,
    /// Embeddings are multiplied by this (Gemma: `√hidden`; else 1).
    pub embed_scale: f64,
}

/// Keys and values of earlier tokens, per layer (after the rotation), for
/// decoding one step at a time.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// 1 for real tokens, 0 for padding, `[batch, cached]` row-major.
    mask: Vec<u32>,
    batch: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers and `batch` sequences.
    pub fn new(layers: usize, batch: usize) -> Self {
        Self {
            layers: vec![None; layers],
            mask: Vec::new(),
            batch,
        }
    }

    /// Tokens held per sequence.
    pub fn len(&self) -> usize {
        self.mask.len().checked_div(self.batch).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.mask.is_empty()
    }
}

fn norm<B: Backend>(
    w: &mut dyn WeightSource,
    name: &str,
    h: usize,
    config: &DecoderConfig,
    device: &B::Device,
) -> RmsNorm<B> {
    let values = w.take(&format!("{name}.weight"), &[h]);
    RmsNorm {
        weight: frozen(Tensor::from_data(TensorData::new(values, [h]), device)),
        eps: config.rms_norm_eps,
        offset: if config.is_gemma() { 1.0 } else { 0.0 },
    }
}

fn linear<B: Backend>(
    w: &mut dyn WeightSource,
    name: &str,
    d_out: usize,
    d_in: usize,
    device: &B::Device,
) -> AdaptedLinear<B> {
    let weight = w.take(&format!("{name}.weight"), &[d_out, d_in]);
    AdaptedLinear::Plain(linear_from_torch(weight, d_out, d_in, None, device))
}

/// Rotary inverse frequencies with the config's scaling, as transformers'
/// `ROPE_INIT_FUNCTIONS` compute them; plus the linear position divisor.
fn rotary(config: &DecoderConfig) -> Result<(Vec<f64>, f64)> {
    let hd = config.head_size();
    let base = config.rope_base();
    let mut inv: Vec<f64> = (0..hd / 2)
        .map(|i| 1.0 / base.powf(2.0 * i as f64 / hd as f64))
        .collect();
    let scaling = config.rope_scaling.clone().unwrap_or_default();
    let kind = scaling.rope_type.as_deref().unwrap_or("default");
    let bad = |what: &str| ModelError::Input(format!("rope_scaling of type `{kind}` needs `{what}`"));
    match kind {
        "default" => Ok((inv, 1.0)),
        "linear" => Ok((inv, scaling.factor.ok_or_else(|| bad("factor"))?)),
        "llama3" => {
            let factor = scaling.factor.ok_or_else(|| bad("factor"))?;
            let low = scaling.low_freq_factor.ok_or_else(|| bad("low_freq_factor"))?;
            let high = scaling.high_freq_factor.ok_or_else(|| bad("high_freq_factor"))?;
            let old = scaling
                .original_max_position_embeddings
                .ok_or_else(|| bad("original_max_position_embeddings"))? as f64;
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            for f in &mut inv {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                *f = if wavelen > low_wavelen {
                    *f / factor
                } else if wavelen < high_wavelen {
                    *f
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * *f / factor + smooth * *f
                };
            }
            Ok((inv, 1.0))
        }
        other => Err(ModelError::Input(format!(
            "rope_scaling type `{other}` is not supported (default, linear and llama3 are)"
        ))),
    }
}

/// GELU with PyTorch's tanh approximation (`gelu_pytorch_tanh`):
/// `x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

/// Checks that the config describes a decoder this module computes.
pub fn check_supported(config: &DecoderConfig) -> Result<()> {
    let fail = |m: String| Err(ModelError::Input(m));
    if config.model_type.starts_with("gemma") && !config.is_gemma() {
        return fail(format!(
            "model_type `{}`: Gemma 2 and later (logit soft-capping, sliding-window layers, extra norms) \
             are not supported; Gemma (1) is",
            config.model_type
        ));
    }
    if !matches!(config.activation(), "silu" | "gelu_pytorch_tanh") {
        return fail(format!(
            "activation `{}` is not supported (silu for SwiGLU, gelu_pytorch_tanh for GeGLU)",
            config.activation()
        ));
    }
    if config.attention_bias || config.mlp_bias {
        return fail("attention_bias / mlp_bias: projections with biases are not supported".into());
    }
    let (h, kv) = (config.num_attention_heads, config.num_key_value_heads);
    if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
        return fail(format!(
            "num_attention_heads {h} must be a positive multiple of num_key_value_heads {kv}"
        ));
    }
    if !config.head_size().is_multiple_of(2) {
        return fail(format!(
            "head size {} must be even for rotary embeddings",
            config.head_size()
        ));
    }
    rotary(config).map(|_| ())
}

impl<B: Backend> Decoder<B> {
    /// Builds the decoder from weights named as Hugging Face names them;
    /// every parameter frozen. Fails listing every missing or mis-shaped
    /// tensor.
    pub fn from_source(
        config: &DecoderConfig,
        mut w: Box<dyn WeightSource>,
        device: &B::Device,
    ) -> Result<(Self, LoadReport)> {
        check_supported(config)?;
        let (inv_freq, position_scale) = rotary(config)?;
        let (h, v) = (config.hidden_size, config.vocab_size);
        let embed = w.take("model.embed_tokens.weight", &[v, h]);
        let embed_tokens = Embedding {
            weight: frozen(Tensor::from_data(TensorData::new(embed, [v, h]), device)),
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj] = config
                    .layer_linears()
                    .map(|(suffix, s)| linear(&mut *w, &format!("{p}.{suffix}"), s.d_out, s.d_in, device));
                DecoderLayer {
                    input_layernorm: norm(&mut *w, &format!("{p}.input_layernorm"), h, config, device),
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj,
                    post_attention_layernorm: norm(
                        &mut *w,
                        &format!("{p}.post_attention_layernorm"),
                        h,
                        config,
                        device,
                    ),
                    gate_proj,
                    up_proj,
                    down_proj,
                    heads: config.num_attention_heads,
                    gelu_tanh: config.activation() == "gelu_pytorch_tanh",
                    kv_heads: config.num_key_value_heads,
                    head_dim: config.head_size(),
                }
            })
            .collect();
        let norm = norm(&mut *w, "model.norm", h, config, device);
        let lm_head = if config.tie_word_embeddings && !w.contains("lm_head.weight") {
            None
        } else {
            Some(linear(&mut *w, "lm_head", v, h, device))
        };
        let report = w.finish(Vec::new())?;
        Ok((
            Self {
                embed_tokens,
                layers,
                norm,
                lm_head,
                inv_freq,
                position_scale,
                max_positions: config.max_position_embeddings,
                embed_scale: if config.is_gemma() { (h as f64).sqrt() } else { 1.0 },
            },
            report,
        ))
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// Runs the decoder over `input_ids` (`[batch, tokens]` row-major) and
    /// returns the final hidden states after `model.norm`,
    /// `[batch, tokens, hidden]`.
    ///
    /// `attention_mask` (`[batch, cached + tokens]`, 1 for real tokens, 0
    /// for padding) covers the cached tokens and the new ones; positions
    /// count real tokens only (`cumsum(mask) − 1`, as `generate` numbers
    /// them), so a left-padded row computes what it would alone. With a
    /// cache, keys and values of these tokens are appended to it.
    pub fn forward_hidden(
        &self,
        input_ids: &[u32],
        batch: usize,
        attention_mask: &[u32],
        cache: Option<&mut KvCache<B>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        if batch == 0 || input_ids.is_empty() || !input_ids.len().is_multiple_of(batch) {
            return Err(ModelError::Input(format!(
                "input_ids has {} ids, not a positive multiple of the batch of {batch}",
                input_ids.len()
            )));
        }
        let t = input_ids.len() / batch;
        let past = match &cache {
            Some(c) if c.batch != batch => {
                return Err(ModelError::Input(format!(
                    "the cache holds {} sequences, the input {batch}",
                    c.batch
                )));
            }
            Some(c) => c.len(),
            None => 0,
        };
        let keys = past + t;
        if keys > self.max_positions {
            return Err(ModelError::Input(format!(
                "{keys} tokens (cached {past} + new {t}) exceed the model's context of {} tokens",
                self.max_positions
            )));
        }
        if attention_mask.len() != batch * keys {
            return Err(ModelError::Input(format!(
                "attention_mask has {} values, expected batch {batch} × (cached {past} + new {t})",
                attention_mask.len()
            )));
        }
        let vocab = self.vocab_size() as u32;
        if let Some(id) = input_ids.iter().find(|&&id| id >= vocab) {
            return Err(ModelError::Input(format!(
                "token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        // Positions of the new tokens and the additive mask [batch, 1, t, keys].
        let mut positions = Vec::with_capacity(batch * t);
        let mut mask = Vec::with_capacity(batch * t * keys);
        for b in 0..batch {
            let row = &attention_mask[b * keys..(b + 1) * keys];
            let mut seen = 0i64;
            let mut cumulative = Vec::with_capacity(keys);
            for &m in row {
                seen += i64::from(m != 0);
                cumulative.push(seen);
            }
            for i in 0..t {
                let q = past + i;
                positions.push(if row[q] != 0 { cumulative[q] - 1 } else { 1 });
                mask.extend((0..keys).map(|j| if j <= q && row[j] != 0 { 0.0f32 } else { f32::MIN }));
            }
        }
        let mask = Tensor::<B, 4>::from_data(TensorData::new(mask, [batch, 1, t, keys]), device);
        let (cos, sin) = self.rotary_tables(&positions, batch, t, device);

        let ids: Vec<i64> = input_ids.iter().map(|&x| x as i64).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, t]), device);
        let mut x = self.embed_tokens.forward(ids);
        if self.embed_scale != 1.0 {
            x = x.mul_scalar(self.embed_scale);
        }
        let mut cache = cache;
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &cos, &sin, mask.clone(), slot);
        }
        if let Some(c) = cache {
            // The mask now covers every cached token.
            c.mask = attention_mask.to_vec();
        }
        Ok(self.norm.forward(x))
    }

    /// Logits `[batch, tokens, vocab]` of final hidden states.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let [b, t, h] = hidden.dims();
                let w = self.embed_tokens.weight.val();
                hidden
                    .reshape([b * t, h])
                    .matmul(w.transpose())
                    .reshape([b, t, self.vocab_size()])
            }
        }
    }

    /// Logits of every token, `[batch, tokens, vocab]` (see
    /// [`Decoder::forward_hidden`]).
    pub fn forward(
        &self,
        input_ids: &[u32],
        batch: usize,
        attention_mask: &[u32],
        cache: Option<&mut KvCache<B>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let hidden = self.forward_hidden(input_ids, batch, attention_mask, cache, device)?;
        Ok(self.logits(hidden))
    }

    /// `cos` and `sin` of every position's angles, `[batch, 1, t, head_dim]`
    /// with the halves repeated (the rotate-half layout).
    fn rotary_tables(
        &self,
        positions: &[i64],
        batch: usize,
        t: usize,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let half = self.inv_freq.len();
        let hd = 2 * half;
        let mut cos = Vec::with_capacity(positions.len() * hd);
        let mut sin = Vec::with_capacity(positions.len() * hd);
        for &p in positions {
            let p = p as f64 / self.position_scale;
            // transformers computes the angles in f32: p · inv_freq.
            let angles: Vec<f32> = self.inv_freq.iter().map(|&f| (p as f32) * (f as f32)).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let shape = [batch, 1, t, hd];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// `x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]`.
fn rotate<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

impl<B: Backend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: Tensor<B, 4>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (hd, heads, kv) = (self.head_dim, self.heads, self.kv_heads);
        let normed = self.input_layernorm.forward(x.clone());
        let split = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let q = rotate(split(self.q_proj.forward(normed.clone()), heads), cos, sin);
        let mut k = rotate(split(self.k_proj.forward(normed.clone()), kv), cos, sin);
        let mut v = split(self.v_proj.forward(normed), kv);
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let keys = k.dims()[2];
        let groups = heads / kv;
        let repeat = |y: Tensor<B, 4>| {
            if groups == 1 {
                y
            } else {
                y.unsqueeze_dim::<5>(2)
                    .expand([b, kv, groups, keys, hd])
                    .reshape([b, heads, keys, hd])
            }
        };
        let (k, v) = (repeat(k), repeat(v));
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + mask;
        let context = softmax(scores, 3).matmul(v);
        let context = context.swap_dims(1, 2).reshape([b, t, heads * hd]);
        let x = x + self.o_proj.forward(context);
        let normed = self.post_attention_layernorm.forward(x.clone());
        let gate = self.gate_proj.forward(normed.clone());
        let gate = if self.gelu_tanh {
            gelu_tanh(gate)
        } else {
            silu(gate)
        };
        let gated = gate * self.up_proj.forward(normed);
        x + self.down_proj.forward(gated)
    }
}

impl<B: Backend> AdapterHost<B> for Decoder<B> {
    /// Layer by layer in the order of [`DecoderConfig::layer_linears`],
    /// then `lm_head` when it is not tied.
    fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut AdaptedLinear<B>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            let mods = [
                ("self_attn.q_proj", &mut l.q_proj),
                ("self_attn.k_proj", &mut l.k_proj),
                ("self_attn.v_proj", &mut l.v_proj),
                ("self_attn.o_proj", &mut l.o_proj),
                ("mlp.gate_proj", &mut l.gate_proj),
                ("mlp.up_proj", &mut l.up_proj),
                ("mlp.down_proj", &mut l.down_proj),
            ];
            for (suffix, m) in mods {
                visit(&format!("model.layers.{i}.{suffix}"), m);
            }
        }
        if let Some(head) = &mut self.lm_head {
            visit("lm_head", head);
        }
    }

    fn other_params(&self) -> ParamCount {
        let norms: usize = self
            .layers
            .iter()
            .map(|l| l.input_layernorm.weight.dims()[0] + l.post_attention_layernorm.weight.dims()[0])
            .sum();
        ParamCount::frozen(
            self.embed_tokens.weight.shape().num_elements() + norms + self.norm.weight.dims()[0],
        )
    }
}
