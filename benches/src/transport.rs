//! Connections and request sending.
//!
//! Each endpoint gets a fixed number of connection slots; worker `w` always uses slot
//! `w % slots`, so the number of connections is exactly what was asked for and no pool logic
//! sits between the generator and the server. An HTTP/1.1 slot carries one request at a time
//! (workers sharing a slot queue for it, as they would for a bounded client pool); an HTTP/2
//! slot multiplexes every request of its workers. A slot whose connection broke reconnects on
//! its next use, so a node that restarts is picked up again.
//!
//! Requests go through `kes-client`'s [`LoadBalancer`], which applies kms-go's endpoint order
//! and failover rules, and each endpoint attempt is retried like kms-go's `retry.Do` (network
//! errors and 503, after 200 ms plus up to 800 ms). A benchmark of a replica set therefore
//! shows the latency a MinIO deployment would see while a node fails.
//!
//! Like kms-go, the retries resend writes too. An attempt that got no answer may still have
//! been carried out (a node that stops under load has forwarded a create to the leader and
//! closes the connection before it answers), so [`Transport::send_tracked`] also says whether
//! that happened: the caller can then tell a retried create meeting its own key from a real
//! conflict.

use crate::config::{limits, Auth, Config, Protocol, TargetKind, Trust};
use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kes_client::{ClientError, HasStatus, LoadBalancer};
use rand::Rng;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long establishing one connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One request, prepared once and sent many times.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// Path and query, already escaped.
    pub path: String,
    pub body: Option<Bytes>,
    /// Label the body `application/json` (kms-go does for every body but HMAC's).
    pub json: bool,
}

impl Request {
    pub fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            body: None,
            json: false,
        }
    }

    pub fn post(path: String, body: Option<Bytes>) -> Self {
        Self {
            method: Method::POST,
            json: body.is_some(),
            path,
            body,
        }
    }
}

/// A server's answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl HasStatus for Answer {
    fn status_code(&self) -> u16 {
        self.status
    }
}

