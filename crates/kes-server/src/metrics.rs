//! KES's Prometheus metric families, exactly: the Go client's `Metrics()` rejects any family
//! other than the three request counters that has more or fewer than one series, so nothing may
//! be added here (cluster metrics live on their own endpoint).
//!
//! The exposition is written by hand in text format 0.0.4 because KES's counter names carry no
//! `_total` suffix, which OpenMetrics encoders would add. Counting is lock-free and does not
//! share cache lines between cores: every thread counts into its own shard (a few relaxed
//! atomic adds on memory no other core writes), and the exposition sums the shards. The
//! histogram keeps one count per bucket and is made cumulative when rendered.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of `kes_http_response_time`, in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];
/// The same bounds in nanoseconds, for the hot path.
const BUCKET_NANOS: [u64; 10] = [
    10_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    1_500_000_000,
    3_000_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Shards of the counters: threads beyond this many share them (still correct, just contended).
const SHARDS: usize = 16;
/// Status codes counted per code (KES's families label every code it answers).
const CODES: usize = 600;

/// One thread's counters, aligned so that no two shards share a cache line.
#[repr(align(128))]
struct Shard {
    by_code: [AtomicU64; CODES],
    active: AtomicI64,
    /// Requests per histogram bucket, not cumulative; the last one is `+Inf` only.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            by_code: std::array::from_fn(|_| AtomicU64::new(0)),
            active: AtomicI64::new(0),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// The shard of the calling thread: assigned round robin at its first request.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

pub struct Metrics {
    shards: Box<[Shard]>,
    pub error_events: AtomicU64,
    pub audit_events: AtomicU64,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
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
        // Possibly another thread's shard than the increment's: only the sum is meaningful.
        self.0.shard().active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn shard(&self) -> &Shard {
        // `shards` has SHARDS entries and the index is taken modulo SHARDS.
        &self.shards[shard_index() % self.shards.len()]
    }

    pub fn begin(&self) -> ActiveGuard<'_> {
        self.shard().active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }

    pub fn observe(&self, status: u16, elapsed: Duration) {
        let shard = self.shard();
        if let Some(c) = shard.by_code.get(status as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS
            .iter()
            .position(|le| nanos <= *le)
            .unwrap_or(BUCKETS.len());
        if let Some(b) = shard.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn code_count(&self, code: usize) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| s.by_code.get(code))
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn bucket_count(&self, i: usize) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| s.buckets.get(i))
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
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
                    let v = self.code_count(c);
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
            self.shards
                .iter()
                .map(|s| s.active.load(Ordering::Relaxed))
                .sum::<i64>() as f64,
        );
        let _ = writeln!(
            out,
            "# HELP kes_http_response_time Histogram of request response times spawning from 10ms to 10s.\n# TYPE kes_http_response_time histogram"
        );
        let mut count = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            count += self.bucket_count(i);
            let _ = writeln!(out, "kes_http_response_time_bucket{{le=\"{le}\"}} {count}");
        }
        count += self.bucket_count(BUCKETS.len());
        let _ = writeln!(out, "kes_http_response_time_bucket{{le=\"+Inf\"}} {count}");
        let sum = self
            .shards
            .iter()
            .map(|s| s.sum_nanos.load(Ordering::Relaxed))
            .sum::<u64>() as f64
            / 1e9;
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
    fn counts_from_every_thread_add_up() {
        let m = Metrics::default();
        std::thread::scope(|s| {
            for _ in 0..(SHARDS + 3) {
                s.spawn(|| {
                    for _ in 0..100 {
                        let _active = m.begin();
                        m.observe(200, Duration::from_millis(20));
                    }
                });
            }
        });
        let n = (SHARDS + 3) * 100;
        let text = m.render();
        assert!(text.contains(&format!("kes_http_request_success{{code=\"200\"}} {n}")));
        assert!(text.contains(&format!("kes_http_response_time_count {n}")));
        assert!(text.contains("kes_http_response_time_bucket{le=\"0.01\"} 0"));
        assert!(text.contains(&format!("kes_http_response_time_bucket{{le=\"0.05\"}} {n}")));
        assert!(text.contains("kes_http_request_active 0\n"));
    }

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
