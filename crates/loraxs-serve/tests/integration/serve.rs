//! loraxs-serve end to end on loopback, on a tiny random BERT shipped as a
//! fixture (`tools/make_fixtures.py bert-tiny`) and on MiniLM: every row of
//! a mixed batch answers what its own adapter gives alone; bad requests get
//! the right status and the server serves on; a full queue answers 503;
//! adapters come and go under traffic; shutdown finishes accepted requests.
//! All traffic goes to 127.0.0.1 and is bounded in count and time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use loraxs::{AdapterConfig, AdapterFile, Method, RInit, SaveOptions, TargetModules, inject};
use loraxs_heads::{HeadConfig, HeadStyle};
use loraxs_models::ModelDir;
use loraxs_serve::load::{Client, LoadSpec, run};
use loraxs_serve::{ServeConfig, Server};
use serde_json::{Value, json};

type B = Flex;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

const RANK: usize = 4;

fn xs_config(seed: u64, alpha: f64) -> AdapterConfig {
    AdapterConfig::lora_xs(RANK)
        .with_targets(TargetModules::paper_glue())
        .with_seed(seed)
        .with_alpha(alpha)
        .with_r_init(RInit::Gaussian { std: 0.5 })
}

/// A "trained" adapter of the tiny model: `R` drawn from `seed`, and a
/// head of `labels` outputs (`None`: no head).
fn make_adapter(model: &Path, config: &AdapterConfig, head: Option<(HeadStyle, usize)>) -> AdapterFile {
    let device = Default::default();
    let (encoder, _) = ModelDir::new(model).unwrap().encoder::<B>(&device).unwrap();
    let hidden = encoder.hidden_size();
    let mut file = inject(encoder, config)
        .unwrap()
        .to_file(SaveOptions::default())
        .unwrap();
    if let Some((style, labels)) = head {
        let mut c = HeadConfig::new(style, hidden, labels);
        c.seed = config.seed;
        // Larger weights than a fresh head's, so classes differ visibly.
        let head = c.init::<B>(&device);
        let head = loraxs_heads::Head {
            out_proj: burn::nn::Linear {
                weight: head.out_proj.weight.map(|w| w.mul_scalar(25.0)),
                bias: head.out_proj.bias,
            },
            ..head
        };
        head.store(&mut file).unwrap();
    }
    file
}

/// Label names of the `nli` test adapter.
const NLI_LABELS: [&str; 3] = ["entailment", "neutral", "contradiction"];

/// An adapter folder: `pos` (2 classes, RoBERTa head), `nli` (3 named
/// classes, BERT head), `sim` (a regressor), `plain` (no head).
fn adapter_dir(dir: &Path) -> Vec<(&'static str, AdapterFile)> {
    let model = tiny();
    let mut adapters = vec![
        (
            "pos",
            make_adapter(&model, &xs_config(1, 16.0), Some((HeadStyle::Roberta, 2))),
        ),
        (
            "nli",
            make_adapter(&model, &xs_config(2, 8.0), Some((HeadStyle::Bert, 3))),
        ),
        (
            "sim",
            make_adapter(&model, &xs_config(3, 4.0), Some((HeadStyle::Roberta, 1))),
        ),
        ("plain", make_adapter(&model, &xs_config(4, 16.0), None)),
    ];
    adapters[1]
        .1
        .set_labels(NLI_LABELS.map(String::from).to_vec())
        .unwrap();
    for (name, file) in &adapters {
        file.save(dir.join(format!("{name}.safetensors"))).unwrap();
    }
    adapters
}

/// What `file` gives for `texts` alone, without the server: the encoder
/// with the adapter applied (or the base), then the head (logits) or the
/// mean-pooled, normalised embedding.
fn reference(file: Option<&AdapterFile>, texts: &[(&str, Option<&str>)], embed: bool) -> Vec<Vec<f32>> {
    let device = Default::default();
    let dir = ModelDir::new(tiny()).unwrap();
    let (encoder, _) = dir.encoder::<B>(&device).unwrap();
    let tokenizer = dir.tokenizer(64).unwrap();
    let encoder = match file {
        Some(f) => f.apply(encoder, Path::new("ref.safetensors")).unwrap().model,
        None => encoder,
    };
    let mut out = Vec::new();
    for text in texts {
        let batch = tokenizer.encode(&[*text]).unwrap();
        let input = encoder.input(&batch, &device).unwrap();
        let result = encoder.forward(input);
        let values: Vec<f32> = if embed {
            let h = result.hidden.dims()[2];
            let mean = result.hidden.mean_dim(1).reshape([1, h]);
            let norm = mean.clone().powf_scalar(2.0).sum().sqrt();
            (mean / norm.unsqueeze()).into_data().to_vec().unwrap()
        } else {
            let f = file.unwrap();
            let out = &f.tensors["head.out_proj.weight"];
            let style = if f.tensors.contains_key("head.dense.weight") {
                HeadStyle::Roberta
            } else {
                HeadStyle::Bert
            };
            let head = HeadConfig::new(style, encoder.hidden_size(), out.shape[0])
                .init::<B>(&device)
                .load(f)
                .unwrap();
            head.forward(result.hidden, result.pooled)
                .into_data()
                .to_vec()
                .unwrap()
        };
        out.push(values);
    }
    out
}

