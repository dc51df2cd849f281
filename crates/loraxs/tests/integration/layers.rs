//! The adapter layers against hand computations, on ndarray and flex, on
//! both of LoRA-XS's forward paths (factored and fused) and through
//! autodiff.

use crate::common;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use common::{max_abs_diff, random_values};
use loraxs::interop::{linear_from_torch, tensor_values, trainable};
use loraxs::{
    AdapterConfig, AdapterLayer, Factors, LoraLinear, LoraXsLinear, RInit, SvdMethod, VeraLinear,
    VeraProjections,
};
use loraxs_svd::truncated_svd_row_major;

const OUT: usize = 6;
const IN: usize = 9;
const TOKENS: usize = 4;

/// `y = W x + b` in f64 by hand; `w` is out × in row-major, `x` is
/// `tokens × in`.
fn base_by_hand(w: &[f32], b: &[f32], x: &[f32]) -> Vec<f64> {
    let tokens = x.len() / IN;
    let mut y = vec![0.0; tokens * OUT];
    for t in 0..tokens {
        for o in 0..OUT {
            let mut acc = b[o] as f64;
            for i in 0..IN {
                acc += w[o * IN + i] as f64 * x[t * IN + i] as f64;
            }
            y[t * OUT + o] = acc;
        }
    }
    y
}

/// `m1 (p×q) · m2 (q×s)` in f64, row-major.
fn matmul(m1: &[f64], m2: &[f64], p: usize, q: usize, s: usize) -> Vec<f64> {
    let mut out = vec![0.0; p * s];
    for i in 0..p {
        for k in 0..q {
            for j in 0..s {
                out[i * s + j] += m1[i * q + k] * m2[k * s + j];
            }
        }
    }
    out
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// LoRA-XS on `tokens` rows against `y = W x + b + s · B R A x` computed by
/// hand in f64 from the SVD factors, on the path `fused` names (asserted:
/// the fused path forms `W + s·BRA`, the factored one applies `A`, `R`, `B`
/// in turn, and the hand formula is what keeps either honest); the merged
/// layer against the same hand values.
fn lora_xs_matches_hand_computation<B: Backend>(tokens: usize, fused: bool) {
    let device = B::Device::default();
    let (w, b, x) = (
        random_values(OUT * IN, 1),
        random_values(OUT, 2),
        random_values(tokens * IN, 3),
    );
    let rank = 3;
    let config = AdapterConfig::lora_xs(rank)
        .with_alpha(6.0)
        .with_svd_method(SvdMethod::Exact);
    let base = linear_from_torch::<B>(w.clone(), OUT, IN, Some(b.clone()), &device);
    let (mut layer, report) = LoraXsLinear::from_linear(base, &config, "m").unwrap();
    let energy = report.energy_kept.unwrap();
    assert!(energy > 0.0 && energy < 1.0);

    // The frozen factors are the SVD factors: B = U_r, A = Σ_r V_rᵀ.
    let svd = truncated_svd_row_major(&w, OUT, IN, rank, SvdMethod::Exact).unwrap();
    assert!(max_abs_diff(&tensor_values(layer.b_torch()), &svd.b_row_major()) < 1e-5);
    assert!(max_abs_diff(&tensor_values(layer.a_torch()), &svd.a_row_major()) < 1e-5);

    // Give R non-trivial values so the adapter term matters.
    let r_values = random_values(rank * rank, 4);
    layer.r = trainable(Tensor::from_data(
        TensorData::new(r_values.clone(), [rank, rank]),
        &device,
    ));
    let training = layer.r.val().is_require_grad() && B::ad_enabled(&device);
    assert_eq!(layer.fuses(tokens), fused && !training, "{tokens} tokens");

    let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [tokens, IN]), &device);
    let y = tensor_values(layer.forward(xt.clone()));

    // y = W x + b + s · B R A x, with s = alpha / r = 2.
    let mut expected = base_by_hand(&w, &b, &x);
    let (a, bm, r) = (
        f64s(&svd.a_row_major()),
        f64s(&svd.b_row_major()),
        f64s(&r_values),
    );
    let bra = matmul(&matmul(&bm, &r, OUT, rank, rank), &a, OUT, rank, IN); // out × in
    for t in 0..tokens {
        for o in 0..OUT {
            let delta: f64 = (0..IN).map(|i| bra[o * IN + i] * x[t * IN + i] as f64).sum();
            expected[t * OUT + o] += 2.0 * delta;
        }
    }
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    assert!(max_abs_diff(&y, &expected) < 1e-5, "{y:?} vs {expected:?}");

    // Merging gives the hand-computed function; unmerging the same weights.
    let w_before = tensor_values(layer.base.weight.val());
    let merged = layer.merge();
    assert!(merged.merged);
    let y_merged = tensor_values(merged.forward(xt.clone()));
    assert!(max_abs_diff(&y_merged, &expected) < 1e-5, "merged");
    let unmerged = merged.unmerge();
    assert!(max_abs_diff(&tensor_values(unmerged.base.weight.val()), &w_before) < 1e-6);
    assert!(max_abs_diff(&tensor_values(unmerged.forward(xt)), &expected) < 1e-5);
}

