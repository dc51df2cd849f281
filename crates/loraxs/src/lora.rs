//! The LoRA baseline (Hu et al. 2021), PEFT-compatible.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Tensor, backend::Backend, module::linear};

use crate::frozen::{linear_dims, tensor2, trainable_named, transpose};
use crate::init::{Stream, kaiming_uniform, rng};
use crate::{AdapterConfig, AdapterError, Result};

/// A linear layer with a LoRA adapter: `y = W x + b + s · B A dropout(x)`.
///
/// `A` (`r × in`) starts Kaiming-uniform and `B` (`out × r`) at zero, as in
/// PEFT, so the adapted model starts exactly at the base model.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The frozen base layer.
    pub base: Linear<B>,
    /// `Aᵀ`, `in × r`, trainable.
    pub a: Param<Tensor<B, 2>>,
    /// `Bᵀ`, `r × out`, trainable.
    pub b: Param<Tensor<B, 2>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// `alpha / r`.
    pub scale: f64,
    /// Whether the update is folded into `base`.
    pub merged: bool,
}

impl<B: Backend> LoraLinear<B> {
    /// Wraps a frozen `base` layer called `module`.
    pub fn from_linear(base: Linear<B>, config: &AdapterConfig, module: &str) -> Result<Self> {
        let (d_in, d_out) = linear_dims(&base);
        let rank = config.rank;
        if rank == 0 || rank > d_in.min(d_out) {
            return Err(AdapterError::RankTooLarge {
                module: module.into(),
                rank,
                max: d_in.min(d_out),
            });
        }
        let device = base.weight.device();
        let a = kaiming_uniform(&mut rng(config.seed, module, Stream::LoraA), rank * d_in, d_in);
        Ok(Self {
            base,
            a: trainable_named(
                tensor2(transpose(&a, rank, d_in), [d_in, rank], &device),
                &format!("{module}.lora.A"),
            ),
            b: trainable_named(Tensor::zeros([rank, d_out], &device), &format!("{module}.lora.B")),
            dropout: DropoutConfig::new(config.dropout).init(),
            scale: config.scale(),
            merged: false,
        })
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// Applies the layer to `[..., in]`, giving `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = self.base.forward(x.clone());
        if self.merged {
            return y;
        }
        let h = linear(self.dropout.forward(x), self.a.val(), None);
        y + linear(h, self.b.val().mul_scalar(self.scale), None)
    }

    /// `(s · B A)ᵀ` in burn layout (`in × out`).
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}
