//! Folding an adapter's update into its base weight and taking it out again.

use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

use crate::{LoraLinear, LoraXsLinear, VeraLinear};

/// An adapter layer whose update is a weight delta that can be folded into
/// the base layer for serving (`W' = W + ΔW`) and taken out again.
pub trait Mergeable<B: Backend>: Sized {
    /// The update `ΔW` in burn layout (`in × out`).
    fn delta_weight(&self) -> Tensor<B, 2>;

    /// The base layer and the merged flag.
    fn base_and_flag(&mut self) -> (&mut Linear<B>, &mut bool);

    /// The base layer, consuming the adapter.
    fn into_base(self) -> Linear<B>;

    /// Whether the update is folded into the base weight.
    fn is_merged(&self) -> bool;

    /// Folds the update into the base weight; the forward pass then costs
    /// exactly what the base layer costs. A no-op when already merged.
    fn merge(self) -> Self {
        fold(self, true)
    }

    /// Subtracts the update from the base weight again: equal to the
    /// original weight up to the rounding of one add and one subtract.
    /// A no-op when not merged.
    fn unmerge(self) -> Self {
        fold(self, false)
    }

    /// The merged layer as a plain linear layer (for serving).
    fn into_merged_linear(self) -> Linear<B> {
        self.merge().into_base()
    }
}

fn fold<B: Backend, M: Mergeable<B>>(mut layer: M, merge: bool) -> M {
    if layer.is_merged() == merge {
        return layer;
    }
    let delta = layer.delta_weight().detach();
    let (base, flag) = layer.base_and_flag();
    let weight = base.weight.clone();
    base.weight = weight.map(|w| if merge { w + delta } else { w - delta });
    *flag = merge;
    layer
}

macro_rules! mergeable {
    ($($ty:ident),*) => {$(
        impl<B: Backend> Mergeable<B> for $ty<B> {
            fn delta_weight(&self) -> Tensor<B, 2> {
                $ty::delta_weight(self)
            }
            fn base_and_flag(&mut self) -> (&mut Linear<B>, &mut bool) {
                (&mut self.base, &mut self.merged)
            }
            fn into_base(self) -> Linear<B> {
                self.base
            }
            fn is_merged(&self) -> bool {
                self.merged
            }
        }
    )*};
}

mergeable!(LoraXsLinear, LoraLinear, VeraLinear);
