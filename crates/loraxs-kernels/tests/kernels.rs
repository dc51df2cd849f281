//! The fused kernels against f64 arithmetic and against burn's composed ops,
//! forward and backward, on Flex (our kernels), NdArray (composed defaults)
//! and under autodiff on both.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use loraxs_kernels::{KernelBackend, add_layer_norm, composed, gelu, masked_softmax, math};

type Nd = NdArray<f32>;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() && y.is_nan() {
                0.0
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

/// The same random numbers on any backend.
fn random<B: Backend, const D: usize>(dims: [usize; D], scale: f32, seed: u64) -> Tensor<B, D> {
    Nd::seed(&Default::default(), seed);
    let data = Tensor::<Nd, D>::random(dims, Distribution::Normal(0.0, scale as f64), &Default::default())
        .into_data();
    Tensor::from_data(data, &Default::default())
}

fn erf64(x: f64) -> f64 {
    // erf by its Maclaurin series for |x| < 3, continued fraction beyond:
    // double precision reference for the f32 kernels.
    if x.abs() < 3.0 {
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x * x / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …))))
        let a = x.abs();
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
        (1.0 - erfc).copysign(x)
    }
}

#[test]
fn exp_and_erf_are_accurate_in_f32() {
    let mut worst_exp = 0.0f64;
    let mut worst_erf = 0.0f64;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * i as f64 / 200_000.0;
        let e = math::exp(x as f32) as f64;
        let want = (x as f32 as f64).exp();
        worst_exp = worst_exp.max(((e - want) / want).abs());
        let z = -6.0 + 12.0 * i as f64 / 200_000.0;
        worst_erf = worst_erf.max((math::erf(z as f32) as f64 - erf64(z as f32 as f64)).abs());
    }
    assert!(worst_exp < 3e-7, "exp: worst relative error {worst_exp:e}");
    assert!(worst_erf < 5e-7, "erf: worst absolute error {worst_erf:e}");
    assert!(math::exp(f32::NAN).is_nan());
    assert!(math::erf(f32::NAN).is_nan());
    // Below the normal range: exactly 0, never a subnormal (slow on x86).
    assert_eq!(math::exp(-1e30), 0.0);
    assert_eq!(math::exp(f32::MIN), 0.0);
    assert_eq!(math::exp(-87.4), 0.0);
    assert!(math::exp(-87.3).is_normal());
    assert_eq!(math::exp(0.0), 1.0);
    assert_eq!(math::erf(0.0), 0.0);
}

