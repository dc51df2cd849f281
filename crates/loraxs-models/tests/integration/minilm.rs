//! LoRA-XS on the real all-MiniLM-L6-v2: injection selects the paper's
//! modules and R = 0 is the base model. Training with a head, saving and
//! loading are tested end to end in loraxs-heads.

use crate::common;

use burn::backend::NdArray;
use loraxs::interop::tensor_values;
use loraxs::{AdapterConfig, RInit, inject, param_count};
use loraxs_models::{DEFAULT_MAX_LENGTH, Encoder, TokenBatch};

type B = NdArray<f32>;

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

#[test]
fn lora_xs_on_minilm() {
    let Some(dir) = common::minilm() else { return };
    let device = Default::default();
    let batch = batch(&dir);
    let (base, _) = dir.encoder::<B>(&device).unwrap();
    let y_base = hidden(&base, &batch);

    // Paper targets: 4 modules per layer, 6 layers; R = 0 is the base model.
    let config = AdapterConfig::lora_xs(8).with_r_init(RInit::Zeros);
    let loraxs::Adapted {
        model: adapted,
        report,
        ..
    } = loraxs_models::inject_with_bar(base, &config, true).unwrap();
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
