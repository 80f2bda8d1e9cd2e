//! The node's view of the external KMS: every keystore call goes through [`MeteredStore`], which
//! counts it, times it and tracks whether the KMS is reachable.
//!
//! Reachability is what the cache's expiry depends on (see [`crate::Cluster::get`]): while the
//! KMS answers, cached keys are re-confirmed against it once `cache.expiry.any` has passed since
//! their last confirmation, or once they were not used on this node for `cache.expiry.unused`;
//! while it does not, nothing expires until the outage has lasted `cache.expiry.offline`.
//!
//! The KMS counts as unreachable from the first call that failed for want of an answer
//! ([`StoreError::Unavailable`]: connection refused, timeout, a sealed Vault, a 5xx) until a
//! call gets an answer again. A background probe ([`KmsHealth::probe`], every
//! [`PROBE_INTERVAL`], every [`PROBE_INTERVAL_DOWN`] during an outage) notices both edges even
//! without traffic. Both edges are logged as warnings, so they also reach `/v1/log/error`.

use crate::clock::Clock;
use async_trait::async_trait;
use kes_keystore::{KeyStore, ListPage, StoreError, StoreStatus};
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the KMS is probed while it answers.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// How often it is probed during an outage, so that recovery is noticed quickly.
pub const PROBE_INTERVAL_DOWN: Duration = Duration::from_secs(2);
/// Longest wait for a probe's answer; a KMS that hangs counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Operations counted per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmsOp {
    Create,
    Get,
    Delete,
    List,
    Status,
}

impl KmsOp {
    const ALL: [KmsOp; 5] = [
        KmsOp::Create,
        KmsOp::Get,
        KmsOp::Delete,
        KmsOp::List,
        KmsOp::Status,
    ];

    fn label(self) -> &'static str {
        match self {
            KmsOp::Create => "create",
            KmsOp::Get => "get",
            KmsOp::Delete => "delete",
            KmsOp::List => "list",
            KmsOp::Status => "status",
        }
    }
}

/// Upper bounds of the KMS latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct OpCounters {
    /// Calls that got an answer (including "not found" and "already exists").
    ok: AtomicU64,
    /// Calls that got no answer (the KMS was unreachable).
    unreachable: AtomicU64,
    /// Calls the KMS refused (credentials) or answered with an invalid entry.
    error: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// Reachability of the KMS and counters of the calls to it.
pub struct KmsHealth {
    kind: &'static str,
    clock: Arc<dyn Clock>,
    /// The clock's monotonic milliseconds when the current outage began, plus one; 0 while
    /// reachable.
    down_since: AtomicU64,
    /// The error that began the current outage.
    down_reason: Mutex<String>,
    ops: [OpCounters; 5],
    outages: AtomicU64,
    /// Total milliseconds of finished outages.
    outage_ms: AtomicU64,
    /// Cache entries re-confirmed, evicted because the KMS no longer had them (or had other
    /// material), and served unconfirmed because the KMS was unreachable.
    pub confirmed: AtomicU64,
    pub evicted: AtomicU64,
    pub served_offline: AtomicU64,
    /// Misses: keys read from the KMS because no node had them cached.
    pub misses: AtomicU64,
}

