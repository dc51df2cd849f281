//! Many LoRA-XS adapters of one base model and rank, served in one batch.
//!
//! For a given base and rank, LoRA-XS's `A = Σ_r V_rᵀ` and `B = U_r` depend
//! only on the frozen weights: every adapter of that base shares them and
//! differs only in its `r × r` matrices. An [`AdapterBank`] holds the base
//! with those shared factors once, and every adapter's `s·R` stacked per
//! module (`[1 + adapters, r, r]`, slot 0 the zero matrix: "no adapter").
//! [`AdapterBank::route`] gives the model for one batch in which each row
//! names its own adapter: `x·Aᵀ` and `·Bᵀ` run once for the whole batch,
//! each row's `s·R` is gathered and applied by one batched `r × r` product.
//! A thousand adapters cost about what one does, each a few KiB.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::file::HEAD_PREFIX;
use crate::interop::frozen;
use crate::{
    AdaptedLinear, AdapterConfig, AdapterError, AdapterFile, AdapterHost, LORA_XS_R, Method, RInit, Result,
    StoredTensor, fingerprint, inject, targeted_modules,
};

/// Largest difference allowed between an adapter file's stored `A`/`B` and
/// the bank's (relative to the largest value): the same factors up to the
/// SVD's precision.
const FACTOR_TOLERANCE: f32 = 1e-4;

/// LoRA-XS adapters of one base model and rank, applied per row of a batch
/// (see the [module docs](self)).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::module::Module;
/// use burn::tensor::Tensor;
/// use loraxs::{AdaptedLinear, AdapterBank, AdapterConfig, AdapterHost, RInit, TargetModules, inject};
///
/// type B = NdArray<f32>;
///
/// #[derive(Module, Debug)]
/// struct Tiny<B: burn::tensor::backend::Backend> { query: AdaptedLinear<B> }
///
/// impl<B: burn::tensor::backend::Backend> AdapterHost<B> for Tiny<B> {
///     fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut AdaptedLinear<B>)) {
///         visit("query", &mut self.query);
///     }
/// }
///
/// let device = Default::default();
/// let weight: Vec<f32> = (0..48).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
/// let base = Tiny { query: loraxs::interop::linear_from_torch::<B>(weight, 6, 8, None, &device).into() };
/// let config = AdapterConfig::lora_xs(4).with_targets(TargetModules::new(["query"]));
///
/// // Two "trained" adapters of the same base and rank.
/// let files: Vec<_> = [1, 2]
///     .map(|seed| {
///         let c = config.clone().with_seed(seed).with_r_init(RInit::Gaussian { std: 0.5 });
///         inject(base.clone(), &c).unwrap().to_file(Default::default()).unwrap()
///     })
///     .into();
///
/// let mut bank = AdapterBank::new(base.clone(), &config).unwrap();
/// bank.insert("a", &files[0], "a.safetensors".as_ref()).unwrap();
/// bank.insert("b", &files[1], "b.safetensors".as_ref()).unwrap();
///
/// // Three rows: adapter b, no adapter, adapter a.
/// let slots = bank.slots(&[Some("b"), None, Some("a")]).unwrap();
/// let routed = bank.route(&slots, &device);
/// let x = Tensor::<B, 3>::ones([3, 5, 8], &device);
/// let y = routed.query.forward(x.clone());
///
/// // Row 1 is the base model's output.
/// let base_out = base.query.forward(x.clone().narrow(0, 1, 1));
/// let diff = (y.narrow(0, 1, 1) - base_out).abs().max().into_scalar();
/// assert!(diff < 1e-6);
/// ```
#[derive(Debug, Clone)]
pub struct AdapterBank<B: Backend, H: AdapterHost<B>> {
    /// The base with LoRA-XS layers on the targets, `R = 0`: the shared
    /// `A` and `B`.
    template: H,
    config: AdapterConfig,
    fingerprint: String,
    /// Targeted modules, in model order.
    modules: Vec<String>,
    /// Per module, `[1 + adapters, r, r]` of `s·R` (paper orientation).
    stacks: Vec<Tensor<B, 3>>,
    /// Adapter names; name `i` is in slot `i + 1`.
    names: Vec<String>,
    /// Each adapter's head tensors (names without the `head.` prefix).
    heads: Vec<BTreeMap<String, StoredTensor>>,
}

