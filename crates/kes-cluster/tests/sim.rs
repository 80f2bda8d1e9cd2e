//! Deterministic simulation of a cluster: three to five nodes with the real Raft (openraft on
//! sled, each node's database kept in memory across its crashes), the real state machine and
//! cluster logic, one in-memory keystore as the KMS, on a simulated network with seeded message
//! loss, delay, partitions, node crashes and restarts, and clock jumps. Everything runs on one
//! thread of a tokio runtime whose time is paused (it jumps to the next timer when every task
//! waits), and every random choice (the network's, the faults', the workload's, the nodes'
//! election timeouts) comes from the seed, so a seed replays its run.
//!
//! The history of the clients' operations is checked per key (see `check`):
//! - creates and deletes: an acknowledged create excludes a second acknowledged create unless a
//!   delete may lie between them;
//! - describe is linearizable: it serves the key of the create that precedes it, and "not
//!   found" only when a delete may lie between that create and it;
//! - generate/decrypt (the crypto path, served from the local replica): a node that stayed
//!   connected does not serve a key after its acknowledged delete (plus a grace for the
//!   tombstone to arrive);
//! - at the end, faults healed: a key served to a client (a data key generated under it) is
//!   still served with the same material by every node unless it may have been deleted, and an
//!   acknowledged delete that no create may follow leaves every node answering "not found".
//!
//! `KES_SIM_SEEDS=<n>` runs seeds 0..n (default 300), `KES_SIM_SEED=<n>` runs one seed and
//! prints its history, `KES_SIM_THREADS=<n>` sets the threads the seeds are spread over. A
//! failing seed prints the command that replays it, and its history.
//!
//! This complements the process-level fault harness in `jepsen/` (real processes, TLS, a
//! real KMS, real time): here the faults are finer and many more runs fit in a minute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use kes_cluster::peer::client::PeerError;
use kes_cluster::peer::server::serve_local;
use kes_cluster::peer::transport::PeerTransport;
use kes_cluster::peer::wire::{Forward, ForwardResult};
use kes_cluster::{
    Clock, Cluster, ClusterError, Forwarded, Options, Refusal, Seed, Tasks, WriteHandler, WriteOp,
};
use kes_config::{CacheConfig, ClusterConfig, ClusterTls};
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::memory::MemoryStore;
use kes_keystore::KeyStore;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

type NodeId = u64;

/// How long the clients run, in simulated time.
const RUN_FOR: Duration = Duration::from_secs(20);
/// How long the healed cluster gets to settle before the final reads.
const SETTLE: Duration = Duration::from_secs(10);
/// How long after an acknowledged delete a connected node may still serve the key (the
/// tombstone's way to it under message loss).
const TOMBSTONE_GRACE_MS: u64 = 2_000;
/// A node counts as disturbed from a fault until this long after the fault ended.
const RECOVERY_MS: u64 = 3_000;
const NAMES: [&str; 3] = ["k0", "k1", "k2"];

// ------------------------------------------------------------------------------------------
// Time

/// A node's clock on the simulated time: monotonic from the node's start, the wall clock
/// shifted by the jumps the faults make.
struct SimClock {
    start: Instant,
    wall0: u64,
    jump: AtomicI64,
}

impl Clock for SimClock {
    fn wall_ms(&self) -> u64 {
        (self.wall0 + self.mono_ms()).saturating_add_signed(self.jump.load(Ordering::SeqCst))
    }
    fn mono_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

// ------------------------------------------------------------------------------------------
// The network

struct Net {
    rng: Mutex<StdRng>,
    /// The running nodes, by id, with their incarnation.
    up: Mutex<BTreeMap<NodeId, (u64, Arc<Cluster>)>>,
    /// Directed links that drop everything.
    cut: Mutex<BTreeSet<(NodeId, NodeId)>>,
    /// Chance that one message is lost (none once the faults are healed).
    loss: Mutex<f64>,
    max_delay_ms: u64,
    t0: Instant,
}

impl Net {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }
    fn lost(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.lock().contains(&(from, to)) || self.rng.lock().gen_bool(*self.loss.lock())
    }
    fn delay(&self) -> Duration {
        Duration::from_millis(self.rng.lock().gen_range(0..=self.max_delay_ms))
    }
    fn node(&self, id: NodeId) -> Option<(u64, Arc<Cluster>)> {
        self.up.lock().get(&id).cloned()
    }
}

