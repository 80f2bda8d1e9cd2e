//! The workloads: concurrent client tasks spread over every member, each operation recorded
//! as an invocation and a completion.

use crate::client::{b64, Api, Outcome};
use crate::db;
use crate::history::{lock, OpType, Process, Recorder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Names of the key-lifecycle workload.
pub const LIFECYCLE_KEYS: [&str; 4] = ["jl-0", "jl-1", "jl-2", "jl-3"];
/// Keys of the data-key workload: created at the start and never deleted.
pub const DATA_KEYS: [&str; 3] = ["jd-0", "jd-1", "jd-2"];
/// Most data keys recorded; beyond this the workload only decrypts.
pub const MAX_RECORDS: usize = 20_000;
/// Most delete-visibility rounds.
pub const MAX_VISIBILITY_ROUNDS: u64 = 1_000;

pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
pub const CRYPTO_TIMEOUT: Duration = Duration::from_secs(2);

/// A data key the cluster handed out.
#[derive(Clone, Debug, Serialize)]
pub struct DataKey {
    pub key: String,
    pub context: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub node: u64,
    pub time: u64,
}

/// One delete-visibility round: a fresh key, used on every node while it is deleted.
#[derive(Clone, Debug, Serialize)]
pub struct VisibilityRound {
    pub key: String,
    pub delete_node: u64,
    /// When the delete was acknowledged; `None` if it was not.
    pub ack: Option<u64>,
    pub probes: Vec<Probe>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub node: u64,
    pub invoke: u64,
    pub complete: u64,
    /// `ok`, `not-found` or another failure.
    pub result: String,
}

#[derive(Clone)]
pub struct Ctx {
    pub api: Api,
    pub rec: Recorder,
    pub members: Arc<Mutex<Vec<u64>>>,
    pub stop: CancellationToken,
    pub deadline: Instant,
    pub seed: u64,
    pub next_process: Arc<AtomicU64>,
    pub datakeys: Arc<Mutex<Vec<DataKey>>>,
    pub rounds: Arc<Mutex<Vec<VisibilityRound>>>,
    /// Operations that are anomalies on their own (a wrong plaintext, a lost key).
    pub anomalies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.is_cancelled() && Instant::now() < self.deadline
    }

    fn process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    fn node(&self, rng: &mut StdRng) -> u64 {
        let m = lock(&self.members);
        m.get(rng.gen_range(0..m.len().max(1)))
            .copied()
            .unwrap_or(1)
    }

    async fn pause(&self, rng: &mut StdRng, min_ms: u64, max_ms: u64) {
        let d = Duration::from_millis(rng.gen_range(min_ms..=max_ms));
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }
}

fn complete<T>(o: &Outcome<T>) -> (OpType, Option<String>) {
    match o {
        Outcome::Ok(_) => (OpType::Ok, None),
        Outcome::Fail(e) => (OpType::Fail, Some(e.clone())),
        Outcome::Info(e) => (OpType::Info, Some(e.clone())),
    }
}

/// Create, delete and describe on a few names, for the linearizability checker. A process
/// whose operation ended `info` is retired, as in Jepsen: its operation may still be pending.
pub async fn lifecycle(ctx: Ctx, worker: u64, max_ops: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0x11fe_c7c1e ^ worker));
    let mut process = ctx.process();
    for _ in 0..max_ops {
        if !ctx.running() {
            break;
        }
        let node = ctx.node(&mut rng);
        let key = LIFECYCLE_KEYS[rng.gen_range(0..LIFECYCLE_KEYS.len())];
        let base = db::endpoint(node);
        let f = match rng.gen_range(0..4) {
            0 => "create",
            1 => "delete",
            _ => "describe",
        };
        let value = json!({ "key": key });
        ctx.rec.record(
            Process::Client(process),
            OpType::Invoke,
            f,
            value.clone(),
            Some(node),
            "lifecycle",
            None,
        );
        let out = match f {
            "create" => ctx.api.create(&base, key, WRITE_TIMEOUT).await,
            "delete" => ctx.api.delete(&base, key, WRITE_TIMEOUT).await,
            _ => ctx.api.describe(&base, key, READ_TIMEOUT).await,
        };
        let (kind, error) = complete(&out);
        ctx.rec.record(
            Process::Client(process),
            kind,
            f,
            value,
            Some(node),
            "lifecycle",
            error,
        );
        if kind == OpType::Info {
            process = ctx.process();
        }
        ctx.pause(&mut rng, 20, 80).await;
    }
}

