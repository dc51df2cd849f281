//! Finding the real model for the tests that need it.
#![allow(dead_code)]

use loraxs_models::ModelDir;

/// The all-MiniLM-L6-v2 folder under the workspace's one rule
/// (`loraxs_models::testing`): skipped loudly when absent, a failure under CI.
pub fn minilm() -> Option<ModelDir> {
    loraxs_models::testing::test_model()
}
