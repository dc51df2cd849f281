//! The one training loop every task runs (GLUE classification and
//! regression, causal-LM fine-tuning): epochs of optimiser steps, each the
//! sum of one or more micro-batches' gradients (gradient accumulation);
//! the learning-rate schedule at the global step; a NaN stop; evaluation,
//! a record and a checkpoint after every epoch; exact resume.
//!
//! A task is a [`Job`]: which micro-batches make each step, the loss of
//! one, how to evaluate, what the adapter file holds. Building the model
//! (fresh or from a checkpoint) stays with the task; the loop, schedules,
//! optimiser groups, checkpoints and records are shared.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use loraxs::AdapterFile;
use loraxs::interop::tensor_values;
use serde::{Deserialize, Serialize};

use crate::optim::Optimizers;
use crate::record::{EpochRecord, Metrics};
use crate::trainer::{StepInfo, TrainOptions};
use crate::{Schedule, TrainError};

/// Progress saved with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    pub(crate) key: String,
    pub(crate) epochs_done: usize,
    pub(crate) history: Vec<EpochRecord>,
    pub(crate) train_seconds: f64,
    pub(crate) wall_seconds: f64,
    pub(crate) examples_seen: usize,
    /// Tokens the loss was computed on (causal LM), over the run.
    #[serde(default)]
    pub(crate) tokens_seen: usize,
}

impl CheckpointState {
    /// The state of a run that has not started.
    pub(crate) fn fresh(key: String) -> Self {
        Self {
            key,
            epochs_done: 0,
            history: Vec::new(),
            train_seconds: 0.0,
            wall_seconds: 0.0,
            examples_seen: 0,
            tokens_seen: 0,
        }
    }
}

pub(crate) const ADAPTER_FILE: &str = "adapter.safetensors";
pub(crate) const STATE_FILE: &str = "state.json";

/// One micro-batch's contribution to a step.
pub(crate) struct MicroLoss<B: AutodiffBackend> {
    /// The loss, scaled so that the micro-batches of a step sum to the
    /// step's loss.
    pub(crate) loss: Tensor<B, 1>,
    /// Tokens the loss covers (0 where the task counts examples only).
    pub(crate) tokens: usize,
}

/// What a task supplies to the loop.
pub(crate) trait Job<B: AutodiffBackend> {
    /// The trained model.
    type Model: AutodiffModule<B>;

    /// The optimiser steps of epoch `epoch` (0-based), each a list of
    /// micro-batches of example indices.
    fn epoch_steps(&self, epoch: usize) -> Vec<Vec<Vec<usize>>>;

    /// The loss of micro-batch `micro` of `step`.
    fn loss(
        &self,
        model: &Self::Model,
        micro: &[usize],
        step: &[Vec<usize>],
    ) -> Result<MicroLoss<B>, TrainError>;

    /// Metrics of the model after an epoch.
    fn evaluate(
        &self,
        model: &<Self::Model as AutodiffModule<B>>::InnerModule,
    ) -> Result<Metrics, TrainError>;

    /// The adapter file a checkpoint holds.
    fn adapter_file(&self, model: &Self::Model) -> Result<AdapterFile, TrainError>;
}

/// What the loop needs to know about a run besides the job.
pub(crate) struct Plan {
    pub(crate) key: String,
    pub(crate) epochs: usize,
    pub(crate) steps_per_epoch: usize,
    pub(crate) seed: u64,
    pub(crate) adapter_schedule: Schedule,
    pub(crate) head_schedule: Schedule,
    /// Progress-bar and log prefix (`mrpc lora-xs`).
    pub(crate) label: String,
}

/// Runs the epochs `state` has not done yet. `Ok(None)` when
/// `stop_after_epochs` stopped it (a checkpoint is on disk).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<B: AutodiffBackend, J: Job<B>>(
    job: &J,
    plan: &Plan,
    mut model: J::Model,
    mut optims: Optimizers<B, J::Model>,
    mut state: CheckpointState,
    checkpoint: Option<&Path>,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<Option<(J::Model, CheckpointState)>, TrainError>
