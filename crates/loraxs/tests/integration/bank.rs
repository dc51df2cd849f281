//! The adapter bank: a batch whose rows name different LoRA-XS adapters
//! gives, row by row, what each row gives alone through its own adapter;
//! slot 0 is the base model; adapters come and go; files of another base,
//! rank, method or target set are refused by name.

use crate::common;

use std::path::Path;

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use common::{HIDDEN, Toy, random_values};
use loraxs::interop::tensor_values;
use loraxs::{
    AdapterBank, AdapterConfig, AdapterError, AdapterFile, RInit, SaveOptions, TargetModules, inject,
};

fn config() -> AdapterConfig {
    AdapterConfig::lora_xs(4).with_targets(TargetModules::new(["query", "value", "output.dense"]))
}

/// A "trained" adapter: `R` drawn with std 0.5 from `seed`, with its own
/// alpha so that adapters differ in scale too.
fn adapter<B: Backend>(seed: u64, alpha: f64, device: &B::Device) -> AdapterFile {
    let c = config()
        .with_seed(seed)
        .with_alpha(alpha)
        .with_r_init(RInit::Gaussian { std: 0.5 });
    inject(Toy::<B>::new(1, device), &c)
        .unwrap()
        .to_file(SaveOptions::default())
        .unwrap()
}

/// `rows × 3 tokens × HIDDEN` of seeded values.
fn batch<B: Backend>(rows: usize, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(
        TensorData::new(random_values(rows * 3 * HIDDEN, 77), [rows, 3, HIDDEN]),
        device,
    )
}

fn every_row_equals_its_adapter_alone<B: Backend>() {
    let device = B::Device::default();
    let base = Toy::<B>::new(1, &device);
    let files: Vec<AdapterFile> = [(11, 16.0), (12, 4.0), (13, 8.0)]
        .iter()
        .map(|&(seed, alpha)| adapter::<B>(seed, alpha, &device))
        .collect();
    let mut bank = AdapterBank::new(base.clone(), &config()).unwrap();
    for (i, f) in files.iter().enumerate() {
        bank.insert(&format!("a{i}"), f, Path::new("x.safetensors"))
            .unwrap();
    }
    assert_eq!(bank.len(), 3);
    // 2 layers × 4 modules ("output.dense" matches the attention output
    // too) × r² values of f32.
    assert_eq!(bank.bytes_per_adapter(), 8 * 16 * 4);

    let names = [Some("a2"), None, Some("a0"), Some("a1"), Some("a0"), None];
    let slots = bank.slots(&names).unwrap();
    assert_eq!(slots, [3, 0, 1, 2, 1, 0]);
    let x = batch::<B>(names.len(), &device);
    let routed = tensor_values(bank.route(&slots, &device).forward(x.clone()));
    let per_row = 3 * HIDDEN;
    for (i, name) in names.iter().enumerate() {
        let row = x.clone().narrow(0, i, 1);
        let alone = match name {
            Some(n) => {
                let k: usize = n[1..].parse().unwrap();
                let model = files[k].apply(base.clone(), Path::new("x")).unwrap().model;
                model.forward(row)
            }
            None => base.forward(row),
        };
        let alone = tensor_values(alone);
        let diff = common::max_abs_diff(&routed[i * per_row..(i + 1) * per_row], &alone);
        assert!(diff <= 1e-5, "row {i} ({name:?}): max |Δ| {diff}");
    }
    // The adapters really differ from the base and from each other.
    let outs: Vec<Vec<f32>> = (0..4)
        .map(|s| tensor_values(bank.route(&[s], &device).forward(x.clone().narrow(0, 0, 1))))
        .collect();
    for a in 0..4 {
        for b in a + 1..4 {
            assert!(
                common::max_abs_diff(&outs[a], &outs[b]) > 1e-3,
                "slots {a} and {b} agree"
            );
        }
    }
}

#[test]
fn every_row_equals_its_adapter_alone_on_ndarray() {
    every_row_equals_its_adapter_alone::<NdArray<f32>>();
}

#[test]
fn every_row_equals_its_adapter_alone_on_flex() {
    every_row_equals_its_adapter_alone::<Flex>();
}

