//! Adapter files: safetensors holding only what was trained, plus metadata.
//!
//! The format is described in `docs/adapter-format.md`. In short: each
//! method's spec ([`crate::MethodSpec::file_tensors`]) lists what a module
//! stores; LoRA-XS stores one stacked tensor `lora_xs.R`
//! (`modules × r × r`) and recomputes `A` and `B` from the base weights on
//! load (the SVD sign convention makes that reproducible) unless the file
//! stores them. A fingerprint of the base weights guards against loading
//! into the wrong model. Nothing here knows a particular method.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use loraxs_svd::SignConvention;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::inject::{Adapted, AdapterHost, inject, targeted_modules};
use crate::interop::{tensor_values, torch_weight};
use crate::method::{ModuleShape, TensorKey};
use crate::{AdapterConfig, AdapterError, Factors, RInit, Result};

/// The `format` metadata value of every adapter file.
pub const FORMAT: &str = "loraxs-adapter";
/// The current format version; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of tensors that belong to the task head, not to adapted modules.
pub const HEAD_PREFIX: &str = "head.";
/// The head's last layer: one row per output (class, or 1 for regression).
pub const HEAD_OUTPUT_TENSOR: &str = "head.out_proj.weight";

/// Why `labels` cannot name the outputs of a head with `outputs` rows.
fn check_labels(labels: &[String], outputs: Option<usize>) -> core::result::Result<(), String> {
    if labels.is_empty() {
        return Err("is empty".into());
    }
    if let Some(i) = labels.iter().position(|l| l.trim().is_empty()) {
        return Err(format!("label {i} is blank"));
    }
    for (i, l) in labels.iter().enumerate() {
        if let Some(j) = labels[..i].iter().position(|m| m == l) {
            return Err(format!("labels {j} and {i} are both `{l}`"));
        }
    }
    match outputs {
        Some(n) if n != labels.len() => Err(format!(
            "names {} outputs, but the head (`{HEAD_OUTPUT_TENSOR}`) has {n}",
            labels.len()
        )),
        _ => Ok(()),
    }
}

/// A tensor as stored: shape and `f32` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// Options for [`AdapterFile::from_model`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveOptions {
    /// Also store LoRA-XS's frozen `A` and `B`, so loading skips the SVD
    /// (costs `r (in + out)` values per module).
    pub store_factors: bool,
}

/// The contents of an adapter file.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterFile {
    /// The adapter's configuration.
    pub config: AdapterConfig,
    /// Fingerprint of the frozen base weights (see [`fingerprint`]).
    pub base_fingerprint: String,
    /// The SVD sign convention `A` and `B` were derived under.
    pub sign_convention: SignConvention,
    /// Whether LoRA-XS's `A` and `B` are stored.
    pub factors_stored: bool,
    /// Every stored tensor by name.
    pub tensors: BTreeMap<String, StoredTensor>,
    /// Names of the head's outputs in index order (e.g. `negative`,
    /// `positive`), when the trainer knew them (metadata `labels`, a JSON
    /// array; optional). Servers answer with them, exports write them as
    /// `id2label`.
    pub labels: Option<Vec<String>>,
}

impl AdapterFile {
    /// Collects the trained values of an adapted model.
    pub fn from_model<B: Backend, H: AdapterHost<B>>(
        host: &H,
        config: &AdapterConfig,
        options: SaveOptions,
    ) -> Result<Self> {
        config.validate()?;
        let targeted = targeted_modules(host, config)?;
        let base_fingerprint = fingerprint(host, config)?;
        let spec = config.method.spec();
        let store_factors = options.store_factors && spec.has_stored_factors();
        let mut tensors = BTreeMap::new();
        let mut problem = None;
        let mut index = 0;
        host.linears(&mut |name, layer| {
            if problem.is_some() || !config.targets.matches(name) {
                return;
            }
            if !layer.carries(config.method) {
                problem = Some(AdapterError::InvalidConfig {
                    field: "method",
                    reason: format!(
                        "is {} but module `{name}` carries {}",
                        config.method.name(),
                        layer.method().map_or("no adapter", |m| m.name())
                    ),
                });
                return;
            }
            let specs = spec.file_tensors(layer.shape(), config.rank, store_factors);
            for (t, values) in specs.into_iter().zip(layer.file_values(store_factors)) {
                match t.key {
                    TensorKey::Module(suffix) => {
                        tensors.insert(
                            format!("{name}.{suffix}"),
                            StoredTensor {
                                shape: t.shape,
                                values,
                            },
                        );
                    }
                    TensorKey::Stacked(stacked) => {
                        let entry = tensors
                            .entry(stacked.to_string())
                            .or_insert_with(|| StoredTensor {
                                shape: [vec![0], t.shape.clone()].concat(),
                                values: Vec::new(),
                            });
                        entry.shape[0] += 1;
                        entry.values.extend(values);
                    }
                }
            }
            index += 1;
        });
        if let Some(e) = problem {
            return Err(e);
        }
        debug_assert_eq!(index, targeted.len());
        Ok(Self {
            config: config.clone(),
            base_fingerprint,
            sign_convention: SignConvention::default(),
            factors_stored: store_factors,
            tensors,
            labels: None,
        })
    }

