//! A three-node cluster on an external KMS (OpenBao with file storage, moto's Secrets Manager,
//! drongo's GCP Secret Manager behind its OAuth2 front end),
//! with real processes: cache expiry against the KMS, and serving through KMS outages (the
//! server stopped, or hung with SIGSTOP), a node restarted during one, and recovery without
//! operator action.
//!
//! Without `tests/services.sh install` these tests print SKIPPED, unless
//! `KES_REQUIRE_SERVICES=1` (which `tests/run.sh` sets).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_server::local::LocalOptions;
use kes_testkit::{Bao, Gcp, Moto};
use kes_tests::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 3;
/// `cache.expiry.any` of these clusters: short, so that re-confirmation happens in the test.
const ANY: Duration = Duration::from_secs(3);

fn options(keystore_yaml: String, offline: &str) -> LocalOptions {
    LocalOptions {
        nodes: NODES as u64,
        offline: offline.into(),
        expiry_yaml: format!("    any: {}s\n    unused: 1h\n", ANY.as_secs()),
        keystore_yaml: Some(keystore_yaml),
        ..Default::default()
    }
}

async fn vault_cluster(bao: &Bao, offline: &str) -> ProcCluster {
    bao.mount("kv", "kv", Some("2")).await.unwrap();
    let (role, secret) = bao.approle(None, &["kv/*"], "1h", "24h").await.unwrap();
    let yaml = format!(
        "  vault:\n    endpoint: {}\n    engine: kv\n    version: v2\n    approle:\n      id: {role}\n      secret: {secret}\n",
        bao.addr
    );
    let c = ProcCluster::start_with(options(yaml, offline));
    c.wait_all_ready(60).await;
    c
}

/// Polls `f` every 200 ms until it returns true, for at most `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not within {secs}s");
}

/// generate/decrypt over `keys` on `nodes`, round after round, until stopped: the workload that
/// must not notice KMS outages. Returns (requests, failures as text).
fn workload(
    c: &ProcCluster,
    nodes: &[usize],
    keys: &[&str],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    let clients: Vec<(usize, kes_client::Client)> =
        nodes.iter().map(|i| (*i, c.client(*i))).collect();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let done = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        let mut failures = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for (i, client) in &clients {
                for k in &keys {
                    let r = match client.generate_key(k, b"w").await {
                        Ok(dek) => client
                            .decrypt(k, &dek.ciphertext.0, b"w")
                            .await
                            .map(|p| p == dek.plaintext.0),
                        Err(e) => Err(e),
                    };
                    done.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(true) => {}
                        Ok(false) => failures.push(format!("node {}: {k}: wrong plaintext", i + 1)),
                        Err(e) => failures.push(format!("node {}: {k}: {e:?}", i + 1)),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (done.load(Ordering::Relaxed), failures)
    })
}

/// Waits (at most 30 s) for an error-log event containing `text`.
async fn expect_log_event(
    stream: &mut kes_client::EventStream<kes_types::wire::ErrorEvent>,
    text: &str,
) {
    use futures_util::StreamExt as _;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(ev)) = stream.next().await {
            if ev.message.contains(text) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no error-log event with {text:?}");
}

/// Generate and decrypt with `key` on every node.
async fn crypto_everywhere(c: &ProcCluster, key: &str) {
    for i in 0..NODES {
        if c.procs[i].is_none() {
            continue;
        }
        let dek = c
            .client(i)
            .generate_key(key, b"ctx")
            .await
            .unwrap_or_else(|e| panic!("generate {key} on node {}: {e:?}", i + 1));
        let plain = c
            .client((i + 1) % NODES)
            .decrypt(key, &dek.ciphertext.0, b"ctx")
            .await;
        if c.procs[(i + 1) % NODES].is_some() {
            assert_eq!(plain.unwrap(), dek.plaintext.0, "decrypt {key}");
        }
    }
}

fn status_of(e: &kes_client::ClientError) -> u16 {
    e.status()
        .unwrap_or_else(|| panic!("no HTTP status in {e:?}"))
}

