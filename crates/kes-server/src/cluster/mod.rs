//! The replica set: a Raft group that replicates the sealed key cache and the policy state.
//!
//! Every node runs one of these, with or without a `cluster:` section (without one it is a
//! single-node group with its data in memory), so one code path serves both.
//!
//! - create, import and delete run on the leader, which writes the keystore first and then
//!   commits the cache entry or tombstone through Raft (requests reaching a follower are
//!   forwarded to the leader at the HTTP layer, see `rpc`);
//! - generate, encrypt, decrypt and hmac are served from the local replica with no Raft round
//!   trip; a miss reads the keystore and proposes a fill;
//! - describe waits for a read index from the leader, so it is linearizable;
//! - a node cut off from the majority keeps serving cached keys for `cache.expiry.offline` and
//!   then answers 503; it never accepts writes.
//!
//! Cache entries are sealed with the cluster cache key (CCK, AES-256-GCM, the key name as
//! associated data). The CCK is persisted only wrapped by a key that lives in the keystore; a
//! starting node gets it from a live peer, else by unwrapping through the keystore, else it stays
//! sealed and keeps trying.

pub mod elect;
mod guard;
pub mod kms;
pub mod net;
pub mod prune;
mod reconcile;
pub mod rpc;
pub mod seal;
pub mod tls;

use crate::error::{ApiError, StoreOp};
use crate::keys::CachedKey;
use arc_swap::ArcSwapOption;
use kes_config::CacheConfig;
pub use kes_crypto::Cck;
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::{KeyStore, ListPage, StoreError, StoreStatus, MAX_LIST_PAGE};
use kes_raft::types::{NodeId, Raft};
use kes_state::{Command, Outcome, State};
use kms::{KmsHealth, MeteredStore};
use net::{PeerError, Peers, PEER_TIMEOUT};
use openraft::BasicNode;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The keystore entry holding the key that wraps the cluster cache key. The name is valid for
/// every backend, is hidden from listings and refused by the key API.
pub const WRAPPING_KEY: &str = "_kes-cluster-wrapping-key";

/// Associated data of the wrapped cluster cache key.
const CCK_AD: &[u8] = b"kes cluster cache key v1";

/// How long without hearing from a leader (or, on the leader, from a quorum) before a node
/// counts itself cut off from the majority.
pub const CONTACT_TIMEOUT: Duration = Duration::from_millis(1500);

/// How often a sealed node retries getting the cluster cache key.
pub const UNSEAL_RETRY: Duration = Duration::from_secs(1);

/// Longest a crypto request waits on the KMS (re-confirming a cached key, or reading a key
/// this node does not hold). Past it the KMS counts as unreachable: the cached key is served
/// under the offline rules, a key not cached answers 504, and later requests do not wait at
/// all until a probe finds the KMS again. Well above a healthy KMS's read time, well below
/// what a client waits for before it gives up on the node. Documented in the README ("Cache
/// and KMS outages").
pub const KMS_WAIT: Duration = Duration::from_millis(500);

/// Longest wait for a keystore read no request waits on: unwrapping the cluster cache key,
/// settling a create whose outcome was lost.
pub const KMS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a leader keeps checking, after a create whose outcome the KMS left unknown, whether
/// the key arrived in the KMS, so that it ends up in both the KMS and the cache or in neither.
pub const RECONCILE_FOR: Duration = Duration::from_secs(30 * 60);
/// How long a node that lost the leadership keeps watching for a lost create to land in the
/// KMS before leaving it (it cannot complete the create itself).
const RECONCILE_AWAY_FOR: Duration = Duration::from_secs(60);

/// How long the leader waits, before answering a delete, for the other members to apply the
/// tombstone (see [`Cluster::spread`]).
const SPREAD_FOR: Duration = Duration::from_millis(500);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Messages between nodes besides Raft's own.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub method: String,
    pub path_and_query: String,
    pub identity: String,
    pub body: Vec<u8>,
    /// The client's address as the forwarding member saw it, for the leader's audit event.
    #[serde(default)]
    pub client: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Answer to a proposal sent to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProposeResult {
    Applied { index: u64, outcome: Outcome },
    NotLeader { leader: Option<NodeId> },
    Failed(String),
}

/// Answer to a read-index request.
#[derive(Debug, Serialize, Deserialize)]
pub enum ReadIndexResult {
    Index(u64),
    NotLeader { leader: Option<NodeId> },
}

