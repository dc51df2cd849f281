//! RoBERTa against transformers on a tiny random checkpoint (made by
//! tools/make_fixtures.py: `roberta.` key prefix, an MLM head to ignore, no
//! pooler), and loading errors that name every bad tensor.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use loraxs::interop::tensor_values;
use loraxs_models::{Encoder, EncoderConfig, ModelError, ModelType, TokenBatch, Weights};
use safetensors::SafeTensors;

type B = NdArray<f32>;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-roberta")
}

fn load(weights: &Path) -> loraxs_models::Result<(Encoder<B>, loraxs_models::LoadReport)> {
    let config = EncoderConfig::load(fixture().join("config.json")).unwrap();
    Encoder::from_weights(
        &config,
        Weights::open(weights, &["roberta."])?,
        &Default::default(),
    )
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<u32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

#[test]
fn tiny_roberta_matches_transformers() {
    let config = EncoderConfig::load(fixture().join("config.json")).unwrap();
    assert_eq!(config.model_type, ModelType::Roberta);
    assert_eq!(config.max_tokens(), 18);
    let (encoder, report) = load(&fixture().join("model.safetensors")).unwrap();
    assert_eq!(report.absent_optional, vec!["pooler".to_string()]);
    assert!(
        report.unused.iter().all(|n| n.starts_with("lm_head.")),
        "{:?}",
        report.unused
    );
    assert!(!report.unused.is_empty());

    let bytes = std::fs::read(fixture().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = i64s(&st, "input_ids");
    let batch = TokenBatch {
        batch: 2,
        seq_len: 6,
        token_type_ids: vec![0; ids.len()],
        attention_mask: i64s(&st, "attention_mask"),
        input_ids: ids,
    };
    let device = Default::default();
    let input = encoder.input(&batch, &device).unwrap();
    // RoBERTa numbers real tokens from padding_idx + 1 and gives padding padding_idx.
    assert_eq!(
        tensor_values(input.position_ids.clone().float()),
        vec![2., 3., 4., 5., 6., 7., 2., 3., 4., 5., 1., 1.]
    );
    let hidden = tensor_values(encoder.forward(input).hidden);
    let expected: Vec<f32> = st
        .tensor("last_hidden_state")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let diff = hidden
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-4, "max |Δ| = {diff}");
}

#[test]
fn bad_weights_list_every_problem() {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "roberta.encoder.layer.1.attention.self.key.bias")
        .collect();
    let short = vec![0u8; 4 * 16 * 16];
    for (name, view) in tensors.iter_mut() {
        if name == "roberta.encoder.layer.0.intermediate.dense.weight" {
            *view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![16, 16], &short).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let err = load(&path).expect_err("must fail");
    let ModelError::Tensors { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        problems,
        &vec![
            "`roberta.encoder.layer.0.intermediate.dense.weight` has shape [16, 16], expected [24, 16]"
                .to_string(),
            "missing `roberta.encoder.layer.1.attention.self.key.bias` (expected shape [16])".to_string(),
        ]
    );
    assert!(err.to_string().contains("2 problem(s)"), "{err}");

    std::fs::write(&path, &bytes[..100]).unwrap();
    assert!(matches!(load(&path), Err(ModelError::Weights { .. })));
}

#[test]
fn config_errors_name_the_problem() {
    let p = Path::new("config.json");
    let base = r#""vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1, "intermediate_size": 8, "max_position_embeddings": 8"#;
    let err = EncoderConfig::from_json(
        &format!(r#"{{"model_type": "bert", {base}, "num_attention_heads": 3}}"#),
        p,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.json: hidden_size 16 is not a multiple of num_attention_heads 3"
    );
    let err = EncoderConfig::from_json(
        &format!(r#"{{"model_type": "gpt2", {base}, "num_attention_heads": 4}}"#),
        p,
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown variant `gpt2`"), "{err}");
    let err = EncoderConfig::from_json(
        &format!(r#"{{"model_type": "bert", {base}, "num_attention_heads": 4, "position_embedding_type": "relative_key"}}"#),
        p,
    )
    .unwrap_err();
    assert!(err.to_string().contains("relative_key"), "{err}");
    let err = EncoderConfig::from_json("{", p).unwrap_err();
    assert!(err.to_string().starts_with("config.json: EOF"), "{err}");
}

#[test]
fn missing_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = loraxs_models::ModelDir::new(dir.path()).unwrap_err();
    assert!(err.to_string().contains("missing model.safetensors"), "{err}");
}

#[test]
fn out_of_range_inputs_are_errors() {
    let (encoder, _) = load(&fixture().join("model.safetensors")).unwrap();
    let device = Default::default();
    let batch = |ids: Vec<u32>, types: Vec<u32>| TokenBatch {
        batch: 1,
        seq_len: ids.len(),
        attention_mask: vec![1; ids.len()],
        token_type_ids: types,
        input_ids: ids,
    };
    let err = encoder
        .input(&batch(vec![0, 50], vec![0, 0]), &device)
        .unwrap_err();
    assert_eq!(err.to_string(), "token id 50 is outside the vocabulary of 50");
    let err = encoder
        .input(&batch(vec![0, 5], vec![0, 1]), &device)
        .unwrap_err();
    assert_eq!(err.to_string(), "token type 1 is outside the model's 1 types");
    let err = encoder
        .input(&batch(vec![3; 19], vec![0; 19]), &device)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("position 20 is beyond the model's 20 position embeddings"),
        "{err}"
    );
}
