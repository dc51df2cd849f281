//! The model thread for a decoder: completions through the adapter bank.
//!
//! Greedy requests that arrive together are generated in one batch, each
//! row through its own adapter (rows stay in place for the whole
//! generation, so the routing holds at every step). A sampled request runs
//! alone: its tokens then depend only on its own seed, not on what it was
//! batched with.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use loraxs::{AdapterBank, AdapterConfig, TargetModules};
use loraxs_models::{Decoder, Generated, GenerationConfig, KernelBackend, generate_with};
use tokio::sync::{mpsc, oneshot};

use crate::api::{AdapterList, ApiError, adapter_error};
use crate::engine::{
    Admin, Batching, Msg, Registry, StartSpec, info, load_bank, publish, registry_add, registry_remove,
};
use crate::metrics::Metrics;

/// The rank of a decoder bank when neither `--rank` nor an adapter file
/// says: the paper's decoder rank.
pub const DEFAULT_DECODER_RANK: usize = 64;

/// One completion request's prompts.
pub(crate) struct GenJob {
    /// `None`: the base model.
    pub adapter: Option<String>,
    pub prompts: Vec<Vec<u32>>,
    pub config: GenerationConfig,
    pub reply: oneshot::Sender<Result<Generated, ApiError>>,
    /// Set for a streamed request: where its tokens go as they come.
    pub stream: Option<TokenStream>,
}

/// The tokens of a streamed request as the model makes them: `(prompt,
/// token)` on `tokens`. A prompt whose `stop` flag is set (a stop text was
/// seen, the client went away), or whose receiver is gone, ends at its
/// next token (its row idles until the batch ends; a batch whose rows
/// have all ended stops).
pub(crate) struct TokenStream {
    pub tokens: mpsc::UnboundedSender<(usize, u32)>,
    pub stop: Arc<[AtomicBool]>,
}

impl TokenStream {
    /// Passes on `token` of `prompt`; whether that prompt goes on.
    fn send(&self, prompt: usize, token: u32) -> bool {
        self.tokens.send((prompt, token)).is_ok() && !self.stop[prompt].load(Ordering::Relaxed)
    }
}

/// What one job brings to a batch.
type Work = (
    Option<String>,
    Vec<Vec<u32>>,
    GenerationConfig,
    Option<TokenStream>,
);

pub(crate) struct DecoderEngine<B: KernelBackend> {
    bank: AdapterBank<B, Decoder<B>>,
    pad_id: u32,
    device: B::Device,
    registry: Registry,
    metrics: Arc<Metrics>,
}

impl<B: KernelBackend> DecoderEngine<B> {
    pub(crate) fn start(
        spec: &StartSpec,
        registry: Registry,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, AdapterList), String> {
        let device = B::Device::default();
        let (decoder, config, _) =
            loraxs_models::load_decoder::<B>(&spec.model, &device).map_err(|e| e.to_string())?;
        let context = decoder.max_positions;
        let default = AdapterConfig::lora_xs(spec.rank.unwrap_or(DEFAULT_DECODER_RANK))
            .with_alpha(spec.rank.unwrap_or(DEFAULT_DECODER_RANK) as f64)
            .with_targets(TargetModules::paper_decoder());
        let (bank, fit, not_loaded) = load_bank(decoder, spec, default, |_, file| {
            if file.tensors.keys().any(|k| k.starts_with(loraxs::HEAD_PREFIX)) {
                Err("carries a task head, which a decoder does not run".into())
            } else {
                Ok(())
            }
        })?;
        let list = publish(
            &bank,
            (&fit, not_loaded),
            spec,
            config.hidden_size,
            spec.max_tokens.min(context),
            (&registry, &metrics),
        );
        Ok((
            Self {
                bank,
                pad_id: spec.pad_id,
                device,
                registry,
                metrics,
            },
            list,
        ))
    }

    fn admin(&mut self, admin: Admin) {
        match admin {
            Admin::Load {
                name,
                path,
                file,
                reply,
            } => {
                let result = if file.tensors.keys().any(|k| k.starts_with(loraxs::HEAD_PREFIX)) {
                    Err(ApiError::unprocessable(format!(
                        "{}: carries a task head, which a decoder does not run",
                        path.display()
                    ))
                    .param("path"))
                } else {
                    self.bank
                        .insert(&name, &file, &path)
                        .map_err(|e| adapter_error(&e).param("path"))
                        .map(|()| {
                            let info = info(&self.bank, &name, &path, &file);
                            registry_add(&self.registry, info.clone());
                            info
                        })
                };
                self.metrics
                    .adapters
                    .store(self.bank.len() as i64, Ordering::Relaxed);
                let _ = reply.send(result);
            }
            Admin::Remove { name, reply } => {
                let result = self.bank.remove(&name).map_err(|e| adapter_error(&e));
                if result.is_ok() {
                    registry_remove(&self.registry, &name);
                }
                self.metrics
                    .adapters
                    .store(self.bank.len() as i64, Ordering::Relaxed);
                let _ = reply.send(result);
            }
        }
    }

