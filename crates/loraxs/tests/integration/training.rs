//! Injection into a model, gradients, optimiser steps, merging and
//! parameter counts, on the autodiff backend.

use crate::common;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use common::{FFN, HIDDEN, Toy, input, relative_diff};
use loraxs::interop::tensor_values;
use loraxs::{
    AdaptedLinear, AdapterConfig, AdapterError, AdapterHost, Method, TargetModules, inject,
    inject_with_progress, merge, merge_and_unload, param_count, set_fused_inference, unload, unmerge,
};

type B = NdArray<f32>;
type AB = Autodiff<B>;

/// Every float tensor of the model, in visiting order, as raw values.
fn frozen_snapshot<Bk: Backend>(model: &Toy<Bk>) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    model.linears(&mut |_, layer| {
        out.push(tensor_values(layer.base().weight.val()));
        if let Some(b) = &layer.base().bias {
            out.push(tensor_values(b.val()));
        }
        match layer {
            AdaptedLinear::LoraXs(l) => {
                out.push(tensor_values(l.a.val()));
                out.push(tensor_values(l.b.val()));
            }
            AdaptedLinear::Vera(l) => {
                out.push(tensor_values(l.a.val()));
                out.push(tensor_values(l.b.val()));
            }
            _ => {}
        }
    });
    out
}

#[test]
fn paper_targets_select_four_modules_per_layer() {
    let device = Default::default();
    let loraxs::Adapted { model, report, .. } =
        inject(Toy::<B>::new(1, &device), &AdapterConfig::lora_xs(4)).unwrap();
    let names: Vec<_> = report.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "encoder.layer.0.attention.self.query",
            "encoder.layer.0.attention.self.value",
            "encoder.layer.0.attention.output.dense",
            "encoder.layer.0.output.dense",
            "encoder.layer.1.attention.self.query",
            "encoder.layer.1.attention.self.value",
            "encoder.layer.1.attention.output.dense",
            "encoder.layer.1.output.dense",
        ]
    );
    assert!(matches!(model.layers[0].intermediate, AdaptedLinear::Plain(_)));
    // The reported error is the rank-r approximation's, ‖W − B A‖_F / ‖W‖_F,
    // computed here from the layer's own factors and weight.
    let mut layers = Vec::new();
    model.linears(&mut |name, layer| {
        if let AdaptedLinear::LoraXs(xs) = layer {
            layers.push((name.to_string(), xs.clone()));
        }
    });
    assert_eq!(layers.len(), report.modules.len());
    for (m, (name, xs)) in report.modules.iter().zip(&layers) {
        assert_eq!(&m.name, name);
        let energy = m.energy_kept.unwrap();
        assert!(energy > 0.0 && energy < 1.0);
        let w = tensor_values(xs.base.weight.val().transpose()); // out × in
        let ba = tensor_values(xs.b_torch().matmul(xs.a_torch()));
        let residual: f64 = w
            .iter()
            .zip(&ba)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        let norm: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum();
        let error = (residual / norm).sqrt();
        assert!(
            (m.relative_error.unwrap() - error).abs() < 1e-5,
            "{name}: reported {} vs {error}",
            m.relative_error.unwrap()
        );
    }
}

#[test]
fn gradient_reaches_r_only() {
    let device = Default::default();
    let model = inject(Toy::<AB>::new(1, &device), &AdapterConfig::lora_xs(4))
        .unwrap()
        .model;
    let loss = model.forward(input(&device)).powf_scalar(2.0).mean();
    let grads = loss.backward();
    let mut checked = 0;
    model.linears(&mut |name, layer| {
        assert!(
            layer.base().weight.val().grad(&grads).is_none(),
            "{name}: weight got a gradient"
        );
        assert!(
            layer.base().bias.as_ref().unwrap().val().grad(&grads).is_none(),
            "{name}: bias"
        );
        if let AdaptedLinear::LoraXs(l) = layer {
            assert!(l.a.val().grad(&grads).is_none(), "{name}: A got a gradient");
            assert!(l.b.val().grad(&grads).is_none(), "{name}: B got a gradient");
            let g = l.r.val().grad(&grads).expect("R has a gradient");
            assert!(
                tensor_values(g).iter().any(|v| *v != 0.0),
                "{name}: zero gradient on R"
            );
            checked += 1;
        }
    });
    assert_eq!(checked, 8);
    let grads = GradientsParams::from_grads(grads, &model);
    assert_eq!(
        grads.len(),
        8,
        "only the eight R matrices are in the optimiser's view"
    );
}

