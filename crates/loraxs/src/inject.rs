//! Injecting adapters into a model by target-module name.

use std::time::Instant;

use burn::tensor::backend::Backend;
use loraxs_svd::SvdMethod;

use crate::adapted::Prepared;
use crate::interop::set_linear_trainable;
use crate::method::ModuleShape;
use crate::{AdaptedLinear, AdapterConfig, AdapterError, AdapterFile, ParamCount, Result, SaveOptions};

/// A model whose linear layers can carry adapters.
///
/// One method walks the model: [`AdapterHost::linears_mut`] calls a visitor
/// on every adaptable linear layer with its dotted Hugging Face name
/// (`encoder.layer.3.attention.self.query`), so PEFT-style targets select
/// the same modules as in PyTorch. Walk in one fixed order; adapter files
/// rely on it. Read-only walks ([`AdapterHost::linears`]) run the same
/// visitor over a clone, which for burn modules copies no tensor data.
pub trait AdapterHost<B: Backend>: Clone {
    /// Calls `visit` on every adaptable linear layer, in a fixed order.
    fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut AdaptedLinear<B>));

    /// Calls `visit` on every adaptable linear layer without changing the
    /// model. The default walks a clone with [`AdapterHost::linears_mut`];
    /// override it only to avoid that clone.
    fn linears(&self, visit: &mut dyn FnMut(&str, &AdaptedLinear<B>)) {
        self.clone().linears_mut(&mut |name, layer| visit(name, layer));
    }

    /// Parameters outside the adaptable linear layers: embeddings and norms
    /// count as frozen, task heads as head.
    fn other_params(&self) -> ParamCount {
        ParamCount::default()
    }
}

/// A model with adapters injected, together with the configuration that
/// made them and what injection measured: everything saving, counting and
/// merging need, in one value.
#[derive(Debug, Clone)]
pub struct Adapted<H> {
    /// The model.
    pub model: H,
    /// The adapter configuration.
    pub config: AdapterConfig,
    /// What injection (or loading) did, per module.
    pub report: InjectionReport,
}

impl<H> Adapted<H> {
    /// Applies `f` to the model, keeping config and report (e.g. after a
    /// training step, or to move it to another backend).
    pub fn map<H2>(self, f: impl FnOnce(H) -> H2) -> Adapted<H2> {
        Adapted {
            model: f(self.model),
            config: self.config,
            report: self.report,
        }
    }

    /// Parameters of the model by group.
    pub fn param_count<B: Backend>(&self) -> ParamCount
    where
        H: AdapterHost<B>,
    {
        param_count(&self.model, Some(&self.config))
    }

    /// The trained values as an adapter file (not yet written).
    pub fn to_file<B: Backend>(&self, options: SaveOptions) -> Result<AdapterFile>
    where
        H: AdapterHost<B>,
    {
        AdapterFile::from_model(&self.model, &self.config, options)
    }

