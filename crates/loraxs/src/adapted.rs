//! One type for every linear layer a model may adapt.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

use crate::interop::set_linear_trainable;
use crate::method::{AdapterLayer, FactorReport, ModuleShape};
use crate::{AdapterConfig, LoraLinear, LoraXsLinear, Method, ParamCount, Result, VeraLinear};

/// A linear layer of a model that injection may replace: a plain layer
/// (frozen, or trainable under full fine-tuning) or one carrying an adapter.
///
/// Models hold their adaptable layers as `AdaptedLinear` so that one model
/// type serves every method. Each variant implements [`AdapterLayer`];
/// this type only dispatches.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AdaptedLinear<B: Backend> {
    /// A plain linear layer (frozen, or trained by full fine-tuning).
    Plain(Linear<B>),
    /// A LoRA-XS adapter.
    LoraXs(LoraXsLinear<B>),
    /// A LoRA adapter.
    Lora(LoraLinear<B>),
    /// A VeRA adapter.
    Vera(VeraLinear<B>),
}

/// Runs `$body` with `$l` bound to the variant's layer (an
/// [`AdapterLayer`]); `$wrap` rebuilds the enum from a layer of the same
/// variant.
macro_rules! dispatch {
    ($self:expr, $l:ident => $body:expr) => {
        match $self {
            AdaptedLinear::Plain($l) => $body,
            AdaptedLinear::LoraXs($l) => $body,
            AdaptedLinear::Lora($l) => $body,
            AdaptedLinear::Vera($l) => $body,
        }
    };
    ($self:expr, $l:ident => wrap $body:expr) => {
        match $self {
            AdaptedLinear::Plain($l) => AdaptedLinear::Plain($body),
            AdaptedLinear::LoraXs($l) => AdaptedLinear::LoraXs($body),
            AdaptedLinear::Lora($l) => AdaptedLinear::Lora($body),
            AdaptedLinear::Vera($l) => AdaptedLinear::Vera($body),
        }
    };
}

impl<B: Backend> From<Linear<B>> for AdaptedLinear<B> {
    fn from(linear: Linear<B>) -> Self {
        AdaptedLinear::Plain(linear)
    }
}

/// Per-method preparation for one injection: the shared state of the
/// configured method, built once from the targeted shapes.
pub(crate) enum Prepared<B: Backend> {
    Full(<Linear<B> as AdapterLayer<B>>::Shared),
    LoraXs(<LoraXsLinear<B> as AdapterLayer<B>>::Shared),
    Lora(<LoraLinear<B> as AdapterLayer<B>>::Shared),
    Vera(<VeraLinear<B> as AdapterLayer<B>>::Shared),
}

impl<B: Backend> Prepared<B> {
    /// The shared state of `config.method` for these targeted modules.
    // Most methods share nothing: their `Shared` is `()`, passed on as is.
    #[allow(clippy::unit_arg)]
    pub(crate) fn new(config: &AdapterConfig, targeted: &[ModuleShape]) -> Self {
        match config.method {
            Method::Full => Self::Full(Linear::<B>::shared(config, targeted)),
            Method::LoraXs => Self::LoraXs(LoraXsLinear::<B>::shared(config, targeted)),
            Method::Lora => Self::Lora(LoraLinear::<B>::shared(config, targeted)),
            Method::Vera => Self::Vera(VeraLinear::<B>::shared(config, targeted)),
        }
    }

    /// Adapts the frozen `base` layer called `module`.
    pub(crate) fn adapt(
        &self,
        base: Linear<B>,
        config: &AdapterConfig,
        module: &str,
    ) -> Result<(AdaptedLinear<B>, FactorReport)> {
        fn into<B: Backend, L: AdapterLayer<B>>(
            r: Result<(L, FactorReport)>,
        ) -> Result<(AdaptedLinear<B>, FactorReport)> {
            r.map(|(l, f)| (l.into(), f))
        }
        match self {
            Self::Full(s) => into(Linear::adapt(base, config, module, s)),
            Self::LoraXs(s) => into(LoraXsLinear::adapt(base, config, module, s)),
            Self::Lora(s) => into(LoraLinear::adapt(base, config, module, s)),
            Self::Vera(s) => into(VeraLinear::adapt(base, config, module, s)),
        }
    }
}

