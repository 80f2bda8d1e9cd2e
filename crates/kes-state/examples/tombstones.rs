//! State size under key churn, with and without tombstone pruning: applies `PAIRS` (default
//! 1,000,000) PutKey/DeleteKey pairs on fresh names to a state caching `LIVE` (10,000) keys,
//! and reports the snapshot size and this process's resident memory before and after.
//!
//! With pruning (`PRUNE=1`, the default) a prune is applied every `PRUNE_EVERY` pairs (10,000),
//! below the applied index of the previous round, as the leader prunes below an index sampled
//! a margin earlier; with `PRUNE=0` nothing is pruned. Each run is one process, so resident
//! memory is not shared between the two cases. `benches/tombstones.sh` runs both and writes
//! `benches/results/tombstones.{json,md}`.
//!
//!     cargo run --release -p kes-state --example tombstones
//!     PAIRS=100000 PRUNE=0 cargo run --release -p kes-state --example tombstones

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_state::{Command, Outcome, State};
use std::collections::BTreeMap;
use std::time::Instant;

/// About the size of a sealed KeyVersion (protobuf key + HMAC key + metadata + AEAD overhead).
const SEALED_LEN: usize = 200;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let pairs = env("PAIRS", 1_000_000);
    let live = env("LIVE", 10_000);
    let prune = env("PRUNE", 1) != 0;
    let prune_every = env("PRUNE_EVERY", 10_000).max(1);

    let mut s = State::default();
    let mut index = 0u64;
    let mut apply = |s: &mut State, cmd: &Command| {
        index += 1;
        let outcome = s.apply(index, cmd);
        assert_eq!(outcome, Outcome::Applied, "{cmd:?}");
        index
    };
    apply(
        &mut s,
        &Command::Init {
            wrapped_cck: vec![1; 76],
            admin: "a".repeat(64),
            policies: BTreeMap::new(),
            assignments: BTreeMap::new(),
            at_ms: 1,
        },
    );
    for i in 0..live {
        apply(
            &mut s,
            &Command::PutKey {
                name: format!("live-key-{i:08}"),
                sealed: vec![0xab; SEALED_LEN],
                at_ms: 2,
            },
        );
    }
    // Resident memory is read before each snapshot is encoded, so that it is the state's.
    let start_rss = rss_kib();
    let start_snapshot = s.encode_snapshot().unwrap().len();

    let started = Instant::now();
    let mut previous_round = 0u64;
    let mut prunes = 0u64;
    let mut peak_tombstones = 0usize;
    for i in 0..pairs {
        let name = format!("churn-key-{i:010}");
        apply(
            &mut s,
            &Command::PutKey {
                name: name.clone(),
                sealed: vec![0xcd; SEALED_LEN],
                at_ms: 3,
            },
        );
        let last = apply(&mut s, &Command::DeleteKey { name, at_ms: 4 });
        if (i + 1) % prune_every == 0 {
            peak_tombstones = peak_tombstones.max(s.tombstone_count());
            if prune {
                apply(
                    &mut s,
                    &Command::PruneTombstones {
                        before_index: previous_round,
                    },
                );
                prunes += 1;
            }
            previous_round = last;
        }
    }
    let elapsed = started.elapsed();
    let end_rss = rss_kib();
    let end_snapshot = s.encode_snapshot().unwrap().len();
    println!(
        "{{\"pairs\":{pairs},\"live\":{live},\"prune\":{prune},\"prune_every\":{prune_every},\"prunes\":{prunes},\"start_snapshot_bytes\":{start_snapshot},\"end_snapshot_bytes\":{end_snapshot},\"start_rss_kib\":{start_rss},\"end_rss_kib\":{end_rss},\"tombstones_left\":{},\"peak_tombstones\":{peak_tombstones},\"keys\":{},\"apply_seconds\":{:.2}}}",
        s.tombstone_count(),
        s.key_count(),
        elapsed.as_secs_f64()
    );
}
