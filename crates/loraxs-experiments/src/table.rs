//! The paper-style GLUE table, derived from result records alone.

use std::collections::BTreeMap;

use loraxs::Method;
use loraxs_data::GlueTask;
use loraxs_train::RunRecord;

use crate::median;

/// The row label of a record's method and rank.
pub fn method_label(r: &RunRecord) -> String {
    let a = &r.config.adapter;
    match a.preset_name() {
        "full" => "Full FT".into(),
        "lora-xs-random" => format!("LoRA-XS, random A/B (r={})", a.rank),
        "lora-xs" => format!("LoRA-XS (r={})", a.rank),
        "lora" => format!("LoRA (r={})", a.rank),
        "vera" => format!("VeRA (r={})", a.rank),
        m => format!("{m} (r={})", a.rank),
    }
}

/// The sampler window and encoder dropout of a run, as the tables write
/// them (`window 4, dropout 0`; `dropout model` keeps the model's).
pub fn training_variant(r: &RunRecord) -> String {
    format!(
        "window {}, dropout {}",
        r.config.bucket_window,
        r.config
            .encoder_dropout
            .map_or("model".to_string(), |p| p.to_string())
    )
}

/// One cell of the table: the best learning-rate pair by median over
/// seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The median over seeds of the best pair.
    pub median: f64,
    /// The lowest and highest seed of the best pair (the spread).
    pub range: (f64, f64),
    /// Seeds behind that median.
    pub seeds: usize,
    /// Learning-rate pairs compared.
    pub pairs: usize,
    /// The winning `(lr, head lr)`.
    pub best_pair: (f64, f64),
}

/// Picks the learning-rate pair with the highest median over seeds, as the
/// paper reports a grid. `values` holds `(lr, head_lr, value)` per run.
/// Ties go to the pair listed first in ascending `(lr, head lr)` order.
///
/// ```
/// use loraxs_experiments::best_pair;
/// // (1e-3, 1e-3) has seeds 80, 90, 10 → median 80; (1e-4, 1e-3) has 70, 75 → 72.5.
/// let runs = [(1e-3, 1e-3, 80.0), (1e-3, 1e-3, 90.0), (1e-3, 1e-3, 10.0), (1e-4, 1e-3, 70.0), (1e-4, 1e-3, 75.0)];
/// let cell = best_pair(&runs).unwrap();
/// assert_eq!((cell.median, cell.seeds, cell.pairs, cell.best_pair), (80.0, 3, 2, (1e-3, 1e-3)));
/// assert_eq!(cell.range, (10.0, 90.0));
/// ```
pub fn best_pair(values: &[(f64, f64, f64)]) -> Option<Cell> {
    let mut pairs: Vec<((f64, f64), Vec<f64>)> = Vec::new();
    for &(lr, head_lr, v) in values {
        match pairs.iter_mut().find(|(p, _)| *p == (lr, head_lr)) {
            Some((_, vs)) => vs.push(v),
            None => pairs.push(((lr, head_lr), vec![v])),
        }
    }
    pairs.sort_by(|a, b| a.0.0.total_cmp(&b.0.0).then(a.0.1.total_cmp(&b.0.1)));
    let n = pairs.len();
    pairs
        .into_iter()
        .map(|(pair, vs)| Cell {
            median: median(&vs),
            range: (
                vs.iter().copied().fold(f64::INFINITY, f64::min),
                vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ),
            seeds: vs.len(),
            pairs: n,
            best_pair: pair,
        })
        .reduce(|best, c| if c.median > best.median { c } else { best })
}

/// How far above the best constant prediction (in table points, ×100) a
/// median must be for the table to count the task as learned.
pub const CLEAR_MARGIN: f64 = 2.0;

/// The reference row's value for `task`: the best constant prediction's
/// headline metric ×100, from the first record that kept it.
pub(crate) fn reference(records: &[RunRecord], task: GlueTask) -> Option<f64> {
    records
        .iter()
        .filter(|r| r.config.task == task)
        .find_map(|r| r.constant_baseline.get(&r.metric))
        .map(|v| v * 100.0)
}

/// One cell's text: the median, the seeds' range when there are several,
/// the seed count, the number of learning-rate pairs compared, and `‡` when
/// the median does not clear the reference by [`CLEAR_MARGIN`].
fn cell_text(cell: &Cell, reference: Option<f64>) -> String {
    let Cell {
        median: m,
        range: (lo, hi),
        seeds,
        pairs,
        ..
    } = *cell;
    let spread = if seeds > 1 {
        format!("{lo:.1}–{hi:.1}, {seeds} seeds")
    } else {
        "1 seed".to_string()
    };
    let pairs = if pairs > 1 {
        format!(", best of {pairs} lr pairs")
    } else {
        String::new()
    };
    let flag = match reference {
        Some(r) if m.is_nan() || m < r + CLEAR_MARGIN => " ‡",
        _ => "",
    };
    format!("{m:.1} ({spread}{pairs}){flag}")
}