/// No answer at all.
#[derive(Clone, Debug)]
pub struct Failure {
    /// A short class for error tables: `timeout`, `connect`, `tls`, `connection`.
    pub kind: &'static str,
    pub message: String,
    /// Whether sending again may help (not for certificate problems).
    pub retryable: bool,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: kind != "tls",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

struct Endpoint {
    /// As the load balancer knows it.
    url: String,
    https: bool,
    /// `host:port`, for the Host header, the :authority and the TCP connect.
    authority: String,
    authority_header: HeaderValue,
    server_name: ServerName<'static>,
    slots: Vec<tokio::sync::Mutex<Option<Sender>>>,
}

/// Connections to every endpoint and the failover state over them.
pub struct Transport {
    protocol: Protocol,
    tls: TlsConnector,
    headers: Vec<(HeaderName, HeaderValue)>,
    endpoints: Vec<Endpoint>,
    lb: LoadBalancer,
    timeout: Duration,
    retries: u32,
    /// A new connection for every request.
    reconnect: bool,
}

/// Normalises an endpoint for `target`: KES endpoints always use TLS (as the KES clients make
/// them); OpenBao endpoints keep an explicit `http://`, which its dev server listens on.
pub fn normalize(target: TargetKind, endpoint: &str) -> Option<String> {
    let t = endpoint.trim();
    if target == TargetKind::Openbao && t.len() > 7 && t[..7].eq_ignore_ascii_case("http://") {
        let rest = t[7..].trim_end_matches('/');
        return (!rest.is_empty()).then(|| format!("http://{rest}"));
    }
    kes_client::normalize_endpoint(t)
}

impl Transport {
    pub fn new(cfg: &Config) -> anyhow::Result<Self> {
        let tls = TlsConnector::from(Arc::new(tls_config(cfg)?));
        let slots = cfg.connections_per_endpoint().max(1);
        let mut urls = Vec::new();
        for e in &cfg.endpoints {
            let url =
                normalize(cfg.target, e).with_context(|| format!("invalid endpoint '{e}'"))?;
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        // The balancer decides the order (localhost first), so endpoints are looked up by URL.
        let lb = LoadBalancer::new(urls.clone());
        let mut endpoints = Vec::new();
        for url in urls {
            let uri: Uri = url
                .parse()
                .with_context(|| format!("invalid endpoint '{url}'"))?;
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .filter(|h| !h.is_empty())
                .with_context(|| format!("endpoint '{url}' has no host"))?;
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let authority = if bare.contains(':') {
                format!("[{bare}]:{port}")
            } else {
                format!("{bare}:{port}")
            };
            let server_name = ServerName::try_from(bare.to_owned())
                .with_context(|| format!("endpoint '{url}': invalid host name"))?;
            endpoints.push(Endpoint {
                authority_header: HeaderValue::from_str(&authority)
                    .with_context(|| format!("endpoint '{url}': invalid host"))?,
                url,
                https,
                authority,
                server_name,
                slots: (0..slots).map(|_| tokio::sync::Mutex::new(None)).collect(),
            });
        }
        let mut headers = Vec::new();
        if let Some(Auth::Token(token)) = &cfg.auth {
            let mut v = HeaderValue::from_str(token).context("the token is not a valid header")?;
            v.set_sensitive(true);
            headers.push((HeaderName::from_static("x-vault-token"), v));
        }
        Ok(Self {
            protocol: cfg.protocol,
            tls,
            headers,
            endpoints,
            lb,
            timeout: cfg.timeout,
            retries: cfg.retries,
            reconnect: cfg.reconnect,
        })
    }

    /// The endpoints in balancing order.
    pub fn urls(&self) -> Vec<String> {
        self.lb.urls()
    }

    /// Sends `req` on worker `worker`'s connections: through the endpoints in kms-go's order,
    /// with kms-go's retries, within the request timeout. An error status is an [`Answer`];
    /// only a missing answer is a [`Failure`].
    pub async fn send(&self, worker: usize, req: &Request) -> Result<Answer, Failure> {
        self.send_tracked(worker, req).await.0
    }

    /// [`send`](Self::send), and whether some attempt may have reached a server without its
    /// answer reaching us: its connection broke once established, or it was answered with a
    /// 5xx (a follower whose forward to the leader failed midway). A later attempt of a create
    /// or a delete may then find that attempt's effect ("key already exists", "key does not
    /// exist"). A refused connection or a failed handshake never reached a server.
    pub async fn send_tracked(
        &self,
        worker: usize,
        req: &Request,
    ) -> (Result<Answer, Failure>, bool) {
        let uncertain = std::sync::atomic::AtomicBool::new(false);
        let result = self.send_inner(worker, req, &uncertain).await;
        (result, uncertain.into_inner())
    }

    async fn send_inner(
        &self,
        worker: usize,
        req: &Request,
        uncertain: &std::sync::atomic::AtomicBool,
    ) -> Result<Answer, Failure> {
        let n = self.endpoints.len();
        let offset = if n > 1 {
            rand::thread_rng().gen_range(0..n)
        } else {
            0
        };
        // The balancer only sees an opaque error; the classified one is kept here.
        let last = parking_lot::Mutex::new(None::<Failure>);
        let sent = self.lb.send(offset, |url| {
            let last = &last;
            async move {
                self.attempt(worker, &url, req, uncertain)
                    .await
                    .map_err(|f| {
                        let e = ClientError::Transport(f.message.clone());
                        *last.lock() = Some(f);
                        e
                    })
            }
        });
        match tokio::time::timeout(self.timeout, sent).await {
            Err(_) => Err(Failure::new("timeout", "request timed out")),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(last
                .lock()
                .take()
                .unwrap_or_else(|| Failure::new("connection", e.to_string()))),
        }
    }

    /// One endpoint, with retries on network errors and 503; sets `uncertain` as described at
    /// [`send_tracked`](Self::send_tracked).
    async fn attempt(
        &self,
        worker: usize,
        url: &str,
        req: &Request,
        uncertain: &std::sync::atomic::AtomicBool,
    ) -> Result<Answer, Failure> {
        let Some(ep) = self.endpoints.iter().find(|e| e.url == url) else {
            return Err(Failure::new("connect", format!("unknown endpoint {url}")));
        };
        let mut retries = self.retries;
        loop {
            let result = self.once(ep, worker, req).await;
            let unknown = match &result {
                Ok(a) => a.status >= 500,
                Err(f) => f.kind == "connection",
            };
            if unknown {
                uncertain.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let retry = match &result {
                Ok(a) => a.status == 503,
                Err(f) => f.retryable,
            };
            if !retry || retries == 0 {
                return result.map_err(|f| Failure {
                    message: format!("{}: {}", ep.url, f.message),
                    ..f
                });
            }
            retries -= 1;
            let jitter = rand::thread_rng().gen_range(0..kes_client::limits::RETRY_JITTER_MS);
            tokio::time::sleep(kes_client::limits::RETRY_DELAY + Duration::from_millis(jitter))
                .await;
        }
    }

    fn build(&self, ep: &Endpoint, req: &Request) -> Result<http::Request<Full<Bytes>>, Failure> {
        let mut b = http::Request::builder().method(req.method.clone());
        b = match self.protocol {
            Protocol::Http1 => b.uri(req.path.as_str()).header(HOST, &ep.authority_header),
            Protocol::Http2 => {
                let scheme = if ep.https { "https" } else { "http" };
                b.uri(format!("{scheme}://{}{}", ep.authority, req.path))
            }
        };
        if req.json && req.body.is_some() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        // Go sends `Content-Length: 0` for a body-less POST or PUT; an empty full body does too.
        let body = req.body.clone().unwrap_or_default();
        b.body(Full::new(body))
            .map_err(|e| Failure::new("connection", format!("invalid request: {e}")))
    }

    async fn once(&self, ep: &Endpoint, worker: usize, req: &Request) -> Result<Answer, Failure> {
        let slot = ep
            .slots
            .get(worker % ep.slots.len().max(1))
            .ok_or_else(|| Failure::new("connect", "no connection slot"))?;
        let request = self.build(ep, req)?;
        match self.protocol {
            Protocol::Http1 => {
                // The slot stays locked for the whole exchange: one request at a time per
                // HTTP/1.1 connection, and the body must be read before the next one.
                let mut guard = slot.lock().await;
                let result = async {
                    let mut sender = match guard.take() {
                        Some(Sender::H1(s)) if !s.is_closed() && !self.reconnect => s,
                        _ => match self.connect(ep).await? {
                            Sender::H1(s) => s,
                            Sender::H2(_) => return Err(Failure::new("connect", "wrong protocol")),
                        },
                    };
                    sender.ready().await.map_err(conn_failure)?;
                    let resp = sender.send_request(request).await.map_err(conn_failure)?;
                    let answer = read(resp).await?;
                    Ok((sender, answer))
                }
                .await;
                match result {
                    Ok((sender, answer)) => {
                        // With --reconnect the connection closes when its sender is dropped.
                        if !self.reconnect {
                            *guard = Some(Sender::H1(sender));
                        }
                        Ok(answer)
                    }
                    // The connection is dropped; the slot reconnects on its next use.
                    Err(f) => Err(f),
                }
            }
            Protocol::Http2 => {
                let mut sender = {
                    let mut guard = slot.lock().await;
                    match guard.as_ref() {
                        Some(Sender::H2(s)) if !s.is_closed() && !self.reconnect => s.clone(),
                        _ => {
                            let s = match self.connect(ep).await? {
                                Sender::H2(s) => s,
                                Sender::H1(_) => {
                                    return Err(Failure::new("connect", "wrong protocol"))
                                }
                            };
                            if !self.reconnect {
                                *guard = Some(Sender::H2(s.clone()));
                            }
                            s
                        }
                    }
                };
                sender.ready().await.map_err(conn_failure)?;
                let resp = sender.send_request(request).await.map_err(conn_failure)?;
                read(resp).await
            }
        }
    }

    async fn connect(&self, ep: &Endpoint) -> Result<Sender, Failure> {
        let connect = async {
            let tcp = TcpStream::connect(ep.authority.as_str())
                .await
                .map_err(|e| Failure::new("connect", e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            if !ep.https {
                // Plain HTTP (an OpenBao dev server): HTTP/2 only with prior knowledge.
                return handshake(TokioIo::new(tcp), self.protocol).await;
            }
            let tls = self
                .tls
                .connect(ep.server_name.clone(), tcp)
                .await
                .map_err(tls_failure)?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            if self.protocol == Protocol::Http2 && alpn.as_deref() != Some(b"h2") {
                return Err(Failure::new(
                    "tls",
                    "the server does not offer HTTP/2 (ALPN h2)",
                ));
            }
            handshake(TokioIo::new(tls), self.protocol).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new("timeout", "connecting timed out")),
        }
    }
}

async fn handshake<I>(io: I, protocol: Protocol) -> Result<Sender, Failure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            let (sender, conn) = http1::handshake(io).await.map_err(conn_failure)?;
            // The task ends when the sender is dropped or the peer closes the connection.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H1(sender))
        }
        Protocol::Http2 => {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(conn_failure)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2(sender))
        }
    }
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> Result<Answer, Failure> {
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), limits::MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| Failure::new("connection", format!("reading the response: {e}")))?
        .to_bytes();
    Ok(Answer { status, body })
}

