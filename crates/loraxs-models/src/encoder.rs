//! The BERT/RoBERTa encoder, layer for layer as Hugging Face transformers
//! computes it, with every linear layer adaptable.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use loraxs::interop::{frozen, linear_from_torch};
use loraxs::{AdaptedLinear, AdapterHost, ParamCount};
use loraxs_kernels::{KernelBackend, add_layer_norm, attention, masked_softmax};
use loraxs_tokenizer::TokenBatch;

use crate::arch::{ENCODER_LAYER_LINEARS, encoder_layer_prefix};
use crate::config::{Activation, EncoderConfig, ModelType};
use crate::dropout::FastDropout;
use crate::weights::{LoadReport, Weights};
use crate::{ModelError, Result};

/// Token, position and segment embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// `embeddings.word_embeddings`.
    pub word: Embedding<B>,
    /// `embeddings.position_embeddings`.
    pub position: Embedding<B>,
    /// `embeddings.token_type_embeddings`.
    pub token_type: Embedding<B>,
    /// `embeddings.LayerNorm`.
    pub norm: LayerNorm<B>,
    /// Dropout after the norm.
    pub dropout: FastDropout,
    /// The norm's epsilon (`layer_norm_eps`).
    pub norm_eps: f64,
}

/// One transformer layer (`encoder.layer.N`).
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// `attention.self.query`.
    pub query: AdaptedLinear<B>,
    /// `attention.self.key`.
    pub key: AdaptedLinear<B>,
    /// `attention.self.value`.
    pub value: AdaptedLinear<B>,
    /// `attention.output.dense`.
    pub attention_output: AdaptedLinear<B>,
    /// `attention.output.LayerNorm`.
    pub attention_norm: LayerNorm<B>,
    /// `intermediate.dense` (FFN up projection).
    pub intermediate: AdaptedLinear<B>,
    /// `output.dense` (FFN down projection).
    pub output: AdaptedLinear<B>,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm<B>,
    /// Dropout on attention probabilities.
    pub attention_dropout: FastDropout,
    /// Dropout on each block's output.
    pub dropout: FastDropout,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward activation.
    #[module(skip)]
    pub activation: Activation,
    /// The norms' epsilon (`layer_norm_eps`).
    pub norm_eps: f64,
}

/// A BERT-family encoder.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// `embeddings`.
    pub embeddings: Embeddings<B>,
    /// `encoder.layer.*`.
    pub layers: Vec<EncoderLayer<B>>,
    /// `pooler.dense` (tanh applied after), when the checkpoint has it.
    pub pooler: Option<AdaptedLinear<B>>,
    /// Whether position ids follow RoBERTa's convention.
    pub roberta_positions: bool,
    /// Padding token id (RoBERTa's `padding_idx`).
    pub pad_token_id: usize,
}

/// Model inputs as tensors, `[batch, tokens]` each.
#[derive(Debug, Clone)]
pub struct EncoderInput<B: Backend> {
    /// Token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// Segment ids.
    pub token_type_ids: Tensor<B, 2, Int>,
    /// Position ids.
    pub position_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor<B, 2, Int>,
}

/// Encoder outputs.
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// Last hidden state, `[batch, tokens, hidden]`.
    pub hidden: Tensor<B, 3>,
    /// `tanh(pooler(hidden[:, 0]))`, `[batch, hidden]`, when the model has
    /// a pooler.
    pub pooled: Option<Tensor<B, 2>>,
}

fn layer_norm<B: Backend>(
    w: &mut Weights,
    name: &str,
    d: usize,
    eps: f64,
    device: &B::Device,
) -> LayerNorm<B> {
    let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = frozen(Tensor::from_data(
        TensorData::new(w.take(&format!("{name}.weight"), &[d]), [d]),
        device,
    ));
    norm.beta = Some(frozen(Tensor::from_data(
        TensorData::new(w.take(&format!("{name}.bias"), &[d]), [d]),
        device,
    )));
    norm
}

