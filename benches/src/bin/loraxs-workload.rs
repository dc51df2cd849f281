//! Runs one `cargo xtask bench` workload in a process of its own and prints
//! one JSON line: times of every repetition and the process's peak resident
//! memory. A process per workload keeps one workload's allocations out of
//! the next one's memory figure; `cargo xtask bench` starts these processes
//! interleaved with the PyTorch reference (`benches/torch_reference`).
//!
//! ```text
//! loraxs-workload --workload train-lora-xs --backend flex --model datasets/cache/models/all-MiniLM-L6-v2
//! ```

use std::path::PathBuf;

use clap::Parser;
use loraxs_benches::workload::{Options, Report, Workload, prepare, run};
use loraxs_experiments::{BackendKind, OnBackend};

#[derive(Parser)]
#[command(about = "One loraxs benchmark workload; prints a JSON line")]
struct Args {
    /// The workload (see `--list`).
    #[arg(long, default_value = "train-lora-xs")]
    workload: String,
    /// `ndarray`, `flex` or `cuda` (built with `--features cuda`).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens per sequence (fixed length, no padding).
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed repetitions.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Where adapter files are written (adapter-save/-load).
    #[arg(long, default_value = "target/bench-tmp")]
    scratch: PathBuf,
    /// GLUE data folder for the `train-glue-*` workloads (default:
    /// `LORAXS_DATA_DIR`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write what the PyTorch reference needs to run exactly this workload
    /// (`train-glue-*`: the batches the trainer will see; `gemm-step`: the
    /// product shapes) to `<scratch>/<workload>-inputs.json`, print the
    /// path and exit (nothing for other workloads).
    #[arg(long)]
    prepare: bool,
    /// Leave glibc's allocator at its defaults (no `tune_allocator`), to
    /// measure what it changes.
    #[arg(long)]
    plain_malloc: bool,
    /// Print the workload names and exit.
    #[arg(long)]
    list: bool,
}

fn main() {
    let args = Args::parse();
    // As the experiments binary does (docs/performance.md §10); `--plain-malloc`
    // measures without it.
    if !args.plain_malloc {
        loraxs_models::tune_allocator();
    }
    if args.list {
        for w in Workload::ALL {
            println!("{}", w.name());
        }
        return;
    }
    let result = Workload::from_name(&args.workload).and_then(|workload| {
        let options = Options {
            workload,
            model: args
                .model
                .clone()
                .unwrap_or_else(loraxs_models::default_model_dir),
            batch: args.batch,
            seq: args.seq,
            warmup: args.warmup,
            reps: args.reps,
            scratch: args.scratch.clone(),
            backend: args.backend.clone(),
            data_dir: args.data_dir.clone(),
        };
        if args.prepare {
            if let Some(path) = prepare(&options)? {
                println!("{}", path.display());
            }
            std::process::exit(0);
        }
        let backend: BackendKind = args.backend.parse().map_err(|e| format!("{e}"))?;
        backend.run(RunWorkload(&options)).map_err(|e| e.to_string())?
    });
    match result {
        Ok(report) => println!("{}", serde_json::to_string(&report).expect("report serialises")),
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}

struct RunWorkload<'a>(&'a Options);

impl OnBackend for RunWorkload<'_> {
    type Output = Result<Report, String>;

    fn run<B: loraxs_models::KernelBackend>(self) -> Self::Output {
        run::<B>(self.0, &Default::default())
    }
}
