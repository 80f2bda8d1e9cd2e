//! The messages of the node-to-node protocol besides Raft's own (see `PROTOCOL_VERSION`).

use kes_raft::types::NodeId;
use kes_state::{Outcome, PolicyDef};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

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

/// A write that only the leader runs, as a member received it from a client, after the member
/// checked its syntax. The leader checks everything again.
#[derive(Debug, Serialize, Deserialize)]
pub enum WriteOp {
    CreateKey {
        name: String,
    },
    ImportKey {
        name: String,
        /// KES's cipher name as the client sent it (empty: AES256).
        cipher: String,
        /// The key material; wiped when dropped.
        key: Zeroizing<Vec<u8>>,
    },
    DeleteKey {
        name: String,
    },
    SetPolicy {
        name: String,
        policy: PolicyDef,
    },
    AssignPolicy {
        policy: String,
        identity: String,
    },
    DeletePolicy {
        name: String,
    },
    DeleteIdentity {
        identity: String,
    },
    AddNode {
        id: NodeId,
        address: String,
        voter: bool,
    },
    RemoveNode {
        id: NodeId,
    },
}

impl WriteOp {
    /// The KES API path the write was requested on: what the caller's policy is checked
    /// against, and what the audit event names.
    pub fn path(&self) -> String {
        match self {
            Self::CreateKey { name } => format!("/v1/key/create/{name}"),
            Self::ImportKey { name, .. } => format!("/v1/key/import/{name}"),
            Self::DeleteKey { name } => format!("/v1/key/delete/{name}"),
            Self::SetPolicy { name, .. } => format!("/v1/policy/write/{name}"),
            Self::AssignPolicy { policy, .. } => format!("/v1/policy/assign/{policy}"),
            Self::DeletePolicy { name } => format!("/v1/policy/delete/{name}"),
            Self::DeleteIdentity { identity } => format!("/v1/identity/delete/{identity}"),
            Self::AddNode { id, .. } => format!("/v1/cluster/add/{id}"),
            Self::RemoveNode { id } => format!("/v1/cluster/remove/{id}"),
        }
    }
}

/// A write forwarded to the leader, for the identity the member authenticated.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forward {
    pub identity: String,
    /// The client's address as the member saw it, for the leader's audit event.
    pub client: String,
    pub op: WriteOp,
}

/// Why the leader did not run a write: the status and message of the client's answer, as the
/// leader's error mapping made them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// The leader's answer to a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardResult {
    Done,
    Refused(Refusal),
    /// The receiver is not the leader (any more): send it to `leader`, or wait for one.
    NotLeader {
        leader: Option<NodeId>,
    },
}
