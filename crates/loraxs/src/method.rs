//! What every adapter method must say about itself, in two traits.
//!
//! [`MethodSpec`] is the method's arithmetic and file layout: how many
//! values train in a module of a given shape, what an adapter file stores
//! for it, how the update is scaled. It needs no tensors, so tools that only
//! count (the paper's parameter table) or only read files work without burn.
//!
//! [`AdapterLayer`] (with the `burn` feature) is the layer itself: how it
//! is built from a frozen linear layer, its forward pass, the values it
//! saves and loads in the order its spec lists them, and merging.
//!
//! Both are implemented beside each method, in `xs.rs`, `lora.rs`,
//! `vera.rs` and `full.rs`; injection, counting and adapter files only talk
//! to these traits. A new method is one new file implementing them, plus
//! one variant in [`crate::Method`] and in [`crate::AdaptedLinear`].

use crate::{AdapterConfig, AdapterError, Result};

/// The shape of one adaptable linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleShape {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl ModuleShape {
    /// A shape `in → out`.
    pub fn new(d_in: usize, d_out: usize, bias: bool) -> Self {
        Self { d_in, d_out, bias }
    }

    /// Values of the plain layer: `in · out` (+ `out` for the bias).
    pub fn base_values(&self) -> usize {
        self.d_in * self.d_out + if self.bias { self.d_out } else { 0 }
    }
}

