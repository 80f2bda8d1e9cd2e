//! KES's Prometheus metric families, exactly: the Go client's `Metrics()` rejects any family
//! other than the three request counters that has more or fewer than one series, so nothing may
//! be added here (cluster metrics live on their own endpoint).
//!
//! The exposition is written by hand in text format 0.0.4 because KES's counter names carry no
//! `_total` suffix, which OpenMetrics encoders would add. Counting is lock-free: the hot path
//! does a few relaxed atomic adds.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of `kes_http_response_time`, in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];

pub struct Metrics {
    by_code: Vec<AtomicU64>,
    active: AtomicI64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    pub error_events: AtomicU64,
    pub audit_events: AtomicU64,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            by_code: (0..600).map(|_| AtomicU64::new(0)).collect(),
            active: AtomicI64::new(0),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            error_events: AtomicU64::new(0),
            audit_events: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// Decrements the in-flight gauge when a request ends, however it ends.
pub struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn begin(&self) -> ActiveGuard<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }

    pub fn observe(&self, status: u16, elapsed: Duration) {
        if let Some(c) = self.by_code.get(status as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let classes = [
            ("kes_http_request_success", "Number of requests that have been served successfully.", 200..300),
            ("kes_http_request_error", "Number of request that failed due to some error. (HTTP 4xx status code)", 400..500),
            ("kes_http_request_failure", "Number of request that failed due to some internal failure. (HTTP 5xx status code)", 500..600),
        ];
        for (name, help, range) in classes {
            let series: Vec<(usize, u64)> = range
                .filter_map(|c| {
                    let v = self.by_code.get(c)?.load(Ordering::Relaxed);
                    (v > 0).then_some((c, v))
                })
                .collect();
            // A labelled family appears only after its first observation, as in Go.
            if series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (code, v) in series {
                let _ = writeln!(out, "{name}{{code=\"{code}\"}} {v}");
            }
        }
        gauge(
            &mut out,
            "kes_http_request_active",
            "Number of active requests that are not finished, yet.",
            self.active.load(Ordering::Relaxed) as f64,
        );
        let _ = writeln!(
            out,
            "# HELP kes_http_response_time Histogram of request response times spawning from 10ms to 10s.\n# TYPE kes_http_response_time histogram"
        );
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "kes_http_response_time_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "kes_http_response_time_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "kes_http_response_time_sum {sum}");
        let _ = writeln!(out, "kes_http_response_time_count {count}");
        counter(
            &mut out,
            "kes_log_error_events",
            "Number of error log events written to error log targets.",
            self.error_events.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "kes_log_audit_events",
            "Number of audit log events written to audit log targets.",
            self.audit_events.load(Ordering::Relaxed),
        );
        let up = (self.uptime().as_millis() / 10) as f64 / 100.0;
        gauge(
            &mut out,
            "kes_system_up_time",
            "The time the server has been up and running in seconds.",
            up,
        );
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        gauge(
            &mut out,
            "kes_system_num_cpu",
            "The number of logical CPUs available on the system.",
            cpus,
        );
        gauge(
            &mut out,
            "kes_system_num_cpu_used",
            "The number of logical CPUs usable by the server.",
            cpus,
        );
        let proc = ProcStats::read();
        gauge(
            &mut out,
            "kes_system_num_threads",
            "The number of concurrent threads.",
            proc.threads as f64,
        );
        gauge(
            &mut out,
            "kes_system_mem_heap_used",
            "The number of bytes currently allocated on the heap.",
            proc.resident as f64,
        );
        gauge(
            &mut out,
            "kes_system_mem_heap_objects",
            "The number of objects currently allocated on the heap.",
            0.0,
        );
        gauge(
            &mut out,
            "kes_system_mem_stack_used",
            "The number of bytes currently used on the stack.",
            proc.stack as f64,
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

/// Process figures from `/proc/self/status` (zero where unavailable).
#[derive(Default)]
pub struct ProcStats {
    pub threads: u64,
    /// Resident set size in bytes; the closest analogue of Go's heap in use.
    pub resident: u64,
    pub stack: u64,
}

impl ProcStats {
    pub fn read() -> Self {
        let mut s = Self::default();
        let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
            return s;
        };
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "Threads:" => s.threads = v,
                "VmRSS:" => s.resident = v * 1024,
                "VmStk:" => s.stack = v * 1024,
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_one_series_except_request_counters() {
        let m = Metrics::default();
        let text = m.render();
        assert!(
            !text.contains("kes_http_request_success"),
            "no series before first observation"
        );
        m.observe(200, Duration::from_millis(3));
        m.observe(404, Duration::from_millis(30));
        m.observe(502, Duration::from_secs(2));
        let text = m.render();
        assert!(text.contains("kes_http_request_success{code=\"200\"} 1"));
        assert!(text.contains("kes_http_request_error{code=\"404\"} 1"));
        assert!(text.contains("kes_http_request_failure{code=\"502\"} 1"));
        assert!(text.contains("kes_http_response_time_bucket{le=\"0.01\"} 1"));
        assert!(text.contains("kes_http_response_time_bucket{le=\"3\"} 3"));
        assert!(text.contains("kes_http_response_time_count 3"));
        for fam in [
            "kes_http_request_active",
            "kes_log_error_events",
            "kes_log_audit_events",
            "kes_system_up_time",
            "kes_system_num_cpu",
            "kes_system_num_cpu_used",
            "kes_system_num_threads",
            "kes_system_mem_heap_used",
            "kes_system_mem_heap_objects",
            "kes_system_mem_stack_used",
        ] {
            let n = text
                .lines()
                .filter(|l| !l.starts_with('#') && l.split(' ').next() == Some(fam))
                .count();
            assert_eq!(n, 1, "{fam} must have exactly one series");
        }
    }
}
