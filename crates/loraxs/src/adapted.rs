//! One type for every linear layer a model may adapt.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

use crate::frozen::{linear_dims, set_linear_trainable};
use crate::{LoraLinear, LoraXsLinear, Mergeable, Method, ParamCount, VeraLinear};

/// A linear layer of a model that injection may replace: a plain layer
/// (frozen, or trainable under full fine-tuning) or one carrying an adapter.
///
/// Models hold their adaptable layers as `AdaptedLinear` so that one model
/// type serves every method.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AdaptedLinear<B: Backend> {
    /// A plain linear layer.
    Plain(Linear<B>),
    /// A LoRA-XS adapter.
    LoraXs(LoraXsLinear<B>),
    /// A LoRA adapter.
    Lora(LoraLinear<B>),
    /// A VeRA adapter.
    Vera(VeraLinear<B>),
}

impl<B: Backend> From<Linear<B>> for AdaptedLinear<B> {
    fn from(linear: Linear<B>) -> Self {
        AdaptedLinear::Plain(linear)
    }
}

impl<B: Backend> AdaptedLinear<B> {
    /// Applies the layer to `[..., in]`, giving `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            AdaptedLinear::Plain(l) => l.forward(x),
            AdaptedLinear::LoraXs(l) => l.forward(x),
            AdaptedLinear::Lora(l) => l.forward(x),
            AdaptedLinear::Vera(l) => l.forward(x),
        }
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

    /// The (possibly merged) base layer.
    pub fn base(&self) -> &Linear<B> {
        match self {
            AdaptedLinear::Plain(l) => l,
            AdaptedLinear::LoraXs(l) => &l.base,
            AdaptedLinear::Lora(l) => &l.base,
            AdaptedLinear::Vera(l) => &l.base,
        }
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        linear_dims(self.base())
    }

    /// Whether an adapter's update is folded into the base weight.
    pub fn is_merged(&self) -> bool {
        match self {
            AdaptedLinear::Plain(_) => false,
            AdaptedLinear::LoraXs(l) => l.merged,
            AdaptedLinear::Lora(l) => l.merged,
            AdaptedLinear::Vera(l) => l.merged,
        }
    }

    /// Folds any adapter update into the base weight (see [`Mergeable`]).
    pub fn merge(self) -> Self {
        match self {
            AdaptedLinear::Plain(l) => AdaptedLinear::Plain(l),
            AdaptedLinear::LoraXs(l) => AdaptedLinear::LoraXs(l.merge()),
            AdaptedLinear::Lora(l) => AdaptedLinear::Lora(l.merge()),
            AdaptedLinear::Vera(l) => AdaptedLinear::Vera(l.merge()),
        }
    }

    /// Takes a merged update out of the base weight again.
    pub fn unmerge(self) -> Self {
        match self {
            AdaptedLinear::Plain(l) => AdaptedLinear::Plain(l),
            AdaptedLinear::LoraXs(l) => AdaptedLinear::LoraXs(l.unmerge()),
            AdaptedLinear::Lora(l) => AdaptedLinear::Lora(l.unmerge()),
            AdaptedLinear::Vera(l) => AdaptedLinear::Vera(l.unmerge()),
        }
    }

    /// Merges and drops the adapter, leaving a plain frozen layer: what a
    /// deployment serves.
    pub fn into_merged(self) -> Self {
        let linear = match self {
            AdaptedLinear::Plain(l) => l,
            AdaptedLinear::LoraXs(l) => l.into_merged_linear(),
            AdaptedLinear::Lora(l) => l.into_merged_linear(),
            AdaptedLinear::Vera(l) => l.into_merged_linear(),
        };
        AdaptedLinear::Plain(set_linear_trainable(linear, false))
    }

    /// Removes any adapter, giving the frozen base layer back (a merged
    /// update is subtracted first, see [`Mergeable::unmerge`]).
    pub fn into_base(self) -> Linear<B> {
        let linear = match self.unmerge() {
            AdaptedLinear::Plain(l) => l,
            AdaptedLinear::LoraXs(l) => l.base,
            AdaptedLinear::Lora(l) => l.base,
            AdaptedLinear::Vera(l) => l.base,
        };
        set_linear_trainable(linear, false)
    }

    /// Parameters by group. `trainable_plain` says whether a plain layer
    /// trains (full fine-tuning) or is frozen.
    pub fn param_count(&self, trainable_plain: bool) -> ParamCount {
        let (d_in, d_out) = self.dims();
        let base = d_in * d_out + if self.base().bias.is_some() { d_out } else { 0 };
        match self {
            AdaptedLinear::Plain(_) if trainable_plain => ParamCount {
                adapter: base,
                ..ParamCount::default()
            },
            AdaptedLinear::Plain(_) => ParamCount::frozen(base),
            AdaptedLinear::LoraXs(l) => {
                let r = l.rank();
                ParamCount {
                    adapter: r * r,
                    frozen: base + r * (d_in + d_out),
                    head: 0,
                }
            }
            AdaptedLinear::Lora(l) => {
                let r = l.rank();
                ParamCount {
                    adapter: r * (d_in + d_out),
                    frozen: base,
                    head: 0,
                }
            }
            AdaptedLinear::Vera(l) => {
                let r = l.rank();
                ParamCount {
                    adapter: r + d_out,
                    frozen: base + r * (d_in + d_out),
                    head: 0,
                }
            }
        }
    }
}
