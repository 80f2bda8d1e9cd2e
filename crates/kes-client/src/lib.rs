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

pub mod balancer;
pub mod endpoint;
mod error;
mod stream;
mod tls;

pub use balancer::{pass_order, Availability, BalancerState, HasStatus, LoadBalancer, BENCH_TIME};
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
    /// How much of an error body is read.
    pub const MAX_ERROR_BODY: usize = 64 << 10;
    /// Most pages `list_keys_all` fetches before concluding that the server loops.
    pub const MAX_LIST_PAGES: usize = 100_000;
}

/// Configures and builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    raw_endpoints: Vec<String>,
    cert: Option<ClientCert>,
    cert_sources: usize,
    trust: Trust,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    error: Option<ClientError>,
}

impl ClientBuilder {
    /// Starts from a list of endpoints; each is normalised with [`normalize_endpoint`].
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let raw_endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        let endpoints = raw_endpoints
            .iter()
            .filter_map(|e| normalize_endpoint(e))
            .collect();
        Self {
            endpoints,
            raw_endpoints,
            cert: None,
            cert_sources: 0,
            trust: Trust {
                system_roots: true,
                ..Trust::default()
            },
            timeout: None,
            connect_timeout: limits::CONNECT_TIMEOUT,
            error: None,
        }
    }

    /// Authenticates with a fresh self-signed certificate for the API key.
    pub fn api_key(mut self, key: &kes_crypto::ApiKey) -> Self {
        match kes_tls::certgen::api_key_certificate(key) {
            Ok(ck) => self.set_cert(ClientCert::Der {
                chain: vec![ck.cert_der],
                key: ck.key_der,
            }),
            Err(e) => {
                self.error = Some(ClientError::Config(format!(
                    "failed to create a certificate for the API key: {e}"
                )))
            }
        }
        self
    }

    /// Authenticates with a certificate and key held in memory.
    pub fn certified_key(mut self, ck: &kes_tls::certgen::CertifiedKey) -> Self {
        self.set_cert(ClientCert::Der {
            chain: vec![ck.cert_der.clone()],
            key: ck.key_der.clone(),
        });
        self
    }

    /// Authenticates with a PEM certificate file and a PEM private key file.
    pub fn cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.set_cert(ClientCert::Files {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    fn set_cert(&mut self, cert: ClientCert) {
        self.cert = Some(cert);
        self.cert_sources += 1;
    }

    /// Also trusts the certificates of a PEM file, or of every file in a directory.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.trust.ca_files.push(path.into());
        self
    }

    /// Also trusts the certificates of a PEM text.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trust.ca_pems.push(pem.into());
        self
    }

    /// Whether the system's root certificates are trusted (default: yes).
    pub fn system_roots(mut self, on: bool) -> Self {
        self.trust.system_roots = on;
        self
    }

    /// Accepts any server certificate (development servers with self-signed certificates).
    pub fn insecure(mut self, on: bool) -> Self {
        self.trust.insecure = on;
        self
    }

    /// Limits each request, except the log streams, to `timeout` (default: no limit, as in
    /// kms-go).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Limits connection establishment (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client, ClientError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.cert_sources > 1 {
            return Err(ClientError::Config(
                "an API key cannot be combined with a client certificate".into(),
            ));
        }
        if self.endpoints.is_empty() {
            return Err(ClientError::Config("no server endpoint".into()));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let ok = reqwest::Url::parse(e)
                .map(|u| u.host_str().is_some_and(|h| !h.is_empty()))
                .unwrap_or(false);
            if !ok {
                let raw = self.raw_endpoints.get(i).map_or(e.as_str(), |s| s.trim());
                return Err(ClientError::Config(format!(
                    "invalid server endpoint '{raw}'"
                )));
            }
        }
        let tls = tls::client_config(&self.trust, self.cert.as_ref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(self.connect_timeout)
            .tcp_keepalive(limits::TCP_KEEPALIVE)
            .pool_idle_timeout(limits::POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(limits::POOL_MAX_IDLE_PER_HOST)
            .build()
            .map_err(|e| ClientError::Config(format!("failed to create HTTP client: {e}")))?;
        Ok(Client {
            http,
            lb: Arc::new(LoadBalancer::new(self.endpoints)),
            timeout: self.timeout,
        })
    }
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
fn is_network_error(e: &reqwest::Error) -> bool {
    if find_tls_error(e).is_some() {
        return false;
    }
    if e.is_timeout() || e.is_connect() || e.is_request() {
        return true;
    }
    let mut src = e.source();
    while let Some(s) = src {
        if s.is::<std::io::Error>() {
            return true;
        }
        src = s.source();
    }
    false
}

/// The rustls error behind a failed request, if the handshake failed.
fn find_tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    e.source().and_then(find_tls_in)
}