where
    Optimizers<B, J::Model>: Checkpointable,
{
    if state.key != plan.key {
        return Err(TrainError::Checkpoint {
            path: checkpoint.map(Path::to_path_buf).unwrap_or_default(),
            reason: format!("checkpoint belongs to run `{}`, not `{}`", state.key, plan.key),
        });
    }
    let wall = Instant::now();
    let wall_before = state.wall_seconds;
    let total_steps = plan.steps_per_epoch * plan.epochs;
    for (epochs_this_call, epoch) in (state.epochs_done..plan.epochs).enumerate() {
        if options.stop_after_epochs.is_some_and(|n| epochs_this_call >= n) {
            return Ok(None);
        }
        // Reseeding per epoch makes an epoch's dropout masks depend only on
        // (seed, epoch): a resumed run replays exactly what an
        // uninterrupted one would have done.
        let epoch_seed = plan.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
        B::seed(device, epoch_seed);
        loraxs_models::seed_dropout(epoch_seed);
        let steps = job.epoch_steps(epoch);
        let bar = progress(
            options.quiet,
            plan.steps_per_epoch,
            &format!("{} epoch {}", plan.label, epoch + 1),
        );
        let started = Instant::now();
        let (mut loss_sum, mut examples, mut tokens) = (0.0, 0, 0);
        let mut step_losses = Vec::with_capacity(plan.steps_per_epoch);
        for (i, micro_batches) in steps.iter().take(plan.steps_per_epoch).enumerate() {
            let step = epoch * plan.steps_per_epoch + i;
            let (lr, head_lr) = (plan.adapter_schedule.at(step), plan.head_schedule.at(step));
            let mut value = 0.0;
            let mut accumulated = GradientsAccumulator::<J::Model>::new();
            let mut single = None;
            for micro in micro_batches {
                let part = job.loss(&model, micro, micro_batches)?;
                value += tensor_values(part.loss.clone())[0] as f64;
                tokens += part.tokens;
                let grads = GradientsParams::from_grads(part.loss.backward(), &model);
                if micro_batches.len() == 1 {
                    single = Some(grads);
                } else {
                    accumulated.accumulate(&model, grads);
                }
            }
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch: epoch + 1,
                    step: step + 1,
                    lr,
                    head_lr,
                    loss: value,
                });
            }
            let grads = single.unwrap_or_else(|| accumulated.grads());
            model = optims.step(model, grads, lr, head_lr);
            let indices: Vec<usize> = micro_batches.iter().flatten().copied().collect();
            if let Some(observer) = &options.on_step {
                (observer.0)(&StepInfo {
                    epoch: epoch + 1,
                    step,
                    total_steps,
                    lr,
                    head_lr,
                    loss: value,
                    examples: indices.len(),
                    indices: indices.clone(),
                });
            }
            step_losses.push(value as f32);
            loss_sum += value * indices.len() as f64;
            examples += indices.len();
            bar.set_message(format!(
                "loss {:.4} lr {lr:.2e} {:.1} ex/s",
                loss_sum / examples as f64,
                examples as f64 / started.elapsed().as_secs_f64()
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        state.train_seconds += started.elapsed().as_secs_f64();
        state.examples_seen += examples;
        state.tokens_seen += tokens;

        let metrics = job.evaluate(&model.valid())?;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / examples.max(1) as f64,
            metrics,
            step_losses,
        };
        if !options.quiet {
            eprintln!("{} epoch {}: {:?}", plan.label, epoch + 1, record.metrics);
        }
        state.history.push(record);
        state.epochs_done = epoch + 1;
        state.wall_seconds = wall_before + wall.elapsed().as_secs_f64();
        if let Some(dir) = checkpoint {
            save_checkpoint(dir, &job.adapter_file(&model)?, &optims, &state)?;
        }
    }
    Ok(Some((model, state)))
}

/// Optimiser state a checkpoint can write (implemented by the loop's
/// optimisers for every model).
pub(crate) trait Checkpointable {
    /// Writes each group's state as `<stem>.bin` in `dir`.
    fn save(&self, dir: &Path) -> Result<(), TrainError>;
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Checkpointable for Optimizers<B, M> {
    fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        for (group, record) in self.records() {
            let name = group.file_stem();
            // The recorder sets the `.bin` extension itself.
            let tmp = dir.join(format!("{name}-partial"));
            recorder.record(record, tmp.clone()).map_err(|e| fail(&tmp, &e))?;
            std::fs::rename(tmp.with_extension("bin"), dir.join(format!("{name}.bin")))
                .map_err(|e| fail(dir, &e))?;
        }
        Ok(())
    }
}

fn fail(path: &Path, e: &dyn std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes the adapter file, the optimisers' state and the progress, each
/// through a temporary file renamed into place; the state file goes last,
/// so a run killed mid-save resumes from the previous complete checkpoint.
pub(crate) fn save_checkpoint(
    dir: &Path,
    file: &AdapterFile,
    optims: &dyn Checkpointable,
    state: &CheckpointState,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
    file.save(dir.join(ADAPTER_FILE))?;
    optims.save(dir)?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(state).expect("state serialises"),
    )
    .map_err(|e| fail(&tmp, &e))?;
    std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(|e| fail(dir, &e))
}

/// The progress of the checkpoint in `dir`, when `resume` and it has one.
pub(crate) fn resume_state(
    dir: Option<&PathBuf>,
    resume: bool,
) -> Result<Option<CheckpointState>, TrainError> {
    match dir {
        Some(dir) if resume && dir.join(STATE_FILE).is_file() => {
            let path = dir.join(STATE_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| fail(&path, &e))?;
            serde_json::from_str(&text).map(Some).map_err(|e| fail(&path, &e))
        }
        _ => Ok(None),
    }
}

pub(crate) fn progress(quiet: bool, len: usize, prefix: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {elapsed} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run's history comes back from `state.json`: its numbers
    /// must parse to the very bits written (serde_json's default parser
    /// lands one ulp off for some, e.g. this answer loss of a real run).
    #[test]
    fn checkpoint_state_round_trips_every_bit() {
        let mut state = CheckpointState::fresh("run".into());
        let values = [
            12.273311662085263,
            0.1 + 0.2,
            1.0 / 3.0,
            5e-324,
            1.7976931348623157e308,
        ];
        for (i, &v) in values.iter().enumerate() {
            state.history.push(EpochRecord {
                epoch: i + 1,
                train_loss: v,
                metrics: [("answer_loss".to_string(), v)].into_iter().collect(),
                step_losses: vec![0.1 + i as f32 / 7.0],
            });
        }
        let text = serde_json::to_string_pretty(&state).unwrap();
        let back: CheckpointState = serde_json::from_str(&text).unwrap();
        for (a, b) in state.history.iter().zip(&back.history) {
            assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits(), "{text}");
            assert_eq!(
                a.metrics["answer_loss"].to_bits(),
                b.metrics["answer_loss"].to_bits()
            );
            assert_eq!(a.step_losses, b.step_losses);
        }
    }
}
