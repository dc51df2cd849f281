//! Causal-LM fine-tuning of a decoder on math word problems (the paper's
//! GSM8K / MetaMathQA runs) as a job of the shared loop: loss on the
//! response tokens only, length-bucketed micro-batches, gradient
//! accumulation, cosine schedule with warm-up; evaluation by greedy
//! generation and exact match of the final answer, plus the mean
//! answer-token loss.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use loraxs::interop::tensor_values;
use loraxs::{AdapterConfig, AdapterFile, SaveOptions};
use loraxs_data::math::{MathExample, MathFormat, exact_match, flexible_match, read_math, strip_calculator};
use loraxs_models::{CausalTokenizer, ChatMessage, Decoder, GenerationConfig, generate};
use serde::{Deserialize, Serialize};

use crate::engine::{self, ADAPTER_FILE, CheckpointState, Job, MicroLoss, Plan, resume_state};
use crate::optim::{Optimizers, ParamGroups};
use crate::record::{EpochRecord, Metrics};
use crate::trainer::{TrainOptions, load_optimizers, subset_indices};
use crate::{CosineSchedule, Schedule, TrainError};

/// How a problem is put to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// The Alpaca instruction prompt of the authors' (MetaMath's) scripts.
    Alpaca,
    /// The model's chat template, the problem as the user's message.
    Chat,
}

/// The Alpaca prompt the paper's math scripts train and evaluate with.
pub const ALPACA_PROMPT: &str = "Below is an instruction that describes a task. Write a response that \
appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// One data file of a math run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MathData {
    /// The file, relative to the data folder (`gsm8k/train.jsonl`) or
    /// absolute.
    pub file: PathBuf,
    /// Its layout.
    pub format: MathFormat,
}

/// A causal-LM run's configuration: everything that changes its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalRunConfig {
    /// The adapter.
    pub adapter: AdapterConfig,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay (the authors use 0).
    pub weight_decay: f64,
    /// Fraction of steps spent warming up (the authors: 0.02).
    pub warmup_ratio: f64,
    /// Epochs.
    pub epochs: usize,
    /// Sequences per micro-batch.
    pub micro_batch: usize,
    /// Micro-batches per optimiser step (effective batch = micro_batch ×
    /// accumulation).
    pub accumulation: usize,
    /// Tokens per sequence, prompt and response.
    pub max_length: usize,
    /// Training data.
    pub train_data: MathData,
    /// Evaluation data.
    pub eval_data: MathData,
    /// Use a seeded subset of N training examples.
    pub train_subset: Option<usize>,
    /// Evaluate on the first N evaluation examples.
    pub eval_subset: Option<usize>,
    /// How problems are put to the model.
    pub prompt: PromptStyle,
    /// Generation budget per evaluation problem.
    pub max_new_tokens: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Micro-batches per length-sorting window of the sampler.
    pub bucket_window: usize,
    /// Stop each epoch after this many steps (smoke tests).
    #[serde(default)]
    pub max_steps_per_epoch: Option<usize>,
}

impl CausalRunConfig {
    /// The authors' recipe around an adapter and data: learning rate
    /// 4e-3, cosine schedule with 2 % warm-up, no weight decay, effective
    /// batch 128 (4 × 32), 512 tokens, 2 epochs, Alpaca prompts.
    pub fn paper(adapter: AdapterConfig, train_data: MathData, eval_data: MathData) -> Self {
        Self {
            adapter,
            lr: 4e-3,
            weight_decay: 0.0,
            warmup_ratio: 0.02,
            epochs: 2,
            micro_batch: 4,
            accumulation: 32,
            max_length: 512,
            train_data,
            eval_data,
            train_subset: Some(100_000),
            eval_subset: None,
            prompt: PromptStyle::Alpaca,
            max_new_tokens: 512,
            seed: 0,
            bucket_window: 8,
            max_steps_per_epoch: None,
        }
    }

