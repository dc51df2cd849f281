//! The adaptable linear layers of each architecture, by Hugging Face name
//! and shape, from the config alone: written once here, used by the model
//! loaders (which tensors to read), by adapter injection (which names a
//! model reports) and by parameter tables (which need no weights).

use loraxs::ModuleShape;
use serde::Deserialize;

use crate::config::EncoderConfig;

/// One adaptable linear layer: its dotted Hugging Face name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearModule {
    /// Dotted name, e.g. `encoder.layer.3.attention.self.query`.
    pub name: String,
    /// `in → out`, bias.
    pub shape: ModuleShape,
}

/// The linear layers of one BERT/RoBERTa encoder layer, below
/// `encoder.layer.N.`, in model order.
pub const ENCODER_LAYER_LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// The prefix of encoder layer `i`.
pub fn encoder_layer_prefix(i: usize) -> String {
    format!("encoder.layer.{i}")
}

impl EncoderConfig {
    /// The linear layers of one encoder layer, in model order: the name
    /// below `encoder.layer.N.` and the shape (all with bias).
    pub fn layer_linears(&self) -> [(&'static str, ModuleShape); 6] {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let s = |d_in, d_out| ModuleShape::new(d_in, d_out, true);
        let shapes = [s(h, h), s(h, h), s(h, h), s(h, h), s(h, f), s(f, h)];
        let mut i = 0;
        ENCODER_LAYER_LINEARS.map(|name| {
            i += 1;
            (name, shapes[i - 1])
        })
    }

    /// Every adaptable linear layer of the encoder stack, in model order
    /// (the pooler, which checkpoints may lack, is not included).
    pub fn linear_modules(&self) -> Vec<LinearModule> {
        (0..self.num_hidden_layers)
            .flat_map(|i| {
                self.layer_linears().map(|(suffix, shape)| LinearModule {
                    name: format!("{}.{suffix}", encoder_layer_prefix(i)),
                    shape,
                })
            })
            .collect()
    }

    /// Every parameter of the base model with its pooler, as Hugging Face
    /// counts them.
    pub fn total_params(&self) -> usize {
        let h = self.hidden_size;
        let linear: usize = self.linear_modules().iter().map(|m| m.shape.base_values()).sum();
        let embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h;
        let norms = self.num_hidden_layers * 4 * h;
        let pooler = h * h + h;
        linear + embeddings + norms + pooler
    }
}

/// The fields of a Llama-family decoder `config.json` (Llama, Mistral,
/// SmolLM2; Gemma's differences are not built). Unknown fields are ignored;
/// the ones the forward pass needs default as transformers defaults them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecoderConfig {
    /// `model_type` (`llama`, `mistral`, …).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the model.
    pub hidden_size: usize,
    /// Width of the gated feed-forward block.
    pub intermediate_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Width of one head, when not `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Whether the output projection shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Rotary base (`rope_theta`; transformers 5 writes it inside
    /// `rope_parameters`, which is read too).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Rotary scaling (`rope_scaling`, or transformers 5's
    /// `rope_parameters`).
    #[serde(default, alias = "rope_parameters")]
    pub rope_scaling: Option<RopeScaling>,
    /// Context length the model was trained for.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Feed-forward activation (`silu` for SwiGLU).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Gemma's name for the activation (`gelu_pytorch_tanh`); when set it
    /// wins over `hidden_act`, as in transformers.
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// Biases on the attention projections (Qwen2-style): not supported.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections: not supported.
    #[serde(default)]
    pub mlp_bias: bool,
}

/// Rotary scaling: `rope_type` (or `type`) and its parameters.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct RopeScaling {
    /// `default`, `linear` or `llama3`.
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// transformers 5 keeps `rope_theta` here.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Scaling factor (`linear`, `llama3`).
    #[serde(default)]
    pub factor: Option<f64>,
    /// `llama3`: low-frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// `llama3`: high-frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// `llama3`: the context length before scaling.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl DecoderConfig {
    /// Parses `config.json` text; `path` is used in error messages.
    pub fn from_json(text: &str, path: &std::path::Path) -> crate::Result<Self> {
        serde_json::from_str(text).map_err(|e| crate::ModelError::Config {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// Whether this is Gemma (1): GeGLU, `(1 + w)` norms, embeddings
    /// scaled by `√hidden`.
    pub fn is_gemma(&self) -> bool {
        self.model_type == "gemma"
    }

    /// The feed-forward activation: `hidden_activation`, else Gemma's
    /// `gelu_pytorch_tanh`, else `hidden_act`.
    pub fn activation(&self) -> &str {
        match &self.hidden_activation {
            Some(a) => a,
            None if self.is_gemma() => "gelu_pytorch_tanh",
            None => &self.hidden_act,
        }
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The rotary base: `rope_theta`, else inside `rope_parameters`, else
    /// 10,000.
    pub fn rope_base(&self) -> f64 {
        self.rope_theta
            .or_else(|| self.rope_scaling.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10_000.0)
    }

    /// The linear layers of one decoder layer, in model order: the name
    /// below `model.layers.N.` and the shape (no biases).
    pub fn layer_linears(&self) -> [(&'static str, ModuleShape); 7] {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let hd = self.head_size();
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let s = |d_in, d_out| ModuleShape::new(d_in, d_out, false);
        [
            ("self_attn.q_proj", s(h, q)),
            ("self_attn.k_proj", s(h, kv)),
            ("self_attn.v_proj", s(h, kv)),
            ("self_attn.o_proj", s(q, h)),
            ("mlp.gate_proj", s(h, f)),
            ("mlp.up_proj", s(h, f)),
            ("mlp.down_proj", s(f, h)),
        ]
    }

    /// Every adaptable linear layer, in model order.
    pub fn linear_modules(&self) -> Vec<LinearModule> {
        (0..self.num_hidden_layers)
            .flat_map(|i| {
                self.layer_linears().map(|(suffix, shape)| LinearModule {
                    name: format!("model.layers.{i}.{suffix}"),
                    shape,
                })
            })
            .collect()
    }

    /// Every parameter of the base model.
    pub fn total_params(&self) -> usize {
        let h = self.hidden_size;
        let linear: usize = self.linear_modules().iter().map(|m| m.shape.base_values()).sum();
        let embeddings = self.vocab_size * h * if self.tie_word_embeddings { 1 } else { 2 };
        let norms = self.num_hidden_layers * 2 * h + h;
        linear + embeddings + norms
    }
}