/// Where a node stands, for `/v1/ready` and the cluster status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    Ok,
    Sealed,
    CutOff,
}

/// The state of one node in the group.
pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    pub state: Arc<kes_raft::StateHandle>,
    pub peers: Option<Arc<Peers>>,
    /// The Raft log, read by the pre-vote (see `elect`).
    log: kes_raft::LogStore,
    /// The KMS, metered: every call updates [`Cluster::kms`].
    pub store: Arc<dyn KeyStore>,
    pub kms: Arc<KmsHealth>,
    cck: ArcSwapOption<Cck>,
    /// Unsealed keys by name, stamped with the (generation, stored_at) of the state entry they
    /// came from; a changed stamp means the entry changed and the copy is stale.
    decoded: RwLock<HashMap<String, (Stamp, Arc<CachedKey>)>>,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Names being re-confirmed in the background.
    refreshing: Mutex<HashSet<String>>,
    /// One create or delete at a time per name on this leader, from the KMS write to the Raft
    /// commit, so that the order of the KMS writes is the order of the commits.
    writing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Milliseconds since `epoch` when this node last heard from a leader (or a quorum).
    last_contact: AtomicU64,
    epoch: Instant,
    /// `cache.expiry` with KES's defaults applied; `offline` also bounds how long a node cut
    /// off from the majority keeps serving.
    expiry: CacheConfig,
    key_type: KeyType,
    seed: Seed,
    /// The snapshot being received from the leader: its id and the next offset expected.
    snapshot_recv: Mutex<Option<(String, u64)>>,
    /// Set once this node gives up for good (see `seal`).
    fatal: tokio::sync::watch::Sender<Option<String>>,
    /// Failpoint: the next tombstone commit of a delete fails as if leadership was lost.
    #[cfg(test)]
    fail_tombstone: std::sync::atomic::AtomicBool,
}

/// A cached key found on this node, with what its expiry depends on.
struct Hit {
    key: Arc<CachedKey>,
    /// When the KMS last confirmed it (wall clock, ms).
    confirmed_at_ms: u64,
    /// `stored_at_ms` of its state entry, 0 for a key read from the KMS whose fill is not
    /// applied yet.
    stored_at_ms: u64,
}

/// Whether a cached key may be served as it is.
#[derive(Debug, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Fresh, but past three quarters of `any`: served, and re-confirmed in the background.
    Refresh,
    /// Past `any` since its confirmation, or unused here for `unused`: re-confirm first.
    Stale,
}

/// Holds a name's write lock; forgets the lock when nobody else waits for it.
struct WriteGuard<'a> {
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

/// What the KMS said about a cached key.
enum Confirmation {
    Same,
    /// Gone from the KMS.
    Gone,
    /// The KMS holds other material under the name.
    Changed,
    Unreachable,
}

/// (generation, stored_at) of the state entry an unsealed key came from.
type Stamp = (u64, u64);

