//! LoRA-XS on the real all-MiniLM-L6-v2: injection selects the paper's
//! modules, R = 0 is the base model, merging preserves the function, and a
//! trained adapter survives save → load.

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use loraxs::{
    AdapterConfig, RInit, SaveOptions, inject, load_adapter, merge, param_count, save_adapter, tensor_values,
};
use loraxs_models::{DEFAULT_MAX_LENGTH, Encoder, TokenBatch};

type B = NdArray<f32>;
type AB = Autodiff<B>;

fn batch(dir: &loraxs_models::ModelDir) -> TokenBatch {
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

fn hidden(encoder: &Encoder<B>, batch: &TokenBatch) -> Vec<f32> {
    let device = Default::default();
    tensor_values(encoder.forward(encoder.input(batch, &device).unwrap()).hidden)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn lora_xs_on_minilm() {
    let Some(dir) = common::minilm() else { return };
    let device = Default::default();
    let batch = batch(&dir);
    let (base, _) = dir.encoder::<B>(&device).unwrap();
    let y_base = hidden(&base, &batch);

    // Paper targets: 4 modules per layer, 6 layers; R = 0 is the base model.
    let config = AdapterConfig::lora_xs(8).with_r_init(RInit::Zeros);
    let (adapted, report) = loraxs_models::inject_with_bar(base, &config, true).unwrap();
    assert_eq!(report.modules.len(), 24);
    assert_eq!(report.modules[3].name, "encoder.layer.0.output.dense");
    assert!(report.modules.iter().all(|m| m.energy_kept.unwrap() > 0.0));
    assert_eq!(
        hidden(&adapted, &batch),
        y_base,
        "R = 0 must give exactly the base model"
    );
    let count = param_count(&adapted, Some(&config));
    assert_eq!(count.adapter, 24 * 64);
    assert_eq!(count.head, 0);

    // Bad targets list what is available.
    let (fresh, _) = dir.encoder::<B>(&device).unwrap();
    let err = inject(
        fresh,
        &AdapterConfig::lora_xs(8).with_targets(loraxs::TargetModules::new(["q_proj"])),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("encoder.layer.5.attention.self.query"),
        "{err}"
    );
}

#[test]
fn train_save_load_merge_on_minilm() {
    let Some(dir) = common::minilm() else { return };
    let device = Default::default();
    let batch = batch(&dir);
    let config = AdapterConfig::lora_xs(4);
    let (encoder, _) = dir.encoder::<AB>(&device).unwrap();
    let (mut model, _) = inject(encoder, &config).unwrap();

    // A few optimiser steps on a toy objective.
    let mut optim = AdamConfig::new().init::<AB, Encoder<AB>>();
    for _ in 0..3 {
        let out = model.forward(model.input(&batch, &device).unwrap());
        let loss = out.pooled.unwrap().powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), 24, "only the 24 R matrices train");
        model = optim.step(1e-3, model, grads);
    }
    let trained = model.valid();
    let y = hidden(&trained, &batch);

    let dir_tmp = tempfile::tempdir().unwrap();
    let path = dir_tmp.path().join("minilm.safetensors");
    save_adapter(&trained, &config, &path, SaveOptions::default()).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size <= 24 * 16 * 4 + 1024, "adapter file is {size} bytes");

    let (base, _) = dir.encoder::<B>(&device).unwrap();
    let (loaded, _) = load_adapter(base, &path).unwrap();
    assert_eq!(
        hidden(&loaded, &batch),
        y,
        "save → load must reproduce the outputs"
    );

    let merged = merge(loaded);
    let d = max_diff(&hidden(&merged, &batch), &y);
    assert!(d < 1e-4, "merged differs by {d}");
}