    /// A readable key naming every setting that changes the result.
    pub fn key(&self) -> String {
        let stem = self
            .train_data
            .file
            .file_stem()
            .map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned());
        let data = format!(
            "{}-{stem}",
            serde_json::to_value(self.train_data.format)
                .unwrap()
                .as_str()
                .unwrap_or("")
        );
        let n = self.train_subset.map_or("all".into(), |n| n.to_string());
        let e = self.eval_subset.map_or("all".into(), |n| n.to_string());
        let prompt = serde_json::to_value(self.prompt).unwrap();
        let mut key = format!(
            "{data}-{}-r{}-a{}-s{}-lr{}-e{}-n{n}-b{}x{}-t{}-{}-eval{e}-g{}",
            self.adapter.preset_name(),
            self.adapter.rank,
            self.adapter.alpha,
            self.seed,
            self.lr,
            self.epochs,
            self.micro_batch,
            self.accumulation,
            self.max_length,
            prompt.as_str().unwrap_or(""),
            self.max_new_tokens,
        );
        if self.weight_decay != 0.0 {
            key.push_str(&format!("-wd{}", self.weight_decay));
        }
        if self.warmup_ratio != 0.02 {
            key.push_str(&format!("-wu{}", self.warmup_ratio));
        }
        if let Some(m) = self.max_steps_per_epoch {
            key.push_str(&format!("-max{m}"));
        }
        key
    }
}

/// A finished causal-LM run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalRunRecord {
    /// [`CausalRunConfig::key`].
    pub key: String,
    /// The configuration.
    pub config: CausalRunConfig,
    /// Per-epoch outcomes (`accuracy`, `answer_loss`).
    pub epochs: Vec<EpochRecord>,
    /// The last epoch (the authors evaluate the final adapter).
    pub last: EpochRecord,
    /// Trainable adapter values.
    pub trainable_adapter: usize,
    /// Bytes of the adapter file (R only for LoRA-XS).
    pub adapter_bytes: usize,
    /// Training examples per epoch.
    pub train_examples: usize,
    /// Evaluation problems.
    pub eval_examples: usize,
    /// Wall time, seconds (training and evaluation).
    pub wall_seconds: f64,
    /// Training throughput, loss tokens per second.
    pub tokens_per_second: f64,
    /// Backend name.
    pub backend: String,
    /// Model name or path.
    pub model: String,
    /// Git commit of the code that ran.
    pub git_commit: String,
}

/// One problem, tokenised: prompt then response (ending with the stop
/// token), truncated to `max_length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausalExample {
    /// Prompt and response ids.
    pub ids: Vec<u32>,
    /// How many of `ids` are the prompt.
    pub prompt_len: usize,
    /// The reference final answer.
    pub answer: String,
}

impl CausalExample {
    /// Tokens the loss is computed on (the response).
    pub fn loss_tokens(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// The prompt text of `question` in `style`.
pub fn prompt_text(
    tokenizer: &CausalTokenizer,
    style: PromptStyle,
    question: &str,
) -> Result<String, TrainError> {
    Ok(match style {
        PromptStyle::Alpaca => ALPACA_PROMPT.replace("{instruction}", question),
        PromptStyle::Chat => tokenizer.apply_chat_template(&[ChatMessage::new("user", question)], true)?,
    })
}

/// Tokenises problems for training or loss evaluation. A prompt that
/// leaves no room for a response within `max_length` is an error naming
/// the example; long responses are cut at `max_length`.
pub fn tokenize_math(
    examples: &[MathExample],
    tokenizer: &CausalTokenizer,
    style: PromptStyle,
    max_length: usize,
    source: &Path,
) -> Result<Vec<CausalExample>, TrainError> {
    let stop = *tokenizer.stop_ids().first().ok_or_else(|| {
        TrainError::Tokenizer(loraxs_tokenizer::TokenizerError::Input(format!(
            "{}: the tokenizer names no end-of-sequence token to end responses with",
            tokenizer.source().display()
        )))
    })?;
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let prompt_text = prompt_text(tokenizer, style, &e.question)?;
            let prompt = tokenizer.encode_prompt(&prompt_text)?;
            if prompt.len() >= max_length {
                return Err(TrainError::Data(loraxs_data::DataError::Row {
                    path: source.into(),
                    line: i + 1,
                    reason: format!(
                        "the prompt is {} tokens, leaving no room for a response within max_length {max_length}",
                        prompt.len()
                    ),
                }));
            }
            // Prompt and response tokenised as one text, as the paper's
            // code does (a SentencePiece vocabulary would otherwise give the
            // response its own `▁` prefix); where the joint ids do not start
            // with the prompt's (a merge across the boundary), the two are
            // tokenised apart.
            let response = strip_calculator(&e.response);
            let joint = tokenizer.encode_prompt(&format!("{prompt_text}{response}"))?;
            let mut ids = if joint.starts_with(&prompt) {
                joint
            } else {
                let mut ids = prompt.clone();
                ids.extend(tokenizer.encode(&response)?);
                ids
            };
            ids.push(stop);
            ids.truncate(max_length);
            Ok(CausalExample {
                ids,
                prompt_len: prompt.len(),
                answer: e.answer.clone(),
            })
        })
        .collect()
}

