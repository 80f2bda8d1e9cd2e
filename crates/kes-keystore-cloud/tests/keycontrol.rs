//! The Entrust KeyControl keystore against the fake vault of `kes_testkit::keycontrol` (HTTPS
//! with a test CA; no emulator exists): the conformance suite, KES's layout both ways, empty
//! names left out of listings, paging, logins (refused password, unknown vault, renewal,
//! revocation), the CA option, rate limiting and outages.
#![cfg(feature = "entrust")]
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError};
use kes_keystore_cloud::keycontrol::KeyControlStore;
use kes_keystore_cloud::Limits;
use kes_testkit::KeyControlFake;
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
    let fake = KeyControlFake::start().await.unwrap();
    let store: Arc<dyn KeyStore> =
        Arc::new(KeyControlStore::connect(&fake.config()).await.unwrap());
    conformance::run_all_with(store, Options::strict()).await;
    assert_eq!(fake.logins(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kes_layout_and_listing() {
    let fake = KeyControlFake::start().await.unwrap();
    let store = KeyControlStore::connect(&fake.config()).await.unwrap();
    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    fake.insert("from-kes", &kv.encode());
    assert_eq!(
        KeyVersion::parse(&store.get("from-kes").await.unwrap()).unwrap(),
        kv
    );
    let kv = KeyVersion::generate(KeyType::ChaCha20, "compat-test");
    store.create("to-kes", &kv.encode()).await.unwrap();
    assert_eq!(
        KeyVersion::parse(&fake.secret("to-kes").unwrap()).unwrap(),
        kv
    );

    // An entry with an empty name (KES listed those) is not a key.
    fake.insert("", b"x");
    for i in 0..120 {
        fake.insert(&format!("many-{i:03}"), b"x");
    }
    let names = store.list("", "", 1024).await.unwrap().names;
    assert_eq!(names.len(), 122);
    assert!(!names.iter().any(String::is_empty));
    store.delete("to-kes").await.unwrap();
    assert!(fake.secret("to-kes").is_none());
    assert!(matches!(
        store.get("to-kes").await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_and_tls() {
    let fake = KeyControlFake::start().await.unwrap();
    let mut cfg = fake.config();
    cfg.password = "wrong".into();
    match KeyControlStore::connect(&cfg).await {
        Err(StoreError::Denied(m)) => assert!(m.contains("invalid username or password"), "{m}"),
        r => panic!("a wrong password: {r:?}"),
    }
    let mut cfg = fake.config();
    cfg.vault_id = "other".into();
    assert!(matches!(
        KeyControlStore::connect(&cfg).await,
        Err(StoreError::Denied(_))
    ));
    let mut cfg = fake.config();
    cfg.ca = None;
    match KeyControlStore::connect_with(&cfg, short_limits()).await {
        Err(StoreError::Unavailable { message, .. }) => {
            assert!(message.contains("certificate"), "{message}")
        }
        r => panic!("an untrusted certificate: {r:?}"),
    }

    fake.set_token_lifetime(Duration::from_secs(10));
    let store = KeyControlStore::connect(&fake.config()).await.unwrap();
    store.create("k", b"v").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.logins(), 2, "renewed at half its life");
    fake.revoke_tokens();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.logins(), 3, "a new login after a 401");
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
    let fake = KeyControlFake::start().await.unwrap();
    let store = KeyControlStore::connect_with(&fake.config(), short_limits())
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
        KeyControlStore::connect_with(&fake.config(), short_limits()),
    )
    .await;
    fake.server.resume_serving().await.unwrap();
    store.status().await.unwrap();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
}