    /// Saves the trained values to `path` (atomically).
    pub fn save<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        options: SaveOptions,
    ) -> Result<AdapterFile>
    where
        H: AdapterHost<B>,
    {
        let file = self.to_file(options)?;
        file.save(path)?;
        Ok(file)
    }

    /// Folds every update into its base weight (see [`merge`]).
    pub fn merge<B: Backend>(self) -> Self
    where
        H: AdapterHost<B>,
    {
        self.map(merge)
    }

    /// Takes every merged update out again (see [`unmerge`]).
    pub fn unmerge<B: Backend>(self) -> Self
    where
        H: AdapterHost<B>,
    {
        self.map(unmerge)
    }

    /// Merges and drops the adapters: a plain model for serving.
    pub fn merge_and_unload<B: Backend>(self) -> H
    where
        H: AdapterHost<B>,
    {
        merge_and_unload(self.model)
    }

    /// Removes the adapters, giving the frozen base model back.
    pub fn unload<B: Backend>(self) -> H
    where
        H: AdapterHost<B>,
    {
        unload(self.model)
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

/// The adaptable linear layers of a model: names, shapes and methods, in
/// model order.
pub fn linear_layers<B: Backend, H: AdapterHost<B>>(
    host: &H,
) -> Vec<(String, ModuleShape, Option<crate::Method>)> {
    let mut out = Vec::new();
    host.linears(&mut |name, layer| out.push((name.to_string(), layer.shape(), layer.method())));
    out
}

/// The modules `config` targets, with their shapes, in model order. Fails
/// when a pattern matches nothing, listing what is available.
pub fn targeted_modules<B: Backend, H: AdapterHost<B>>(
    host: &H,
    config: &AdapterConfig,
) -> Result<Vec<(String, ModuleShape)>> {
    let layers = linear_layers(host);
    for pattern in config.targets.patterns() {
        if !layers
            .iter()
            .any(|(n, _, _)| crate::targets::pattern_matches(pattern, n))
        {
            return Err(AdapterError::TargetNotFound {
                pattern: pattern.clone(),
                available: layers.into_iter().map(|(n, _, _)| n).collect(),
            });
        }
    }
    Ok(layers
        .into_iter()
        .filter(|(n, _, _)| config.targets.matches(n))
        .map(|(n, s, _)| (n, s))
        .collect())
}

/// Replaces every targeted linear layer of `host` by the adapter `config`
/// describes, and freezes every other adaptable layer.
///
/// All checks that need no arithmetic (config values, targets, ranks,
/// modules already adapted) run before the model is touched.
pub fn inject<B: Backend, H: AdapterHost<B>>(host: H, config: &AdapterConfig) -> Result<Adapted<H>> {
    inject_with_progress(host, config, &mut |_| {})
}

/// [`inject`], calling `progress` before each module (SVDs can take a
/// while on large models) and once at the end.
pub fn inject_with_progress<B: Backend, H: AdapterHost<B>>(
    mut host: H,
    config: &AdapterConfig,
    progress: &mut dyn FnMut(InjectProgress<'_>),
) -> Result<Adapted<H>> {
    let start = Instant::now();
    config.validate()?;
    let spec = config.method.spec();
    let targeted = targeted_modules(&host, config)?;
    for (name, shape, method) in linear_layers(&host) {
        if !config.targets.matches(&name) {
            continue;
        }
        if let Some(method) = method {
            return Err(AdapterError::AlreadyAdapted {
                module: name,
                method: method.name(),
            });
        }
        spec.check_module(&name, shape, config.rank)?;
    }
    let shapes: Vec<ModuleShape> = targeted.iter().map(|(_, s)| *s).collect();
    let prepared = Prepared::<B>::new(config, &shapes);

    let total = targeted.len();
    let mut modules = Vec::with_capacity(total);
    let mut failure = None;
    host.linears_mut(&mut |name, layer| {
        let AdaptedLinear::Plain(linear) = layer else {
            return;
        };
        let linear = set_linear_trainable(linear.clone(), false);
        if failure.is_some() || !config.targets.matches(name) {
            *layer = AdaptedLinear::Plain(linear);
            return;
        }
        progress(InjectProgress {
            done: modules.len(),
            total,
            module: name,
        });
        let shape = layer.shape();
        match prepared.adapt(linear, config, name) {
            Ok((adapted, factors)) => {
                modules.push(ModuleReport {
                    name: name.to_string(),
                    d_in: shape.d_in,
                    d_out: shape.d_out,
                    energy_kept: factors.energy_kept,
                    relative_error: factors.relative_error,
                    svd_method: factors.svd_method,
                });
                *layer = adapted;
            }
            Err(e) => failure = Some(e),
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
    Ok(Adapted {
        model: host,
        config: config.clone(),
        report: InjectionReport {
            modules,
            seconds: start.elapsed().as_secs_f64(),
        },
    })
}

/// Parameters of `host` by group, with `config` telling which plain layers
/// train under full fine-tuning.
pub fn param_count<B: Backend, H: AdapterHost<B>>(host: &H, config: Option<&AdapterConfig>) -> ParamCount {
    let mut count = host.other_params();
    let trains_base = config.filter(|c| c.method.spec().trains_base());
    host.linears(&mut |name, layer| {
        let trainable_plain = trains_base.is_some_and(|c| c.targets.matches(name));
        count += layer.param_count(trainable_plain);
    });
    count
}

/// Applies `f` to every adaptable layer of `host`.
fn map_layers<B: Backend, H: AdapterHost<B>>(mut host: H, f: fn(AdaptedLinear<B>) -> AdaptedLinear<B>) -> H {
    host.linears_mut(&mut |_, layer| layer.replace_with(f));
    host
}

/// Merges every adapter into its base weight (see
/// [`crate::AdapterLayer::merge`]).
pub fn merge<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    map_layers(host, AdaptedLinear::merge)
}

/// Takes every merged update out of its base weight again.
pub fn unmerge<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    map_layers(host, AdaptedLinear::unmerge)
}

/// Merges and drops every adapter: a plain model for serving.
pub fn merge_and_unload<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    map_layers(host, AdaptedLinear::into_merged)
}

/// Removes every adapter (unmerging first where merged), restoring the
/// frozen base model.
pub fn unload<B: Backend, H: AdapterHost<B>>(host: H) -> H {
    map_layers(host, |layer| AdaptedLinear::Plain(layer.into_base()))
}
