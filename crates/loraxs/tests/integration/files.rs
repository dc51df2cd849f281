//! Adapter files: round trips for every method, and every kind of bad file.

use crate::common;

use std::path::Path;

use burn::backend::NdArray;
use common::{Toy, input};
use loraxs::interop::{tensor_values, trainable};
use loraxs::{
    AdapterConfig, AdapterError, AdapterFile, LORA_XS_R, SaveOptions, StoredTensor, TargetModules, inject,
    load_adapter, save_adapter,
};

type B = NdArray<f32>;

/// A model adapted with `config` whose trainable values are non-trivial.
fn trained(config: &AdapterConfig) -> Toy<B> {
    let device = Default::default();
    let mut model = inject(Toy::<B>::new(1, &device), config).unwrap().model;
    let mut seed = 100;
    let mut perturb = |t: burn::tensor::Tensor<B, 2>| {
        seed += 1;
        let dims = t.dims();
        let noise = common::random_values(dims[0] * dims[1], seed);
        t + burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(noise, dims), &Default::default())
    };
    use loraxs::{AdaptedLinear, AdapterHost};
    model.linears_mut(&mut |name, layer| match layer {
        AdaptedLinear::LoraXs(l) => l.r = trainable(perturb(l.r.val())),
        AdaptedLinear::Lora(l) => l.b = trainable(perturb(l.b.val())),
        AdaptedLinear::Vera(l) => l.lambda_b = trainable(l.lambda_b.val() + 0.5),
        AdaptedLinear::Plain(l) if config.method == loraxs::Method::Full && config.targets.matches(name) => {
            l.weight = trainable(perturb(l.weight.val()))
        }
        AdaptedLinear::Plain(_) => {}
    });
    model
}

fn round_trip(config: AdapterConfig, options: SaveOptions) -> AdapterFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.safetensors");
    let model = trained(&config);
    let device = Default::default();
    let y = tensor_values(model.forward(input(&device)));
    let adapted = loraxs::Adapted {
        model,
        config: config.clone(),
        report: loraxs::InjectionReport {
            modules: Vec::new(),
            seconds: 0.0,
        },
    };
    let saved = save_adapter(&adapted, &path, options).unwrap();
    let (loaded, file) = load_adapter(Toy::<B>::new(1, &device), &path).unwrap();
    assert_eq!(file, saved);
    assert_eq!(loaded.config, config);
    let y_loaded = tensor_values(loaded.model.forward(input(&device)));
    assert_eq!(
        y_loaded, y,
        "{:?}: outputs differ after save → load",
        config.method
    );
    file
}

#[test]
fn lora_xs_round_trip_stores_only_r() {
    let file = round_trip(AdapterConfig::lora_xs(4), SaveOptions::default());
    assert_eq!(file.tensors.len(), 1);
    assert_eq!(file.tensors[LORA_XS_R].shape, vec![8, 4, 4]);
    assert_eq!(file.stored_values(), 8 * 16);
    let bytes = file.to_bytes().unwrap();
    // Values plus at most 1 KiB of header and metadata.
    assert!(bytes.len() <= 8 * 16 * 4 + 1024, "{} bytes", bytes.len());
}

#[test]
fn lora_xs_round_trip_with_stored_factors() {
    let file = round_trip(AdapterConfig::lora_xs(4), SaveOptions { store_factors: true });
    assert!(file.factors_stored);
    assert_eq!(
        file.tensors["encoder.layer.0.output.dense.lora_xs.A"].shape,
        vec![4, common::FFN]
    );
    assert_eq!(
        file.tensors["encoder.layer.0.output.dense.lora_xs.B"].shape,
        vec![common::HIDDEN, 4]
    );
}

#[test]
fn random_factor_ablation_round_trip() {
    round_trip(
        AdapterConfig::lora_xs(4).with_factors(loraxs::Factors::Random),
        SaveOptions::default(),
    );
}

