//! The paper's math table: decoder fine-tuning on math word problems,
//! scored on GSM8K by greedy generation and exact match
//! (`cargo xtask reproduce math`). Profiles are JSON
//! (`profiles/math-*.json`); every run appends one record to
//! `docs/results/math-<profile>.jsonl`, and the table is derived from the
//! records.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use loraxs::{AdapterConfig, TargetModules};
use loraxs_models::{CausalTokenizer, load_causal_tokenizer, load_decoder};
use loraxs_train::{
    CausalRunConfig, CausalRunRecord, MathData, PromptStyle, TrainError, TrainOptions, evaluate_base,
    train_causal,
};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, OnBackend};
use crate::run::{Outcome, RunSettings, git_commit};
use crate::{ExperimentError, Result};

/// The math profiles shipped with this crate, by name.
pub const MATH_BUILT_IN: [(&str, &str); 3] = [
    ("quick", include_str!("../profiles/math-quick.json")),
    ("paper", include_str!("../profiles/math-paper.json")),
    ("smoke", include_str!("../profiles/math-smoke.json")),
];

/// One adapter row of a math profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathMethod {
    /// A preset of [`AdapterConfig::preset`] (`lora-xs`, `lora`, …).
    pub method: String,
    /// Rank.
    pub rank: usize,
    /// `alpha` (the authors: `alpha = r`, scale 1).
    pub alpha: f64,
    /// Peak learning rate.
    pub lr: f64,
}

/// A math reproduction. Unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathProfile {
    /// The profile's name.
    #[serde(skip)]
    pub name: String,
    /// What the profile is for.
    #[serde(default, rename = "_doc")]
    pub doc: String,
    /// Decoder: a fetched name (`smollm2`), a `.gguf` file or a folder.
    pub model: String,
    /// Backend: `flex`, `ndarray` or `cuda`.
    pub backend: String,
    /// Training data, relative to the data folder.
    pub train_data: MathData,
    /// Evaluation data.
    pub eval_data: MathData,
    /// What trained the adapters, in words, for the table.
    pub trained_on: String,
    /// Whether the table has the base model's row (no adapter).
    pub base_row: bool,
    /// Adapter rows; every one targets the paper's seven decoder modules.
    pub methods: Vec<MathMethod>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Epochs.
    pub epochs: usize,
    /// Sequences per micro-batch.
    pub micro_batch: usize,
    /// Micro-batches per optimiser step.
    pub accumulation: usize,
    /// Tokens per training sequence.
    pub max_length: usize,
    /// Seeded subset of the training data.
    pub train_subset: Option<usize>,
    /// First N evaluation problems.
    pub eval_subset: Option<usize>,
    /// Prompt style.
    pub prompt: PromptStyle,
    /// Generation budget per problem.
    pub max_new_tokens: usize,
    /// Warm-up fraction.
    pub warmup_ratio: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Sampler window (micro-batches sorted by length together).
    pub bucket_window: usize,
    /// Steps per epoch cap (smoke runs).
    #[serde(default)]
    pub max_steps_per_epoch: Option<usize>,
}

