//! Byte budgets for request bodies: how much one connection, and the whole server, may hold.
//!
//! Every request with a body takes from two budgets and gives back when it is done, so on the
//! hot path this must cost next to nothing: taking is one compare-and-swap, giving back one
//! atomic add (plus a wake-up only while someone waits). A budget of tokio's `Semaphore` took a
//! mutex on every release, and the server-wide one is shared by every core.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct Budget {
    available: AtomicUsize,
    /// Takers waiting for bytes to be given back.
    waiting: AtomicUsize,
    freed: Notify,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Self {
            available: AtomicUsize::new(bytes),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Takes `n` bytes if they are there.
    pub fn try_take(&self, n: usize) -> bool {
        let mut cur = self.available.load(Ordering::Acquire);
        loop {
            if cur < n {
                return false;
            }
            match self.available.compare_exchange_weak(
                cur,
                cur - n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Takes `n` bytes, waiting until others give enough back. Dropping the future gives up.
    pub async fn take(&self, n: usize) {
        loop {
            if self.try_take(n) {
                return;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the second look, so a give-back between the two wakes it.
            freed.as_mut().enable();
            let _waiting = Waiting::new(self);
            if self.try_take(n) {
                return;
            }
            freed.await;
        }
    }

    pub fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.available.fetch_add(n, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.available.load(Ordering::SeqCst)
    }
}

/// Counts a waiting taker for as long as it waits, however its wait ends.
struct Waiting<'a>(&'a Budget);

impl<'a> Waiting<'a> {
    fn new(b: &'a Budget) -> Self {
        b.waiting.fetch_add(1, Ordering::SeqCst);
        Self(b)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes a request holds from several budgets, given back when it is dropped.
#[derive(Debug)]
pub struct Held<'a, const N: usize> {
    budgets: [&'a Budget; N],
    taken: [usize; N],
}

impl<'a, const N: usize> Held<'a, N> {
    pub fn new(budgets: [&'a Budget; N]) -> Self {
        Self {
            budgets,
            taken: [0; N],
        }
    }

    /// Takes `n` more bytes from every budget, in order, waiting where one is short.
    pub async fn take(&mut self, n: usize) {
        for (budget, taken) in self.budgets.iter().zip(self.taken.iter_mut()) {
            if !budget.try_take(n) {
                // Boxed: a short budget is rare, and its waiting state should not be part of
                // every request's future.
                Box::pin(budget.take(n)).await;
            }
            *taken += n;
        }
    }
}

impl<const N: usize> Drop for Held<'_, N> {
    fn drop(&mut self) {
        for (budget, taken) in self.budgets.iter().zip(self.taken) {
            budget.give_back(taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn takes_gives_back_and_wakes_a_waiting_taker() {
        let b = Arc::new(Budget::new(100));
        assert!(b.try_take(60));
        assert!(!b.try_take(50));
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.take(50).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "took bytes that were not there");
        b.give_back(60);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiting taker was not woken")
            .unwrap();
        assert_eq!(b.available(), 50);
    }

    #[tokio::test]
    async fn held_bytes_come_back_on_drop_even_mid_wait() {
        let conn = Budget::new(10);
        let server = Budget::new(15);
        {
            let mut held = Held::new([&conn, &server]);
            held.take(6).await;
            held.take(4).await;
            assert_eq!((conn.available(), server.available()), (0, 5));
            // A third take cannot be met: give up by timing out.
            let stuck = tokio::time::timeout(Duration::from_millis(20), held.take(1)).await;
            assert!(stuck.is_err());
        }
        assert_eq!((conn.available(), server.available()), (10, 15));
        assert_eq!(conn.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_takers_never_overdraw() {
        let b = Arc::new(Budget::new(64));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let b = Arc::clone(&b);
            tasks.push(tokio::spawn(async move {
                for _ in 0..500 {
                    b.take(16).await;
                    assert!(b.available() <= 64);
                    tokio::task::yield_now().await;
                    b.give_back(16);
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("takers stalled")
                .unwrap();
        }
        assert_eq!(b.available(), 64);
    }
}