/// One node's side of the network.
struct Link {
    from: NodeId,
    net: Arc<Net>,
}

fn unreachable(id: NodeId) -> PeerError {
    PeerError::Unreachable {
        id,
        message: "timed out".into(),
    }
}

#[async_trait]
impl PeerTransport for Link {
    async fn call_bytes(
        &self,
        id: NodeId,
        _addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let net = &self.net;
        let started = Instant::now();
        let Some((incarnation, target)) = net.node(id) else {
            return Err(PeerError::NotConnected {
                id,
                message: "connection refused".into(),
            });
        };
        if net.lost(self.from, id) {
            sleep(timeout).await;
            return Err(unreachable(id));
        }
        sleep(net.delay()).await;
        let left = timeout.saturating_sub(started.elapsed());
        let writes = SimWrites(Arc::clone(&target));
        let served =
            tokio::time::timeout(left, serve_local(&writes, &target, self.from, path, &body)).await;
        let Ok((status, answer)) = served else {
            return Err(unreachable(id));
        };
        // The answer is lost if the link back drops it or the node crashed meanwhile.
        let same = net.node(id).is_some_and(|(i, _)| i == incarnation);
        if !same || net.lost(id, self.from) {
            sleep(timeout.saturating_sub(started.elapsed())).await;
            return Err(unreachable(id));
        }
        sleep(net.delay()).await;
        if status != 200 {
            return Err(PeerError::Remote {
                id,
                status,
                message: String::from_utf8_lossy(&answer).into_owned(),
            });
        }
        Ok(answer)
    }
}

/// Forwarded writes on the leader: what the server's handler does, without the policies (the
/// identity names the client operation, which becomes the key's `created_by`).
struct SimWrites(Arc<Cluster>);

fn refusal(e: &ClusterError) -> Refusal {
    let status = match e {
        ClusterError::KeyExists => 400,
        ClusterError::KeyNotFound => 404,
        _ => 503,
    };
    Refusal {
        status,
        message: e.to_string(),
    }
}

#[async_trait]
impl WriteHandler for SimWrites {
    async fn forwarded(&self, _from: NodeId, write: Forward) -> ForwardResult {
        match run_write(&self.0, &write).await {
            Ok(()) => ForwardResult::Done,
            Err(e) => ForwardResult::Refused(refusal(&e)),
        }
    }
}

async fn run_write(c: &Arc<Cluster>, write: &Forward) -> Result<(), ClusterError> {
    match &write.op {
        WriteOp::CreateKey { name } => {
            let v = KeyVersion::generate(KeyType::Aes256, &write.identity);
            c.create(name, &v).await
        }
        WriteOp::DeleteKey { name } => c.delete(name).await,
        _ => Err(ClusterError::Internal("not simulated")),
    }
}

// ------------------------------------------------------------------------------------------
// Nodes

struct Node {
    db: sled::Db,
    clock: Arc<SimClock>,
    running: Option<(Arc<Cluster>, Arc<Tasks>)>,
    incarnation: u64,
}

struct Sim {
    seed: u64,
    n: u64,
    net: Arc<Net>,
    kms: Arc<MemoryStore>,
    nodes: Mutex<BTreeMap<NodeId, Node>>,
    history: Mutex<Vec<Op>>,
    /// Per node, the intervals [from, to) during which it was partitioned, down or recovering.
    disturbed: Mutex<Vec<(NodeId, u64, u64)>>,
    /// Open disturbances: node -> since.
    open: Mutex<BTreeMap<NodeId, u64>>,
    faults: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
}