#[test]
fn baseline_round_trips() {
    let file = round_trip(AdapterConfig::lora(2), SaveOptions::default());
    assert_eq!(
        file.tensors["encoder.layer.1.attention.self.value.lora.A"].shape,
        vec![2, common::HIDDEN]
    );
    let file = round_trip(AdapterConfig::vera(3), SaveOptions::default());
    assert_eq!(
        file.tensors["encoder.layer.1.output.dense.vera.lambda_d"].shape,
        vec![3]
    );
    let file = round_trip(
        AdapterConfig::full().with_targets(TargetModules::new(["intermediate.dense"])),
        SaveOptions::default(),
    );
    assert_eq!(
        file.tensors["encoder.layer.0.intermediate.dense.weight"].shape,
        vec![common::FFN, common::HIDDEN]
    );
}

#[test]
fn head_tensors_travel_with_the_adapter() {
    let config = AdapterConfig::lora_xs(2);
    let mut file = AdapterFile::from_model(&trained(&config), &config, SaveOptions::default()).unwrap();
    file.insert_head_tensor(
        "head.out_proj.weight",
        vec![2, 3],
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    )
    .unwrap();
    assert!(
        file.insert_head_tensor("classifier.weight", vec![1], vec![1.0])
            .is_err()
    );
    assert!(file.insert_head_tensor("head.bias", vec![2], vec![1.0]).is_err());
    let back = AdapterFile::from_bytes(&file.to_bytes().unwrap(), Path::new("x")).unwrap();
    let heads: Vec<_> = back.head_tensors().collect();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].1.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Loading into a model ignores head tensors (the caller applies them).
    back.apply(Toy::<B>::new(1, &Default::default()), Path::new("x"))
        .unwrap();
}

#[test]
fn label_names_travel_with_the_head_and_must_match_it() {
    let config = AdapterConfig::lora_xs(2);
    let mut file = AdapterFile::from_model(&trained(&config), &config, SaveOptions::default()).unwrap();
    assert_eq!(file.labels, None);
    file.insert_head_tensor("head.out_proj.weight", vec![2, 3], vec![0.5; 6])
        .unwrap();
    file.set_labels(vec!["negative".into(), "positive".into()])
        .unwrap();
    let back = AdapterFile::from_bytes(&file.to_bytes().unwrap(), Path::new("x")).unwrap();
    assert_eq!(
        back.labels.as_deref(),
        Some(&["negative".to_string(), "positive".to_string()][..])
    );
    assert_eq!(back.head_outputs(), Some(2));
    // As many names as outputs, none blank, none repeated.
    let err = file
        .set_labels(vec!["a".into(), "b".into(), "c".into()])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid adapter config: `labels` names 3 outputs, but the head (`head.out_proj.weight`) has 2"
    );
    assert!(file.set_labels(vec!["a".into(), " ".into()]).is_err());
    assert!(file.set_labels(vec![]).is_err());
    // A file whose head changed after the names were set is not written.
    file.insert_head_tensor("head.out_proj.weight", vec![3, 2], vec![0.5; 6])
        .unwrap();
    assert!(file.to_bytes().is_err());
}

fn saved_file(config: &AdapterConfig) -> AdapterFile {
    AdapterFile::from_model(&trained(config), config, SaveOptions::default()).unwrap()
}

fn apply_err(file: &AdapterFile, model: Toy<B>) -> AdapterError {
    file.apply(model, Path::new("a.safetensors"))
        .expect_err("loading must fail")
}

#[test]
fn loading_into_another_base_model_fails() {
    let file = saved_file(&AdapterConfig::lora_xs(4));
    let err = apply_err(&file, Toy::<B>::new(2, &Default::default()));
    assert!(matches!(err, AdapterError::BaseMismatch { .. }));
    assert!(
        err.to_string()
            .starts_with("a.safetensors: adapter was made for base weights with fingerprint")
    );
}

