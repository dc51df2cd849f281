//! The kernels written with burn's tensor ops: the fallback of every backend
//! without its own (ndarray, CUDA), and the reference the fused CPU kernels
//! are tested against.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

use crate::LayerNormGrads;

fn wrap<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

fn unwrap<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

/// `[rows, last]` view of any tensor.
fn rows<B: Backend>(x: FloatTensor<B>) -> Tensor<B, 2> {
    let shape = x.shape();
    let last = shape[shape.num_dims() - 1];
    let n = shape.num_elements();
    let rows = n.checked_div(last).unwrap_or(0);
    wrap::<B, 1>(B::float_reshape(x, [n].into())).reshape([rows, last])
}

/// Exact GELU, `x·Φ(x)` with `Φ` from `erf`.
pub fn gelu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::gelu(x)
}

/// `grad·(Φ(x) + x·φ(x))`: the exact derivative (burn 0.21's default
/// `gelu_backward` is the tanh approximation's).
pub fn gelu_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let x = rows::<B>(x);
    let grad = rows::<B>(grad);
    let cdf = (x.clone() * std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    let pdf = (x.clone().powi_scalar(2) * -0.5)
        .exp()
        .mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt());
    let out = grad * (cdf + x * pdf);
    B::float_reshape(unwrap(out), shape)
}

/// `softmax(scale·scores + mask)` over the last dim; `scores` is
/// `[batch, heads, queries, keys]`, `mask` `[batch, keys]`.
pub fn masked_softmax<B: Backend>(
    scores: FloatTensor<B>,
    mask: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let scores = wrap::<B, 4>(scores);
    let [b, _, _, k] = scores.dims();
    let mask = wrap::<B, 2>(mask).reshape([b, 1, 1, k]);
    let z = scores.mul_scalar(scale) + mask;
    B::softmax(unwrap(z), 3)
}

/// `scale·y·(grad − Σ grad·y)` over the last dim.
pub fn softmax_backward<B: Backend>(
    probs: FloatTensor<B>,
    grad: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let shape = probs.shape();
    let y = rows::<B>(probs);
    let g = rows::<B>(grad);
    let dot = (g.clone() * y.clone()).sum_dim(1);
    let out = (y * (g - dot)).mul_scalar(scale);
    B::float_reshape(unwrap(out), shape)
}

/// `LayerNorm(x + residual)·γ + β` over the last dim.
pub fn add_layer_norm<B: Backend>(
    x: FloatTensor<B>,
    residual: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    B::layer_norm(B::float_add(x, residual), gamma, Some(beta), eps)
}

/// Gradients of [`add_layer_norm`]: the input's (`x` and `residual` get the
/// same), and `γ`'s and `β`'s when `params` is set.
pub fn add_layer_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    residual: FloatTensor<B>,
    gamma: FloatTensor<B>,
    eps: f64,
    grad: FloatTensor<B>,
    params: bool,
) -> LayerNormGrads<B> {
    let shape = x.shape();
    let s = rows::<B>(B::float_add(x, residual));
    let g = rows::<B>(grad);
    let d = s.dims()[1];
    let gamma = wrap::<B, 1>(gamma).reshape([1, d]);
    let mean = s.clone().mean_dim(1);
    let centred = s - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(1);
    let rstd = var.add_scalar(eps).sqrt().recip();
    let xhat = centred * rstd.clone();
    let gg = g.clone() * gamma;
    let a = gg.clone().mean_dim(1);
    let b = (gg.clone() * xhat.clone()).mean_dim(1);
    let input = (gg - a - xhat.clone() * b) * rstd;
    let (dgamma, dbeta) = if params {
        let dgamma = (g.clone() * xhat).sum_dim(0).reshape([d]);
        let dbeta = g.sum_dim(0).reshape([d]);
        (Some(unwrap(dgamma)), Some(unwrap(dbeta)))
    } else {
        (None, None)
    };
    LayerNormGrads {
        input: B::float_reshape(unwrap(input), shape),
        gamma: dgamma,
        beta: dbeta,
    }
}

/// burn's `attention` with the `[batch, keys]` mask as an additive bias.
pub fn attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let shape = mask.shape();
    let bias = B::float_reshape(mask, [shape[0], 1, 1, shape[1]].into());
    let options = AttentionModuleOptions {
        scale: Some(scale as f64),
        softcap: None,
        is_causal: false,
    };
    B::attention(q, k, v, None, Some(bias), options)
}
