//! The Vault keystore against real OpenBao servers: the keystore conformance suite on every
//! layout, compatibility with KES's exact storage layout in both directions, authentication
//! (AppRole renewal and re-login, namespaces, client certificates), and outages.
//!
//! Each test starts its own server (see `kes-testkit`); without `tests/services.sh install` they
//! print SKIPPED, unless `KES_REQUIRE_SERVICES=1`.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use kes_config::{KvVersion, VaultAppRole, VaultConfig, VaultKubernetes, VaultTransit};
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError, MAX_VALUE_LEN};
use kes_keystore_vault::{ConnectOptions, Limits, VaultStore};
use kes_testkit::Bao;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn with_token(token: &str) -> ConnectOptions {
    ConnectOptions {
        token: Some(Zeroizing::new(token.to_owned())),
        ..ConnectOptions::default()
    }
}

/// Limits short enough that outage tests finish quickly.
fn short_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        attempts: 2,
    }
}

async fn connect(bao: &Bao, cfg: &VaultConfig) -> Arc<dyn KeyStore> {
    Arc::new(
        VaultStore::connect_with(cfg, with_token(&bao.token))
            .await
            .expect("connecting to openbao"),
    )
}

fn suite(binary_values: bool) -> Options {
    Options {
        binary_values,
        large_value_len: MAX_VALUE_LEN,
        // The store reads before deleting, so it can tell.
        delete_missing_is_not_found: true,
        ..Options::default()
    }
}

fn transit(key: &str) -> Option<VaultTransit> {
    Some(VaultTransit {
        engine: "transit".into(),
        key: key.into(),
    })
}

