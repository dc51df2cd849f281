//! From a profile (and command-line overrides) to the list of runs.

use std::path::{Path, PathBuf};

use loraxs::AdapterConfig;
use loraxs_data::{GlueTask, Split};
use loraxs_train::RunConfig;

use crate::Result;
use crate::profile::{PerTask, Profile};

/// Command-line values that replace a profile's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Tasks.
    pub tasks: Option<Vec<String>>,
    /// Method presets (`lora-xs`, `lora-xs-random`, `lora`, `vera`, `full`).
    pub methods: Option<Vec<String>>,
    /// Ranks, for every method that has one.
    pub ranks: Option<Vec<usize>>,
    /// Seeds.
    pub seeds: Option<Vec<u64>>,
    /// Adapter learning rate for every task (replaces grids too).
    pub lr: Option<f64>,
    /// Head learning rate for every task (replaces grids too).
    pub head_lr: Option<f64>,
    /// Epochs for every task.
    pub epochs: Option<usize>,
    /// Training subset for every task; `Some(0)`: the whole training set.
    pub train_subset: Option<usize>,
    /// Sampler window in batches (`1`: random batches).
    pub bucket_window: Option<usize>,
    /// Encoder dropout for every run.
    pub encoder_dropout: Option<f64>,
    /// Head dropout for every run.
    pub head_dropout: Option<f64>,
}

impl Overrides {
    /// These overrides without the ones that select a part of the profile
    /// (tasks, methods, ranks, seeds): the recipe they change stays. A
    /// reproduction run in pieces (`--tasks cola --seeds 2`) tabulates the
    /// plan of these, so that each piece rewrites the whole profile's table
    /// from the records, not a table of the piece alone.
    pub fn recipe_only(&self) -> Overrides {
        Overrides {
            tasks: None,
            methods: None,
            ranks: None,
            seeds: None,
            ..self.clone()
        }
    }
}

/// The runs of a reproduction, in the order they run, and notes on what
/// was left out or changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The runs (MNLI first, so that tasks starting from an MNLI adapter
    /// find it).
    pub runs: Vec<RunConfig>,
    /// One line per skipped task or run started from scratch instead of
    /// from MNLI.
    pub notes: Vec<String>,
}

impl Plan {
    /// The keys of every planned run.
    pub fn keys(&self) -> Vec<String> {
        self.runs.iter().map(RunConfig::key).collect()
    }
}

/// The rates to run for `task`: the grid if the profile has one, else the
/// single value; a command-line value overrides both.
fn rates(
    profile: &Profile,
    grid: &PerTask<Vec<f64>>,
    single: &PerTask<f64>,
    task: GlueTask,
    flag: Option<f64>,
    what: &str,
) -> Result<Vec<f64>> {
    if let Some(v) = flag {
        return Ok(vec![v]);
    }
    match grid.get(task.name()).or_else(|| grid.get("default")) {
        Some(values) if !values.is_empty() => Ok(values.clone()),
        _ => Ok(vec![profile.per_task(single, task, what)?]),
    }
}

/// Plans the runs of `profile` with `overrides`. Tasks whose files are
/// missing from `data_dir` are skipped with a note; `checkpoints` is where
/// runs starting from an MNLI adapter find it.
pub fn plan(profile: &Profile, overrides: &Overrides, data_dir: &Path, checkpoints: &Path) -> Result<Plan> {
    plan_with(profile, overrides, Some(data_dir), checkpoints)
}

