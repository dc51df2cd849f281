//! Decoder weights by Hugging Face name, from a model folder
//! (`model.safetensors`, or shards listed in `model.safetensors.index.json`)
//! or from a GGUF file (dequantised, llama.cpp's Q/K row permutation
//! undone), and the decoder config from GGUF metadata.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::arch::{DecoderConfig, RopeScaling};
use crate::decoder::{Decoder, WeightSource};
use crate::gguf::GgufFile;
use crate::weights::{LoadReport, Weights};
use crate::{ModelError, Result};

impl WeightSource for Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        Weights::take(self, name, shape)
    }
    fn contains(&self, name: &str) -> bool {
        Weights::contains(self, name)
    }
    fn finish(self: Box<Self>, absent_optional: Vec<String>) -> Result<LoadReport> {
        Weights::finish(*self, absent_optional)
    }
}

/// A checkpoint split over several safetensors files.
pub struct ShardedWeights {
    shards: Vec<Weights>,
}

impl ShardedWeights {
    /// Opens the shards `model.safetensors.index.json` lists.
    pub fn open(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
            path: index.into(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: index.into(),
            reason: e.to_string(),
        })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Config {
                path: index.into(),
                reason: "no `weight_map` object".into(),
            })?;
        let mut files = BTreeSet::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| ModelError::Config {
                path: index.into(),
                reason: format!("weight_map[`{name}`] is not a file name"),
            })?;
            files.insert(file.to_string());
        }
        let dir = index.parent().unwrap_or(Path::new("."));
        let shards = files
            .iter()
            .map(|f| Weights::open(dir.join(f), &[]))
            .collect::<Result<Vec<_>>>()?;
        if shards.is_empty() {
            return Err(ModelError::Config {
                path: index.into(),
                reason: "`weight_map` lists no files".into(),
            });
        }
        Ok(Self { shards })
    }
}

impl WeightSource for ShardedWeights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let i = self.shards.iter().position(|s| s.contains(name)).unwrap_or(0);
        self.shards[i].take(name, shape)
    }
    fn contains(&self, name: &str) -> bool {
        self.shards.iter().any(|s| s.contains(name))
    }
    fn finish(self: Box<Self>, absent_optional: Vec<String>) -> Result<LoadReport> {
        let mut report = LoadReport {
            unused: Vec::new(),
            absent_optional,
        };
        let mut problems = Vec::new();
        let mut path = PathBuf::new();
        for shard in self.shards {
            // A name missing everywhere is recorded in the first shard only.
            let p = shard.path().to_path_buf();
            match shard.finish(Vec::new()) {
                Ok(r) => report.unused.extend(r.unused),
                Err(ModelError::Tensors { problems: ps, .. }) => {
                    path = p;
                    problems.extend(ps);
                }
                Err(e) => return Err(e),
            }
        }
        if problems.is_empty() {
            Ok(report)
        } else {
            Err(ModelError::Tensors { path, problems })
        }
    }
}

/// The GGUF name of a Hugging Face decoder tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let part = match rest {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
}

/// Undoes llama.cpp's conversion permutation of the query/key rows: GGUF
/// stores each head's rows interleaved (`2i`, `2i + 1` are a rotary pair),
/// Hugging Face in halves (`i`, `i + d/2`).
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = h * hd + 2 * i + j;
                let to = h * hd + j * half + i;
                out[to * cols..(to + 1) * cols].copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// Decoder weights read from a GGUF file.
pub struct GgufWeights {
    file: GgufFile,
    heads: usize,
    kv_heads: usize,
    taken: BTreeSet<String>,
    problems: Vec<String>,
}

impl GgufWeights {
    /// Weights of `file`, whose query/key rows are un-permuted with the
    /// config's head counts.
    pub fn new(file: GgufFile, config: &DecoderConfig) -> Self {
        Self {
            file,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            taken: BTreeSet::new(),
            problems: Vec::new(),
        }
    }
}

impl WeightSource for GgufWeights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let zeros = || vec![0.0; shape.iter().product()];
        let Some(gguf) = gguf_name(name) else {
            self.problems.push(format!("`{name}` has no GGUF counterpart"));
            return zeros();
        };
        if self.file.tensor_info(&gguf).is_none() {
            self.problems
                .push(format!("missing `{gguf}` ({name}, expected shape {shape:?})"));
            return zeros();
        }
        self.taken.insert(gguf.clone());
        match self.file.tensor_f32(&gguf) {
            Ok((values, found)) if found == shape => {
                if gguf.ends_with("attn_q.weight") {
                    unpermute_rows(&values, shape[0], shape[1], self.heads)
                } else if gguf.ends_with("attn_k.weight") {
                    unpermute_rows(&values, shape[0], shape[1], self.kv_heads)
                } else {
                    values
                }
            }
            Ok((_, found)) => {
                self.problems.push(format!(
                    "`{gguf}` ({name}) has shape {found:?}, expected {shape:?}"
                ));
                zeros()
            }
            Err(e) => {
                let text = e.to_string();
                let reason = text
                    .strip_prefix(&format!("{}: ", self.file.path().display()))
                    .unwrap_or(&text);
                self.problems.push(format!("{reason} ({name})"));
                zeros()
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|g| self.file.tensor_info(&g).is_some())
    }

    fn finish(self: Box<Self>, absent_optional: Vec<String>) -> Result<LoadReport> {
        if !self.problems.is_empty() {
            return Err(ModelError::Tensors {
                path: self.file.path().into(),
                problems: self.problems,
            });
        }
        let unused = self
            .file
            .tensors
            .iter()
            .filter(|t| !self.taken.contains(&t.name))
            .map(|t| t.name.clone())
            .collect();
        Ok(LoadReport {
            unused,
            absent_optional,
        })
    }
}

