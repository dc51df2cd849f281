//! The Llama-family decoder on the real SmolLM2-135M-Instruct (GGUF Q4_1):
//! parity with transformers (tools/make_fixtures.py `smollm2`, which loads
//! the same file through the `gguf` package), padded batches, the KV cache.

use crate::common;

use burn::backend::Flex;
use loraxs::interop::tensor_values;
use loraxs_models::{Decoder, DecoderConfig, KvCache, load_decoder};
use safetensors::SafeTensors;

const FIXTURE: &[u8] = include_bytes!("../fixtures/smollm2_parity.safetensors");

type B = Flex;

fn ints(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<i64>) {
    let view = st.tensor(name).unwrap();
    let v = view
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), v)
}

fn model() -> Option<(Decoder<B>, DecoderConfig)> {
    let path = loraxs_models::testing::test_decoder_gguf()?;
    let (model, config, report) = load_decoder::<B>(&path, &Default::default()).unwrap();
    assert!(report.unused.is_empty(), "unused tensors: {:?}", report.unused);
    Some((model, config))
}

#[test]
fn smollm2_config_from_gguf_metadata() {
    let Some(path) = loraxs_models::testing::test_decoder_gguf() else {
        return;
    };
    let file = loraxs_models::gguf::GgufFile::open(&path).unwrap();
    let c = file.decoder_config().unwrap();
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (576, 1536, 30)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_size()),
        (9, 3, 64)
    );
    assert_eq!((c.vocab_size, c.tie_word_embeddings), (49152, true));
    assert_eq!(c.rope_base(), 100_000.0);
    // 7 targets × 30 layers; the HF count of SmolLM2-135M's parameters.
    assert_eq!(c.linear_modules().len(), 210);
    assert_eq!(c.total_params(), 134_515_008);
}

#[test]
fn smollm2_logits_match_transformers() {
    let Some((model, _)) = model() else { return };
    let st = SafeTensors::deserialize(FIXTURE).unwrap();
    let (shape, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    let (_, columns) = ints(&st, "columns");
    let (_, argmax) = ints(&st, "argmax");
    let expected = common::floats(&st, "logits");
    let maxima = common::floats(&st, "max");
    let (n, t) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let mask: Vec<u32> = mask.iter().map(|&x| x as u32).collect();
    let device = Default::default();
    let logits = tensor_values(model.forward(&ids, n, &mask, None, &device).unwrap());
    let vocab = model.vocab_size();
    let (mut worst, mut compared) = (0.0f32, 0);
    for b in 0..n {
        for i in 0..t {
            if mask[b * t + i] == 0 {
                continue; // padding rows are not outputs
            }
            let row = &logits[(b * t + i) * vocab..(b * t + i + 1) * vocab];
            for (k, &c) in columns.iter().enumerate() {
                let e = expected[(b * t + i) * columns.len() + k];
                worst = worst.max((row[c as usize] - e).abs());
                compared += 1;
            }
            let e = maxima[b * t + i];
            worst = worst.max((row[argmax[b * t + i] as usize] - e).abs());
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            assert_eq!(best as i64, argmax[b * t + i], "row {b}, token {i}: argmax");
        }
    }
    eprintln!("smollm2 parity: max |Δ logit| = {worst:.2e} over {compared} logits");
    assert!(worst <= 1e-3, "max |Δ logit| = {worst}");
}

#[test]
fn left_padding_and_the_kv_cache_change_nothing() {
    let Some((model, _)) = model() else { return };
    let device = Default::default();
    let prompt: Vec<u32> = vec![504, 3575, 282, 4649, 314, 216, 36, 40];
    let alone = tensor_values(model.forward(&prompt, 1, &[1; 8], None, &device).unwrap());
    let vocab = model.vocab_size();

    // The same prompt left-padded by 3 beside a longer one.
    let mut ids = vec![2, 2, 2];
    ids.extend(&prompt);
    ids.extend([1u32, 9690, 198, 504, 3575, 282, 4649, 314, 216, 36, 40]);
    let mut mask = vec![0, 0, 0];
    mask.extend([1u32; 8]);
    mask.extend([1u32; 11]);
    let padded = tensor_values(model.forward(&ids, 2, &mask, None, &device).unwrap());
    let diff = alone
        .iter()
        .zip(&padded[3 * vocab..11 * vocab])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "left padding moved a logit by {diff}");

    // Token by token through the cache: the last token's logits agree.
    let mut cache = KvCache::new(model.layers.len(), 1);
    let mut last = Vec::new();
    for i in 0..prompt.len() {
        let m = vec![1u32; i + 1];
        last = tensor_values(
            model
                .forward(&prompt[i..=i], 1, &m, Some(&mut cache), &device)
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), prompt.len());
    let diff = last
        .iter()
        .zip(&alone[7 * vocab..])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "cached decoding moved a logit by {diff}");
}

