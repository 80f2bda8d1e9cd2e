//! Day-two procedures of docs/operations.md against real node processes: backup and restore
//! after losing every node, the data directory's format version, and growing a cluster from
//! three nodes to five.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::ApiKey;
use kes_server::local::LocalOptions;
use kes_tests::*;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kes failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "kes succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kes cluster restore --config <config> <file>`.
fn restore(config: &Path, file: &Path) -> Output {
    std::process::Command::new(kes_bin())
        .args(["cluster", "restore", "--config"])
        .arg(config)
        .arg(file)
        .output()
        .unwrap()
}

/// A client of `nodes` authenticated with `key` (not the admin).
fn client_as(c: &ProcCluster, nodes: &[usize], key: &ApiKey) -> kes_client::Client {
    let eps: Vec<String> = nodes.iter().map(|i| c.files.nodes[*i].endpoint()).collect();
    kes_client::Client::builder(eps)
        .api_key(key)
        .ca_file(&c.files.ca_file)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn policies(client: &kes_client::Client) -> Vec<String> {
    let mut names = client.list_policies("*").await.unwrap().names;
    names.sort();
    names
}

fn seeded_policy(name: &str, identity: &str) -> String {
    format!("policy:\n  {name}:\n    allow:\n      - /v1/key/generate/seed-*\n    identities:\n      - {identity}\n")
}

/// Every node lost, the keystore kept: a backup taken after runtime changes brings the
/// policies, assignments and keys back on new nodes with new certificates and a new admin.
#[tokio::test]
async fn a_backup_restores_a_lost_cluster_on_new_nodes() {
    let app = ApiKey::generate();
    let seeded = ApiKey::generate();
    let mut old = ProcCluster::start(3, "1h", &seeded_policy("seeded", &seeded.identity()));
    old.wait_all_ready(60).await;
    let admin = old.client_for(&[0, 1, 2]);

    // Runtime changes the configuration files do not have.
    admin
        .write_policy(
            "app",
            &[
                "/v1/key/generate/app-*".to_owned(),
                "/v1/key/decrypt/app-*".to_owned(),
            ],
            &[],
        )
        .await
        .unwrap();
    admin.assign_policy("app", &app.identity()).await.unwrap();
    admin.delete_policy("seeded").await.unwrap();
    admin.create_key("app-1").await.unwrap();
    admin.create_key("app-2").await.unwrap();
    admin.create_key("gone").await.unwrap();
    admin.delete_key("gone").await.unwrap();
    let dek = client_as(&old, &[0, 1, 2], &app)
        .generate_key("app-1", b"ctx")
        .await
        .unwrap();

    // The backup, through a follower: the leader's read index makes it include every
    // change acknowledged above.
    let leader = old.wait_leader(10).await;
    let follower = (leader + 1) % 3;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kes.backup");
    let out = ok(old.cli(&[follower], &["cluster", "backup", file.to_str().unwrap()]));
    assert!(
        out.contains("1 policies, 1 identity assignments, 2 cached keys, 1 tombstones"),
        "{out}"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"KESBAK"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The backup holds the keys only sealed: the keystore's values are nowhere in it.
    for entry in std::fs::read_dir(&old.files.keystore_dir).unwrap() {
        let value = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(
            !value.windows(32).any(|w| bytes.windows(32).any(|b| b == w)),
            "a keystore value appears in the backup"
        );
        // The encoded KeyVersion holds the key's 32 random bytes in a row, and its creator's
        // identity as text, which the backup names too (as admin): only windows that are not
        // text can be key material.
        let decoded = kes_types::b64::decode(text.trim()).unwrap();
        assert!(
            !decoded
                .windows(32)
                .filter(|w| !w.iter().all(u8::is_ascii_graphic))
                .any(|w| bytes.windows(32).any(|b| b == w)),
            "key material appears in the backup"
        );
    }

    // Disaster: every node and its data gone; the keystore survives.
    for i in 0..3 {
        old.kill(i);
        std::fs::remove_dir_all(&old.files.nodes[i].data_dir).unwrap();
    }

    // New nodes on other ports, new certificates, a new admin, the same keystore; their
    // configuration seeds a policy that must not appear, since the backup's state wins.
    let mut new = ProcCluster::prepare(LocalOptions {
        nodes: 3,
        offline: "1h".into(),
        extra_yaml: seeded_policy("from-config", &seeded.identity()),
        keystore_yaml: Some(format!(
            "  fs:\n    path: {}\n",
            old.files.keystore_dir.display()
        )),
        ..Default::default()
    });
    for i in 0..3 {
        let out = ok(restore(&new.files.nodes[i].config, &file));
        assert!(out.contains("seeded with the backup"), "{out}");
    }
    for i in 0..3 {
        new.start_node(i);
    }
    new.wait_all_ready(60).await;
    let admin = new.client_for(&[0, 1, 2]);
    assert_eq!(policies(&admin).await, vec!["app".to_owned()]);
    assert_eq!(
        admin
            .describe_identity(&app.identity())
            .await
            .unwrap()
            .policy,
        "app"
    );
    // The sealed cache came back, and opens with the cache key unwrapped by the keystore.
    let st = admin.cluster_status().await.unwrap();
    assert_eq!((st.keys, st.tombstones), (2, 1), "{st:?}");
    for i in 0..3 {
        let app_client = client_as(&new, &[i], &app);
        assert_eq!(
            app_client
                .decrypt("app-1", &dek.ciphertext.0, b"ctx")
                .await
                .unwrap(),
            dek.plaintext.0,
            "node {}",
            i + 1
        );
        app_client.generate_key("app-2", b"").await.unwrap();
        // The assignment is the backup's: nothing beyond the policy.
        let e = app_client.create_key("app-3").await.unwrap_err();
        assert!(e.is_not_allowed(), "{e:?}");
    }
    let e = admin.describe_key("gone").await.unwrap_err();
    assert!(e.is_key_not_found(), "{e:?}");
    // The new cluster writes.
    admin.create_key("app-after").await.unwrap();
    new.client(2).generate_key("app-after", b"").await.unwrap();
    // Each node's seed is used up: a restart does not restore again.
    new.restart(0);
    new.wait_ready(0, 60).await;
    assert!(policies(&new.client(0)).await.contains(&"app".to_owned()));
    new.client(0).describe_key("app-after").await.unwrap();
}

/// A backup made by the state codec directly, for the refusals.
fn backup_bytes() -> Vec<u8> {
    let mut state = kes_state::State::default();
    state.apply(
        1,
        &kes_state::Command::Init {
            wrapped_cck: vec![7; 60],
            admin: "admin".into(),
            policies: Default::default(),
            assignments: Default::default(),
            at_ms: 1,
        },
    );
    kes_state::Backup {
        taken_at_ms: 1,
        node_id: 1,
        read_index: 1,
        state,
    }
    .encode()
    .unwrap()
}

#[test]
fn restore_refuses_what_it_cannot_restore_with_a_clear_message() {
    let c = ProcCluster::prepare(LocalOptions {
        nodes: 1,
        ..Default::default()
    });
    let node = &c.files.nodes[0];
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.backup");
    let bytes = backup_bytes();
    write(&good, &bytes);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "config.yaml",
            std::fs::read(&node.config).unwrap(),
            "not a kes backup file",
        ),
        (
            "truncated.backup",
            bytes[..bytes.len() - 10].to_vec(),
            "truncated backup file",
        ),
        (
            "corrupt.backup",
            {
                let mut b = bytes.clone();
                let mid = b.len() / 2;
                b[mid] ^= 1;
                b
            },
            "checksum does not match",
        ),
        (
            "newer.backup",
            {
                let mut b = bytes.clone();
                b[7] = 2;
                b
            },
            "backup format version 2 is not supported (this build reads version 1)",
        ),
    ];
    for (name, content, want) in cases {
        let path = dir.path().join(name);
        write(&path, &content);
        let err = failed(restore(&node.config, &path));
        assert!(
            err.contains(want) && err.contains(name),
            "{name}: want '{want}' in: {err}"
        );
        assert!(!node.data_dir.exists(), "{name} left a data directory");
    }
    let err = failed(restore(&node.config, &dir.path().join("missing.backup")));
    assert!(err.contains("missing.backup"), "{err}");

    // A directory that holds state (here: a restore already done) is not overwritten.
    ok(restore(&node.config, &good));
    let err = failed(restore(&node.config, &good));
    assert!(
        err.contains("already holds data") && err.contains(&node.data_dir.display().to_string()),
        "{err}"
    );
    // A configuration without a cluster: section has no data directory to seed.
    let single = dir.path().join("single.yaml");
    write(
        &single,
        "address: 127.0.0.1:7373\nadmin:\n  identity: disabled\ntls:\n  key: k\n  cert: c\nkeystore:\n  memory: {}\n",
    );
    let err = failed(restore(&single, &good));
    assert!(err.contains("no cluster: section"), "{err}");
}

