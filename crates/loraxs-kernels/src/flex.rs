//! The fused kernels on burn-flex: f32 tensors run the vectorised slice
//! kernels of [`crate::math`] over rayon's threads; other dtypes take the
//! composed forms.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{Bytes, DType, Shape, TensorMetadata};
use burn_flex::{Flex, FlexTensor, Layout};
use rayon::prelude::*;

use crate::{KernelBackend, LayerNormGrads, composed, math};

/// Elements per rayon task (rows are grouped to about this many): large
/// enough that a task outweighs its scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

fn is_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

fn new_tensor(shape: Shape, data: Vec<f32>) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), Layout::contiguous(shape), DType::F32)
}

/// The tensor as a contiguous buffer this caller owns alone: the same
/// storage when it already is one (a gradient usually is), else a copy.
fn owned(x: FlexTensor) -> FlexTensor {
    let mut c = x.to_contiguous();
    drop(x);
    // Copy-on-write: copies only when the storage is shared.
    let _ = c.storage_mut::<f32>();
    c
}

/// Contiguous f32 elements of a tensor (made contiguous first if needed).
fn contiguous(x: FlexTensor) -> FlexTensor {
    x.to_contiguous()
}

fn rows_per_task(row: usize) -> usize {
    (CHUNK / row.max(1)).max(1)
}