impl Sim {
    async fn start_node(self: &Arc<Self>, id: NodeId) {
        let (db, clock, incarnation) = {
            let mut nodes = self.nodes.lock();
            let node = nodes.get_mut(&id).expect("node");
            node.incarnation += 1;
            // A restarted node's monotonic clock starts again; its wall clock keeps its skew.
            let clock = Arc::new(SimClock {
                start: Instant::now(),
                wall0: node.clock.wall_ms(),
                jump: AtomicI64::new(0),
            });
            node.clock = Arc::clone(&clock);
            (node.db.clone(), clock, node.incarnation)
        };
        let members: BTreeMap<NodeId, String> =
            (1..=self.n).map(|i| (i, format!("node-{i}"))).collect();
        let opts = Options {
            cluster: Some(ClusterConfig {
                node_id: id,
                address: "127.0.0.1:0".parse().expect("address"),
                advertise: format!("node-{id}"),
                data_dir: Default::default(),
                members,
                tls: ClusterTls {
                    key: Default::default(),
                    cert: Default::default(),
                    ca: Default::default(),
                },
            }),
            cache: CacheConfig::default(),
            key_type: KeyType::Aes256,
            seed: Seed::default(),
            clock,
        };
        let stores = kes_raft::SledStore::open_simulated(db).expect("raft storage");
        let link: Arc<dyn PeerTransport> = Arc::new(Link {
            from: id,
            net: Arc::clone(&self.net),
        });
        let store: Arc<dyn KeyStore> = self.kms.clone();
        let cluster = Cluster::open_with(opts, store, Some(link), stores)
            .await
            .expect("open");
        cluster.seed_rng(
            self.seed
                .wrapping_mul(1000)
                .wrapping_add(id * 10 + incarnation),
        );
        let tasks = Arc::new(Tasks::new(CancellationToken::new()));
        cluster.start(&tasks);
        {
            let tasks = Arc::clone(&tasks);
            let sim = Arc::clone(self);
            tokio::spawn(async move {
                let why = tasks.failure().await;
                // Tasks end with errors while a crash stops the node: not a failure.
                if sim.net.node(id).is_some_and(|(i, _)| i == incarnation) {
                    sim.failures
                        .lock()
                        .push(format!("node {id}: a needed task ended: {why}"));
                }
            });
        }
        self.net
            .up
            .lock()
            .insert(id, (incarnation, Arc::clone(&cluster)));
        self.nodes.lock().get_mut(&id).expect("node").running = Some((cluster, tasks));
    }

    async fn crash(&self, id: NodeId) {
        self.net.up.lock().remove(&id);
        let running = self
            .nodes
            .lock()
            .get_mut(&id)
            .and_then(|n| n.running.take());
        if let Some((cluster, tasks)) = running {
            tasks.shutdown(Duration::from_millis(100)).await;
            cluster.shutdown().await;
        }
    }

    fn cluster(&self, id: NodeId) -> Option<Arc<Cluster>> {
        self.net.node(id).map(|(_, c)| c)
    }

    fn disturb(&self, id: NodeId) {
        let now = self.net.now();
        self.open.lock().entry(id).or_insert(now);
    }

    fn settle(&self, id: NodeId) {
        let now = self.net.now();
        if let Some(since) = self.open.lock().remove(&id) {
            self.disturbed.lock().push((id, since, now + RECOVERY_MS));
        }
    }

    fn fault(&self, what: String) {
        let at = self.net.now();
        self.faults.lock().push(format!("{at:>6} ms  {what}"));
    }
}

// ------------------------------------------------------------------------------------------
// Faults

