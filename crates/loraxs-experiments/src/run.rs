//! Running a reproduction: plan, skip what the results file already
//! holds, resume interrupted runs from their checkpoints, train the rest,
//! append a record per run, and derive the table from the records.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use loraxs_models::ModelDir;
use loraxs_train::{DataParallel, RunConfig, RunRecord, TrainError, TrainOptions, peer_devices, train};

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
    /// Data-parallel peers of each run (`--devices`, and `--nodes` with
    /// their addresses for several processes).
    pub parallel: DataParallel,
    /// GLUE: runs of the grid trained at once (`--jobs`; 0 and 1: one at a
    /// time), each in its own process with its share of the CPU threads
    /// (or its own GPU).
    pub jobs: usize,
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
    /// The device: its index among the backend's devices (a GPU; the CPU
    /// backends have one).
    device: usize,
}

impl OnBackend for TrainRun<'_> {
    type Output = Result<Option<RunRecord>, TrainError>;

    fn run<B: loraxs_models::KernelBackend>(self) -> Self::Output {
        let device = peer_devices::<B>(&Default::default(), self.device + 1)
            .pop()
            .expect("one device at least");
        train::<Autodiff<B>>(self.run, self.model, self.data_dir, &device, self.options)
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
    // The table is the profile's, whatever part of it this call trains:
    // the runs of the selection-free plan, then any of this call's that it
    // lacks.
    let mut table_keys =
        crate::plan::plan(profile, &overrides.recipe_only(), &data_dir, &checkpoints)?.keys();
    for key in plan.keys() {
        if !table_keys.contains(&key) {
            table_keys.push(key);
        }
    }
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
    settings
        .parallel
        .check()
        .map_err(|e| ExperimentError::Backend(e.to_string()))?;
    if settings.jobs > 1 && settings.parallel.peers() > 1 {
        return Err(ExperimentError::Backend(
            "--jobs runs several runs at once, --devices/--nodes one run over several peers: \
             choose one"
                .into(),
        ));
    }
    let model_name = settings.model.clone().unwrap_or_else(|| profile.model.clone());
    let model = ModelDir::new(loraxs_models::fetch::resolve_model(&model_name)?)?;
    // Node 0 alone writes the results (every node reads them, to plan).
    let _lock = if settings.parallel.leads() {
        Some(ResultsLock::take(&results_path)?)
    } else {
        None
    };
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
    let started = Instant::now();
    if settings.jobs > 1 {
        let grid = Grid {
            backend,
            model: &model_name,
            data_dir: &data_dir,
            checkpoints: &checkpoints,
            jobs: settings.jobs,
        };
        grid.run(&todo, &mut results)?;
    } else {
        let options = TrainOptions {
            checkpoint_dir: Some(checkpoints),
            resume: true,
            quiet: settings.quiet,
            backend: backend.name().to_string(),
            model: model_name.clone(),
            git_commit: git_commit(),
            stop_after_epochs: None,
            on_step: None,
            parallel: settings.parallel.clone(),
        };
        for (i, run) in todo.iter().enumerate() {
            eprintln!("[{}/{}] {}", i + 1, todo.len(), run.key());
            let work = TrainRun {
                run,
                model: &model,
                data_dir: &data_dir,
                options: &options,
                device: 0,
            };
            let record = backend.run(work)?.map_err(|source| ExperimentError::Run {
                run: run.key(),
                source,
            })?;
            let Some(record) = record else {
                eprintln!("    done here; node 0 writes the record");
                continue;
            };
            report_run(&record);
            results.append(record)?;
        }
    }
    if !settings.parallel.leads() {
        return Ok(Outcome {
            planned: plan.runs.len(),
            trained: todo.len(),
            table: None,
        });
    }
    eprintln!(
        "trained {} runs in {:.1} min",
        todo.len(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let records = results.of(&table_keys);
    let out = write_report(&profile.name, &records, &plan.notes, &results_path)?;
    eprintln!("wrote {} and its figures", out.display());
    Ok(Outcome {
        planned: plan.runs.len(),
        trained: todo.len(),
        table: Some(out),
    })
}

fn report_run(record: &RunRecord) {
    eprintln!(
        "    best {} = {:.4} (epoch {}), {:.0} s",
        record.metric, record.best.metrics[&record.metric], record.best.epoch, record.wall_seconds
    );
}

/// Trains one run and writes its record to `record` (JSON): the work of
/// one process of a grid run with `--jobs` (`loraxs-experiments
/// train-run`), on device `device` of `backend`.
#[allow(clippy::too_many_arguments)]
pub fn train_one(
    run: &RunConfig,
    backend: BackendKind,
    model_name: &str,
    data_dir: &Path,
    checkpoints: &Path,
    device: usize,
    quiet: bool,
    record: &Path,
) -> Result<()> {
    backend.check()?;
    let model = ModelDir::new(loraxs_models::fetch::resolve_model(model_name)?)?;
    let options = TrainOptions {
        checkpoint_dir: Some(checkpoints.to_path_buf()),
        resume: true,
        quiet,
        backend: backend.name().to_string(),
        model: model_name.to_string(),
        git_commit: git_commit(),
        ..Default::default()
    };
    let work = TrainRun {
        run,
        model: &model,
        data_dir,
        options: &options,
        device,
    };
    let out = backend
        .run(work)?
        .map_err(|source| ExperimentError::Run {
            run: run.key(),
            source,
        })?
        .expect("runs are not stopped early here");
    let io = |source| ExperimentError::Io {
        path: record.to_path_buf(),
        source,
    };
    let tmp = record.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string(&out).expect("records serialise")).map_err(io)?;
    std::fs::rename(&tmp, record).map_err(io)
}

/// A grid's runs trained `jobs` at a time, each in a child process
/// (`train-run`) so that each has its own random generators, thread pool
/// and allocator: a run's result does not depend on what runs beside it.
/// Each child gets `cores / jobs` threads (`RAYON_NUM_THREADS`) and device
/// index `slot` (its own GPU on CUDA). Only this process appends to the
/// results file, as each child finishes; a failed run is reported at the
/// end and the others go on. Interrupted, every run resumes from its
/// checkpoint next time.
struct Grid<'a> {
    backend: BackendKind,
    model: &'a str,
    data_dir: &'a Path,
    checkpoints: &'a Path,
    jobs: usize,
}

