//! A decoder's tokenizer: `tokenizer.json` beside the weights when there
//! is one, else built from GGUF metadata (byte-level BPE, `gpt2` models);
//! special tokens and the chat template from `tokenizer_config.json` or the
//! GGUF metadata.

use std::path::Path;

use loraxs_tokenizer::{CausalTokenizer, SpecialTokens};
use serde_json::{Value, json};

use crate::gguf::GgufFile;
use crate::{ModelError, Result};

/// The `tokenizer.json` of a GGUF byte-level BPE vocabulary
/// (`tokenizer.ggml.model` = `gpt2`), as transformers converts it: the
/// vocabulary and merges, byte-level pre-tokenisation and decoding, control
/// and user-defined tokens as added tokens (control ones special).
pub fn gguf_tokenizer_json(file: &GgufFile) -> Result<String> {
    let model = file.require_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(ModelError::Gguf {
            path: file.path().into(),
            reason: format!(
                "metadata `tokenizer.ggml.model` is `{model}`: only byte-level BPE (`gpt2`) vocabularies are \
                 built from GGUF; put the model's tokenizer.json beside the .gguf file"
            ),
        });
    }
    let tokens = file.require_strings("tokenizer.ggml.tokens")?;
    let merges = file.require_strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match file.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect::<Option<Vec<_>>>())
            .filter(|t| t.len() == tokens.len())
            .ok_or_else(|| ModelError::Gguf {
                path: file.path().into(),
                reason: format!(
                    "metadata `tokenizer.ggml.token_type` must be {} integers, one per token",
                    tokens.len()
                ),
            })?,
    };
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    // ggml token types: 1 normal, 2 unknown, 3 control, 4 user-defined,
    // 5 unused, 6 byte.
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t, 3 | 4))
        .map(|(i, t)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": *t == 4, "special": *t == 3})
        })
        .collect();
    let byte_level =
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    Ok(tokenizer.to_string())
}

/// Special tokens and chat template from GGUF metadata.
fn gguf_specials(file: &GgufFile) -> Result<(SpecialTokens, Option<String>)> {
    let tokens = file.require_strings("tokenizer.ggml.tokens")?;
    let token = |key: &str| -> Result<Option<String>> {
        match file.optional_u64(key)? {
            None => Ok(None),
            Some(id) => tokens
                .get(id as usize)
                .map(|t| Some(t.to_string()))
                .ok_or_else(|| ModelError::Gguf {
                    path: file.path().into(),
                    reason: format!("metadata `{key}` is {id}, outside the {} tokens", tokens.len()),
                }),
        }
    };
    let extra_stops = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
        .iter()
        .filter_map(|k| token(k).transpose())
        .collect::<Result<Vec<_>>>()?;
    let specials = SpecialTokens {
        bos: token("tokenizer.ggml.bos_token_id")?,
        eos: token("tokenizer.ggml.eos_token_id")?,
        pad: token("tokenizer.ggml.padding_token_id")?,
        extra_stops,
    };
    Ok((
        specials,
        file.optional_str("tokenizer.chat_template")?.map(str::to_string),
    ))
}

/// The tokenizer of a GGUF model: `tokenizer.json` beside the file when it
/// exists, else the one its metadata describes; special tokens and the
/// chat template from the metadata.
pub fn gguf_causal_tokenizer(file: &GgufFile) -> Result<CausalTokenizer> {
    let (specials, template) = gguf_specials(file)?;
    let beside = file.path().with_file_name("tokenizer.json");
    Ok(if beside.is_file() {
        CausalTokenizer::from_file(&beside, specials, template)?
    } else {
        CausalTokenizer::from_json(&gguf_tokenizer_json(file)?, file.path(), specials, template)?
    })
}

/// A special token of `tokenizer_config.json`: a string or `{"content": …}`.
fn config_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The tokenizer of a Hugging Face decoder folder: `tokenizer.json`, with
/// special tokens and chat template from `tokenizer_config.json` (or
/// `chat_template.jinja`) when present.
pub fn folder_causal_tokenizer(dir: &Path) -> Result<CausalTokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            dir: dir.into(),
            file: "tokenizer.json",
        });
    }
    let config_path = dir.join("tokenizer_config.json");
    let config: Value = if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: config_path.clone(),
            reason: e.to_string(),
        })?
    } else {
        Value::Null
    };
    let template = match config.get("chat_template") {
        Some(Value::String(t)) => Some(t.clone()),
        // A list of named templates: the `default` one.
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => {
            let jinja = dir.join("chat_template.jinja");
            if jinja.is_file() {
                Some(
                    std::fs::read_to_string(&jinja)
                        .map_err(|source| ModelError::Io { path: jinja, source })?,
                )
            } else {
                None
            }
        }
    };
    let specials = SpecialTokens {
        bos: config_token(&config, "bos_token"),
        eos: config_token(&config, "eos_token"),
        pad: config_token(&config, "pad_token"),
        extra_stops: Vec::new(),
    };
    Ok(CausalTokenizer::from_file(&path, specials, template)?)
}

/// The tokenizer of a decoder at `path` (a `.gguf` file, a folder with one,
/// or a Hugging Face folder), as [`crate::load_decoder`] reads the model.
pub fn load_causal_tokenizer(path: &Path) -> Result<CausalTokenizer> {
    if path.is_file() {
        return gguf_causal_tokenizer(&GgufFile::open(path)?);
    }
    if !path.join("config.json").is_file()
        && let Some(gguf) = crate::decoder_weights::single_gguf(path)?
    {
        return gguf_causal_tokenizer(&GgufFile::open(gguf)?);
    }
    folder_causal_tokenizer(path)
}
