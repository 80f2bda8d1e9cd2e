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

pub mod net;
pub mod rpc;
pub mod tls;

use crate::error::{ApiError, StoreOp};
use crate::keys::CachedKey;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use arc_swap::ArcSwapOption;
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::{KeyStore, ListPage, StoreError, StoreStatus, MAX_LIST_PAGE};
use kes_raft::types::{NodeId, Raft};
use kes_state::{Command, Outcome, State};
use net::{PeerError, Peers, PEER_TIMEOUT};
use openraft::BasicNode;
use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The 32-byte cluster cache key.
pub struct Cck(Zeroizing<[u8; 32]>);

impl Cck {
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }

    /// `nonce || AES-256-GCM(cck, value, AD = name)`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // Encrypting a short value into a Vec cannot fail.
        if let Ok(ct) = self.cipher().encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value,
                aad: name.as_bytes(),
            },
        ) {
            out.extend_from_slice(&ct);
        }
        out
    }

    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = b.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }
}

/// Messages between nodes besides Raft's own.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub method: String,
    pub path_and_query: String,
    pub identity: String,
    pub body: Vec<u8>,
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
    pub store: Arc<dyn KeyStore>,
    cck: ArcSwapOption<Cck>,
    /// Unsealed keys by name, stamped with the (generation, stored_at) of the state entry they
    /// came from; a changed stamp means the entry changed and the copy is stale.
    decoded: RwLock<HashMap<String, (Stamp, Arc<CachedKey>)>>,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Milliseconds since `epoch` when this node last heard from a leader (or a quorum).
    last_contact: AtomicU64,
    epoch: Instant,
    offline_window: Duration,
    key_type: KeyType,
    seed: Seed,
}

/// (generation, stored_at) of the state entry an unsealed key came from.
type Stamp = (u64, u64);

