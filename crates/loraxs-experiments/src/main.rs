//! `loraxs-experiments`: reproduce the paper's tables from a profile.
//!
//! ```text
//! loraxs-experiments reproduce glue [--profile quick|standard|ablation|sweep|paper|smoke|FILE.json] [flags]
//! loraxs-experiments report glue [--profile …] [--results FILE]
//! loraxs-experiments reproduce math [--profile quick|paper|smoke|FILE.json] [--dry-run]
//! loraxs-experiments report math [--profile …] [--results FILE]
//! loraxs-experiments profiles
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use loraxs_experiments::{
    BUILT_IN, MATH_BUILT_IN, MathProfile, Overrides, Profile, RunSettings, report_glue, reproduce_glue,
    reproduce_math, write_math_report,
};
use loraxs_train::{DataParallel, Nodes};

#[derive(Parser)]
#[command(
    name = "loraxs-experiments",
    about = "Reproduce the LoRA-XS paper's tables with loraxs"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train the runs of a profile (finished runs are skipped, interrupted
    /// ones resume) and write its table.
    Reproduce {
        #[command(subcommand)]
        what: Table,
    },
    /// Rewrite a profile's table from its results file, training nothing.
    Report {
        #[command(subcommand)]
        what: Table,
    },
    /// List the built-in profiles.
    Profiles,
    /// Export an adapter file: `--to peft` (a PEFT LoRA folder, loadable by
    /// PEFT, transformers and vLLM) or `--to merged` (a Hugging Face model
    /// folder with the update folded into the weights).
    Export(ExportArgs),
    /// Fetch a model into the cache, as `cargo xtask fetch model NAME` does
    /// (`minilm`, `smollm2`, `mpnet`, `roberta-base`, … or a Hugging Face
    /// repo id).
    Fetch {
        /// `model`.
        #[arg(value_parser = ["model"])]
        what: String,
        /// The model's name.
        name: String,
    },
    /// Run burn's collective orchestrator: the meeting point of the nodes
    /// of a multi-node run (`--nodes`), until interrupted.
    Orchestrator {
        /// Port to listen on (all interfaces).
        #[arg(long)]
        port: u16,
    },
    /// Train one run of a grid (what `reproduce glue --jobs N` starts in
    /// each of its processes).
    #[command(hide = true)]
    TrainRun(TrainRunArgs),
    /// Bring a PEFT LoRA adapter over to LoRA-XS: its update projected onto
    /// the base's SVD basis (`R = Bᵀ·ΔW·A⁺`), saved as a loraxs adapter
    /// file; prints what the projection loses.
    Import(ImportArgs),
}

