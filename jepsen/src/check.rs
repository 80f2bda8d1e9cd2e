//! From a history and the nemesis timeline to verdicts: linearizability of the key lifecycle
//! per key, availability and latency per phase and node, and delete visibility.

use crate::history::{Op, OpType, Process};
use crate::lin::{self, Call, KeyModel, KeyOp, Verdict};
use crate::nemesis::{CondEvent, PhaseEvent, Timeline};
use crate::workload::VisibilityRound;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Search steps per key before the checker gives up (the verdict is then "unknown").
pub const MAX_SEARCH_STEPS: u64 = 20_000_000;
/// A use of a deleted key this long after the acknowledgement, on a node connected to the
/// majority, is an anomaly.
pub const VISIBILITY_BOUND_NS: u64 = 1_000_000_000;

#[derive(Clone, Debug, Serialize)]
pub struct KeyResult {
    pub calls: usize,
    pub unknown: usize,
    pub verdict: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub involved: Vec<Op>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LifecycleResult {
    pub valid: bool,
    pub counts: Counts,
    pub keys: BTreeMap<String, KeyResult>,
}

/// An invocation paired with its completion (`None`: the run ended first).
fn pairs<'a>(ops: &'a [Op], workload: &str) -> Vec<(&'a Op, Option<&'a Op>)> {
    let mut pending: HashMap<&Process, usize> = HashMap::new();
    let mut out: Vec<(&Op, Option<&Op>)> = Vec::new();
    for op in ops
        .iter()
        .filter(|o| o.workload.as_deref() == Some(workload))
    {
        if op.kind == OpType::Invoke {
            pending.insert(&op.process, out.len());
            out.push((op, None));
        } else if let Some(i) = pending.remove(&op.process) {
            if let Some(slot) = out.get_mut(i) {
                slot.1 = Some(op);
            }
        }
    }
    out
}

fn key_op(f: &str, done: Option<&Op>) -> Option<KeyOp> {
    let (kind, err) = match done {
        Some(d) => (d.kind, d.error.as_deref().unwrap_or("")),
        None => (OpType::Info, ""),
    };
    let refused = kind == OpType::Fail && err.starts_with("refused");
    if refused {
        // Never sent: no effect.
        return None;
    }
    match (f, kind, err) {
        ("create", OpType::Ok, _) => Some(KeyOp::Created),
        ("create", OpType::Fail, "exists") => Some(KeyOp::CreateExists),
        ("create", _, _) => Some(KeyOp::CreateUnknown),
        ("delete", OpType::Ok, _) => Some(KeyOp::Deleted),
        ("delete", OpType::Fail, "not-found") => Some(KeyOp::DeleteNotFound),
        ("delete", _, _) => Some(KeyOp::DeleteUnknown),
        ("describe", OpType::Ok, _) => Some(KeyOp::Found),
        ("describe", OpType::Fail, "not-found") => Some(KeyOp::NotFound),
        // A read without an answer constrains nothing.
        _ => None,
    }
}

