//! Time limits that cost nothing when the work is done at once.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// Runs `fut` for at most `limit` (zero: no limit); yields `None` when the limit ran out.
///
/// The work is polled before any timer exists: most requests (a cached key, a body that
/// arrived with its headers) finish in that first poll, and then no deadline is computed and no
/// timer is registered or cancelled. Work that has to wait gets its timer then, so the limit
/// counts from the first poll, microseconds after the work began. The work is stored in place
/// (an `async fn` wrapper would keep it twice: as its argument and as its pinned local).
pub fn within<F: Future>(limit: Duration, fut: F) -> Within<F> {
    Within {
        fut,
        sleep: None,
        limit,
    }
}

pin_project! {
    /// The future of [`within`].
    pub struct Within<F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Option<Sleep>,
        limit: Duration,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.limit.is_zero() {
            return Poll::Pending;
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.limit)));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_needs_no_timer_and_slow_work_is_cut_off() {
        assert_eq!(within(Duration::from_secs(1), async { 7 }).await, Some(7));
        let slow = tokio::time::sleep(Duration::from_secs(30));
        let started = std::time::Instant::now();
        assert_eq!(within(Duration::from_millis(50), slow).await, None);
        assert!(started.elapsed() < Duration::from_secs(10));
        let waits = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            3
        };
        assert_eq!(within(Duration::from_secs(5), waits).await, Some(3));
        let unlimited = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            4
        };
        assert_eq!(within(Duration::ZERO, unlimited).await, Some(4));
    }
}
