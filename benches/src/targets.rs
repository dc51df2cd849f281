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
    /// loraxs's examples per second ÷ the reference's on the same
    /// workload at least `min` (`train-glue-*`: the same batches).
    ThroughputToReference {
        /// The workload.
        workload: String,
        /// The smallest ratio that meets the target.
        min: f64,
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
    /// Throughput of one variant of a paired row (`infer-bank`) relative
    /// to another variant of it, from their per-round times.
    VariantThroughput {
        row: String,
        workload: String,
        against: String,
        min: f64,
    },
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
            Check::ThroughputToReference { workload, min } => {
                let eps = |b: &str| find(rows, b, workload).and_then(|r| num(r, "examples_per_s"));
                let (ours, theirs) = (eps(backend)?, eps(reference)?);
                let ratio = ours / theirs;
                Some(format!(
                    "- {what}: {ratio:.2}× ({ours:.1} vs {theirs:.1} examples/s) — {}",
                    verdict(ratio >= *min)
                ))
            }
            Check::ChangeFromBase {
                workload,
                max_percent,
                max_abs_percent,
            } => {
                let bounded = max_percent.is_some() || max_abs_percent.is_some();
                let paired = find(rows, backend, "infer-compare").and_then(|r| r["variants"].as_array());
                let (d, detail, interval) = match paired {
                    Some(variants) => {
                        let variant = |w: &str| variants.iter().find(|v| v["workload"] == w);
                        let v = variant(workload)?;
                        let r = v["ratio_to_base"].as_f64()?;
                        let m = v["median_ms"].as_f64()?;
                        let base = variant("infer-base");
                        let base_ms = base.and_then(|v| v["median_ms"].as_f64()).unwrap_or(f64::NAN);
                        let times = |v: Option<&Value>| -> Vec<f64> {
                            v.and_then(|v| v["times_ms"].as_array())
                                .map(|t| t.iter().filter_map(Value::as_f64).collect())
                                .unwrap_or_default()
                        };
                        let ratios: Vec<f64> = times(Some(v))
                            .iter()
                            .zip(times(base))
                            .map(|(t, b)| t / b)
                            .collect();
                        let interval = median_interval(&ratios)
                            .map(|(lo, hi, level)| ((lo - 1.0) * 100.0, (hi - 1.0) * 100.0, level));
                        let ci = interval.map_or(String::new(), |(lo, hi, level)| {
                            format!("; {:.0}% CI of the median {lo:+.1}% to {hi:+.1}%", level * 100.0)
                        });
                        let detail =
                            format!(" (`infer-compare`, paired per round; {m:.0} vs {base_ms:.0} ms{ci})");
                        ((r - 1.0) * 100.0, detail, interval)
                    }
                    None => {
                        let (m, base) = (median(backend, workload)?, median(backend, "infer-base")?);
                        (
                            (m / base - 1.0) * 100.0,
                            format!(" ({m:.0} vs {base:.0} ms, separate processes: no interval)"),
                            None,
                        )
                    }
                };
                if !bounded {
                    return Some(format!("  - {what}: {d:+.1}%{detail}"));
                }
                let verdict = change_verdict(
                    d,
                    interval.map(|(lo, hi, _)| (lo, hi)),
                    *max_percent,
                    *max_abs_percent,
                );
                Some(format!("- {what}: {d:+.1}%{detail} — {verdict}"))
            }
            Check::VariantThroughput {
                row,
                workload,
                against,
                min,
            } => {
                let variants = find(rows, backend, row)?["variants"].as_array()?;
                let times = |w: &str| -> Option<Vec<f64>> {
                    let v = variants.iter().find(|v| v["workload"] == w)?;
                    Some(
                        v["times_ms"]
                            .as_array()?
                            .iter()
                            .filter_map(Value::as_f64)
                            .collect(),
                    )
                };
                let (ours, theirs) = (times(workload)?, times(against)?);
                let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| t / o).collect();
                if ratios.is_empty() {
                    return None;
                }
                let ratio = crate::workload::median(&ratios);
                Some(format!(
                    "- {what}: {ratio:.2}× the throughput of `{against}` (`{row}`, paired per round; {:.0} vs {:.0} ms) — {}",
                    crate::workload::median(&ours),
                    crate::workload::median(&theirs),
                    verdict(ratio >= *min)
                ))
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
                // The workload's own growth (peak − resident size after
                // set-up): an absolute peak would also count each tool's
                // runtime (Python and torch alone are ~800 MB).
                let growth = |b: &str, w: &str| {
                    let r = find(rows, b, w)?;
                    Some(num(r, "peak_rss_bytes")? - num(r, "setup_rss_bytes")?)
                };
                let ours = growth(backend, workload)?;
                let mut parts = Vec::new();
                let mut met = true;
                for w in workloads {
                    let other = growth(backend, w)?;
                    met &= ours < other;
                    parts.push(format!("{w} +{:.0} MiB", other / MIB));
                }
                if *with_reference && let Some(theirs) = growth(reference, workload) {
                    met &= ours < theirs;
                    parts.push(format!("PyTorch +{:.0} MiB", theirs / MIB));
                }
                Some(format!(
                    "- {what}: +{:.0} MiB over the set-up size vs {} — {}",
                    ours / MIB,
                    parts.join(", "),
                    verdict(met)
                ))
            }
        }
    }
}

