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
//! [`VeraLinear`], plain layers for full fine-tuning), injection by
//! target-module name ([`inject`]), merging ([`merge`], [`unmerge`]),
//! parameter counting ([`param_count`]) and adapter files
//! ([`AdapterFile`]). Models plug in by implementing [`AdapterHost`].
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use loraxs::{AdaptedLinear, AdapterConfig, AdapterHost, TargetModules, inject, param_count};
//!
//! type B = NdArray<f32>;
//!
//! /// A one-layer "model" with a dotted module name.
//! struct Tiny { query: AdaptedLinear<B> }
//!
//! impl AdapterHost<B> for Tiny {
//!     fn visit_linears(&self, visit: &mut dyn FnMut(&str, &AdaptedLinear<B>)) {
//!         visit("attention.self.query", &self.query);
//!     }
//!     fn map_linears(self, map: &mut dyn FnMut(&str, AdaptedLinear<B>) -> AdaptedLinear<B>) -> Self {
//!         Tiny { query: map("attention.self.query", self.query) }
//!     }
//! }
//!
//! let device = Default::default();
//! // A 6×8 weight in PyTorch layout (out × in).
//! let weight: Vec<f32> = (0..48).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
//! let linear = loraxs::linear_from_torch::<B>(weight, 6, 8, None, &device);
//! let model = Tiny { query: linear.into() };
//!
//! let config = AdapterConfig::lora_xs(4).with_targets(TargetModules::new(["query"]));
//! let (model, report) = inject(model, &config).unwrap();
//! assert_eq!(report.modules[0].name, "attention.self.query");
//! assert_eq!(param_count(&model, Some(&config)).adapter, 16); // r² = 4²
//!
//! let x = Tensor::<B, 2>::ones([3, 8], &device);
//! assert_eq!(model.query.forward(x).dims(), [3, 6]);
//! ```

mod adapted;
mod config;
mod count;
mod error;
mod file;
mod frozen;
mod init;
mod inject;
mod lora;
mod merge;
mod targets;
mod vera;
mod xs;

pub use adapted::AdaptedLinear;
pub use config::{AdapterConfig, Factors, Method, RInit};
pub use count::ParamCount;
pub use error::{AdapterError, Result};
pub use file::{
    AdapterFile, FORMAT, FORMAT_VERSION, HEAD_PREFIX, LORA_XS_R, SaveOptions, StoredTensor, fingerprint,
};
pub use frozen::{
    frozen, linear_dims, linear_from_torch, linear_trainable_named, set_linear_trainable, stable_id,
    tensor_values, torch_weight, trainable, trainable_named, transpose,
};
pub use inject::{
    AdapterHost, InjectProgress, InjectionReport, ModuleReport, inject, inject_with_progress, linear_layers,
    merge, merge_and_unload, param_count, set_fused_inference, targeted_modules, unload, unmerge,
};
pub use lora::LoraLinear;
pub use merge::Mergeable;
pub use targets::{TargetModules, pattern_matches};
pub use vera::{VeraLinear, VeraProjections};
pub use xs::{FactorReport, LoraXsLinear};

/// Re-export of the SVD crate's public types used in configs and reports.
pub use loraxs_svd::{SignConvention, SvdMethod};

/// Saves the trained values of an adapted model to `path`.
pub fn save_adapter<B: burn::tensor::backend::Backend, H: AdapterHost<B>>(
    host: &H,
    config: &AdapterConfig,
    path: impl AsRef<std::path::Path>,
    options: SaveOptions,
) -> Result<AdapterFile> {
    let file = AdapterFile::from_model(host, config, options)?;
    file.save(path)?;
    Ok(file)
}

/// Loads an adapter file from `path` into a base model.
pub fn load_adapter<B: burn::tensor::backend::Backend, H: AdapterHost<B>>(
    host: H,
    path: impl AsRef<std::path::Path>,
) -> Result<(H, AdapterFile)> {
    let path = path.as_ref();
    let file = AdapterFile::load(path)?;
    let (host, _) = file.apply(host, path)?;
    Ok((host, file))
}
