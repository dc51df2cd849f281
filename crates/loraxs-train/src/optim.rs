//! The trainer's optimiser groups: AdamW over the adapter and over the
//! head, each with its own learning rate, and within each, weight decay
//! only where Hugging Face's `Trainer` (the paper's code) applies it —
//! never on biases or LayerNorm parameters.

use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::Record;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// One AdamW over the parameters of `M` it receives gradients for.
pub(crate) type Optim<B, M> = OptimizerAdaptor<AdamW, M, B>;

/// The saved state of one [`Optim`].
pub(crate) type OptimRecord<B, M> = <Optim<B, M> as Optimizer<M, B>>::Record;

/// A parameter's place: which learning rate, and whether it decays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Group {
    /// Adapter (or fine-tuned base) parameters with weight decay.
    Adapter,
    /// Adapter biases and LayerNorm parameters: no weight decay.
    AdapterNoDecay,
    /// Head weights.
    Head,
    /// Head biases.
    HeadNoDecay,
}

impl Group {
    /// Every group, in checkpoint order.
    pub(crate) const ALL: [Group; 4] = [
        Group::Adapter,
        Group::AdapterNoDecay,
        Group::Head,
        Group::HeadNoDecay,
    ];

    /// The checkpoint file stem of this group's optimiser state.
    pub(crate) fn file_stem(self) -> &'static str {
        match self {
            Group::Adapter => "optim-adapter",
            Group::AdapterNoDecay => "optim-adapter-no-decay",
            Group::Head => "optim-head",
            Group::HeadNoDecay => "optim-head-no-decay",
        }
    }

    fn decays(self) -> bool {
        matches!(self, Group::Adapter | Group::Head)
    }
}

/// Each float parameter's id, rank and whether Hugging Face's `Trainer`
/// exempts it from weight decay: a parameter called `bias`, or any
/// parameter of a `LayerNorm` (its `get_decay_parameter_names`).
#[derive(Default)]
struct Exempt {
    path: Vec<(String, String)>,
    ranks: HashMap<ParamId, usize>,
    no_decay: HashSet<ParamId>,
}

impl<B: Backend> ModuleVisitor<B> for Exempt {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.ranks.insert(param.id, D);
        let bias = self.path.last().is_some_and(|(name, _)| name == "bias");
        let norm = self
            .path
            .iter()
            .any(|(_, container)| container == "Struct:LayerNorm" || container == "Struct:RmsNorm");
        if bias || norm {
            self.no_decay.insert(param.id);
        }
    }
}

/// Which group every parameter of a model belongs to.
pub(crate) struct ParamGroups {
    head: HashSet<ParamId>,
    no_decay: HashSet<ParamId>,
    ranks: HashMap<ParamId, usize>,
}

impl ParamGroups {
    /// Groups `model`'s parameters; those of `head` (a part of `model`)
    /// take the head's learning rate.
    pub(crate) fn new<B: Backend, M: burn::module::Module<B>, H: burn::module::Module<B>>(
        model: &M,
        head: &H,
    ) -> Self {
        let mut all = Exempt::default();
        model.visit(&mut all);
        let mut head_params = Exempt::default();
        head.visit(&mut head_params);
        Self {
            head: head_params.ranks.into_keys().collect(),
            no_decay: all.no_decay,
            ranks: all.ranks,
        }
    }

    /// Groups `model`'s parameters, none of them a head's (a model trained
    /// without a task head, such as a causal LM).
    pub(crate) fn without_head<B: Backend, M: burn::module::Module<B>>(model: &M) -> Self {
        let mut all = Exempt::default();
        model.visit(&mut all);
        Self {
            head: HashSet::new(),
            no_decay: all.no_decay,
            ranks: all.ranks,
        }
    }

    /// The group of parameter `id`.
    pub(crate) fn group(&self, id: &ParamId) -> Group {
        match (self.head.contains(id), self.no_decay.contains(id)) {
            (false, false) => Group::Adapter,
            (false, true) => Group::AdapterNoDecay,
            (true, false) => Group::Head,
            (true, true) => Group::HeadNoDecay,
        }
    }
}

/// Moves the gradient of `id` (of rank `rank`) from `from` to `to`.
fn move_grad<B: Backend>(from: &mut GradientsParams, to: &mut GradientsParams, id: ParamId, rank: usize) {
    macro_rules! by_rank {
        ($($d:literal),*) => {
            match rank {
                $($d => {
                    if let Some(g) = from.remove::<B, $d>(id) {
                        to.register(id, g);
                    }
                })*
                _ => panic!("parameter {id} has rank {rank}; the trainer handles ranks 1 to 4"),
            }
        };
    }
    by_rank!(1, 2, 3, 4)
}

