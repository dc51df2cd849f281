//! The `loraxs-bench` runner (`cargo xtask bench`): whole-model workloads
//! on loraxs and on the PyTorch reference, interleaved in one invocation,
//! written as a markdown table and raw JSON per backend
//! (`docs/results/bench-<backend>.{md,json}`), judged against
//! `benches/targets.json`.
//!
//! Every workload runs in a process of its own (`loraxs-workload`, or
//! `benches/torch_reference/bench.py`), so one workload's memory never
//! counts towards another's peak. For each workload the loraxs backends and
//! PyTorch run back to back, so both see the same machine state; ratios
//! are loraxs / PyTorch from the same invocation.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::targets::Targets;
use crate::workload::Workload;

/// The workspace root (benchmarks run from there: the reference script,
/// the scratch folder and the tables are found relative to it).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches lives one level below the workspace root")
        .to_path_buf()
}

/// `cargo`, the one running this tool when started through cargo.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    loraxs_models::fetch::run_command(cmd).map_err(|e| e.to_string())
}

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Backends to measure, comma-separated: `ndarray`, `flex`, `cuda`
    /// (`cuda` builds with `--features cuda` and needs an NVIDIA GPU).
    #[arg(long, value_delimiter = ',', default_value = "flex,ndarray")]
    pub backend: Vec<String>,
    /// Only these workloads (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Timed repetitions per workload (at least 10 for the committed tables).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Untimed warm-up repetitions.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Threads for both tools (rayon, OpenMP, MKL, torch).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Model folder (default: all-MiniLM-L6-v2, fetched if missing).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Decoder for the `*-decoder-*` workloads: a folder holding one GGUF
    /// file (default: SmolLM2-135M-Instruct, fetched if missing).
    #[arg(long)]
    pub decoder_model: Option<PathBuf>,
    /// Sequences per batch (training) or prompts (generation) of the
    /// decoder workloads.
    #[arg(long, default_value_t = 4)]
    pub decoder_batch: usize,
    /// Tokens per sequence (training) or per prompt (generation) of the
    /// decoder workloads.
    #[arg(long, default_value_t = 128)]
    pub decoder_seq: usize,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Create the reference's virtualenv (benches/torch_reference/.venv)
    /// from PyPI first.
    #[arg(long)]
    pub setup: bool,
    /// Where the tables go.
    #[arg(long, default_value = "docs/results")]
    pub out: PathBuf,
    /// Run the criterion kernel suites instead (`cargo bench -p
    /// loraxs-benches`), optionally filtered.
    #[arg(long)]
    pub criterion: bool,
    /// Rewrite the tables from the committed JSON without measuring
    /// (after a change to the report itself).
    #[arg(long)]
    pub report_only: bool,
    /// Filter for `--criterion`.
    pub filter: Option<String>,
}

const REFERENCE_DIR: &str = "benches/torch_reference";