/// [`plan`] without looking for data files when `data_dir` is `None` (every
/// task is planned): what a table of existing records needs.
pub fn plan_with(
    profile: &Profile,
    overrides: &Overrides,
    data_dir: Option<&Path>,
    checkpoints: &Path,
) -> Result<Plan> {
    let mut tasks = Vec::new();
    for name in overrides.tasks.as_ref().unwrap_or(&profile.tasks) {
        tasks.push(GlueTask::parse(name).ok_or_else(|| {
            profile.error(format!(
                "unknown task `{name}`: expected one of {}",
                GlueTask::ALL.map(GlueTask::name).join(", ")
            ))
        })?);
    }
    tasks.sort_by_key(|&t| t != GlueTask::Mnli);
    let methods = overrides.methods.as_ref().unwrap_or(&profile.methods);
    let seeds = overrides.seeds.as_ref().unwrap_or(&profile.seeds);
    let mut runs: Vec<RunConfig> = Vec::new();
    let mut notes = Vec::new();
    for task in tasks {
        let missing: Vec<String> = match data_dir {
            None => Vec::new(),
            Some(dir) => [Split::Train]
                .iter()
                .chain(task.dev_splits())
                .filter(|&&s| !task.has(dir, s))
                .map(|&s| task.path(dir, s).display().to_string())
                .collect(),
        };
        if !missing.is_empty() {
            notes.push(format!("{task}: skipped, missing {}", missing.join(", ")));
            continue;
        }
        let from_mnli = profile
            .init_from_mnli
            .iter()
            .any(|t| GlueTask::parse(t) == Some(task));
        let epochs = match overrides.epochs {
            Some(e) => e,
            None => profile.per_task(&profile.epochs, task, "epochs")?,
        };
        let train_subset = match overrides.train_subset {
            Some(0) => None,
            Some(n) => Some(n),
            None => profile.per_task(&profile.train_subset, task, "train_subset")?,
        };
        let eval_subset = profile.per_task(&profile.eval_subset, task, "eval_subset")?;
        for method in methods {
            let settings = profile
                .method_settings
                .get(method)
                .ok_or_else(|| profile.error(format!("no `method_settings` for method `{method}`")))?;
            // Checks the name before any run is planned.
            let has_rank = AdapterConfig::preset(method, 1)?.method.spec().has_rank();
            let ranks = match (&overrides.ranks, has_rank) {
                (_, false) => vec![0],
                (Some(r), true) => r.clone(),
                (None, true) => settings.ranks.clone(),
            };
            let lrs = rates(profile, &settings.lr_grid, &settings.lr, task, overrides.lr, "lr")?;
            let head_lrs = rates(
                profile,
                &settings.head_lr_grid,
                &settings.head_lr,
                task,
                overrides.head_lr,
                "head_lr",
            )?;
            for &rank in &ranks {
                for &seed in seeds {
                    let mnli = from_mnli
                        .then(|| mnli_adapter(&runs, method, rank, seed, checkpoints))
                        .flatten();
                    if from_mnli && mnli.is_none() {
                        notes.push(format!(
                            "{task} {method} r={rank} seed {seed}: starts from scratch (no MNLI run to start from)"
                        ));
                    }
                    for &lr in &lrs {
                        for &head_lr in &head_lrs {
                            let adapter = AdapterConfig::preset(method, rank)?
                                .with_alpha(settings.alpha)
                                .with_seed(seed);
                            let mut run = RunConfig::new(task, adapter, lr, head_lr, epochs);
                            run.seed = seed;
                            run.batch_size = profile.batch_size;
                            run.max_length = profile.max_length;
                            run.train_subset = train_subset;
                            run.eval_subset = eval_subset;
                            run.max_steps_per_epoch = profile.max_steps_per_epoch;
                            run.init_from = mnli.clone();
                            if let Some(w) = overrides.bucket_window.or(profile.bucket_window) {
                                run.bucket_window = w;
                            }
                            run.encoder_dropout = overrides.encoder_dropout.or(profile.encoder_dropout);
                            run.head_dropout = overrides.head_dropout.or(profile.head_dropout);
                            runs.push(run);
                        }
                    }
                }
            }
        }
    }
    Ok(Plan { runs, notes })
}

/// The adapter file of the first planned MNLI run of this method preset,
/// rank and seed.
fn mnli_adapter(
    runs: &[RunConfig],
    method: &str,
    rank: usize,
    seed: u64,
    checkpoints: &Path,
) -> Option<PathBuf> {
    runs.iter()
        .find(|r| {
            r.task == GlueTask::Mnli
                && r.adapter.preset_name() == method
                && r.adapter.rank == rank
                && r.seed == seed
        })
        .map(|m| checkpoints.join(m.key()).join("adapter.safetensors"))
}