/// Length-bucketed micro-batches of one epoch: a seeded shuffle, windows
/// of `window` micro-batches sorted by length (less padding), the
/// micro-batches shuffled again, grouped `accumulation` to a step.
pub fn causal_epoch_steps(
    lengths: &[usize],
    micro_batch: usize,
    accumulation: usize,
    window: usize,
    seed: u64,
) -> Vec<Vec<Vec<usize>>> {
    let mut state = seed ^ 0x00ca_05a1_u64;
    let mut shuffle = |v: &mut Vec<usize>| {
        for i in (1..v.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = ((state >> 33) as usize) % (i + 1);
            v.swap(i, j);
        }
    };
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    shuffle(&mut order);
    let chunk = micro_batch.max(1) * window.max(1);
    let mut micro: Vec<Vec<usize>> = Vec::new();
    for w in order.chunks(chunk) {
        let mut w = w.to_vec();
        if window > 1 {
            w.sort_by_key(|&i| lengths[i]);
        }
        micro.extend(w.chunks(micro_batch.max(1)).map(<[usize]>::to_vec));
    }
    let mut batch_order: Vec<usize> = (0..micro.len()).collect();
    shuffle(&mut batch_order);
    let micro: Vec<Vec<usize>> = batch_order.into_iter().map(|i| micro[i].clone()).collect();
    micro
        .chunks(accumulation.max(1))
        .map(<[Vec<usize>]>::to_vec)
        .collect()
}

/// Right-padded ids and mask of some examples, and the flat positions
/// whose next token is a response token, with those tokens.
fn micro_batch(examples: &[&CausalExample], pad: u32) -> (Vec<u32>, Vec<u32>, usize, Vec<i64>, Vec<i64>) {
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (b, e) in examples.iter().enumerate() {
        ids.extend(
            e.ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad, t - e.ids.len())),
        );
        mask.extend(std::iter::repeat_n(1u32, e.ids.len()).chain(std::iter::repeat_n(0, t - e.ids.len())));
        for p in e.prompt_len - 1..e.ids.len() - 1 {
            rows.push((b * t + p) as i64);
            targets.push(e.ids[p + 1] as i64);
        }
    }
    (ids, mask, t, rows, targets)
}

/// Sum of `−log p(token)` over the response tokens of `examples` (each
/// predicted from the tokens before it), and how many there are. Divided
/// by a step's response tokens, it is the loss [`train_causal`] takes the
/// gradient of.
pub fn response_nll<B: Backend>(
    model: &Decoder<B>,
    examples: &[&CausalExample],
    pad: u32,
    device: &B::Device,
) -> Result<(Tensor<B, 1>, usize), TrainError> {
    let (ids, mask, t, rows, targets) = micro_batch(examples, pad);
    let n = rows.len();
    let hidden = model.forward_hidden(&ids, examples.len(), &mask, None, device)?;
    let h = hidden.dims()[2];
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), device);
    let picked = hidden.reshape([examples.len() * t, h]).select(0, rows);
    let logits = model
        .logits(picked.reshape([1, n, h]))
        .reshape([n, model.vocab_size()]);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
    let nll = log_softmax(logits, 1).gather(1, targets).sum().neg();
    Ok((nll, n))
}

