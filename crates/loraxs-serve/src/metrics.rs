//! Counters for `GET /metrics` in Prometheus' text format.
//!
//! A few atomics and one mutex-guarded map rendered by hand: the format is
//! a dozen lines of text, and a metrics crate (with its global registry and
//! exporter) would be more code to wire than this is to write.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's counters and gauges.
#[derive(Default)]
pub struct Metrics {
    /// Requests answered, by route and status.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Latency of answered requests, by route.
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Batches the model ran.
    pub batches: AtomicU64,
    /// Rows (texts) the model ran, padding rows excluded.
    pub rows: AtomicU64,
    /// Tokens the model ran, padding excluded.
    pub tokens: AtomicU64,
    /// Tokens a decoder generated (stop tokens excluded).
    pub generated: AtomicU64,
    /// Distinct adapters summed over batches (divide by `batches` for the
    /// mean number of adapters mixed in one batch).
    pub batch_adapters: AtomicU64,
    /// Requests waiting for the model.
    pub queued: AtomicI64,
    /// Adapters loaded.
    pub adapters: AtomicI64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        *self.requests.lock().unwrap().entry((route, status)).or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap();
        let h = latency.entry(route).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Requests answered with `status` on `route` so far.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|((r, s), _)| *r == route && *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP loraxs_requests_total Requests answered, by route and HTTP status."
        );
        let _ = writeln!(out, "# TYPE loraxs_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "loraxs_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP loraxs_request_seconds Time from receiving a request to answering it."
        );
        let _ = writeln!(out, "# TYPE loraxs_request_seconds histogram");
        for (route, h) in self.latency.lock().unwrap().iter() {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "loraxs_request_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "loraxs_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "loraxs_request_seconds_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(
                out,
                "loraxs_request_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let counters = [
            ("loraxs_batches_total", "Batches the model ran.", &self.batches),
            ("loraxs_rows_total", "Texts the model ran.", &self.rows),
            (
                "loraxs_tokens_total",
                "Tokens the model ran, padding excluded.",
                &self.tokens,
            ),
            (
                "loraxs_generated_tokens_total",
                "Tokens a decoder generated.",
                &self.generated,
            ),
            (
                "loraxs_batch_adapters_total",
                "Distinct adapters per batch, summed over batches.",
                &self.batch_adapters,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let gauges = [
            (
                "loraxs_queued_requests",
                "Requests waiting for the model.",
                &self.queued,
            ),
            ("loraxs_adapters_loaded", "Adapters in the bank.", &self.adapters),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("/v1/classify", 200, Duration::from_millis(3));
        m.observe("/v1/classify", 200, Duration::from_millis(30));
        m.observe("/v1/classify", 404, Duration::from_micros(10));
        let text = m.render();
        assert!(text.contains("loraxs_requests_total{route=\"/v1/classify\",status=\"200\"} 2"));
        assert!(text.contains("loraxs_requests_total{route=\"/v1/classify\",status=\"404\"} 1"));
        // Buckets are cumulative: 0.005 holds the 10 µs and 3 ms requests.
        assert!(text.contains("loraxs_request_seconds_bucket{route=\"/v1/classify\",le=\"0.005\"} 2"));
        assert!(text.contains("loraxs_request_seconds_bucket{route=\"/v1/classify\",le=\"0.05\"} 3"));
        assert!(text.contains("loraxs_request_seconds_count{route=\"/v1/classify\"} 3"));
        assert_eq!(m.requests("/v1/classify", 200), 2);
    }
}
