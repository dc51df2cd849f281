//! The LoRA-XS linear layer.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend, module::linear};
use loraxs_svd::{SvdMethod, faer::MatRef, truncated_svd};

use crate::frozen::{frozen, linear_dims, tensor_values, tensor2, trainable_named, transpose};
use crate::init::{Stream, kaiming_uniform, normal, rng};
use crate::{AdapterConfig, AdapterError, Factors, RInit, Result};

/// A linear layer with a LoRA-XS adapter:
/// `y = W x + b + s · B R A x`, `s = alpha / r`.
///
/// `W`, `b`, `A = Σ_r V_rᵀ` and `B = U_r` are frozen; only the `r × r`
/// matrix `R` trains. The forward pass applies the three thin factors in
/// turn (`x·Aᵀ`, then `·(sR)ᵀ`, then `·Bᵀ`) and never forms the `out × in`
/// update, so the adapter costs `O(tokens · r · (in + out))`.
#[derive(Module, Debug)]
pub struct LoraXsLinear<B: Backend> {
    /// The frozen base layer (burn layout: weight `in × out`). Holds
    /// `W + s·BRA` while merged.
    pub base: Linear<B>,
    /// `Aᵀ = V_r Σ_r`, `in × r`, frozen.
    pub a: Param<Tensor<B, 2>>,
    /// `Bᵀ = U_rᵀ`, `r × out`, frozen.
    pub b: Param<Tensor<B, 2>>,
    /// `R`, `r × r` in the paper's orientation, trainable.
    pub r: Param<Tensor<B, 2>>,
    /// `alpha / r`.
    pub scale: f64,
    /// Whether the update is folded into `base`.
    pub merged: bool,
    /// Whether inference over many tokens may form `W + s·BRA` per call
    /// (see [`LoraXsLinear::fuses`]); on by default.
    pub fuse_inference: bool,
}

/// What the SVD of one module kept.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorReport {
    /// Fraction of spectral energy in the top `r` singular values.
    pub energy_kept: f64,
    /// `‖W − U_r Σ_r V_rᵀ‖_F / ‖W‖_F`.
    pub relative_error: f64,
    /// The SVD method actually used (None for random factors).
    pub svd_method: Option<SvdMethod>,
}

impl<B: Backend> LoraXsLinear<B> {
    /// Wraps a frozen `base` layer called `module`, deriving `A` and `B` as
    /// `config.factors` says and initialising `R` from `config.r_init`.
    pub fn from_linear(
        base: Linear<B>,
        config: &AdapterConfig,
        module: &str,
    ) -> Result<(Self, FactorReport)> {
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
        let (a_t, b_t, report) = match config.factors {
            Factors::Svd => svd_factors(&base, rank, config.svd_method, module)?,
            Factors::Random => {
                let a = kaiming_uniform(
                    &mut rng(config.seed, module, Stream::XsRandomA),
                    rank * d_in,
                    d_in,
                );
                let b = kaiming_uniform(
                    &mut rng(config.seed, module, Stream::XsRandomB),
                    d_out * rank,
                    rank,
                );
                // Drawn in PyTorch orientation (A: r×in, B: out×r), stored transposed.
                let a_t = transpose(&a, rank, d_in);
                let b_t = transpose(&b, d_out, rank);
                let report = FactorReport {
                    energy_kept: f64::NAN,
                    relative_error: f64::NAN,
                    svd_method: None,
                };
                (a_t, b_t, report)
            }
        };
        let r = match config.r_init {
            RInit::Gaussian { std } => normal(&mut rng(config.seed, module, Stream::XsR), rank * rank, std),
            RInit::Zeros => vec![0.0; rank * rank],
        };
        let layer = Self {
            base,
            a: frozen(tensor2(a_t, [d_in, rank], &device)),
            b: frozen(tensor2(b_t, [rank, d_out], &device)),
            r: trainable_named(tensor2(r, [rank, rank], &device), &format!("{module}.lora_xs.R")),
            scale: config.scale(),
            merged: false,
            fuse_inference: true,
        };
        Ok((layer, report))
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.r.dims()[0]
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        linear_dims(&self.base)
    }

