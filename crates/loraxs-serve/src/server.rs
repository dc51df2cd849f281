//! The HTTP side: routes, request checks, the queue to the model thread.

use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use loraxs::AdapterFile;
use loraxs_models::KernelBackend;
use loraxs_tokenizer::{TextTokenizer, TokenSequence};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::api::*;
use crate::decoder::{DecoderEngine, GenJob};
use crate::engine::{self, Admin, Batching, Engine, Job, JobKind, Msg, Registry, StartSpec};
use crate::metrics::Metrics;

/// How a server is set up (the command line's flags).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The base model folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`).
    pub model: PathBuf,
    /// The adapter folder: served at start-up, and the only place
    /// `POST /v1/adapters` loads from. `None`: no adapters at start, none
    /// loadable.
    pub adapters: Option<PathBuf>,
    /// The bank's rank; by default that of most adapter files (16 without
    /// any).
    pub rank: Option<usize>,
    /// Most rows one model pass runs.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
    /// Requests waiting for the model before new ones get 503.
    pub queue: usize,
    /// Longest input in tokens (special tokens included); longer ones get
    /// 413 unless the request asks to truncate. `None`: 128 (the paper's
    /// GLUE length) or the model's limit if smaller.
    pub max_tokens: Option<usize>,
    /// Most texts in one request (413 beyond).
    pub max_inputs: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body: usize,
}

