//! The keystore entry that wraps the cluster cache key, `_kes-cluster-wrapping-key`, deleted
//! behind the cluster's back (a KES server sharing the keystore can do it): a starting node
//! that no peer can hand the cache key refuses to start and says how to recover; one that a
//! peer can hand it starts and raises the alarm. A fresh wrapping key is never created.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;

const ENTRY: &str = "_kes-cluster-wrapping-key";

#[tokio::test]
async fn a_single_node_without_its_wrapping_key_refuses_to_start_and_a_restored_entry_fixes_it() {
    let mut c = ProcCluster::start(1, "30s", "");
    c.wait_all_ready(30).await;
    c.client(0).create_key("kept").await.unwrap();
    let dek = c.client(0).generate_key("kept", b"").await.unwrap();
    c.kill(0);

    let entry = c.files.keystore_dir.join(ENTRY);
    let backup = std::fs::read(&entry).unwrap();
    std::fs::remove_file(&entry).unwrap();
    c.start_node(0);
    let status = c.procs[0]
        .as_mut()
        .unwrap()
        .wait_exit(60)
        .unwrap_or_else(|| {
            panic!(
                "the node kept running without its wrapping key:\n{}",
                c.log(0)
            )
        });
    assert!(!status.success(), "{status:?}");
    let log = c.log(0);
    assert!(
        log.contains(&format!("Error: the keystore has no entry '{ENTRY}'")),
        "the exit message names the entry:\n{log}"
    );
    assert!(
        log.contains("from a keystore backup") && log.contains("re-initialise the cluster"),
        "the exit message says how to recover:\n{log}"
    );
    assert!(
        !entry.exists(),
        "a fresh wrapping key was created although the state holds a wrapped cache key"
    );

    // The documented recovery: restore the entry from a backup.
    std::fs::write(&entry, backup).unwrap();
    c.procs[0] = None;
    c.start_node(0);
    c.wait_ready(0, 30).await;
    let plain = c
        .client(0)
        .decrypt("kept", &dek.ciphertext.0, b"")
        .await
        .unwrap();
    assert_eq!(plain, dek.plaintext.0);
}

#[tokio::test]
async fn a_node_gets_the_cache_key_from_a_peer_when_the_wrapping_key_is_gone_and_logs_the_loss() {
    let mut c = ProcCluster::start(3, "30s", "");
    c.wait_all_ready(30).await;
    c.client(0).create_key("kept").await.unwrap();
    let dek = c.client(0).generate_key("kept", b"").await.unwrap();
    let leader = c.wait_leader(10).await;
    let victim = (leader + 1) % 3;
    c.kill(victim);

    let entry = c.files.keystore_dir.join(ENTRY);
    std::fs::remove_file(&entry).unwrap();
    c.start_node(victim);
    c.wait_ready(victim, 30).await;
    let log = c.log(victim);
    assert!(
        log.contains("received from a peer"),
        "the cache key must come from a peer:\n{log}"
    );
    assert!(
        log.contains("ERROR") && log.contains(&format!("the keystore has no entry '{ENTRY}'")),
        "the missing entry is reported:\n{log}"
    );
    let plain = c
        .client(victim)
        .decrypt("kept", &dek.ciphertext.0, b"")
        .await
        .unwrap();
    assert_eq!(plain, dek.plaintext.0);
    assert!(
        !entry.exists(),
        "a fresh wrapping key was created although the state holds a wrapped cache key"
    );
}
