//! Result records: what a finished run reports. Results files (one JSON
//! line per record) are read and written by `loraxs-experiments`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::RunConfig;

/// Metrics of one evaluation (metric name → value; MNLI's mismatched dev
/// set is reported with a `_mm` suffix).
pub type Metrics = BTreeMap<String, f64>;

/// One epoch's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Dev metrics after the epoch.
    pub metrics: Metrics,
    /// Every optimiser step's batch loss, in order (the training-loss
    /// curve; empty in records written before it was kept).
    #[serde(default)]
    pub step_losses: Vec<f32>,
}

/// A finished run, as written to the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RunConfig::key`].
    pub key: String,
    /// The full configuration.
    pub config: RunConfig,
    /// Per-epoch outcomes.
    pub epochs: Vec<EpochRecord>,
    /// The best epoch by the task's headline metric.
    pub best: EpochRecord,
    /// The headline metric's name.
    pub metric: String,
    /// Trainable adapter values.
    pub trainable_adapter: usize,
    /// Trainable head values.
    pub trainable_head: usize,
    /// Training examples per epoch.
    pub train_examples: usize,
    /// Wall time of the run, seconds (training and evaluation).
    pub wall_seconds: f64,
    /// Training throughput, examples per second.
    pub examples_per_second: f64,
    /// Backend name.
    pub backend: String,
    /// Model name or folder.
    pub model: String,
    /// Git commit of the code that ran (or `unknown`).
    pub git_commit: String,
    /// The dev metrics of the best constant prediction
    /// ([`crate::constant_baseline`]): the reference row of the tables.
    /// Empty in records written before it was kept.
    #[serde(default)]
    pub constant_baseline: Metrics,
}
