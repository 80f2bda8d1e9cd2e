//! The Fortanix DSM keystore against the fake DSM of `kes_testkit::fortanix` (HTTPS with a
//! test CA; no emulator exists): the conformance suite, KES's layout both ways, groups,
//! disabled objects, paging past one page, sessions (refused key, renewal, revocation), the
//! CA option, rate limiting and outages.
#![cfg(feature = "fortanix")]
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError};
use kes_keystore_cloud::fortanix::FortanixStore;
use kes_keystore_cloud::Limits;
use kes_testkit::fortanix::{GROUP_ID, OTHER_GROUP_ID};
use kes_testkit::FortanixFake;
use std::sync::Arc;
use std::time::Duration;

fn short_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        attempts: 2,
        max_retry_after: Duration::from_secs(2),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    let fake = FortanixFake::start().await.unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(FortanixStore::connect(&fake.config()).await.unwrap());
    conformance::run_all_with(store, Options::strict()).await;
    assert_eq!(fake.sessions_opened(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kes_layout_groups_and_paging() {
    let fake = FortanixFake::start().await.unwrap();
    let store = FortanixStore::connect(&fake.config()).await.unwrap();
    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    fake.insert("from-kes", &kv.encode(), GROUP_ID);
    assert_eq!(
        KeyVersion::parse(&store.get("from-kes").await.unwrap()).unwrap(),
        kv
    );

    let kv = KeyVersion::generate(KeyType::ChaCha20, "compat-test");
    store.create("to-kes", &kv.encode()).await.unwrap();
    let o = fake.object("to-kes").unwrap();
    assert_eq!(o.obj_type, "OPAQUE");
    assert_eq!(o.key_ops, ["EXPORT", "APPMANAGEABLE"]);
    assert_eq!(o.group_id, GROUP_ID);
    assert!(o.enabled);
    assert_eq!(KeyVersion::parse(&o.value).unwrap(), kv);

    // Objects of another group are not this store's keys.
    fake.insert("elsewhere", b"x", OTHER_GROUP_ID);
    // More objects than one page of the listing (KES looped forever here).
    for i in 0..230 {
        fake.insert(&format!("many-{i:03}"), b"x", GROUP_ID);
    }
    let mut all = Vec::new();
    let mut continue_at = String::new();
    loop {
        let page = store.list("", &continue_at, 1024).await.unwrap();
        all.extend(page.names);
        if page.continue_at.is_empty() {
            break;
        }
        continue_at = page.continue_at;
    }
    assert_eq!(all.len(), 232, "{all:?}");
    assert!(!all.iter().any(|n| n == "elsewhere"));
    assert_eq!(store.list("many-1", "", 5).await.unwrap().names.len(), 5);

    // A disabled object is a revoked key.
    fake.set_enabled("to-kes", false);
    assert!(matches!(
        store.get("to-kes").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.create("to-kes", b"v").await,
        Err(StoreError::AlreadyExists)
    ));
    store.delete("to-kes").await.unwrap();
    assert!(fake.object("to-kes").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_tls() {
    let fake = FortanixFake::start().await.unwrap();
    let mut cfg = fake.config();
    cfg.api_key = "d3Jvbmc6a2V5".into();
    match FortanixStore::connect(&cfg).await {
        Err(StoreError::Denied(m)) => assert!(m.contains("Invalid API key"), "{m}"),
        r => panic!("a wrong key: {r:?}"),
    }
    // Without the CA the server's certificate is not trusted: unreachable, not refused.
    let mut cfg = fake.config();
    cfg.ca = None;
    match FortanixStore::connect_with(&cfg, short_limits()).await {
        Err(StoreError::Unavailable { message, .. }) => {
            assert!(message.contains("certificate"), "{message}")
        }
        r => panic!("an untrusted certificate: {r:?}"),
    }
    let mut cfg = fake.config();
    cfg.ca = Some("/nonexistent/ca.pem".into());
    assert!(matches!(
        FortanixStore::connect(&cfg).await,
        Err(StoreError::Unavailable {
            retryable: false,
            ..
        })
    ));

    fake.set_session_lifetime(Duration::from_secs(10));
    let store = FortanixStore::connect(&fake.config()).await.unwrap();
    store.create("k", b"v").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.sessions_opened(), 2, "renewed past half its life");
    fake.revoke_sessions();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.sessions_opened(), 3, "a new session after a 401");
}

async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(Err(StoreError::Unavailable { .. })) => {}
        Ok(r) => panic!("{what}: expected Unavailable, got {r:?}"),
        Err(_) => panic!("{what}: no answer within 30 s"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_outages() {
    let fake = FortanixFake::start().await.unwrap();
    let store = FortanixStore::connect_with(&fake.config(), short_limits())
        .await
        .unwrap();
    store.create("survivor", b"value").await.unwrap();
    fake.server.throttle(1, 1);
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
    fake.server.throttle(10, 1);
    expect_unavailable("throttled", store.get("survivor")).await;
    fake.server.throttle(0, 0);

    fake.server.pause();
    expect_unavailable("get while hung", store.get("survivor")).await;
    expect_unavailable("create while hung", store.create("new", b"v")).await;
    fake.server.resume();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");

    fake.server.stop().await;
    expect_unavailable("get while down", store.get("survivor")).await;
    expect_unavailable("delete while down", store.delete("survivor")).await;
    expect_unavailable("list while down", store.list("", "", 10)).await;
    expect_unavailable("status while down", store.status()).await;
    expect_unavailable(
        "connect while down",
        FortanixStore::connect_with(&fake.config(), short_limits()),
    )
    .await;
    fake.server.resume_serving().await.unwrap();
    store.status().await.unwrap();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
}