/// What the configuration of the initialising node seeds the state with.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    pub admin: String,
    pub policies: BTreeMap<String, kes_state::PolicyDef>,
    pub assignments: BTreeMap<String, String>,
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: Arc<kes_raft::StateHandle>,
        peers: Option<Arc<Peers>>,
        store: Arc<dyn KeyStore>,
        offline_window: Duration,
        key_type: KeyType,
        seed: Seed,
    ) -> Arc<Self> {
        let c = Arc::new(Self {
            id,
            raft,
            state,
            peers,
            store,
            cck: ArcSwapOption::empty(),
            decoded: RwLock::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            last_contact: AtomicU64::new(0),
            epoch: Instant::now(),
            offline_window,
            key_type,
            seed,
        });
        c.touch_contact();
        c
    }

    /// Records that a leader (or, on the leader, a quorum) was heard from just now.
    pub fn touch_contact(&self) {
        self.last_contact
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since_contact(&self) -> Duration {
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
        let grace = CONTACT_TIMEOUT + self.offline_window;
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

    /// The key `name` for crypto operations, from the local replica; a miss reads the
    /// keystore and proposes a fill.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::KeyNotFound);
        }
        self.check_serving()?;
        if let Some(k) = self.local(name) {
            return Ok(k);
        }
        let gate = {
            let mut inflight = self.inflight.lock();
            Arc::clone(inflight.entry(name.to_owned()).or_default())
        };
        let result = {
            let _guard = gate.lock().await;
            match self.local(name) {
                Some(k) => Ok(k),
                None => self.fetch(name).await,
            }
        };
        {
            let mut inflight = self.inflight.lock();
            if Arc::strong_count(&gate) <= 2 {
                inflight.remove(name);
            }
        }
        result
    }

    /// A key from the local state or from an earlier keystore read still valid for it.
    fn local(&self, name: &str) -> Option<Arc<CachedKey>> {
        let (stamp, sealed) = self.state.read(|s| {
            let generation = s.generation(name);
            match s.key(name) {
                Some(e) => ((generation, e.stored_at_ms), Some(e.sealed.clone())),
                None => ((generation, 0), None),
            }
        });
        if let Some((st, k)) = self.decoded.read().get(name) {
            if *st == stamp {
                k.touch();
                return Some(Arc::clone(k));
            }
        }
        let sealed = sealed?;
        let cck = self.cck.load_full()?;
        let value = cck.open(name, &sealed)?;
        let version = KeyVersion::parse(&value).ok()?;
        let k = Arc::new(CachedKey::new(version));
        self.decoded
            .write()
            .insert(name.to_owned(), (stamp, Arc::clone(&k)));
        Some(k)
    }

    async fn fetch(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        let observed = self.applied_index();
        let generation = self.state.read(|s| s.generation(name));
        let raw = self.store.get(name).await.map_err(|e| match e {
            // A miss while the keystore is down must not look like a definitive 404.
            StoreError::NotFound => ApiError::KeyNotFound,
            e => ApiError::store(StoreOp::Read, e),
        })?;
        let version = KeyVersion::parse(&raw).map_err(|e| {
            tracing::error!(key = %name, error = %e, "keystore entry is not a valid key");
            ApiError::store(StoreOp::Read, StoreError::Invalid(e.to_string()))
        })?;
        let k = Arc::new(CachedKey::new(version));
        self.decoded
            .write()
            .insert(name.to_owned(), ((generation, 0), Arc::clone(&k)));
        if let Some(cck) = self.cck.load_full() {
            let cmd = Command::FillKey {
                name: name.to_owned(),
                sealed: cck.seal(name, &raw),
                at_ms: now_ms(),
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
        Ok(k)
    }

    /// Linearizable describe: waits for the leader's read index first.
    pub async fn describe(self: &Arc<Self>, name: &str) -> Result<Arc<CachedKey>, ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::KeyNotFound);
        }
        let index = self.read_index().await?;
        self.wait_applied(index).await?;
        self.get(name).await
    }

    /// Creates `name` in the keystore, then commits the entry. Runs on the leader.
    pub async fn create(&self, name: &str, version: &KeyVersion) -> Result<(), ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::ReservedName(name.to_owned()));
        }
        if !self.is_leader() {
            return Err(ApiError::ClusterUnavailable);
        }
        let cck = self.cck.load_full().ok_or(ApiError::Sealed)?;
        let encoded = version.encode();
        self.store
            .create(name, &encoded)
            .await
            .map_err(|e| ApiError::store(StoreOp::Create, e))?;
        let cmd = Command::PutKey {
            name: name.to_owned(),
            sealed: cck.seal(name, &encoded),
            at_ms: now_ms(),
        };
        match self.raft.client_write(cmd).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The keystore has the key; the next miss anywhere fills it.
                tracing::warn!(key = %name, error = %e, "key created but not committed");
                Err(ApiError::PartialWrite)
            }
        }
    }

    /// Deletes `name` from the keystore, then commits a tombstone. Runs on the leader.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        if name == WRAPPING_KEY {
            return Err(ApiError::ReservedName(name.to_owned()));
        }
        if !self.is_leader() {
            return Err(ApiError::ClusterUnavailable);
        }
        let r = self.store.delete(name).await;
        let known = self.state.read(|s| s.key(name).is_some());
        match &r {
            Ok(()) => {}
            // Deleted in the keystore behind our back: drop the cached copy too.
            Err(StoreError::NotFound) if known => {}
            Err(_) => return r.map_err(|e| ApiError::store(StoreOp::Delete, e)),
        }
        let cmd = Command::DeleteKey {
            name: name.to_owned(),
            at_ms: now_ms(),
        };
        if let Err(e) = self.raft.client_write(cmd).await {
            tracing::warn!(key = %name, error = %e, "key deleted but tombstone not committed");
            return Err(ApiError::PartialWrite);
        }
        r.map_err(|e| ApiError::store(StoreOp::Delete, e))
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

    pub async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.store.status().await
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
            match self.store.create(WRAPPING_KEY, &fresh.encode()).await {
                Ok(()) => return Ok(fresh),
                Err(StoreError::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        let raw = self.store.get(WRAPPING_KEY).await?;
        KeyVersion::parse(&raw).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    /// Initialises the replicated state if nobody has: a fresh CCK, wrapped by the keystore,
    /// and the seed policies. Runs on the leader.
    async fn initialize_state(&self) -> Result<(), ApiError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        let wrapping = self
            .wrapping_key(true)
            .await
            .map_err(|e| ApiError::store(StoreOp::Create, e))?;
        let wrapped = wrapping.key.encrypt(raw.as_ref(), CCK_AD);
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
            self.cck.store(Some(Arc::new(Cck(raw))));
            tracing::info!("cluster state initialised");
        }
        Ok(())
    }

    /// Tries to get the CCK: from a live peer, else through the keystore.
    async fn unseal(&self) -> bool {
        let Some(wrapped) = self.state.read(|s| s.wrapped_cck().map(<[u8]>::to_vec)) else {
            return false;
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
                            return true;
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
                        return true;
                    }
                    false
                }
                Err(_) => {
                    tracing::error!(
                        "the keystore's wrapping key does not open the cluster cache key"
                    );
                    false
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot unwrap the cluster cache key yet");
                false
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

    /// Background duties: initialise the state when leading a fresh group, unseal, and track
    /// contact with the majority. Runs until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut metrics = self.raft.metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut next_unseal = Instant::now();
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
                self.unseal().await;
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
