//! Running a reproduction: plan, skip what the results file already
//! holds, resume interrupted runs from their checkpoints, train the rest,
//! append a record per run, and derive the table from the records.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use loraxs_models::ModelDir;
use loraxs_train::{RunConfig, RunRecord, TrainError, TrainOptions, train};

use crate::backend::{BackendKind, OnBackend};
use crate::figures::{draw_glue_figures, figure_paths};
use crate::plan::{Overrides, plan};
use crate::profile::Profile;
use crate::results::Results;
use crate::table::glue_table;
use crate::{ExperimentError, Result};

/// Where a reproduction reads and writes, and how it reports.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// Backend (default: the profile's).
    pub backend: Option<String>,
    /// Model name or folder (default: the profile's).
    pub model: Option<String>,
    /// GLUE data folder (default: `$LORAXS_DATA_DIR`, else GLUE is fetched
    /// into the cache).
    pub data_dir: Option<PathBuf>,
    /// Results file (default `docs/results/glue-<profile>.jsonl`).
    pub results: Option<PathBuf>,
    /// Checkpoint folder (default `target/loraxs-checkpoints`).
    pub checkpoints: Option<PathBuf>,
    /// No progress bars.
    pub quiet: bool,
    /// Print the planned runs and stop.
    pub dry_run: bool,
    /// `report` only: tabulate every record of the results file, not only
    /// the profile's planned runs (for studies run with command-line
    /// overrides).
    pub all_records: bool,
}

/// What a reproduction did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Runs planned.
    pub planned: usize,
    /// Runs trained by this call.
    pub trained: usize,
    /// The table, when written (not for a dry run).
    pub table: Option<PathBuf>,
}

struct TrainRun<'a> {
    run: &'a RunConfig,
    model: &'a ModelDir,
    data_dir: &'a Path,
    options: &'a TrainOptions,
}

impl OnBackend for TrainRun<'_> {
    type Output = Result<Option<RunRecord>, TrainError>;

    fn run<B: loraxs_models::KernelBackend>(self) -> Self::Output {
        train::<Autodiff<B>>(
            self.run,
            self.model,
            self.data_dir,
            &Default::default(),
            self.options,
        )
    }
}

/// The commit this binary was built from (embedded by `build.rs`), for
/// records: a copied binary started later still names its own code.
pub(crate) fn git_commit() -> String {
    env!("LORAXS_BUILD_COMMIT").to_string()
}

