//! Property tests: random command sequences against a deliberately naive model of the
//! documented semantics, plus determinism and snapshot codec properties.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use crate::{Command, KeyEntry, Outcome, PolicyDef, PolicyRecord, SnapshotError, State};

const NAMES: &[&str] = &["a", "ab", "abc", "b", "ba", "c"];
const PREFIXES: &[&str] = &["", "a", "ab", "b", "c", "d"];
const POLICIES: &[&str] = &["p", "pq", "q"];
const IDENTITIES: &[&str] = &["adm", "i1", "i2", "i3"];
const ADMIN: &str = "adm";

/// The state as the design describes it, with none of the implementation's structure: flat
/// hash maps and sets, sorting on every listing.
#[derive(Default)]
struct Model {
    init: Option<(Vec<u8>, String, u64)>,
    last: u64,
    keys: HashMap<String, KeyEntry>,
    generations: HashMap<String, u64>,
    tombstones: HashSet<String>,
    policies: HashMap<String, PolicyRecord>,
    assigned: HashMap<String, String>,
    retired: std::collections::BTreeSet<u64>,
    pruned_below: u64,
}

impl Model {
    fn apply(&mut self, index: u64, cmd: &Command) -> Outcome {
        if index <= self.last {
            return Outcome::Duplicate;
        }
        self.last = index;
        let admin = match (&self.init, cmd) {
            (_, Command::Noop) => return Outcome::Applied,
            (Some(_), Command::Init { .. }) => return Outcome::AlreadyInitialized,
            (None, Command::Init { .. }) => String::new(),
            (None, _) => return Outcome::NotInitialized,
            (Some((_, admin, _)), _) => admin.clone(),
        };
        let entry = |sealed: &Vec<u8>, at: u64| KeyEntry {
            sealed: sealed.clone(),
            stored_at_ms: at,
            confirmed_at_ms: at,
        };
        match cmd {
            Command::Noop => {}
            Command::Init {
                wrapped_cck,
                admin,
                policies,
                assignments,
                at_ms,
            } => {
                self.init = Some((wrapped_cck.clone(), admin.clone(), *at_ms));
                for (name, def) in policies {
                    let record = PolicyRecord {
                        def: def.clone(),
                        created_at_ms: *at_ms,
                        created_by: admin.clone(),
                    };
                    self.policies.insert(name.clone(), record);
                }
                for (identity, policy) in assignments {
                    if identity != admin && policies.contains_key(policy) {
                        self.assigned.insert(identity.clone(), policy.clone());
                    }
                }
            }
            Command::PutKey {
                name,
                sealed,
                at_ms,
            } => {
                self.keys.insert(name.clone(), entry(sealed, *at_ms));
                self.generations.insert(name.clone(), index);
                self.tombstones.remove(name);
            }
            Command::FillKey {
                name,
                sealed,
                at_ms,
                observed,
            } => {
                if *observed < self.pruned_below
                    || *observed < self.generations.get(name).copied().unwrap_or(0)
                {
                    return Outcome::StaleFill;
                }
                if self.keys.contains_key(name) {
                    return Outcome::AlreadyPresent;
                }
                self.keys.insert(name.clone(), entry(sealed, *at_ms));
                self.tombstones.remove(name);
            }
            Command::DeleteKey { name, .. } => {
                self.keys.remove(name);
                self.generations.insert(name.clone(), index);
                self.tombstones.insert(name.clone());
            }
            Command::ConfirmKeys { names, at_ms } => {
                for name in names {
                    if let Some(e) = self.keys.get_mut(name) {
                        e.confirmed_at_ms = e.confirmed_at_ms.max(*at_ms);
                    }
                }
            }
            Command::EvictKey {
                name,
                if_stored_at_ms,
            } => {
                if self.keys.get(name).map(|e| e.stored_at_ms) == Some(*if_stored_at_ms) {
                    self.keys.remove(name);
                }
            }
            Command::PruneTombstones { before_index } => {
                let doomed: Vec<String> = self
                    .generations
                    .iter()
                    .filter(|(name, g)| **g < *before_index && !self.keys.contains_key(*name))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in doomed {
                    self.generations.remove(&name);
                    self.tombstones.remove(&name);
                }
                self.pruned_below = self.pruned_below.max((*before_index).min(index));
            }
            Command::SetPolicy {
                name,
                def,
                at_ms,
                by,
            } => {
                let record = PolicyRecord {
                    def: def.clone(),
                    created_at_ms: *at_ms,
                    created_by: by.clone(),
                };
                self.policies.insert(name.clone(), record);
            }
            Command::DeletePolicy { name } => {
                if self.policies.remove(name).is_none() {
                    return Outcome::PolicyNotFound;
                }
                self.assigned.retain(|_, p| p != name);
            }
            Command::Assign { identity, policy } => {
                if !self.policies.contains_key(policy) {
                    return Outcome::PolicyNotFound;
                }
                if *identity == admin {
                    return Outcome::IdentityIsAdmin;
                }
                self.assigned.insert(identity.clone(), policy.clone());
            }
            Command::Unassign { identity } => {
                if self.assigned.remove(identity).is_none() {
                    return Outcome::IdentityNotFound;
                }
            }
            Command::SetWrappedCck { wrapped_cck } => {
                if let Some(init) = &mut self.init {
                    init.0 = wrapped_cck.clone();
                }
            }
            Command::RetireNode { id } => {
                self.retired.insert(*id);
            }
            // Not generated here: a restore replaces the whole state, which the unit tests in
            // `state` and `backup` check directly.
            Command::Restore { .. } => return Outcome::InvalidRestore,
        }
        Outcome::Applied
    }

