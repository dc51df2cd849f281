//! What one training run is: task, adapter, head, optimisation.

use loraxs::AdapterConfig;
use loraxs_data::GlueTask;
use loraxs_heads::HeadStyle;
use serde::{Deserialize, Serialize};

/// A training run's configuration. Everything that changes the result is
/// here, so two runs with equal configs (and data, model, backend) give
/// equal results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The GLUE task.
    pub task: GlueTask,
    /// The adapter.
    pub adapter: AdapterConfig,
    /// Head layout.
    pub head: HeadStyle,
    /// Peak learning rate of the adapter.
    pub lr: f64,
    /// Peak learning rate of the head (the paper tunes it separately).
    pub head_lr: f64,
    /// AdamW weight decay, applied as Hugging Face's `Trainer` applies it:
    /// not to biases or LayerNorm parameters.
    pub weight_decay: f64,
    /// Fraction of steps spent warming up.
    pub warmup_ratio: f64,
    /// Epochs.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Tokens per example, special tokens included.
    pub max_length: usize,
    /// Use only the first N training examples after a seeded shuffle.
    pub train_subset: Option<usize>,
    /// Evaluate on at most N dev examples (file order).
    pub eval_subset: Option<usize>,
    /// Seed of everything random: head init, adapter init, data order, dropout.
    pub seed: u64,
    /// Stop each epoch after this many steps (smoke tests).
    #[serde(default)]
    pub max_steps_per_epoch: Option<usize>,
    /// Start the adapter from this adapter file (the paper starts MRPC, RTE
    /// and STS-B from an MNLI-trained adapter); the head starts fresh.
    #[serde(default)]
    pub init_from: Option<std::path::PathBuf>,
}

impl RunConfig {
    /// Hugging Face's defaults around a task and adapter: batch 32, 128
    /// tokens, weight decay 0.01, warm-up 0.06 (0 for MRPC, RTE, STS-B as in
    /// the paper's scripts), RoBERTa-style head.
    pub fn new(task: GlueTask, adapter: AdapterConfig, lr: f64, head_lr: f64, epochs: usize) -> Self {
        let warmup_ratio = match task {
            GlueTask::Mrpc | GlueTask::Rte | GlueTask::Stsb => 0.0,
            _ => 0.06,
        };
        Self {
            task,
            adapter,
            head: HeadStyle::Roberta,
            lr,
            head_lr,
            weight_decay: 0.01,
            warmup_ratio,
            epochs,
            batch_size: 32,
            max_length: 128,
            train_subset: None,
            eval_subset: None,
            seed: 0,
            max_steps_per_epoch: None,
            init_from: None,
        }
    }

    /// A short key naming the run (task, method, rank, seed, rates), for
    /// checkpoint folders and de-duplication of result files.
    pub fn key(&self) -> String {
        format!(
            "{}-{}{}-r{}-s{}-lr{}-hlr{}-e{}-n{}{}",
            self.task.name(),
            self.adapter.method.name(),
            if self.adapter.factors == loraxs::Factors::Random {
                "-random"
            } else {
                ""
            },
            self.adapter.rank,
            self.seed,
            self.lr,
            self.head_lr,
            self.epochs,
            self.train_subset.map_or("all".to_string(), |n| n.to_string()),
            if self.init_from.is_some() {
                "-from-mnli"
            } else {
                ""
            },
        )
    }
}
