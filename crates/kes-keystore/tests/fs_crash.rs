//! A process killed in the middle of creates must leave every entry either absent or complete:
//! KES's write-in-place would leave truncated files here. The test binary runs itself as the
//! writer child and kills it with SIGKILL at several points.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_keystore::{FsStore, KeyStore, StoreError};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "KES_KEYSTORE_CRASH_DIR";
/// Large enough that a write takes a while, so kills land mid-create.
const VALUE_LEN: usize = 1 << 20;
const WRITERS: usize = 8;
const ROUNDS: u64 = 10;

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
        let target = std::fs::read_dir(tmp.path()).unwrap().count() + 3;
        while std::fs::read_dir(tmp.path()).unwrap().count() < target {
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
        let page = store.list("", "", 1024).await.unwrap();
        assert!(page.names.len() >= 3);
        for name in &page.names {
            let got = store.get(name).await.unwrap();
            assert!(
                got == value_of(name),
                "round {round}: {name} holds {} bytes, not its complete value",
                got.len()
            );
        }
    }
}
