//! A linearizability checker in the style of Wing and Gong, with Lowe's just-in-time
//! linearization and memoisation of (linearized set, model state).
//!
//! The history is a list of calls with invocation and return times; a call whose outcome is
//! unknown (Jepsen's `info`) has no return and may take effect at any point after its
//! invocation, or never. The search walks the calls in time order, linearizing any call that
//! was invoked before the earliest pending return and that the model accepts, and backtracks
//! when a return is reached whose call has not been linearized.
//!
//! Two prunings keep histories with many unknown outcomes tractable, and both are sound:
//! an unknown call is only linearized where it changes the model state (linearizing it where
//! it changes nothing is never better than keeping it for later), and of several unknown calls
//! with equal operations only the earliest unused one is tried (they are interchangeable from
//! the moment both are invoked, since neither ever has to return).

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model: Clone + Eq + Hash {
    type Op: Eq + std::fmt::Debug;
    /// The state after `op`, or `None` if `op` (with its observed result) cannot happen in
    /// this state.
    fn step(&self, op: &Self::Op) -> Option<Self>;
}

/// One operation of a history: the operation with its observed result, invocation time, and
/// return time (`None` when the outcome is unknown).
#[derive(Clone, Debug)]
pub struct Call<O> {
    pub op: O,
    pub invoke: u64,
    pub ret: Option<u64>,
    /// Where the call came from (an index into the caller's history), for reports.
    pub id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `stuck` holds the ids of the call whose return could not be
    /// reached and of the calls concurrent with it at the deepest point of the search.
    NotLinearizable {
        stuck: Vec<u64>,
        linearized: usize,
    },
    /// The search gave up after `steps` steps.
    Unknown {
        steps: u64,
    },
}

impl Verdict {
    pub fn is_anomaly(&self) -> bool {
        matches!(self, Verdict::NotLinearizable { .. })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Return,
}

#[derive(Clone, Copy)]
struct Entry {
    kind: Kind,
    call: usize,
}

/// Doubly linked list over entries, index 0 the head sentinel.
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    const END: usize = usize::MAX;

    fn new(n: usize) -> Self {
        let mut next = Vec::with_capacity(n + 1);
        let mut prev = Vec::with_capacity(n + 1);
        for i in 0..=n {
            next.push(if i == n { Self::END } else { i + 1 });
            prev.push(if i == 0 { Self::END } else { i - 1 });
        }
        Self { next, prev }
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != Self::END {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != Self::END {
            self.prev[n] = x;
        }
    }
}

/// Checks `calls` against `init`, giving up after `max_steps` search steps.
pub fn check<M: Model>(init: &M, calls: &[Call<M::Op>], max_steps: u64) -> Verdict {
    if calls.is_empty() {
        return Verdict::Linearizable;
    }
    // Entries sorted by time; at equal times invocations first, which treats touching
    // operations as concurrent (the permissive reading).
    let mut order: Vec<(u64, u8, usize, Kind)> = Vec::with_capacity(calls.len() * 2);
    for (i, c) in calls.iter().enumerate() {
        order.push((c.invoke, 0, i, Kind::Call));
        order.push((c.ret.unwrap_or(u64::MAX), 1, i, Kind::Return));
    }
    order.sort_by_key(|&(t, k, i, _)| (t, k, i));
    // entries[0] is the sentinel.
    let mut entries = vec![Entry {
        kind: Kind::Call,
        call: usize::MAX,
    }];
    let mut call_entry = vec![0usize; calls.len()];
    let mut ret_entry = vec![0usize; calls.len()];
    for &(_, _, i, kind) in &order {
        let idx = entries.len();
        match kind {
            Kind::Call => call_entry[i] = idx,
            Kind::Return => ret_entry[i] = idx,
        }
        entries.push(Entry { kind, call: i });
    }
    let mut list = List::new(entries.len() - 1);

    let words = calls.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M)> = HashSet::new();
    let mut stack: Vec<(usize, M)> = Vec::new();
    let mut state = init.clone();
    let mut steps = 0u64;
    let mut deepest = (0usize, Vec::new());
    // Unknown calls skipped at this scan position because an equal one was just backtracked.
    let mut skip: Option<usize> = None;

