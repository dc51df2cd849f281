//! `cargo xtask reproduce glue`: the paper's GLUE table from a profile
//! (data in `xtask/profiles/glue-<name>.json`), restartable, ending with a
//! markdown table in `docs/results/glue-<profile>.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use loraxs::{AdapterConfig, Factors};
use loraxs_data::{GlueTask, Split};
use loraxs_models::ModelDir;
use loraxs_train::{RunConfig, RunRecord, TrainOptions, append_record, read_records, train};
use serde::Deserialize;

use crate::util::project_root;

/// A value per task, with a `default`.
type PerTask<T> = BTreeMap<String, T>;

fn per_task<T: Copy>(map: &PerTask<T>, task: GlueTask, what: &str) -> Result<T, String> {
    map.get(task.name())
        .or_else(|| map.get("default"))
        .copied()
        .ok_or_else(|| format!("profile: `{what}` has neither `{}` nor `default`", task.name()))
}

#[derive(Debug, Clone, Deserialize)]
struct MethodSettings {
    ranks: Vec<usize>,
    alpha: f64,
    lr: PerTask<f64>,
    head_lr: PerTask<f64>,
    /// A grid of adapter rates to search per task (overrides `lr`).
    #[serde(default)]
    lr_grid: PerTask<Vec<f64>>,
    /// A grid of head rates to search per task (overrides `head_lr`).
    #[serde(default)]
    head_lr_grid: PerTask<Vec<f64>>,
}

