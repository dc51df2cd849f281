//! Where downloaded models live: one rule for every tool and test.

use std::path::PathBuf;

/// The environment variable naming a model folder for tests and tools.
pub const MODEL_DIR_ENV: &str = "LORAXS_MODEL_DIR";

/// The environment variable naming the download cache.
pub const CACHE_DIR_ENV: &str = "LORAXS_CACHE_DIR";

/// The download cache: `$LORAXS_CACHE_DIR`, else `datasets/cache` of this
/// workspace (git-ignored), where `cargo xtask fetch` puts models and data.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("datasets/cache"))
}

/// Where a fetched model called `name` lives in the cache.
pub fn cached_model_dir(name: &str) -> PathBuf {
    cache_dir().join("models").join(name)
}

/// Where the default model (all-MiniLM-L6-v2) lives: `$LORAXS_MODEL_DIR`,
/// else `models/all-MiniLM-L6-v2` in the cache, where
/// `cargo xtask fetch model minilm` puts it.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os(MODEL_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| cached_model_dir("all-MiniLM-L6-v2"))
}

/// The workspace this crate was built in (two levels above its manifest).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}
