//! Injecting adapters into a model by target-module name.

use std::time::Instant;

use burn::tensor::backend::Backend;
use loraxs_svd::SvdMethod;

use crate::frozen::{linear_trainable_named, set_linear_trainable};
use crate::vera::VeraProjections;
use crate::{
    AdaptedLinear, AdapterConfig, AdapterError, LoraLinear, LoraXsLinear, Method, ParamCount, Result,
    VeraLinear,
};

/// A model whose linear layers can carry adapters.
///
/// The model names each adaptable layer with its dotted Hugging Face name
/// (`encoder.layer.3.attention.self.query`), so PEFT-style targets select
/// the same modules as in PyTorch. Implementations walk their layers in one
/// fixed order; adapter files rely on it.
pub trait AdapterHost<B: Backend>: Sized {
    /// Calls `visit` on every adaptable linear layer, in a fixed order.
    fn visit_linears(&self, visit: &mut dyn FnMut(&str, &AdaptedLinear<B>));

    /// Replaces every adaptable linear layer by `map`'s result, in the same
    /// order as [`AdapterHost::visit_linears`].
    fn map_linears(self, map: &mut dyn FnMut(&str, AdaptedLinear<B>) -> AdaptedLinear<B>) -> Self;

    /// Parameters outside the adaptable linear layers: embeddings and norms
    /// count as frozen, task heads as head.
    fn other_params(&self) -> ParamCount {
        ParamCount::default()
    }
}

/// Where injection stands, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct InjectProgress<'a> {
    /// Modules done so far.
    pub done: usize,
    /// Modules to adapt in all.
    pub total: usize,
    /// The module about to be adapted (empty once finished).
    pub module: &'a str,
}

/// What injection did to one module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleReport {
    /// Dotted module name.
    pub name: String,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// LoRA-XS with SVD factors: spectral energy kept by the top `r`.
    pub energy_kept: Option<f64>,
    /// LoRA-XS with SVD factors: relative reconstruction error.
    pub relative_error: Option<f64>,
    /// LoRA-XS with SVD factors: the SVD method used.
    pub svd_method: Option<SvdMethod>,
}

/// What injection did.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionReport {
    /// One entry per adapted module, in model order.
    pub modules: Vec<ModuleReport>,
    /// Wall time of the whole injection, seconds.
    pub seconds: f64,
}

/// The adaptable linear layers of a model: names, `(in, out)` and method.
pub fn linear_layers<B: Backend, H: AdapterHost<B>>(
    host: &H,
) -> Vec<(String, (usize, usize), Option<Method>)> {
    let mut out = Vec::new();
    host.visit_linears(&mut |name, layer| out.push((name.to_string(), layer.dims(), layer.method())));
    out
}

/// The names of the modules `config` targets, in model order. Fails when a
/// pattern matches nothing, listing what is available.
pub fn targeted_modules<B: Backend, H: AdapterHost<B>>(
    host: &H,
    config: &AdapterConfig,
) -> Result<Vec<String>> {
    let layers = linear_layers(host);
    let names: Vec<String> = layers.iter().map(|(n, _, _)| n.clone()).collect();
    for pattern in config.targets.patterns() {
        if !names.iter().any(|n| crate::targets::pattern_matches(pattern, n)) {
            return Err(AdapterError::TargetNotFound {
                pattern: pattern.clone(),
                available: names,
            });
        }
    }
    Ok(names.into_iter().filter(|n| config.targets.matches(n)).collect())
}

/// Replaces every targeted linear layer of `host` by the adapter `config`
/// describes, and freezes every other adaptable layer.
///
/// All checks that need no arithmetic (targets, ranks, modules already
/// adapted) run before the model is touched.
pub fn inject<B: Backend, H: AdapterHost<B>>(
    host: H,
    config: &AdapterConfig,
) -> Result<(H, InjectionReport)> {
    inject_with_progress(host, config, &mut |_| {})
}