#[derive(Args)]
struct TrainRunArgs {
    /// The run's configuration (JSON).
    #[arg(long)]
    run: PathBuf,
    /// Where to write its record (JSON).
    #[arg(long)]
    record: PathBuf,
    #[arg(long)]
    backend: String,
    #[arg(long)]
    model: String,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    checkpoints: PathBuf,
    /// Device index (a GPU; the CPU backends have one device).
    #[arg(long, default_value_t = 0)]
    device: usize,
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct ImportArgs {
    /// The base model folder (Hugging Face encoder or decoder, or GGUF).
    #[arg(long)]
    model: PathBuf,
    /// The PEFT folder (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    peft: PathBuf,
    /// LoRA-XS rank.
    #[arg(long)]
    rank: usize,
    /// The adapter file to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    /// The base model folder (Hugging Face encoder or decoder; a GGUF file
    /// or folder for `--to peft`).
    #[arg(long)]
    model: PathBuf,
    /// The loraxs adapter file.
    #[arg(long)]
    adapter: PathBuf,
    /// `peft` or `merged`.
    #[arg(long)]
    to: loraxs_experiments::ExportFormat,
    /// Folder to write.
    #[arg(long)]
    out: PathBuf,
    /// PEFT: pad the rank with zeros to the next rank vLLM serves (1, 8,
    /// 16, 32, 64, …).
    #[arg(long)]
    pad_rank: bool,
    /// PEFT: module-name prefix of the class that will load the adapter
    /// (e.g. `bert.` for BertForSequenceClassification; with a task head,
    /// the head's class's, set by itself).
    #[arg(long, default_value = "")]
    module_prefix: String,
    /// Export an adapter saved with a task head without the head: the
    /// encoder update alone, for the base model's class. Otherwise the
    /// head goes with it as transformers' `…ForSequenceClassification`
    /// head (PEFT `modules_to_save`, or the merged folder's weights and
    /// config with the label names).
    #[arg(long)]
    drop_head: bool,
}

#[derive(Subcommand)]
enum Table {
    /// The GLUE table: `--profile quick` (default, ~42 min on 2 CPU cores),
    /// `standard` (3 seeds, full training sets: hours, resumable),
    /// `ablation` (SVD vs random A/B over ranks), `sweep` (the learning-rate
    /// sweep), `paper` (roberta-large grid, for CUDA), `smoke` (CI).
    Glue(Box<GlueArgs>),
    /// The math table: a decoder fine-tuned on math problems, scored on
    /// GSM8K. `--profile quick` (default: SmolLM2-135M on CPU), `paper`
    /// (the authors' recipe on a 7B model, for CUDA; try `--dry-run`),
    /// `smoke` (CI).
    Math(Box<MathArgs>),
}

#[derive(Args)]
struct MathArgs {
    /// Profile: `quick` (default), `paper`, `smoke`, or a JSON file.
    #[arg(long, default_value = "quick")]
    profile: String,
    #[command(flatten)]
    place: Place,
}

/// Where a reproduction reads and writes, and how it reports (both tables).
#[derive(Args)]
struct Place {
    /// Backend: `flex`, `ndarray` or `cuda` (needs `--features cuda`).
    #[arg(long)]
    backend: Option<String>,
    /// Model: a fetched name (`minilm`, `smollm2`), a folder or a `.gguf` file.
    #[arg(long)]
    model: Option<String>,
    /// Data folder (default: $LORAXS_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Results file (JSON lines; default docs/results/<table>-<profile>.jsonl).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Checkpoint folder (default target/loraxs-checkpoints).
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Print the planned runs and exit.
    #[arg(long)]
    dry_run: bool,
    /// Data-parallel peers of each run in this process: CPU threads
    /// sharing the cores, or one per GPU (`cuda:0..N`). Gradients are
    /// summed over the peers with burn's collective.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// GLUE: runs of the grid trained at once, each in its own process
    /// with cores/N threads (or its own GPU).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    #[command(flatten)]
    nodes: NodeArgs,
}

/// Several processes (machines) training one run together; each runs the
/// same command with its own `--node-rank` and `--node-address`.
#[derive(Args)]
struct NodeArgs {
    /// Processes (nodes) in the run.
    #[arg(long, requires_all = ["node_rank", "orchestrator", "node_address"])]
    nodes: Option<u32>,
    /// This node, 0..nodes (node 0 evaluates and writes records and checkpoints).
    #[arg(long, requires = "nodes")]
    node_rank: Option<u32>,
    /// The orchestrator (`loraxs-experiments orchestrator`), ws://host:port.
    #[arg(long, requires = "nodes")]
    orchestrator: Option<String>,
    /// This node as the others reach it, ws://host:port; it serves its
    /// tensors on that port.
    #[arg(long, requires = "nodes")]
    node_address: Option<String>,
}

impl NodeArgs {
    fn nodes(self) -> Option<Nodes> {
        let address = self.node_address?;
        // ws://host:port → the port to serve on; a bad address is
        // reported by DataParallel::check.
        let data_port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok());
        Some(Nodes {
            count: self.nodes?,
            rank: self.node_rank?,
            orchestrator: self.orchestrator?,
            address,
            data_port: data_port.unwrap_or(0),
        })
    }
}

impl Place {
    fn settings(self, all_records: bool) -> RunSettings {
        let mut parallel = DataParallel::new(self.devices);
        parallel.nodes = self.nodes.nodes();
        RunSettings {
            backend: self.backend,
            model: self.model,
            data_dir: self.data_dir,
            results: self.results,
            checkpoints: self.checkpoints,
            quiet: self.quiet,
            dry_run: self.dry_run,
            all_records,
            parallel,
            jobs: self.jobs,
        }
    }
}

impl MathArgs {
    fn split(self) -> (String, RunSettings) {
        (self.profile, self.place.settings(false))
    }
}

#[derive(Args)]
struct GlueArgs {
    /// Profile: `quick` (default), `standard`, `ablation`, `sweep`, `paper`,
    /// `smoke`, or a path to a JSON file.
    #[arg(long, default_value = "quick")]
    profile: String,
    /// Tasks, comma-separated (e.g. `sst2,rte`).
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    /// Methods: `lora-xs`, `lora`, `vera`, `full`, `lora-xs-random` (the no-SVD ablation).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Ranks (for every method that has one).
    #[arg(long, value_delimiter = ',')]
    ranks: Option<Vec<usize>>,
    /// Seeds.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Adapter learning rate for every task.
    #[arg(long)]
    lr: Option<f64>,
    /// Head learning rate for every task.
    #[arg(long)]
    head_lr: Option<f64>,
    /// Epochs for every task.
    #[arg(long)]
    epochs: Option<usize>,
    /// Training subset size for every task (0: the whole training set).
    #[arg(long)]
    train_subset: Option<usize>,
    /// Sampler window: batches sorted by length together (1: random batches).
    #[arg(long)]
    bucket_window: Option<usize>,
    /// Encoder dropout (hidden and attention) replacing the model's.
    #[arg(long)]
    encoder_dropout: Option<f64>,
    /// Head dropout replacing the default 0.1.
    #[arg(long)]
    head_dropout: Option<f64>,
    #[command(flatten)]
    place: Place,
    /// `report` only: every record of the results file, not only the
    /// profile's planned runs.
    #[arg(long)]
    all: bool,
}

