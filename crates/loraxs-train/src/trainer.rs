//! GLUE fine-tuning on the shared loop (`engine`): AdamW with separate
//! adapter and head learning rates (weight decay spares biases and
//! LayerNorm parameters, as in Hugging Face's `Trainer`), linear schedule
//! with warm-up, evaluation after each epoch, a checkpoint after each
//! epoch, and exact resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use loraxs::interop::tensor_values;
use loraxs::{AdapterFile, SaveOptions};
use loraxs_data::{GlueTask, Label, LabelledBatch, Metric, Split, TokenizedSet, read_split};
use loraxs_heads::{HeadConfig, SequenceClassifier};
use loraxs_models::{KernelAutodiffBackend, KernelBackend, ModelDir};

use crate::engine::{self, ADAPTER_FILE, CheckpointState, Job, MicroLoss, Plan, resume_state};
use crate::optim::{Optimizers, ParamGroups};
use crate::parallel::DataParallel;
use crate::record::{EpochRecord, Metrics, RunRecord};
use crate::{LinearSchedule, RunConfig, Schedule, TrainError};

/// What one optimiser step did, as passed to a [`StepObserver`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// 1-based epoch.
    pub epoch: usize,
    /// 0-based step over the whole run (it continues across epochs and
    /// across a resume); the learning-rate schedule is evaluated at it.
    pub step: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// The adapter's learning rate for this step.
    pub lr: f64,
    /// The head's learning rate for this step.
    pub head_lr: f64,
    /// The batch's mean loss (before the update).
    pub loss: f64,
    /// Examples in the batch.
    pub examples: usize,
    /// The batch's examples: positions in the run's training set (after
    /// `train_subset`), as [`epoch_batches`] lists them.
    pub indices: Vec<usize>,
}

/// A callback run after every optimiser step (logging, dashboards, tests).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use loraxs_train::{StepObserver, TrainOptions};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let options = TrainOptions {
///     on_step: Some(StepObserver::new(move |s| log.lock().unwrap().push((s.step, s.lr)))),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct StepObserver(pub(crate) Arc<dyn Fn(&StepInfo) + Send + Sync>);

impl StepObserver {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&StepInfo) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for StepObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepObserver(..)")
    }
}

/// How a run is carried out (nothing here changes its result).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Where to keep per-epoch checkpoints (`None`: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the last checkpoint in `checkpoint_dir` if there is one.
    pub resume: bool,
    /// No progress bars.
    pub quiet: bool,
    /// Backend name for the record.
    pub backend: String,
    /// Model name for the record.
    pub model: String,
    /// Git commit for the record.
    pub git_commit: String,
    /// Stop after this many epochs of this invocation (to test resume).
    pub stop_after_epochs: Option<usize>,
    /// Called after every optimiser step (by the leading peer only).
    pub on_step: Option<StepObserver>,
    /// Data-parallel peers (default: one). The result is the one-peer
    /// run's up to float rounding (dropout aside: see
    /// [`DataParallel`]); on a follower node of a multi-node run, `train`
    /// returns `Ok(None)` (node 0 holds the record).
    pub parallel: DataParallel,
}

/// GLUE fine-tuning as a job of the shared loop: one micro-batch per step.
struct GlueJob<'a> {
    config: &'a RunConfig,
    train_set: TokenizedSet,
    dev_sets: Vec<(Split, TokenizedSet)>,
}