// OUT = 6, IN = 9: the fused path is taken from 4 tokens on (4 · 15 ≥ 54).
#[test]
fn lora_xs_formula_factored_path_ndarray() {
    lora_xs_matches_hand_computation::<NdArray<f32>>(3, false);
}

#[test]
fn lora_xs_formula_factored_path_flex() {
    lora_xs_matches_hand_computation::<Flex>(3, false);
}

#[test]
fn lora_xs_formula_fused_path_ndarray() {
    lora_xs_matches_hand_computation::<NdArray<f32>>(TOKENS, true);
}

#[test]
fn lora_xs_formula_fused_path_flex() {
    lora_xs_matches_hand_computation::<Flex>(40, true);
}

#[test]
fn lora_xs_formula_training_path_autodiff() {
    // R tracked: the factored path whatever the input size.
    lora_xs_matches_hand_computation::<Autodiff<Flex>>(40, true);
    lora_xs_matches_hand_computation::<Autodiff<NdArray<f32>>>(40, true);
}

/// Forward and backward of one LoRA-XS layer on backend `B`: the output,
/// and the gradients of `Σ y ⊙ P` (`P_ti = cos(0.3 (t·OUT + i))`) with
/// respect to `R` and to the input.
fn lora_xs_forward_backward<B: AutodiffBackend>(tokens: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let device = B::Device::default();
    let rank = 3;
    let config = AdapterConfig::lora_xs(rank).with_alpha(6.0);
    let base = linear_from_torch::<B>(
        random_values(OUT * IN, 1),
        OUT,
        IN,
        Some(random_values(OUT, 2)),
        &device,
    );
    let (mut layer, _) = LoraXsLinear::from_linear(base, &config, "m").unwrap();
    layer.r = trainable(Tensor::from_data(
        TensorData::new(random_values(rank * rank, 4), [rank, rank]),
        &device,
    ));
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(random_values(tokens * IN, 3), [tokens, IN]),
        &device,
    )
    .require_grad();
    let y = layer.forward(x.clone());
    let p: Vec<f32> = (0..tokens * OUT).map(|i| (0.3 * i as f32).cos()).collect();
    let loss = (y.clone() * Tensor::from_data(TensorData::new(p, [tokens, OUT]), &device)).sum();
    let grads = loss.backward();
    let g_r = tensor_values(layer.r.val().grad(&grads).unwrap());
    let g_x = tensor_values(x.grad(&grads).unwrap());
    (tensor_values(y), g_r, g_x)
}