    /// Records the names of the head's outputs (see [`AdapterFile::labels`]);
    /// they must be non-empty, distinct, and as many as the head has
    /// outputs when a head is stored.
    pub fn set_labels(&mut self, labels: Vec<String>) -> Result<()> {
        check_labels(&labels, self.head_outputs()).map_err(|reason| AdapterError::InvalidConfig {
            field: "labels",
            reason,
        })?;
        self.labels = Some(labels);
        Ok(())
    }

    /// Outputs of the stored head (rows of its last layer,
    /// `head.out_proj.weight`), if a head is stored.
    pub fn head_outputs(&self) -> Option<usize> {
        self.tensors
            .get(HEAD_OUTPUT_TENSOR)
            .and_then(|t| t.shape.first().copied())
    }

    /// Adds a task-head tensor; its name must start with [`HEAD_PREFIX`].
    pub fn insert_head_tensor(&mut self, name: &str, shape: Vec<usize>, values: Vec<f32>) -> Result<()> {
        if !name.starts_with(HEAD_PREFIX) {
            return Err(AdapterError::InvalidConfig {
                field: "tensors",
                reason: format!("head tensor `{name}` must be named `{HEAD_PREFIX}…`"),
            });
        }
        if values.len() != shape.iter().product::<usize>() {
            return Err(AdapterError::InvalidConfig {
                field: "tensors",
                reason: format!(
                    "head tensor `{name}` has {} values for shape {shape:?}",
                    values.len()
                ),
            });
        }
        self.tensors
            .insert(name.to_string(), StoredTensor { shape, values });
        Ok(())
    }

    /// Task-head tensors (those named `head.…`).
    pub fn head_tensors(&self) -> impl Iterator<Item = (&str, &StoredTensor)> {
        self.tensors
            .iter()
            .filter(|(n, _)| n.starts_with(HEAD_PREFIX))
            .map(|(n, t)| (n.as_str(), t))
    }

    /// Number of stored values (adapter and head; metadata excluded).
    pub fn stored_values(&self) -> usize {
        self.tensors.values().map(|t| t.values.len()).sum()
    }