#[test]
fn smollm2_tokenizer_and_chat_template_from_gguf_match_transformers() {
    let Some(path) = loraxs_models::testing::test_decoder_gguf() else {
        return;
    };
    let tokenizer = loraxs_models::load_causal_tokenizer(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(FIXTURE).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    let st = SafeTensors::deserialize(FIXTURE).unwrap();
    let (shape, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    let prompts: Vec<String> = serde_json::from_str(&meta["prompts"]).unwrap();
    let t = shape[1];
    for (b, prompt) in prompts.iter().enumerate() {
        let expected: Vec<u32> = (0..t)
            .filter(|&i| mask[b * t + i] == 1)
            .map(|i| ids[b * t + i] as u32)
            .collect();
        let got = tokenizer.encode(prompt).unwrap();
        assert_eq!(got, expected, "prompt {b}: {prompt:?}");
        assert_eq!(&tokenizer.decode(&got, false).unwrap(), prompt);
    }
    let chat: Vec<loraxs_models::ChatMessage> = serde_json::from_str::<Vec<serde_json::Value>>(&meta["chat"])
        .unwrap()
        .iter()
        .map(|m| loraxs_models::ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let rendered = tokenizer.apply_chat_template(&chat, true).unwrap();
    assert_eq!(rendered, meta["chat_rendered"]);
    let chat_ids: Vec<u32> = serde_json::from_str(&meta["chat_ids"]).unwrap();
    assert_eq!(tokenizer.encode(&rendered).unwrap(), chat_ids);
    // `<|im_end|>` ends generation; padding is its own token.
    assert_eq!(tokenizer.stop_ids(), [2]);
    assert_eq!(tokenizer.decode(&[2], false).unwrap(), "<|im_end|>");
}

#[test]
fn smollm2_greedy_generation_matches_transformers_cached_or_not() {
    let Some((model, _)) = model() else { return };
    let st = SafeTensors::deserialize(FIXTURE).unwrap();
    let (shape, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    let (gshape, greedy) = ints(&st, "greedy");
    let t = shape[1];
    let prompts: Vec<Vec<u32>> = (0..shape[0])
        .map(|b| {
            (0..t)
                .filter(|&i| mask[b * t + i] == 1)
                .map(|i| ids[b * t + i] as u32)
                .collect()
        })
        .collect();
    let device = Default::default();
    let config = loraxs_models::GenerationConfig {
        max_new_tokens: gshape[1],
        stop_ids: vec![2],
        ..Default::default()
    };
    let cached = loraxs_models::generate(&model, &prompts, 2, &config, &device).unwrap();
    for (b, tokens) in cached.tokens.iter().enumerate() {
        let expected: Vec<u32> = greedy[b * gshape[1]..(b + 1) * gshape[1]]
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(tokens, &expected, "prompt {b}: greedy tokens");
        assert_eq!(cached.finish[b], loraxs_models::FinishReason::Length);
    }
    let uncached = loraxs_models::GenerationConfig {
        use_cache: false,
        max_new_tokens: 8,
        ..config.clone()
    };
    let again = loraxs_models::generate(&model, &prompts, 2, &uncached, &device).unwrap();
    for (a, b) in again.tokens.iter().zip(&cached.tokens) {
        assert_eq!(a[..], b[..8], "cached and uncached decoding differ");
    }
    // One prompt alone gives what it gave in the padded batch.
    let alone = loraxs_models::generate(&model, &prompts[1..2], 2, &config, &device).unwrap();
    assert_eq!(alone.tokens[0], cached.tokens[1]);
    // Streaming: the callback sees every token in order; stopping prompt 0
    // after 3 tokens ends it there and leaves the others as they were.
    let mut seen = vec![Vec::new(); prompts.len()];
    let streamed = loraxs_models::generate_with(&model, &prompts, 2, &config, &device, &mut |b, t| {
        seen[b].push(t);
        b != 0 || seen[0].len() < 3
    })
    .unwrap();
    assert_eq!(seen[0], cached.tokens[0][..3]);
    assert_eq!(streamed.tokens[0], cached.tokens[0][..3]);
    assert_eq!(streamed.finish[0], loraxs_models::FinishReason::Cancelled);
    for (b, tokens) in seen.iter().enumerate().skip(1) {
        assert_eq!(*tokens, cached.tokens[b], "prompt {b}: streamed tokens");
        assert_eq!(streamed.tokens[b], cached.tokens[b]);
    }
}

#[test]
fn decoder_refuses_what_it_cannot_run() {
    let Some((model, _)) = model() else { return };
    let device = Default::default();
    let long = vec![vec![504u32; 8190]];
    let config = loraxs_models::GenerationConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    let e = loraxs_models::generate(&model, &long, 2, &config, &device).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the longest prompt (8190 tokens) plus max_new_tokens (10) exceeds the model's context of 8192 tokens"
    );
    let e = loraxs_models::generate(&model, &[vec![]], 2, &config, &device).unwrap_err();
    assert_eq!(e.to_string(), "prompt 0 is empty");
    let e = model.forward(&[49152], 1, &[1], None, &device).unwrap_err();
    assert_eq!(e.to_string(), "token id 49152 is outside the vocabulary of 49152");
    let e = model.forward(&[1, 2], 1, &[1], None, &device).unwrap_err();
    assert!(e.to_string().starts_with("attention_mask has 1 values"), "{e}");
}

/// The decoder's adaptable linears are exactly what `DecoderConfig` (and
/// so `cargo xtask params`) lists, and LoRA-XS with the paper's decoder
/// recipe (7 targets, r = 64, alpha = r) trains 7 × layers × r² values,
/// leaves the model unchanged at R = 0 and merges into the same function.
#[test]
fn lora_xs_on_smollm2_counts_what_params_counts() {
    use loraxs::{AdapterConfig, RInit, TargetModules, linear_layers, param_count};
    let Some((model, config)) = model() else { return };
    let listed: Vec<(String, loraxs::ModuleShape)> = config
        .linear_modules()
        .into_iter()
        .map(|m| (m.name, m.shape))
        .collect();
    let instantiated: Vec<(String, loraxs::ModuleShape)> = linear_layers(&model)
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect();
    assert_eq!(instantiated, listed);

    let device = Default::default();
    let prompt: Vec<u32> = vec![504, 3575, 282, 4649, 314];
    let base = tensor_values(model.forward(&prompt, 1, &[1; 5], None, &device).unwrap());
    let recipe = AdapterConfig::lora_xs(64)
        .with_alpha(64.0)
        .with_targets(TargetModules::paper_decoder());
    let adapted = loraxs::inject(model, &recipe.clone().with_r_init(RInit::Zeros)).unwrap();
    assert_eq!(adapted.report.modules.len(), 7 * 30);
    let count = param_count(&adapted.model, Some(&recipe));
    assert_eq!(count.adapter, 7 * 30 * 64 * 64);
    let formula: usize = listed
        .iter()
        .filter(|(n, _)| recipe.targets.matches(n))
        .map(|(_, s)| recipe.method.spec().trainable_values(*s, 64))
        .sum();
    assert_eq!(count.adapter, formula);
    let zero = tensor_values(adapted.model.forward(&prompt, 1, &[1; 5], None, &device).unwrap());
    assert_eq!(zero, base, "R = 0 must give exactly the base model");

    // A random R changes the output; merging W' = W + s·BRA keeps it.
    let (fresh, _, _) =
        load_decoder::<B>(&loraxs_models::testing::test_decoder_gguf().unwrap(), &device).unwrap();
    let adapted = loraxs::inject(fresh, &recipe.clone().with_r_init(RInit::Gaussian { std: 0.02 })).unwrap();
    let unmerged = tensor_values(adapted.model.forward(&prompt, 1, &[1; 5], None, &device).unwrap());
    let merged_model = adapted.merge::<B>().model;
    let merged = tensor_values(merged_model.forward(&prompt, 1, &[1; 5], None, &device).unwrap());
    let moved = unmerged
        .iter()
        .zip(&base)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let drift = unmerged
        .iter()
        .zip(&merged)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "a random R moved no logit ({moved})");
    assert!(drift < 2e-3, "merging moved a logit by {drift}");
}

/// Gemma (1) on a tiny random model transformers built and saved
/// (`tools/make_fixtures.py gemma-tiny`; no real Gemma is reachable here):
/// GeGLU, `(1 + w)` norms with non-trivial `w`, embeddings scaled by
/// `√hidden`, a head size other than `hidden / heads`, tied output.
#[test]
fn gemma_matches_transformers_on_a_tiny_random_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma_tiny");
    let (model, config, report) = load_decoder::<B>(&dir, &Default::default()).unwrap();
    assert!(report.unused.is_empty(), "unused tensors: {:?}", report.unused);
    assert!(config.is_gemma());
    assert_eq!(config.head_size(), 16);
    let bytes = include_bytes!("../fixtures/gemma_tiny_logits.safetensors");
    let st = SafeTensors::deserialize(bytes).unwrap();
    let ids_view = st.tensor("input_ids").unwrap();
    let ids: Vec<u32> = ids_view
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let [batch, t] = [ids_view.shape()[0], ids_view.shape()[1]];
    let expected = common::floats(&st, "logits");
    let device = Default::default();
    let hidden = model
        .forward_hidden(&ids, batch, &vec![1; batch * t], None, &device)
        .unwrap();
    let logits = tensor_values(model.logits(hidden));
    let diff = common::max_abs_diff(&logits, &expected);
    let top = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("gemma tiny: max |Δ logit| {diff:.2e} (largest logit {top:.2})");
    assert!(diff <= 1e-4 * top.max(1.0), "max |Δ logit| {diff}");
}

#[test]
fn gemma_2_and_unknown_activations_are_refused_by_name() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma_tiny/config.json"),
    )
    .unwrap();
    let p = std::path::Path::new("config.json");
    let mut c = DecoderConfig::from_json(&text, p).unwrap();
    assert!(loraxs_models::check_supported(&c).is_ok());
    c.model_type = "gemma2".into();
    let err = loraxs_models::check_supported(&c).unwrap_err().to_string();
    assert!(err.contains("gemma2"), "{err}");
    let mut c = DecoderConfig::from_json(&text, p).unwrap();
    c.hidden_activation = Some("relu".into());
    let err = loraxs_models::check_supported(&c).unwrap_err().to_string();
    assert!(err.contains("relu"), "{err}");
}

