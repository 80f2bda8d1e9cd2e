//! The KES server: composes the TLS listener, KES's route semantics, authentication and
//! policies, the key cache over a keystore, metrics and the log streams into one `Server` with a
//! `run(listener, shutdown)` entry point.
//!
//! Requests are dispatched by KES's own route table (`routes`) rather than a generic router,
//! because KES's subtree paths, percent-decoded matching, method errors and processing order
//! (method, body limit, authentication, then name validation) are part of the wire contract.
//! Responses use axum's body and response types; hyper serves HTTP/1.1 and HTTP/2 on each TLS
//! connection, and the caller's identity is computed once per connection.

pub mod api;
pub mod error;
pub mod keys;
pub mod logs;
pub mod metrics;
pub mod routes;

use crate::api::Caller;
use crate::error::ApiError;
use crate::keys::Keys;
use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::routes::{Auth, Match, Routes};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kes_config::{ClientAuth, Config, KeystoreConfig, LogLevel};
use kes_crypto::KeyType;
use kes_keystore::{FsStore, KeyStore, MemoryStore, StoreError};
use kes_policy::{Access, Decision, Policy};
use kes_tls::{CertSource, ClientAuthMode, ListenerLimits, PeerIdentity, ServerTlsSource};
use kes_types::wire::{AuditEvent, AuditRequest, AuditResponse, StatusResponse};
use kes_types::GoTime;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = match option_env!("KES_BUILD_COMMIT") {
    Some(c) => c,
    None => "<unknown>",
};