/// The KMS is down: what must hold on every node.
async fn assert_outage_behaviour(c: &ProcCluster, cached: &[&str], uncached: &str, tag: &str) {
    // Cached keys keep working, past their `any` expiry.
    tokio::time::sleep(ANY + Duration::from_secs(1)).await;
    for k in cached {
        crypto_everywhere(c, k).await;
    }
    for i in (0..NODES).filter(|i| c.procs[*i].is_some()) {
        let client = c.client(i);
        // A miss is a 5xx, never a 404, so that clients try again elsewhere or later.
        let e = client.generate_key(uncached, b"").await.unwrap_err();
        let s = status_of(&e);
        assert!(s >= 500, "miss on node {}: {e:?}", i + 1);
        // Writes are refused with a KES-style 5xx and change nothing.
        let e = client
            .create_key(&format!("{tag}-during-{i}"))
            .await
            .unwrap_err();
        assert!(status_of(&e) >= 500, "create on node {}: {e:?}", i + 1);
        assert!(
            !e.api()
                .map(|a| a.message.clone())
                .unwrap_or_default()
                .is_empty(),
            "create error without a message: {e:?}"
        );
        let e = client.delete_key(cached[0]).await.unwrap_err();
        assert!(status_of(&e) >= 500, "delete on node {}: {e:?}", i + 1);
        // Status reports the KMS unreachable in the shape the Go client parses; ready stays.
        let st = client.status().await.unwrap();
        assert!(st.keystore_unreachable && st.keystore_unavailable, "{st:?}");
        assert!(client.is_ready().await.unwrap(), "node {} not ready", i + 1);
        let m = client.cluster_metrics().await.unwrap();
        assert!(m.contains("kes_cluster_kms_reachable{keystore=\""), "{m}");
        assert!(m.contains("} 0\n"), "kms still reported reachable:\n{m}");
    }
    // The refused delete changed nothing.
    crypto_everywhere(c, cached[0]).await;
}