impl MathProfile {
    /// A built-in profile by name, or a JSON file by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let (name, text) = match MATH_BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, t)) => (n.to_string(), t.to_string()),
            None => {
                let path = Path::new(name_or_path);
                let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::Profile {
                    profile: name_or_path.into(),
                    reason: format!(
                        "not a built-in math profile ({}) and not a readable file: {e}",
                        MATH_BUILT_IN.map(|(n, _)| n).join(", ")
                    ),
                })?;
                let stem = path
                    .file_stem()
                    .map_or("custom".into(), |s| s.to_string_lossy().into_owned());
                (stem.trim_start_matches("math-").to_string(), text)
            }
        };
        let mut profile: MathProfile = serde_json::from_str(&text).map_err(|e| ExperimentError::Profile {
            profile: name.clone(),
            reason: e.to_string(),
        })?;
        profile.name = name;
        Ok(profile)
    }

    /// The runs, in order: each method × seed.
    pub fn runs(&self) -> Result<Vec<CausalRunConfig>> {
        let mut runs = Vec::new();
        for m in &self.methods {
            let adapter = AdapterConfig::preset(&m.method, m.rank)?
                .with_alpha(m.alpha)
                .with_targets(TargetModules::paper_decoder());
            adapter.validate()?;
            for &seed in &self.seeds {
                runs.push(CausalRunConfig {
                    adapter: adapter.clone().with_seed(seed),
                    lr: m.lr,
                    weight_decay: self.weight_decay,
                    warmup_ratio: self.warmup_ratio,
                    epochs: self.epochs,
                    micro_batch: self.micro_batch,
                    accumulation: self.accumulation,
                    max_length: self.max_length,
                    train_data: self.train_data.clone(),
                    eval_data: self.eval_data.clone(),
                    train_subset: self.train_subset,
                    eval_subset: self.eval_subset,
                    prompt: self.prompt,
                    max_new_tokens: self.max_new_tokens,
                    seed,
                    bucket_window: self.bucket_window,
                    max_steps_per_epoch: self.max_steps_per_epoch,
                });
            }
        }
        Ok(runs)
    }

    /// The key of the base model's row.
    pub fn base_key(&self) -> String {
        let e = self.eval_subset.map_or("all".into(), |n| n.to_string());
        let prompt = serde_json::to_value(self.prompt).expect("serialises");
        format!(
            "base-{}-{}-eval{e}-g{}",
            self.eval_data.file.display(),
            prompt.as_str().unwrap_or(""),
            self.max_new_tokens
        )
    }
}

/// The base model's row: evaluation without an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// [`MathProfile::base_key`].
    pub key: String,
    /// `accuracy`, `answer_loss`.
    pub metrics: loraxs_train::Metrics,
    /// Evaluation problems.
    pub eval_examples: usize,
    /// Wall time, seconds.
    pub wall_seconds: f64,
    /// Backend.
    pub backend: String,
    /// Model.
    pub model: String,
    /// Git commit.
    pub git_commit: String,
}

/// One line of a math results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MathRecord {
    /// The base model.
    Base(BaseRecord),
    /// A trained adapter.
    Run(Box<CausalRunRecord>),
}

impl MathRecord {
    /// The record's key.
    pub fn key(&self) -> &str {
        match self {
            MathRecord::Base(b) => &b.key,
            MathRecord::Run(r) => &r.key,
        }
    }
}

/// Reads a math results file (absent: empty). A line that does not parse
/// is an error naming `file:line`.
pub fn read_math_results(path: &Path) -> Result<Vec<MathRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ExperimentError::Results {
                path: path.into(),
                reason: e.to_string(),
            });
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| ExperimentError::Results {
                path: PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                reason: format!("not a math record: {e}"),
            })
        })
        .collect()
}

fn append(path: &Path, record: &MathRecord) -> Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| ExperimentError::Results {
        path: path.into(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(fail)?;
    let mut line = serde_json::to_string(record).expect("records serialise");
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(fail)
}

struct MathWork<'a> {
    run: Option<&'a CausalRunConfig>,
    profile: &'a MathProfile,
    model_path: &'a Path,
    tokenizer: &'a CausalTokenizer,
    data_dir: &'a Path,
    options: &'a TrainOptions,
}

enum WorkOutput {
    Run(Option<Box<CausalRunRecord>>),
    Base(loraxs_train::Metrics, usize),
}

