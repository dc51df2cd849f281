//! Fused kernels for the encoder's hot path, as a burn backend extension.
//!
//! [`KernelBackend`] adds three fused operations to a burn backend, each
//! with its backward pass:
//!
//! - [`gelu`]: exact (erf) GELU with the exact derivative;
//! - [`masked_softmax`]: attention's `softmax(scale·scores + mask)` over the
//!   keys, with its scale and padding mask folded in;
//! - [`attention`]: inference attention, the two products around that
//!   softmax;
//! - [`add_layer_norm`]: `LayerNorm(x + residual)`, the residual add of every
//!   transformer block folded into the norm.
//!
//! On `Flex` (burn-flex, the default CPU backend) they run as our own
//! vectorised, multi-threaded kernels ([`math`]); under `Autodiff<B>` they
//! are single graph nodes whose backward pass is the inner backend's fused
//! backward kernel, instead of the five to ten primitive ops (and saved
//! intermediates) burn's autodiff records for the composed forms. Every
//! other backend (ndarray, CUDA) gets the composed forms built from burn's
//! own ops, so CUDA keeps burn's kernels.
//!
//! [`tune_allocator`] makes glibc's `malloc` keep freed activation memory
//! for the next step instead of page-faulting it back in every time.
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::tensor::Tensor;
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let x = Tensor::<B, 2>::from_floats([[-1.0, 0.0, 1.0, 2.0]], &device).require_grad();
//! let y = loraxs_kernels::gelu(x.clone());
//! let grads = y.sum().backward();
//! let dx = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
//! // GELU'(0) = Φ(0) = 0.5 exactly; GELU'(1) = Φ(1) + φ(1) = 1.0833.
//! assert!((dx[1] - 0.5).abs() < 1e-6);
//! assert!((dx[2] - 1.083_315).abs() < 1e-5);
//! ```

mod allocator;
mod autodiff;
pub mod composed;
mod flex;
pub mod math;

pub use allocator::{MMAP_THRESHOLD, tune_allocator};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// Gradients of [`add_layer_norm`].
#[derive(Debug, Clone)]
pub struct LayerNormGrads<B: Backend> {
    /// `∂L/∂x`, which is also `∂L/∂residual`.
    pub input: FloatTensor<B>,
    /// `∂L/∂γ` (shape `[d]`), when asked for.
    pub gamma: Option<FloatTensor<B>>,
    /// `∂L/∂β` (shape `[d]`), when asked for.
    pub beta: Option<FloatTensor<B>>,
}

/// A burn backend with the fused operations of this crate.
///
/// Every method has a default built from burn's ops ([`composed`]); a
/// backend with faster kernels overrides them. Implemented for `Flex`
/// (fused CPU kernels), `NdArray` and, with the `cuda` feature, `Cuda`
/// (defaults), and `Autodiff<B>` for any `B: KernelBackend` (one graph node
/// per call, backward on `B`'s kernels).
pub trait KernelBackend: Backend {
    /// Exact GELU of every element.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::gelu::<Self>(x)
    }

    /// `grad·GELU'(x)`, the exact derivative.
    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::gelu_backward::<Self>(x, grad)
    }

    /// `softmax(scale·scores + mask)` over the last dim. `scores` is
    /// `[batch, heads, queries, keys]`, `mask` (`[batch, keys]`) is added to
    /// every row of its batch entry (0 for tokens, a large negative number for
    /// padding) and is treated as a constant by autodiff.
    fn fused_masked_softmax(
        scores: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        composed::masked_softmax::<Self>(scores, mask, scale)
    }

    /// The gradient of the scores of [`KernelBackend::fused_masked_softmax`]
    /// from its output `probs` and the output's gradient.
    fn fused_softmax_backward(
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        composed::softmax_backward::<Self>(probs, grad, scale)
    }

    /// Attention without gradients (inference): `softmax(scale·q·kᵀ +
    /// mask)·v` with `q`, `k`, `v` `[batch, heads, tokens, head_dim]` and
    /// `mask` `[batch, keys]` as in [`KernelBackend::fused_masked_softmax`].
    /// The default is burn's `attention` (CUDA keeps its kernel).
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        composed::attention::<Self>(q, k, v, mask, scale)
    }

    /// `LayerNorm(x + residual)·γ + β` over the last dim (`γ`, `β`: `[d]`).
    fn fused_add_layer_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed::add_layer_norm::<Self>(x, residual, gamma, beta, eps)
    }

    /// Gradients of [`KernelBackend::fused_add_layer_norm`]; `γ`'s and `β`'s
    /// only when `params` is set.
    fn fused_add_layer_norm_backward(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
        grad: FloatTensor<Self>,
        params: bool,
    ) -> LayerNormGrads<Self> {
        composed::add_layer_norm_backward::<Self>(x, residual, gamma, eps, grad, params)
    }
}

