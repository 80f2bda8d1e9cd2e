//! The replica set with real processes, real TLS and a shared filesystem keystore on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use std::time::{Duration, Instant};

async fn cluster(n: u64, offline: &str) -> ProcCluster {
    let c = ProcCluster::start(n, offline, "");
    c.wait_all_ready(30).await;
    c
}

#[tokio::test]
async fn key_created_on_one_node_works_everywhere_and_delete_is_seen_at_once() {
    let c = cluster(3, "10s").await;
    c.client(0).create_key("shared").await.unwrap();
    let dek = c.client(1).generate_key("shared", b"ctx").await.unwrap();
    let plain = c
        .client(2)
        .decrypt("shared", &dek.ciphertext.0, b"ctx")
        .await
        .unwrap();
    assert_eq!(plain, dek.plaintext.0);
    // describe is linearizable on every node
    for i in 0..3 {
        assert_eq!(
            c.client(i).describe_key("shared").await.unwrap().name,
            "shared"
        );
    }
    // every node has used the key; delete through node 3
    c.client(0).generate_key("shared", b"").await.unwrap();
    c.client(2).delete_key("shared").await.unwrap();
    for i in 0..2 {
        let e = c.client(i).generate_key("shared", b"").await.unwrap_err();
        assert!(e.is_key_not_found(), "node {}: {e:?}", i + 1);
        let e = c
            .client(i)
            .decrypt("shared", &dek.ciphertext.0, b"ctx")
            .await
            .unwrap_err();
        assert!(e.is_key_not_found(), "node {}: {e:?}", i + 1);
    }
    // forwarding is invisible: the same canonical errors from a follower
    let leader = c.wait_leader(10).await;
    let follower = (leader + 1) % 3;
    c.client(follower).create_key("dup").await.unwrap();
    let e = c.client(follower).create_key("dup").await.unwrap_err();
    assert!(e.is_key_exists(), "{e:?}");
    // the reserved wrapping key never shows
    let names = c.client(0).list_keys_all("").await.unwrap();
    assert_eq!(names, vec!["dup".to_owned()]);

    // No plaintext key material in any node's Raft log, snapshot or sled files: not the stored
    // value, not the raw secret or HMAC key, in binary or base64.
    for i in 0..3 {
        c.client(i).generate_key("dup", b"").await.unwrap();
    }
    c.client(leader).cluster_snapshot().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = std::fs::read(c.files.keystore_dir.join("dup")).unwrap();
    // KES's layout: base64(protobuf KeyVersion{1: SecretKey{1: key}, 2: HMACKey{1: key}}).
    let pb = kes_types::b64::decode(std::str::from_utf8(&stored).unwrap()).unwrap();
    assert_eq!(&pb[..4], &[0x0a, pb[1], 0x0a, 0x20], "secret key field");
    let secret = pb[4..36].to_vec();
    let h = 2 + pb[1] as usize;
    assert_eq!(
        &pb[h..h + 4],
        &[0x12, pb[h + 1], 0x0a, 0x20],
        "hmac key field"
    );
    let hmac = pb[h + 4..h + 36].to_vec();
    let needles = vec![
        stored.clone(),
        pb.clone(),
        secret.clone(),
        b64(&secret).into_bytes(),
        hmac,
    ];
    let mut scanned = 0;
    for node in &c.files.nodes {
        for file in walk(&node.data_dir) {
            let data = std::fs::read(&file).unwrap();
            scanned += data.len();
            for n in &needles {
                assert!(
                    !data.windows(n.len()).any(|w| w == n.as_slice()),
                    "key material found in {}",
                    file.display()
                );
            }
        }
    }
    assert!(scanned > 0, "nothing scanned");

    // The node-to-node port refuses KES client certificates, even the admin's.
    let peer_url = format!(
        "https://127.0.0.1:{}/cluster/cck",
        c.files.nodes[0].peer_port
    );
    let cert = ClientCert::from_api_key(&c.files.api_key);
    let mut roots = rustls::RootCertStore::empty();
    for ca in ["ca.cert", "cluster-ca.cert"] {
        let pem = std::fs::read(c.files.dir.join(ca)).unwrap();
        for der in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let der: rustls::pki_types::CertificateDer = der.unwrap();
            roots.add(der).unwrap();
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            cert.certs.clone(),
            rustls::pki_types::PrivateKeyDer::try_from(cert.key_der.clone()).unwrap(),
        )
        .unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .danger_accept_invalid_hostnames(true)
        .build()
        .unwrap();
    let r = http.post(&peer_url).body(vec![0xc0]).send().await;
    assert!(
        r.is_err(),
        "the cluster port answered a KES client: {:?}",
        r.map(|r| r.status())
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn leader_kill_keeps_crypto_up_and_writes_resume() {
    let mut c = cluster(3, "30s").await;
    c.client(0).create_key("k").await.unwrap();
    let leader = c.wait_leader(10).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // warm the survivors' view of the key
    let mut deks = Vec::new();
    for &i in &survivors {
        deks.push(c.client(i).generate_key("k", b"x").await.unwrap());
    }
    c.kill(leader);
    let until = Instant::now() + Duration::from_secs(4);
    let mut ops = 0;
    while Instant::now() < until {
        for (j, &i) in survivors.iter().enumerate() {
            let cl = c.client(i);
            cl.generate_key("k", b"x")
                .await
                .unwrap_or_else(|e| panic!("generate on node {} failed: {e:?}", i + 1));
            let p = cl.decrypt("k", &deks[j].ciphertext.0, b"x").await.unwrap();
            assert_eq!(p, deks[j].plaintext.0);
            ops += 2;
        }
    }
    assert!(ops > 10);
    // a new leader is elected among the survivors and writes work again
    let new_leader = c.wait_leader(15).await;
    assert_ne!(new_leader, leader);
    c.client(survivors[0]).create_key("after").await.unwrap();
    // the killed node restarts and catches up
    c.restart(leader);
    c.wait_ready(leader, 30).await;
    let d = c.client(leader).generate_key("after", b"").await.unwrap();
    assert_eq!(
        c.client(survivors[1])
            .decrypt("after", &d.ciphertext.0, b"")
            .await
            .unwrap(),
        d.plaintext.0
    );
}

#[tokio::test]
async fn a_write_sent_during_a_leader_failover_waits_for_the_new_leader() {
    let mut c = cluster(3, "30s").await;
    c.client(0).create_key("before").await.unwrap();
    let leader = c.wait_leader(10).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    let http = c.raw_client();
    // the follower has a connection to the leader and knows it as leader
    let warm = send(&http, "POST", &c.url(follower, "/v1/key/create/warm"), None).await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    c.kill(leader);
    // Sent at once, before the survivors notice: the follower cannot reach the leader it
    // knows, waits for the election and forwards to the new leader. One request, no retry.
    let started = Instant::now();
    let a = send(
        &http,
        "POST",
        &c.url(follower, "/v1/key/create/failover"),
        None,
    )
    .await;
    assert_eq!(
        a.status,
        200,
        "create during the failover answered {} after {:?}: {}",
        a.status,
        started.elapsed(),
        a.text()
    );
    let d = c.client(other).generate_key("failover", b"").await.unwrap();
    assert_eq!(
        c.client(follower)
            .decrypt("failover", &d.ciphertext.0, b"")
            .await
            .unwrap(),
        d.plaintext.0
    );
    // a delete through the follower works the same way
    let a = send(
        &http,
        "DELETE",
        &c.url(follower, "/v1/key/delete/warm"),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test]
async fn policy_changes_apply_on_every_node() {
    let c = cluster(3, "10s").await;
    let app = kes_crypto::ApiKey::generate();
    c.client(1)
        .write_policy(
            "app",
            &[
                "/v1/key/generate/app-*".into(),
                "/v1/key/create/app-*".into(),
            ],
            &[],
        )
        .await
        .unwrap();
    c.client(2)
        .assign_policy("app", &app.identity())
        .await
        .unwrap();
    c.client(0).create_key("app-key").await.unwrap();
    c.client(0).create_key("other").await.unwrap();
    for i in 0..3 {
        let ac = kes_client::Client::builder(vec![c.files.nodes[i].endpoint()])
            .api_key(&app)
            .ca_file(&c.files.ca_file)
            .build()
            .unwrap();
        ac.generate_key("app-key", b"")
            .await
            .unwrap_or_else(|e| panic!("node {}: {e:?}", i + 1));
        assert!(ac
            .generate_key("other", b"")
            .await
            .unwrap_err()
            .is_not_allowed());
        let p = ac.read_policy("app").await;
        assert!(
            p.unwrap_err().is_not_allowed(),
            "policy routes are not in the app's policy"
        );
    }
    // delete the policy through node 1: denied everywhere
    c.client(0).delete_policy("app").await.unwrap();
    for i in 0..3 {
        let ac = kes_client::Client::builder(vec![c.files.nodes[i].endpoint()])
            .api_key(&app)
            .ca_file(&c.files.ca_file)
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match ac.generate_key("app-key", b"").await {
                Err(e) if e.is_not_allowed() => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("node {} still allows the deleted policy: {other:?}", i + 1),
            }
        }
    }
    // admin-only routes refuse other identities, even with a policy allowing them
    c.client(0)
        .write_policy("ops", &["/v1/cluster/*".into(), "/v1/policy/*".into()], &[])
        .await
        .unwrap();
    c.client(0)
        .assign_policy("ops", &app.identity())
        .await
        .unwrap();
    let ac = kes_client::Client::builder(vec![c.files.nodes[0].endpoint()])
        .api_key(&app)
        .ca_file(&c.files.ca_file)
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ac.cluster_status().await.unwrap_err().is_not_allowed());
    assert!(ac
        .write_policy("x", &[], &[])
        .await
        .unwrap_err()
        .is_not_allowed());
}

/// `kes cluster leader <id>` moves the leadership to the node asked for, every time, while
/// keys are being created through every node, asked of the leader or of another node; no
/// write fails meanwhile. (A campaign of the target alone, as before, let whichever node
/// campaigned first after the old leader stepped down win, and lost the race whenever a write
/// was committed without the target in between.)
#[tokio::test]
async fn leadership_moves_to_the_node_asked_for_under_writes() {
    let c = cluster(3, "10s").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let client = c.client_for(&[0, 1, 2]);
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.create_key(&format!("moving-{i}")).await {
                    Ok(()) => ok += 1,
                    // A retried create whose first attempt succeeded (see tests/deploy.rs).
                    Err(e) if e.is_key_exists() => ok += 1,
                    Err(e) => failed.push(format!("moving-{i}: {e:?}")),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    for round in 0..6 {
        let leader = c.wait_leader(10).await;
        let target = (leader + 1) % 3;
        // Asked of the leader, then of the third node.
        let via = if round % 4 < 2 {
            leader
        } else {
            (leader + 2) % 3
        };
        let started = Instant::now();
        c.client(via)
            .cluster_transfer_leader(target as u64 + 1)
            .await
            .unwrap_or_else(|e| panic!("round {round}: moving to node {}: {e:?}", target + 1));
        eprintln!(
            "round {round}: node {} -> node {} via node {} in {:?}",
            leader + 1,
            target + 1,
            via + 1,
            started.elapsed()
        );
        // Answered once the asked node saw the target lead: every node agrees at once.
        for i in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(2);
            while c.leader(i).await != Some(target) {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: node {} does not see node {} lead",
                    i + 1,
                    target + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Asking for the leader it already has changes nothing.
        c.client(via)
            .cluster_transfer_leader(target as u64 + 1)
            .await
            .unwrap();
        assert_eq!(c.leader(via).await, Some(target));
        // Every other move right after the previous one: the new leader's lease still holds
        // and the voters refuse a vote until it runs out. In between, a pause: the leader has
        // led for longer than its lease and the target's vote can win at once.
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = writer.await.unwrap();
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    assert!(ok >= 10, "only {ok} writes");
    // Not a voter: a clear refusal.
    let err = c.client(0).cluster_transfer_leader(9).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("node 9 is not a voter"),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_with_all_endpoints_survives_a_node_down() {
    let mut c = cluster(3, "10s").await;
    let all = c.client_for(&[0, 1, 2]);
    all.create_key("mk").await.unwrap();
    let d = all.generate_key("mk", b"c").await.unwrap();
    let leader = c.wait_leader(10).await;
    let victim = (leader + 1) % 3;
    c.kill(victim);
    for _ in 0..30 {
        let g = all.generate_key("mk", b"c").await.unwrap();
        assert_eq!(
            all.decrypt("mk", &g.ciphertext.0, b"c").await.unwrap(),
            g.plaintext.0
        );
        assert_eq!(
            all.decrypt("mk", &d.ciphertext.0, b"c").await.unwrap(),
            d.plaintext.0
        );
    }
    all.create_key("while-down").await.unwrap();
}

#[tokio::test]
async fn restarted_node_gets_the_cache_key_from_a_peer_while_the_keystore_is_gone() {
    let mut c = cluster(3, "30s").await;
    c.client(0).create_key("cached").await.unwrap();
    let d = c.client(1).generate_key("cached", b"").await.unwrap();
    // wait until the fill is replicated to every node
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = c.client(i).cluster_status().await.unwrap();
            if st.keys == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "fill not replicated to node {}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // the keystore becomes unreachable: a file stands where its directory was
    let keys = c.files.keystore_dir.clone();
    let moved = keys.with_extension("away");
    std::fs::rename(&keys, &moved).unwrap();
    std::fs::write(&keys, b"not a directory").unwrap();
    let victim = 2;
    c.restart(victim);
    c.wait_ready(victim, 30).await;
    let log = c.log(victim);
    assert!(
        log.contains("received from a peer"),
        "cache key must come from a peer:\n{log}"
    );
    let p = c
        .client(victim)
        .decrypt("cached", &d.ciphertext.0, b"")
        .await
        .unwrap();
    assert_eq!(p, d.plaintext.0);
    // creates fail cleanly (5xx) while the keystore is gone, and change nothing
    let e = c.client(victim).create_key("nope").await.unwrap_err();
    assert!(e.status().is_some_and(|s| s >= 500), "{e:?}");
    std::fs::remove_file(&keys).unwrap();
    std::fs::rename(&moved, &keys).unwrap();
    // Writes resume on their own once the keystore is back (at the latest at the next probe).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = c.client(victim).create_key("later").await {
        assert!(
            Instant::now() < deadline,
            "{e:?}\nnode logs:\n{}\n{}\n{}",
            c.log(0),
            c.log(1),
            c.log(2)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!c
        .client(0)
        .list_keys_all("")
        .await
        .unwrap()
        .contains(&"nope".to_owned()));
}

#[tokio::test]
async fn minority_node_serves_within_the_offline_window_then_503() {
    let c = cluster(3, "3s").await;
    c.client(0).create_key("k").await.unwrap();
    let leader = c.wait_leader(10).await;
    let lonely = (leader + 1) % 3;
    let d = c.client(lonely).generate_key("k", b"").await.unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != lonely).collect();
    for &i in &others {
        c.signal(i, "STOP");
    }
    let cut = Instant::now();
    // within the window: cached keys are served, writes are refused
    let cl = c.client(lonely);
    let p = cl.decrypt("k", &d.ciphertext.0, b"").await.unwrap();
    assert_eq!(p, d.plaintext.0);
    let e = cl.create_key("w").await.unwrap_err();
    assert!(
        e.status().is_some_and(|s| s >= 500),
        "writes must fail with 5xx: {e:?}"
    );
    // after contact timeout + window: 503
    let deadline = cut + Duration::from_secs(15);
    loop {
        match cl.generate_key("k", b"").await {
            Err(e) if e.status() == Some(503) => break,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("still serving after the offline window: {other:?}"),
        }
    }
    assert!(
        cut.elapsed() >= Duration::from_secs(3),
        "served less than the offline window"
    );
    assert!(
        !matches!(cl.is_ready().await, Ok(true)),
        "a cut-off node is not ready"
    );
    for &i in &others {
        c.signal(i, "CONT");
    }
    c.wait_ready(lonely, 30).await;
    cl.generate_key("k", b"").await.unwrap();
}

#[tokio::test]
async fn membership_change_under_load_and_snapshot_catch_up() {
    let mut c = ProcCluster::start_with_joiners(4, 3);
    for i in 0..3 {
        c.wait_ready(i, 30).await;
    }
    let admin = c.client_for(&[0, 1, 2]);
    // more entries than a snapshot keeps behind it, so the joiner needs the snapshot
    for i in 0..150 {
        admin.create_key(&format!("pre-{i}")).await.unwrap();
    }
    // a client keeps using the cluster while membership changes
    let load = {
        let cl = c.client_for(&[0, 1, 2]);
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(8);
            let mut n = 0u64;
            while Instant::now() < until {
                let g = cl
                    .generate_key("pre-0", b"l")
                    .await
                    .expect("generate during membership change");
                let p = cl
                    .decrypt("pre-0", &g.ciphertext.0, b"l")
                    .await
                    .expect("decrypt during membership change");
                assert_eq!(p, g.plaintext.0);
                n += 1;
            }
            n
        })
    };
    // snapshot so the new node catches up through a snapshot install
    let leader = c.wait_leader(10).await;
    c.client(leader).cluster_snapshot().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.start_node(3);
    let joiner = &c.files.nodes[3];
    admin
        .cluster_add(4, &format!("127.0.0.1:{}", joiner.peer_port), true)
        .await
        .unwrap();
    c.wait_ready(3, 30).await;
    let log = c.log(3);
    assert!(
        log.contains("snapshot installed"),
        "the new node must catch up through a snapshot:\n{log}"
    );
    // the new node serves keys created before it joined
    let g = c.client(3).generate_key("pre-7", b"").await.unwrap();
    assert_eq!(
        admin.decrypt("pre-7", &g.ciphertext.0, b"").await.unwrap(),
        g.plaintext.0
    );
    // remove node 3 (not the leader if possible)
    let leader = c.wait_leader(10).await;
    let victim = if leader == 2 { 1 } else { 2 };
    admin.cluster_remove(victim as u64 + 1).await.unwrap();
    // The removal is answered once the leader commits it; node 4 applies it a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.client(3).cluster_status().await.unwrap();
        let ids: Vec<u64> = st.members.iter().map(|m| m.id).collect();
        if !ids.contains(&(victim as u64 + 1)) {
            break;
        }
        assert!(Instant::now() < deadline, "{st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = load.await.unwrap();
    assert!(n > 5, "load ran {n} rounds");
}

/// Creates and deletes of one name racing through different nodes: whatever order the leader
/// gives them, afterwards every node's answer matches the keystore. (Before writes of one name
/// were serialised, a create could commit its cache entry after a delete had removed the key
/// from the keystore, and the cluster served a key the keystore no longer had.)
#[tokio::test]
async fn racing_creates_and_deletes_of_one_name_leave_cluster_and_keystore_agreeing() {
    let c = cluster(3, "10s").await;
    let name = "raced";
    for round in 0..100usize {
        let ops: Vec<_> = (0..8usize)
            .map(|j| {
                let client = c.client((round + j) % 3);
                let create = (round + j) % 2 == 0;
                tokio::spawn(async move {
                    if create {
                        match client.create_key(name).await {
                            Ok(()) => Ok(()),
                            Err(e) if e.is_key_exists() => Ok(()),
                            Err(e) => Err(format!("create: {e:?}")),
                        }
                    } else {
                        match client.delete_key(name).await {
                            Ok(()) => Ok(()),
                            Err(e) if e.is_key_not_found() => Ok(()),
                            Err(e) => Err(format!("delete: {e:?}")),
                        }
                    }
                })
            })
            .collect();
        for op in ops {
            op.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        let stored = c.files.keystore_dir.join(name).exists();
        for i in 0..3 {
            let described = match c.client(i).describe_key(name).await {
                Ok(_) => true,
                Err(e) if e.is_key_not_found() => false,
                Err(e) => panic!("round {round}, node {}: describe: {e:?}", i + 1),
            };
            let usable = match c.client(i).generate_key(name, b"").await {
                Ok(_) => true,
                Err(e) if e.is_key_not_found() => false,
                Err(e) => panic!("round {round}, node {}: generate: {e:?}", i + 1),
            };
            assert_eq!(
                (described, usable),
                (stored, stored),
                "round {round}, node {}: (described, usable) against the keystore",
                i + 1
            );
        }
    }
}

/// When a delete is acknowledged, the other nodes have applied it: even if the leader stops
/// right after answering (so no heartbeat tells the followers that the tombstone is
/// committed, until a new leader is elected seconds later), no follower serves the key.
#[tokio::test]
async fn a_delete_is_applied_everywhere_when_it_is_acknowledged() {
    let c = cluster(3, "10s").await;
    let leader = c.wait_leader(10).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let clients: Vec<_> = (0..3).map(|i| c.client(i)).collect();
    for round in 0..20 {
        let name = format!("gone-{round}");
        clients[leader].create_key(&name).await.unwrap();
        for client in &clients {
            client.generate_key(&name, b"").await.unwrap();
        }
        clients[leader].delete_key(&name).await.unwrap();
        c.signal(leader, "STOP");
        let mut answers = Vec::new();
        for f in &followers {
            answers.push((f + 1, clients[*f].generate_key(&name, b"").await));
        }
        c.signal(leader, "CONT");
        for (node, r) in answers {
            assert!(
                r.as_ref().is_err_and(|e| e.is_key_not_found()),
                "round {round}: node {node} served the deleted key right after the acknowledgement: {r:?}"
            );
        }
    }
    // Nothing was disturbed: the same leader still answers.
    c.client(leader).create_key("after").await.unwrap();
}
