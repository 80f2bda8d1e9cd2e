//! What the leader accepts from other members beyond Raft itself: the commands a member may
//! propose, with their times bounded by the leader's clock, and the bounds on snapshots a
//! leader sends. The node-port routes (`rpc`) call these after checking the membership.

use crate::{Cluster, WRAPPING_KEY};
use kes_keystore::StoreError;
use kes_state::Command;

/// Smallest bound on a snapshot received from the leader. A snapshot is the encoded state,
/// about 200 bytes per cached key, so this holds millions of keys; the bound grows with the
/// local state (see [`Cluster::max_snapshot_bytes`]).
pub const SNAPSHOT_FLOOR: u64 = 1 << 30;

/// Bytes allowed per name in the local state when bounding a snapshot: far above a sealed
/// key's size, so that a cluster that grew since this node's state was taken still fits.
const SNAPSHOT_BYTES_PER_NAME: u64 = 16 * 1024;

impl Cluster {
    /// Checks one snapshot chunk before openraft writes it: chunks arrive in order (a chunk
    /// may be sent again, never one beyond what was received, so no gap is ever allocated)
    /// and the snapshot stays within [`Cluster::max_snapshot_bytes`].
    pub(crate) fn snapshot_chunk(
        &self,
        id: &str,
        offset: u64,
        len: u64,
        done: bool,
    ) -> Result<(), String> {
        let limit = self.max_snapshot_bytes();
        let mut recv = self.snapshot_recv.lock();
        let received = match &*recv {
            Some((current, next)) if current == id => *next,
            _ => 0,
        };
        if offset > received {
            return Err(format!(
                "snapshot chunk at offset {offset}, but only {received} bytes were received"
            ));
        }
        let end = offset.saturating_add(len);
        if end > limit {
            *recv = None;
            return Err(format!("snapshot larger than the limit of {limit} bytes"));
        }
        *recv = (!done).then(|| (id.to_owned(), end.max(received)));
        Ok(())
    }

    /// The largest snapshot this node accepts: [`SNAPSHOT_FLOOR`], or more for a large state.
    pub(crate) fn max_snapshot_bytes(&self) -> u64 {
        let names = self.state.read(|s| s.key_count()) as u64;
        SNAPSHOT_FLOOR.max(names.saturating_mul(SNAPSHOT_BYTES_PER_NAME))
    }

    /// What the leader commits for a command another member proposed, or why not.
    ///
    /// Members propose only cache maintenance: fills after a keystore read, confirmations,
    /// evictions, and tombstones for keys the keystore no longer holds. Writes that change
    /// the keystore or the policies reach the leader as forwarded requests instead, which it
    /// authorises for the identity they name. Times are bounded by the leader's clock, so a
    /// member whose clock runs ahead cannot make keys look freshly confirmed to everyone.
    pub(crate) async fn admit_proposal(&self, cmd: Command) -> Result<Command, String> {
        let now = self.clock.wall_ms();
        match cmd {
            Command::FillKey { name, .. } if name == WRAPPING_KEY => {
                Err("the wrapping key is never cached".into())
            }
            Command::FillKey {
                name,
                sealed,
                at_ms,
                observed,
            } => Ok(Command::FillKey {
                name,
                sealed,
                at_ms: at_ms.min(now),
                observed,
            }),
            Command::ConfirmKeys { names, at_ms } => Ok(Command::ConfirmKeys {
                names,
                at_ms: at_ms.min(now),
            }),
            cmd @ Command::EvictKey { .. } => Ok(cmd),
            Command::DeleteKey { name, at_ms } => match self.store.get(&name).await {
                Err(StoreError::NotFound) => Ok(Command::DeleteKey {
                    name,
                    at_ms: at_ms.min(now),
                }),
                Ok(_) => Err(format!("key '{name}' is still in the keystore")),
                Err(e) => Err(format!("cannot check key '{name}' in the keystore: {e}")),
            },
            other => Err(format!(
                "{} cannot be proposed by a member",
                command_kind(&other)
            )),
        }
    }
}

/// The variant name of a command, for log lines (never its contents).
fn command_kind(cmd: &Command) -> &'static str {
    match cmd {
        Command::Init { .. } => "Init",
        Command::PutKey { .. } => "PutKey",
        Command::FillKey { .. } => "FillKey",
        Command::DeleteKey { .. } => "DeleteKey",
        Command::ConfirmKeys { .. } => "ConfirmKeys",
        Command::EvictKey { .. } => "EvictKey",
        Command::PruneTombstones { .. } => "PruneTombstones",
        Command::SetPolicy { .. } => "SetPolicy",
        Command::DeletePolicy { .. } => "DeletePolicy",
        Command::Assign { .. } => "Assign",
        Command::Unassign { .. } => "Unassign",
        Command::SetWrappedCck { .. } => "SetWrappedCck",
        Command::RetireNode { .. } => "RetireNode",
        Command::Restore { .. } => "Restore",
        Command::Noop => "Noop",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn command_kinds_name_no_contents() {
        let cmd = Command::SetPolicy {
            name: "p".into(),
            def: Default::default(),
            at_ms: 1,
            by: "x".into(),
        };
        assert_eq!(command_kind(&cmd), "SetPolicy");
    }
}