impl KernelBackend for Flex {
    /// flex's own `attention` runs a scalar `expf` per score (20 % of an
    /// inference pass): the products and our softmax instead.
    fn fused_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        mask: FlexTensor,
        scale: f32,
    ) -> FlexTensor {
        if !is_f32(&[&q, &k, &v, &mask]) {
            return composed::attention::<Flex>(q, k, v, mask, scale);
        }
        let scores = Flex::float_matmul(q, Flex::float_swap_dims(k, 2, 3));
        let probs = Self::fused_masked_softmax(scores, mask, scale);
        Flex::float_matmul(probs, v)
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        if !is_f32(&[&x]) {
            return composed::gelu::<Flex>(x);
        }
        if x.is_unique() && x.is_contiguous() {
            let mut x = owned(x);
            x.storage_mut::<f32>()
                .par_chunks_mut(CHUNK)
                .for_each(math::gelu_in_place);
            return x;
        }
        let x = contiguous(x);
        let input = x.storage::<f32>();
        let mut out = vec![0.0f32; input.len()];
        out.par_chunks_mut(CHUNK)
            .zip(input.par_chunks(CHUNK))
            .for_each(|(o, i)| math::gelu_slice(i, o));
        new_tensor(x.shape(), out)
    }

    fn fused_gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if !is_f32(&[&x, &grad]) || x.shape() != grad.shape() {
            return composed::gelu_backward::<Flex>(x, grad);
        }
        let x = contiguous(x);
        let mut g = owned(grad);
        g.storage_mut::<f32>()
            .par_chunks_mut(CHUNK)
            .zip(x.storage::<f32>().par_chunks(CHUNK))
            .for_each(|(g, x)| math::gelu_grad_slice(x, g));
        g
    }

    fn fused_masked_softmax(scores: FlexTensor, mask: FlexTensor, scale: f32) -> FlexTensor {
        let dims = scores.shape();
        if !is_f32(&[&scores, &mask])
            || dims.num_dims() != 4
            || dims.num_elements() == 0
            || mask.shape().num_elements() != dims[0] * dims[3]
        {
            return composed::masked_softmax::<Flex>(scores, mask, scale);
        }
        let (heads, queries, k) = (dims[1], dims[2], dims[3]);
        let mask = contiguous(mask);
        let mask = mask.storage::<f32>();
        let mut p = owned(scores);
        let rows = rows_per_task(k);
        p.storage_mut::<f32>()
            .par_chunks_mut(rows * k)
            .enumerate()
            .for_each(|(c, p)| math::masked_softmax_rows(p, mask, k, c * rows, heads * queries, scale));
        p
    }

    fn fused_softmax_backward(probs: FlexTensor, grad: FlexTensor, scale: f32) -> FlexTensor {
        let dims = probs.shape();
        if !is_f32(&[&probs, &grad]) || dims != grad.shape() || dims.num_elements() == 0 {
            return composed::softmax_backward::<Flex>(probs, grad, scale);
        }
        let k = dims[dims.num_dims() - 1];
        let y = contiguous(probs);
        let mut g = owned(grad);
        let rows = rows_per_task(k);
        g.storage_mut::<f32>()
            .par_chunks_mut(rows * k)
            .zip(y.storage::<f32>().par_chunks(rows * k))
            .for_each(|(g, y)| math::softmax_grad_rows(y, g, k, scale));
        g
    }

    fn fused_add_layer_norm(
        x: FlexTensor,
        residual: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
    ) -> FlexTensor {
        let dims = x.shape();
        if !is_f32(&[&x, &residual, &gamma, &beta]) || dims.num_elements() == 0 || dims != residual.shape() {
            return composed::add_layer_norm::<Flex>(x, residual, gamma, beta, eps);
        }
        let d = dims[dims.num_dims() - 1];
        let (x, r) = (contiguous(x), contiguous(residual));
        let (gamma, beta) = (contiguous(gamma), contiguous(beta));
        let (gamma, beta) = (gamma.storage::<f32>(), beta.storage::<f32>());
        let mut out = vec![0.0f32; dims.num_elements()];
        let chunk = rows_per_task(d) * d;
        out.par_chunks_mut(chunk)
            .zip(x.storage::<f32>().par_chunks(chunk))
            .zip(r.storage::<f32>().par_chunks(chunk))
            .for_each(|((y, x), r)| math::add_layer_norm_rows(x, r, gamma, beta, y, eps as f32));
        new_tensor(dims, out)
    }

    fn fused_add_layer_norm_backward(
        x: FlexTensor,
        residual: FlexTensor,
        gamma: FlexTensor,
        eps: f64,
        grad: FlexTensor,
        params: bool,
    ) -> LayerNormGrads<Flex> {
        let dims = x.shape();
        if !is_f32(&[&x, &residual, &gamma, &grad])
            || dims.num_elements() == 0
            || dims != residual.shape()
            || dims != grad.shape()
        {
            return composed::add_layer_norm_backward::<Flex>(x, residual, gamma, eps, grad, params);
        }
        let d = dims[dims.num_dims() - 1];
        let (x, r, gamma) = (contiguous(x), contiguous(residual), contiguous(gamma));
        let gamma_s = gamma.storage::<f32>();
        let mut g = owned(grad);
        let chunk = rows_per_task(d) * d;
        let width = if params { d } else { 0 };
        // One partial (Σ g·x̂, Σ g) per task, summed in task order: the same
        // result whatever the number of threads.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = g
            .storage_mut::<f32>()
            .par_chunks_mut(chunk)
            .zip(x.storage::<f32>().par_chunks(chunk))
            .zip(r.storage::<f32>().par_chunks(chunk))
            .map(|((g, x), r)| {
                let (mut dgamma, mut dbeta, mut tmp) = (vec![0.0; width], vec![0.0; width], vec![0.0; d]);
                math::add_layer_norm_grad_rows(
                    x,
                    r,
                    gamma_s,
                    g,
                    &mut dgamma,
                    &mut dbeta,
                    &mut tmp,
                    eps as f32,
                );
                (dgamma, dbeta)
            })
            .collect();
        let (gamma_grad, beta_grad) = if params {
            let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
            for (pg, pb) in &partials {
                for (a, b) in dgamma.iter_mut().zip(pg) {
                    *a += b;
                }
                for (a, b) in dbeta.iter_mut().zip(pb) {
                    *a += b;
                }
            }
            (
                Some(new_tensor(Shape::from(vec![d]), dgamma)),
                Some(new_tensor(Shape::from(vec![d]), dbeta)),
            )
        } else {
            (None, None)
        };
        LayerNormGrads {
            input: g,
            gamma: gamma_grad,
            beta: beta_grad,
        }
    }
}
