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
use crate::parallel::{DataParallel, Peer, Replica};
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

    /// The loss of `micro`, examples of one micro-batch of `step` (all of
    /// it, or a data-parallel peer's share of it), on `device`: scaled so
    /// that the losses of all the parts of a step's micro-batches sum to
    /// the step's loss.
    fn loss(
        &self,
        model: &Self::Model,
        micro: &[usize],
        step: &[Vec<usize>],
        device: &B::Device,
    ) -> Result<MicroLoss<B>, TrainError>;

    /// Metrics of the model after an epoch.
    fn evaluate(
        &self,
        model: &<Self::Model as AutodiffModule<B>>::InnerModule,
        device: &B::Device,
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

/// [`run_peer`] over the replicas of a data-parallel run (`setup`): one
/// thread per replica, registered with burn's collective. Returns the
/// leader's result; `Ok(None)` also on a follower node (rank > 0), whose
/// leader holds the model and history. The first peer's own error is
/// returned where one failed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_parallel<B: AutodiffBackend, J: Job<B> + Sync>(
    job: &J,
    plan: &Plan,
    replicas: Vec<Replica<B, J::Model>>,
    state: CheckpointState,
    checkpoint: Option<&Path>,
    options: &TrainOptions,
    setup: &DataParallel,
) -> Result<Option<(J::Model, CheckpointState)>, TrainError>
where
    Optimizers<B, J::Model>: Checkpointable + Send,
{
    let results = crate::parallel::on_peers(setup, replicas, |replica, peer| {
        run_peer(job, plan, replica, state.clone(), checkpoint, options, peer)
    })?;
    let mut first = None;
    let mut echo = None;
    let mut leader = None;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(done) if i == 0 => leader = Some(done),
            Ok(_) => {}
            Err(e @ TrainError::PeerFailed(_)) => {
                echo.get_or_insert(e);
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first.or(echo) {
        return Err(e);
    }
    Ok(leader.flatten().filter(|_| setup.leads()))
}

/// Runs the epochs `state` has not done yet, on one peer or, through
/// [`run_parallel`], over the peers `options.parallel` asks for. `Ok(None)`
/// when `stop_after_epochs` stopped it (a checkpoint is on disk). Peers: devices from `device` on
/// ([`crate::peer_devices`]), each further replica a copy of `model` with
/// the optimisers `fresh` makes for it, loaded from the checkpoint in
/// `resumed_from` when the run resumes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_on_peers<B: AutodiffBackend, J: Job<B> + Sync>(
    job: &J,
    plan: &Plan,
    model: J::Model,
    optims: Optimizers<B, J::Model>,
    state: CheckpointState,
    checkpoint: Option<&Path>,
    options: &TrainOptions,
    device: &B::Device,
    resumed_from: Option<&Path>,
    fresh: impl Fn(&J::Model) -> Optimizers<B, J::Model>,
) -> Result<Option<(J::Model, CheckpointState)>, TrainError>
where
    Optimizers<B, J::Model>: Checkpointable + Send,
{
    let setup = &options.parallel;
    if setup.peers() == 1 {
        let alone = Replica {
            model,
            optims,
            device: device.clone(),
        };
        return run_peer(job, plan, alone, state, checkpoint, options, Peer::ALONE);
    }
    let devices = crate::peer_devices::<B>(device, setup.devices());
    let replicas = replicas(model, optims, &devices, |copy, device| match resumed_from {
        Some(dir) => crate::trainer::load_optimizers(fresh(copy), dir, device),
        None => Ok(fresh(copy)),
    })?;
    run_parallel(job, plan, replicas, state, checkpoint, options, setup)
}

/// One replica per device of `devices`: the first is `model` and `optims`;
/// the others are copies of `model` on their devices (the same parameter
/// ids, so their gradients are summed parameter by parameter) with the
/// optimisers `optims_for` makes for them (fresh, or a checkpoint's state).
pub(crate) fn replicas<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: M,
    optims: Optimizers<B, M>,
    devices: &[B::Device],
    mut optims_for: impl FnMut(&M, &B::Device) -> Result<Optimizers<B, M>, TrainError>,
) -> Result<Vec<Replica<B, M>>, TrainError> {
    let mut out = Vec::with_capacity(devices.len());
    for device in &devices[1..] {
        let copy = model.clone().fork(device);
        let optims = optims_for(&copy, device)?;
        out.push(Replica {
            model: copy,
            optims,
            device: device.clone(),
        });
    }
    out.insert(
        0,
        Replica {
            model,
            optims,
            device: devices[0].clone(),
        },
    );
    Ok(out)
}