pub fn lifecycle(ops: &[Op]) -> LifecycleResult {
    let mut counts = Counts::default();
    let mut per_key: BTreeMap<String, Vec<Call<KeyOp>>> = BTreeMap::new();
    let mut by_index: HashMap<u64, (&Op, Option<&Op>)> = HashMap::new();
    for (inv, done) in pairs(ops, "lifecycle") {
        match done.map(|d| d.kind) {
            Some(OpType::Ok) => counts.ok += 1,
            Some(OpType::Fail) => counts.fail += 1,
            _ => counts.info += 1,
        }
        let key = inv
            .value
            .get("key")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(op) = key_op(&inv.f, done) else {
            continue;
        };
        let unknown = matches!(op, KeyOp::CreateUnknown | KeyOp::DeleteUnknown);
        by_index.insert(inv.index, (inv, done));
        per_key.entry(key).or_default().push(Call {
            op,
            invoke: inv.time,
            ret: if unknown { None } else { done.map(|d| d.time) },
            id: inv.index,
        });
    }
    let mut keys = BTreeMap::new();
    let mut valid = true;
    for (key, calls) in per_key {
        let unknown = calls.iter().filter(|c| c.ret.is_none()).count();
        let verdict = lin::check(&KeyModel { present: false }, &calls, MAX_SEARCH_STEPS);
        valid &= !verdict.is_anomaly();
        let (text, involved) = match &verdict {
            Verdict::Linearizable => ("linearizable".to_owned(), Vec::new()),
            Verdict::Unknown { steps } => (
                format!("unknown (search stopped after {steps} steps)"),
                Vec::new(),
            ),
            Verdict::NotLinearizable { stuck, linearized } => {
                // The call that could not be placed, and every call of this key overlapping
                // it or completed within 100 ms before it: enough to see the conflict.
                let window = stuck
                    .first()
                    .and_then(|id| calls.iter().find(|c| c.id == *id));
                let mut ids: Vec<u64> = match window {
                    Some(w) => {
                        let end = w.ret.unwrap_or(u64::MAX);
                        let from = w.invoke.saturating_sub(100_000_000);
                        calls
                            .iter()
                            .filter(|c| c.invoke <= end && c.ret.is_none_or(|r| r >= from))
                            .map(|c| c.id)
                            .collect()
                    }
                    None => stuck.clone(),
                };
                ids.sort_unstable();
                ids.dedup();
                ids.truncate(24);
                let mut involved = Vec::new();
                for id in ids {
                    if let Some((inv, done)) = by_index.get(&id) {
                        involved.push((*inv).clone());
                        if let Some(d) = done {
                            involved.push((*d).clone());
                        }
                    }
                }
                (
                    format!("NOT linearizable ({linearized} operations linearized before the search got stuck)"),
                    involved,
                )
            }
        };
        keys.insert(
            key,
            KeyResult {
                calls: calls.len(),
                unknown,
                verdict: text,
                involved,
            },
        );
    }
    LifecycleResult {
        valid,
        counts,
        keys,
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Rate {
    pub ok: u64,
    pub total: u64,
}

impl Rate {
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            100.0 * self.ok as f64 / self.total as f64
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseStats {
    /// Every crypto operation, per node.
    pub per_node: BTreeMap<u64, Rate>,
    /// Operations on nodes that were running and connected to the majority from invocation
    /// to completion.
    pub connected: Rate,
    pub all: Rate,
    /// Latency of successful operations, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Phase time covered, seconds (summed over its occurrences).
    pub seconds: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Availability and latency of the data-key workload's crypto operations, per phase.
pub fn availability(
    ops: &[Op],
    phases: &[PhaseEvent],
    conds: &[CondEvent],
    end: u64,
) -> BTreeMap<String, PhaseStats> {
    let mut out: BTreeMap<String, PhaseStats> = BTreeMap::new();
    let mut lat: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (inv, done) in pairs(ops, "datakeys") {
        let phase = Timeline::phase_at(phases, inv.time).to_owned();
        let s = out.entry(phase.clone()).or_default();
        let node = inv.node.unwrap_or(0);
        let ok = done.is_some_and(|d| d.kind == OpType::Ok && d.error.is_none());
        let until = done.map_or(end, |d| d.time);
        let r = s.per_node.entry(node).or_default();
        r.total += 1;
        s.all.total += 1;
        if ok {
            r.ok += 1;
            s.all.ok += 1;
            lat.entry(phase)
                .or_default()
                .push((until.saturating_sub(inv.time)) as f64 / 1e6);
        }
        if Timeline::connected_throughout(conds, node, inv.time, until) {
            s.connected.total += 1;
            if ok {
                s.connected.ok += 1;
            }
        }
    }
    for (phase, mut v) in lat {
        v.sort_by(f64::total_cmp);
        if let Some(s) = out.get_mut(&phase) {
            s.p50_ms = percentile(&v, 0.5);
            s.p99_ms = percentile(&v, 0.99);
            s.max_ms = v.last().copied().unwrap_or(0.0);
        }
    }
    for (i, p) in phases.iter().enumerate() {
        let next = phases.get(i + 1).map_or(end, |n| n.time);
        if let Some(s) = out.get_mut(&p.phase) {
            s.seconds += next.saturating_sub(p.time) as f64 / 1e9;
        }
    }
    out
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeVisibility {
    pub rounds: u64,
    /// Rounds in which the node answered "not found" within the probing window.
    pub stopped: u64,
    /// Time from the acknowledgement until the first "not found", milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Successful uses invoked more than the bound after the acknowledgement.
    pub late_uses: u64,
    /// Of those, on a node connected to the majority throughout: anomalies.
    pub anomalies: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VisibilityResult {
    pub valid: bool,
    pub rounds: usize,
    pub acknowledged: usize,
    pub per_node: BTreeMap<u64, NodeVisibility>,
    pub anomalies: Vec<serde_json::Value>,
}

pub fn visibility(rounds: &[VisibilityRound], conds: &[CondEvent]) -> VisibilityResult {
    let mut per_node: BTreeMap<u64, NodeVisibility> = BTreeMap::new();
    let mut gone: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut anomalies = Vec::new();
    let mut acknowledged = 0;
    for r in rounds {
        let Some(ack) = r.ack else { continue };
        acknowledged += 1;
        let nodes: std::collections::BTreeSet<u64> = r.probes.iter().map(|p| p.node).collect();
        for n in nodes {
            let v = per_node.entry(n).or_default();
            v.rounds += 1;
            let probes: Vec<_> = r.probes.iter().filter(|p| p.node == n).collect();
            if let Some(first) = probes
                .iter()
                .filter(|p| p.result == "not-found")
                .map(|p| p.complete)
                .min()
            {
                v.stopped += 1;
                gone.entry(n)
                    .or_default()
                    .push(first.saturating_sub(ack) as f64 / 1e6);
            }
            let late: Vec<_> = probes
                .iter()
                .filter(|p| p.result == "ok" && p.invoke > ack + VISIBILITY_BOUND_NS)
                .collect();
            v.late_uses += late.len() as u64;
            let bad: Vec<_> = late
                .iter()
                .filter(|p| Timeline::connected_throughout(conds, n, ack, p.complete))
                .collect();
            if let (Some(first), Some(last)) = (bad.first(), bad.last()) {
                v.anomalies += bad.len() as u64;
                anomalies.push(serde_json::json!({
                    "key": r.key,
                    "node": n,
                    "deleted_through": r.delete_node,
                    "ack_s": ack as f64 / 1e9,
                    "node_up_since_s": conds
                        .iter()
                        .filter(|e| e.node == n && e.time <= ack)
                        .map(|e| e.time)
                        .next_back()
                        .map(|t| t as f64 / 1e9),
                    "late_uses": bad.len(),
                    "first_late_use_ms_after_ack": (first.invoke - ack) as f64 / 1e6,
                    "last_late_use_ms_after_ack": (last.invoke - ack) as f64 / 1e6,
                }));
            }
        }
    }
    for (n, mut v) in gone {
        v.sort_by(f64::total_cmp);
        if let Some(s) = per_node.get_mut(&n) {
            s.p50_ms = percentile(&v, 0.5);
            s.p99_ms = percentile(&v, 0.99);
            s.max_ms = v.last().copied().unwrap_or(0.0);
        }
    }
    // Cap the list; the count is in per_node.
    anomalies.truncate(50);
    VisibilityResult {
        valid: anomalies.is_empty(),
        rounds: rounds.len(),
        acknowledged,
        per_node,
        anomalies,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::nemesis::Cond;
    use serde_json::json;

    fn op(index: u64, process: u64, kind: OpType, f: &str, time: u64, error: Option<&str>) -> Op {
        Op {
            index,
            process: Process::Client(process),
            kind,
            f: f.into(),
            value: json!({"key": "k"}),
            time,
            node: Some(1),
            workload: Some("lifecycle".into()),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn lifecycle_history_good_and_bad() {
        let good = vec![
            op(0, 1, OpType::Invoke, "create", 0, None),
            op(1, 1, OpType::Ok, "create", 10, None),
            op(2, 2, OpType::Invoke, "create", 5, None),
            op(3, 2, OpType::Info, "create", 20, Some("timeout")),
            op(4, 3, OpType::Invoke, "describe", 30, None),
            op(5, 3, OpType::Ok, "describe", 40, None),
            op(6, 4, OpType::Invoke, "delete", 50, None),
            op(
                7,
                4,
                OpType::Fail,
                "delete",
                51,
                Some("refused: connection refused"),
            ),
        ];
        let r = lifecycle(&good);
        assert!(r.valid, "{r:?}");
        assert_eq!(r.keys["k"].calls, 3);

        let mut bad = good.clone();
        bad.push(op(8, 5, OpType::Invoke, "describe", 60, None));
        bad.push(op(9, 5, OpType::Fail, "describe", 70, Some("not-found")));
        let r = lifecycle(&bad);
        assert!(!r.valid);
        assert!(r.keys["k"].verdict.starts_with("NOT"));
        assert!(r.keys["k"].involved.iter().any(|o| o.index == 8));
    }

    #[test]
    fn late_use_on_connected_node_is_an_anomaly() {
        let s = 1_000_000_000;
        let conds = vec![
            CondEvent {
                time: 0,
                node: 1,
                cond: Cond::Up,
            },
            CondEvent {
                time: 0,
                node: 2,
                cond: Cond::Up,
            },
            CondEvent {
                time: 0,
                node: 3,
                cond: Cond::Isolated,
            },
        ];
        let probe = |node, at: u64, result: &str| crate::workload::Probe {
            node,
            invoke: at,
            complete: at + 1,
            result: result.into(),
        };
        let round = VisibilityRound {
            key: "jv-0".into(),
            delete_node: 1,
            ack: Some(10 * s),
            probes: vec![
                probe(1, 9 * s, "ok"),
                probe(1, 10 * s + 100, "not-found"),
                probe(2, 10 * s + s / 2, "ok"),
                probe(2, 10 * s + s / 2 + 10, "not-found"),
                // Isolated node: late use allowed.
                probe(3, 13 * s, "ok"),
            ],
        };
        let r = visibility(std::slice::from_ref(&round), &conds);
        assert!(r.valid, "{r:?}");
        assert_eq!(r.per_node[&3].late_uses, 1);
        let mut late = round.clone();
        late.probes.push(probe(2, 12 * s, "ok"));
        let r = visibility(&[late], &conds);
        assert!(!r.valid);
        assert_eq!(r.per_node[&2].anomalies, 1);
    }
}