/// A data directory of another format version stops the node with both versions and the
/// directory named; one without a marker (written before markers existed) is format 1.
#[tokio::test]
async fn a_data_directory_of_another_format_version_is_refused() {
    let mut c = ProcCluster::start(1, "1h", "");
    c.wait_ready(0, 60).await;
    c.client(0).create_key("kept").await.unwrap();
    let data = c.files.nodes[0].data_dir.clone();
    let marker = data.join(kes_raft::FORMAT_FILE);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "kes data directory format 1\n"
    );
    c.kill(0);

    write(&marker, "kes data directory format 2\n");
    c.start_node(0);
    let status = c.procs[0].as_mut().unwrap().wait_exit(30);
    assert!(
        status.is_some_and(|s| !s.success()),
        "the node did not stop: {}",
        c.log(0)
    );
    let log = c.log(0);
    assert!(
        log.contains(&format!(
            "data directory {} has format version 2, and this build of kes reads format version 1",
            data.display()
        )),
        "{log}"
    );
    c.procs[0] = None;

    // No marker: taken as format 1, served as before, and marked.
    std::fs::remove_file(&marker).unwrap();
    c.start_node(0);
    c.wait_ready(0, 60).await;
    c.client(0).describe_key("kept").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "kes data directory format 1\n"
    );
}

