//! The Bitwarden Secrets Manager keystore against the fake of `kes_testkit::bitwarden` (no
//! emulator exists; its crypto is an independent implementation): the conformance suite,
//! client-side encryption of names and values, the name index (projects, foreign secrets,
//! duplicates from racing writers, stale cache entries), logins (malformed and refused
//! tokens, renewal, revocation), rate limiting and outages.
#![cfg(feature = "bitwarden")]
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError};
use kes_keystore_cloud::bitwarden::BitwardenStore;
use kes_keystore_cloud::Limits;
use kes_testkit::bitwarden::{OTHER_PROJECT_ID, PROJECT_ID};
use kes_testkit::BitwardenFake;
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
    let fake = BitwardenFake::start().await.unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(BitwardenStore::connect(&fake.config()).await.unwrap());
    conformance::run_all_with(
        store,
        Options {
            binary_values: false,
            // 25,000 characters once encrypted and base64-encoded.
            large_value_len: 16 * 1024,
            ..Options::strict()
        },
    )
    .await;
    assert_eq!(fake.logins(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn encryption_and_the_name_index() {
    let fake = BitwardenFake::start().await.unwrap();
    let store = BitwardenStore::connect(&fake.config()).await.unwrap();
    let kv = KeyVersion::generate(KeyType::Aes256, "bitwarden-test");
    let encoded = kv.encode();
    store.create("my-key", &encoded).await.unwrap();
    // Bitwarden stores neither the name nor the value in the clear.
    let secrets = fake.secrets();
    assert_eq!(secrets.len(), 1);
    let (id, name, value) = &secrets[0];
    assert_eq!(
        (name.as_str(), value.as_bytes()),
        ("my-key", encoded.as_slice())
    );
    let (raw_name, raw_value) = fake.raw(id).unwrap();
    assert!(raw_name.starts_with("2.") && !raw_name.contains("my-key"));
    assert!(
        raw_value.starts_with("2.") && !raw_value.contains(std::str::from_utf8(&encoded).unwrap())
    );
    assert_eq!(
        KeyVersion::parse(&store.get("my-key").await.unwrap()).unwrap(),
        kv
    );

    // Written by another client of the organisation: found by name.
    fake.insert("from-bws", "value-1", PROJECT_ID);
    assert_eq!(store.get("from-bws").await.unwrap(), b"value-1");
    // Other projects and secrets not under the organisation's key are not keys.
    fake.insert("elsewhere", "x", OTHER_PROJECT_ID);
    fake.insert_foreign(PROJECT_ID);
    assert_eq!(
        store.list("", "", 100).await.unwrap().names,
        ["from-bws", "my-key"]
    );
    assert!(matches!(
        store.get("elsewhere").await,
        Err(StoreError::NotFound)
    ));

    // A duplicate written later by an outside writer is never read; the oldest wins.
    fake.insert("from-bws", "value-2", PROJECT_ID);
    assert_eq!(store.get("from-bws").await.unwrap(), b"value-1");
    assert!(matches!(
        store.create("from-bws", b"v").await,
        Err(StoreError::AlreadyExists)
    ));
    // Delete removes every secret of the name.
    store.delete("from-bws").await.unwrap();
    assert!(fake.secrets().iter().all(|(_, n, _)| n != "from-bws"));
    assert!(matches!(
        store.get("from-bws").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete("from-bws").await,
        Err(StoreError::NotFound)
    ));

    // A cached id whose secret was deleted and re-created outside: found again by name.
    store.get("my-key").await.unwrap();
    let id = fake
        .secrets()
        .into_iter()
        .find(|(_, n, _)| n == "my-key")
        .unwrap()
        .0;
    let other = BitwardenStore::connect(&fake.config()).await.unwrap();
    other.delete("my-key").await.unwrap();
    other.create("my-key", b"new").await.unwrap();
    assert_ne!(fake.secrets()[0].0, id);
    assert_eq!(store.get("my-key").await.unwrap(), b"new");
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_stores_make_one_winner() {
    let fake = BitwardenFake::start().await.unwrap();
    // Separate stores (as separate servers would be) race without the in-process lock.
    let cfg = fake.config();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(BitwardenStore::connect(&cfg).await.unwrap()));
    }
    for round in 0..5 {
        let name = format!("raced-{round}");
        let mut tasks = tokio::task::JoinSet::new();
        for (i, s) in stores.iter().enumerate() {
            let (s, name) = (Arc::clone(s), name.clone());
            tasks.spawn(async move { (i, s.create(&name, format!("v{i}").as_bytes()).await) });
        }
        let mut winners = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                (i, Ok(())) => winners.push(i),
                (_, Err(StoreError::AlreadyExists)) => {}
                (_, Err(e)) => panic!("racing create: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let want = format!("v{}", winners[0]);
        for s in &stores {
            assert_eq!(s.get(&name).await.unwrap(), want.as_bytes());
        }
        assert_eq!(
            fake.secrets().iter().filter(|(_, n, _)| *n == name).count(),
            1,
            "the losers deleted their duplicates"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logins() {
    let fake = BitwardenFake::start().await.unwrap();
    let mut cfg = fake.config();
    cfg.access_token = "not a token".into();
    assert!(matches!(
        BitwardenStore::connect(&cfg).await,
        Err(StoreError::Unavailable {
            retryable: false,
            ..
        })
    ));
    // The right id and key with a wrong secret: refused.
    let token = fake.access_token();
    let (head, key) = token.split_once(':').unwrap();
    let id = head.split('.').nth(1).unwrap();
    cfg.access_token = format!("0.{id}.wrong:{key}");
    match BitwardenStore::connect(&cfg).await {
        Err(StoreError::Denied(m)) => assert!(m.contains("invalid_client"), "{m}"),
        r => panic!("a wrong secret: {r:?}"),
    }
    // The right secret with another key: the payload does not open.
    let (head, _) = token.split_once(':').unwrap();
    cfg.access_token = format!("{head}:AAAAAAAAAAAAAAAAAAAAAA==");
    match BitwardenStore::connect(&cfg).await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("MAC"), "{m}"),
        r => panic!("a wrong key: {r:?}"),
    }

    fake.set_token_lifetime(Duration::from_secs(10));
    let store = BitwardenStore::connect(&fake.config()).await.unwrap();
    let before = fake.logins();
    store.create("k", b"v").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.logins(), before + 1, "renewed at half its life");
    fake.revoke_tokens();
    assert_eq!(store.get("k").await.unwrap(), b"v");
    assert_eq!(fake.logins(), before + 2, "a new login after a 401");
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
    let fake = BitwardenFake::start().await.unwrap();
    let store = BitwardenStore::connect_with(&fake.config(), short_limits())
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
        BitwardenStore::connect_with(&fake.config(), short_limits()),
    )
    .await;
    fake.server.resume_serving().await.unwrap();
    store.status().await.unwrap();
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
}