impl<B: Backend, H: AdapterHost<B> + Clone> AdapterBank<B, H> {
    /// A bank for LoRA-XS adapters of rank `config.rank` on `config.targets`
    /// of `base`. Computes `A` and `B` (the SVD) once; adapters join with
    /// [`AdapterBank::insert`].
    pub fn new(base: H, config: &AdapterConfig) -> Result<Self> {
        if config.method != Method::LoraXs {
            return Err(AdapterError::InvalidConfig {
                field: "method",
                reason: format!(
                    "is {}: a bank shares A and B across adapters, which only LoRA-XS has",
                    config.method.spec().name()
                ),
            });
        }
        let fingerprint = fingerprint(&base, config)?;
        let modules: Vec<String> = targeted_modules(&base, config)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let config = config.clone().with_r_init(RInit::Zeros);
        let template = inject(base, &config)?.model;
        let r = config.rank;
        let mut stacks = Vec::with_capacity(modules.len());
        let mut template = template;
        template.linears_mut(&mut |name, layer| {
            if let AdaptedLinear::LoraXs(xs) = layer
                && config.targets.matches(name)
            {
                stacks.push(Tensor::zeros([1, r, r], &xs.r.device()));
            }
        });
        Ok(Self {
            template,
            config,
            fingerprint,
            modules,
            stacks,
            names: Vec::new(),
            heads: Vec::new(),
        })
    }

    /// The configuration the bank was built with (method, rank, targets).
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// Fingerprint of the base weights every adapter must carry.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The adapters' names, in slot order (slot `i + 1` for name `i`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Adapters loaded.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no adapter is loaded.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Bytes one adapter adds to the bank: `modules × r²` values of `f32`
    /// (its head, if any, on top).
    pub fn bytes_per_adapter(&self) -> usize {
        self.modules.len() * self.config.rank * self.config.rank * std::mem::size_of::<f32>()
    }

    /// The slot of each row's adapter (`None`: the base model, slot 0).
    pub fn slots(&self, names: &[Option<&str>]) -> Result<Vec<usize>> {
        names
            .iter()
            .map(|name| match name {
                None => Ok(0),
                Some(name) => self.slot(name),
            })
            .collect()
    }

