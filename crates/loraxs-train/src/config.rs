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
    /// Batches per length-sorting window of the sampler
    /// ([`loraxs_data::TokenizedSet::epoch`]): `0`/`1` random batches, `w`
    /// sorts each window of `w` batches by length (less padding, but each
    /// batch one length band of its window). Records written before this
    /// setting existed ran with 50.
    #[serde(default = "legacy_bucket_window")]
    pub bucket_window: usize,
    /// Replaces the encoder's dropout probabilities (hidden and attention,
    /// `hidden_dropout_prob` / `attention_probs_dropout_prob` of its
    /// `config.json`); `None` keeps the model's.
    #[serde(default)]
    pub encoder_dropout: Option<f64>,
    /// Replaces the head's dropout (default 0.1, Hugging Face's
    /// `hidden_dropout_prob` of the model card); `None` keeps it.
    #[serde(default)]
    pub head_dropout: Option<f64>,
}

/// The sampler window of records written before `bucket_window` existed.
fn legacy_bucket_window() -> usize {
    50
}

/// The default sampler window: 4 batches (see [`RunConfig::bucket_window`]).
pub const DEFAULT_BUCKET_WINDOW: usize = 4;

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
            bucket_window: DEFAULT_BUCKET_WINDOW,
            encoder_dropout: None,
            head_dropout: None,
        }
    }

    /// A short key naming the run (task, method, rank, seed, rates), for
    /// checkpoint folders and de-duplication of result files.
    pub fn key(&self) -> String {
        format!(
            "{}-{}{}-r{}-s{}-lr{}-hlr{}-e{}-n{}{}{}{}{}",
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
            // Settings added later name themselves only when they differ
            // from what earlier records ran, so old keys stay valid.
            if self.bucket_window == legacy_bucket_window() {
                String::new()
            } else {
                format!("-w{}", self.bucket_window)
            },
            self.encoder_dropout.map_or(String::new(), |p| format!("-do{p}")),
            self.head_dropout.map_or(String::new(), |p| format!("-hdo{p}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_later_settings_only_when_records_before_them_differ() {
        let mut run = RunConfig::new(GlueTask::Stsb, AdapterConfig::lora_xs(16), 1e-2, 2e-3, 3);
        assert_eq!(run.bucket_window, DEFAULT_BUCKET_WINDOW);
        assert!(run.key().ends_with("-e3-nall-w4"), "{}", run.key());
        run.bucket_window = 50;
        assert!(run.key().ends_with("-e3-nall"), "{}", run.key());
        run.encoder_dropout = Some(0.0);
        assert!(run.key().ends_with("-e3-nall-do0"), "{}", run.key());
        run.encoder_dropout = Some(0.1);
        assert!(run.key().ends_with("-do0.1"), "{}", run.key());
        run.head_dropout = Some(0.0);
        assert!(run.key().ends_with("-do0.1-hdo0"), "{}", run.key());
        run.head_dropout = None;
        // A record written before the settings existed ran with a 50-batch
        // window and the model's dropout, and keeps its key.
        let mut json = serde_json::to_value(&run).unwrap();
        let fields = json.as_object_mut().unwrap();
        fields.remove("bucket_window");
        fields.remove("encoder_dropout");
        fields.remove("head_dropout");
        let old: RunConfig = serde_json::from_value(json).unwrap();
        assert_eq!((old.bucket_window, old.encoder_dropout), (50, None));
        assert!(old.key().ends_with("-e3-nall"), "{}", old.key());
    }
}
