//! VeRA (Kopiczko et al. 2024), PEFT-compatible: its arithmetic
//! ([`VeraSpec`]) and its layer ([`VeraLinear`]).

use crate::AdapterConfig;
use crate::method::{MethodSpec, ModuleShape, TensorSpec};

/// VeRA's arithmetic: the scaling vectors `d` (`r`) and `b` (`out`) train;
/// the shared random projections are frozen and redrawn from the seed on
/// load, so a file stores only the vectors.
#[derive(Debug, Clone, Copy)]
pub struct VeraSpec;

impl MethodSpec for VeraSpec {
    fn name(&self) -> &'static str {
        "vera"
    }

    /// VeRA's learned vectors make a scale unnecessary: always 1.
    fn scale(&self, _: &AdapterConfig) -> f64 {
        1.0
    }

    fn trainable_values(&self, shape: ModuleShape, rank: usize) -> usize {
        rank + shape.d_out
    }

    fn frozen_values(&self, shape: ModuleShape, rank: usize) -> usize {
        shape.base_values() + rank * (shape.d_in + shape.d_out)
    }

    fn file_tensors(&self, shape: ModuleShape, r: usize, _: bool) -> Vec<TensorSpec> {
        vec![
            TensorSpec::module("vera.lambda_d", vec![r]),
            TensorSpec::module("vera.lambda_b", vec![shape.d_out]),
        ]
    }
}

#[cfg(feature = "burn")]
pub use layer::{VeraLinear, VeraProjections};

#[cfg(feature = "burn")]
mod layer {
    use burn::module::{Module, Param};
    use burn::nn::{Dropout, DropoutConfig, Linear};
    use burn::tensor::{Tensor, backend::Backend, module::linear};

    use crate::init::{Stream, kaiming_uniform, rng};
    use crate::interop::{
        frozen, linear_dims, replace_values, tensor_values, tensor2, trainable_named, transpose,
    };
    use crate::method::{AdapterLayer, FactorReport, ModuleShape, merge_by_delta};
    use crate::{AdaptedLinear, AdapterConfig, Method, Result};

    /// A linear layer with a VeRA adapter:
    /// `y = W x + b + Λ_b B Λ_d A dropout(x)`.
    ///
    /// `A` (`r × in`) and `B` (`out × r`) are frozen random matrices shared
    /// by all adapted layers: like PEFT, one `r × max_in` and one
    /// `max_out × r` matrix are drawn from the seed and each layer uses
    /// their top-left corner. Only the vectors `d` (length `r`, starts at
    /// 0.1) and `b` (length `out`, starts at 0) train.
    #[derive(Module, Debug)]
    pub struct VeraLinear<B: Backend> {
        /// The frozen base layer.
        pub base: Linear<B>,
        /// `Aᵀ`, `in × r`, frozen, shared.
        pub a: Param<Tensor<B, 2>>,
        /// `Bᵀ`, `r × out`, frozen, shared.
        pub b: Param<Tensor<B, 2>>,
        /// `d`, length `r`, trainable.
        pub lambda_d: Param<Tensor<B, 1>>,
        /// `b`, length `out`, trainable.
        pub lambda_b: Param<Tensor<B, 1>>,
        /// Dropout on the adapter input.
        pub dropout: Dropout,
        /// Whether the update is folded into `base`.
        pub merged: bool,
    }

    /// The shared random projections of one model, PEFT's `vera_A`/`vera_B`.
    #[derive(Debug, Clone)]
    pub struct VeraProjections {
        rank: usize,
        max_in: usize,
        max_out: usize,
        /// `A`, `r × max_in`, row-major.
        a: Vec<f32>,
        /// `B`, `max_out × r`, row-major.
        b: Vec<f32>,
    }

    impl VeraProjections {
        /// Draws the projections for layers up to `max_in → max_out` from
        /// the config seed.
        pub fn new(config: &AdapterConfig, max_in: usize, max_out: usize) -> Self {
            let rank = config.rank;
            let a = kaiming_uniform(
                &mut rng(config.seed, "vera", Stream::VeraA),
                rank * max_in,
                max_in,
            );
            let b = kaiming_uniform(&mut rng(config.seed, "vera", Stream::VeraB), max_out * rank, rank);
            Self {
                rank,
                max_in,
                max_out,
                a,
                b,
            }
        }