async fn nemesis(sim: Arc<Sim>, mut rng: StdRng, until: Instant) {
    let mut down: BTreeSet<NodeId> = BTreeSet::new();
    let mut isolated: BTreeSet<NodeId> = BTreeSet::new();
    let minority = (sim.n - 1) / 2;
    while Instant::now() < until {
        sleep(Duration::from_millis(rng.gen_range(300..2_000))).await;
        match rng.gen_range(0..6) {
            0 if isolated.is_empty() => {
                // Cut a minority off (both ways), or one link one way.
                let count = rng.gen_range(1..=minority.max(1));
                let mut ids: Vec<NodeId> = (1..=sim.n).collect();
                for _ in 0..count {
                    let i = rng.gen_range(0..ids.len());
                    isolated.insert(ids.remove(i));
                }
                let mut cut = sim.net.cut.lock();
                for a in &isolated {
                    for b in 1..=sim.n {
                        if !isolated.contains(&b) {
                            cut.insert((*a, b));
                            cut.insert((b, *a));
                        }
                    }
                }
                drop(cut);
                for a in &isolated {
                    sim.disturb(*a);
                }
                sim.fault(format!("partition {isolated:?} from the rest"));
            }
            1 => {
                let (a, b) = (rng.gen_range(1..=sim.n), rng.gen_range(1..=sim.n));
                if a != b {
                    sim.net.cut.lock().insert((a, b));
                    sim.disturb(a);
                    sim.disturb(b);
                    isolated.insert(a);
                    isolated.insert(b);
                    sim.fault(format!("cut link {a} -> {b}"));
                }
            }
            2 if !isolated.is_empty() => {
                sim.net.cut.lock().clear();
                for a in std::mem::take(&mut isolated) {
                    if !down.contains(&a) {
                        sim.settle(a);
                    }
                }
                sim.fault("heal the network".into());
            }
            3 if (down.len() as u64) < minority.max(1) => {
                let id = rng.gen_range(1..=sim.n);
                if down.insert(id) {
                    sim.disturb(id);
                    sim.fault(format!("crash node {id}"));
                    sim.crash(id).await;
                }
            }
            4 if !down.is_empty() => {
                let id = *down.iter().next().expect("a node down");
                down.remove(&id);
                sim.fault(format!("restart node {id}"));
                sim.start_node(id).await;
                if !isolated.contains(&id) {
                    sim.settle(id);
                }
            }
            5 => {
                let id = rng.gen_range(1..=sim.n);
                let jump: i64 = rng.gen_range(-120_000..=600_000);
                if let Some(n) = sim.nodes.lock().get(&id) {
                    n.clock.jump.fetch_add(jump, Ordering::SeqCst);
                }
                sim.fault(format!("node {id}: wall clock jumps {jump} ms"));
            }
            _ => {}
        }
    }
    sim.net.cut.lock().clear();
    *sim.net.loss.lock() = 0.0;
    for id in down {
        sim.fault(format!("restart node {id}"));
        sim.start_node(id).await;
    }
    let open: Vec<NodeId> = sim.open.lock().keys().copied().collect();
    for id in open {
        sim.settle(id);
    }
    sim.fault("heal everything".into());
}

// ------------------------------------------------------------------------------------------
// Clients and the history

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    Delete,
    /// The crypto path (`Cluster::get`): generate or decrypt.
    Get,
    Describe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused with a definite answer (the key exists, or does not): nothing changed.
    Refused,
    /// Failed: it may or may not have happened, now or later.
    Unknown(String),
    /// A read served the key created by this operation.
    Found(u64),
    NotFound,
    /// The final reads: the node has no answer.
    Pending(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Op {
    id: u64,
    node: NodeId,
    kind: Kind,
    name: &'static str,
    inv: u64,
    resp: u64,
    outcome: Outcome,
}

impl Op {
    fn acked(&self) -> bool {
        self.outcome == Outcome::Ok
    }
    /// When the operation's effect may have ended taking place (never, for a definite
    /// refusal; any time, for an unknown outcome).
    fn effect_until(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok => Some(self.resp),
            Outcome::Unknown(_) => Some(u64::MAX),
            _ => None,
        }
    }
}