/// The rates to run for `task`: the grid if the profile has one, else the
/// single value; a command-line value overrides both.
fn rates(
    grid: &PerTask<Vec<f64>>,
    single: &PerTask<f64>,
    task: GlueTask,
    flag: Option<f64>,
    what: &str,
) -> Result<Vec<f64>, String> {
    if let Some(v) = flag {
        return Ok(vec![v]);
    }
    match grid.get(task.name()).or_else(|| grid.get("default")) {
        Some(values) if !values.is_empty() => Ok(values.clone()),
        _ => Ok(vec![per_task(single, task, what)?]),
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Profile {
    model: String,
    backend: String,
    tasks: Vec<String>,
    methods: Vec<String>,
    seeds: Vec<u64>,
    batch_size: usize,
    max_length: usize,
    eval_subset: PerTask<Option<usize>>,
    train_subset: PerTask<Option<usize>>,
    epochs: PerTask<usize>,
    #[serde(default)]
    max_steps_per_epoch: Option<usize>,
    /// Tasks whose adapter starts from the MNLI run of the same method, rank
    /// and seed (the paper: MRPC, RTE, STS-B), when MNLI is in the plan.
    #[serde(default)]
    init_from_mnli: Vec<String>,
    method_settings: BTreeMap<String, MethodSettings>,
}

/// Command-line overrides of a profile.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReproduceArgs {
    /// Profile: `quick` (default), `paper`, `smoke`, or a path to a JSON file.
    #[arg(long, default_value = "quick")]
    pub profile: String,
    /// Tasks, comma-separated (e.g. `sst2,rte`).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<String>>,
    /// Methods: `lora-xs`, `lora`, `full`, `lora-xs-random` (the no-SVD ablation).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// Ranks (for every method that has one).
    #[arg(long, value_delimiter = ',')]
    pub ranks: Option<Vec<usize>>,
    /// Seeds.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Adapter learning rate for every task.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Head learning rate for every task.
    #[arg(long)]
    pub head_lr: Option<f64>,
    /// Epochs for every task.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training subset size for every task (0: the whole training set).
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Backend: `flex`, `ndarray` or `cuda` (needs `--features cuda`).
    #[arg(long)]
    pub backend: Option<String>,
    /// Model: `minilm`, a fetched name, or a folder path.
    #[arg(long)]
    pub model: Option<String>,
    /// GLUE data folder (default: $LORAXS_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Results file (JSON lines; default docs/results/glue-<profile>.jsonl).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Checkpoint folder (default target/loraxs-checkpoints).
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Print the planned runs and exit.
    #[arg(long)]
    pub dry_run: bool,
}

fn load_profile(name: &str) -> Result<(String, Profile), String> {
    let path = if name.ends_with(".json") {
        PathBuf::from(name)
    } else {
        project_root()
            .join("xtask/profiles")
            .join(format!("glue-{name}.json"))
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("profile {}: {e}", path.display()))?;
    let profile = serde_json::from_str(&text).map_err(|e| format!("profile {}: {e}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("custom")
        .trim_start_matches("glue-")
        .to_string();
    Ok((stem, profile))
}

fn model_dir(name: &str) -> Result<(String, ModelDir), String> {
    let path = Path::new(name);
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        crate::fetch::fetch_model(name)?
    };
    let dir = ModelDir::new(&dir).map_err(|e| e.to_string())?;
    Ok((name.to_string(), dir))
}

fn adapter(method: &str, rank: usize, alpha: f64, seed: u64) -> Result<AdapterConfig, String> {
    let config = match method {
        "lora-xs" => AdapterConfig::lora_xs(rank),
        "lora-xs-random" => AdapterConfig::lora_xs(rank).with_factors(Factors::Random),
        "lora" => AdapterConfig::lora(rank),
        "vera" => AdapterConfig::vera(rank),
        "full" => AdapterConfig::full(),
        other => {
            return Err(format!(
                "unknown method `{other}`: lora-xs, lora-xs-random, lora, vera, full"
            ));
        }
    };
    Ok(config.with_alpha(alpha).with_seed(seed))
}

/// The runs a profile (with overrides) asks for, in order (MNLI first, so
/// that tasks starting from an MNLI adapter find it).
fn plan(
    profile: &Profile,
    args: &ReproduceArgs,
    data_dir: &Path,
    checkpoints: &Path,
) -> Result<(Vec<RunConfig>, Vec<String>), String> {
    let mut tasks = Vec::new();
    for name in args.tasks.clone().unwrap_or_else(|| profile.tasks.clone()) {
        tasks.push(GlueTask::parse(&name).ok_or_else(|| format!("unknown task `{name}`"))?);
    }
    tasks.sort_by_key(|&t| t != GlueTask::Mnli);
    let methods = args.methods.clone().unwrap_or_else(|| profile.methods.clone());
    let seeds = args.seeds.clone().unwrap_or_else(|| profile.seeds.clone());
    let mut runs: Vec<RunConfig> = Vec::new();
    let mut notes = Vec::new();
    for task in tasks {
        let missing: Vec<String> = [Split::Train]
            .iter()
            .chain(task.dev_splits())
            .filter(|&&s| !task.has(data_dir, s))
            .map(|&s| task.path(data_dir, s).display().to_string())
            .collect();
        if !missing.is_empty() {
            notes.push(format!("{task}: skipped, missing {}", missing.join(", ")));
            continue;
        }
        let from_mnli = profile
            .init_from_mnli
            .iter()
            .any(|t| GlueTask::parse(t) == Some(task));
        for method in &methods {
            let settings = profile
                .method_settings
                .get(method)
                .ok_or_else(|| format!("profile has no settings for method `{method}`"))?;
            let ranks = if method == "full" {
                vec![0]
            } else {
                args.ranks.clone().unwrap_or_else(|| settings.ranks.clone())
            };
            let lrs = rates(&settings.lr_grid, &settings.lr, task, args.lr, "lr")?;
            let head_lrs = rates(
                &settings.head_lr_grid,
                &settings.head_lr,
                task,
                args.head_lr,
                "head_lr",
            )?;
            for &rank in &ranks {
                for &seed in &seeds {
                    for &lr in &lrs {
                        for &head_lr in &head_lrs {
                            let epochs = args
                                .epochs
                                .map_or_else(|| per_task(&profile.epochs, task, "epochs"), Ok)?;
                            let adapter = adapter(method, rank, settings.alpha, seed)?;
                            let mut run = RunConfig::new(task, adapter, lr, head_lr, epochs);
                            run.seed = seed;
                            run.batch_size = profile.batch_size;
                            run.max_length = profile.max_length;
                            run.train_subset = match args.train_subset {
                                Some(0) => None,
                                Some(n) => Some(n),
                                None => per_task(&profile.train_subset, task, "train_subset")?,
                            };
                            run.eval_subset = per_task(&profile.eval_subset, task, "eval_subset")?;
                            run.max_steps_per_epoch = profile.max_steps_per_epoch;
                            if from_mnli {
                                // The first MNLI run of this method, rank and seed.
                                let mnli = runs.iter().find(|r| {
                                    r.task == GlueTask::Mnli
                                        && r.adapter.method == run.adapter.method
                                        && r.adapter.factors == run.adapter.factors
                                        && r.adapter.rank == rank
                                        && r.seed == seed
                                });
                                match mnli {
                                    Some(m) => run.init_from = Some(checkpoints.join(m.key()).join("adapter.safetensors")),
                                    None => notes.push(format!(
                                        "{task} {method} r={rank} seed {seed}: starts from scratch (no MNLI run to start from)"
                                    )),
                                }
                            }
                            runs.push(run);
                        }
                    }
                }
            }
        }
    }
    Ok((runs, notes))
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(project_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `cargo xtask reproduce glue`.
pub fn reproduce_glue(args: &ReproduceArgs) -> Result<(), String> {
    let (profile_name, profile) = load_profile(&args.profile)?;
    // No data folder given: fetch GLUE into the cache (fails fast offline).
    let data_dir = match loraxs_data::data_dir(args.data_dir.as_deref()) {
        Ok(dir) => dir,
        Err(_) => crate::fetch::fetch_glue()?,
    };
    if !data_dir.join("glue").is_dir() {
        return Err(format!(
            "{}: no glue/ folder. Point --data-dir or LORAXS_DATA_DIR at the GLUE data (here: ../shared/datasets), \
             or run `cargo xtask fetch glue` on a machine with internet access.",
            data_dir.display()
        ));
    }
    let backend = args.backend.clone().unwrap_or_else(|| profile.backend.clone());
    let results = args
        .results
        .clone()
        .unwrap_or_else(|| project_root().join(format!("docs/results/glue-{profile_name}.jsonl")));
    let checkpoints = args
        .checkpoints
        .clone()
        .unwrap_or_else(|| project_root().join("target/loraxs-checkpoints"));
    let (runs, notes) = plan(&profile, args, &data_dir, &checkpoints)?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    if args.dry_run {
        for run in &runs {
            let from = run
                .init_from
                .as_ref()
                .map_or(String::new(), |p| format!("  (from {})", p.display()));
            println!("{}{from}", run.key());
        }
        println!("{} runs", runs.len());
        return Ok(());
    }
    let (model_name, model) = model_dir(args.model.as_deref().unwrap_or(&profile.model))?;
    let done: Vec<String> = read_records(&results)?.into_iter().map(|r| r.key).collect();
    let todo: Vec<&RunConfig> = runs.iter().filter(|r| !done.contains(&r.key())).collect();
    eprintln!(
        "glue/{profile_name}: {} runs ({} already in {}), backend {backend}, model {model_name}",
        runs.len(),
        runs.len() - todo.len(),
        results.display()
    );
    let options = TrainOptions {
        checkpoint_dir: Some(checkpoints),
        resume: true,
        quiet: args.quiet,
        backend: backend.clone(),
        model: model_name.clone(),
        git_commit: git_commit(),
        stop_after_epochs: None,
    };
    let started = Instant::now();
    for (i, run) in todo.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, todo.len(), run.key());
        let record = match backend.as_str() {
            "flex" => train::<Autodiff<Flex>>(run, &model, &data_dir, &Default::default(), &options),
            "ndarray" => {
                train::<Autodiff<NdArray<f32>>>(run, &model, &data_dir, &Default::default(), &options)
            }
            "cuda" => train_cuda(run, &model, &data_dir, &options),
            other => return Err(format!("unknown backend `{other}`: flex, ndarray or cuda")),
        }
        .map_err(|e| format!("{}: {e}", run.key()))?
        .expect("runs are not stopped early here");
        eprintln!(
            "    best {} = {:.4} (epoch {}), {:.0} s",
            record.metric, record.best.metrics[&record.metric], record.best.epoch, record.wall_seconds
        );
        append_record(&results, &record).map_err(|e| format!("{}: {e}", results.display()))?;
    }
    eprintln!(
        "trained {} runs in {:.1} min",
        todo.len(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let keys: Vec<String> = runs.iter().map(RunConfig::key).collect();
    let records: Vec<RunRecord> = read_records(&results)?
        .into_iter()
        .filter(|r| keys.contains(&r.key))
        .collect();
    let table = crate::report::glue_table(&profile_name, &records, &notes);
    let out = results.with_extension("md");
    std::fs::write(&out, table).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

#[cfg(feature = "cuda")]
fn train_cuda(
    run: &RunConfig,
    model: &ModelDir,
    data_dir: &Path,
    options: &TrainOptions,
) -> Result<Option<RunRecord>, loraxs_train::TrainError> {
    train::<Autodiff<burn::backend::Cuda>>(run, model, data_dir, &Default::default(), options)
}

#[cfg(not(feature = "cuda"))]
fn train_cuda(
    _: &RunConfig,
    _: &ModelDir,
    _: &Path,
    _: &TrainOptions,
) -> Result<Option<RunRecord>, loraxs_train::TrainError> {
    eprintln!(
        "error: the cuda backend is not compiled in; run \
         `cargo run --release -p xtask --features cuda -- reproduce glue --backend cuda`"
    );
    std::process::exit(2)
}