    /// Serialises to safetensors bytes (little-endian `f32`).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            (
                "config".to_string(),
                serde_json::to_string(&self.config).expect("config serialises"),
            ),
            (
                "sign_convention".to_string(),
                self.sign_convention.name().to_string(),
            ),
            ("base_fingerprint".to_string(), self.base_fingerprint.clone()),
            (
                "factors".to_string(),
                if self.factors_stored {
                    "stored"
                } else {
                    "recomputed"
                }
                .to_string(),
            ),
        ]);
        if let Some(labels) = &self.labels {
            check_labels(labels, self.head_outputs()).map_err(|reason| AdapterError::InvalidConfig {
                field: "labels",
                reason,
            })?;
            metadata.insert(
                "labels".to_string(),
                serde_json::to_string(labels).expect("strings serialise"),
            );
        }
        let memory = || PathBuf::from("<memory>");
        let bytes: Vec<(&String, &StoredTensor, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| (name, t, t.values.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = bytes
            .iter()
            .map(|(name, t, data)| {
                TensorView::new(Dtype::F32, t.shape.clone(), data).map(|v| (name.as_str(), v))
            })
            .collect::<core::result::Result<Vec<_>, _>>()
            .map_err(|e| AdapterError::Corrupt {
                path: memory(),
                reason: e.to_string(),
            })?;
        safetensors::serialize(views, Some(metadata)).map_err(|e| AdapterError::Corrupt {
            path: memory(),
            reason: e.to_string(),
        })
    }

    /// Writes the file atomically: a temporary file is renamed into place,
    /// so a crash never leaves a half-written adapter.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io = |source| AdapterError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads and validates a file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| AdapterError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses safetensors bytes; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: String| AdapterError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let bad = |name: &str, reason: String| AdapterError::Metadata {
            path: path.to_path_buf(),
            field: name.to_string(),
            reason,
        };
        let field = |name: &str| meta.get(name).ok_or_else(|| bad(name, "is missing".into()));
        let format = field("format")?;
        if format != FORMAT {
            return Err(bad("format", format!("is `{format}`, expected `{FORMAT}`")));
        }
        let version: u32 = field("format_version")?
            .parse()
            .map_err(|_| bad("format_version", "is not an integer".into()))?;
        if version == 0 || version > FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!("is {version}; this build reads versions 1 to {FORMAT_VERSION}"),
            ));
        }
        let config: AdapterConfig =
            serde_json::from_str(field("config")?).map_err(|e| bad("config", format!("is invalid: {e}")))?;
        config.validate().map_err(|e| bad("config", e.to_string()))?;
        let sign = field("sign_convention")?;
        let sign_convention = SignConvention::from_name(sign)
            .ok_or_else(|| bad("sign_convention", format!("`{sign}` is unknown")))?;
        let base_fingerprint = field("base_fingerprint")?.clone();
        let factors_stored = match field("factors")?.as_str() {
            "stored" => true,
            "recomputed" => false,
            other => {
                return Err(bad(
                    "factors",
                    format!("is `{other}`, expected `stored` or `recomputed`"),
                ));
            }
        };
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let values = decode_view(&view).ok_or_else(|| AdapterError::Dtype {
                path: path.to_path_buf(),
                tensor: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(AdapterError::NonFinite {
                    path: path.to_path_buf(),
                    tensor: name,
                });
            }
            tensors.insert(
                name,
                StoredTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        let labels = match meta.get("labels") {
            None => None,
            Some(text) => {
                let labels: Vec<String> = serde_json::from_str(text)
                    .map_err(|e| bad("labels", format!("is not a JSON array of strings: {e}")))?;
                let outputs = tensors
                    .get(HEAD_OUTPUT_TENSOR)
                    .and_then(|t| t.shape.first().copied());
                check_labels(&labels, outputs).map_err(|reason| bad("labels", reason))?;
                Some(labels)
            }
        };
        Ok(Self {
            config,
            base_fingerprint,
            sign_convention,
            factors_stored,
            tensors,
            labels,
        })
    }

    /// Injects this adapter into a base model (no adapters yet) and loads
    /// the stored values. `path` names the file in errors.
    ///
    /// Checks, in order: the base fingerprint, then that every tensor the
    /// model needs is present with the right shape and that nothing else
    /// is; only then is the model touched.
    pub fn apply<B: Backend, H: AdapterHost<B>>(&self, host: H, path: &Path) -> Result<Adapted<H>> {
        let targeted = targeted_modules(&host, &self.config)?;
        let found = fingerprint(&host, &self.config)?;
        if found != self.base_fingerprint {
            return Err(AdapterError::BaseMismatch {
                path: path.to_path_buf(),
                expected: self.base_fingerprint.clone(),
                found,
            });
        }
        let expected = self.expected_shapes(&targeted);
        for (name, shape) in &expected {
            let stored = self
                .tensors
                .get(name)
                .ok_or_else(|| AdapterError::MissingTensor {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                })?;
            if &stored.shape != shape {
                return Err(AdapterError::ShapeMismatch {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    expected: shape.clone(),
                    found: stored.shape.clone(),
                });
            }
        }
        if let Some(name) = self
            .tensors
            .keys()
            .find(|n| !expected.contains_key(*n) && !n.starts_with(HEAD_PREFIX))
        {
            return Err(AdapterError::UnexpectedTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
            });
        }

        // Stored factors make the SVD unnecessary: inject cheap placeholders
        // and overwrite them.
        let mut config = self.config.clone();
        if self.factors_stored {
            config.factors = Factors::Random;
            config.r_init = RInit::Zeros;
        }
        let mut adapted = inject(host, &config)?;
        adapted.config = self.config.clone();
        let spec = self.config.method.spec();
        let mut index = 0;
        adapted.model.linears_mut(&mut |name, layer| {
            if !self.config.targets.matches(name) {
                return;
            }
            let specs = spec.file_tensors(layer.shape(), self.config.rank, self.factors_stored);
            let values: Vec<&[f32]> = specs
                .iter()
                .map(|t| match t.key {
                    TensorKey::Module(suffix) => self.tensors[&format!("{name}.{suffix}")].values.as_slice(),
                    TensorKey::Stacked(stacked) => {
                        let n = t.len();
                        &self.tensors[stacked].values[index * n..(index + 1) * n]
                    }
                })
                .collect();
            layer.replace_with(|l| l.load_file_values(&values, self.factors_stored));
            index += 1;
        });
        Ok(adapted)
    }

    /// Every tensor the targeted modules need from this file, with its
    /// shape (stacked tensors with the module count first).
    fn expected_shapes(&self, targeted: &[(String, ModuleShape)]) -> BTreeMap<String, Vec<usize>> {
        let spec = self.config.method.spec();
        let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (name, shape) in targeted {
            for t in spec.file_tensors(*shape, self.config.rank, self.factors_stored) {
                match t.key {
                    TensorKey::Module(suffix) => {
                        out.insert(format!("{name}.{suffix}"), t.shape);
                    }
                    TensorKey::Stacked(stacked) => {
                        out.entry(stacked.to_string())
                            .or_insert_with(|| [vec![0], t.shape].concat())[0] += 1;
                    }
                }
            }
        }
        out
    }
}