/// The epochs `state` has not done yet, as peer `peer` of a data-parallel
/// run: each micro-batch's `peer.shard`, gradients and the loss summed
/// over the peers (burn's collective), the same optimiser update on every
/// peer. The leader (peer 0) evaluates, reports, and writes checkpoints to
/// `checkpoint`; the others only train. Alone (`Peer::ALONE`) it is the
/// one-device loop, with no collective call at all.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_peer<B: AutodiffBackend, J: Job<B>>(
    job: &J,
    plan: &Plan,
    replica: Replica<B, J::Model>,
    mut state: CheckpointState,
    checkpoint: Option<&Path>,
    options: &TrainOptions,
    peer: Peer,
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
    let Replica {
        mut model,
        mut optims,
        device,
    } = replica;
    let device = &device;
    let alone = peer.count == 1;
    if !alone {
        // Every peer must start from the same epoch (a follower node that
        // cannot see the leader's checkpoint would start afresh).
        let e = state.epochs_done as f64;
        let [sum, squares] = peer.sum::<B::InnerBackend, 2>([e, e * e], device)?;
        if (peer.count as f64 * squares - sum * sum).abs() > 0.5 {
            return Err(TrainError::Parallel(format!(
                "the peers resume from different epochs (this one, peer {}, from epoch {}): every \
                 node must see the same checkpoint folder",
                peer.index, state.epochs_done
            )));
        }
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
        // uninterrupted one would have done. The generators are
        // process-wide: one peer per process seeds them, and the others
        // wait for it (with several peers the masks are drawn in whatever
        // order the peers ask, so runs with dropout are equal in
        // distribution, not bit for bit).
        if peer.seeds {
            let epoch_seed = plan.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
            B::seed(device, epoch_seed);
            loraxs_models::seed_dropout(epoch_seed);
        }
        if !alone {
            peer.sum::<B::InnerBackend, 1>([0.0], device)?;
        }
        let steps = job.epoch_steps(epoch);
        let bar = progress(
            options.quiet || !peer.leads(),
            plan.steps_per_epoch,
            &format!("{} epoch {}", plan.label, epoch + 1),
        );
        let started = Instant::now();
        let (mut loss_sum, mut examples, mut tokens) = (0.0, 0, 0);
        let mut step_losses = Vec::with_capacity(plan.steps_per_epoch);
        for (i, micro_batches) in steps.iter().take(plan.steps_per_epoch).enumerate() {
            let step = epoch * plan.steps_per_epoch + i;
            let (lr, head_lr) = (plan.adapter_schedule.at(step), plan.head_schedule.at(step));
            let (grads, value, step_tokens) = if alone {
                step_gradients(job, &model, micro_batches, peer, device)?
            } else {
                let local = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    step_gradients(job, &model, micro_batches, peer, device)
                }))
                .unwrap_or_else(|panic| {
                    Err(TrainError::Parallel(format!(
                        "peer {} panicked at step {}: {}",
                        peer.index,
                        step + 1,
                        panic_message(&panic)
                    )))
                });
                let (value, tokens, failed) = match &local {
                    Ok((_, value, tokens)) => (*value, *tokens as f64, 0.0),
                    Err(_) => (0.0, 0.0, 1.0),
                };
                let [value, tokens, failed] =
                    peer.sum::<B::InnerBackend, 3>([value, tokens, failed], device)?;
                let (grads, _, _) = local?;
                if failed > 0.0 {
                    return Err(TrainError::PeerFailed(format!(
                        "another peer failed at step {} (its error is reported by it)",
                        step + 1
                    )));
                }
                (
                    peer.sum_gradients::<B::InnerBackend>(grads)?,
                    value,
                    tokens as usize,
                )
            };
            tokens += step_tokens;
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch: epoch + 1,
                    step: step + 1,
                    lr,
                    head_lr,
                    loss: value,
                });
            }
            model = optims.step(model, grads, lr, head_lr);
            let indices: Vec<usize> = micro_batches.iter().flatten().copied().collect();
            if let Some(observer) = options.on_step.as_ref().filter(|_| peer.leads()) {
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

        let finish_epoch = || -> Result<(), TrainError> {
            if !peer.leads() {
                state.epochs_done = epoch + 1;
                return Ok(());
            }
            let metrics = job.evaluate(&model.valid(), device)?;
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
            Ok(())
        };
        let finished = finish_epoch();
        if !alone {
            let [failed] =
                peer.sum::<B::InnerBackend, 1>([f64::from(u8::from(finished.is_err()))], device)?;
            finished?;
            if failed > 0.0 {
                return Err(TrainError::PeerFailed(format!(
                    "the leader failed to evaluate or save epoch {} (its error is reported by it)",
                    epoch + 1
                )));
            }
        } else {
            finished?;
        }
    }
    Ok(Some((model, state)))
}

/// One step's gradients on this peer's share of `micro_batches`, the
/// summed loss of that share and the tokens it covers. A peer whose share
/// of a micro-batch is empty (fewer examples than peers) runs its first
/// example with weight 0, so that every peer has a gradient for every
/// parameter to sum.
fn step_gradients<B: AutodiffBackend, J: Job<B>>(
    job: &J,
    model: &J::Model,
    micro_batches: &[Vec<usize>],
    peer: Peer,
    device: &B::Device,
) -> Result<(GradientsParams, f64, usize), TrainError> {
    let (mut value, mut tokens) = (0.0, 0);
    let mut accumulated = GradientsAccumulator::<J::Model>::new();
    let mut single = None;
    for micro in micro_batches {
        let share = peer.shard(micro);
        let part = if share.is_empty() {
            let part = job.loss(model, &micro[..1], micro_batches, device)?;
            MicroLoss {
                loss: part.loss.mul_scalar(0.0),
                tokens: 0,
            }
        } else {
            job.loss(model, share, micro_batches, device)?
        };
        value += tensor_values(part.loss.clone())[0] as f64;
        tokens += part.tokens;
        let grads = GradientsParams::from_grads(part.loss.backward(), model);
        if micro_batches.len() == 1 {
            single = Some(grads);
        } else {
            accumulated.accumulate(model, grads);
        }
    }
    Ok((single.unwrap_or_else(|| accumulated.grads()), value, tokens))
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
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