impl Grid<'_> {
    fn run(&self, todo: &[&RunConfig], results: &mut Results) -> Result<()> {
        let exe = std::env::current_exe().map_err(|source| ExperimentError::Io {
            path: PathBuf::from("current executable"),
            source,
        })?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (cores / self.jobs).max(1);
        eprintln!(
            "{} runs, {} at a time, {threads} thread(s) each",
            todo.len(),
            self.jobs
        );
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ExperimentError::Io { path, source }
        };
        let mut queue = todo.iter().enumerate();
        let mut running: Vec<(usize, String, PathBuf, std::process::Child)> = Vec::new();
        let mut failed = Vec::new();
        loop {
            while running.len() < self.jobs {
                let Some((i, run)) = queue.next() else { break };
                let slot = (0..self.jobs)
                    .find(|s| running.iter().all(|r| r.0 != *s))
                    .expect("a free slot");
                let dir = self.checkpoints.join(run.key());
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let run_file = dir.join("run.json");
                std::fs::write(&run_file, serde_json::to_string(run).expect("configs serialise"))
                    .map_err(io(&run_file))?;
                let record = dir.join("record.json");
                let _ = std::fs::remove_file(&record);
                eprintln!("[{}/{}] {} (job {slot})", i + 1, todo.len(), run.key());
                let child = std::process::Command::new(&exe)
                    .arg("train-run")
                    .arg("--run")
                    .arg(&run_file)
                    .arg("--record")
                    .arg(&record)
                    .args(["--backend", self.backend.name(), "--model", self.model])
                    .arg("--data-dir")
                    .arg(self.data_dir)
                    .arg("--checkpoints")
                    .arg(self.checkpoints)
                    .args(["--device", &slot.to_string(), "--quiet"])
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .spawn()
                    .map_err(io(&exe))?;
                running.push((slot, run.key(), record, child));
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut i = 0;
            while i < running.len() {
                let status = running[i].3.try_wait().map_err(io(&exe))?;
                let Some(status) = status else {
                    i += 1;
                    continue;
                };
                let (_, key, record, _) = running.swap_remove(i);
                if !status.success() {
                    eprintln!("    {key}: failed ({status}); its checkpoint stays for the next attempt");
                    failed.push(key);
                    continue;
                }
                let text = std::fs::read_to_string(&record).map_err(io(&record))?;
                let out: RunRecord = serde_json::from_str(&text).map_err(|e| ExperimentError::Results {
                    path: record.clone(),
                    reason: e.to_string(),
                })?;
                eprintln!("    {key}:");
                report_run(&out);
                results.append(out)?;
                let _ = std::fs::remove_file(&record);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ExperimentError::Backend(format!(
                "{} run(s) failed (their errors are above): {}",
                failed.len(),
                failed.join(", ")
            )))
        }
    }
}

/// An exclusive lock on a results file (`<file>.lock`, held until
/// dropped): two `reproduce` processes never append to one file.
pub struct ResultsLock {
    _file: std::fs::File,
}

impl ResultsLock {
    /// Takes the lock of `results`, or says who holds it.
    pub fn take(results: &Path) -> Result<Self> {
        let path = PathBuf::from(format!("{}.lock", results.display()));
        let io = |source| ExperimentError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(ExperimentError::Results {
                path: results.to_path_buf(),
                reason: format!(
                    "another process is writing this results file (it holds {}): wait for it, or \
                     give this one another --results",
                    path.display()
                ),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
        }
    }
}

/// Rewrites the table of `profile` from its results file alone
/// (`cargo xtask report glue`).
pub fn report_glue(profile: &Profile, overrides: &Overrides, settings: &RunSettings) -> Result<PathBuf> {
    let results_path = settings
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/results/glue-{}.jsonl", profile.name)));
    let results = Results::open(&results_path)?;
    // The plan decides which records belong to the table, whether or not
    // the data is on this machine (without the data-file check: a table of
    // records needs no data). `--all` takes every record instead.
    let checkpoints = PathBuf::from("target/loraxs-checkpoints");
    let (keys, notes) = if settings.all_records {
        (
            results.records.iter().map(|r| r.key.clone()).collect(),
            Vec::new(),
        )
    } else {
        let plan = crate::plan::plan_with(profile, overrides, None, &checkpoints)?;
        (plan.keys(), plan.notes)
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
