//! The one rule for tests that need files the repository does not hold
//! (the real model, the GLUE data): **skip loudly locally, fail under CI.**
//!
//! A contributor without the files sees a banner naming what was skipped and
//! how to get it; CI (`CI` set), where `.ci/run` fetches the model and
//! points `LORAXS_DATA_DIR` at the data, fails instead, so a missing file
//! can never turn a test into a silent pass.

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// The environment variable naming the data folder
/// (`<dir>/glue/<TASK>/{train,dev}.tsv`).
pub const DATA_DIR_ENV: &str = "LORAXS_DATA_DIR";

/// Whether this process runs under CI (`CI` set, as CI systems do).
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `Some(value)` when `found` is `Ok`; otherwise panics under CI, or prints
/// a SKIPPED banner naming `what`, the reason and `hint`, and returns `None`.
pub fn require<T, E: Display>(what: &str, found: Result<T, E>, hint: &str) -> Option<T> {
    decide(under_ci(), what, found, hint)
}

fn decide<T, E: Display>(ci: bool, what: &str, found: Result<T, E>, hint: &str) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(e) if ci => panic!("CI must run this test with {what}, but: {e}. {hint}"),
        Err(e) => {
            eprintln!("\n*** SKIPPED: {what} is not available: {e}\n*** {hint}\n");
            None
        }
    }
}

/// The data folder named by `LORAXS_DATA_DIR` (a relative path means one
/// from the workspace root, where `cargo test` is typed; cargo runs tests in
/// each crate's folder), checked to hold `glue/`.
pub fn data_dir() -> Result<PathBuf, String> {
    let raw = std::env::var_os(DATA_DIR_ENV).ok_or_else(|| format!("{DATA_DIR_ENV} is not set"))?;
    let dir = crate::cache::workspace_root().join(Path::new(&raw));
    if dir.join("glue").is_dir() {
        Ok(dir)
    } else {
        Err(format!("{DATA_DIR_ENV}={} has no glue/ folder", dir.display()))
    }
}

/// [`data_dir`] under the rule of this module.
pub fn test_data_dir() -> Option<PathBuf> {
    require(
        "the GLUE data",
        data_dir(),
        "Set LORAXS_DATA_DIR to a folder with glue/<TASK>/{train,dev}.tsv (here: ../shared/datasets).",
    )
}

/// The default model (all-MiniLM-L6-v2, see
/// [`default_model_dir`](crate::default_model_dir)) under the rule of this
/// module.
#[cfg(feature = "burn")]
pub fn test_model() -> Option<crate::ModelDir> {
    require(
        "all-MiniLM-L6-v2",
        crate::ModelDir::new(crate::default_model_dir()),
        "Run `cargo xtask fetch model minilm` or set LORAXS_MODEL_DIR.",
    )
}

/// The default decoder's GGUF file (SmolLM2-135M-Instruct Q4_1, from the
/// PyPI wheel) under the rule of this module.
pub fn test_decoder_gguf() -> Option<PathBuf> {
    let path = crate::fetch::model_folder("smollm2").join(crate::fetch::SMOLLM2_GGUF);
    let found = if path.is_file() {
        Ok(path.clone())
    } else {
        Err(format!("{} does not exist", path.display()))
    };
    require(
        "SmolLM2-135M-Instruct (GGUF)",
        found,
        "Run `cargo xtask fetch model smollm2`.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_values_pass_through() {
        assert_eq!(require("x", Ok::<_, String>(3), "hint"), Some(3));
    }

    #[test]
    fn absence_skips_locally_and_fails_under_ci() {
        assert_eq!(decide::<(), _>(false, "the thing", Err("gone"), "fetch it"), None);
        let panic = std::panic::catch_unwind(|| decide::<(), _>(true, "the thing", Err("gone"), "fetch it"))
            .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("CI must run this test with the thing, but: gone"),
            "{message}"
        );
    }
}
