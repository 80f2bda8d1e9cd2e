//! Opening a node: its data directory, Raft, its peers, the metered keystore.

use crate::peer::client::{Network, Peers};
use crate::peer::tls;
use crate::peer::transport::PeerTransport;
use crate::{
    Clock, Cluster, ClusterError, KmsHealth, Seed, ELECTION_TIMEOUT_MAX, ELECTION_TIMEOUT_MIN,
};
use arc_swap::ArcSwapOption;
use kes_config::{CacheConfig, ClusterConfig};
use kes_crypto::KeyType;
use kes_keystore::KeyStore;
use kes_raft::types::{NodeId, Raft};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// What a node is opened with.
pub struct Options {
    /// The `cluster:` section; `None`: a single node keeping its state in memory.
    pub cluster: Option<ClusterConfig>,
    /// `cache.expiry` as configured (KES's defaults are applied here).
    pub cache: CacheConfig,
    pub key_type: KeyType,
    pub seed: Seed,
    pub clock: Arc<dyn Clock>,
}

/// Raft timing: heartbeats well inside the contact timeout, elections a few heartbeats later.
/// openraft's own election timer is off: `elect` starts elections after a pre-vote.
fn raft_config() -> Result<Arc<openraft::Config>, ClusterError> {
    let cfg = openraft::Config {
        cluster_name: "kes".into(),
        heartbeat_interval: 100,
        election_timeout_min: ELECTION_TIMEOUT_MIN,
        election_timeout_max: ELECTION_TIMEOUT_MAX,
        enable_elect: false,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5_000),
        // A member further behind than this after a snapshot catches up from the snapshot.
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    };
    cfg.validate().map(Arc::new).map_err(|e| {
        tracing::error!(error = %e, "invalid raft configuration");
        ClusterError::Internal("invalid raft configuration")
    })
}

/// Why a node could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the data directory: {0}")]
    DataDir(String),
    /// The data directory is of another format version (or cannot be checked).
    #[error(transparent)]
    Format(#[from] kes_raft::DataDirError),
    #[error("{0}")]
    Tls(#[from] kes_tls::TlsError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("{0}")]
    Cluster(#[from] ClusterError),
}

impl Cluster {
    /// Opens the node: its data directory (in memory without a `cluster:` section), Raft, and
    /// its peers. On a node whose log is empty, the configured members form the group (every
    /// member calls this with the same set; only an empty log accepts it, so the group forms
    /// whichever nodes come up first). Nothing runs until [`Cluster::start`].
    pub async fn open(opts: Options, store: Arc<dyn KeyStore>) -> Result<Arc<Self>, OpenError> {
        let peers: Option<Arc<dyn PeerTransport>> = match &opts.cluster {
            Some(c) => Some(Peers::new(tls::client_config(&c.tls)?)),
            None => None,
        };
        if let Some(c) = &opts.cluster {
            // Its own error first: another format version must be named as such, not as a
            // storage failure.
            kes_raft::store::datadir::prepare_data_dir(&c.data_dir)?;
        }
        let opened = match &opts.cluster {
            Some(c) => kes_raft::SledStore::open(&c.data_dir),
            None => kes_raft::SledStore::open_temporary(),
        };
        let stores = opened.map_err(|e| OpenError::DataDir(e.to_string()))?;
        Self::open_with(opts, store, peers, stores).await
    }

    /// Opens the node on the given network and Raft storage instead of those its
    /// configuration names (`opts.cluster`'s `data_dir` and `tls` are not read): what the
    /// deterministic simulation runs nodes on.
    pub async fn open_with(
        opts: Options,
        store: Arc<dyn KeyStore>,
        peers: Option<Arc<dyn PeerTransport>>,
        (log_store, sm_store): (kes_raft::LogStore, kes_raft::StateMachineStore),
    ) -> Result<Arc<Self>, OpenError> {
        let (id, members) = match &opts.cluster {
            Some(c) => (c.node_id, c.members.clone()),
            None => {
                let mut m = BTreeMap::new();
                m.insert(1, String::new());
                (1, m)
            }
        };
        let state = sm_store.handle();
        let mut seed = opts.seed;
        seed.restore = restore_seed(&log_store, &state, &seed.admin)?;
        // A single node has no peers; its network is never used.
        let network = Network {
            peers: match &peers {
                Some(p) => Arc::clone(p),
                None => Peers::new(tls::no_peers_config()),
            },
        };
        let raft = Raft::new(id, raft_config()?, network, log_store.clone(), sm_store)
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        if !initialized && !members.is_empty() {
            let nodes: BTreeMap<NodeId, openraft::BasicNode> = members
                .iter()
                .map(|(id, addr)| (*id, openraft::BasicNode { addr: addr.clone() }))
                .collect();
            if let Err(e) = raft.initialize(nodes).await {
                tracing::debug!(error = %e, "raft initialisation skipped");
            }
        }
        let metered = crate::kms::MeteredStore::new(store, Arc::clone(&opts.clock));
        let kms: Arc<KmsHealth> = Arc::clone(metered.health());
        let c = Arc::new(Self {
            id,
            raft,
            log: log_store,
            state,
            peers,
            store: Arc::new(metered),
            kms,
            clock: opts.clock,
            cck: ArcSwapOption::empty(),
            decoded: RwLock::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(HashSet::new()),
            writing: Mutex::new(HashMap::new()),
            last_contact: AtomicU64::new(0),
            holds: Default::default(),
            decoded_version: AtomicU64::new(0),
            view_id: crate::view::next_cluster_id(),
            expiry: opts.cache.effective(),
            key_type: opts.key_type,
            seed,
            snapshot_recv: Mutex::new(None),
            background: tokio_util::task::TaskTracker::new(),
            rng: Mutex::new(rand::SeedableRng::from_entropy()),
            #[cfg(test)]
            fail_tombstone: std::sync::atomic::AtomicBool::new(false),
        });
        c.touch_contact();
        Ok(c)
    }
}

/// The state a data directory was seeded with by `kes cluster restore`, as the command the
/// cluster starts from; removed once the cluster exists.
fn restore_seed(
    log: &kes_raft::LogStore,
    state: &kes_raft::StateHandle,
    admin: &str,
) -> Result<Option<kes_state::Command>, OpenError> {
    let seed = log
        .restore_seed()
        .map_err(|e| OpenError::DataDir(format!("cannot read the restore seed: {e}")))?;
    let Some(snapshot) = seed else {
        return Ok(None);
    };
    if state.read(|s| s.is_initialized()) {
        log.clear_restore_seed()
            .map_err(|e| OpenError::DataDir(format!("cannot remove the restore seed: {e}")))?;
        return Ok(None);
    }
    if let Err(e) = kes_state::State::decode_snapshot(&snapshot) {
        return Err(OpenError::DataDir(format!(
            "the restored state in the data directory is damaged ({e}): delete the directory and run kes cluster restore again"
        )));
    }
    tracing::info!(
        bytes = snapshot.len(),
        "data directory restored from a backup: the cluster starts from it"
    );
    Ok(Some(kes_state::Command::Restore {
        snapshot,
        admin: admin.to_owned(),
    }))
}