/// Where a stored tensor lives in an adapter file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKey {
    /// One tensor per module, named `<module>.<suffix>`.
    Module(&'static str),
    /// One tensor for all modules, named as given: the per-module values
    /// are stacked along a new first axis in model order (LoRA-XS's `R`:
    /// `modules × r × r`, so a file costs one header entry, not one per
    /// module).
    Stacked(&'static str),
}

/// One tensor a method stores per module, with its shape in PyTorch
/// orientation (`out × in` for weights, as PEFT files hold them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Where it is stored.
    pub key: TensorKey,
    /// Its shape for one module.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A per-module tensor `<module>.<suffix>`.
    pub fn module(suffix: &'static str, shape: Vec<usize>) -> Self {
        Self {
            key: TensorKey::Module(suffix),
            shape,
        }
    }

    /// A slice of the stacked tensor `name`.
    pub fn stacked(name: &'static str, shape: Vec<usize>) -> Self {
        Self {
            key: TensorKey::Stacked(name),
            shape,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a tensor with no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parameter counts and file layout of one method. Implemented by a unit
/// struct beside each method's layer; reached through
/// [`crate::Method::spec`].
pub trait MethodSpec: Sync {
    /// The stable name used in files and on the command line.
    fn name(&self) -> &'static str;

    /// Other names accepted when parsing.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the method has a rank (full fine-tuning has none).
    fn has_rank(&self) -> bool {
        true
    }

    /// The update scale: `alpha / rank` for LoRA-style methods.
    fn scale(&self, config: &AdapterConfig) -> f64 {
        config.alpha / config.rank as f64
    }

    /// Checks that the method can adapt a module of this shape at this rank.
    fn check_module(&self, module: &str, shape: ModuleShape, rank: usize) -> Result<()> {
        let max = shape.d_in.min(shape.d_out);
        if self.has_rank() && (rank == 0 || rank > max) {
            return Err(AdapterError::RankTooLarge {
                module: module.into(),
                rank,
                max,
            });
        }
        Ok(())
    }

    /// Trainable values of one module.
    fn trainable_values(&self, shape: ModuleShape, rank: usize) -> usize;

    /// Frozen values of one adapted module: the base layer plus any frozen
    /// factors the method adds.
    fn frozen_values(&self, shape: ModuleShape, rank: usize) -> usize;

    /// Whether the targeted base layers themselves train (full
    /// fine-tuning): their weights are then no part of the base the adapter
    /// depends on.
    fn trains_base(&self) -> bool {
        false
    }

    /// Whether the method has frozen factors that a file may store to skip
    /// recomputing them ([`crate::SaveOptions::store_factors`]).
    fn has_stored_factors(&self) -> bool {
        false
    }

    /// The tensors an adapter file holds for one module, in the order the
    /// layer saves and loads them. `factors_stored`: the file also holds the
    /// frozen factors (only asked when [`MethodSpec::has_stored_factors`]).
    fn file_tensors(&self, shape: ModuleShape, rank: usize, factors_stored: bool) -> Vec<TensorSpec>;
}

#[cfg(feature = "burn")]
pub use layer::{AdapterLayer, FactorReport};

#[cfg(feature = "burn")]
mod layer {
    use burn::nn::Linear;
    use burn::tensor::{Tensor, backend::Backend};
    use loraxs_svd::SvdMethod;

    use super::{MethodSpec, ModuleShape};
    use crate::interop::linear_dims;
    use crate::{AdaptedLinear, AdapterConfig, Method, Result};

    /// What building one adapter measured (LoRA-XS's SVD; empty for the
    /// other methods).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct FactorReport {
        /// Fraction of spectral energy in the top `r` singular values.
        pub energy_kept: Option<f64>,
        /// `‖W − U_r Σ_r V_rᵀ‖_F / ‖W‖_F`.
        pub relative_error: Option<f64>,
        /// The SVD method actually used.
        pub svd_method: Option<SvdMethod>,
    }

    /// One method's layer: built from a frozen linear layer, applied,
    /// saved, loaded and merged. See the module docs.
    pub trait AdapterLayer<B: Backend>: Sized + Into<AdaptedLinear<B>> {
        /// The method this layer implements.
        const METHOD: Method;

        /// State shared by every adapted module of one model (VeRA's random
        /// projections), built once before the modules are adapted.
        type Shared;

        /// Builds the shared state from the config and the shapes of every
        /// targeted module.
        fn shared(config: &AdapterConfig, targeted: &[ModuleShape]) -> Self::Shared;

        /// Wraps the frozen `base` layer called `module`.
        fn adapt(
            base: Linear<B>,
            config: &AdapterConfig,
            module: &str,
            shared: &Self::Shared,
        ) -> Result<(Self, FactorReport)>;

        /// Adapts one layer on its own: [`AdapterLayer::adapt`] with the
        /// shared state built for this layer alone (what a single-layer
        /// test or benchmark wants; models go through [`crate::inject`]).
        fn from_linear(
            base: Linear<B>,
            config: &AdapterConfig,
            module: &str,
        ) -> Result<(Self, FactorReport)> {
            let (d_in, d_out) = linear_dims(&base);
            let shared = Self::shared(config, &[ModuleShape::new(d_in, d_out, base.bias.is_some())]);
            Self::adapt(base, config, module, &shared)
        }

        /// The method's spec.
        fn spec() -> &'static dyn MethodSpec {
            Self::METHOD.spec()
        }

        /// The (possibly merged) base layer.
        fn base(&self) -> &Linear<B>;

        /// The shape of the base layer.
        fn shape(&self) -> ModuleShape {
            let (d_in, d_out) = linear_dims(self.base());
            ModuleShape::new(d_in, d_out, self.base().bias.is_some())
        }

        /// The rank (0 where the method has none).
        fn rank(&self) -> usize;

        /// Applies the layer to `[..., in]`, giving `[..., out]`.
        fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>;

        /// The stored values, one vector per entry of
        /// [`MethodSpec::file_tensors`], in that order and orientation.
        fn file_values(&self, factors_stored: bool) -> Vec<Vec<f32>>;

        /// Takes stored values (as [`AdapterLayer::file_values`] gives
        /// them; shapes already checked against the spec).
        fn load_file_values(self, values: &[&[f32]], factors_stored: bool) -> Self;

        /// Whether an update is folded into the base weight.
        fn is_merged(&self) -> bool;

        /// Folds the update into the base weight (`W' = W + ΔW`); the
        /// forward pass then costs what the base layer costs. A no-op when
        /// merged already or when the method has no separate update.
        fn merge(self) -> Self;

        /// Takes a merged update out of the base weight again (equal to the
        /// original up to one add and one subtract). A no-op when not merged.
        fn unmerge(self) -> Self;

        /// The base layer, dropping the adapter (merged or not: callers
        /// unmerge first to get the original weight back).
        fn into_base(self) -> Linear<B>;
    }

    /// Folds a layer's update (burn layout, `in × out`, from `delta`) into
    /// (`merge`) or out of its base weight, reached through `parts`: the
    /// one implementation of merging that every method with a weight delta
    /// uses. A no-op when the layer is already in the requested state.
    pub(crate) fn fold<B: Backend, L>(
        mut layer: L,
        merge: bool,
        delta: fn(&L) -> Tensor<B, 2>,
        parts: fn(&mut L) -> (&mut Linear<B>, &mut bool),
    ) -> L {
        if *parts(&mut layer).1 == merge {
            return layer;
        }
        let delta = delta(&layer).detach();
        let (base, merged) = parts(&mut layer);
        let weight = base.weight.clone();
        base.weight = weight.map(|w| if merge { w + delta } else { w - delta });
        *merged = merge;
        layer
    }
}

#[cfg(feature = "burn")]
pub(crate) use layer::fold;

/// The part of [`AdapterLayer`] every layer with a `base: Linear<B>` and a
/// `merged: bool` field and an inherent `delta_weight()` (burn layout)
/// shares: base access and merging through [`fold`].
#[cfg(feature = "burn")]
macro_rules! merge_by_delta {
    () => {
        fn base(&self) -> &burn::nn::Linear<B> {
            &self.base
        }

        fn into_base(self) -> burn::nn::Linear<B> {
            self.base
        }

        fn is_merged(&self) -> bool {
            self.merged
        }

        fn merge(self) -> Self {
            $crate::method::fold(self, true, Self::delta_weight, |l| {
                (&mut l.base, &mut l.merged)
            })
        }

        fn unmerge(self) -> Self {
            $crate::method::fold(self, false, Self::delta_weight, |l| {
                (&mut l.base, &mut l.merged)
            })
        }
    };
}
#[cfg(feature = "burn")]
pub(crate) use merge_by_delta;