#[test]
fn shape_and_name_problems_name_the_tensor() {
    let device = Default::default();
    let config = AdapterConfig::lora(2);
    let good = saved_file(&config);

    let mut file = good.clone();
    file.tensors.remove("encoder.layer.1.attention.self.value.lora.B");
    let err = apply_err(&file, Toy::new(1, &device));
    assert_eq!(
        err.to_string(),
        "a.safetensors: tensor `encoder.layer.1.attention.self.value.lora.B` is missing"
    );

    let mut file = good.clone();
    file.tensors
        .get_mut("encoder.layer.0.attention.self.query.lora.A")
        .unwrap()
        .shape = vec![3, 8];
    let err = apply_err(&file, Toy::new(1, &device));
    assert_eq!(
        err.to_string(),
        "a.safetensors: tensor `encoder.layer.0.attention.self.query.lora.A` has shape [3, 8], expected [2, 12]"
    );

    let mut file = good.clone();
    file.tensors.insert(
        "encoder.layer.7.attention.self.query.lora.A".into(),
        StoredTensor {
            shape: vec![1],
            values: vec![0.0],
        },
    );
    let err = apply_err(&file, Toy::new(1, &device));
    assert!(
        matches!(err, AdapterError::UnexpectedTensor { ref tensor, .. } if tensor == "encoder.layer.7.attention.self.query.lora.A")
    );

    let mut file = saved_file(&AdapterConfig::lora_xs(4));
    file.tensors.get_mut(LORA_XS_R).unwrap().shape = vec![7, 4, 4];
    let err = apply_err(&file, Toy::new(1, &device));
    assert!(matches!(err, AdapterError::ShapeMismatch { ref tensor, .. } if tensor == LORA_XS_R));
}

#[test]
fn corrupt_and_truncated_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let bytes = saved_file(&AdapterConfig::lora_xs(4)).to_bytes().unwrap();

    for cut in [0, 4, 8, 40, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = AdapterFile::load(&path).unwrap_err();
        assert!(matches!(err, AdapterError::Corrupt { .. }), "cut at {cut}: {err}");
        assert!(
            err.to_string()
                .contains("a.safetensors: not a valid adapter file"),
            "{err}"
        );
    }
    let err = AdapterFile::load(dir.path().join("missing.safetensors")).unwrap_err();
    assert!(matches!(err, AdapterError::Io { .. }));
    assert!(err.to_string().contains("missing.safetensors"));
}

/// A safetensors file with the given metadata and one tensor.
fn with_metadata(
    edit: impl FnOnce(&mut std::collections::HashMap<String, String>),
    dtype: safetensors::Dtype,
    data: &[u8],
) -> Vec<u8> {
    let file = saved_file(
        &AdapterConfig::lora_xs(1).with_targets(TargetModules::new(["encoder.layer.0.attention.self.query"])),
    );
    let mut meta = std::collections::HashMap::from([
        ("format".to_string(), loraxs::FORMAT.to_string()),
        ("format_version".to_string(), "1".to_string()),
        ("config".to_string(), serde_json::to_string(&file.config).unwrap()),
        ("sign_convention".to_string(), "max-abs-left-positive".to_string()),
        ("base_fingerprint".to_string(), file.base_fingerprint.clone()),
        ("factors".to_string(), "recomputed".to_string()),
    ]);
    edit(&mut meta);
    let shape = vec![1, 1, data.len() / (dtype.bitsize() / 8)];
    let view = safetensors::tensor::TensorView::new(dtype, shape, data).unwrap();
    safetensors::serialize([(LORA_XS_R, view)], Some(meta)).unwrap()
}