/// A Llama-2/Mistral-style GGUF vocabulary (`tokenizer.ggml.model` =
/// `llama`: SentencePiece pieces and scores, byte fallback, no merges),
/// trained by SentencePiece on GSM8K text and written as llama.cpp writes
/// it (`tools/make_fixtures.py spm-tiny`). The ids must be SentencePiece's
/// own (special tokens in the text parsed as llama.cpp parses them); they
/// are transformers' too except where its GGUF conversion drops the dummy
/// prefix (text starting with a space, text after a special token).
#[test]
fn sentencepiece_gguf_vocabularies_tokenise_as_sentencepiece_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm_tiny");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let list = |key: &str| -> Vec<serde_json::Value> { expected[key].as_array().unwrap().clone() };
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let tokenizer = loraxs_models::load_causal_tokenizer(&dir.join("spm-tiny.gguf")).unwrap();
    let texts = list("texts");
    let (spm, hf) = (list("sentencepiece_ids"), list("transformers_ids"));
    let (mut same_as_hf, mut checked) = (0, 0);
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_str().unwrap();
        let got = tokenizer.encode(text).unwrap();
        assert_eq!(got, ids(&spm[i]), "text {i}: {text:?}");
        same_as_hf += usize::from(got == ids(&hf[i]));
        checked += 1;
        // Decoding gives SentencePiece's text back (which drops control
        // tokens).
        assert_eq!(
            tokenizer.decode(&got, true).unwrap(),
            expected["sentencepiece_decoded"][i].as_str().unwrap(),
            "text {i}"
        );
    }
    // The texts exercise the prefix differences and more: most agree.
    assert_eq!((same_as_hf, checked), (texts.len() - 3, texts.len()));
    // Byte fallback: characters outside the vocabulary become <0xNN> pieces.
    let emoji = tokenizer.encode("\u{1F600}").unwrap();
    assert_eq!(emoji.len(), 5, "▁ + 4 UTF-8 bytes: {emoji:?}");
    assert_eq!(tokenizer.decode(&emoji, false).unwrap(), "\u{1F600}");

    // `tokenizer.ggml.add_bos_token`: prompts start with <s>, once.
    assert!(tokenizer.add_bos());
    let with_bos = list("transformers_ids_with_bos");
    let prompt = texts[0].as_str().unwrap();
    assert_eq!(tokenizer.encode_prompt(prompt).unwrap(), ids(&with_bos[0]));
    let chat = [
        loraxs_models::ChatMessage::new("user", "What is 12 + 30?"),
        loraxs_models::ChatMessage::new("assistant", "42."),
    ];
    let rendered = tokenizer.apply_chat_template(&chat, false).unwrap();
    assert_eq!(rendered, expected["chat_rendered"].as_str().unwrap());
    let chat_ids = tokenizer.encode_prompt(&rendered).unwrap();
    assert_eq!(chat_ids.iter().filter(|&&t| t == 1).count(), 1, "{chat_ids:?}");
    assert_eq!(tokenizer.stop_ids(), [2]);
}

