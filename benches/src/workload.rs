//! The `cargo xtask bench` workloads on a real encoder: one training step
//! per adapter method, inference with and without a merged adapter, SVD
//! initialisation of every adapted matrix, adapter save and load, and an
//! epoch of the real GLUE trainer on real batches (`train-glue-*`); on a
//! real decoder (SmolLM2-135M-Instruct), a LoRA-XS training step and greedy
//! generation with the KV cache (`*-decoder-*`).
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
use loraxs_data::{GlueTask, Label};
use loraxs_heads::{HeadConfig, HeadStyle, SequenceClassifier};
use loraxs_models::{GenerationConfig, ModelDir, TokenBatch, generate, load_decoder};
use loraxs_train::{RunConfig, StepObserver, TrainOptions, epoch_batches};
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
    /// One epoch of `loraxs_train::train` (LoRA-XS r=16, the quick
    /// profile's rates) on 2,000 SST-2 training examples: real,
    /// length-bucketed, padded batches of 32, dropout on.
    TrainGlueSst2,
    /// The same on 2,000 MRPC examples (sentence pairs: longer batches).
    TrainGlueMrpc,
    /// Only the matrix products of a `train-lora-xs` step (forward, the
    /// backward's input and `R` gradients, attention's batched products),
    /// on plain contiguous operands: the step's gemm limit on this machine.
    GemmStep,
    /// Batched inference through an [`loraxs::AdapterBank`] holding 1, 10,
    /// 100 and 1,000 LoRA-XS r=16 adapters, each row of the batch routed to
    /// its own adapter (as many distinct ones as the batch has rows), in
    /// one process alternating with the base model, one adapter merged
    /// and one adapter unmerged; the per-batch routing is timed too.
    InferBank,
    /// Forward, backward and AdamW step of the decoder with LoRA-XS r=64
    /// (alpha 64, the paper's math recipe) on the seven decoder targets:
    /// next-token loss over every position of `batch` random sequences of
    /// `seq` tokens.
    TrainDecoderLoraXs,
    /// Greedy generation of [`NEW_TOKENS`] tokens for `batch` prompts of
    /// `seq` random tokens, KV cache on, no stop token, base decoder.
    GenerateDecoderBase,
    /// The same with an unmerged LoRA-XS r=64 adapter on the seven targets.
    GenerateDecoderLoraXs,
    /// loraxs-serve on loopback: 1,000 LoRA-XS r=16 adapters loaded over
    /// HTTP, then requests per second and latency with 1 and 1,000
    /// adapters and for base embeddings, then a soak with adapters removed
    /// and re-loaded under traffic (see [`crate::serve`]).
    ServeLoad,
    /// The `train-glue-sst2` run with 1 and 2 data-parallel peers, and one
    /// step's gradient all-reduce for LoRA-XS, LoRA and full fine-tuning
    /// (see [`crate::scale`]).
    TrainDataParallel,
}

/// Tokens each prompt of the `generate-decoder-*` workloads generates.
pub const NEW_TOKENS: usize = 32;

