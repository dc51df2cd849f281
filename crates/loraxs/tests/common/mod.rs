//! A toy two-layer encoder with BERT module names, for tests.
#![allow(dead_code)]

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use loraxs::interop::linear_from_torch;
use loraxs::{AdaptedLinear, AdapterHost, ParamCount};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const HIDDEN: usize = 12;
pub const FFN: usize = 20;

#[derive(Module, Debug)]
pub struct ToyLayer<B: Backend> {
    pub query: AdaptedLinear<B>,
    pub value: AdaptedLinear<B>,
    pub attention_output: AdaptedLinear<B>,
    pub intermediate: AdaptedLinear<B>,
    pub output: AdaptedLinear<B>,
}

#[derive(Module, Debug)]
pub struct Toy<B: Backend> {
    pub layers: Vec<ToyLayer<B>>,
}

const NAMES: [&str; 5] = [
    "attention.self.query",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

pub fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random::<f32>() - 0.5).collect()
}

impl<B: Backend> Toy<B> {
    /// A frozen toy model whose weights come from `seed`.
    pub fn new(seed: u64, device: &B::Device) -> Self {
        let mut n = 0;
        let mut lin = |d_out: usize, d_in: usize| {
            n += 1;
            let w = random_values(d_out * d_in, seed * 100 + n);
            let b = random_values(d_out, seed * 100 + 50 + n);
            AdaptedLinear::Plain(linear_from_torch::<B>(w, d_out, d_in, Some(b), device))
        };
        let layers = (0..2)
            .map(|_| ToyLayer {
                query: lin(HIDDEN, HIDDEN),
                value: lin(HIDDEN, HIDDEN),
                attention_output: lin(HIDDEN, HIDDEN),
                intermediate: lin(FFN, HIDDEN),
                output: lin(HIDDEN, FFN),
            })
            .collect();
        Self { layers }
    }

    /// A residual stack through every linear layer.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut h = x;
        for l in &self.layers {
            let a = l.query.forward(h.clone()) + l.value.forward(h.clone());
            let h2 = l.attention_output.forward(a.tanh()) + h;
            let f = l.intermediate.forward(h2.clone()).tanh();
            h = l.output.forward(f) + h2;
        }
        h
    }
}

impl<B: Backend> AdapterHost<B> for Toy<B> {
    fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut AdaptedLinear<B>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            let mods = [
                &mut l.query,
                &mut l.value,
                &mut l.attention_output,
                &mut l.intermediate,
                &mut l.output,
            ];
            for (name, m) in NAMES.iter().zip(mods) {
                visit(&format!("encoder.layer.{i}.{name}"), m);
            }
        }
    }

    fn other_params(&self) -> ParamCount {
        ParamCount::default()
    }
}

pub fn input<B: Backend>(device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(
        burn::tensor::TensorData::new(random_values(2 * 3 * HIDDEN, 999), [2, 3, HIDDEN]),
        device,
    )
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
    let den: f32 = b.iter().map(|y| y * y).sum::<f32>().sqrt();
    num / den.max(f32::MIN_POSITIVE)
}