fn creator(key: &kes_cluster::CachedKey) -> u64 {
    key.version
        .created_by
        .strip_prefix("op-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

async fn write_via(c: &Arc<Cluster>, op: u64, name: &str, kind: &Kind) -> Outcome {
    let w = Forward {
        identity: format!("op-{op}"),
        client: "sim".into(),
        op: match kind {
            Kind::Create => WriteOp::CreateKey { name: name.into() },
            _ => WriteOp::DeleteKey { name: name.into() },
        },
    };
    let r = if c.is_leader() {
        run_write(c, &w).await.map_err(|e| refusal(&e))
    } else {
        match c.forward(&w).await {
            Ok(Forwarded::RunHere) => run_write(c, &w).await.map_err(|e| refusal(&e)),
            Ok(Forwarded::Answered(ForwardResult::Done)) => Ok(()),
            Ok(Forwarded::Answered(ForwardResult::Refused(r))) => Err(r),
            Ok(Forwarded::Answered(ForwardResult::NotLeader { .. })) => Err(Refusal {
                status: 503,
                message: "no leader".into(),
            }),
            Err(e) => Err(refusal(&e)),
        }
    };
    match r {
        Ok(()) => Outcome::Ok,
        Err(r) if r.status == 400 || r.status == 404 => Outcome::Refused,
        Err(r) => Outcome::Unknown(r.message),
    }
}

async fn read_via(c: &Arc<Cluster>, name: &str, kind: &Kind) -> Outcome {
    let r = match kind {
        Kind::Get => c.get(name).await,
        _ => c.describe(name).await,
    };
    match r {
        Ok(k) => Outcome::Found(creator(&k)),
        Err(ClusterError::KeyNotFound) => Outcome::NotFound,
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

async fn client(sim: Arc<Sim>, me: u64, mut rng: StdRng, until: Instant) {
    let mut seq = 0;
    while Instant::now() < until {
        sleep(Duration::from_millis(rng.gen_range(0..300))).await;
        seq += 1;
        let id = me * 10_000 + seq;
        let node = rng.gen_range(1..=sim.n);
        let name = NAMES[rng.gen_range(0..NAMES.len())];
        let kind = match rng.gen_range(0..10) {
            0..=2 => Kind::Create,
            3 => Kind::Delete,
            4..=7 => Kind::Get,
            _ => Kind::Describe,
        };
        let inv = sim.net.now();
        let outcome = match sim.cluster(node) {
            None => Outcome::Unknown("node down".into()),
            Some(c) => {
                // A client gives up after a while, as KES clients do.
                let work = async {
                    match kind {
                        Kind::Create | Kind::Delete => write_via(&c, id, name, &kind).await,
                        _ => read_via(&c, name, &kind).await,
                    }
                };
                tokio::time::timeout(Duration::from_secs(30), work)
                    .await
                    .unwrap_or_else(|_| Outcome::Unknown("client timeout".into()))
            }
        };
        let resp = sim.net.now();
        sim.history.lock().push(Op {
            id,
            node,
            kind,
            name,
            inv,
            resp,
            outcome,
        });
    }
}

// ------------------------------------------------------------------------------------------
// One run

struct Run {
    history: Vec<Op>,
    faults: Vec<String>,
    failures: Vec<String>,
    disturbed: Vec<(NodeId, u64, u64)>,
    summary: String,
}

fn run(seed: u64) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(simulate(seed))
}

async fn simulate(seed: u64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = [3, 3, 5][rng.gen_range(0..3)];
    let loss = [0.0, 0.01, 0.05, 0.1][rng.gen_range(0..4)];
    let max_delay_ms = [1, 10, 50][rng.gen_range(0..3)];
    let net = Arc::new(Net {
        rng: Mutex::new(StdRng::seed_from_u64(rng.gen())),
        up: Mutex::new(BTreeMap::new()),
        cut: Mutex::new(BTreeSet::new()),
        loss: Mutex::new(loss),
        max_delay_ms,
        t0: Instant::now(),
    });
    let wall0 = 1_700_000_000_000;
    let nodes = (1..=n)
        .map(|id| {
            let db = sled::Config::new().temporary(true).open().expect("sled");
            let clock = Arc::new(SimClock {
                start: Instant::now(),
                wall0: wall0 + rng.gen_range(0..2_000),
                jump: AtomicI64::new(0),
            });
            (
                id,
                Node {
                    db,
                    clock,
                    running: None,
                    incarnation: 0,
                },
            )
        })
        .collect();
    let sim = Arc::new(Sim {
        seed,
        n,
        net,
        kms: Arc::new(MemoryStore::new()),
        nodes: Mutex::new(nodes),
        history: Mutex::new(Vec::new()),
        disturbed: Mutex::new(Vec::new()),
        open: Mutex::new(BTreeMap::new()),
        faults: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
    });
    for id in 1..=n {
        sim.start_node(id).await;
    }
    // The cluster forms and unseals before the clients and faults start.
    sleep(Duration::from_secs(5)).await;
    let until = Instant::now() + RUN_FOR;
    let mut work = Vec::new();
    work.push(tokio::spawn(nemesis(
        Arc::clone(&sim),
        StdRng::seed_from_u64(rng.gen()),
        until,
    )));
    for me in 1..=3 {
        work.push(tokio::spawn(client(
            Arc::clone(&sim),
            me,
            StdRng::seed_from_u64(rng.gen()),
            until,
        )));
    }
    for w in work {
        if let Err(e) = w.await {
            sim.failures
                .lock()
                .push(format!("a simulation task failed: {e}"));
        }
    }
    sleep(SETTLE).await;
    // The final reads, on every node.
    let mut seq = 0;
    for name in NAMES {
        for node in 1..=n {
            seq += 1;
            let inv = sim.net.now();
            let (outcome, raft) = match sim.cluster(node) {
                Some(c) => (read_via(&c, name, &Kind::Get).await, raft_view(&c)),
                None => (Outcome::Unknown("node down".into()), String::new()),
            };
            let outcome = match outcome {
                Outcome::Unknown(why) => Outcome::Pending(format!("{why}; {raft}")),
                o => o,
            };
            sim.history.lock().push(Op {
                id: 90_000 + seq,
                node,
                kind: Kind::Get,
                name,
                inv,
                resp: sim.net.now(),
                outcome,
            });
        }
    }
    let mut views = String::new();
    for id in 1..=n {
        if let Some(c) = sim.cluster(id) {
            let _ = write!(views, "\n  node {id}: {:?}, {}", c.serving(), raft_view(&c));
        }
    }
    for id in 1..=n {
        sim.crash(id).await;
    }
    let history = std::mem::take(&mut *sim.history.lock());
    let summary = format!(
        "{n} nodes, loss {loss}, delay up to {max_delay_ms} ms, {} operations; at the end:{views}",
        history.len()
    );
    let faults = std::mem::take(&mut *sim.faults.lock());
    let failures = std::mem::take(&mut *sim.failures.lock());
    let disturbed = std::mem::take(&mut *sim.disturbed.lock());
    Run {
        history,
        faults,
        failures,
        disturbed,
        summary,
    }
}

/// What a node's Raft says of itself, for a report.
fn raft_view(c: &Cluster) -> String {
    let m = c.raft_metrics();
    format!(
        "raft: {:?} in term {}, leader {:?}, applied {:?}",
        m.state,
        m.current_term,
        m.current_leader,
        m.last_applied.map(|l| l.index)
    )
}

// ------------------------------------------------------------------------------------------
// The checker

/// Whether some delete of `name` may have taken effect after `after` and before `before`.
fn delete_between(h: &[Op], name: &str, after: u64, before: u64) -> bool {
    h.iter().any(|d| {
        d.kind == Kind::Delete
            && d.name == name
            && d.inv < before
            && d.effect_until().is_some_and(|until| until > after)
    })
}

fn check(run: &Run) -> Vec<String> {
    let h = &run.history;
    let mut bad = run.failures.clone();
    let creates: BTreeMap<u64, &Op> = h
        .iter()
        .filter(|o| o.kind == Kind::Create)
        .map(|o| (o.id, o))
        .collect();
    let disturbed = |node: NodeId, from: u64, to: u64| {
        run.disturbed
            .iter()
            .any(|(n, a, b)| *n == node && *a < to && *b > from)
    };
    let is_final = |o: &Op| o.id >= 90_000;
    for a in h.iter().filter(|o| o.kind == Kind::Create && o.acked()) {
        for b in h.iter().filter(|o| o.kind == Kind::Create && o.acked()) {
            if a.name == b.name && a.resp < b.inv && !delete_between(h, a.name, a.inv, b.resp) {
                bad.push(format!(
                    "op {} and op {} both created '{}' with no delete between them",
                    a.id, b.id, a.name
                ));
            }
        }
    }
    for r in h
        .iter()
        .filter(|o| matches!(o.kind, Kind::Get | Kind::Describe))
    {
        match r.outcome {
            Outcome::Found(c) => {
                let Some(create) = creates.get(&c).filter(|c| c.name == r.name) else {
                    bad.push(format!(
                        "op {}: served a key no create of '{}' made",
                        r.id, r.name
                    ));
                    continue;
                };
                if create.inv > r.resp || create.outcome == Outcome::Refused {
                    bad.push(format!(
                        "op {}: served the key of op {}, which never took effect then",
                        r.id, c
                    ));
                }
                // Deleted for sure before the read began: describe never serves it; the crypto
                // path does not on a node that stayed connected, after a grace.
                for d in h.iter().filter(|d| {
                    d.kind == Kind::Delete
                        && d.name == r.name
                        && d.acked()
                        && create.effect_until().is_some_and(|u| u < d.inv)
                }) {
                    let stale = match r.kind {
                        Kind::Describe => d.resp < r.inv,
                        _ => {
                            d.resp + TOMBSTONE_GRACE_MS < r.inv && !disturbed(r.node, d.inv, r.resp)
                        }
                    };
                    if stale {
                        bad.push(format!(
                            "op {} on node {}: served '{}' of op {} after its delete op {} was acknowledged",
                            r.id, r.node, r.name, c, d.id
                        ));
                    }
                }
                // A create acknowledged before the read, with no delete possible since: a
                // linearizable read serves its key.
                if r.kind == Kind::Describe || is_final(r) {
                    for other in h.iter().filter(|o| {
                        o.kind == Kind::Create
                            && o.name == r.name
                            && o.acked()
                            && o.id != c
                            && o.resp < r.inv
                    }) {
                        if !delete_between(h, r.name, other.inv, r.resp) {
                            bad.push(format!(
                                "op {}: served '{}' of op {} although op {} created it since, with no delete between",
                                r.id, r.name, c, other.id
                            ));
                        }
                    }
                }
            }
            Outcome::NotFound if r.kind == Kind::Describe || is_final(r) => {
                for c in h.iter().filter(|o| {
                    o.kind == Kind::Create && o.name == r.name && o.acked() && o.resp < r.inv
                }) {
                    if !delete_between(h, r.name, c.inv, r.resp) {
                        bad.push(format!(
                            "op {}: '{}' not found although op {} created it, with no delete since",
                            r.id, r.name, c.id
                        ));
                    }
                }
            }
            Outcome::Pending(ref why) => {
                bad.push(format!(
                    "op {}: node {} still cannot answer for '{}' after the faults healed: {why}",
                    r.id, r.node, r.name
                ));
            }
            _ => {}
        }
    }
    // No data key lost: a key served to a client (data keys generated under it) is served with
    // the same material at the end, unless it may have been deleted since.
    for g in h.iter().filter(|o| o.kind == Kind::Get && !is_final(o)) {
        let Outcome::Found(c) = g.outcome else {
            continue;
        };
        // Deleted at any time since it was created: nothing to keep (a node cut off may
        // serve a deleted key within the offline window).
        let created = creates.get(&c).map_or(0, |c| c.inv);
        if delete_between(h, g.name, created, u64::MAX) {
            continue;
        }
        for f in h.iter().filter(|f| is_final(f) && f.name == g.name) {
            if f.outcome != Outcome::Found(c) {
                bad.push(format!(
                    "op {}: node {} answers {:?} for '{}', whose key of op {} op {} generated a data key with",
                    f.id, f.node, f.outcome, g.name, c, g.id
                ));
            }
        }
    }
    bad
}

fn render(run: &Run) -> String {
    let mut out = format!("{}\nfaults:\n", run.summary);
    for f in &run.faults {
        let _ = writeln!(out, "  {f}");
    }
    let mut h = run.history.clone();
    h.sort_by_key(|o| (o.inv, o.id));
    out.push_str("history (invoked ms, completed ms, op, node, what, key: outcome):\n");
    for o in &h {
        let _ = writeln!(
            out,
            "  {:>6} {:>6}  op {:>5}  node {}  {:?} {}: {:?}",
            o.inv, o.resp, o.id, o.node, o.kind, o.name, o.outcome
        );
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs `seeds` on `threads` threads (each seed on a runtime of its own, so the split does
/// not change a seed's run); returns the failure of the lowest failing seed, and a digest of
/// every run's rendering, which two runs of the same seeds share.
fn run_seeds(seeds: std::ops::Range<u64>, threads: usize, verbose: bool) -> (Option<String>, u64) {
    use std::hash::{Hash, Hasher};
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let results: Mutex<BTreeMap<u64, (u64, Option<String>)>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= seeds.end {
                    return;
                }
                let run = run(seed);
                let rendered = render(&run);
                if verbose {
                    println!("seed {seed}: {rendered}");
                }
                let bad = check(&run);
                let failure = (!bad.is_empty()).then(|| {
                    format!(
                        "seed {seed} broke an invariant:\n  {}\n\nreplay it with:\n  KES_SIM_SEED={seed} cargo test --workspace --test sim -- --nocapture\n\n{rendered}",
                        bad.join("\n  "),
                    )
                });
                let mut h = std::collections::hash_map::DefaultHasher::new();
                rendered.hash(&mut h);
                results.lock().insert(seed, (h.finish(), failure));
            });
        }
    });
    let results = results.into_inner();
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    let mut failure = None;
    for (seed, (h, f)) in results {
        (seed, h).hash(&mut digest);
        if failure.is_none() {
            failure = f;
        }
    }
    (failure, digest.finish())
}

/// `KES_SIM_SEEDS` seeds from 0 (default 300), or the one seed `KES_SIM_SEED` with its
/// history printed; on `KES_SIM_THREADS` threads (default: the machine's parallelism).
#[test]
fn sim() {
    let (seeds, verbose) = match env_u64("KES_SIM_SEED") {
        Some(s) => (s..s + 1, true),
        None => (0..env_u64("KES_SIM_SEEDS").unwrap_or(300), false),
    };
    let threads = env_u64("KES_SIM_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let started = std::time::Instant::now();
    let count = seeds.end - seeds.start;
    let (failure, digest) = run_seeds(seeds, threads, verbose);
    if let Some(f) = failure {
        panic!("{f}");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{count} seeds in {secs:.1} s on {threads} threads ({:.0} seeds/minute); digest of the runs {digest:016x}",
        count as f64 * 60.0 / secs
    );
}

/// A seed replays its run: the same operations, outcomes, faults and times, whichever thread
/// runs it.
#[test]
fn a_seed_replays_its_run() {
    let seeds = env_u64("KES_SIM_SEED").map_or(0..6, |s| s..s + 1);
    let (_, a) = run_seeds(seeds.clone(), 1, false);
    let (_, b) = run_seeds(seeds.clone(), 2, false);
    assert_eq!(a, b, "seeds {seeds:?} did not replay their runs");
}
