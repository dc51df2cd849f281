//! The model thread: one thread owns the encoder, the adapter bank and the
//! heads; HTTP handlers hand it tokenised jobs over a bounded queue and
//! wait for their answers. It batches jobs that arrive within `max_wait`
//! of each other (rows of different adapters in one batch), runs the
//! encoder once per batch with each row routed through its own adapter,
//! then each row's head.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use burn::tensor::{Int, Tensor, TensorData};
use loraxs::{AdapterBank, AdapterConfig, AdapterFile, HEAD_PREFIX, Method, TargetModules};
use loraxs_heads::{Head, HeadConfig, HeadStyle};
use loraxs_models::{Encoder, KernelBackend, ModelDir};
use loraxs_tokenizer::{TokenBatch, TokenSequence};
use tokio::sync::oneshot;

use crate::api::{AdapterInfo, AdapterList, ApiError, BASE_NAME, BaseInfo, NotLoaded, adapter_error};
use crate::metrics::Metrics;

/// The rank of the bank when neither `--rank` nor an adapter file says.
pub const DEFAULT_RANK: usize = 16;

/// What a job asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// Each row's head logits.
    Classify,
    /// Each row's mean-pooled, L2-normalised last hidden state.
    Embed,
}

/// One request's rows.
pub(crate) struct Job {
    pub kind: JobKind,
    /// `None`: the base model.
    pub adapter: Option<String>,
    pub sequences: Vec<TokenSequence>,
    /// One vector per row.
    pub reply: oneshot::Sender<Answer>,
}

/// What the model thread receives: jobs (bounded by the handlers'
/// count of queued jobs) and adapter changes, in arrival order.
pub(crate) enum Msg {
    Job(Job),
    Generate(crate::decoder::GenJob),
    Admin(Admin),
}

/// What an encoder answers a completion request.
fn no_completions() -> ApiError {
    ApiError::not_found("this server serves an encoder: use /v1/classify or /v1/embeddings")
}

/// Changes to the set of adapters.
pub(crate) enum Admin {
    Load {
        name: String,
        path: PathBuf,
        file: Box<AdapterFile>,
        reply: oneshot::Sender<Result<AdapterInfo, ApiError>>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
}

/// Adapter files found in a folder, by name.
type Found = Vec<(String, PathBuf)>;
/// A job's rows without its reply: what it asks, of which adapter.
type Work = (JobKind, Option<String>, Vec<TokenSequence>);
/// A job's answer: one vector per row.
type Answer = Result<Vec<Vec<f32>>, ApiError>;

/// What handlers read without asking the model thread.
pub(crate) type Registry = Arc<RwLock<AdapterList>>;

/// The start-up listing of a bank, published to the registry and the
/// metrics.
pub(crate) fn publish<B: burn::tensor::backend::Backend, H: loraxs::AdapterHost<B> + Clone>(
    bank: &AdapterBank<B, H>,
    (fit, not_loaded): (&Files, Vec<NotLoaded>),
    spec: &StartSpec,
    hidden_size: usize,
    max_tokens: usize,
    (registry, metrics): (&Registry, &Metrics),
) -> AdapterList {
    let list = AdapterList {
        base: BaseInfo {
            model: spec.model.display().to_string(),
            fingerprint: bank.fingerprint().to_string(),
            rank: bank.config().rank,
            targets: bank.config().targets.patterns().to_vec(),
            hidden_size,
            max_tokens,
        },
        adapters: fit
            .iter()
            .map(|(name, path, file)| info(bank, name, path, file))
            .collect(),
        not_loaded,
    };
    metrics.adapters.store(bank.len() as i64, Ordering::Relaxed);
    *registry.write().unwrap() = list.clone();
    list
}

/// Lists a newly loaded adapter, in name order.
pub(crate) fn registry_add(registry: &Registry, info: AdapterInfo) {
    let mut registry = registry.write().unwrap();
    registry.adapters.push(info);
    registry.adapters.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Unlists a removed adapter.
pub(crate) fn registry_remove(registry: &Registry, name: &str) {
    registry.write().unwrap().adapters.retain(|a| a.name != name);
}

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// The model thread's state.
pub(crate) struct Engine<B: KernelBackend> {
    bank: AdapterBank<B, Encoder<B>>,
    heads: HashMap<String, Head<B>>,
    hidden_size: usize,
    has_pooler: bool,
    pad_id: u32,
    device: B::Device,
    registry: Registry,
    metrics: Arc<Metrics>,
}

/// Everything `start` needs.
pub(crate) struct StartSpec {
    pub model: PathBuf,
    pub adapters: Option<PathBuf>,
    pub rank: Option<usize>,
    pub max_tokens: usize,
    pub pad_id: u32,
}

/// The adapter files of a folder: `*.safetensors` in it (named by stem)
/// and `*/adapter.safetensors` (named by their folder, as `cargo xtask
/// reproduce` leaves them in its checkpoint folder). Sorted by name.
pub(crate) fn scan(dir: &Path) -> Result<(Found, Vec<NotLoaded>), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list the adapter folder: {e}", dir.display()))?;
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let candidate = if path.is_dir() {
            let file = path.join("adapter.safetensors");
            file.is_file()
                .then(|| (path.file_name().unwrap().to_string_lossy().into_owned(), file))
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            Some((
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                path.clone(),
            ))
        } else {
            None
        };
        let Some((name, file)) = candidate else { continue };
        if let Err(reason) = check_name(&name) {
            skipped.push(NotLoaded {
                path: file.display().to_string(),
                reason,
            });
        } else if let Some(other) = found.get(&name) {
            skipped.push(NotLoaded {
                path: file.display().to_string(),
                reason: format!("the name `{name}` is taken by {}", other.display()),
            });
        } else {
            found.insert(name, file);
        }
    }
    Ok((found.into_iter().collect(), skipped))
}