    /// Applies the layer to `[..., in]`, giving `[..., out]`.
    ///
    /// Training (`R` tracked by autodiff) and short inputs take the
    /// factored path `W x + b + s·B(R(A x))`. Inference over many tokens
    /// forms `W + s·BRA` for this call instead (see
    /// [`LoraXsLinear::fuses`]): one `in × out` product per call instead of
    /// three thin ones per token, so an unmerged adapter costs about what a
    /// merged one does while `W` itself stays untouched.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.merged {
            return self.base.forward(x);
        }
        let (d_in, _) = self.dims();
        let tokens = x.shape().num_elements() / d_in.max(1);
        if self.fuses(tokens) {
            let weight = self.base.weight.val() + self.delta_weight();
            return linear(x, weight, self.base.bias.as_ref().map(|b| b.val()));
        }
        let y = self.base.forward(x.clone());
        y + self.adapter_forward(x)
    }

    /// Whether [`LoraXsLinear::forward`] forms the update for an input of
    /// `tokens` rows: only when `R` is not being trained (a gradient
    /// through `W + s·BRA` would cost as much as full fine-tuning's) and
    /// the thin path would cost more, i.e. when
    /// `tokens · (in + out) ≥ in · out`, and never when `fuse_inference`
    /// is off.
    pub fn fuses(&self, tokens: usize) -> bool {
        let (d_in, d_out) = self.dims();
        self.fuse_inference && !self.r.val().is_require_grad() && tokens * (d_in + d_out) >= d_in * d_out
    }

    /// The adapter branch alone, `s · B R A x`.
    pub fn adapter_forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // Scaling the r×r matrix costs r² multiplies instead of tokens × out.
        let r_scaled_t = self.r.val().transpose().mul_scalar(self.scale);
        let h = linear(x, self.a.val(), None);
        let h = linear(h, r_scaled_t, None);
        linear(h, self.b.val(), None)
    }

    /// `(s · B R A)ᵀ` in burn layout (`in × out`): the merged update.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        let r_scaled_t = self.r.val().transpose().mul_scalar(self.scale);
        self.a.val().matmul(r_scaled_t).matmul(self.b.val())
    }

    /// `A` in the paper's orientation (`r × in`).
    pub fn a_torch(&self) -> Tensor<B, 2> {
        self.a.val().transpose()
    }

    /// `B` in the paper's orientation (`out × r`).
    pub fn b_torch(&self) -> Tensor<B, 2> {
        self.b.val().transpose()
    }
}

fn svd_factors<B: Backend>(
    base: &Linear<B>,
    rank: usize,
    method: SvdMethod,
    module: &str,
) -> Result<(Vec<f32>, Vec<f32>, FactorReport)> {
    let (d_in, d_out) = linear_dims(base);
    // burn stores Wᵀ row-major, which is W (out × in) column-major: no copy.
    let w_t = tensor_values(base.weight.val());
    let w = MatRef::from_column_major_slice(&w_t, d_out, d_in);
    let svd = truncated_svd(w, rank, method).map_err(|source| AdapterError::Svd {
        module: module.into(),
        source,
    })?;
    let (u, v, s) = (svd.u(), svd.v(), svd.singular_values());
    // Aᵀ = V Σ (in × r) and Bᵀ = Uᵀ (r × out), both row-major.
    let mut a_t = Vec::with_capacity(d_in * rank);
    for i in 0..d_in {
        a_t.extend((0..rank).map(|j| v[(i, j)] * s[j]));
    }
    let mut b_t = Vec::with_capacity(rank * d_out);
    for j in 0..rank {
        b_t.extend((0..d_out).map(|i| u[(i, j)]));
    }
    let report = FactorReport {
        energy_kept: svd.energy_kept(),
        relative_error: svd.relative_error(),
        svd_method: Some(svd.method()),
    };
    Ok((a_t, b_t, report))
}
