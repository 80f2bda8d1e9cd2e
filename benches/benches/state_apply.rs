//! The replicated state machine's apply: what every node runs for each committed log entry.
//! Batches of 1000 PutKey (authoritative writes) and FillKey (cache fills) commands on new
//! names are applied to a state that already caches 10,000 keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kes_state::{Command, Outcome, State};
use std::collections::BTreeMap;

const EXISTING: u64 = 10_000;
const BATCH: u64 = 1_000;
/// About the size of a sealed KeyVersion (protobuf key + HMAC key + metadata + AEAD overhead).
const SEALED_LEN: usize = 200;

fn populated() -> State {
    let mut s = State::default();
    let init = Command::Init {
        wrapped_cck: vec![1; 76],
        admin: "a".repeat(64),
        policies: BTreeMap::new(),
        assignments: BTreeMap::new(),
        at_ms: 1,
    };
    assert_eq!(s.apply(1, &init), Outcome::Applied);
    for i in 0..EXISTING {
        let cmd = Command::PutKey {
            name: format!("existing-key-{i}"),
            sealed: vec![0xab; SEALED_LEN],
            at_ms: 2,
        };
        assert_eq!(s.apply(2 + i, &cmd), Outcome::Applied);
    }
    s
}

fn state_apply(c: &mut Criterion) {
    let base = populated();
    let first = base.last_applied() + 1;
    let puts: Vec<Command> = (0..BATCH)
        .map(|i| Command::PutKey {
            name: format!("new-key-{i}"),
            sealed: vec![0xcd; SEALED_LEN],
            at_ms: 3,
        })
        .collect();
    let fills: Vec<Command> = (0..BATCH)
        .map(|i| Command::FillKey {
            name: format!("filled-key-{i}"),
            sealed: vec![0xef; SEALED_LEN],
            at_ms: 3,
            observed: first - 1,
        })
        .collect();
    {
        let mut s = base.clone();
        for (i, cmd) in fills.iter().enumerate() {
            assert_eq!(s.apply(first + i as u64, cmd), Outcome::Applied);
        }
    }

    let mut group = c.benchmark_group("state_apply");
    group.throughput(Throughput::Elements(BATCH));
    for (name, cmds) in [("put_key", &puts), ("fill_key", &fills)] {
        group.bench_function(format!("{name}/1000_on_10000"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    for (i, cmd) in cmds.iter().enumerate() {
                        s.apply(first + i as u64, cmd);
                    }
                    s
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, state_apply);
criterion_main!(benches);
