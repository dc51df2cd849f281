//! Finding the real model for the tests that need it.
#![allow(dead_code)]

use loraxs_models::ModelDir;

/// The all-MiniLM-L6-v2 folder under the workspace's one rule
/// (`loraxs_models::testing`): skipped loudly when absent, a failure under CI.
pub fn minilm() -> Option<ModelDir> {
    loraxs_models::testing::test_model()
}

/// A one-layer host for tests of adapter plumbing.
#[derive(burn::module::Module, Debug)]
pub struct OneLinear<B: burn::tensor::backend::Backend> {
    pub query: loraxs::AdaptedLinear<B>,
}

impl<B: burn::tensor::backend::Backend> loraxs::AdapterHost<B> for OneLinear<B> {
    fn linears_mut(&mut self, visit: &mut dyn FnMut(&str, &mut loraxs::AdaptedLinear<B>)) {
        visit("query", &mut self.query);
    }
}

/// Largest `|a - b|`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The F32 tensor `name` of a safetensors file.
pub fn floats(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