impl ServeConfig {
    /// Defaults for `model`: batches of up to 32 rows gathered for up to
    /// 5 ms, 256 queued requests, 128 tokens per input (the paper's GLUE
    /// length; fewer if the model has fewer positions), 64 texts and 1 MiB
    /// per request.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            adapters: None,
            rank: None,
            max_batch: 32,
            max_wait: Duration::from_millis(5),
            queue: 256,
            max_tokens: None,
            max_inputs: 64,
            max_body: 1 << 20,
        }
    }

    /// Serves the adapters of `dir`.
    pub fn with_adapters(mut self, dir: impl Into<PathBuf>) -> Self {
        self.adapters = Some(dir.into());
        self
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[error("loraxs-serve: {0}")]
pub struct StartError(pub String);

/// The tokenizers of the model kind served.
enum ModelSide {
    Encoder(Box<EncoderTokenizers>),
    Decoder(Box<loraxs_tokenizer::CausalTokenizer>),
}

struct EncoderTokenizers {
    /// Truncates to `max_tokens`.
    tokenizer: TextTokenizer,
    /// Truncates only at the model's own limit: how long an input really
    /// is.
    measure: TextTokenizer,
}

struct Shared {
    inbox: Sender<Msg>,
    /// False once the model thread has stopped (it should not before
    /// shutdown; `/health` then answers 503).
    alive: Arc<std::sync::atomic::AtomicBool>,
    registry: Registry,
    metrics: Arc<Metrics>,
    side: ModelSide,
    /// Completions answered so far (their ids).
    completions: std::sync::atomic::AtomicU64,
    config: ServeConfig,
}

/// A started server: the model thread is running; [`Server::router`] and
/// [`Server::serve`] put HTTP in front of it.
pub struct Server {
    shared: Arc<Shared>,
    worker: std::thread::JoinHandle<()>,
    /// What was loaded at start-up.
    pub loaded: AdapterList,
}

impl Server {
    /// Loads the model and the adapter folder on a model thread of backend
    /// `B` (e.g. `burn::backend::Flex`) and waits until it is ready.
    pub fn start<B: KernelBackend>(config: ServeConfig) -> Result<Self, StartError> {
        let fail = |e: String| StartError(e);
        if config.max_batch == 0 || config.queue == 0 || config.max_inputs == 0 {
            return Err(fail("max batch, queue and max inputs must be at least 1".into()));
        }
        let (side, spec) = if loraxs_models::is_decoder_path(&config.model)
            .map_err(|e| fail(e.to_string()))?
        {
            let tokenizer =
                loraxs_models::load_causal_tokenizer(&config.model).map_err(|e| fail(e.to_string()))?;
            let spec = StartSpec {
                model: config.model.clone(),
                adapters: config.adapters.clone(),
                rank: config.rank,
                max_tokens: config.max_tokens.unwrap_or(usize::MAX),
                pad_id: tokenizer.pad_id(),
            };
            (ModelSide::Decoder(Box::new(tokenizer)), spec)
        } else {
            let model_dir = loraxs_models::ModelDir::new(&config.model).map_err(|e| fail(e.to_string()))?;
            let model_limit = model_dir.config().map_err(|e| fail(e.to_string()))?.max_tokens();
            let max_tokens = match config.max_tokens {
                Some(n) if n > model_limit => {
                    return Err(fail(format!(
                        "--max-tokens {n} is beyond the model's {model_limit} positions"
                    )));
                }
                Some(0) => return Err(fail("--max-tokens must be at least 1".into())),
                Some(n) => n,
                None => model_limit.min(128),
            };
            let tokenizer = model_dir.tokenizer(max_tokens).map_err(|e| fail(e.to_string()))?;
            let measure = model_dir
                .tokenizer(model_limit)
                .map_err(|e| fail(e.to_string()))?;
            let spec = StartSpec {
                model: config.model.clone(),
                adapters: config.adapters.clone(),
                rank: config.rank,
                max_tokens,
                pad_id: tokenizer.pad_id(),
            };
            (
                ModelSide::Encoder(Box::new(EncoderTokenizers { tokenizer, measure })),
                spec,
            )
        };
        let decoder = matches!(side, ModelSide::Decoder(_));
        let metrics = Arc::new(Metrics::default());
        let registry: Registry = Arc::new(RwLock::new(AdapterList {
            base: BaseInfo {
                model: String::new(),
                fingerprint: String::new(),
                rank: 0,
                targets: Vec::new(),
                hidden_size: 0,
                max_tokens: 0,
            },
            adapters: Vec::new(),
            not_loaded: Vec::new(),
        }));
        let (inbox_tx, inbox_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let batching = Batching {
            max_batch: config.max_batch,
            max_wait: config.max_wait,
        };
        let (reg, met) = (registry.clone(), metrics.clone());
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let alive_flag = AliveGuard(alive.clone());
        let worker = std::thread::Builder::new()
            .name("loraxs-model".into())
            .spawn(move || {
                let _alive = alive_flag;
                if decoder {
                    match DecoderEngine::<B>::start(&spec, reg, met) {
                        Ok((engine, list)) => {
                            let _ = ready_tx.send(Ok(list));
                            engine.run(inbox_rx, batching);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                } else {
                    match Engine::<B>::start(&spec, reg, met) {
                        Ok((engine, list)) => {
                            let _ = ready_tx.send(Ok(list));
                            engine.run(inbox_rx, batching);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                }
            })
            .map_err(|e| fail(format!("cannot start the model thread: {e}")))?;
        let loaded = ready_rx
            .recv()
            .map_err(|_| fail("the model thread stopped while loading".into()))?
            .map_err(fail)?;
        Ok(Self {
            shared: Arc::new(Shared {
                inbox: inbox_tx,
                alive,
                registry,
                metrics,
                side,
                config,
                completions: std::sync::atomic::AtomicU64::new(0),
            }),
            worker,
            loaded,
        })
    }

    /// The server's counters (also at `GET /metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The routes (see the crate docs).
    pub fn router(&self) -> Router {
        router(self.shared.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then finishes
    /// every accepted request, stops the model thread and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(self.shared.clone());
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        // Every handler is done: dropping the last senders closes the
        // queues and the model thread returns after answering them.
        drop(self.shared);
        let worker = self.worker;
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .map_err(std::io::Error::other)?
            .map_err(|_| std::io::Error::other("the model thread panicked"))?;
        served
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body;
    Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/adapters", get(list_adapters).post(load_adapter))
        .route("/v1/adapters/{name}", delete(remove_adapter))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route; see GET /v1/adapters, POST /v1/classify") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// Counts every answer by route and status, with its latency.
async fn observe(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = match request.uri().path() {
        "/v1/classify" => "/v1/classify",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/completions" => "/v1/completions",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/health" => "/health",
        "/metrics" => "/metrics",
        p if p.starts_with("/v1/adapters") => "/v1/adapters",
        _ => "other",
    };
    let response = next.run(request).await;
    shared
        .metrics
        .observe(route, response.status().as_u16(), start.elapsed());
    response
}

/// Parses a JSON body: 413 over the size limit, 400 for anything else
/// wrong, with serde's line, column and field.
fn parse<T: DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("the request body is over the server's limit: {e}"))
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON request: {e}")))
}

impl Shared {
    /// Tokenises `texts`; 413 naming the first input over the token limit
    /// unless `truncate`.
    fn tokenize(
        &self,
        texts: &[(&str, Option<&str>)],
        truncate: bool,
        field: &str,
    ) -> Result<Vec<TokenSequence>, ApiError> {
        if texts.is_empty() {
            return Err(
                ApiError::bad_request(format!("`{field}` is empty: give at least one text")).param(field),
            );
        }
        if texts.len() > self.config.max_inputs {
            return Err(ApiError::too_large(format!(
                "{} texts in one request; this server takes at most {}",
                texts.len(),
                self.config.max_inputs
            ))
            .param(field));
        }
        let ModelSide::Encoder(tokenizers) = &self.side else {
            return Err(ApiError::not_found(
                "this server serves a decoder: use /v1/completions or /v1/chat/completions",
            ));
        };
        let (tokenizer, measure) = (&tokenizers.tokenizer, &tokenizers.measure);
        let tokenize_error =
            |e: loraxs_tokenizer::TokenizerError| ApiError::bad_request(e.to_string()).param(field);
        if !truncate {
            let measured = measure.encode_each(texts).map_err(tokenize_error)?;
            let limit = tokenizer.max_length();
            if let Some((i, s)) = measured.iter().enumerate().find(|(_, s)| s.ids.len() > limit) {
                let len = if s.ids.len() >= measure.max_length() {
                    format!("at least {}", s.ids.len())
                } else {
                    s.ids.len().to_string()
                };
                return Err(ApiError::too_large(format!(
                    "`{field}[{i}]` has {len} tokens; this server takes at most {limit} (send \"truncate\": true to cut it)"
                ))
                .param(format!("{field}[{i}]")));
            }
            return Ok(measured);
        }
        tokenizer.encode_each(texts).map_err(tokenize_error)
    }

    /// Queues a job and waits for its answer; 503 when the queue is full.
    async fn submit(
        &self,
        kind: JobKind,
        adapter: Option<String>,
        sequences: Vec<TokenSequence>,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            kind,
            adapter,
            sequences,
            reply,
        };
        self.enqueue(Msg::Job(job))?;
        answer
            .await
            .map_err(|_| ApiError::internal("the model thread stopped before answering"))?
    }

    /// The adapter a `model` field names (`None` for absent or `"base"`);
    /// 404 when no adapter of that name is loaded.
    fn adapter_of(&self, model: Option<&str>) -> Result<Option<String>, ApiError> {
        match model {
            None | Some(BASE_NAME) => Ok(None),
            Some(name) => self.known(name, "model").map(|()| Some(name.to_string())),
        }
    }

    /// Queues a job for the model thread; 503 when `--queue` jobs are
    /// already waiting (the bound: jobs sent and not yet taken) or the
    /// thread is gone.
    fn enqueue(&self, msg: Msg) -> Result<(), ApiError> {
        if self.metrics.queued.fetch_add(1, Ordering::Relaxed) >= self.config.queue as i64 {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(format!(
                "the server is at capacity ({} requests queued); retry shortly",
                self.config.queue
            )));
        }
        if self.inbox.send(msg).is_err() {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        Ok(())
    }

    /// The label names of adapter `name`, if it is loaded and has them.
    fn label_names(&self, name: &str) -> Option<Vec<String>> {
        let registry = self.registry.read().unwrap();
        registry
            .adapters
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.labels.clone())
    }

    fn known(&self, name: &str, field: &str) -> Result<(), ApiError> {
        let registry = self.registry.read().unwrap();
        if registry.adapters.iter().any(|a| a.name == name) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!(
                "no adapter named `{name}` is loaded ({} are; GET /v1/adapters lists them)",
                registry.adapters.len()
            ))
            .param(field))
        }
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

async fn classify(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::Json<ClassifyResponse>, ApiError> {
    let request: ClassifyRequest = parse(body)?;
    shared.known(&request.adapter, "adapter")?;
    let mut texts = Vec::with_capacity(request.inputs.len());
    for (i, input) in request.inputs.iter().enumerate() {
        texts.push(match input {
            TextInput::Single(text) => (text.as_str(), None),
            TextInput::Pair(pair) if pair.len() == 2 => (pair[0].as_str(), Some(pair[1].as_str())),
            TextInput::Pair(pair) => {
                return Err(ApiError::bad_request(format!(
                    "`inputs[{i}]` is a list of {} texts; a pair has exactly 2",
                    pair.len()
                ))
                .param(format!("inputs[{i}]")));
            }
        });
    }
    let sequences = shared.tokenize(&texts, request.truncate, "inputs")?;
    let tokens: usize = sequences.iter().map(|s| s.ids.len()).sum();
    let names = shared.label_names(&request.adapter);
    let logits = shared
        .submit(JobKind::Classify, Some(request.adapter.clone()), sequences)
        .await?;
    let results = logits
        .into_iter()
        .map(|l| {
            if l.len() == 1 {
                Classification::Score { score: l[0] }
            } else {
                let probabilities = softmax(&l);
                let label = probabilities
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |best, (i, &p)| if p > best.1 { (i, p) } else { best },
                    )
                    .0;
                let label_name = names.as_ref().and_then(|n| n.get(label).cloned());
                Classification::Label {
                    label,
                    label_name,
                    probabilities,
                }
            }
        })
        .collect();
    Ok(axum::Json(ClassifyResponse {
        adapter: request.adapter,
        results,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::Json<EmbeddingResponse>, ApiError> {
    let request: EmbeddingRequest = parse(body)?;
    if let Some(format) = &request.encoding_format
        && format != "float"
    {
        return Err(
            ApiError::bad_request(format!("encoding_format `{format}`: only \"float\" is served"))
                .param("encoding_format"),
        );
    }
    let adapter = shared.adapter_of(request.model.as_deref())?;
    let texts: Vec<&str> = match &request.input {
        EmbeddingInput::One(text) => vec![text.as_str()],
        EmbeddingInput::Many(texts) => texts.iter().map(String::as_str).collect(),
    };
    let pairs: Vec<(&str, Option<&str>)> = texts.iter().map(|&t| (t, None)).collect();
    let sequences = shared.tokenize(&pairs, request.truncate, "input")?;
    let tokens: usize = sequences.iter().map(|s| s.ids.len()).sum();
    let vectors = shared.submit(JobKind::Embed, adapter.clone(), sequences).await?;
    Ok(axum::Json(EmbeddingResponse {
        object: "list".into(),
        data: vectors
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| Embedding {
                object: "embedding".into(),
                index,
                embedding,
            })
            .collect(),
        model: adapter.unwrap_or_else(|| BASE_NAME.into()),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

async fn list_adapters(State(shared): State<Arc<Shared>>) -> axum::Json<AdapterList> {
    axum::Json(shared.registry.read().unwrap().clone())
}

/// A path inside the adapter folder: relative, no `..`.
fn inside(dir: &Path, path: &str) -> Result<PathBuf, ApiError> {
    let relative = Path::new(path);
    if path.is_empty() || relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(ApiError::bad_request(format!(
            "`{path}`: give a path relative to the adapter folder, without `..`"
        ))
        .param("path"));
    }
    Ok(dir.join(relative))
}

async fn load_adapter(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, axum::Json<AdapterInfo>), ApiError> {
    let request: LoadAdapterRequest = parse(body)?;
    let dir = shared.config.adapters.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "this server was started without --adapters: it loads no adapter files",
        )
    })?;
    let path = inside(&dir, &request.path)?;
    let name = match request.name {
        Some(name) => name,
        None => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match (stem.as_str(), path.parent()) {
                ("adapter", Some(parent)) if parent != dir => parent
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or(stem),
                _ => stem,
            }
        }
    };
    engine::check_name(&name).map_err(|reason| ApiError::bad_request(reason).param("name"))?;
    if !path.is_file() {
        return Err(ApiError::not_found(format!("{}: no such adapter file", path.display())).param("path"));
    }
    let read_path = path.clone();
    let file = tokio::task::spawn_blocking(move || AdapterFile::load(&read_path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| adapter_error(&e).param("path"))?;
    if file.config.method != loraxs::Method::LoraXs {
        return Err(ApiError::unprocessable(format!(
            "{}: has method `{}`; this server's bank serves `lora-xs` adapters, which share A and B",
            path.display(),
            file.config.method.name()
        ))
        .param("path"));
    }
    let (reply, answer) = oneshot::channel();
    shared
        .inbox
        .send(Msg::Admin(Admin::Load {
            name,
            path,
            file: Box::new(file),
            reply,
        }))
        .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
    let info = answer
        .await
        .map_err(|_| ApiError::internal("the model thread stopped before answering"))??;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

async fn remove_adapter(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    shared.known(&name, "name")?;
    let (reply, answer) = oneshot::channel();
    shared
        .inbox
        .send(Msg::Admin(Admin::Remove {
            name: name.clone(),
            reply,
        }))
        .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
    answer
        .await
        .map_err(|_| ApiError::internal("the model thread stopped before answering"))??;
    Ok(axum::Json(serde_json::json!({ "deleted": name })))
}

async fn health(State(shared): State<Arc<Shared>>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if !shared.alive.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("the model thread has stopped"));
    }
    Ok(axum::Json(serde_json::json!({
        "status": "ok",
        "adapters": shared.registry.read().unwrap().adapters.len(),
        "queued": shared.metrics.queued.load(Ordering::Relaxed),
    })))
}

/// Clears the flag when the model thread ends, by return or by panic.
struct AliveGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}

/// The sampling settings every completion request has, as `generate`
/// takes them; 400 naming the field for a value out of range.
struct Settings {
    config: loraxs_models::GenerationConfig,
    stop: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn settings(
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<&OneOrMany>,
    n: Option<usize>,
    stream: (Option<bool>, Option<StreamOptions>),
    stop_ids: &[u32],
) -> Result<Settings, ApiError> {
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only n = 1 is served").param("n"));
    }
    if stream.1.is_some() && stream.0 != Some(true) {
        return Err(
            ApiError::bad_request("stream_options is only allowed with \"stream\": true")
                .param("stream_options"),
        );
    }
    let max_new_tokens = max_tokens.unwrap_or(16);
    if max_new_tokens == 0 {
        return Err(ApiError::bad_request("max_tokens must be at least 1").param("max_tokens"));
    }
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(
            ApiError::bad_request(format!("temperature {temperature} is outside [0, 2]"))
                .param("temperature"),
        );
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(format!("top_p {top_p} is outside (0, 1]")).param("top_p"));
    }
    let stop: Vec<String> = stop
        .map(|s| s.texts().into_iter().map(String::from).collect())
        .unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("stop takes up to 4 non-empty texts").param("stop"));
    }
    Ok(Settings {
        config: loraxs_models::GenerationConfig {
            max_new_tokens,
            temperature,
            top_p,
            seed: seed.unwrap_or(0),
            stop_ids: stop_ids.to_vec(),
            use_cache: true,
        },
        stop,
    })
}

impl Shared {
    fn decoder(&self) -> Result<&loraxs_tokenizer::CausalTokenizer, ApiError> {
        match &self.side {
            ModelSide::Decoder(t) => Ok(t),
            ModelSide::Encoder(_) => Err(ApiError::not_found(
                "this server serves an encoder: use /v1/classify or /v1/embeddings",
            )),
        }
    }

    /// 400 for an empty prompt, 413 for one over the context or too many.
    fn check_prompts(&self, prompts: &[Vec<u32>], settings: &Settings, field: &str) -> Result<(), ApiError> {
        let context = self.registry.read().unwrap().base.max_tokens;
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(
                    ApiError::bad_request(format!("`{field}[{i}]` is empty")).param(format!("{field}[{i}]"))
                );
            }
            if p.len() + settings.config.max_new_tokens > context {
                return Err(ApiError::too_large(format!(
                    "`{field}[{i}]` has {} tokens; with max_tokens {} that exceeds the context of {context}",
                    p.len(),
                    settings.config.max_new_tokens
                ))
                .param(format!("{field}[{i}]")));
            }
        }
        if prompts.len() > self.config.max_inputs {
            return Err(ApiError::too_large(format!(
                "{} prompts in one request; this server takes at most {}",
                prompts.len(),
                self.config.max_inputs
            ))
            .param(field));
        }
        Ok(())
    }

    /// Generates for `prompts` (tokenised) through `adapter`; the texts,
    /// finish reasons and token counts.
    async fn generate(
        &self,
        adapter: Option<String>,
        prompts: Vec<Vec<u32>>,
        settings: Settings,
        field: &str,
    ) -> Result<Vec<(String, &'static str, usize)>, ApiError> {
        let tokenizer = self.decoder()?;
        self.check_prompts(&prompts, &settings, field)?;
        let (reply, answer) = oneshot::channel();
        let job = GenJob {
            adapter,
            prompts,
            config: settings.config,
            reply,
            stream: None,
        };
        self.enqueue(Msg::Generate(job))?;
        let generated = answer
            .await
            .map_err(|_| ApiError::internal("the model thread stopped before answering"))??;
        let mut out = Vec::new();
        for (tokens, finish) in generated.tokens.iter().zip(&generated.finish) {
            let mut text = tokenizer
                .decode(tokens, true)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut reason = crate::stream::finish_reason(*finish, false);
            // Stop texts: cut at the first one (generation ran on; its
            // tokens are not answered).
            if let Some(cut) = settings.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(cut);
                reason = "stop";
            }
            out.push((text, reason, tokens.len()));
        }
        Ok(out)
    }

    /// Queues `prompts` as a streamed job and answers with its events
    /// (see [`crate::stream`]).
    fn stream(
        self: &Arc<Self>,
        adapter: Option<String>,
        prompts: Vec<Vec<u32>>,
        settings: Settings,
        field: &str,
        kind: crate::stream::Kind,
        include_usage: bool,
    ) -> Result<Response, ApiError> {
        self.decoder()?;
        self.check_prompts(&prompts, &settings, field)?;
        let prompt_tokens = prompts.iter().map(Vec::len).sum();
        let (tokens, receiver, stop) = crate::stream::token_stream(prompts.len());
        let (reply, answer) = oneshot::channel();
        self.enqueue(Msg::Generate(GenJob {
            adapter: adapter.clone(),
            prompts,
            config: settings.config,
            reply,
            stream: Some(tokens),
        }))?;
        let spec = crate::stream::StreamSpec {
            id: self.completion_id(match kind {
                crate::stream::Kind::Completion => "cmpl",
                crate::stream::Kind::Chat => "chatcmpl",
            }),
            created: created(),
            model: adapter.unwrap_or_else(|| BASE_NAME.into()),
            kind,
            stop: settings.stop,
            prompt_tokens,
            include_usage,
        };
        let shared = Arc::clone(self);
        let decode = move |tokens: &[u32]| -> Result<String, String> {
            let tokenizer = shared.decoder().map_err(|e| e.message)?;
            tokenizer.decode(tokens, true).map_err(|e| e.to_string())
        };
        Ok(crate::stream::respond(spec, decode, receiver, stop, answer))
    }

    fn completion_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.completions.fetch_add(1, Ordering::Relaxed))
    }
}