    fn admin_guarded(&mut self, admin: Admin) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.admin(admin))).is_err() {
            eprintln!("loraxs-serve: an adapter change panicked; answering 500 and serving on");
        }
    }

    pub(crate) fn run(mut self, inbox: Receiver<Msg>, batching: Batching) {
        loop {
            let first = match inbox.recv() {
                Ok(Msg::Generate(job)) => job,
                Ok(Msg::Admin(a)) => {
                    self.admin_guarded(a);
                    continue;
                }
                Ok(Msg::Job(job)) => {
                    self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    let _ = job.reply.send(Err(ApiError::not_found(
                        "this server serves a decoder: use /v1/completions",
                    )));
                    continue;
                }
                Err(_) => break,
            };
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            let mut batch = vec![first];
            // Greedy requests with the same limits share a batch.
            if batch[0].config.temperature <= 0.0 {
                let deadline = Instant::now() + batching.max_wait;
                let mut rows = batch[0].prompts.len();
                let mut later = Vec::new();
                while rows < batching.max_batch {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    match inbox.recv_timeout(left) {
                        Ok(Msg::Generate(job)) => {
                            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                            if job.config == batch[0].config {
                                rows += job.prompts.len();
                                batch.push(job);
                            } else {
                                later.push(job);
                            }
                        }
                        Ok(Msg::Admin(a)) => self.admin_guarded(a),
                        Ok(Msg::Job(job)) => {
                            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                            let _ = job.reply.send(Err(ApiError::not_found(
                                "this server serves a decoder: use /v1/completions",
                            )));
                        }
                        Err(_) => break,
                    }
                }
                self.answer(batch);
                for job in later {
                    self.answer(vec![job]);
                }
            } else {
                self.answer(batch);
            }
        }
    }

    fn answer(&self, jobs: Vec<GenJob>) {
        let (work, replies): (Vec<Work>, Vec<_>) = jobs
            .into_iter()
            .map(|j| ((j.adapter, j.prompts, j.config, j.stream), j.reply))
            .unzip();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.generate(&work)));
        match outcome {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(_) => {
                eprintln!("loraxs-serve: generation panicked; answering 500 and serving on");
                for reply in replies {
                    let _ = reply.send(Err(ApiError::internal("generation failed on this batch")));
                }
            }
        }
    }

    fn generate(&self, work: &[Work]) -> Vec<Result<Generated, ApiError>> {
        let mut results: Vec<Result<Generated, ApiError>> = Vec::new();
        let mut slots = Vec::new();
        let mut prompts = Vec::new();
        let mut owners = Vec::new();
        for (j, (adapter, job_prompts, _, _)) in work.iter().enumerate() {
            let slot = match adapter {
                None => Ok(0),
                Some(name) => self.bank.slot(name).map_err(|e| adapter_error(&e).param("model")),
            };
            match slot {
                Ok(slot) => {
                    results.push(Ok(Generated {
                        tokens: Vec::new(),
                        finish: Vec::new(),
                    }));
                    for (k, p) in job_prompts.iter().enumerate() {
                        slots.push(slot);
                        prompts.push(p.clone());
                        owners.push((j, k));
                    }
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if prompts.is_empty() {
            return results;
        }
        let model = self.bank.route(&slots, &self.device);
        let m = &self.metrics;
        m.batches.fetch_add(1, Ordering::Relaxed);
        m.rows.fetch_add(prompts.len() as u64, Ordering::Relaxed);
        m.tokens.fetch_add(
            prompts.iter().map(Vec::len).sum::<usize>() as u64,
            Ordering::Relaxed,
        );
        let mut distinct = slots.clone();
        distinct.sort_unstable();
        distinct.dedup();
        m.batch_adapters
            .fetch_add(distinct.len() as u64, Ordering::Relaxed);
        let mut on_token = |row: usize, token: u32| {
            m.generated.fetch_add(1, Ordering::Relaxed);
            let (j, k) = owners[row];
            work[j].3.as_ref().is_none_or(|s| s.send(k, token))
        };
        match generate_with(
            &model,
            &prompts,
            self.pad_id,
            &work[0].2,
            &self.device,
            &mut on_token,
        ) {
            Ok(generated) => {
                for (((owner, _), tokens), finish) in
                    owners.iter().zip(generated.tokens).zip(generated.finish)
                {
                    if let Ok(r) = &mut results[*owner] {
                        r.tokens.push(tokens);
                        r.finish.push(finish);
                    }
                }
            }
            Err(e) => {
                for (owner, _) in owners {
                    results[owner] = Err(ApiError::bad_request(e.to_string()));
                }
            }
        }
        results
    }
}
