//! What goes through the Raft log, and what applying it reported.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Redacted;

/// A policy as KES admins write it: request-path patterns, deny beating allow. Evaluation lives
/// in `kes-policy`; the state only stores the definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDef {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// One entry of the replicated log. Every field a command needs is carried in it (times
/// included, read from the proposer's clock), because [`crate::State::apply`] must give the
/// same result on every node and on every replay.
///
/// Key material is only ever carried sealed: `sealed` is the encoded KES `KeyVersion` sealed by
/// the server with the cluster cache key, with the key name as associated data, so a sealed blob
/// cannot be replayed under another name. The state treats it as opaque bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first command of a cluster. Applying it to an initialised state changes nothing and
    /// reports [`Outcome::AlreadyInitialized`], so that nodes racing to initialise agree on the
    /// first one committed.
    Init {
        /// The cluster cache key, sealed by the KMS.
        #[serde(with = "serde_bytes")]
        wrapped_cck: Vec<u8>,
        admin: String,
        /// Seed policies from the configuration file; recorded as created at `at_ms` by `admin`.
        policies: BTreeMap<String, PolicyDef>,
        /// identity -> policy. Assignments naming an unknown policy or the admin are dropped,
        /// as [`Command::Assign`] would refuse them, so that the state never holds one.
        assignments: BTreeMap<String, String>,
        at_ms: u64,
    },
    /// Authoritative write after the KMS accepted a create or import: sets the entry, clears
    /// any tombstone and makes the command's log index the name's generation.
    PutKey {
        name: String,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
        at_ms: u64,
    },
    /// Cache fill after a miss made a node read the KMS. `observed` is the proposer's applied
    /// index when that KMS read began: a fill whose read may predate the name's last
    /// authoritative write (`observed < generation`) could carry deleted or replaced material
    /// and is refused with [`Outcome::StaleFill`]; the proposer may read the KMS again.
    FillKey {
        name: String,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
        at_ms: u64,
        observed: u64,
    },
    /// Authoritative delete after the KMS deleted (or did not have) the key: drops the entry,
    /// sets a tombstone and makes the command's index the name's generation.
    DeleteKey {
        name: String,
        at_ms: u64,
    },
    /// Records that these keys were seen in the KMS at `at_ms`; names without an entry are
    /// skipped.
    ConfirmKeys {
        names: Vec<String>,
        at_ms: u64,
    },
    /// Non-authoritative expiry: drops the entry only if it is still the one stored at
    /// `if_stored_at_ms`, so that a fill committed after the evictor looked is not lost. Leaves
    /// generation and tombstone alone, so the name's protection against stale fills stays.
    EvictKey {
        name: String,
        if_stored_at_ms: u64,
    },
    /// Forgets entry-less names (tombstones and evicted authoritative writes) whose generation
    /// is below `before_index`, so that the state does not grow with every deleted key.
    ///
    /// Forgetting a generation also forgets the protection it gave: a [`Command::FillKey`]
    /// whose `observed` is below the pruned generation would be accepted, and could bring a
    /// deleted key back into the cache. So applying a prune also raises the state's prune
    /// point to `before_index` (never above the prune's own index), and every later fill
    /// observed below the prune point is refused with [`Outcome::StaleFill`], whatever its
    /// name. A fill observed at or above it began its read after every pruned generation, so
    /// it would have been accepted before the prune too: pruning changes no outcome that
    /// protects a delete, for any `before_index`. The proposer's choice only decides which
    /// fills in flight are refused needlessly (they read the KMS again): it prunes below the
    /// smallest applied index of all members, as sampled a while ago.
    PruneTombstones {
        before_index: u64,
    },
    /// Creates or replaces a policy; existing assignments to it stay.
    SetPolicy {
        name: String,
        def: PolicyDef,
        at_ms: u64,
        by: String,
    },
    /// Deletes a policy and every assignment to it.
    DeletePolicy {
        name: String,
    },
    /// Assigns `identity` to `policy`, replacing a previous assignment.
    Assign {
        identity: String,
        policy: String,
    },
    Unassign {
        identity: String,
    },
    /// Replaces the wrapped cluster cache key after the wrapping key in the KMS was rotated;
    /// the cache key itself, and so every sealed entry, stays.
    SetWrappedCck {
        #[serde(with = "serde_bytes")]
        wrapped_cck: Vec<u8>,
    },
    /// Records that node `id` was removed from the group. Its id is refused on the node-to-node
    /// port from then on, by every member, even if a certificate for it still exists; a node
    /// that comes back needs a new id.
    RetireNode {
        id: u64,
    },
    /// The first command of a cluster rebuilt from a backup, in place of [`Command::Init`]:
    /// the backed-up state (the wrapped cluster cache key, sealed entries, tombstones, policies
    /// and assignments) becomes the state, with `admin` as the admin, and every name's
    /// generation and the prune point move to this command's index, since the old cluster's
    /// log indexes mean nothing in the new log. Retired ids are dropped: they named members of
    /// the old group. Like `Init`, it changes nothing on an initialised state.
    Restore {
        /// The backed-up state in the snapshot codec.
        #[serde(with = "serde_bytes")]
        snapshot: Vec<u8>,
        admin: String,
    },
    /// Changes nothing but the applied index. The Raft layer applies it for its own entries
    /// (blank and membership entries) so that the state's applied index follows the log.
    Noop,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Init {
                wrapped_cck,
                admin,
                policies,
                assignments,
                at_ms,
            } => f
                .debug_struct("Init")
                .field("wrapped_cck", &Redacted(wrapped_cck))
                .field("admin", admin)
                .field("policies", policies)
                .field("assignments", assignments)
                .field("at_ms", at_ms)
                .finish(),
            Command::PutKey {
                name,
                sealed,
                at_ms,
            } => f
                .debug_struct("PutKey")
                .field("name", name)
                .field("sealed", &Redacted(sealed))
                .field("at_ms", at_ms)
                .finish(),
            Command::FillKey {
                name,
                sealed,
                at_ms,
                observed,
            } => f
                .debug_struct("FillKey")
                .field("name", name)
                .field("sealed", &Redacted(sealed))
                .field("at_ms", at_ms)
                .field("observed", observed)
                .finish(),
            Command::DeleteKey { name, at_ms } => f
                .debug_struct("DeleteKey")
                .field("name", name)
                .field("at_ms", at_ms)
                .finish(),
            Command::ConfirmKeys { names, at_ms } => f
                .debug_struct("ConfirmKeys")
                .field("names", names)
                .field("at_ms", at_ms)
                .finish(),
            Command::EvictKey {
                name,
                if_stored_at_ms,
            } => f
                .debug_struct("EvictKey")
                .field("name", name)
                .field("if_stored_at_ms", if_stored_at_ms)
                .finish(),
            Command::PruneTombstones { before_index } => f
                .debug_struct("PruneTombstones")
                .field("before_index", before_index)
                .finish(),
            Command::SetPolicy {
                name,
                def,
                at_ms,
                by,
            } => f
                .debug_struct("SetPolicy")
                .field("name", name)
                .field("def", def)
                .field("at_ms", at_ms)
                .field("by", by)
                .finish(),
            Command::DeletePolicy { name } => {
                f.debug_struct("DeletePolicy").field("name", name).finish()
            }
            Command::Assign { identity, policy } => f
                .debug_struct("Assign")
                .field("identity", identity)
                .field("policy", policy)
                .finish(),
            Command::Unassign { identity } => f
                .debug_struct("Unassign")
                .field("identity", identity)
                .finish(),
            Command::SetWrappedCck { wrapped_cck } => f
                .debug_struct("SetWrappedCck")
                .field("wrapped_cck", &Redacted(wrapped_cck))
                .finish(),
            Command::RetireNode { id } => f.debug_struct("RetireNode").field("id", id).finish(),
            Command::Restore { snapshot, admin } => f
                .debug_struct("Restore")
                .field("snapshot", &Redacted(snapshot))
                .field("admin", admin)
                .finish(),
            Command::Noop => f.write_str("Noop"),
        }
    }
}

