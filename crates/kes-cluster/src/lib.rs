//! The replica set: a Raft group that replicates the sealed key cache and the policy state.
//!
//! Every node runs one of these, with or without a `cluster:` section (without one it is a
//! single-node group with its data in memory), so one code path serves both.
//!
//! - create, import and delete run on the leader, which writes the keystore first and then
//!   commits the cache entry or tombstone through Raft (`write`); a member that receives a
//!   write sends it to the leader as a typed [`WriteOp`] (`leader`), where the server
//!   authorises it again for the identity it names;
//! - generate, encrypt, decrypt and hmac are served from the local replica with no Raft round
//!   trip; a miss reads the keystore and proposes a fill (`read`);
//! - describe waits for a read index from the leader, so it is linearizable;
//! - a node cut off from the majority keeps serving cached keys for `cache.expiry.offline` and
//!   then answers "unavailable"; it never accepts writes.
//!
//! Cache entries are sealed with the cluster cache key (CCK, AES-256-GCM, the key name as
//! associated data). The CCK is persisted only wrapped by a key that lives in the keystore; a
//! starting node gets it from a live peer, else by unwrapping through the keystore, else it stays
//! sealed and keeps trying (`seal`).
//!
//! Every decision that depends on time reads it from the node's [`Clock`] (`decide` holds the
//! pure ones), so tests drive expiry, outages and leases with a manual clock.

mod cache;
pub mod clock;
pub mod decide;
pub mod elect;
mod error;
pub mod kms;
mod leader;
mod members;
pub mod open;
pub mod peer;
pub mod prune;
mod read;
mod reconcile;
pub mod seal;
pub mod tasks;
pub mod transfer;
mod view;
mod write;

pub use cache::CachedKey;
pub use clock::{Clock, ManualClock, SystemClock};
pub use decide::Serving;
pub use error::{ClusterError, StoreOp};
pub use kes_crypto::Cck;
pub use leader::{Forwarded, LEADER_WAIT};
pub use open::Options;
pub use peer::wire::{Refusal, WriteOp};
pub use peer::WriteHandler;
pub use tasks::Tasks;

use arc_swap::ArcSwapOption;
use kes_config::CacheConfig;
use kes_crypto::KeyType;
use kes_keystore::KeyStore;
use kes_raft::types::{NodeId, Raft};
pub use kms::KmsHealth;
use openraft::BasicNode;
use parking_lot::{Mutex, RwLock};
use peer::transport::PeerTransport;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The keystore entry holding the key that wraps the cluster cache key. The name is valid for
/// every backend, is hidden from listings and refused by the key API.
pub const WRAPPING_KEY: &str = "_kes-cluster-wrapping-key";

/// How long without hearing from a leader (or, on the leader, from a quorum) before a node
/// counts itself cut off from the majority.
pub const CONTACT_TIMEOUT: Duration = Duration::from_millis(1500);

/// How often a sealed node retries getting the cluster cache key.
pub const UNSEAL_RETRY: Duration = Duration::from_secs(1);

/// Longest a crypto request waits on the KMS (re-confirming a cached key, or reading a key
/// this node does not hold). Past it the KMS counts as unreachable: the cached key is served
/// under the offline rules, a key not cached is refused as "KMS unreachable", and later
/// requests do not wait at all until a probe finds the KMS again. Well above a healthy KMS's
/// read time, well below what a client waits for before it gives up on the node. Documented
/// in the README ("Cache and KMS outages").
pub const KMS_WAIT: Duration = Duration::from_millis(500);

/// Longest wait for a keystore read no request waits on: unwrapping the cluster cache key,
/// settling a create whose outcome was lost.
pub const KMS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a leader keeps checking, after a create whose outcome the KMS left unknown, whether
/// the key arrived in the KMS, so that it ends up in both the KMS and the cache or in neither.
pub const RECONCILE_FOR: Duration = Duration::from_secs(30 * 60);

/// Raft's election timeout range, in milliseconds; the upper bound is also the pre-vote lease
/// (see `elect`).
pub const ELECTION_TIMEOUT_MIN: u64 = 500;
pub const ELECTION_TIMEOUT_MAX: u64 = 1000;