impl<B: KernelAutodiffBackend> Job<B> for GlueJob<'_> {
    type Model = SequenceClassifier<B>;

    fn epoch_steps(&self, epoch: usize) -> Vec<Vec<Vec<usize>>> {
        epoch_order(self.config, &self.train_set, epoch)
            .into_iter()
            .map(|batch| vec![batch])
            .collect()
    }

    fn loss(
        &self,
        model: &Self::Model,
        micro: &[usize],
        step: &[Vec<usize>],
        device: &B::Device,
    ) -> Result<MicroLoss<B>, TrainError> {
        let batch = self.train_set.batch(micro);
        let input = model.encoder.input(&batch.tokens, device)?;
        let logits = model.forward(input);
        let mut loss = loss::<B>(model, logits, &batch.labels, self.config.task, device);
        // The mean over a data-parallel share, weighted by its part of the
        // step (one micro-batch per step: the whole step is exactly 1).
        let step_examples: usize = step.iter().map(Vec::len).sum();
        if micro.len() != step_examples {
            loss = loss.mul_scalar(micro.len() as f64 / step_examples as f64);
        }
        Ok(MicroLoss { loss, tokens: 0 })
    }

    fn evaluate(
        &self,
        model: &SequenceClassifier<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<Metrics, TrainError> {
        let mut metrics = Metrics::new();
        for (split, set) in &self.dev_sets {
            let suffix = if *split == Split::DevMismatched { "_mm" } else { "" };
            for (name, value) in evaluate(model, set, self.config.task, device)? {
                metrics.insert(format!("{name}{suffix}"), value);
            }
        }
        Ok(metrics)
    }

    fn adapter_file(&self, model: &Self::Model) -> Result<AdapterFile, TrainError> {
        let mut file = AdapterFile::from_model(&model.encoder, &self.config.adapter, SaveOptions::default())?;
        model.head.store(&mut file)?;
        let names = self.config.task.label_names();
        if !names.is_empty() {
            file.set_labels(names.iter().map(|n| n.to_string()).collect())?;
        }
        Ok(file)
    }
}

