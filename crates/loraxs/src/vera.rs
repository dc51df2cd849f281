//! The VeRA baseline (Kopiczko et al. 2024), PEFT-compatible.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Tensor, backend::Backend, module::linear};

use crate::frozen::{frozen, linear_dims, tensor2, trainable_named, transpose};
use crate::init::{Stream, kaiming_uniform, rng};
use crate::{AdapterConfig, Result};

/// A linear layer with a VeRA adapter:
/// `y = W x + b + Λ_b B Λ_d A dropout(x)`.
///
/// `A` (`r × in`) and `B` (`out × r`) are frozen random matrices shared by
/// all adapted layers: like PEFT, one `r × max_in` and one `max_out × r`
/// matrix are drawn from the seed and each layer uses their top-left
/// corner. Only the vectors `d` (length `r`, starts at 0.1) and `b` (length
/// `out`, starts at 0) train.
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
    /// Draws the projections for layers up to `max_in → max_out` from the
    /// config seed.
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
    /// Wraps a frozen `base` layer called `module` with the shared
    /// `projections`.
    pub fn from_linear(
        base: Linear<B>,
        config: &AdapterConfig,
        projections: &VeraProjections,
        module: &str,
    ) -> Result<Self> {
        let (d_in, d_out) = linear_dims(&base);
        let rank = config.rank;
        let device = base.weight.device();
        let (a_t, b_t) = projections.slices(d_in, d_out);
        Ok(Self {
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
        })
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.lambda_d.dims()[0]
    }

    /// Applies the layer to `[..., in]`, giving `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let y = self.base.forward(x.clone());
        if self.merged {
            return y;
        }
        // Scaling the frozen matrices (r × in, r × out) by the vectors is
        // cheaper than scaling the activations and gives the same product.
        let rank = self.rank();
        let d_out = self.lambda_b.dims()[0];
        let a = self.a.val() * self.lambda_d.val().reshape([1, rank]);
        let b = self.b.val() * self.lambda_b.val().reshape([1, d_out]);
        linear(linear(self.dropout.forward(x), a, None), b, None) + y
    }

    /// `(Λ_b B Λ_d A)ᵀ` in burn layout (`in × out`).
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        let rank = self.rank();
        let d_out = self.lambda_b.dims()[0];
        let a = self.a.val() * self.lambda_d.val().reshape([1, rank]);
        let b = self.b.val() * self.lambda_b.val().reshape([1, d_out]);
        a.matmul(b)
    }
}
