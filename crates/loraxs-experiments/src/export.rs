//! `cargo xtask export`: a loraxs adapter file as a PEFT LoRA folder or
//! folded into a Hugging Face model folder (see [`loraxs::export`]).

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use loraxs::AdapterFile;
use loraxs::export::{MergedLayout, PeftOptions, to_peft, write_merged_safetensors_with};
use loraxs_heads::export::{TransformersHead, transformers_head};

use crate::{ExperimentError, Result};

type B = NdArray<f32>;

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A PEFT LoRA adapter folder.
    Peft,
    /// A Hugging Face model folder with the update folded into the weights.
    Merged,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "peft" => Ok(Self::Peft),
            "merged" => Ok(Self::Merged),
            other => Err(format!(
                "unknown export format `{other}`: expected peft or merged"
            )),
        }
    }
}

/// An export request.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The base model: an encoder or decoder Hugging Face folder, or a
    /// decoder GGUF file (PEFT export only).
    pub model: PathBuf,
    /// The loraxs adapter file.
    pub adapter: PathBuf,
    /// The format.
    pub to: ExportFormat,
    /// The folder to write.
    pub out: PathBuf,
    /// PEFT: pad the rank to the next rank vLLM serves.
    pub pad_rank: bool,
    /// PEFT: prefix of module names in the class that will load the
    /// adapter (e.g. `bert.` for `BertForSequenceClassification`). With a
    /// task head it is the head's class's (empty means that one).
    pub module_prefix: String,
    /// Export an adapter saved with a task head without it: the encoder
    /// update alone, for the base model's own class. Otherwise the head is
    /// exported as transformers' `…ForSequenceClassification` head
    /// ([`loraxs_heads::export`]): under PEFT's `modules_to_save`, or in
    /// the merged folder's weights and `config.json`.
    pub drop_head: bool,
}