#[test]
fn lora_xs_forward_and_backward_agree_across_backends() {
    let tokens = 5;
    let (y_nd, gr_nd, gx_nd) = lora_xs_forward_backward::<Autodiff<NdArray<f32>>>(tokens);
    let (y_fx, gr_fx, gx_fx) = lora_xs_forward_backward::<Autodiff<Flex>>(tokens);
    assert!(common::relative_diff(&y_fx, &y_nd) < 1e-6, "forward");
    assert!(common::relative_diff(&gr_fx, &gr_nd) < 1e-6, "gradient of R");
    assert!(common::relative_diff(&gx_fx, &gx_nd) < 1e-6, "gradient of x");

    // And both against the hand gradient dL/dR = s · Bᵀ Pᵀ X Aᵀ (r × r).
    let rank = 3;
    let svd = truncated_svd_row_major(&random_values(OUT * IN, 1), OUT, IN, rank, SvdMethod::Exact).unwrap();
    let (a, bm) = (f64s(&svd.a_row_major()), f64s(&svd.b_row_major()));
    let x = f64s(&random_values(tokens * IN, 3));
    let p: Vec<f64> = (0..tokens * OUT).map(|i| (0.3 * i as f32).cos() as f64).collect();
    let mut pt_x = vec![0.0; OUT * IN]; // Pᵀ X, out × in
    for t in 0..tokens {
        for o in 0..OUT {
            for i in 0..IN {
                pt_x[o * IN + i] += p[t * OUT + o] * x[t * IN + i];
            }
        }
    }
    let bt: Vec<f64> = (0..rank * OUT).map(|k| bm[(k % OUT) * rank + k / OUT]).collect(); // r × out
    let at: Vec<f64> = (0..IN * rank).map(|k| a[(k % rank) * IN + k / rank]).collect(); // in × r
    let hand: Vec<f32> = matmul(&matmul(&bt, &pt_x, rank, OUT, IN), &at, rank, IN, rank)
        .iter()
        .map(|v| (2.0 * v) as f32)
        .collect();
    assert!(
        common::relative_diff(&gr_nd, &hand) < 1e-5,
        "{gr_nd:?} vs {hand:?}"
    );
}

#[test]
fn r_init_follows_the_config() {
    type B = NdArray<f32>;
    let device = Default::default();
    let base = || linear_from_torch::<B>(random_values(64 * 64, 1), 64, 64, None, &device);
    let (layer, _) = LoraXsLinear::from_linear(base(), &AdapterConfig::lora_xs(32), "m").unwrap();
    let r = tensor_values(layer.r.val());
    let mean = r.iter().sum::<f32>() / r.len() as f32;
    let std = (r.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / r.len() as f32).sqrt();
    assert!((std - 1e-5).abs() < 1e-6, "std {std}");
    assert!(mean.abs() < 1e-6);
    let zeros = AdapterConfig::lora_xs(32).with_r_init(RInit::Zeros);
    let (layer, _) = LoraXsLinear::from_linear(base(), &zeros, "m").unwrap();
    assert!(tensor_values(layer.r.val()).iter().all(|&v| v == 0.0));
    // Different modules get different streams.
    let (other, _) = LoraXsLinear::from_linear(base(), &AdapterConfig::lora_xs(32), "n").unwrap();
    assert_ne!(tensor_values(other.r.val()), r);
}

#[test]
fn random_factor_ablation_is_kaiming_uniform() {
    type B = NdArray<f32>;
    let device = Default::default();
    let base = linear_from_torch::<B>(random_values(OUT * IN, 1), OUT, IN, None, &device);
    let config = AdapterConfig::lora_xs(4).with_factors(Factors::Random);
    let (layer, report) = LoraXsLinear::from_linear(base, &config, "m").unwrap();
    assert_eq!(report.svd_method, None);
    let a = tensor_values(layer.a_torch());
    let b = tensor_values(layer.b_torch());
    assert!(a.iter().all(|v| v.abs() <= 1.0 / (IN as f32).sqrt()));
    assert!(b.iter().all(|v| v.abs() <= 1.0 / 2.0)); // fan_in = r = 4
    let svd = truncated_svd_row_major(&random_values(OUT * IN, 1), OUT, IN, 4, SvdMethod::Exact).unwrap();
    assert!(max_abs_diff(&a, &svd.a_row_major()) > 1e-2, "not the SVD factors");
}