fn linear<B: Backend>(
    w: &mut Weights,
    name: &str,
    d_out: usize,
    d_in: usize,
    device: &B::Device,
) -> AdaptedLinear<B> {
    let weight = w.take(&format!("{name}.weight"), &[d_out, d_in]);
    let bias = w.take(&format!("{name}.bias"), &[d_out]);
    AdaptedLinear::Plain(linear_from_torch(weight, d_out, d_in, Some(bias), device))
}

fn embedding<B: Backend>(
    w: &mut Weights,
    name: &str,
    n: usize,
    d: usize,
    device: &B::Device,
) -> Embedding<B> {
    let values = w.take(&format!("{name}.weight"), &[n, d]);
    Embedding {
        weight: frozen(Tensor::from_data(TensorData::new(values, [n, d]), device)),
    }
}

impl<B: Backend> Encoder<B> {
    /// Builds the encoder from checkpoint weights; every parameter frozen.
    /// Fails listing every missing or mis-shaped tensor.
    pub fn from_weights(
        config: &EncoderConfig,
        mut w: Weights,
        device: &B::Device,
    ) -> Result<(Self, LoadReport)> {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let dropout = FastDropout::new(config.hidden_dropout_prob);
        let embeddings = Embeddings {
            word: embedding(&mut w, "embeddings.word_embeddings", config.vocab_size, h, device),
            position: embedding(
                &mut w,
                "embeddings.position_embeddings",
                config.max_position_embeddings,
                h,
                device,
            ),
            token_type: embedding(
                &mut w,
                "embeddings.token_type_embeddings",
                config.type_vocab_size,
                h,
                device,
            ),
            norm: layer_norm(&mut w, "embeddings.LayerNorm", h, eps, device),
            dropout: dropout.clone(),
            norm_eps: eps,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = encoder_layer_prefix(i);
                let [query, key, value, attention_output, intermediate, output] = config
                    .layer_linears()
                    .map(|(suffix, s)| linear(&mut w, &format!("{p}.{suffix}"), s.d_out, s.d_in, device));
                EncoderLayer {
                    query,
                    key,
                    value,
                    attention_output,
                    attention_norm: layer_norm(
                        &mut w,
                        &format!("{p}.attention.output.LayerNorm"),
                        h,
                        eps,
                        device,
                    ),
                    intermediate,
                    output,
                    output_norm: layer_norm(&mut w, &format!("{p}.output.LayerNorm"), h, eps, device),
                    attention_dropout: FastDropout::new(config.attention_probs_dropout_prob),
                    dropout: dropout.clone(),
                    heads: config.num_attention_heads,
                    activation: config.hidden_act,
                    norm_eps: eps,
                }
            })
            .collect();
        let mut absent = Vec::new();
        let pooler = if w.contains("pooler.dense.weight") {
            Some(linear(&mut w, "pooler.dense", h, h, device))
        } else {
            absent.push("pooler".to_string());
            None
        };
        let report = w.finish(absent)?;
        let encoder = Self {
            embeddings,
            layers,
            pooler,
            roberta_positions: config.model_type == ModelType::Roberta,
            pad_token_id: config.pad_token_id,
        };
        Ok((encoder, report))
    }

    /// The same encoder with other dropout probabilities: `hidden` after the
    /// embeddings and each block (`hidden_dropout_prob`), `attention` on the
    /// attention probabilities (`attention_probs_dropout_prob`).
    pub fn with_dropout(mut self, hidden: f64, attention: f64) -> Self {
        self.embeddings.dropout = FastDropout::new(hidden);
        for layer in &mut self.layers {
            layer.dropout = FastDropout::new(hidden);
            layer.attention_dropout = FastDropout::new(attention);
        }
        self
    }

    /// Tensors for a tokenised batch, with position ids as this
    /// architecture numbers them (RoBERTa: `pad + 1 + index` for real
    /// tokens, `pad` for padding).
    pub fn input(&self, batch: &TokenBatch, device: &B::Device) -> Result<EncoderInput<B>> {
        let max = self.embeddings.position.weight.dims()[0];
        let (n, t) = (batch.batch, batch.seq_len);
        let mut positions = Vec::with_capacity(n * t);
        for row in 0..n {
            let mut next = self.pad_token_id as i64 + 1;
            for col in 0..t {
                let real = batch.attention_mask[row * t + col] != 0;
                positions.push(match (self.roberta_positions, real) {
                    (false, _) => col as i64,
                    (true, true) => {
                        next += 1;
                        next - 1
                    }
                    (true, false) => self.pad_token_id as i64,
                });
            }
        }
        if let Some(p) = positions.iter().find(|p| **p as usize >= max) {
            return Err(ModelError::Input(format!(
                "position {p} is beyond the model's {max} position embeddings; truncate the input"
            )));
        }
        let vocab = self.embeddings.word.weight.dims()[0] as u32;
        if let Some(id) = batch.input_ids.iter().find(|&&id| id >= vocab) {
            return Err(ModelError::Input(format!(
                "token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        let types = self.embeddings.token_type.weight.dims()[0] as u32;
        if let Some(id) = batch.token_type_ids.iter().find(|&&id| id >= types) {
            return Err(ModelError::Input(format!(
                "token type {id} is outside the model's {types} types"
            )));
        }
        let int = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [n, t]), device);
        let wide = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        Ok(EncoderInput {
            input_ids: int(wide(&batch.input_ids)),
            token_type_ids: int(wide(&batch.token_type_ids)),
            position_ids: int(positions),
            attention_mask: int(wide(&batch.attention_mask)),
        })
    }

    /// Width of the model.
    pub fn hidden_size(&self) -> usize {
        self.embeddings.word.weight.dims()[1]
    }
}

impl<B: KernelBackend> Encoder<B> {
    /// Runs the encoder.
    pub fn forward(&self, input: EncoderInput<B>) -> EncoderOutput<B> {
        let e = &self.embeddings;
        let x = e.word.forward(input.input_ids) + e.position.forward(input.position_ids);
        let x = norm(&e.norm, x, e.token_type.forward(input.token_type_ids), e.norm_eps);
        let mut hidden = e.dropout.forward(x);

        // Hugging Face's extended mask: 0 for real tokens, the most negative
        // f32 for padding, added to the attention scores.
        let mask = (input.attention_mask.float().neg() + 1.0).mul_scalar(f32::MIN);
        for layer in &self.layers {
            hidden = layer.forward(hidden, mask.clone());
        }
        let pooled = self.pooler.as_ref().map(|pooler| {
            let [b, _, h] = hidden.dims();
            let first = hidden.clone().slice([0..b, 0..1, 0..h]).reshape([b, h]);
            pooler.forward(first).tanh()
        });
        EncoderOutput { hidden, pooled }
    }
}

/// `LayerNorm(x + residual)`: the fused kernel when the norm has a bias
/// (every BERT/RoBERTa norm), burn's module otherwise.
fn norm<B: KernelBackend>(
    norm: &LayerNorm<B>,
    x: Tensor<B, 3>,
    residual: Tensor<B, 3>,
    eps: f64,
) -> Tensor<B, 3> {
    match &norm.beta {
        Some(beta) => add_layer_norm(x, residual, norm.gamma.val(), beta.val(), eps),
        None => norm.forward(x + residual),
    }
}

impl<B: KernelBackend> EncoderLayer<B> {
    /// One layer; `mask` is `[batch, tokens]`, 0 for tokens and `f32::MIN`
    /// for padding.
    fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, t, h] = x.dims();
        let hd = h / self.heads;
        let split = |y: Tensor<B, 3>| y.reshape([b, t, self.heads, hd]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scale = 1.0 / (hd as f64).sqrt();
        let context = if B::ad_enabled(&x.device()) {
            // Training: the scores, then one fused node for scale, mask and
            // softmax (loraxs-kernels), so attention dropout applies and the
            // backward pass is one fused kernel.
            let scores = q.matmul(k.swap_dims(2, 3));
            let probs = self
                .attention_dropout
                .forward(masked_softmax(scores, mask, scale as f32));
            probs.matmul(v)
        } else {
            // Inference: the backend's attention (loraxs-kernels: on flex
            // the products and our vectorised softmax, elsewhere burn's).
            attention(q, k, v, mask, scale as f32)
        };
        let context = context.swap_dims(1, 2).reshape([b, t, h]);
        let attended = norm(
            &self.attention_norm,
            self.dropout.forward(self.attention_output.forward(context)),
            x,
            self.norm_eps,
        );
        let inner = self.intermediate.forward(attended.clone());
        let inner = match self.activation {
            Activation::Gelu => loraxs_kernels::gelu(inner),
            Activation::GeluTanh => burn::tensor::activation::gelu_approximate(inner),
            Activation::Relu => relu(inner),
        };
        norm(
            &self.output_norm,
            self.dropout.forward(self.output.forward(inner)),
            attended,
            self.norm_eps,
        )
    }
}

