//! The result of a run, as JSON (stable field names, for scripts and the summary) and as a
//! table for people.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency percentiles of successful requests, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Counts and latencies of one operation (or of all, for the total).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    pub op: String,
    /// Successful operations in the measurement window.
    pub ok: u64,
    pub errors: u64,
    /// Successful operations per second.
    pub throughput: f64,
    pub latency: Latency,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixEntry {
    pub op: String,
    pub weight: u32,
}

/// Everything a run measured, with the settings needed to reproduce it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    /// Free-form name of what was measured (default: the target); the summary groups by it.
    pub label: String,
    pub target: String,
    pub endpoints: Vec<String>,
    pub protocol: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Requests per second asked for in open-loop mode.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub connections_per_endpoint: usize,
    pub keys: usize,
    pub plaintext_size: usize,
    pub mix: Vec<MixEntry>,
    pub warmup_s: f64,
    /// Length of the measurement window, from its start to the last answer.
    pub duration_s: f64,
    /// Unix time (seconds) when the run started.
    pub started_at: u64,
    /// Open-loop mode: requests the schedule called for in the window. Fewer were sent when
    /// every worker was busy (the delay is in the latencies; this shows what never left).
    pub scheduled: Option<u64>,
    pub total: OpStats,
    pub ops: Vec<OpStats>,
    /// Failed requests by HTTP status (`"404"`) or failure class (`"timeout"`, `"connect"`,
    /// `"tls"`, `"connection"`).
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each error class.
    pub error_samples: BTreeMap<String, String>,
    /// Creates and deletes (counted as successes) that were retried after an attempt whose
    /// answer was lost, and that found that attempt's effect: the key already there, or
    /// already gone. They happen when a node stops while writes it forwarded are in flight.
    #[serde(default)]
    pub replayed: u64,
    /// Every request used a new connection with a full TLS handshake.
    #[serde(default)]
    pub reconnect: bool,
    /// Second by second, warm-up included: what succeeded and failed (to see a fail-over).
    #[serde(default)]
    pub timeline: Vec<Tick>,
}

/// One second of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Seconds since the run started (warm-up included), at the end of this second.
    pub t_s: f64,
    pub ok: u64,
    pub errors: u64,
    /// Latency of the requests that succeeded in this second.
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        match (s.len() - i) % 3 {
            0 if i > 0 => out.push(','),
            _ => {}
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The human table: settings, one row per operation and a total, then the errors.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {} req/s", thousands(r)),
            None => "closed loop".to_owned(),
        };
        let mix: Vec<String> = self
            .mix
            .iter()
            .map(|m| format!("{}={}", m.op, m.weight))
            .collect();
        let _ = writeln!(
            out,
            "{} ({}) {}, {}, {} concurrent, {} connection(s) per endpoint, {} key(s), {} B plaintext",
            self.label,
            self.target,
            self.endpoints.join(","),
            self.protocol,
            self.concurrency,
            self.connections_per_endpoint,
            self.keys,
            self.plaintext_size,
        );
        let _ = writeln!(
            out,
            "mix {}, {mode}, {:.1} s measured after {:.1} s warm-up{}",
            mix.join(","),
            self.duration_s,
            self.warmup_s,
            if self.reconnect {
                ", a new connection (full TLS handshake) per request"
            } else {
                ""
            }
        );
        if let Some(s) = self.scheduled {
            let sent = self.total.ok + self.total.errors;
            let _ = writeln!(
                out,
                "schedule: {} of {} requests sent",
                thousands(sent as f64),
                thousands(s as f64)
            );
        }
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "ok", "ok/s", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let rows = if self.ops.len() > 1 {
            self.ops
                .iter()
                .chain(std::iter::once(&self.total))
                .collect()
        } else {
            vec![&self.total]
        };
        for s in rows {
            let _ = writeln!(
                out,
                "{:<14} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                s.op,
                s.ok,
                thousands(s.throughput),
                s.errors,
                ms(s.latency.p50_ms),
                ms(s.latency.p90_ms),
                ms(s.latency.p99_ms),
                ms(s.latency.p999_ms),
                ms(s.latency.max_ms),
            );
        }
        if self.replayed > 0 {
            let _ = writeln!(
                out,
                "retried creates/deletes that found their lost attempt's effect (ok): {}",
                self.replayed
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "errors:");
            for (kind, n) in &self.errors {
                let sample = self
                    .error_samples
                    .get(kind)
                    .map(String::as_str)
                    .unwrap_or("");
                let _ = writeln!(out, "  {kind:<10} {n:>8}  {sample}");
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn latency_from_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let l = Latency::from_histogram(&h);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
        assert_eq!(
            Latency::from_histogram(&Histogram::<u64>::new(3).unwrap()),
            Latency::default()
        );
    }
}