/// Runs `profile` with `overrides`: `cargo xtask reproduce glue`.
pub fn reproduce_glue(profile: &Profile, overrides: &Overrides, settings: &RunSettings) -> Result<Outcome> {
    let data_dir = match loraxs_data::data_dir(settings.data_dir.as_deref()) {
        Ok(dir) => dir,
        Err(_) => loraxs_models::fetch::fetch_glue()?,
    };
    if !data_dir.join("glue").is_dir() {
        return Err(ExperimentError::Profile {
            profile: profile.name.clone(),
            reason: format!(
                "{}: no glue/ folder. Point --data-dir or LORAXS_DATA_DIR at the GLUE data, or run \
                 `cargo xtask fetch glue` on a machine with internet access.",
                data_dir.display()
            ),
        });
    }
    let backend: BackendKind = settings.backend.as_deref().unwrap_or(&profile.backend).parse()?;
    let results_path = settings
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/results/glue-{}.jsonl", profile.name)));
    let checkpoints = settings
        .checkpoints
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/loraxs-checkpoints"));
    let plan = plan(profile, overrides, &data_dir, &checkpoints)?;
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    if settings.dry_run {
        for run in &plan.runs {
            let from = run
                .init_from
                .as_ref()
                .map_or(String::new(), |p| format!("  (from {})", p.display()));
            println!("{}{from}", run.key());
        }
        println!("{} runs", plan.runs.len());
        return Ok(Outcome {
            planned: plan.runs.len(),
            trained: 0,
            table: None,
        });
    }
    backend.check()?;
    let model_name = settings.model.clone().unwrap_or_else(|| profile.model.clone());
    let model = ModelDir::new(loraxs_models::fetch::resolve_model(&model_name)?)?;
    let mut results = Results::open(&results_path)?;
    if let Some(tail) = &results.torn_tail {
        eprintln!(
            "note: {}: the last line was cut short (a run killed while its record was written); \
             it is dropped and that run trains again: {:.80}…",
            results_path.display(),
            tail
        );
    }
    let todo: Vec<&RunConfig> = plan.runs.iter().filter(|r| !results.has(&r.key())).collect();
    eprintln!(
        "glue/{}: {} runs ({} already in {}), backend {backend}, model {model_name}",
        profile.name,
        plan.runs.len(),
        plan.runs.len() - todo.len(),
        results_path.display()
    );
    let options = TrainOptions {
        checkpoint_dir: Some(checkpoints),
        resume: true,
        quiet: settings.quiet,
        backend: backend.name().to_string(),
        model: model_name.clone(),
        git_commit: git_commit(),
        stop_after_epochs: None,
        on_step: None,
    };
    let started = Instant::now();
    for (i, run) in todo.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, todo.len(), run.key());
        let work = TrainRun {
            run,
            model: &model,
            data_dir: &data_dir,
            options: &options,
        };
        let record = backend
            .run(work)?
            .map_err(|source| ExperimentError::Run {
                run: run.key(),
                source,
            })?
            .expect("runs are not stopped early here");
        eprintln!(
            "    best {} = {:.4} (epoch {}), {:.0} s",
            record.metric, record.best.metrics[&record.metric], record.best.epoch, record.wall_seconds
        );
        results.append(record)?;
    }
    eprintln!(
        "trained {} runs in {:.1} min",
        todo.len(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let records = results.of(&plan.keys());
    let out = write_report(&profile.name, &records, &plan.notes, &results_path)?;
    eprintln!("wrote {} and its figures", out.display());
    Ok(Outcome {
        planned: plan.runs.len(),
        trained: todo.len(),
        table: Some(out),
    })
}

/// Rewrites the table of `profile` from its results file alone
/// (`cargo xtask report glue`).
pub fn report_glue(profile: &Profile, overrides: &Overrides, settings: &RunSettings) -> Result<PathBuf> {
    let results_path = settings
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/results/glue-{}.jsonl", profile.name)));
    let results = Results::open(&results_path)?;
    // The plan decides which records belong to the table; data that is
    // missing here only drops tasks from the plan, so plan without the
    // data-file check when no data folder is known.
    let data_dir = loraxs_data::data_dir(settings.data_dir.as_deref()).ok();
    let checkpoints = PathBuf::from("target/loraxs-checkpoints");
    let (keys, notes) = match &data_dir {
        _ if settings.all_records => (
            results.records.iter().map(|r| r.key.clone()).collect(),
            Vec::new(),
        ),
        Some(dir) => {
            let plan = plan(profile, overrides, dir, &checkpoints)?;
            (plan.keys(), plan.notes)
        }
        None => (
            results.records.iter().map(|r| r.key.clone()).collect(),
            Vec::new(),
        ),
    };
    write_report(&profile.name, &results.of(&keys), &notes, &results_path)
}

/// Writes the table (`<results>.md`) and its three figures
/// (`<results stem>-{params,loss,dev}.svg`, linked from the table) of
/// `records`; returns the table's path.
pub fn write_report(
    profile: &str,
    records: &[RunRecord],
    notes: &[String],
    results_path: &Path,
) -> Result<PathBuf> {
    let figures = figure_paths(results_path);
    let mut table = glue_table(profile, records, notes);
    if !records.is_empty() {
        draw_glue_figures(profile, records, &figures)?;
        let name = |p: &PathBuf| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        };
        table.push_str(&format!(
            "\nFigures: [dev metric against trainable values]({}), [training loss per step]({}), \
             [dev metric per epoch]({}).\n",
            name(&figures[0]),
            name(&figures[1]),
            name(&figures[2])
        ));
    }
    let out = results_path.with_extension("md");
    std::fs::write(&out, table).map_err(|source| ExperimentError::Io {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}