/// Evaluation of a decoder on math problems: greedy generation and exact
/// match of the number after the final-answer marker (`accuracy`, the
/// authors' scoring), the same or else the text's last number
/// (`accuracy_flexible`), and the mean `−log p` of the reference
/// responses' tokens (`answer_loss`).
pub struct MathEval<'a> {
    /// The problems.
    pub problems: &'a [MathExample],
    /// The same, tokenised with their reference responses.
    pub tokenized: &'a [CausalExample],
    /// The tokenizer.
    pub tokenizer: &'a CausalTokenizer,
    /// How problems are put to the model.
    pub prompt: PromptStyle,
    /// Generation budget.
    pub max_new_tokens: usize,
    /// Prompts generated together.
    pub batch: usize,
}

impl MathEval<'_> {
    /// `accuracy`, `accuracy_flexible` and `answer_loss` of `model`.
    pub fn run<B: Backend>(&self, model: &Decoder<B>, device: &B::Device) -> Result<Metrics, TrainError> {
        let pad = self.tokenizer.pad_id();
        let (mut nll, mut tokens) = (0.0, 0);
        for chunk in self.tokenized.chunks(self.batch.max(1)) {
            let refs: Vec<&CausalExample> = chunk.iter().collect();
            let (sum, n) = response_nll(model, &refs, pad, device)?;
            nll += tensor_values(sum)[0] as f64;
            tokens += n;
        }
        let config = GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            stop_ids: self.tokenizer.stop_ids().to_vec(),
            ..Default::default()
        };
        let (mut correct, mut flexible) = (0, 0);
        for chunk in self.problems.chunks(self.batch.max(1)) {
            let prompts = chunk
                .iter()
                .map(|p| {
                    Ok(self.tokenizer.encode_prompt(&prompt_text(
                        self.tokenizer,
                        self.prompt,
                        &p.question,
                    )?)?)
                })
                .collect::<Result<Vec<_>, TrainError>>()?;
            let out = generate(model, &prompts, pad, &config, device)?;
            for (p, tokens) in chunk.iter().zip(&out.tokens) {
                let text = self.tokenizer.decode(tokens, true)?;
                correct += usize::from(exact_match(&text, &p.answer));
                flexible += usize::from(flexible_match(&text, &p.answer));
            }
        }
        let mut metrics = Metrics::new();
        let n = self.problems.len().max(1) as f64;
        metrics.insert("accuracy".into(), correct as f64 / n);
        metrics.insert("accuracy_flexible".into(), flexible as f64 / n);
        metrics.insert("answer_loss".into(), nll / tokens.max(1) as f64);
        Ok(metrics)
    }
}

struct CausalJob<'a> {
    config: &'a CausalRunConfig,
    train: Vec<CausalExample>,
    eval: MathEval<'a>,
}

impl<B: AutodiffBackend> Job<B> for CausalJob<'_> {
    type Model = Decoder<B>;

    fn epoch_steps(&self, epoch: usize) -> Vec<Vec<Vec<usize>>> {
        let lengths: Vec<usize> = self.train.iter().map(|e| e.ids.len()).collect();
        causal_epoch_steps(
            &lengths,
            self.config.micro_batch,
            self.config.accumulation,
            self.config.bucket_window,
            self.config.seed.wrapping_add(epoch as u64 * 7919),
        )
    }

    fn loss(
        &self,
        model: &Decoder<B>,
        micro: &[usize],
        step: &[Vec<usize>],
        device: &B::Device,
    ) -> Result<MicroLoss<B>, TrainError> {
        // Every response token of the step weighs the same (whichever
        // micro-batch or data-parallel share holds it).
        let step_tokens: usize = step.iter().flatten().map(|&i| self.train[i].loss_tokens()).sum();
        let refs: Vec<&CausalExample> = micro.iter().map(|&i| &self.train[i]).collect();
        let (nll, n) = response_nll(model, &refs, self.eval.tokenizer.pad_id(), device)?;
        Ok(MicroLoss {
            loss: nll.div_scalar(step_tokens.max(1) as f64),
            tokens: n,
        })
    }

    fn evaluate(&self, model: &Decoder<B::InnerBackend>, device: &B::Device) -> Result<Metrics, TrainError> {
        self.eval.run(model, device)
    }

    fn adapter_file(&self, model: &Decoder<B>) -> Result<AdapterFile, TrainError> {
        Ok(AdapterFile::from_model(
            model,
            &self.config.adapter,
            SaveOptions::default(),
        )?)
    }
}

