//! Branch-free f32 `exp` and `erf` that the compiler vectorises, and the
//! slice kernels built on them.
//!
//! burn-flex 0.21 evaluates GELU's `erf` and autodiff's `exp` one element at
//! a time through libm (a scalar call per element, on one core: 12 % and 7 %
//! of a MiniLM training step in `perf`). The functions here are plain
//! arithmetic and selects, so a loop over a slice compiles to SIMD; every
//! slice kernel is compiled three times (AVX-512, AVX2+FMA, baseline) and the
//! best one the CPU supports is chosen at run time.
//!
//! Accuracy (checked in `tests/kernels.rs` against f64):
//! - [`exp`]: relative error below 3e-7 on [-87, 88] (a degree-7 Taylor
//!   polynomial on |r| ≤ ln2/2 after `x = n·ln2 + r`). Arguments below
//!   -87.336 (where the result would be subnormal) give exactly 0, above 88
//!   they saturate at `exp(88)`; NaN stays NaN.
//! - [`erf`]: absolute error below 5e-7 (4e-7 measured): the Maclaurin series for |z| < 0.5
//!   (where the formula below cancels), Abramowitz & Stegun 7.1.26 (bound
//!   1.5e-7, plus f32 rounding) beyond.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that n·LN2_HI is exact for |n| < 2^10.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
// ln of the smallest normal f32 (1.18e-38), rounded up.
const EXP_LO: f32 = -87.336;
const EXP_HI: f32 = 88.0;
// 1.5·2^23: adding and subtracting it rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` in f32, branch-free (see the module docs for its accuracy).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Comparisons are false for NaN, which therefore passes through.
    let underflow = x < EXP_LO;
    let x = if underflow { EXP_LO } else { x };
    let x = if x > EXP_HI { EXP_HI } else { x };
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n ∈ [-126, 127] after the clamps, so 2^n is a normal f32. A NaN `n`
    // casts to 0; `p` is NaN then and so is the result.
    // Wrapping ops: an overflow check here would keep the loop scalar in
    // builds with overflow checks on (it cannot overflow in this range).
    let scale = f32::from_bits(((n as i32).wrapping_add(127) as u32).wrapping_shl(23));
    // Exactly 0 below the smallest normal result, as for padded keys
    // (`f32::MIN` scores): a subnormal there would flow into the attention
    // probabilities and every product with them, and subnormal arithmetic
    // is ~100× slower on x86 (it made real-data training 2× slower).
    if underflow { 0.0 } else { p * scale }
}

/// `erf(z)` from `e = exp(-z²)` (which GELU's derivative needs too, so
/// callers compute it once).
#[inline(always)]
fn erf_with(z: f32, e: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let t = 1.0 / (1.0 + P * z.abs());
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let far = (1.0 - poly * e).copysign(z);
    // Near 0, `1 − poly·e` cancels (f32 keeps ~7e-7 of it): the Maclaurin
    // series instead, whose first omitted term is below 2e-8 for |z| < 0.5.
    let z2 = z * z;
    let mut s = -1.0 / 1320.0;
    s = s * z2 + 1.0 / 216.0;
    s = s * z2 - 1.0 / 42.0;
    s = s * z2 + 1.0 / 10.0;
    s = s * z2 - 1.0 / 3.0;
    s = s * z2 + 1.0;
    let near = FRAC_2_SQRT_PI * z * s;
    if z2 < 0.25 { near } else { far }
}

const FRAC_2_SQRT_PI: f32 = std::f32::consts::FRAC_2_SQRT_PI;

/// `erf(z)` in f32, branch-free (absolute error below 5e-7).
#[inline(always)]
pub fn erf(z: f32) -> f32 {
    erf_with(z, exp(-z * z))
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Exact (erf) GELU of one value: `x·Φ(x)`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let z = x * FRAC_1_SQRT_2;
    0.5 * x * (1.0 + erf_with(z, exp(-z * z)))
}

/// `g·GELU'(x)` with the exact derivative `Φ(x) + x·φ(x)`.
#[inline(always)]
pub fn gelu_grad(x: f32, g: f32) -> f32 {
    let z = x * FRAC_1_SQRT_2;
    let e = exp(-z * z);
    let cdf = 0.5 * (1.0 + erf_with(z, e));
    g * (cdf + x * INV_SQRT_2PI * e)
}

/// Compiles `$body` (a function of slices) for AVX-512, AVX2+FMA and the
/// baseline, and calls the best the CPU runs.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn generic($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) { generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports every feature `avx512` enables
                    // (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

multiversion! {
    /// `y = gelu(x)` element by element.
    fn gelu_slice(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = gelu(x);
        }
    }
}

multiversion! {
    /// `x ← gelu(x)` in place.
    fn gelu_in_place(x: &mut [f32]) {
        for x in x.iter_mut() {
            *x = gelu(*x);
        }
    }
}

multiversion! {
    /// `g ← g·GELU'(x)` in place.
    fn gelu_grad_slice(x: &[f32], g: &mut [f32]) {
        for (g, &x) in g.iter_mut().zip(x) {
            *g = gelu_grad(x, *g);
        }
    }
}