fn softmax(l: &[f32]) -> Vec<f32> {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = l.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A started server on an ephemeral loopback port; `stop` shuts it down
/// and waits for it.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics: Arc<loraxs_serve::metrics::Metrics>,
}

impl Running {
    async fn start(config: ServeConfig) -> Self {
        let server = tokio::task::spawn_blocking(move || Server::start::<B>(config))
            .await
            .unwrap()
            .unwrap();
        let metrics = server.metrics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(server.serve(listener, async {
            stopped.await.ok();
        }));
        Self {
            addr,
            stop: Some(stop),
            done,
            metrics,
        }
    }

    fn client(&self) -> Client {
        Client::new(self.addr).unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .expect("the server stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

fn config(adapters: &Path) -> ServeConfig {
    let mut c = ServeConfig::new(tiny()).with_adapters(adapters);
    c.max_tokens = Some(16);
    c
}

const TEXTS: [&str; 6] = [
    "the movie was great fun",
    "a boring plot and an awful actor",
    "i love this film",
    "the cat sat on the mat",
    "we hate loud music at night",
    "it is fine",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_a_mixed_batch_equals_its_adapter_alone() {
    let dir = tempfile::tempdir().unwrap();
    let adapters = adapter_dir(dir.path());
    let mut c = config(dir.path());
    // Long enough that concurrent requests share batches.
    c.max_wait = Duration::from_millis(40);
    let server = Running::start(c).await;

    let mut tasks = Vec::new();
    for (k, &(name, _)) in adapters.iter().enumerate() {
        for round in 0..2 {
            let mut client = server.client();
            let texts: Vec<&str> = (0..3).map(|i| TEXTS[(k + round + i) % TEXTS.len()]).collect();
            tasks.push(tokio::spawn(async move {
                let (path, body) = if name == "plain" {
                    ("/v1/embeddings", json!({"model": name, "input": texts}))
                } else {
                    ("/v1/classify", json!({"adapter": name, "inputs": texts}))
                };
                let r = client
                    .request("POST", path, Some(&body.to_string()))
                    .await
                    .unwrap();
                (name, texts, r)
            }));
        }
    }
    // The base model's embeddings in the same batches.
    let mut client = server.client();
    let base = tokio::spawn(async move {
        let body = json!({"input": TEXTS[..2]}).to_string();
        client
            .request("POST", "/v1/embeddings", Some(&body))
            .await
            .unwrap()
    });

    for task in tasks {
        let (name, texts, r) = task.await.unwrap();
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let body = r.json();
        let file = &adapters.iter().find(|(n, _)| *n == name).unwrap().1;
        let pairs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (*t, None)).collect();
        if name == "plain" {
            let expected = reference(Some(file), &pairs, true);
            for (i, e) in expected.iter().enumerate() {
                let got = floats(&body["data"][i]["embedding"]);
                assert!(max_diff(&got, e) < 1e-5, "{name} row {i}: {got:?} vs {e:?}");
            }
            continue;
        }
        let expected = reference(Some(file), &pairs, false);
        for (i, logits) in expected.iter().enumerate() {
            let result = &body["results"][i];
            if logits.len() == 1 {
                let score = result["score"].as_f64().unwrap() as f32;
                assert!(
                    (score - logits[0]).abs() < 1e-5,
                    "{name} row {i}: {score} vs {}",
                    logits[0]
                );
            } else {
                let p = floats(&result["probabilities"]);
                assert!(max_diff(&p, &softmax(logits)) < 1e-5, "{name} row {i}");
                let argmax = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
                assert_eq!(result["label"].as_u64().unwrap() as usize, argmax);
                // Named classes are answered by name too; unnamed ones are not.
                if name == "nli" {
                    assert_eq!(result["label_name"], NLI_LABELS[argmax], "{result}");
                } else {
                    assert!(result.get("label_name").is_none(), "{result}");
                }
            }
        }
        assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    }
    let base = base.await.unwrap();
    assert_eq!(base.status, 200, "{}", base.body);
    let pairs: Vec<(&str, Option<&str>)> = TEXTS[..2].iter().map(|t| (*t, None)).collect();
    for (i, e) in reference(None, &pairs, true).iter().enumerate() {
        let got = floats(&base.json()["data"][i]["embedding"]);
        assert!(max_diff(&got, e) < 1e-5, "base row {i}");
    }
    assert_eq!(base.json()["model"], "base");

    // Batches really mixed adapters: more distinct adapters than batches.
    use std::sync::atomic::Ordering::Relaxed;
    let (batches, mixed) = (
        server.metrics.batches.load(Relaxed),
        server.metrics.batch_adapters.load(Relaxed),
    );
    assert!(
        mixed > batches,
        "{mixed} adapters over {batches} batches: nothing was mixed"
    );
    assert_eq!(server.metrics.rows.load(Relaxed), 8 * 3 + 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    adapter_dir(dir.path());
    // Files the bank must not take: another rank, another method.
    let model = tiny();
    make_adapter(
        &model,
        &AdapterConfig::lora_xs(2).with_seed(5),
        Some((HeadStyle::Roberta, 2)),
    )
    .save(dir.path().join("rank2.safetensors"))
    .unwrap();
    make_adapter(&model, &AdapterConfig::new(Method::Lora, 2).with_seed(6), None)
        .save(dir.path().join("lora.safetensors"))
        .unwrap();
    std::fs::write(dir.path().join("broken.safetensors"), b"not a safetensors file").unwrap();
    let mut c = config(dir.path());
    c.max_inputs = 4;
    c.max_body = 4096;
    let server = Running::start(c).await;
    let mut client = server.client();

    // Start-up: the four fitting adapters served, the rest listed with why.
    let list = client.request("GET", "/v1/adapters", None).await.unwrap().json();
    let names: Vec<&str> = list["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nli", "plain", "pos", "sim"]);
    assert_eq!(list["base"]["rank"], RANK);
    assert_eq!(list["adapters"][0]["adapter_values"], 8 * RANK * RANK); // 2 layers × 4 modules
    assert_eq!(list["adapters"][0]["labels"], json!(NLI_LABELS));
    assert!(list["adapters"][2].get("labels").is_none());
    let not_loaded = list["not_loaded"].to_string();
    for (file, why) in [
        ("rank2", "rank"),
        ("lora", "method `lora`"),
        ("broken", "broken.safetensors"),
    ] {
        assert!(
            not_loaded.contains(file) && not_loaded.contains(why),
            "{file}: {not_loaded}"
        );
    }

    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/v1/classify", "{not json".into(), 400, "invalid JSON"),
        (
            "POST",
            "/v1/classify",
            json!({"inputs": ["a"]}).to_string(),
            400,
            "missing field `adapter`",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "pos", "inputs": ["a"], "temperature": 1}).to_string(),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "nope", "inputs": ["a"]}).to_string(),
            404,
            "`nope`",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "pos", "inputs": []}).to_string(),
            400,
            "empty",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "pos", "inputs": [["a", "b", "c"]]}).to_string(),
            400,
            "inputs[0]",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "pos", "inputs": vec!["a"; 5]}).to_string(),
            413,
            "at most 4",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "pos", "inputs": ["ok", "the cat ".repeat(10)]}).to_string(),
            413,
            "`inputs[1]` has 22 tokens",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "pos", "inputs": ["a".repeat(5000)]}).to_string(),
            413,
            "limit",
        ),
        (
            "POST",
            "/v1/classify",
            json!({"adapter": "plain", "inputs": ["a"]}).to_string(),
            422,
            "no classification head",
        ),
        (
            "POST",
            "/v1/embeddings",
            json!({"input": "a", "encoding_format": "base64"}).to_string(),
            400,
            "float",
        ),
        (
            "POST",
            "/v1/adapters",
            json!({"path": "rank2.safetensors", "name": "r2"}).to_string(),
            422,
            "rank",
        ),
        (
            "POST",
            "/v1/adapters",
            json!({"path": "lora.safetensors"}).to_string(),
            422,
            "method `lora`",
        ),
        (
            "POST",
            "/v1/adapters",
            json!({"path": "broken.safetensors"}).to_string(),
            400,
            "broken.safetensors",
        ),
        (
            "POST",
            "/v1/adapters",
            json!({"path": "pos.safetensors"}).to_string(),
            409,
            "already loaded",
        ),
        (
            "POST",
            "/v1/adapters",
            json!({"path": "../pos.safetensors"}).to_string(),
            400,
            "without `..`",
        ),
        (
            "POST",
            "/v1/adapters",
            json!({"path": "missing.safetensors"}).to_string(),
            404,
            "no such adapter file",
        ),
        (
            "POST",
            "/v1/adapters",
            json!({"path": "pos.safetensors", "name": "base"}).to_string(),
            400,
            "reserved",
        ),
        ("DELETE", "/v1/adapters/nope", String::new(), 404, "`nope`"),
        ("GET", "/v1/nothing", String::new(), 404, "no such route"),
        ("GET", "/v1/classify", String::new(), 405, "method not allowed"),
    ];
    for (method, path, body, status, needle) in &cases {
        let r = client.request(method, path, Some(body)).await.unwrap();
        assert_eq!(r.status, *status, "{method} {path} {body}: {}", r.body);
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains(needle),
            "{method} {path} {body}: `{message}` lacks `{needle}`"
        );
        assert_eq!(r.json()["error"]["code"], *status);
    }
    // The field at fault is named.
    let r = client
        .request(
            "POST",
            "/v1/classify",
            Some(&json!({"adapter": "pos", "inputs": ["ok", "the cat ".repeat(10)]}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(r.json()["error"]["param"], "inputs[1]");

    // Truncation when asked; pairs; the server still answers.
    let r = client
        .request(
            "POST",
            "/v1/classify",
            Some(&json!({"adapter": "nli", "inputs": [["a man plays guitar", "music"], "the cat ".repeat(10)], "truncate": true}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 2);
    assert_eq!(r.json()["usage"]["prompt_tokens"], 8 + 16);

    // Load under a new name, use, delete, and it is gone.
    let r = client
        .request(
            "POST",
            "/v1/adapters",
            Some(&json!({"path": "pos.safetensors", "name": "pos2"}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["head_outputs"], 2);
    let ask = json!({"adapter": "pos2", "inputs": ["i love this film"]}).to_string();
    let one = client.request("POST", "/v1/classify", Some(&ask)).await.unwrap();
    let two = client
        .request(
            "POST",
            "/v1/classify",
            Some(&json!({"adapter": "pos", "inputs": ["i love this film"]}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(one.json()["results"], two.json()["results"]);
    assert_eq!(
        client
            .request("DELETE", "/v1/adapters/pos2", None)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        client
            .request("POST", "/v1/classify", Some(&ask))
            .await
            .unwrap()
            .status,
        404
    );

    let health = client.request("GET", "/health", None).await.unwrap();
    assert_eq!(
        (health.status, health.json()["adapters"].as_u64()),
        (200, Some(4))
    );
    let metrics = client.request("GET", "/metrics", None).await.unwrap().body;
    assert!(
        metrics.contains("loraxs_requests_total{route=\"/v1/classify\",status=\"413\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("loraxs_adapters_loaded 4"), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_the_rest_are_served() {
    let dir = tempfile::tempdir().unwrap();
    adapter_dir(dir.path());
    let mut c = config(dir.path());
    c.queue = 2;
    c.max_batch = 1;
    c.max_wait = Duration::ZERO;
    let server = Running::start(c).await;
    let spec = LoadSpec {
        addr: server.addr,
        clients: 16,
        requests: 160,
        duration: Duration::from_secs(60),
        path: "/v1/classify".into(),
    };
    let body = |i: usize| json!({"adapter": "pos", "inputs": vec![TEXTS[i % TEXTS.len()]; 4]}).to_string();
    let report = run(&spec, body).await.unwrap();
    assert_eq!(report.requests, 160);
    let (ok, busy) = (
        server.metrics.requests("/v1/classify", 200),
        server.metrics.requests("/v1/classify", 503),
    );
    assert_eq!(ok + busy, 160, "only 200 and 503 answers: {report:?}");
    assert!(busy > 0, "16 clients on a queue of 2 never filled it: {report:?}");
    assert!(ok > 0);
    assert_eq!(report.errors as u64, busy);
    // Served on afterwards.
    let r = server
        .client()
        .request("POST", "/v1/classify", Some(&body(0)))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_come_and_go_while_traffic_flows() {
    let dir = tempfile::tempdir().unwrap();
    let adapters = adapter_dir(dir.path());
    let server = Running::start(config(dir.path())).await;
    let expected = softmax(&reference(Some(&adapters[0].1), &[(TEXTS[0], None)], false)[0]);

    // Steady traffic on `pos` and on a churned name `extra`.
    let mut tasks = Vec::new();
    for k in 0..4 {
        let mut client = server.client();
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut gone) = (0, 0);
            for _ in 0..40 {
                let name = if k % 2 == 0 { "pos" } else { "extra" };
                let body = json!({"adapter": name, "inputs": [TEXTS[0]]}).to_string();
                let r = client.request("POST", "/v1/classify", Some(&body)).await.unwrap();
                match (name, r.status) {
                    (_, 200) => {
                        let p = floats(&r.json()["results"][0]["probabilities"]);
                        assert!(
                            max_diff(&p, &expected) < 1e-5,
                            "{name} answered another adapter's output"
                        );
                        ok += 1;
                    }
                    ("extra", 404) => gone += 1,
                    (_, status) => panic!("{name}: {status} {}", r.body),
                }
            }
            (ok, gone)
        }));
    }
    let mut admin = server.client();
    for _ in 0..15 {
        let r = admin
            .request(
                "POST",
                "/v1/adapters",
                Some(&json!({"path": "pos.safetensors", "name": "extra"}).to_string()),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            admin
                .request("DELETE", "/v1/adapters/extra", None)
                .await
                .unwrap()
                .status,
            200
        );
    }
    let mut steady = 0;
    for (k, task) in tasks.into_iter().enumerate() {
        let (ok, gone) = task.await.unwrap();
        assert_eq!(ok + gone, 40);
        if k % 2 == 0 {
            steady += ok;
        }
    }
    assert_eq!(steady, 80, "every request to the steady adapter answered 200");
    let list = admin.request("GET", "/v1/adapters", None).await.unwrap().json();
    assert_eq!(list["adapters"].as_array().unwrap().len(), 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_accepted_requests() {
    let dir = tempfile::tempdir().unwrap();
    adapter_dir(dir.path());
    let mut c = config(dir.path());
    // Requests wait in the batcher long enough for shutdown to start.
    c.max_wait = Duration::from_millis(300);
    c.max_batch = 64;
    let server = Running::start(c).await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for text in TEXTS {
        let mut client = server.client();
        tasks.push(tokio::spawn(async move {
            let body = json!({"adapter": "pos", "inputs": [text]}).to_string();
            client
                .request("POST", "/v1/classify", Some(&body))
                .await
                .unwrap()
                .status
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await;
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            200,
            "an accepted request was dropped by shutdown"
        );
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

/// The real default model: `/v1/embeddings` of the base equals the mean
/// pool of transformers' last hidden state (the committed parity fixture)
/// normalised, as sentence-transformers computes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_embeddings_match_transformers() {
    let Some(model) = loraxs_models::testing::test_model() else {
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../loraxs-models/tests/fixtures/minilm_parity.safetensors");
    let bytes = std::fs::read(&fixture).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        let values = match t.dtype() {
            safetensors::Dtype::F32 => t
                .data()
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::I64 => t
                .data()
                .chunks(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => panic!("{name}: {other:?}"),
        };
        (t.shape().to_vec(), values)
    };
    let (shape, hidden) = get("single.last_hidden_state");
    let (_, mask) = get("single.attention_mask");
    let [n, t, h] = [shape[0], shape[1], shape[2]];
    let device = Default::default();
    let hidden = Tensor::<B, 3>::from_data(TensorData::new(hidden, [n, t, h]), &device);
    let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [n, t, 1]), &device);
    let mean = (hidden * mask.clone())
        .sum_dim(1)
        .div(mask.sum_dim(1))
        .reshape([n, h]);
    let norm = mean.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    let expected: Vec<f32> = mean.div(norm).into_data().to_vec().unwrap();

    let server = Running::start(ServeConfig::new(model.dir)).await;
    let texts = [
        "The movie was surprisingly good.",
        "A gripping, beautifully shot thriller that never lets go!",
        "no",
    ];
    let r = server
        .client()
        .request(
            "POST",
            "/v1/embeddings",
            Some(&json!({"input": texts}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for i in 0..n {
        let got = floats(&r.json()["data"][i]["embedding"]);
        let diff = max_diff(&got, &expected[i * h..(i + 1) * h]);
        assert!(diff < 1e-4, "row {i}: max |Δ| {diff}");
    }
    server.stop().await;
}