/// A GGUF vocabulary of a kind loraxs does not build is an error naming
/// the key and the way out; so is a SentencePiece one without scores.
#[test]
fn unsupported_gguf_vocabularies_are_refused_by_name() {
    use loraxs_models::gguf::{GgufFile, GgufValue, GgufWriter};
    let strings = |v: &[&str]| GgufValue::Array(v.iter().map(|s| GgufValue::String(s.to_string())).collect());
    let file = |model: &str, scores: bool| {
        let mut b = GgufWriter::new()
            .meta("general.architecture", GgufValue::String("llama".into()))
            .meta("tokenizer.ggml.model", GgufValue::String(model.into()))
            .meta("tokenizer.ggml.tokens", strings(&["<unk>", "a", "b", "ab"]));
        if scores {
            b = b.meta(
                "tokenizer.ggml.scores",
                GgufValue::Array(vec![GgufValue::F32(0.0); 3]),
            );
        }
        GgufFile::parse(b.to_bytes(), "vocab.gguf").unwrap()
    };
    let e = loraxs_models::gguf_tokenizer_json(&file("bert", true))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vocab.gguf") && e.contains("`tokenizer.ggml.model` is `bert`"),
        "{e}"
    );
    assert!(e.contains("tokenizer.json beside"), "{e}");
    // Three scores for four tokens.
    let e = loraxs_models::gguf_tokenizer_json(&file("llama", true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`tokenizer.ggml.scores` must be 4 numbers"), "{e}");
    let e = loraxs_models::gguf_tokenizer_json(&file("llama", false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`tokenizer.ggml.scores`"), "{e}");
}
