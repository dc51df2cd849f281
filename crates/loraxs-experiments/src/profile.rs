//! Profiles: what a reproduction runs, as JSON data (`profiles/glue-*.json`).

use std::collections::BTreeMap;
use std::path::Path;

use loraxs_data::GlueTask;
use serde::Deserialize;

use crate::{ExperimentError, Result};

/// A value per task name, with an optional `default` for the rest.
pub type PerTask<T> = BTreeMap<String, T>;

/// The profiles shipped with this crate, by name.
pub const BUILT_IN: [(&str, &str); 6] = [
    ("quick", include_str!("../profiles/glue-quick.json")),
    ("standard", include_str!("../profiles/glue-standard.json")),
    ("ablation", include_str!("../profiles/glue-ablation.json")),
    ("sweep", include_str!("../profiles/glue-sweep.json")),
    ("paper", include_str!("../profiles/glue-paper.json")),
    ("smoke", include_str!("../profiles/glue-smoke.json")),
];

/// Learning rates and ranks of one method (a preset name of
/// [`loraxs::AdapterConfig::preset`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    /// Ranks to run (ignored by full fine-tuning).
    pub ranks: Vec<usize>,
    /// The adapter's `alpha`.
    pub alpha: f64,
    /// Adapter learning rate per task.
    pub lr: PerTask<f64>,
    /// Head learning rate per task.
    pub head_lr: PerTask<f64>,
    /// A grid of adapter rates to search per task (overrides `lr`).
    #[serde(default)]
    pub lr_grid: PerTask<Vec<f64>>,
    /// A grid of head rates to search per task (overrides `head_lr`).
    #[serde(default)]
    pub head_lr_grid: PerTask<Vec<f64>>,
}

/// A GLUE reproduction: model, tasks, methods, seeds, budgets and rates.
/// Unknown fields are an error (a misspelt setting must not be ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The profile's name (`quick`, or a file's stem without `glue-`).
    #[serde(skip)]
    pub name: String,
    /// What the profile is for (free text, optional).
    #[serde(default, rename = "_doc")]
    pub doc: String,
    /// Model name (fetched into the cache) or folder.
    pub model: String,
    /// Backend: `flex`, `ndarray` or `cuda`.
    pub backend: String,
    /// Task names.
    pub tasks: Vec<String>,
    /// Method preset names.
    pub methods: Vec<String>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Longest input in tokens.
    pub max_length: usize,
    /// Dev examples to score per task (`null`: all).
    pub eval_subset: PerTask<Option<usize>>,
    /// Training examples per task (`null`: all).
    pub train_subset: PerTask<Option<usize>>,
    /// Epochs per task.
    pub epochs: PerTask<usize>,
    /// A cap on steps per epoch (smoke runs).
    #[serde(default)]
    pub max_steps_per_epoch: Option<usize>,
    /// Batches per length-sorting window of the sampler (default
    /// [`loraxs_train::DEFAULT_BUCKET_WINDOW`]; `1`: random batches).
    #[serde(default)]
    pub bucket_window: Option<usize>,
    /// Encoder dropout replacing the model's (`null`: the model's).
    #[serde(default)]
    pub encoder_dropout: Option<f64>,
    /// Head dropout replacing the default 0.1 (`null`: 0.1).
    #[serde(default)]
    pub head_dropout: Option<f64>,
    /// Tasks whose adapter starts from the MNLI run of the same method,
    /// rank and seed (the paper: MRPC, RTE, STS-B), when MNLI is planned.
    #[serde(default)]
    pub init_from_mnli: Vec<String>,
    /// Settings per method preset.
    pub method_settings: BTreeMap<String, MethodSettings>,
}

impl Profile {
    /// A built-in profile by name, or a JSON file when `name_or_path` ends
    /// in `.json`.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if name_or_path.ends_with(".json") {
            let path = Path::new(name_or_path);
            let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::Profile {
                profile: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("custom");
            return Self::from_json(stem.trim_start_matches("glue-"), &text);
        }
        let (_, text) =
            BUILT_IN
                .iter()
                .find(|(n, _)| *n == name_or_path)
                .ok_or_else(|| ExperimentError::Profile {
                    profile: name_or_path.to_string(),
                    reason: format!(
                        "no such profile: expected {} or a path to a .json file",
                        BUILT_IN.map(|(n, _)| n).join(", ")
                    ),
                })?;
        Self::from_json(name_or_path, text)
    }

    /// Parses a profile called `name`.
    pub fn from_json(name: &str, text: &str) -> Result<Self> {
        let mut profile: Profile = serde_json::from_str(text).map_err(|e| ExperimentError::Profile {
            profile: name.to_string(),
            reason: e.to_string(),
        })?;
        profile.name = name.to_string();
        Ok(profile)
    }

    /// An error about this profile.
    pub(crate) fn error(&self, reason: String) -> ExperimentError {
        ExperimentError::Profile {
            profile: self.name.clone(),
            reason,
        }
    }

    /// The value of `what` for `task`: its own entry, else `default`.
    pub(crate) fn per_task<T: Clone>(&self, map: &PerTask<T>, task: GlueTask, what: &str) -> Result<T> {
        map.get(task.name())
            .or_else(|| map.get("default"))
            .cloned()
            .ok_or_else(|| self.error(format!("`{what}` has neither `{}` nor `default`", task.name())))
    }
}