impl KmsHealth {
    pub fn new(kind: &'static str, clock: Arc<dyn Clock>) -> Self {
        Self {
            kind,
            clock,
            down_since: AtomicU64::new(0),
            down_reason: Mutex::new(String::new()),
            ops: Default::default(),
            outages: AtomicU64::new(0),
            outage_ms: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            served_offline: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.mono_ms()
    }

    /// Total length of the finished outages.
    pub fn outage_total(&self) -> Duration {
        Duration::from_millis(self.outage_ms.load(Ordering::Relaxed))
    }

    /// How long the KMS has been unreachable, or `None` while it answers.
    pub fn down_for(&self) -> Option<Duration> {
        match self.down_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    pub fn is_down(&self) -> bool {
        self.down_since.load(Ordering::Relaxed) != 0
    }

    /// The error that began the current outage.
    pub fn down_reason(&self) -> Option<String> {
        self.is_down().then(|| self.down_reason.lock().clone())
    }

    /// Records a call that got an answer: ends an outage.
    pub fn record_answer(&self) {
        let since = self.down_since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let lasted = self.now_ms().saturating_sub(since - 1);
            self.outage_ms.fetch_add(lasted, Ordering::Relaxed);
            tracing::warn!(
                keystore = self.kind,
                outage_s = lasted as f64 / 1000.0,
                "keystore reachable again: cached keys are re-confirmed and writes resume"
            );
        }
    }

    /// Records a call that got no answer: begins an outage.
    pub fn record_unreachable(&self, err: &StoreError) {
        let now = self.now_ms() + 1;
        if self
            .down_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            *self.down_reason.lock() = err.to_string();
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                keystore = self.kind,
                error = %err,
                "keystore unreachable: serving cached keys, refusing writes"
            );
        }
    }

    fn observe<T>(&self, op: KmsOp, elapsed: Duration, r: &Result<T, StoreError>) {
        let c = &self.ops[op as usize];
        match r {
            Ok(_) | Err(StoreError::NotFound | StoreError::AlreadyExists) => {
                c.ok.fetch_add(1, Ordering::Relaxed);
                self.record_answer();
            }
            Err(e @ StoreError::Unavailable { .. }) => {
                c.unreachable.fetch_add(1, Ordering::Relaxed);
                self.record_unreachable(e);
            }
            Err(StoreError::Denied(_) | StoreError::Invalid(_)) => {
                // An answer, though not a useful one: the KMS is there.
                c.error.fetch_add(1, Ordering::Relaxed);
                self.record_answer();
            }
        }
        let secs = elapsed.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                c.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        c.count.fetch_add(1, Ordering::Relaxed);
        c.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Asks the KMS for its health through `store` (a [`MeteredStore`], which records the
    /// answer), bounded by [`PROBE_TIMEOUT`]: a KMS that hangs counts as unreachable.
    pub async fn probe(&self, store: &dyn KeyStore) -> Result<StoreStatus, StoreError> {
        let started = Instant::now();
        match tokio::time::timeout(PROBE_TIMEOUT, store.status()).await {
            Ok(r) => r,
            Err(_) => {
                let r = Err(StoreError::unavailable(
                    true,
                    format!("no answer within {PROBE_TIMEOUT:?}"),
                ));
                self.observe(KmsOp::Status, started.elapsed(), &r);
                r
            }
        }
    }

    /// The `kes_cluster_kms_*` families, in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let down = self.down_for();
        let _ = writeln!(
            out,
            "# HELP kes_cluster_kms_reachable 1 while the KMS answers, 0 during an outage.\n# TYPE kes_cluster_kms_reachable gauge\nkes_cluster_kms_reachable{{keystore=\"{}\"}} {}",
            self.kind,
            u8::from(down.is_none())
        );
        let _ = writeln!(
            out,
            "# HELP kes_cluster_kms_outage_seconds Length of the current KMS outage (0 while reachable).\n# TYPE kes_cluster_kms_outage_seconds gauge\nkes_cluster_kms_outage_seconds {}",
            down.map_or(0.0, |d| d.as_secs_f64())
        );
        let _ = writeln!(
            out,
            "# HELP kes_cluster_kms_outages KMS outages this node has seen.\n# TYPE kes_cluster_kms_outages counter\nkes_cluster_kms_outages {}",
            self.outages.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP kes_cluster_kms_outage_seconds_total Seconds of finished KMS outages.\n# TYPE kes_cluster_kms_outage_seconds_total counter\nkes_cluster_kms_outage_seconds_total {}",
            self.outage_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# HELP kes_cluster_kms_requests KMS calls by operation and result.\n# TYPE kes_cluster_kms_requests counter"
        );
        for op in KmsOp::ALL {
            let c = &self.ops[op as usize];
            for (result, n) in [
                ("ok", &c.ok),
                ("unreachable", &c.unreachable),
                ("error", &c.error),
            ] {
                let _ = writeln!(
                    out,
                    "kes_cluster_kms_requests{{op=\"{}\",result=\"{result}\"}} {}",
                    op.label(),
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP kes_cluster_kms_request_duration_seconds KMS call latency.\n# TYPE kes_cluster_kms_request_duration_seconds histogram"
        );
        for op in KmsOp::ALL {
            let c = &self.ops[op as usize];
            let label = op.label();
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "kes_cluster_kms_request_duration_seconds_bucket{{op=\"{label}\",le=\"{le}\"}} {}",
                    c.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = c.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "kes_cluster_kms_request_duration_seconds_bucket{{op=\"{label}\",le=\"+Inf\"}} {count}\nkes_cluster_kms_request_duration_seconds_sum{{op=\"{label}\"}} {}\nkes_cluster_kms_request_duration_seconds_count{{op=\"{label}\"}} {count}",
                c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
            );
        }
        for (name, help, v) in [
            (
                "kes_cluster_cache_misses",
                "Keys read from the KMS because the replicated cache lacked them.",
                &self.misses,
            ),
            (
                "kes_cluster_cache_confirmations",
                "Cached keys re-confirmed against the KMS.",
                &self.confirmed,
            ),
            (
                "kes_cluster_cache_evictions",
                "Cached keys dropped because the KMS no longer had them or had other material.",
                &self.evicted,
            ),
            (
                "kes_cluster_cache_served_offline",
                "Uses of cached keys past their expiry, served because the KMS was unreachable.",
                &self.served_offline,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// A keystore whose every call updates a [`KmsHealth`].
pub struct MeteredStore {
    inner: Arc<dyn KeyStore>,
    health: Arc<KmsHealth>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn KeyStore>, clock: Arc<dyn Clock>) -> Self {
        let health = Arc::new(KmsHealth::new(inner.kind(), clock));
        Self { inner, health }
    }

    pub fn health(&self) -> &Arc<KmsHealth> {
        &self.health
    }

    async fn timed<T, F>(&self, op: KmsOp, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let r = f.await;
        self.health.observe(op, started.elapsed(), &r);
        r
    }
}

#[async_trait]
impl KeyStore for MeteredStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.timed(KmsOp::Create, self.inner.create(name, value))
            .await
    }
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.timed(KmsOp::Get, self.inner.get(name)).await
    }
    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.timed(KmsOp::Delete, self.inner.delete(name)).await
    }
    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.timed(KmsOp::List, self.inner.list(prefix, continue_at, limit))
            .await
    }
    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.timed(KmsOp::Status, self.inner.status()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_keystore::MemoryStore;

    #[tokio::test]
    async fn outages_begin_and_end_with_the_answers() {
        let clock = crate::ManualClock::new(1_800_000_000_000);
        let store = MeteredStore::new(Arc::new(MemoryStore::new()), clock.clone());
        let h = Arc::clone(store.health());
        assert!(!h.is_down());
        assert!(matches!(store.get("x").await, Err(StoreError::NotFound)));
        assert!(!h.is_down(), "not found is an answer");
        h.record_unreachable(&StoreError::unavailable(true, "refused"));
        assert!(h.is_down());
        assert_eq!(
            h.down_reason().as_deref(),
            Some("keystore unavailable: refused")
        );
        // A second failure does not restart the outage.
        clock.advance(Duration::from_millis(20));
        h.record_unreachable(&StoreError::unavailable(true, "again"));
        assert_eq!(h.down_for(), Some(Duration::from_millis(20)));
        store.create("x", b"v").await.unwrap();
        assert!(!h.is_down());
        let mut text = String::new();
        h.render(&mut text);
        assert!(
            text.contains("kes_cluster_kms_reachable{keystore=\"memory\"} 1"),
            "{text}"
        );
        assert!(text.contains("kes_cluster_kms_outages 1"), "{text}");
        assert!(
            text.contains("kes_cluster_kms_requests{op=\"get\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kes_cluster_kms_requests{op=\"create\",result=\"ok\"} 1"),
            "{text}"
        );
    }
}