fn find_tls_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    // io::Error::source skips its payload, so a rustls error wrapped in an io::Error (possibly
    // more than once) must be fetched with get_ref.
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(tls) = find_tls_in(inner) {
            return Some(tls);
        }
    }
    e.source().and_then(find_tls_in)
}

/// A handshake failure in words a user can act on; rustls's own texts carry ASN.1 OIDs.
fn describe_tls_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "the server certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server certificate is not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server certificate is not valid for this host name".into()
            }
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "the server certificate is not meant for TLS servers".into()
            }
            // webpki reports an unknown issuer as a signature mismatch when some root has the
            // issuer's name but another key type; either way, no trusted CA vouches for it.
            C::UnknownIssuer
            | C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "the server certificate is not trusted (unknown issuer)".into()
            }
            other => {
                let name = format!("{other:?}");
                let short = name.split([' ', '{', '(']).next().unwrap_or_default();
                format!("invalid server certificate: {short}")
            }
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the server aborted the TLS handshake ({alert:?})")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// One line naming the endpoint and the innermost cause; reqwest's own text only repeats the
/// URL and "error sending request".
fn transport_error(endpoint: &str, e: &reqwest::Error) -> ClientError {
    if e.is_timeout() {
        return ClientError::Transport(format!("{endpoint}: request timed out"));
    }
    if let Some(tls) = find_tls_error(e) {
        return ClientError::Transport(format!("{endpoint}: {}", describe_tls_error(tls)));
    }
    let mut cause = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    ClientError::Transport(format!("{endpoint}: {cause}"))
}

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

    /// Sends through the load balancer and turns non-2xx answers into [`ClientError::Api`].
    async fn send(&self, req: Request) -> Result<reqwest::Response, ClientError> {
        let n = self.lb.len().max(1);
        let offset = rand::thread_rng().gen_range(0..n);
        let resp = self
            .lb
            .send(offset, |endpoint| self.attempt(endpoint, &req))
            .await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(ClientError::Api(error_of(resp).await))
        }
    }

    /// Sends to one endpoint, retrying network errors and 503 up to twice after a short random
    /// pause, as kms-go's `retry.Do` does.
    async fn attempt(
        &self,
        endpoint: String,
        req: &Request,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{endpoint}{}", req.path);
        let mut retries = limits::RETRIES;
        loop {
            let mut rb = self.http.request(req.method.clone(), &url);
            match &req.body {
                Some(body) => {
                    rb = rb.body(body.clone());
                    if req.json {
                        rb = rb.header(CONTENT_TYPE, "application/json");
                    }
                }
                // Go sends `Content-Length: 0` for body-less POST/PUT; do the same.
                None if req.method == Method::POST || req.method == Method::PUT => {
                    rb = rb.body(Bytes::new());
                }
                None => {}
            }
            if let (false, Some(t)) = (req.stream, self.timeout) {
                rb = rb.timeout(t);
            }
            let result = rb.send().await;
            let retry = match &result {
                Ok(resp) => resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE,
                Err(e) => is_network_error(e),
            };
            if retry && retries > 0 {
                retries -= 1;
                let jitter = rand::thread_rng().gen_range(0..limits::RETRY_JITTER_MS);
                tokio::time::sleep(limits::RETRY_DELAY + Duration::from_millis(jitter)).await;
                continue;
            }
            tracing::trace!(url = %url, ok = result.is_ok(), "kes request");
            return result.map_err(|e| transport_error(&endpoint, &e));
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        req: Request,
        limit: usize,
    ) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let body = read_limited(resp, limit).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn empty(&self, req: Request) -> Result<(), ClientError> {
        let resp = self.send(req).await?;
        // Drain the (empty) body so the connection goes back to the pool.
        let _ = read_limited(resp, limits::MAX_RESPONSE).await;
        Ok(())
    }

    /// Sends an admin extension request with an optional JSON body and returns the raw answer.
    async fn admin(
        &self,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, ClientError> {
        let body = body
            .map(|b| serde_json::to_vec(&b).map(Bytes::from))
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let json = body.is_some();
        let resp = self
            .send(Request {
                method,
                path,
                body,
                json,
                stream: false,
            })
            .await?;
        Ok(read_limited(resp, limits::MAX_RESPONSE).await?.to_vec())
    }

    /// `PUT /v1/policy/write/{name}` (admin): creates or replaces a policy, on every node.
    pub async fn write_policy(
        &self,
        name: &str,
        allow: &[String],
        deny: &[String],
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({"allow": allow, "deny": deny});
        self.admin(
            Method::PUT,
            format!("/v1/policy/write/{}", path_escape(name)),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// `PUT /v1/policy/assign/{name}` (admin): assigns an identity to a policy.
    pub async fn assign_policy(&self, name: &str, identity: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({"identity": identity});
        self.admin(
            Method::PUT,
            format!("/v1/policy/assign/{}", path_escape(name)),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// `DELETE /v1/policy/delete/{name}` (admin): deletes a policy and its assignments.
    pub async fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        self.admin(
            Method::DELETE,
            format!("/v1/policy/delete/{}", path_escape(name)),
            None,
        )
        .await
        .map(drop)
    }

    /// `DELETE /v1/identity/delete/{identity}` (admin): removes an identity's assignment.
    pub async fn delete_identity(&self, identity: &str) -> Result<(), ClientError> {
        self.admin(
            Method::DELETE,
            format!("/v1/identity/delete/{}", path_escape(identity)),
            None,
        )
        .await
        .map(drop)
    }

    /// `GET /v1/cluster/status` (admin) as JSON.
    pub async fn cluster_status(&self) -> Result<serde_json::Value, ClientError> {
        let b = self
            .admin(Method::GET, "/v1/cluster/status".into(), None)
            .await?;
        serde_json::from_slice(&b).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /v1/cluster/metrics` (admin): Prometheus text.
    pub async fn cluster_metrics(&self) -> Result<String, ClientError> {
        let b = self
            .admin(Method::GET, "/v1/cluster/metrics".into(), None)
            .await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// `PUT /v1/cluster/add/{id}` (admin): adds a node as a learner and, if `voter`, promotes it.
    pub async fn cluster_add(
        &self,
        id: u64,
        address: &str,
        voter: bool,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({"address": address, "voter": voter});
        self.admin(Method::PUT, format!("/v1/cluster/add/{id}"), Some(body))
            .await
            .map(drop)
    }

    /// `DELETE /v1/cluster/remove/{id}` (admin).
    pub async fn cluster_remove(&self, id: u64) -> Result<(), ClientError> {
        self.admin(Method::DELETE, format!("/v1/cluster/remove/{id}"), None)
            .await
            .map(drop)
    }

    /// `PUT /v1/cluster/leader/{id}` (admin): asks node `id` to take over leadership.
    pub async fn cluster_transfer_leader(&self, id: u64) -> Result<(), ClientError> {
        self.admin(Method::PUT, format!("/v1/cluster/leader/{id}"), None)
            .await
            .map(drop)
    }

    /// `PUT /v1/cluster/snapshot` (admin): takes a snapshot on the node answering.
    pub async fn cluster_snapshot(&self) -> Result<(), ClientError> {
        self.admin(Method::PUT, "/v1/cluster/snapshot".into(), None)
            .await
            .map(drop)
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

    /// `POST /v1/key/create/{name}`: the server generates the key.
    pub async fn create_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Request {
            method: Method::POST,
            path: format!("/v1/key/create/{}", path_escape(name)),
            body: None,
            json: false,
            stream: false,
        })
        .await
    }

    /// `POST /v1/key/import/{name}` with the raw key bytes and a cipher name (`AES256`,
    /// `ChaCha20`, ...).
    pub async fn import_key(
        &self,
        name: &str,
        key: &[u8],
        cipher: &str,
    ) -> Result<(), ClientError> {
        let body = ImportBody {
            key: Bytes64(key.to_vec()),
            cipher,
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/import/{}", path_escape(name)),
            &body,
        )?;
        self.empty(req).await
    }

    /// `GET /v1/key/describe/{name}`.
    pub async fn describe_key(&self, name: &str) -> Result<DescribeKeyResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/key/describe/{}", path_escape(name))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// One page of `GET /v1/key/list/{prefix}`.
    pub async fn list_keys(&self, prefix: &str) -> Result<ListKeysResponse, ClientError> {
        self.list_keys_page(prefix, "").await
    }

    /// One page of `GET /v1/key/list/{prefix}`, continuing at `continue_at` when not empty.
    pub async fn list_keys_page(
        &self,
        prefix: &str,
        continue_at: &str,
    ) -> Result<ListKeysResponse, ClientError> {
        let mut path = format!("/v1/key/list/{}", path_escape(prefix));
        if !continue_at.is_empty() {
            path.push_str("?continue_at=");
            path.push_str(&query_escape(continue_at));
        }
        self.json(Request::get(path), limits::MAX_RESPONSE).await
    }

    /// Every key name matching `prefix`, following `continue_at` until the server says done.
    pub async fn list_keys_all(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        let mut continue_at = String::new();
        for _ in 0..limits::MAX_LIST_PAGES {
            let page = self.list_keys_page(prefix, &continue_at).await?;
            names.extend(page.names);
            if page.continue_at.is_empty() {
                return Ok(names);
            }
            if page.continue_at == continue_at {
                return Err(ClientError::Decode(format!(
                    "key listing does not advance past '{continue_at}'"
                )));
            }
            continue_at = page.continue_at;
        }
        Err(ClientError::Decode(format!(
            "key listing exceeded {} pages",
            limits::MAX_LIST_PAGES
        )))
    }

    /// `DELETE /v1/key/delete/{name}`.
    pub async fn delete_key(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Request {
            method: Method::DELETE,
            path: format!("/v1/key/delete/{}", path_escape(name)),
            body: None,
            json: false,
            stream: false,
        })
        .await
    }

    /// `POST /v1/key/generate/{name}`: a new data key, in plaintext and sealed with `name`
    /// under the associated data `context`.
    pub async fn generate_key(
        &self,
        name: &str,
        context: &[u8],
    ) -> Result<GenerateResponse, ClientError> {
        let body = ContextBody {
            context: Bytes64(context.to_vec()),
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/generate/{}", path_escape(name)),
            &body,
        )?;
        self.json(req, limits::MAX_RESPONSE).await
    }

    /// `POST /v1/key/encrypt/{name}`: the ciphertext of `plaintext`.
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let body = EncryptBody {
            plaintext: Bytes64(plaintext.to_vec()),
            context: Bytes64(context.to_vec()),
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/encrypt/{}", path_escape(name)),
            &body,
        )?;
        let resp: EncryptResponse = self.json(req, limits::MAX_RESPONSE).await?;
        Ok(resp.ciphertext.0)
    }

    /// `POST /v1/key/decrypt/{name}`: the plaintext of `ciphertext`.
    pub async fn decrypt(
        &self,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let body = DecryptBody {
            ciphertext: Bytes64(ciphertext.to_vec()),
            context: Bytes64(context.to_vec()),
        };
        let req = Request::with_json(
            Method::POST,
            format!("/v1/key/decrypt/{}", path_escape(name)),
            &body,
        )?;
        let resp: DecryptResponse = self.json(req, limits::MAX_RESPONSE).await?;
        Ok(resp.plaintext.0)
    }

    /// `PUT /v1/key/hmac/{name}`: HMAC-SHA256 of `message` under the key's HMAC key. Sent
    /// without a Content-Type, as kms-go does.
    pub async fn hmac(&self, name: &str, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        let body = HmacBody {
            message: Bytes64(message.to_vec()),
        };
        let mut req = Request::with_json(
            Method::PUT,
            format!("/v1/key/hmac/{}", path_escape(name)),
            &body,
        )?;
        req.json = false;
        let resp: HmacResponse = self.json(req, limits::MAX_RESPONSE).await?;
        Ok(resp.hmac.0)
    }

    /// `GET /v1/policy/describe/{name}`.
    pub async fn describe_policy(&self, name: &str) -> Result<DescribePolicyResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/policy/describe/{}", path_escape(name))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/policy/read/{name}`.
    pub async fn read_policy(&self, name: &str) -> Result<ReadPolicyResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/policy/read/{}", path_escape(name))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/policy/list/{pattern}`.
    pub async fn list_policies(&self, pattern: &str) -> Result<ListPoliciesResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/policy/list/{}", path_escape(pattern))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/identity/describe/{identity}`.
    pub async fn describe_identity(
        &self,
        identity: &str,
    ) -> Result<DescribeIdentityResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/identity/describe/{}", path_escape(identity))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/identity/list/{pattern}`.
    pub async fn list_identities(
        &self,
        pattern: &str,
    ) -> Result<ListIdentitiesResponse, ClientError> {
        self.json(
            Request::get(format!("/v1/identity/list/{}", path_escape(pattern))),
            limits::MAX_RESPONSE,
        )
        .await
    }

    /// `GET /v1/identity/self/describe`: who the server thinks we are.
    pub async fn describe_self(&self) -> Result<SelfDescribeResponse, ClientError> {
        self.json(
            Request::get("/v1/identity/self/describe".into()),
            limits::MAX_RESPONSE,
        )
        .await
    }

    async fn log_stream<T>(&self, path: &str) -> Result<EventStream<T>, ClientError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let mut req = Request::get(path.into());
        req.stream = true;
        let resp = self.send(req).await?;
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(|e| ClientError::Transport(format!("log stream broke: {e}"))));
        Ok(ndjson(Box::pin(body)))
    }

    /// `GET /v1/log/audit`: audit events as the server produces them, until it closes the
    /// stream or the returned stream is dropped.
    pub async fn audit_log(&self) -> Result<EventStream<AuditEvent>, ClientError> {
        self.log_stream("/v1/log/audit").await
    }

    /// `GET /v1/log/error`: error-log events.
    pub async fn error_log(&self) -> Result<EventStream<ErrorEvent>, ClientError> {
        self.log_stream("/v1/log/error").await
    }
}

/// Reads a body of at most `limit` bytes; more is an error rather than a memory hazard.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ClientError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ClientError::Transport(format!("failed to read response: {e}")))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(ClientError::Decode(format!(
                "response larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Decodes an error answer, reading at most [`limits::MAX_ERROR_BODY`] of its body.
async fn error_of(mut resp: reqwest::Response) -> kes_types::KesError {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limits::MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= limits::MAX_ERROR_BODY {
            break;
        }
    }
    parse_error_response(status, content_type.as_deref(), &body)
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