impl OnBackend for MathWork<'_> {
    type Output = Result<WorkOutput, TrainError>;

    fn run<B: loraxs_models::KernelBackend>(self) -> Self::Output {
        let device = Default::default();
        match self.run {
            Some(run) => {
                let load = || Ok(load_decoder::<Autodiff<B>>(self.model_path, &device)?.0);
                train_causal::<Autodiff<B>>(run, load, self.tokenizer, self.data_dir, &device, self.options)
                    .map(|r| WorkOutput::Run(r.map(Box::new)))
            }
            None => {
                let (model, _, _) = load_decoder::<B>(self.model_path, &device)?;
                let config = self
                    .profile
                    .runs()
                    .ok()
                    .and_then(|r| r.into_iter().next())
                    .ok_or_else(|| TrainError::Checkpoint {
                        path: PathBuf::new(),
                        reason: "a base row needs at least one method to take its evaluation settings from"
                            .into(),
                    })?;
                let n = loraxs_train::eval_problems(&config, self.data_dir)?.len();
                evaluate_base(&config, &model, self.tokenizer, self.data_dir, &device)
                    .map(|m| WorkOutput::Base(m, n))
            }
        }
    }
}

/// Runs a math profile: the base row and every run the results file does
/// not hold yet (interrupted runs resume from their checkpoints), then
/// writes the table.
pub fn reproduce_math(profile: &MathProfile, settings: &RunSettings) -> Result<Outcome> {
    let runs = profile.runs()?;
    let results = settings
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/results/math-{}.jsonl", profile.name)));
    if settings.dry_run {
        let p = profile;
        println!(
            "model {}, backend {}, train {} ({}), eval {}, prompt {:?}",
            p.model,
            p.backend,
            p.train_data.file.display(),
            p.trained_on,
            p.eval_data.file.display(),
            p.prompt
        );
        println!(
            "epochs {}, effective batch {} ({} × {}), max length {}, warm-up {}, cosine schedule, weight decay {}, \
             train subset {:?}, eval subset {:?}, generation ≤ {} tokens (greedy)",
            p.epochs,
            p.micro_batch * p.accumulation,
            p.micro_batch,
            p.accumulation,
            p.max_length,
            p.warmup_ratio,
            p.weight_decay,
            p.train_subset,
            p.eval_subset,
            p.max_new_tokens
        );
        if p.base_row {
            println!("{}", p.base_key());
        }
        for r in &runs {
            println!(
                "{}  (lr {}, targets {})",
                r.key(),
                r.lr,
                r.adapter.targets.patterns().join(",")
            );
        }
        println!("{} runs", runs.len() + usize::from(p.base_row));
        return Ok(Outcome {
            planned: runs.len() + usize::from(p.base_row),
            trained: 0,
            table: None,
        });
    }
    let data_dir = loraxs_data::data_dir(settings.data_dir.as_deref()).map_err(|_| ExperimentError::Profile {
        profile: profile.name.clone(),
        reason: "no data folder: pass --data-dir or set LORAXS_DATA_DIR (it must hold gsm8k/{train,test}.jsonl)"
            .into(),
    })?;
    for data in [&profile.train_data, &profile.eval_data] {
        let path = data_dir.join(&data.file);
        if !path.is_file() {
            return Err(ExperimentError::Profile {
                profile: profile.name.clone(),
                reason: format!(
                    "{} does not exist (the data folder is {})",
                    path.display(),
                    data_dir.display()
                ),
            });
        }
    }
    let backend: BackendKind = settings.backend.as_deref().unwrap_or(&profile.backend).parse()?;
    backend.check()?;
    settings
        .parallel
        .check()
        .map_err(|e| ExperimentError::Backend(e.to_string()))?;
    if settings.jobs > 1 {
        return Err(ExperimentError::Backend(
            "--jobs applies to the GLUE grid; the math table trains one run at a time (use \
             --devices to spread one run over several peers)"
                .into(),
        ));
    }
    let leads = settings.parallel.leads();
    let _lock = if leads {
        Some(crate::run::ResultsLock::take(&results)?)
    } else {
        None
    };
    let model_name = settings.model.clone().unwrap_or_else(|| profile.model.clone());
    let model_path = if Path::new(&model_name).exists() {
        PathBuf::from(&model_name)
    } else {
        loraxs_models::fetch::fetch_model(&model_name)?
    };
    let tokenizer = load_causal_tokenizer(&model_path)?;
    let checkpoints = settings
        .checkpoints
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/loraxs-checkpoints"));
    let done: Vec<String> = read_math_results(&results)?
        .iter()
        .map(|r| r.key().to_string())
        .collect();
    let options = TrainOptions {
        checkpoint_dir: Some(checkpoints),
        resume: true,
        quiet: settings.quiet,
        backend: backend.name().into(),
        model: model_name.clone(),
        git_commit: git_commit(),
        parallel: settings.parallel.clone(),
        ..Default::default()
    };
    fn work<'a>(
        run: Option<&'a CausalRunConfig>,
        profile: &'a MathProfile,
        model_path: &'a Path,
        tokenizer: &'a CausalTokenizer,
        data_dir: &'a Path,
        options: &'a TrainOptions,
    ) -> MathWork<'a> {
        MathWork {
            run,
            profile,
            model_path,
            tokenizer,
            data_dir,
            options,
        }
    }
    let work = |run| work(run, profile, &model_path, &tokenizer, &data_dir, &options);
    let mut trained = 0;
    let total = runs.len() + usize::from(profile.base_row);
    let mut index = 0;
    // The base row is an evaluation: node 0's alone.
    if profile.base_row && leads {
        index += 1;
        let key = profile.base_key();
        if done.contains(&key) {
            eprintln!("[{index}/{total}] {key}: in {}", results.display());
        } else {
            eprintln!("[{index}/{total}] {key}");
            let started = Instant::now();
            let WorkOutput::Base(metrics, eval_examples) =
                backend.run(work(None))?.map_err(|source| ExperimentError::Run {
                    run: key.clone(),
                    source,
                })?
            else {
                unreachable!("the base work evaluates")
            };
            eprintln!(
                "    accuracy {:.4}, answer loss {:.4}",
                metrics["accuracy"], metrics["answer_loss"]
            );
            let record = MathRecord::Base(BaseRecord {
                key,
                eval_examples,
                metrics,
                wall_seconds: started.elapsed().as_secs_f64(),
                backend: backend.name().into(),
                model: model_name.clone(),
                git_commit: options.git_commit.clone(),
            });
            append(&results, &record)?;
            trained += 1;
        }
    }
    for run in &runs {
        index += 1;
        let key = run.key();
        if done.contains(&key) {
            eprintln!("[{index}/{total}] {key}: in {}", results.display());
            continue;
        }
        eprintln!("[{index}/{total}] {key}");
        let out = backend
            .run(work(Some(run)))?
            .map_err(|source| ExperimentError::Run {
                run: key.clone(),
                source,
            })?;
        let WorkOutput::Run(Some(record)) = out else {
            continue;
        };
        eprintln!(
            "    accuracy {:.4}, answer loss {:.4}, {:.0} s",
            record.last.metrics["accuracy"], record.last.metrics["answer_loss"], record.wall_seconds
        );
        append(&results, &MathRecord::Run(record))?;
        trained += 1;
    }
    if !leads {
        return Ok(Outcome {
            planned: total,
            trained,
            table: None,
        });
    }
    let table = write_math_report(profile, &results)?;
    Ok(Outcome {
        planned: total,
        trained,
        table: Some(table),
    })
}

