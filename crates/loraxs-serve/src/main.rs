//! `loraxs-serve`: serve a base encoder and a folder of LoRA-XS adapters
//! over HTTP (see the crate docs for the routes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use loraxs_serve::{ServeConfig, Server};

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// burn-flex on the CPU (threads, SIMD).
    Flex,
    /// burn-ndarray on the CPU.
    Ndarray,
}

/// Serve many LoRA-XS adapters of one base encoder over HTTP.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The base model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The adapter folder: its *.safetensors and */adapter.safetensors are
    /// served; POST /v1/adapters loads from it.
    #[arg(long)]
    adapters: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The bank's rank (default: that of most adapter files, 16 without any).
    #[arg(long)]
    rank: Option<usize>,
    /// Most rows in one model pass.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// How long (ms) a batch waits for more requests.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Requests queued before new ones get 503.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Longest input in tokens (413 beyond, unless the request truncates);
    /// default 128 or the model's limit if smaller.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Most texts per request.
    #[arg(long, default_value_t = 64)]
    max_inputs: usize,
    /// Backend.
    #[arg(long, value_enum, default_value = "flex")]
    backend: Backend,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("loraxs-serve: shutting down; finishing accepted requests");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let model = args.model.unwrap_or_else(loraxs_models::default_model_dir);
    let mut config = ServeConfig::new(model);
    config.adapters = args.adapters;
    config.rank = args.rank;
    config.max_batch = args.max_batch;
    config.max_wait = Duration::from_millis(args.max_wait_ms);
    config.queue = args.queue;
    config.max_tokens = args.max_tokens;
    config.max_inputs = args.max_inputs;
    let started = match args.backend {
        Backend::Flex => Server::start::<burn::backend::Flex>(config),
        Backend::Ndarray => Server::start::<burn::backend::NdArray<f32>>(config),
    };
    let server = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let base = &server.loaded.base;
    eprintln!(
        "loraxs-serve: {} (rank {}, {} targets), {} adapters loaded",
        base.model,
        base.rank,
        base.targets.len(),
        server.loaded.adapters.len()
    );
    for skipped in &server.loaded.not_loaded {
        eprintln!("loraxs-serve: not serving {}: {}", skipped.path, skipped.reason);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loraxs-serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::new(args.host, args.port);
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("loraxs-serve: listening on http://{}", listener.local_addr()?);
        server.serve(listener, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loraxs-serve: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