impl Workload {
    /// Every workload, in reporting order.
    pub const ALL: [Workload; 25] = [
        Workload::TrainLoraXs,
        Workload::TrainLora,
        Workload::TrainVera,
        Workload::TrainFull,
        Workload::InferBase,
        Workload::InferLoraXs,
        Workload::InferLoraXsMerged,
        Workload::InferLoraXsFactored,
        Workload::InferCompare,
        Workload::InferBank,
        Workload::SvdExact,
        Workload::SvdKrylov,
        Workload::SvdRandomized,
        Workload::SvdRandomized10,
        Workload::AdapterSave,
        Workload::AdapterLoad,
        Workload::AdapterLoadStoredFactors,
        Workload::TrainGlueSst2,
        Workload::TrainGlueMrpc,
        Workload::GemmStep,
        Workload::TrainDecoderLoraXs,
        Workload::GenerateDecoderBase,
        Workload::GenerateDecoderLoraXs,
        Workload::ServeLoad,
        Workload::TrainDataParallel,
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
            Workload::InferBank => "infer-bank",
            Workload::SvdExact => "svd-exact",
            Workload::SvdKrylov => "svd-krylov",
            Workload::SvdRandomized => "svd-randomized",
            Workload::SvdRandomized10 => "svd-randomized-10",
            Workload::AdapterSave => "adapter-save",
            Workload::AdapterLoad => "adapter-load",
            Workload::AdapterLoadStoredFactors => "adapter-load-stored-factors",
            Workload::TrainGlueSst2 => "train-glue-sst2",
            Workload::TrainGlueMrpc => "train-glue-mrpc",
            Workload::GemmStep => "gemm-step",
            Workload::TrainDecoderLoraXs => "train-decoder-lora-xs",
            Workload::GenerateDecoderBase => "generate-decoder-base",
            Workload::GenerateDecoderLoraXs => "generate-decoder-lora-xs",
            Workload::ServeLoad => "serve-load",
            Workload::TrainDataParallel => "train-data-parallel",
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
            | Workload::InferBank
            | Workload::ServeLoad
            | Workload::TrainDataParallel
            | Workload::AdapterSave
            | Workload::AdapterLoad
            | Workload::AdapterLoadStoredFactors
            | Workload::TrainGlueSst2
            | Workload::TrainGlueMrpc
            | Workload::GemmStep => xs,
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
            Workload::TrainDecoderLoraXs | Workload::GenerateDecoderLoraXs => AdapterConfig::lora_xs(64)
                .with_alpha(64.0)
                .with_targets(TargetModules::paper_decoder()),
            Workload::TrainFull | Workload::InferBase | Workload::GenerateDecoderBase => return None,
        })
    }

    /// True for the workloads on the decoder (model: a GGUF file, a folder
    /// with one, or a Hugging Face decoder folder; default SmolLM2).
    pub fn is_decoder(self) -> bool {
        matches!(
            self,
            Workload::TrainDecoderLoraXs | Workload::GenerateDecoderBase | Workload::GenerateDecoderLoraXs
        )
    }

    /// The GLUE run a `train-glue-*` workload trains (`None` for the
    /// others): LoRA-XS r=16 with the quick profile's rates (adapter 1e-2,
    /// head 2e-3), one epoch over a seeded subset of 2,000 training
    /// examples, 64 dev examples scored at the end (untimed).
    pub fn glue_run(self) -> Option<RunConfig> {
        let task = match self {
            Workload::TrainGlueSst2 => GlueTask::Sst2,
            Workload::TrainGlueMrpc => GlueTask::Mrpc,
            _ => return None,
        };
        let mut run = RunConfig::new(task, self.adapter()?, 1e-2, 2e-3, 1);
        run.train_subset = Some(GLUE_EXAMPLES);
        run.eval_subset = Some(64);
        // The batches docs/results/bench-flex.md measured: 50-batch
        // length-sorting windows and the model's dropout (the trainer's
        // defaults when the rows were run; both tools train on the same
        // batches either way, so the ratio does not depend on it).
        run.bucket_window = 50;
        run.encoder_dropout = None;
        Some(run)
    }

    /// True for the workloads that read the GLUE data.
    pub fn needs_glue_data(self) -> bool {
        self.glue_run().is_some() || self == Workload::TrainDataParallel
    }

    /// True when the PyTorch reference reads inputs [`prepare`] writes.
    pub fn is_prepared(self) -> bool {
        self.glue_run().is_some() || self == Workload::GemmStep
    }
}

/// Training examples of the `train-glue-*` workloads.
pub const GLUE_EXAMPLES: usize = 2000;

/// Where [`prepare`] writes a workload's inputs for the PyTorch reference
/// (in the scratch folder both tools are given).
pub fn inputs_path(scratch: &std::path::Path, workload: Workload) -> PathBuf {
    scratch.join(format!("{}-inputs.json", workload.name()))
}

