//! Time as an input: every freshness, expiry, offline-window, outage and lease decision reads
//! the time from a [`Clock`], so tests drive those decisions with a [`ManualClock`] instead of
//! sleeping. Timers that only pace background loops (probe intervals, retry pauses) stay on
//! tokio's clock: they decide when to look again, not what the answer is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time in milliseconds since the Unix epoch: what the replicated state carries
    /// between nodes (when a key was stored or confirmed). It can jump and differ between
    /// nodes.
    fn wall_ms(&self) -> u64;
    /// Milliseconds since an arbitrary start on this node; never goes back. Local durations
    /// (since the last contact with a leader, since an outage began, since a key was used)
    /// are measured on it.
    fn mono_ms(&self) -> u64;
}

/// The machine's clocks.
pub struct SystemClock {
    epoch: Instant,
}

impl SystemClock {
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self {
            epoch: Instant::now(),
        })
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told: [`ManualClock::advance`] moves both clocks,
/// [`ManualClock::jump_wall`] only the wall clock (a clock step, or skew against another node).
#[derive(Debug)]
pub struct ManualClock {
    wall: AtomicU64,
    mono: AtomicU64,
}

impl ManualClock {
    /// Starts at wall time `wall_ms` and monotonic time 0.
    pub fn new(wall_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            wall: AtomicU64::new(wall_ms),
            mono: AtomicU64::new(0),
        })
    }

    pub fn advance(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.mono.fetch_add(ms, Ordering::SeqCst);
    }

    /// Moves the wall clock by `delta_ms` (negative: back), leaving the monotonic clock.
    pub fn jump_wall(&self, delta_ms: i64) {
        let now = self.wall.load(Ordering::SeqCst);
        self.wall
            .store(now.saturating_add_signed(delta_ms), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> u64 {
        self.wall.load(Ordering::SeqCst)
    }

    fn mono_ms(&self) -> u64 {
        self.mono.load(Ordering::SeqCst)
    }
}

/// Wall-clock milliseconds of the machine's clock, for code outside a cluster (audit events,
/// command times of admin requests).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
