//! The Hugging Face `config.json` of a BERT-family encoder.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// The encoder architectures this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// BERT (and its distillations, e.g. all-MiniLM-L6-v2).
    Bert,
    /// RoBERTa: position ids start after `padding_idx`, one token type.
    Roberta,
}

/// The activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU with `erf` (`"gelu"` in Hugging Face configs).
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
}

/// An encoder configuration as Hugging Face writes it. Unknown fields are
/// ignored; missing required ones are an error naming the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// `bert` or `roberta`.
    pub model_type: ModelType,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the model.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// Longest sequence the position table covers.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: usize,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Dropout after embeddings, attention output and feed-forward.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_dropout() -> f64 {
    0.1
}

impl EncoderConfig {
    /// Reads and validates a `config.json`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates JSON text; `path` is used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| ModelError::Config {
            path: path.into(),
            reason,
        };
        let config: Self = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                config.position_embedding_type
            )));
        }
        if config.type_vocab_size == 0 || config.vocab_size == 0 || config.num_hidden_layers == 0 {
            return Err(bad(
                "vocab_size, type_vocab_size and num_hidden_layers must be positive".into(),
            ));
        }
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Longest input in tokens: RoBERTa reserves `pad_token_id + 1`
    /// positions before the first real token.
    pub fn max_tokens(&self) -> usize {
        match self.model_type {
            ModelType::Bert => self.max_position_embeddings,
            ModelType::Roberta => self.max_position_embeddings - self.pad_token_id - 1,
        }
    }
}

/// Whether `path` holds a decoder rather than a BERT/RoBERTa encoder: a
/// `.gguf` file, a folder with one, or a folder whose `config.json` names a
/// `model_type` other than `bert` or `roberta`.
pub fn is_decoder_path(path: &Path) -> Result<bool> {
    if path.is_file() || path.extension().is_some_and(|e| e == "gguf") {
        return Ok(true);
    }
    let io = |p: &Path, source| ModelError::Io {
        path: p.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(path).map_err(|e| io(path, e))? {
        if entry
            .map_err(|e| io(path, e))?
            .path()
            .extension()
            .is_some_and(|e| e == "gguf")
        {
            return Ok(true);
        }
    }
    let config = path.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| io(&config, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: config.clone(),
        reason: e.to_string(),
    })?;
    Ok(!matches!(value["model_type"].as_str(), Some("bert" | "roberta")))
}