        /// `Aᵀ` (`in × r`) and `Bᵀ` (`r × out`) for one layer, row-major.
        fn slices(&self, d_in: usize, d_out: usize) -> (Vec<f32>, Vec<f32>) {
            assert!(
                d_in <= self.max_in && d_out <= self.max_out,
                "projections too small"
            );
            let r = self.rank;
            let a: Vec<f32> = (0..r)
                .flat_map(|i| self.a[i * self.max_in..i * self.max_in + d_in].iter().copied())
                .collect();
            let b = &self.b[..d_out * r];
            (transpose(&a, r, d_in), transpose(b, d_out, r))
        }
    }

    impl<B: Backend> VeraLinear<B> {
        /// `Λ_d`-scaled `Aᵀ` and `Λ_b`-scaled `Bᵀ`: scaling the frozen
        /// matrices (`in × r`, `r × out`) by the vectors is cheaper than
        /// scaling the activations and gives the same product.
        fn scaled(&self) -> (Tensor<B, 2>, Tensor<B, 2>) {
            let rank = self.lambda_d.dims()[0];
            let d_out = self.lambda_b.dims()[0];
            let a = self.a.val() * self.lambda_d.val().reshape([1, rank]);
            let b = self.b.val() * self.lambda_b.val().reshape([1, d_out]);
            (a, b)
        }

        /// `(Λ_b B Λ_d A)ᵀ` in burn layout (`in × out`).
        pub fn delta_weight(&self) -> Tensor<B, 2> {
            let (a, b) = self.scaled();
            a.matmul(b)
        }
    }

    impl<B: Backend> AdapterLayer<B> for VeraLinear<B> {
        const METHOD: Method = Method::Vera;
        type Shared = VeraProjections;

        /// One pair of projections covering the widest targeted module.
        fn shared(config: &AdapterConfig, targeted: &[ModuleShape]) -> VeraProjections {
            let max_in = targeted.iter().map(|s| s.d_in).max().unwrap_or(0);
            let max_out = targeted.iter().map(|s| s.d_out).max().unwrap_or(0);
            VeraProjections::new(config, max_in, max_out)
        }

        fn adapt(
            base: Linear<B>,
            config: &AdapterConfig,
            module: &str,
            projections: &VeraProjections,
        ) -> Result<(Self, FactorReport)> {
            let (d_in, d_out) = linear_dims(&base);
            let rank = config.rank;
            Self::spec().check_module(module, ModuleShape::new(d_in, d_out, base.bias.is_some()), rank)?;
            let device = base.weight.device();
            let (a_t, b_t) = projections.slices(d_in, d_out);
            let layer = Self {
                base,
                a: frozen(tensor2(a_t, [d_in, rank], &device)),
                b: frozen(tensor2(b_t, [rank, d_out], &device)),
                lambda_d: trainable_named(
                    Tensor::full([rank], 0.1, &device),
                    &format!("{module}.vera.lambda_d"),
                ),
                lambda_b: trainable_named(
                    Tensor::zeros([d_out], &device),
                    &format!("{module}.vera.lambda_b"),
                ),
                dropout: DropoutConfig::new(config.dropout).init(),
                merged: false,
            };
            Ok((layer, FactorReport::default()))
        }

        fn rank(&self) -> usize {
            self.lambda_d.dims()[0]
        }

        fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
            let y = self.base.forward(x.clone());
            if self.merged {
                return y;
            }
            let (a, b) = self.scaled();
            linear(linear(self.dropout.forward(x), a, None), b, None) + y
        }

        fn file_values(&self, _: bool) -> Vec<Vec<f32>> {
            vec![
                tensor_values(self.lambda_d.val()),
                tensor_values(self.lambda_b.val()),
            ]
        }

        fn load_file_values(mut self, values: &[&[f32]], _: bool) -> Self {
            self.lambda_d = replace_values(self.lambda_d, values[0], false);
            self.lambda_b = replace_values(self.lambda_b, values[1], false);
            self
        }

        merge_by_delta!();
    }

    impl<B: Backend> From<VeraLinear<B>> for AdaptedLinear<B> {
        fn from(layer: VeraLinear<B>) -> Self {
            AdaptedLinear::Vera(layer)
        }
    }
}
