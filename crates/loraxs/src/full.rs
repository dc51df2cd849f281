//! Full fine-tuning as a method: the targeted linear layers themselves
//! train. Its arithmetic ([`FullSpec`]) and its layer, burn's own
//! [`burn::nn::Linear`] made trainable.

use crate::AdapterConfig;
use crate::method::{MethodSpec, ModuleShape, TensorSpec};

/// Full fine-tuning's arithmetic: every value of the targeted layers
/// trains and is stored (`weight`: `out × in`, `bias`: `out`).
#[derive(Debug, Clone, Copy)]
pub struct FullSpec;

impl MethodSpec for FullSpec {
    fn name(&self) -> &'static str {
        "full"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["fft"]
    }

    fn has_rank(&self) -> bool {
        false
    }

    fn scale(&self, _: &AdapterConfig) -> f64 {
        1.0
    }

    fn trainable_values(&self, shape: ModuleShape, _: usize) -> usize {
        shape.base_values()
    }

    fn frozen_values(&self, _: ModuleShape, _: usize) -> usize {
        0
    }

    fn trains_base(&self) -> bool {
        true
    }

    fn file_tensors(&self, shape: ModuleShape, _: usize, _: bool) -> Vec<TensorSpec> {
        let mut out = vec![TensorSpec::module("weight", vec![shape.d_out, shape.d_in])];
        if shape.bias {
            out.push(TensorSpec::module("bias", vec![shape.d_out]));
        }
        out
    }
}

#[cfg(feature = "burn")]
mod layer {
    use burn::nn::Linear;
    use burn::tensor::{Tensor, backend::Backend};

    use crate::interop::{linear_trainable_named, replace_values, tensor_values, torch_weight};
    use crate::method::{AdapterLayer, FactorReport, ModuleShape};
    use crate::{AdapterConfig, Method, Result};

    /// A plain linear layer trains as it is; it has no separate update, so
    /// merging is a no-op.
    impl<B: Backend> AdapterLayer<B> for Linear<B> {
        const METHOD: Method = Method::Full;
        type Shared = ();

        fn shared(_: &AdapterConfig, _: &[ModuleShape]) {}

        fn adapt(base: Linear<B>, _: &AdapterConfig, module: &str, _: &()) -> Result<(Self, FactorReport)> {
            Ok((linear_trainable_named(base, module), FactorReport::default()))
        }

        fn base(&self) -> &Linear<B> {
            self
        }

        fn rank(&self) -> usize {
            0
        }

        fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
            Linear::forward(self, x)
        }

        fn file_values(&self, _: bool) -> Vec<Vec<f32>> {
            let mut out = vec![torch_weight(self)];
            if let Some(bias) = &self.bias {
                out.push(tensor_values(bias.val()));
            }
            out
        }

        fn load_file_values(mut self, values: &[&[f32]], _: bool) -> Self {
            self.weight = replace_values(self.weight, values[0], true);
            if let Some(bias) = self.bias.take() {
                self.bias = Some(replace_values(bias, values[1], false));
            }
            self
        }

        fn is_merged(&self) -> bool {
            false
        }

        fn merge(self) -> Self {
            self
        }

        fn unmerge(self) -> Self {
            self
        }

        fn into_base(self) -> Linear<B> {
            self
        }
    }
}
