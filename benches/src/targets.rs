//! The acceptance targets of `cargo xtask bench`, read from
//! `benches/targets.json`: data, so a new target or a changed threshold is
//! an edit to that file. Each target is a kind of check over the rows one
//! invocation measured; the verdict is **met**, **missed**, or — for
//! changes smaller than the machine's measured noise — **not resolved**.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

const MIB: f64 = (1u64 << 20) as f64;

/// The targets file.
#[derive(Debug, Clone, Deserialize)]
pub struct Targets {
    /// What the file is for.
    #[serde(rename = "_doc", default)]
    pub doc: String,
    /// The targets, in report order.
    pub targets: Vec<Target>,
}

/// One target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The issue that set it.
    #[serde(default)]
    pub issue: Option<u32>,
    /// The target in words, as the report prints it.
    pub what: String,
    /// How it is judged.
    pub check: Check,
}

/// The kinds of check.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// loraxs's median time ÷ the reference's (`reference_workload`, else
    /// the same workload) at most `max`.
    RatioToReference {
        /// The loraxs workload.
        workload: String,
        /// The reference's workload, when it differs.
        #[serde(default)]
        reference_workload: Option<String>,
        /// The largest ratio that meets the target.
        max: f64,
    },
    /// The change of `workload`'s time from `infer-base`, in percent:
    /// paired per round from `infer-compare` when it ran (with the spread
    /// of the paired ratios as the noise), else from separate processes.
    /// Without a bound the line is information only.
    ChangeFromBase {
        /// The variant.
        workload: String,
        /// The change may not exceed this (slower by at most).
        #[serde(default)]
        max_percent: Option<f64>,
        /// The change's magnitude may not exceed this.
        #[serde(default)]
        max_abs_percent: Option<f64>,
    },
    /// The file `workload` wrote is at most `values × bytes_per_value +
    /// overhead_bytes`.
    FileSize {
        /// The workload that saves.
        workload: String,
        /// Bytes per stored value.
        bytes_per_value: u64,
        /// Header and metadata allowance.
        overhead_bytes: u64,
    },
    /// `workload`'s peak memory is below that of each of `workloads` (and
    /// of the reference's same workload when `reference`).
    PeakBelow {
        /// The workload.
        workload: String,
        /// loraxs workloads it must stay below.
        workloads: Vec<String>,
        /// Also below the reference's peak for the same workload.
        #[serde(default)]
        reference: bool,
    },
}

impl Targets {
    /// Reads and parses the targets file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The shipped targets (`benches/targets.json`).
    pub fn shipped() -> Result<Self, String> {
        Self::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("targets.json"))
    }

    /// One markdown line per target the rows can judge (a target whose
    /// workloads did not run is left out).
    pub fn lines(&self, rows: &[&Value], backend: &str, reference: &str) -> Vec<String> {
        self.targets
            .iter()
            .filter_map(|t| t.line(rows, backend, reference))
            .collect()
    }
}

fn find<'a>(rows: &[&'a Value], backend: &str, workload: &str) -> Option<&'a Value> {
    rows.iter()
        .copied()
        .find(|r| r["backend"] == backend && r["workload"] == workload)
}

fn num(r: &Value, key: &str) -> Option<f64> {
    r[key].as_f64()
}

fn verdict(met: bool) -> String {
    if met { "**met**" } else { "**missed**" }.to_string()
}