    let mut e = list.next[0];
    loop {
        steps += 1;
        if steps > max_steps {
            return Verdict::Unknown { steps };
        }
        if list.next[0] == List::END {
            return Verdict::Linearizable;
        }
        if e == List::END {
            // Every remaining entry was tried (not reached while a return is left): backtrack.
            match backtrack(&mut stack, &mut list, &mut linearized, &entries, &ret_entry) {
                Some((x, s)) => {
                    state = s;
                    skip = Some(entries[x].call);
                    e = list.next[x];
                    continue;
                }
                None => return not_linearizable(deepest),
            }
        }
        let entry = entries[e];
        let call = &calls[entry.call];
        match entry.kind {
            Kind::Return if call.ret.is_none() => {
                // Only returns of unknown calls are left: everything that completed is
                // linearized.
                return Verdict::Linearizable;
            }
            Kind::Return => {
                if stack.len() >= deepest.0 {
                    deepest = (stack.len(), concurrent_ids(calls, &list, &entries, e));
                }
                match backtrack(&mut stack, &mut list, &mut linearized, &entries, &ret_entry) {
                    Some((x, s)) => {
                        state = s;
                        skip = Some(entries[x].call);
                        e = list.next[x];
                    }
                    None => return not_linearizable(deepest),
                }
            }
            Kind::Call => {
                let equal_to_skipped = skip.is_some_and(|s| {
                    call.ret.is_none() && calls[s].ret.is_none() && calls[s].op == call.op
                });
                let next_state = if equal_to_skipped {
                    None
                } else {
                    state
                        .step(&call.op)
                        .filter(|s| call.ret.is_some() || *s != state)
                };
                if let Some(s) = next_state {
                    let (w, b) = (entry.call / 64, entry.call % 64);
                    linearized[w] |= 1 << b;
                    if cache.insert((linearized.clone(), s.clone())) {
                        stack.push((e, std::mem::replace(&mut state, s)));
                        list.unlink(e);
                        list.unlink(ret_entry[entry.call]);
                        skip = None;
                        e = list.next[0];
                        continue;
                    }
                    linearized[w] &= !(1 << b);
                }
                e = list.next[e];
            }
        }
    }
}

fn backtrack<M>(
    stack: &mut Vec<(usize, M)>,
    list: &mut List,
    linearized: &mut [u64],
    entries: &[Entry],
    ret_entry: &[usize],
) -> Option<(usize, M)> {
    let (x, s) = stack.pop()?;
    let call = entries[x].call;
    list.relink(ret_entry[call]);
    list.relink(x);
    linearized[call / 64] &= !(1 << (call % 64));
    Some((x, s))
}

/// The call of the return entry `e` and every call invoked before it and still pending.
fn concurrent_ids<O>(calls: &[Call<O>], list: &List, entries: &[Entry], e: usize) -> Vec<u64> {
    let stuck = calls[entries[e].call].id;
    let mut ids = vec![stuck];
    let mut x = list.next[0];
    while x != List::END && x != e && ids.len() < 16 {
        let id = calls[entries[x].call].id;
        if entries[x].kind == Kind::Call && id != stuck {
            ids.push(id);
        }
        x = list.next[x];
    }
    ids
}

fn not_linearizable(deepest: (usize, Vec<u64>)) -> Verdict {
    Verdict::NotLinearizable {
        linearized: deepest.0,
        stuck: deepest.1,
    }
}

/// The model of one key: absent or present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyModel {
    pub present: bool,
}