/// [`inject`], calling `progress` before each module (SVDs can take a
/// while on large models) and once at the end.
pub fn inject_with_progress<B: Backend, H: AdapterHost<B>>(
    host: H,
    config: &AdapterConfig,
    progress: &mut dyn FnMut(InjectProgress<'_>),
) -> Result<(H, InjectionReport)> {
    let start = Instant::now();
    config.validate()?;
    let targeted = targeted_modules(&host, config)?;
    let mut max_in = 0;
    let mut max_out = 0;
    for (name, (d_in, d_out), method) in linear_layers(&host) {
        if !targeted.contains(&name) {
            continue;
        }
        if let Some(method) = method {
            return Err(AdapterError::AlreadyAdapted {
                module: name,
                method: method.name(),
            });
        }
        if config.method != Method::Full && config.rank > d_in.min(d_out) {
            return Err(AdapterError::RankTooLarge {
                module: name,
                rank: config.rank,
                max: d_in.min(d_out),
            });
        }
        max_in = max_in.max(d_in);
        max_out = max_out.max(d_out);
    }
    let projections = (config.method == Method::Vera).then(|| VeraProjections::new(config, max_in, max_out));

    let total = targeted.len();
    let mut modules = Vec::with_capacity(total);
    let mut failure = None;
    let host = host.map_linears(&mut |name, layer| {
        let AdaptedLinear::Plain(linear) = layer else {
            return layer;
        };
        if failure.is_some() || !targeted.iter().any(|t| t == name) {
            return AdaptedLinear::Plain(set_linear_trainable(linear, false));
        }
        progress(InjectProgress {
            done: modules.len(),
            total,
            module: name,
        });
        let (d_in, d_out) = crate::frozen::linear_dims(&linear);
        let mut report = ModuleReport {
            name: name.to_string(),
            d_in,
            d_out,
            energy_kept: None,
            relative_error: None,
            svd_method: None,
        };
        let linear = set_linear_trainable(linear, false);
        let adapted = match config.method {
            Method::LoraXs => LoraXsLinear::from_linear(linear.clone(), config, name).map(|(l, f)| {
                report.svd_method = f.svd_method;
                if f.svd_method.is_some() {
                    report.energy_kept = Some(f.energy_kept);
                    report.relative_error = Some(f.relative_error);
                }
                AdaptedLinear::LoraXs(l)
            }),
            Method::Lora => LoraLinear::from_linear(linear.clone(), config, name).map(AdaptedLinear::Lora),
            Method::Vera => {
                let projections = projections.as_ref().expect("drawn above for VeRA");
                VeraLinear::from_linear(linear.clone(), config, projections, name).map(AdaptedLinear::Vera)
            }
            Method::Full => Ok(AdaptedLinear::Plain(linear_trainable_named(linear.clone(), name))),
        };
        modules.push(report);
        match adapted {
            Ok(adapted) => adapted,
            Err(e) => {
                failure = Some(e);
                AdaptedLinear::Plain(linear)
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    progress(InjectProgress {
        done: total,
        total,
        module: "",
    });
    Ok((
        host,
        InjectionReport {
            modules,
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}

/// Parameters of `host` by group, with `config` telling which plain layers
/// train under full fine-tuning.
pub fn param_count<B: Backend, H: AdapterHost<B>>(host: &H, config: Option<&AdapterConfig>) -> ParamCount {
    let mut count = host.other_params();
    let full = config.filter(|c| c.method == Method::Full);
    host.visit_linears(&mut |name, layer| {
        let trainable_plain = full.is_some_and(|c| c.targets.matches(name));
        count += layer.param_count(trainable_plain);
    });
    count
}

/// Merges every adapter into its base weight (see [`crate::Mergeable`]).
pub fn merge<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    host.map_linears(&mut |_, layer| layer.merge())
}

/// Takes every merged update out of its base weight again.
pub fn unmerge<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    host.map_linears(&mut |_, layer| layer.unmerge())
}

/// Allows (`true`, the default) or forbids LoRA-XS layers to form
/// `W + s·BRA` per inference call over many tokens (see
/// [`crate::LoraXsLinear::fuses`]); forbidding it keeps the three thin
/// matmuls for every input size.
pub fn set_fused_inference<B: Backend, H: AdapterHost<B>>(host: H, on: bool) -> H {
    host.map_linears(&mut |_, layer| match layer {
        AdaptedLinear::LoraXs(mut xs) => {
            xs.fuse_inference = on;
            AdaptedLinear::LoraXs(xs)
        }
        other => other,
    })
}

/// Merges and drops every adapter: a plain model for serving.
pub fn merge_and_unload<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    host.map_linears(&mut |_, layer| layer.into_merged())
}

/// Removes every adapter (unmerging first where merged), restoring the
/// frozen base model.
pub fn unload<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    host.map_linears(&mut |_, layer| AdaptedLinear::Plain(layer.into_base()))
}