    /// The slot of adapter `name`.
    pub fn slot(&self, name: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| i + 1)
            .ok_or_else(|| AdapterError::UnknownAdapter { name: name.into() })
    }

    /// The head tensors adapter `name` was saved with (names without the
    /// `head.` prefix; empty when it has none).
    pub fn head(&self, name: &str) -> Result<&BTreeMap<String, StoredTensor>> {
        Ok(&self.heads[self.slot(name)? - 1])
    }

    /// Adds the adapter in `file` (read from `path`, named in errors) as
    /// `name`. It must be LoRA-XS of the bank's rank on the same modules of
    /// the same base weights ([`AdapterError::BankMismatch`],
    /// [`AdapterError::BaseMismatch`]); `A` and `B` stored in the file must
    /// be the bank's. Its own `alpha` is kept (the bank stores `s·R`).
    pub fn insert(&mut self, name: &str, file: &AdapterFile, path: &Path) -> Result<()> {
        self.insert_all(&[(name, file, path)])
    }

    /// Adds several adapters at once, `(name, file, path)` each, with one
    /// copy of the stacks (inserting `n` adapters one by one copies them
    /// `n` times). All or none: the first adapter that cannot join is the
    /// error and the bank is left as it was.
    pub fn insert_all(&mut self, adapters: &[(&str, &AdapterFile, &Path)]) -> Result<()> {
        let mut checked = Vec::with_capacity(adapters.len());
        for (i, &(name, file, path)) in adapters.iter().enumerate() {
            if adapters[..i].iter().any(|(n, _, _)| *n == name) {
                return Err(AdapterError::DuplicateAdapter { name: name.into() });
            }
            checked.push(self.check(name, file, path)?);
        }
        let (r, n) = (self.config.rank, self.modules.len());
        let k = checked.len();
        let mut stacks = Vec::with_capacity(n);
        for (m, stack) in self.stacks.iter().enumerate() {
            let mut values = Vec::with_capacity(k * r * r);
            for (scale, file, _) in &checked {
                let stacked = &file.tensors[LORA_XS_R].values;
                values.extend(stacked[m * r * r..(m + 1) * r * r].iter().map(|v| v * scale));
            }
            let added = Tensor::<B, 3>::from_data(TensorData::new(values, [k, r, r]), &stack.device());
            stacks.push(Tensor::cat(vec![stack.clone(), added], 0));
        }
        self.stacks = stacks;
        for ((_, file, name), _) in checked.iter().zip(adapters) {
            self.names.push(name.to_string());
            self.heads.push(
                file.tensors
                    .iter()
                    .filter_map(|(k, t)| k.strip_prefix(HEAD_PREFIX).map(|k| (k.to_string(), t.clone())))
                    .collect(),
            );
        }
        Ok(())
    }

    /// Checks that `file` can join as `name`: its scale, the file and the
    /// name.
    fn check<'f>(
        &self,
        name: &'f str,
        file: &'f AdapterFile,
        path: &Path,
    ) -> Result<(f32, &'f AdapterFile, &'f str)> {
        if self.names.iter().any(|n| n == name) {
            return Err(AdapterError::DuplicateAdapter { name: name.into() });
        }
        let mismatch = |field: &str, expected: String, found: String| AdapterError::BankMismatch {
            path: path.to_path_buf(),
            field: field.into(),
            reason: format!("is {found}, the bank's is {expected}"),
        };
        let c = &file.config;
        if c.method != Method::LoraXs {
            return Err(mismatch(
                "method",
                "lora-xs".into(),
                c.method.spec().name().into(),
            ));
        }
        if c.rank != self.config.rank {
            return Err(mismatch("rank", self.config.rank.to_string(), c.rank.to_string()));
        }
        if c.factors != self.config.factors {
            return Err(mismatch(
                "factors",
                format!("{:?}", self.config.factors),
                format!("{:?}", c.factors),
            ));
        }
        // Before the fingerprint, which covers the targeted modules only.
        let modules: Vec<String> = targeted_modules(&self.template, c)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if modules != self.modules {
            return Err(mismatch("targets", self.modules.join(", "), modules.join(", ")));
        }
        if file.base_fingerprint != self.fingerprint {
            return Err(AdapterError::BaseMismatch {
                path: path.to_path_buf(),
                expected: file.base_fingerprint.clone(),
                found: self.fingerprint.clone(),
            });
        }
        let (r, n) = (self.config.rank, self.modules.len());
        let stacked = file
            .tensors
            .get(LORA_XS_R)
            .ok_or_else(|| AdapterError::MissingTensor {
                path: path.to_path_buf(),
                tensor: LORA_XS_R.into(),
            })?;
        if stacked.shape != [n, r, r] {
            return Err(AdapterError::ShapeMismatch {
                path: path.to_path_buf(),
                tensor: LORA_XS_R.into(),
                expected: vec![n, r, r],
                found: stacked.shape.clone(),
            });
        }
        if file.factors_stored {
            self.check_factors(file, path)?;
        }
        Ok((c.scale() as f32, file, name))
    }

    /// Checks a file's stored `A` and `B` against the bank's.
    fn check_factors(&self, file: &AdapterFile, path: &Path) -> Result<()> {
        let mut problem = None;
        let mut template = self.template.clone();
        template.linears_mut(&mut |name, layer| {
            let AdaptedLinear::LoraXs(xs) = layer else { return };
            if problem.is_some() || !self.config.targets.matches(name) {
                return;
            }
            for (suffix, ours) in [("lora_xs.A", xs.a_torch()), ("lora_xs.B", xs.b_torch())] {
                let key = format!("{name}.{suffix}");
                let Some(theirs) = file.tensors.get(&key) else {
                    problem = Some(AdapterError::MissingTensor {
                        path: path.to_path_buf(),
                        tensor: key,
                    });
                    return;
                };
                let ours = crate::interop::tensor_values(ours);
                let top = ours
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
                    .max(f32::MIN_POSITIVE);
                let worst = ours
                    .iter()
                    .zip(&theirs.values)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                if theirs.values.len() != ours.len() || worst > FACTOR_TOLERANCE * top {
                    problem = Some(AdapterError::BankMismatch {
                        path: path.to_path_buf(),
                        field: format!("stored factor `{key}`"),
                        reason: format!("differs from the bank's SVD factor (max |Δ| {worst:.2e})"),
                    });
                    return;
                }
            }
        });
        problem.map_or(Ok(()), Err)
    }

    /// Removes adapter `name`; the others keep their names (their slots
    /// after it move down by one).
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        let total = self.names.len() + 1;
        let keep: Vec<i64> = (0..total as i64).filter(|&s| s != slot as i64).collect();
        for stack in &mut self.stacks {
            let device = stack.device();
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(keep.clone(), [keep.len()]), &device);
            *stack = stack.clone().select(0, index);
        }
        self.names.remove(slot - 1);
        self.heads.remove(slot - 1);
        Ok(())
    }

    /// The model for one batch whose row `i` goes through the adapter in
    /// slot `slots[i]` (0: none; see [`AdapterBank::slots`]). Inputs of
    /// its routed layers must have `slots.len()` rows in their first
    /// dimension. Cloning the model is cheap (tensors are shared), the
    /// routing costs one gather of `slots.len()` `r × r` matrices per
    /// module.
    ///
    /// # Panics
    /// When a slot is beyond the bank (slots come from
    /// [`AdapterBank::slots`]).
    pub fn route(&self, slots: &[usize], device: &B::Device) -> H {
        let total = self.names.len() + 1;
        assert!(
            slots.iter().all(|&s| s < total),
            "slot out of range: the bank has {total} slots"
        );
        let ids: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [slots.len()]), device);
        let mut model = self.template.clone();
        let mut m = 0;
        model.linears_mut(&mut |name, layer| {
            if let AdaptedLinear::LoraXs(xs) = layer
                && self.config.targets.matches(name)
            {
                xs.routed = Some(frozen(self.stacks[m].clone().select(0, index.clone())));
                m += 1;
            }
        });
        model
    }
}
