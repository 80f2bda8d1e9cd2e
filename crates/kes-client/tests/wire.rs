//! The client against a real TLS server on loopback: mutual TLS with an API-key certificate,
//! server verification by CA or insecure mode, HTTP/2 by ALPN, the exact requests sent, error
//! decoding, paging, log streams and failover from an endpoint that refuses connections.
//!
//! The server here is a scripted stand-in, not kes-server: these tests pin down what the
//! client puts on the wire, independently of the real server's behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kes_client::{Client, ClientError};
use kes_crypto::ApiKey;
use kes_tls::certgen::{KeyKind, TestCa};
use kes_tls::{CertSource, ClientAuthMode, PeerIdentity, ServerTlsSource};
use kes_types::KesError;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    content_type: Option<String>,
    body: Vec<u8>,
    identity: Option<String>,
    version: http::Version,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn last(&self) -> Seen {
        self.0.lock().last().cloned().unwrap()
    }
}

fn reply(status: u16, content_type: Option<&str>, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(body.into())).unwrap()
}

fn json(body: &str) -> Response<Full<Bytes>> {
    reply(200, Some("application/json"), body.to_owned())
}

fn route(seen: &Seen) -> Response<Full<Bytes>> {
    let path = seen.uri.as_str();
    match path {
        "/version" => json(r#"{"version":"v1","commit":"c"}"#),
        "/v1/key/create/exists" => {
            reply(400, Some("application/json"), KesError::key_exists().body())
        }
        p if p.starts_with("/v1/key/create/") || p.starts_with("/v1/key/delete/") => {
            reply(200, None, "")
        }
        "/v1/key/list/pre" => json(r#"{"names":["pre-1","pre-2"],"continue_at":"pre-3"}"#),
        "/v1/key/list/pre?continue_at=pre-3" => json(r#"{"names":["pre-3"]}"#),
        "/v1/key/list/loop" => json(r#"{"names":["a"],"continue_at":"b"}"#),
        "/v1/key/list/loop?continue_at=b" => json(r#"{"names":["b"],"continue_at":"b"}"#),
        "/v1/key/generate/k" => json(r#"{"plaintext":"AAEC","ciphertext":"AwQF"}"#),
        "/v1/key/hmac/k" => json(r#"{"hmac":"BgcI"}"#),
        "/v1/identity/self/describe" => json(&format!(
            r#"{{"identity":"{}","admin":true,"created_at":"2024-01-01T00:00:00Z"}}"#,
            seen.identity.clone().unwrap_or_default()
        )),
        "/v1/log/error" => reply(
            200,
            Some("application/x-ndjson"),
            "{\"message\":\"one\"}\n{\"message\":\"two\"}\n",
        ),
        "/v1/status" => reply(
            502,
            Some("application/json"),
            KesError::new(502, "key store is unavailable").body(),
        ),
        _ => reply(
            404,
            Some("text/plain; charset=utf-8"),
            "404 page not found\n",
        ),
    }
}

/// Starts the stand-in server with a certificate from `ca` and returns its address.
async fn serve(ca: &TestCa, log: Log) -> SocketAddr {
    let leaf = ca
        .issue(
            "kes",
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
            KeyKind::EcdsaP256,
        )
        .unwrap();
    let tls = ServerTlsSource {
        cert: CertSource::Memory {
            cert_der: leaf.cert_der.clone(),
            key_der: leaf.key_der.to_vec(),
        },
        auth: ClientAuthMode::Any,
        ca: None,
        system_roots: false,
        client_cert_optional: false,
    }
    .build()
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let identity = match kes_tls::identify(stream.get_ref().1.peer_certificates()) {
                    PeerIdentity::Identity(id) => Some(id),
                    _ => None,
                };
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        let identity = identity.clone();
                        async move {
                            let method = req.method().to_string();
                            let uri = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let version = req.version();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .map(|v| v.to_str().unwrap().to_owned());
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            let seen = Seen {
                                method,
                                uri,
                                content_type,
                                body,
                                identity,
                                version,
                            };
                            let resp = route(&seen);
                            log.0.lock().push(seen);
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn setup() -> (Client, ApiKey, Log, SocketAddr) {
    let ca = TestCa::new().unwrap();
    let log = Log::default();
    let addr = serve(&ca, log.clone()).await;
    let key = ApiKey::generate();
    let client = Client::builder([format!("localhost:{}", addr.port())])
        .api_key(&key)
        .ca_pem(ca.ca_pem())
        .build()
        .unwrap();
    (client, key, log, addr)
}

#[tokio::test]
async fn mutual_tls_with_api_key_over_http2() {
    let (client, key, log, _) = setup().await;
    let me = client.describe_self().await.unwrap();
    assert_eq!(me.identity, key.identity());
    assert!(me.admin);
    let seen = log.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.identity.as_deref(), Some(key.identity().as_str()));
    assert_eq!(client.version().await.unwrap().version, "v1");
}

#[tokio::test]
async fn requests_look_like_kms_go() {
    let (client, _, log, _) = setup().await;

    client.create_key("my-key").await.unwrap();
    let s = log.last();
    assert_eq!(
        (s.method.as_str(), s.uri.as_str()),
        ("POST", "/v1/key/create/my-key")
    );
    assert!(s.body.is_empty());

    let dek = client.generate_key("k", b"{}").await.unwrap();
    assert_eq!(dek.plaintext.0, vec![0, 1, 2]);
    assert_eq!(dek.ciphertext.0, vec![3, 4, 5]);
    let s = log.last();
    assert_eq!(s.method, "POST");
    assert_eq!(s.content_type.as_deref(), Some("application/json"));
    assert_eq!(s.body, br#"{"context":"e30="}"#);

    assert_eq!(client.hmac("k", b"msg").await.unwrap(), vec![6, 7, 8]);
    let s = log.last();
    assert_eq!(s.method, "PUT");
    assert_eq!(
        s.content_type, None,
        "kms-go sends HMAC without a content type"
    );
    assert_eq!(s.body, br#"{"message":"bXNn"}"#);

    client.delete_key("my-key").await.unwrap();
    assert_eq!(log.last().method, "DELETE");

    let e = client.list_keys("*").await.unwrap_err();
    assert_eq!(log.last().uri, "/v1/key/list/%2A");
    assert_eq!(e.api(), Some(&KesError::new(404, "404 page not found")));
}

#[tokio::test]
async fn errors_and_paging() {
    let (client, _, _, _) = setup().await;
    let e = client.create_key("exists").await.unwrap_err();
    assert!(e.is_key_exists());
    assert_eq!(e.to_string(), "key already exists");

    let names = client.list_keys_all("pre").await.unwrap();
    assert_eq!(names, vec!["pre-1", "pre-2", "pre-3"]);
    let e = client.list_keys_all("loop").await.unwrap_err();
    assert!(matches!(e, ClientError::Decode(_)), "{e:?}");

    // A 502 from the only endpoint is returned as the server's error.
    let e = client.status().await.unwrap_err();
    assert_eq!(
        e.api(),
        Some(&KesError::new(502, "key store is unavailable"))
    );
}

#[tokio::test]
async fn error_log_stream() {
    let (client, _, _, _) = setup().await;
    let events: Vec<_> = client.error_log().await.unwrap().collect().await;
    let msgs: Vec<String> = events.into_iter().map(|e| e.unwrap().message).collect();
    assert_eq!(msgs, vec!["one", "two"]);
}

#[tokio::test]
async fn server_verification() {
    let ca = TestCa::new().unwrap();
    let addr = serve(&ca, Log::default()).await;
    let endpoint = format!("127.0.0.1:{}", addr.port());
    let key = ApiKey::generate();

    // Not trusted: the system roots do not know the test CA, and TLS errors are not retried.
    let untrusted = Client::builder([&endpoint])
        .api_key(&key)
        .system_roots(false)
        .build()
        .unwrap();
    let e = untrusted.version().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Transport(ref m) if m.contains("certificate")),
        "{e:?}"
    );

    // Insecure mode accepts it.
    let insecure = Client::builder([&endpoint])
        .api_key(&key)
        .insecure(true)
        .build()
        .unwrap();
    assert_eq!(insecure.version().await.unwrap().version, "v1");

    // Certificate files work like an API key.
    let dir = tempfile::tempdir().unwrap();
    let client_cert = ca.issue("client", &[], &[], KeyKind::Ed25519).unwrap();
    std::fs::write(dir.path().join("c.pem"), &client_cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), client_cert.key_pem.as_bytes()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.ca_pem()).unwrap();
    let by_files = Client::builder([&endpoint])
        .cert_files(dir.path().join("c.pem"), dir.path().join("k.pem"))
        .ca_file(dir.path().join("ca.pem"))
        .build()
        .unwrap();
    let me = by_files.describe_self().await.unwrap();
    assert_eq!(me.identity, client_cert.identity().unwrap());
}

#[tokio::test]
async fn fails_over_from_a_dead_endpoint() {
    let ca = TestCa::new().unwrap();
    let log = Log::default();
    let addr = serve(&ca, log.clone()).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let key = ApiKey::generate();
    let client = Client::builder([
        format!("127.0.0.1:{}", dead.port()),
        format!("127.0.0.1:{}", addr.port()),
    ])
    .api_key(&key)
    .ca_pem(ca.ca_pem())
    .build()
    .unwrap();
    for _ in 0..4 {
        assert_eq!(client.version().await.unwrap().version, "v1");
    }
    assert_eq!(log.0.lock().len(), 4);
}