#[test]
fn adapters_come_and_go_and_the_others_keep_their_outputs() {
    type B = NdArray<f32>;
    let device = Default::default();
    let base = Toy::<B>::new(1, &device);
    let mut bank = AdapterBank::new(base, &config()).unwrap();
    for (i, seed) in [21, 22, 23].into_iter().enumerate() {
        bank.insert(
            &format!("a{i}"),
            &adapter::<B>(seed, 16.0, &device),
            Path::new("f"),
        )
        .unwrap();
    }
    let x = batch::<B>(2, &device);
    let before = tensor_values(
        bank.route(&bank.slots(&[Some("a2"), Some("a0")]).unwrap(), &device)
            .forward(x.clone()),
    );
    bank.remove("a1").unwrap();
    assert_eq!(bank.names(), ["a0", "a2"]);
    let after = tensor_values(
        bank.route(&bank.slots(&[Some("a2"), Some("a0")]).unwrap(), &device)
            .forward(x.clone()),
    );
    assert_eq!(before, after);
    let gone = bank.slots(&[Some("a1")]).unwrap_err();
    assert!(matches!(gone, AdapterError::UnknownAdapter { .. }), "{gone}");
    assert!(bank.remove("a1").is_err());
    let dup = bank
        .insert("a0", &adapter::<B>(24, 16.0, &device), Path::new("f"))
        .unwrap_err();
    assert!(matches!(dup, AdapterError::DuplicateAdapter { .. }), "{dup}");
    // A removed name can come back.
    bank.insert("a1", &adapter::<B>(22, 16.0, &device), Path::new("f"))
        .unwrap();
    assert_eq!(bank.len(), 3);

    // Several at once: all or none.
    let f = adapter::<B>(30, 16.0, &device);
    let other_rank = inject(
        Toy::<B>::new(1, &device),
        &AdapterConfig::lora_xs(3).with_targets(TargetModules::new(["query", "value", "output.dense"])),
    )
    .unwrap()
    .to_file(SaveOptions::default())
    .unwrap();
    let p = Path::new("f");
    let err = bank.insert_all(&[("b0", &f, p), ("b0", &f, p)]).unwrap_err();
    assert!(matches!(err, AdapterError::DuplicateAdapter { .. }), "{err}");
    assert!(bank.insert_all(&[("b0", &f, p), ("b1", &other_rank, p)]).is_err());
    assert_eq!(bank.len(), 3);
    bank.insert_all(&[("b0", &f, p), ("b1", &f, p)]).unwrap();
    assert_eq!(bank.names(), ["a0", "a2", "a1", "b0", "b1"]);
    let one = tensor_values(bank.route(&[4], &device).forward(x.clone().narrow(0, 0, 1)));
    let other = tensor_values(bank.route(&[5], &device).forward(x.clone().narrow(0, 0, 1)));
    assert_eq!(one, other);
}

#[test]
fn files_of_another_base_rank_method_or_targets_are_refused_by_name() {
    type B = NdArray<f32>;
    let device = Default::default();
    let mut bank = AdapterBank::new(Toy::<B>::new(1, &device), &config()).unwrap();
    let path = Path::new("adapters/other.safetensors");
    let refused = |bank: &mut AdapterBank<B, Toy<B>>, file: AdapterFile| {
        let err = bank.insert("x", &file, path).unwrap_err();
        assert!(err.to_string().contains("adapters/other.safetensors"), "{err}");
        err
    };
    let file = |c: AdapterConfig, seed: u64| {
        inject(Toy::<B>::new(seed, &device), &c)
            .unwrap()
            .to_file(SaveOptions::default())
            .unwrap()
    };
    let err = refused(&mut bank, file(config(), 2));
    assert!(matches!(err, AdapterError::BaseMismatch { .. }), "{err}");
    let err = refused(
        &mut bank,
        file(
            AdapterConfig::lora_xs(3).with_targets(TargetModules::new(["query", "value", "output.dense"])),
            1,
        ),
    );
    assert!(
        matches!(&err, AdapterError::BankMismatch { field, .. } if field == "rank"),
        "{err}"
    );
    let err = refused(
        &mut bank,
        file(
            AdapterConfig::lora(4).with_targets(TargetModules::new(["query", "value", "output.dense"])),
            1,
        ),
    );
    assert!(
        matches!(&err, AdapterError::BankMismatch { field, .. } if field == "method"),
        "{err}"
    );
    let err = refused(
        &mut bank,
        file(config().with_targets(TargetModules::new(["query", "value"])), 1),
    );
    assert!(
        matches!(&err, AdapterError::BankMismatch { field, .. } if field == "targets"),
        "{err}"
    );
    // Stored factors that are not the bank's (here: random A and B with
    // the factor kind relabelled) are refused; the bank's own are accepted.
    let with_factors = inject(Toy::<B>::new(1, &device), &config())
        .unwrap()
        .to_file(SaveOptions { store_factors: true })
        .unwrap();
    bank.insert("stored", &with_factors, path).unwrap();
    let mut forged = with_factors.clone();
    for (name, t) in forged.tensors.iter_mut() {
        if name.ends_with("lora_xs.A") {
            t.values.iter_mut().for_each(|v| *v += 0.1);
        }
    }
    let err = refused(&mut bank, forged);
    assert!(
        matches!(&err, AdapterError::BankMismatch { field, .. } if field.contains("lora_xs.A")),
        "{err}"
    );
    assert!(AdapterBank::new(Toy::<B>::new(1, &device), &AdapterConfig::lora(4)).is_err());
    assert_eq!(bank.names(), ["stored"]);
}
