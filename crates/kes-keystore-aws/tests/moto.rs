//! The AWS Secrets Manager keystore against moto's server: the keystore conformance suite with
//! and without a customer KMS key, compatibility with KES's storage layout in both directions,
//! and outages.
//!
//! Each test starts its own server (see `kes-testkit`); without `tests/services.sh install` they
//! print SKIPPED, unless `KES_REQUIRE_SERVICES=1`.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use kes_crypto::{KeyType, KeyVersion};
use kes_keystore::conformance::{self, Options};
use kes_keystore::{KeyStore, StoreError};
use kes_keystore_aws::{AwsStore, Limits, MAX_SECRET_LEN};
use kes_testkit::Moto;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn suite() -> Options {
    Options {
        // Values that are not UTF-8 go into SecretBinary.
        binary_values: true,
        large_value_len: MAX_SECRET_LEN,
        // The store describes the secret before deleting it, so it can tell.
        delete_missing_is_not_found: true,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let store: Arc<dyn KeyStore> = Arc::new(AwsStore::connect(&moto.config(None)).await.unwrap());
    conformance::run_all_with(store, suite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_with_kms_key() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let key = moto.create_kms_key().await.unwrap();
    let store: Arc<dyn KeyStore> =
        Arc::new(AwsStore::connect(&moto.config(Some(key))).await.unwrap());
    conformance::run_all_with(store, suite()).await;
}

/// Secrets KES created read back through the store, and secrets the store creates are what KES
/// reads: the encoded key as `SecretString`, encrypted with the configured KMS key.
#[tokio::test(flavor = "multi_thread")]
async fn kes_layout_compatibility() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let kms_key = moto.create_kms_key().await.unwrap();
    let store = AwsStore::connect(&moto.config(Some(kms_key.clone())))
        .await
        .unwrap();

    // Created as KES creates it.
    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    let encoded = kv.encode();
    moto.secrets(
        "CreateSecret",
        json!({"Name": "from-kes", "SecretString": String::from_utf8(encoded.clone()).unwrap()}),
    )
    .await
    .unwrap();
    let got = store.get("from-kes").await.unwrap();
    assert_eq!(got, encoded);
    assert_eq!(KeyVersion::parse(&got).unwrap(), kv);
    // KES also reads SecretBinary.
    let kv2 = KeyVersion::generate(KeyType::ChaCha20, "compat-test");
    moto.secrets(
        "CreateSecret",
        json!({"Name": "from-kes-binary", "SecretBinary": B64.encode(kv2.encode())}),
    )
    .await
    .unwrap();
    assert_eq!(
        KeyVersion::parse(&store.get("from-kes-binary").await.unwrap()).unwrap(),
        kv2
    );
    let page = store.list("from-kes", "", 10).await.unwrap();
    assert_eq!(page.names, ["from-kes", "from-kes-binary"]);

    // Created by the store, read as KES reads it.
    let kv = KeyVersion::generate(KeyType::Aes256, "compat-test");
    let encoded = kv.encode();
    store.create("to-kes", &encoded).await.unwrap();
    let raw = moto
        .secrets("GetSecretValue", json!({"SecretId": "to-kes"}))
        .await
        .unwrap();
    assert_eq!(
        raw["SecretString"].as_str().unwrap().as_bytes(),
        encoded.as_slice()
    );
    assert!(raw.get("SecretBinary").is_none_or(|b| b.is_null()));
    assert_eq!(
        KeyVersion::parse(raw["SecretString"].as_str().unwrap().as_bytes()).unwrap(),
        kv
    );
    let described = moto
        .secrets("DescribeSecret", json!({"SecretId": "to-kes"}))
        .await
        .unwrap();
    assert_eq!(described["KmsKeyId"].as_str(), Some(kms_key.as_str()));

    // Deleted for good, not scheduled for deletion.
    store.delete("to-kes").await.unwrap();
    let (code, body) = moto
        .call(
            "secretsmanager",
            "secretsmanager.DescribeSecret",
            json!({"SecretId": "to-kes"}),
        )
        .await
        .unwrap();
    assert_ne!(code, 200, "{body}");
    assert_eq!(body["__type"], "ResourceNotFoundException");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_must_be_complete() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let mut cfg = moto.config(None);
    cfg.secret_key = None;
    match AwsStore::connect(&cfg).await {
        Err(StoreError::Unavailable {
            retryable: false, ..
        }) => {}
        r => panic!("an access key without a secret key: {r:?}"),
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

/// A frozen or killed server makes operations fail as `Unavailable` without hanging; once it
/// is back, the same store works again. (moto keeps nothing across a restart.)
#[tokio::test(flavor = "multi_thread")]
async fn outage_and_recovery() {
    let Some(mut moto) = Moto::start().await else {
        return;
    };
    let limits = Limits {
        attempt_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        attempts: 2,
    };
    let store = AwsStore::connect_with(&moto.config(None), limits)
        .await
        .unwrap();
    store.create("survivor", b"value").await.unwrap();

    moto.proc().signal("STOP");
    expect_unavailable("get while frozen", store.get("survivor")).await;
    expect_unavailable("create while frozen", store.create("new", b"v")).await;
    expect_unavailable("status while frozen", store.status()).await;
    moto.proc().signal("CONT");
    assert_eq!(store.get("survivor").await.unwrap(), b"value");
    store.status().await.unwrap();

    moto.kill();
    expect_unavailable("get while down", store.get("survivor")).await;
    expect_unavailable("delete while down", store.delete("survivor")).await;
    expect_unavailable("list while down", store.list("", "", 10)).await;
    expect_unavailable("status while down", store.status()).await;

    moto.restart().await.unwrap();
    store.status().await.unwrap();
    store.create("after-restart", b"v2").await.unwrap();
    assert_eq!(store.get("after-restart").await.unwrap(), b"v2");
}
