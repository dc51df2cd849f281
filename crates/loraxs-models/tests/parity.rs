//! Parity with Hugging Face transformers on all-MiniLM-L6-v2: the fixture
//! (tools/make_fixtures.py) holds the tokenizer's ids and the model's
//! outputs as PyTorch computed them.

mod common;

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use loraxs::interop::tensor_values;
use loraxs_models::{DEFAULT_MAX_LENGTH, ModelDir};
use safetensors::SafeTensors;

const FIXTURE: &[u8] = include_bytes!("fixtures/minilm_parity.safetensors");

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

fn check<B: Backend>(dir: &ModelDir, backend: &str) {
    let device = B::Device::default();
    let (encoder, report) = dir.encoder::<B>(&device).unwrap();
    assert!(report.unused.is_empty(), "unused tensors: {:?}", report.unused);
    assert!(report.absent_optional.is_empty());
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
        check::<NdArray<f32>>(&dir, "ndarray");
    }
}

#[test]
fn minilm_matches_transformers_on_flex() {
    if let Some(dir) = common::minilm() {
        check::<Flex>(&dir, "flex");
    }
}
