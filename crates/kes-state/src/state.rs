//! The replicated state and its deterministic apply function.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Outcome, PolicyDef};
use crate::Redacted;

/// A cached key: never plaintext. `sealed` is the encoded KES `KeyVersion` sealed by the server
/// with the cluster cache key, with the key name as associated data.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
    /// When the entry was written (proposer's clock). [`Command::EvictKey`] names it, so that
    /// an eviction only removes the entry its proposer looked at.
    pub stored_at_ms: u64,
    /// When the key was last seen in the KMS; it bounds how long a node serves the key while
    /// the KMS is unreachable.
    pub confirmed_at_ms: u64,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("sealed", &Redacted(&self.sealed))
            .field("stored_at_ms", &self.stored_at_ms)
            .field("confirmed_at_ms", &self.confirmed_at_ms)
            .finish()
    }
}

/// What the state remembers about one key name.
///
/// A name with no entry, no tombstone and generation 0 carries no information and is not
/// stored, so that two states holding the same information compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameState {
    /// `None` after a delete or an eviction.
    pub entry: Option<KeyEntry>,
    /// Log index of the last authoritative write (create, import or delete) of this name; 0 if
    /// there was none. Fills whose KMS read began before it are refused.
    pub generation: u64,
    /// The key was deleted through this cluster and not re-created since. Never set together
    /// with an entry.
    pub tombstone: bool,
}

/// A stored policy with KES's describe metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub def: PolicyDef,
    pub created_at_ms: u64,
    pub created_by: String,
}

/// The whole replicated state. Only [`State::apply`] and [`State::decode_snapshot`] produce
/// one, so its invariants (no entry under a tombstone, every assignment names an existing
/// policy and not the admin, nothing before initialisation) hold for every value a caller sees.
///
/// Every collection is a `BTreeMap` so that iteration order, and therefore listings and the
/// snapshot bytes, are the same on every node.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    // Crate-visible so that tests can forge states that `apply` would never produce.
    pub(crate) initialized: bool,
    #[serde(with = "serde_bytes")]
    pub(crate) wrapped_cck: Option<Vec<u8>>,
    pub(crate) admin: String,
    pub(crate) init_at_ms: u64,
    pub(crate) names: BTreeMap<String, NameState>,
    pub(crate) policies: BTreeMap<String, PolicyRecord>,
    pub(crate) assignments: BTreeMap<String, String>,
    pub(crate) last_applied: u64,
    /// Ids of nodes removed from the group (see [`Command::RetireNode`]). Defaulted, so that
    /// snapshots written before the field existed still read.
    #[serde(default)]
    pub(crate) retired: std::collections::BTreeSet<u64>,
    /// Fills observed below this index are refused: the highest `before_index` of the
    /// [`Command::PruneTombstones`] applied so far. Defaulted so that snapshots written before
    /// pruning existed still decode.
    #[serde(default)]
    pub(crate) pruned_below: u64,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("initialized", &self.initialized)
            .field("wrapped_cck", &self.wrapped_cck.as_deref().map(Redacted))
            .field("admin", &self.admin)
            .field("init_at_ms", &self.init_at_ms)
            .field("names", &self.names)
            .field("policies", &self.policies)
            .field("assignments", &self.assignments)
            .field("last_applied", &self.last_applied)
            .field("retired", &self.retired)
            .field("pruned_below", &self.pruned_below)
            .finish()
    }
}