fn conn_failure(e: hyper::Error) -> Failure {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    Failure::new("connection", msg)
}

fn tls_failure(e: std::io::Error) -> Failure {
    let is_tls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if is_tls {
        Failure::new("tls", e.to_string())
    } else {
        Failure::new("connect", e.to_string())
    }
}

fn roots(trust: &Trust) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if trust.ca_files.is_empty() && trust.ca_pems.is_empty() {
        // Without --ca, trust what the system trusts; unreadable system certificates are
        // skipped as Go does.
        let native = rustls_native_certs::load_native_certs();
        let _ = roots.add_parsable_certificates(native.certs);
    }
    for path in &trust.ca_files {
        kes_tls::add_ca(&mut roots, path)?;
    }
    for pem in &trust.ca_pems {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("invalid CA certificate")?;
        if certs.is_empty() {
            bail!("the CA PEM contains no certificate");
        }
        for cert in certs {
            roots.add(cert).context("invalid CA certificate")?;
        }
    }
    Ok(roots)
}

/// TLS 1.3 and 1.2 on ring, ALPN fixed to the chosen protocol, the client certificate from the
/// API key or files.
fn tls_config(cfg: &Config) -> anyhow::Result<ClientConfig> {
    let provider = kes_tls::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = if cfg.trust.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                kes_tls::insecure::AcceptAnyServerCert::new(provider),
            ))
    } else {
        builder.with_root_certificates(roots(&cfg.trust)?)
    };
    let mut config = match &cfg.auth {
        Some(Auth::ApiKey(key)) => {
            let ck = kes_tls::certgen::api_key_certificate(key)
                .context("failed to create a certificate for the API key")?;
            let key = PrivateKeyDer::try_from(ck.key_der.to_vec())
                .map_err(|e| anyhow::anyhow!("invalid API key certificate key: {e}"))?;
            builder.with_client_auth_cert(vec![CertificateDer::from(ck.cert_der)], key)?
        }
        Some(Auth::CertFiles { cert, key }) => {
            let chain = kes_tls::load_certs(cert)?;
            let key = kes_tls::load_key(key, None)?;
            builder
                .with_client_auth_cert(chain, key)
                .context("invalid client certificate or key")?
        }
        Some(Auth::Token(_)) | None => builder.with_no_client_auth(),
    };
    if cfg.reconnect {
        // Every connection pays a full handshake, as a client without a session cache does.
        config.resumption = rustls::client::Resumption::disabled();
    }
    config.alpn_protocols = match cfg.protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_normalisation() {
        assert_eq!(
            normalize(TargetKind::Kes, "127.0.0.1:7373/").as_deref(),
            Some("https://127.0.0.1:7373")
        );
        assert_eq!(
            normalize(TargetKind::Kes, "http://127.0.0.1:7373").as_deref(),
            Some("https://127.0.0.1:7373")
        );
        assert_eq!(
            normalize(TargetKind::Openbao, "http://127.0.0.1:8200/").as_deref(),
            Some("http://127.0.0.1:8200")
        );
        assert_eq!(
            normalize(TargetKind::Openbao, "127.0.0.1:8200").as_deref(),
            Some("https://127.0.0.1:8200")
        );
        assert_eq!(normalize(TargetKind::Openbao, "http://"), None);
    }

    #[tokio::test]
    async fn endpoints_keep_balancer_order() {
        let cfg = Config {
            endpoints: vec![
                "https://kes-2:7373".into(),
                "127.0.0.1:7373".into(),
                "[::1]:7000".into(),
            ],
            trust: Trust {
                insecure: true,
                ..Trust::default()
            },
            ..Config::default()
        };
        let t = Transport::new(&cfg).unwrap();
        assert_eq!(
            t.urls(),
            vec![
                "https://127.0.0.1:7373",
                "https://[::1]:7000",
                "https://kes-2:7373"
            ]
        );
        let v6 = t.endpoints.iter().find(|e| e.url.contains("::1")).unwrap();
        assert_eq!(v6.authority, "[::1]:7000");
        assert_eq!(v6.slots.len(), 16);
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = Config {
            endpoints: vec![format!("127.0.0.1:{port}")],
            trust: Trust {
                insecure: true,
                ..Trust::default()
            },
            retries: 0,
            ..Config::default()
        };
        let t = Transport::new(&cfg).unwrap();
        let (r, uncertain) = t.send_tracked(0, &Request::get("/version".into())).await;
        let f = r.unwrap_err();
        assert_eq!(f.kind, "connect", "{f}");
        assert!(f.message.contains(&port.to_string()), "{f}");
        // A refused connection never reached a server.
        assert!(!uncertain);
    }
}