/// An autodiff backend whose inner backend has the fused kernels too (what
/// a trainer needs: training on `Self`, evaluation on `Self::InnerBackend`).
pub trait KernelAutodiffBackend: AutodiffBackend<InnerBackend: KernelBackend> + KernelBackend {}

impl<B> KernelAutodiffBackend for B
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
{
}

impl KernelBackend for burn_ndarray::NdArray<f32> {}
impl KernelBackend for burn_ndarray::NdArray<f64> {}

#[cfg(feature = "cuda")]
impl KernelBackend for burn_cuda::Cuda {}

fn primitive<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// Exact (erf) GELU, `x·Φ(x)`, with the exact derivative on every backend.
pub fn gelu<B: KernelBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::fused_gelu(primitive(x)))
}

/// Attention probabilities `softmax(scale·scores + mask)` over the keys.
///
/// `scores`: `[batch, heads, queries, keys]` (`q·kᵀ`, unscaled); `mask`:
/// `[batch, keys]`, added after scaling (0 for a token, a large negative
/// number such as `f32::MIN` for padding; a constant for autodiff).
pub fn masked_softmax<B: KernelBackend>(
    scores: Tensor<B, 4>,
    mask: Tensor<B, 2>,
    scale: f32,
) -> Tensor<B, 4> {
    let [b, _, _, k] = scores.dims();
    assert_eq!(
        mask.dims(),
        [b, k],
        "masked_softmax: the mask must be [batch, keys] of the scores"
    );
    tensor(B::fused_masked_softmax(primitive(scores), primitive(mask), scale))
}

/// Attention for inference, `softmax(scale·q·kᵀ + mask)·v`.
///
/// `q`, `k`, `v`: `[batch, heads, tokens, head_dim]` (any strides: the head
/// views of the projections); `mask`: `[batch, keys]` as for
/// [`masked_softmax`]. On flex: the two products and our vectorised masked
/// softmax; elsewhere burn's `attention`. Under autodiff it is burn's
/// composed attention: training uses [`masked_softmax`] between its own
/// products so that dropout can apply to the probabilities.
pub fn attention<B: KernelBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Tensor<B, 2>,
    scale: f32,
) -> Tensor<B, 4> {
    let [b, _, _, d] = q.dims();
    let [kb, _, keys, kd] = k.dims();
    assert!(
        kb == b && kd == d && v.dims()[2] == keys,
        "attention: q {:?}, k {:?}, v {:?} do not fit together",
        q.dims(),
        k.dims(),
        v.dims()
    );
    assert_eq!(
        mask.dims(),
        [b, keys],
        "attention: the mask must be [batch, keys]"
    );
    tensor(B::fused_attention(
        primitive(q),
        primitive(k),
        primitive(v),
        primitive(mask),
        scale,
    ))
}

/// `LayerNorm(x + residual)·γ + β` over the last dim, with `γ` and `β` of
/// shape `[d]` (Hugging Face's `LayerNorm(dropout(dense(h)) + input)`).
pub fn add_layer_norm<B: KernelBackend, const D: usize>(
    x: Tensor<B, D>,
    residual: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    assert_eq!(
        x.dims(),
        residual.dims(),
        "add_layer_norm: x and residual differ in shape"
    );
    assert_eq!(
        gamma.dims(),
        [x.dims()[D - 1]],
        "add_layer_norm: γ must have the last dim's size"
    );
    assert_eq!(beta.dims(), gamma.dims(), "add_layer_norm: β must have γ's shape");
    tensor(B::fused_add_layer_norm(
        primitive(x),
        primitive(residual),
        primitive(gamma),
        primitive(beta),
        eps,
    ))
}
