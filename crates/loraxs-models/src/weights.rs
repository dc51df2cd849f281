//! Reading Hugging Face `model.safetensors` with a full account of what
//! was missing, mis-shaped or left over.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::{ModelError, Result};

/// Weights of one checkpoint, read by name with the architecture prefix
/// (`bert.`, `roberta.`) handled.
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
    prefix: String,
    taken: BTreeSet<String>,
    problems: Vec<String>,
}

/// What loading left over: tensors of the file the model did not use
/// (e.g. a pretraining head) and optional parts that were absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors in the file the model has no place for.
    pub unused: Vec<String>,
    /// Optional parts the file does not have (e.g. `pooler`).
    pub absent_optional: Vec<String>,
}

/// Buffers Hugging Face saves that are not weights.
const BUFFERS: [&str; 2] = ["embeddings.position_ids", "embeddings.token_type_ids"];

impl Weights {
    /// Reads a safetensors file; `prefixes` are the architecture prefixes
    /// the keys may carry (the first one present wins).
    pub fn open(path: impl AsRef<Path>, prefixes: &[&str]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let names: Vec<String> = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::Weights {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let prefix = prefixes
            .iter()
            .find(|p| names.iter().any(|n| n.starts_with(*p)))
            .map_or(String::new(), |p| p.to_string());
        Ok(Self {
            path,
            bytes,
            prefix,
            taken: BTreeSet::new(),
            problems: Vec::new(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in open()")
    }

    /// Whether the checkpoint has `name` (without prefix).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors().tensor(&format!("{}{name}", self.prefix)).is_ok()
    }

    /// The values of `name` (without prefix) as `f32`, checked against
    /// `shape`. A problem is recorded (and zeros returned) when the tensor
    /// is missing, mis-shaped or not a float; [`Weights::finish`] then
    /// fails listing every problem at once.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let full = format!("{}{name}", self.prefix);
        let result = read(&self.bytes, &full, shape);
        if !matches!(result, Err(Missing)) {
            self.taken.insert(full.clone());
        }
        match result {
            Ok(values) => values,
            Err(problem) => {
                self.problems.push(problem.describe(&full, shape));
                vec![0.0; shape.iter().product()]
            }
        }
    }

    /// Fails with every recorded problem, or reports the unused tensors.
    pub fn finish(self, absent_optional: Vec<String>) -> Result<LoadReport> {
        if !self.problems.is_empty() {
            return Err(ModelError::Tensors {
                path: self.path,
                problems: self.problems,
            });
        }
        let st = self.tensors();
        let unused = st
            .names()
            .into_iter()
            .filter(|n| !self.taken.contains(*n))
            .filter(|n| {
                !BUFFERS
                    .iter()
                    .any(|b| n.strip_prefix(self.prefix.as_str()) == Some(*b))
            })
            .map(str::to_string)
            .collect();
        Ok(LoadReport {
            unused,
            absent_optional,
        })
    }
}

/// Why a tensor could not be read.
enum Problem {
    Missing,
    Shape(Vec<usize>),
    Dtype(Dtype),
    NonFinite(usize),
}
use Problem::Missing;

impl Problem {
    fn describe(&self, name: &str, shape: &[usize]) -> String {
        match self {
            Problem::Missing => format!("missing `{name}` (expected shape {shape:?})"),
            Problem::Shape(found) => format!("`{name}` has shape {found:?}, expected {shape:?}"),
            Problem::Dtype(dtype) => format!("`{name}` has dtype {dtype:?}, expected F32, F16 or BF16"),
            Problem::NonFinite(i) => format!("`{name}` holds a non-finite value at flat index {i}"),
        }
    }
}

fn read(bytes: &[u8], name: &str, shape: &[usize]) -> Result<Vec<f32>, Problem> {
    let st = SafeTensors::deserialize(bytes).expect("validated in open()");
    let view = st.tensor(name).map_err(|_| Problem::Missing)?;
    if view.shape() != shape {
        return Err(Problem::Shape(view.shape().to_vec()));
    }
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(Problem::Dtype(other)),
    };
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Problem::NonFinite(i)),
        None => Ok(values),
    }
}
