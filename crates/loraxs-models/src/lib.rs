//! Transformer encoders (BERT, RoBERTa) as burn modules, loaded from the
//! files Hugging Face ships: `config.json`, `model.safetensors` and
//! `tokenizer.json`.
//!
//! Every linear layer is a [`loraxs::AdaptedLinear`] named as Hugging Face
//! names it (`encoder.layer.3.attention.self.query`), so PEFT-style targets
//! select the same modules as in PyTorch and [`loraxs::inject`] adapts the
//! encoder in place. All pretrained weights load frozen.
//!
//! ```
//! use loraxs_models::{EncoderConfig, ModelType};
//! let json = r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
//!   "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
//!   "max_position_embeddings": 512, "some_future_field": true}"#;
//! let config = EncoderConfig::from_json(json, "config.json".as_ref()).unwrap();
//! assert_eq!(config.model_type, ModelType::Bert);
//! assert_eq!(config.head_dim(), 32);
//!
//! let err = EncoderConfig::from_json(r#"{"model_type": "bert"}"#, "c.json".as_ref()).unwrap_err();
//! assert!(err.to_string().starts_with("c.json: missing field `vocab_size`"));
//! ```

mod config;
mod dropout;
mod encoder;
mod error;
mod model_dir;
mod progress;
mod tokenizer;
mod weights;

pub use config::{Activation, EncoderConfig, ModelType};
pub use dropout::{FastDropout, dropout_mask, seed_dropout};
pub use encoder::{Embeddings, Encoder, EncoderInput, EncoderLayer, EncoderOutput};
pub use error::{ModelError, Result};
pub use model_dir::ModelDir;
pub use progress::inject_with_bar;
pub use tokenizer::{DEFAULT_MAX_LENGTH, TextTokenizer, TokenBatch, TokenSequence};
pub use weights::{LoadReport, Weights};

/// The environment variable naming a model folder for tests and tools.
pub const MODEL_DIR_ENV: &str = "LORAXS_MODEL_DIR";

/// Where the default model (all-MiniLM-L6-v2) lives: `$LORAXS_MODEL_DIR`,
/// else `models/all-MiniLM-L6-v2` in the fetch cache (`$LORAXS_CACHE_DIR`,
/// else `datasets/cache` of this workspace), where
/// `cargo xtask fetch model minilm` puts it.
pub fn default_model_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV) {
        return dir.into();
    }
    let cache = std::env::var_os("LORAXS_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/cache"));
    cache.join("models/all-MiniLM-L6-v2")
}