fn io(path: &Path, e: std::io::Error) -> ExperimentError {
    ExperimentError::Results {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Whether `path` holds a decoder (see [`loraxs_models::is_decoder_path`]).
fn is_decoder(path: &Path) -> Result<bool> {
    Ok(loraxs_models::is_decoder_path(path)?)
}

/// Runs `request`; returns a one-line summary.
pub fn export(request: &ExportRequest) -> Result<String> {
    let device = Default::default();
    let file = AdapterFile::load(&request.adapter)?;
    let has_head = file.head_tensors().next().is_some();
    let decoder = is_decoder(&request.model)?;
    let head = if has_head && !request.drop_head {
        if decoder {
            return Err(ExperimentError::Results {
                path: request.adapter.clone(),
                reason: "the adapter carries a task head, and the base is a decoder: heads are \
                         exported for encoders only; pass --drop-head to export the adapter alone"
                    .into(),
            });
        }
        let config = loraxs_models::EncoderConfig::load(request.model.join("config.json"))?;
        let head = transformers_head(&file, config.model_type).map_err(|e| ExperimentError::Results {
            path: request.adapter.clone(),
            reason: format!("{e} (pass --drop-head to export the encoder adapter alone)"),
        })?;
        if !request.module_prefix.is_empty() && request.module_prefix != head.base_prefix {
            return Err(ExperimentError::Results {
                path: request.adapter.clone(),
                reason: format!(
                    "--module-prefix `{}`: the task head is exported for {}, whose encoder is `{}`",
                    request.module_prefix, head.architecture, head.base_prefix
                ),
            });
        }
        Some(head)
    } else {
        None
    };
    if request.to == ExportFormat::Merged && (decoder && !request.model.join("model.safetensors").is_file()) {
        return Err(ExperimentError::Results {
            path: request.model.clone(),
            reason: "a merged export rewrites the base's model.safetensors: give a Hugging Face folder \
                     with one (GGUF and sharded checkpoints are not supported yet)"
                .into(),
        });
    }
    match (decoder, request.to) {
        (false, to) => {
            let dir = loraxs_models::ModelDir::new(&request.model)?;
            let (base, _) = dir.encoder::<B>(&device)?;
            let model = file.apply(base, &request.adapter)?.model;
            finish(&model, &file, head.as_ref(), request, to)
        }
        (true, to) => {
            let (base, _, _) = loraxs_models::load_decoder::<B>(&request.model, &device)?;
            let model = file.apply(base, &request.adapter)?.model;
            finish(&model, &file, None, request, to)
        }
    }
}

fn finish<H: loraxs::AdapterHost<B>>(
    model: &H,
    file: &AdapterFile,
    head: Option<&TransformersHead>,
    request: &ExportRequest,
    to: ExportFormat,
) -> Result<String> {
    let out = &request.out;
    match to {
        ExportFormat::Peft => {
            let options = PeftOptions {
                pad_rank: request.pad_rank,
                module_prefix: head.map_or(request.module_prefix.clone(), |h| h.base_prefix.to_string()),
                base_model: Some(request.model.display().to_string()),
                task_type: head.map(|_| "SEQ_CLS".to_string()),
            };
            let mut peft = to_peft(model, &file.config, &options)?;
            if let Some(head) = head {
                peft = peft.with_saved_modules(&head.modules_to_save, head.tensors.clone());
            }
            peft.write(out)?;
            let load = head.map_or(String::new(), |h| {
                format!(
                    "; load it into {}.from_pretrained(base, num_labels={}) — labels {:?}",
                    h.architecture, h.num_labels, h.labels
                )
            });
            Ok(format!(
                "wrote {} (PEFT LoRA, rank {}, {} tensors{load})",
                out.display(),
                peft.rank,
                peft.tensors.len()
            ))
        }
        ExportFormat::Merged => {
            std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
            // Everything but the weights travels as is (config, tokenizer).
            let entries = std::fs::read_dir(&request.model).map_err(|e| io(&request.model, e))?;
            for entry in entries {
                let path = entry.map_err(|e| io(&request.model, e))?.path();
                let name = path.file_name().unwrap_or_default();
                let skip = name == "model.safetensors"
                    || path.extension().is_some_and(|e| e == "bin" || e == "gguf")
                    || !path.is_file()
                    || (head.is_some() && name == "config.json");
                if !skip {
                    std::fs::copy(&path, out.join(name)).map_err(|e| io(&path, e))?;
                }
            }
            let layout = match head {
                Some(h) => {
                    let path = request.model.join("config.json");
                    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                    let base: serde_json::Value =
                        serde_json::from_str(&text).map_err(|e| ExperimentError::Results {
                            path: path.clone(),
                            reason: format!("is not JSON: {e}"),
                        })?;
                    let config =
                        serde_json::to_string_pretty(&h.config_json(&base)).expect("JSON serialises");
                    let target = out.join("config.json");
                    std::fs::write(&target, config + "\n").map_err(|e| io(&target, e))?;
                    MergedLayout {
                        class_prefix: Some(h.base_prefix.to_string()),
                        // Pre-training heads (BERT's `cls.`, RoBERTa's `lm_head.`).
                        drop: vec!["cls.".into(), "lm_head.".into()],
                        extra: h.tensors.clone(),
                    }
                }
                None => MergedLayout::default(),
            };
            let n = write_merged_safetensors_with(
                model,
                &file.config,
                &request.model.join("model.safetensors"),
                &out.join("model.safetensors"),
                &layout,
            )?;
            let class = head.map_or(String::new(), |h| {
                format!(", {} with labels {:?}", h.architecture, h.labels)
            });
            Ok(format!("wrote {} ({n} weights merged{class})", out.display()))
        }
    }
}

/// `cargo xtask import`: a PEFT LoRA folder projected onto LoRA-XS of
/// `rank` on the base `model`, saved as a loraxs adapter file at `out`;
/// returns a summary with the projection's relative error.
pub fn import(model: &Path, peft: &Path, rank: usize, out: &Path) -> Result<String> {
    let device = Default::default();
    fn finish<H: loraxs::AdapterHost<B>>(
        imported: loraxs::export::ImportedPeft<H>,
        out: &Path,
    ) -> Result<String> {
        imported.adapted.save(out, loraxs::SaveOptions::default())?;
        let worst = imported
            .modules
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(String::new(), |(name, e)| {
                format!("; worst module {name}: {e:.3}")
            });
        Ok(format!(
            "wrote {} (LoRA-XS r={}, {} modules); relative error of the projection ‖ΔW − s·BRA‖/‖ΔW‖ = {:.4}{worst}",
            out.display(),
            imported.adapted.config.rank,
            imported.modules.len(),
            imported.relative_error
        ))
    }
    if is_decoder(model)? {
        let (base, _, _) = loraxs_models::load_decoder::<B>(model, &device)?;
        finish(loraxs::export::import_peft(base, peft, rank)?, out)
    } else {
        let (base, _) = loraxs_models::ModelDir::new(model)?.encoder::<B>(&device)?;
        finish(loraxs::export::import_peft(base, peft, rank)?, out)
    }
}
