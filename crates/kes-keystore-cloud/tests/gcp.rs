//! The GCP Secret Manager keystore against drongo's Secret Manager server behind an OAuth2 front
//! end that verifies service-account assertions (`kes_testkit::gcp`): the conformance suite,
//! KES's layout in both directions, authentication (refused keys, renewal, revoked tokens),
//! rate limiting, and outages.
//!
//! Without `tests/services.sh install` these tests print SKIPPED, unless
//! `KES_REQUIRE_SERVICES=1`.
#![cfg(feature = "gcp")]
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError};
use kes_keystore_cloud::gcp::{GcpStore, MAX_SECRET_LEN};
use kes_keystore_cloud::Limits;
use kes_testkit::Gcp;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn short_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        attempts: 2,
        max_retry_after: Duration::from_secs(2),
    }
}

fn secrets(path: &str) -> String {
    format!("/v1/projects/{}/secrets{path}", kes_testkit::gcp::PROJECT)
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    let Some(gcp) = Gcp::start().await else {
        return;
    };
    let store: Arc<dyn KeyStore> = Arc::new(GcpStore::connect(&gcp.config()).await.unwrap());
    conformance::run_all_with(
        store,
        Options {
            large_value_len: MAX_SECRET_LEN,
            delete_missing_is_not_found: true,
            ..Options::default()
        },
    )
    .await;
    // One login served the whole suite.
    assert_eq!(gcp.tokens_issued(), 1);
}

