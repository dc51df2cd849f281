//! PEFT LoRA adapters brought over to LoRA-XS (`import_peft`): an exported
//! LoRA-XS adapter comes back exactly; a LoRA update outside the LoRA-XS
//! subspace comes back as its projection, with the loss reported.

use crate::common;

use std::path::Path;

use burn::backend::NdArray;
use common::{Toy, input};
use loraxs::export::{PeftOptions, import_peft, to_peft};
use loraxs::interop::tensor_values;
use loraxs::{AdaptedLinear, AdapterConfig, AdapterHost, RInit, TargetModules, inject};

type B = NdArray<f32>;

fn targets() -> TargetModules {
    TargetModules::new(["query", "value"])
}

/// The `R` of every LoRA-XS layer, in model order.
fn rs(model: &mut Toy<B>) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    model.linears_mut(&mut |_, layer| {
        if let AdaptedLinear::LoraXs(xs) = layer {
            out.push(tensor_values(xs.r.val().mul_scalar(xs.scale)));
        }
    });
    out
}

#[test]
fn an_exported_lora_xs_adapter_comes_back_exactly() {
    let device = Default::default();
    let config = AdapterConfig::lora_xs(4)
        .with_alpha(8.0)
        .with_targets(targets())
        .with_r_init(RInit::Gaussian { std: 0.3 });
    let mut adapted = inject(Toy::<B>::new(1, &device), &config).unwrap().model;
    let dir = tempfile::tempdir().unwrap();
    // Padded to rank 8 on the way out: the zeros change nothing.
    let options = PeftOptions {
        pad_rank: true,
        ..Default::default()
    };
    to_peft(&adapted, &config, &options)
        .unwrap()
        .write(dir.path())
        .unwrap();
    let back = import_peft(Toy::<B>::new(1, &device), dir.path(), 4).unwrap();
    assert!(back.relative_error < 1e-4, "{}", back.relative_error);
    assert_eq!(back.modules.len(), 4);
    let mut model = back.adapted.model;
    for (a, b) in rs(&mut adapted).iter().zip(rs(&mut model)) {
        assert!(common::max_abs_diff(a, &b) < 1e-4, "{a:?} vs {b:?}");
    }
    let y = tensor_values(model.forward(input(&device)));
    let y0 = tensor_values(adapted.forward(input(&device)));
    assert!(common::max_abs_diff(&y, &y0) < 1e-4);
}

#[test]
fn a_lora_update_outside_the_subspace_is_projected_and_the_loss_reported() {
    let device = Default::default();
    // A real LoRA adapter with a random, clearly non-zero B.
    let lora = AdapterConfig::lora(2).with_alpha(4.0).with_targets(targets());
    let mut model = inject(Toy::<B>::new(1, &device), &lora).unwrap().model;
    let mut seed = 40;
    model.linears_mut(&mut |_, layer| {
        if let AdaptedLinear::Lora(l) = layer {
            seed += 1;
            let dims = l.b.dims();
            let values = common::random_values(dims[0] * dims[1], seed);
            l.b = loraxs::interop::replace_values(l.b.clone(), &values, false);
        }
    });
    // Written as PEFT writes it: lora_A r × in, lora_B out × r.
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = Vec::new();
    let mut deltas = Vec::new();
    model.linears_mut(&mut |name, layer| {
        if let AdaptedLinear::Lora(l) = layer {
            let a = loraxs::interop::torch_values(&l.a);
            let b = loraxs::interop::torch_values(&l.b);
            let (d_in, d_out) = (l.a.dims()[0], l.b.dims()[1]);
            tensors.push((
                format!("base_model.model.{name}.lora_A.weight"),
                vec![2, d_in],
                a.clone(),
            ));
            tensors.push((
                format!("base_model.model.{name}.lora_B.weight"),
                vec![d_out, 2],
                b.clone(),
            ));
            let delta: Vec<f32> = (0..d_out * d_in)
                .map(|k| {
                    (0..2)
                        .map(|j| 2.0 * b[(k / d_in) * 2 + j] * a[j * d_in + k % d_in])
                        .sum()
                })
                .collect();
            deltas.push(delta);
        }
    });
    let peft = loraxs::export::PeftAdapter {
        config: serde_json::json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4.0, "target_modules": ["query", "value"]}),
        tensors,
        rank: 2,
        metadata: Default::default(),
    };
    peft.write(dir.path()).unwrap();

    let back = import_peft(Toy::<B>::new(1, &device), dir.path(), 4).unwrap();
    // Rank 4 of a 12-wide layer cannot hold a random rank-2 update.
    assert!(
        back.relative_error > 0.1 && back.relative_error < 1.0,
        "{}",
        back.relative_error
    );
    // The reported loss is the real one: ‖ΔW − merged update‖ / ‖ΔW‖.
    let base = Toy::<B>::new(1, &device);
    let merged = loraxs::merge(back.adapted.model);
    let (mut lost, mut total, mut i) = (0.0f64, 0.0f64, 0);
    let mut w0 = Vec::new();
    let mut base = base;
    base.linears_mut(&mut |name, layer| {
        if targets().matches(name) {
            w0.push(loraxs::interop::torch_weight(layer.base()));
        }
    });
    let mut merged = merged;
    merged.linears_mut(&mut |name, layer| {
        if targets().matches(name) {
            let w1 = loraxs::interop::torch_weight(layer.base());
            for ((a, b), d) in w1.iter().zip(&w0[i]).zip(&deltas[i]) {
                let kept = (a - b) as f64;
                lost += (*d as f64 - kept).powi(2);
                total += (*d as f64).powi(2);
            }
            i += 1;
        }
    });
    let measured = (lost / total).sqrt();
    assert!(
        (measured - back.relative_error).abs() < 1e-3,
        "reported {} vs measured {measured}",
        back.relative_error
    );

    // Bad folders are named.
    let err = import_peft(Toy::<B>::new(1, &device), Path::new("/nonexistent/peft"), 4).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/peft/adapter_config.json"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": "q|v"}"#,
    )
    .unwrap();
    let err = import_peft(Toy::<B>::new(1, &device), dir.path(), 4).unwrap_err();
    assert!(err.to_string().contains("target_modules"), "{err}");
}