/// Waits until writes go through again, then checks that the outage's refused creates left
/// nothing behind.
async fn assert_recovery(c: &ProcCluster, tag: &str) {
    let client = c.client_for(&[0, 1, 2]);
    let name = format!("{tag}-after");
    eventually(20, "create after the KMS returned", || {
        let client = client.clone();
        let name = name.clone();
        async move { client.create_key(&name).await.is_ok() }
    })
    .await;
    crypto_everywhere(c, &name).await;
    for i in 0..NODES {
        // Nodes that saw no traffic notice the KMS's return at their next probe; until then
        // they answer misses with 504.
        eventually(10, "status reports the KMS reachable again", || {
            let client = c.client(i);
            async move { client.status().await.is_ok_and(|s| !s.keystore_unreachable) }
        })
        .await;
    }
    for i in 0..NODES {
        let e = client
            .describe_key(&format!("{tag}-during-{i}"))
            .await
            .unwrap_err();
        assert!(e.is_key_not_found(), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openbao_outages_and_recovery() {
    let Some(mut bao) = Bao::persistent(false).await else {
        return;
    };
    let mut c = vault_cluster(&bao, "1h").await;
    let all = c.client_for(&[0, 1, 2]);

    // A key KES wrote before (its layout in KV v2, no prefix) is served as is.
    let kv = kes_crypto::KeyVersion::generate(kes_crypto::KeyType::Aes256, "kes");
    let encoded = String::from_utf8(kv.encode()).unwrap();
    bao.ok(
        "PUT",
        "kv/data/from-kes",
        json!({"data": {"from-kes": encoded}}),
    )
    .await
    .unwrap();
    let ct = c
        .client(2)
        .encrypt("from-kes", b"secret", b"")
        .await
        .unwrap();
    // And is the same key: decrypt with the material KES stored.
    assert_eq!(kv.key.decrypt(&ct, b"").unwrap().as_slice(), b"secret");
    bao.ok(
        "PUT",
        "kv/data/never-used",
        json!({"data": {"never-used": encoded}}),
    )
    .await
    .unwrap();

    for k in ["k1", "k2"] {
        all.create_key(k).await.unwrap();
        crypto_everywhere(&c, k).await;
    }

    // Concurrent deletes of one key through different nodes: the leader runs them one after
    // the other, so exactly one succeeds, even though Vault's delete is not conditional.
    all.create_key("contested").await.unwrap();
    let deletes: Vec<_> = (0..6)
        .map(|i| {
            let client = c.client(i % NODES);
            tokio::spawn(async move { client.delete_key("contested").await })
        })
        .collect();
    let mut ok = 0;
    for d in deletes {
        match d.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert!(e.is_key_not_found(), "{e:?}"),
        }
    }
    assert_eq!(ok, 1, "deletes that succeeded");

    // Deleted directly in the KMS: stops being served everywhere once `any` has passed.
    all.create_key("victim").await.unwrap();
    crypto_everywhere(&c, "victim").await;
    bao.ok("DELETE", "kv/metadata/victim", json!({}))
        .await
        .unwrap();
    let deleted_at = Instant::now();
    for i in 0..NODES {
        eventually(ANY.as_secs() + 3, "key deleted in the KMS stops working", || {
            let client = c.client(i);
            async move {
                matches!(client.generate_key("victim", b"").await, Err(e) if e.is_key_not_found())
            }
        })
        .await;
    }
    assert!(deleted_at.elapsed() < ANY + Duration::from_secs(3));

    // From here to the end of the second outage, a workload on nodes 1 and 3 must see every
    // request succeed; node 2 is restarted in between and checked on its own.
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&c, &[0, 2], &["k1", "k2"], Arc::clone(&stop));
    // Entering and leaving an outage are events on the error log.
    // (A client of its own: the stream outlives the usual request timeout.)
    let mut log = kes_client::Client::builder(vec![c.files.nodes[0].endpoint()])
        .api_key(&c.files.api_key)
        .ca_file(&c.files.ca_file)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
        .error_log()
        .await
        .unwrap();

    // Outage 1: OpenBao stopped.
    bao.kill();
    expect_log_event(&mut log, "keystore unreachable").await;
    assert_outage_behaviour(&c, &["k1", "k2", "from-kes"], "never-used", "stop").await;
    // A node restarted during the outage gets the cache key from a peer and serves.
    c.restart(1);
    c.wait_ready(1, 60).await;
    crypto_everywhere(&c, "k1").await;
    bao.restart().await.unwrap();
    assert_recovery(&c, "stop").await;
    expect_log_event(&mut log, "keystore reachable again").await;
    drop(log);

    // Outage 2: OpenBao hung. A create sent before any node noticed waits for the KMS; its
    // answer is lost. After recovery the key is in both the KMS and the cluster, or in neither.
    bao.proc().signal("STOP");
    let slow = c.client(0).clone();
    let limbo = tokio::spawn(async move { slow.create_key("limbo").await });
    for i in 0..NODES {
        eventually(20, "status reports the hung KMS", || {
            let client = c.client(i);
            async move { client.status().await.is_ok_and(|s| s.keystore_unreachable) }
        })
        .await;
    }
    assert_outage_behaviour(&c, &["k1", "k2"], "never-used", "hang").await;
    bao.proc().signal("CONT");
    let limbo = limbo.await.unwrap();
    assert_recovery(&c, "hang").await;
    stop.store(true, Ordering::Relaxed);
    let (requests, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {failures:?}",
        failures.len()
    );
    assert!(requests > 100, "only {requests} requests");
    // The leader settles a create whose answer was lost: once the KMS answers, the key ends up
    // in both the KMS and the cluster (the create is completed), or in neither (it was refused
    // before reaching the KMS).
    let mut in_kms = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (code, _) = bao.api("GET", "kv/data/limbo", None).await.unwrap();
        in_kms = code == 200;
        if in_kms && all.describe_key("limbo").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if limbo.is_ok() {
        assert!(in_kms, "acknowledged create not in the KMS");
    }
    // With the KMS gone again, only the cluster's cache can answer.
    bao.kill();
    for i in 0..NODES {
        let r = c.client(i).generate_key("limbo", b"").await;
        match (in_kms, r) {
            (true, Ok(_)) => {}
            (false, Err(e)) if status_of(&e) >= 500 => {}
            (in_kms, r) => panic!("limbo in KMS: {in_kms}, node {}: {r:?}", i + 1),
        }
    }
    bao.restart().await.unwrap();
    let described = all.describe_key("limbo").await;
    assert_eq!(described.is_ok(), in_kms, "{described:?}");
    assert_same_keys(&c).await;
}

/// Every node lists the same keys, and each of them works on every node.
async fn assert_same_keys(c: &ProcCluster) {
    let mut sets = Vec::new();
    for i in 0..NODES {
        let mut names: Vec<String> = c
            .client(i)
            .list_keys("")
            .await
            .unwrap()
            .names
            .into_iter()
            .collect();
        names.sort();
        sets.push(names);
    }
    assert!(sets.windows(2).all(|w| w[0] == w[1]), "{sets:?}");
    for name in &sets[0] {
        for i in 0..NODES {
            c.client(i)
                .describe_key(name)
                .await
                .unwrap_or_else(|e| panic!("describe {name} on node {}: {e:?}", i + 1));
        }
    }
}

/// With `offline: 5s`, a stale key is served for 5 s of outage and then refused with 504;
/// a key confirmed and used recently is unaffected until its own expiry.
#[tokio::test(flavor = "multi_thread")]
async fn offline_window_bounds_serving_during_an_outage() {
    let Some(mut bao) = Bao::persistent(false).await else {
        return;
    };
    let c = vault_cluster(&bao, "5s").await;
    c.client(0).create_key("bounded").await.unwrap();
    crypto_everywhere(&c, "bounded").await;
    bao.kill();
    let down = Instant::now();
    tokio::time::sleep(ANY + Duration::from_secs(1)).await;
    // Past `any`: re-confirmation fails, the outage is under 5 s old on some node at least.
    eventually(15, "stale key refused once the offline window ran out", || {
        let client = c.client(1);
        async move {
            matches!(client.generate_key("bounded", b"").await, Err(e) if e.status() == Some(504))
        }
    })
    .await;
    assert!(down.elapsed() >= Duration::from_secs(5));
    bao.restart().await.unwrap();
    eventually(20, "served again after the KMS returned", || {
        let client = c.client(1);
        async move { client.generate_key("bounded", b"").await.is_ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_outage_and_recovery() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let kms_key = moto.create_kms_key().await.unwrap();
    let yaml = format!(
        "  aws:\n    secretsmanager:\n      endpoint: {}\n      region: {}\n      kmskey: {kms_key}\n      credentials:\n        accesskey: test\n        secretkey: test\n",
        moto.endpoint,
        kes_testkit::REGION
    );
    let c = ProcCluster::start_with(options(yaml, "1h"));
    c.wait_all_ready(60).await;
    let all = c.client_for(&[0, 1, 2]);
    for k in ["m1", "m2"] {
        all.create_key(k).await.unwrap();
        crypto_everywhere(&c, k).await;
    }
    // Stored as KES stores it, encrypted with the configured KMS key.
    let v = moto
        .secrets("DescribeSecret", json!({"SecretId": "m1"}))
        .await
        .unwrap();
    assert_eq!(v["KmsKeyId"].as_str(), Some(kms_key.as_str()), "{v}");
    // A secret created directly (as KES would) and never used.
    let kv = kes_crypto::KeyVersion::generate(kes_crypto::KeyType::Aes256, "kes");
    moto.secrets(
        "CreateSecret",
        json!({"Name": "cold", "SecretString": String::from_utf8(kv.encode()).unwrap()}),
    )
    .await
    .unwrap();

    // Deleted directly in Secrets Manager: stops being served once `any` has passed.
    all.create_key("gone").await.unwrap();
    crypto_everywhere(&c, "gone").await;
    moto.secrets(
        "DeleteSecret",
        json!({"SecretId": "gone", "ForceDeleteWithoutRecovery": true}),
    )
    .await
    .unwrap();
    for i in 0..NODES {
        eventually(
            ANY.as_secs() + 3,
            "secret deleted in AWS stops working",
            || {
                let client = c.client(i);
                async move {
                    matches!(client.generate_key("gone", b"").await, Err(e) if e.is_key_not_found())
                }
            },
        )
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&c, &[0, 1, 2], &["m1", "m2"], Arc::clone(&stop));
    // moto keeps its data only in memory, so the outage is a hang (SIGSTOP), not a restart.
    moto.proc().signal("STOP");
    for i in 0..NODES {
        eventually(20, "status reports the hung KMS", || {
            let client = c.client(i);
            async move { client.status().await.is_ok_and(|s| s.keystore_unreachable) }
        })
        .await;
    }
    assert_outage_behaviour(&c, &["m1", "m2"], "cold", "aws").await;
    moto.proc().signal("CONT");
    assert_recovery(&c, "aws").await;
    crypto_everywhere(&c, "cold").await;
    stop.store(true, Ordering::Relaxed);
    let (requests, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {failures:?}",
        failures.len()
    );
    assert_same_keys(&c).await;
}

/// The same outage semantics with a cloud keystore that logs in with expiring tokens: GCP
/// Secret Manager (drongo) behind the OAuth2 front end, the service-account key in the YAML as
/// copied from a key file (with `\n` escapes).
#[tokio::test(flavor = "multi_thread")]
async fn gcp_outage_and_recovery() {
    let Some(gcp) = Gcp::start().await else {
        return;
    };
    let cfg = gcp.config();
    let creds = cfg.credentials.clone().unwrap();
    let yaml = format!(
        "  gcp:\n    secretmanager:\n      project_id: {}\n      endpoint: {}\n      credentials:\n        client_email: {}\n        client_id: \"1\"\n        private_key_id: {}\n        private_key: '{}'\n        token_uri: {}\n",
        cfg.project_id,
        cfg.endpoint,
        creds.client_email,
        creds.private_key_id,
        creds.private_key.trim().replace('\n', "\\n"),
        creds.token_uri,
    );
    let c = ProcCluster::start_with(options(yaml, "1h"));
    c.wait_all_ready(60).await;
    let all = c.client_for(&[0, 1, 2]);
    for k in ["g1", "g2"] {
        all.create_key(k).await.unwrap();
        crypto_everywhere(&c, k).await;
    }
    let secrets = |p: &str| format!("/v1/projects/{}/secrets{p}", cfg.project_id);
    // Stored as KES stores it: version 1 of a secret named by the key.
    let (s, v) = gcp
        .api(
            reqwest::Method::GET,
            &secrets("/g1/versions/1:access"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    // A secret created directly (as KES would) and never used.
    let kv = kes_crypto::KeyVersion::generate(kes_crypto::KeyType::Aes256, "kes");
    use base64::Engine as _;
    gcp.api(
        reqwest::Method::POST,
        &secrets("?secretId=cold"),
        Some(json!({"replication": {"automatic": {}}})),
    )
    .await
    .unwrap();
    gcp.api(
        reqwest::Method::POST,
        &secrets("/cold:addVersion"),
        Some(json!({"payload": {"data": base64::engine::general_purpose::STANDARD.encode(kv.encode())}})),
    )
    .await
    .unwrap();

    // Deleted directly in Secret Manager: stops being served once `any` has passed.
    all.create_key("gone").await.unwrap();
    crypto_everywhere(&c, "gone").await;
    let (s, _) = gcp
        .api(reqwest::Method::DELETE, &secrets("/gone"), None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    for i in 0..NODES {
        eventually(
            ANY.as_secs() + 3,
            "secret deleted in GCP stops working",
            || {
                let client = c.client(i);
                async move {
                    matches!(client.generate_key("gone", b"").await, Err(e) if e.is_key_not_found())
                }
            },
        )
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&c, &[0, 1, 2], &["g1", "g2"], Arc::clone(&stop));
    // drongo keeps its data in memory: the outage is a hang (SIGSTOP) behind the front end.
    gcp.drongo().signal("STOP");
    for i in 0..NODES {
        eventually(20, "status reports the hung KMS", || {
            let client = c.client(i);
            async move { client.status().await.is_ok_and(|s| s.keystore_unreachable) }
        })
        .await;
    }
    assert_outage_behaviour(&c, &["g1", "g2"], "cold", "gcp").await;
    let m = c.client(0).cluster_metrics().await.unwrap();
    assert!(
        m.contains("kes_cluster_kms_reachable{keystore=\"gcp\"} 0"),
        "{m}"
    );
    gcp.drongo().signal("CONT");
    assert_recovery(&c, "gcp").await;
    crypto_everywhere(&c, "cold").await;
    stop.store(true, Ordering::Relaxed);
    let (requests, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {failures:?}",
        failures.len()
    );
    assert_same_keys(&c).await;
}

/// How a node opens a cloud keystore at start: refused credentials stop the start with the
/// KMS's message; an unreachable KMS does not, and the store opens once the KMS answers.
#[tokio::test(flavor = "multi_thread")]
async fn cloud_keystore_start_waits_for_the_kms_and_refuses_bad_credentials() {
    use kes_config::KeystoreConfig;
    let fake = kes_testkit::FortanixFake::start().await.unwrap();
    let mut refused = fake.config();
    refused.api_key = "d3Jvbmc6a2V5".into();
    let e = kes_server::open_keystore(&KeystoreConfig::FortanixSdkms(refused))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&e, kes_server::ServerError::Keystore(kes_keystore::StoreError::Denied(m)) if m.contains("Invalid API key")),
        "{e}"
    );

    fake.server.stop().await;
    let store = kes_server::open_keystore(&KeystoreConfig::FortanixSdkms(fake.config()))
        .await
        .unwrap();
    assert_eq!(store.kind(), "fortanix");
    assert!(store.status().await.unwrap_err().is_unavailable());
    fake.server.resume_serving().await.unwrap();
    store.create("after-start", b"v").await.unwrap();
    assert_eq!(store.get("after-start").await.unwrap(), b"v");
}