impl State {
    /// Applies the committed log entry at `index`.
    ///
    /// Deterministic: the result depends only on the state, `index` and `cmd`. Indices start at
    /// 1 and must grow; an `index` not above [`State::last_applied`] is a replay of an entry
    /// already applied and returns [`Outcome::Duplicate`] without any change. Every other call
    /// advances the applied index, whatever the outcome, because the entry is in the log either
    /// way.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Outcome {
        if index <= self.last_applied {
            return Outcome::Duplicate;
        }
        self.last_applied = index;
        match cmd {
            Command::Noop => Outcome::Applied,
            Command::Init {
                wrapped_cck,
                admin,
                policies,
                assignments,
                at_ms,
            } => self.init(wrapped_cck, admin, policies, assignments, *at_ms),
            Command::Restore { snapshot, admin } => self.restore(index, snapshot, admin),
            _ if !self.initialized => Outcome::NotInitialized,
            Command::PutKey {
                name,
                sealed,
                at_ms,
            } => {
                let ns = self.names.entry(name.clone()).or_default();
                ns.entry = Some(KeyEntry {
                    sealed: sealed.clone(),
                    stored_at_ms: *at_ms,
                    confirmed_at_ms: *at_ms,
                });
                ns.tombstone = false;
                ns.generation = index;
                Outcome::Applied
            }
            Command::FillKey {
                name,
                sealed,
                at_ms,
                observed,
            } => self.fill(name, sealed, *at_ms, *observed),
            Command::DeleteKey { name, at_ms: _ } => {
                let ns = self.names.entry(name.clone()).or_default();
                ns.entry = None;
                ns.tombstone = true;
                ns.generation = index;
                Outcome::Applied
            }
            Command::ConfirmKeys { names, at_ms } => {
                for name in names {
                    if let Some(entry) = self.names.get_mut(name).and_then(|ns| ns.entry.as_mut()) {
                        // Proposers' clocks differ; a confirmation never moves the time back.
                        entry.confirmed_at_ms = entry.confirmed_at_ms.max(*at_ms);
                    }
                }
                Outcome::Applied
            }
            Command::EvictKey {
                name,
                if_stored_at_ms,
            } => {
                self.evict(name, *if_stored_at_ms);
                Outcome::Applied
            }
            Command::PruneTombstones { before_index } => {
                // A floor above the prune's own index would refuse fills that begin after it
                // and are perfectly fresh.
                let before = (*before_index).min(index);
                self.names
                    .retain(|_, ns| ns.entry.is_some() || ns.generation >= before);
                self.pruned_below = self.pruned_below.max(before);
                Outcome::Applied
            }
            Command::SetPolicy {
                name,
                def,
                at_ms,
                by,
            } => {
                self.policies.insert(
                    name.clone(),
                    PolicyRecord {
                        def: def.clone(),
                        created_at_ms: *at_ms,
                        created_by: by.clone(),
                    },
                );
                Outcome::Applied
            }
            Command::DeletePolicy { name } => {
                if self.policies.remove(name).is_none() {
                    return Outcome::PolicyNotFound;
                }
                self.assignments.retain(|_, policy| policy != name);
                Outcome::Applied
            }
            Command::Assign { identity, policy } => {
                if !self.policies.contains_key(policy) {
                    Outcome::PolicyNotFound
                } else if *identity == self.admin {
                    Outcome::IdentityIsAdmin
                } else {
                    self.assignments.insert(identity.clone(), policy.clone());
                    Outcome::Applied
                }
            }
            Command::Unassign { identity } => match self.assignments.remove(identity) {
                Some(_) => Outcome::Applied,
                None => Outcome::IdentityNotFound,
            },
            Command::SetWrappedCck { wrapped_cck } => {
                self.wrapped_cck = Some(wrapped_cck.clone());
                Outcome::Applied
            }
            Command::RetireNode { id } => {
                self.retired.insert(*id);
                Outcome::Applied
            }
        }
    }

    /// Drops every cached entry, keeping tombstones, generations, policies and assignments: a
    /// state that restores into a smaller log entry, whose keys are read from the KMS again as
    /// they are used. The invariants hold: an entry-less name keeps its generation or goes.
    pub fn drop_cache_entries(&mut self) {
        self.names.retain(|_, ns| {
            ns.entry = None;
            ns.tombstone || ns.generation != 0
        });
    }

    /// Whether node `id` was removed from the group.
    pub fn is_retired(&self, id: u64) -> bool {
        self.retired.contains(&id)
    }

    fn init(
        &mut self,
        wrapped_cck: &[u8],
        admin: &str,
        policies: &BTreeMap<String, PolicyDef>,
        assignments: &BTreeMap<String, String>,
        at_ms: u64,
    ) -> Outcome {
        if self.initialized {
            return Outcome::AlreadyInitialized;
        }
        self.initialized = true;
        self.wrapped_cck = Some(wrapped_cck.to_vec());
        self.admin = admin.to_owned();
        self.init_at_ms = at_ms;
        self.policies = policies
            .iter()
            .map(|(name, def)| {
                let record = PolicyRecord {
                    def: def.clone(),
                    created_at_ms: at_ms,
                    created_by: admin.to_owned(),
                };
                (name.clone(), record)
            })
            .collect();
        self.assignments = assignments
            .iter()
            .filter(|(identity, policy)| {
                identity.as_str() != admin && self.policies.contains_key(policy.as_str())
            })
            .map(|(identity, policy)| (identity.clone(), policy.clone()))
            .collect();
        Outcome::Applied
    }

    /// Becomes the backed-up state of `snapshot` (see [`Command::Restore`]).
    fn restore(&mut self, index: u64, snapshot: &[u8], admin: &str) -> Outcome {
        if self.initialized {
            return Outcome::AlreadyInitialized;
        }
        let Ok(backup) = State::decode_snapshot(snapshot) else {
            return Outcome::InvalidRestore;
        };
        if !backup.initialized {
            return Outcome::InvalidRestore;
        }
        let mut names = backup.names;
        for ns in names.values_mut() {
            if ns.generation != 0 {
                ns.generation = index;
            }
        }
        let mut assignments = backup.assignments;
        assignments.remove(admin);
        *self = State {
            initialized: true,
            wrapped_cck: backup.wrapped_cck,
            admin: admin.to_owned(),
            init_at_ms: backup.init_at_ms,
            names,
            policies: backup.policies,
            assignments,
            last_applied: index,
            retired: Default::default(),
            pruned_below: index,
        };
        Outcome::Applied
    }

    fn fill(&mut self, name: &str, sealed: &[u8], at_ms: u64, observed: u64) -> Outcome {
        // The generation that would refuse this fill may have been pruned: a read that began
        // before the prune point could have seen a key deleted since, so it is refused whatever
        // the name (see `Command::PruneTombstones`).
        if observed < self.pruned_below {
            return Outcome::StaleFill;
        }
        let entry = KeyEntry {
            sealed: sealed.to_vec(),
            stored_at_ms: at_ms,
            confirmed_at_ms: at_ms,
        };
        let Some(ns) = self.names.get_mut(name) else {
            self.names.insert(
                name.to_owned(),
                NameState {
                    entry: Some(entry),
                    generation: 0,
                    tombstone: false,
                },
            );
            return Outcome::Applied;
        };
        if observed < ns.generation {
            return Outcome::StaleFill;
        }
        if ns.entry.is_some() {
            return Outcome::AlreadyPresent;
        }
        // The read began after the tombstone was applied and still found the key, so it was
        // created again outside this cluster: the tombstone no longer describes the KMS.
        ns.entry = Some(entry);
        ns.tombstone = false;
        Outcome::Applied
    }

    fn evict(&mut self, name: &str, if_stored_at_ms: u64) {
        let Some(ns) = self.names.get_mut(name) else {
            return;
        };
        if ns
            .entry
            .as_ref()
            .is_none_or(|e| e.stored_at_ms != if_stored_at_ms)
        {
            return;
        }
        ns.entry = None;
        if ns.generation == 0 && !ns.tombstone {
            self.names.remove(name);
        }
    }

    /// Has [`Command::Init`] been applied?
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// The cluster cache key, sealed by the KMS; `None` before initialisation.
    pub fn wrapped_cck(&self) -> Option<&[u8]> {
        self.wrapped_cck.as_deref()
    }

    /// The admin identity; empty before initialisation.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// When the cluster was initialised (the `Init` proposer's clock); 0 before.
    pub fn init_at_ms(&self) -> u64 {
        self.init_at_ms
    }

    /// The index of the last applied log entry; 0 for a fresh state.
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// Fills observed below this index are refused (the highest prune point so far); 0 if
    /// nothing was pruned.
    pub fn pruned_below(&self) -> u64 {
        self.pruned_below
    }

    /// Whether a [`Command::PruneTombstones`] with `before_index` would forget anything: a
    /// name without an entry whose generation is below it.
    pub fn has_prunable(&self, before_index: u64) -> bool {
        self.names
            .values()
            .any(|ns| ns.entry.is_none() && ns.generation < before_index)
    }

    /// The cached entry for `name`, if any.
    pub fn key(&self, name: &str) -> Option<&KeyEntry> {
        self.names.get(name).and_then(|ns| ns.entry.as_ref())
    }

    /// Everything remembered about `name`; `None` if nothing is.
    pub fn name_state(&self, name: &str) -> Option<&NameState> {
        self.names.get(name)
    }

    /// The index of the last authoritative write of `name`; 0 if none is remembered. A fill
    /// proposer compares its `observed` index with this to avoid proposing a doomed fill.
    pub fn generation(&self, name: &str) -> u64 {
        self.names.get(name).map_or(0, |ns| ns.generation)
    }

    /// Was `name` deleted through this cluster, and not re-created since (or pruned)?
    pub fn is_tombstoned(&self, name: &str) -> bool {
        self.names.get(name).is_some_and(|ns| ns.tombstone)
    }

    /// One page of the names with an entry that start with `prefix`, sorted, beginning at
    /// `continue_at` (inclusive; empty means from the start) and holding at most `limit` names.
    /// The second value is the first matching name not returned, to pass as `continue_at` for
    /// the next page, or empty when the listing is complete.
    pub fn key_names(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> (Vec<String>, String) {
        let start = continue_at.max(prefix);
        let mut matching = self
            .names
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter(|(_, ns)| ns.entry.is_some())
            .map(|(name, _)| name);
        let page: Vec<String> = matching.by_ref().take(limit).cloned().collect();
        let next = matching.next().cloned().unwrap_or_default();
        (page, next)
    }

    /// Every cached entry, sorted by name: for expiry and confirmation sweeps.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &KeyEntry)> + '_ {
        self.names
            .iter()
            .filter_map(|(name, ns)| ns.entry.as_ref().map(|entry| (name.as_str(), entry)))
    }

    /// The number of cached entries.
    pub fn key_count(&self) -> usize {
        self.names.values().filter(|ns| ns.entry.is_some()).count()
    }

    /// The number of remembered tombstones.
    pub fn tombstone_count(&self) -> usize {
        self.names.values().filter(|ns| ns.tombstone).count()
    }

    pub fn policy(&self, name: &str) -> Option<&PolicyRecord> {
        self.policies.get(name)
    }

    /// The names of the policies starting with `prefix`, sorted.
    pub fn policies(&self, prefix: &str) -> Vec<String> {
        prefixed(&self.policies, prefix)
    }

    /// The policy assigned to `identity`. The admin is never assigned one.
    pub fn assignment(&self, identity: &str) -> Option<&str> {
        self.assignments.get(identity).map(String::as_str)
    }

    /// The assigned identities starting with `prefix`, sorted. The admin is not among them
    /// (it has no assignment); KES's identity listing adds it, which is the server's job.
    pub fn identities(&self, prefix: &str) -> Vec<String> {
        prefixed(&self.assignments, prefix)
    }

    /// Checks the invariants that [`State::apply`] maintains, for states that did not come from
    /// it (a decoded snapshot). The message names the offending item.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if !self.initialized {
            let blank = self.wrapped_cck.is_none()
                && self.admin.is_empty()
                && self.init_at_ms == 0
                && self.names.is_empty()
                && self.policies.is_empty()
                && self.assignments.is_empty()
                && self.pruned_below == 0;
            if !blank {
                return Err("uninitialised state holds data".to_owned());
            }
        } else if self.wrapped_cck.is_none() {
            return Err("initialised state has no wrapped cache key".to_owned());
        }
        if self.pruned_below > self.last_applied {
            return Err("prune point above the applied index".to_owned());
        }
        for (name, ns) in &self.names {
            if ns.tombstone && ns.entry.is_some() {
                return Err(format!("key {name:?} has both an entry and a tombstone"));
            }
            if ns.tombstone && ns.generation == 0 {
                return Err(format!("key {name:?} has a tombstone but no generation"));
            }
            if ns.entry.is_none() && !ns.tombstone && ns.generation == 0 {
                return Err(format!("key {name:?} is stored but carries nothing"));
            }
            if ns.generation > self.last_applied {
                return Err(format!(
                    "key {name:?} has a generation after the applied index"
                ));
            }
        }
        for (identity, policy) in &self.assignments {
            if *identity == self.admin {
                return Err("the admin identity has a policy assignment".to_owned());
            }
            if !self.policies.contains_key(policy) {
                return Err(format!(
                    "identity {identity:?} is assigned to missing policy {policy:?}"
                ));
            }
        }
        Ok(())
    }
}

