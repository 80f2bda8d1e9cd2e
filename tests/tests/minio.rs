//! MinIO's own call sequence against a node with a filesystem keystore, across a restart, and
//! the multi-endpoint behaviour of the client MinIO uses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use serde_json::json;

const DEFAULT_KEY: &str = "minio-default-key";

fn minio_policy(id: &str) -> String {
    let routes = [
        "/v1/key/create/*",
        "/v1/key/generate/*",
        "/v1/key/decrypt/*",
        "/v1/key/describe/*",
        "/v1/key/list/*",
        "/v1/key/hmac/*",
        "/v1/status",
        "/v1/metrics",
        "/v1/api",
    ];
    let allow: String = routes.iter().map(|r| format!("\n    - {r}")).collect();
    format!("policy:\n  minio:\n    allow:{allow}\n    identities:\n    - {id}\n")
}

#[tokio::test]
async fn minio_startup_and_object_sequence_survives_restart() {
    let keys_dir = tempfile::tempdir().unwrap();
    let minio = kes_crypto::ApiKey::generate();
    let opts = || ServerOpts {
        extra_yaml: minio_policy(&minio.identity()),
        fs_dir: Some(keys_dir.path().to_owned()),
        ..Default::default()
    };
    let s = TestServer::start(opts()).await;
    let c = s.api_key_client(&minio);

    // 1. generate on the default key with context {} answers exactly 404 key does not exist.
    let gen_url = s.url(&format!("/v1/key/generate/{DEFAULT_KEY}"));
    send(
        &c,
        "POST",
        &gen_url,
        Some(br#"{"context":"e30="}"#.to_vec()),
    )
    .await
    .assert_error(404, "key does not exist");
    // 2. so MinIO creates it.
    let a = send(
        &c,
        "POST",
        &s.url(&format!("/v1/key/create/{DEFAULT_KEY}")),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    // 3. SSE-S3 writes and reads with a bucket/object context.
    let ctx = b64(br#"{"bucket":"bucket/object.txt"}"#);
    let g = send(
        &c,
        "POST",
        &gen_url,
        Some(json!({"context": ctx}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(g.status, 200);
    let g = g.json();
    let dec_url = s.url(&format!("/v1/key/decrypt/{DEFAULT_KEY}"));
    let body = json!({"ciphertext": g["ciphertext"], "context": ctx}).to_string();
    let d = send(&c, "POST", &dec_url, Some(body.clone().into_bytes())).await;
    assert_eq!(d.json()["plaintext"], g["plaintext"]);
    // mc admin kms key status: generate then decrypt with the admin-API context.
    let admin_ctx = b64(br#"{"MinIO admin API":"KMSKeyStatusHandler"}"#);
    let g2 = send(
        &c,
        "POST",
        &gen_url,
        Some(json!({"context": admin_ctx}).to_string().into_bytes()),
    )
    .await
    .json();
    let d2 = send(
        &c,
        "POST",
        &dec_url,
        Some(
            json!({"ciphertext": g2["ciphertext"], "context": admin_ctx})
                .to_string()
                .into_bytes(),
        ),
    )
    .await
    .json();
    assert_eq!(d2["plaintext"], g2["plaintext"]);
    // 4. describe every few seconds (three times here).
    for _ in 0..3 {
        let a = send(
            &c,
            "GET",
            &s.url(&format!("/v1/key/describe/{DEFAULT_KEY}")),
            None,
        )
        .await;
        assert_eq!(a.status, 200);
    }
    // mc admin kms key list goes through the empty prefix.
    let l = send(&c, "GET", &s.url("/v1/key/list"), None).await.json();
    assert_eq!(l["names"], json!([DEFAULT_KEY]));
    // 5. root credentials from two HMACs.
    let hmac_url = s.url(&format!("/v1/key/hmac/{DEFAULT_KEY}"));
    let mac = |m: &str| {
        json!({"message": b64(m.as_bytes())})
            .to_string()
            .into_bytes()
    };
    let access1 = send(&c, "PUT", &hmac_url, Some(mac("root access key")))
        .await
        .json();
    let secret1 = send(&c, "PUT", &hmac_url, Some(mac("root secret key")))
        .await
        .json();
    assert_ne!(access1, secret1);

    // Restart on the same keystore directory: the same HMACs, and old objects still decrypt.
    let (ca, admin, addr) = s.stop().await;
    let s = TestServer::start_with(opts(), ca, admin, Some(addr)).await;
    let c = s.api_key_client(&minio);
    let access2 = send(&c, "PUT", &hmac_url, Some(mac("root access key")))
        .await
        .json();
    let secret2 = send(&c, "PUT", &hmac_url, Some(mac("root secret key")))
        .await
        .json();
    assert_eq!(access1, access2);
    assert_eq!(secret1, secret2);
    let d = send(&c, "POST", &dec_url, Some(body.into_bytes())).await;
    assert_eq!(d.json()["plaintext"], g["plaintext"]);
    // Creating the default key again is the tolerated 400.
    send(
        &c,
        "POST",
        &s.url(&format!("/v1/key/create/{DEFAULT_KEY}")),
        None,
    )
    .await
    .assert_error(400, "key already exists");
    // The file is in KES's layout: one file named after the key, mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(keys_dir.path().join(DEFAULT_KEY)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn client_fails_over_when_a_node_is_down() {
    let keys_dir = tempfile::tempdir().unwrap();
    let opts = || ServerOpts {
        fs_dir: Some(keys_dir.path().to_owned()),
        ..Default::default()
    };
    let a = TestServer::start(opts()).await;
    let b = TestServer::start_with(
        opts(),
        a.ca.clone(),
        kes_crypto::ApiKey::parse(&a.admin.to_text()).unwrap(),
        None,
    )
    .await;
    let client = kes_client::Client::builder(vec![a.url(""), b.url("")])
        .api_key(&a.admin)
        .ca_pem(a.ca.ca_pem())
        .build()
        .unwrap();
    client.create_key("shared").await.unwrap();
    let g = client.generate_key("shared", b"ctx").await.unwrap();
    // Take node a down; every request still succeeds through b.
    let (_ca, _admin, _addr) = a.stop().await;
    for _ in 0..20 {
        let p = client
            .decrypt("shared", &g.ciphertext.0, b"ctx")
            .await
            .unwrap();
        assert_eq!(p, g.plaintext.0);
    }
    // 4xx answers are final, not failed over.
    let e = client.describe_key("missing").await.unwrap_err();
    assert!(e.is_key_not_found(), "{e:?}");
}