/// Growing from three voters to five with `kes cluster add`, under load: then two nodes,
/// the leader among them, may fail and the cluster still writes.
#[tokio::test]
async fn growing_from_three_to_five_nodes_survives_two_failures() {
    let mut c = ProcCluster::start_with_joiners(5, 3);
    for i in 0..3 {
        c.wait_ready(i, 60).await;
    }
    let admin = c.client_for(&[0, 1, 2]);
    admin.create_key("grow").await.unwrap();
    let load = {
        let cl = c.client_for(&[0, 1, 2]);
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(6);
            let mut n = 0u64;
            while Instant::now() < until {
                let g = cl.generate_key("grow", b"l").await.expect("generate");
                let p = cl
                    .decrypt("grow", &g.ciphertext.0, b"l")
                    .await
                    .expect("decrypt");
                assert_eq!(p, g.plaintext.0);
                n += 1;
            }
            n
        })
    };
    for i in [3, 4] {
        c.start_node(i);
        let id = (i + 1).to_string();
        let addr = format!("127.0.0.1:{}", c.files.nodes[i].peer_port);
        ok(c.cli(&[0, 1, 2], &["cluster", "add", &id, &addr]));
        c.wait_ready(i, 60).await;
    }
    assert!(load.await.unwrap() > 5);
    let st = c.client(4).cluster_status().await.unwrap();
    let mut voters: Vec<u64> = st
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    voters.sort_unstable();
    assert_eq!(voters, vec![1, 2, 3, 4, 5], "{st:?}");
    let out = ok(c.cli(&[3], &["cluster", "status"]));
    assert!(out.contains("voter"), "{out}");

    // Two failures, the leader among them: three of five remain, a majority.
    let leader = c.wait_leader(10).await;
    let other = (0..3).find(|i| *i != leader).unwrap();
    c.kill(leader);
    c.kill(other);
    let alive: Vec<usize> = (0..5).filter(|i| *i != leader && *i != other).collect();
    let survivors = c.client_for(&alive);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match survivors.create_key("after-two-failures").await {
            Ok(()) => break,
            Err(e) if e.is_key_exists() => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no writes with three of five nodes: {e:?}"),
        }
    }
    for i in alive {
        let g = c.client(i).generate_key("grow", b"").await.unwrap();
        assert_eq!(
            c.client(i)
                .decrypt("grow", &g.ciphertext.0, b"")
                .await
                .unwrap(),
            g.plaintext.0
        );
        c.client(i)
            .describe_key("after-two-failures")
            .await
            .unwrap();
    }
}