/// Rows: the best constant prediction (the reference), then method and
/// rank with trainable parameters; columns: tasks (the headline metric
/// named) and their average; cells: median over seeds of the best epoch,
/// ×100, with the seeds' range.
pub fn glue_table(profile: &str, records: &[RunRecord], notes: &[String]) -> String {
    let tasks: Vec<GlueTask> = GlueTask::ALL
        .into_iter()
        .filter(|t| records.iter().any(|r| r.config.task == *t))
        .collect();
    // (method, rank) → task → (lr, head lr, best-epoch value) per run.
    type Runs = Vec<(f64, f64, f64)>;
    let mut rows: BTreeMap<(usize, usize, String), BTreeMap<GlueTask, Runs>> = BTreeMap::new();
    let mut params: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // Records that differ in sampler window or dropout (a study) get one
    // row per variant, never pooled as if they were seeds.
    let variants: std::collections::BTreeSet<String> = records.iter().map(training_variant).collect();
    for r in records {
        let label = if variants.len() > 1 {
            format!("{} · {}", method_label(r), training_variant(r))
        } else {
            method_label(r)
        };
        let order = Method::ALL
            .iter()
            .position(|&m| m == r.config.adapter.method)
            .unwrap_or(usize::MAX);
        let value = r.best.metrics[&r.metric] * 100.0;
        rows.entry((order, r.config.adapter.rank, label.clone()))
            .or_default()
            .entry(r.config.task)
            .or_default()
            .push((r.config.lr, r.config.head_lr, value));
        params.insert(label, (r.trainable_adapter, r.trainable_head));
    }
    let references: Vec<Option<f64>> = tasks.iter().map(|&t| reference(records, t)).collect();
    let mut out = format!("# GLUE, profile `{profile}`\n\n");
    out.push_str(
        "Cells: median over seeds of the best epoch's dev metric (×100), with the lowest and highest seed, \
         for the best learning-rate pair where several were run; the metric is named under each task. \
         The first row is the reference a model must beat: the best constant prediction on the dev set \
         (the majority class; 0 for MCC and correlations). ‡: the median is not at least 2 points above it.\n\n",
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
    if references.iter().any(Option::is_some) {
        out.push_str("| Best constant prediction | 0 | 0 |");
        for r in &references {
            match r {
                Some(v) => out.push_str(&format!(" {v:.1} |")),
                None => out.push_str(" – |"),
            }
        }
        match references.iter().copied().collect::<Option<Vec<f64>>>() {
            Some(v) if !v.is_empty() => {
                out.push_str(&format!(" {:.1} |\n", v.iter().sum::<f64>() / v.len() as f64))
            }
            _ => out.push_str(" – |\n"),
        }
    }
    for ((_, _, label), cells) in &rows {
        let (adapter, head) = params[label];
        out.push_str(&format!("| {label} | {adapter} | {head} |"));
        let mut sum = 0.0;
        let mut n = 0;
        for (t, reference) in tasks.iter().zip(&references) {
            match cells.get(t).and_then(|runs| best_pair(runs)) {
                Some(cell) => {
                    sum += cell.median;
                    n += 1;
                    out.push_str(&format!(" {} |", cell_text(&cell, *reference)));
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
    if variants.len() == 1 {
        out.push_str(&format!(
            "\nEvery run: {}.\n",
            variants.iter().next().map_or("", String::as_str)
        ));
    }
    out.push_str(
        "\nThe runs (from the result records; dev metric ×100 after each epoch):\n\n| task | method | seed | \
         train examples | epochs | lr | head lr | start | dev per epoch | best epoch | best | wall s |\n\
         |---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|\n",
    );
    for r in records {
        let per_epoch: Vec<String> = r
            .epochs
            .iter()
            .map(|e| {
                e.metrics
                    .get(&r.metric)
                    .map_or("–".into(), |v| format!("{:.1}", v * 100.0))
            })
            .collect();
        let label = if variants.len() > 1 {
            format!("{} · {}", method_label(r), training_variant(r))
        } else {
            method_label(r)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:e} | {:e} | {} | {} | {} | {:.4} | {:.0} |\n",
            r.config.task,
            label,
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
            per_epoch.join(", "),
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
