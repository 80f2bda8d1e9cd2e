//! The cluster's replicated state machine, pure: the [`Command`]s that go through the Raft log,
//! the [`State`] they build, the deterministic [`State::apply`] every node runs on each committed
//! entry, and the snapshot codec that ships a whole [`State`] to a lagging or new node. The state
//! is a cache of sealed keys (the external KMS stays the source of truth), per-name tombstones and
//! generations that keep stale cache fills out, and the policy and identity assignments that KES
//! admins manage. Nothing here does I/O, reads a clock or draws randomness, so that every replica
//! that applies the same log reaches byte-identical state; the Raft storage adapter owns
//! persistence and the server owns crypto.

mod backup;
mod command;
mod snapshot;
mod state;

#[cfg(test)]
mod model_tests;

pub use backup::{Backup, BackupError, BACKUP_MAGIC, BACKUP_VERSION};
pub use command::{Command, Outcome, PolicyDef};
pub use snapshot::{SnapshotError, SNAPSHOT_MAGIC};
pub use state::{KeyEntry, NameState, PolicyRecord, State};

use std::fmt;

/// Shows opaque bytes as their length only: sealed keys and the wrapped cache key are not
/// secret once sealed, but they are noise in logs and must never be mistaken for something to
/// copy out of one.
pub(crate) struct Redacted<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}