#[test]
fn gelu_and_its_gradient_match_f64() {
    let xs: Vec<f32> = (0..1003).map(|i| -8.0 + 16.0 * i as f32 / 1002.0).collect();
    let device = Default::default();
    type AF = Autodiff<Flex>;
    let x = Tensor::<AF, 1>::from_floats(xs.as_slice(), &device).require_grad();
    let y = gelu(x.clone());
    let dx = values(x.grad(&(y.clone() * 1.0).sum().backward()).unwrap());
    let y = values(y);
    for (i, &x) in xs.iter().enumerate() {
        let x64 = x as f64;
        let cdf = 0.5 * (1.0 + erf64(x64 / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
        assert!(
            (y[i] as f64 - x64 * cdf).abs() < 2e-6,
            "gelu({x}) = {}, want {}",
            y[i],
            x64 * cdf
        );
        assert!(
            (dx[i] as f64 - (cdf + x64 * pdf)).abs() < 2e-6,
            "gelu'({x}) = {}",
            dx[i]
        );
    }
}

/// Forward and backward of every fused op on `B` against the composed ops on
/// NdArray under burn's own autodiff.
fn check_against_composed<B: KernelBackend>(name: &str)
where
    Autodiff<B>: KernelBackend,
{
    type R = Autodiff<Nd>;
    let [b, h, q, k, d] = [3, 2, 5, 37, 45];

    // GELU, odd sizes (not a multiple of any vector width).
    let x0 = random::<Nd, 3>([b, q, d], 3.0, 1);
    let upstream = random::<Nd, 3>([b, q, d], 1.0, 2);
    let xr = Tensor::<R, 3>::from_data(x0.to_data(), &Default::default()).require_grad();
    let yr = {
        let cdf = (xr.clone() / std::f64::consts::SQRT_2)
            .erf()
            .add_scalar(1.0)
            .mul_scalar(0.5);
        xr.clone() * cdf
    };
    let gr = xr
        .grad(
            &(yr.clone() * Tensor::from_data(upstream.to_data(), &Default::default()))
                .sum()
                .backward(),
        )
        .unwrap();
    let xb = Tensor::<Autodiff<B>, 3>::from_data(x0.to_data(), &Default::default()).require_grad();
    let yb = gelu(xb.clone());
    let gb = xb
        .grad(
            &(yb.clone() * Tensor::from_data(upstream.to_data(), &Default::default()))
                .sum()
                .backward(),
        )
        .unwrap();
    let e = max_abs_diff(&values(yb), &values(yr));
    assert!(e < 2e-6, "{name} gelu forward: {e:e}");
    let e = max_abs_diff(&values(gb), &values(gr));
    assert!(e < 2e-6, "{name} gelu backward: {e:e}");

    // Masked softmax: some keys masked with f32::MIN, as the encoder does.
    let s0 = random::<Nd, 4>([b, h, q, k], 4.0, 3);
    let mut mask = vec![0.0f32; b * k];
    for (batch, row) in mask.chunks_mut(k).enumerate() {
        for v in &mut row[k - 7 * batch..] {
            *v = f32::MIN;
        }
    }
    let mask = TensorData::new(mask, [b, k]);
    let up = random::<Nd, 4>([b, h, q, k], 1.0, 4);
    let scale = 0.125f32;
    let sr = Tensor::<R, 4>::from_data(s0.to_data(), &Default::default()).require_grad();
    let mr = Tensor::<R, 2>::from_data(mask.clone(), &Default::default()).reshape([b, 1, 1, k]);
    let pr = burn::tensor::activation::softmax(sr.clone().mul_scalar(scale) + mr, 3);
    let gr = sr
        .grad(
            &(pr.clone() * Tensor::from_data(up.to_data(), &Default::default()))
                .sum()
                .backward(),
        )
        .unwrap();
    let sb = Tensor::<Autodiff<B>, 4>::from_data(s0.to_data(), &Default::default()).require_grad();
    let mb = Tensor::<Autodiff<B>, 2>::from_data(mask.clone(), &Default::default());
    let pb = masked_softmax(sb.clone(), mb, scale);
    let gb = sb
        .grad(
            &(pb.clone() * Tensor::from_data(up.to_data(), &Default::default()))
                .sum()
                .backward(),
        )
        .unwrap();
    let probs = values(pb.clone());
    let e = max_abs_diff(&probs, &values(pr));
    assert!(e < 1e-6, "{name} softmax forward: {e:e}");
    let e = max_abs_diff(&values(gb), &values(gr));
    assert!(e < 1e-6, "{name} softmax backward: {e:e}");
    for row in probs.chunks(k) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{name}: a softmax row sums to {sum}");
    }
    // Masked keys get exactly nothing (batch 1 masks its last 7 keys), and
    // no probability is subnormal: subnormal products are ~100× slower.
    let row = &probs[(h * q) * k..(h * q + 1) * k];
    assert!(
        row[k - 7..].iter().all(|&p| p == 0.0),
        "{name}: masked keys got {:?}",
        &row[k - 7..]
    );
    assert!(
        probs.iter().all(|p| *p == 0.0 || p.is_normal()),
        "{name}: subnormal probabilities"
    );

    // Residual + LayerNorm, all four gradients.
    let x0 = random::<Nd, 3>([b, q, d], 2.0, 5);
    let r0 = random::<Nd, 3>([b, q, d], 2.0, 6).add_scalar(0.7);
    let g0 = random::<Nd, 1>([d], 0.5, 7).add_scalar(1.0);
    let b0 = random::<Nd, 1>([d], 0.5, 8);
    let up = random::<Nd, 3>([b, q, d], 1.0, 9);
    let eps = 1e-12;
    let leaves_r = (
        Tensor::<R, 3>::from_data(x0.to_data(), &Default::default()).require_grad(),
        Tensor::<R, 3>::from_data(r0.to_data(), &Default::default()).require_grad(),
        Tensor::<R, 1>::from_data(g0.to_data(), &Default::default()).require_grad(),
        Tensor::<R, 1>::from_data(b0.to_data(), &Default::default()).require_grad(),
    );
    let mut norm = burn::nn::LayerNormConfig::new(d)
        .with_epsilon(eps)
        .init::<R>(&Default::default());
    norm.gamma = burn::module::Param::from_tensor(leaves_r.2.clone());
    norm.beta = Some(burn::module::Param::from_tensor(leaves_r.3.clone()));
    let yr = norm.forward(leaves_r.0.clone() + leaves_r.1.clone());
    let grads_r = (yr.clone() * Tensor::from_data(up.to_data(), &Default::default()))
        .sum()
        .backward();
    let leaves_b = (
        Tensor::<Autodiff<B>, 3>::from_data(x0.to_data(), &Default::default()).require_grad(),
        Tensor::<Autodiff<B>, 3>::from_data(r0.to_data(), &Default::default()).require_grad(),
        Tensor::<Autodiff<B>, 1>::from_data(g0.to_data(), &Default::default()).require_grad(),
        Tensor::<Autodiff<B>, 1>::from_data(b0.to_data(), &Default::default()).require_grad(),
    );
    let yb = add_layer_norm(
        leaves_b.0.clone(),
        leaves_b.1.clone(),
        leaves_b.2.clone(),
        leaves_b.3.clone(),
        eps,
    );
    let grads_b = (yb.clone() * Tensor::from_data(up.to_data(), &Default::default()))
        .sum()
        .backward();
    let e = max_abs_diff(&values(yb), &values(yr));
    assert!(e < 2e-5, "{name} layer norm forward: {e:e}");
    let pairs = [
        (
            "x",
            values(leaves_b.0.grad(&grads_b).unwrap()),
            values(leaves_r.0.grad(&grads_r).unwrap()),
        ),
        (
            "residual",
            values(leaves_b.1.grad(&grads_b).unwrap()),
            values(leaves_r.1.grad(&grads_r).unwrap()),
        ),
    ];
    for (what, got, want) in pairs {
        let e = max_abs_diff(&got, &want);
        assert!(e < 2e-5, "{name} layer norm ∂{what}: {e:e}");
    }
    let pairs = [
        (
            "γ",
            values(leaves_b.2.grad(&grads_b).unwrap()),
            values(leaves_r.2.grad(&grads_r).unwrap()),
        ),
        (
            "β",
            values(leaves_b.3.grad(&grads_b).unwrap()),
            values(leaves_r.3.grad(&grads_r).unwrap()),
        ),
    ];
    for (what, got, want) in pairs {
        // Sums over b·q = 15 rows.
        let e = max_abs_diff(&got, &want);
        assert!(e < 1e-4, "{name} layer norm ∂{what}: {e:e}");
    }
}

#[test]
fn flex_kernels_match_burns_composed_ops() {
    check_against_composed::<Flex>("flex");
}

#[test]
fn ndarray_defaults_match_burns_composed_ops() {
    check_against_composed::<Nd>("ndarray");
}

#[test]
fn frozen_norm_parameters_get_no_gradient_and_inputs_still_do() {
    type AF = Autodiff<Flex>;
    let device = Default::default();
    let x = random::<AF, 2>([4, 16], 1.0, 10).require_grad();
    let r = random::<AF, 2>([4, 16], 1.0, 11);
    let gamma = Tensor::<AF, 1>::ones([16], &device);
    let beta = Tensor::<AF, 1>::zeros([16], &device);
    let y = add_layer_norm(x.clone(), r.clone(), gamma.clone(), beta.clone(), 1e-5);
    let grads = (y * random::<AF, 2>([4, 16], 1.0, 12)).sum().backward();
    assert!(x.grad(&grads).is_some());
    assert!(r.grad(&grads).is_none());
    assert!(gamma.grad(&grads).is_none() && beta.grad(&grads).is_none());
}

#[test]
fn large_inputs_split_over_threads_match_one_piece() {
    // Several rayon tasks (2^14 elements each) against the composed forms,
    // on shapes of the encoder's (MiniLM, batch 4 × 64 tokens).
    let x = random::<Flex, 3>([4, 64, 1536], 2.0, 13);
    let fused = values(gelu(x.clone()));
    let reference = values(Tensor::<Flex, 3>::from_primitive(
        burn::tensor::TensorPrimitive::Float(composed::gelu::<Flex>(x.into_primitive().tensor())),
    ));
    let e = max_abs_diff(&fused, &reference);
    assert!(e < 2e-6, "gelu over tasks: {e:e}");

    let x = random::<Flex, 3>([4, 64, 384], 1.0, 14);
    let r = random::<Flex, 3>([4, 64, 384], 1.0, 15);
    let g = random::<Flex, 1>([384], 0.2, 16).add_scalar(1.0);
    let up = random::<Flex, 3>([4, 64, 384], 1.0, 18);
    let p = |t: Tensor<Flex, 3>| t.into_primitive().tensor();
    let p1 = |t: Tensor<Flex, 1>| t.into_primitive().tensor();
    let fused = Flex::fused_add_layer_norm_backward(
        p(x.clone()),
        p(r.clone()),
        p1(g.clone()),
        1e-12,
        p(up.clone()),
        true,
    );
    let reference = composed::add_layer_norm_backward::<Flex>(p(x), p(r), p1(g), 1e-12, p(up), true);
    let v = |t| {
        values(Tensor::<Flex, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(t)).flatten::<1>(0, 0))
    };
    let e = max_abs_diff(&v(fused.input), &v(reference.input));
    assert!(e < 2e-5, "layer norm ∂x over tasks: {e:e}");
    let e = max_abs_diff(&v(fused.gamma.unwrap()), &v(reference.gamma.unwrap()));
    assert!(e < 1e-3, "layer norm ∂γ over tasks (sum of 256 rows): {e:e}");
    let e = max_abs_diff(&v(fused.beta.unwrap()), &v(reference.beta.unwrap()));
    assert!(e < 1e-3, "layer norm ∂β over tasks: {e:e}");
}