/// (generation, stored_at) of the state entry an unsealed key came from.
type Stamp = (u64, u64);

/// What the configuration of the initialising node seeds the state with.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    pub admin: String,
    pub policies: BTreeMap<String, kes_state::PolicyDef>,
    pub assignments: BTreeMap<String, String>,
    /// A [`kes_state::Command::Restore`] from a backup this node's data directory was seeded
    /// with: the cluster starts from it instead of the fields above.
    pub restore: Option<kes_state::Command>,
}

/// Unsealed copies of keys by name, with the stamp of the state entry each was made from.
type DecodedMap = HashMap<String, (Stamp, Arc<CachedKey>)>;

/// The state of one node in the group.
pub struct Cluster {
    pub id: NodeId,
    pub(crate) raft: Raft,
    pub state: Arc<kes_raft::StateHandle>,
    pub(crate) peers: Option<Arc<dyn PeerTransport>>,
    /// The Raft log, read by the pre-vote (see `elect`).
    log: kes_raft::LogStore,
    /// The KMS, metered: every call updates [`Cluster::kms`].
    pub(crate) store: Arc<dyn KeyStore>,
    pub kms: Arc<KmsHealth>,
    clock: Arc<dyn Clock>,
    cck: ArcSwapOption<Cck>,
    /// Unsealed keys by name, stamped with the (generation, stored_at) of the state entry they
    /// came from; a changed stamp means the entry changed and the copy is stale.
    decoded: RwLock<DecodedMap>,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Names being re-confirmed in the background.
    refreshing: Mutex<HashSet<String>>,
    /// One create or delete at a time per name on this leader, from the KMS write to the Raft
    /// commit, so that the order of the KMS writes is the order of the commits.
    writing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The clock's monotonic milliseconds when this node last heard from a leader (or a
    /// quorum).
    last_contact: AtomicU64,
    /// Raised by every change of `decoded` (see `view`).
    decoded_version: AtomicU64,
    /// This node's id among the clusters of the process, for the per-thread views.
    view_id: u64,
    /// A leadership transfer's hold on this node, and its writes in progress (`transfer`).
    holds: transfer::Holds,
    /// `cache.expiry` with KES's defaults applied; `offline` also bounds how long a node cut
    /// off from the majority keeps serving.
    expiry: CacheConfig,
    key_type: KeyType,
    seed: Seed,
    /// The snapshot being received from the leader: its id and the next offset expected.
    snapshot_recv: Mutex<Option<(String, u64)>>,
    /// Background work started by requests (fills, re-confirmations, reconciliations): it
    /// runs to its end unless the node stops.
    background: tokio_util::task::TaskTracker,
    /// The node's own random draws (election timeouts): from the OS, or from a seed in the
    /// simulation, so that a seed replays the same run.
    rng: Mutex<rand::rngs::StdRng>,
    /// Failpoint: the next tombstone commit of a delete fails as if leadership was lost.
    #[cfg(test)]
    fail_tombstone: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Records that a leader (or, on the leader, a quorum) was heard from just now.
    pub fn touch_contact(&self) {
        self.last_contact
            .store(self.clock.mono_ms(), Ordering::Relaxed);
    }

    pub(crate) fn since_contact(&self) -> Duration {
        let last = self.last_contact.load(Ordering::Relaxed);
        Duration::from_millis(self.clock.mono_ms().saturating_sub(last))
    }

