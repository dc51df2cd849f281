//! Leaving loraxs: a LoRA-XS adapter as a PEFT LoRA adapter (loadable by
//! PEFT, transformers and vLLM), or folded into the base weights of a
//! Hugging Face `model.safetensors`.
//!
//! LoRA-XS's update `s·B R A` is a LoRA update of rank `r` with
//! `lora_A = s·R·A` (`r × in`) and `lora_B = B` (`out × r`); with
//! `lora_alpha = r` PEFT's own scale is 1, so PEFT computes exactly
//! `W x + b + s·B R A x`. vLLM serves only some ranks; [`PeftOptions::pad_rank`]
//! pads `lora_A` with zero rows and `lora_B` with zero columns up to the
//! next one, which changes nothing in the output.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::interop::{tensor_values, torch_weight};
use crate::{AdaptedLinear, AdapterConfig, AdapterError, AdapterHost, Method, Result};

/// Ranks vLLM accepts for LoRA adapters (`max_lora_rank`).
pub const VLLM_RANKS: [usize; 9] = [1, 8, 16, 32, 64, 128, 256, 320, 512];

/// How [`to_peft`] writes the adapter.
#[derive(Debug, Clone, Default)]
pub struct PeftOptions {
    /// Pad the rank up to the next of [`VLLM_RANKS`] (zeros: the output
    /// is unchanged).
    pub pad_rank: bool,
    /// Prefix of the module names in the Hugging Face class the adapter is
    /// loaded into, e.g. `bert.` for `BertForSequenceClassification`
    /// (loraxs names encoder modules as `BertModel` does, and decoder
    /// modules as `LlamaForCausalLM` does).
    pub module_prefix: String,
    /// `base_model_name_or_path` in `adapter_config.json`.
    pub base_model: Option<String>,
    /// `task_type` in `adapter_config.json` (e.g. `CAUSAL_LM`,
    /// `FEATURE_EXTRACTION`).
    pub task_type: Option<String>,
}

/// A PEFT LoRA adapter: `adapter_config.json` and the tensors of
/// `adapter_model.safetensors`.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    /// The contents of `adapter_config.json`.
    pub config: serde_json::Value,
    /// `(name, shape, values)` of every tensor, in module order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// The rank written (padded or not).
    pub rank: usize,
    /// Metadata of `adapter_model.safetensors` (`format: pt`, and the
    /// loraxs method, rank and alpha it came from).
    pub metadata: std::collections::HashMap<String, String>,
}

