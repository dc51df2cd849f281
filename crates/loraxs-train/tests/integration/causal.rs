//! Causal-LM fine-tuning on real GSM8K lines with SmolLM2's tokenizer and
//! chat template, in a few steps: gradient accumulation makes the step of
//! the whole batch (two micro-batches of 2 = one of 4); a run stopped after
//! an epoch and resumed ends exactly like one never stopped; records carry
//! the counts and the adapter size.
//!
//! The model is a small random Llama-family decoder with SmolLM2's
//! vocabulary ([`write_tiny_decoder`]): the machinery under test does not
//! depend on what the model knows, and the real 135 M model made these two
//! tests take three minutes on two cores. The real model's training path
//! runs in CI through `cargo xtask reproduce math --profile smoke`.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use loraxs::{AdapterConfig, TargetModules};
use loraxs_data::math::MathFormat;
use loraxs_models::testing::write_tiny_decoder;
use loraxs_models::{Decoder, load_causal_tokenizer, load_decoder};
use loraxs_train::{CausalRunConfig, MathData, PromptStyle, TrainOptions, causal_epoch_steps, train_causal};

type B = Autodiff<Flex>;

use crate::SERIAL;

/// Layers of the small model.
const LAYERS: usize = 2;

/// SmolLM2's tokenizer, a small model folder with its vocabulary (in a
/// temporary folder kept alive by the returned guard) and the data folder.
fn inputs() -> Option<(loraxs_tokenizer::CausalTokenizer, tempfile::TempDir, PathBuf)> {
    let gguf = loraxs_models::testing::test_decoder_gguf()?;
    let data = loraxs_models::testing::test_data_dir()?;
    let tokenizer = load_causal_tokenizer(&gguf).unwrap();
    let model = tempfile::tempdir().unwrap();
    write_tiny_decoder(model.path(), tokenizer.vocab_size(), LAYERS, 7).unwrap();
    Some((tokenizer, model, data))
}

fn config() -> CausalRunConfig {
    let data = |split: &str| MathData {
        file: format!("gsm8k/{split}.jsonl").into(),
        format: MathFormat::Gsm8k,
    };
    let adapter = AdapterConfig::lora_xs(8)
        .with_alpha(8.0)
        .with_targets(TargetModules::paper_decoder());
    let mut c = CausalRunConfig::paper(adapter, data("train"), data("test"));
    c.epochs = 2;
    c.micro_batch = 2;
    c.accumulation = 2;
    c.max_length = 160;
    c.train_subset = Some(12);
    c.eval_subset = Some(2);
    c.max_new_tokens = 8;
    c.max_steps_per_epoch = Some(2);
    c.prompt = PromptStyle::Chat;
    c.lr = 1e-2;
    c
}

fn load(path: &std::path::Path) -> Decoder<B> {
    load_decoder::<B>(path, &Default::default()).unwrap().0
}

fn options(dir: PathBuf) -> TrainOptions {
    TrainOptions {
        checkpoint_dir: Some(dir),
        resume: true,
        quiet: true,
        backend: "flex".into(),
        model: "smollm2".into(),
        git_commit: "test".into(),
        ..Default::default()
    }
}

/// One step over 4 examples as two accumulated micro-batches of 2 and as
/// one micro-batch of 4: the same step loss (each response token weighs the
/// same, whichever micro-batch holds it) and the same adapter after the
/// update (the answer loss of the evaluation agrees).
#[test]
fn accumulated_micro_batches_make_the_same_step_as_one_batch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((tokenizer, model, data)) = inputs() else {
        return;
    };
    let model_dir = model.path();
    let device = Default::default();
    let mut split = config();
    split.train_subset = Some(4);
    split.epochs = 1;
    split.max_steps_per_epoch = Some(1);
    split.eval_subset = Some(1);
    split.max_new_tokens = 4;
    let whole = CausalRunConfig {
        micro_batch: 4,
        accumulation: 1,
        ..split.clone()
    };
    let run = |c: &CausalRunConfig| {
        let options = TrainOptions {
            quiet: true,
            ..Default::default()
        };
        train_causal::<B>(c, || Ok(load(model_dir)), &tokenizer, &data, &device, &options)
            .unwrap()
            .unwrap()
    };
    let (a, b) = (run(&split), run(&whole));
    let (la, lb) = (a.epochs[0].step_losses[0], b.epochs[0].step_losses[0]);
    assert!(
        (la - lb).abs() <= 1e-5 * lb,
        "step loss {la} (2 × 2) vs {lb} (1 × 4)"
    );
    let (ea, eb) = (a.last.metrics["answer_loss"], b.last.metrics["answer_loss"]);
    assert!(
        (ea - eb).abs() <= 1e-4 * eb,
        "answer loss after the step {ea} vs {eb}"
    );
}

