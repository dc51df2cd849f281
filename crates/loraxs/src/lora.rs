//! LoRA (Hu et al. 2021), PEFT-compatible: its arithmetic ([`LoraSpec`])
//! and its layer ([`LoraLinear`]).

use crate::AdapterConfig;
use crate::method::{MethodSpec, ModuleShape, TensorSpec};

/// LoRA's arithmetic: `r (in + out)` trainable values per module, stored
/// as PEFT stores them (`lora.A`: `r × in`, `lora.B`: `out × r`).
#[derive(Debug, Clone, Copy)]
pub struct LoraSpec;

impl MethodSpec for LoraSpec {
    fn name(&self) -> &'static str {
        "lora"
    }

    fn scale(&self, config: &AdapterConfig) -> f64 {
        config.alpha / config.rank as f64
    }

    fn trainable_values(&self, shape: ModuleShape, rank: usize) -> usize {
        rank * (shape.d_in + shape.d_out)
    }

    fn frozen_values(&self, shape: ModuleShape, _: usize) -> usize {
        shape.base_values()
    }

    fn file_tensors(&self, shape: ModuleShape, r: usize, _: bool) -> Vec<TensorSpec> {
        vec![
            TensorSpec::module("lora.A", vec![r, shape.d_in]),
            TensorSpec::module("lora.B", vec![shape.d_out, r]),
        ]
    }
}

#[cfg(feature = "burn")]
pub use layer::LoraLinear;

#[cfg(feature = "burn")]
mod layer {
    use burn::module::{Module, Param};
    use burn::nn::{Dropout, DropoutConfig, Linear};
    use burn::tensor::{Tensor, backend::Backend, module::linear};

    use crate::init::{Stream, kaiming_uniform, rng};
    use crate::interop::{linear_dims, replace_values, tensor2, torch_values, trainable_named, transpose};
    use crate::method::{AdapterLayer, FactorReport, ModuleShape, merge_by_delta};
    use crate::{AdaptedLinear, AdapterConfig, Method, Result};

    /// A linear layer with a LoRA adapter: `y = W x + b + s · B A dropout(x)`.
    ///
    /// `A` (`r × in`) starts Kaiming-uniform and `B` (`out × r`) at zero, as
    /// in PEFT, so the adapted model starts exactly at the base model.
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
        /// `(s · B A)ᵀ` in burn layout (`in × out`).
        pub fn delta_weight(&self) -> Tensor<B, 2> {
            self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
        }
    }

    impl<B: Backend> AdapterLayer<B> for LoraLinear<B> {
        const METHOD: Method = Method::Lora;
        type Shared = ();

        fn shared(_: &AdapterConfig, _: &[ModuleShape]) {}

        fn adapt(
            base: Linear<B>,
            config: &AdapterConfig,
            module: &str,
            _: &(),
        ) -> Result<(Self, FactorReport)> {
            let (d_in, d_out) = linear_dims(&base);
            let rank = config.rank;
            Self::spec().check_module(module, ModuleShape::new(d_in, d_out, base.bias.is_some()), rank)?;
            let device = base.weight.device();
            let a = kaiming_uniform(&mut rng(config.seed, module, Stream::LoraA), rank * d_in, d_in);
            let layer = Self {
                base,
                a: trainable_named(
                    tensor2(transpose(&a, rank, d_in), [d_in, rank], &device),
                    &format!("{module}.lora.A"),
                ),
                b: trainable_named(Tensor::zeros([rank, d_out], &device), &format!("{module}.lora.B")),
                dropout: DropoutConfig::new(config.dropout).init(),
                scale: config.scale(),
                merged: false,
            };
            Ok((layer, FactorReport::default()))
        }

        fn rank(&self) -> usize {
            self.a.dims()[1]
        }

        fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
            let y = self.base.forward(x.clone());
            if self.merged {
                return y;
            }
            let h = linear(self.dropout.forward(x), self.a.val(), None);
            y + linear(h, self.b.val().mul_scalar(self.scale), None)
        }

        fn file_values(&self, _: bool) -> Vec<Vec<f32>> {
            vec![torch_values(&self.a), torch_values(&self.b)]
        }

        fn load_file_values(mut self, values: &[&[f32]], _: bool) -> Self {
            self.a = replace_values(self.a, values[0], true);
            self.b = replace_values(self.b, values[1], true);
            self
        }

        merge_by_delta!();
    }

    impl<B: Backend> From<LoraLinear<B>> for AdaptedLinear<B> {
        fn from(layer: LoraLinear<B>) -> Self {
            AdaptedLinear::Lora(layer)
        }
    }
}