/// Generates data keys on random nodes and decrypts earlier ones on other random nodes. The
/// generate and decrypt results feed the availability figures; every acknowledged data key
/// is checked again on every node at the end.
pub async fn datakeys(ctx: Ctx, worker: u64, max_ops: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0xda7a ^ (worker << 8)));
    let mut process = ctx.process();
    for _ in 0..max_ops {
        if !ctx.running() {
            break;
        }
        let node = ctx.node(&mut rng);
        let base = db::endpoint(node);
        let earlier = {
            let d = lock(&ctx.datakeys);
            let full = d.len() >= MAX_RECORDS;
            if !d.is_empty() && (full || rng.gen_bool(0.5)) {
                d.get(rng.gen_range(0..d.len())).cloned()
            } else {
                None
            }
        };
        match earlier {
            None => {
                let key = DATA_KEYS[rng.gen_range(0..DATA_KEYS.len())];
                let context: Vec<u8> = format!("ctx-{}", rng.gen::<u32>()).into_bytes();
                ctx.rec.record(
                    Process::Client(process),
                    OpType::Invoke,
                    "generate",
                    json!({ "key": key, "context": b64(&context) }),
                    Some(node),
                    "datakeys",
                    None,
                );
                let out = ctx.api.generate(&base, key, &context, CRYPTO_TIMEOUT).await;
                let (kind, error) = complete(&out);
                let value = match &out {
                    Outcome::Ok(g) => json!({
                        "key": key,
                        "context": b64(&context),
                        "plaintext": b64(&g.plaintext.0),
                        "ciphertext": b64(&g.ciphertext.0),
                    }),
                    _ => json!({ "key": key, "context": b64(&context) }),
                };
                let time = ctx.rec.record(
                    Process::Client(process),
                    kind,
                    "generate",
                    value,
                    Some(node),
                    "datakeys",
                    error,
                );
                if let Outcome::Ok(g) = out {
                    lock(&ctx.datakeys).push(DataKey {
                        key: key.to_owned(),
                        context,
                        plaintext: g.plaintext.0,
                        ciphertext: g.ciphertext.0,
                        node,
                        time,
                    });
                }
                if kind == OpType::Info {
                    process = ctx.process();
                }
            }
            Some(dk) => {
                let value = json!({ "key": dk.key, "ciphertext": b64(&dk.ciphertext) });
                ctx.rec.record(
                    Process::Client(process),
                    OpType::Invoke,
                    "decrypt",
                    value.clone(),
                    Some(node),
                    "datakeys",
                    None,
                );
                let out = ctx
                    .api
                    .decrypt(&base, &dk.key, &dk.ciphertext, &dk.context, CRYPTO_TIMEOUT)
                    .await;
                let (kind, mut error) = complete(&out);
                let wrong = matches!(&out, Outcome::Ok(p) if *p != dk.plaintext);
                if wrong {
                    error = Some("wrong plaintext".into());
                }
                let time = ctx.rec.record(
                    Process::Client(process),
                    kind,
                    "decrypt",
                    value,
                    Some(node),
                    "datakeys",
                    error.clone(),
                );
                // The data keys are never deleted: a wrong plaintext or a definite refusal is
                // an anomaly on the spot.
                if wrong
                    || kind == OpType::Fail
                        && !error.as_deref().unwrap_or("").starts_with("refused")
                {
                    lock(&ctx.anomalies).push(json!({
                        "kind": "decrypt-during-run",
                        "node": node,
                        "time": time,
                        "key": dk.key,
                        "generated_on": dk.node,
                        "generated_at": dk.time,
                        "error": error,
                    }));
                }
                if kind == OpType::Info {
                    process = ctx.process();
                }
            }
        }
        ctx.pause(&mut rng, 10, 40).await;
    }
}

/// Delete visibility: a fresh key is created and used on every node; it is deleted through a
/// random node while probes on every node keep using it, recording when each stops.
pub async fn visibility(ctx: Ctx) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x0de1_e7e5);
    for round in 0..MAX_VISIBILITY_ROUNDS {
        if !ctx.running() {
            break;
        }
        let key = format!("jv-{round}");
        let nodes = lock(&ctx.members).clone();
        let creator = ctx.node(&mut rng);
        if !ctx
            .api
            .create(&db::endpoint(creator), &key, WRITE_TIMEOUT)
            .await
            .is_ok()
        {
            ctx.pause(&mut rng, 500, 1000).await;
            continue;
        }
        // Warm every node's cache.
        for n in &nodes {
            let _ = ctx
                .api
                .encrypt(&db::endpoint(*n), &key, b"warm", CRYPTO_TIMEOUT)
                .await;
        }
        let acked: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
        let done = CancellationToken::new();
        let mut probes = tokio::task::JoinSet::new();
        for n in nodes.clone() {
            let (ctx, key, acked, done) = (ctx.clone(), key.clone(), acked.clone(), done.clone());
            probes.spawn(async move {
                let mut out = Vec::new();
                // At most 20 s of probing at 25 ms.
                for _ in 0..800 {
                    if done.is_cancelled() {
                        break;
                    }
                    let invoke = ctx.rec.now();
                    let r = ctx
                        .api
                        .encrypt(&db::endpoint(n), &key, b"probe", Duration::from_secs(1))
                        .await;
                    let complete = ctx.rec.now();
                    let result = match &r {
                        Outcome::Ok(_) => "ok".to_owned(),
                        Outcome::Fail(e) | Outcome::Info(e) => e.clone(),
                    };
                    let gone = result == "not-found";
                    out.push(Probe {
                        node: n,
                        invoke,
                        complete,
                        result,
                    });
                    let ack = *lock(&acked);
                    if let Some(ack) = ack {
                        if gone || invoke > ack + 5_000_000_000 {
                            break;
                        }
                    }
                    tokio::select! {
                        _ = done.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                    }
                }
                out
            });
        }
        ctx.pause(&mut rng, 200, 400).await;
        let deleter = ctx.node(&mut rng);
        let process = ctx.process();
        let value = json!({ "key": key });
        ctx.rec.record(
            Process::Client(process),
            OpType::Invoke,
            "delete",
            value.clone(),
            Some(deleter),
            "visibility",
            None,
        );
        let out = ctx
            .api
            .delete(&db::endpoint(deleter), &key, WRITE_TIMEOUT)
            .await;
        let (kind, error) = complete(&out);
        let t = ctx.rec.record(
            Process::Client(process),
            kind,
            "delete",
            value,
            Some(deleter),
            "visibility",
            error,
        );
        let ack = out.is_ok().then_some(t);
        *lock(&acked) = ack;
        if ack.is_none() {
            done.cancel();
        }
        let mut all = Vec::new();
        while let Some(r) = probes.join_next().await {
            if let Ok(p) = r {
                all.extend(p);
            }
        }
        lock(&ctx.rounds).push(VisibilityRound {
            key,
            delete_node: deleter,
            ack,
            probes: all,
        });
        ctx.pause(&mut rng, 500, 1500).await;
    }
}
