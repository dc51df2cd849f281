//! The `cargo xtask bench` workloads on a real encoder: one training step
//! per adapter method, inference with and without a merged adapter, SVD
//! initialisation of every adapted matrix, adapter save and load.
//!
//! Each workload is timed repetition by repetition after untimed warm-up
//! repetitions, and reports the peak resident memory of the timed part (see
//! [`crate::memory`]). Shapes, targets and ranks match
//! `benches/torch_reference/bench.py`, which runs the same workloads on
//! PyTorch + transformers + peft.

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use loraxs::{AdapterConfig, AdapterFile, SaveOptions, SvdMethod, TargetModules};
use loraxs_heads::{HeadConfig, HeadStyle, SequenceClassifier};
use loraxs_models::{Encoder, ModelDir, TokenBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::memory;

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Forward, backward and AdamW step with LoRA-XS r=16 on the paper's
    /// four GLUE targets and a classification head.
    TrainLoraXs,
    /// The same with LoRA r=8 on `query` and `value`.
    TrainLora,
    /// The same with VeRA r=256 on `query` and `value`.
    TrainVera,
    /// The same with every parameter of the encoder and head trainable.
    TrainFull,
    /// Encoder forward pass without an adapter.
    InferBase,
    /// Encoder forward pass with an unmerged LoRA-XS r=16 adapter.
    InferLoraXs,
    /// Encoder forward pass with the LoRA-XS adapter merged.
    InferLoraXsMerged,
    /// Unmerged LoRA-XS forced through the three thin matmuls (no
    /// per-call fusion; what short inputs get).
    InferLoraXsFactored,
    /// The four inference variants in one process, alternating every
    /// repetition: the base and adapted models see the same machine state,
    /// so their ratio is measured to about a percent (separate processes
    /// on a shared machine differ by more than that).
    InferCompare,
    /// SVD initialisation of all adapted matrices, exact thin SVD.
    SvdExact,
    /// SVD initialisation with restarted Lanczos (partial).
    SvdKrylov,
    /// SVD initialisation with the randomized method (4 power iterations).
    SvdRandomized,
    /// The randomized method with the paper's 10 power iterations.
    SvdRandomized10,
    /// Writing a LoRA-XS adapter file.
    AdapterSave,
    /// Reading a LoRA-XS adapter file and applying it to a fresh encoder
    /// (recomputes `A` and `B` by SVD).
    AdapterLoad,
    /// Reading a LoRA-XS adapter file that stores `A` and `B`.
    AdapterLoadStoredFactors,
}

