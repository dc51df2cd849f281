//! `cargo xtask params`: the paper's trainable-parameter table, computed
//! from model configs alone (no weights, no tensor library): module names
//! and shapes from `loraxs-models`, per-method counts from each method's
//! spec in `loraxs`. The configs ship in `crates/loraxs-models/configs/`.

use loraxs::{AdapterConfig, Method, TargetModules};
use loraxs_models::{DecoderConfig, EncoderConfig, LinearModule};

/// The configs the table is computed from, shipped with `loraxs-models`.
fn config_path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/loraxs-models/configs")
        .join(file)
}

fn read(file: &str) -> Result<String, String> {
    let path = config_path(file);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

struct Model {
    name: &'static str,
    modules: Vec<LinearModule>,
    /// Every parameter of the base model.
    total: usize,
    /// A sequence-classification head (RoBERTa style, 2 labels); encoders only.
    head: Option<usize>,
}

fn encoder(name: &'static str, file: &str) -> Result<Model, String> {
    let c = EncoderConfig::from_json(&read(file)?, &config_path(file)).map_err(|e| e.to_string())?;
    let h = c.hidden_size;
    Ok(Model {
        name,
        modules: c.linear_modules(),
        total: c.total_params(),
        head: Some(h * h + h + 2 * h + 2),
    })
}

fn decoder(name: &'static str, file: &str) -> Result<Model, String> {
    let c = DecoderConfig::from_json(&read(file)?, &config_path(file)).map_err(|e| e.to_string())?;
    Ok(Model {
        name,
        modules: c.linear_modules(),
        total: c.total_params(),
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
        .map(|m| config.method.spec().trainable_values(m.shape, config.rank))
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
    let decoder_targets = TargetModules::paper_decoder();
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
    allreduce_table()
}

/// Bytes each data-parallel peer contributes to one step's gradient
/// all-reduce for the adapter: every trainable adapter value as f32 (a
/// trained head adds its own, the same for every method).
fn allreduce_bytes(model: &Model, config: &AdapterConfig) -> usize {
    trainable(model, config) * 4
}

/// `3.5 MiB`, `27.0 GiB`.
fn human_bytes(n: usize) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n / 1024.0)
    }
}

/// What data-parallel training sums every step, per method: the
/// trainable values' gradients (f32), from the counts above.
fn allreduce_table() -> Result<(), String> {
    let qv = TargetModules::new(["query", "value"]);
    let decoder_targets = TargetModules::paper_decoder();
    println!(
        "\n| model | method | adapter gradient all-reduce per step per peer (f32) | × LoRA-XS | + classification head |"
    );
    println!("|---|---|---:|---:|---:|");
    let rows = |model: &Model, configs: &[(&str, AdapterConfig)]| {
        let xs = allreduce_bytes(model, &configs[0].1);
        for (label, config) in configs {
            let b = allreduce_bytes(model, config);
            let head = model
                .head
                .map_or("–".to_string(), |h| format!("+ {}", human_bytes(h * 4)));
            println!(
                "| {} | {label} | {} ({b} B) | {:.0} | {head} |",
                model.name,
                human_bytes(b),
                b as f64 / xs as f64
            );
        }
    };
    for (name, file) in [
        ("roberta-base", "roberta-base.json"),
        ("roberta-large", "roberta-large.json"),
    ] {
        let model = encoder(name, file)?;
        rows(
            &model,
            &[
                ("LoRA-XS r=16", AdapterConfig::lora_xs(16)),
                (
                    "LoRA r=8 (query, value)",
                    AdapterConfig::lora(8).with_targets(qv.clone()),
                ),
                ("full fine-tuning", AdapterConfig::full()),
            ],
        );
    }
    for (name, file) in [("Mistral-7B", "mistral-7b.json"), ("Gemma-7B", "gemma-7b.json")] {
        let model = decoder(name, file)?;
        rows(
            &model,
            &[
                (
                    "LoRA-XS r=64",
                    AdapterConfig::lora_xs(64).with_targets(decoder_targets.clone()),
                ),
                (
                    "LoRA r=64",
                    AdapterConfig::lora(64).with_targets(decoder_targets.clone()),
                ),
                ("full fine-tuning", AdapterConfig::full()),
            ],
        );
    }
    println!(
        "\nA ring all-reduce over N peers sends and receives 2(N−1)/N times this per peer per step. \
         LoRA-XS's volume does not grow with the model's width; on the GLUE encoders the trained \
         classification head (dense h×h) outweighs it."
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
        let all = TargetModules::paper_decoder();
        assert_eq!(
            trainable(&mistral, &AdapterConfig::lora_xs(64).with_targets(all.clone())),
            917_504
        );
        assert_eq!(
            trainable(&mistral, &AdapterConfig::lora(64).with_targets(all)),
            167_772_160
        );
        assert_eq!(mistral.total, 7_241_732_096);
        assert_eq!(
            allreduce_bytes(
                &mistral,
                &AdapterConfig::lora_xs(64).with_targets(TargetModules::paper_decoder())
            ),
            917_504 * 4
        );
        assert_eq!(
            allreduce_bytes(&base, &AdapterConfig::lora_xs(16)),
            12 * 4 * 256 * 4
        );
        assert_eq!(allreduce_bytes(&base, &AdapterConfig::full()), 124_645_632 * 4);
        assert_eq!(human(24_576), "24.58K");
        assert_eq!(human(355_359_744), "355M");
    }
}
