//! The Azure Key Vault keystore against the fake vault of `kes_testkit::azure` (no emulator
//! exists): the conformance suite, KES's layout both ways, soft delete and purge, disabled and
//! expired versions, racing creators, authentication (client secret, managed identity,
//! refused credentials, renewal, revocation), rate limiting and outages.
#![cfg(feature = "azure")]
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_config::AzureAuth;
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError};
use kes_keystore_cloud::azure::{AzureOptions, AzureStore, MAX_SECRET_LEN};
use kes_keystore_cloud::Limits;
use kes_testkit::azure::IDENTITY_CLIENT_ID;
use kes_testkit::AzureFake;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn options(fake: &AzureFake, limits: Limits) -> AzureOptions {
    let (authority_host, imds_endpoint) = fake.options();
    AzureOptions {
        limits,
        authority_host,
        imds_endpoint,
    }
}

fn short_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        attempts: 2,
        max_retry_after: Duration::from_secs(2),
    }
}

async fn store(fake: &AzureFake) -> AzureStore {
    AzureStore::connect_with(&fake.config(), options(fake, Limits::default()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    let fake = AzureFake::start().await.unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(store(&fake).await);
    conformance::run_all_with(
        store,
        Options {
            // Key Vault stores text.
            binary_values: false,
            large_value_len: MAX_SECRET_LEN,
            delete_missing_is_not_found: true,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kes_layout_compatibility() {
    let fake = AzureFake::start().await.unwrap();
    let store = store(&fake).await;
    // Written as KES writes it: SetSecret with the encoded key as the value.
    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    fake.put("from-kes", std::str::from_utf8(&kv.encode()).unwrap());
    assert_eq!(
        KeyVersion::parse(&store.get("from-kes").await.unwrap()).unwrap(),
        kv
    );
    // KES reads the first version: a later version written by hand does not replace the key.
    // (Key Vault's creation times are whole seconds; versions of one second are ordered by id.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.put("from-kes", "something else");
    assert_eq!(
        KeyVersion::parse(&store.get("from-kes").await.unwrap()).unwrap(),
        kv
    );
    let legacy = r#"{"bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#;
    fake.put("legacy", legacy);
    assert_eq!(store.get("legacy").await.unwrap(), legacy.as_bytes());

    let kv = KeyVersion::generate(KeyType::ChaCha20, "compat-test");
    store.create("to-kes", &kv.encode()).await.unwrap();
    let versions = fake.versions("to-kes");
    assert_eq!(versions.len(), 1);
    assert_eq!(KeyVersion::parse(versions[0].value.as_bytes()).unwrap(), kv);
    assert_eq!(
        store.list("", "", 10).await.unwrap().names,
        ["from-kes", "legacy", "to-kes"]
    );
    // Deleted and purged: nothing left, not even a soft-deleted secret.
    store.delete("to-kes").await.unwrap();
    assert!(fake.versions("to-kes").is_empty());
    assert!(!fake.is_deleted("to-kes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_delete_disabled_and_races() {
    let fake = AzureFake::start().await.unwrap();
    fake.set_purge_delay(Duration::from_millis(300));
    let store = store(&fake).await;
    // A soft-deleted name: a create purges it and writes.
    store.create("k", b"one").await.unwrap();
    // A vault with purge protection: the delete succeeds and leaves the secret soft-deleted.
    fake.set_purge_protection(true);
    store.delete("k").await.unwrap();
    assert!(fake.is_deleted("k"));
    // With purge protection the name stays taken, with a clear message.
    match store.create("k", b"two").await {
        Err(StoreError::Unavailable {
            retryable: false,
            message,
        }) => {
            assert!(message.contains("purge"), "{message}")
        }
        r => panic!("create over a protected deleted secret: {r:?}"),
    }
    fake.set_purge_protection(false);
    let start = Instant::now();
    store.create("k", b"two").await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(store.get("k").await.unwrap(), b"two");

    // Disabled or expired first version: the key is gone for the store; the name is taken.
    let v = fake.versions("k")[0].id.clone();
    fake.set_attributes("k", &v, false, None);
    assert!(matches!(store.get("k").await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.create("k", b"x").await,
        Err(StoreError::AlreadyExists)
    ));
    fake.set_attributes("k", &v, true, Some(1));
    assert!(matches!(store.get("k").await, Err(StoreError::NotFound)));
    fake.set_attributes("k", &v, true, None);
    assert_eq!(store.get("k").await.unwrap(), b"two");

    // Another server's version written first wins; this store's create reports the conflict.
    fake.put("raced", "theirs");
    let raced = store.create("raced", b"ours").await;
    assert!(matches!(raced, Err(StoreError::AlreadyExists)), "{raced:?}");
    assert_eq!(store.get("raced").await.unwrap(), b"theirs");
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication() {
    let fake = AzureFake::start().await.unwrap();
    let opts = || options(&fake, Limits::default());
    let mut cfg = fake.config();
    cfg.auth = AzureAuth::ClientSecret {
        tenant_id: kes_testkit::azure::TENANT.into(),
        client_id: kes_testkit::azure::CLIENT_ID.into(),
        client_secret: "wrong".into(),
    };
    match AzureStore::connect_with(&cfg, opts()).await {
        Err(StoreError::Denied(m)) => assert!(m.contains("AADSTS7000215"), "{m}"),
        r => panic!("a wrong secret: {r:?}"),
    }
    cfg.auth = AzureAuth::ClientSecret {
        tenant_id: "other-tenant".into(),
        client_id: kes_testkit::azure::CLIENT_ID.into(),
        client_secret: "x".into(),
    };
    assert!(matches!(
        AzureStore::connect_with(&cfg, opts()).await,
        Err(StoreError::Denied(_))
    ));
    // Managed identity, system- and user-assigned, and an unknown one.
    for id in [None, Some(IDENTITY_CLIENT_ID.to_owned())] {
        cfg.auth = AzureAuth::ManagedIdentity { client_id: id };
        let s = AzureStore::connect_with(&cfg, opts()).await.unwrap();
        s.status().await.unwrap();
    }
    cfg.auth = AzureAuth::ManagedIdentity {
        client_id: Some("unknown".into()),
    };
    assert!(matches!(
        AzureStore::connect_with(&cfg, opts()).await,
        Err(StoreError::Denied(_))
    ));

    // Renewal at half the lifetime, and a new token after revocation.
    fake.set_token_lifetime(Duration::from_secs(10));
    let store = store(&fake).await;
    let before = fake.tokens_issued();
    store.create("k", b"v").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.tokens_issued(), before + 1);
    fake.revoke_tokens();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.tokens_issued(), before + 2);
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
    let fake = AzureFake::start().await.unwrap();
    let store = AzureStore::connect_with(&fake.config(), options(&fake, short_limits()))
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
        AzureStore::connect_with(&fake.config(), options(&fake, short_limits())),
    )
    .await;
    fake.server.resume_serving().await.unwrap();
    store.status().await.unwrap();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
    assert!(!fake.versions("survivor").is_empty());
}
