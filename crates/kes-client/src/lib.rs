//! A typed async client for the KES API, used by the `kes` CLI, the integration tests, the
//! benchmarks and the fault-injection harness. It speaks to this server and to MinIO KES alike.
//!
//! It behaves like kms-go, the Go client MinIO uses, wherever that is observable from the
//! server side: the same HTTP methods and bodies, names escaped like Go's `url.PathEscape`,
//! errors decoded the same way, and the same multi-endpoint failover and retry rules (see
//! [`balancer`]). Testing against the client MinIO actually runs is the point; a client that
//! behaved better than kms-go would hide server bugs that MinIO would hit.
//!
//! Authentication is the TLS client certificate, made from a `kes:v1:` API key or read from
//! PEM files. The server is verified against a CA file plus the system roots, or not at all in
//! insecure mode (handshake signatures are still checked).

mod admin;
pub mod balancer;
mod builder;
pub mod endpoint;
mod error;
mod keys;
mod stream;
mod tls;
mod transport;

pub use balancer::{pass_order, Availability, BalancerState, HasStatus, LoadBalancer, BENCH_TIME};
pub use builder::ClientBuilder;
pub use endpoint::{normalize_endpoint, parse_endpoints, path_escape, query_escape};
pub use error::{parse_error_response, ClientError};
pub use kes_types;
pub use kes_types::wire::{
    ApiDescription, AuditEvent, DescribeIdentityResponse, DescribeKeyResponse,
    DescribePolicyResponse, ErrorEvent, GenerateResponse, ListIdentitiesResponse, ListKeysResponse,
    ListPoliciesResponse, ReadPolicyResponse, SelfDescribeResponse, StatusResponse,
    VersionResponse,
};
pub use stream::{ndjson, EventStream, MAX_EVENT_LEN};

use bytes::Bytes;
use futures_util::StreamExt;
use kes_types::wire::{DecryptResponse, EncryptResponse, HmacResponse};
use kes_types::Bytes64;
use rand::Rng;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::error::Error as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tls::{ClientCert, Trust};
use transport::read_limited;

/// Where the KES CLI looks when no server is configured.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7373";

/// Limits and timings. The retry and transport values are kms-go's, so a cluster behind this
/// client fails over exactly as it would behind MinIO.
pub mod limits {
    use std::time::Duration;

    /// Extra attempts on the same endpoint after a network error or a 503.
    pub const RETRIES: u32 = 2;
    /// Fixed part of the pause before a retry.
    pub const RETRY_DELAY: Duration = Duration::from_millis(200);
    /// Upper bound of the random part of the pause before a retry, in milliseconds.
    pub const RETRY_JITTER_MS: u64 = 800;
    /// TCP connect (and TLS) timeout.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    /// TCP keep-alive interval.
    pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
    /// How long idle pooled connections are kept.
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    /// Idle pooled connections per host.
    pub const POOL_MAX_IDLE_PER_HOST: usize = 100;
    /// Largest JSON response accepted (kms-go reads at most 1 MiB).
    pub const MAX_RESPONSE: usize = 1 << 20;
    /// Largest `/version` response (kms-go: 1 KiB).
    pub const MAX_VERSION_RESPONSE: usize = 1 << 10;
    /// Largest `/v1/metrics` response.
    pub const MAX_METRICS_RESPONSE: usize = 8 << 20;
    /// Largest `/v1/cluster/backup` response: the size of the node port's snapshot bound.
    pub const MAX_BACKUP_RESPONSE: usize = 1 << 30;
    /// How much of an error body is read.
    pub const MAX_ERROR_BODY: usize = 64 << 10;
    /// Most pages `list_keys_all` fetches before concluding that the server loops.
    pub const MAX_LIST_PAGES: usize = 100_000;
}

/// A KES client. Cloning is cheap and clones share connections and failover state.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    lb: Arc<LoadBalancer>,
    timeout: Option<Duration>,
}

/// One API request, replayable across retries and endpoints.
struct Request {
    method: Method,
    path: String,
    body: Option<Bytes>,
    /// kms-go labels JSON bodies, except HMAC's.
    json: bool,
    /// Streaming responses must not be cut off by the request timeout.
    stream: bool,
}

impl Request {
    fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            body: None,
            json: false,
            stream: false,
        }
    }

    fn with_json<T: Serialize>(
        method: Method,
        path: String,
        body: &T,
    ) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ClientError::Config(format!("failed to encode request: {e}")))?;
        Ok(Self {
            method,
            path,
            body: Some(Bytes::from(bytes)),
            json: true,
            stream: false,
        })
    }
}

fn is_empty_bytes(b: &Bytes64) -> bool {
    b.0.is_empty()
}

#[derive(Serialize)]
struct ContextBody {
    #[serde(skip_serializing_if = "is_empty_bytes")]
    context: Bytes64,
}

#[derive(Serialize)]
struct EncryptBody {
    plaintext: Bytes64,
    #[serde(skip_serializing_if = "is_empty_bytes")]
    context: Bytes64,
}

#[derive(Serialize)]
struct DecryptBody {
    ciphertext: Bytes64,
    #[serde(skip_serializing_if = "is_empty_bytes")]
    context: Bytes64,
}