/// Decodes F32, F16 or BF16 little-endian data to `f32`.
pub(crate) fn decode_view(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Some(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            data.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            data.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}

/// Feeds `values` as little-endian bytes, a block at a time (one `update`
/// per value was most of the cost of saving an adapter).
fn hash_f32s(hasher: &mut Sha256, values: &[f32]) {
    let mut block = [0u8; 16 * 1024];
    for chunk in values.chunks(block.len() / 4) {
        for (bytes, v) in block.chunks_exact_mut(4).zip(chunk) {
            bytes.copy_from_slice(&v.to_le_bytes());
        }
        hasher.update(&block[..chunk.len() * 4]);
    }
}

/// Fingerprint of the frozen base weights an adapter depends on.
///
/// SHA-256 over every adaptable layer in model order whose weights stay
/// frozen under `config` (the targeted layers, or for full fine-tuning the
/// untargeted ones): its name, a zero byte, `out` and `in` as little-endian
/// `u64`, the weight in PyTorch layout as little-endian `f32`, and the bias
/// if any. Targeted layers under full fine-tuning contribute name and shape
/// only. The first 16 bytes, in hex.
pub fn fingerprint<B: Backend, H: AdapterHost<B>>(host: &H, config: &AdapterConfig) -> Result<String> {
    let full = config.method.spec().trains_base();
    let mut hasher = Sha256::new();
    let mut problem = None;
    host.linears(&mut |name, layer| {
        let targeted = config.targets.matches(name);
        let weights = targeted != full;
        if !targeted && !weights {
            return;
        }
        let (d_in, d_out) = layer.dims();
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update((d_out as u64).to_le_bytes());
        hasher.update((d_in as u64).to_le_bytes());
        if !weights {
            return;
        }
        if layer.is_merged() {
            problem.get_or_insert_with(|| AdapterError::Merged {
                module: name.to_string(),
            });
            return;
        }
        hash_f32s(&mut hasher, &torch_weight(layer.base()));
        if let Some(bias) = &layer.base().bias {
            hash_f32s(&mut hasher, &tensor_values(bias.val()));
        }
    });
    if let Some(e) = problem {
        return Err(e);
    }
    let digest = hasher.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}