impl Target {
    /// The report line, or `None` when the rows lack what it needs.
    pub fn line(&self, rows: &[&Value], backend: &str, reference: &str) -> Option<String> {
        let what = &self.what;
        let median = |b: &str, w: &str| find(rows, b, w).and_then(|r| num(r, "median_ms"));
        match &self.check {
            Check::RatioToReference {
                workload,
                reference_workload,
                max,
            } => {
                let theirs_w = reference_workload.as_deref().unwrap_or(workload);
                let (ours, theirs) = (median(backend, workload)?, median(reference, theirs_w)?);
                let ratio = ours / theirs;
                Some(format!(
                    "- {what}: {ratio:.2}× ({ours:.0} vs {theirs:.0} ms) — {}",
                    verdict(ratio <= *max)
                ))
            }
            Check::ChangeFromBase {
                workload,
                max_percent,
                max_abs_percent,
            } => {
                let ok = |d: f64| {
                    max_percent.is_none_or(|m| d <= m) && max_abs_percent.is_none_or(|m| d.abs() <= m)
                };
                let bounded = max_percent.is_some() || max_abs_percent.is_some();
                let paired = find(rows, backend, "infer-compare").and_then(|r| r["variants"].as_array());
                let (d, detail, noise) = match paired {
                    Some(variants) => {
                        let variant = |w: &str| variants.iter().find(|v| v["workload"] == w);
                        let v = variant(workload)?;
                        let r = v["ratio_to_base"].as_f64()?;
                        let m = v["median_ms"].as_f64()?;
                        let base = variant("infer-base")
                            .and_then(|v| v["median_ms"].as_f64())
                            .unwrap_or(f64::NAN);
                        let (q1, q3) = v["ratio_quartiles"].as_array().map_or((r, r), |q| {
                            (q[0].as_f64().unwrap_or(r), q[1].as_f64().unwrap_or(r))
                        });
                        let detail = format!(
                            " (`infer-compare`, paired per round; {m:.0} vs {base:.0} ms; per-round ratios' quartiles {q1:.3}–{q3:.3})"
                        );
                        ((r - 1.0) * 100.0, detail, Some((q3 - q1) / 2.0 * 100.0))
                    }
                    None => {
                        let (m, base) = (median(backend, workload)?, median(backend, "infer-base")?);
                        (
                            (m / base - 1.0) * 100.0,
                            format!(" ({m:.0} vs {base:.0} ms)"),
                            None,
                        )
                    }
                };
                if !bounded {
                    return Some(format!("  - {what}: {d:+.1}%{detail}"));
                }
                // Identical work measured twice differs by the spread of the
                // paired ratios; a deviation inside it is not resolved.
                let verdict = match noise {
                    _ if ok(d) => verdict(true),
                    Some(noise) if ok(d - noise.copysign(d)) || d.abs() <= noise => {
                        format!("**not resolved**: inside this machine's noise (±{noise:.1}%)")
                    }
                    _ => verdict(false),
                };
                Some(format!("- {what}: {d:+.1}%{detail} — {verdict}"))
            }
            Check::FileSize {
                workload,
                bytes_per_value,
                overhead_bytes,
            } => {
                let save = find(rows, backend, workload)?;
                let bytes = save["file_bytes"].as_u64()?;
                let values = save["values"].as_u64().unwrap_or(0);
                let limit = values * bytes_per_value + overhead_bytes;
                let mut line = format!(
                    "- {what}: {bytes} B for {values} values (limit {limit} B) — {}",
                    verdict(bytes <= limit)
                );
                if let Some(theirs) = find(rows, reference, workload).and_then(|r| r["file_bytes"].as_u64()) {
                    line.push_str(&format!(
                        "\n  - PyTorch/peft's file for the same adapter: {theirs} B ({:.0}× larger)",
                        theirs as f64 / bytes as f64
                    ));
                }
                Some(line)
            }
            Check::PeakBelow {
                workload,
                workloads,
                reference: with_reference,
            } => {
                let peak = |b: &str, w: &str| find(rows, b, w).and_then(|r| num(r, "peak_rss_bytes"));
                let ours = peak(backend, workload)?;
                let mut parts = Vec::new();
                let mut met = true;
                for w in workloads {
                    let other = peak(backend, w)?;
                    met &= ours < other;
                    parts.push(format!("{w} {:.0} MiB", other / MIB));
                }
                if *with_reference && let Some(theirs) = peak(reference, workload) {
                    met &= ours < theirs;
                    parts.push(format!("PyTorch {:.0} MiB", theirs / MIB));
                }
                Some(format!(
                    "- {what}: {:.0} MiB vs {} — {}",
                    ours / MIB,
                    parts.join(", "),
                    verdict(met)
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_targets_parse_and_judge_rows() {
        let targets = Targets::shipped().unwrap();
        assert!(targets.targets.len() >= 5);
        let rows = [
            json!({"backend": "flex", "workload": "train-lora-xs", "median_ms": 900.0, "peak_rss_bytes": 100.0 * MIB}),
            json!({"backend": "torch-cpu", "workload": "train-lora-xs", "median_ms": 1000.0, "peak_rss_bytes": 300.0 * MIB}),
            json!({"backend": "flex", "workload": "train-full", "median_ms": 1.0, "peak_rss_bytes": 200.0 * MIB}),
            json!({"backend": "flex", "workload": "adapter-save", "median_ms": 1.0, "file_bytes": 2000, "values": 256}),
            json!({"backend": "flex", "workload": "infer-compare", "median_ms": 1.0, "variants": [
                {"workload": "infer-base", "median_ms": 100.0, "ratio_to_base": 1.0},
                {"workload": "infer-lora-xs", "median_ms": 103.0, "ratio_to_base": 1.03, "ratio_quartiles": [1.0, 1.06]},
                {"workload": "infer-lora-xs-merged", "median_ms": 102.0, "ratio_to_base": 1.02, "ratio_quartiles": [0.97, 1.05]}
            ]}),
        ];
        let rows: Vec<&Value> = rows.iter().collect();
        let lines = targets.lines(&rows, "flex", "torch-cpu");
        let text = lines.join("\n");
        // 0.9× PyTorch against ≤ 0.8×.
        assert!(text.contains("0.90× (900 vs 1000 ms) — **missed**"), "{text}");
        // +2 % merged against ±1 %, with ±4 % paired noise.
        assert!(
            text.contains("+2.0%") && text.contains("**not resolved**"),
            "{text}"
        );
        // +3 % unmerged against ≤ 5 %.
        assert!(text.contains("+3.0%") && text.contains("— **met**"), "{text}");
        // 2000 B > 256 × 4 + 1024 = 2048? No: 2000 ≤ 2048, met.
        assert!(
            text.contains("2000 B for 256 values (limit 2048 B) — **met**"),
            "{text}"
        );
        assert!(
            text.contains("100 MiB vs train-full 200 MiB, PyTorch 300 MiB — **met**"),
            "{text}"
        );
        // SVD targets need rows that did not run: left out.
        assert!(!text.contains("SVD"), "{text}");
    }
}
