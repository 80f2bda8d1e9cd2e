//! Faults: which exist, the schedule derived from the seed, and the executor that applies and
//! heals them while recording what it did and which nodes it affected.

use crate::client::{Api, Outcome};
use crate::db::{self, Db};
use crate::history::lock;
use crate::hosts::{self, node_ip, node_ns};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    KillRandom,
    KillLeader,
    PauseRandom,
    PauseLeader,
    PartitionHalves,
    PartitionLeader,
    PartitionRing,
    PartitionOneWay,
    SlowLink,
    KmsStop,
    KmsPause,
    KmsCut,
    KmsRestartNode,
    Membership,
}

impl Fault {
    pub const ALL: [Fault; 14] = [
        Fault::KillRandom,
        Fault::KillLeader,
        Fault::PauseRandom,
        Fault::PauseLeader,
        Fault::PartitionHalves,
        Fault::PartitionLeader,
        Fault::PartitionRing,
        Fault::PartitionOneWay,
        Fault::SlowLink,
        Fault::KmsStop,
        Fault::KmsPause,
        Fault::KmsCut,
        Fault::KmsRestartNode,
        Fault::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillRandom => "kill-random",
            Fault::KillLeader => "kill-leader",
            Fault::PauseRandom => "pause-random",
            Fault::PauseLeader => "pause-leader",
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionRing => "partition-ring",
            Fault::PartitionOneWay => "partition-one-way",
            Fault::SlowLink => "slow-link",
            Fault::KmsStop => "kms-stop",
            Fault::KmsPause => "kms-pause",
            Fault::KmsCut => "kms-cut",
            Fault::KmsRestartNode => "kms-restart-node",
            Fault::Membership => "membership",
        }
    }

    /// Parses a comma-separated list of fault names or groups (`all`, `none`, `kill`,
    /// `pause`, `partition`, `kms`).
    pub fn parse_list(text: &str) -> Result<Vec<Fault>> {
        let mut out = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let matched: Vec<Fault> = match word {
                "all" => Fault::ALL.to_vec(),
                "none" => Vec::new(),
                group @ ("kill" | "pause" | "partition" | "kms") => Fault::ALL
                    .into_iter()
                    .filter(|f| f.name().starts_with(group))
                    .collect(),
                name => match Fault::ALL.into_iter().find(|f| f.name() == name) {
                    Some(f) => vec![f],
                    None => bail!(
                        "unknown nemesis '{name}'; known: all, none, kill, pause, partition, kms, {}",
                        Fault::ALL.map(Fault::name).join(", ")
                    ),
                },
            };
            for f in matched {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }
}

/// One scheduled fault. `pick` decides the random targets, so a schedule is repeatable.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub at_s: f64,
    pub fault: Fault,
    pub duration_s: f64,
    pub pick: u64,
}

/// Faults of 5 to 10 s separated by 4 to 7 s of calm, from `warmup` until `cooldown` before
/// `total`, cycling through `faults` in an order shuffled per round.
pub fn schedule(
    seed: u64,
    faults: &[Fault],
    total: Duration,
    warmup: Duration,
    cooldown: Duration,
) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    if faults.is_empty() {
        return steps;
    }
    let end = total.saturating_sub(cooldown).as_secs_f64();
    let mut at = warmup.as_secs_f64();
    let mut round: Vec<Fault> = Vec::new();
    // Bounded: each step advances time by at least 9 s.
    for _ in 0..10_000 {
        if round.is_empty() {
            round = faults.to_vec();
            round.shuffle(&mut rng);
        }
        let duration = rng.gen_range(5.0..10.0_f64);
        if at + duration > end {
            break;
        }
        let fault = round.pop().unwrap_or(Fault::KillRandom);
        steps.push(Step {
            at_s: (at * 10.0).round() / 10.0,
            fault,
            duration_s: (duration * 10.0).round() / 10.0,
            pick: rng.gen(),
        });
        at += duration + rng.gen_range(4.0..7.0_f64);
    }
    steps
}

/// What the harness knows about a node at a moment, for judging what it may answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cond {
    /// Running and connected to the majority.
    Up,
    /// Killed, paused, removed or not yet joined.
    Down,
    /// On the minority side of a partition.
    Isolated,
    /// One end of a one-way partition: connected or not, depending on direction.
    Suspect,
    /// On a slowed link.
    Slow,
}