/// The causal trainer over data-parallel peers: 2 accumulated micro-batches
/// of 2 per step, on 1, 2 and 3 peers (with 3, one peer's share of each
/// micro-batch is empty and it contributes a zero-weight gradient): the
/// same step losses (each response token weighs the same whichever peer
/// holds it) and the same answer loss after training.
#[test]
fn data_parallel_peers_make_the_one_peer_causal_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((tokenizer, model, data)) = inputs() else {
        return;
    };
    let model_dir = model.path();
    let mut config = config();
    config.eval_subset = Some(1);
    config.max_new_tokens = 4;
    let run = |peers: usize| {
        let options = TrainOptions {
            quiet: true,
            parallel: loraxs_train::DataParallel::new(peers),
            ..Default::default()
        };
        train_causal::<B>(
            &config,
            || Ok(load(model_dir)),
            &tokenizer,
            &data,
            &Default::default(),
            &options,
        )
        .unwrap()
        .unwrap()
    };
    let one = run(1);
    for peers in [2, 3] {
        let many = run(peers);
        for (a, b) in one.epochs.iter().zip(&many.epochs) {
            assert_eq!(a.step_losses.len(), b.step_losses.len());
            for (x, y) in a.step_losses.iter().zip(&b.step_losses) {
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs(),
                    "{peers} peers: step loss {x} vs {y}"
                );
            }
        }
        let (x, y) = (one.last.metrics["answer_loss"], many.last.metrics["answer_loss"]);
        assert!((x - y).abs() <= 1e-4 * x, "{peers} peers: answer loss {x} vs {y}");
        assert_eq!(one.train_examples, many.train_examples);
    }
}

#[test]
fn a_resumed_math_run_equals_an_uninterrupted_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((tokenizer, model, data)) = inputs() else {
        return;
    };
    let model_dir = model.path();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let config = config();

    let whole = train_causal::<B>(
        &config,
        || Ok(load(model_dir)),
        &tokenizer,
        &data,
        &device,
        &options(dir.path().join("a")),
    )
    .unwrap()
    .unwrap();
    let stopped = TrainOptions {
        stop_after_epochs: Some(1),
        ..options(dir.path().join("b"))
    };
    assert!(
        train_causal::<B>(
            &config,
            || Ok(load(model_dir)),
            &tokenizer,
            &data,
            &device,
            &stopped
        )
        .unwrap()
        .is_none()
    );
    let resumed = train_causal::<B>(
        &config,
        || Ok(load(model_dir)),
        &tokenizer,
        &data,
        &device,
        &options(dir.path().join("b")),
    )
    .unwrap()
    .unwrap();
    assert_eq!(whole.epochs.len(), 2);
    for (a, b) in whole.epochs.iter().zip(&resumed.epochs) {
        assert_eq!(a.step_losses, b.step_losses, "epoch {}", a.epoch);
        assert_eq!(a.metrics, b.metrics, "epoch {}", a.epoch);
    }
    // LoRA-XS r=8 on 7 modules × LAYERS layers; the file holds R only.
    assert_eq!(whole.trainable_adapter, 7 * LAYERS * 64);
    assert!(
        whole.adapter_bytes < 7 * LAYERS * 64 * 4 + 64 * 1024,
        "{} bytes",
        whole.adapter_bytes
    );
    assert_eq!(whole.train_examples, 12);
    let last = &whole.last.metrics;
    assert!((0.0..=1.0).contains(&last["accuracy"]));
    assert!(last["answer_loss"].is_finite() && last["answer_loss"] > 0.0);
    assert!(
        whole
            .epochs
            .iter()
            .all(|e| e.step_losses.len() == 2 && e.step_losses.iter().all(|l| l.is_finite()))
    );
    // Steps cover micro-batches of 2, two to a step.
    let steps = causal_epoch_steps(&[10; 12], 2, 2, 8, 0);
    assert_eq!(steps.len(), 3);
}

/// With a SentencePiece vocabulary (Llama-2/Mistral style, the committed
/// `spm_tiny` GGUF vocabulary): the prompt starts with `<s>` once, prompt
/// and response are one text as the paper's code tokenises them (the
/// response gets no `▁` prefix of its own), the loss covers the response
/// and `</s>`.
#[test]
fn sentencepiece_examples_start_with_bos_and_tokenise_prompt_and_response_together() {
    let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../loraxs-models/tests/fixtures/spm_tiny/spm-tiny.gguf");
    let tokenizer = load_causal_tokenizer(&gguf).unwrap();
    let example = loraxs_data::math::MathExample {
        question: "Tom has 3 apples and buys 4 more. How many apples does he have?".into(),
        response: "Tom has 3 + 4 = 7 apples.\n#### 7".into(),
        answer: "7".into(),
    };
    let tokenized = loraxs_train::tokenize_math(
        std::slice::from_ref(&example),
        &tokenizer,
        PromptStyle::Alpaca,
        512,
        &gguf,
    )
    .unwrap();
    let prompt = loraxs_train::prompt_text(&tokenizer, PromptStyle::Alpaca, &example.question).unwrap();
    let mut joint = tokenizer
        .encode_prompt(&format!("{prompt}{}", example.response))
        .unwrap();
    joint.push(2);
    let t = &tokenized[0];
    assert_eq!(t.ids, joint);
    assert_eq!(t.ids[0], 1, "starts with <s>");
    assert_eq!(t.ids.iter().filter(|&&i| i == 1).count(), 1);
    assert_eq!(t.prompt_len, tokenizer.encode_prompt(&prompt).unwrap().len());
    // The response after the prompt's closing newline: `Tom`, not `▁Tom`.
    let apart = tokenizer.encode(&example.response).unwrap();
    assert_ne!(&t.ids[t.prompt_len..t.ids.len() - 1], apart.as_slice());
    assert_eq!(
        tokenizer.decode(&t.ids[t.prompt_len..], true).unwrap(),
        example.response
    );
}