fn train_steps(method_config: AdapterConfig, steps: usize) -> (Toy<AB>, Toy<AB>) {
    let device = Default::default();
    let mut model = inject(Toy::<AB>::new(1, &device), &method_config).unwrap().model;
    let before = model.clone();
    let mut optim = AdamConfig::new().init::<AB, Toy<AB>>();
    for _ in 0..steps {
        let loss = model.forward(input(&device)).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    (before, model)
}

#[test]
fn base_is_bit_identical_after_twenty_adam_steps() {
    for config in [
        AdapterConfig::lora_xs(4),
        AdapterConfig::lora(2),
        AdapterConfig::vera(4),
    ] {
        let (before, after) = train_steps(config.clone(), 20);
        assert_eq!(
            frozen_snapshot(&before),
            frozen_snapshot(&after),
            "{:?} moved a frozen value",
            config.method
        );
        // And the trainable part did move.
        let moved = |a: &AdaptedLinear<AB>, b: &AdaptedLinear<AB>| match (a, b) {
            (AdaptedLinear::LoraXs(x), AdaptedLinear::LoraXs(y)) => {
                tensor_values(x.r.val()) != tensor_values(y.r.val())
            }
            (AdaptedLinear::Lora(x), AdaptedLinear::Lora(y)) => {
                tensor_values(x.b.val()) != tensor_values(y.b.val())
            }
            (AdaptedLinear::Vera(x), AdaptedLinear::Vera(y)) => {
                tensor_values(x.lambda_b.val()) != tensor_values(y.lambda_b.val())
            }
            _ => unreachable!(),
        };
        assert!(
            moved(&before.layers[0].query, &after.layers[0].query),
            "{:?} did not train",
            config.method
        );
    }
}

#[test]
fn full_fine_tuning_trains_targets_and_freezes_the_rest() {
    let config = AdapterConfig::full().with_targets(TargetModules::new(["query"]));
    let (before, after) = train_steps(config, 3);
    let w = |m: &Toy<AB>, f: fn(&common::ToyLayer<AB>) -> &AdaptedLinear<AB>| {
        tensor_values(f(&m.layers[1]).base().weight.val())
    };
    assert_ne!(w(&before, |l| &l.query), w(&after, |l| &l.query));
    assert_eq!(w(&before, |l| &l.value), w(&after, |l| &l.value));
    assert_eq!(w(&before, |l| &l.output), w(&after, |l| &l.output));
}

#[test]
fn merged_and_unmerged_models_agree() {
    let (_, trained) = train_steps(AdapterConfig::lora_xs(4).with_alpha(16.0), 20);
    let model = trained.valid();
    let device = Default::default();
    let x = input::<B>(&device);
    // The unmerged reference is the factored path (A, R, B applied in turn):
    // the fused path forms W + s·BRA itself, as merging does.
    let y = tensor_values(set_fused_inference(model.clone(), false).forward(x.clone()));
    let weights = frozen_snapshot(&model);
    let merged = merge(model);
    assert!(merged.layers[0].query.is_merged());
    let y_merged = tensor_values(merged.forward(x.clone()));
    assert!(
        relative_diff(&y_merged, &y) <= 1e-5,
        "{}",
        relative_diff(&y_merged, &y)
    );
    let restored = unmerge(merged);
    let after = frozen_snapshot(&restored);
    for (a, b) in after.iter().zip(&weights) {
        assert!(common::max_abs_diff(a, b) < 1e-6);
    }
    let plain = merge_and_unload(restored);
    assert!(matches!(plain.layers[0].query, AdaptedLinear::Plain(_)));
    assert!(relative_diff(&tensor_values(plain.forward(x)), &y) <= 1e-5);
}

#[test]
fn unloading_a_merged_model_restores_the_base() {
    let device = Default::default();
    let (_, trained) = train_steps(AdapterConfig::lora_xs(4), 5);
    let restored = unload(merge(trained.valid()));
    assert!(matches!(restored.layers[0].query, AdaptedLinear::Plain(_)));
    let original = frozen_snapshot(&Toy::<B>::new(1, &device));
    for (a, b) in frozen_snapshot(&restored).iter().zip(&original) {
        assert!(common::max_abs_diff(a, b) < 1e-6);
    }
}

#[test]
fn zero_r_gives_exactly_the_base_model() {
    let device = Default::default();
    let base = Toy::<B>::new(3, &device);
    let y_base = tensor_values(base.forward(input(&device)));
    let config = AdapterConfig::lora_xs(4).with_r_init(loraxs::RInit::Zeros);
    let model = inject(base, &config).unwrap().model;
    assert_eq!(tensor_values(model.forward(input(&device))), y_base);
    let model = unload(model);
    assert_eq!(tensor_values(model.forward(input(&device))), y_base);
}

#[test]
fn parameter_counts_by_group() {
    let device = Default::default();
    let base_total = 2 * (3 * (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * FFN + FFN) + (FFN * HIDDEN + HIDDEN));
    let frozen_model = Toy::<B>::new(1, &device);
    let count = param_count(&frozen_model, None);
    assert_eq!((count.adapter, count.frozen), (0, base_total));

    let r = 4;
    let model = inject(Toy::<B>::new(1, &device), &AdapterConfig::lora_xs(r))
        .unwrap()
        .model;
    let count = param_count(&model, Some(&AdapterConfig::lora_xs(r)));
    assert_eq!(count.adapter, 8 * r * r);
    // Frozen factors: A (r × in) and B (out × r) per module.
    let factors = 2 * (3 * r * (HIDDEN + HIDDEN) + r * (FFN + HIDDEN));
    assert_eq!(count.frozen, base_total + factors);

    let config = AdapterConfig::lora(r);
    let model = inject(Toy::<B>::new(1, &device), &config).unwrap().model;
    assert_eq!(param_count(&model, Some(&config)).adapter, 4 * r * 2 * HIDDEN);

    let config = AdapterConfig::vera(r);
    let model = inject(Toy::<B>::new(1, &device), &config).unwrap().model;
    assert_eq!(param_count(&model, Some(&config)).adapter, 8 * (r + HIDDEN));

    let config = AdapterConfig::full();
    let model = inject(Toy::<B>::new(1, &device), &config).unwrap().model;
    let count = param_count(&model, Some(&config));
    assert_eq!(
        count.adapter,
        2 * (3 * (HIDDEN * HIDDEN + HIDDEN) + FFN * HIDDEN + HIDDEN)
    );
    assert_eq!(count.total(), base_total);

    // The config-only formula agrees with the model.
    assert_eq!(Method::LoraXs.trainable_per_module(768, 768, 16, true), 256);
    assert_eq!(Method::Lora.trainable_per_module(1024, 1024, 8, true), 16384);
}

#[test]
fn injection_reports_progress() {
    let device = Default::default();
    let mut seen = Vec::new();
    inject_with_progress(Toy::<B>::new(1, &device), &AdapterConfig::lora_xs(2), &mut |p| {
        seen.push((p.done, p.total, p.module.to_string()))
    })
    .unwrap();
    assert_eq!(seen.len(), 9);
    assert_eq!(
        seen[0],
        (0, 8, "encoder.layer.0.attention.self.query".to_string())
    );
    assert_eq!(seen[8], (8, 8, String::new()));
}

#[test]
fn injection_errors_are_clear() {
    let device = Default::default();
    let toy = || Toy::<B>::new(1, &device);

    let config = AdapterConfig::lora_xs(4).with_targets(TargetModules::new(["query", "qurey"]));
    let err = inject(toy(), &config).unwrap_err();
    assert!(
        matches!(&err, AdapterError::TargetNotFound { pattern, available } if pattern == "qurey" && available.len() == 10)
    );
    assert!(
        err.to_string().contains("encoder.layer.1.intermediate.dense"),
        "{err}"
    );

    let err = inject(toy(), &AdapterConfig::lora_xs(13)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "module `encoder.layer.0.attention.self.query`: rank 13 exceeds min(out, in) = 12"
    );

    let err = inject(toy(), &AdapterConfig::lora_xs(0)).unwrap_err();
    assert!(matches!(err, AdapterError::InvalidConfig { field: "rank", .. }));
    let err = inject(toy(), &AdapterConfig::lora(2).with_dropout(1.5)).unwrap_err();
    assert!(matches!(
        err,
        AdapterError::InvalidConfig { field: "dropout", .. }
    ));
    let err = inject(
        toy(),
        &AdapterConfig::lora_xs(2).with_targets(TargetModules::new(Vec::<String>::new())),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        AdapterError::InvalidConfig { field: "targets", .. }
    ));

    let adapted = inject(toy(), &AdapterConfig::lora_xs(2)).unwrap().model;
    let err = inject(adapted, &AdapterConfig::lora(2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "module `encoder.layer.0.attention.self.query` already has a lora-xs adapter"
    );
}

#[test]
fn trainable_ids_are_stable_across_injections() {
    let device = Default::default();
    let ids = |config: &AdapterConfig| {
        let model = inject(Toy::<B>::new(1, &device), config).unwrap().model;
        let mut ids = Vec::new();
        model.linears(&mut |name, layer| match layer {
            AdaptedLinear::LoraXs(l) => ids.push(l.r.id),
            AdaptedLinear::Lora(l) => ids.extend([l.a.id, l.b.id]),
            AdaptedLinear::Vera(l) => ids.extend([l.lambda_d.id, l.lambda_b.id]),
            AdaptedLinear::Plain(l) if config.method == Method::Full && config.targets.matches(name) => {
                ids.push(l.weight.id)
            }
            AdaptedLinear::Plain(_) => {}
        });
        ids
    };
    for config in [
        AdapterConfig::lora_xs(2),
        AdapterConfig::lora(2),
        AdapterConfig::vera(2),
        AdapterConfig::full(),
    ] {
        let first = ids(&config);
        assert!(!first.is_empty());
        assert_eq!(first, ids(&config), "{:?}", config.method);
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), first.len(), "ids are distinct");
    }
}