impl GlueArgs {
    fn split(self) -> (String, Overrides, RunSettings) {
        let overrides = Overrides {
            tasks: self.tasks,
            methods: self.methods,
            ranks: self.ranks,
            seeds: self.seeds,
            lr: self.lr,
            head_lr: self.head_lr,
            epochs: self.epochs,
            train_subset: self.train_subset,
            bucket_window: self.bucket_window,
            encoder_dropout: self.encoder_dropout,
            head_dropout: self.head_dropout,
        };
        (self.profile, overrides, self.place.settings(self.all))
    }
}

fn train_run(args: TrainRunArgs) -> loraxs_experiments::Result<()> {
    let text =
        std::fs::read_to_string(&args.run).map_err(|source| loraxs_experiments::ExperimentError::Io {
            path: args.run.clone(),
            source,
        })?;
    let run: loraxs_train::RunConfig =
        serde_json::from_str(&text).map_err(|e| loraxs_experiments::ExperimentError::Results {
            path: args.run.clone(),
            reason: format!("not a run configuration: {e}"),
        })?;
    loraxs_experiments::train_one(
        &run,
        args.backend.parse()?,
        &args.model,
        &args.data_dir,
        &args.checkpoints,
        args.device,
        args.quiet,
        &args.record,
    )
}

fn main() -> ExitCode {
    // Training reuses freed activation memory instead of page-faulting it
    // back in every step (docs/performance.md §10).
    loraxs_models::tune_allocator();
    let result = match Cli::parse().command {
        Cmd::Reproduce {
            what: Table::Glue(args),
        } => {
            let (profile, overrides, settings) = args.split();
            Profile::load(&profile).and_then(|p| reproduce_glue(&p, &overrides, &settings).map(|_| ()))
        }
        Cmd::Report {
            what: Table::Glue(args),
        } => {
            let (profile, overrides, settings) = args.split();
            Profile::load(&profile)
                .and_then(|p| report_glue(&p, &overrides, &settings))
                .map(|out| eprintln!("wrote {}", out.display()))
        }
        Cmd::Reproduce {
            what: Table::Math(args),
        } => {
            let (profile, settings) = args.split();
            MathProfile::load(&profile).and_then(|p| reproduce_math(&p, &settings).map(|_| ()))
        }
        Cmd::Report {
            what: Table::Math(args),
        } => {
            let (profile, settings) = args.split();
            MathProfile::load(&profile).and_then(|p| {
                let results = settings
                    .results
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(format!("docs/results/math-{}.jsonl", p.name)));
                write_math_report(&p, &results).map(|out| eprintln!("wrote {}", out.display()))
            })
        }
        Cmd::Profiles => {
            for (name, _) in BUILT_IN {
                match Profile::load(name) {
                    Ok(p) => println!("glue {name}: {}", p.doc),
                    Err(e) => println!("glue {name}: {e}"),
                }
            }
            for (name, _) in MATH_BUILT_IN {
                match MathProfile::load(name) {
                    Ok(p) => println!("math {name}: {}", p.doc),
                    Err(e) => println!("math {name}: {e}"),
                }
            }
            Ok(())
        }
        Cmd::Export(args) => loraxs_experiments::export(&loraxs_experiments::ExportRequest {
            model: args.model,
            adapter: args.adapter,
            to: args.to,
            out: args.out,
            pad_rank: args.pad_rank,
            module_prefix: args.module_prefix,
            drop_head: args.drop_head,
        })
        .map(|summary| println!("{summary}")),
        Cmd::Orchestrator { port } => {
            eprintln!("orchestrator listening on port {port} (all interfaces); Ctrl-C stops it");
            loraxs_train::run_orchestrator(port)
                .map_err(|e| loraxs_experiments::ExperimentError::Backend(e.to_string()))
        }
        Cmd::TrainRun(args) => train_run(args),
        Cmd::Fetch { name, .. } => loraxs_models::fetch::fetch_model(&name)
            .map(|path| println!("{}", path.display()))
            .map_err(loraxs_experiments::ExperimentError::from),
        Cmd::Import(args) => loraxs_experiments::import(&args.model, &args.peft, args.rank, &args.out)
            .map(|summary| println!("{summary}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