fn created() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse(body)?;
    let tokenizer = shared.decoder()?;
    let adapter = shared.adapter_of(request.model.as_deref())?;
    let settings = settings(
        request.max_tokens,
        request.temperature,
        request.top_p,
        request.seed,
        request.stop.as_ref(),
        request.n,
        (request.stream, request.stream_options),
        tokenizer.stop_ids(),
    )?;
    let texts = request.prompt.texts();
    if texts.is_empty() {
        return Err(ApiError::bad_request("`prompt` is empty: give at least one").param("prompt"));
    }
    let prompts = texts
        .iter()
        .map(|t| {
            tokenizer
                .encode_prompt(t)
                .map_err(|e| ApiError::bad_request(e.to_string()).param("prompt"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if request.stream == Some(true) {
        let usage = request.stream_options.is_some_and(|o| o.include_usage);
        return shared.stream(
            adapter,
            prompts,
            settings,
            "prompt",
            crate::stream::Kind::Completion,
            usage,
        );
    }
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let outputs = shared
        .generate(adapter.clone(), prompts, settings, "prompt")
        .await?;
    let completion_tokens: usize = outputs.iter().map(|o| o.2).sum();
    Ok(axum::Json(serde_json::json!({
        "id": shared.completion_id("cmpl"),
        "object": "text_completion",
        "created": created(),
        "model": adapter.unwrap_or_else(|| BASE_NAME.into()),
        "choices": outputs.iter().enumerate().map(|(index, (text, reason, _))| serde_json::json!({
            "text": text, "index": index, "finish_reason": reason, "logprobs": null,
        })).collect::<Vec<_>>(),
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response())
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse(body)?;
    let tokenizer = shared.decoder()?;
    let adapter = shared.adapter_of(request.model.as_deref())?;
    if request.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty").param("messages"));
    }
    if let Some((i, m)) = request
        .messages
        .iter()
        .enumerate()
        .find(|(_, m)| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
    {
        return Err(
            ApiError::bad_request(format!("role `{}`: expected system, user or assistant", m.role))
                .param(format!("messages[{i}].role")),
        );
    }
    if !tokenizer.has_chat_template() {
        return Err(ApiError::unprocessable(
            "this model's tokenizer has no chat template; use /v1/completions with a plain prompt",
        ));
    }
    let settings = settings(
        request.max_completion_tokens.or(request.max_tokens),
        request.temperature,
        request.top_p,
        request.seed,
        request.stop.as_ref(),
        request.n,
        (request.stream, request.stream_options),
        tokenizer.stop_ids(),
    )?;
    let messages: Vec<loraxs_tokenizer::ChatMessage> = request
        .messages
        .iter()
        .map(|m| loraxs_tokenizer::ChatMessage::new(&m.role, &m.content))
        .collect();
    let text = tokenizer
        .apply_chat_template(&messages, true)
        .map_err(|e| ApiError::unprocessable(e.to_string()).param("messages"))?;
    let prompt = tokenizer
        .encode_prompt(&text)
        .map_err(|e| ApiError::bad_request(e.to_string()).param("messages"))?;
    if request.stream == Some(true) {
        let usage = request.stream_options.is_some_and(|o| o.include_usage);
        return shared.stream(
            adapter,
            vec![prompt],
            settings,
            "messages",
            crate::stream::Kind::Chat,
            usage,
        );
    }
    let prompt_tokens = prompt.len();
    let outputs = shared
        .generate(adapter.clone(), vec![prompt], settings, "messages")
        .await?;
    let (content, reason, completion_tokens) = outputs.into_iter().next().expect("one prompt, one output");
    Ok(axum::Json(serde_json::json!({
        "id": shared.completion_id("chatcmpl"),
        "object": "chat.completion",
        "created": created(),
        "model": adapter.unwrap_or_else(|| BASE_NAME.into()),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response())
}
