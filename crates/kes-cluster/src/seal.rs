//! When the keystore entry that wraps the cluster cache key is gone.
//!
//! The cluster cache key (CCK) is persisted only wrapped by a key kept in the keystore,
//! [`WRAPPING_KEY`]. Something else with write access to the keystore (a KES server running
//! side by side on it, an operator cleaning up) can delete that entry. Running nodes keep
//! working, as they hold the CCK in memory, but a node that starts can then unseal only by
//! getting the CCK from a live peer. Creating a fresh wrapping key would not help, since the
//! wrapped CCK in the state can only be opened by the old one, and would stand in the way of
//! restoring the old entry from a backup, so a missing entry is never replaced while the state
//! holds a wrapped CCK.
//!
//! Instead: a starting node that finds the entry missing logs an ERROR naming it and the way
//! to recover, keeps asking its peers for [`MISSING_ENTRY_GRACE`] (they may be starting too),
//! and then stops with that message (the process exits non-zero), rather than sitting sealed
//! forever. A node that got the CCK from a peer checks the entry too and logs the same ERROR,
//! and so does the leader every [`WRAPPING_CHECK_EVERY`], so that the loss is noticed while
//! some node still holds the CCK.

use crate::peer::client::PEER_TIMEOUT;
use crate::{Cluster, ClusterError, StoreOp, KMS_READ_TIMEOUT, WRAPPING_KEY};
use kes_crypto::{Cck, KeyVersion};
use kes_keystore::StoreError;
use kes_state::{Command, Outcome, State};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Associated data of the wrapped cluster cache key.
const CCK_AD: &[u8] = b"kes cluster cache key v1";

/// How long a starting node that finds the wrapping key missing keeps asking its peers for the
/// cache key before it gives up (peers restarted together may need a few seconds to unseal).
pub const MISSING_ENTRY_GRACE: Duration = Duration::from_secs(15);

/// How often the leader checks that the wrapping key is still in the keystore, so that its loss
/// is reported while the cache key still lives in the running nodes' memory.
pub const WRAPPING_CHECK_EVERY: Duration = Duration::from_secs(10 * 60);

/// The outcome of one attempt to get the cache key.
#[derive(Debug, PartialEq, Eq)]
pub enum Unseal {
    Unsealed,
    /// Not yet (no wrapped key in the state yet, no peer answered, the keystore did not).
    NotYet,
    /// No peer provided the cache key and the keystore answered that the wrapping key does not
    /// exist.
    WrappingKeyMissing,
}

/// What a node that cannot unseal because the wrapping key is gone tells the operator.
pub fn missing_entry_message() -> String {
    format!(
        "the keystore has no entry '{WRAPPING_KEY}', which wraps the cluster cache key, and no \
         cluster member provided the cache key: this node cannot unseal. Recover by restoring \
         the entry '{WRAPPING_KEY}' from a keystore backup (and check that the keystore \
         configuration points at the cluster's keystore), or by starting this node while another \
         member that holds the cache key is running. If no node holds it any more, re-initialise \
         the cluster: stop every node, move each node's data_dir away and start them again; keys \
         in the keystore are kept, policy changes made since initialisation are lost (see the \
         README, \"Migrating from KES\")"
    )
}

impl Cluster {
    /// Checks that the wrapping key is still in the keystore (after getting the cache key from
    /// a peer, and periodically on the leader), and raises the alarm if it is not, since a node
    /// restarted when no member holds the cache key could not start.
    pub(crate) async fn check_wrapping_entry(&self) {
        match tokio::time::timeout(KMS_READ_TIMEOUT, self.store.get(WRAPPING_KEY)).await {
            Ok(Err(StoreError::NotFound)) => {
                tracing::error!(
                    entry = WRAPPING_KEY,
                    "the keystore has no entry '{WRAPPING_KEY}', which wraps the cluster cache key: running nodes hold the cache key, but a node that starts while no member holds it cannot unseal. Restore the entry '{WRAPPING_KEY}' from a keystore backup (a KES server sharing the keystore may have deleted it); a fresh one is not created, as it could not open the cache key"
                );
            }
            // Present, or the keystore cannot tell now: nothing to report.
            Ok(Ok(raw)) => drop(zeroize::Zeroizing::new(raw)),
            Ok(Err(_)) | Err(_) => {}
        }
    }