/// What the configuration of the initialising node seeds the state with.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    pub admin: String,
    pub policies: BTreeMap<String, kes_state::PolicyDef>,
    pub assignments: BTreeMap<String, String>,
    /// A [`Command::Restore`] from a backup this node's data directory was seeded with: the
    /// cluster starts from it instead of the fields above.
    pub restore: Option<Command>,
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        raft: Raft,
        log: kes_raft::LogStore,
        state: Arc<kes_raft::StateHandle>,
        peers: Option<Arc<Peers>>,
        store: Arc<dyn KeyStore>,
        cache: CacheConfig,
        key_type: KeyType,
        seed: Seed,
    ) -> Arc<Self> {
        let metered = MeteredStore::new(store);
        let kms = Arc::clone(metered.health());
        let c = Arc::new(Self {
            id,
            raft,
            log,
            state,
            peers,
            store: Arc::new(metered),
            kms,
            cck: ArcSwapOption::empty(),
            decoded: RwLock::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(HashSet::new()),
            writing: Mutex::new(HashMap::new()),
            last_contact: AtomicU64::new(0),
            epoch: Instant::now(),
            expiry: cache.effective(),
            key_type,
            seed,
            snapshot_recv: Mutex::new(None),
            fatal: tokio::sync::watch::channel(None).0,
            #[cfg(test)]
            fail_tombstone: std::sync::atomic::AtomicBool::new(false),
        });
        c.touch_contact();
        c
    }

    /// Records that a leader (or, on the leader, a quorum) was heard from just now.
    pub fn touch_contact(&self) {
        self.last_contact
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn since_contact(&self) -> Duration {
        let last = self.last_contact.load(Ordering::Relaxed);
        Duration::from_millis((self.epoch.elapsed().as_millis() as u64).saturating_sub(last))
    }

    pub fn is_sealed(&self) -> bool {
        self.cck.load().is_none()
    }

    /// Whether this node may serve crypto operations now.
    pub fn serving(&self) -> Serving {
        if self.is_sealed() {
            return Serving::Sealed;
        }
        let grace = CONTACT_TIMEOUT + self.expiry.offline;
        if self.since_contact() > grace {
            return Serving::CutOff;
        }
        Serving::Ok
    }

    /// Whether this node has lost contact with the majority (within or beyond the window).
    pub fn is_cut_off(&self) -> bool {
        self.since_contact() > CONTACT_TIMEOUT
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
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

    // ---------------------------------------------------------------------------------------
    // Proposals and reads through the leader.

    /// Commits `cmd` through the leader, wherever it is.
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Outcome), ApiError> {
        for _ in 0..3 {
            match self.leader() {
                Some(l) if l == self.id => {
                    return match self.raft.client_write(cmd).await {
                        Ok(r) => Ok((r.log_id.index, r.data)),
                        Err(e) => {
                            tracing::warn!(error = %e, "proposal failed");
                            Err(ApiError::Unavailable)
                        }
                    };
                }
                Some(l) => {
                    let (Some(peers), Some(addr)) = (&self.peers, self.node_addr(l)) else {
                        return Err(ApiError::Unavailable);
                    };
                    match peers
                        .call::<_, ProposeResult>(l, &addr, "/cluster/propose", &cmd, PEER_TIMEOUT)
                        .await
                    {
                        Ok(ProposeResult::Applied { index, outcome }) => {
                            self.wait_applied(index).await?;
                            return Ok((index, outcome));
                        }
                        Ok(ProposeResult::NotLeader { .. }) => {}
                        Ok(ProposeResult::Failed(m)) => {
                            tracing::warn!(error = %m, "proposal failed on the leader");
                            return Err(ApiError::Unavailable);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "proposal could not reach the leader");
                        }
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ApiError::ClusterUnavailable)
    }

    /// Waits until the local state has applied `index` (bounded).
    pub async fn wait_applied(&self, index: u64) -> Result<(), ApiError> {
        let mut rx = self.state.applied_watch();
        let wait = async {
            while *rx.borrow_and_update() < index {
                if rx.changed().await.is_err() {
                    return Err(ApiError::Unavailable);
                }
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or(Err(ApiError::ClusterUnavailable))
    }

    /// The leader's read index, for linearizable reads.
    pub async fn read_index(&self) -> Result<u64, ApiError> {
        for _ in 0..3 {
            match self.leader() {
                Some(l) if l == self.id => {
                    return match self.raft.get_read_log_id().await {
                        Ok((read, _)) => Ok(read.map(|l| l.index).unwrap_or(0)),
                        Err(_) => Err(ApiError::ClusterUnavailable),
                    };
                }
                Some(l) => {
                    let (Some(peers), Some(addr)) = (&self.peers, self.node_addr(l)) else {
                        return Err(ApiError::ClusterUnavailable);
                    };
                    match peers
                        .call::<_, ReadIndexResult>(
                            l,
                            &addr,
                            "/cluster/read-index",
                            &(),
                            PEER_TIMEOUT,
                        )
                        .await
                    {
                        Ok(ReadIndexResult::Index(i)) => return Ok(i),
                        Ok(ReadIndexResult::NotLeader { .. }) | Err(_) => {}
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ApiError::ClusterUnavailable)
    }

    // ---------------------------------------------------------------------------------------
    // Keys.

    fn check_serving(&self) -> Result<(), ApiError> {
        match self.serving() {
            Serving::Ok => Ok(()),
            Serving::Sealed => Err(ApiError::Sealed),
            Serving::CutOff => Err(ApiError::ClusterUnavailable),
        }
    }

    /// Milliseconds since this node started, the clock of `CachedKey::last_used`.
    fn clock_ms(&self) -> u64 {
        // Never 0, which marks a key not used since it was unsealed here.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The key `name` for crypto operations, from the local replica.
    ///
    /// Expiry (see the README's "Cache and KMS outages"): a key is served as it is while the KMS
    /// confirmed it within `cache.expiry.any` and it was used on this node within
    /// `cache.expiry.unused`. Otherwise it is re-confirmed against the KMS first: gone from the
    /// KMS means 404 and eviction everywhere, other material means a fresh read. When the KMS
    /// is unreachable it is served unconfirmed until the outage has lasted
    /// `cache.expiry.offline`, then refused with 504. A miss reads the KMS and proposes a
    /// fill; during an outage it fails at once with 504.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::KeyNotFound);
        }
        self.check_serving()?;
        let now = self.clock_ms();
        if let Some(hit) = self.local(name) {
            match self.freshness(&hit, now) {
                Freshness::Fresh => {
                    hit.key.touch(now);
                    return Ok(hit.key);
                }
                Freshness::Refresh => {
                    hit.key.touch(now);
                    self.refresh_in_background(name, &hit);
                    return Ok(hit.key);
                }
                Freshness::Stale => {
                    if self.kms.is_down() {
                        return self.serve_offline(hit, now);
                    }
                }
            }
        }
        let gate = {
            let mut inflight = self.inflight.lock();
            Arc::clone(inflight.entry(name.to_owned()).or_default())
        };
        let result = {
            let _guard = gate.lock().await;
            self.get_gated(name).await
        };
        {
            let mut inflight = self.inflight.lock();
            if Arc::strong_count(&gate) <= 2 {
                inflight.remove(name);
            }
        }
        result
    }

    /// The slow path of [`Cluster::get`], one caller per name at a time.
    async fn get_gated(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        let now = self.clock_ms();
        let Some(hit) = self.local(name) else {
            if self.kms.is_down() {
                // Not a definitive 404: clients should try elsewhere or later.
                return Err(ApiError::NotReachable);
            }
            self.kms.misses.fetch_add(1, Ordering::Relaxed);
            return self.fetch(name).await;
        };
        if self.freshness(&hit, now) != Freshness::Stale {
            // Someone re-confirmed it while this caller waited.
            hit.key.touch(now);
            return Ok(hit.key);
        }
        if self.kms.is_down() {
            return self.serve_offline(hit, now);
        }
        match self.confirm(name, &hit).await {
            Ok(Confirmation::Same) => {
                hit.key.touch(now);
                Ok(hit.key)
            }
            Ok(Confirmation::Gone) => Err(ApiError::KeyNotFound),
            Ok(Confirmation::Changed) => {
                self.kms.misses.fetch_add(1, Ordering::Relaxed);
                self.fetch(name).await
            }
            Ok(Confirmation::Unreachable) => self.serve_offline(hit, now),
            Err(e) => Err(e),
        }
    }

    fn freshness(&self, hit: &Hit, now: u64) -> Freshness {
        let idle = now.saturating_sub(hit.key.last_used());
        let unused = self.expiry.unused.as_millis() as u64;
        if unused > 0 && (hit.key.last_used() == 0 || idle > unused) {
            return Freshness::Stale;
        }
        let any = self.expiry.any.as_millis() as u64;
        let wall = now_ms();
        if any > 0 && hit.confirmed_at_ms > wall.saturating_add(any) {
            // Confirmed "in the future": a clock ahead of this node's stamped it. The leader
            // bounds confirmations by its own clock; this keeps a leader whose clock runs
            // ahead from making keys fresh for longer than `any` here.
            return Freshness::Stale;
        }
        let age = wall.saturating_sub(hit.confirmed_at_ms);
        if any == 0 || age <= any * 3 / 4 {
            Freshness::Fresh
        } else if age <= any {
            Freshness::Refresh
        } else {
            Freshness::Stale
        }
    }

    /// A stale key while the KMS is unreachable: served until the outage has lasted
    /// `cache.expiry.offline`.
    fn serve_offline(&self, hit: Hit, now: u64) -> Result<Arc<CachedKey>, ApiError> {
        let within = self.kms.down_for().is_some_and(|d| d < self.expiry.offline);
        if within {
            self.kms.served_offline.fetch_add(1, Ordering::Relaxed);
            hit.key.touch(now);
            Ok(hit.key)
        } else {
            Err(ApiError::NotReachable)
        }
    }

    /// Asks the KMS whether it still holds the cached key, and records the answer in the
    /// replicated state: a confirmation, or the eviction of the entry.
    async fn confirm(&self, name: &str, hit: &Hit) -> Result<Confirmation, ApiError> {
        // Keystore reads are key material: wiped when dropped, here and below.
        let read = match tokio::time::timeout(KMS_WAIT, self.store.get(name)).await {
            Ok(r) => r.map(Zeroizing::new),
            Err(_) => {
                let e = StoreError::unavailable(true, format!("no answer within {KMS_WAIT:?}"));
                self.kms.record_unreachable(&e);
                Err(e)
            }
        };
        let answer = match read {
            Ok(raw) if hit.key.is_stored_as(&raw) => Confirmation::Same,
            Ok(_) => Confirmation::Changed,
            Err(StoreError::NotFound) => Confirmation::Gone,
            Err(e) if e.is_unavailable() => return Ok(Confirmation::Unreachable),
            Err(e) => return Err(ApiError::store(StoreOp::Read, e)),
        };
        match answer {
            Confirmation::Same => {
                self.kms.confirmed.fetch_add(1, Ordering::Relaxed);
                if hit.stored_at_ms != 0 {
                    let cmd = Command::ConfirmKeys {
                        names: vec![name.to_owned()],
                        at_ms: now_ms(),
                    };
                    if let Err(e) = self.propose(cmd).await {
                        tracing::debug!(key = %name, error = %e, "confirmation not committed");
                    }
                }
            }
            Confirmation::Gone | Confirmation::Changed => {
                self.kms.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %name, gone = matches!(answer, Confirmation::Gone), "cached key no longer matches the KMS; evicting it");
                self.decoded.write().remove(name);
                if hit.stored_at_ms != 0 {
                    let cmd = Command::EvictKey {
                        name: name.to_owned(),
                        if_stored_at_ms: hit.stored_at_ms,
                    };
                    if let Err(e) = self.propose(cmd).await {
                        tracing::debug!(key = %name, error = %e, "eviction not committed");
                    }
                }
            }
            Confirmation::Unreachable => {}
        }
        Ok(answer)
    }

    /// Re-confirms a key nearing its expiry without holding up the request that noticed.
    fn refresh_in_background(self: &Arc<Self>, name: &str, hit: &Hit) {
        if self.kms.is_down() || !self.refreshing.lock().insert(name.to_owned()) {
            return;
        }
        let this = Arc::clone(self);
        let name = name.to_owned();
        let hit = Hit {
            key: Arc::clone(&hit.key),
            confirmed_at_ms: hit.confirmed_at_ms,
            stored_at_ms: hit.stored_at_ms,
        };
        tokio::spawn(async move {
            if let Err(e) = this.confirm(&name, &hit).await {
                tracing::debug!(key = %name, error = %e.to_kes().message, "background re-confirmation failed");
            }
            this.refreshing.lock().remove(&name);
        });
    }

    /// A key from the local state, or from an earlier KMS read whose fill is not applied yet.
    fn local(&self, name: &str) -> Option<Hit> {
        let (stamp, entry) = self.state.read(|s| {
            let generation = s.generation(name);
            match s.key(name) {
                Some(e) => (
                    (generation, e.stored_at_ms),
                    Some((e.sealed.clone(), e.confirmed_at_ms)),
                ),
                None => ((generation, 0), None),
            }
        });
        let previous = {
            let decoded = self.decoded.read();
            match decoded.get(name) {
                Some((st, k)) if *st == stamp => {
                    return Some(Hit {
                        key: Arc::clone(k),
                        confirmed_at_ms: entry.map_or(k.fetched_at_ms(), |(_, c)| c),
                        stored_at_ms: stamp.1,
                    })
                }
                Some((_, k)) => k.last_used(),
                None => 0,
            }
        };
        let (sealed, confirmed_at_ms) = entry?;
        let cck = self.cck.load_full()?;
        let value = cck.open(name, &sealed)?;
        let version = KeyVersion::parse(&value).ok()?;
        // The same key re-unsealed after its entry changed (a fill of a read of ours, say)
        // keeps its use history.
        let k = Arc::new(CachedKey::new(version, &value, previous));
        self.decoded
            .write()
            .insert(name.to_owned(), (stamp, Arc::clone(&k)));
        Some(Hit {
            key: k,
            confirmed_at_ms,
            stored_at_ms: stamp.1,
        })
    }

    async fn fetch(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        let observed = self.applied_index();
        let generation = self.state.read(|s| s.generation(name));
        let read = match tokio::time::timeout(KMS_WAIT, self.store.get(name)).await {
            Ok(r) => r,
            Err(_) => {
                let e = StoreError::unavailable(true, format!("no answer within {KMS_WAIT:?}"));
                self.kms.record_unreachable(&e);
                // Not a definitive 404: clients should try elsewhere or later.
                return Err(ApiError::NotReachable);
            }
        };
        let raw = read.map(Zeroizing::new).map_err(|e| match e {
            StoreError::NotFound => ApiError::KeyNotFound,
            // A miss while the keystore is down must not look like a definitive 404.
            e => ApiError::store(StoreOp::Read, e),
        })?;
        let version = KeyVersion::parse(&raw).map_err(|e| {
            tracing::error!(key = %name, error = %e, "keystore entry is not a valid key");
            ApiError::store(StoreOp::Read, StoreError::Invalid(e.to_string()))
        })?;
        let at_ms = now_ms();
        let k = Arc::new(CachedKey::new(version, &raw, self.clock_ms()).fetched_at(at_ms));
        self.decoded
            .write()
            .insert(name.to_owned(), ((generation, 0), Arc::clone(&k)));
        let sealed = self.cck.load_full().map(|cck| cck.seal(name, &raw));
        match sealed {
            None => {}
            Some(Err(e)) => tracing::error!(key = %name, error = %e, "cache fill not proposed"),
            Some(Ok(sealed)) => {
                let cmd = Command::FillKey {
                    name: name.to_owned(),
                    sealed,
                    at_ms,
                    observed,
                };
                let this = Arc::clone(self);
                // The answer does not wait for the fill: the keystore is authoritative, and the
                // fill only spares the other nodes (and restarts) a keystore read.
                tokio::spawn(async move {
                    if let Err(e) = this.propose(cmd).await {
                        tracing::debug!(error = %e, "cache fill not committed");
                    }
                });
            }
        }
        Ok(k)
    }

    /// Drops unsealed copies of keys not used here for `cache.expiry.unused`, so that key
    /// material does not stay in memory for idle keys. Their next use re-confirms them.
    pub fn drop_idle(&self) {
        let unused = self.expiry.unused.as_millis() as u64;
        if unused == 0 {
            return;
        }
        let now = self.clock_ms();
        self.decoded
            .write()
            .retain(|_, (_, k)| k.last_used() != 0 && now.saturating_sub(k.last_used()) <= unused);
    }

    /// Watches the KMS: probes it (often during an outage, so that writes resume soon after it
    /// returns) and drops idle unsealed keys. Runs until `cancel` fires.
    pub async fn run_kms(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
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
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait.min(sweep)) => {}
            }
            if Instant::now() >= next_sweep {
                self.drop_idle();
                next_sweep = Instant::now() + sweep;
            }
        }
    }

    /// Linearizable describe: waits for the leader's read index first.
    pub async fn describe(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::KeyNotFound);
        }
        let index = self.read_index().await?;
        self.wait_applied(index).await?;
        match self.get(name).await {
            Err(ApiError::KeyNotFound) => self.committed(name).await,
            r => r,
        }
    }

    /// After the keystore said `name` does not exist: the answer of the committed state, read
    /// after the keystore's. The leader changes the keystore before it commits the change, so
    /// a delete in flight is visible there while the committed state still holds the key and
    /// every node serves it; a "not found" then, followed by a "found" from another node,
    /// would make the delete appear twice. The commit is the point where a write takes effect.
    async fn committed(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        let index = self.read_index().await?;
        self.wait_applied(index).await?;
        if !self.state.read(|s| s.key(name).is_some()) {
            return Err(ApiError::KeyNotFound);
        }
        self.local(name)
            .map(|hit| hit.key)
            .ok_or(ApiError::KeyNotFound)
    }

    /// While the KMS is known to be unreachable, a write first probes it (bounded by
    /// [`kms::PROBE_TIMEOUT`]) instead of waiting for the KMS client's timeouts and retries:
    /// refused at once while the outage lasts, accepted as soon as the KMS is back.
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
    ) -> Result<(), ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::ReservedName(name.to_owned()));
        }
        if !self.is_leader() {
            return Err(ApiError::ClusterUnavailable);
        }
        let cck = self.cck.load_full().ok_or(ApiError::Sealed)?;
        self.check_kms_for_write()
            .await
            .map_err(|e| ApiError::store(StoreOp::Create, e))?;
        let encoded = Zeroizing::new(version.encode());
        // Once sent to the KMS, the create runs to its end (and its reconciliation starts
        // when needed) even if the request is abandoned: a route timeout, a client that hung
        // up, a forwarding node that gave up.
        let this = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move { this.create_detached(name, encoded, cck).await })
            .await
            .unwrap_or(Err(ApiError::Unavailable))
    }

    /// Serialises the writes of one name (see `writing`).
    async fn write_lock(&self, name: &str) -> WriteGuard<'_> {
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
    ) -> Result<(), ApiError> {
        let name = name.as_str();
        // Sealed before the keystore write: a failure here leaves nothing half-written.
        let sealed = cck.seal(name, &encoded).map_err(|e| {
            tracing::error!(key = %name, error = %e, "create refused");
            ApiError::Internal("sealing the cache entry failed")
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
                    Ok(_) | Err(StoreError::NotFound) => return Err(ApiError::KeyExists),
                    Err(e) => {
                        // Ours or not is unknown until the KMS answers.
                        self.reconcile_create(name, encoded, generation);
                        return Err(ApiError::store(StoreOp::Create, e));
                    }
                }
            }
            Err(
                e @ StoreError::Unavailable {
                    retryable: false, ..
                },
            ) => {
                self.reconcile_create(name, encoded, generation);
                return Err(ApiError::store(StoreOp::Create, e));
            }
            Err(e) => return Err(ApiError::store(StoreOp::Create, e)),
        }
        let cmd = Command::PutKey {
            name: name.to_owned(),
            sealed,
            at_ms: now_ms(),
        };
        match self.raft.client_write(cmd).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The KMS has the key; reconciliation puts it in the cache through whichever
                // node leads next.
                tracing::warn!(key = %name, error = %e, "key created but not committed");
                self.reconcile_create(name, encoded, generation);
                Err(ApiError::PartialWrite(StoreOp::Create))
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
    fn reconcile_create(
        self: &Arc<Self>,
        name: &str,
        encoded: Zeroizing<Vec<u8>>,
        generation: u64,
    ) {
        let this = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
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
                            at_ms: now_ms(),
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
            at_ms: now_ms(),
        };
        match self.raft.client_write(cmd).await {
            Ok(_) => RollForward::Done,
            // In the KMS now: the next pass finds it there and fills the cache.
            Err(_) => RollForward::Retry,
        }
    }

    /// Deletes `name` from the keystore, then commits a tombstone. Runs on the leader.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::ReservedName(name.to_owned()));
        }
        if !self.is_leader() {
            return Err(ApiError::ClusterUnavailable);
        }
        self.check_kms_for_write()
            .await
            .map_err(|e| ApiError::store(StoreOp::Delete, e))?;
        // As with create: once the KMS is asked, the tombstone follows even if the request is
        // abandoned.
        let this = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move { this.delete_detached(&name).await })
            .await
            .unwrap_or(Err(ApiError::Unavailable))
    }

    async fn delete_detached(self: &Arc<Self>, name: &str) -> Result<(), ApiError> {
        let _writing = self.write_lock(name).await;
        let generation = self.state.read(|s| s.generation(name));
        let r = self.store.delete(name).await;
        let known = self.state.read(|s| s.key(name).is_some());
        match &r {
            Ok(()) => {}
            // Deleted in the keystore behind our back: drop the cached copy too.
            Err(StoreError::NotFound) if known => {}
            Err(_) => return r.map_err(|e| ApiError::store(StoreOp::Delete, e)),
        }
        match self.write_tombstone(name).await {
            Ok(index) => self.spread(index).await,
            Err(e) => {
                // Gone from the keystore but still in the cache: settle it like a lost create,
                // so the key ends up in neither.
                tracing::warn!(key = %name, error = %e, "key deleted but tombstone not committed");
                self.reconcile_delete(name, generation);
                return Err(ApiError::PartialWrite(StoreOp::Delete));
            }
        }
        r.map_err(|e| ApiError::store(StoreOp::Delete, e))
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

    pub async fn list(&self, prefix: &str, continue_at: &str) -> Result<ListPage, ApiError> {
        let mut page = self
            .store
            .list(prefix, continue_at, MAX_LIST_PAGE)
            .await
            .map_err(|e| ApiError::store(StoreOp::List, e))?;
        let before = page.names.len();
        page.names.retain(|n| n != WRAPPING_KEY);
        if page.names.len() < before && !page.continue_at.is_empty() {
            // Keep pages full: take the next name in the hidden entry's place.
            let next = self
                .store
                .list(prefix, &page.continue_at, 1)
                .await
                .map_err(|e| ApiError::store(StoreOp::List, e))?;
            page.names.extend(next.names);
            page.continue_at = next.continue_at;
        }
        Ok(page)
    }

    /// The KMS's health for `/v1/status`: during an outage the answer is immediate (the
    /// background probe watches for the KMS's return); otherwise a probe bounded by
    /// [`kms::PROBE_TIMEOUT`].
    pub async fn status(&self) -> Result<StoreStatus, StoreError> {
        if let Some(reason) = self.kms.down_reason() {
            return Err(StoreError::unavailable(true, reason));
        }
        self.kms.probe(self.store.as_ref()).await
    }

    pub fn cached_len(&self) -> usize {
        self.state.read(|s| s.key_count())
    }

    // ---------------------------------------------------------------------------------------
    // The cluster cache key.

    pub fn cck(&self) -> Option<Arc<Cck>> {
        self.cck.load_full()
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
    async fn initialize_state(&self) -> Result<(), ApiError> {
        // A new leader may hold a committed Init it has not applied yet. Creating the wrapping
        // key then would be wrong if the keystore lost the entry: a fresh key cannot open the
        // committed wrapped CCK, and would stand in the way of restoring the old entry. So the
        // state must have applied everything this leader's term has committed first.
        let read = self
            .raft
            .get_read_log_id()
            .await
            .map_err(|_| ApiError::ClusterUnavailable)?;
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
                .map_err(|_| ApiError::ClusterUnavailable)?;
            if r.data == Outcome::Applied {
                tracing::info!("cluster state restored from a backup");
            }
            return Ok(());
        }
        let cck = Cck::generate();
        let wrapping = self
            .wrapping_key(true)
            .await
            .map_err(|e| ApiError::store(StoreOp::Create, e))?;
        let wrapped = wrapping.key.encrypt(cck.bytes(), CCK_AD);
        let cmd = Command::Init {
            wrapped_cck: wrapped,
            admin: self.seed.admin.clone(),
            policies: self.seed.policies.clone(),
            assignments: self.seed.assignments.clone(),
            at_ms: now_ms(),
        };
        let r = self
            .raft
            .client_write(cmd)
            .await
            .map_err(|_| ApiError::ClusterUnavailable)?;
        if r.data == Outcome::Applied {
            self.cck.store(Some(Arc::new(cck)));
            tracing::info!("cluster state initialised");
        }
        Ok(())
    }

    /// Tries to get the CCK: from a live peer, else through the keystore.
    async fn unseal(&self) -> seal::Unseal {
        use seal::Unseal;
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

    /// Background duties: initialise the state when leading a fresh group, unseal, track
    /// contact with the majority, and prune tombstones while leading (`prune`, its own task).
    /// Runs until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        tokio::spawn(Arc::clone(&self).run_prune(cancel.child_token()));
        tokio::spawn(Arc::clone(&self).run_wrapping_check(cancel.child_token()));
        let mut metrics = self.raft.metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut next_unseal = Instant::now();
        let mut missing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                r = metrics.changed() => if r.is_err() { return },
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
                if self.unseal().await != seal::Unseal::WrappingKeyMissing {
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
                    self.fatal.send_replace(Some(message));
                    return;
                }
            }
        }
    }

    /// Forgets unsealed copies of keys; used after the state is replaced by a snapshot.
    pub fn clear_decoded(&self) {
        self.decoded.write().clear();
    }
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> Self {
        tracing::debug!(error = %e, "peer call failed");
        ApiError::ClusterUnavailable
    }
}

#[cfg(test)]
mod tests;
