//! The openraft type configuration of the cluster and short names for the openraft types that
//! the server and the network use with it, so that no other crate repeats the generics.

openraft::declare_raft_types!(
    /// The cluster's Raft: log entries carry [`kes_state::Command`]s, applying one answers a
    /// [`kes_state::Outcome`], nodes are numbered as in the `cluster.members` configuration and
    /// addressed by their node-to-node `host:port`, and snapshots travel as whole byte buffers
    /// (a state of sealed keys and policies is small enough to hold in memory).
    pub TypeConfig:
        D = kes_state::Command,
        R = kes_state::Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id: `cluster.node_id`, unique and stable, from 1.
pub type NodeId = u64;
/// What the cluster knows about a member: its advertised node-to-node address.
pub type Node = openraft::BasicNode;

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type LogState = openraft::LogState<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;

/// An error from a Raft API call; `E` is the call's own error (e.g. [`ClientWriteError`]).
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
pub type InitializeError = openraft::error::InitializeError<NodeId, Node>;
