//! `cargo xtask params`: the paper's trainable-parameter table, computed
//! from model configs alone (no weights needed). The configs ship in
//! `xtask/configs/`.

use serde::Deserialize;

use loraxs::{AdapterConfig, Method, TargetModules};
use loraxs_models::EncoderConfig;

use crate::util::project_root;

/// One adaptable linear layer: dotted name, `in`, `out`, bias.
struct Module {
    name: String,
    d_in: usize,
    d_out: usize,
    bias: bool,
}

/// Architecture fields of a decoder `config.json` (Llama family).
#[derive(Deserialize)]
struct DecoderConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
}

struct Model {
    name: &'static str,
    modules: Vec<Module>,
    /// Every parameter of the base model.
    total: usize,
    /// A sequence-classification head (RoBERTa style, 2 labels); encoders only.
    head: Option<usize>,
}

fn read(file: &str) -> Result<String, String> {
    let path = project_root().join("xtask/configs").join(file);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `<prefix>.<layer>.<suffix>` for every layer and per-layer shape.
fn layer_modules(prefix: &str, layers: usize, shapes: &[(&str, usize, usize)], bias: bool) -> Vec<Module> {
    (0..layers)
        .flat_map(|i| {
            shapes.iter().map(move |&(suffix, d_in, d_out)| Module {
                name: format!("{prefix}.{i}.{suffix}"),
                d_in,
                d_out,
                bias,
            })
        })
        .collect()
}

fn encoder(name: &'static str, file: &str) -> Result<Model, String> {
    let path = project_root().join("xtask/configs").join(file);
    let c = EncoderConfig::from_json(&read(file)?, &path).map_err(|e| e.to_string())?;
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let shapes = [
        ("attention.self.query", h, h),
        ("attention.self.key", h, h),
        ("attention.self.value", h, h),
        ("attention.output.dense", h, h),
        ("intermediate.dense", h, f),
        ("output.dense", f, h),
    ];
    let modules = layer_modules("encoder.layer", c.num_hidden_layers, &shapes, true);
    let linear: usize = modules.iter().map(|m| m.d_in * m.d_out + m.d_out).sum();
    let embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * h + 2 * h;
    let norms = c.num_hidden_layers * 4 * h;
    let pooler = h * h + h;
    Ok(Model {
        name,
        modules,
        total: linear + embeddings + norms + pooler,
        head: Some(h * h + h + 2 * h + 2),
    })
}

fn decoder(name: &'static str, file: &str) -> Result<Model, String> {
    let c: DecoderConfig = serde_json::from_str(&read(file)?).map_err(|e| format!("{file}: {e}"))?;
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let hd = c.head_dim.unwrap_or(h / c.num_attention_heads);
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let shapes = [
        ("self_attn.q_proj", h, q),
        ("self_attn.k_proj", h, kv),
        ("self_attn.v_proj", h, kv),
        ("self_attn.o_proj", q, h),
        ("mlp.gate_proj", h, f),
        ("mlp.up_proj", h, f),
        ("mlp.down_proj", f, h),
    ];
    let modules = layer_modules("model.layers", c.num_hidden_layers, &shapes, false);
    let linear: usize = modules.iter().map(|m| m.d_in * m.d_out).sum();
    let embeddings = c.vocab_size * h * if c.tie_word_embeddings { 1 } else { 2 };
    let norms = c.num_hidden_layers * 2 * h + h;
    Ok(Model {
        name,
        modules,
        total: linear + embeddings + norms,
        head: None,
    })
}

/// Trainable adapter values of `config` on `model`.
fn trainable(model: &Model, config: &AdapterConfig) -> usize {
    if config.method == Method::Full {
        return model.total;
    }
    model
        .modules
        .iter()
        .filter(|m| config.targets.matches(&m.name))
        .map(|m| {
            config
                .method
                .trainable_per_module(m.d_in, m.d_out, config.rank, m.bias)
        })
        .sum()
}

/// `24.58K`, `0.79M`, `125M` — the paper's style.
fn human(n: usize) -> String {
    let n = n as f64;
    if n >= 1e8 {
        format!("{:.0}M", n / 1e6)
    } else if n >= 1e5 {
        format!("{:.2}M", n / 1e6)
    } else {
        format!("{:.2}K", n / 1e3)
    }
}

/// Prints the table.
pub fn params() -> Result<(), String> {
    let qv = TargetModules::new(["query", "value"]);
    let decoder_targets = TargetModules::new([
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]);
    println!("| model | method | rank | targets | trainable (adapter) | exact | head (separate) |");
    println!("|---|---|---:|---|---:|---:|---:|");
    let row = |model: &Model, config: AdapterConfig, targets: &str| {
        let n = trainable(model, &config);
        let rank = if config.method == Method::Full {
            "–".to_string()
        } else {
            config.rank.to_string()
        };
        let head = model
            .head
            .map_or("–".to_string(), |h| format!("{} ({h})", human(h)));
        println!(
            "| {} | {} | {rank} | {targets} | {} | {n} | {head} |",
            model.name,
            config.method.name(),
            human(n)
        );
    };
    for (name, file, vera_rank) in [
        ("roberta-base", "roberta-base.json", 1024),
        ("roberta-large", "roberta-large.json", 256),
    ] {
        let model = encoder(name, file)?;
        row(&model, AdapterConfig::full(), "all");
        row(
            &model,
            AdapterConfig::lora(8).with_targets(qv.clone()),
            "query, value",
        );
        row(
            &model,
            AdapterConfig::vera(vera_rank).with_targets(qv.clone()),
            "query, value",
        );
        for r in [4, 8, 12, 16, 20, 25] {
            row(
                &model,
                AdapterConfig::lora_xs(r),
                "query, value, attention.output.dense, output.dense",
            );
        }
    }
    for (name, file) in [("Mistral-7B", "mistral-7b.json"), ("Gemma-7B", "gemma-7b.json")] {
        let model = decoder(name, file)?;
        row(
            &model,
            AdapterConfig::lora(64).with_targets(decoder_targets.clone()),
            "q, k, v, o, gate, up, down",
        );
        row(
            &model,
            AdapterConfig::lora_xs(64).with_targets(decoder_targets.clone()),
            "q, k, v, o, gate, up, down",
        );
    }
    println!(
        "\nLoRA-XS trains r² values per adapted module whatever the model width. Heads: a RoBERTa-style \
         classification head (dense h×h + out_proj h×2, with biases), trained in every method, counted apart."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The totals Hugging Face reports and the paper's counts.
    #[test]
    fn counts_match_the_paper_and_hugging_face() {
        let base = encoder("roberta-base", "roberta-base.json").unwrap();
        assert_eq!(base.total, 124_645_632);
        assert_eq!(trainable(&base, &AdapterConfig::lora_xs(16)), 12 * 4 * 256);
        let qv = TargetModules::new(["query", "value"]);
        assert_eq!(
            trainable(&base, &AdapterConfig::lora(8).with_targets(qv.clone())),
            294_912
        );
        assert_eq!(
            trainable(&base, &AdapterConfig::vera(1024).with_targets(qv)),
            43_008
        );
        let large = encoder("roberta-large", "roberta-large.json").unwrap();
        assert_eq!(large.total, 355_359_744);
        let mistral = decoder("Mistral-7B", "mistral-7b.json").unwrap();
        let all = TargetModules::new([
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]);
        assert_eq!(
            trainable(&mistral, &AdapterConfig::lora_xs(64).with_targets(all.clone())),
            917_504
        );
        assert_eq!(
            trainable(&mistral, &AdapterConfig::lora(64).with_targets(all)),
            167_772_160
        );
        assert_eq!(mistral.total, 7_241_732_096);
        assert_eq!(human(24_576), "24.58K");
        assert_eq!(human(355_359_744), "355M");
    }
}