    /// The leader's watch over the wrapping key: every [`WRAPPING_CHECK_EVERY`], while this
    /// node leads and holds the cache key, an ERROR if the keystore lost the entry. Runs until
    /// `cancel` fires.
    pub async fn run_wrapping_check(
        self: std::sync::Arc<Self>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(WRAPPING_CHECK_EVERY) => {}
            }
            if self.is_leader() && !self.is_sealed() && !self.kms.is_down() {
                self.check_wrapping_entry().await;
            }
        }
    }

    /// The key that wraps the CCK: read from the keystore, created there first if `create`.
    async fn wrapping_key(&self, create: bool) -> Result<KeyVersion, StoreError> {
        if create {
            let fresh = KeyVersion::generate(self.key_type, "kes-cluster");
            let encoded = Zeroizing::new(fresh.encode());
            match self.store.create(WRAPPING_KEY, &encoded).await {
                Ok(()) => return Ok(fresh),
                Err(StoreError::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        let raw = Zeroizing::new(self.store.get(WRAPPING_KEY).await?);
        KeyVersion::parse(&raw).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    /// Initialises the replicated state if nobody has: a fresh CCK, wrapped by the keystore,
    /// and the seed policies. Runs on the leader.
    pub(crate) async fn initialize_state(&self) -> Result<(), ClusterError> {
        // A new leader may hold a committed Init it has not applied yet. Creating the wrapping
        // key then would be wrong if the keystore lost the entry: a fresh key cannot open the
        // committed wrapped CCK, and would stand in the way of restoring the old entry. So the
        // state must have applied everything this leader's term has committed first.
        let read = self
            .raft
            .get_read_log_id()
            .await
            .map_err(|_| ClusterError::NoLeader)?;
        self.wait_applied(read.0.map_or(0, |l| l.index)).await?;
        if self.state.read(|s| s.is_initialized()) {
            return Ok(());
        }
        if let Some(cmd) = self.seed.restore.clone() {
            // The backup's cache key, wrapped by the keystore's wrapping key, comes with it:
            // the node unseals as after a restart.
            let r = self
                .raft
                .client_write(cmd)
                .await
                .map_err(|_| ClusterError::NoLeader)?;
            if r.data == Outcome::Applied {
                tracing::info!("cluster state restored from a backup");
            }
            return Ok(());
        }
        let cck = Cck::generate();
        let wrapping = self
            .wrapping_key(true)
            .await
            .map_err(|e| ClusterError::store(StoreOp::Create, e))?;
        let wrapped = wrapping.key.encrypt(cck.bytes(), CCK_AD);
        let cmd = Command::Init {
            wrapped_cck: wrapped,
            admin: self.seed.admin.clone(),
            policies: self.seed.policies.clone(),
            assignments: self.seed.assignments.clone(),
            at_ms: self.clock.wall_ms(),
        };
        let r = self
            .raft
            .client_write(cmd)
            .await
            .map_err(|_| ClusterError::NoLeader)?;
        if r.data == Outcome::Applied {
            self.cck.store(Some(Arc::new(cck)));
            tracing::info!("cluster state initialised");
        }
        Ok(())
    }

    /// Tries to get the CCK: from a live peer, else through the keystore.
    pub(crate) async fn unseal(&self) -> Unseal {
        let Some(wrapped) = self.state.read(|s| s.wrapped_cck().map(<[u8]>::to_vec)) else {
            return Unseal::NotYet;
        };
        if let Some(peers) = &self.peers {
            for (id, addr, _) in self.members() {
                if id == self.id {
                    continue;
                }
                if let Ok(Some(bytes)) = peers
                    .call::<_, Option<Vec<u8>>>(id, &addr, "/cluster/cck", &(), PEER_TIMEOUT)
                    .await
                {
                    let bytes = Zeroizing::new(bytes);
                    if let Some(cck) = Cck::from_slice(&bytes) {
                        if self.verify_cck(&cck) {
                            self.cck.store(Some(Arc::new(cck)));
                            tracing::info!(peer = id, "cluster cache key received from a peer");
                            self.check_wrapping_entry().await;
                            return Unseal::Unsealed;
                        }
                    }
                }
            }
        }
        match self.wrapping_key(false).await {
            Ok(w) => match w.key.decrypt(&wrapped, CCK_AD) {
                Ok(raw) => {
                    if let Some(cck) = Cck::from_slice(&raw) {
                        self.cck.store(Some(Arc::new(cck)));
                        tracing::info!("cluster cache key unwrapped through the keystore");
                        return Unseal::Unsealed;
                    }
                    Unseal::NotYet
                }
                Err(_) => {
                    tracing::error!(
                        "the keystore's wrapping key does not open the cluster cache key"
                    );
                    Unseal::NotYet
                }
            },
            Err(StoreError::NotFound) => Unseal::WrappingKeyMissing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot unwrap the cluster cache key yet");
                Unseal::NotYet
            }
        }
    }

    /// A CCK from a peer must open our sealed entries (when there are any).
    fn verify_cck(&self, cck: &Cck) -> bool {
        self.state.read(|s: &State| {
            s.keys()
                .next()
                .is_none_or(|(name, e)| cck.open(name, &e.sealed).is_some())
        })
    }
}