/// Writes what the PyTorch reference needs to run exactly this workload
/// (`train-glue-*`: the trainer's batches; `gemm-step`: the product
/// shapes) to [`inputs_path`]; `Ok(None)` for workloads that need nothing.
pub fn prepare(options: &Options) -> Result<Option<PathBuf>, String> {
    let w = options.workload;
    let value = if w.needs_glue_data() {
        glue_inputs(options)?
    } else if w == Workload::GemmStep {
        let model = ModelDir::new(&options.model).map_err(|e| e.to_string())?;
        let config = model.config().map_err(|e| e.to_string())?;
        let shapes: Vec<[usize; 4]> = step_products(&config, options.batch, options.seq, 16)
            .iter()
            .map(|p| [p.batch, p.m, p.k, p.n])
            .collect();
        serde_json::json!({ "workload": w.name(), "shapes": shapes })
    } else {
        return Ok(None);
    };
    std::fs::create_dir_all(&options.scratch).map_err(|e| format!("{}: {e}", options.scratch.display()))?;
    let path = inputs_path(&options.scratch, w);
    std::fs::write(&path, value.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(path))
}

/// The batches of a `train-glue-*` workload's epoch (exactly those
/// `loraxs_train::train` trains on, from [`loraxs_train::epoch_batches`]),
/// with the run's optimiser settings.
fn glue_inputs(options: &Options) -> Result<serde_json::Value, String> {
    let w = options.workload;
    let run = w
        .glue_run()
        .ok_or_else(|| format!("{} is not a train-glue workload", w.name()))?;
    let data_dir = loraxs_data::data_dir(options.data_dir.as_deref()).map_err(|e| e.to_string())?;
    let model = ModelDir::new(&options.model).map_err(|e| e.to_string())?;
    let batches = epoch_batches(&run, &model, &data_dir, 0).map_err(|e| e.to_string())?;
    let rows = |values: &[u32], batch: usize, seq: usize| -> Vec<Vec<u32>> {
        (0..batch)
            .map(|b| values[b * seq..(b + 1) * seq].to_vec())
            .collect()
    };
    let batches: Vec<serde_json::Value> = batches
        .iter()
        .map(|b| {
            let (n, seq) = (b.tokens.batch, b.tokens.seq_len);
            let labels: Vec<serde_json::Value> = b
                .labels
                .iter()
                .map(|l| match l {
                    Label::Class(c) => serde_json::json!(c),
                    Label::Score(s) => serde_json::json!(s),
                })
                .collect();
            serde_json::json!({
                "input_ids": rows(&b.tokens.input_ids, n, seq),
                "token_type_ids": rows(&b.tokens.token_type_ids, n, seq),
                "attention_mask": rows(&b.tokens.attention_mask, n, seq),
                "labels": labels,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "workload": w.name(),
        "task": run.task.name(),
        "num_labels": run.task.num_labels(),
        "regression": run.task.is_regression(),
        "rank": run.adapter.rank,
        "alpha": run.adapter.alpha,
        "lr": run.lr,
        "head_lr": run.head_lr,
        "weight_decay": run.weight_decay,
        "warmup_ratio": run.warmup_ratio,
        "batches": batches,
    }))
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
    /// GLUE data folder for `train-glue-*` (else `LORAXS_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
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
    /// `train-glue-*`: training examples per second over the timed steps.
    pub examples_per_s: Option<f64>,
    /// `train-glue-*`: examples in the timed steps.
    pub examples: Option<usize>,
    /// `train-glue-*`: mean training loss over the whole epoch (both tools
    /// train on the same batches, so these should be close).
    pub mean_loss: Option<f64>,
    /// `gemm-step`: floating-point operations of one repetition.
    pub flops: Option<f64>,
    /// Decoder workloads: tokens per second at the median repetition
    /// (training: `batch × seq` tokens a step; generation: `batch ×`
    /// [`NEW_TOKENS`] generated tokens, prompt processing included).
    pub tokens_per_s: Option<f64>,
    /// `serve-load`: adapter loading, memory per adapter, the soak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<crate::serve::ServeStats>,
    /// `train-data-parallel`: examples/s per peer count, all-reduce costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<crate::scale::ScaleStats>,
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
    /// `serve-load`: requests per second at the median round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_s: Option<f64>,
    /// `serve-load`: median over rounds of each round's p50 and p99
    /// request latency, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<[f64; 2]>,
}

/// One variant of a paired workload: its name and one forward pass.
type Run<'a, B> = (&'a str, Box<dyn Fn() -> Tensor<B, 3> + 'a>);

/// Adapters in the banks of `infer-bank`.
pub const BANK_SIZES: [usize; 4] = [1, 10, 100, 1000];

/// Runs every variant once a round, rotating which goes first, for
/// `warmup` untimed and `reps` timed rounds: each variant's times, and its
/// ratio to the first variant's time in the same round (the machine state
/// both saw). Returns the first variant's times, the memory figures and the
/// variants.
fn alternate<B: Backend>(
    options: &Options,
    runs: &[Run<'_, B>],
    device: &B::Device,
) -> Result<(Vec<f64>, u64, u64, Vec<Variant>), String> {
    let mut times = vec![Vec::new(); runs.len()];
    let mut round = 0;
    let (_, setup, peak) = time(options, || {
        let mut round_times = vec![0.0; runs.len()];
        for k in 0..runs.len() {
            let i = (k + round) % runs.len();
            let started = Instant::now();
            let _ = (runs[i].1)().into_data();
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
    let variants = runs
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
                requests_per_s: None,
                latency_ms: None,
            }
        })
        .collect();
    // The row's own figures are the first variant's (round totals would
    // mean nothing); the variants carry the rest.
    Ok((times[0].clone(), setup, peak, variants))
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
pub(crate) struct TrainAll;

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
    if options.workload.is_decoder() {
        return run_decoder::<B>(options, device);
    }
    if options.workload == Workload::ServeLoad {
        return crate::serve::run::<B>(options);
    }
    if options.workload == Workload::TrainDataParallel {
        return crate::scale::run::<B>(options, device);
    }
    let model = ModelDir::new(&options.model).map_err(|e| e.to_string())?;
    let vocab = model.config().map_err(|e| e.to_string())?.vocab_size;
    let tokens = token_batch(options.batch, options.seq, vocab);
    let w = options.workload;
    let mut values = None;
    let mut file_bytes = None;
    let mut last_loss = None;
    let mut variants = None;
    let mut glue = None;
    let mut flops = None;
    let (times, setup, peak) = match w {
        Workload::GemmStep => {
            let config = model.config().map_err(|e| e.to_string())?;
            let products = step_products(&config, options.batch, options.seq, 16);
            flops = Some(products.iter().map(GemmShape::flops).sum());
            let operands: Vec<(Tensor<B, 3>, Tensor<B, 3>)> = products
                .iter()
                .map(|p| {
                    let uniform = burn::tensor::Distribution::Uniform(-1.0, 1.0);
                    (
                        Tensor::random([p.batch, p.m, p.k], uniform, device),
                        Tensor::random([p.batch, p.k, p.n], uniform, device),
                    )
                })
                .collect();
            time(options, || {
                for (a, b) in &operands {
                    drop(a.clone().matmul(b.clone()));
                }
                B::sync(device).map_err(|e| format!("{e:?}"))
            })?
        }
        Workload::TrainGlueSst2 | Workload::TrainGlueMrpc => {
            let (times, setup, peak, figures) = run_glue::<B>(options, &model, device)?;
            last_loss = Some(figures.last_loss);
            glue = Some(figures);
            (times, setup, peak)
        }
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
            let runs: Vec<Run<'_, B>> = models
                .iter()
                .map(|(name, m)| {
                    let input = input.clone();
                    let run: Box<dyn Fn() -> Tensor<B, 3>> =
                        Box::new(move || m.forward(input.clone()).hidden);
                    (*name, run)
                })
                .collect();
            let (times, setup, peak, found) = alternate::<B>(options, &runs, device)?;
            variants = Some(found);
            (times, setup, peak)
        }
        Workload::InferBank => {
            let (encoder, _) = model.encoder::<B>(device).map_err(|e| e.to_string())?;
            let config = w.adapter().expect("adapted variants");
            let single = randomise_r(
                loraxs::inject(encoder.clone(), &config)
                    .map_err(|e| e.to_string())?
                    .model,
            );
            let merged = loraxs::merge(single.clone());
            let file = AdapterFile::from_model(&single, &config, SaveOptions::default())
                .map_err(|e| e.to_string())?;
            // 1,000 different adapters: the same file with R redrawn.
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let files: Vec<AdapterFile> = (0..BANK_SIZES[BANK_SIZES.len() - 1])
                .map(|_| {
                    let mut f = file.clone();
                    if let Some(t) = f.tensors.get_mut(loraxs::LORA_XS_R) {
                        t.values
                            .iter_mut()
                            .for_each(|v| *v = (rng.random::<f32>() - 0.5) * 0.02);
                    }
                    f
                })
                .collect();
            let names: Vec<String> = (0..files.len()).map(|i| format!("adapter-{i}")).collect();
            let path = std::path::Path::new("generated");
            let mut banks = Vec::new();
            for &n in &BANK_SIZES {
                let mut bank =
                    loraxs::AdapterBank::new(encoder.clone(), &config).map_err(|e| e.to_string())?;
                let entries: Vec<(&str, &AdapterFile, &std::path::Path)> = names[..n]
                    .iter()
                    .zip(&files)
                    .map(|(name, f)| (name.as_str(), f, path))
                    .collect();
                bank.insert_all(&entries).map_err(|e| e.to_string())?;
                // Row i uses adapter (i · 7919) mod n: min(n, rows) distinct.
                let slots: Vec<usize> = (0..options.batch).map(|i| (i * 7919) % n + 1).collect();
                banks.push((format!("bank-{n}"), bank, slots));
            }
            let input = encoder.input(&tokens, device).map_err(|e| e.to_string())?;
            let mut runs: Vec<Run<'_, B>> = Vec::new();
            for (name, m) in [
                ("base", &encoder),
                ("merged", &merged),
                ("single-adapter", &single),
            ] {
                let input = input.clone();
                runs.push((name, Box::new(move || m.forward(input.clone()).hidden)));
            }
            for (name, bank, slots) in &banks {
                let input = input.clone();
                runs.push((
                    name.as_str(),
                    Box::new(move || bank.route(slots, device).forward(input.clone()).hidden),
                ));
            }
            let (times, setup, peak, found) = alternate::<B>(options, &runs, device)?;
            values = Some(banks[0].1.bytes_per_adapter() / std::mem::size_of::<f32>());
            variants = Some(found);
            (times, setup, peak)
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
        Workload::TrainDecoderLoraXs | Workload::GenerateDecoderBase | Workload::GenerateDecoderLoraXs => {
            return Err(format!("{} runs through run_decoder", w.name()));
        }
        Workload::ServeLoad => {
            return Err("serve-load runs through serve::run".into());
        }
        Workload::TrainDataParallel => {
            return Err("train-data-parallel runs through scale::run".into());
        }
    };
    let mut report = report(options, times, setup, peak);
    report.values = values;
    report.file_bytes = file_bytes;
    report.last_loss = last_loss;
    report.variants = variants;
    report.examples_per_s = glue.as_ref().map(|g| g.examples_per_s);
    report.examples = glue.as_ref().map(|g| g.examples);
    report.mean_loss = glue.as_ref().map(|g| g.mean_loss);
    report.flops = flops;
    Ok(report)
}

/// The report of `times` with the figures every workload has.
pub(crate) fn report(options: &Options, times: Vec<f64>, setup: u64, peak: u64) -> Report {
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Report {
        tool: "loraxs".into(),
        backend: options.backend.clone(),
        workload: options.workload.name().into(),
        batch: options.batch,
        seq: options.seq,
        threads: rayon_threads(),
        min_ms: sorted[0],
        max_ms: *sorted.last().expect("at least one repetition"),
        median_ms: median(&times),
        times_ms: times,
        setup_rss_bytes: setup,
        peak_rss_bytes: peak,
        values: None,
        file_bytes: None,
        last_loss: None,
        variants: None,
        examples_per_s: None,
        examples: None,
        mean_loss: None,
        flops: None,
        tokens_per_s: None,
        serve: None,
        scale: None,
    }
}

/// Random token ids in `[0, vocab)`, seeded, `batch × seq` row-major.
fn decoder_tokens(batch: usize, seq: usize, vocab: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    (0..batch * seq)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect()
}

/// The `*-decoder-*` workloads.
fn run_decoder<B: loraxs_models::KernelBackend>(
    options: &Options,
    device: &B::Device,
) -> Result<Report, String> {
    let w = options.workload;
    let (batch, seq) = (options.batch, options.seq);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match w {
        Workload::TrainDecoderLoraXs => {
            type AB<B> = Autodiff<B>;
            let (decoder, _, _) = load_decoder::<AB<B>>(&options.model, device).map_err(|e| err(&e))?;
            let config = w.adapter().expect("adapted");
            let decoder = loraxs::inject(decoder, &config).map_err(|e| err(&e))?.model;
            let vocab = decoder.vocab_size();
            let ids = decoder_tokens(batch, seq, vocab);
            let mask = vec![1u32; batch * seq];
            // Next-token targets: position t predicts ids[t + 1].
            let targets: Vec<i64> = (0..batch)
                .flat_map(|b| ids[b * seq + 1..(b + 1) * seq].iter().map(|&t| i64::from(t)))
                .collect();
            let n = batch * (seq - 1);
            let targets = Tensor::<AB<B>, 1, Int>::from_data(TensorData::new(targets, [n]), device);
            let mut counter = CountTrainable(0);
            decoder.visit(&mut counter);
            let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<AB<B>, _>();
            let loss_fn = CrossEntropyLossConfig::new().init(device);
            let mut model = Some(decoder);
            let mut loss_value = 0.0;
            let (times, setup, peak) = time(options, || {
                let m = model.take().expect("model");
                let hidden = m
                    .forward_hidden(&ids, batch, &mask, None, device)
                    .map_err(|e| err(&e))?;
                let h = hidden.dims()[2];
                let hidden = hidden.slice([0..batch, 0..seq - 1]).reshape([1, n, h]);
                let logits = m.logits(hidden).reshape([n, vocab]);
                let loss = loss_fn.forward(logits, targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                model = Some(optim.step(1e-4, m, grads));
                loss_value = loraxs::interop::tensor_values(loss)[0] as f64;
                B::sync(device).map_err(|e| format!("{e:?}"))
            })?;
            let mut report = report(options, times, setup, peak);
            report.values = Some(counter.0);
            report.last_loss = Some(loss_value);
            report.tokens_per_s = Some((batch * seq) as f64 / (report.median_ms / 1e3));
            Ok(report)
        }
        Workload::GenerateDecoderBase | Workload::GenerateDecoderLoraXs => {
            let (decoder, _, _) = load_decoder::<B>(&options.model, device).map_err(|e| err(&e))?;
            let decoder = match w.adapter() {
                Some(config) => randomise_r(loraxs::inject(decoder, &config).map_err(|e| err(&e))?.model),
                None => decoder,
            };
            let vocab = decoder.vocab_size();
            let ids = decoder_tokens(batch, seq, vocab);
            let prompts: Vec<Vec<u32>> = ids.chunks(seq).map(<[u32]>::to_vec).collect();
            let config = GenerationConfig {
                max_new_tokens: NEW_TOKENS,
                ..Default::default()
            };
            let (times, setup, peak) = time(options, || {
                let out = generate(&decoder, &prompts, 0, &config, device).map_err(|e| err(&e))?;
                if out.tokens.iter().any(|t| t.len() != NEW_TOKENS) {
                    return Err(format!("a prompt stopped before {NEW_TOKENS} tokens"));
                }
                B::sync(device).map_err(|e| format!("{e:?}"))
            })?;
            let mut report = report(options, times, setup, peak);
            report.tokens_per_s = Some((batch * NEW_TOKENS) as f64 / (report.median_ms / 1e3));
            Ok(report)
        }
        _ => Err(format!("{} is not a decoder workload", w.name())),
    }
}

/// One matrix product `[batch, m, k] × [batch, k, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmShape {
    /// Independent products (attention: batch × heads).
    pub batch: usize,
    /// Rows of the left operand.
    pub m: usize,
    /// The contracted dimension.
    pub k: usize,
    /// Columns of the right operand.
    pub n: usize,
}

impl GemmShape {
    /// Multiply-adds × 2.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.k * self.n) as f64
    }
}

/// The matrix products of one LoRA-XS training step of an encoder with
/// `config`'s sizes on `batch` sequences of `seq` tokens, rank `rank` on the
/// paper's four GLUE targets: per layer the six linears' forward products,
/// the adapters' three thin products each, attention's two batched products;
/// backward, every linear's input gradient (the frozen weights need no
/// weight gradient), the adapters' input gradients and `R` gradients, and
/// attention's four batched products. Embeddings, head and element-wise
/// work are left out: this is the step's gemm floor.
pub fn step_products(
    config: &loraxs_models::EncoderConfig,
    batch: usize,
    seq: usize,
    rank: usize,
) -> Vec<GemmShape> {
    let tokens = batch * seq;
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let heads = config.num_attention_heads;
    let hd = h / heads;
    let g = |batch, m, k, n| GemmShape { batch, m, k, n };
    // (in, out, adapted) of query, key, value, attention output, up, down.
    let linears = [
        (h, h, true),
        (h, h, false),
        (h, h, true),
        (h, h, true),
        (h, i, false),
        (i, h, true),
    ];
    let mut out = Vec::new();
    for _ in 0..config.num_hidden_layers {
        for &(input, output, adapted) in &linears {
            out.push(g(1, tokens, input, output));
            if adapted {
                // x·Aᵀ, ·Rᵀ, ·Bᵀ.
                out.extend([
                    g(1, tokens, input, rank),
                    g(1, tokens, rank, rank),
                    g(1, tokens, rank, output),
                ]);
            }
        }
        let bh = batch * heads;
        // Scores Q·Kᵀ and context P·V.
        out.extend([g(bh, seq, hd, seq), g(bh, seq, seq, hd)]);
        // Backward: attention (∂P = ∂C·Vᵀ, ∂V = Pᵀ·∂C, ∂Q = ∂S·K, ∂K = ∂Sᵀ·Q).
        out.extend([
            g(bh, seq, hd, seq),
            g(bh, seq, seq, hd),
            g(bh, seq, seq, hd),
            g(bh, seq, seq, hd),
        ]);
        for &(input, output, adapted) in &linears {
            out.push(g(1, tokens, output, input));
            if adapted {
                // ∂(xAᵀRᵀ) = ∂y·B, then ·R, then ·A; ∂R = (∂y·B)ᵀ·(x·Aᵀ).
                out.extend([
                    g(1, tokens, output, rank),
                    g(1, tokens, rank, rank),
                    g(1, tokens, rank, input),
                    g(1, rank, tokens, rank),
                ]);
            }
        }
    }
    out
}

/// What a `train-glue-*` run adds to its report.
struct GlueFigures {
    examples_per_s: f64,
    examples: usize,
    mean_loss: f64,
    last_loss: f64,
}

/// One epoch of the real trainer. A step's time is the interval between
/// the trainer's calls of the step observer, so the first step (whose
/// start the observer cannot see) always counts as warm-up; the timed part
/// is every step after `max(warmup, 1)` steps, and the peak memory is
/// tracked from there on.
fn run_glue<B: loraxs_models::KernelBackend>(
    options: &Options,
    model: &ModelDir,
    device: &B::Device,
) -> Result<(Vec<f64>, u64, u64, GlueFigures), String> {
    use std::sync::{Arc, Mutex};
    let run = options.workload.glue_run().expect("a train-glue workload");
    let data_dir = loraxs_data::data_dir(options.data_dir.as_deref()).map_err(|e| e.to_string())?;
    let skip = options.warmup.max(1);
    #[derive(Default)]
    struct Log {
        last: Option<Instant>,
        steps: usize,
        times: Vec<f64>,
        examples: usize,
        losses: Vec<(f64, usize)>,
        setup: u64,
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let observer = {
        let log = log.clone();
        StepObserver::new(move |s| {
            let now = Instant::now();
            let mut log = log.lock().expect("log");
            if log.steps >= skip
                && let Some(last) = log.last
            {
                log.times.push((now - last).as_secs_f64() * 1e3);
                log.examples += s.examples;
            }
            log.losses.push((s.loss, s.examples));
            log.steps += 1;
            if log.steps == skip {
                log.setup = memory::reset_peak();
            }
            log.last = Some(Instant::now());
        })
    };
    let train_options = TrainOptions {
        quiet: true,
        backend: options.backend.clone(),
        on_step: Some(observer),
        ..Default::default()
    };
    type AB<B> = Autodiff<B>;
    loraxs_train::train::<AB<B>>(&run, model, &data_dir, device, &train_options)
        .map_err(|e| e.to_string())?;
    let log = log.lock().expect("log");
    if log.times.is_empty() {
        return Err(format!(
            "{}: the epoch has {} steps, none left to time after {skip} warm-up steps",
            options.workload.name(),
            log.steps
        ));
    }
    let total_ms: f64 = log.times.iter().sum();
    let seen: usize = log.losses.iter().map(|(_, n)| n).sum();
    let figures = GlueFigures {
        examples_per_s: log.examples as f64 / (total_ms / 1e3),
        examples: log.examples,
        mean_loss: log.losses.iter().map(|(l, n)| l * *n as f64).sum::<f64>() / seen as f64,
        last_loss: log.losses.last().map_or(f64::NAN, |(l, _)| *l),
    };
    Ok((log.times.clone(), log.setup, memory::peak_rss(), figures))
}

/// Replaces every LoRA-XS `R` with N(0, 0.01) values, as a trained adapter
/// would have (the merged and unmerged paths then do real work).
fn randomise_r<B: Backend, H: loraxs::AdapterHost<B>>(mut encoder: H) -> H {
    use loraxs::AdaptedLinear;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_products_count_the_flops_of_a_lora_xs_step() {
        let config = loraxs_models::EncoderConfig::from_json(
            r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
                "num_hidden_layers": 6, "num_attention_heads": 12,
                "intermediate_size": 1536, "max_position_embeddings": 512}"#,
            "config.json".as_ref(),
        )
        .unwrap();
        let (b, t, r) = (32.0, 128.0, 16.0);
        let (h, i, tokens) = (384.0, 1536.0, 32.0 * 128.0);
        // Dense products, forward and input gradient: 2·T·(4h² + 2hi) each.
        let dense = 2.0 * 2.0 * tokens * (4.0 * h * h + 2.0 * h * i);
        // Attention: 2 forward + 4 backward products of b·heads·t·t·hd.
        let attention = 6.0 * 2.0 * b * 12.0 * t * t * 32.0;
        // Four adapted modules, three of them h→h and `output.dense` i→h:
        // forward T·(in·r + r² + r·out), backward that again plus ∂R (r·T·r).
        let adapter =
            |input: f64, output: f64| 2.0 * tokens * (2.0 * (input * r + r * r + r * output) + r * r);
        let per_layer = dense + attention + 3.0 * adapter(h, h) + adapter(i, h);
        let expected = 6.0 * per_layer;
        let products = step_products(&config, 32, 128, 16);
        let got: f64 = products.iter().map(GemmShape::flops).sum();
        assert!((got - expected).abs() < 1e-6 * expected, "{got} vs {expected}");
        // About 195 GFLOP for MiniLM at 32 × 128.
        assert!((190e9..200e9).contains(&got), "{got}");
        assert_eq!(products.len(), 6 * (6 + 4 * 3 + 2 + 4 + 6 + 4 * 4));
    }
}
