//! `serve-load`: loraxs-serve under load on loopback.
//!
//! One process starts the server on the model (no adapters), loads 1,000
//! LoRA-XS r=16 adapters with BERT-style heads through `POST /v1/adapters`
//! (load rate and resident memory per adapter measured), then alternates
//! three variants every round, each `4 × batch` classify or embedding
//! requests of one `seq`-token text sent by `batch` concurrent keep-alive
//! connections:
//!
//! - `serve-1-adapter`: every request names the same adapter;
//! - `serve-1000-adapters`: request `i` names adapter `(i · 7919) mod 1000`;
//! - `serve-base-embeddings`: `/v1/embeddings` of the base model.
//!
//! A soak follows: traffic over 900 adapters while the other 100 are
//! removed and loaded again, bounded in requests and time. Every answer
//! must be 2xx: any error fails the workload.
//!
//! `LORAXS_SERVE_MAX_WAIT_MS` overrides the batcher's wait (default 5 ms),
//! for studying its effect (`mean_batch_rows` in the report).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loraxs::{AdapterFile, SaveOptions};
use loraxs_models::ModelDir;
use loraxs_serve::load::{Client, LoadSpec, run as load};
use loraxs_serve::{ServeConfig, Server};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use crate::workload::{Options, Report, Variant, Workload, median};

/// Adapters loaded into the server.
pub const ADAPTERS: usize = 1000;
/// Adapters removed and re-loaded during the soak.
const CHURNED: usize = 100;

/// The server-specific figures of `serve-load`.
#[derive(Debug, Clone, Serialize)]
pub struct ServeStats {
    /// Adapters loaded through `POST /v1/adapters`.
    pub adapters: usize,
    /// Loads per second (file read, checks, bank insert).
    pub loads_per_s: f64,
    /// The bank's share per adapter: `modules × r² × 4` bytes (exact, from
    /// the tensors' sizes: resident-memory growth cannot isolate 24 KiB
    /// from the allocator reusing what the stacks' copies freed).
    pub bank_bytes_per_adapter: usize,
    /// The head each adapter of this workload brings (BERT style, 2
    /// classes: `2 × hidden + 2` values × 4 bytes).
    pub head_bytes_per_adapter: usize,
    /// What a LoRA r=8 adapter on the same modules holds: `r (in + out)`
    /// values per module × 4 bytes (its own `A` and `B`).
    pub lora_r8_bytes_per_adapter: usize,
    /// Mean rows per model pass over the timed rounds (the batcher's
    /// effect: at most `batch`).
    pub mean_batch_rows: f64,
    /// Soak: requests answered, errors, adapter removals + loads, p99.
    pub soak_requests: usize,
    /// Soak errors (must be 0).
    pub soak_errors: usize,
    /// Soak: removals plus loads done while traffic flowed.
    pub soak_churn: usize,
    /// Soak: 99th-percentile latency, ms.
    pub soak_p99_ms: f64,
}

const WORDS: [&str; 48] = [
    "the", "movie", "was", "good", "and", "very", "long", "but", "it", "had", "a", "great", "cast", "of",
    "people", "who", "made", "me", "laugh", "at", "every", "turn", "while", "story", "felt", "slow", "in",
    "middle", "with", "some", "scenes", "that", "dragged", "on", "for", "too", "many", "minutes", "before",
    "end", "came", "as", "surprise", "to", "all", "us", "there", "still",
];