impl<B: Backend> AdapterHost<B> for Encoder<B> {
    /// Layer by layer in the order of [`EncoderConfig::layer_linears`],
    /// then `pooler.dense`.
    fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut AdaptedLinear<B>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            let prefix = encoder_layer_prefix(i);
            let mods = [
                &mut l.query,
                &mut l.key,
                &mut l.value,
                &mut l.attention_output,
                &mut l.intermediate,
                &mut l.output,
            ];
            for (suffix, m) in ENCODER_LAYER_LINEARS.iter().zip(mods) {
                visit(&format!("{prefix}.{suffix}"), m);
            }
        }
        if let Some(pooler) = &mut self.pooler {
            visit("pooler.dense", pooler);
        }
    }

    fn other_params(&self) -> ParamCount {
        let e = &self.embeddings;
        let norm = |n: &LayerNorm<B>| 2 * n.gamma.dims()[0];
        let embeddings = e.word.weight.shape().num_elements()
            + e.position.weight.shape().num_elements()
            + e.token_type.weight.shape().num_elements()
            + norm(&e.norm);
        let norms: usize = self
            .layers
            .iter()
            .map(|l| norm(&l.attention_norm) + norm(&l.output_norm))
            .sum();
        ParamCount::frozen(embeddings + norms)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex, NdArray};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{Tensor, TensorData};

    /// `d/dx gelu(x) = Φ(x) + x·φ(x)` in f64, with Φ at the test points
    /// taken from a standard normal table (10 digits), independent of any
    /// erf implementation.
    fn exact_gradient(x: f64) -> f64 {
        // Φ at the test points, from a standard normal table (10 digits).
        let cdf = match x {
            -3.0 => 0.001_349_898_0,
            -1.5 => 0.066_807_201_3,
            -0.5 => 0.308_537_538_7,
            0.0 => 0.5,
            0.25 => 0.598_706_325_7,
            1.0 => 0.841_344_746_1,
            2.0 => 0.977_249_868_1,
            _ => unreachable!(),
        };
        let pdf = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        cdf + x * pdf
    }

    fn gradients<B: AutodiffBackend + loraxs_kernels::KernelBackend>() -> (Vec<f32>, Vec<f32>) {
        let points = [-3.0f32, -1.5, -0.5, 0.0, 0.25, 1.0, 2.0];
        let device = Default::default();
        let x = Tensor::<B, 1>::from_data(TensorData::new(points.to_vec(), [7]), &device).require_grad();
        let y = loraxs_kernels::gelu(x.clone());
        let grads = y.clone().sum().backward();
        let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        (y.into_data().to_vec::<f32>().unwrap(), g)
    }

    #[test]
    fn gelu_has_the_exact_gradient_on_every_cpu_backend() {
        let points = [-3.0f64, -1.5, -0.5, 0.0, 0.25, 1.0, 2.0];
        for (name, (values, grads)) in [
            ("autodiff<ndarray>", gradients::<Autodiff<NdArray>>()),
            ("autodiff<flex>", gradients::<Autodiff<Flex>>()),
        ] {
            for ((&x, &v), &g) in points.iter().zip(&values).zip(&grads) {
                let expected = exact_gradient(x);
                assert!(
                    (g as f64 - expected).abs() < 2e-6,
                    "{name}: gelu'({x}) = {g}, expected {expected}"
                );
                let value =
                    x * (exact_gradient(x) - x * (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt());
                assert!(
                    (v as f64 - value).abs() < 2e-6,
                    "{name}: gelu({x}) = {v}, expected {value}"
                );
            }
        }
    }
}