async fn with_transit(bao: &Bao) {
    bao.mount("transit", "transit", None).await.unwrap();
    bao.ok("POST", "transit/keys/kes", json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kv1() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv1", "kv", Some("1")).await.unwrap();
    let store = connect(&bao, &bao.config("kv1", KvVersion::V1)).await;
    conformance::run_all_with(store, suite(false)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kv2() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv2", "kv", Some("2")).await.unwrap();
    let store = connect(&bao, &bao.config("kv2", KvVersion::V2)).await;
    conformance::run_all_with(store, suite(false)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kv2_transit() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv2", "kv", Some("2")).await.unwrap();
    with_transit(&bao).await;
    let mut cfg = bao.config("kv2", KvVersion::V2);
    cfg.transit = transit("kes");
    let store = connect(&bao, &cfg).await;
    // Transit encrypts base64 of the value, so any bytes survive.
    conformance::run_all_with(store, suite(true)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kv1_transit() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv1", "kv", Some("1")).await.unwrap();
    with_transit(&bao).await;
    let mut cfg = bao.config("kv1", KvVersion::V1);
    cfg.transit = transit("kes");
    let store = connect(&bao, &cfg).await;
    conformance::run_all_with(store, suite(true)).await;
}

/// Sets up AppRole in `ns` (see `Bao::approle`).
async fn approle(
    bao: &Bao,
    ns: Option<&str>,
    paths: &[&str],
    ttl: &str,
    max_ttl: &str,
) -> (String, String) {
    bao.approle(ns, paths, ttl, max_ttl).await.unwrap()
}

fn approle_cfg(role_id: &str, secret_id: &str) -> Option<VaultAppRole> {
    Some(VaultAppRole {
        namespace: String::new(),
        engine: "approle".into(),
        id: role_id.into(),
        secret: secret_id.into(),
    })
}

/// KV v2 inside a namespace, logging in with AppRole in that namespace (an empty auth
/// namespace means the KV namespace, as in KES).
#[tokio::test(flavor = "multi_thread")]
async fn conformance_namespace_approle() {
    let Some(bao) = Bao::dev().await else { return };
    bao.ok("POST", "sys/namespaces/team", json!({}))
        .await
        .unwrap();
    let (code, v) = bao
        .api_ns(
            "team",
            "POST",
            "sys/mounts/kv",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(code, 204, "{v}");
    let (role_id, secret_id) = approle(&bao, Some("team"), &["kv/*"], "1h", "2h").await;
    let mut cfg = bao.config("kv", KvVersion::V2);
    cfg.namespace = "team".into();
    cfg.prefix = String::new();
    cfg.approle = approle_cfg(&role_id, &secret_id);
    let store: Arc<dyn KeyStore> = Arc::new(VaultStore::connect(&cfg).await.unwrap());
    conformance::run_all_with(Arc::clone(&store), suite(false)).await;

    // The entries really are in the namespace, not at the root.
    store.create("in-team", b"v").await.unwrap();
    let (code, _) = bao
        .api_ns("team", "GET", "kv/data/in-team", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    let (code, _) = bao.api("GET", "kv/data/in-team", None).await.unwrap();
    assert_ne!(code, 200);
}

/// Tokens with a 2 s TTL and a 5 s maximum: the store must renew, then log in again when the
/// maximum nears, and log in again when Vault revokes its token behind its back. A policy
/// refusal stays a refusal.
#[tokio::test(flavor = "multi_thread")]
async fn approle_renewal_and_relogin() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv2", "kv", Some("2")).await.unwrap();
    let (role_id, secret_id) = approle(
        &bao,
        None,
        &["kv2/data/kes/*", "kv2/metadata/kes/*", "kv2/metadata/kes"],
        "2s",
        "5s",
    )
    .await;
    let mut cfg = bao.config("kv2", KvVersion::V2);
    cfg.approle = approle_cfg(&role_id, &secret_id);
    let store = VaultStore::connect(&cfg).await.unwrap();
    store.create("renewed", b"value").await.unwrap();

    // Well past the maximum TTL, with requests all along. Vault's view of the AppRole tokens
    // shows that they were renewed and that new ones replaced them.
    let until = Instant::now() + Duration::from_secs(12);
    let mut reads = 0;
    let mut tokens = std::collections::BTreeSet::new();
    let mut renewed = false;
    while Instant::now() < until {
        assert_eq!(store.get("renewed").await.unwrap(), b"value");
        reads += 1;
        if reads % 4 == 0 {
            for (accessor, info) in approle_tokens(&bao).await {
                renewed |= !info["last_renewal_time"].is_null();
                tokens.insert(accessor);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(reads > 20);
    assert!(renewed, "no AppRole token was ever renewed");
    assert!(
        tokens.len() >= 3,
        "tokens seen over 12 s with a 5 s max TTL: {tokens:?}"
    );

    // Revoke every token AppRole has issued: the next request is refused once, the store logs
    // in again, and the request succeeds.
    bao.ok(
        "PUT",
        "sys/leases/revoke-prefix/auth/approle/login",
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(store.get("renewed").await.unwrap(), b"value");

    // Outside the policy: Denied, even after the new login.
    let mut other = cfg.clone();
    other.prefix = "elsewhere".into();
    let outside = VaultStore::connect(&other).await.unwrap();
    match outside.create("k", b"v").await {
        Err(StoreError::Denied(_)) => {}
        r => panic!("create outside the policy: {r:?}"),
    }
    match outside.get("k").await {
        Err(StoreError::Denied(_)) => {}
        r => panic!("get outside the policy: {r:?}"),
    }

    // A wrong secret id fails the connect as a refusal, not as an outage.
    let mut wrong = cfg.clone();
    wrong.approle = approle_cfg(&role_id, "00000000-0000-0000-0000-000000000000");
    match VaultStore::connect(&wrong).await {
        Err(StoreError::Denied(_)) => {}
        r => panic!("login with a wrong secret id: {r:?}"),
    }
}

/// The live tokens AppRole issued, as (accessor, lookup data).
async fn approle_tokens(bao: &Bao) -> Vec<(String, Value)> {
    let listed = bao
        .ok("LIST", "auth/token/accessors", Value::Null)
        .await
        .unwrap();
    let mut out = Vec::new();
    for accessor in listed["data"]["keys"].as_array().unwrap() {
        let (code, info) = bao
            .api(
                "POST",
                "auth/token/lookup-accessor",
                Some(json!({"accessor": accessor})),
            )
            .await
            .unwrap();
        // Tokens expire between the listing and the lookup.
        if code == 200 && info["data"]["path"] == "auth/approle/login" {
            out.push((accessor.as_str().unwrap().to_owned(), info["data"].clone()));
        }
    }
    out
}

fn key_value() -> (KeyVersion, Vec<u8>) {
    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    let encoded = kv.encode();
    (kv, encoded)
}

/// Entries KES wrote read back through the store, and entries the store writes have exactly
/// KES's layout, on KV v1 and v2.
#[tokio::test(flavor = "multi_thread")]
async fn kes_layout_compatibility() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv1", "kv", Some("1")).await.unwrap();
    bao.mount("kv2", "kv", Some("2")).await.unwrap();
    let v1 = connect(&bao, &bao.config("kv1", KvVersion::V1)).await;
    let v2 = connect(&bao, &bao.config("kv2", KvVersion::V2)).await;

    // Written as KES writes them.
    let (kv, encoded) = key_value();
    let text = String::from_utf8(encoded.clone()).unwrap();
    bao.ok("PUT", "kv1/kes/from-kes", json!({"from-kes": text}))
        .await
        .unwrap();
    bao.ok(
        "PUT",
        "kv2/data/kes/from-kes",
        json!({"options": {"cas": 0}, "data": {"from-kes": text}}),
    )
    .await
    .unwrap();
    for store in [&v1, &v2] {
        let got = store.get("from-kes").await.unwrap();
        assert_eq!(got, encoded);
        assert_eq!(KeyVersion::parse(&got).unwrap(), kv);
        let page = store.list("from-", "", 10).await.unwrap();
        assert_eq!(page.names, ["from-kes"]);
    }
    // KES reads version 1 of a KV v2 entry, even when someone wrote more versions.
    bao.ok(
        "PUT",
        "kv2/data/kes/from-kes",
        json!({"data": {"from-kes": "second version"}}),
    )
    .await
    .unwrap();
    assert_eq!(v2.get("from-kes").await.unwrap(), encoded);

    // Written by the store, read as KES reads them.
    let (kv, encoded) = key_value();
    let text = String::from_utf8(encoded.clone()).unwrap();
    v1.create("to-kes", &encoded).await.unwrap();
    let raw = bao.ok("GET", "kv1/kes/to-kes", Value::Null).await.unwrap();
    assert_eq!(raw["data"], json!({"to-kes": text}));
    v2.create("to-kes", &encoded).await.unwrap();
    let raw = bao
        .ok("GET", "kv2/data/kes/to-kes?version=1", Value::Null)
        .await
        .unwrap();
    assert_eq!(raw["data"]["data"], json!({"to-kes": text}));
    assert_eq!(raw["data"]["metadata"]["version"], 1);
    let parsed =
        KeyVersion::parse(raw["data"]["data"]["to-kes"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(parsed, kv);
    let listed = bao
        .ok("LIST", "kv2/metadata/kes", Value::Null)
        .await
        .unwrap();
    assert!(listed["data"]["keys"]
        .as_array()
        .unwrap()
        .contains(&json!("to-kes")));

    // Deletes remove what KES would remove: the v1 path, and every v2 version with metadata.
    v1.delete("to-kes").await.unwrap();
    v2.delete("to-kes").await.unwrap();
    assert_eq!(bao.api("GET", "kv1/kes/to-kes", None).await.unwrap().0, 404);
    assert_eq!(
        bao.api("GET", "kv2/metadata/kes/to-kes", None)
            .await
            .unwrap()
            .0,
        404
    );
}

/// Transit: the stored string is a `vault:v1:` ciphertext of base64(value), both ways.
#[tokio::test(flavor = "multi_thread")]
async fn kes_transit_compatibility() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv2", "kv", Some("2")).await.unwrap();
    with_transit(&bao).await;
    let mut cfg = bao.config("kv2", KvVersion::V2);
    cfg.transit = transit("kes");
    let store = connect(&bao, &cfg).await;

    let (kv, encoded) = key_value();
    let ct = bao
        .ok(
            "POST",
            "transit/encrypt/kes",
            json!({"plaintext": B64.encode(&encoded)}),
        )
        .await
        .unwrap()["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("vault:v1:"));
    bao.ok(
        "PUT",
        "kv2/data/kes/from-kes",
        json!({"options": {"cas": 0}, "data": {"from-kes": ct}}),
    )
    .await
    .unwrap();
    let got = store.get("from-kes").await.unwrap();
    assert_eq!(KeyVersion::parse(&got).unwrap(), kv);

    let (kv, encoded) = key_value();
    store.create("to-kes", &encoded).await.unwrap();
    let raw = bao
        .ok("GET", "kv2/data/kes/to-kes?version=1", Value::Null)
        .await
        .unwrap();
    let stored = raw["data"]["data"]["to-kes"].as_str().unwrap().to_owned();
    assert!(stored.starts_with("vault:v1:"), "{stored}");
    assert_eq!(raw["data"]["data"].as_object().unwrap().len(), 1);
    let plain = bao
        .ok("POST", "transit/decrypt/kes", json!({"ciphertext": stored}))
        .await
        .unwrap()["data"]["plaintext"]
        .as_str()
        .unwrap()
        .to_owned();
    let decoded = B64.decode(plain).unwrap();
    assert_eq!(decoded, encoded);
    assert_eq!(KeyVersion::parse(&decoded).unwrap(), kv);

    // An entry written before transit was turned on still reads.
    let (_, plain_encoded) = key_value();
    let text = String::from_utf8(plain_encoded.clone()).unwrap();
    bao.ok(
        "PUT",
        "kv2/data/kes/unwrapped",
        json!({"data": {"unwrapped": text}}),
    )
    .await
    .unwrap();
    assert_eq!(store.get("unwrapped").await.unwrap(), plain_encoded);

    // A ciphertext transit cannot decrypt is an invalid entry, not an outage.
    bao.ok(
        "PUT",
        "kv2/data/kes/tampered",
        json!({"data": {"tampered": "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}),
    )
    .await
    .unwrap();
    match store.get("tampered").await {
        Err(StoreError::Invalid(_)) => {}
        r => panic!("undecryptable entry: {r:?}"),
    }

    // Without transit configured, a wrapped entry is refused rather than returned as the key.
    let plain_store = connect(&bao, &bao.config("kv2", KvVersion::V2)).await;
    match plain_store.get("to-kes").await {
        Err(StoreError::Invalid(_)) => {}
        r => panic!("wrapped entry without transit: {r:?}"),
    }
}

/// TLS with a private CA and a required client certificate.
#[tokio::test(flavor = "multi_thread")]
async fn tls_client_certificate() {
    let Some(bao) = Bao::persistent(true).await else {
        return;
    };
    bao.mount("kv", "kv", Some("2")).await.unwrap();
    let cfg = bao.config("kv", KvVersion::V2);
    let store = connect(&bao, &cfg).await;
    store.create("over-tls", b"v").await.unwrap();
    assert_eq!(store.get("over-tls").await.unwrap(), b"v");
    store.status().await.unwrap();

    // Without the client certificate the handshake fails: an outage, not a refusal of the key.
    let mut no_cert = cfg.clone();
    no_cert.tls.cert = None;
    no_cert.tls.key = None;
    let opts = ConnectOptions {
        limits: short_limits(),
        ..with_token(&bao.token)
    };
    match VaultStore::connect_with(&no_cert, opts.clone()).await {
        Err(StoreError::Unavailable { .. }) => {}
        r => panic!("connect without client certificate: {r:?}"),
    }
    // Without the private CA, Vault's certificate is not trusted.
    let mut no_ca = cfg.clone();
    no_ca.tls.ca = None;
    match VaultStore::connect_with(&no_ca, opts).await {
        Err(StoreError::Unavailable { .. }) => {}
        r => panic!("connect without the CA: {r:?}"),
    }
}

async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    // A guard against hanging, far above the store's own bound (2 tries of 1 s).
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(Err(StoreError::Unavailable { .. })) => {}
        Ok(r) => panic!("{what}: expected Unavailable, got {r:?}"),
        Err(_) => panic!("{what}: no answer within 30 s"),
    }
}

/// A frozen, a killed and a sealed server make operations fail as `Unavailable` without
/// hanging; once the server is back, the same store works again and the data is still there.
#[tokio::test(flavor = "multi_thread")]
async fn outage_and_recovery() {
    let Some(mut bao) = Bao::persistent(false).await else {
        return;
    };
    bao.mount("kv", "kv", Some("2")).await.unwrap();
    let cfg = bao.config("kv", KvVersion::V2);
    let opts = ConnectOptions {
        limits: short_limits(),
        ..with_token(&bao.token)
    };
    let store = VaultStore::connect_with(&cfg, opts).await.unwrap();
    store.create("survivor", b"value").await.unwrap();

    // Frozen: connections are accepted by the kernel, but nothing answers.
    bao.proc().signal("STOP");
    expect_unavailable("get while frozen", store.get("survivor")).await;
    expect_unavailable("create while frozen", store.create("new", b"v")).await;
    expect_unavailable("status while frozen", store.status()).await;
    bao.proc().signal("CONT");
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
    store.status().await.unwrap();

    // Killed: connection refused.
    bao.kill();
    expect_unavailable("get while down", store.get("survivor")).await;
    expect_unavailable("list while down", store.list("", "", 10)).await;
    expect_unavailable("status while down", store.status()).await;
    match store.get("survivor").await {
        Err(StoreError::Unavailable {
            retryable: true, ..
        }) => {}
        r => panic!("a refused connection is retryable: {r:?}"),
    }

    // Back on the same port, from the same files.
    bao.restart().await.unwrap();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
    store.create("after-restart", b"v2").await.unwrap();
    store.status().await.unwrap();

    // Sealed: Vault answers, but serves nothing.
    bao.ok("PUT", "sys/seal", json!({})).await.unwrap();
    expect_unavailable("status while sealed", store.status()).await;
    expect_unavailable("get while sealed", store.get("survivor")).await;
    bao.unseal().await.unwrap();
    assert_eq!(store.get("after-restart").await.unwrap(), b"v2");
    store.status().await.unwrap();
}

/// A stand-in for the Kubernetes API server: answers every TokenReview with `user`
/// authenticated, which is all OpenBao's kubernetes auth method asks of it.
async fn fake_kubernetes_api(user: &'static str, uid: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head and body; a TokenReview is small.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let body = json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "status": {
                        "authenticated": true,
                        "user": {"username": user, "uid": uid, "groups": ["system:serviceaccounts"]}
                    }
                })
                .to_string();
                let resp = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

/// A service-account JWT as Kubernetes issues it. Only the claims matter: OpenBao asks the
/// TokenReview API (the fake above) whether the token is valid.
fn service_account_jwt(namespace: &str, name: &str, uid: &str) -> String {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = url.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let claims = url.encode(
        json!({
            "iss": "kubernetes/serviceaccount",
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": name,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
            "kubernetes.io/serviceaccount/secret.name": format!("{name}-token"),
        })
        .to_string(),
    );
    format!("{header}.{claims}.{}", url.encode([7u8; 256]))
}

/// Kubernetes auth with the JWT in a file (re-read at each login, as KES does).
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_login() {
    let Some(bao) = Bao::dev().await else { return };
    bao.mount("kv2", "kv", Some("2")).await.unwrap();
    // For the policy only; the role is not used.
    approle(
        &bao,
        None,
        &["kv2/data/kes/*", "kv2/metadata/kes/*", "kv2/metadata/kes"],
        "1h",
        "2h",
    )
    .await;
    let k8s_port = fake_kubernetes_api("system:serviceaccount:minio:kes", "uid-1").await;
    bao.ok("POST", "sys/auth/kubernetes", json!({"type": "kubernetes"}))
        .await
        .unwrap();
    bao.ok(
        "POST",
        "auth/kubernetes/config",
        json!({
            "kubernetes_host": format!("http://127.0.0.1:{k8s_port}"),
            "disable_local_ca_jwt": true,
            // Required with disable_local_ca_jwt, unused over plain HTTP.
            "kubernetes_ca_cert": kes_tls::certgen::TestCa::new().unwrap().ca_pem(),
        }),
    )
    .await
    .unwrap();
    bao.ok(
        "POST",
        "auth/kubernetes/role/kes",
        json!({
            "bound_service_account_names": ["kes"],
            "bound_service_account_namespaces": ["minio"],
            "token_policies": ["kes"],
            "token_ttl": "1h"
        }),
    )
    .await
    .unwrap();

    let jwt_file = bao.dir.path().join("token");
    std::fs::write(&jwt_file, service_account_jwt("minio", "kes", "uid-1")).unwrap();
    let mut cfg = bao.config("kv2", KvVersion::V2);
    cfg.kubernetes = Some(VaultKubernetes {
        namespace: String::new(),
        engine: "kubernetes".into(),
        role: "kes".into(),
        jwt: jwt_file.to_str().unwrap().to_owned(),
    });
    let store = VaultStore::connect(&cfg).await.unwrap();
    store.create("via-kubernetes", b"v").await.unwrap();
    assert_eq!(store.get("via-kubernetes").await.unwrap(), b"v");

    // A service account the role does not bind is refused at login.
    std::fs::write(&jwt_file, service_account_jwt("other", "kes", "uid-1")).unwrap();
    match VaultStore::connect(&cfg).await {
        Err(StoreError::Denied(_)) => {}
        r => panic!("login as an unbound service account: {r:?}"),
    }
}
