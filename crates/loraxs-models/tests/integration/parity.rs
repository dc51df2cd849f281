//! Parity with Hugging Face transformers on all-MiniLM-L6-v2: the fixtures
//! (tools/make_fixtures.py) hold the tokenizer's ids, the model's outputs
//! as PyTorch computed them, and — for the training path — the outputs and
//! autograd gradients of a LoRA-XS-adapted MiniLM built in PyTorch.
//!
//! Every backend is checked on both of the encoder's attention branches:
//! the inference backends (and `valid()` of the autodiff ones) take the
//! fused `attention()` op, the autodiff backends the explicit ops every
//! training step runs.

use crate::common;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use loraxs::interop::{set_trainable, tensor_values, trainable};
use loraxs::{AdaptedLinear, AdapterConfig, AdapterHost};
use loraxs_models::{DEFAULT_MAX_LENGTH, Encoder, ModelDir, TokenBatch};
use safetensors::SafeTensors;

const FIXTURE: &[u8] = include_bytes!("../fixtures/minilm_parity.safetensors");
const GRADIENTS: &[u8] = include_bytes!("../fixtures/minilm_gradients.safetensors");

fn fixture_f32(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = st.tensor(name).unwrap();
    let values = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

fn fixture_ids(st: &SafeTensors, name: &str) -> Vec<u32> {
    let view = st.tensor(name).unwrap();
    view.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

fn texts(meta: &std::collections::HashMap<String, String>) -> Vec<(String, Option<String>)> {
    let singles: Vec<String> = serde_json::from_str(&meta["singles"]).unwrap();
    let pairs: Vec<(String, String)> = serde_json::from_str(&meta["pairs"]).unwrap();
    singles
        .into_iter()
        .map(|s| (s, None))
        .chain(pairs.into_iter().map(|(a, b)| (a, Some(b))))
        .collect()
}

fn load<B: Backend>(dir: &ModelDir) -> Encoder<B> {
    let (encoder, report) = dir.encoder::<B>(&B::Device::default()).unwrap();
    assert!(report.unused.is_empty(), "unused tensors: {:?}", report.unused);
    assert!(report.absent_optional.is_empty());
    // Every dropout at 0 (the trainer's `encoder_dropout`), so that a
    // training-mode forward (autodiff backends) is deterministic and
    // comparable with `eval()`: a dropout `with_dropout` missed fails the
    // training-path parity below.
    encoder.with_dropout(0.0, 0.0)
}

fn check<B: loraxs_models::KernelBackend>(dir: &ModelDir, encoder: &Encoder<B>, backend: &str) {
    let device = B::Device::default();
    let tokenizer = dir.tokenizer(DEFAULT_MAX_LENGTH).unwrap();
    let (_, header) = SafeTensors::read_metadata(FIXTURE).unwrap();
    let st = SafeTensors::deserialize(FIXTURE).unwrap();
    let all = texts(header.metadata().as_ref().unwrap());
    let (singles, pairs): (Vec<_>, Vec<_>) = all.iter().partition(|(_, b)| b.is_none());
    for (name, group) in [("single", singles), ("pair", pairs)] {
        let inputs: Vec<(&str, Option<&str>)> =
            group.iter().map(|(a, b)| (a.as_str(), b.as_deref())).collect();
        let batch = tokenizer.encode(&inputs).unwrap();
        assert_eq!(
            batch.input_ids,
            fixture_ids(&st, &format!("{name}.input_ids")),
            "{name}: token ids"
        );
        assert_eq!(
            batch.token_type_ids,
            fixture_ids(&st, &format!("{name}.token_type_ids")),
            "{name}: types"
        );
        assert_eq!(
            batch.attention_mask,
            fixture_ids(&st, &format!("{name}.attention_mask")),
            "{name}: mask"
        );
        assert!(
            batch.attention_mask.contains(&0),
            "{name}: the fixture must include padding"
        );

        let output = encoder.forward(encoder.input(&batch, &device).unwrap());
        let (shape, hidden) = fixture_f32(&st, &format!("{name}.last_hidden_state"));
        assert_eq!(output.hidden.dims().to_vec(), shape);
        let ours = tensor_values(output.hidden);
        let diff = ours
            .iter()
            .zip(&hidden)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let (_, pooled) = fixture_f32(&st, &format!("{name}.pooler_output"));
        let ours_pooled = tensor_values(output.pooled.unwrap());
        let pdiff = ours_pooled
            .iter()
            .zip(&pooled)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{backend} {name}: max |Δ hidden| = {diff:.2e}, max |Δ pooled| = {pdiff:.2e}");
        assert!(diff <= 1e-4, "{backend} {name}: hidden differs by {diff}");
        assert!(pdiff <= 1e-4, "{backend} {name}: pooled differs by {pdiff}");
    }
}

#[test]
fn minilm_matches_transformers_on_ndarray() {
    if let Some(dir) = common::minilm() {
        check(&dir, &load::<NdArray<f32>>(&dir), "ndarray");
    }
}

#[test]
fn minilm_matches_transformers_on_flex() {
    if let Some(dir) = common::minilm() {
        check(&dir, &load::<Flex>(&dir), "flex");
    }
}

/// The training path (autodiff: explicit attention ops, dropout at 0) and
/// the same model's `valid()` (inference path) against transformers.
fn check_autodiff<B: loraxs_models::KernelAutodiffBackend>(dir: &ModelDir, backend: &str) {
    let encoder = load::<B>(dir);
    assert!(B::ad_enabled(&B::Device::default()));
    check(dir, &encoder, &format!("{backend} (training path)"));
    check(
        dir,
        &encoder.valid(),
        &format!("{backend} valid() (inference path)"),
    );
}

#[test]
fn minilm_training_path_matches_transformers_on_autodiff_ndarray() {
    if let Some(dir) = common::minilm() {
        check_autodiff::<Autodiff<NdArray<f32>>>(&dir, "autodiff<ndarray>");
    }
}

#[test]
fn minilm_training_path_matches_transformers_on_autodiff_flex() {
    if let Some(dir) = common::minilm() {
        check_autodiff::<Autodiff<Flex>>(&dir, "autodiff<flex>");
    }
}

/// `‖ours − reference‖₂ / ‖reference‖₂`.
fn relative_l2(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let diff: f64 = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let norm: f64 = reference.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

/// LoRA-XS on MiniLM (rank 8, alpha 16, the paper's GLUE targets, A and B
/// from loraxs's own SVD of the real weights, R from the fixture): the last
/// hidden state and the gradients of `sum(hidden · P)`, `P_i = cos(0.7 i)`,
/// with respect to every R and to the used word-embedding rows, against
/// PyTorch autograd on the same model built independently in float64.
fn check_gradients<B: loraxs_models::KernelAutodiffBackend>(dir: &ModelDir, backend: &str) {
    let device = B::Device::default();
    let st = SafeTensors::deserialize(GRADIENTS).unwrap();
    let (_, header) = SafeTensors::read_metadata(GRADIENTS).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    let rank: usize = meta["rank"].parse().unwrap();
    let alpha: f64 = meta["alpha"].parse().unwrap();

    let mut encoder = load::<B>(dir);
    let word = encoder.embeddings.word.weight.clone();
    encoder.embeddings.word.weight = set_trainable(word, true);
    let config = AdapterConfig::lora_xs(rank).with_alpha(alpha);
    let mut model = loraxs::inject(encoder, &config).unwrap().model;
    let mut modules = Vec::new();
    model.linears_mut(&mut |name, layer| {
        if let AdaptedLinear::LoraXs(xs) = layer {
            let (_, r) = fixture_f32(&st, &format!("{name}.lora_xs.R"));
            xs.r = trainable(Tensor::from_data(TensorData::new(r, [rank, rank]), &device));
            modules.push(name.to_string());
        }
    });
    assert_eq!(modules.len(), 24, "4 targets × 6 layers: {modules:?}");

    let shape = st.tensor("input_ids").unwrap().shape().to_vec();
    let batch = TokenBatch {
        batch: shape[0],
        seq_len: shape[1],
        input_ids: fixture_ids(&st, "input_ids"),
        token_type_ids: fixture_ids(&st, "token_type_ids"),
        attention_mask: fixture_ids(&st, "attention_mask"),
    };
    assert!(
        batch.attention_mask.contains(&0),
        "the fixture must include padding"
    );
    let input = model.input(&batch, &device).unwrap();
    let hidden = model.forward(input).hidden;
    let n = hidden.shape().num_elements();
    let weights: Vec<f32> = (0..n).map(|i| (0.7 * i as f64).cos() as f32).collect();
    let loss = (hidden.clone()
        * Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device).reshape(hidden.dims()))
    .sum();

    let (_, expected_hidden) = fixture_f32(&st, "last_hidden_state");
    let hidden_err = relative_l2(&tensor_values(hidden.clone()), &expected_hidden);
    let (_, expected_loss) = fixture_f32(&st, "loss");
    let loss_value = tensor_values(loss.clone())[0];
    let grads = loss.backward();

    let mut worst = (0.0f64, String::new());
    model.linears_mut(&mut |name, layer| {
        if let AdaptedLinear::LoraXs(xs) = layer {
            let ours = tensor_values(xs.r.grad(&grads).expect("R has a gradient"));
            let (_, reference) = fixture_f32(&st, &format!("{name}.lora_xs.R.grad"));
            let err = relative_l2(&ours, &reference);
            if err > worst.0 || worst.1.is_empty() {
                worst = (err, name.to_string());
            }
        }
    });
    let word_grad = model
        .embeddings
        .word
        .weight
        .grad(&grads)
        .expect("embeddings tracked");
    let rows: Vec<i64> = st
        .tensor("word_embeddings.rows")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let index =
        Tensor::<B::InnerBackend, 1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device);
    let ours_rows = tensor_values(word_grad.select(0, index));
    let (_, expected_rows) = fixture_f32(&st, "word_embeddings.grad");
    // PyTorch's `nn.Embedding(padding_idx = pad)` gives the padding row no
    // gradient; loraxs never trains embeddings and keeps the plain one, so
    // that row is compared separately: zero there, non-zero here.
    let h = model.hidden_size();
    let pad = rows
        .iter()
        .position(|&r| r as usize == model.pad_token_id)
        .expect("the batch is padded");
    assert!(expected_rows[pad * h..(pad + 1) * h].iter().all(|&v| v == 0.0));
    let keep = |v: &[f32]| -> Vec<f32> {
        v.chunks(h)
            .enumerate()
            .filter(|(i, _)| *i != pad)
            .flat_map(|(_, c)| c.to_vec())
            .collect()
    };
    let embedding_err = relative_l2(&keep(&ours_rows), &keep(&expected_rows));
    eprintln!(
        "{backend}: hidden rel err {hidden_err:.2e}, loss {loss_value} vs {}, worst R-gradient rel err {:.2e} ({}), \
         embedding-gradient rel err {embedding_err:.2e}",
        expected_loss[0], worst.0, worst.1
    );
    // Gradients in float32 cannot meet 1e-4 against a float64 reference
    // here: PyTorch's own float32 autograd on the same model lies 2e-4 to
    // 7.3e-4 from it (tools/make_fixtures.py's model, run in float32). The
    // bound is that error, rounded up; flex measures 3e-5 to 1.7e-4.
    assert!(hidden_err <= 1e-4, "{backend}: hidden state rel err {hidden_err}");
    assert!(
        worst.0 <= 1e-3,
        "{backend}: R gradient of {} rel err {}",
        worst.1,
        worst.0
    );
    assert!(
        embedding_err <= 1e-3,
        "{backend}: embedding gradient rel err {embedding_err}"
    );
}

#[test]
fn lora_xs_gradients_match_pytorch_autograd_on_autodiff_flex() {
    if let Some(dir) = common::minilm() {
        check_gradients::<Autodiff<Flex>>(&dir, "autodiff<flex>");
    }
}

/// On ndarray this failed (R gradients 3e-5 off at the last layer, 1.3e-2 at
/// the first) until the encoder stopped using burn 0.21's default
/// `gelu_backward`, which differentiates the tanh approximation of GELU
/// while the forward computes the exact one (see `encoder::gelu_exact`).
#[test]
fn lora_xs_gradients_match_pytorch_autograd_on_autodiff_ndarray() {
    if let Some(dir) = common::minilm() {
        check_gradients::<Autodiff<NdArray<f32>>>(&dir, "autodiff<ndarray>");
    }
}