/// Four AdamW optimisers (β = 0.9, 0.999; ε = 1e-8, as Hugging Face's
/// `Trainer` uses it), one per [`Group`].
pub(crate) struct Optimizers<B: AutodiffBackend, M: AutodiffModule<B>> {
    groups: ParamGroups,
    optims: [Optim<B, M>; 4],
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Optimizers<B, M> {
    /// Fresh optimisers with decay `weight_decay` for the decaying groups.
    pub(crate) fn new(groups: ParamGroups, weight_decay: f64) -> Self {
        let optim = |group: Group| {
            AdamWConfig::new()
                .with_weight_decay(if group.decays() { weight_decay as f32 } else { 0.0 })
                .with_epsilon(1e-8)
                .init::<B, M>()
        };
        Self {
            groups,
            optims: Group::ALL.map(optim),
        }
    }

    /// One step: each group's gradients go to its optimiser, with `lr` for
    /// the adapter groups and `head_lr` for the head's.
    pub(crate) fn step(&mut self, mut model: M, mut grads: GradientsParams, lr: f64, head_lr: f64) -> M {
        let mut split: [GradientsParams; 4] = std::array::from_fn(|_| GradientsParams::new());
        for (&id, &rank) in &self.groups.ranks {
            let group = self.groups.group(&id);
            let index = Group::ALL.iter().position(|g| *g == group).expect("a group");
            move_grad::<B::InnerBackend>(&mut grads, &mut split[index], id, rank);
        }
        assert!(
            grads.is_empty(),
            "every gradient belongs to a parameter of the model"
        );
        for ((optim, grads), group) in self.optims.iter_mut().zip(split).zip(Group::ALL) {
            if grads.is_empty() {
                continue;
            }
            let lr = match group {
                Group::Adapter | Group::AdapterNoDecay => lr,
                Group::Head | Group::HeadNoDecay => head_lr,
            };
            model = optim.step(lr, model, grads);
        }
        model
    }

    /// The optimisers' state, one record per group in [`Group::ALL`] order.
    pub(crate) fn records(&self) -> Vec<(Group, OptimRecord<B, M>)> {
        Group::ALL
            .into_iter()
            .zip(&self.optims)
            .map(|(group, optim)| (group, optim.to_record()))
            .collect()
    }

    /// Restores the state `load` returns for each group.
    pub(crate) fn load<E>(
        mut self,
        mut load: impl FnMut(Group) -> Result<OptimRecord<B, M>, E>,
    ) -> Result<Self, E>
    where
        OptimRecord<B, M>: Record<B>,
    {
        let mut optims = Vec::with_capacity(4);
        for (optim, group) in self.optims.into_iter().zip(Group::ALL) {
            optims.push(optim.load_record(load(group)?));
        }
        self.optims = optims.try_into().unwrap_or_else(|_| unreachable!("four groups"));
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{AutodiffModule, Module};
    use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::tensor::{Tensor, TensorData};
    use loraxs::interop::tensor_values;

    use super::*;

    type AB = Autodiff<NdArray<f32>>;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        adapter: Linear<B>,
        norm: LayerNorm<B>,
        head: Linear<B>,
    }

    impl<B: Backend> Tiny<B> {
        fn new(device: &B::Device) -> Self {
            let mut norm = LayerNormConfig::new(3).init(device);
            // Non-trivial values, so that a decay would show.
            let vector =
                |v: [f32; 3]| Param::from_tensor(Tensor::from_data(TensorData::new(v.to_vec(), [3]), device));
            norm.gamma = vector([1.5, 0.5, 2.0]);
            norm.beta = Some(vector([0.25, -0.75, 1.0]));
            Self {
                adapter: LinearConfig::new(3, 3).init(device),
                norm,
                head: LinearConfig::new(3, 2).init(device),
            }
        }

        fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
            self.head.forward(self.norm.forward(self.adapter.forward(x)))
        }
    }

    fn values(model: &Tiny<AB>) -> Vec<(&'static str, Vec<f32>)> {
        let m = model.valid();
        vec![
            ("adapter.weight", tensor_values(m.adapter.weight.val())),
            (
                "adapter.bias",
                tensor_values(m.adapter.bias.clone().unwrap().val()),
            ),
            ("norm.gamma", tensor_values(m.norm.gamma.val())),
            ("norm.beta", tensor_values(m.norm.beta.clone().unwrap().val())),
            ("head.weight", tensor_values(m.head.weight.val())),
            ("head.bias", tensor_values(m.head.bias.clone().unwrap().val())),
        ]
    }

    #[test]
    fn groups_follow_hugging_face_trainer() {
        let model = Tiny::<AB>::new(&Default::default());
        let groups = ParamGroups::new(&model, &model.head);
        assert_eq!(groups.group(&model.adapter.weight.id), Group::Adapter);
        assert_eq!(
            groups.group(&model.adapter.bias.as_ref().unwrap().id),
            Group::AdapterNoDecay
        );
        assert_eq!(groups.group(&model.norm.gamma.id), Group::AdapterNoDecay);
        assert_eq!(
            groups.group(&model.norm.beta.as_ref().unwrap().id),
            Group::AdapterNoDecay
        );
        assert_eq!(groups.group(&model.head.weight.id), Group::Head);
        assert_eq!(
            groups.group(&model.head.bias.as_ref().unwrap().id),
            Group::HeadNoDecay
        );
    }

    /// With zero gradients AdamW's update is exactly 0, so one step shows
    /// the decay alone: weights shrink by `1 − lr·λ` with their group's
    /// learning rate, biases and LayerNorm parameters do not move.
    #[test]
    fn weight_decay_spares_biases_and_layer_norm() {
        let device = Default::default();
        let model = Tiny::<AB>::new(&device);
        let before = values(&model);
        let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![0.3f32, -1.0, 2.0], [1, 3]), &device);
        let loss = model.forward(x).sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), 6, "every parameter has a (zero) gradient");
        let mut optims = Optimizers::<AB, Tiny<AB>>::new(ParamGroups::new(&model, &model.head), 0.1);
        let (lr, head_lr) = (0.5, 0.2);
        let after = values(&optims.step(model, grads, lr, head_lr));
        for ((name, b), (_, a)) in before.iter().zip(&after) {
            let factor = match *name {
                "adapter.weight" => 1.0 - lr * 0.1,
                "head.weight" => 1.0 - head_lr * 0.1,
                _ => 1.0,
            } as f32;
            for (x, y) in b.iter().zip(a) {
                assert!(
                    (x * factor - y).abs() <= 1e-6 * x.abs().max(1.0),
                    "{name}: {x} → {y}, expected ×{factor}"
                );
            }
        }
    }
}
