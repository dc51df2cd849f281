//! LoRA-XS: its parameter arithmetic and file layout ([`LoraXsSpec`]) and
//! its layer ([`LoraXsLinear`]).

use crate::method::{MethodSpec, ModuleShape, TensorSpec};

/// The name of the stacked `R` tensor in adapter files
/// (`modules × r × r`, modules in model order).
pub const LORA_XS_R: &str = "lora_xs.R";

/// LoRA-XS's arithmetic: `r²` trainable values per module whatever its
/// width; the frozen factors `A` (`r × in`) and `B` (`out × r`) are
/// recomputed from the base weight on load unless the file stores them.
#[derive(Debug, Clone, Copy)]
pub struct LoraXsSpec;

impl MethodSpec for LoraXsSpec {
    fn name(&self) -> &'static str {
        "lora-xs"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["loraxs", "lora_xs"]
    }

    fn trainable_values(&self, _: ModuleShape, rank: usize) -> usize {
        rank * rank
    }

    fn frozen_values(&self, shape: ModuleShape, rank: usize) -> usize {
        shape.base_values() + rank * (shape.d_in + shape.d_out)
    }

    fn has_stored_factors(&self) -> bool {
        true
    }

    fn file_tensors(&self, shape: ModuleShape, r: usize, factors_stored: bool) -> Vec<TensorSpec> {
        let mut out = vec![TensorSpec::stacked(LORA_XS_R, vec![r, r])];
        if factors_stored {
            out.push(TensorSpec::module("lora_xs.A", vec![r, shape.d_in]));
            out.push(TensorSpec::module("lora_xs.B", vec![shape.d_out, r]));
        }
        out
    }
}

#[cfg(feature = "burn")]
pub use layer::{LoraXsLinear, set_fused_inference};

#[cfg(feature = "burn")]
mod layer {
    use burn::module::{Module, Param};
    use burn::nn::Linear;
    use burn::tensor::{Tensor, backend::Backend, module::linear};
    use loraxs_svd::{SvdMethod, faer::MatRef, truncated_svd};

