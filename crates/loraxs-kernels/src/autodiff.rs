//! The fused operations under burn's autodiff: one graph node each, whose
//! backward pass is the inner backend's fused backward kernel.
//!
//! The state of each node is what its backward needs and nothing else: the
//! input for GELU, the output probabilities for the softmax, the two
//! summands and `γ` for the norm (the normalised values are recomputed row
//! by row in the backward kernel rather than stored).

use burn::tensor::ops::FloatTensor;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};

use crate::KernelBackend;

#[derive(Debug)]
struct GeluBackward;

impl<B: KernelBackend> Backward<B, 1> for GeluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_gelu_backward(x, grad)
        });
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: KernelBackend> Backward<B, 1> for SoftmaxBackward {
    /// The probabilities and the scale.
    type State = (FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (probs, scale) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::fused_softmax_backward(probs, grad, scale)
        });
    }
}

#[derive(Debug)]
struct LayerNormBackward;

/// `x`, `residual`, `γ`, `ε`.
type LayerNormState<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

impl<B: KernelBackend> Backward<B, 4> for LayerNormBackward {
    type State = LayerNormState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, residual_node, gamma_node, beta_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, residual, gamma, eps) = ops.state;
        let params = gamma_node.is_some() || beta_node.is_some();
        let out = B::fused_add_layer_norm_backward(x, residual, gamma, eps, grad, params);
        match (x_node, residual_node) {
            (Some(x), Some(r)) => {
                grads.register::<B>(x.id, out.input.clone());
                grads.register::<B>(r.id, out.input);
            }
            (Some(node), None) | (None, Some(node)) => grads.register::<B>(node.id, out.input),
            (None, None) => {}
        }
        if let (Some(node), Some(g)) = (gamma_node, out.gamma) {
            grads.register::<B>(node.id, g);
        }
        if let (Some(node), Some(g)) = (beta_node, out.beta) {
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_gelu(x.primitive.clone());
                prep.finish(x.primitive, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_gelu(x.primitive)),
        }
    }

    fn fused_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // A second-order graph is not needed by any trainer here: the
        // composed form keeps it differentiable should anyone ask.
        crate::composed::gelu_backward::<Self>(x, grad)
    }

    fn fused_masked_softmax(
        scores: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let mask = mask.primitive;
        match SoftmaxBackward
            .prepare::<C>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let probs = B::fused_masked_softmax(scores.primitive, mask, scale);
                prep.finish((probs.clone(), scale), probs)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_masked_softmax(scores.primitive, mask, scale)),
        }
    }

    fn fused_softmax_backward(
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        crate::composed::softmax_backward::<Self>(probs, grad, scale)
    }

    fn fused_add_layer_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let nodes = [
            x.node.clone(),
            residual.node.clone(),
            gamma.node.clone(),
            beta.node.clone(),
        ];
        match LayerNormBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::fused_add_layer_norm(
                    x.primitive.clone(),
                    residual.primitive.clone(),
                    gamma.primitive.clone(),
                    beta.primitive,
                    eps,
                );
                prep.finish((x.primitive, residual.primitive, gamma.primitive, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_add_layer_norm(
                x.primitive,
                residual.primitive,
                gamma.primitive,
                beta.primitive,
                eps,
            )),
        }
    }

    fn fused_add_layer_norm_backward(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
        grad: FloatTensor<Self>,
        params: bool,
    ) -> crate::LayerNormGrads<Self> {
        crate::composed::add_layer_norm_backward::<Self>(x, residual, gamma, eps, grad, params)
    }
}