/// What applying one command did. Every outcome other than [`Outcome::Duplicate`] advances the
/// applied index; the refusals change nothing else. The proposer turns a refusal into its API
/// answer (e.g. [`Outcome::PolicyNotFound`] into KES's 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    /// The index was not above the applied index: the entry was applied before (a replay after
    /// a restart, or an entry already covered by an installed snapshot). Nothing changed, not
    /// even the applied index.
    Duplicate,
    AlreadyInitialized,
    /// Only [`Command::Init`] and [`Command::Noop`] are accepted before initialisation, so that
    /// no key or policy exists in a cluster without a cache key and an admin.
    NotInitialized,
    /// A [`Command::FillKey`] whose KMS read may predate the name's last authoritative write.
    StaleFill,
    /// A [`Command::FillKey`] for a name that already has an entry, which is kept: it is at
    /// least as fresh as the fill.
    AlreadyPresent,
    PolicyNotFound,
    IdentityNotFound,
    /// The admin identity cannot be assigned a policy: it bypasses policies.
    IdentityIsAdmin,
    /// A [`Command::Restore`] whose snapshot does not decode into an initialised state.
    InvalidRestore,
}

impl Outcome {
    /// Did the command take effect as proposed?
    pub fn is_applied(self) -> bool {
        self == Outcome::Applied
    }
}