/// Trains and evaluates one run on backend `B` (on `device`, and the
/// devices after it when [`TrainOptions::parallel`] asks for several
/// peers). Returns `Ok(None)` when `stop_after_epochs` stopped it early (a
/// checkpoint is on disk), or on a follower node of a multi-node run.
pub fn train<B: KernelAutodiffBackend>(
    config: &RunConfig,
    model_dir: &ModelDir,
    data_dir: &Path,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<Option<RunRecord>, TrainError> {
    let wall = Instant::now();
    let task = config.task;
    let tokenizer = model_dir.tokenizer(config.max_length)?;

    // Data: a seeded subset of train, the dev split(s).
    let train_set = training_set(config, &tokenizer, data_dir)?;
    let mut dev_sets = Vec::new();
    for &split in task.dev_splits() {
        let mut dev = read_split(task, data_dir, split)?;
        if let Some(n) = config.eval_subset {
            dev.truncate(n);
        }
        dev_sets.push((split, TokenizedSet::new(&dev, &tokenizer)?));
    }

    // Model: adapted encoder and head, from scratch or from the checkpoint.
    let checkpoint = options.checkpoint_dir.as_ref().map(|d| d.join(config.key()));
    let resume_state = resume_state(checkpoint.as_ref(), options.resume)?;
    let (mut encoder, _) = model_dir.encoder::<B>(device)?;
    if let Some(p) = config.encoder_dropout {
        encoder = encoder.with_dropout(p, p);
    }
    let mut head_config = HeadConfig::new(config.head, encoder.hidden_size(), task.num_labels());
    head_config.seed = config.seed;
    if let Some(p) = config.head_dropout {
        head_config.dropout = p;
    }
    let head = head_config.init::<B>(device);
    let resumed_from = resume_state.as_ref().and(checkpoint.clone());
    let (model, optims, state) = match resume_state {
        Some(state) => {
            let dir = checkpoint.as_ref().expect("resume needs a checkpoint folder");
            let path = dir.join(ADAPTER_FILE);
            let file = AdapterFile::load(&path)?;
            let encoder = file.apply(encoder, &path)?.model;
            let head = head.load(&file).map_err(|e| TrainError::Checkpoint {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let model = SequenceClassifier { encoder, head };
            let optims = load_optimizers(optimizers(config, &model), dir, device)?;
            (model, optims, state)
        }
        None => {
            let encoder = match &config.init_from {
                Some(path) => {
                    let file = AdapterFile::load(path)?;
                    if file.config.method != config.adapter.method || file.config.rank != config.adapter.rank
                    {
                        return Err(TrainError::Checkpoint {
                            path: path.clone(),
                            reason: format!(
                                "holds a {} r={} adapter, this run trains {} r={}",
                                file.config.method.name(),
                                file.config.rank,
                                config.adapter.method.name(),
                                config.adapter.rank
                            ),
                        });
                    }
                    file.apply(encoder, path)?.model
                }
                None => loraxs_models::inject_with_bar(encoder, &config.adapter, options.quiet)?.model,
            };
            let model = SequenceClassifier { encoder, head };
            let optims = optimizers(config, &model);
            (model, optims, CheckpointState::fresh(config.key()))
        }
    };
    let counts = model.param_count(Some(&config.adapter));

    let steps_per_epoch = steps_per_epoch(config, train_set.len());
    let total_steps = steps_per_epoch * config.epochs;
    let plan = Plan {
        key: config.key(),
        epochs: config.epochs,
        steps_per_epoch,
        seed: config.seed,
        adapter_schedule: Schedule::Linear(LinearSchedule::new(config.lr, config.warmup_ratio, total_steps)),
        head_schedule: Schedule::Linear(LinearSchedule::new(
            config.head_lr,
            config.warmup_ratio,
            total_steps,
        )),
        label: format!(
            "{} {} r={}",
            task.name(),
            config.adapter.method.name(),
            config.adapter.rank
        ),
    };
    let train_examples = train_set.len();
    let job = GlueJob {
        config,
        train_set,
        dev_sets,
    };
    let wall_before = state.wall_seconds;
    let done = engine::run_on_peers(
        &job,
        &plan,
        model,
        optims,
        state,
        checkpoint.as_deref(),
        options,
        device,
        resumed_from.as_deref(),
        |copy| optimizers(config, copy),
    )?;
    let Some((_, state)) = done else {
        return Ok(None);
    };

    let headline = task.metrics()[0].name();
    let mut reference = Metrics::new();
    for (split, set) in &job.dev_sets {
        let suffix = if *split == Split::DevMismatched { "_mm" } else { "" };
        for (name, value) in constant_baseline(task, &set.labels)? {
            reference.insert(format!("{name}{suffix}"), value);
        }
    }
    let best = best_epoch(&state.history, headline)
        .cloned()
        .ok_or_else(|| TrainError::Checkpoint {
            path: PathBuf::new(),
            reason: "no epoch ran".into(),
        })?;
    Ok(Some(RunRecord {
        key: config.key(),
        config: config.clone(),
        epochs: state.history.clone(),
        best,
        metric: headline.to_string(),
        trainable_adapter: counts.adapter,
        trainable_head: counts.head,
        train_examples,
        wall_seconds: wall_before + wall.elapsed().as_secs_f64(),
        examples_per_second: state.examples_seen as f64 / state.train_seconds.max(1e-9),
        backend: options.backend.clone(),
        model: options.model.clone(),
        git_commit: options.git_commit.clone(),
        constant_baseline: reference,
    }))
}

/// Restores each optimiser group's state from `dir`.
pub(crate) fn load_optimizers<B: AutodiffBackend, M: AutodiffModule<B>>(
    optims: Optimizers<B, M>,
    dir: &Path,
    device: &B::Device,
) -> Result<Optimizers<B, M>, TrainError> {
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    optims.load(|group| {
        let path = dir.join(group.file_stem());
        recorder
            .load(path.clone(), device)
            .map_err(|e| TrainError::Checkpoint {
                path: path.with_extension("bin"),
                reason: e.to_string(),
            })
    })
}

/// The training examples of a run (its seeded `train_subset`), tokenised.
fn training_set(
    config: &RunConfig,
    tokenizer: &loraxs_models::TextTokenizer,
    data_dir: &Path,
) -> Result<TokenizedSet, TrainError> {
    let mut examples = read_split(config.task, data_dir, Split::Train)?;
    if let Some(n) = config.train_subset {
        examples = subset_indices(examples.len(), n, config.seed)
            .into_iter()
            .map(|i| examples[i].clone())
            .collect();
    }
    Ok(TokenizedSet::new(&examples, tokenizer)?)
}

/// Optimiser steps per epoch: every batch, or `max_steps_per_epoch`.
fn steps_per_epoch(config: &RunConfig, examples: usize) -> usize {
    let full_batches = examples.div_ceil(config.batch_size);
    config
        .max_steps_per_epoch
        .map_or(full_batches, |m| m.min(full_batches))
}

/// The batch order of epoch `epoch` (0-based), before `max_steps_per_epoch`.
fn epoch_order(config: &RunConfig, set: &TokenizedSet, epoch: usize) -> Vec<Vec<usize>> {
    set.epoch(
        config.batch_size,
        Some(config.seed.wrapping_add(epoch as u64 * 7919)),
        config.bucket_window,
    )
}

/// The batches [`train`] feeds the model in epoch `epoch` (0-based) of the
/// run `config`, in order: the same examples, padding and order, so that
/// another tool (the PyTorch reference of `cargo xtask bench`) can train on
/// exactly what loraxs trains on.
///
/// ```no_run
/// use loraxs::AdapterConfig;
/// use loraxs_data::GlueTask;
/// use loraxs_models::ModelDir;
/// use loraxs_train::{RunConfig, epoch_batches};
///
/// let mut run = RunConfig::new(GlueTask::Mrpc, AdapterConfig::lora_xs(16), 1e-3, 1e-3, 1);
/// run.train_subset = Some(2000);
/// let model = ModelDir::new("datasets/cache/models/all-MiniLM-L6-v2")?;
/// let batches = epoch_batches(&run, &model, "../shared/datasets".as_ref(), 0)?;
/// println!("{} batches, first {} tokens long", batches.len(), batches[0].tokens.seq_len);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn epoch_batches(
    config: &RunConfig,
    model_dir: &ModelDir,
    data_dir: &Path,
    epoch: usize,
) -> Result<Vec<LabelledBatch>, TrainError> {
    let tokenizer = model_dir.tokenizer(config.max_length)?;
    let set = training_set(config, &tokenizer, data_dir)?;
    let steps = steps_per_epoch(config, set.len());
    Ok(epoch_order(config, &set, epoch)
        .iter()
        .take(steps)
        .map(|indices| set.batch(indices))
        .collect())
}

/// The four optimiser groups of `model` (adapter / head learning rate,
/// with / without weight decay).
fn optimizers<B: AutodiffBackend>(
    config: &RunConfig,
    model: &SequenceClassifier<B>,
) -> Optimizers<B, SequenceClassifier<B>> {
    Optimizers::new(ParamGroups::new(model, &model.head), config.weight_decay)
}

fn loss<B: AutodiffBackend>(
    model: &SequenceClassifier<B>,
    logits: Tensor<B, 2>,
    labels: &[Label],
    task: GlueTask,
    device: &B::Device,
) -> Tensor<B, 1> {
    let n = labels.len();
    if task.is_regression() {
        let targets: Vec<f32> = labels
            .iter()
            .map(|l| match l {
                Label::Score(s) => *s,
                Label::Class(c) => *c as f32,
            })
            .collect();
        model.head.loss(
            logits,
            None,
            Some(Tensor::from_data(TensorData::new(targets, [n]), device)),
        )
    } else {
        let classes: Vec<i64> = labels
            .iter()
            .map(|l| match l {
                Label::Class(c) => *c as i64,
                Label::Score(s) => *s as i64,
            })
            .collect();
        model.head.loss(
            logits,
            Some(Tensor::<B, 1, Int>::from_data(
                TensorData::new(classes, [n]),
                device,
            )),
            None,
        )
    }
}

/// The model's prediction for every example of `set`, in the set's order:
/// the predicted class for classification tasks, the score for regression.
/// Each example is scored exactly once, in batches of 64.
pub fn predict<B: KernelBackend>(
    model: &SequenceClassifier<B>,
    set: &TokenizedSet,
    task: GlueTask,
    device: &B::Device,
) -> Result<Vec<f64>, TrainError> {
    let mut predicted = vec![f64::NAN; set.len()];
    for indices in set.epoch(64, None, 0) {
        let batch = set.batch(&indices);
        let logits = model.forward(model.encoder.input(&batch.tokens, device)?);
        let [n, k] = logits.dims();
        let values = tensor_values(logits);
        for (row, &index) in indices.iter().enumerate().take(n) {
            let row = &values[row * k..(row + 1) * k];
            predicted[index] = if task.is_regression() {
                row[0] as f64
            } else {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i) as f64
            };
        }
    }
    Ok(predicted)
}

/// Dev metrics of `model` on `set`: every example predicted once
/// ([`predict`]) and scored against its own label.
pub fn evaluate<B: KernelBackend>(
    model: &SequenceClassifier<B>,
    set: &TokenizedSet,
    task: GlueTask,
    device: &B::Device,
) -> Result<Metrics, TrainError> {
    let predicted = predict(model, set, task, device)?;
    score(task, &predicted, &set.labels)
}

/// The task's metrics of `predicted` (a class index or a score per
/// example, as [`predict`] returns them) against `labels`.
pub fn score(task: GlueTask, predicted: &[f64], labels: &[Label]) -> Result<Metrics, TrainError> {
    let mut metrics = Metrics::new();
    for &metric in task.metrics() {
        let value = match metric {
            Metric::Pearson | Metric::Spearman => {
                let gold: Vec<f64> = labels
                    .iter()
                    .map(|l| match l {
                        Label::Score(s) => *s as f64,
                        Label::Class(c) => *c as f64,
                    })
                    .collect();
                metric.regression(predicted, &gold)?
            }
            _ => {
                let pred: Vec<usize> = predicted.iter().map(|&p| p as usize).collect();
                let gold: Vec<usize> = labels
                    .iter()
                    .map(|l| match l {
                        Label::Class(c) => *c,
                        Label::Score(s) => *s as usize,
                    })
                    .collect();
                metric.classification(&pred, &gold)?
            }
        };
        metrics.insert(metric.name().to_string(), value);
    }
    Ok(metrics)
}

/// The reference a trained model must beat: the metrics of the best
/// *constant* prediction on these labels. Classification: every class
/// predicted for every example, the one with the highest headline metric
/// kept (the dev majority class for accuracy; MCC is 0 for any constant).
/// Regression: a constant score has no correlation, so Pearson and
/// Spearman are 0 (SciPy returns NaN for a constant input; 0 is what a
/// reader compares against).
///
/// ```
/// use loraxs_data::{GlueTask, Label};
/// use loraxs_train::constant_baseline;
///
/// let labels = [1, 1, 1, 0].map(Label::Class);
/// let m = constant_baseline(GlueTask::Rte, &labels).unwrap();
/// assert_eq!(m["accuracy"], 0.75);
/// ```
pub fn constant_baseline(task: GlueTask, labels: &[Label]) -> Result<Metrics, TrainError> {
    if task.is_regression() {
        return Ok(task
            .metrics()
            .iter()
            .map(|m| (m.name().to_string(), 0.0))
            .collect());
    }
    let headline = task.metrics()[0].name();
    let mut best: Option<Metrics> = None;
    for class in 0..task.num_labels() {
        let metrics = score(task, &vec![class as f64; labels.len()], labels)?;
        if best.as_ref().is_none_or(|b| metrics[headline] > b[headline]) {
            best = Some(metrics);
        }
    }
    Ok(best.unwrap_or_default())
}

/// The epoch with the highest `metric`: the earliest of equal ones (as
/// Hugging Face's `load_best_model_at_end`), and never one whose value is
/// NaN or missing while another epoch has a number. `None` for no epochs.
pub fn best_epoch<'a>(history: &'a [EpochRecord], metric: &str) -> Option<&'a EpochRecord> {
    let value = |e: &EpochRecord| e.metrics.get(metric).copied().unwrap_or(f64::NAN);
    let mut best = history.first()?;
    for epoch in &history[1..] {
        let (v, b) = (value(epoch), value(best));
        if v > b || (b.is_nan() && !v.is_nan()) {
            best = epoch;
        }
    }
    Some(best)
}