#[derive(Serialize)]
struct HmacBody {
    message: Bytes64,
}

#[derive(Serialize)]
struct ImportBody<'a> {
    key: Bytes64,
    cipher: &'a str,
}

/// Whether a failed request may succeed if sent again: the connection failed or broke. TLS
/// failures are excluded; a certificate does not become valid by asking twice.
impl Client {
    /// A builder for the given endpoints.
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ClientBuilder::new(endpoints)
    }

    /// The normalised endpoints, in balancing order (localhost first).
    pub fn endpoints(&self) -> Vec<String> {
        self.lb.urls()
    }

    /// A client for one endpoint only, sharing this client's TLS setup and connections; for
    /// per-node views such as `kes status`.
    pub fn for_endpoint(&self, endpoint: &str) -> Result<Client, ClientError> {
        let e = normalize_endpoint(endpoint)
            .ok_or_else(|| ClientError::Config(format!("invalid server endpoint '{endpoint}'")))?;
        Ok(Client {
            http: self.http.clone(),
            lb: Arc::new(LoadBalancer::new(vec![e])),
            timeout: self.timeout,
        })
    }

    /// `GET /version`: the server's version and commit. Needs no client certificate.
    pub async fn version(&self) -> Result<VersionResponse, ClientError> {
        self.json(
            Request::get("/version".into()),
            limits::MAX_VERSION_RESPONSE,
        )
        .await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.json(Request::get("/v1/status".into()), limits::MAX_RESPONSE)
            .await
    }

    /// `GET /v1/ready`: `Ok(true)` when the server and its keystore are ready; otherwise the
    /// server's reason as [`ClientError::Api`] (504 keystore not reachable, 502 unavailable).
    pub async fn is_ready(&self) -> Result<bool, ClientError> {
        self.empty(Request::get("/v1/ready".into())).await?;
        Ok(true)
    }

    /// `GET /v1/api`: the routes the server offers.
    pub async fn api(&self) -> Result<Vec<ApiDescription>, ClientError> {
        self.json(Request::get("/v1/api".into()), limits::MAX_RESPONSE)
            .await
    }

    /// `GET /v1/metrics`: the Prometheus text exposition, unparsed.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.send(Request::get("/v1/metrics".into())).await?;
        let body = read_limited(resp, limits::MAX_METRICS_RESPONSE).await?;
        String::from_utf8(body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_match_kms_go() {
        let b = serde_json::to_string(&ContextBody {
            context: Bytes64(vec![]),
        })
        .unwrap();
        assert_eq!(b, "{}");
        let b = serde_json::to_string(&ContextBody {
            context: Bytes64(b"{}".to_vec()),
        })
        .unwrap();
        assert_eq!(b, r#"{"context":"e30="}"#);
        let b = serde_json::to_string(&EncryptBody {
            plaintext: Bytes64(vec![]),
            context: Bytes64(vec![]),
        })
        .unwrap();
        assert_eq!(b, r#"{"plaintext":""}"#);
        let b = serde_json::to_string(&ImportBody {
            key: Bytes64(vec![0; 2]),
            cipher: "AES256",
        })
        .unwrap();
        assert_eq!(b, r#"{"key":"AAA=","cipher":"AES256"}"#);
    }

    #[test]
    fn builder_rejects_bad_setups() {
        let e = Client::builder(Vec::<String>::new()).build().unwrap_err();
        assert!(matches!(e, ClientError::Config(ref m) if m == "no server endpoint"));
        let e = Client::builder(["https://bad host:7373"])
            .build()
            .unwrap_err();
        assert!(matches!(e, ClientError::Config(ref m) if m.contains("bad host")));
        let e = Client::builder(["127.0.0.1:7373"])
            .cert_files("/nonexistent/c.pem", "/nonexistent/k.pem")
            .build()
            .unwrap_err();
        assert!(matches!(e, ClientError::Config(ref m) if m.contains("/nonexistent/c.pem")));
        let key = kes_crypto::ApiKey::generate();
        let e = Client::builder(["127.0.0.1:7373"])
            .api_key(&key)
            .cert_files("c.pem", "k.pem")
            .build()
            .unwrap_err();
        assert!(matches!(e, ClientError::Config(ref m) if m.contains("cannot be combined")));
    }

    #[tokio::test]
    async fn builds_and_reports_endpoints() {
        let key = kes_crypto::ApiKey::generate();
        let c = Client::builder(["kes-2:7373", "http://localhost:7373/"])
            .api_key(&key)
            .insecure(true)
            .build()
            .unwrap();
        assert_eq!(
            c.endpoints(),
            vec!["https://localhost:7373", "https://kes-2:7373"]
        );
        let one = c.for_endpoint("kes-2:7373").unwrap();
        assert_eq!(one.endpoints(), vec!["https://kes-2:7373"]);
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_a_transport_error() {
        // A port that was just free: the connection is refused at once, the client retries
        // twice and then reports the endpoint.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let endpoint = format!("https://127.0.0.1:{port}");
        let c = Client::builder([&endpoint]).insecure(true).build().unwrap();
        let e = c.version().await.unwrap_err();
        match e {
            ClientError::Transport(m) => assert!(m.starts_with(&format!("{endpoint}: ")), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