/// VeRA's projections are shared by every module of a model and sliced as
/// PEFT slices them (`vera_A[:, :in]`, `vera_B[:out, :]`): checked through
/// the modules' own factors against each other, not through the slicing
/// code — the widest module holds the whole of each projection.
#[test]
fn vera_projections_are_shared_and_sliced_like_peft() {
    let device = Default::default();
    let targets = TargetModules::new([
        "query",
        "value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]);
    let rank = 4;
    let model = inject(
        Toy::<B>::new(1, &device),
        &AdapterConfig::vera(rank).with_targets(targets),
    )
    .unwrap()
    .model;
    // (name, A (r × in), B (out × r), in, out), paper orientation.
    let mut layers = Vec::new();
    model.linears(&mut |name, layer| {
        if let AdaptedLinear::Vera(v) = layer {
            let [d_in, _] = v.a.dims();
            let [_, d_out] = v.b.dims();
            layers.push((
                name.to_string(),
                tensor_values(v.a.val().transpose()),
                tensor_values(v.b.val().transpose()),
                d_in,
                d_out,
            ));
        }
    });
    assert_eq!(layers.len(), 10);
    let (max_in, max_out) = (FFN, FFN);
    let widest_in = layers.iter().find(|l| l.3 == max_in).unwrap();
    let widest_out = layers.iter().find(|l| l.4 == max_out).unwrap();
    for (name, a, b, d_in, d_out) in &layers {
        for i in 0..rank {
            assert_eq!(
                &a[i * d_in..(i + 1) * d_in],
                &widest_in.1[i * max_in..i * max_in + d_in],
                "{name}: row {i} of A is the first {d_in} columns of the shared A"
            );
        }
        assert_eq!(
            &b[..],
            &widest_out.2[..d_out * rank],
            "{name}: B is the first {d_out} rows of the shared B"
        );
    }
    // Kaiming-uniform over the shared shapes (fan-in = max_in for A, r for B).
    let (a, b) = (&widest_in.1, &widest_out.2);
    let bound_a = 1.0 / (max_in as f32).sqrt();
    assert!(a.iter().all(|v| v.abs() <= bound_a));
    assert!(
        a.iter().fold(0.0f32, |m, v| m.max(v.abs())) > 0.8 * bound_a,
        "drawn over the full range"
    );
    assert!(b.iter().all(|v| v.abs() <= 1.0 / (rank as f32).sqrt()));
    // Another seed, other projections.
    let other = inject(Toy::<B>::new(1, &device), &AdapterConfig::vera(rank).with_seed(9))
        .unwrap()
        .model;
    let mut other_a = Vec::new();
    other.linears(&mut |_, layer| {
        if let AdaptedLinear::Vera(v) = layer {
            other_a.push(tensor_values(v.a.val()));
        }
    });
    let AdaptedLinear::Vera(first) = &model.layers[0].query else {
        unreachable!()
    };
    assert_ne!(other_a[0], tensor_values(first.a.val()));
}