/// Writes `<results stem>.md` from the results file; returns its path.
pub fn write_math_report(profile: &MathProfile, results: &Path) -> Result<PathBuf> {
    let records = read_math_results(results)?;
    let out = results.with_extension("md");
    let text = math_table(profile, &records);
    std::fs::write(&out, text).map_err(|source| ExperimentError::Io {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// The table of a math profile's records (the profile's base row and runs,
/// in profile order; runs without a record are listed as missing).
pub fn math_table(profile: &MathProfile, records: &[MathRecord]) -> String {
    let mut s = format!("# Math, profile `{}`\n\n", profile.name);
    let eval_n = profile.eval_subset.map_or("all".into(), |n| n.to_string());
    s.push_str(&format!(
        "Model `{}`, backend {}. Adapters trained on {}; scored on the first {eval_n} problems of `{}` by greedy \
         generation (≤ {} tokens) and exact match of the number after the final-answer marker (`####`, as the \
         training data writes it; *flexible*: else the text's last number, which credits a model that does not use \
         the marker, such as the base model). Answer loss: mean −log p of the reference solutions' tokens \
         (teacher-forced; lower is better). Prompt: {}.\n\n",
        profile.model,
        profile.backend,
        profile.trained_on,
        profile.eval_data.file.display(),
        profile.max_new_tokens,
        serde_json::to_value(profile.prompt).expect("serialises").as_str().unwrap_or("")
    ));
    s.push_str(
        "| row | trainable values | adapter file | GSM8K accuracy | flexible | answer loss | train examples × epochs | wall |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let flex = |m: &loraxs_train::Metrics| {
        m.get("accuracy_flexible")
            .map_or("–".to_string(), |v| format!("{:.1} %", 100.0 * v))
    };
    let find = |key: &str| records.iter().find(|r| r.key() == key);
    if profile.base_row {
        match find(&profile.base_key()) {
            Some(MathRecord::Base(b)) => s.push_str(&format!(
                "| base model, no adapter | 0 | – | {:.1} % ({} problems) | {} | {:.4} | – | {:.0} s |\n",
                100.0 * b.metrics["accuracy"],
                b.eval_examples,
                flex(&b.metrics),
                b.metrics["answer_loss"],
                b.wall_seconds
            )),
            _ => s.push_str("| base model, no adapter | 0 | – | not run | | | | |\n"),
        }
    }
    let runs = profile.runs().unwrap_or_default();
    for run in &runs {
        let label = format!(
            "{} r={}, lr {:e}, seed {}",
            match run.adapter.preset_name() {
                "lora-xs" => "LoRA-XS",
                "lora" => "LoRA",
                "vera" => "VeRA",
                other => other,
            },
            run.adapter.rank,
            run.lr,
            run.seed
        );
        match find(&run.key()) {
            Some(MathRecord::Run(r)) => s.push_str(&format!(
                "| {label} | {} | {} | {:.1} % ({} problems) | {} | {:.4} | {} × {} | {:.1} min |\n",
                r.trainable_adapter,
                human_bytes(r.adapter_bytes),
                100.0 * r.last.metrics["accuracy"],
                r.eval_examples,
                flex(&r.last.metrics),
                r.last.metrics["answer_loss"],
                r.train_examples,
                run.epochs,
                r.wall_seconds / 60.0
            )),
            _ => s.push_str(&format!("| {label} | | | not run | | | | |\n")),
        }
    }
    s.push_str("\nPer epoch (from the records):\n\n| row | epoch | train loss | accuracy | answer loss | steps |\n|---|---:|---:|---:|---:|---:|\n");
    for run in &runs {
        if let Some(MathRecord::Run(r)) = find(&run.key()) {
            for e in &r.epochs {
                s.push_str(&format!(
                    "| {} r={} lr {:e} s{} | {} | {:.4} | {:.1} % | {:.4} | {} |\n",
                    run.adapter.preset_name(),
                    run.adapter.rank,
                    run.lr,
                    run.seed,
                    e.epoch,
                    e.train_loss,
                    100.0 * e.metrics.get("accuracy").copied().unwrap_or(f64::NAN),
                    e.metrics.get("answer_loss").copied().unwrap_or(f64::NAN),
                    e.step_losses.len()
                ));
            }
        }
    }
    let first = runs.first();
    if let Some(r) = first {
        s.push_str(&format!(
            "\nEvery run: targets {}, epochs {}, effective batch {} ({} × {} accumulated), max length {}, cosine \
             schedule with warm-up {}, weight decay {}, train subset {}, sampler window {}.\n",
            r.adapter.targets.patterns().join(", "),
            r.epochs,
            r.micro_batch * r.accumulation,
            r.micro_batch,
            r.accumulation,
            r.max_length,
            r.warmup_ratio,
            r.weight_decay,
            r.train_subset.map_or("all".into(), |n| n.to_string()),
            r.bucket_window
        ));
    }
    s
}