#[derive(Clone, Debug, Serialize)]
pub struct CondEvent {
    pub time: u64,
    pub node: u64,
    pub cond: Cond,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PhaseEvent {
    pub time: u64,
    pub phase: String,
}

/// What the nemesis did, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Action {
    pub time: u64,
    pub fault: String,
    pub what: String,
}

/// Shared record of phases, node conditions and nemesis actions.
#[derive(Clone, Default)]
pub struct Timeline {
    inner: Arc<Mutex<TimelineInner>>,
}

#[derive(Default)]
struct TimelineInner {
    phases: Vec<PhaseEvent>,
    conds: Vec<CondEvent>,
    actions: Vec<Action>,
}

impl Timeline {
    pub fn phase(&self, time: u64, phase: &str) {
        lock(&self.inner).phases.push(PhaseEvent {
            time,
            phase: phase.to_owned(),
        });
    }

    pub fn cond(&self, time: u64, node: u64, cond: Cond) {
        lock(&self.inner).conds.push(CondEvent { time, node, cond });
    }

    pub fn action(&self, time: u64, fault: &str, what: String) {
        println!("[{:>7.1}s] nemesis {fault}: {what}", time as f64 / 1e9);
        lock(&self.inner).actions.push(Action {
            time,
            fault: fault.to_owned(),
            what,
        });
    }

    pub fn phases(&self) -> Vec<PhaseEvent> {
        lock(&self.inner).phases.clone()
    }

    pub fn actions(&self) -> Vec<Action> {
        lock(&self.inner).actions.clone()
    }

    pub fn conds(&self) -> Vec<CondEvent> {
        lock(&self.inner).conds.clone()
    }

    /// The phase at `time`.
    pub fn phase_at(phases: &[PhaseEvent], time: u64) -> &str {
        phases
            .iter()
            .rev()
            .find(|p| p.time <= time)
            .map_or("setup", |p| p.phase.as_str())
    }

    /// Whether `node` was up and connected to the majority during all of `[from, to]`.
    pub fn connected_throughout(conds: &[CondEvent], node: u64, from: u64, to: u64) -> bool {
        let mut current = Cond::Down;
        for e in conds.iter().filter(|e| e.node == node) {
            if e.time <= from {
                current = e.cond;
            } else if e.time <= to && e.cond != Cond::Up {
                return false;
            }
        }
        current == Cond::Up
    }
}

/// Everything the nemesis needs.
#[derive(Clone)]
pub struct Nemesis {
    pub db: Db,
    pub api: Api,
    pub members: Arc<Mutex<Vec<u64>>>,
    pub timeline: Timeline,
    pub start: Instant,
    pub netem: bool,
    pub next_id: Arc<Mutex<u64>>,
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

impl Nemesis {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn members(&self) -> Vec<u64> {
        lock(&self.members).clone()
    }

    fn set_cond(&self, nodes: &[u64], cond: Cond) {
        let t = self.now();
        for n in nodes {
            self.timeline.cond(t, *n, cond);
        }
    }