/// Runs the benchmark.
pub fn bench(args: &BenchArgs) -> Result<(), String> {
    let root = project_root();
    let targets = Targets::shipped()?;
    let cuda = args.backend.iter().any(|b| b == "cuda");
    if args.criterion {
        let mut cmd = cargo();
        cmd.current_dir(&root).args(["bench", "-p", "loraxs-benches"]);
        if cuda {
            cmd.args(["--features", "cuda"]);
        }
        if let Some(filter) = &args.filter {
            cmd.args(["--", filter]);
        }
        return run(&mut cmd);
    }
    if args.report_only {
        let out = root.join(&args.out);
        for backend in &args.backend {
            let json_path = out.join(format!("bench-{backend}.json"));
            let text =
                std::fs::read_to_string(&json_path).map_err(|e| format!("{}: {e}", json_path.display()))?;
            let merged: Vec<Value> =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json_path.display()))?;
            let rows: Vec<&Value> = merged.iter().collect();
            write_markdown(&out, backend, &rows, args, f64::NAN, &targets)?;
        }
        return Ok(());
    }
    let python = if args.no_reference {
        None
    } else {
        Some(reference_python(&root, args.setup)?)
    };
    let model = match &args.model {
        Some(m) => m.clone(),
        None => loraxs_models::fetch::fetch_model("minilm").map_err(|e| e.to_string())?,
    };
    // Fetched only when a decoder workload is asked for.
    let mut decoder_model = args.decoder_model.clone();

    // The workload binary, optimised like a user's release build.
    let mut build = cargo();
    build.current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "loraxs-benches",
        "--bin",
        "loraxs-workload",
    ]);
    if cuda {
        build.args(["--features", "cuda"]);
    }
    run(&mut build)?;
    let binary = root.join("target/release/loraxs-workload");

    let glue_data = loraxs_data::data_dir(None);
    let workloads = if args.workloads.is_empty() {
        let all = list(Command::new(&binary).arg("--list"))?;
        match &glue_data {
            Ok(_) => all,
            Err(e) => {
                eprintln!("skipping the train-glue workloads: {e}");
                all.into_iter()
                    .filter(|w| !Workload::from_name(w).is_ok_and(Workload::needs_glue_data))
                    .collect()
            }
        }
    } else {
        args.workloads.clone()
    };
    let reference_workloads = match &python {
        Some(py) => list(
            Command::new(py)
                .arg(root.join(REFERENCE_DIR).join("bench.py"))
                .arg("--list"),
        )?,
        None => Vec::new(),
    };
    let scratch = root.join("target/bench-tmp");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    if decoder_model.is_none()
        && workloads
            .iter()
            .any(|w| Workload::from_name(w).is_ok_and(Workload::is_decoder))
    {
        decoder_model = Some(loraxs_models::fetch::fetch_model("smollm2").map_err(|e| e.to_string())?);
    }
    // One fresh command per run, with the settings both tools share.
    let command = |program: &Path, script: Option<&Path>, workload: &str| {
        let decoder = Workload::from_name(workload).is_ok_and(Workload::is_decoder);
        let (model, batch, seq) = match &decoder_model {
            Some(m) if decoder => (m, args.decoder_batch, args.decoder_seq),
            _ => (&model, args.batch, args.seq),
        };
        let mut cmd = Command::new(program);
        if let Some(script) = script {
            cmd.arg(script);
        }
        cmd.current_dir(&root)
            .env("RAYON_NUM_THREADS", args.threads.to_string())
            .env("OMP_NUM_THREADS", args.threads.to_string())
            .env("MKL_NUM_THREADS", args.threads.to_string())
            .env("MATMUL_NUM_THREADS", args.threads.to_string())
            .args(["--workload", workload])
            .arg("--model")
            .arg(model)
            .args(["--batch", &batch.to_string(), "--seq", &seq.to_string()])
            .args([
                "--warmup",
                &args.warmup.to_string(),
                "--reps",
                &args.reps.to_string(),
            ])
            .arg("--scratch")
            .arg(&scratch);
        cmd
    };
    let script = root.join(REFERENCE_DIR).join("bench.py");

    let started = std::time::Instant::now();
    let mut results: Vec<Value> = Vec::new();
    for (index, workload) in workloads.iter().enumerate() {
        if let Ok(w) = Workload::from_name(workload)
            && w.is_prepared()
        {
            // The reference runs exactly loraxs's inputs (the trainer's
            // batches, the step's product shapes).
            if w.needs_glue_data() {
                glue_data.as_ref().map_err(|e| format!("{workload}: {e}"))?;
            }
            let mut prepare = command(&binary, None, workload);
            prepare.arg("--prepare");
            let written = list(&mut prepare)?;
            eprintln!("{workload}: inputs in {}", written.join(" "));
        }
        let mut runs: Vec<(Command, String)> = Vec::new();
        for backend in &args.backend {
            let mut cmd = command(&binary, None, workload);
            cmd.args(["--backend", backend]);
            runs.push((cmd, format!("loraxs {backend} {workload}")));
        }
        if let Some(py) = &python
            && reference_workloads.contains(workload)
        {
            let devices: &[&str] = if cuda { &["cpu", "cuda"] } else { &["cpu"] };
            for device in devices {
                let mut cmd = command(py, Some(&script), workload);
                cmd.args(["--threads", &args.threads.to_string(), "--device", device]);
                runs.push((cmd, format!("pytorch {device} {workload}")));
            }
        }
        // Alternate which tool goes first, so that neither always runs on
        // the machine the other has just warmed (caches, clocks).
        if index % 2 == 1 {
            runs.reverse();
        }
        for (cmd, label) in runs {
            results.push(run_json(cmd, &label)?);
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let invocation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for r in &mut results {
        r["invocation"] = invocation.into();
    }
    let order = list(Command::new(&binary).arg("--list"))?;
    let position = |r: &Value| {
        let w = r["workload"].as_str().unwrap_or("");
        let tool = usize::from(r["tool"] != "loraxs");
        (order.iter().position(|o| o == w).unwrap_or(usize::MAX), tool)
    };
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for backend in &args.backend {
        let reference_device = reference_device(backend);
        let json_path = out.join(format!("bench-{backend}.json"));
        // Rows of workloads not rerun now are kept from the last file.
        let mut merged: Vec<Value> = std::fs::read_to_string(&json_path)
            .ok()
            .and_then(|s| serde_json::from_str::<Vec<Value>>(&s).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !workloads.iter().any(|w| r["workload"] == w.as_str()))
            .collect();
        merged.extend(
            results
                .iter()
                .filter(|r| r["backend"] == backend.as_str() || r["backend"] == reference_device)
                .cloned(),
        );
        merged.sort_by_key(position);
        let rows: Vec<&Value> = merged.iter().collect();
        let raw = serde_json::to_string_pretty(&rows).expect("json");
        std::fs::write(&json_path, raw + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
        println!("wrote {}", json_path.display());
        write_markdown(&out, backend, &rows, args, minutes, &targets)?;
    }
    Ok(())
}

/// The reference rows a backend is compared with.
fn reference_device(backend: &str) -> &'static str {
    if backend == "cuda" {
        "torch-cuda"
    } else {
        "torch-cpu"
    }
}

/// Writes `bench-<backend>.md` from its rows.
fn write_markdown(
    out: &Path,
    backend: &str,
    rows: &[&Value],
    args: &BenchArgs,
    minutes: f64,
    targets: &Targets,
) -> Result<(), String> {
    let md_path = out.join(format!("bench-{backend}.md"));
    let table = crate::report::markdown(backend, reference_device(backend), rows, args, minutes, targets);
    std::fs::write(&md_path, table).map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!("wrote {}", md_path.display());
    Ok(())
}

/// The interpreter of the reference: `$LORAXS_TORCH_PYTHON`, else the
/// project's virtualenv, created from `requirements.txt` when `setup`.
fn reference_python(root: &Path, setup: bool) -> Result<PathBuf, String> {
    if let Some(py) = std::env::var_os("LORAXS_TORCH_PYTHON") {
        return Ok(PathBuf::from(py));
    }
    let venv = root.join(REFERENCE_DIR).join(".venv");
    let python = venv.join("bin/python");
    if python.is_file() && !setup {
        return Ok(python);
    }
    if !setup {
        return Err(format!(
            "the PyTorch reference is not installed: run `cargo xtask bench --setup` once \
             (creates {} from PyPI, ~6 GB with torch's CUDA libraries), set \
             LORAXS_TORCH_PYTHON to a Python with torch, transformers, peft and scikit-learn, \
             or pass --no-reference",
            venv.display()
        ));
    }
    if !python.is_file() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(root.join(REFERENCE_DIR).join("requirements.txt")))?;
    Ok(python)
}

fn list(cmd: &mut Command) -> Result<Vec<String>, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

fn run_json(mut cmd: Command, label: &str) -> Result<Value, String> {
    eprint!("{label} ... ");
    let out = cmd
        .output()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if !out.status.success() {
        eprintln!("failed");
        return Err(format!(
            "{label} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{label} printed no JSON line:\n{stdout}"))?;
    let value: Value = serde_json::from_str(line).map_err(|e| format!("{label}: bad JSON ({e}): {line}"))?;
    eprintln!(
        "median {:.1} ms (min {:.1}, max {:.1}), peak RSS {:.0} MiB",
        value["median_ms"].as_f64().unwrap_or(f64::NAN),
        value["min_ms"].as_f64().unwrap_or(f64::NAN),
        value["max_ms"].as_f64().unwrap_or(f64::NAN),
        value["peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
    );
    Ok(value)
}
