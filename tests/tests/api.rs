//! Every route of the KES API over real TLS, with KES's exact statuses, messages and shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use serde_json::json;

async fn server() -> TestServer {
    TestServer::start(ServerOpts::default()).await
}

#[tokio::test]
async fn version_needs_no_identity() {
    let s = server().await;
    let anon = s.client(None, Proto::Any);
    // Without any client certificate and no skip_auth route, the handshake itself fails.
    assert!(anon.get(s.url("/version")).send().await.is_err());
    let a = send(&s.admin_client(), "GET", &s.url("/version"), None).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert!(v["version"].is_string() && v["commit"].is_string());
    assert!(
        a.body.ends_with(b"\n"),
        "json.Encoder ends lines with a newline"
    );
}

#[tokio::test]
async fn key_lifecycle_and_canonical_errors() {
    let s = server().await;
    let c = s.admin_client();
    let u = |p: &str| s.url(p);

    // Missing key: exact 404 for every key route.
    for (m, p) in [
        ("PUT", "/v1/key/generate/k1"),
        ("PUT", "/v1/key/encrypt/k1"),
        ("PUT", "/v1/key/decrypt/k1"),
        ("PUT", "/v1/key/hmac/k1"),
        ("GET", "/v1/key/describe/k1"),
        ("DELETE", "/v1/key/delete/k1"),
    ] {
        let body = (m == "PUT")
            .then(|| br#"{"plaintext":"AA==","ciphertext":"AA==","message":"AA=="}"#.to_vec());
        send(&c, m, &u(p), body)
            .await
            .assert_error(404, "key does not exist");
    }

    // Create with an empty body: 200, no body, Content-Length 0, no content type.
    let a = send(&c, "POST", &u("/v1/key/create/k1"), None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_length.as_deref(), Some("0"));
    assert!(a.content_type.is_none());
    assert!(a.body.is_empty());
    send(&c, "PUT", &u("/v1/key/create/k1"), None)
        .await
        .assert_error(400, "key already exists");

    // Describe.
    let d = send(&c, "GET", &u("/v1/key/describe/k1"), None).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.content_type.as_deref(), Some("application/json"));
    let d = d.json();
    assert_eq!(d["name"], "k1");
    assert!(d["algorithm"] == "AES256" || d["algorithm"] == "ChaCha20");
    assert_eq!(d["created_by"], s.admin.identity());
    assert!(kes_types::GoTime::parse(d["created_at"].as_str().unwrap()).is_some());

    // Generate with MinIO's context, then decrypt; any other context fails.
    let g = send(
        &c,
        "POST",
        &u("/v1/key/generate/k1"),
        Some(br#"{"context":"e30="}"#.to_vec()),
    )
    .await;
    assert_eq!(g.status, 200);
    let g = g.json();
    let pt = unb64(&g["plaintext"]);
    let ct = unb64(&g["ciphertext"]);
    assert_eq!(pt.len(), 32);
    assert_eq!(ct.len(), 32 + 44);
    let body = json!({"ciphertext": b64(&ct), "context": "e30="}).to_string();
    let dec = send(&c, "PUT", &u("/v1/key/decrypt/k1"), Some(body.into_bytes())).await;
    assert_eq!(dec.status, 200);
    assert_eq!(unb64(&dec.json()["plaintext"]), pt);
    let wrong = json!({"ciphertext": b64(&ct), "context": b64(b"{\"a\":\"b\"}")}).to_string();
    send(
        &c,
        "PUT",
        &u("/v1/key/decrypt/k1"),
        Some(wrong.into_bytes()),
    )
    .await
    .assert_error(400, "decryption failed: ciphertext is not authentic");
    for short in [vec![], vec![1u8; 28]] {
        let b = json!({"ciphertext": b64(&short)}).to_string();
        send(&c, "PUT", &u("/v1/key/decrypt/k1"), Some(b.into_bytes()))
            .await
            .assert_error(400, "decryption failed: ciphertext is not authentic");
    }

    // Generate is not deterministic; an empty body means empty context; null == "" == absent.
    let g1 = send(&c, "PUT", &u("/v1/key/generate/k1"), None)
        .await
        .json();
    let g2 = send(&c, "PUT", &u("/v1/key/generate/k1"), Some(b"{}".to_vec()))
        .await
        .json();
    assert_ne!(g1["plaintext"], g2["plaintext"]);
    assert_ne!(g1["ciphertext"], g2["ciphertext"]);
    for ctx in [json!(null), json!("")] {
        let b = json!({"ciphertext": g1["ciphertext"], "context": ctx}).to_string();
        let d = send(&c, "PUT", &u("/v1/key/decrypt/k1"), Some(b.into_bytes())).await;
        assert_eq!(d.json()["plaintext"], g1["plaintext"]);
    }

    // Encrypt / decrypt round trip near the body limit.
    let big = vec![7u8; 700_000];
    let b = json!({"plaintext": b64(&big), "context": b64(b"ctx")}).to_string();
    let e = send(&c, "PUT", &u("/v1/key/encrypt/k1"), Some(b.into_bytes())).await;
    assert_eq!(e.status, 200);
    let b = json!({"ciphertext": e.json()["ciphertext"], "context": b64(b"ctx")}).to_string();
    let d = send(&c, "PUT", &u("/v1/key/decrypt/k1"), Some(b.into_bytes())).await;
    assert_eq!(unb64(&d.json()["plaintext"]), big);

    // HMAC is deterministic per key.
    let h = |m: &str| {
        json!({"message": b64(m.as_bytes())})
            .to_string()
            .into_bytes()
    };
    let h1 = send(&c, "PUT", &u("/v1/key/hmac/k1"), Some(h("root access key")))
        .await
        .json();
    let h2 = send(&c, "PUT", &u("/v1/key/hmac/k1"), Some(h("root access key")))
        .await
        .json();
    let h3 = send(&c, "PUT", &u("/v1/key/hmac/k1"), Some(h("root secret key")))
        .await
        .json();
    assert_eq!(h1, h2);
    assert_ne!(h1, h3);
    assert_eq!(unb64(&h1["hmac"]).len(), 32);

    // Delete.
    let del = send(&c, "DELETE", &u("/v1/key/delete/k1"), None).await;
    assert_eq!((del.status, del.body.len()), (200, 0));
    send(&c, "GET", &u("/v1/key/describe/k1"), None)
        .await
        .assert_error(404, "key does not exist");
    send(&c, "PUT", &u("/v1/key/generate/k1"), None)
        .await
        .assert_error(404, "key does not exist");
}

#[tokio::test]
async fn import_rules() {
    let s = server().await;
    let c = s.admin_client();
    let key = [9u8; 32];
    for (name, cipher, expect_alg) in [
        ("i1", json!("AES256"), "AES256"),
        ("i2", json!("AES256-GCM_SHA256"), "AES256"),
        ("i3", json!("ChaCha20"), "ChaCha20"),
        ("i4", json!("XCHACHA20-POLY1305"), "ChaCha20"),
        ("i5", json!(null), "AES256"),
    ] {
        let b = json!({"key": b64(&key), "cipher": cipher}).to_string();
        let a = send(
            &c,
            "PUT",
            &s.url(&format!("/v1/key/import/{name}")),
            Some(b.into_bytes()),
        )
        .await;
        assert_eq!(a.status, 200, "{name}: {}", a.text());
        let d = send(&c, "GET", &s.url(&format!("/v1/key/describe/{name}")), None)
            .await
            .json();
        assert_eq!(d["algorithm"], expect_alg);
    }
    // The same imported bytes give interoperable ciphertexts across AES keys.
    let e = send(
        &c,
        "PUT",
        &s.url("/v1/key/encrypt/i1"),
        Some(json!({"plaintext": b64(b"hi")}).to_string().into_bytes()),
    )
    .await
    .json();
    let d = send(
        &c,
        "PUT",
        &s.url("/v1/key/decrypt/i2"),
        Some(
            json!({"ciphertext": e["ciphertext"]})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(unb64(&d.json()["plaintext"]), b"hi");

    let b = json!({"key": b64(&key), "cipher": "DES"}).to_string();
    send(&c, "PUT", &s.url("/v1/key/import/x1"), Some(b.into_bytes()))
        .await
        .assert_error(406, "algorithm 'DES' is not supported");
    let b = json!({"key": b64(&[1u8; 16]), "cipher": "AES256"}).to_string();
    send(&c, "PUT", &s.url("/v1/key/import/x2"), Some(b.into_bytes()))
        .await
        .assert_error(406, "invalid key size for 'AES256'");
    send(
        &c,
        "PUT",
        &s.url("/v1/key/import/x3"),
        Some(b"{not json".to_vec()),
    )
    .await
    .assert_error(400, "invalid import key request body");
    let b = json!({"key": b64(&key)}).to_string();
    send(&c, "PUT", &s.url("/v1/key/import/i1"), Some(b.into_bytes()))
        .await
        .assert_error(400, "key already exists");
}

#[tokio::test]
async fn bad_input_gets_kes_errors() {
    let s = server().await;
    let c = s.admin_client();
    send(&c, "POST", &s.url("/v1/key/create/k"), None).await;

    // Invalid names.
    for bad in ["my.key", "-a", "a-", "_", "%E2%9C%93", &"x".repeat(81)] {
        let a = send(&c, "PUT", &s.url(&format!("/v1/key/create/{bad}")), None).await;
        let shown = percent_decode(bad);
        a.assert_error(
            400,
            &format!("key name '{shown}' is empty, too long or contains invalid characters"),
        );
    }
    send(&c, "PUT", &s.url("/v1/key/create/"), None)
        .await
        .assert_error(
            400,
            "key name '' is empty, too long or contains invalid characters",
        );

    // Bad JSON, bad base64, wrong types.
    for body in [
        &b"{"[..],
        br#"{"context":"@@"}"#,
        br#"{"context":1}"#,
        b"[]",
        br#"{"context":"e30"}"#,
    ] {
        send(&c, "PUT", &s.url("/v1/key/generate/k"), Some(body.to_vec()))
            .await
            .assert_error(400, "invalid request body");
    }
    // Unknown fields are ignored, names match case-insensitively.
    let a = send(
        &c,
        "PUT",
        &s.url("/v1/key/generate/k"),
        Some(br#"{"Context":"e30=","extra":[1]}"#.to_vec()),
    )
    .await;
    assert_eq!(a.status, 200);

    // Oversized body.
    let big = vec![b' '; 1_000_001];
    send(&c, "PUT", &s.url("/v1/key/encrypt/k"), Some(big))
        .await
        .assert_error(413, "request body too large");

    // Wrong method: 405 with Accept.
    let a = send(&c, "GET", &s.url("/v1/key/create/k2"), None).await;
    a.assert_error(405, "received method 'GET' expected 'PUT'");
    assert_eq!(a.headers.get("accept").unwrap(), "PUT");
    send(&c, "POST", &s.url("/v1/key/describe/k"), None)
        .await
        .assert_error(405, "received method 'POST' expected 'GET'");
    send(&c, "PUT", &s.url("/v1/key/delete/k"), None)
        .await
        .assert_error(405, "received method 'PUT' expected 'DELETE'");

    // Unknown route: Go's plain-text 404.
    let a = send(&c, "GET", &s.url("/v1/nope"), None).await;
    assert_eq!((a.status, a.text().as_str()), (404, "404 page not found\n"));
    assert_eq!(a.content_type.as_deref(), Some("text/plain; charset=utf-8"));

    // Unclean paths redirect.
    let a = send(&c, "GET", &s.url("/v1//status"), None).await;
    assert_eq!(a.status, 301);
    assert_eq!(a.headers.get("location").unwrap(), "/v1/status");

    // Invalid listing patterns.
    send(&c, "GET", &s.url("/v1/key/list/a*b"), None)
        .await
        .assert_error(
            400,
            "listing pattern 'a*b' is empty, too long or is invalid",
        );

    // Bulk decrypt limits.
    let many: Vec<_> = (0..1001).map(|_| json!({"ciphertext": "AA=="})).collect();
    send(
        &c,
        "PUT",
        &s.url("/v1/key/bulk/decrypt/k"),
        Some(serde_json::to_vec(&many).unwrap()),
    )
    .await
    .assert_error(400, "invalid request body");
}

fn percent_decode(s: &str) -> String {
    if s == "%E2%9C%93" {
        "✓".into()
    } else {
        s.into()
    }
}

#[tokio::test]
async fn list_paging_and_prefixes() {
    let s = server().await;
    let c = s.admin_client();
    for i in 0..1100 {
        let a = send(&c, "PUT", &s.url(&format!("/v1/key/create/k-{i:04}")), None).await;
        assert_eq!(a.status, 200);
    }
    send(&c, "PUT", &s.url("/v1/key/create/other"), None).await;

    // Without the trailing slash (what the Go client sends for an empty prefix).
    let a = send(&c, "GET", &s.url("/v1/key/list"), None).await;
    assert_eq!(a.status, 200);
    let first = a.json();
    let names: Vec<String> = serde_json::from_value(first["names"].clone()).unwrap();
    assert_eq!(names.len(), 1024);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(first["continue_at"], "k-1024");
    let next = send(&c, "GET", &s.url("/v1/key/list/?continue_at=k-1024"), None)
        .await
        .json();
    let rest: Vec<String> = serde_json::from_value(next["names"].clone()).unwrap();
    assert_eq!(rest.len(), 1101 - 1024);
    assert!(next.get("continue_at").is_none(), "omitted when complete");

    // `*` sent escaped, and a trailing `*` means prefix.
    for p in ["%2A", "*"] {
        let a = send(&c, "GET", &s.url(&format!("/v1/key/list/{p}")), None)
            .await
            .json();
        assert_eq!(a["names"].as_array().unwrap().len(), 1024);
    }
    let a = send(&c, "GET", &s.url("/v1/key/list/k-000%2A"), None)
        .await
        .json();
    assert_eq!(a["names"].as_array().unwrap().len(), 10);
    let a = send(&c, "GET", &s.url("/v1/key/list/oth"), None)
        .await
        .json();
    assert_eq!(a["names"], json!(["other"]));
    let a = send(&c, "GET", &s.url("/v1/key/list/zzz"), None)
        .await
        .json();
    assert_eq!(a["names"], json!([]));
}

#[tokio::test]
async fn status_ready_api_metrics() {
    let s = server().await;
    let c = s.admin_client();
    let r = send(&c, "GET", &s.url("/v1/ready"), None).await;
    assert_eq!((r.status, r.body.len()), (200, 0));

    let st = send(&c, "GET", &s.url("/v1/status"), None).await.json();
    for f in [
        "version",
        "os",
        "arch",
        "uptime",
        "num_cpu",
        "num_cpu_used",
        "mem_heap_used",
        "mem_stack_used",
    ] {
        assert!(st.get(f).is_some(), "status lacks {f}");
    }
    assert!(st["keystore_latency"].as_u64().unwrap() >= 1);
    assert!(st.get("keystore_unreachable").is_none());
    let parsed: kes_types::wire::StatusResponse = serde_json::from_value(st).unwrap();
    assert_eq!(parsed.os, "linux");

    let api = send(&c, "GET", &s.url("/v1/api"), None).await.json();
    let api: Vec<kes_types::wire::ApiDescription> = serde_json::from_value(api).unwrap();
    let find = |p: &str| api.iter().find(|a| a.path == p).unwrap().clone();
    assert_eq!(find("/v1/key/generate/").max_body, 1_000_000);
    assert_eq!(find("/v1/key/generate/").method, "PUT");
    assert_eq!(find("/v1/key/create/").timeout, 15);
    assert_eq!(find("/v1/log/audit").timeout, 0);
    assert_eq!(find("/version").timeout, 10);
    // KES's 23 routes plus the admin extensions (policy changes, cluster operations, backup).
    assert_eq!(api.len(), 34);
    assert_eq!(
        api.iter()
            .filter(|a| !a.path.starts_with("/v1/cluster/")
                && !a.path.contains("/write/")
                && !a.path.contains("/assign/")
                && !a.path.contains("/delete/")
                || a.path == "/v1/key/delete/")
            .count(),
        23
    );

    send(&c, "PUT", &s.url("/v1/key/create/m"), None).await;
    send(&c, "GET", &s.url("/v1/key/describe/nope"), None).await;
    let m = send(&c, "GET", &s.url("/v1/metrics"), None).await;
    assert_eq!(m.status, 200);
    assert!(m
        .content_type
        .clone()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = m.text();
    assert!(
        text.contains("kes_http_request_success{code=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kes_http_request_error{code=\"404\"} 1"),
        "{text}"
    );
    assert!(!text.contains("kes_http_request_failure"), "no 5xx yet");
}

#[tokio::test]
async fn policy_and_identity_routes() {
    let app = kes_crypto::ApiKey::generate();
    let extra = format!(
        "policy:\n  my-app:\n    allow:\n    - /v1/key/generate/app*\n    - /v1/identity/self/describe\n    deny:\n    - /v1/key/generate/app-secret*\n    identities:\n    - {}\n",
        app.identity()
    );
    let s = TestServer::start(ServerOpts {
        extra_yaml: extra,
        ..Default::default()
    })
    .await;
    let c = s.admin_client();

    let p = send(&c, "GET", &s.url("/v1/policy/read/my-app"), None)
        .await
        .json();
    assert_eq!(
        p["allow"],
        json!({"/v1/key/generate/app*": {}, "/v1/identity/self/describe": {}})
    );
    assert_eq!(p["deny"], json!({"/v1/key/generate/app-secret*": {}}));
    assert_eq!(p["created_by"], s.admin.identity());
    let d = send(&c, "GET", &s.url("/v1/policy/describe/my-app"), None)
        .await
        .json();
    assert_eq!(d["name"], "my-app");
    send(&c, "GET", &s.url("/v1/policy/read/none"), None)
        .await
        .assert_error(404, "policy does not exist");
    send(&c, "GET", &s.url("/v1/policy/describe/a.b"), None)
        .await
        .assert_error(
            400,
            "policy name 'a.b' is empty, too long or contains invalid characters",
        );
    let l = send(&c, "GET", &s.url("/v1/policy/list/my*"), None)
        .await
        .json();
    assert_eq!(l, json!({"names": ["my-app"], "continue_at": ""}));
    let l = send(&c, "GET", &s.url("/v1/policy/list/zz"), None)
        .await
        .json();
    assert_eq!(l, json!({"names": [], "continue_at": ""}));

    let id = send(
        &c,
        "GET",
        &s.url(&format!("/v1/identity/describe/{}", app.identity())),
        None,
    )
    .await
    .json();
    assert_eq!(id["policy"], "my-app");
    assert_eq!(id["created_by"], s.admin.identity());
    let ad = send(
        &c,
        "GET",
        &s.url(&format!("/v1/identity/describe/{}", s.admin.identity())),
        None,
    )
    .await
    .json();
    assert_eq!(ad["admin"], true);
    send(
        &c,
        "GET",
        &s.url(&format!("/v1/identity/describe/{}", "ab".repeat(32))),
        None,
    )
    .await
    .assert_error(404, "identity does not exist");
    let l = send(&c, "GET", &s.url("/v1/identity/list/"), None)
        .await
        .json();
    let mut want = vec![s.admin.identity(), app.identity()];
    want.sort();
    assert_eq!(l["identities"], json!(want));

    // Self describe works for a non-admin identity, flat as kms-go decodes it.
    let ac = s.api_key_client(&app);
    let me = send(&ac, "GET", &s.url("/v1/identity/self/describe"), None).await;
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(me["identity"], app.identity());
    assert_eq!(me["policy"], "my-app");
    assert_eq!(me["allow"]["/v1/key/generate/app*"], json!({}));
    let me = send(&c, "GET", &s.url("/v1/identity/self/describe"), None)
        .await
        .json();
    assert_eq!(me["admin"], true);
    // An identity with no policy gets 404 from self describe (it is not an identity KES knows).
    let stranger = kes_crypto::ApiKey::generate();
    send(
        &s.api_key_client(&stranger),
        "GET",
        &s.url("/v1/identity/self/describe"),
        None,
    )
    .await
    .assert_error(404, "identity does not exist");
}

#[tokio::test]
async fn log_streams_deliver_ndjson() {
    use futures_util::StreamExt;
    let s = server().await;
    let c = s.admin_client();
    let resp = c.get(s.url("/v1/log/audit")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut stream = resp.bytes_stream();
    send(&c, "PUT", &s.url("/v1/key/create/audited"), None).await;
    let mut buf = Vec::new();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !buf.contains(&b'\n') {
            buf.extend_from_slice(&stream.next().await.unwrap().unwrap());
        }
        buf.clone()
    })
    .await
    .expect("an audit event arrives");
    let first = line.split(|b| *b == b'\n').next().unwrap();
    let ev: kes_types::wire::AuditEvent = serde_json::from_slice(first).unwrap();
    assert_eq!(ev.request.path, "/v1/key/create/audited");
    assert_eq!(ev.request.identity, s.admin.identity());
    assert_eq!(ev.response.code, 200);
    assert!(!String::from_utf8_lossy(&line).contains("plaintext"));

    // The error stream answers with the right headers too.
    let resp = c.get(s.url("/v1/log/error")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
}

#[tokio::test]
async fn http1_and_http2() {
    let s = server().await;
    let cert = ClientCert::from_api_key(&s.admin);
    for proto in [Proto::Http1, Proto::Http2] {
        let c = s.client(Some(&cert), proto);
        let r = c.get(s.url("/v1/status")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let want = if proto == Proto::Http1 {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_2
        };
        assert_eq!(r.version(), want);
    }
}

#[tokio::test]
async fn legacy_bulk_decrypt() {
    let s = server().await;
    let c = s.admin_client();
    send(&c, "PUT", &s.url("/v1/key/create/b"), None).await;
    let mut items = Vec::new();
    let mut plain = Vec::new();
    for i in 0..5u8 {
        let ctx = b64(&[i]);
        let g = send(
            &c,
            "POST",
            &s.url("/v1/key/generate/b"),
            Some(json!({"context": ctx}).to_string().into_bytes()),
        )
        .await
        .json();
        plain.push(g["plaintext"].clone());
        items.push(json!({"ciphertext": g["ciphertext"], "context": ctx}));
    }
    let a = send(
        &c,
        "POST",
        &s.url("/v1/key/bulk/decrypt/b"),
        Some(serde_json::to_vec(&items).unwrap()),
    )
    .await;
    assert_eq!(a.status, 200);
    let got: Vec<serde_json::Value> = a
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["plaintext"].clone())
        .collect();
    assert_eq!(got, plain);
    items[2]["context"] = json!(b64(b"wrong"));
    send(
        &c,
        "POST",
        &s.url("/v1/key/bulk/decrypt/b"),
        Some(serde_json::to_vec(&items).unwrap()),
    )
    .await
    .assert_error(400, "decryption failed: ciphertext is not authentic");
}