/// Secrets written as KES writes them read back, and the store writes what KES reads.
#[tokio::test(flavor = "multi_thread")]
async fn kes_layout_compatibility() {
    let Some(gcp) = Gcp::start().await else {
        return;
    };
    let store = GcpStore::connect(&gcp.config()).await.unwrap();

    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    let encoded = kv.encode();
    let (s, v) = gcp
        .api(
            Method::POST,
            &secrets("?secretId=from-kes"),
            Some(json!({"replication": {"automatic": {}}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, v) = gcp
        .api(
            Method::POST,
            &secrets("/from-kes:addVersion"),
            Some(json!({"payload": {"data": B64.encode(&encoded)}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let got = store.get("from-kes").await.unwrap();
    assert_eq!(KeyVersion::parse(&got).unwrap(), kv);
    // KES's older JSON layout is a value like any other.
    let legacy = br#"{"bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#;
    gcp.api(
        Method::POST,
        &secrets("?secretId=legacy"),
        Some(json!({"replication": {"automatic": {}}})),
    )
    .await
    .unwrap();
    gcp.api(
        Method::POST,
        &secrets("/legacy:addVersion"),
        Some(json!({"payload": {"data": B64.encode(legacy)}})),
    )
    .await
    .unwrap();
    let got = store.get("legacy").await.unwrap();
    assert_eq!(got, legacy);
    assert!(KeyVersion::parse(&got).is_ok());

    let kv = KeyVersion::generate(KeyType::ChaCha20, "compat-test");
    store.create("to-kes", &kv.encode()).await.unwrap();
    let (s, secret) = gcp
        .api(Method::GET, &secrets("/to-kes"), None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(secret["replication"], json!({"automatic": {}}));
    let (s, v) = gcp
        .api(Method::GET, &secrets("/to-kes/versions/1:access"), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let raw = B64.decode(v["payload"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(KeyVersion::parse(&raw).unwrap(), kv);

    let page = store.list("", "", 100).await.unwrap();
    assert_eq!(page.names, ["from-kes", "legacy", "to-kes"]);
    // A disabled version 1 is a revoked key; the name stays taken.
    let (s, v) = gcp
        .api(Method::POST, &secrets("/legacy/versions/1:disable"), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(matches!(
        store.get("legacy").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.create("legacy", b"v").await,
        Err(StoreError::AlreadyExists)
    ));
    store.delete("to-kes").await.unwrap();
    let (s, _) = gcp
        .api(Method::GET, &secrets("/to-kes"), None)
        .await
        .unwrap();
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_stop_the_connect() {
    let Some(gcp) = Gcp::start().await else {
        return;
    };
    // A key the token endpoint does not know.
    let mut cfg = gcp.config();
    cfg.credentials.as_mut().unwrap().private_key = kes_testkit::gcp::unknown_private_key();
    match GcpStore::connect(&cfg).await {
        Err(StoreError::Denied(m)) => assert!(m.contains("Invalid JWT Signature"), "{m}"),
        r => panic!("a foreign key: {r:?}"),
    }
    let mut cfg = gcp.config();
    cfg.credentials.as_mut().unwrap().client_email = "someone@else".into();
    assert!(matches!(
        GcpStore::connect(&cfg).await,
        Err(StoreError::Denied(_))
    ));
    // A key that is no key is a configuration error.
    let mut cfg = gcp.config();
    cfg.credentials.as_mut().unwrap().private_key = "garbage".into();
    assert!(matches!(
        GcpStore::connect(&cfg).await,
        Err(StoreError::Unavailable {
            retryable: false,
            ..
        })
    ));
}

/// Tokens are replaced at half their life, and a revoked token is replaced at once.
#[tokio::test(flavor = "multi_thread")]
async fn token_renewal_and_revocation() {
    let Some(gcp) = Gcp::start().await else {
        return;
    };
    gcp.set_token_lifetime(Duration::from_secs(10));
    let store = GcpStore::connect(&gcp.config()).await.unwrap();
    store.create("k", b"v").await.unwrap();
    assert_eq!(gcp.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(gcp.tokens_issued(), 2, "renewed past half its life");
    gcp.revoke_tokens();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(gcp.tokens_issued(), 3, "a new token after a 401");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limiting_honours_retry_after() {
    let Some(gcp) = Gcp::start().await else {
        return;
    };
    let store = GcpStore::connect_with(&gcp.config(), short_limits())
        .await
        .unwrap();
    store.create("k", b"v").await.unwrap();
    gcp.front.throttle(1, 1);
    let start = Instant::now();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    // Throttled past the attempts: unavailable, retryable, and no hang.
    gcp.front.throttle(10, 1);
    match store.get("k").await {
        Err(StoreError::Unavailable {
            retryable: true,
            message,
        }) => assert!(message.contains("429"), "{message}"),
        r => panic!("throttled: {r:?}"),
    }
    // A Retry-After longer than the limit is not waited for.
    gcp.front.throttle(1, 3600);
    let start = Instant::now();
    assert!(store.create("k2", b"v").await.unwrap_err().is_unavailable());
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "an hour's Retry-After was not waited for"
    );
    gcp.front.throttle(0, 0);
    store.create("k2", b"v").await.unwrap();
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

/// A hung or stopped KMS makes operations fail as `Unavailable` without hanging; once it is
/// back, the same store works again.
#[tokio::test(flavor = "multi_thread")]
async fn outage_and_recovery() {
    let Some(gcp) = Gcp::start().await else {
        return;
    };
    let store = GcpStore::connect_with(&gcp.config(), short_limits())
        .await
        .unwrap();
    store.create("survivor", b"value").await.unwrap();

    gcp.drongo().signal("STOP");
    expect_unavailable("get while hung", store.get("survivor")).await;
    expect_unavailable("create while hung", store.create("new", b"v")).await;
    expect_unavailable("status while hung", store.status()).await;
    gcp.drongo().signal("CONT");
    assert_eq!(store.get("survivor").await.unwrap(), b"value");

    gcp.front.stop().await;
    expect_unavailable("get while down", store.get("survivor")).await;
    expect_unavailable("delete while down", store.delete("survivor")).await;
    expect_unavailable("list while down", store.list("", "", 10)).await;
    expect_unavailable("status while down", store.status()).await;
    // An unreachable token endpoint at start is an outage, not a refusal.
    expect_unavailable(
        "connect while down",
        GcpStore::connect_with(&gcp.config(), short_limits()),
    )
    .await;
    gcp.front.resume_serving().await.unwrap();
    store.status().await.unwrap();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
    store.create("after", b"v2").await.unwrap();
}
