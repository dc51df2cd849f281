//! Transformer encoders (BERT, RoBERTa) and Llama-family decoders (Llama,
//! Mistral, SmolLM2) as burn modules, loaded from the files Hugging Face
//! ships (`config.json`, `model.safetensors` or its shards,
//! `tokenizer.json`) or, for decoders, from a GGUF file ([`gguf`],
//! [`load_decoder`]).
//!
//! Every linear layer is a `loraxs::AdaptedLinear` named as Hugging Face
//! names it (`encoder.layer.3.attention.self.query`,
//! `model.layers.3.self_attn.q_proj`), so PEFT-style targets select the
//! same modules as in PyTorch and `loraxs::inject` adapts the model in
//! place. All pretrained weights load frozen.
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
//!
//! A GGUF file's metadata and tensors (here one written in memory):
//!
//! ```
//! use loraxs_models::gguf::{GgufFile, GgufValue, GgufWriter};
//! let bytes = GgufWriter::new()
//!     .meta("general.architecture", GgufValue::String("llama".into()))
//!     .f32_tensor("output_norm.weight", &[4], &[1.0, 1.0, 0.5, 0.5])
//!     .to_bytes();
//! let file = GgufFile::parse(bytes, "tiny.gguf").unwrap();
//! assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
//! assert_eq!(file.tensor_f32("output_norm.weight").unwrap().1, [4]);
//! let err = file.require_u64("llama.block_count").unwrap_err();
//! assert_eq!(err.to_string(), "tiny.gguf: metadata `llama.block_count` is missing");
//! ```

#![warn(missing_docs)]

mod arch;
mod cache;
mod config;
mod error;
pub mod fetch;
pub mod gguf;
pub mod testing;

#[cfg(feature = "burn")]
mod decoder;
#[cfg(feature = "burn")]
mod decoder_tokenizer;
#[cfg(feature = "burn")]
mod decoder_weights;
#[cfg(feature = "burn")]
mod dropout;
#[cfg(feature = "burn")]
mod encoder;
#[cfg(feature = "burn")]
mod generate;
#[cfg(feature = "burn")]
mod model_dir;
#[cfg(feature = "burn")]
mod progress;
#[cfg(feature = "burn")]
mod weights;

pub use arch::{DecoderConfig, ENCODER_LAYER_LINEARS, LinearModule, RopeScaling, encoder_layer_prefix};
pub use cache::{CACHE_DIR_ENV, MODEL_DIR_ENV, cache_dir, cached_model_dir, default_model_dir};
pub use config::{Activation, EncoderConfig, ModelType, is_decoder_path};
pub use error::{ModelError, Result};

#[cfg(feature = "burn")]
pub use decoder::{Decoder, DecoderLayer, KvCache, RmsNorm, WeightSource, check_supported};
#[cfg(feature = "burn")]
pub use decoder_tokenizer::{
    folder_causal_tokenizer, gguf_causal_tokenizer, gguf_tokenizer_json, load_causal_tokenizer,
};
#[cfg(feature = "burn")]
pub use decoder_weights::{
    GgufWeights, LoadedDecoder, ShardedWeights, gguf_name, load_decoder, unpermute_rows,
};
#[cfg(feature = "burn")]
pub use dropout::{FastDropout, dropout_mask, seed_dropout};
#[cfg(feature = "burn")]
pub use encoder::{Embeddings, Encoder, EncoderInput, EncoderLayer, EncoderOutput};
#[cfg(feature = "burn")]
pub use generate::{FinishReason, Generated, GenerationConfig, generate, generate_with};
/// The backends the encoder runs on: any burn backend with the fused
/// kernels of `loraxs-kernels` (Flex, NdArray, CUDA, and `Autodiff` of each).
#[cfg(feature = "burn")]
pub use loraxs_kernels::{KernelAutodiffBackend, KernelBackend, tune_allocator};
#[cfg(feature = "burn")]
pub use loraxs_tokenizer::{
    CausalTokenizer, ChatMessage, DEFAULT_MAX_LENGTH, SpecialTokens, TextTokenizer, TokenBatch,
    TokenSequence, TokenizerError,
};
#[cfg(feature = "burn")]
pub use model_dir::ModelDir;
#[cfg(feature = "burn")]
pub use progress::inject_with_bar;
#[cfg(feature = "burn")]
pub use weights::{LoadReport, Weights};