    /// The leader, as the nodes report it: the node claiming leadership in the highest term.
    pub async fn leader(&self) -> Option<u64> {
        let members = self.members();
        let mut tasks = tokio::task::JoinSet::new();
        for id in members {
            let api = self.api.clone();
            tasks.spawn(async move {
                (
                    id,
                    api.cluster_status(&db::endpoint(id), Duration::from_secs(1))
                        .await,
                )
            });
        }
        let mut best: Option<(u64, u64)> = None;
        while let Some(Ok((id, st))) = tasks.join_next().await {
            if let Outcome::Ok(v) = st {
                let leader = v.get("leader").and_then(serde_json::Value::as_u64);
                let term = v
                    .get("term")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                if leader == Some(id) && best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Waits until some node claims leadership, for at most `limit`.
    pub async fn await_leader(&self, limit: Duration) -> Option<u64> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    async fn target(&self, leader: bool, pick: u64) -> Option<u64> {
        if leader {
            if let Some(l) = self.await_leader(Duration::from_secs(5)).await {
                return Some(l);
            }
        }
        let m = self.members();
        m.get((pick % m.len().max(1) as u64) as usize).copied()
    }

    /// Runs the schedule until it ends or `stop` fires, then heals everything.
    pub async fn run(&self, steps: Vec<Step>, stop: CancellationToken) {
        for step in steps {
            let at = self.start + Duration::from_secs_f64(step.at_s);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            let dur = Duration::from_secs_f64(step.duration_s);
            if let Err(e) = self.apply(&step, dur, &stop).await {
                self.timeline
                    .action(self.now(), step.fault.name(), format!("failed: {e:#}"));
            }
            self.heal_all(step.fault.name()).await;
            self.timeline.phase(self.now(), "recovery");
        }
        self.heal_all("final").await;
    }

    async fn sleep(&self, d: Duration, stop: &CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    async fn apply(&self, step: &Step, dur: Duration, stop: &CancellationToken) -> Result<()> {
        let name = step.fault.name();
        let members = self.members();
        let mut rng = StdRng::seed_from_u64(step.pick);
        match step.fault {
            Fault::KillRandom | Fault::KillLeader => {
                let Some(t) = self
                    .target(step.fault == Fault::KillLeader, step.pick)
                    .await
                else {
                    bail!("no target");
                };
                self.timeline.phase(self.now(), name);
                self.set_cond(&[t], Cond::Down);
                self.db.kill(t).await;
                self.timeline
                    .action(self.now(), name, format!("SIGKILL node {t}"));
                self.sleep(dur, stop).await;
                self.db.start(t)?;
                self.timeline
                    .action(self.now(), name, format!("restarted node {t}"));
                self.await_ready(name, t).await;
            }
            Fault::PauseRandom | Fault::PauseLeader => {
                let Some(t) = self
                    .target(step.fault == Fault::PauseLeader, step.pick)
                    .await
                else {
                    bail!("no target");
                };
                self.timeline.phase(self.now(), name);
                self.set_cond(&[t], Cond::Down);
                self.db.pause(t).await?;
                self.timeline
                    .action(self.now(), name, format!("SIGSTOP node {t}"));
                self.sleep(dur, stop).await;
                self.db.resume(t).await?;
                self.timeline
                    .action(self.now(), name, format!("SIGCONT node {t}"));
                self.set_cond(&[t], Cond::Up);
            }
            Fault::PartitionHalves | Fault::PartitionLeader => {
                let minority: Vec<u64> = if step.fault == Fault::PartitionLeader {
                    let Some(l) = self.target(true, step.pick).await else {
                        bail!("no leader");
                    };
                    vec![l]
                } else {
                    let mut m = members.clone();
                    m.shuffle(&mut rng);
                    m.truncate(members.len() / 2);
                    m
                };
                let majority: Vec<u64> = members
                    .iter()
                    .copied()
                    .filter(|m| !minority.contains(m))
                    .collect();
                self.timeline.phase(self.now(), name);
                self.set_cond(&minority, Cond::Isolated);
                for a in &minority {
                    for b in &majority {
                        hosts::drop_from(&node_ns(*a), node_ip(*b)).await?;
                        hosts::drop_from(&node_ns(*b), node_ip(*a)).await?;
                    }
                }
                self.timeline.action(
                    self.now(),
                    name,
                    format!("partitioned {minority:?} from {majority:?}"),
                );
                self.sleep(dur, stop).await;
            }
            Fault::PartitionRing => {
                let n = members.len();
                let mut cut = Vec::new();
                self.timeline.phase(self.now(), name);
                for (i, a) in members.iter().enumerate() {
                    for (j, b) in members.iter().enumerate() {
                        let adjacent = i == j || (i + 1) % n == j || (j + 1) % n == i;
                        // With three nodes every pair is adjacent in a ring: cut one edge, so
                        // one node bridges the other two.
                        let cut_edge = if n <= 3 {
                            (i == 0 && j + 1 == n) || (j == 0 && i + 1 == n)
                        } else {
                            !adjacent
                        };
                        if cut_edge && i < j {
                            cut.push((*a, *b));
                        }
                    }
                }
                // A node that lost a link may have lost the one to the leader, and Raft does
                // not relay: it is not counted as connected.
                let mut touched: Vec<u64> = cut.iter().flat_map(|(a, b)| [*a, *b]).collect();
                touched.sort_unstable();
                touched.dedup();
                self.set_cond(&touched, Cond::Suspect);
                for (a, b) in &cut {
                    hosts::drop_from(&node_ns(*a), node_ip(*b)).await?;
                    hosts::drop_from(&node_ns(*b), node_ip(*a)).await?;
                }
                self.timeline
                    .action(self.now(), name, format!("ring: links cut {cut:?}"));
                self.sleep(dur, stop).await;
            }
            Fault::PartitionOneWay => {
                if members.len() < 2 {
                    bail!("too few nodes");
                }
                let mut m = members.clone();
                m.shuffle(&mut rng);
                let (a, b) = (m[0], m[1]);
                self.timeline.phase(self.now(), name);
                self.set_cond(&[a, b], Cond::Suspect);
                hosts::drop_from(&node_ns(a), node_ip(b)).await?;
                self.timeline.action(
                    self.now(),
                    name,
                    format!("node {a} drops everything from node {b}"),
                );
                self.sleep(dur, stop).await;
            }
            Fault::SlowLink => {
                let mut m = members.clone();
                m.shuffle(&mut rng);
                let k = rng.gen_range(1..=m.len().max(1));
                m.truncate(k);
                self.timeline.phase(self.now(), name);
                self.set_cond(&m, Cond::Slow);
                let mut how = String::new();
                for id in &m {
                    how = hosts::slow_link(&node_ns(*id), &id.to_string(), self.netem).await?;
                }
                self.timeline
                    .action(self.now(), name, format!("nodes {m:?}: {how}"));
                self.sleep(dur, stop).await;
            }
            Fault::KmsStop | Fault::KmsPause | Fault::KmsCut => {
                self.timeline.phase(self.now(), name);
                let what = match step.fault {
                    Fault::KmsStop => self.db.kms().stop().await?,
                    Fault::KmsPause => self.db.kms().pause().await?,
                    _ => {
                        let mut m = members.clone();
                        m.shuffle(&mut rng);
                        m.truncate(rng.gen_range(1..members.len().max(2)));
                        self.db.kms().cut(&m).await?
                    }
                };
                self.timeline.action(self.now(), name, what);
                self.sleep(dur, stop).await;
                self.db.kms().start().await?;
                self.timeline.action(self.now(), name, "KMS back".into());
            }
            Fault::KmsRestartNode => {
                let Some(t) = self.target(false, step.pick).await else {
                    bail!("no target");
                };
                self.timeline.phase(self.now(), name);
                let what = self.db.kms().stop().await?;
                self.timeline.action(self.now(), name, what);
                self.sleep(Duration::from_secs(1), stop).await;
                self.set_cond(&[t], Cond::Down);
                self.db.kill(t).await;
                self.timeline
                    .action(self.now(), name, format!("SIGKILL node {t}"));
                self.sleep(Duration::from_secs(1), stop).await;
                self.db.start(t)?;
                self.timeline.action(
                    self.now(),
                    name,
                    format!("restarted node {t} while the KMS is down"),
                );
                self.await_ready(name, t).await;
                self.sleep(dur.saturating_sub(Duration::from_secs(2)), stop)
                    .await;
                self.db.kms().start().await?;
                self.timeline.action(self.now(), name, "KMS back".into());
            }
            Fault::Membership => self.membership(step, dur, stop).await?,
        }
        Ok(())
    }

    async fn membership(&self, step: &Step, dur: Duration, stop: &CancellationToken) -> Result<()> {
        let name = step.fault.name();
        let Some(leader) = self.await_leader(Duration::from_secs(5)).await else {
            bail!("no leader");
        };
        let members = self.members();
        let victim = members[(step.pick % members.len() as u64) as usize];
        self.timeline.phase(self.now(), name);
        match self
            .api
            .cluster_remove(&db::endpoint(leader), victim, Duration::from_secs(10))
            .await
        {
            Outcome::Ok(()) => {}
            other => bail!("removing node {victim} through node {leader}: {other:?}"),
        }
        lock(&self.members).retain(|m| *m != victim);
        self.set_cond(&[victim], Cond::Down);
        self.timeline.action(
            self.now(),
            name,
            format!("removed node {victim} (through leader {leader})"),
        );
        self.db.remove(victim).await;
        self.sleep(dur, stop).await;

        let id = {
            let mut next = lock(&self.next_id);
            let id = *next;
            *next += 1;
            id
        };
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.prepare(id, None)).await??;
        self.db.start(id)?;
        // Wait for the new node's API, then add it through the current leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut added = false;
        while Instant::now() < deadline && !stop.is_cancelled() {
            if !matches!(
                self.api
                    .cluster_status(&db::endpoint(id), ADMIN_TIMEOUT)
                    .await,
                Outcome::Ok(_)
            ) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            let Some(leader) = self.leader().await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            match self
                .api
                .cluster_add(
                    &db::endpoint(leader),
                    id,
                    &db::peer_address(id),
                    Duration::from_secs(15),
                )
                .await
            {
                Outcome::Ok(()) => {
                    added = true;
                    break;
                }
                other => {
                    self.timeline.action(
                        self.now(),
                        name,
                        format!("adding node {id} through {leader}: {other:?}; retrying"),
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if !added {
            self.db.remove(id).await;
            bail!("node {id} could not be added; the cluster continues with one node less");
        }
        // Serve it to clients once it is ready.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !self.api.ready(&db::endpoint(id), ADMIN_TIMEOUT).await {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        lock(&self.members).push(id);
        self.set_cond(&[id], Cond::Up);
        self.timeline
            .action(self.now(), name, format!("added fresh node {id}"));
        Ok(())
    }

    /// Waits (at most 30 s) until a restarted node serves again, then counts it as up.
    async fn await_ready(&self, fault: &str, id: u64) {
        let began = Instant::now();
        let deadline = began + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.api.ready(&db::endpoint(id), ADMIN_TIMEOUT).await {
                self.set_cond(&[id], Cond::Up);
                self.timeline.action(
                    self.now(),
                    fault,
                    format!(
                        "node {id} ready after {:.1} s",
                        began.elapsed().as_secs_f64()
                    ),
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.timeline.action(
            self.now(),
            fault,
            format!("node {id} not ready within 30 s"),
        );
    }

    /// Removes every network fault, ends any KMS outage and brings every node back.
    pub async fn heal_all(&self, fault: &str) {
        let ids = self.db.prepared();
        for id in &ids {
            let _ = hosts::flush_rules(&node_ns(*id)).await;
            hosts::clear_link(&node_ns(*id), &id.to_string()).await;
        }
        if let Err(e) = self.db.kms().start().await {
            self.timeline.action(
                self.now(),
                fault,
                format!("restoring the KMS failed: {e:#}"),
            );
        }
        self.db.heal_processes().await;
        let members = self.members();
        let t = self.now();
        for id in members {
            self.timeline.cond(t, id, Cond::Up);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_a_function_of_the_seed() {
        let all = Fault::ALL.to_vec();
        let t = Duration::from_secs(300);
        let (w, c) = (Duration::from_secs(5), Duration::from_secs(5));
        let a = schedule(42, &all, t, w, c);
        let b = schedule(42, &all, t, w, c);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(
            format!("{a:?}"),
            format!("{:?}", schedule(43, &all, t, w, c))
        );
        // Faults do not overlap and stay inside the run.
        for pair in a.windows(2) {
            assert!(pair[0].at_s + pair[0].duration_s < pair[1].at_s);
        }
        let last = a.last().unwrap();
        assert!(last.at_s + last.duration_s <= 295.0);
        // One round uses every fault once before any repeats.
        let first: std::collections::HashSet<_> =
            a.iter().take(all.len()).map(|s| s.fault).collect();
        assert_eq!(first.len(), all.len());
        assert!(schedule(1, &[], t, w, c).is_empty());
    }

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(Fault::parse_list("all").unwrap().len(), Fault::ALL.len());
        assert!(Fault::parse_list("none").unwrap().is_empty());
        assert_eq!(
            Fault::parse_list("kill, pause-leader,kill-random").unwrap(),
            vec![Fault::KillRandom, Fault::KillLeader, Fault::PauseLeader]
        );
        assert_eq!(Fault::parse_list("partition").unwrap().len(), 4);
        assert_eq!(Fault::parse_list("kms").unwrap().len(), 4);
        assert!(Fault::parse_list("kill-everything").is_err());
    }

    #[test]
    fn connectivity_over_an_interval() {
        let e = |time, node, cond| CondEvent { time, node, cond };
        let conds = vec![
            e(0, 1, Cond::Up),
            e(10, 1, Cond::Isolated),
            e(20, 1, Cond::Up),
        ];
        assert!(Timeline::connected_throughout(&conds, 1, 0, 9));
        assert!(!Timeline::connected_throughout(&conds, 1, 5, 15));
        assert!(!Timeline::connected_throughout(&conds, 1, 12, 15));
        assert!(Timeline::connected_throughout(&conds, 1, 20, 30));
        // Unknown nodes are not connected.
        assert!(!Timeline::connected_throughout(&conds, 2, 0, 1));
    }
}