impl PeftAdapter {
    /// Adds whole modules PEFT keeps beside the LoRA update
    /// (`modules_to_save`, e.g. a task head): `modules` are the module
    /// names PEFT matches (`classifier`), `tensors` their weights under the
    /// names of the class the adapter is loaded into
    /// (`classifier.weight`), written as `base_model.model.<name>` as PEFT
    /// saves them.
    pub fn with_saved_modules(
        mut self,
        modules: &[&str],
        tensors: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Self {
        for (name, shape, values) in tensors {
            self.tensors
                .push((format!("base_model.model.{name}"), shape, values));
        }
        self.config["modules_to_save"] = serde_json::json!(modules);
        self
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into
    /// `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path, e: std::io::Error| AdapterError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let config_path = dir.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&self.config).expect("JSON values serialise");
        std::fs::write(&config_path, text + "\n").map_err(|e| io(&config_path, e))?;
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let path = dir.join("adapter_model.safetensors");
        let views = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|view| (name.clone(), view))
                    .map_err(|e| corrupt(&path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let file =
            safetensors::serialize(views, Some(self.metadata.clone())).map_err(|e| corrupt(&path, e))?;
        std::fs::write(&path, file).map_err(|e| io(&path, e))
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The LoRA-XS adapter of `model` (injected or loaded with `config`) as a
/// PEFT LoRA adapter (see the [module docs](self)).
pub fn to_peft<B: Backend, H: AdapterHost<B>>(
    model: &H,
    config: &AdapterConfig,
    options: &PeftOptions,
) -> Result<PeftAdapter> {
    if config.method != Method::LoraXs {
        return Err(AdapterError::InvalidConfig {
            field: "method",
            reason: format!(
                "is {}: PEFT export is written for LoRA-XS adapters",
                config.method.spec().name()
            ),
        });
    }
    let r = config.rank;
    let rank = if options.pad_rank {
        *VLLM_RANKS
            .iter()
            .find(|&&v| v >= r)
            .ok_or_else(|| AdapterError::InvalidConfig {
                field: "rank",
                reason: format!("{r} exceeds vLLM's largest LoRA rank, {}", VLLM_RANKS[8]),
            })?
    } else {
        r
    };
    let mut tensors = Vec::new();
    let mut problem = None;
    model.linears(&mut |name, layer| {
        if !config.targets.matches(name) || problem.is_some() {
            return;
        }
        let AdaptedLinear::LoraXs(xs) = layer else {
            problem = Some(AdapterError::InvalidConfig {
                field: "targets",
                reason: format!("module `{name}` carries no LoRA-XS adapter"),
            });
            return;
        };
        if xs.merged {
            problem = Some(AdapterError::Merged { module: name.into() });
            return;
        }
        let (d_in, d_out) = xs.dims();
        // s·R·A, r × in; B, out × r (PyTorch orientation).
        let down = tensor_values(xs.r.val().matmul(xs.a_torch()).mul_scalar(xs.scale));
        let up = tensor_values(xs.b_torch());
        let mut lora_a = down;
        lora_a.resize(rank * d_in, 0.0);
        let mut lora_b = Vec::with_capacity(d_out * rank);
        for row in up.chunks(r) {
            lora_b.extend_from_slice(row);
            lora_b.extend(std::iter::repeat_n(0.0, rank - r));
        }
        let key = format!("base_model.model.{}{name}", options.module_prefix);
        tensors.push((format!("{key}.lora_A.weight"), vec![rank, d_in], lora_a));
        tensors.push((format!("{key}.lora_B.weight"), vec![d_out, rank], lora_b));
    });
    if let Some(e) = problem {
        return Err(e);
    }
    let json = serde_json::json!({
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": rank,
        "target_modules": config.targets.patterns(),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "inference_mode": true,
        "modules_to_save": null,
        "task_type": options.task_type,
        "base_model_name_or_path": options.base_model,
    });
    // Provenance in the weights file's metadata (an unknown key in
    // adapter_config.json makes PEFT warn about a newer version).
    let metadata = [
        ("format", "pt".to_string()),
        ("loraxs_method", "lora-xs".to_string()),
        ("loraxs_rank", r.to_string()),
        ("loraxs_alpha", config.alpha.to_string()),
        (
            "loraxs_note",
            "lora_A = (alpha/r)·R·A, lora_B = B; lora_alpha = r makes PEFT's scale 1".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(PeftAdapter {
        config: json,
        tensors,
        rank,
        metadata,
    })
}

/// How [`write_merged_safetensors_with`] lays out the merged file beyond
/// the merged weights: for a model class other than the base's (an
/// encoder checkpoint become `BertForSequenceClassification`).
#[derive(Debug, Clone, Default)]
pub struct MergedLayout {
    /// Prefix every tensor of the original lacks (e.g. `bert.`: a
    /// `BertModel` checkpoint's `embeddings.…` become `bert.embeddings.…`).
    pub class_prefix: Option<String>,
    /// Tensors of the original left out, by the prefix of their name in
    /// the original, e.g. a pre-training head `cls.`.
    pub drop: Vec<String>,
    /// Tensors written as `F32` under their names, replacing a tensor of
    /// that name (after `class_prefix`) or added (e.g. a task head).
    pub extra: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Writes `out`: the Hugging Face weights file `original` with every
/// adapted module of `model` replaced by its merged weight `W + ΔW` (any
/// method), in the tensor's own dtype (F32, F16 or BF16); every other
/// tensor and the metadata as they were. A module `name` is the file's
/// tensor `name.weight`, or the one tensor ending in `.name.weight` (a
/// class prefix such as `bert.`). Returns the number of tensors replaced.
pub fn write_merged_safetensors<B: Backend, H: AdapterHost<B>>(
    model: &H,
    config: &AdapterConfig,
    original: &Path,
    out: &Path,
) -> Result<usize> {
    write_merged_safetensors_with(model, config, original, out, &MergedLayout::default())
}

/// [`write_merged_safetensors`], with the tensors renamed, left out and
/// added as `layout` says.
pub fn write_merged_safetensors_with<B: Backend, H: AdapterHost<B>>(
    model: &H,
    config: &AdapterConfig,
    original: &Path,
    out: &Path,
    layout: &MergedLayout,
) -> Result<usize> {
    let bytes = std::fs::read(original).map_err(|e| AdapterError::Io {
        path: original.to_path_buf(),
        source: e,
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(original, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(original, e))?;
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    let mut merged: Vec<(String, Vec<u8>)> = Vec::new();
    let mut problem = None;
    model.linears(&mut |name, layer| {
        if problem.is_some() || !config.targets.matches(name) {
            return;
        }
        let exact = format!("{name}.weight");
        let suffix = format!(".{exact}");
        let found: Vec<&String> = names
            .iter()
            .filter(|n| **n == exact || n.ends_with(&suffix))
            .collect();
        let [key] = found[..] else {
            problem = Some(if found.is_empty() {
                AdapterError::MissingTensor {
                    path: original.to_path_buf(),
                    tensor: exact,
                }
            } else {
                corrupt(original, format!("{} tensors end in `{exact}`", found.len()))
            });
            return;
        };
        let view = st.tensor(key).expect("listed name");
        let weight = torch_weight(layer.clone().merge().base());
        let (d_in, d_out) = layer.dims();
        if view.shape() != [d_out, d_in] {
            problem = Some(AdapterError::ShapeMismatch {
                path: original.to_path_buf(),
                tensor: key.clone(),
                expected: vec![d_out, d_in],
                found: view.shape().to_vec(),
            });
            return;
        }
        let encoded = match view.dtype() {
            Dtype::F32 => weight.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => weight
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            Dtype::BF16 => weight
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            other => {
                problem = Some(AdapterError::Dtype {
                    path: original.to_path_buf(),
                    tensor: key.clone(),
                    dtype: format!("{other:?}"),
                });
                return;
            }
        };
        merged.push((key.clone(), encoded));
    });
    if let Some(e) = problem {
        return Err(e);
    }
    let renamed = |n: &str| match &layout.class_prefix {
        Some(p) if !n.starts_with(p.as_str()) => format!("{p}{n}"),
        _ => n.to_string(),
    };
    let extra: Vec<(&String, &Vec<usize>, Vec<u8>)> = layout
        .extra
        .iter()
        .map(|(n, shape, v)| (n, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let mut views = Vec::new();
    for n in &names {
        let name = renamed(n);
        if layout.drop.iter().any(|d| n.starts_with(d.as_str())) || extra.iter().any(|(e, _, _)| **e == name)
        {
            continue;
        }
        let view = st.tensor(n).expect("listed name");
        let data = merged
            .iter()
            .find(|(k, _)| k == n)
            .map_or(view.data(), |(_, b)| b.as_slice());
        let view =
            TensorView::new(view.dtype(), view.shape().to_vec(), data).map_err(|e| corrupt(original, e))?;
        views.push((name, view));
    }
    for (name, shape, data) in &extra {
        let view = TensorView::new(Dtype::F32, (*shape).clone(), data).map_err(|e| corrupt(out, e))?;
        views.push(((*name).clone(), view));
    }
    let file = safetensors::serialize(views, meta.metadata().clone()).map_err(|e| corrupt(out, e))?;
    std::fs::write(out, file).map_err(|e| AdapterError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    Ok(merged.len())
}

/// A PEFT LoRA adapter projected onto LoRA-XS (see [`import_peft`]).
#[derive(Debug)]
pub struct ImportedPeft<H> {
    /// The base with the projected LoRA-XS adapter.
    pub adapted: crate::Adapted<H>,
    /// `‖ΔW − s·BRA‖_F / ‖ΔW‖_F` over all modules together: how much of
    /// the LoRA update the LoRA-XS subspace cannot hold.
    pub relative_error: f64,
    /// The same per module, in model order.
    pub modules: Vec<(String, f64)>,
}

/// Brings a PEFT LoRA adapter (a folder with `adapter_config.json` and
/// `adapter_model.safetensors`) over to LoRA-XS of `rank` on `base`: the
/// closest LoRA-XS update to each module's `ΔW = (alpha/r)·B_p A_p` in the
/// Frobenius norm, `R = Bᵀ ΔW A⁺ / s` in the SVD basis of the base weights
/// (`B = U_r` orthonormal, `A⁺ = V_r Σ_r⁻¹`), computed in `r`-sized
/// products without forming `ΔW`. `alpha = rank`, so `s = 1`. Reports what
/// the projection loses ([`ImportedPeft::relative_error`]). Tensors are
/// found by module name whatever the class prefix (`base_model.model.`,
/// `bert.`, …).
pub fn import_peft<B: Backend, H: AdapterHost<B>>(
    base: H,
    dir: &Path,
    rank: usize,
) -> Result<ImportedPeft<H>> {
    let config_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| AdapterError::Io {
        path: config_path.clone(),
        source: e,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| corrupt(&config_path, e))?;
    let field = |name: &'static str, reason: String| AdapterError::Metadata {
        path: config_path.clone(),
        field: name.into(),
        reason,
    };
    if json["peft_type"] != "LORA" {
        return Err(field(
            "peft_type",
            format!("is {}, expected \"LORA\"", json["peft_type"]),
        ));
    }
    let r_p = json["r"]
        .as_u64()
        .filter(|&r| r > 0)
        .ok_or_else(|| field("r", format!("is {}, expected a positive integer", json["r"])))?
        as f64;
    let alpha_p = json["lora_alpha"].as_f64().ok_or_else(|| {
        field(
            "lora_alpha",
            format!("is {}, expected a number", json["lora_alpha"]),
        )
    })?;
    let scale_p = if json["use_rslora"].as_bool().unwrap_or(false) {
        alpha_p / r_p.sqrt()
    } else {
        alpha_p / r_p
    };
    let targets: Vec<String> = match &json["target_modules"] {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|t| t.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| field("target_modules", "holds a non-string".into()))?,
        other => {
            return Err(field(
                "target_modules",
                format!(
                    "is {other}, expected a list of module names (regular expressions are not supported)"
                ),
            ));
        }
    };
    let weights_path = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights_path).map_err(|e| AdapterError::Io {
        path: weights_path.clone(),
        source: e,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(&weights_path, e))?;
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();

    let config = AdapterConfig::lora_xs(rank)
        .with_alpha(rank as f64)
        .with_targets(crate::TargetModules::new(targets))
        .with_r_init(crate::RInit::Zeros);
    let mut adapted = crate::inject(base, &config)?;
    let mut problem = None;
    let mut modules = Vec::new();
    let (mut lost, mut total) = (0.0f64, 0.0f64);
    adapted.model.linears_mut(&mut |name, layer| {
        let AdaptedLinear::LoraXs(xs) = layer else { return };
        if problem.is_some() {
            return;
        }
        let (d_in, d_out) = xs.dims();
        let mut read =
            |part: &str, cols: Option<usize>, rows: Option<usize>| -> Option<(Vec<f32>, [usize; 2])> {
                let exact = format!("{name}.{part}.weight");
                let suffix = format!(".{exact}");
                let key = names.iter().find(|n| **n == exact || n.ends_with(&suffix));
                let Some(key) = key else {
                    problem.get_or_insert(AdapterError::MissingTensor {
                        path: weights_path.clone(),
                        tensor: exact,
                    });
                    return None;
                };
                let view = st.tensor(key).expect("listed name");
                let shape = view.shape().to_vec();
                let ok = shape.len() == 2
                    && cols.is_none_or(|c| shape[1] == c)
                    && rows.is_none_or(|r| shape[0] == r);
                if !ok {
                    problem.get_or_insert(AdapterError::ShapeMismatch {
                        path: weights_path.clone(),
                        tensor: key.clone(),
                        expected: vec![rows.unwrap_or(0), cols.unwrap_or(0)],
                        found: shape,
                    });
                    return None;
                }
                let values = crate::file::decode_view(&view).or_else(|| {
                    problem.get_or_insert(AdapterError::Dtype {
                        path: weights_path.clone(),
                        tensor: key.clone(),
                        dtype: format!("{:?}", view.dtype()),
                    });
                    None
                })?;
                Some((values, [shape[0], shape[1]]))
            };
        let Some((a_p, a_shape)) = read("lora_A", Some(d_in), None) else {
            return;
        };
        let Some((b_p, b_shape)) = read("lora_B", Some(a_shape[0]), Some(d_out)) else {
            return;
        };
        let device = xs.r.device();
        let a_p = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(a_p, a_shape), &device);
        let b_p = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(b_p, b_shape), &device);
        let (a, b) = (xs.a_torch(), xs.b_torch()); // r × in, out × r
        // σ_i² = ‖A_i‖² (A = Σ Vᵀ).
        let sigma2 = a.clone().powf_scalar(2.0).sum_dim(1).reshape([1, rank]);
        // R = (Bᵀ B_p)(A_p Aᵀ) Σ⁻² · scale_p / s, s = 1.
        let inner = b
            .clone()
            .transpose()
            .matmul(b_p.clone())
            .matmul(a_p.clone().matmul(a.transpose()));
        let r = inner.div(sigma2.clone()).mul_scalar(scale_p);
        // ‖ΔW‖² = scale_p² tr((B_pᵀB_p)(A_p A_pᵀ)); ‖B R A‖² = Σ_ij R_ij² σ_j².
        let gram = b_p
            .clone()
            .transpose()
            .matmul(b_p)
            .matmul(a_p.clone().matmul(a_p.transpose()));
        let rp = gram.dims()[0];
        let eye = Tensor::<B, 2>::eye(rp, &device);
        let delta2 = tensor_values((gram * eye).sum())[0] as f64 * scale_p * scale_p;
        let kept2 = tensor_values(r.clone().powf_scalar(2.0).mul(sigma2).sum())[0] as f64;
        let err2 = (delta2 - kept2).max(0.0);
        modules.push((name.to_string(), (err2 / delta2.max(f64::MIN_POSITIVE)).sqrt()));
        lost += err2;
        total += delta2;
        xs.r = crate::interop::replace_values(xs.r.clone(), &tensor_values(r), false);
    });
    if let Some(e) = problem {
        return Err(e);
    }
    Ok(ImportedPeft {
        adapted,
        relative_error: (lost / total.max(f64::MIN_POSITIVE)).sqrt(),
        modules,
    })
}
