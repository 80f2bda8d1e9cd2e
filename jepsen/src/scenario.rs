//! Deterministic fault scenarios, one per finding in `jepsen/README.md`: each sets up the
//! exact situation in which an anomaly was seen and fails while it can still happen. Unlike
//! the seeded runs, they do not depend on a schedule happening to hit a narrow window.

use crate::client::{Api, Outcome};
use crate::db::{self, Db};
use crate::hosts::{self, node_ip, node_ns};
use crate::nemesis::{Nemesis, Timeline};
use crate::{kes_binary, wait_ready, Sweep};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(3);

/// How soon after the heal the rejoined node must stop serving the deleted key: its next
/// contact with the leader, after new connections (typically 0.1–0.7 s), with room for a slow
/// machine. Without the pre-vote it takes a new election (1–6 s, and a higher term).
const REJOIN_BOUND: Duration = Duration::from_secs(2);

/// How long the follower stays cut off: several election timeouts (1.5–2 s each), so that a
/// node campaigning on its own timer raises its term more than once.
const ISOLATION: Duration = Duration::from_secs(6);

/// Finding 1, a node rejoining after a partition serves deleted keys: a follower is cut off
/// from the other two, a key it has cached is deleted meanwhile, and the partition heals.
/// Checks that the cut-off node did not raise its term (it cannot win an election, so it must
/// not start one), that the leader stays the leader when the partition heals, and that the
/// rejoined node stops serving the deleted key soon after the heal (within [`REJOIN_BOUND`]).
pub async fn rejoin_after_partition(results: &Path, kes_bin: Option<&Path>) -> Result<bool> {
    hosts::preflight()?;
    let kes_bin = kes_binary(kes_bin)?;
    let dir = results.join("scenario-rejoin");
    let (work, logs) = (dir.join("work"), dir.join("logs"));
    for d in [&work, &logs] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    std::fs::create_dir_all(work.join("keys"))?;
    hosts::sweep();
    let _sweep = Sweep;
    hosts::create_bridge()?;
    let kms = db::Kms::Fs {
        dir: work.join("keys"),
    };
    let db = Db::new(&work, &logs, &kes_bin, kms, "1h")?;
    let api = Api::new(db.api_key(), &db.ca_pem())?;
    let members: Vec<u64> = vec![1, 2, 3];
    for id in &members {
        db.prepare(*id, Some(&members))?;
    }
    for id in &members {
        db.start(*id)?;
    }
    let nem = Nemesis {
        db: db.clone(),
        api: api.clone(),
        members: Arc::new(Mutex::new(members.clone())),
        timeline: Timeline::default(),
        start: Instant::now(),
        netem: false,
        next_id: Arc::new(Mutex::new(4)),
    };
    let outcome = scenario(&api, &nem, &members).await;
    db.kill_all().await;
    match outcome {
        Ok(problems) if problems.is_empty() => {
            println!("rejoin-after-partition: VALID");
            Ok(true)
        }
        Ok(problems) => {
            for p in &problems {
                println!("rejoin-after-partition: {p}");
            }
            println!(
                "rejoin-after-partition: INVALID (node logs in {})",
                logs.display()
            );
            Ok(false)
        }
        Err(e) => Err(e.context(format!("node logs in {}", logs.display()))),
    }
}

async fn status(api: &Api, id: u64) -> Option<serde_json::Value> {
    match api.cluster_status(&db::endpoint(id), T).await {
        Outcome::Ok(v) => Some(v),
        _ => None,
    }
}

fn term_of(v: &serde_json::Value) -> Option<u64> {
    v.get("term").and_then(serde_json::Value::as_u64)
}

async fn scenario(api: &Api, nem: &Nemesis, members: &[u64]) -> Result<Vec<String>> {
    let Some(leader) = nem.await_leader(Duration::from_secs(60)).await else {
        bail!("no leader within 60 s");
    };
    for id in members {
        wait_ready(api, *id, Duration::from_secs(30)).await?;
    }
    let key = "rejoin-victim";
    let leader_ep = db::endpoint(leader);
    if !api.create(&leader_ep, key, T).await.is_ok() {
        bail!("cannot create {key}");
    }
    let follower = *members
        .iter()
        .find(|m| **m != leader)
        .unwrap_or(&members[0]);
    let follower_ep = db::endpoint(follower);
    for id in members {
        if !api
            .encrypt(&db::endpoint(*id), key, b"warm", T)
            .await
            .is_ok()
        {
            bail!("{key} does not work on node {id}");
        }
    }
    let before = status(api, follower).await;
    let Some(term_before) = before.as_ref().and_then(term_of) else {
        bail!("no status from node {follower}");
    };
    println!("leader {leader}, term {term_before}; cutting node {follower} off for {ISOLATION:?}");

    let others: Vec<u64> = members.iter().copied().filter(|m| *m != follower).collect();
    for o in &others {
        hosts::drop_from(&node_ns(follower), node_ip(*o)).await?;
        hosts::drop_from(&node_ns(*o), node_ip(follower)).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Deleted while the follower cannot hear of it.
    if !api.delete(&leader_ep, key, T).await.is_ok() {
        bail!("deleting {key} through the leader failed");
    }
    tokio::time::sleep(ISOLATION.saturating_sub(Duration::from_secs(1))).await;
    let during = status(api, follower).await;
    let term_cut_off = during.as_ref().and_then(term_of);

    let mut problems = Vec::new();
    if term_cut_off != Some(term_before) {
        problems.push(format!(
            "node {follower} raised its term from {term_before} to {term_cut_off:?} while cut off from the majority"
        ));
    }
    for id in members {
        hosts::flush_rules(&node_ns(*id)).await?;
    }
    let healed = Instant::now();
    // The rejoined node must stop serving the deleted key soon after the heal.
    let mut stopped_after = None;
    while healed.elapsed() < Duration::from_secs(10) {
        match api.encrypt(&follower_ep, key, b"late", T).await {
            Outcome::Fail(e) if e == "not-found" => {
                stopped_after = Some(healed.elapsed());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    match stopped_after {
        Some(d) if d <= REJOIN_BOUND => {
            println!("node {follower} stopped serving the deleted key {d:?} after the heal");
        }
        Some(d) => problems.push(format!(
            "node {follower} served the deleted key until {d:?} after the heal"
        )),
        None => problems.push(format!(
            "node {follower} still served the deleted key 10 s after the heal"
        )),
    }
    let leader_after = nem.await_leader(Duration::from_secs(10)).await;
    let term_after = status(api, leader).await.as_ref().and_then(term_of);
    if leader_after != Some(leader) || term_after != Some(term_before) {
        problems.push(format!(
            "the heal disturbed the leader: node {leader} in term {term_before} before, node {leader_after:?} in term {term_after:?} after"
        ));
    }
    Ok(problems)
}

/// Where a scenario's folder goes by default.
pub fn default_results() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results"))
}
