//! `loraxs-bench` (what `cargo xtask bench` runs): loraxs's whole-model
//! workloads next to the PyTorch reference, tables judged against
//! `benches/targets.json`; `--criterion` runs the kernel suites instead.

use clap::Parser;
use loraxs_benches::runner::{BenchArgs, bench};

#[derive(Parser)]
#[command(
    name = "loraxs-bench",
    about = "loraxs and PyTorch side by side (docs/results/bench-<backend>.md)"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> std::process::ExitCode {
    match bench(&Cli::parse().args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