#[test]
fn bad_metadata_names_the_field() {
    let p = Path::new("m.safetensors");
    let one = 1.0f32.to_le_bytes();
    let good = with_metadata(|_| {}, safetensors::Dtype::F32, &one);
    let file = AdapterFile::from_bytes(&good, p).unwrap();
    file.apply(Toy::<B>::new(1, &Default::default()), p).unwrap();

    type Edit = Box<dyn FnOnce(&mut std::collections::HashMap<String, String>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|m| {
                m.remove("format");
            }),
            "m.safetensors: metadata field `format` is missing",
        ),
        (
            Box::new(|m| {
                m.insert("format".into(), "peft".into());
            }),
            "m.safetensors: metadata field `format` is `peft`, expected `loraxs-adapter`",
        ),
        (
            Box::new(|m| {
                m.insert("format_version".into(), "2".into());
            }),
            "m.safetensors: metadata field `format_version` is 2; this build reads versions 1 to 1",
        ),
        (
            Box::new(|m| {
                m.insert("config".into(), "{}".into());
            }),
            "m.safetensors: metadata field `config` is invalid: missing field `method`",
        ),
        (
            Box::new(|m| {
                m.insert("sign_convention".into(), "positive-first".into());
            }),
            "m.safetensors: metadata field `sign_convention` `positive-first` is unknown",
        ),
        (
            Box::new(|m| {
                m.insert("factors".into(), "maybe".into());
            }),
            "m.safetensors: metadata field `factors` is `maybe`, expected `stored` or `recomputed`",
        ),
        (
            Box::new(|m| {
                m.remove("base_fingerprint");
            }),
            "m.safetensors: metadata field `base_fingerprint` is missing",
        ),
        (
            Box::new(|m| {
                m.insert("labels".into(), "[\"yes\", 2]".into());
            }),
            "m.safetensors: metadata field `labels` is not a JSON array of strings",
        ),
        (
            Box::new(|m| {
                m.insert("labels".into(), "[\"yes\", \"yes\"]".into());
            }),
            "m.safetensors: metadata field `labels` labels 0 and 1 are both `yes`",
        ),
    ];
    for (edit, message) in cases {
        let err =
            AdapterFile::from_bytes(&with_metadata(edit, safetensors::Dtype::F32, &one), p).unwrap_err();
        assert!(err.to_string().starts_with(message), "{err}\nexpected: {message}");
    }
    let bad_config = with_metadata(
        |m| {
            let c = m["config"].replace("\"rank\":1", "\"rank\":0");
            m.insert("config".into(), c);
        },
        safetensors::Dtype::F32,
        &one,
    );
    let err = AdapterFile::from_bytes(&bad_config, p).unwrap_err();
    assert!(err.to_string().contains("`rank` must be at least 1"), "{err}");
}

#[test]
fn dtypes_and_values_are_checked() {
    let p = Path::new("m.safetensors");
    let meta = |_: &mut std::collections::HashMap<String, String>| {};
    let half = half::f16::from_f32(0.5).to_le_bytes();
    let file = AdapterFile::from_bytes(&with_metadata(meta, safetensors::Dtype::F16, &half), p).unwrap();
    assert_eq!(file.tensors[LORA_XS_R].values, vec![0.5]);
    let bf = half::bf16::from_f32(0.25).to_le_bytes();
    let file = AdapterFile::from_bytes(&with_metadata(meta, safetensors::Dtype::BF16, &bf), p).unwrap();
    assert_eq!(file.tensors[LORA_XS_R].values, vec![0.25]);

    let err = AdapterFile::from_bytes(
        &with_metadata(meta, safetensors::Dtype::I32, &7i32.to_le_bytes()),
        p,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.safetensors: tensor `lora_xs.R` has dtype I32, expected F32, F16 or BF16"
    );
    let err = AdapterFile::from_bytes(
        &with_metadata(meta, safetensors::Dtype::F32, &f32::NAN.to_le_bytes()),
        p,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.safetensors: tensor `lora_xs.R` holds a non-finite value"
    );
}

#[test]
fn saving_a_merged_model_is_refused() {
    let config = AdapterConfig::lora_xs(2);
    let merged = loraxs::merge(trained(&config));
    let err = AdapterFile::from_model(&merged, &config, SaveOptions::default()).unwrap_err();
    assert!(matches!(err, AdapterError::Merged { .. }));
}

#[test]
fn saving_with_the_wrong_config_is_refused() {
    let err = AdapterFile::from_model(
        &trained(&AdapterConfig::lora_xs(2)),
        &AdapterConfig::lora(2),
        SaveOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("carries lora-xs"), "{err}");
}