/// A distribution-free confidence interval for the median of `values`:
/// the order statistics `(k, n + 1 − k)` with the largest `k` whose
/// coverage `1 − 2·P(Binomial(n, ½) < k)` is still at least 95 %. Returns
/// `(low, high, coverage)`, or `None` below 6 values (no such `k`).
pub fn median_interval(values: &[f64]) -> Option<(f64, f64, f64)> {
    let n = values.len();
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.len() != n {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    // P(X < k) for X ~ Binomial(n, 1/2), accumulated term by term.
    let mut below = 0.0; // P(X ≤ k − 1)
    let mut term = 0.5f64.powi(n as i32); // P(X = 0)
    let mut best = None;
    for k in 1..=n / 2 {
        below += term; // now P(X ≤ k − 1)
        term *= (n - (k - 1)) as f64 / k as f64; // P(X = k)
        let coverage = 1.0 - 2.0 * below;
        if coverage >= 0.95 {
            best = Some((sorted[k - 1], sorted[n - k], coverage));
        } else {
            break;
        }
    }
    best
}

/// met / missed / not resolved for a change of `d` percent whose confidence
/// interval is `interval` (percent): met when the whole interval satisfies
/// the bounds, missed when none of it does, not resolved otherwise. Without
/// an interval the point estimate decides.
fn change_verdict(
    d: f64,
    interval: Option<(f64, f64)>,
    max_percent: Option<f64>,
    max_abs: Option<f64>,
) -> String {
    let ok = |x: f64| max_percent.is_none_or(|m| x <= m) && max_abs.is_none_or(|m| x.abs() <= m);
    let Some((lo, hi)) = interval else {
        return verdict(ok(d));
    };
    if ok(lo) && ok(hi) {
        return verdict(true);
    }
    // The acceptable set is an interval too, so the CI misses it entirely
    // when it lies wholly above (or, for a magnitude bound, wholly below).
    let upper = max_percent
        .unwrap_or(f64::INFINITY)
        .min(max_abs.unwrap_or(f64::INFINITY));
    let lower = max_abs.map_or(f64::NEG_INFINITY, |m| -m);
    if lo > upper || hi < lower {
        return verdict(false);
    }
    "**not resolved**: the interval straddles the bound".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 20 paired rounds whose ratios to the base are `centre · (1 + k·step)`
    /// for k = −10..10 (without 0): the base at 100 ms throughout.
    fn variant(workload: &str, centre: f64, step: f64) -> Value {
        let times: Vec<f64> = (-10..=10)
            .filter(|&k| k != 0)
            .map(|k| 100.0 * centre * (1.0 + k as f64 * step))
            .collect();
        json!({"workload": workload, "median_ms": 100.0 * centre, "ratio_to_base": centre, "times_ms": times})
    }

    #[test]
    fn the_shipped_targets_parse_and_judge_rows() {
        let targets = Targets::shipped().unwrap();
        assert!(targets.targets.len() >= 5);
        let rows = [
            json!({"backend": "flex", "workload": "train-lora-xs", "median_ms": 900.0,
                   "peak_rss_bytes": 1100.0 * MIB, "setup_rss_bytes": 1000.0 * MIB}),
            json!({"backend": "torch-cpu", "workload": "train-lora-xs", "median_ms": 1000.0,
                   "peak_rss_bytes": 1050.0 * MIB, "setup_rss_bytes": 900.0 * MIB}),
            json!({"backend": "flex", "workload": "train-full", "median_ms": 1.0,
                   "peak_rss_bytes": 1200.0 * MIB, "setup_rss_bytes": 1000.0 * MIB}),
            json!({"backend": "flex", "workload": "adapter-save", "median_ms": 1.0, "file_bytes": 2000, "values": 256}),
            json!({"backend": "flex", "workload": "infer-compare", "median_ms": 1.0, "variants": [
                variant("infer-base", 1.0, 0.0),
                variant("infer-lora-xs", 1.03, 0.001),
                variant("infer-lora-xs-merged", 1.002, 0.004),
            ]}),
            json!({"backend": "flex", "workload": "train-glue-sst2", "median_ms": 1.0, "examples_per_s": 40.0}),
            json!({"backend": "torch-cpu", "workload": "train-glue-sst2", "median_ms": 1.0, "examples_per_s": 80.0}),
            json!({"backend": "flex", "workload": "train-glue-mrpc", "median_ms": 1.0, "examples_per_s": 30.0}),
            json!({"backend": "torch-cpu", "workload": "train-glue-mrpc", "median_ms": 1.0, "examples_per_s": 25.0}),
        ];
        let rows: Vec<&Value> = rows.iter().collect();
        let lines = targets.lines(&rows, "flex", "torch-cpu");
        let text = lines.join("\n");
        // 0.9× PyTorch against ≤ 0.8× (missed) and ≤ 1.0× (met).
        let step = |needle: &str| lines.iter().find(|l| l.contains(needle)).unwrap();
        assert!(
            step("≤ 0.8×").contains("0.90× (900 vs 1000 ms) — **missed**"),
            "{text}"
        );
        assert!(
            step("≤ 1.0× PyTorch (").contains("0.90× (900 vs 1000 ms) — **met**"),
            "{text}"
        );
        // Examples/s: half of PyTorch's on SST-2, 1.2× on MRPC.
        assert!(
            step("SST-2").contains("0.50× (40.0 vs 80.0 examples/s) — **missed**"),
            "{text}"
        );
        assert!(
            step("MRPC").contains("1.20× (30.0 vs 25.0 examples/s) — **met**"),
            "{text}"
        );
        // +0.2 % merged against ±1 %, but the interval reaches past +1 %.
        let merged = lines.iter().find(|l| l.contains("within 1%")).unwrap();
        assert!(
            merged.contains("+0.2%") && merged.contains("**not resolved**"),
            "{merged}"
        );
        // +3 % unmerged with a tight interval against ≤ 5 %.
        let unmerged = lines.iter().find(|l| l.contains("overhead ≤ 5%")).unwrap();
        assert!(
            unmerged.contains("+3.0%") && unmerged.ends_with("— **met**"),
            "{unmerged}"
        );
        // 2000 B ≤ 256 × 4 + 1024 = 2048: met.
        assert!(
            text.contains("2000 B for 256 values (limit 2048 B) — **met**"),
            "{text}"
        );
        // Growth, not absolute peaks: +100 MiB against full's +200 and
        // PyTorch's +150 (whose absolute peak, 1050 MiB, is lower).
        assert!(
            text.contains("+100 MiB over the set-up size vs train-full +200 MiB, PyTorch +150 MiB — **met**"),
            "{text}"
        );
        // SVD targets need rows that did not run: left out.
        assert!(!text.contains("SVD"), "{text}");
    }

    #[test]
    fn the_median_interval_uses_binomial_order_statistics() {
        // n = 20: P(X ≤ 5) = 0.0207, P(X ≤ 6) = 0.0577 → k = 6, coverage 95.9 %.
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let (lo, hi, coverage) = median_interval(&values).unwrap();
        assert_eq!((lo, hi), (6.0, 15.0));
        assert!((coverage - 0.958_610_5).abs() < 1e-6, "{coverage}");
        // n = 10: P(X ≤ 1) = 0.0107, P(X ≤ 2) = 0.0547 → k = 2, 97.9 %.
        let (lo, hi, _) = median_interval(&(1..=10).rev().map(f64::from).collect::<Vec<_>>()).unwrap();
        assert_eq!((lo, hi), (2.0, 9.0));
        // Five values cannot give 95 % (1 − 2/32 = 93.75 %).
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
        assert_eq!(
            median_interval(&[1.0; 6]).map(|(l, h, _)| (l, h)),
            Some((1.0, 1.0))
        );
        assert_eq!(median_interval(&[1.0, 2.0, f64::NAN, 4.0, 5.0, 6.0, 7.0]), None);
    }

    #[test]
    fn change_verdicts_follow_the_interval() {
        let abs1 = |d, ci| change_verdict(d, ci, None, Some(1.0));
        assert_eq!(abs1(0.2, Some((-0.5, 0.8))), "**met**");
        assert!(abs1(0.2, Some((-3.0, 3.5))).starts_with("**not resolved**"));
        assert_eq!(abs1(2.5, Some((1.5, 3.0))), "**missed**");
        assert_eq!(abs1(-2.5, Some((-3.0, -1.5))), "**missed**");
        assert_eq!(abs1(0.5, None), "**met**");
        let max5 = |d, ci| change_verdict(d, ci, Some(5.0), None);
        assert_eq!(max5(-20.0, Some((-30.0, -10.0))), "**met**", "faster is fine");
        assert!(max5(4.0, Some((3.0, 6.0))).starts_with("**not resolved**"));
        assert_eq!(max5(8.0, Some((6.0, 9.0))), "**missed**");
    }
}
