//! The paper-style GLUE table from result records.

use std::collections::BTreeMap;

use loraxs::Factors;
use loraxs_data::GlueTask;
use loraxs_train::RunRecord;

fn method_label(r: &RunRecord) -> String {
    let a = &r.config.adapter;
    match (a.method.name(), a.factors) {
        ("full", _) => "Full FT".into(),
        ("lora-xs", Factors::Random) => format!("LoRA-XS, random A/B (r={})", a.rank),
        ("lora-xs", _) => format!("LoRA-XS (r={})", a.rank),
        ("lora", _) => format!("LoRA (r={})", a.rank),
        (m, _) => format!("{m} (r={})", a.rank),
    }
}

/// Rows: method and rank, with trainable parameters; columns: tasks (the
/// headline metric named) and their average; cells: median over seeds of
/// the best epoch, ×100.
pub fn glue_table(profile: &str, records: &[RunRecord], notes: &[String]) -> String {
    let tasks: Vec<GlueTask> = GlueTask::ALL
        .into_iter()
        .filter(|t| records.iter().any(|r| r.config.task == *t))
        .collect();
    // (method, rank) → task → (lr, head lr) → best-epoch values over seeds.
    type Grid = BTreeMap<(String, String), Vec<f64>>;
    let mut rows: BTreeMap<(u8, usize, String), BTreeMap<GlueTask, Grid>> = BTreeMap::new();
    let mut params: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in records {
        let label = method_label(r);
        let order = match r.config.adapter.method.name() {
            "full" => 0,
            "lora" => 1,
            "vera" => 2,
            _ => 3,
        };
        let value = r.best.metrics[&r.metric] * 100.0;
        let rates = (format!("{:e}", r.config.lr), format!("{:e}", r.config.head_lr));
        rows.entry((order, r.config.adapter.rank, label.clone()))
            .or_default()
            .entry(r.config.task)
            .or_default()
            .entry(rates)
            .or_default()
            .push(value);
        params.insert(label, (r.trainable_adapter, r.trainable_head));
    }
    let mut out = format!("# GLUE, profile `{profile}`\n\n");
    out.push_str(
        "Cells: median over seeds of the best epoch's dev metric (×100), for the best learning-rate pair \
         where several were run; the metric is named under each task.\n\n",
    );
    out.push_str("| method | trainable (adapter) | head |");
    for t in &tasks {
        out.push_str(&format!(" {t} |"));
    }
    out.push_str(" avg |\n|---|---:|---:|");
    for _ in &tasks {
        out.push_str("---:|");
    }
    out.push_str("---:|\n| | | |");
    for t in &tasks {
        out.push_str(&format!(" {} |", t.metrics()[0].name()));
    }
    out.push_str(" |\n");
    for ((_, _, label), cells) in &rows {
        let (adapter, head) = params[label];
        out.push_str(&format!("| {label} | {adapter} | {head} |"));
        let mut sum = 0.0;
        let mut n = 0;
        for t in &tasks {
            match cells.get(t) {
                Some(grid) => {
                    let (m, seeds) = grid
                        .values()
                        .map(|v| (loraxs_benches::workload::median(v), v.len()))
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                        .expect("a cell has at least one run");
                    sum += m;
                    n += 1;
                    let pairs = if grid.len() > 1 {
                        format!(", best of {} lr pairs", grid.len())
                    } else {
                        String::new()
                    };
                    out.push_str(&format!(
                        " {m:.1} ({seeds} seed{}{pairs}) |",
                        if seeds == 1 { "" } else { "s" }
                    ));
                }
                None => out.push_str(" – |"),
            }
        }
        if n == tasks.len() && n > 0 {
            out.push_str(&format!(" {:.1} |\n", sum / n as f64));
        } else {
            out.push_str(" – |\n");
        }
    }
    let wall: f64 = records.iter().map(|r| r.wall_seconds).sum();
    let backends: Vec<String> = {
        let mut b: Vec<String> = records.iter().map(|r| r.backend.clone()).collect();
        b.sort();
        b.dedup();
        b
    };
    let models: Vec<String> = {
        let mut m: Vec<String> = records.iter().map(|r| r.model.clone()).collect();
        m.sort();
        m.dedup();
        m
    };
    out.push_str(&format!(
        "\n{} runs; model {}; backend {}; total wall time {:.1} min (sum over runs).\n",
        records.len(),
        models.join(", "),
        backends.join(", "),
        wall / 60.0
    ));
    out.push_str(
        "\nThe runs (from the result records):\n\n| task | method | seed | train examples | epochs | lr | head lr | \
         start | best epoch | best | wall s |\n|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for r in records {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:e} | {:e} | {} | {} | {:.4} | {:.0} |\n",
            r.config.task,
            method_label(r),
            r.config.seed,
            r.train_examples,
            r.config.epochs,
            r.config.lr,
            r.config.head_lr,
            if r.config.init_from.is_some() {
                "MNLI adapter"
            } else {
                "scratch"
            },
            r.best.epoch,
            r.best.metrics[&r.metric],
            r.wall_seconds
        ));
    }
    for note in notes {
        out.push_str(&format!("\n- {note}"));
    }
    out.push('\n');
    out
}
