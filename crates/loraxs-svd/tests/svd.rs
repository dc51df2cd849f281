//! Properties of the truncated SVD: orthonormality, exact recovery,
//! agreement between methods, sign determinism, and every error case.

use loraxs_svd::faer::{Mat, MatRef};
use loraxs_svd::{SignConvention, SvdError, SvdMethod, truncated_svd, truncated_svd_row_major};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Mat::from_fn(rows, cols, |_, _| rng.random::<f64>() * 2.0 - 1.0)
}

/// A matrix with a decaying spectrum, like a pretrained weight.
fn decaying(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
    let k = rows.min(cols);
    let u = random(rows, k, seed).qr().compute_thin_Q();
    let v = random(cols, k, seed + 1).qr().compute_thin_Q();
    let us = Mat::from_fn(rows, k, |i, j| u[(i, j)] / (1.0 + j as f64).powf(1.2));
    &us * v.transpose()
}

fn max_abs_diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let mut m = 0.0f64;
    for i in 0..a.nrows() {
        for j in 0..a.ncols() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}

fn orthonormality_error(q: MatRef<'_, f64>) -> f64 {
    let gram = q.transpose() * q;
    max_abs_diff(gram.as_ref(), Mat::<f64>::identity(q.ncols(), q.ncols()).as_ref())
}

const METHODS: [SvdMethod; 3] = [SvdMethod::Exact, SvdMethod::Krylov, SvdMethod::randomized()];

#[test]
fn factors_are_orthonormal_for_every_method() {
    let w = decaying(300, 200, 1);
    for method in METHODS {
        let svd = truncated_svd(w.as_ref(), 16, method).unwrap();
        assert_eq!(svd.u().shape(), (300, 16));
        assert_eq!(svd.v().shape(), (200, 16));
        assert!(orthonormality_error(svd.u()) < 1e-10, "{method:?} U");
        assert!(orthonormality_error(svd.v()) < 1e-10, "{method:?} V");
        let s = svd.singular_values();
        assert!(s.windows(2).all(|p| p[0] >= p[1]), "{method:?} not sorted");
    }
}

