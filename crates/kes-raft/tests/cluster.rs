//! Three (then four) openraft nodes in one process over the sled store, joined by an in-memory
//! network that calls the target node's `Raft` handle directly. Proves that the store works
//! under openraft itself: replication, snapshots and log purging, a learner catching up from a
//! snapshot, and a follower restarted from its directory.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kes_raft::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    Node, NodeId, Raft, RaftError, VoteRequest, VoteResponse,
};
use kes_raft::{SledStore, StateHandle, TypeConfig};
use kes_state::{Command, Outcome, State};
use openraft::error::{InstallSnapshotError, RPCError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::{Config, SnapshotPolicy};
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(20);

type Rpc<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, Node, RaftError<E>>>;

/// The nodes of the test cluster; a node missing from the map is unreachable.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft>>>,
}

impl Router {
    fn get(&self, target: NodeId) -> Option<Raft> {
        self.nodes.lock().get(&target).cloned()
    }
}

fn down<E: std::error::Error>() -> RPCError<NodeId, Node, RaftError<E>> {
    let e = std::io::Error::new(std::io::ErrorKind::NotConnected, "node is down");
    RPCError::Unreachable(Unreachable::new(&e))
}

struct Connection {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Connection {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Rpc<AppendEntriesResponse> {
        let raft = self.router.get(self.target).ok_or_else(down)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        _option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse, InstallSnapshotError> {
        let raft = self.router.get(self.target).ok_or_else(down)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(&mut self, rpc: VoteRequest, _option: RPCOption) -> Rpc<VoteResponse> {
        let raft = self.router.get(self.target).ok_or_else(down)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn config() -> anyhow::Result<Arc<Config>> {
    let config = Config {
        cluster_name: "kes-raft-test".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        // Small, so that the writes below build snapshots and purge the log behind them.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

fn node(id: NodeId) -> Node {
    Node::new(format!("node-{id}"))
}

async fn start(
    router: &Router,
    id: NodeId,
    dir: &Path,
) -> anyhow::Result<(Raft, Arc<StateHandle>)> {
    // After `shutdown`, openraft's state-machine worker may still hold the previous stores (and
    // sled's directory lock) for a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (log, sm) = loop {
        match SledStore::open(dir) {
            Ok(stores) => break stores,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let handle = sm.handle();
    let raft = Raft::new(id, config()?, router.clone(), log, sm).await?;
    router.nodes.lock().insert(id, raft.clone());
    Ok((raft, handle))
}

/// Writes through whichever node leads.
async fn write(nodes: &BTreeMap<NodeId, Raft>, cmd: Command) -> anyhow::Result<(u64, Outcome)> {
    let any = nodes
        .values()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    let metrics = any
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await?;
    let leader = metrics
        .current_leader
        .and_then(|id| nodes.get(&id))
        .ok_or_else(|| anyhow::anyhow!("leader not among the nodes"))?;
    let response = leader.client_write(cmd).await?;
    Ok((response.log_id.index, response.data))
}

async fn applied(handle: &StateHandle, index: u64) -> anyhow::Result<State> {
    tokio::time::timeout(WAIT, handle.wait_applied(index)).await?;
    Ok(handle.read(State::clone))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_snapshot_and_restart() -> anyhow::Result<()> {
    let dirs = tempfile::tempdir()?;
    let dir = |id: NodeId| dirs.path().join(format!("node-{id}"));
    let router = Router::default();

    let mut rafts = BTreeMap::new();
    let mut handles = BTreeMap::new();
    for id in 1..=3 {
        let (raft, handle) = start(&router, id, &dir(id)).await?;
        rafts.insert(id, raft);
        handles.insert(id, handle);
    }
    let members: BTreeMap<NodeId, Node> = (1..=3).map(|id| (id, node(id))).collect();
    rafts[&1].initialize(members).await?;

    let (_, outcome) = write(&rafts, init()).await?;
    assert_eq!(outcome, Outcome::Applied);
    let mut last = 0;
    for i in 0..30 {
        let (index, outcome) = write(&rafts, put_key(&format!("k{i}"), 100 + i)).await?;
        assert_eq!(outcome, Outcome::Applied);
        last = index;
    }
    let (index, outcome) = write(&rafts, delete_key("k3", 200)).await?;
    assert_eq!(outcome, Outcome::Applied);
    last = last.max(index);

    // Every node applies the same state, through the same index.
    let leader_state = applied(&handles[&1], last).await?;
    assert!(leader_state.key("k3").is_none() && leader_state.is_tombstoned("k3"));
    assert_eq!(leader_state.key_count(), 29);
    for id in 2..=3 {
        assert_eq!(
            applied(&handles[&id], last).await?,
            leader_state,
            "node {id}"
        );
    }

    // The leader purged its log behind a snapshot, so a new learner can only catch up from one.
    let leader_id = rafts[&1]
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await?
        .current_leader
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    rafts[&leader_id]
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some(), "leader purged its log")
        .await?;
    let (raft4, handle4) = start(&router, 4, &dir(4)).await?;
    rafts[&leader_id].add_learner(4, node(4), true).await?;
    let metrics4 = raft4
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "learner installed a snapshot")
        .await?;
    assert!(metrics4.snapshot.is_some());
    let (index, _) = write(&rafts, put_key("after-learner", 300)).await?;
    let state4 = applied(&handle4, index).await?;
    assert_eq!(state4, applied(&handles[&leader_id], index).await?);

    // Restart a follower from its directory while the others keep writing.
    let follower = (1..=3).find(|id| *id != leader_id).unwrap_or(2);
    router.nodes.lock().remove(&follower);
    if let Some(raft) = rafts.remove(&follower) {
        raft.shutdown().await?;
    }
    handles.remove(&follower);
    let (index, _) = write(&rafts, put_key("while-down", 400)).await?;
    let (raft, handle) = start(&router, follower, &dir(follower)).await?;
    rafts.insert(follower, raft);
    let restarted = applied(&handle, index).await?;
    assert!(restarted.key("while-down").is_some());
    assert_eq!(restarted, applied(&handles[&leader_id], index).await?);

    for raft in rafts.values().chain([&raft4]) {
        raft.shutdown().await?;
    }
    Ok(())
}