impl Workload {
    /// Every workload, in reporting order.
    pub const ALL: [Workload; 16] = [
        Workload::TrainLoraXs,
        Workload::TrainLora,
        Workload::TrainVera,
        Workload::TrainFull,
        Workload::InferBase,
        Workload::InferLoraXs,
        Workload::InferLoraXsMerged,
        Workload::InferLoraXsFactored,
        Workload::InferCompare,
        Workload::SvdExact,
        Workload::SvdKrylov,
        Workload::SvdRandomized,
        Workload::SvdRandomized10,
        Workload::AdapterSave,
        Workload::AdapterLoad,
        Workload::AdapterLoadStoredFactors,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::TrainLoraXs => "train-lora-xs",
            Workload::TrainLora => "train-lora",
            Workload::TrainVera => "train-vera",
            Workload::TrainFull => "train-full",
            Workload::InferBase => "infer-base",
            Workload::InferLoraXs => "infer-lora-xs",
            Workload::InferLoraXsMerged => "infer-lora-xs-merged",
            Workload::InferLoraXsFactored => "infer-lora-xs-factored",
            Workload::InferCompare => "infer-compare",
            Workload::SvdExact => "svd-exact",
            Workload::SvdKrylov => "svd-krylov",
            Workload::SvdRandomized => "svd-randomized",
            Workload::SvdRandomized10 => "svd-randomized-10",
            Workload::AdapterSave => "adapter-save",
            Workload::AdapterLoad => "adapter-load",
            Workload::AdapterLoadStoredFactors => "adapter-load-stored-factors",
        }
    }

    /// Parses [`Workload::name`].
    pub fn from_name(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|w| w.name() == name).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|w| w.name()).collect();
            format!("unknown workload `{name}`; known: {}", names.join(", "))
        })
    }

    /// The adapter this workload uses, if any.
    pub fn adapter(self) -> Option<AdapterConfig> {
        let xs = AdapterConfig::lora_xs(16);
        Some(match self {
            Workload::TrainLoraXs
            | Workload::InferLoraXs
            | Workload::InferLoraXsMerged
            | Workload::InferLoraXsFactored
            | Workload::InferCompare
            | Workload::AdapterSave
            | Workload::AdapterLoad
            | Workload::AdapterLoadStoredFactors => xs,
            Workload::TrainLora => AdapterConfig::lora(8),
            Workload::TrainVera => {
                AdapterConfig::vera(256).with_targets(TargetModules::new(["query", "value"]))
            }
            Workload::SvdExact => xs.with_svd_method(SvdMethod::Exact),
            Workload::SvdKrylov => xs.with_svd_method(SvdMethod::Krylov),
            Workload::SvdRandomized => xs.with_svd_method(SvdMethod::randomized()),
            Workload::SvdRandomized10 => xs.with_svd_method(SvdMethod::Randomized {
                oversamples: 10,
                power_iterations: 10,
                seed: 0,
            }),
            Workload::TrainFull | Workload::InferBase => return None,
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The workload.
    pub workload: Workload,
    /// Model folder.
    pub model: PathBuf,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Untimed repetitions.
    pub warmup: usize,
    /// Timed repetitions.
    pub reps: usize,
    /// Folder for adapter files.
    pub scratch: PathBuf,
    /// Backend name, for the report.
    pub backend: String,
}

/// One workload's figures (the JSON line `loraxs-workload` prints; the
/// PyTorch reference prints the same fields).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `loraxs`.
    pub tool: String,
    /// Backend.
    pub backend: String,
    /// Workload name.
    pub workload: String,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Rayon threads (`RAYON_NUM_THREADS`, else the core count).
    pub threads: usize,
    /// Every timed repetition, milliseconds.
    pub times_ms: Vec<f64>,
    /// Median of `times_ms`.
    pub median_ms: f64,
    /// Fastest repetition.
    pub min_ms: f64,
    /// Slowest repetition.
    pub max_ms: f64,
    /// Resident memory when the timed part started (model loaded).
    pub setup_rss_bytes: u64,
    /// Peak resident memory during warm-up and timed repetitions.
    pub peak_rss_bytes: u64,
    /// Trainable values (training workloads), stored values (adapter files).
    pub values: Option<usize>,
    /// Size of the adapter file (adapter workloads).
    pub file_bytes: Option<u64>,
    /// Final training loss (a sanity check that the step does something).
    pub last_loss: Option<f64>,
    /// `infer-compare`: each variant's figures and its ratio to the base.
    pub variants: Option<Vec<Variant>>,
}

/// One variant of `infer-compare`.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// `infer-base`, `infer-lora-xs`, `infer-lora-xs-merged`,
    /// `infer-lora-xs-factored`.
    pub workload: String,
    /// Every timed repetition, milliseconds.
    pub times_ms: Vec<f64>,
    /// Median of `times_ms`.
    pub median_ms: f64,
    /// Median over repetitions of this variant's time divided by the base
    /// model's time in the same round.
    pub ratio_to_base: f64,
    /// First and third quartile of those per-round ratios: how far apart
    /// two runs of the same work land on this machine.
    pub ratio_quartiles: [f64; 2],
}

/// The `q`-quantile (0..=1) by linear interpolation.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub use loraxs_experiments::median;

/// Fixed-length random token ids (seeded), all real tokens.
pub fn token_batch(batch: usize, seq: usize, vocab: usize) -> TokenBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let input_ids = (0..batch * seq)
        .map(|i| match i % seq {
            0 => 101, // [CLS]
            j if j == seq - 1 => 102,
            _ => rng.random_range(1000..vocab as u32),
        })
        .collect();
    TokenBatch {
        batch,
        seq_len: seq,
        input_ids,
        token_type_ids: vec![0; batch * seq],
        attention_mask: vec![1; batch * seq],
    }
}

/// Makes every float parameter trainable (full fine-tuning).
struct TrainAll;

impl<B: Backend> ModuleMapper<B> for TrainAll {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, _) = param.consume();
        Param::initialized(id, tensor.detach().require_grad())
    }
}

/// Counts trainable values.
struct CountTrainable(usize);

impl<B: Backend> burn::module::ModuleVisitor<B> for CountTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.val().is_require_grad() {
            self.0 += param.shape().num_elements();
        }
    }
}