fn data_path(data: &MathData, data_dir: &Path) -> PathBuf {
    if data.file.is_absolute() {
        data.file.clone()
    } else {
        data_dir.join(&data.file)
    }
}

/// The evaluation problems of a run (its `eval_subset`, in file order).
pub fn eval_problems(config: &CausalRunConfig, data_dir: &Path) -> Result<Vec<MathExample>, TrainError> {
    let mut problems = read_math(&data_path(&config.eval_data, data_dir), config.eval_data.format)?;
    if let Some(n) = config.eval_subset {
        problems.truncate(n);
    }
    Ok(problems)
}

/// Fine-tunes an adapter on a decoder with the shared loop; `load` builds
/// a fresh frozen base model (called once). Returns `Ok(None)` when
/// `stop_after_epochs` stopped it (a checkpoint is on disk).
pub fn train_causal<B: AutodiffBackend>(
    config: &CausalRunConfig,
    load: impl FnOnce() -> Result<Decoder<B>, TrainError>,
    tokenizer: &CausalTokenizer,
    data_dir: &Path,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<Option<CausalRunRecord>, TrainError> {
    let wall = Instant::now();
    let train_path = data_path(&config.train_data, data_dir);
    let mut problems = read_math(&train_path, config.train_data.format)?;
    if let Some(n) = config.train_subset {
        problems = subset_indices(problems.len(), n, config.seed)
            .into_iter()
            .map(|i| problems[i].clone())
            .collect();
    }
    let train = tokenize_math(
        &problems,
        tokenizer,
        config.prompt,
        config.max_length,
        &train_path,
    )?;
    let eval_path = data_path(&config.eval_data, data_dir);
    let eval_set = eval_problems(config, data_dir)?;
    let eval_tokens = tokenize_math(&eval_set, tokenizer, config.prompt, config.max_length, &eval_path)?;

    let checkpoint = options.checkpoint_dir.as_ref().map(|d| d.join(config.key()));
    let base = load()?;
    let resumed = resume_state(checkpoint.as_ref(), options.resume)?;
    let resumed_from = resumed.as_ref().and(checkpoint.clone());
    let (model, optims, state) = match resumed {
        Some(state) => {
            let dir = checkpoint.as_ref().expect("resume needs a checkpoint folder");
            let path = dir.join(ADAPTER_FILE);
            let model = AdapterFile::load(&path)?.apply(base, &path)?.model;
            let optims = Optimizers::new(ParamGroups::without_head(&model), config.weight_decay);
            (model, load_optimizers(optims, dir, device)?, state)
        }
        None => {
            let model = loraxs_models::inject_with_bar(base, &config.adapter, options.quiet)?.model;
            let optims = Optimizers::new(ParamGroups::without_head(&model), config.weight_decay);
            (model, optims, CheckpointState::fresh(config.key()))
        }
    };
    let counts = loraxs::param_count(&model, Some(&config.adapter));
    let adapter_bytes = AdapterFile::from_model(&model, &config.adapter, SaveOptions::default())?
        .to_bytes()?
        .len();
    let steps_per_epoch = {
        let micro = train.len().div_ceil(config.micro_batch.max(1));
        let full = micro.div_ceil(config.accumulation.max(1));
        config.max_steps_per_epoch.map_or(full, |m| m.min(full))
    };
    let schedule = Schedule::Cosine(CosineSchedule::new(
        config.lr,
        config.warmup_ratio,
        steps_per_epoch * config.epochs,
    ));
    let plan = Plan {
        key: config.key(),
        epochs: config.epochs,
        steps_per_epoch,
        seed: config.seed,
        adapter_schedule: schedule,
        head_schedule: schedule,
        label: format!("math {} r={}", config.adapter.preset_name(), config.adapter.rank),
    };
    let train_examples = train.len();
    let job = CausalJob {
        config,
        train,
        eval: MathEval {
            problems: &eval_set,
            tokenized: &eval_tokens,
            tokenizer,
            prompt: config.prompt,
            max_new_tokens: config.max_new_tokens,
            batch: config.micro_batch.max(8),
        },
    };
    let wall_before = state.wall_seconds;
    let done = engine::run_on_peers(
        &job,
        &plan,
        model,
        optims,
        state,
        checkpoint.as_deref(),
        options,
        device,
        resumed_from.as_deref(),
        |copy| Optimizers::new(ParamGroups::without_head(copy), config.weight_decay),
    )?;
    let Some((_, state)) = done else {
        return Ok(None);
    };
    let last = state
        .history
        .last()
        .cloned()
        .ok_or_else(|| TrainError::Checkpoint {
            path: PathBuf::new(),
            reason: "no epoch ran".into(),
        })?;
    Ok(Some(CausalRunRecord {
        key: config.key(),
        config: config.clone(),
        epochs: state.history.clone(),
        last,
        trainable_adapter: counts.adapter,
        adapter_bytes,
        train_examples,
        eval_examples: eval_set.len(),
        wall_seconds: wall_before + wall.elapsed().as_secs_f64(),
        tokens_per_second: state.tokens_seen as f64 / state.train_seconds.max(1e-9),
        backend: options.backend.clone(),
        model: options.model.clone(),
        git_commit: options.git_commit.clone(),
    }))
}

/// The base model's row: [`MathEval`] with no adapter.
pub fn evaluate_base<B: Backend>(
    config: &CausalRunConfig,
    model: &Decoder<B>,
    tokenizer: &CausalTokenizer,
    data_dir: &Path,
    device: &B::Device,
) -> Result<Metrics, TrainError> {
    let eval_path = data_path(&config.eval_data, data_dir);
    let problems = eval_problems(config, data_dir)?;
    let tokenized = tokenize_math(&problems, tokenizer, config.prompt, config.max_length, &eval_path)?;
    MathEval {
        problems: &problems,
        tokenized: &tokenized,
        tokenizer,
        prompt: config.prompt,
        max_new_tokens: config.max_new_tokens,
        batch: config.micro_batch.max(8),
    }
    .run(model, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_steps_cover_every_example_once_in_buckets() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 91 + 5).collect();
        let steps = causal_epoch_steps(&lengths, 4, 3, 4, 11);
        let mut seen: Vec<usize> = steps.iter().flatten().flatten().copied().collect();
        assert_eq!(steps.len(), 103usize.div_ceil(4).div_ceil(3));
        assert!(steps.iter().all(|s| s.len() <= 3));
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        // Seeded: the same seed, the same order; another seed, another.
        assert_eq!(steps, causal_epoch_steps(&lengths, 4, 3, 4, 11));
        assert_ne!(steps, causal_epoch_steps(&lengths, 4, 3, 4, 12));
        // Inside a window, micro-batches hold neighbouring lengths: the
        // padding of bucketed batches is below that of random ones.
        let pad = |steps: &Vec<Vec<Vec<usize>>>| -> usize {
            steps
                .iter()
                .flatten()
                .map(|m| {
                    let t = m.iter().map(|&i| lengths[i]).max().unwrap();
                    m.iter().map(|&i| t - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        assert!(pad(&steps) < pad(&causal_epoch_steps(&lengths, 4, 3, 1, 11)));
    }

    #[test]
    fn micro_batches_predict_response_tokens_only() {
        let a = CausalExample {
            ids: vec![10, 11, 12, 20, 21, 2],
            prompt_len: 3,
            answer: "1".into(),
        };
        let b = CausalExample {
            ids: vec![10, 30, 31, 2],
            prompt_len: 2,
            answer: "2".into(),
        };
        let (ids, mask, t, rows, targets) = micro_batch(&[&a, &b], 0);
        assert_eq!(t, 6);
        assert_eq!(ids, [10, 11, 12, 20, 21, 2, 10, 30, 31, 2, 0, 0]);
        assert_eq!(mask, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        // a: positions 2, 3, 4 predict 20, 21, 2; b: positions 1, 2 (flat
        // 7, 8) predict 31, 2. No prompt token and no padding is a target.
        assert_eq!(rows, [2, 3, 4, 7, 8]);
        assert_eq!(targets, [20, 21, 2, 31, 2]);
    }
}
