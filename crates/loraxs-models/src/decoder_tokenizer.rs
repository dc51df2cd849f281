//! A decoder's tokenizer: `tokenizer.json` beside the weights when there
//! is one, else built from GGUF metadata (byte-level BPE, `gpt2` models);
//! special tokens and the chat template from `tokenizer_config.json` or the
//! GGUF metadata.

use std::path::Path;

use loraxs_tokenizer::{CausalTokenizer, SpecialTokens};
use serde_json::{Value, json};

use crate::gguf::GgufFile;
use crate::{ModelError, Result};

/// The `tokenizer.json` of a GGUF vocabulary, as Hugging Face tokenizers
/// write these vocabularies:
/// - `tokenizer.ggml.model` = `gpt2` (byte-level BPE: SmolLM2, Llama 3,
///   Qwen): the vocabulary and merges, byte-level pre-tokenisation and
///   decoding, as transformers converts it;
/// - `llama` (SentencePiece BPE: Llama 1/2, Mistral, Mixtral): the pieces
///   with merges from the metadata or, as these files usually carry none,
///   derived from the pieces' scores (a pair merges into its piece, the
///   higher-scored piece first — SentencePiece's BPE rule); byte fallback
///   to `<0xNN>` pieces; a `▁` prepended to each text segment and spaces
///   written `▁`, as Llama-2's own `tokenizer.json` does (so ids equal
///   SentencePiece's and llama.cpp's, also for text that starts with a
///   space or follows a special token, where transformers' GGUF conversion
///   leaves the prefix out).
///
/// Unknown, control and user-defined tokens become added tokens (all but
/// user-defined ones special).
pub fn gguf_tokenizer_json(file: &GgufFile) -> Result<String> {
    let model = file.require_str("tokenizer.ggml.model")?;
    let spm = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(ModelError::Gguf {
                path: file.path().into(),
                reason: format!(
                    "metadata `tokenizer.ggml.model` is `{other}`: vocabularies `gpt2` (byte-level BPE) and \
                     `llama` (SentencePiece BPE) are built from GGUF; put the model's tokenizer.json beside \
                     the .gguf file"
                ),
            });
        }
    };
    let tokens = file.require_strings("tokenizer.ggml.tokens")?;
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
    let merges: Vec<Value> = match (file.get("tokenizer.ggml.merges"), spm) {
        (Some(_), _) | (None, false) => file
            .require_strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| json!(m))
            .collect(),
        (None, true) => spm_merges(&tokens, &spm_scores(file, tokens.len())?),
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
        .filter(|(_, t)| {
            if spm {
                matches!(t, 2..=4)
            } else {
                matches!(t, 3 | 4)
            }
        })
        .map(|(i, t)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": !spm && *t == 4, "special": *t != 4})
        })
        .collect();
    // The two kinds differ in pre-processing, decoding and the BPE model's
    // unknown-token handling; the rest of the file is the same.
    let (normalizer, pre_tokenizer, decoder) = if spm {
        // SentencePiece's dummy prefix, on unless the file turns it off.
        let prefix = file
            .optional_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        let mut normalizers =
            vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})];
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if prefix {
            normalizers.insert(0, json!({"type": "Prepend", "prepend": "\u{2581}"}));
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        (
            json!({"type": "Sequence", "normalizers": normalizers}),
            Value::Null,
            json!({"type": "Sequence", "decoders": decoders}),
        )
    } else {
        let byte_level =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        (Value::Null, byte_level.clone(), byte_level)
    };
    let unk = if spm {
        types.iter().position(|&t| t == 2).map(|i| tokens[i])
    } else {
        None
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": decoder,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": spm, "byte_fallback": spm, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    Ok(tokenizer.to_string())
}

/// `tokenizer.ggml.scores`: one number per token.
fn spm_scores(file: &GgufFile, n: usize) -> Result<Vec<f64>> {
    let bad = || ModelError::Gguf {
        path: file.path().into(),
        reason: format!(
            "metadata `tokenizer.ggml.scores` must be {n} numbers, one per token (a SentencePiece \
             vocabulary without merges needs them to rank its merges)"
        ),
    };
    file.get("tokenizer.ggml.scores")
        .ok_or_else(bad)?
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<_>>>())
        .filter(|s| s.len() == n && s.iter().all(|v| v.is_finite()))
        .ok_or_else(bad)
}

/// BPE merges of a SentencePiece vocabulary: every split of a piece into
/// two pieces of the vocabulary is a merge ranked by the whole piece's
/// score (highest first; ties in vocabulary order, then by the parts' ids)
/// — SentencePiece's BPE merges the adjacent pair whose union scores
/// highest, which is this ranking.
fn spm_merges(tokens: &[&str], scores: &[f64]) -> Vec<Value> {
    let ids: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (piece_id, piece) in tokens.iter().enumerate() {
        let mut local: Vec<(usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*ids.get(&piece[..at])?, *ids.get(&piece[at..])?)))
            .collect();
        local.sort_unstable();
        merges.extend(local.into_iter().map(|(l, r)| (scores[piece_id], piece_id, l, r)));
    }
    // Stable: equal scores keep the vocabulary order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        // Pairs, not "left right" strings: a piece may hold a space.
        .map(|(_, _, l, r)| json!([tokens[l], tokens[r]]))
        .collect()
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
/// exists, else the one its metadata describes; special tokens, the chat
/// template and whether prompts start with the beginning-of-sequence token
/// (`tokenizer.ggml.add_bos_token`; when absent, on for SentencePiece
/// vocabularies and off for byte-level BPE, as llama.cpp defaults) from the
/// metadata.
pub fn gguf_causal_tokenizer(file: &GgufFile) -> Result<CausalTokenizer> {
    let (specials, template) = gguf_specials(file)?;
    let add_bos = match file.optional_bool("tokenizer.ggml.add_bos_token")? {
        Some(b) => b,
        None => file.optional_str("tokenizer.ggml.model")? == Some("llama"),
    };
    let beside = file.path().with_file_name("tokenizer.json");
    let tokenizer = if beside.is_file() {
        CausalTokenizer::from_file(&beside, specials, template)?
    } else {
        CausalTokenizer::from_json(&gguf_tokenizer_json(file)?, file.path(), specials, template)?
    };
    Ok(tokenizer.with_add_bos(add_bos)?)
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
    let add_bos = match config.get("add_bos_token") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ModelError::Config {
                path: config_path,
                reason: format!("`add_bos_token` must be true or false, not {other}"),
            });
        }
    };
    Ok(CausalTokenizer::from_file(&path, specials, template)?.with_add_bos(add_bos)?)
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