impl GgufFile {
    /// The decoder config from the metadata of a `llama`-architecture file
    /// (Llama, Mistral and SmolLM2 GGUFs all use it). Tied embeddings when
    /// the file has no `output.weight`.
    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        let arch = self.require_str("general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::Gguf {
                path: self.path().into(),
                reason: format!(
                    "metadata `general.architecture` is `{arch}`; only `llama` decoders are supported"
                ),
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let int = |k: &str| -> Result<usize> { Ok(self.require_u64(&key(k))? as usize) };
        let heads = int("attention.head_count")?;
        let hidden = int("embedding_length")?;
        let vocab = match self.optional_u64(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => match self.tensor_info("token_embd.weight") {
                Some(t) => t.shape()[0],
                None => self.require_strings("tokenizer.ggml.tokens")?.len(),
            },
        };
        let head_dim = self
            .optional_u64(&key("attention.key_length"))?
            .map(|v| v as usize);
        let rope_scaling = match self.optional_str(&key("rope.scaling.type"))? {
            None | Some("none") => None,
            Some(kind) => Some(RopeScaling {
                rope_type: Some(kind.to_string()),
                factor: self.optional_f64(&key("rope.scaling.factor"))?,
                ..Default::default()
            }),
        };
        Ok(DecoderConfig {
            model_type: arch.to_string(),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: int("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: self
                .optional_u64(&key("attention.head_count_kv"))?
                .map_or(heads, |v| v as usize),
            head_dim: head_dim.filter(|&d| d != hidden / heads.max(1)),
            tie_word_embeddings: self.tensor_info("output.weight").is_none(),
            rms_norm_eps: self
                .optional_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope_theta: Some(self.optional_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0)),
            rope_scaling,
            max_position_embeddings: self
                .optional_u64(&key("context_length"))?
                .map_or(2048, |v| v as usize),
            hidden_act: "silu".into(),
            hidden_activation: None,
            attention_bias: false,
            mlp_bias: false,
        })
    }
}

/// A decoder loaded from disk: the model, its config and what loading left
/// over.
pub type LoadedDecoder<B> = (Decoder<B>, DecoderConfig, LoadReport);

/// Loads a decoder from a `.gguf` file, or from a Hugging Face folder
/// (`config.json` with `model.safetensors` or a sharded checkpoint's
/// `model.safetensors.index.json`; a folder with no `config.json` and one
/// `.gguf` file loads that file).
pub fn load_decoder<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedDecoder<B>> {
    if path.is_file() {
        let file = GgufFile::open(path)?;
        let config = file.decoder_config()?;
        let source = Box::new(GgufWeights::new(file, &config));
        let (model, report) = Decoder::from_source(&config, source, device)?;
        return Ok((model, config, report));
    }
    let config_path = path.join("config.json");
    if !config_path.is_file() {
        if let Some(gguf) = single_gguf(path)? {
            return load_decoder(&gguf, device);
        }
        return Err(ModelError::MissingFile {
            dir: path.into(),
            file: "config.json",
        });
    }
    let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
        path: config_path.clone(),
        source,
    })?;
    let config = DecoderConfig::from_json(&text, &config_path)?;
    let single = path.join("model.safetensors");
    let index = path.join("model.safetensors.index.json");
    let source: Box<dyn WeightSource> = if single.is_file() {
        Box::new(Weights::open(&single, &[])?)
    } else if index.is_file() {
        Box::new(ShardedWeights::open(&index)?)
    } else {
        return Err(ModelError::MissingFile {
            dir: path.into(),
            file: "model.safetensors",
        });
    };
    let (model, report) = Decoder::from_source(&config, source, device)?;
    Ok((model, config, report))
}

/// The one `.gguf` file of a folder, if it has exactly one.
pub(crate) fn single_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
        path: dir.into(),
        source,
    })?;
    let ggufs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    Ok(if ggufs.len() == 1 {
        ggufs.into_iter().next()
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).
        let (heads, hd, cols) = (2, 6, 2);
        let rows = heads * hd;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = h * hd + j * (hd / 2) + i; // HF row
                    let dst = h * hd + i * 2 + j; // after swapaxes(1, 2)
                    gguf[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_ne!(gguf, hf);
        assert_eq!(unpermute_rows(&gguf, rows, cols, heads), hf);
    }

    #[test]
    fn gguf_names_of_every_target() {
        assert_eq!(
            gguf_name("model.layers.12.mlp.down_proj.weight").unwrap(),
            "blk.12.ffn_down.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.o_proj.weight").unwrap(),
            "blk.0.attn_output.weight"
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").unwrap(),
            "token_embd.weight"
        );
        assert_eq!(gguf_name("model.layers.0.rotary_emb.inv_freq"), None);
    }
}
