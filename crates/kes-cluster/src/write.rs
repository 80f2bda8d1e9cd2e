//! Writes, on the leader: the keystore first, then the commit of the cache entry or the
//! tombstone, one write per name at a time, each run to its end even when its caller gives up.

use crate::peer::client::PeerError;
use crate::{Cluster, ClusterError, StoreOp, WRAPPING_KEY};
use kes_crypto::{Cck, KeyVersion};
use kes_keystore::StoreError;
use kes_raft::types::NodeId;
use kes_state::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// How long the leader waits, before answering a delete, for the other members to apply the
/// tombstone (see [`Cluster::spread`]).
const SPREAD_FOR: Duration = Duration::from_millis(500);

/// Holds a name's write lock; forgets the lock when nobody else waits for it.
pub(crate) struct WriteGuard<'a> {
    cluster: &'a Cluster,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut writing = self.cluster.writing.lock();
        if writing
            .get(&self.name)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            writing.remove(&self.name);
        }
    }
}

impl Cluster {
    /// While the KMS is known to be unreachable, a write first probes it (bounded by
    /// [`crate::kms::PROBE_TIMEOUT`]) instead of waiting for the KMS client's timeouts and
    /// retries: refused at once while the outage lasts, accepted as soon as the KMS is back.
    async fn check_kms_for_write(&self) -> Result<(), StoreError> {
        if self.kms.is_down() {
            if let Err(e) = self.kms.probe(self.store.as_ref()).await {
                tracing::debug!(error = %e, "write refused: the keystore is still unreachable");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Creates `name` in the keystore, then commits the entry. Runs on the leader.
    ///
    /// When the KMS's answer is lost (a timeout after the request was sent), the key may or
    /// may not exist there: the client gets a 5xx, and [`Cluster::reconcile_create`] settles
    /// it once the KMS answers again, so that the key ends up in both the KMS and the cache,
    /// or in neither.
    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        version: &KeyVersion,
    ) -> Result<(), ClusterError> {
        if name == WRAPPING_KEY {
            return Err(ClusterError::ReservedName(name.to_owned()));
        }
        if !self.is_leader() {
            return Err(ClusterError::NoLeader);
        }
        let cck = self.cck.load_full().ok_or(ClusterError::Sealed)?;
        self.check_kms_for_write()
            .await
            .map_err(|e| ClusterError::store(StoreOp::Create, e))?;
        let encoded = Zeroizing::new(version.encode());
        // Once sent to the KMS, the create runs to its end (and its reconciliation starts
        // when needed) even if the request is abandoned: a route timeout, a client that hung
        // up, a forwarding node that gave up.
        let this = Arc::clone(self);
        let name = name.to_owned();
        self.background
            .spawn(async move { this.create_detached(name, encoded, cck).await })
            .await
            .unwrap_or(Err(ClusterError::Internal("the write task failed")))
    }

    /// Serialises the writes of one name (see `writing`).
    pub(crate) async fn write_lock(&self, name: &str) -> WriteGuard<'_> {
        let lock = Arc::clone(self.writing.lock().entry(name.to_owned()).or_default());
        let guard = lock.lock_owned().await;
        WriteGuard {
            cluster: self,
            name: name.to_owned(),
            guard: Some(guard),
        }
    }

    async fn create_detached(
        self: Arc<Self>,
        name: String,
        encoded: Zeroizing<Vec<u8>>,
        cck: Arc<Cck>,
    ) -> Result<(), ClusterError> {
        let name = name.as_str();
        // Sealed before the keystore write: a failure here leaves nothing half-written.
        let sealed = cck.seal(name, &encoded).map_err(|e| {
            tracing::error!(key = %name, error = %e, "create refused");
            ClusterError::Internal("sealing the cache entry failed")
        })?;
        let _writing = self.write_lock(name).await;
        let generation = self.state.read(|s| s.generation(name));
        match self.store.create(name, &encoded).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists) => {
                // A retry inside the KMS client can find the key its own first attempt
                // created: the material tells whether it is ours.
                match self.store.get(name).await.map(Zeroizing::new) {
                    Ok(stored) if *stored == *encoded => {
                        tracing::debug!(key = %name, "create: a retried request found its own key");
                    }
                    Ok(_) | Err(StoreError::NotFound) => return Err(ClusterError::KeyExists),
                    Err(e) => {
                        // Ours or not is unknown until the KMS answers.
                        self.reconcile_create(name, encoded, generation);
                        return Err(ClusterError::store(StoreOp::Create, e));
                    }
                }
            }
            Err(
                e @ StoreError::Unavailable {
                    retryable: false, ..
                },
            ) => {
                self.reconcile_create(name, encoded, generation);
                return Err(ClusterError::store(StoreOp::Create, e));
            }
            Err(e) => return Err(ClusterError::store(StoreOp::Create, e)),
        }
        let cmd = Command::PutKey {
            name: name.to_owned(),
            sealed,
            at_ms: self.clock.wall_ms(),
        };
        match self.raft.client_write(cmd).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The KMS has the key; reconciliation puts it in the cache through whichever
                // node leads next.
                tracing::warn!(key = %name, error = %e, "key created but not committed");
                self.reconcile_create(name, encoded, generation);
                Err(ClusterError::Indeterminate(StoreOp::Create))
            }
        }
    }

    /// After a create whose outcome is unknown: waits until the KMS answers (for at most
    /// [`RECONCILE_FOR`]), then makes the outcome whole. If the KMS has our key, the cache is
    /// filled (the fill carries the applied index from before the read, so a delete committed
    /// meanwhile wins). If the KMS does not have it, the create is finished rather than
    /// abandoned: the lost request may still sit in the KMS's queue and land after our read,
    /// and only a key that exists in both places stays whole whichever way that race goes.
    /// `generation` is the name's generation when the create started; a write of the name
    /// committed since then means the client moved on, and nothing is rolled forward.
    /// Deletes `name` from the keystore, then commits a tombstone. Runs on the leader.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), ClusterError> {
        if name == WRAPPING_KEY {
            return Err(ClusterError::ReservedName(name.to_owned()));
        }
        if !self.is_leader() {
            return Err(ClusterError::NoLeader);
        }
        self.check_kms_for_write()
            .await
            .map_err(|e| ClusterError::store(StoreOp::Delete, e))?;
        // As with create: once the KMS is asked, the tombstone follows even if the request is
        // abandoned.
        let this = Arc::clone(self);
        let name = name.to_owned();
        self.background
            .spawn(async move { this.delete_detached(&name).await })
            .await
            .unwrap_or(Err(ClusterError::Internal("the write task failed")))
    }

    async fn delete_detached(self: &Arc<Self>, name: &str) -> Result<(), ClusterError> {
        let _writing = self.write_lock(name).await;
        let generation = self.state.read(|s| s.generation(name));
        let r = self.store.delete(name).await;
        let known = self.state.read(|s| s.key(name).is_some());
        match &r {
            Ok(()) => {}
            // Deleted in the keystore behind our back: drop the cached copy too.
            Err(StoreError::NotFound) if known => {}
            Err(_) => return r.map_err(|e| ClusterError::store(StoreOp::Delete, e)),
        }
        match self.write_tombstone(name).await {
            Ok(index) => self.spread(index).await,
            Err(e) => {
                // Gone from the keystore but still in the cache: settle it like a lost create,
                // so the key ends up in neither.
                tracing::warn!(key = %name, error = %e, "key deleted but tombstone not committed");
                self.reconcile_delete(name, generation);
                return Err(ClusterError::Indeterminate(StoreOp::Delete));
            }
        }
        r.map_err(|e| ClusterError::store(StoreOp::Delete, e))
    }

    /// Waits until every other member has applied the log up to `index`, or has not answered,
    /// or [`SPREAD_FOR`] has passed. A delete is answered after this, so a member that can be
    /// reached no longer serves the key when the client learns of the delete, even if this
    /// leader fails right after answering (its followers would otherwise learn that the
    /// tombstone is committed only from the next leader, seconds later).
    async fn spread(&self, index: u64) {
        let Some(peers) = &self.peers else {
            return;
        };
        let others: Vec<(NodeId, String)> = self
            .members()
            .into_iter()
            .filter(|(id, _, _)| *id != self.id)
            .map(|(id, addr, _)| (id, addr))
            .collect();
        if others.is_empty() {
            return;
        }
        // Followers learn the new commit index from the next append or heartbeat: send it now.
        let _ = self.raft.trigger().heartbeat().await;
        let deadline = Instant::now() + SPREAD_FOR;
        let waits = others.iter().map(|(id, addr)| async move {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                match peers
                    .call::<_, u64>(*id, addr, "/cluster/applied", &(), left)
                    .await
                {
                    Ok(applied) if applied >= index => return true,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    // A peer of a version without this route: nothing to wait for.
                    Err(PeerError::Remote { status: 404, .. }) => return true,
                    Err(_) => return false,
                }
            }
        });
        let reached = futures_util::future::join_all(waits).await;
        let behind: Vec<NodeId> = others
            .iter()
            .zip(reached)
            .filter(|(_, r)| !r)
            .map(|((id, _), _)| *id)
            .collect();
        if !behind.is_empty() {
            tracing::debug!(
                index,
                ?behind,
                "members that had not applied the delete when it was answered"
            );
        }
    }
}
