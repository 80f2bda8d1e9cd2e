//! What can go wrong in the cluster, in the cluster's terms. The server turns these into HTTP
//! answers in one place (`From<ClusterError> for ApiError`): which status a failure gets is
//! not decided here.

use kes_keystore::StoreError;

/// Which keystore operation failed, for KES's `failed to <op> key` messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoreOp {
    Create,
    Read,
    Delete,
    List,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("key does not exist")]
    KeyNotFound,
    #[error("key already exists")]
    KeyExists,
    /// A name the cluster keeps for itself (the wrapping key's entry).
    #[error("key name '{0}' is reserved")]
    ReservedName(String),
    /// The node does not have the cluster cache key yet.
    #[error("node is sealed")]
    Sealed,
    /// This node has been cut off from the majority for longer than the offline window.
    #[error("cut off from the majority")]
    CutOff,
    /// No leader, or no quorum, could be reached in time.
    #[error("no leader or quorum reachable")]
    NoLeader,
    /// A leadership transfer that did not happen (the message says why).
    #[error("{0}")]
    Transfer(String),
    /// The leader could not commit a proposal (leadership lost meanwhile, storage failure).
    #[error("proposal not committed: {0}")]
    NotCommitted(String),
    /// The KMS did not answer in time; nothing definitive is known about the key.
    #[error("keystore not reachable")]
    KmsUnreachable,
    #[error("keystore {op:?} failed: {err}")]
    Store { op: StoreOp, err: StoreError },
    /// The keystore changed (a create or a delete) but the cluster did not commit the change
    /// yet; a background task is settling it. The outcome is not known to the caller.
    #[error("keystore {0:?} done but not committed")]
    Indeterminate(StoreOp),
    /// A membership change that cannot be made as asked (the message says why and what to do).
    #[error("{0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ClusterError {
    /// A keystore failure of `op`: "not found" and "exists" are the answers they mean.
    pub fn store(op: StoreOp, err: StoreError) -> Self {
        match err {
            StoreError::NotFound if op != StoreOp::Create => Self::KeyNotFound,
            StoreError::AlreadyExists if op == StoreOp::Create => Self::KeyExists,
            err => Self::Store { op, err },
        }
    }
}
