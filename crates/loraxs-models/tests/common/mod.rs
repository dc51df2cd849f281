//! Finding the real model for the tests that need it.
#![allow(dead_code)]

use loraxs_models::{MODEL_DIR_ENV, ModelDir};

/// The all-MiniLM-L6-v2 folder: `$LORAXS_MODEL_DIR`, else the fetch cache.
///
/// Absent, the test is skipped with a loud message — except under CI
/// (`CI` set), where `.ci/run` fetches the model, so absence is a failure.
pub fn minilm() -> Option<ModelDir> {
    let dir = loraxs_models::default_model_dir();
    match ModelDir::new(&dir) {
        Ok(dir) => Some(dir),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI must run this test on the real model, but: {e}. Run `cargo xtask fetch model minilm`.")
        }
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED: all-MiniLM-L6-v2 not found ({e}).\n*** Run `cargo xtask fetch model minilm` or set {MODEL_DIR_ENV}.\n"
            );
            None
        }
    }
}