/// Times `reps` calls of `step` after `warmup` untimed ones, tracking peak
/// memory from the first warm-up call on.
fn time(
    options: &Options,
    mut step: impl FnMut() -> Result<(), String>,
) -> Result<(Vec<f64>, u64, u64), String> {
    let setup = memory::reset_peak();
    for _ in 0..options.warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(options.reps);
    for _ in 0..options.reps {
        let started = Instant::now();
        step()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok((times, setup, memory::peak_rss()))
}

/// Runs `options.workload` on backend `B` (training on `Autodiff<B>`).
pub fn run<B: loraxs_models::KernelBackend>(options: &Options, device: &B::Device) -> Result<Report, String> {
    let model = ModelDir::new(&options.model).map_err(|e| e.to_string())?;
    let vocab = model.config().map_err(|e| e.to_string())?.vocab_size;
    let tokens = token_batch(options.batch, options.seq, vocab);
    let w = options.workload;
    let mut values = None;
    let mut file_bytes = None;
    let mut last_loss = None;
    let mut variants = None;
    let (times, setup, peak) = match w {
        Workload::TrainLoraXs | Workload::TrainLora | Workload::TrainVera | Workload::TrainFull => {
            type AB<B> = Autodiff<B>;
            let (encoder, _) = model.encoder::<AB<B>>(device).map_err(|e| e.to_string())?;
            let encoder = match w.adapter() {
                Some(config) => loraxs::inject(encoder, &config).map_err(|e| e.to_string())?.model,
                None => encoder.map(&mut TrainAll),
            };
            let head = HeadConfig::new(HeadStyle::Bert, encoder.hidden_size(), 2).init::<AB<B>>(device);
            let mut classifier = Some(SequenceClassifier { encoder, head });
            let mut counter = CountTrainable(0);
            classifier.as_ref().expect("model").visit(&mut counter);
            values = Some(counter.0);
            let mut optim = AdamWConfig::new()
                .with_weight_decay(0.01)
                .init::<AB<B>, SequenceClassifier<AB<B>>>();
            let input = classifier
                .as_ref()
                .expect("model")
                .encoder
                .input(&tokens, device)
                .map_err(|e| e.to_string())?;
            let labels: Vec<i64> = (0..options.batch as i64).map(|i| i % 2).collect();
            let labels = Tensor::<AB<B>, 1, Int>::from_data(TensorData::new(labels, [options.batch]), device);
            let loss_fn = CrossEntropyLossConfig::new().init(device);
            let mut loss_value = 0.0;
            let result = time(options, || {
                let model = classifier.take().expect("model");
                let logits = model.forward(input.clone());
                let loss = loss_fn.forward(logits, labels.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                classifier = Some(optim.step(1e-4, model, grads));
                loss_value = loraxs::interop::tensor_values(loss)[0] as f64;
                B::sync(device).map_err(|e| format!("{e:?}"))
            })?;
            last_loss = Some(loss_value);
            result
        }
        Workload::InferBase
        | Workload::InferLoraXs
        | Workload::InferLoraXsMerged
        | Workload::InferLoraXsFactored => {
            let (encoder, _) = model.encoder::<B>(device).map_err(|e| e.to_string())?;
            let encoder = match w.adapter() {
                Some(config) => {
                    let adapted = loraxs::inject(encoder, &config).map_err(|e| e.to_string())?.model;
                    // A trained-looking R (the N(0, 1e-5) init is nearly zero).
                    let adapted = randomise_r(adapted);
                    match w {
                        Workload::InferLoraXsMerged => loraxs::merge(adapted),
                        Workload::InferLoraXsFactored => loraxs::set_fused_inference(adapted, false),
                        _ => adapted,
                    }
                }
                None => encoder,
            };
            let input = encoder.input(&tokens, device).map_err(|e| e.to_string())?;
            time(options, || {
                let out = encoder.forward(input.clone());
                let _ = out.hidden.into_data();
                B::sync(device).map_err(|e| format!("{e:?}"))
            })?
        }
        Workload::InferCompare => {
            let (encoder, _) = model.encoder::<B>(device).map_err(|e| e.to_string())?;
            let config = w.adapter().expect("adapted variants");
            let unmerged = randomise_r(
                loraxs::inject(encoder.clone(), &config)
                    .map_err(|e| e.to_string())?
                    .model,
            );
            let models = [
                ("infer-base", encoder),
                ("infer-lora-xs", unmerged.clone()),
                ("infer-lora-xs-merged", loraxs::merge(unmerged.clone())),
                (
                    "infer-lora-xs-factored",
                    loraxs::set_fused_inference(unmerged, false),
                ),
            ];
            let input = models[0].1.input(&tokens, device).map_err(|e| e.to_string())?;
            let mut times = vec![Vec::new(); models.len()];
            let mut round = 0;
            let result = time(options, || {
                // Rotate the order every round so no variant always runs
                // first (or right after the same neighbour).
                let mut round_times = vec![0.0; models.len()];
                for k in 0..models.len() {
                    let i = (k + round) % models.len();
                    let started = Instant::now();
                    let out = models[i].1.forward(input.clone());
                    let _ = out.hidden.into_data();
                    B::sync(device).map_err(|e| format!("{e:?}"))?;
                    round_times[i] = started.elapsed().as_secs_f64() * 1e3;
                }
                round += 1;
                if round > options.warmup {
                    for (all, t) in times.iter_mut().zip(round_times) {
                        all.push(t);
                    }
                }
                Ok(())
            })?;
            variants = Some(
                models
                    .iter()
                    .zip(&times)
                    .map(|((name, _), t)| {
                        let ratios: Vec<f64> = t.iter().zip(&times[0]).map(|(a, b)| a / b).collect();
                        Variant {
                            workload: name.to_string(),
                            times_ms: t.clone(),
                            median_ms: median(t),
                            ratio_to_base: median(&ratios),
                            ratio_quartiles: [quantile(&ratios, 0.25), quantile(&ratios, 0.75)],
                        }
                    })
                    .collect(),
            );
            // The row's own figures are the base model's (round totals
            // would mean nothing); the variants carry the rest.
            let (_, setup, peak) = result;
            (times[0].clone(), setup, peak)
        }
        Workload::SvdExact | Workload::SvdKrylov | Workload::SvdRandomized | Workload::SvdRandomized10 => {
            let (encoder, _) = model.encoder::<B>(device).map_err(|e| e.to_string())?;
            let config = w.adapter().expect("svd workloads adapt");
            time(options, || {
                let fresh = encoder.clone();
                let adapted = loraxs::inject(fresh, &config).map_err(|e| e.to_string())?;
                drop(adapted);
                B::sync(device).map_err(|e| format!("{e:?}"))
            })?
        }
        Workload::AdapterSave | Workload::AdapterLoad | Workload::AdapterLoadStoredFactors => {
            let (encoder, _) = model.encoder::<B>(device).map_err(|e| e.to_string())?;
            let config = w.adapter().expect("adapter workloads adapt");
            let adapted = loraxs::inject(encoder.clone(), &config).map_err(|e| e.to_string())?;
            let adapted = adapted.map(randomise_r);
            std::fs::create_dir_all(&options.scratch)
                .map_err(|e| format!("{}: {e}", options.scratch.display()))?;
            let store_factors = w == Workload::AdapterLoadStoredFactors;
            let path = options
                .scratch
                .join(format!("{}-{}.safetensors", w.name(), options.backend));
            let save = || -> Result<(), String> {
                adapted
                    .save(&path, SaveOptions { store_factors })
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            save()?;
            file_bytes = Some(std::fs::metadata(&path).map_err(|e| e.to_string())?.len());
            values = Some(
                AdapterFile::load(&path)
                    .map_err(|e| e.to_string())?
                    .stored_values(),
            );
            let result = if w == Workload::AdapterSave {
                time(options, save)?
            } else {
                time(options, || {
                    let file = AdapterFile::load(&path).map_err(|e| e.to_string())?;
                    let loaded = file.apply(encoder.clone(), &path).map_err(|e| e.to_string())?;
                    drop(loaded);
                    B::sync(device).map_err(|e| format!("{e:?}"))
                })?
            };
            let _ = std::fs::remove_file(&path);
            result
        }
    };
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Report {
        tool: "loraxs".into(),
        backend: options.backend.clone(),
        workload: w.name().into(),
        batch: options.batch,
        seq: options.seq,
        threads: rayon_threads(),
        min_ms: sorted[0],
        max_ms: *sorted.last().expect("at least one repetition"),
        median_ms: median(&times),
        times_ms: times,
        setup_rss_bytes: setup,
        peak_rss_bytes: peak,
        values,
        file_bytes,
        last_loss,
        variants,
    })
}

/// Replaces every LoRA-XS `R` with N(0, 0.01) values, as a trained adapter
/// would have (the merged and unmerged paths then do real work).
fn randomise_r<B: Backend>(mut encoder: Encoder<B>) -> Encoder<B> {
    use loraxs::{AdaptedLinear, AdapterHost};
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    encoder.linears_mut(&mut |_, layer| {
        if let AdaptedLinear::LoraXs(xs) = layer {
            let [r, _] = xs.r.dims();
            let values: Vec<f32> = (0..r * r).map(|_| (rng.random::<f32>() - 0.5) * 0.02).collect();
            xs.r = loraxs::interop::replace_values(xs.r.clone(), &values, false);
        }
    });
    encoder
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
