//! A directory in KES's filesystem layout, written without this project's encoder, is served as
//! is, and ciphertexts in every layout produced by an independent implementation (the Python
//! script in `crates/kes-crypto/testdata`) decrypt through the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use serde_json::{json, Value};

const VECTORS: &str = include_str!("../../crates/kes-crypto/testdata/vectors.json");

fn legacy_algorithm(kind: &str) -> &'static str {
    match kind {
        "AES256" => "AES256-GCM_SHA256",
        "ChaCha20" => "XCHACHA20-POLY1305",
        other => panic!("unknown kind {other}"),
    }
}

#[tokio::test]
async fn kes_directory_and_independent_ciphertexts() {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Ciphertext keys, as legacy JSON key files written by hand (KES reads them; so do we).
    let cts = v["ciphertexts"].as_array().unwrap();
    for (i, c) in cts.iter().enumerate() {
        let key = hex::decode(c["key"].as_str().unwrap()).unwrap();
        let file =
            json!({"bytes": b64(&key), "algorithm": legacy_algorithm(c["kind"].as_str().unwrap())});
        write(&dir.path().join(format!("ct-{i:03}")), file.to_string());
    }
    // Stored KeyVersions exactly as the independent encoder wrote them.
    let kvs = v["key_versions"].as_array().unwrap();
    for (i, k) in kvs.iter().enumerate() {
        write(
            &dir.path().join(format!("kv-{i:03}")),
            k["stored"].as_str().unwrap(),
        );
    }

    let s = TestServer::start(ServerOpts {
        fs_dir: Some(dir.path().to_owned()),
        ..Default::default()
    })
    .await;
    let c = s.admin_client();

    let mut decrypted = 0;
    for (i, case) in cts.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let ct = hex::decode(case["ciphertext"].as_str().unwrap()).unwrap();
        let ad = hex::decode(case["associated_data"].as_str().unwrap()).unwrap();
        let body = json!({"ciphertext": b64(&ct), "context": b64(&ad)}).to_string();
        let a = send(
            &c,
            "PUT",
            &s.url(&format!("/v1/key/decrypt/ct-{i:03}")),
            Some(body.into_bytes()),
        )
        .await;
        if name.starts_with("fail_") {
            a.assert_error(400, "decryption failed: ciphertext is not authentic");
        } else {
            assert_eq!(a.status, 200, "{name}: {}", a.text());
            let want = hex::decode(case["plaintext"].as_str().unwrap()).unwrap();
            assert_eq!(unb64(&a.json()["plaintext"]), want, "{name}");
            decrypted += 1;
        }
    }
    assert!(decrypted >= 30, "too few positive cases: {decrypted}");
    // Legacy JSON keys carry no HMAC key.
    send(
        &c,
        "PUT",
        &s.url("/v1/key/hmac/ct-000"),
        Some(br#"{"message":"AA=="}"#.to_vec()),
    )
    .await
    .assert_error(409, "key does not support HMAC");

    for (i, k) in kvs.iter().enumerate() {
        let name = k["name"].as_str().unwrap();
        let a = send(
            &c,
            "GET",
            &s.url(&format!("/v1/key/describe/kv-{i:03}")),
            None,
        )
        .await;
        if !k["ok"].as_bool().unwrap() {
            a.assert_error(502, "failed to read key");
            continue;
        }
        assert_eq!(a.status, 200, "{name}: {}", a.text());
        let d = a.json();
        if let Some(kind) = k.get("kind") {
            assert_eq!(&d["algorithm"], kind, "{name}");
            assert_eq!(
                d.get("created_by").cloned().unwrap_or(json!("")),
                k["created_by"],
                "{name}"
            );
            let want = match k["created_at"].as_str() {
                Some(t) => kes_types::GoTime::parse(t).unwrap(),
                None => kes_types::GoTime::zero(),
            };
            let got = kes_types::GoTime::parse(d["created_at"].as_str().unwrap()).unwrap();
            assert_eq!(got, want, "{name}");
            // Protobuf keys have an HMAC key: HMAC works and matches an HMAC computed here.
            if k["hmac_key"].is_string() {
                let h = send(
                    &c,
                    "PUT",
                    &s.url(&format!("/v1/key/hmac/kv-{i:03}")),
                    Some(br#"{"message":"aGk="}"#.to_vec()),
                )
                .await;
                assert_eq!(h.status, 200, "{name}");
                let hk: [u8; 32] = hex::decode(k["hmac_key"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap();
                let want = kes_crypto::HmacKey::new(hk).mac(b"hi");
                assert_eq!(unb64(&h.json()["hmac"]), want.to_vec(), "{name}");
            }
        }
    }

    // Listing sees every file, sorted.
    let l = send(&c, "GET", &s.url("/v1/key/list/kv-00*"), None)
        .await
        .json();
    let names: Vec<String> = serde_json::from_value(l["names"].clone()).unwrap();
    assert_eq!(
        names,
        (0..10).map(|i| format!("kv-{i:03}")).collect::<Vec<_>>()
    );

    // A key created by the server lands in the same layout, readable by the same decoder.
    assert_eq!(
        send(&c, "PUT", &s.url("/v1/key/create/new-key"), None)
            .await
            .status,
        200
    );
    let stored = std::fs::read(dir.path().join("new-key")).unwrap();
    let kv = kes_crypto::KeyVersion::parse(&stored).unwrap();
    assert!(kv.hmac_key.is_some());
    assert!(
        stored.iter().all(|b| b.is_ascii_graphic()),
        "base64 text without newline"
    );
}