    fn sorted<'a>(names: impl Iterator<Item = &'a String>, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = names.filter(|n| n.starts_with(prefix)).cloned().collect();
        out.sort();
        out
    }

    fn key_names(&self, prefix: &str, continue_at: &str, limit: usize) -> (Vec<String>, String) {
        let rest: Vec<String> = Self::sorted(self.keys.keys(), prefix)
            .into_iter()
            .filter(|n| n.as_str() >= continue_at)
            .collect();
        let page = rest.iter().take(limit).cloned().collect();
        (page, rest.get(limit).cloned().unwrap_or_default())
    }

    /// Every read the state offers must agree with the model.
    fn check(&self, state: &State) -> Result<(), TestCaseError> {
        prop_assert_eq!(state.check_invariants(), Ok(()));
        prop_assert_eq!(state.last_applied(), self.last);
        prop_assert_eq!(state.is_initialized(), self.init.is_some());
        let (cck, admin, at) = self.init.clone().unwrap_or_default();
        prop_assert_eq!(
            state.wrapped_cck(),
            self.init.as_ref().map(|_| cck.as_slice())
        );
        prop_assert_eq!(state.admin(), admin.as_str());
        prop_assert_eq!(state.init_at_ms(), at);
        for id in 0..8 {
            prop_assert_eq!(
                state.is_retired(id),
                self.retired.contains(&id),
                "node {}",
                id
            );
        }
        prop_assert_eq!(state.pruned_below(), self.pruned_below);
        for name in NAMES {
            prop_assert_eq!(state.key(name), self.keys.get(*name), "key {}", name);
            let generation = self.generations.get(*name).copied().unwrap_or(0);
            prop_assert_eq!(state.generation(name), generation, "generation {}", name);
            let tombstoned = self.tombstones.contains(*name);
            prop_assert_eq!(state.is_tombstoned(name), tombstoned, "tombstone {}", name);
        }
        prop_assert_eq!(state.key_count(), self.keys.len());
        prop_assert_eq!(state.tombstone_count(), self.tombstones.len());
        let all: Vec<(String, KeyEntry)> = state
            .keys()
            .map(|(n, e)| (n.to_owned(), e.clone()))
            .collect();
        let mut expected: Vec<(String, KeyEntry)> = self
            .keys
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        expected.sort_by(|x, y| x.0.cmp(&y.0));
        prop_assert_eq!(all, expected);
        for prefix in PREFIXES {
            for continue_at in ["", "a", "abc", "b", "bz"] {
                for limit in [0, 1, 2, 100] {
                    prop_assert_eq!(
                        state.key_names(prefix, continue_at, limit),
                        self.key_names(prefix, continue_at, limit),
                        "list {:?} from {:?} limit {}",
                        prefix,
                        continue_at,
                        limit
                    );
                }
            }
            prop_assert_eq!(
                state.policies(prefix),
                Self::sorted(self.policies.keys(), prefix)
            );
            prop_assert_eq!(
                state.identities(prefix),
                Self::sorted(self.assigned.keys(), prefix)
            );
        }
        for policy in POLICIES {
            prop_assert_eq!(state.policy(policy), self.policies.get(*policy));
        }
        for identity in IDENTITIES {
            prop_assert_eq!(
                state.assignment(identity),
                self.assigned.get(*identity).map(String::as_str)
            );
        }
        Ok(())
    }
}

