//! Head forward passes against hand computations, losses, trainability and
//! the round trip through an adapter file.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Int, Tensor, TensorData};
use loraxs::interop::{tensor_values, torch_weight};
use loraxs::{AdapterFile, SignConvention};
use loraxs_heads::{HeadConfig, HeadStyle};

type B = NdArray<f32>;

fn hidden(device: &burn::backend::ndarray::NdArrayDevice) -> Tensor<B, 3> {
    let values: Vec<f32> = (0..2 * 3 * 4).map(|i| ((i * 5 % 7) as f32 - 3.0) / 4.0).collect();
    Tensor::from_data(TensorData::new(values, [2, 3, 4]), device)
}

fn affine(x: &[f32], w: &[f32], b: &[f32], d_out: usize, d_in: usize) -> Vec<f32> {
    (0..d_out)
        .map(|o| b[o] + (0..d_in).map(|i| w[o * d_in + i] * x[i]).sum::<f32>())
        .collect()
}

#[test]
fn roberta_head_uses_the_first_token() {
    let device = Default::default();
    let mut config = HeadConfig::new(HeadStyle::Roberta, 4, 3);
    config.dropout = 0.0;
    let head = config.init::<B>(&device);
    let logits = tensor_values(head.forward(hidden(&device), None));
    let h = tensor_values(hidden(&device));
    let dense = head.dense.as_ref().unwrap();
    let (dw, db) = (
        torch_weight(dense),
        tensor_values(dense.bias.as_ref().unwrap().val()),
    );
    let (ow, ob) = (
        torch_weight(&head.out_proj),
        tensor_values(head.out_proj.bias.as_ref().unwrap().val()),
    );
    for b in 0..2 {
        let first = &h[b * 12..b * 12 + 4];
        let x: Vec<f32> = affine(first, &dw, &db, 4, 4).iter().map(|v| v.tanh()).collect();
        let expected = affine(&x, &ow, &ob, 3, 4);
        for (a, e) in logits[b * 3..b * 3 + 3].iter().zip(&expected) {
            assert!((a - e).abs() < 1e-6);
        }
    }
}

#[test]
fn bert_head_uses_the_pooled_output() {
    let device = Default::default();
    let head = HeadConfig::new(HeadStyle::Bert, 4, 2).init::<B>(&device);
    assert!(head.dense.is_none());
    let pooled = Tensor::<B, 2>::ones([2, 4], &device);
    assert_eq!(head.forward(hidden(&device), Some(pooled)).dims(), [2, 2]);
    assert_eq!(head.param_count().head, 4 * 2 + 2);
}

#[test]
fn losses() {
    let device = Default::default();
    let classifier = HeadConfig::new(HeadStyle::Roberta, 4, 2).init::<B>(&device);
    let logits = Tensor::<B, 2>::from_data(TensorData::new(vec![0.0f32, 0.0, 2.0, 0.0], [2, 2]), &device);
    let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64, 0], [2]), &device);
    let ce = tensor_values(classifier.loss(logits, Some(labels), None))[0];
    let expected = (2f32.ln() + (1.0 + (-2f32).exp()).ln()) / 2.0;
    assert!((ce - expected).abs() < 1e-6, "{ce} vs {expected}");

    let regressor = HeadConfig::new(HeadStyle::Roberta, 4, 1).init::<B>(&device);
    let preds = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, 3.0], [2, 1]), &device);
    let targets = Tensor::<B, 1>::from_data(TensorData::new(vec![2.0f32, 3.0], [2]), &device);
    assert_eq!(
        tensor_values(regressor.loss(preds, None, Some(targets))),
        vec![0.5]
    );
}

#[test]
fn head_is_trainable() {
    let device = Default::default();
    let head = HeadConfig::new(HeadStyle::Roberta, 4, 2).init::<Autodiff<B>>(&device);
    let h = Tensor::<Autodiff<B>, 3>::ones([2, 3, 4], &device);
    let grads = head.forward(h, None).sum().backward();
    assert!(head.out_proj.weight.val().grad(&grads).is_some());
    assert!(head.dense.as_ref().unwrap().weight.val().grad(&grads).is_some());
}

