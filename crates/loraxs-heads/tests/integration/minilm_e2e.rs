//! End to end on the real all-MiniLM-L6-v2: inject LoRA-XS, train it with a
//! classification head, save adapter and head to one file, load them into a
//! fresh base model, and merge.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use loraxs::interop::tensor_values;
use loraxs::{AdapterConfig, AdapterFile, SaveOptions, inject, load_adapter, merge};
use loraxs_heads::{HeadConfig, HeadStyle};
use loraxs_models::{DEFAULT_MAX_LENGTH, Encoder, ModelDir, TokenBatch};

type Cpu = NdArray<f32>;
type AB = Autodiff<Cpu>;

/// Encoder plus task head, trained together.
#[derive(burn::module::Module, Debug)]
struct Classifier<B: burn::tensor::backend::Backend> {
    encoder: Encoder<B>,
    head: loraxs_heads::Head<B>,
}

/// The model folder under the workspace's one rule (`loraxs_models::testing`).
fn minilm() -> Option<ModelDir> {
    loraxs_models::testing::test_model()
}

fn batch(dir: &ModelDir) -> TokenBatch {
    dir.tokenizer(DEFAULT_MAX_LENGTH)
        .unwrap()
        .encode(&[
            ("A short sentence.", None),
            (
                "The second one is a little longer than that.",
                Some("And a pair."),
            ),
        ])
        .unwrap()
}

fn hidden(encoder: &Encoder<Cpu>, batch: &TokenBatch) -> Vec<f32> {
    let device = Default::default();
    tensor_values(encoder.forward(encoder.input(batch, &device).unwrap()).hidden)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn train_save_load_merge_on_minilm() {
    let Some(dir) = minilm() else { return };
    let device = Default::default();
    let batch = batch(&dir);
    let config = AdapterConfig::lora_xs(4);
    let (encoder, _) = dir.encoder::<AB>(&device).unwrap();
    let encoder = inject(encoder, &config).unwrap().model;
    let head = HeadConfig::new(HeadStyle::Roberta, 384, 2).init::<AB>(&device);
    let mut model = Classifier { encoder, head };
    let labels = burn::tensor::Tensor::<AB, 1, burn::tensor::Int>::from_data([1i64, 0], &device);

    // A few optimiser steps of sequence classification.
    let mut optim = AdamConfig::new().init::<AB, Classifier<AB>>();
    let mut losses = Vec::new();
    for _ in 0..3 {
        let out = model
            .encoder
            .forward(model.encoder.input(&batch, &device).unwrap());
        let logits = model.head.forward(out.hidden, out.pooled);
        let loss = model.head.loss(logits, Some(labels.clone()), None);
        losses.push(tensor_values(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(
            grads.len(),
            24 + 4,
            "only the 24 R matrices and the head's 4 tensors train"
        );
        model = optim.step(1e-2, model, grads);
    }
    assert!(losses[2] < losses[0], "training must reduce the loss: {losses:?}");
    let trained = model.valid();
    let y = hidden(&trained.encoder, &batch);

    let dir_tmp = tempfile::tempdir().unwrap();
    let path = dir_tmp.path().join("minilm.safetensors");
    let mut file = AdapterFile::from_model(&trained.encoder, &config, SaveOptions::default()).unwrap();
    let adapter_bytes = file.to_bytes().unwrap().len();
    assert!(
        adapter_bytes <= 24 * 16 * 4 + 1024,
        "the adapter alone is {adapter_bytes} bytes"
    );
    trained.head.store(&mut file).unwrap();
    file.save(&path).unwrap();
    assert_eq!(file.stored_values(), 24 * 16 + 384 * 384 + 384 + 2 * 384 + 2);

    let (base, _) = dir.encoder::<Cpu>(&device).unwrap();
    let (loaded, file) = load_adapter(base, &path).unwrap();
    assert_eq!(loaded.config, config);
    let loaded = loaded.model;
    assert_eq!(
        hidden(&loaded, &batch),
        y,
        "save → load must reproduce the encoder outputs"
    );
    let head = HeadConfig::new(HeadStyle::Roberta, 384, 2)
        .init::<Cpu>(&device)
        .load(&file)
        .unwrap();
    let logits = |enc: &Encoder<Cpu>, head: &loraxs_heads::Head<Cpu>| {
        let out = enc.forward(enc.input(&batch, &device).unwrap());
        tensor_values(head.forward(out.hidden, out.pooled))
    };
    assert_eq!(
        logits(&loaded, &head),
        logits(&trained.encoder, &trained.head),
        "and the logits"
    );

    let merged = merge(loaded);
    let d = max_diff(&hidden(&merged, &batch), &y);
    assert!(d < 1e-4, "merged differs by {d}");
}
