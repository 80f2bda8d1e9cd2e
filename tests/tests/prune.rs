//! Tombstone pruning in a real three-node cluster: the leader asks every member its applied
//! index and prunes below the smallest one sampled two minutes earlier, on every node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use std::time::{Duration, Instant};

async fn tombstones(c: &ProcCluster, i: usize) -> u64 {
    let st = c.client(i).cluster_status().await.unwrap();
    st.tombstones as u64
}

/// Takes about three minutes (a round every 30 s, a two-minute margin), so it only runs when
/// asked for: `cargo test -p kes-tests --test prune -- --ignored`.
#[tokio::test]
#[ignore = "takes about three minutes"]
async fn deleted_keys_leave_no_tombstones_on_any_node() {
    let c = ProcCluster::start(3, "30s", "");
    c.wait_all_ready(30).await;
    let all = c.client_for(&[0, 1, 2]);
    for i in 0..50 {
        let name = format!("gone-{i}");
        all.create_key(&name).await.unwrap();
        all.delete_key(&name).await.unwrap();
    }
    all.create_key("live").await.unwrap();
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tombstones(&c, i).await != 50 {
            assert!(Instant::now() < deadline, "node {} never had 50", i + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    for i in 0..3 {
        loop {
            let left = tombstones(&c, i).await;
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} still has {left} tombstones; logs:\n{}\n{}\n{}",
                i + 1,
                c.log(0),
                c.log(1),
                c.log(2)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let leader = c.wait_leader(10).await;
    assert!(
        c.log(leader).contains("tombstones pruned"),
        "{}",
        c.log(leader)
    );
    // Pruning forgot the names, not the deletes, and left live keys alone.
    for i in 0..3 {
        let e = c.client(i).generate_key("gone-0", b"").await.unwrap_err();
        assert!(e.is_key_not_found(), "node {}: {e:?}", i + 1);
        c.client(i).generate_key("live", b"").await.unwrap();
    }
}