/// Adapter names: non-empty, no `/`, not the reserved `base`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        Err("an adapter name must have 1 to 200 characters".into())
    } else if name == BASE_NAME {
        Err(format!("`{BASE_NAME}` is reserved for the base model"))
    } else if name.contains('/') || name.chars().any(char::is_control) {
        Err(format!(
            "`{name}`: an adapter name may not contain `/` or control characters"
        ))
    } else {
        Ok(())
    }
}

fn head_of<B: KernelBackend>(
    file: &AdapterFile,
    hidden: usize,
    has_pooler: bool,
    device: &B::Device,
) -> Result<Option<Head<B>>, String> {
    let Some(out) = file.tensors.get(&format!("{HEAD_PREFIX}out_proj.weight")) else {
        return Ok(None);
    };
    let style = if file.tensors.contains_key(&format!("{HEAD_PREFIX}dense.weight")) {
        HeadStyle::Roberta
    } else {
        HeadStyle::Bert
    };
    if style == HeadStyle::Bert && !has_pooler {
        return Err("its head reads the pooled output (BERT style) and this model has no pooler".into());
    }
    let num_labels = out.shape.first().copied().unwrap_or(0);
    if num_labels == 0 {
        return Err("head tensor `head.out_proj.weight` has no rows".into());
    }
    HeadConfig::new(style, hidden, num_labels)
        .init::<B>(device)
        .load(file)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Adapter files of a folder, read: `(name, path, file)`.
pub(crate) type Files = Vec<(String, PathBuf, AdapterFile)>;
/// A bank, the files in it and the files not in it.
pub(crate) type LoadedBank<B, H> = (AdapterBank<B, H>, Files, Vec<NotLoaded>);

/// A bank on `base` holding every LoRA-XS file of `spec.adapters` that fits
/// it, and the reasons for the others. The bank's configuration is that of
/// the largest group of files of one rank, target set and factor kind (of
/// `spec.rank` when given), `default` without any; `accept` may refuse a
/// file that fits the bank (e.g. a head the model cannot run) or keep what
/// it needs of it.
pub(crate) fn load_bank<B: burn::tensor::backend::Backend, H: loraxs::AdapterHost<B> + Clone>(
    base: H,
    spec: &StartSpec,
    default: AdapterConfig,
    mut accept: impl FnMut(&str, &AdapterFile) -> Result<(), String>,
) -> Result<LoadedBank<B, H>, String> {
    let (found, mut not_loaded) = match &spec.adapters {
        Some(dir) => scan(dir)?,
        None => (Vec::new(), Vec::new()),
    };
    let mut files = Vec::new();
    for (name, path) in found {
        match AdapterFile::load(&path) {
            Ok(file) if file.config.method != Method::LoraXs => not_loaded.push(NotLoaded {
                path: path.display().to_string(),
                reason: format!(
                    "has method `{}`: the bank serves `lora-xs` adapters, which share A and B",
                    file.config.method.name()
                ),
            }),
            Ok(file) => files.push((name, path, file)),
            Err(e) => not_loaded.push(NotLoaded {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    let key = |c: &AdapterConfig| (c.rank, c.targets.patterns().to_vec(), format!("{:?}", c.factors));
    let mut groups: BTreeMap<_, usize> = BTreeMap::new();
    for (_, _, f) in &files {
        if spec.rank.is_none_or(|r| r == f.config.rank) {
            *groups.entry(key(&f.config)).or_default() += 1;
        }
    }
    let chosen = groups
        .iter()
        .max_by_key(|(k, n)| (**n, std::cmp::Reverse(k.0)))
        .map(|(k, _)| k.clone());
    let config = match &chosen {
        Some(k) => files
            .iter()
            .find(|(_, _, f)| key(&f.config) == *k)
            .unwrap()
            .2
            .config
            .clone(),
        None => default,
    };
    let mut bank = AdapterBank::new(base, &config).map_err(|e| e.to_string())?;
    // Check each file alone against the empty bank (cheap), then insert
    // the ones that fit in one copy.
    let mut fit = Vec::new();
    for (name, path, file) in files {
        let mut probe = bank.clone();
        let checked = probe
            .insert(&name, &file, &path)
            .map_err(|e| e.to_string())
            .and_then(|()| accept(&name, &file));
        match checked {
            Ok(()) => fit.push((name, path, file)),
            Err(reason) => not_loaded.push(NotLoaded {
                path: path.display().to_string(),
                reason,
            }),
        }
    }
    let entries: Vec<(&str, &AdapterFile, &Path)> =
        fit.iter().map(|(n, p, f)| (n.as_str(), f, p.as_path())).collect();
    bank.insert_all(&entries).map_err(|e| e.to_string())?;
    Ok((bank, fit, not_loaded))
}

impl<B: KernelBackend> Engine<B> {
    /// Loads the model and every adapter of the folder that fits one bank.
    pub(crate) fn start(
        spec: &StartSpec,
        registry: Registry,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, AdapterList), String> {
        let device = B::Device::default();
        let model_dir = ModelDir::new(&spec.model).map_err(|e| e.to_string())?;
        let (encoder, _) = model_dir.encoder::<B>(&device).map_err(|e| e.to_string())?;
        let hidden_size = encoder.hidden_size();
        let has_pooler = encoder.pooler.is_some();

        let mut heads = HashMap::new();
        let (bank, fit, not_loaded) = load_bank(
            encoder,
            spec,
            AdapterConfig::lora_xs(spec.rank.unwrap_or(DEFAULT_RANK))
                .with_targets(TargetModules::paper_glue()),
            |name, file| {
                if let Some(head) = head_of::<B>(file, hidden_size, has_pooler, &device)? {
                    heads.insert(name.to_string(), head);
                }
                Ok(())
            },
        )?;
        let config = model_dir.config().map_err(|e| e.to_string())?;
        let list = publish(
            &bank,
            (&fit, not_loaded),
            spec,
            hidden_size,
            spec.max_tokens.min(config.max_tokens()),
            (&registry, &metrics),
        );
        Ok((
            Self {
                bank,
                heads,
                hidden_size,
                has_pooler,
                pad_id: spec.pad_id,
                device,
                registry,
                metrics,
            },
            list,
        ))
    }

    /// [`Engine::admin`], surviving a panic: its reply is dropped (the
    /// handler answers 500) and the bank is as before (inserts are
    /// all-or-none).
    fn admin_guarded(&mut self, admin: Admin) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.admin(admin))).is_err() {
            eprintln!("loraxs-serve: an adapter change panicked; answering 500 and serving on");
        }
    }

    fn admin(&mut self, admin: Admin) {
        match admin {
            Admin::Load {
                name,
                path,
                file,
                reply,
            } => {
                let head = head_of::<B>(&file, self.hidden_size, self.has_pooler, &self.device)
                    .map_err(|reason| ApiError::unprocessable(format!("{}: {reason}", path.display())));
                let result = head.and_then(|head| {
                    self.bank
                        .insert(&name, &file, &path)
                        .map_err(|e| adapter_error(&e).param("path"))?;
                    if let Some(head) = head {
                        self.heads.insert(name.clone(), head);
                    }
                    let info = info(&self.bank, &name, &path, &file);
                    registry_add(&self.registry, info.clone());
                    Ok(info)
                });
                self.metrics
                    .adapters
                    .store(self.bank.len() as i64, Ordering::Relaxed);
                let _ = reply.send(result);
            }
            Admin::Remove { name, reply } => {
                let result = self.bank.remove(&name).map_err(|e| adapter_error(&e));
                if result.is_ok() {
                    self.heads.remove(&name);
                    registry_remove(&self.registry, &name);
                }
                self.metrics
                    .adapters
                    .store(self.bank.len() as i64, Ordering::Relaxed);
                let _ = reply.send(result);
            }
        }
    }

    /// Serves until the channel is closed (every sender dropped), then
    /// returns; everything received before is answered.
    pub(crate) fn run(mut self, inbox: Receiver<Msg>, batching: Batching) {
        loop {
            let first = match inbox.recv() {
                Ok(Msg::Job(job)) => job,
                Ok(Msg::Admin(a)) => {
                    self.admin_guarded(a);
                    continue;
                }
                Ok(Msg::Generate(job)) => {
                    self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    let _ = job.reply.send(Err(no_completions()));
                    continue;
                }
                Err(_) => break,
            };
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            let deadline = Instant::now() + batching.max_wait;
            let mut rows = first.sequences.len();
            let mut batch = vec![first];
            while rows < batching.max_batch {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                match inbox.recv_timeout(left) {
                    Ok(Msg::Job(job)) => {
                        self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                        rows += job.sequences.len();
                        batch.push(job);
                    }
                    // Slots are resolved when the batch runs, so a change
                    // now applies to it.
                    Ok(Msg::Admin(a)) => self.admin_guarded(a),
                    Ok(Msg::Generate(job)) => {
                        self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                        let _ = job.reply.send(Err(no_completions()));
                    }
                    Err(_) => break,
                }
            }
            self.answer(batch, batching.max_batch);
        }
    }

    /// Runs a batch of jobs and answers each; a panic inside the model
    /// answers 500 to the batch's jobs and the thread keeps serving.
    fn answer(&self, batch: Vec<Job>, max_batch: usize) {
        let (work, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|j| ((j.kind, j.adapter, j.sequences), j.reply))
            .unzip();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.compute(&work, max_batch)));
        match outcome {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown");
                eprintln!(
                    "loraxs-serve: the model panicked on a batch ({what}); answering 500 and serving on"
                );
                for reply in replies {
                    let _ = reply.send(Err(ApiError::internal(format!(
                        "the model failed on this batch: {what}"
                    ))));
                }
            }
        }
    }

    fn compute(&self, work: &[Work], max_batch: usize) -> Vec<Answer> {
        let mut results: Vec<Answer> = Vec::with_capacity(work.len());
        // (job, row, slot) of every row that can run.
        let mut rows = Vec::new();
        for (j, (kind, adapter, sequences)) in work.iter().enumerate() {
            let slot = match adapter {
                None => Ok(0),
                Some(name) => self
                    .bank
                    .slot(name)
                    .map_err(|e| adapter_error(&e).param("adapter")),
            };
            let slot = slot.and_then(|slot| match (kind, adapter) {
                (JobKind::Classify, Some(name)) if !self.heads.contains_key(name) => {
                    Err(ApiError::unprocessable(format!(
                        "adapter `{name}` has no classification head; use /v1/embeddings"
                    ))
                    .param("adapter"))
                }
                _ => Ok(slot),
            });
            match slot {
                Ok(slot) => {
                    results.push(Ok(vec![Vec::new(); sequences.len()]));
                    rows.extend((0..sequences.len()).map(|r| (j, r, slot)));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // Similar lengths together: less padding.
        rows.sort_by_key(|&(j, r, _)| work[j].2[r].ids.len());
        for chunk in rows.chunks(max_batch) {
            let outputs = self.forward(work, chunk);
            for (&(j, r, _), out) in chunk.iter().zip(outputs) {
                if let Ok(job) = &mut results[j] {
                    job[r] = out;
                }
            }
        }
        results
    }

    /// One encoder pass over `rows`, each through its own adapter; then
    /// the heads (classify rows) or pooling (embed rows).
    fn forward(&self, work: &[Work], rows: &[(usize, usize, usize)]) -> Vec<Vec<f32>> {
        let sequences: Vec<&TokenSequence> = rows.iter().map(|&(j, r, _)| &work[j].2[r]).collect();
        let tokens = TokenBatch::pad(&sequences, self.pad_id);
        let slots: Vec<usize> = rows.iter().map(|&(_, _, s)| s).collect();
        let model = self.bank.route(&slots, &self.device);
        let input = model
            .input(&tokens, &self.device)
            .expect("the server's tokenizer yields ids the model knows");
        let out = model.forward(input);
        let m = &self.metrics;
        m.batches.fetch_add(1, Ordering::Relaxed);
        m.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        m.tokens.fetch_add(
            tokens.attention_mask.iter().filter(|&&x| x != 0).count() as u64,
            Ordering::Relaxed,
        );
        let mut distinct = slots.clone();
        distinct.sort_unstable();
        distinct.dedup();
        m.batch_adapters
            .fetch_add(distinct.len() as u64, Ordering::Relaxed);

        let (n, t, h) = (tokens.batch, tokens.seq_len, self.hidden_size);
        let mut outputs = vec![Vec::new(); n];
        // Embeddings: the mean over real tokens, L2-normalised.
        let embed: Vec<usize> = (0..n).filter(|&i| work[rows[i].0].0 == JobKind::Embed).collect();
        if !embed.is_empty() {
            let mask: Vec<f32> = tokens.attention_mask.iter().map(|&x| x as f32).collect();
            let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [n, t, 1]), &self.device);
            let idx = self.index(&embed);
            let mask = mask.select(0, idx.clone());
            let hidden = out.hidden.clone().select(0, idx);
            let count = mask.clone().sum_dim(1).clamp_min(1e-9);
            let mean = (hidden * mask).sum_dim(1).div(count).reshape([embed.len(), h]);
            let norm = mean.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
            let values = rows_of(mean.div(norm), h);
            for (i, v) in embed.iter().zip(values) {
                outputs[*i] = v;
            }
        }
        // Classification: each adapter's head on its rows.
        let mut by_adapter: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            let (kind, adapter, _) = &work[rows[i].0];
            if *kind == JobKind::Classify {
                by_adapter
                    .entry(adapter.as_deref().expect("checked"))
                    .or_default()
                    .push(i);
            }
        }
        for (name, idx_rows) in by_adapter {
            let head = &self.heads[name];
            let idx = self.index(&idx_rows);
            let hidden = out.hidden.clone().select(0, idx.clone());
            let pooled = out.pooled.clone().map(|p| p.select(0, idx));
            let logits = head.forward(hidden, pooled);
            for (i, v) in idx_rows.iter().zip(rows_of(logits, head.num_labels)) {
                outputs[*i] = v;
            }
        }
        outputs
    }

    fn index(&self, rows: &[usize]) -> Tensor<B, 1, Int> {
        let ids: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        Tensor::from_data(TensorData::new(ids, [rows.len()]), &self.device)
    }
}

fn rows_of<B: KernelBackend>(t: Tensor<B, 2>, width: usize) -> Vec<Vec<f32>> {
    let values: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32 values");
    values.chunks(width.max(1)).map(<[f32]>::to_vec).collect()
}

/// What `GET /v1/adapters` shows of an adapter in `bank`.
pub(crate) fn info<B: burn::tensor::backend::Backend, H: loraxs::AdapterHost<B> + Clone>(
    bank: &AdapterBank<B, H>,
    name: &str,
    path: &Path,
    file: &AdapterFile,
) -> AdapterInfo {
    AdapterInfo {
        name: name.to_string(),
        path: path.display().to_string(),
        rank: file.config.rank,
        alpha: file.config.alpha,
        adapter_values: bank.bytes_per_adapter() / std::mem::size_of::<f32>(),
        bank_bytes: bank.bytes_per_adapter(),
        head_outputs: file.head_outputs(),
        labels: file.labels.clone(),
    }
}