multiversion! {
    /// Rows of attention scores (length `k` each; row `i` belongs to batch
    /// entry `(first_row + i) / rows_per_batch`), in place:
    /// `p ← softmax(scale·p + mask[batch])`.
    fn masked_softmax_rows(
        p: &mut [f32],
        mask: &[f32],
        k: usize,
        first_row: usize,
        rows_per_batch: usize,
        scale: f32,
    ) {
        for (i, p) in p.chunks_exact_mut(k).enumerate() {
            let batch = (first_row + i) / rows_per_batch;
            let m = &mask[batch * k..(batch + 1) * k];
            for (p, &m) in p.iter_mut().zip(m) {
                *p = scale * *p + m;
            }
            let max = max(p);
            if max == f32::NEG_INFINITY {
                // Every score -inf (or NaN): no softmax; NaN, as the
                // composed ops give.
                p.fill(f32::NAN);
                continue;
            }
            for p in p.iter_mut() {
                *p = exp(*p - max);
            }
            let inv = 1.0 / sum(p);
            for p in p.iter_mut() {
                *p *= inv;
            }
        }
    }
}

multiversion! {
    /// `g ← scale·y·(g − Σ g·y)` per row of length `k`, in place.
    fn softmax_grad_rows(y: &[f32], g: &mut [f32], k: usize, scale: f32) {
        for (y, g) in y.chunks_exact(k).zip(g.chunks_exact_mut(k)) {
            let dot = dot(y, g);
            for (g, &y) in g.iter_mut().zip(y) {
                *g = scale * y * (*g - dot);
            }
        }
    }
}

// Reductions keep 16 partial sums (one vector register or two), so they
// vectorise without reassociating a single running sum.
const LANES: usize = 16;

#[inline(always)]
fn fold(acc: [f32; LANES]) -> f32 {
    let mut total = 0.0;
    for v in acc {
        total += v;
    }
    total
}

/// `Σ a·b`.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += a[i] * b[i];
        }
    }
    for (i, (a, b)) in ra.iter().zip(rb).enumerate() {
        acc[i] += a * b;
    }
    fold(acc)
}

/// `Σ (s − c)²`.
#[inline(always)]
fn sum_sq_dev(s: &[f32], c: f32) -> f32 {
    let mut acc = [0.0; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for s in chunks {
        for i in 0..LANES {
            let d = s[i] - c;
            acc[i] += d * d;
        }
    }
    for (i, s) in rest.iter().enumerate() {
        let d = s - c;
        acc[i] += d * d;
    }
    fold(acc)
}

/// `Σ s`.
#[inline(always)]
fn sum(s: &[f32]) -> f32 {
    let mut acc = [0.0; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for s in chunks {
        for i in 0..LANES {
            acc[i] += s[i];
        }
    }
    for (i, s) in rest.iter().enumerate() {
        acc[i] += s;
    }
    fold(acc)
}

/// Largest value, ignoring NaN (`-inf` for an empty or all-NaN slice).
#[inline(always)]
fn max(s: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = s.chunks_exact(LANES);
    let rest = chunks.remainder();
    for s in chunks {
        for i in 0..LANES {
            acc[i] = if s[i] > acc[i] { s[i] } else { acc[i] };
        }
    }
    for (i, &s) in rest.iter().enumerate() {
        acc[i] = if s > acc[i] { s } else { acc[i] };
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc {
        m = if v > m { v } else { m };
    }
    m
}

/// Mean and 1/σ of one row (two passes: the row is in cache).
#[inline(always)]
fn row_stats(s: &[f32], eps: f32) -> (f32, f32) {
    let d = s.len() as f32;
    let mean = sum(s) / d;
    (mean, 1.0 / (sum_sq_dev(s, mean) / d + eps).sqrt())
}

multiversion! {
    /// Rows of length `d`: `y = LayerNorm(x + r)·γ + β`.
    fn add_layer_norm_rows(
        x: &[f32],
        r: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
        eps: f32,
    ) {
        let d = gamma.len();
        for ((x, r), y) in x.chunks_exact(d).zip(r.chunks_exact(d)).zip(y.chunks_exact_mut(d)) {
            for ((y, &x), &r) in y.iter_mut().zip(x).zip(r) {
                *y = x + r;
            }
            let (mean, rstd) = row_stats(y, eps);
            for ((y, &g), &b) in y.iter_mut().zip(gamma).zip(beta) {
                *y = (*y - mean) * rstd * g + b;
            }
        }
    }
}

multiversion! {
    /// Backward of [`add_layer_norm_rows`] for rows of length `d`:
    /// `g ← ∂L/∂(x + r)` in place; when `dgamma`/`dbeta` are not empty, the
    /// rows' `Σ g·x̂` and `Σ g` are added to them. `tmp` holds `d` floats.
    fn add_layer_norm_grad_rows(
        x: &[f32],
        r: &[f32],
        gamma: &[f32],
        g: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        tmp: &mut [f32],
        eps: f32,
    ) {
        let d = gamma.len();
        let inv_d = 1.0 / d as f32;
        let params = !dgamma.is_empty();
        for ((x, r), g) in x.chunks_exact(d).zip(r.chunks_exact(d)).zip(g.chunks_exact_mut(d)) {
            for ((t, &x), &r) in tmp.iter_mut().zip(x).zip(r) {
                *t = x + r;
            }
            let (mean, rstd) = row_stats(tmp, eps);
            // tmp ← x̂
            for t in tmp.iter_mut() {
                *t = (*t - mean) * rstd;
            }
            if params {
                for (((dg, db), &g), &xh) in dgamma.iter_mut().zip(dbeta.iter_mut()).zip(g.iter()).zip(tmp.iter()) {
                    *dg += g * xh;
                    *db += g;
                }
            }
            // g ← g·γ, then the two means of the formula.
            for (g, &gm) in g.iter_mut().zip(gamma) {
                *g *= gm;
            }
            let a = sum(g) * inv_d;
            let b = dot(g, tmp) * inv_d;
            for (g, &xh) in g.iter_mut().zip(tmp.iter()) {
                *g = rstd * (*g - a - xh * b);
            }
        }
    }
}
