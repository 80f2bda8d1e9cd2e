//! The CipherTrust Manager / KeySecure keystore against the fake manager of
//! `kes_testkit::keysecure` (HTTPS with a test CA; no emulator exists): the conformance suite,
//! KES's layout both ways, deactivated secrets, paging, refresh-token logins (refused token,
//! renewal at half the JWT's life, revocation), the CA option, rate limiting and outages.
#![cfg(feature = "keysecure")]
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError};
use kes_keystore_cloud::keysecure::KeySecureStore;
use kes_keystore_cloud::Limits;
use kes_testkit::KeySecureFake;
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
    let fake = KeySecureFake::start().await.unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(KeySecureStore::connect(&fake.config()).await.unwrap());
    conformance::run_all_with(
        store,
        Options {
            // Secrets hold text material.
            binary_values: false,
            ..Options::strict()
        },
    )
    .await;
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kes_layout_and_paging() {
    let fake = KeySecureFake::start().await.unwrap();
    let store = KeySecureStore::connect(&fake.config()).await.unwrap();
    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    fake.insert("from-kes", std::str::from_utf8(&kv.encode()).unwrap());
    assert_eq!(
        KeyVersion::parse(&store.get("from-kes").await.unwrap()).unwrap(),
        kv
    );

    let kv = KeyVersion::generate(KeyType::ChaCha20, "compat-test");
    store.create("to-kes", &kv.encode()).await.unwrap();
    let s = fake.secret("to-kes").unwrap();
    assert_eq!(s.data_type, "seed");
    assert_eq!(KeyVersion::parse(s.material.as_bytes()).unwrap(), kv);

    for i in 0..150 {
        fake.insert(&format!("many-{i:03}"), "x");
    }
    assert_eq!(store.list("", "", 1024).await.unwrap().names.len(), 152);
    let page = store.list("many-", "many-149", 10).await.unwrap();
    assert_eq!(page.names, ["many-149"]);

    fake.set_state("to-kes", "Deactivated");
    assert!(matches!(
        store.get("to-kes").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.create("to-kes", b"v").await,
        Err(StoreError::AlreadyExists)
    ));
    store.delete("to-kes").await.unwrap();
    assert!(fake.secret("to-kes").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_and_tls() {
    let fake = KeySecureFake::start().await.unwrap();
    let mut cfg = fake.config();
    cfg.token = "not-the-token".into();
    match KeySecureStore::connect(&cfg).await {
        Err(StoreError::Denied(m)) => assert!(m.contains("Invalid refresh token"), "{m}"),
        r => panic!("a wrong token: {r:?}"),
    }
    let mut cfg = fake.config();
    cfg.domain = Some("other".into());
    assert!(matches!(
        KeySecureStore::connect(&cfg).await,
        Err(StoreError::Denied(_))
    ));
    let mut cfg = fake.config();
    cfg.ca = None;
    match KeySecureStore::connect_with(&cfg, short_limits()).await {
        Err(StoreError::Unavailable { message, .. }) => {
            assert!(message.contains("certificate"), "{message}")
        }
        r => panic!("an untrusted certificate: {r:?}"),
    }

    fake.set_token_lifetime(Duration::from_secs(10));
    let store = KeySecureStore::connect(&fake.config()).await.unwrap();
    store.create("k", b"v").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.tokens_issued(), 2, "renewed at half its life");
    fake.revoke_tokens();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.tokens_issued(), 3, "a new JWT after a 401");
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
    let fake = KeySecureFake::start().await.unwrap();
    let store = KeySecureStore::connect_with(&fake.config(), short_limits())
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
        KeySecureStore::connect_with(&fake.config(), short_limits()),
    )
    .await;
    fake.server.resume_serving().await.unwrap();
    store.status().await.unwrap();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
}
