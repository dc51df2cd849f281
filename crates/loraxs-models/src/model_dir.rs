//! A Hugging Face model folder: `config.json`, `model.safetensors`,
//! `tokenizer.json`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::config::{EncoderConfig, ModelType};
use crate::encoder::Encoder;
use crate::weights::{LoadReport, Weights};
use crate::{ModelError, Result};
use loraxs_tokenizer::TextTokenizer;

/// The three files of a model folder, checked to exist.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The folder.
    pub dir: PathBuf,
}

impl ModelDir {
    /// Checks that `dir` holds `config.json`, `model.safetensors` and
    /// `tokenizer.json`.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !dir.join(file).is_file() {
                return Err(ModelError::MissingFile { dir, file });
            }
        }
        Ok(Self { dir })
    }

    /// `config.json`.
    pub fn config(&self) -> Result<EncoderConfig> {
        EncoderConfig::load(self.dir.join("config.json"))
    }

    /// `tokenizer.json`, truncating to `max_length`.
    pub fn tokenizer(&self, max_length: usize) -> Result<TextTokenizer> {
        Ok(TextTokenizer::from_file(
            self.dir.join("tokenizer.json"),
            max_length,
        )?)
    }

    /// The encoder with frozen pretrained weights.
    pub fn encoder<B: Backend>(&self, device: &B::Device) -> Result<(Encoder<B>, LoadReport)> {
        let config = self.config()?;
        let prefixes: &[&str] = match config.model_type {
            ModelType::Bert => &["bert."],
            ModelType::Roberta => &["roberta."],
        };
        let weights = Weights::open(self.dir.join("model.safetensors"), prefixes)?;
        Encoder::from_weights(&config, weights, device)
    }
}