/// The training examples a run with `train_subset = Some(n)` uses, out of
/// `len`: `n` distinct indices drawn by a seeded shuffle, in file order
/// (all of them when `n ≥ len`).
pub fn subset_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    let mut picked: Vec<usize> = subset_order(len, seed).into_iter().take(n).collect();
    picked.sort_unstable();
    picked
}

/// A seeded permutation of `0..n` (for training subsets).
fn subset_order(n: usize, seed: u64) -> Vec<usize> {
    let set = TokenizedSet {
        sequences: (0..n)
            .map(|_| loraxs_models::TokenSequence {
                ids: Vec::new(),
                type_ids: Vec::new(),
            })
            .collect(),
        labels: vec![Label::Class(0); n],
        pad_id: 0,
    };
    set.epoch(n.max(1), Some(seed ^ 0x5eed), 0)
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: usize, value: f64) -> EpochRecord {
        EpochRecord {
            epoch: n,
            train_loss: 1.0,
            metrics: Metrics::from([("accuracy".to_string(), value)]),
            step_losses: Vec::new(),
        }
    }

    #[test]
    fn the_reference_is_the_best_constant_prediction() {
        let classes = |v: &[usize]| v.iter().map(|&c| Label::Class(c)).collect::<Vec<_>>();
        // Majority class 1: 3 of 4 right.
        let m = constant_baseline(GlueTask::Rte, &classes(&[1, 0, 1, 1])).unwrap();
        assert_eq!(m["accuracy"], 0.75);
        // Majority class 0 on MRPC: accuracy 0.6, and F1 of that constant
        // prediction (no positive predicted) is 0.
        let m = constant_baseline(GlueTask::Mrpc, &classes(&[0, 0, 1, 0, 1])).unwrap();
        assert_eq!((m["accuracy"], m["f1"]), (0.6, 0.0));
        // Any constant has MCC 0; a constant score has no correlation.
        let m = constant_baseline(GlueTask::Cola, &classes(&[1, 1, 0])).unwrap();
        assert_eq!(m["matthews"], 0.0);
        let scores: Vec<Label> = [0.5, 4.0, 2.5].map(Label::Score).to_vec();
        let m = constant_baseline(GlueTask::Stsb, &scores).unwrap();
        assert_eq!((m["pearson"], m["spearman"]), (0.0, 0.0));
    }

    #[test]
    fn the_best_epoch_is_the_highest_earliest_and_never_nan() {
        let best = |values: &[f64]| {
            let history: Vec<EpochRecord> =
                values.iter().enumerate().map(|(i, &v)| epoch(i + 1, v)).collect();
            best_epoch(&history, "accuracy").map(|e| e.epoch)
        };
        assert_eq!(best(&[]), None);
        assert_eq!(best(&[0.5]), Some(1));
        assert_eq!(best(&[0.5, 0.7, 0.6]), Some(2));
        assert_eq!(best(&[0.9, 0.7, 0.6]), Some(1));
        assert_eq!(best(&[0.5, 0.6, 0.8]), Some(3));
        // Ties: the earliest, as Hugging Face keeps the first best checkpoint.
        assert_eq!(best(&[0.5, 0.7, 0.7, 0.6]), Some(2));
        // NaN (a metric undefined for constant predictions) never wins over a number.
        assert_eq!(best(&[f64::NAN, 0.1, f64::NAN]), Some(2));
        assert_eq!(best(&[0.1, f64::NAN]), Some(1));
        assert_eq!(best(&[f64::NAN, f64::NAN]), Some(1));
        // Negative values (MCC, Pearson) are compared as numbers.
        assert_eq!(best(&[-0.3, -0.1, -0.2]), Some(2));
        // A missing metric counts as NaN, not as a panic.
        let other = EpochRecord {
            epoch: 2,
            train_loss: 1.0,
            metrics: Metrics::new(),
            step_losses: Vec::new(),
        };
        assert_eq!(
            best_epoch(&[other.clone(), epoch(3, 0.0)], "accuracy").map(|e| e.epoch),
            Some(3)
        );
    }

    #[test]
    fn a_training_subset_is_a_seeded_uniform_sample_in_file_order() {
        let picked = subset_indices(1000, 100, 7);
        assert_eq!(picked.len(), 100);
        assert!(picked.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        assert!(picked.iter().all(|&i| i < 1000));
        assert_eq!(picked, subset_indices(1000, 100, 7), "the seed fixes it");
        assert_ne!(
            picked,
            subset_indices(1000, 100, 8),
            "another seed, another sample"
        );
        // Not the first 100, and spread over the whole file: each tenth of
        // the file holds 10 expected picks; a uniform sample of 100 puts
        // between 1 and 25 in every tenth with probability > 0.9999.
        assert_ne!(picked, (0..100).collect::<Vec<_>>());
        for tenth in 0..10 {
            let inside = picked.iter().filter(|&&i| i / 100 == tenth).count();
            assert!((1..=25).contains(&inside), "tenth {tenth}: {inside} picks");
        }
        // Over many seeds every index is picked about 10 % of the time.
        let mut hits = vec![0usize; 50];
        for seed in 0..2000 {
            for i in subset_indices(50, 5, seed) {
                hits[i] += 1;
            }
        }
        // Binomial(2000, 0.1): mean 200, sd 13.4; ±70 is beyond 5 sd.
        assert!(hits.iter().all(|&h| (130..=270).contains(&h)), "{hits:?}");
        // Asking for as many or more than there are: all, in order.
        assert_eq!(subset_indices(5, 5, 1), vec![0, 1, 2, 3, 4]);
        assert_eq!(subset_indices(5, 9, 1), vec![0, 1, 2, 3, 4]);
        assert_eq!(subset_indices(5, 0, 1), Vec::<usize>::new());
    }
}
