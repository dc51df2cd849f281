//! Transformer encoders (BERT, RoBERTa) as burn modules, loaded from the
//! files Hugging Face ships: `config.json`, `model.safetensors` and
//! `tokenizer.json`.
//!
//! Every linear layer is a `loraxs::AdaptedLinear` named as Hugging Face
//! names it (`encoder.layer.3.attention.self.query`), so PEFT-style targets
//! select the same modules as in PyTorch and `loraxs::inject` adapts the
//! encoder in place. All pretrained weights load frozen.
//!
//! Without the default `burn` feature only configs, the architectures'
//! module names and shapes ([`EncoderConfig::linear_modules`],
//! [`DecoderConfig::linear_modules`]) and the cache paths compile.
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

#![warn(missing_docs)]

mod arch;
mod cache;
mod config;
mod error;
pub mod fetch;
pub mod testing;

#[cfg(feature = "burn")]
mod dropout;
#[cfg(feature = "burn")]
mod encoder;
#[cfg(feature = "burn")]
mod model_dir;
#[cfg(feature = "burn")]
mod progress;
#[cfg(feature = "burn")]
mod weights;

pub use arch::{DecoderConfig, ENCODER_LAYER_LINEARS, LinearModule, encoder_layer_prefix};
pub use cache::{CACHE_DIR_ENV, MODEL_DIR_ENV, cache_dir, cached_model_dir, default_model_dir};
pub use config::{Activation, EncoderConfig, ModelType};
pub use error::{ModelError, Result};

#[cfg(feature = "burn")]
pub use dropout::{FastDropout, dropout_mask, seed_dropout};
#[cfg(feature = "burn")]
pub use encoder::{Embeddings, Encoder, EncoderInput, EncoderLayer, EncoderOutput};
/// The backends the encoder runs on: any burn backend with the fused
/// kernels of `loraxs-kernels` (Flex, NdArray, CUDA, and `Autodiff` of each).
#[cfg(feature = "burn")]
pub use loraxs_kernels::{KernelAutodiffBackend, KernelBackend, tune_allocator};
#[cfg(feature = "burn")]
pub use loraxs_tokenizer::{DEFAULT_MAX_LENGTH, TextTokenizer, TokenBatch, TokenSequence, TokenizerError};
#[cfg(feature = "burn")]
pub use model_dir::ModelDir;
#[cfg(feature = "burn")]
pub use progress::inject_with_bar;
#[cfg(feature = "burn")]
pub use weights::{LoadReport, Weights};