/// How long open connections get to finish when the server shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] kes_tls::TlsError),
    #[error("keystore: {0}")]
    Keystore(#[from] StoreError),
    #[error("keystore '{0}' is not supported by this build")]
    UnsupportedKeystore(String),
    #[error("policy: {0}")]
    Access(#[from] kes_policy::AccessError),
    #[error("failed to create key '{name}': {message}")]
    CreateKey { name: String, message: String },
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Who is calling, computed once per TLS connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: PeerIdentity,
    pub addr: SocketAddr,
}

/// Shared state of a running server.
pub struct App {
    pub routes: Routes,
    pub access: ArcSwap<Access>,
    pub keys: Arc<Keys>,
    pub metrics: Metrics,
    pub logs: LogHub,
    pub started: GoTime,
    pub key_type: KeyType,
}

impl App {
    /// KES's `/v1/ready`, except that a node that can keep serving cached keys while the
    /// keystore is down (offline caching on) stays ready.
    async fn ready(&self) -> Result<(), ApiError> {
        match self.keys.status().await {
            Ok(_) => Ok(()),
            Err(_) if !self.keys.expiry().offline.is_zero() && self.keys.cached_len() > 0 => Ok(()),
            Err(e) if e.is_unavailable() => Err(ApiError::NotReachable),
            Err(_) => Err(ApiError::Unavailable),
        }
    }

    async fn status(&self) -> StatusResponse {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let proc = metrics::ProcStats::read();
        let mut st = StatusResponse {
            version: VERSION.to_owned(),
            os: std::env::consts::OS.to_owned(),
            arch: go_arch().to_owned(),
            uptime: self.metrics.uptime().as_secs(),
            num_cpu: cpus,
            num_cpu_used: cpus,
            mem_heap_used: proc.resident,
            mem_stack_used: proc.stack,
            ..Default::default()
        };
        match self.keys.status().await {
            Ok(s) => {
                st.keystore_latency = Some((s.latency.as_millis() as u64).max(1));
            }
            Err(_) => {
                // Both flags: kms-go refuses `unreachable` without `unavailable`.
                st.keystore_unreachable = true;
                st.keystore_unavailable = true;
            }
        }
        st
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Builds the keystore a configuration names.
pub fn open_keystore(cfg: &KeystoreConfig) -> Result<Arc<dyn KeyStore>, ServerError> {
    match cfg {
        KeystoreConfig::Memory => Ok(Arc::new(MemoryStore::new())),
        KeystoreConfig::Fs { path } => Ok(Arc::new(FsStore::open(path.clone())?)),
        KeystoreConfig::Vault(_) => Err(ServerError::UnsupportedKeystore("vault".into())),
        KeystoreConfig::AwsSecretsManager(_) => Err(ServerError::UnsupportedKeystore(
            "aws.secretsmanager".into(),
        )),
        KeystoreConfig::Unsupported(name) => Err(ServerError::UnsupportedKeystore(name.clone())),
    }
}

/// Builds the access state from the configuration's policies.
pub fn access_from_config(cfg: &Config) -> Result<Access, ServerError> {
    let policies = cfg.policies.iter().map(|(name, p)| {
        (
            name.clone(),
            Policy {
                allow: p.allow.clone(),
                deny: p.deny.clone(),
            },
        )
    });
    let assignments = cfg.policies.iter().flat_map(|(name, p)| {
        p.identities
            .iter()
            .map(move |id| (id.clone(), name.clone()))
    });
    Ok(Access::new(&cfg.admin_identity, policies, assignments)?)
}

/// A configured server, ready to run.
pub struct Server {
    app: Arc<App>,
    tls_source: ServerTlsSource,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    keys_to_create: Vec<String>,
}

impl Server {
    /// Builds a server from a configuration. `cert` replaces the configuration's `tls.cert` and
    /// `tls.key` (for `--dev`).
    pub fn new(cfg: &Config, cert: Option<CertSource>, logs: LogHub) -> Result<Self, ServerError> {
        let store = open_keystore(&cfg.keystore)?;
        Self::with_store(cfg, cert, logs, store)
    }

    /// As `new`, with a keystore supplied by the caller.
    pub fn with_store(
        cfg: &Config,
        cert: Option<CertSource>,
        logs: LogHub,
        store: Arc<dyn KeyStore>,
    ) -> Result<Self, ServerError> {
        let routes = Routes::new(&cfg.api);
        let tls_source = ServerTlsSource {
            cert: cert.unwrap_or_else(|| CertSource::Files {
                cert: cfg.tls.cert.clone(),
                key: cfg.tls.key.clone(),
                password: cfg.tls.password.clone(),
            }),
            auth: match cfg.tls.auth {
                ClientAuth::Off => ClientAuthMode::Any,
                ClientAuth::On => ClientAuthMode::Verify,
            },
            ca: cfg.tls.ca.clone(),
            client_cert_optional: routes.any_skip_auth(),
        };
        let tls = Arc::new(ArcSwap::new(tls_source.build()?));
        logs.set_audit_stdout(cfg.log.audit != LogLevel::Off);
        let app = App {
            routes,
            access: ArcSwap::from_pointee(access_from_config(cfg)?),
            keys: Keys::new(store, cfg.cache),
            metrics: Metrics::default(),
            logs,
            started: GoTime::now_utc(),
            key_type: KeyType::for_this_cpu(),
        };
        Ok(Self {
            app: Arc::new(app),
            tls_source,
            tls,
            keys_to_create: cfg.keys.clone(),
        })
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Re-reads the certificate, key and CA files; new connections use them.
    pub fn reload_tls(&self) -> Result<(), ServerError> {
        let cfg = self.tls_source.build()?;
        self.tls.store(cfg);
        tracing::info!("tls certificates reloaded");
        Ok(())
    }

    /// A handle that reloads certificates, for signal handlers.
    pub fn reloader(&self) -> impl Fn() -> Result<(), ServerError> + Send + Sync + 'static {
        let src = self.tls_source.clone();
        let tls = Arc::clone(&self.tls);
        move || {
            tls.store(src.build()?);
            tracing::info!("tls certificates reloaded");
            Ok(())
        }
    }

    /// Creates the configuration's `keys:` that do not exist yet.
    pub async fn create_configured_keys(&self) -> Result<(), ServerError> {
        for name in &self.keys_to_create {
            let version =
                kes_crypto::KeyVersion::generate(self.app.key_type, self.app.access.load().admin());
            match self.app.keys.create(name, &version).await {
                Ok(()) => tracing::info!(key = %name, "created configured key"),
                Err(ApiError::KeyExists) => {}
                Err(e) => {
                    return Err(ServerError::CreateKey {
                        name: name.clone(),
                        message: e.to_kes().message,
                    })
                }
            }
        }
        Ok(())
    }

    /// Serves on `listener` until `shutdown` fires.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServerError> {
        self.create_configured_keys().await?;
        let maintenance =
            tokio::spawn(Arc::clone(&self.app.keys).run_maintenance(shutdown.child_token()));
        let app = Arc::clone(&self.app);
        let cancel = shutdown.clone();
        kes_tls::serve_tls(
            listener,
            Arc::clone(&self.tls),
            ListenerLimits::default(),
            shutdown.clone(),
            move |stream, addr| serve_connection(Arc::clone(&app), stream, addr, cancel.clone()),
        )
        .await;
        maintenance.abort();
        Ok(())
    }
}

async fn serve_connection(
    app: Arc<App>,
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
    cancel: CancellationToken,
) {
    let peer = kes_tls::identify(stream.get_ref().1.peer_certificates());
    let conn = Arc::new(ConnInfo { peer, addr });
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = Arc::clone(&app);
        let conn = Arc::clone(&conn);
        async move { Ok::<_, std::convert::Infallible>(dispatch(&app, &conn, req.map(Body::new)).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// Runs one request through KES's processing order.
pub async fn dispatch(app: &App, conn: &ConnInfo, req: Request<Body>) -> Response {
    let decoded = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let (route, resource) = match app.routes.find(&decoded) {
        Match::NotFound => return ApiError::NoRoute.into_response(),
        Match::Redirect(to) => {
            let location = match req.uri().query() {
                Some(q) => format!("{to}?{q}"),
                None => to,
            };
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        Match::Route { route, resource } => (route, resource.to_owned()),
    };
    // A subtree root requested without its slash is served as KES serves it after the
    // redirect, so policies see the slashed path (`/v1/key/list/` for `/v1/key/list`).
    let decoded = if route.is_subtree() && !decoded.starts_with(route.path) {
        format!("{}{resource}", route.path)
    } else {
        decoded
    };
    let started = Instant::now();
    let _active = route.is_metered().then(|| app.metrics.begin());
    let identity = match &conn.peer {
        PeerIdentity::Identity(id) => id.as_str(),
        _ => "",
    };
    let response = match process(app, conn, route, &decoded, &resource, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if route.is_metered() {
        app.metrics.observe(status, elapsed);
    }
    if route.is_audited() {
        let event = AuditEvent {
            time: GoTime::now_utc(),
            request: AuditRequest {
                ip: conn.addr.ip().to_string(),
                path: decoded.clone(),
                identity: identity.to_owned(),
            },
            response: AuditResponse {
                code: status,
                time: elapsed.as_millis() as u64,
            },
        };
        let n = app.logs.audit(&event);
        app.metrics
            .audit_events
            .fetch_add(n as u64, Ordering::Relaxed);
    }
    response
}

async fn process(
    app: &App,
    conn: &ConnInfo,
    route: &routes::Route,
    path: &str,
    resource: &str,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let method = req.method().as_str();
    if method != route.method && !(route.method == "PUT" && method == "POST") {
        return Err(ApiError::MethodNotAllowed {
            got: method.to_owned(),
            want: route.method,
        });
    }
    let query = req.uri().query().map(str::to_owned);
    let body = read_body(req, route.max_body).await?;

    let identity = match route.auth {
        Auth::None | Auth::IdentifyOnly => match &conn.peer {
            PeerIdentity::Identity(id) => id.as_str(),
            _ => "",
        },
        Auth::Verify => {
            let id = match &conn.peer {
                PeerIdentity::Missing => return Err(ApiError::CertRequired),
                PeerIdentity::Many => return Err(ApiError::ManyCerts),
                PeerIdentity::Identity(id) => id.as_str(),
            };
            if app.access.load().authorize(id, path) == Decision::Denied {
                return Err(ApiError::NotAllowed);
            }
            id
        }
    };

    let work = api::handle(
        app,
        route.id,
        Caller { identity },
        resource,
        query.as_deref(),
        body,
    );
    if route.timeout.is_zero() {
        work.await
    } else {
        tokio::time::timeout(route.timeout, work)
            .await
            .unwrap_or(Err(ApiError::Timeout))
    }
}

/// Reads at most `max` bytes of body; routes without a body never read it.
async fn read_body(req: Request<Body>, max: u64) -> Result<Bytes, ApiError> {
    if max == 0 {
        return Ok(Bytes::new());
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            return Err(ApiError::BodyTooLarge);
        }
    }
    let limited = Limited::new(req.into_body(), max as usize);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge),
        Err(_) => Err(ApiError::InvalidBody),
    }
}

/// Binds the configured address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}