#[test]
fn lora_matches_hand_computation_and_starts_at_base() {
    type B = NdArray<f32>;
    let device = Default::default();
    let (w, b, x) = (
        random_values(OUT * IN, 1),
        random_values(OUT, 2),
        random_values(TOKENS * IN, 3),
    );
    let rank = 2;
    let config = AdapterConfig::lora(rank).with_alpha(4.0);
    let base = linear_from_torch::<B>(w.clone(), OUT, IN, Some(b.clone()), &device);
    let (mut layer, _) = LoraLinear::from_linear(base, &config, "m").unwrap();
    let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [TOKENS, IN]), &device);
    let base_y: Vec<f32> = base_by_hand(&w, &b, &x).iter().map(|&v| v as f32).collect();
    assert!(
        max_abs_diff(&tensor_values(layer.forward(xt.clone())), &base_y) < 1e-5,
        "B = 0 at init"
    );
    let a_bound = 1.0 / (IN as f32).sqrt();
    assert!(tensor_values(layer.a.val()).iter().all(|v| v.abs() <= a_bound));

    let b_values = random_values(OUT * rank, 5); // B: out × r
    layer.b = trainable(
        Tensor::<B, 2>::from_data(TensorData::new(b_values.clone(), [OUT, rank]), &device).transpose(),
    );
    let a = f64s(&tensor_values(layer.a.val().transpose())); // r × in
    let ba = matmul(&f64s(&b_values), &a, OUT, rank, IN);
    let mut expected = base_by_hand(&w, &b, &x);
    for t in 0..TOKENS {
        for o in 0..OUT {
            expected[t * OUT + o] += 2.0
                * (0..IN)
                    .map(|i| ba[o * IN + i] * x[t * IN + i] as f64)
                    .sum::<f64>();
        }
    }
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    let y = tensor_values(layer.forward(xt.clone()));
    assert!(max_abs_diff(&y, &expected) < 1e-5);
    let merged = layer.merge();
    assert!(
        max_abs_diff(&tensor_values(merged.forward(xt)), &expected) < 1e-5,
        "merged"
    );
}

#[test]
fn vera_matches_hand_computation() {
    type B = NdArray<f32>;
    let device = Default::default();
    let (w, b, x) = (
        random_values(OUT * IN, 1),
        random_values(OUT, 2),
        random_values(TOKENS * IN, 3),
    );
    let rank = 5;
    let config = AdapterConfig::vera(rank);
    let projections = VeraProjections::new(&config, 16, 16);
    let base = linear_from_torch::<B>(w.clone(), OUT, IN, Some(b.clone()), &device);
    let (mut layer, _) = VeraLinear::adapt(base, &config, "m", &projections).unwrap();
    assert!(
        tensor_values(layer.lambda_d.val())
            .iter()
            .all(|&v| (v - 0.1).abs() < 1e-7)
    );
    let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [TOKENS, IN]), &device);
    let base_y: Vec<f32> = base_by_hand(&w, &b, &x).iter().map(|&v| v as f32).collect();
    assert!(
        max_abs_diff(&tensor_values(layer.forward(xt.clone())), &base_y) < 1e-5,
        "b = 0 at init"
    );

    let lb = random_values(OUT, 6);
    layer.lambda_b = trainable(Tensor::from_data(TensorData::new(lb.clone(), [OUT]), &device));
    let a = f64s(&tensor_values(layer.a.val().transpose())); // r × in
    let bm = f64s(&tensor_values(layer.b.val().transpose())); // out × r
    let mut expected = base_by_hand(&w, &b, &x);
    for t in 0..TOKENS {
        let ax: Vec<f64> = (0..rank)
            .map(|k| 0.1 * (0..IN).map(|i| a[k * IN + i] * x[t * IN + i] as f64).sum::<f64>())
            .collect();
        for o in 0..OUT {
            expected[t * OUT + o] += lb[o] as f64 * (0..rank).map(|k| bm[o * rank + k] * ax[k]).sum::<f64>();
        }
    }
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    let y = tensor_values(layer.forward(xt.clone()));
    assert!(max_abs_diff(&y, &expected) < 1e-5);
    let merged = layer.merge();
    assert!(
        max_abs_diff(&tensor_values(merged.forward(xt)), &expected) < 1e-5,
        "merged"
    );
}