#[test]
fn head_round_trips_through_an_adapter_file() {
    let device = Default::default();
    let head = HeadConfig::new(HeadStyle::Roberta, 4, 3).init::<B>(&device);
    let mut file = AdapterFile {
        config: loraxs::AdapterConfig::lora_xs(2),
        base_fingerprint: "00".repeat(16),
        sign_convention: SignConvention::default(),
        factors_stored: false,
        tensors: Default::default(),
        labels: None,
    };
    head.store(&mut file).unwrap();
    assert_eq!(file.tensors["head.dense.weight"].shape, vec![4, 4]);
    assert_eq!(file.tensors["head.out_proj.bias"].shape, vec![3]);
    let mut other = HeadConfig::new(HeadStyle::Roberta, 4, 3);
    other.seed = 9;
    let loaded = other.init::<B>(&device).load(&file).unwrap();
    let x = hidden(&device);
    let (a, b) = (head.valid_forward(x.clone()), loaded.valid_forward(x));
    assert_eq!(a, b);

    let wrong = HeadConfig::new(HeadStyle::Roberta, 4, 5)
        .init::<B>(&device)
        .load(&file)
        .unwrap_err();
    assert!(matches!(wrong, loraxs_heads::HeadError::ShapeMismatch { .. }));
    assert_eq!(
        wrong.to_string(),
        "head tensor `head.out_proj.weight` has shape [3, 4], expected [5, 4]"
    );
    file.tensors.remove("head.dense.bias");
    let missing = HeadConfig::new(HeadStyle::Roberta, 4, 3)
        .init::<B>(&device)
        .load(&file)
        .unwrap_err();
    assert!(matches!(missing, loraxs_heads::HeadError::MissingTensor { .. }));
    assert_eq!(missing.to_string(), "head tensor `head.dense.bias` is missing");
}

trait ValidForward {
    fn valid_forward(&self, x: Tensor<B, 3>) -> Vec<f32>;
}

impl ValidForward for loraxs_heads::Head<B> {
    fn valid_forward(&self, x: Tensor<B, 3>) -> Vec<f32> {
        tensor_values(self.forward(x, None))
    }
}

/// Hugging Face initialises classifier weights from N(0, 0.02²) and biases
/// at 0 (`_init_weights`): check the draws' moments and shape, not just a
/// bound, on a MiniLM-sized head.
#[test]
fn head_initialisation_is_hugging_faces() {
    let device = Default::default();
    let head = HeadConfig::new(HeadStyle::Roberta, 384, 2).init::<B>(&device);
    let dense = head.dense.as_ref().unwrap();
    for (name, linear) in [("dense", dense), ("out_proj", &head.out_proj)] {
        let bias = tensor_values(linear.bias.as_ref().unwrap().val());
        assert!(bias.iter().all(|&b| b == 0.0), "{name}: zero bias");
    }
    let w: Vec<f64> = tensor_values(dense.weight.val())
        .iter()
        .map(|&v| v as f64)
        .collect();
    let n = w.len() as f64;
    let mean = w.iter().sum::<f64>() / n;
    let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    // 147 456 draws: the standard errors are 5e-5 (mean) and 0.2 % (std).
    assert!(mean.abs() < 3e-4, "mean {mean}");
    assert!((std / 0.02 - 1.0).abs() < 0.01, "std {std}");
    let within = |k: f64| w.iter().filter(|v| v.abs() <= k * 0.02).count() as f64 / n;
    assert!(
        (within(1.0) - 0.6827).abs() < 0.005,
        "normal, not uniform: {}",
        within(1.0)
    );
    assert!((within(2.0) - 0.9545).abs() < 0.003, "{}", within(2.0));
    // The seed decides the draws.
    let again = HeadConfig::new(HeadStyle::Roberta, 384, 2).init::<B>(&device);
    assert_eq!(
        tensor_values(again.out_proj.weight.val()),
        tensor_values(head.out_proj.weight.val())
    );
    let mut other = HeadConfig::new(HeadStyle::Roberta, 384, 2);
    other.seed = 1;
    assert_ne!(
        tensor_values(other.init::<B>(&device).out_proj.weight.val()),
        tensor_values(head.out_proj.weight.val())
    );
}

/// The head's dropout draws new masks on every training forward and is the
/// identity in evaluation (`valid()`, the inner backend).
#[test]
fn head_dropout_trains_and_stays_off_in_evaluation() {
    use burn::module::AutodiffModule;
    type AB = Autodiff<B>;
    let device = Default::default();
    let mut config = HeadConfig::new(HeadStyle::Roberta, 4, 3);
    config.dropout = 0.5;
    let head = config.init::<AB>(&device);
    let x = Tensor::<AB, 3>::from_data(hidden(&device).into_data(), &device);
    let runs: Vec<Vec<f32>> = (0..4)
        .map(|_| tensor_values(head.forward(x.clone(), None)))
        .collect();
    assert!(runs.windows(2).any(|w| w[0] != w[1]), "training forwards differ");
    let valid = head.valid();
    let eval = tensor_values(valid.forward(hidden(&device), None));
    assert_eq!(eval, tensor_values(valid.forward(hidden(&device), None)));
    let mut off = config.clone();
    off.dropout = 0.0;
    assert_eq!(
        eval,
        tensor_values(off.init::<B>(&device).forward(hidden(&device), None)),
        "no dropout in eval"
    );
}
