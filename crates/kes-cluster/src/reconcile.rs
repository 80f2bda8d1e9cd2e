//! Settling a delete whose tombstone was not committed after the keystore deleted the key.
//!
//! The leader deletes from the keystore first and then commits the tombstone. When the commit
//! fails (leadership or quorum lost in between), the key is gone from the keystore but every
//! node still serves it from the cache. As with a create whose outcome was lost (see
//! `Cluster::reconcile_create`), a background task makes the outcome whole: it keeps committing
//! the tombstone, through whichever node leads, until it is committed, for at most
//! [`RECONCILE_FOR`], and gives up early only if the name was written since (re-created, or
//! deleted again, which settles it too).

use super::{kms, now_ms, Cluster, Command, StoreError, KMS_READ_TIMEOUT, RECONCILE_FOR};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The first retry comes soon: the usual cause, a leadership change, settles within about an
/// election; later ones come at the keystore's outage probe interval.
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The outcome of one attempt of [`Cluster::settle_delete`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SettleDelete {
    /// The tombstone was committed by this attempt.
    Done,
    /// A tombstone of the name was committed by someone else (the lost commit itself, which
    /// may still land through the next leader, or a retried delete).
    Landed,
    /// The name was re-created since: its new key stands.
    Superseded,
    Retry,
}

impl Cluster {
    /// Commits the tombstone of `name` on this node, which leads; the log index on success.
    pub(super) async fn write_tombstone(&self, name: &str) -> Result<u64, String> {
        #[cfg(test)]
        if self
            .fail_tombstone
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err("failpoint: tombstone commit lost".to_owned());
        }
        let cmd = Command::DeleteKey {
            name: name.to_owned(),
            at_ms: now_ms(),
        };
        self.raft
            .client_write(cmd)
            .await
            .map(|w| w.log_id.index)
            .map_err(|e| e.to_string())
    }

    /// After a delete whose tombstone was not committed: commits it in the background.
    /// `generation` is the name's generation when the delete started, under its write lock.
    pub(super) fn reconcile_delete(self: &Arc<Self>, name: &str, generation: u64) {
        let this = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let deadline = Instant::now() + RECONCILE_FOR;
            let mut wait = FIRST_RETRY;
            while Instant::now() < deadline {
                tokio::time::sleep(wait).await;
                wait = kms::PROBE_INTERVAL_DOWN;
                match this.settle_delete(&name, generation).await {
                    SettleDelete::Done => {
                        tracing::warn!(key = %name, "a delete whose tombstone was lost was completed: the key is gone from the cache too");
                        return;
                    }
                    SettleDelete::Landed => {
                        tracing::info!(key = %name, "a delete whose tombstone was lost was committed meanwhile");
                        return;
                    }
                    SettleDelete::Superseded => {
                        tracing::info!(key = %name, "a delete whose tombstone was lost was overtaken by a create");
                        return;
                    }
                    SettleDelete::Retry => {}
                }
            }
            tracing::error!(key = %name, "gave up committing the tombstone of a key deleted in the keystore: nodes serve it until cache.expiry.any makes them re-confirm it; delete it again to settle it now");
        });
    }

    /// Where the name stands since `generation`: `None` while nothing was written.
    fn delete_moved_on(&self, name: &str, generation: u64) -> Option<SettleDelete> {
        self.state.read(|s| {
            (s.generation(name) != generation).then(|| {
                if s.is_tombstoned(name) {
                    SettleDelete::Landed
                } else {
                    SettleDelete::Superseded
                }
            })
        })
    }

    /// One attempt to commit the tombstone of a delete that reached the keystore.
    pub(super) async fn settle_delete(
        self: &Arc<Self>,
        name: &str,
        generation: u64,
    ) -> SettleDelete {
        if let Some(outcome) = self.delete_moved_on(name, generation) {
            return outcome;
        }
        let index = if self.is_leader() {
            // Under the write lock no create of the name runs on this leader between the check
            // and the commit.
            let _writing = self.write_lock(name).await;
            if let Some(outcome) = self.delete_moved_on(name, generation) {
                return outcome;
            }
            match self.write_tombstone(name).await {
                Ok(index) => index,
                Err(e) => {
                    tracing::debug!(key = %name, error = %e, "tombstone still not committed");
                    return SettleDelete::Retry;
                }
            }
        } else {
            let cmd = Command::DeleteKey {
                name: name.to_owned(),
                at_ms: now_ms(),
            };
            match self.propose(cmd).await {
                Ok((index, _)) => index,
                Err(e) => {
                    tracing::debug!(key = %name, error = %e, "tombstone still not committed");
                    return SettleDelete::Retry;
                }
            }
        };
        self.refill_if_recreated(name, index).await;
        SettleDelete::Done
    }

    /// Through another leader, a create of the name may have committed between the check and
    /// the tombstone, which then hides a key the keystore holds. A keystore read begun after
    /// the tombstone was applied tells, and a fill from it (observed at or after the tombstone,
    /// so the state machine accepts it) puts such a key back.
    async fn refill_if_recreated(self: &Arc<Self>, name: &str, tombstone: u64) {
        if self.wait_applied(tombstone).await.is_err() {
            return;
        }
        let observed = self.applied_index();
        let raw = match tokio::time::timeout(KMS_READ_TIMEOUT, self.store.get(name)).await {
            Ok(Ok(raw)) => Zeroizing::new(raw),
            Ok(Err(StoreError::NotFound)) => return,
            Ok(Err(e)) => {
                tracing::debug!(key = %name, error = %e, "cannot check for a re-create after a settled delete");
                return;
            }
            Err(_) => return,
        };
        let Some(cck) = self.cck() else { return };
        let Ok(sealed) = cck.seal(name, &raw) else {
            return;
        };
        let cmd = Command::FillKey {
            name: name.to_owned(),
            sealed,
            at_ms: now_ms(),
            observed,
        };
        match self.propose(cmd).await {
            Ok((_, outcome)) => {
                tracing::info!(key = %name, ?outcome, "a key re-created while its delete was settled is back in the cache")
            }
            Err(e) => tracing::debug!(key = %name, error = %e, "re-created key not filled"),
        }
    }
}