/// A seeded text of `words` common words (one WordPiece token each).
fn text(rng: &mut ChaCha8Rng, words: usize) -> String {
    (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the adapter files; returns the bank's, LoRA r=8's and the
/// head's bytes per adapter.
fn adapter_files(options: &Options, dir: &std::path::Path) -> Result<(usize, usize, usize), String> {
    let device = Default::default();
    let model = ModelDir::new(&options.model).map_err(|e| e.to_string())?;
    let (encoder, _) = model
        .encoder::<burn::backend::Flex>(&device)
        .map_err(|e| e.to_string())?;
    let hidden = encoder.hidden_size();
    let config = Workload::ServeLoad.adapter().expect("serve-load adapts");
    let template = AdapterFile::from_model(
        &loraxs::inject(encoder.clone(), &config)
            .map_err(|e| e.to_string())?
            .model,
        &config,
        SaveOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let lora = loraxs::inject(encoder, &loraxs::AdapterConfig::lora(8)).map_err(|e| e.to_string())?;
    let lora_values = loraxs::param_count(&lora.model, Some(&lora.config)).adapter;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for i in 0..ADAPTERS {
        let mut f = template.clone();
        if let Some(t) = f.tensors.get_mut(loraxs::LORA_XS_R) {
            t.values
                .iter_mut()
                .for_each(|v| *v = (rng.random::<f32>() - 0.5) * 0.02);
        }
        let weight: Vec<f32> = (0..2 * hidden)
            .map(|_| (rng.random::<f32>() - 0.5) * 0.1)
            .collect();
        f.insert_head_tensor("head.out_proj.weight", vec![2, hidden], weight)
            .map_err(|e| e.to_string())?;
        f.insert_head_tensor("head.out_proj.bias", vec![2], vec![0.0, 0.0])
            .map_err(|e| e.to_string())?;
        f.save(dir.join(format!("adapter-{i}.safetensors")))
            .map_err(|e| e.to_string())?;
    }
    Ok((
        template.stored_values() * 4,
        lora_values * 4,
        (2 * hidden + 2) * 4,
    ))
}

/// Runs `serve-load` on backend `B`.
pub fn run<B: loraxs_models::KernelBackend>(options: &Options) -> Result<Report, String> {
    let root = options.scratch.join("serve-adapters");
    let _ = std::fs::remove_dir_all(&root);
    // Files live in a sub-folder: not served at start, loadable by POST.
    let bytes = adapter_files(options, &root.join("pending"))?;
    let mut config = ServeConfig::new(&options.model).with_adapters(&root);
    config.max_batch = options.batch;
    config.max_inputs = 1;
    config.queue = 4 * options.batch;
    if let Ok(ms) = std::env::var("LORAXS_SERVE_MAX_WAIT_MS") {
        config.max_wait =
            Duration::from_millis(ms.parse().map_err(|_| "LORAXS_SERVE_MAX_WAIT_MS: not a number")?);
    }
    let server = Server::start::<B>(config).map_err(|e| e.to_string())?;
    let metrics = server.metrics();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(listener, async {
            stopped.await.ok();
        }));
        let measured = drive(options, addr, bytes, &metrics).await;
        let _ = stop.send(());
        serving
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        measured
    });
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn drive(
    options: &Options,
    addr: SocketAddr,
    (bank_bytes, lora_bytes, head_bytes): (usize, usize, usize),
    metrics: &loraxs_serve::metrics::Metrics,
) -> Result<Report, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut admin = Client::new(addr).map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let texts: Vec<String> = (0..64)
        .map(|_| text(&mut rng, options.seq.saturating_sub(2).max(1)))
        .collect();
    // Warm the model (first batches allocate), then measure loading.
    let warm = LoadSpec {
        addr,
        clients: options.batch,
        requests: 2 * options.batch,
        duration: Duration::from_secs(600),
        path: "/v1/embeddings".into(),
    };
    let t = texts.clone();
    load(&warm, move |i| {
        json!({"input": t[i % t.len()], "truncate": true}).to_string()
    })
    .await
    .map_err(|e| e.to_string())?;
    let rss_before = crate::memory::reset_peak();
    let started = Instant::now();
    for i in 0..ADAPTERS {
        let body =
            json!({"path": format!("pending/adapter-{i}.safetensors"), "name": format!("adapter-{i}")});
        let r = admin
            .request("POST", "/v1/adapters", Some(&body.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 201 {
            return Err(format!("loading adapter-{i}: {} {}", r.status, r.body));
        }
    }
    let loads_per_s = ADAPTERS as f64 / started.elapsed().as_secs_f64();

    let (batches0, rows0) = (metrics.batches.load(Relaxed), metrics.rows.load(Relaxed));
    let variants = ["serve-1-adapter", "serve-1000-adapters", "serve-base-embeddings"];
    let requests = 4 * options.batch;
    let mut times = vec![Vec::new(); variants.len()];
    let mut p50 = vec![Vec::new(); variants.len()];
    let mut p99 = vec![Vec::new(); variants.len()];
    for round in 0..options.warmup + options.reps {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let spec = LoadSpec {
                addr,
                clients: options.batch,
                requests,
                duration: Duration::from_secs(600),
                path: if v == 2 { "/v1/embeddings" } else { "/v1/classify" }.into(),
            };
            let t = texts.clone();
            let report = load(&spec, move |i| {
                let text = &t[i % t.len()];
                match v {
                    0 => json!({"adapter": "adapter-0", "inputs": [text], "truncate": true}),
                    1 => json!({"adapter": format!("adapter-{}", (i * 7919) % ADAPTERS), "inputs": [text], "truncate": true}),
                    _ => json!({"input": text, "truncate": true}),
                }
                .to_string()
            })
            .await
            .map_err(|e| e.to_string())?;
            if report.errors > 0 || report.requests != requests {
                return Err(format!("{}: {report:?}", variants[v]));
            }
            if round >= options.warmup {
                times[v].push(report.seconds * 1e3);
                p50[v].push(report.p50_ms);
                p99[v].push(report.p99_ms);
            }
        }
    }

    let mean_batch_rows = (metrics.rows.load(Relaxed) - rows0) as f64
        / (metrics.batches.load(Relaxed) - batches0).max(1) as f64;

    // Soak: traffic over the first 900 adapters while the last 100 leave
    // and come back.
    let soak = LoadSpec {
        addr,
        clients: options.batch,
        requests: 20 * options.batch,
        duration: Duration::from_secs(120),
        path: "/v1/classify".into(),
    };
    let t = texts.clone();
    let traffic = tokio::spawn(async move {
        load(&soak, move |i| {
            json!({"adapter": format!("adapter-{}", (i * 7919) % (ADAPTERS - CHURNED)), "inputs": [t[i % t.len()]], "truncate": true})
                .to_string()
        })
        .await
    });
    let mut churn = 0;
    let mut k = 0;
    while !traffic.is_finished() {
        let i = ADAPTERS - CHURNED + k % CHURNED;
        let r = admin
            .request("DELETE", &format!("/v1/adapters/adapter-{i}"), None)
            .await
            .map_err(|e| e.to_string())?;
        let body =
            json!({"path": format!("pending/adapter-{i}.safetensors"), "name": format!("adapter-{i}")});
        let back = admin
            .request("POST", "/v1/adapters", Some(&body.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 || back.status != 201 {
            return Err(format!(
                "soak churn of adapter-{i}: {} {} / {} {}",
                r.status, r.body, back.status, back.body
            ));
        }
        churn += 2;
        k += 1;
    }
    let soak = traffic
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if soak.errors > 0 {
        return Err(format!("soak: {soak:?}"));
    }

    let base = &times[0];
    let found: Vec<Variant> = variants
        .iter()
        .enumerate()
        .map(|(v, name)| {
            let ratios: Vec<f64> = times[v].iter().zip(base).map(|(a, b)| a / b).collect();
            let mut sorted = ratios.clone();
            sorted.sort_by(f64::total_cmp);
            Variant {
                workload: name.to_string(),
                times_ms: times[v].clone(),
                median_ms: median(&times[v]),
                ratio_to_base: median(&ratios),
                ratio_quartiles: [sorted[sorted.len() / 4], sorted[(3 * sorted.len()) / 4]],
                requests_per_s: Some(requests as f64 / (median(&times[v]) / 1e3)),
                latency_ms: Some([median(&p50[v]), median(&p99[v])]),
            }
        })
        .collect();
    let mut report =
        crate::workload::report(options, times[0].clone(), rss_before, crate::memory::peak_rss());
    report.variants = Some(found);
    report.values = Some(bank_bytes / 4);
    report.serve = Some(ServeStats {
        adapters: ADAPTERS,
        loads_per_s,
        bank_bytes_per_adapter: bank_bytes,
        head_bytes_per_adapter: head_bytes,
        lora_r8_bytes_per_adapter: lora_bytes,
        mean_batch_rows,
        soak_requests: soak.requests,
        soak_errors: soak.errors,
        soak_churn: churn,
        soak_p99_ms: soak.p99_ms,
    });
    Ok(report)
}