impl<B: Backend> AdaptedLinear<B> {
    /// Applies the layer to `[..., in]`, giving `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        dispatch!(self, l => l.forward(x))
    }

    /// The method of the adapter, `None` for a plain layer.
    pub fn method(&self) -> Option<Method> {
        match self {
            AdaptedLinear::Plain(_) => None,
            AdaptedLinear::LoraXs(_) => Some(Method::LoraXs),
            AdaptedLinear::Lora(_) => Some(Method::Lora),
            AdaptedLinear::Vera(_) => Some(Method::Vera),
        }
    }

    /// Whether this layer is what `method` makes of a targeted layer (a
    /// plain layer is what full fine-tuning makes).
    pub fn carries(&self, method: Method) -> bool {
        self.method().unwrap_or(Method::Full) == method
    }

    /// The (possibly merged) base layer.
    pub fn base(&self) -> &Linear<B> {
        dispatch!(self, l => l.base())
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        let s = self.shape();
        (s.d_in, s.d_out)
    }

    /// The shape of the base layer.
    pub fn shape(&self) -> ModuleShape {
        dispatch!(self, l => l.shape())
    }

    /// The adapter's rank (0 for a plain layer).
    pub fn rank(&self) -> usize {
        dispatch!(self, l => l.rank())
    }

    /// Whether an adapter's update is folded into the base weight.
    pub fn is_merged(&self) -> bool {
        dispatch!(self, l => l.is_merged())
    }

    /// Folds any adapter update into the base weight (see
    /// [`AdapterLayer::merge`]).
    pub fn merge(self) -> Self {
        dispatch!(self, l => wrap l.merge())
    }

    /// Takes a merged update out of the base weight again.
    pub fn unmerge(self) -> Self {
        dispatch!(self, l => wrap l.unmerge())
    }

    /// Merges and drops the adapter, leaving a plain frozen layer: what a
    /// deployment serves.
    pub fn into_merged(self) -> Self {
        let linear = dispatch!(self, l => l.merge().into_base());
        AdaptedLinear::Plain(set_linear_trainable(linear, false))
    }

    /// Removes any adapter, giving the frozen base layer back (a merged
    /// update is subtracted first).
    pub fn into_base(self) -> Linear<B> {
        let linear = dispatch!(self, l => l.unmerge().into_base());
        set_linear_trainable(linear, false)
    }

    /// The values an adapter file stores for this layer (see
    /// [`AdapterLayer::file_values`]).
    pub fn file_values(&self, factors_stored: bool) -> Vec<Vec<f32>> {
        dispatch!(self, l => l.file_values(factors_stored))
    }

    /// Loads stored values (see [`AdapterLayer::load_file_values`]).
    pub fn load_file_values(self, values: &[&[f32]], factors_stored: bool) -> Self {
        dispatch!(self, l => wrap l.load_file_values(values, factors_stored))
    }

    /// Parameters by group. `trainable_plain` says whether a plain layer
    /// trains (full fine-tuning) or is frozen.
    pub fn param_count(&self, trainable_plain: bool) -> ParamCount {
        let shape = self.shape();
        match self.method() {
            None if trainable_plain => ParamCount {
                adapter: shape.base_values(),
                ..ParamCount::default()
            },
            None => ParamCount::frozen(shape.base_values()),
            Some(method) => {
                let (spec, rank) = (method.spec(), self.rank());
                ParamCount {
                    adapter: spec.trainable_values(shape, rank),
                    frozen: spec.frozen_values(shape, rank),
                    head: 0,
                }
            }
        }
    }

    /// Replaces the layer in place by `f` of it (burn modules are
    /// reference-counted, so the clone this takes costs no tensor copy).
    pub fn replace_with(&mut self, f: impl FnOnce(Self) -> Self) {
        *self = f(self.clone());
    }
}
