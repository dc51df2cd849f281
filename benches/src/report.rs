//! The markdown table of `cargo xtask bench`: figures per workload, the
//! loraxs / PyTorch ratios, and every target of `benches/targets.json`
//! with its figure and verdict.

use std::fmt::Write;

use serde_json::Value;

use crate::runner::BenchArgs;
use crate::targets::Targets;

const MIB: f64 = (1u64 << 20) as f64;

fn find<'a>(rows: &[&'a Value], backend: &str, workload: &str) -> Option<&'a Value> {
    rows.iter()
        .copied()
        .find(|r| r["backend"] == backend && r["workload"] == workload)
}

fn f(r: &Value, key: &str) -> f64 {
    r[key].as_f64().unwrap_or(f64::NAN)
}

fn timing(r: Option<&Value>) -> String {
    match r {
        Some(r) => format!(
            "{:.1} ({:.1}–{:.1})",
            f(r, "median_ms"),
            f(r, "min_ms"),
            f(r, "max_ms")
        ),
        None => "–".into(),
    }
}

fn memory(r: Option<&Value>) -> String {
    match r {
        Some(r) => format!(
            "{:.0} (+{:.0})",
            f(r, "peak_rss_bytes") / MIB,
            (f(r, "peak_rss_bytes") - f(r, "setup_rss_bytes")).max(0.0) / MIB
        ),
        None => "–".into(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// The report for `backend` against the reference rows of `reference`.
pub fn markdown(
    backend: &str,
    reference: &str,
    rows: &[&Value],
    args: &BenchArgs,
    minutes: f64,
    targets: &Targets,
) -> String {
    let mut md = String::new();
    let versions = rows
        .iter()
        .find(|r| r["tool"] == "pytorch")
        .map(|r| {
            let v = &r["versions"];
            format!(
                "torch {}, transformers {}, peft {}, scikit-learn {}",
                v["torch"].as_str().unwrap_or("?"),
                v["transformers"].as_str().unwrap_or("?"),
                v["peft"].as_str().unwrap_or("?"),
                v["sklearn"].as_str().unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "not run".into());
    // Repetitions as recorded in each row (reruns may use other counts).
    let mut reps: Vec<(usize, Vec<&str>)> = Vec::new();
    for r in rows {
        let n = r["times_ms"].as_array().map_or(0, Vec::len);
        let w = r["workload"].as_str().unwrap_or("?");
        match reps.iter_mut().find(|(m, _)| *m == n) {
            Some((_, ws)) if !ws.contains(&w) => ws.push(w),
            Some(_) => {}
            None => reps.push((n, vec![w])),
        }
    }
    reps.sort_by_key(|(_, ws)| std::cmp::Reverse(ws.len()));
    let main_reps = reps.first().map_or(0, |(n, _)| *n);
    let other_reps = reps
        .iter()
        .skip(1)
        .map(|(n, ws)| format!("{n} for {}", ws.join(", ")))
        .collect::<Vec<_>>();
    let other_reps = if other_reps.is_empty() {
        String::new()
    } else {
        format!(" ({})", other_reps.join("; "))
    };
    let duration = if minutes.is_finite() {
        format!(" Latest invocation: {minutes:.1} min.")
    } else {
        String::new()
    };
    let glue = if rows.iter().any(|r| r["examples_per_s"].is_number()) {
        format!(
            "`train-glue-*` rows are different: one epoch of loraxs's GLUE trainer over {} real \
             training examples (LoRA-XS r=16, batches of 32 grouped by length, padded, dropout on), \
             PyTorch training on exactly the same batches (written by `loraxs-workload --prepare`); \
             their times are per step after the warm-up steps, and their ratio is that of the two \
             epochs' times. ",
            crate::workload::GLUE_EXAMPLES
        )
    } else {
        String::new()
    };
    let decoder = if rows
        .iter()
        .any(|r| r["workload"].as_str().is_some_and(|w| w.contains("-decoder-")))
    {
        format!(
            "`*-decoder-*` rows run SmolLM2-135M-Instruct (30 layers, hidden 576; loraxs from the \
             GGUF Q4_1 file, PyTorch from the same file through transformers' GGUF loader, both \
             dequantised to f32) at batch {} × {} tokens: a LoRA-XS r=64 training step on the \
             seven decoder targets (next-token loss on every position), and greedy generation of \
             {} tokens per prompt with the KV cache, base and with an unmerged LoRA-XS adapter \
             (PyTorch: peft, `model.generate`). ",
            args.decoder_batch,
            args.decoder_seq,
            crate::workload::NEW_TOKENS
        )
    } else {
        String::new()
    };
    let _ = writeln!(md, "# `cargo xtask bench`: loraxs on `{backend}` vs PyTorch\n");
    let _ = writeln!(
        md,
        "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), batch {} × {} tokens (fixed length), \
         {} threads for both tools, {} warm-up + {main_reps} timed repetitions per workload{other_reps}, each \
         workload in its own process, loraxs and PyTorch interleaved workload by workload. \
         {glue}{decoder}Machine: {}. Reference: {versions} ({reference}).{duration}\n",
        args.batch,
        args.seq,
        args.threads,
        args.warmup,
        machine()
    );
    let mut invocations: Vec<u64> = rows
        .iter()
        .map(|r| r["invocation"].as_u64().unwrap_or(0))
        .collect();
    invocations.sort_unstable();
    invocations.dedup();
    if invocations.len() > 1 {
        let latest = *invocations.last().expect("non-empty");
        let mut earlier: Vec<&str> = rows
            .iter()
            .filter(|r| r["invocation"].as_u64().unwrap_or(0) < latest)
            .filter_map(|r| r["workload"].as_str())
            .collect();
        earlier.dedup();
        let _ = writeln!(
            md,
            "Rows come from {} invocations (`--workloads` reruns replace their rows); measured before the latest one: {}.\n",
            invocations.len(),
            earlier.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "Times in ms: median (min–max). Memory: peak resident MiB during warm-up and timed \
         repetitions (+ growth over the resident size after set-up, i.e. the workload's own \
         transient memory). Raw figures: `bench-{backend}.json`.\n"
    );
    let _ = writeln!(
        md,
        "| workload | loraxs {backend} | PyTorch | loraxs / PyTorch | loraxs peak MiB | PyTorch peak MiB | notes |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|");
    let mut workloads: Vec<&str> = Vec::new();
    for r in rows {
        if let Some(w) = r["workload"].as_str()
            && !workloads.contains(&w)
        {
            workloads.push(w);
        }
    }
    for w in &workloads {
        let ours = find(rows, backend, w);
        let theirs = find(rows, reference, w);
        let throughput = |r: Option<&Value>| r.and_then(|r| r["examples_per_s"].as_f64());
        let ratio = match (ours, theirs) {
            // Real-data epochs: both tools ran the same steps, so the ratio
            // of their total times is the inverse ratio of examples/s.
            (Some(_), Some(_)) if throughput(ours).is_some() && throughput(theirs).is_some() => format!(
                "{:.2} (time of the epoch)",
                throughput(theirs).unwrap_or(f64::NAN) / throughput(ours).unwrap_or(f64::NAN)
            ),
            (Some(a), Some(b)) => format!("{:.2}", f(a, "median_ms") / f(b, "median_ms")),
            _ => "–".into(),
        };
        let mut notes = Vec::new();
        for (who, r) in [("loraxs", ours), ("PyTorch", theirs)] {
            if let Some(r) = r
                && let Some(flops) = r["flops"].as_f64()
            {
                notes.push(format!(
                    "{who}: {:.1} GFLOP, {:.1} GFLOP/s",
                    flops / 1e9,
                    flops / f(r, "median_ms") / 1e6
                ));
            }
            if let Some(r) = r
                && let Some(tps) = r["tokens_per_s"].as_f64()
            {
                notes.push(format!("{who}: {tps:.1} tokens/s"));
            }
            if let Some(r) = r
                && let Some(eps) = r["examples_per_s"].as_f64()
            {
                notes.push(format!(
                    "{who}: {eps:.1} examples/s over {} examples, mean loss {:.3}",
                    r["examples"].as_u64().unwrap_or(0),
                    f(r, "mean_loss")
                ));
            }
        }
        if let Some(variants) = ours.and_then(|r| r["variants"].as_array()) {
            for v in variants {
                let mut note = format!(
                    "{} {:.1} ms, {:.3}× base",
                    v["workload"].as_str().unwrap_or("?"),
                    v["median_ms"].as_f64().unwrap_or(f64::NAN),
                    v["ratio_to_base"].as_f64().unwrap_or(f64::NAN)
                );
                if let (Some(rate), Some(lat)) = (v["requests_per_s"].as_f64(), v["latency_ms"].as_array()) {
                    note.push_str(&format!(
                        " ({rate:.1} requests/s, p50 {:.0} ms, p99 {:.0} ms)",
                        lat[0].as_f64().unwrap_or(f64::NAN),
                        lat[1].as_f64().unwrap_or(f64::NAN)
                    ));
                }
                notes.push(note);
            }
        }
        if let Some(s) = ours.map(|r| &r["serve"]).filter(|s| s.is_object()) {
            let g = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
            notes.push(format!(
                "{} adapters loaded over HTTP at {:.0}/s; per adapter {:.1} KiB in the bank + {:.1} KiB of head (a LoRA r=8 adapter on the same modules holds {:.1} KiB); soak: {} requests, {} errors, {} adapter removals/loads under traffic, p99 {:.0} ms",
                g("adapters"),
                g("loads_per_s"),
                g("bank_bytes_per_adapter") / 1024.0,
                g("head_bytes_per_adapter") / 1024.0,
                g("lora_r8_bytes_per_adapter") / 1024.0,
                g("soak_requests"),
                g("soak_errors"),
                g("soak_churn"),
                g("soak_p99_ms")
            ));
        }
        if let Some(s) = ours.map(|r| &r["scale"]).filter(|s| s.is_object()) {
            let rate = |i: usize| s["examples_per_s"][i].as_f64().unwrap_or(f64::NAN);
            notes.push(format!(
                "{:.1} examples/s with 1 peer, {:.1} with 2 ({:.2}×)",
                rate(0),
                rate(1),
                rate(1) / rate(0)
            ));
            for c in s["allreduce"].as_array().into_iter().flatten() {
                notes.push(format!(
                    "all-reduce of one step, 2 peers, {}: {} values in {} tensors, {:.1} KiB per peer, {:.2} ms",
                    c["method"].as_str().unwrap_or("?"),
                    c["values"].as_u64().unwrap_or(0),
                    c["tensors"].as_u64().unwrap_or(0),
                    c["bytes_per_peer"].as_f64().unwrap_or(f64::NAN) / 1024.0,
                    c["median_ms"].as_f64().unwrap_or(f64::NAN)
                ));
            }
        }
        for (who, r) in [("loraxs", ours), ("PyTorch", theirs)] {
            if let Some(r) = r {
                if let Some(v) = r["values"].as_u64() {
                    let what = if w.starts_with("train") {
                        "trainable"
                    } else {
                        "stored"
                    };
                    notes.push(format!("{who}: {v} {what} values"));
                }
                if let Some(b) = r["file_bytes"].as_u64() {
                    notes.push(format!("{who}: file {b} B"));
                }
            }
        }
        let _ = writeln!(
            md,
            "| {w} | {} | {} | {ratio} | {} | {} | {} |",
            timing(ours),
            timing(theirs),
            memory(ours),
            memory(theirs),
            notes.join("; ")
        );
    }

    let _ = writeln!(md, "\n## Targets (`benches/targets.json`)\n");
    for line in targets.lines(rows, backend, reference) {
        let _ = writeln!(md, "{line}");
    }
    md
}