#[test]
fn nan_propagates_through_every_kernel() {
    let device = Default::default();
    let mut data = vec![0.5f32; 2 * 3 * 8];
    data[5] = f32::NAN;
    let s = Tensor::<Flex, 4>::from_data(TensorData::new(data.clone(), [2, 1, 3, 8]), &device);
    let p = values(masked_softmax(s, Tensor::zeros([2, 8], &device), 1.0));
    assert!(p[..8].iter().all(|v| v.is_nan()), "the row holding a NaN is NaN");
    assert!(p[8..].iter().all(|v| !v.is_nan()), "other rows are untouched");
    let x = Tensor::<Flex, 2>::from_data(TensorData::new(data, [6, 8]), &device);
    let (ones, zeros) = (
        Tensor::<Flex, 1>::ones([8], &device),
        Tensor::<Flex, 1>::zeros([8], &device),
    );
    assert!(values(gelu(x.clone()))[5].is_nan());
    let y = values(add_layer_norm(x.clone(), x.zeros_like(), ones, zeros, 1e-5));
    assert!(y[..8].iter().all(|v| v.is_nan()) && y[8..].iter().all(|v| !v.is_nan()));
}

/// Inference attention: flex's products around our softmax, and the
/// defaults (burn's `attention`) on ndarray, against softmax(q·kᵀ·s + mask)·v
/// written out with burn's ops, on the strided head views of `[b, t, h·d]`
/// projections with padded keys.
#[test]
fn attention_matches_the_written_out_formula_on_head_views() {
    fn run<B: KernelBackend>(mask: &TensorData) -> (Vec<f32>, Vec<f32>) {
        let (b, t, heads, d) = (3, 19, 4, 8);
        let heads_of = |x: Tensor<B, 3>| x.reshape([b, t, heads, d]).swap_dims(1, 2);
        let q = heads_of(random::<B, 3>([b, t, heads * d], 1.0, 11));
        let k = heads_of(random::<B, 3>([b, t, heads * d], 1.0, 12));
        let v = heads_of(random::<B, 3>([b, t, heads * d], 1.0, 13));
        let mask = Tensor::<B, 2>::from_data(mask.clone(), &Default::default());
        let scale = 1.0 / (d as f32).sqrt();
        let fused = loraxs_kernels::attention(q.clone(), k.clone(), v.clone(), mask.clone(), scale);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + mask.reshape([b, 1, 1, t]);
        let written = burn::tensor::activation::softmax(scores, 3).matmul(v);
        (values(fused), values(written))
    }
    let (b, t) = (3, 19);
    let mut mask = vec![0.0f32; b * t];
    for (batch, row) in mask.chunks_mut(t).enumerate() {
        for v in &mut row[t - 5 * batch..] {
            *v = f32::MIN;
        }
    }
    let mask = TensorData::new(mask, [b, t]);
    for (name, (fused, written)) in [("flex", run::<Flex>(&mask)), ("ndarray", run::<Nd>(&mask))] {
        let e = max_abs_diff(&fused, &written);
        assert!(e < 1e-5, "{name} attention: {e:e}");
        assert!(fused.iter().all(|v| v.is_finite()), "{name}: non-finite output");
    }
}