/// A command whose index-relative fields are still offsets, resolved against the applied
/// index when the sequence is laid out.
#[derive(Clone, Debug)]
enum Op {
    Fixed(Command),
    Fill {
        name: String,
        sealed: Vec<u8>,
        at_ms: u64,
        observed_back: u64,
    },
    Prune {
        back: u64,
    },
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES).prop_map(str::to_owned)
}

fn policy_name() -> impl Strategy<Value = String> {
    prop::sample::select(POLICIES).prop_map(str::to_owned)
}

fn identity() -> impl Strategy<Value = String> {
    prop::sample::select(IDENTITIES).prop_map(str::to_owned)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4)
}

fn at() -> impl Strategy<Value = u64> {
    0u64..4
}

fn policy_def() -> impl Strategy<Value = PolicyDef> {
    let patterns = || prop::collection::vec("/v1/[a-z]{0,3}\\*?", 0..3);
    (patterns(), patterns()).prop_map(|(allow, deny)| PolicyDef { allow, deny })
}

fn init() -> impl Strategy<Value = Command> {
    (
        bytes(),
        prop::collection::btree_map(policy_name(), policy_def(), 0..3),
        prop::collection::btree_map(identity(), "p|pq|q|missing", 0..4),
        at(),
    )
        .prop_map(
            |(wrapped_cck, policies, assignments, at_ms)| Command::Init {
                wrapped_cck,
                admin: ADMIN.to_owned(),
                policies,
                assignments,
                at_ms,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let fixed = prop_oneof![
        1 => init(),
        1 => Just(Command::Noop),
        5 => (name(), bytes(), at()).prop_map(|(name, sealed, at_ms)| Command::PutKey {
            name,
            sealed,
            at_ms
        }),
        4 => (name(), at()).prop_map(|(name, at_ms)| Command::DeleteKey { name, at_ms }),
        2 => (prop::collection::vec(name(), 0..3), 0u64..8)
            .prop_map(|(names, at_ms)| Command::ConfirmKeys { names, at_ms }),
        4 => (name(), at()).prop_map(|(name, if_stored_at_ms)| Command::EvictKey {
            name,
            if_stored_at_ms
        }),
        2 => (policy_name(), policy_def(), at(), identity()).prop_map(|(name, def, at_ms, by)| {
            Command::SetPolicy {
                name,
                def,
                at_ms,
                by,
            }
        }),
        1 => policy_name().prop_map(|name| Command::DeletePolicy { name }),
        2 => (identity(), policy_name())
            .prop_map(|(identity, policy)| Command::Assign { identity, policy }),
        1 => identity().prop_map(|identity| Command::Unassign { identity }),
        1 => bytes().prop_map(|wrapped_cck| Command::SetWrappedCck { wrapped_cck }),
        1 => (1u64..6).prop_map(|id| Command::RetireNode { id }),
    ];
    prop_oneof![
        12 => fixed.prop_map(Op::Fixed),
        6 => (name(), bytes(), at(), 0u64..5).prop_map(|(name, sealed, at_ms, observed_back)| {
            Op::Fill {
                name,
                sealed,
                at_ms,
                observed_back,
            }
        }),
        1 => (0u64..6).prop_map(|back| Op::Prune { back }),
    ]
}

/// A log: indices mostly step by one, sometimes repeat (replays) or skip (non-command entries);
/// most logs start with `Init`.
fn log() -> impl Strategy<Value = Vec<(u64, Command)>> {
    (
        prop::option::weighted(0.8, init()),
        prop::collection::vec(
            (
                prop_oneof![1 => Just(0u64), 8 => Just(1u64), 1 => Just(3u64)],
                op(),
            ),
            0..60,
        ),
    )
        .prop_map(|(first, ops)| {
            let mut out = Vec::new();
            let mut index: u64 = 0;
            let mut applied: u64 = 0;
            if let Some(cmd) = first {
                index = 1;
                applied = 1;
                out.push((index, cmd));
            }
            for (step, op) in ops {
                index += step;
                let cmd = match op {
                    Op::Fixed(cmd) => cmd,
                    Op::Fill {
                        name,
                        sealed,
                        at_ms,
                        observed_back,
                    } => Command::FillKey {
                        name,
                        sealed,
                        at_ms,
                        observed: applied.saturating_sub(observed_back),
                    },
                    Op::Prune { back } => Command::PruneTombstones {
                        before_index: (applied + 2).saturating_sub(back),
                    },
                };
                out.push((index, cmd));
                applied = applied.max(index);
            }
            out
        })
}

fn run(log: &[(u64, Command)]) -> (State, Vec<Outcome>) {
    let mut state = State::default();
    let outcomes = log.iter().map(|(i, cmd)| state.apply(*i, cmd)).collect();
    (state, outcomes)
}

fn snapshot_err(e: SnapshotError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn state_agrees_with_model(log in log()) {
        let mut state = State::default();
        let mut model = Model::default();
        for (index, cmd) in &log {
            let got = state.apply(*index, cmd);
            let want = model.apply(*index, cmd);
            prop_assert_eq!(got, want, "index {} {:?}", index, cmd);
            model.check(&state)?;
        }
    }

    #[test]
    fn apply_is_deterministic(log in log()) {
        let (a, outcomes_a) = run(&log);
        let (b, outcomes_b) = run(&log);
        prop_assert_eq!(&outcomes_a, &outcomes_b);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(
            a.encode_snapshot().map_err(snapshot_err)?,
            b.encode_snapshot().map_err(snapshot_err)?
        );
    }

    #[test]
    fn replaying_a_log_changes_nothing(log in log()) {
        let (mut state, _) = run(&log);
        let before = state.clone();
        for (index, cmd) in &log {
            prop_assert_eq!(state.apply(*index, cmd), Outcome::Duplicate);
        }
        prop_assert_eq!(state, before);
    }

    #[test]
    fn snapshot_round_trips_and_continues_identically(
        log in log(),
        split in any::<prop::sample::Index>(),
    ) {
        // Installing a snapshot mid-log and applying the rest equals applying the whole log.
        let at = split.index(log.len() + 1);
        let (head, tail) = log.split_at(at);
        let (state, _) = run(head);
        let bytes = state.encode_snapshot().map_err(snapshot_err)?;
        let mut restored = State::decode_snapshot(&bytes).map_err(snapshot_err)?;
        prop_assert_eq!(&restored, &state);
        for (index, cmd) in tail {
            restored.apply(*index, cmd);
        }
        prop_assert_eq!(restored, run(&log).0);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        raw in prop::collection::vec(any::<u8>(), 0..512),
        with_header in any::<bool>(),
    ) {
        let mut bytes = if with_header { b"KESSNAP1".to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&raw);
        if let Ok(state) = State::decode_snapshot(&bytes) {
            // Whatever is accepted is a state `apply` could have produced.
            prop_assert_eq!(state.check_invariants(), Ok(()));
        }
    }

    #[test]
    fn decoding_corrupted_snapshots_never_panics(
        log in log(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (state, _) = run(&log);
        let mut bytes = state.encode_snapshot().map_err(snapshot_err)?;
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        for input in [&bytes[..], &bytes[..keep]] {
            if let Ok(decoded) = State::decode_snapshot(input) {
                prop_assert_eq!(decoded.check_invariants(), Ok(()));
            }
        }
    }
}

#[test]
fn model_examples_cover_every_outcome() {
    // Guards against a generator that never reaches some branch: run many logs and require
    // that each outcome shows up.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..400 {
        let Ok(tree) = log().new_tree(&mut runner) else {
            continue;
        };
        for outcome in run(&tree.current()).1 {
            *seen.entry(format!("{outcome:?}")).or_default() += 1;
        }
    }
    for outcome in [
        "Applied",
        "Duplicate",
        "AlreadyInitialized",
        "NotInitialized",
        "StaleFill",
        "AlreadyPresent",
        "PolicyNotFound",
        "IdentityNotFound",
        "IdentityIsAdmin",
    ] {
        assert!(
            seen.contains_key(outcome),
            "{outcome} never produced: {seen:?}"
        );
    }
}