#[test]
fn recovers_a_rank_r_matrix_exactly() {
    let (m, n, r) = (120, 90, 7);
    let w = &random(m, r, 3) * random(r, n, 4).as_ref();
    for method in METHODS {
        let svd = truncated_svd(w.as_ref(), r, method).unwrap();
        let err = max_abs_diff(svd.reconstruct().as_ref(), w.as_ref());
        assert!(err < 1e-9, "{method:?}: max error {err}");
        assert!(
            svd.relative_error() < 1e-6,
            "{method:?}: {}",
            svd.relative_error()
        );
        assert!((svd.energy_kept() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn partial_methods_agree_with_exact_on_top_singular_values() {
    let w = decaying(700, 600, 5);
    let exact = truncated_svd(w.as_ref(), 16, SvdMethod::Exact).unwrap();
    // Krylov converges to working precision; the randomized method is an
    // approximation whose accuracy depends on the spectrum's decay (this one
    // decays slowly, like a pretrained weight's).
    for (method, s_tol, v_tol) in [
        (SvdMethod::Krylov, 1e-10, 1e-7),
        (SvdMethod::randomized(), 1e-4, 2e-3),
    ] {
        let partial = truncated_svd(w.as_ref(), 16, method).unwrap();
        assert_eq!(partial.method(), method, "no silent fallback at this size");
        for (a, b) in exact.singular_values().iter().zip(partial.singular_values()) {
            assert!((a - b).abs() / a < s_tol, "{method:?}: {a} vs {b}");
        }
        // With the sign convention the vectors agree too, not just the span.
        let du = max_abs_diff(exact.u(), partial.u());
        let dv = max_abs_diff(exact.v(), partial.v());
        eprintln!("{method:?}: max |ΔU| = {du:.2e}, max |ΔV| = {dv:.2e}");
        assert!(du < v_tol, "{method:?}: U differs by {du}");
        assert!(dv < v_tol, "{method:?}: V differs by {dv}");
    }
}

#[test]
fn reconstruction_error_matches_the_discarded_spectrum() {
    let w = decaying(80, 60, 6);
    let full = truncated_svd(w.as_ref(), 60, SvdMethod::Exact).unwrap();
    let svd = truncated_svd(w.as_ref(), 10, SvdMethod::Exact).unwrap();
    let tail: f64 = full.singular_values()[10..].iter().map(|s| s * s).sum();
    let total: f64 = full.singular_values().iter().map(|s| s * s).sum();
    assert!((svd.relative_error() - (tail / total).sqrt()).abs() < 1e-10);
    // ‖W − U Σ Vᵀ‖_F / ‖W‖_F formed entry by entry from the factors (not
    // through the crate's own `reconstruct`).
    let (u, v, s) = (svd.u(), svd.v(), svd.singular_values());
    let (mut residual, mut norm) = (0.0f64, 0.0f64);
    for i in 0..w.nrows() {
        for j in 0..w.ncols() {
            let approx: f64 = (0..s.len()).map(|k| u[(i, k)] * s[k] * v[(j, k)]).sum();
            residual += (w[(i, j)] - approx).powi(2);
            norm += w[(i, j)].powi(2);
        }
    }
    let direct = (residual / norm).sqrt();
    assert!(direct > 1e-3, "the truncation discards something");
    assert!((svd.relative_error() - direct).abs() < 1e-10);
    let via_reconstruct = (&w - svd.reconstruct()).norm_l2() / w.norm_l2();
    assert!((via_reconstruct - direct).abs() < 1e-10);
}

#[test]
fn signs_follow_the_convention_and_are_deterministic() {
    let w = decaying(200, 150, 7);
    let first = truncated_svd(w.as_ref(), 12, SvdMethod::Exact).unwrap();
    assert_eq!(first.sign_convention(), SignConvention::MaxAbsLeftPositive);
    for j in 0..12 {
        let col: Vec<f64> = (0..200).map(|i| first.u()[(i, j)]).collect();
        let max = col
            .iter()
            .copied()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        assert!(max > 0.0, "column {j}");
    }
    // Flipping the input's sign flips U's signs: the convention undoes it on U
    // and moves it to V.
    let negated = Mat::from_fn(200, 150, |i, j| -w[(i, j)]);
    let other = truncated_svd(negated.as_ref(), 12, SvdMethod::Exact).unwrap();
    assert!(max_abs_diff(first.u(), other.u()) < 1e-10);
    for i in 0..150 {
        for j in 0..12 {
            assert!((first.v()[(i, j)] + other.v()[(i, j)]).abs() < 1e-10);
        }
    }
    for _ in 0..3 {
        let again = truncated_svd(w.as_ref(), 12, SvdMethod::Exact).unwrap();
        assert_eq!(max_abs_diff(first.u(), again.u()), 0.0, "bit-identical reruns");
        assert_eq!(max_abs_diff(first.v(), again.v()), 0.0);
        let again = truncated_svd(w.as_ref(), 12, SvdMethod::randomized()).unwrap();
        let once = truncated_svd(w.as_ref(), 12, SvdMethod::randomized()).unwrap();
        assert_eq!(max_abs_diff(once.u(), again.u()), 0.0, "seeded randomized");
    }
}

#[test]
fn lora_xs_factors_multiply_back_to_the_approximation() {
    let (m, n, r) = (40, 30, 5);
    let w = decaying(m, n, 8);
    let svd = truncated_svd(w.as_ref(), r, SvdMethod::Exact).unwrap();
    let a = MatRef::from_row_major_slice(&svd.a_row_major(), r, n).to_owned();
    let b = MatRef::from_row_major_slice(&svd.b_row_major(), m, r).to_owned();
    assert!(max_abs_diff((&b * &a).as_ref(), svd.reconstruct().as_ref()) < 1e-12);
}

#[test]
fn works_in_f32() {
    let w = decaying(64, 48, 9);
    let w32: Vec<f32> = (0..64)
        .flat_map(|i| (0..48).map(move |j| (i, j)))
        .map(|(i, j)| w[(i, j)] as f32)
        .collect();
    let svd = truncated_svd_row_major(&w32, 64, 48, 8, SvdMethod::Exact).unwrap();
    let exact = truncated_svd(w.as_ref(), 8, SvdMethod::Exact).unwrap();
    for (a, b) in svd.singular_values().iter().zip(exact.singular_values()) {
        assert!(((*a as f64) - b).abs() < 1e-5);
    }
}

#[test]
fn auto_resolves_by_size() {
    // Encoder widths get the exact SVD (Krylov can skip a value in a
    // cluster: minilm::every_rank_of_the_ablation_factors_minilm).
    assert_eq!(SvdMethod::Auto.resolve(384, 1536, 16), SvdMethod::Exact);
    assert_eq!(SvdMethod::Auto.resolve(1024, 4096, 16), SvdMethod::Exact);
    assert_eq!(SvdMethod::Auto.resolve(4096, 4096, 16), SvdMethod::Krylov);
    assert_eq!(SvdMethod::Auto.resolve(4096, 1024, 200), SvdMethod::Exact);
    assert_eq!(SvdMethod::Auto.resolve(64, 1000, 2), SvdMethod::Exact);
    let w = decaying(20, 10, 1);
    let svd = truncated_svd(w.as_ref(), 2, SvdMethod::Auto).unwrap();
    assert_eq!(svd.method(), SvdMethod::Exact);
    // Krylov on a matrix smaller than its subspace falls back, and says so.
    let svd = truncated_svd(w.as_ref(), 2, SvdMethod::Krylov).unwrap();
    assert_eq!(svd.method(), SvdMethod::Exact);
}

#[test]
fn method_names_round_trip() {
    for method in [
        SvdMethod::Auto,
        SvdMethod::Exact,
        SvdMethod::Krylov,
        SvdMethod::randomized(),
        SvdMethod::Randomized {
            oversamples: 3,
            power_iterations: 10,
            seed: 42,
        },
    ] {
        assert_eq!(SvdMethod::from_name(&method.name()), Some(method));
    }
    assert_eq!(SvdMethod::from_name("randomized"), Some(SvdMethod::randomized()));
    assert_eq!(SvdMethod::from_name("lanczos"), None);
    assert_eq!(SvdMethod::from_name("randomized(oversamples=1)"), None);
}

#[test]
fn rejects_bad_input() {
    let w = random(5, 4, 1);
    assert_eq!(
        truncated_svd(w.as_ref(), 0, SvdMethod::Exact).unwrap_err(),
        SvdError::ZeroRank
    );
    assert_eq!(
        truncated_svd(w.as_ref(), 5, SvdMethod::Exact).unwrap_err(),
        SvdError::RankTooLarge {
            rank: 5,
            max: 4,
            rows: 5,
            cols: 4
        }
    );
    let empty = Mat::<f64>::zeros(0, 4);
    assert_eq!(
        truncated_svd(empty.as_ref(), 1, SvdMethod::Exact).unwrap_err(),
        SvdError::Empty { rows: 0, cols: 4 }
    );
    let mut bad = w.clone();
    bad[(2, 3)] = f64::NAN;
    match truncated_svd(bad.as_ref(), 2, SvdMethod::Exact).unwrap_err() {
        SvdError::NonFinite {
            row: 2,
            col: 3,
            value,
        } => assert!(value.is_nan()),
        other => panic!("unexpected {other:?}"),
    }
    bad[(2, 3)] = f64::INFINITY;
    let err = truncated_svd(bad.as_ref(), 2, SvdMethod::randomized()).unwrap_err();
    assert!(err.to_string().contains("(2, 3)"), "{err}");
    assert_eq!(
        truncated_svd_row_major(&[1.0f32; 5], 2, 3, 1, SvdMethod::Exact).unwrap_err(),
        SvdError::BufferLength {
            len: 5,
            rows: 2,
            cols: 3
        }
    );
}

#[test]
fn zero_matrix_is_fine() {
    let w = Mat::<f64>::zeros(6, 4);
    let svd = truncated_svd(w.as_ref(), 2, SvdMethod::Exact).unwrap();
    assert_eq!(svd.singular_values(), &[0.0, 0.0]);
    assert_eq!(svd.energy_kept(), 1.0);
    assert_eq!(svd.relative_error(), 0.0);
}