    /// Makes the node's random draws follow `seed` (the deterministic simulation); call it
    /// before [`Cluster::start`].
    pub fn seed_rng(&self, seed: u64) {
        use rand::SeedableRng;
        *self.rng.lock() = rand::rngs::StdRng::seed_from_u64(seed);
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn is_sealed(&self) -> bool {
        self.cck.load().is_none()
    }

    /// Whether this node may serve crypto operations now.
    pub fn serving(&self) -> Serving {
        decide::serving(self.is_sealed(), self.since_contact(), self.expiry.offline)
    }

    /// Whether this node has lost contact with the majority (within or beyond the window).
    pub fn is_cut_off(&self) -> bool {
        decide::is_cut_off(self.since_contact())
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
    }

    /// Whether this node has peers (a `cluster:` section): writes on a follower go to the
    /// leader.
    pub fn is_replicated(&self) -> bool {
        self.peers.is_some()
    }

    pub fn applied_index(&self) -> u64 {
        self.state.read(|s| s.last_applied())
    }

    fn node_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .get_node(&id)
            .map(|n: &BasicNode| n.addr.clone())
    }

    /// The members' ids and addresses, voters first.
    pub fn members(&self) -> Vec<(NodeId, String, bool)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: Vec<NodeId> = m.membership().voter_ids().collect();
        let mut out: Vec<(NodeId, String, bool)> = m
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect();
        out.sort_by_key(|(id, _, voter)| (!voter, *id));
        out
    }

    /// The voters of the applied membership with their node-port addresses, by id.
    pub fn voters(&self) -> Vec<(NodeId, String)> {
        self.members()
            .into_iter()
            .filter(|(_, _, voter)| *voter)
            .map(|(id, addr, _)| (id, addr))
            .collect()
    }

    /// Raft's view of this node, for the cluster status and metrics.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    fn check_serving(&self) -> Result<(), ClusterError> {
        match self.serving() {
            Serving::Ok => Ok(()),
            Serving::Sealed => Err(ClusterError::Sealed),
            Serving::CutOff => Err(ClusterError::CutOff),
        }
    }

    /// The clock of `CachedKey::last_used`: monotonic milliseconds, never 0 (which marks a key
    /// not used since it was unsealed here).
    fn clock_ms(&self) -> u64 {
        self.clock.mono_ms() + 1
    }

    pub fn cached_len(&self) -> usize {
        self.state.read(|s| s.key_count())
    }

    pub fn cck(&self) -> Option<Arc<Cck>> {
        self.cck.load_full()
    }

    /// Forgets unsealed copies of keys; used after the state is replaced by a snapshot.
    pub fn clear_decoded(&self) {
        self.retain_decoded(|_, _| false);
    }

    /// Keeps an unsealed copy of key `name`. Every change of the decoded map raises
    /// `decoded_version` (so per-thread views look up again, see `view`), and a copy it lets
    /// go of is dropped from every view too.
    pub(crate) fn insert_decoded(&self, name: &str, stamp: Stamp, key: Arc<CachedKey>) {
        self.change_decoded(|decoded| {
            let old = decoded.insert(name.to_owned(), (stamp, key));
            (true, old.is_some())
        });
    }

    /// Lets go of the unsealed copy of key `name` (see [`Cluster::insert_decoded`]).
    pub(crate) fn remove_decoded(&self, name: &str) {
        self.change_decoded(|decoded| {
            let removed = decoded.remove(name).is_some();
            (removed, removed)
        });
    }

    /// Keeps the unsealed copies `keep` says to keep (see [`Cluster::insert_decoded`]).
    pub(crate) fn retain_decoded(
        &self,
        keep: impl FnMut(&String, &mut (Stamp, Arc<CachedKey>)) -> bool,
    ) {
        self.change_decoded(|decoded| {
            let before = decoded.len();
            decoded.retain(keep);
            let removed = decoded.len() != before;
            (removed, removed)
        });
    }

    /// Applies `change` to the decoded map under its lock; it answers whether it changed the
    /// map and whether it let go of a copy.
    fn change_decoded(&self, change: impl FnOnce(&mut DecodedMap) -> (bool, bool)) {
        let let_go = {
            let mut decoded = self.decoded.write();
            let (changed, let_go) = change(&mut decoded);
            if changed {
                self.decoded_version.fetch_add(1, Ordering::Release);
            }
            let_go
        };
        if let_go {
            view::forget_all();
        }
    }

    /// Runs `work` in the background, tracked so the node waits for it (bounded) at shutdown.
    fn spawn_background<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(work);
    }
}

#[cfg(test)]
mod tests;