#[test]
fn works_on_three_dimensional_input() {
    type B = NdArray<f32>;
    let device = Default::default();
    let base = linear_from_torch::<B>(random_values(OUT * IN, 1), OUT, IN, None, &device);
    let (layer, _) = LoraXsLinear::from_linear(base, &AdapterConfig::lora_xs(2), "m").unwrap();
    let x = Tensor::<B, 3>::ones([2, 5, IN], &device);
    assert_eq!(layer.forward(x).dims(), [2, 5, OUT]);
}

#[test]
fn rank_beyond_shape_is_an_error() {
    type B = NdArray<f32>;
    let device = Default::default();
    let base = linear_from_torch::<B>(random_values(OUT * IN, 1), OUT, IN, None, &device);
    let err = LoraXsLinear::from_linear(base, &AdapterConfig::lora_xs(7), "enc.q").unwrap_err();
    assert_eq!(err.to_string(), "module `enc.q`: rank 7 exceeds min(out, in) = 6");
}

#[test]
fn non_finite_weights_are_reported_with_the_module() {
    type B = NdArray<f32>;
    let device = Default::default();
    let mut w = random_values(OUT * IN, 1);
    w[IN + 2] = f32::NAN; // row 1, column 2
    let base = linear_from_torch::<B>(w, OUT, IN, None, &device);
    let err = LoraXsLinear::from_linear(base, &AdapterConfig::lora_xs(2), "enc.q").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("enc.q") && msg.contains("(1, 2)"), "{msg}");
}

#[test]
fn fused_inference_matches_the_factored_path() {
    type B = Flex;
    let device = Default::default();
    let (d_out, d_in, rank) = (24, 40, 4);
    let base = linear_from_torch::<B>(
        random_values(d_out * d_in, 1),
        d_out,
        d_in,
        Some(random_values(d_out, 2)),
        &device,
    );
    let (mut layer, _) = LoraXsLinear::from_linear(base, &AdapterConfig::lora_xs(rank), "m").unwrap();
    layer.r = trainable(Tensor::from_data(
        TensorData::new(random_values(rank * rank, 4), [rank, rank]),
        &device,
    ));
    // Fusing pays once tokens · (in + out) ≥ in · out: 15 tokens here.
    assert!(!layer.fuses(14) && layer.fuses(15));
    for tokens in [1, 14, 15, 200] {
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(random_values(tokens * d_in, 5), [tokens, d_in]),
            &device,
        );
        let auto = tensor_values(layer.forward(x.clone()));
        let mut factored = layer.clone();
        factored.fuse_inference = false;
        assert!(!factored.fuses(tokens));
        let thin = tensor_values(factored.forward(x.clone()));
        assert!(common::relative_diff(&auto, &thin) < 1e-5, "{tokens} tokens");
        if !layer.fuses(tokens) {
            assert_eq!(auto, thin, "short inputs take the factored path itself");
        }
    }
    // R tracked by autodiff (training): always the factored path.
    let (tracked, _) = LoraXsLinear::from_linear(
        linear_from_torch::<burn::backend::Autodiff<B>>(
            random_values(d_out * d_in, 1),
            d_out,
            d_in,
            None,
            &device,
        ),
        &AdapterConfig::lora_xs(rank),
        "m",
    )
    .unwrap();
    assert!(!tracked.fuses(10_000));
}