fn prefixed<V>(map: &BTreeMap<String, V>, prefix: &str) -> Vec<String> {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .map(|(name, _)| name)
        .take_while(|name| name.starts_with(prefix))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-id";

    fn init_cmd() -> Command {
        Command::Init {
            wrapped_cck: vec![7; 60],
            admin: ADMIN.to_owned(),
            policies: BTreeMap::from([(
                "minio".to_owned(),
                PolicyDef {
                    allow: vec!["/v1/key/generate/*".to_owned()],
                    deny: vec![],
                },
            )]),
            assignments: BTreeMap::from([
                ("minio-id".to_owned(), "minio".to_owned()),
                ("ghost-id".to_owned(), "missing".to_owned()),
                (ADMIN.to_owned(), "minio".to_owned()),
            ]),
            at_ms: 1000,
        }
    }

    /// A state initialised at index 1, plus a helper that applies at the next index.
    struct Fixture {
        state: State,
        next: u64,
    }

    impl Fixture {
        fn new() -> Self {
            let mut state = State::default();
            assert_eq!(state.apply(1, &init_cmd()), Outcome::Applied);
            Fixture { state, next: 2 }
        }

        /// Applies `cmd` and returns its outcome and index.
        fn apply(&mut self, cmd: Command) -> (Outcome, u64) {
            let index = self.next;
            self.next += 1;
            let outcome = self.state.apply(index, &cmd);
            assert_eq!(self.state.check_invariants(), Ok(()), "after {cmd:?}");
            (outcome, index)
        }

        fn index(&self) -> u64 {
            self.state.last_applied()
        }
    }

    fn put(name: &str, sealed: &[u8], at_ms: u64) -> Command {
        Command::PutKey {
            name: name.to_owned(),
            sealed: sealed.to_vec(),
            at_ms,
        }
    }

    fn fill(name: &str, sealed: &[u8], at_ms: u64, observed: u64) -> Command {
        Command::FillKey {
            name: name.to_owned(),
            sealed: sealed.to_vec(),
            at_ms,
            observed,
        }
    }

    fn delete(name: &str) -> Command {
        Command::DeleteKey {
            name: name.to_owned(),
            at_ms: 5,
        }
    }

    fn evict(name: &str, if_stored_at_ms: u64) -> Command {
        Command::EvictKey {
            name: name.to_owned(),
            if_stored_at_ms,
        }
    }

    #[test]
    fn init_seeds_policies_and_valid_assignments() {
        let f = Fixture::new();
        let s = &f.state;
        assert!(s.is_initialized());
        assert_eq!(s.wrapped_cck(), Some(&[7u8; 60][..]));
        assert_eq!(s.admin(), ADMIN);
        assert_eq!(s.init_at_ms(), 1000);
        let record = s.policy("minio").cloned();
        assert_eq!(
            record.map(|r| (r.created_at_ms, r.created_by)),
            Some((1000, ADMIN.to_owned()))
        );
        assert_eq!(s.assignment("minio-id"), Some("minio"));
        // Unknown policy and the admin are dropped rather than stored.
        assert_eq!(s.assignment("ghost-id"), None);
        assert_eq!(s.assignment(ADMIN), None);
        assert_eq!(s.identities(""), vec!["minio-id".to_owned()]);
    }

    #[test]
    fn second_init_is_ignored() {
        let mut f = Fixture::new();
        let before = f.state.clone();
        let other = Command::Init {
            wrapped_cck: vec![1],
            admin: "other".to_owned(),
            policies: BTreeMap::new(),
            assignments: BTreeMap::new(),
            at_ms: 9,
        };
        assert_eq!(f.apply(other).0, Outcome::AlreadyInitialized);
        assert_eq!(f.state.admin(), ADMIN);
        assert_eq!(f.state.wrapped_cck(), before.wrapped_cck());
        assert_eq!(f.state.last_applied(), 2);
    }

    #[test]
    fn everything_but_init_and_noop_is_refused_before_init() {
        let mut s = State::default();
        let cmds = [
            put("k", b"x", 1),
            fill("k", b"x", 1, 0),
            delete("k"),
            Command::ConfirmKeys {
                names: vec!["k".to_owned()],
                at_ms: 1,
            },
            evict("k", 1),
            Command::PruneTombstones { before_index: 9 },
            Command::SetPolicy {
                name: "p".to_owned(),
                def: PolicyDef::default(),
                at_ms: 1,
                by: "x".to_owned(),
            },
            Command::DeletePolicy {
                name: "p".to_owned(),
            },
            Command::Assign {
                identity: "i".to_owned(),
                policy: "p".to_owned(),
            },
            Command::Unassign {
                identity: "i".to_owned(),
            },
            Command::SetWrappedCck {
                wrapped_cck: vec![1],
            },
        ];
        for (i, cmd) in cmds.iter().enumerate() {
            let index = i as u64 + 1;
            assert_eq!(s.apply(index, cmd), Outcome::NotInitialized, "{cmd:?}");
            assert_eq!(s.last_applied(), index);
        }
        let expected = State {
            last_applied: cmds.len() as u64,
            ..State::default()
        };
        assert_eq!(s, expected);
        assert_eq!(s.apply(100, &Command::Noop), Outcome::Applied);
        assert_eq!(s.apply(101, &init_cmd()), Outcome::Applied);
        assert!(s.is_initialized());
    }

    #[test]
    fn replayed_index_is_a_duplicate_and_changes_nothing() {
        let mut f = Fixture::new();
        f.apply(put("k", b"one", 10));
        let before = f.state.clone();
        assert_eq!(f.state.apply(2, &delete("k")), Outcome::Duplicate);
        assert_eq!(f.state.apply(0, &Command::Noop), Outcome::Duplicate);
        assert_eq!(f.state, before);
        // Gaps are allowed: indices of entries that are not commands are simply skipped.
        assert_eq!(f.state.apply(10, &Command::Noop), Outcome::Applied);
        assert_eq!(f.state.last_applied(), 10);
    }

    #[test]
    fn put_sets_entry_and_generation_and_overwrites() {
        let mut f = Fixture::new();
        let (outcome, i1) = f.apply(put("k", b"one", 10));
        assert_eq!(outcome, Outcome::Applied);
        let entry = f.state.key("k").cloned();
        assert_eq!(
            entry,
            Some(KeyEntry {
                sealed: b"one".to_vec(),
                stored_at_ms: 10,
                confirmed_at_ms: 10
            })
        );
        assert_eq!(f.state.generation("k"), i1);
        let (_, i2) = f.apply(put("k", b"two", 20));
        assert_eq!(
            f.state.key("k").map(|e| e.sealed.clone()),
            Some(b"two".to_vec())
        );
        assert_eq!(f.state.generation("k"), i2);
        assert_eq!(f.state.key_count(), 1);
    }

    #[test]
    fn delete_tombstones_even_unknown_names() {
        let mut f = Fixture::new();
        f.apply(put("k", b"one", 10));
        let (outcome, i) = f.apply(delete("k"));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(f.state.key("k"), None);
        assert!(f.state.is_tombstoned("k"));
        assert_eq!(f.state.generation("k"), i);
        let (outcome, j) = f.apply(delete("never-seen"));
        assert_eq!(outcome, Outcome::Applied);
        assert!(f.state.is_tombstoned("never-seen"));
        assert_eq!(f.state.generation("never-seen"), j);
        assert_eq!(f.state.tombstone_count(), 2);
        assert_eq!(f.state.key_count(), 0);
    }

    #[test]
    fn put_after_delete_clears_tombstone() {
        let mut f = Fixture::new();
        f.apply(delete("k"));
        let (_, i) = f.apply(put("k", b"new", 30));
        assert!(!f.state.is_tombstoned("k"));
        assert_eq!(f.state.generation("k"), i);
        assert!(f.state.key("k").is_some());
    }

    #[test]
    fn fill_of_unknown_name_is_accepted_without_generation() {
        let mut f = Fixture::new();
        let (outcome, _) = f.apply(fill("k", b"kms", 10, 1));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(f.state.key("k").map(|e| e.stored_at_ms), Some(10));
        assert_eq!(f.state.generation("k"), 0);
        assert!(!f.state.is_tombstoned("k"));
    }

    #[test]
    fn fill_does_not_replace_a_present_entry() {
        let mut f = Fixture::new();
        let (_, i) = f.apply(put("k", b"authoritative", 10));
        let (outcome, _) = f.apply(fill("k", b"kms", 20, i));
        assert_eq!(outcome, Outcome::AlreadyPresent);
        assert_eq!(
            f.state.key("k").map(|e| e.sealed.clone()),
            Some(b"authoritative".to_vec())
        );
    }

    #[test]
    fn stale_fill_after_delete_is_refused() {
        let mut f = Fixture::new();
        f.apply(put("k", b"old", 10));
        // A node starts a KMS read here, before the delete reaches it.
        let observed = f.index();
        f.apply(delete("k"));
        let (outcome, _) = f.apply(fill("k", b"old", 20, observed));
        assert_eq!(outcome, Outcome::StaleFill);
        assert_eq!(f.state.key("k"), None);
        assert!(f.state.is_tombstoned("k"));
    }

    #[test]
    fn stale_fill_of_old_material_after_recreate_is_refused() {
        let mut f = Fixture::new();
        f.apply(put("k", b"old", 10));
        f.apply(evict("k", 10));
        let observed = f.index();
        f.apply(delete("k"));
        let (_, created) = f.apply(put("k", b"new", 30));
        f.apply(evict("k", 30));
        let (outcome, _) = f.apply(fill("k", b"old", 40, observed));
        assert_eq!(outcome, Outcome::StaleFill);
        assert_eq!(f.state.key("k"), None);
        assert_eq!(f.state.generation("k"), created);
        // Once the node reads again after the re-create it is accepted.
        let (outcome, _) = f.apply(fill("k", b"new", 50, created));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(
            f.state.key("k").map(|e| e.sealed.clone()),
            Some(b"new".to_vec())
        );
    }

    #[test]
    fn fill_observed_after_delete_is_accepted_and_clears_tombstone() {
        let mut f = Fixture::new();
        let (_, deleted) = f.apply(delete("k"));
        // The key was re-created in the KMS by something outside the cluster.
        let (outcome, _) = f.apply(fill("k", b"external", 10, deleted));
        assert_eq!(outcome, Outcome::Applied);
        assert!(!f.state.is_tombstoned("k"));
        assert_eq!(f.state.generation("k"), deleted);
        assert_eq!(f.state.tombstone_count(), 0);
    }

    #[test]
    fn evict_only_when_stored_at_matches() {
        let mut f = Fixture::new();
        f.apply(fill("k", b"first", 10, 1));
        // The evictor looked at the entry stored at 10, but it was evicted and re-filled
        // (stored at 20) before the eviction was committed: the new fill must survive.
        f.apply(evict("k", 10));
        f.apply(fill("k", b"second", 20, f.index()));
        let (outcome, _) = f.apply(evict("k", 10));
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(f.state.key("k").map(|e| e.stored_at_ms), Some(20));
        f.apply(evict("k", 20));
        assert_eq!(f.state.key("k"), None);
        // A name that only ever had fills leaves nothing behind.
        assert_eq!(f.state.name_state("k"), None);
        // Evicting unknown names is harmless.
        assert_eq!(f.apply(evict("nope", 1)).0, Outcome::Applied);
    }

    #[test]
    fn evict_keeps_generation_so_stale_fills_stay_refused() {
        let mut f = Fixture::new();
        let observed = f.index();
        let (_, created) = f.apply(put("k", b"v", 10));
        f.apply(evict("k", 10));
        assert_eq!(f.state.generation("k"), created);
        assert!(!f.state.is_tombstoned("k"));
        assert_eq!(f.apply(fill("k", b"v", 20, observed)).0, Outcome::StaleFill);
    }

    #[test]
    fn evict_never_touches_tombstones() {
        let mut f = Fixture::new();
        let (_, deleted) = f.apply(delete("k"));
        f.apply(evict("k", 0));
        assert!(f.state.is_tombstoned("k"));
        assert_eq!(f.state.generation("k"), deleted);
    }

    #[test]
    fn confirm_sets_confirmed_time_on_present_entries_only() {
        let mut f = Fixture::new();
        f.apply(put("a", b"a", 10));
        f.apply(delete("b"));
        f.apply(Command::ConfirmKeys {
            names: vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
            at_ms: 50,
        });
        let a = f.state.key("a").cloned();
        assert_eq!(
            a.map(|e| (e.stored_at_ms, e.confirmed_at_ms)),
            Some((10, 50))
        );
        assert_eq!(f.state.key("b"), None);
        assert_eq!(f.state.name_state("c"), None);
        // An older confirmation (another proposer's clock) does not move it back.
        f.apply(Command::ConfirmKeys {
            names: vec!["a".to_owned()],
            at_ms: 40,
        });
        assert_eq!(f.state.key("a").map(|e| e.confirmed_at_ms), Some(50));
    }

    #[test]
    fn prune_forgets_old_entryless_names_only() {
        let mut f = Fixture::new();
        let (_, old_delete) = f.apply(delete("old"));
        f.apply(put("evicted", b"e", 7));
        f.apply(evict("evicted", 7));
        f.apply(put("live", b"l", 8));
        let (_, new_delete) = f.apply(delete("new"));
        f.apply(Command::PruneTombstones {
            before_index: new_delete,
        });
        assert!(!f.state.is_tombstoned("old"));
        assert_eq!(f.state.generation("old"), 0);
        assert_eq!(f.state.name_state("evicted"), None);
        assert!(f.state.key("live").is_some());
        assert!(f.state.is_tombstoned("new"));
        assert_eq!(f.state.tombstone_count(), 1);
        // A fill observed before the pruned delete would be accepted if only the generation
        // had protected it: the prune point refuses it instead, for any name.
        assert_eq!(f.state.pruned_below(), new_delete);
        assert_eq!(
            f.apply(fill("old", b"x", 1, old_delete - 1)).0,
            Outcome::StaleFill
        );
        assert_eq!(f.state.key("old"), None);
        assert_eq!(
            f.apply(fill("never-deleted", b"x", 1, new_delete - 1)).0,
            Outcome::StaleFill
        );
        // Reads that began at or after the prune point are served as before.
        assert_eq!(
            f.apply(fill("old", b"x", 1, new_delete)).0,
            Outcome::Applied
        );
        assert!(f.state.key("old").is_some());
    }

    #[test]
    fn prune_point_never_exceeds_the_prune_index_nor_moves_back() {
        let mut f = Fixture::new();
        f.apply(delete("a"));
        let (_, at) = f.apply(Command::PruneTombstones {
            before_index: u64::MAX,
        });
        assert_eq!(f.state.pruned_below(), at);
        assert_eq!(f.state.tombstone_count(), 0);
        f.apply(Command::PruneTombstones { before_index: 1 });
        assert_eq!(f.state.pruned_below(), at);
        // A fill whose read began after the prune is accepted.
        assert_eq!(f.apply(fill("a", b"x", 1, at)).0, Outcome::Applied);
    }

    #[test]
    fn has_prunable_sees_only_entryless_names_below_the_point() {
        let mut f = Fixture::new();
        let (_, live) = f.apply(put("live", b"l", 1));
        assert!(!f.state.has_prunable(live + 10));
        let (_, gone) = f.apply(delete("gone"));
        assert!(!f.state.has_prunable(gone));
        assert!(f.state.has_prunable(gone + 1));
    }

    #[test]
    fn key_names_pages_through_present_entries() {
        let mut f = Fixture::new();
        for name in ["a", "b1", "b2", "b3", "b4", "c"] {
            f.apply(put(name, b"v", 1));
        }
        f.apply(delete("b3"));
        assert_eq!(
            f.state.key_names("b", "", 2),
            (vec!["b1".to_owned(), "b2".to_owned()], "b4".to_owned())
        );
        assert_eq!(
            f.state.key_names("b", "b4", 2),
            (vec!["b4".to_owned()], String::new())
        );
        assert_eq!(
            f.state.key_names("", "", 10).0,
            vec!["a", "b1", "b2", "b4", "c"]
        );
        // A continuation before the prefix starts at the prefix; one past it yields nothing.
        assert_eq!(
            f.state.key_names("b", "a", 1),
            (vec!["b1".to_owned()], "b2".to_owned())
        );
        assert_eq!(f.state.key_names("b", "bz", 5), (vec![], String::new()));
        assert_eq!(f.state.key_names("b", "", 0), (vec![], "b1".to_owned()));
        let all: Vec<&str> = f.state.keys().map(|(name, _)| name).collect();
        assert_eq!(all, vec!["a", "b1", "b2", "b4", "c"]);
    }

    #[test]
    fn policies_and_assignments() {
        let mut f = Fixture::new();
        let def = PolicyDef {
            allow: vec!["/v1/key/*".to_owned()],
            deny: vec!["/v1/key/delete/*".to_owned()],
        };
        let set = Command::SetPolicy {
            name: "ops".to_owned(),
            def: def.clone(),
            at_ms: 77,
            by: ADMIN.to_owned(),
        };
        assert_eq!(f.apply(set).0, Outcome::Applied);
        assert_eq!(
            f.state.policy("ops"),
            Some(&PolicyRecord {
                def,
                created_at_ms: 77,
                created_by: ADMIN.to_owned()
            })
        );
        assert_eq!(f.state.policies(""), vec!["minio", "ops"]);
        assert_eq!(f.state.policies("o"), vec!["ops"]);

        let assign = |identity: &str, policy: &str| Command::Assign {
            identity: identity.to_owned(),
            policy: policy.to_owned(),
        };
        assert_eq!(f.apply(assign("x", "nope")).0, Outcome::PolicyNotFound);
        assert_eq!(f.apply(assign(ADMIN, "ops")).0, Outcome::IdentityIsAdmin);
        assert_eq!(f.apply(assign("x", "ops")).0, Outcome::Applied);
        assert_eq!(f.apply(assign("minio-id", "ops")).0, Outcome::Applied);
        assert_eq!(f.state.assignment("minio-id"), Some("ops"));
        assert_eq!(f.state.identities(""), vec!["minio-id", "x"]);
        assert_eq!(f.state.identities("x"), vec!["x"]);

        // Replacing a policy keeps its assignments; deleting it drops them.
        let replace = Command::SetPolicy {
            name: "ops".to_owned(),
            def: PolicyDef::default(),
            at_ms: 88,
            by: "someone".to_owned(),
        };
        f.apply(replace);
        assert_eq!(f.state.assignment("x"), Some("ops"));
        assert_eq!(f.state.policy("ops").map(|p| p.created_at_ms), Some(88));
        let del = |name: &str| Command::DeletePolicy {
            name: name.to_owned(),
        };
        assert_eq!(f.apply(del("ops")).0, Outcome::Applied);
        assert_eq!(f.apply(del("ops")).0, Outcome::PolicyNotFound);
        assert_eq!(f.state.identities(""), Vec::<String>::new());

        f.apply(assign("y", "minio"));
        let unassign = |identity: &str| Command::Unassign {
            identity: identity.to_owned(),
        };
        assert_eq!(f.apply(unassign("y")).0, Outcome::Applied);
        assert_eq!(f.apply(unassign("y")).0, Outcome::IdentityNotFound);
        assert_eq!(f.apply(unassign(ADMIN)).0, Outcome::IdentityNotFound);
    }

    #[test]
    fn set_wrapped_cck_replaces_it() {
        let mut f = Fixture::new();
        f.apply(Command::SetWrappedCck {
            wrapped_cck: vec![9; 3],
        });
        assert_eq!(f.state.wrapped_cck(), Some(&[9u8; 3][..]));
    }

    #[test]
    fn debug_output_redacts_sealed_bytes() {
        let secretish = vec![0xAB; 40];
        let cmd = put("k", &secretish, 1);
        let shown = format!("{cmd:?}");
        assert!(shown.contains("<40 bytes>"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        let mut f = Fixture::new();
        f.apply(cmd);
        let shown = format!("{:?}", f.state);
        assert!(
            shown.contains("<40 bytes>") && shown.contains("<60 bytes>"),
            "{shown}"
        );
        assert!(!shown.contains("171"), "{shown}");
        let shown = format!(
            "{:?}",
            Command::SetWrappedCck {
                wrapped_cck: vec![0xAB; 2]
            }
        );
        assert!(!shown.contains("171"), "{shown}");
    }
}
