//! LoRA-XS adapters, and the baselines they are measured against, as
//! backend-generic [burn](https://burn.dev) modules.
//!
//! LoRA-XS (Bałazy et al., 2024) adapts a frozen linear layer `W` through
//! its truncated SVD `W ≈ U_r Σ_r V_rᵀ`: with `B = U_r` and `A = Σ_r V_rᵀ`
//! frozen, only a tiny `r × r` matrix `R` trains,
//! `y = W x + b + (alpha / r) · B R A x`. The trainable count per module is
//! `r²`, whatever the width of the model.
//!
//! This crate holds the layers ([`LoraXsLinear`], [`LoraLinear`],
//! [`VeraLinear`], plain layers for full fine-tuning), one file per method
//! behind two traits ([`MethodSpec`]: counts and file layout;
//! [`AdapterLayer`]: the layer), injection by target-module name
//! ([`inject`], giving an [`Adapted`] model that knows its config), merging,
//! parameter counting and adapter files ([`AdapterFile`]). Any burn model
//! plugs in by implementing [`AdapterHost`]: one visitor over its linear
//! layers. Tensor plumbing for model code lives in [`interop`].
//!
//! Without the default `burn` feature only the tensor-free half compiles:
//! configs, targets, each method's [`MethodSpec`] and [`ParamCount`] — what
//! a tool needs to count parameters for a model that is not on disk.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::module::Module;
//! use burn::tensor::Tensor;
//! use loraxs::{AdaptedLinear, AdapterConfig, AdapterHost, TargetModules, inject};
//!
//! type B = NdArray<f32>;
//!
//! /// A one-layer "model" with a dotted module name.
//! #[derive(Module, Debug)]
//! struct Tiny<B: burn::tensor::backend::Backend> { query: AdaptedLinear<B> }
//!
//! impl<B: burn::tensor::backend::Backend> AdapterHost<B> for Tiny<B> {
//!     fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut AdaptedLinear<B>)) {
//!         visit("attention.self.query", &mut self.query);
//!     }
//! }
//!
//! let device = Default::default();
//! // A 6×8 weight in PyTorch layout (out × in).
//! let weight: Vec<f32> = (0..48).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
//! let linear = loraxs::interop::linear_from_torch::<B>(weight, 6, 8, None, &device);
//! let model = Tiny { query: linear.into() };
//!
//! let config = AdapterConfig::lora_xs(4).with_targets(TargetModules::new(["query"]));
//! let adapted = inject(model, &config).unwrap();
//! assert_eq!(adapted.report.modules[0].name, "attention.self.query");
//! assert_eq!(adapted.param_count().adapter, 16); // r² = 4²
//!
//! let x = Tensor::<B, 2>::ones([3, 8], &device);
//! assert_eq!(adapted.model.query.forward(x).dims(), [3, 6]);
//!
//! // Only R is stored: 16 values and a small header.
//! let file = adapted.to_file(Default::default()).unwrap();
//! assert_eq!(file.stored_values(), 16);
//! ```

#![warn(missing_docs)]

mod config;
mod count;
mod error;
mod full;
mod lora;
mod method;
mod targets;
mod vera;
mod xs;

#[cfg(feature = "burn")]
mod adapted;
#[cfg(feature = "burn")]
mod bank;
#[cfg(feature = "burn")]
pub mod export;
#[cfg(feature = "burn")]
mod file;
#[cfg(feature = "burn")]
mod init;
#[cfg(feature = "burn")]
mod inject;
#[cfg(feature = "burn")]
pub mod interop;

pub use config::{AdapterConfig, Factors, Method, RInit};
pub use count::ParamCount;
pub use error::{AdapterError, Result};
pub use full::FullSpec;
pub use lora::LoraSpec;
pub use method::{MethodSpec, ModuleShape, TensorKey, TensorSpec};
pub use targets::{TargetModules, pattern_matches};
pub use vera::VeraSpec;
pub use xs::{LORA_XS_R, LoraXsSpec};

#[cfg(feature = "burn")]
pub use adapted::AdaptedLinear;
#[cfg(feature = "burn")]
pub use bank::AdapterBank;
#[cfg(feature = "burn")]
pub use file::{
    AdapterFile, FORMAT, FORMAT_VERSION, HEAD_OUTPUT_TENSOR, HEAD_PREFIX, SaveOptions, StoredTensor,
    fingerprint,
};
#[cfg(feature = "burn")]
pub use inject::{
    Adapted, AdapterHost, InjectProgress, InjectionReport, ModuleReport, inject, inject_with_progress,
    linear_layers, merge, merge_and_unload, param_count, targeted_modules, unload, unmerge,
};
#[cfg(feature = "burn")]
pub use lora::LoraLinear;
#[cfg(feature = "burn")]
pub use method::{AdapterLayer, FactorReport};
#[cfg(feature = "burn")]
pub use vera::{VeraLinear, VeraProjections};
#[cfg(feature = "burn")]
pub use xs::{LoraXsLinear, set_fused_inference};

/// Re-export of the SVD crate's public types used in configs and reports.
pub use loraxs_svd::{SignConvention, SvdMethod};

/// Saves the trained values of an adapted model to `path` (atomically).
#[cfg(feature = "burn")]
pub fn save_adapter<B: burn::tensor::backend::Backend, H: AdapterHost<B>>(
    adapted: &Adapted<H>,
    path: impl AsRef<std::path::Path>,
    options: SaveOptions,
) -> Result<AdapterFile> {
    adapted.save(path, options)
}

/// Loads an adapter file from `path` into a base model: the model with the
/// adapter, its config (from the file) and the injection report.
#[cfg(feature = "burn")]
pub fn load_adapter<B: burn::tensor::backend::Backend, H: AdapterHost<B>>(
    host: H,
    path: impl AsRef<std::path::Path>,
) -> Result<(Adapted<H>, AdapterFile)> {
    let path = path.as_ref();
    let file = AdapterFile::load(path)?;
    let adapted = file.apply(host, path)?;
    Ok((adapted, file))
}

/// README.md's Rust snippet, compiled and run as a doctest so that it
/// stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
