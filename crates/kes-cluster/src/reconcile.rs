//! Settling a delete whose tombstone was not committed after the keystore deleted the key.
//!
//! The leader deletes from the keystore first and then commits the tombstone. When the commit
//! fails (leadership or quorum lost in between), the key is gone from the keystore but every
//! node still serves it from the cache. As with a create whose outcome was lost (see
//! `Cluster::reconcile_create`), a background task makes the outcome whole: it keeps committing
//! the tombstone, through whichever node leads, until it is committed, for at most
//! [`RECONCILE_FOR`], and gives up early only if the name was written since (re-created, or
//! deleted again, which settles it too).

use crate::{kms, Cluster, KMS_READ_TIMEOUT, RECONCILE_FOR};
use kes_keystore::StoreError;
use kes_state::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The first retry comes soon: the usual cause, a leadership change, settles within about an
/// election; later ones come at the keystore's outage probe interval.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The outcome of one attempt of [`Cluster::settle_delete`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SettleDelete {
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
    pub(crate) async fn write_tombstone(&self, name: &str) -> Result<u64, String> {
        #[cfg(test)]
        if self
            .fail_tombstone
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err("failpoint: tombstone commit lost".to_owned());
        }
        let cmd = Command::DeleteKey {
            name: name.to_owned(),
            at_ms: self.clock.wall_ms(),
        };
        self.raft
            .client_write(cmd)
            .await
            .map(|w| w.log_id.index)
            .map_err(|e| e.to_string())
    }

    /// After a delete whose tombstone was not committed: commits it in the background.
    /// `generation` is the name's generation when the delete started, under its write lock.
    pub(crate) fn reconcile_delete(self: &Arc<Self>, name: &str, generation: u64) {
        let this = Arc::clone(self);
        let name = name.to_owned();
        self.spawn_background(async move {
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
    pub(crate) async fn settle_delete(
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
                at_ms: self.clock.wall_ms(),
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
            at_ms: self.clock.wall_ms(),
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

/// How long a node that lost the leadership keeps watching for a lost create to land in the
/// KMS before leaving it (it cannot complete the create itself).
const RECONCILE_AWAY_FOR: Duration = Duration::from_secs(60);

/// The outcome of [`Cluster::roll_forward`].
enum RollForward {
    /// Created in the KMS and committed.
    Done,
    /// The name was written since: the lost create is not ours to finish.
    Superseded,
    /// Only the leader may finish a create.
    NotLeader,
    /// The KMS or Raft did not take it this time.
    Retry,
}

impl Cluster {
    pub(crate) fn reconcile_create(
        self: &Arc<Self>,
        name: &str,
        encoded: Zeroizing<Vec<u8>>,
        generation: u64,
    ) {
        let this = Arc::clone(self);
        let name = name.to_owned();
        self.spawn_background(async move {
            let deadline = Instant::now() + RECONCILE_FOR;
            let mut not_leader_since = None;
            while Instant::now() < deadline {
                tokio::time::sleep(kms::PROBE_INTERVAL_DOWN).await;
                let observed = this.applied_index();
                match this.store.get(&name).await.map(Zeroizing::new) {
                    Ok(stored) if *stored == *encoded => {
                        let Some(cck) = this.cck() else { continue };
                        let Ok(sealed) = cck.seal(&name, &stored) else {
                            continue;
                        };
                        let cmd = Command::FillKey {
                            name: name.clone(),
                            sealed,
                            at_ms: this.clock.wall_ms(),
                            observed,
                        };
                        match this.propose(cmd).await {
                            Ok(_) => {
                                tracing::warn!(key = %name, "a create whose answer was lost did reach the KMS; key added to the cache");
                                return;
                            }
                            Err(_) => continue,
                        }
                    }
                    // Someone else's key: nothing of ours to add.
                    Ok(_) => {
                        tracing::info!(key = %name, "a create whose answer was lost was overtaken by another create");
                        return;
                    }
                    Err(StoreError::NotFound) => {
                        match this.roll_forward(&name, &encoded, generation).await {
                            RollForward::Done => {
                                tracing::warn!(key = %name, "a create whose answer was lost was completed");
                                return;
                            }
                            RollForward::Superseded => {
                                tracing::info!(key = %name, "a create whose answer was lost did not reach the KMS and was superseded");
                                return;
                            }
                            RollForward::NotLeader => {
                                let since = *not_leader_since.get_or_insert_with(Instant::now);
                                if since.elapsed() > RECONCILE_AWAY_FOR {
                                    tracing::warn!(key = %name, "a create whose answer was lost is not in the KMS; leadership moved, so it is not completed");
                                    return;
                                }
                                continue;
                            }
                            RollForward::Retry => continue,
                        }
                    }
                    Err(_) => continue,
                }
            }
            tracing::error!(key = %name, "gave up settling a create whose answer was lost: the KMS did not answer");
        });
    }

    /// Finishes a create whose first attempt is not in the KMS, under the name's write lock
    /// and only on the leader, unless the name was written since the create started.
    async fn roll_forward(
        self: &Arc<Self>,
        name: &str,
        encoded: &Zeroizing<Vec<u8>>,
        generation: u64,
    ) -> RollForward {
        if !self.is_leader() {
            // The write lock only serialises writes on this node: another leader may be
            // writing this name. Later passes still fill the cache if the lost request lands.
            return RollForward::NotLeader;
        }
        let _writing = self.write_lock(name).await;
        let moved_on = self
            .state
            .read(|s| s.key(name).is_some() || s.generation(name) != generation);
        if moved_on {
            return RollForward::Superseded;
        }
        let Some(cck) = self.cck() else {
            return RollForward::Retry;
        };
        let Ok(sealed) = cck.seal(name, encoded) else {
            return RollForward::Retry;
        };
        match self.store.create(name, encoded).await {
            Ok(()) => {}
            // Ours (the lost request landed meanwhile) or someone else's: the next read tells.
            Err(_) => return RollForward::Retry,
        }
        let cmd = Command::PutKey {
            name: name.to_owned(),
            sealed,
            at_ms: self.clock.wall_ms(),
        };
        match self.raft.client_write(cmd).await {
            Ok(_) => RollForward::Done,
            // In the KMS now: the next pass finds it there and fills the cache.
            Err(_) => RollForward::Retry,
        }
    }
}
