//! The node's background tasks, under one tracker with one cancellation token.
//!
//! A task the node needs (Raft's duties, elections, the KMS watch, pruning, the wrapping-key
//! check, the node port, ...) that ends while the node runs, by returning, failing or
//! panicking, stops the node: [`Tasks::failure`] yields the reason, the server shuts down
//! and the process exits non-zero, so a supervisor restarts it instead of a node running
//! half-alive.

use crate::seal::{self, Unseal};
use crate::{kms, Cluster, CONTACT_TIMEOUT, UNSEAL_RETRY, WRAPPING_KEY};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's tasks.
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    ended: mpsc::UnboundedSender<String>,
    ended_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Tasks {
    /// Tasks that stop when `cancel` fires.
    pub fn new(cancel: CancellationToken) -> Self {
        let (ended, ended_rx) = mpsc::unbounded_channel();
        Self {
            tracker: TaskTracker::new(),
            cancel,
            ended,
            ended_rx: tokio::sync::Mutex::new(ended_rx),
        }
    }

    /// A token that fires when the tasks are to stop.
    pub fn token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Runs a task the node needs for as long as it runs: it must return only once the token
    /// fired. If it ends before (with `Ok` or an error) or panics, [`Tasks::failure`] reports
    /// it by `name`.
    pub fn needed<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let handle = self.tracker.spawn(task);
        let cancel = self.cancel.clone();
        let ended = self.ended.clone();
        self.tracker.spawn(async move {
            let why = match handle.await {
                Ok(Ok(())) if cancel.is_cancelled() => return,
                Ok(Ok(())) => format!("the task '{name}' ended"),
                // The task's own message first: it is what the operator acts on.
                Ok(Err(e)) => format!("{e} (task '{name}')"),
                Err(e) if e.is_panic() => format!("the task '{name}' panicked"),
                Err(_) => return,
            };
            let _ = ended.send(why);
        });
    }

    /// Runs a task that may end on its own (it does not keep the node alive).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Waits until a needed task ended early, and says which and why.
    pub async fn failure(&self) -> String {
        match self.ended_rx.lock().await.recv().await {
            Some(why) => why,
            // Unreachable while `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// Stops every task and waits for them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::debug!("background tasks still running at shutdown");
        }
    }
}

impl Cluster {
    /// Starts the cluster's own tasks under `tasks`.
    pub fn start(self: &Arc<Self>, tasks: &Tasks) {
        tasks.needed("cluster duties", Arc::clone(self).run_duties(tasks.token()));
        tasks.needed("elections", Arc::clone(self).run_elections(tasks.token()));
        tasks.needed("kms watch", Arc::clone(self).run_kms(tasks.token()));
        tasks.needed(
            "tombstone pruning",
            Arc::clone(self).run_prune(tasks.token()),
        );
        tasks.needed(
            "wrapping key check",
            Arc::clone(self).run_wrapping_check(tasks.token()),
        );
    }

    /// Stops Raft and lets background work started by requests finish (bounded).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.background.wait()).await;
    }

    /// Watches the KMS: probes it (often during an outage, so that writes resume soon after it
    /// returns) and drops idle unsealed keys. Runs until `cancel` fires.
    async fn run_kms(self: Arc<Self>, cancel: CancellationToken) -> Result<(), String> {
        let sweep = (self.expiry.unused / 2).max(Duration::from_secs(1));
        let mut next_sweep = Instant::now() + sweep;
        loop {
            // Probe first: a node started during an outage knows of it before requests come.
            let _ = self.kms.probe(self.store.as_ref()).await;
            let wait = if self.kms.is_down() {
                kms::PROBE_INTERVAL_DOWN
            } else {
                kms::PROBE_INTERVAL
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait.min(sweep)) => {}
            }
            if Instant::now() >= next_sweep {
                self.drop_idle();
                next_sweep = Instant::now() + sweep;
            }
        }
    }

    /// Background duties: initialise the state when leading a fresh group, unseal, and track
    /// contact with the majority. Runs until `cancel` fires; ends with the reason when this
    /// node gives up for good (it cannot unseal, see `seal`).
    async fn run_duties(self: Arc<Self>, cancel: CancellationToken) -> Result<(), String> {
        let mut metrics = self.raft.metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut next_unseal = Instant::now();
        let mut missing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                r = metrics.changed() => if r.is_err() {
                    return Err("raft stopped".into());
                },
            }
            let (leader, quorum_ack) = {
                let m = metrics.borrow();
                (m.current_leader, m.millis_since_quorum_ack)
            };
            if leader == Some(self.id) {
                let single = self.members().iter().filter(|(_, _, v)| *v).count() <= 1;
                if single || quorum_ack.is_some_and(|ms| ms < CONTACT_TIMEOUT.as_millis() as u64) {
                    self.touch_contact();
                }
                let initialized = self.state.read(|s| s.is_initialized());
                if !initialized && Instant::now() >= next_unseal {
                    next_unseal = Instant::now() + UNSEAL_RETRY;
                    if let Err(e) = self.initialize_state().await {
                        tracing::warn!(error = %e, "cannot initialise the cluster state yet");
                    }
                }
            }
            if self.is_sealed() && Instant::now() >= next_unseal {
                next_unseal = Instant::now() + UNSEAL_RETRY;
                if self.unseal().await != Unseal::WrappingKeyMissing {
                    missing_since = None;
                    continue;
                }
                let alone = self.members().iter().all(|(id, _, _)| *id == self.id);
                let since = match missing_since {
                    Some(since) => since,
                    None => {
                        if !alone {
                            tracing::error!(
                                entry = WRAPPING_KEY,
                                grace = ?seal::MISSING_ENTRY_GRACE,
                                "the keystore has no entry '{WRAPPING_KEY}', which wraps the cluster cache key; asking the other members for the cache key"
                            );
                        }
                        *missing_since.insert(Instant::now())
                    }
                };
                if alone || since.elapsed() >= seal::MISSING_ENTRY_GRACE {
                    let message = seal::missing_entry_message();
                    tracing::error!(entry = WRAPPING_KEY, "{message}");
                    return Err(message);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_needed_task_that_ends_early_is_reported() {
        let tasks = Tasks::new(CancellationToken::new());
        let token = tasks.token();
        tasks.needed("waits", async move {
            token.cancelled().await;
            Ok(())
        });
        tasks.needed("returns", async { Ok(()) });
        assert_eq!(tasks.failure().await, "the task 'returns' ended");
        tasks.needed("fails", async { Err("no keystore".to_owned()) });
        assert_eq!(tasks.failure().await, "no keystore (task 'fails')");
        tasks.needed("panics", async { panic!("boom") });
        assert_eq!(tasks.failure().await, "the task 'panics' panicked");
        tasks.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn tasks_stopped_by_the_token_are_not_failures() {
        let tasks = Tasks::new(CancellationToken::new());
        for _ in 0..3 {
            let token = tasks.token();
            tasks.needed("waits", async move {
                token.cancelled().await;
                Ok(())
            });
        }
        tasks.shutdown(Duration::from_secs(5)).await;
        let reported = tokio::time::timeout(Duration::from_millis(200), tasks.failure()).await;
        assert!(reported.is_err(), "{reported:?}");
    }
}