    use crate::init::{Stream, kaiming_uniform, normal, rng};
    use crate::interop::{
        frozen, linear_dims, replace_values, tensor_values, tensor2, torch_values, trainable_named, transpose,
    };
    use crate::method::{AdapterLayer, FactorReport, ModuleShape, merge_by_delta};
    use crate::{AdaptedLinear, AdapterConfig, AdapterError, AdapterHost, Factors, Method, RInit, Result};

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
        /// Set by [`AdapterBank::route`](crate::AdapterBank::route): one
        /// already-scaled `s·R` per row of the batch (`[batch, r, r]`), so
        /// each row goes through its own adapter while `x·Aᵀ` and `·Bᵀ`
        /// run once for the whole batch. `None` outside a bank.
        pub routed: Option<Param<Tensor<B, 3>>>,
    }

    impl<B: Backend> LoraXsLinear<B> {
        /// Wraps a frozen `base` layer called `module`, deriving `A` and `B` as
        /// `config.factors` says and initialising `R` from `config.r_init`.
        fn build(base: Linear<B>, config: &AdapterConfig, module: &str) -> Result<(Self, FactorReport)> {
            let (d_in, d_out) = linear_dims(&base);
            let rank = config.rank;
            <Self as AdapterLayer<B>>::spec().check_module(
                module,
                ModuleShape::new(d_in, d_out, base.bias.is_some()),
                rank,
            )?;
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
                    (a_t, b_t, FactorReport::default())
                }
            };
            let r = match config.r_init {
                RInit::Gaussian { std } => {
                    normal(&mut rng(config.seed, module, Stream::XsR), rank * rank, std)
                }
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
                routed: None,
            };
            Ok((layer, report))
        }

        /// `(in, out)`.
        pub fn dims(&self) -> (usize, usize) {
            linear_dims(&self.base)
        }

        /// Applies the layer to `[..., in]`, giving `[..., out]`; see
        /// [`AdapterLayer::forward`].
        ///
        /// Training (`R` tracked by autodiff) and short inputs take the
        /// factored path `W x + b + s·B(R(A x))`. Inference over many tokens
        /// forms `W + s·BRA` for this call instead (see
        /// [`LoraXsLinear::fuses`]): one `in × out` product per call instead of
        /// three thin ones per token, so an unmerged adapter costs about what a
        /// merged one does while `W` itself stays untouched.
        fn forward_impl<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
            if let Some(rows) = &self.routed {
                return self.routed_forward(x, rows.val());
            }
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

        /// `W x + b + B (s_i R_i) A x` for each row `i` of the batch (the
        /// first dimension of `x`), with `rows[i] = s_i R_i`: the shared
        /// products `x·Aᵀ` and `·Bᵀ` over the whole batch, one batched
        /// `r × r` product in between.
        ///
        /// # Panics
        /// When `x`'s first dimension is not the routed batch size (the
        /// model was routed for another batch).
        fn routed_forward<const D: usize>(&self, x: Tensor<B, D>, rows: Tensor<B, 3>) -> Tensor<B, D> {
            let [batch, r, _] = rows.dims();
            let leading = x.dims()[0];
            assert_eq!(
                leading, batch,
                "the model was routed for a batch of {batch} rows, the input has {leading}"
            );
            let y = self.base.forward(x.clone());
            let h = linear(x, self.a.val(), None);
            let dims = h.dims();
            let per_row = h.shape().num_elements() / (batch * r).max(1);
            let h = h.reshape([batch, per_row, r]).matmul(rows.swap_dims(1, 2));
            y + linear(h.reshape(dims), self.b.val(), None)
        }

        /// Whether [`LoraXsLinear::forward`] forms the update for an input of
        /// `tokens` rows: only when `R` is not being trained (a gradient
        /// through `W + s·BRA` would cost as much as full fine-tuning's) and
        /// the thin path would cost more, i.e. when
        /// `tokens · (in + out) ≥ in · out`, and never when `fuse_inference`
        /// is off.
        pub fn fuses(&self, tokens: usize) -> bool {
            let (d_in, d_out) = self.dims();
            self.routed.is_none()
                && self.fuse_inference
                && !self.r.val().is_require_grad()
                && tokens * (d_in + d_out) >= d_in * d_out
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
            energy_kept: Some(svd.energy_kept()),
            relative_error: Some(svd.relative_error()),
            svd_method: Some(svd.method()),
        };
        Ok((a_t, b_t, report))
    }

    impl<B: Backend> AdapterLayer<B> for LoraXsLinear<B> {
        const METHOD: Method = Method::LoraXs;
        type Shared = ();

        fn shared(_: &AdapterConfig, _: &[ModuleShape]) {}

        fn adapt(
            base: Linear<B>,
            config: &AdapterConfig,
            module: &str,
            _: &(),
        ) -> Result<(Self, FactorReport)> {
            Self::build(base, config, module)
        }

        fn rank(&self) -> usize {
            self.r.dims()[0]
        }

        fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
            self.forward_impl(x)
        }

        fn file_values(&self, factors_stored: bool) -> Vec<Vec<f32>> {
            let mut out = vec![tensor_values(self.r.val())];
            if factors_stored {
                out.push(torch_values(&self.a));
                out.push(torch_values(&self.b));
            }
            out
        }

        fn load_file_values(mut self, values: &[&[f32]], factors_stored: bool) -> Self {
            self.r = replace_values(self.r, values[0], false);
            if factors_stored {
                self.a = replace_values(self.a, values[1], true);
                self.b = replace_values(self.b, values[2], true);
            }
            self
        }

        merge_by_delta!();
    }

    impl<B: Backend> From<LoraXsLinear<B>> for AdaptedLinear<B> {
        fn from(layer: LoraXsLinear<B>) -> Self {
            AdaptedLinear::LoraXs(layer)
        }
    }

    /// Allows (`true`, the default) or forbids the LoRA-XS layers of `host` to
    /// form `W + s·BRA` per inference call over many tokens (see
    /// [`LoraXsLinear::fuses`]); forbidding it keeps the three thin matmuls for
    /// every input size.
    pub fn set_fused_inference<B: Backend, H: AdapterHost<B>>(mut host: H, on: bool) -> H {
        host.linears_mut(&mut |_, layer| {
            if let AdaptedLinear::LoraXs(xs) = layer {
                xs.fuse_inference = on;
            }
        });
        host
    }
}
