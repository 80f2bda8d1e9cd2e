//! A process killed in the middle of creates must leave a store that opens, lists only complete
//! entries, and accepts new creates. The test binary runs itself as the writer child and kills
//! it with SIGKILL.
//!
//! This is a smoke test, not a proof: a kill cannot interrupt a single `write(2)` and leaves the
//! page cache intact, so it cannot show the power-loss case the temporary-file-and-link scheme
//! exists for. That case rests on the ordering in `fs.rs`: the value is fsynced before the name
//! that makes it visible exists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_keystore::conformance::list_all;
use kes_keystore::{FsStore, KeyStore, StoreError, MAX_LIST_PAGE};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "KES_KEYSTORE_CRASH_DIR";
const VALUE_LEN: usize = 256 << 10;
const WRITERS: usize = 4;
const ROUNDS: u64 = 5;

fn value_of(name: &str) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..VALUE_LEN)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// The writer; does nothing unless started by `kill_during_creates`.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = FsStore::open(PathBuf::from(dir)).unwrap();
        // Several writers at once, so that at any moment some create is mid-write.
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let store = store.clone();
            writers.spawn(async move {
                for i in 0u64.. {
                    let name = format!("w{w}-{i:08}");
                    // Entries from the previous rounds' children are already there.
                    match store.create(&name, &value_of(&name)).await {
                        Ok(()) | Err(StoreError::AlreadyExists) => {}
                        Err(e) => panic!("create {name}: {e:?}"),
                    }
                }
            });
        }
        writers.join_next().await;
    });
}

#[tokio::test]
async fn kill_during_creates() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it make progress, then kill it at a point that differs per round.
        let deadline = Instant::now() + Duration::from_secs(60);
        let target = entries(tmp.path()) + 3;
        while entries(tmp.path()) < target {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: the writer exited with {status}");
            }
            assert!(Instant::now() < deadline, "the writer made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(3 * round)).await;
        child.kill().unwrap();
        child.wait().unwrap();

        let store = FsStore::open(tmp.path()).unwrap();
        let names = list_all(&store, "", MAX_LIST_PAGE).await.unwrap();
        assert!(names.len() >= 3);
        for name in &names {
            let got = store.get(name).await.unwrap();
            assert!(
                got == value_of(name),
                "round {round}: {name} holds {} bytes, not its complete value",
                got.len()
            );
        }
        let name = format!("after-crash-{round}");
        store.create(&name, &value_of(&name)).await.unwrap();
    }
}

/// Entries as the writer makes them, not counting temporary files.
fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
        .count()
}