/// A key-lifecycle operation with its observed result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOp {
    /// create answered ok.
    Created,
    /// create answered "key already exists".
    CreateExists,
    /// create with unknown outcome: the key may have been created.
    CreateUnknown,
    /// delete answered ok.
    Deleted,
    /// delete answered "key does not exist".
    DeleteNotFound,
    /// delete with unknown outcome: the key may have been deleted.
    DeleteUnknown,
    /// describe found the key.
    Found,
    /// describe answered "key does not exist".
    NotFound,
}

impl Model for KeyModel {
    type Op = KeyOp;

    fn step(&self, op: &KeyOp) -> Option<Self> {
        let p = self.present;
        let present = |b| Some(KeyModel { present: b });
        match op {
            KeyOp::Created => (!p).then_some(KeyModel { present: true }),
            KeyOp::CreateExists | KeyOp::Found => p.then_some(*self),
            KeyOp::CreateUnknown => present(true),
            KeyOp::Deleted => p.then_some(KeyModel { present: false }),
            KeyOp::DeleteNotFound | KeyOp::NotFound => (!p).then_some(*self),
            KeyOp::DeleteUnknown => present(false),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use KeyOp::*;

    const ABSENT: KeyModel = KeyModel { present: false };
    const LIMIT: u64 = 10_000_000;

    fn c(op: KeyOp, invoke: u64, ret: u64) -> Call<KeyOp> {
        Call {
            op,
            invoke,
            ret: Some(ret),
            id: invoke,
        }
    }

    fn info(op: KeyOp, invoke: u64) -> Call<KeyOp> {
        Call {
            op,
            invoke,
            ret: None,
            id: invoke,
        }
    }

    fn ok(h: &[Call<KeyOp>]) -> bool {
        match check(&ABSENT, h, LIMIT) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable { .. } => false,
            Verdict::Unknown { .. } => panic!("search gave up"),
        }
    }

    #[test]
    fn sequential_lifecycle_is_linearizable() {
        assert!(ok(&[]));
        assert!(ok(&[
            c(NotFound, 0, 1),
            c(Created, 2, 3),
            c(Found, 4, 5),
            c(CreateExists, 6, 7),
            c(Deleted, 8, 9),
            c(DeleteNotFound, 10, 11),
            c(NotFound, 12, 13),
        ]));
    }

    #[test]
    fn concurrent_creates_one_winner() {
        assert!(ok(&[c(Created, 0, 10), c(CreateExists, 1, 5)]));
        // The read overlapping the create may see either state.
        assert!(ok(&[c(Created, 0, 10), c(NotFound, 1, 2), c(Found, 3, 4)]));
    }

    #[test]
    fn two_winners_are_caught() {
        assert!(!ok(&[c(Created, 0, 10), c(Created, 1, 5)]));
        assert!(!ok(&[c(Created, 0, 1), c(Created, 2, 3)]));
    }

    #[test]
    fn stale_reads_are_caught() {
        // Acknowledged create, then a read that does not see it.
        assert!(!ok(&[c(Created, 0, 1), c(NotFound, 2, 3)]));
        // Acknowledged delete, then a read that still sees the key.
        assert!(!ok(&[c(Created, 0, 1), c(Deleted, 2, 3), c(Found, 4, 5)]));
        // Reads going back in time: present, absent, present with one create only.
        assert!(!ok(&[
            c(Created, 0, 10),
            c(Found, 1, 2),
            c(NotFound, 3, 4),
            c(Found, 5, 6),
        ]));
    }

    #[test]
    fn impossible_answers_are_caught() {
        assert!(!ok(&[c(Found, 0, 1)]));
        assert!(!ok(&[c(Deleted, 0, 1)]));
        assert!(!ok(&[c(CreateExists, 0, 1)]));
    }

    #[test]
    fn unknown_outcomes_may_happen_late_or_never() {
        // A timed-out create that took effect long after its invocation.
        assert!(ok(&[
            info(CreateUnknown, 0),
            c(NotFound, 5, 6),
            c(Found, 10, 11),
        ]));
        // ... or never.
        assert!(ok(&[info(CreateUnknown, 0), c(NotFound, 5, 6)]));
        // But not before it was invoked.
        assert!(!ok(&[c(Found, 0, 1), info(CreateUnknown, 5)]));
        // And only once: one unknown create cannot explain present, absent, present.
        assert!(!ok(&[
            info(CreateUnknown, 0),
            c(Found, 1, 2),
            c(DeleteNotFound, 3, 4),
            c(Found, 5, 6),
        ]));
        // Two can, with an unknown delete in between.
        assert!(ok(&[
            info(CreateUnknown, 0),
            info(CreateUnknown, 0),
            info(DeleteUnknown, 0),
            c(Found, 1, 2),
            c(NotFound, 3, 4),
            c(Found, 5, 6),
        ]));
    }

    #[test]
    fn many_unknowns_stay_tractable() {
        // Hundreds of unknown operations and a read pattern that forces backtracking.
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..300u64 {
            h.push(info(
                if i % 2 == 0 {
                    CreateUnknown
                } else {
                    DeleteUnknown
                },
                t,
            ));
            h.push(c(if i % 2 == 0 { Found } else { NotFound }, t + 1, t + 2));
            t += 3;
        }
        assert!(ok(&h));
        // Every unknown create was needed for one of the reads, so none is left for this
        // delete: the search has to prove that no placement of the 300 works.
        h.push(c(Deleted, t, t + 1));
        assert!(!ok(&h));
    }

    /// Every permutation of the completed calls plus every subset of unknown calls, checked
    /// directly against real-time order: the slow definition.
    fn brute(h: &[Call<KeyOp>]) -> bool {
        fn go(h: &[Call<KeyOp>], used: &mut Vec<bool>, s: KeyModel) -> bool {
            let done = h
                .iter()
                .zip(used.iter())
                .all(|(c, u)| *u || c.ret.is_none());
            if done {
                return true;
            }
            for i in 0..h.len() {
                if used[i] {
                    continue;
                }
                // i may go next only if no unused call returned before i was invoked.
                let blocked = h
                    .iter()
                    .zip(used.iter())
                    .any(|(o, u)| !*u && o.ret.is_some_and(|r| r < h[i].invoke));
                if blocked {
                    continue;
                }
                if let Some(n) = s.step(&h[i].op) {
                    used[i] = true;
                    if go(h, used, n) {
                        used[i] = false;
                        return true;
                    }
                    used[i] = false;
                }
            }
            false
        }
        let mut used = vec![false; h.len()];
        go(h, &mut used, ABSENT)
    }

    #[test]
    fn agrees_with_brute_force_on_random_histories() {
        let ops = [
            Created,
            CreateExists,
            CreateUnknown,
            Deleted,
            DeleteNotFound,
            DeleteUnknown,
            Found,
            NotFound,
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let (mut good, mut bad) = (0, 0);
        for _ in 0..3000 {
            let n = rng.gen_range(1..=7);
            let h: Vec<Call<KeyOp>> = (0..n)
                .map(|i| {
                    let op = ops[rng.gen_range(0..ops.len())];
                    let invoke = rng.gen_range(0..20u64);
                    let unknown = matches!(op, CreateUnknown | DeleteUnknown);
                    Call {
                        op,
                        invoke,
                        ret: (!unknown).then(|| invoke + rng.gen_range(1..8)),
                        id: i,
                    }
                })
                .collect();
            let expected = brute(&h);
            assert_eq!(ok(&h), expected, "{h:?}");
            if expected {
                good += 1;
            } else {
                bad += 1;
            }
        }
        // Both kinds of history were exercised.
        assert!(good > 300 && bad > 300, "good {good} bad {bad}");
    }

    #[test]
    fn reports_the_calls_involved() {
        let v = check(&ABSENT, &[c(Created, 0, 1), c(NotFound, 2, 3)], LIMIT);
        match v {
            Verdict::NotLinearizable { stuck, .. } => assert!(stuck.contains(&2)),
            other => panic!("{other:?}"),
        }
    }
}
