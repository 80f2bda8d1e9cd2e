//! The KES server: composes the TLS listener, KES's route semantics, authentication and
//! policies, the key cache over a keystore, metrics and the log streams into one `Server` with a
//! `run(listener, shutdown)` entry point.
//!
//! Requests are dispatched by KES's own route table (`routes`) rather than a generic router,
//! because KES's subtree paths, percent-decoded matching, method errors and processing order
//! (method, body limit, authentication, then name validation) are part of the wire contract.
//! Responses use axum's body and response types; hyper serves HTTP/1.1 and HTTP/2 on each TLS
//! connection, and the caller's identity is computed once per connection.

pub mod admin;
pub mod api;
mod budget;
pub mod error;
pub mod lazy;
pub mod local;
pub mod logs;
pub mod metrics;
pub mod routes;
mod within;
pub mod writes;
pub use budget::Budget;

use crate::api::Caller;
use crate::budget::Held;
use crate::error::ApiError;
use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::routes::{Auth, Match, Routes};
use crate::within::within;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kes_cluster::{Cluster, Serving, Tasks};
use kes_config::{ClientAuth, Config, KeystoreConfig};
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
    #[error("cluster: {0}")]
    Cluster(String),
    /// A task the node needs ended while it ran (see `kes_cluster::tasks`).
    #[error("{0}")]
    TaskEnded(String),
    #[error(transparent)]
    DataDir(#[from] kes_raft::DataDirError),
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
    /// The listener's record of the connection (absent for requests made in-process).
    pub conn: Option<Arc<kes_tls::Conn>>,
    /// Request body bytes this connection may hold at once (see [`CONN_BODY_BUDGET`]).
    pub body_budget: Arc<Budget>,
}

impl ConnInfo {
    /// A connection's record for requests that do not come through the listener.
    pub fn new(peer: PeerIdentity, addr: SocketAddr) -> Self {
        Self {
            peer,
            addr,
            conn: None,
            body_budget: Arc::new(Budget::new(CONN_BODY_BUDGET)),
        }
    }
}

/// Request body bytes one connection may hold at once, over all its requests: enough for the
/// largest body a route takes, far from what thousands of HTTP/2 streams could otherwise pin.
/// A request whose body does not fit waits for the others (its client's flow control backs
/// up) until `limits.body_timeout`.
pub const CONN_BODY_BUDGET: usize = 2 << 20;
/// Request body bytes the whole server holds at once, over all connections.
pub const SERVER_BODY_BUDGET: usize = 256 << 20;

/// Shared state of a running server.
pub struct App {
    pub routes: Routes,
    pub access: ArcSwap<Access>,
    pub cluster: Arc<Cluster>,
    /// The local configuration's admin identity (not replicated: each node's file decides).
    pub admin: String,
    pub metrics: Metrics,
    pub logs: LogHub,
    pub started: GoTime,
    pub key_type: KeyType,
    /// Connection and request bounds.
    pub limits: kes_config::Limits,
    /// Request body bytes held by all connections (see [`SERVER_BODY_BUDGET`]).
    pub body_budget: Budget,
}

impl App {
    /// `/v1/ready`: this node can serve crypto operations. It has the cluster cache key and is
    /// in contact with the majority (or within the offline window). The keystore's health is
    /// not part of it: cached keys are served while the keystore is down.
    async fn ready(&self) -> Result<(), ApiError> {
        match self.cluster.serving() {
            Serving::Ok => Ok(()),
            Serving::Sealed => Err(ApiError::Sealed),
            Serving::CutOff => Err(ApiError::ClusterUnavailable),
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
        match self.cluster.status().await {
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
///
/// A backend that cannot be reached now (the filesystem path missing, Vault down or sealed)
/// does not stop the node: it starts, serves what the cluster has cached, and opens the store
/// once it answers. A configuration the backend refuses (bad credentials, an invalid setting)
/// is an error at start, as in KES.
pub async fn open_keystore(cfg: &KeystoreConfig) -> Result<Arc<dyn KeyStore>, ServerError> {
    match cfg {
        KeystoreConfig::Memory => Ok(Arc::new(MemoryStore::new())),
        KeystoreConfig::Fs { path } => match FsStore::open(path.clone()) {
            Ok(s) => Ok(Arc::new(s)),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(path = %path.display(), error = %e, "keystore not available yet; will retry");
                let path = path.clone();
                Ok(Arc::new(lazy::LazyStore::new("fs", move || {
                    let path = path.clone();
                    Box::pin(async move {
                        FsStore::open(path).map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                    })
                })))
            }
            Err(e) => Err(e.into()),
        },
        KeystoreConfig::Vault(v) => match kes_keystore_vault::VaultStore::connect(v).await {
            Ok(s) => Ok(Arc::new(s)),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(endpoint = %v.endpoint, error = %e, "vault not reachable yet; will retry");
                let v = v.clone();
                Ok(Arc::new(lazy::LazyStore::new("vault", move || {
                    let v = v.clone();
                    Box::pin(async move {
                        kes_keystore_vault::VaultStore::connect(&v)
                            .await
                            .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                    })
                })))
            }
            Err(e) => Err(e.into()),
        },
        // Builds a client only; nothing is sent until the first call.
        KeystoreConfig::AwsSecretsManager(a) => {
            Ok(Arc::new(kes_keystore_aws::AwsStore::connect(a).await?))
        }
        #[cfg(feature = "gcp")]
        KeystoreConfig::GcpSecretManager(g) => {
            let g = g.clone();
            connect_or_wait("gcp", &g.endpoint.clone(), move || {
                let g = g.clone();
                Box::pin(async move {
                    kes_keystore_cloud::gcp::GcpStore::connect(&g)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                })
            })
            .await
        }
        #[cfg(not(feature = "gcp"))]
        KeystoreConfig::GcpSecretManager(_) => Err(ServerError::UnsupportedKeystore(
            "gcp (left out of this build: cargo feature `gcp`)".into(),
        )),
        #[cfg(feature = "azure")]
        KeystoreConfig::AzureKeyVault(a) => {
            let a = a.clone();
            connect_or_wait("azure", &a.endpoint.clone(), move || {
                let a = a.clone();
                Box::pin(async move {
                    kes_keystore_cloud::azure::AzureStore::connect(&a)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                })
            })
            .await
        }
        #[cfg(not(feature = "azure"))]
        KeystoreConfig::AzureKeyVault(_) => Err(ServerError::UnsupportedKeystore(
            "azure (left out of this build: cargo feature `azure`)".into(),
        )),
        #[cfg(feature = "fortanix")]
        KeystoreConfig::FortanixSdkms(f) => {
            let f = f.clone();
            connect_or_wait("fortanix", &f.endpoint.clone(), move || {
                let f = f.clone();
                Box::pin(async move {
                    kes_keystore_cloud::fortanix::FortanixStore::connect(&f)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                })
            })
            .await
        }
        #[cfg(not(feature = "fortanix"))]
        KeystoreConfig::FortanixSdkms(_) => Err(ServerError::UnsupportedKeystore(
            "fortanix (left out of this build: cargo feature `fortanix`)".into(),
        )),
        #[cfg(feature = "keysecure")]
        KeystoreConfig::KeySecure(k) => {
            let k = k.clone();
            connect_or_wait("gemalto", &k.endpoint.clone(), move || {
                let k = k.clone();
                Box::pin(async move {
                    kes_keystore_cloud::keysecure::KeySecureStore::connect(&k)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                })
            })
            .await
        }
        #[cfg(not(feature = "keysecure"))]
        KeystoreConfig::KeySecure(_) => Err(ServerError::UnsupportedKeystore(
            "gemalto (left out of this build: cargo feature `keysecure`)".into(),
        )),
        #[cfg(feature = "entrust")]
        KeystoreConfig::KeyControl(k) => {
            let k = k.clone();
            connect_or_wait("entrust", &k.endpoint.clone(), move || {
                let k = k.clone();
                Box::pin(async move {
                    kes_keystore_cloud::keycontrol::KeyControlStore::connect(&k)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                })
            })
            .await
        }
        #[cfg(not(feature = "entrust"))]
        KeystoreConfig::KeyControl(_) => Err(ServerError::UnsupportedKeystore(
            "entrust (left out of this build: cargo feature `entrust`)".into(),
        )),
        #[cfg(feature = "bitwarden")]
        KeystoreConfig::Bitwarden(b) => {
            let b = b.clone();
            connect_or_wait("bitwarden", &b.api_url.clone(), move || {
                let b = b.clone();
                Box::pin(async move {
                    kes_keystore_cloud::bitwarden::BitwardenStore::connect(&b)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
                })
            })
            .await
        }
        #[cfg(not(feature = "bitwarden"))]
        KeystoreConfig::Bitwarden(_) => Err(ServerError::UnsupportedKeystore(
            "bitwarden (left out of this build: cargo feature `bitwarden`)".into(),
        )),
    }
}

/// Opens a store with `connect`: at once when the KMS answers, or, when it is unreachable, on
/// first use once it answers (the node starts and serves what the cluster has cached). A
/// refusal (bad credentials, an invalid setting) stops the start with the KMS's message.
#[allow(dead_code)]
async fn connect_or_wait<F>(
    kind: &'static str,
    endpoint: &str,
    connect: F,
) -> Result<Arc<dyn KeyStore>, ServerError>
where
    F: Fn() -> futures_util::future::BoxFuture<'static, Result<Arc<dyn KeyStore>, StoreError>>
        + Send
        + Sync
        + 'static,
{
    match connect().await {
        Ok(s) => Ok(s),
        // Retryable: nothing answered (or a 5xx, a timeout). Not retryable: the configuration
        // or the request was refused, which waiting does not fix.
        Err(StoreError::Unavailable {
            retryable: true,
            message,
        }) => {
            let e = StoreError::unavailable(true, message);
            tracing::warn!(keystore = kind, %endpoint, error = %e, "keystore not reachable yet; will retry");
            Ok(Arc::new(lazy::LazyStore::new(kind, connect)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The policies and assignments a configuration seeds the cluster state with.
pub fn seed_from_config(cfg: &Config) -> kes_cluster::Seed {
    let policies = cfg
        .policies
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                kes_state::PolicyDef {
                    allow: p.allow.clone(),
                    deny: p.deny.clone(),
                },
            )
        })
        .collect();
    let assignments = cfg
        .policies
        .iter()
        .flat_map(|(name, p)| {
            p.identities
                .iter()
                .map(move |id| (id.clone(), name.clone()))
        })
        .collect();
    kes_cluster::Seed {
        admin: cfg.admin_identity.clone(),
        policies,
        assignments,
        restore: None,
    }
}

/// The replicated policies and assignments, as the access state needs them.
#[derive(PartialEq)]
struct PolicyView {
    policies: Vec<(String, kes_state::PolicyDef)>,
    assignments: Vec<(String, String)>,
}

impl PolicyView {
    fn of(s: &kes_state::State) -> Self {
        let policies = s
            .policies("")
            .into_iter()
            .filter_map(|n| Some((n.clone(), s.policy(&n)?.def.clone())))
            .collect();
        let assignments = s
            .identities("")
            .into_iter()
            .filter_map(|i| Some((i.clone(), s.assignment(&i)?.to_owned())))
            .collect();
        Self {
            policies,
            assignments,
        }
    }

    /// The access state, with this node's admin.
    fn access(&self, admin: &str) -> Access {
        let policies = self.policies.iter().map(|(name, def)| {
            (
                name.clone(),
                Policy {
                    allow: def.allow.clone(),
                    deny: def.deny.clone(),
                },
            )
        });
        let assignments = self
            .assignments
            .iter()
            .filter(|(id, _)| id != admin)
            .cloned();
        Access::new(admin, policies, assignments).unwrap_or_else(|e| {
            tracing::error!(error = %e, "replicated policies are inconsistent; denying all but the admin");
            Access::new(admin, std::iter::empty(), std::iter::empty()).unwrap_or_default()
        })
    }
}

/// A configured server, ready to run.
pub struct Server {
    app: Arc<App>,
    tls_source: ServerTlsSource,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    keys_to_create: Vec<String>,
    /// The node-to-node listener's address and TLS, when a `cluster:` section is present.
    cluster_listen: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
}

impl Server {
    /// Builds a server from a configuration. `cert` replaces the configuration's `tls.cert` and
    /// `tls.key` (for `--dev`).
    pub async fn new(
        cfg: &Config,
        cert: Option<CertSource>,
        logs: LogHub,
    ) -> Result<Self, ServerError> {
        let store = open_keystore(&cfg.keystore).await?;
        Self::with_store(cfg, cert, logs, store).await
    }

    /// As `new`, with a keystore supplied by the caller.
    pub async fn with_store(
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
            system_roots: cfg.tls.system_roots,
            client_cert_optional: routes.any_skip_auth(),
        };
        let tls = Arc::new(ArcSwap::new(tls_source.build()?));
        logs.set_audit_stdout(cfg.log.audit);
        let key_type = KeyType::for_this_cpu();

        let cluster_listen = match &cfg.cluster {
            Some(c) => Some((c.address, kes_cluster::peer::tls::server_config(&c.tls)?)),
            None => None,
        };
        let opts = kes_cluster::Options {
            cluster: cfg.cluster.clone(),
            cache: cfg.cache,
            key_type,
            seed: seed_from_config(cfg),
            clock: kes_cluster::SystemClock::shared(),
        };
        let cluster = Cluster::open(opts, store).await.map_err(|e| match e {
            kes_cluster::open::OpenError::Tls(e) => ServerError::Tls(e),
            kes_cluster::open::OpenError::Format(e) => ServerError::DataDir(e),
            e => ServerError::Cluster(e.to_string()),
        })?;
        let app = App {
            routes,
            access: ArcSwap::from_pointee(Access::new(
                &cfg.admin_identity,
                std::iter::empty(),
                std::iter::empty(),
            )?),
            cluster,
            admin: cfg.admin_identity.clone(),
            metrics: Metrics::default(),
            logs,
            started: GoTime::now_utc(),
            key_type,
            limits: cfg.limits,
            body_budget: Budget::new(SERVER_BODY_BUDGET),
        };
        Ok(Self {
            app: Arc::new(app),
            tls_source,
            tls,
            keys_to_create: cfg.keys.clone(),
            cluster_listen,
        })
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Re-reads the certificate, key and CA files; new connections use them.
    pub fn reload_tls(&self) -> Result<(), ServerError> {
        (self.reloader())()
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

    /// Creates the configuration's `keys:` that do not exist yet, once this node leads an
    /// initialised group (followers leave it to the leader).
    async fn create_configured_keys(app: Arc<App>, keys: Vec<String>, cancel: CancellationToken) {
        if keys.is_empty() {
            return;
        }
        loop {
            let c = &app.cluster;
            if c.is_leader() && !c.is_sealed() {
                for name in &keys {
                    let version = kes_crypto::KeyVersion::generate(app.key_type, &app.admin);
                    match c.create(name, &version).await {
                        Ok(()) => tracing::info!(key = %name, "created configured key"),
                        Err(kes_cluster::ClusterError::KeyExists) => {}
                        Err(e) => {
                            tracing::error!(key = %name, error = %e, "failed to create configured key")
                        }
                    }
                }
                return;
            }
            if c.leader().is_some() && c.leader() != Some(c.id) && !c.is_sealed() {
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Waits until the node can serve crypto operations (unsealed, a leader known, itself
    /// included, and not cut off), or [`API_PORT_WAIT`] has passed. Before that, a request
    /// could only be answered `503`; with the port closed, clients fail over without waiting
    /// for an answer. False if `shutdown` fired first.
    async fn wait_until_serving(app: &App, shutdown: &CancellationToken) -> bool {
        let c = &app.cluster;
        let ready = || c.serving() == Serving::Ok && c.leader().is_some();
        let deadline = tokio::time::Instant::now() + API_PORT_WAIT;
        while !ready() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    serving = ?c.serving(),
                    waited = ?API_PORT_WAIT,
                    "opening the api port before the node can serve; it answers 503 until then"
                );
                return true;
            }
            // Unsealing and contact are not events one can wait on: poll.
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        true
    }

    /// Keeps the access state in step with the replicated policies.
    async fn sync_access(app: Arc<App>, cancel: CancellationToken) -> Result<(), String> {
        let mut rx = app.cluster.state.applied_watch();
        let mut last: Option<PolicyView> = None;
        loop {
            let view = app.cluster.state.read(PolicyView::of);
            if last.as_ref() != Some(&view) {
                app.access.store(Arc::new(view.access(&app.admin)));
                last = Some(view);
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = rx.changed() => if r.is_err() {
                    return Err("the state machine stopped".into());
                },
            }
        }
    }

    /// Serves on `port` until `shutdown` fires. The node-to-node port (if any) opens at once,
    /// so the node can join, catch up and get the cache key; the API port opens once the node
    /// can serve (see [`Self::wait_until_serving`]). Every background task runs under one
    /// tracker: if one the node needs ends early, the server stops and returns
    /// [`ServerError::TaskEnded`] (the binary exits non-zero and a supervisor restarts it).
    pub async fn run(self, port: Port, shutdown: CancellationToken) -> Result<(), ServerError> {
        let app = Arc::clone(&self.app);
        let tasks = Tasks::new(shutdown.child_token());
        app.cluster.start(&tasks);
        tasks.needed(
            "access sync",
            Self::sync_access(Arc::clone(&app), tasks.token()),
        );
        tasks.spawn(Self::create_configured_keys(
            Arc::clone(&app),
            self.keys_to_create.clone(),
            tasks.token(),
        ));
        if let Some((addr, tls)) = &self.cluster_listen {
            let peer_listener = bind(*addr).await?.listen()?;
            let handler: Arc<dyn kes_cluster::WriteHandler> =
                Arc::new(writes::Leader(Arc::clone(&app)));
            let cluster = Arc::clone(&app.cluster);
            let limits = app.limits;
            let serve = kes_tls::serve_tls(
                peer_listener,
                Arc::new(ArcSwap::from(Arc::clone(tls))),
                listener_limits(&app.limits),
                tasks.token(),
                move |stream, peer, conn| {
                    kes_cluster::peer::server::serve_peer(
                        Arc::clone(&cluster),
                        Arc::clone(&handler),
                        http_builder(&limits),
                        stream,
                        peer,
                        conn,
                    )
                },
            );
            tasks.needed("node port", async move {
                serve.await;
                Ok(())
            });
        }
        let failed = tokio::select! {
            ready = Self::wait_until_serving(&app, &shutdown) => {
                if !ready {
                    Self::stop(&app, &tasks).await;
                    return Ok(());
                }
                None
            }
            why = tasks.failure() => Some(why),
        };
        if let Some(why) = failed {
            return Self::fail(&app, &tasks, why).await;
        }
        let address = port.local_addr();
        let listener = port.listen()?;
        tracing::info!(%address, "kes server listening");
        let app2 = Arc::clone(&app);
        let api = kes_tls::serve_tls(
            listener,
            Arc::clone(&self.tls),
            listener_limits(&app.limits),
            shutdown.clone(),
            move |stream, addr, conn| serve_connection(Arc::clone(&app2), stream, addr, conn),
        );
        tokio::select! {
            () = api => {}
            why = tasks.failure() => {
                shutdown.cancel();
                return Self::fail(&app, &tasks, why).await;
            }
        }
        Self::stop(&app, &tasks).await;
        Ok(())
    }

    async fn stop(app: &App, tasks: &Tasks) {
        tasks.shutdown(SHUTDOWN_GRACE).await;
        app.cluster.shutdown().await;
    }

    async fn fail(app: &App, tasks: &Tasks, why: String) -> Result<(), ServerError> {
        tracing::error!(reason = %why, "stopping: a task this node needs has ended");
        Self::stop(app, tasks).await;
        Err(ServerError::TaskEnded(why))
    }
}

/// The listener's limits from the configuration's.
pub fn listener_limits(l: &kes_config::Limits) -> ListenerLimits {
    ListenerLimits {
        handshake_timeout: l.handshake_timeout,
        first_request_timeout: l.header_timeout,
        header_timeout: l.header_timeout,
        idle_timeout: l.idle_timeout,
        max_connections: l.connections,
        max_connections_per_ip: l.connections_per_ip,
        close_grace: SHUTDOWN_GRACE,
    }
}

/// HTTP/2 flow-control windows: how many bytes of request bodies a client may have buffered
/// in the server before the server reads them, per stream and per connection. A request body
/// is read only after its caller is authorised, so an unknown client can make the server hold
/// at most the connection window (plus its headers) per connection.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// Largest header block of one request, HTTP/1.1 read buffer included.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's connection builder with the server's limits: header sizes, HTTP/2 streams and
/// windows. The HTTP/1.1 header read timeout is the listener's (`kes_tls::Served`): hyper's
/// would register a timer for every request head.
pub fn http_builder(
    l: &kes_config::Limits,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(l.http2_streams)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_send_buf_size(256 * 1024)
        .max_pending_accept_reset_streams(100)
        .max_local_error_reset_streams(1024);
    b
}

async fn serve_connection(
    app: Arc<App>,
    stream: kes_tls::Served,
    addr: SocketAddr,
    conn: Arc<kes_tls::Conn>,
) {
    let peer = kes_tls::identify(stream.tls().peer_certificates());
    let mut info = ConnInfo::new(peer, addr);
    info.conn = Some(Arc::clone(&conn));
    let builder = http_builder(&app.limits);
    // One shared handle per connection: a request clones only it, not the server-wide `App`,
    // whose count every core would otherwise bump on every request.
    let served_by = Arc::new((app, info));
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let served_by = Arc::clone(&served_by);
        async move {
            let (app, info) = &*served_by;
            // Busy while the request is handled: the listener closes idle connections only.
            let _busy = info.conn.as_ref().map(|c| c.request());
            Ok::<_, std::convert::Infallible>(dispatch(app, info, req).await)
        }
    });
    let served = builder.serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.drive(served, |c| c.graceful_shutdown()).await {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
    }
}

/// Runs one request through KES's processing order.
pub async fn dispatch(app: &App, conn: &ConnInfo, req: Request<hyper::body::Incoming>) -> Response {
    // The head stays here and the handlers borrow from it; the path is decoded in place unless
    // it holds escapes, so a request without them allocates nothing for routing.
    let (head, body) = req.into_parts();
    let decoded = percent_encoding::percent_decode_str(head.uri.path()).decode_utf8_lossy();
    let (route, resource) = match app.routes.find(&decoded) {
        Match::NotFound => return ApiError::NoRoute.into_response(),
        Match::Redirect(to) => {
            let location = match head.uri.query() {
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
        Match::Route { route, resource } => (route, resource),
    };
    // A subtree root requested without its slash is served as KES serves it after the
    // redirect, so policies see the slashed path (`/v1/key/list/` for `/v1/key/list`).
    let subtree_fix = (route.is_subtree() && !decoded.starts_with(route.path))
        .then(|| format!("{}{resource}", route.path));
    let path: &str = subtree_fix.as_deref().unwrap_or(&decoded);
    let started = Instant::now();
    let _active = route.is_metered().then(|| app.metrics.begin());
    let identity = match &conn.peer {
        PeerIdentity::Identity(id) => id.as_str(),
        _ => "",
    };
    let response = match process(app, conn, route, path, resource, &head, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if route.is_metered() {
        app.metrics.observe(status, elapsed);
    }
    if route.is_audited() {
        audit(
            app,
            &conn.addr.ip(),
            path,
            identity,
            status,
            elapsed,
            needs_leader(route.id),
        );
    }
    response
}

/// Who the caller is for `route`, and whether it may call `path`: KES's `verify` (identity,
/// policy) or identify-only, then the admin-only check of this server's extensions.
pub(crate) fn authorize<'a>(
    app: &App,
    peer: &'a PeerIdentity,
    route: &routes::Route,
    path: &str,
) -> Result<&'a str, ApiError> {
    let identity = match route.auth {
        Auth::None | Auth::IdentifyOnly => match peer {
            PeerIdentity::Identity(id) => id.as_str(),
            _ => "",
        },
        Auth::Verify => {
            let id = match peer {
                PeerIdentity::Missing => return Err(ApiError::CertRequired),
                PeerIdentity::Many => return Err(ApiError::ManyCerts),
                // A CA certificate as the leaf identifies nobody.
                PeerIdentity::Rejected => return Err(ApiError::NotAllowed),
                PeerIdentity::Identity(id) => id.as_str(),
            };
            if app.access.load().authorize(id, path) == Decision::Denied {
                return Err(ApiError::NotAllowed);
            }
            id
        }
    };
    if route.is_admin_only() && !app.access.load().is_admin(identity) {
        return Err(ApiError::AdminOnly);
    }
    Ok(identity)
}

async fn process(
    app: &App,
    conn: &ConnInfo,
    route: &routes::Route,
    path: &str,
    resource: &str,
    head: &http::request::Parts,
    body: hyper::body::Incoming,
) -> Result<Response, ApiError> {
    let method = head.method.as_str();
    if method != route.method && !(route.method == "PUT" && method == "POST") {
        return Err(ApiError::MethodNotAllowed {
            got: method.to_owned(),
            want: route.method,
        });
    }
    // Authorisation needs only the path: it comes before the body is read, so a caller without
    // permission cannot make the server wait for or buffer a body.
    let identity = authorize(app, &conn.peer, route, path)?;
    if let (Some(c), false) = (&conn.conn, identity.is_empty()) {
        if route.auth == Auth::Verify {
            c.trust();
        }
    }
    let budgets = [&*conn.body_budget, &app.body_budget];
    let (body, _held) = match within(
        app.limits.body_timeout,
        read_body(head, body, route.max_body, budgets),
    )
    .await
    {
        Some(r) => r?,
        None => return Err(ApiError::BodyTimeout),
    };

    if needs_leader(route.id) {
        let op = writes::parse(route.id, resource, &body)?;
        drop(body);
        let client = conn.addr.ip().to_string();
        // Boxed: writes are rare and wait for the leader and the keystore; their state should
        // not be part of every request's future.
        let work = Box::pin(writes::run(app, identity, &client, op));
        return within(route.timeout, work)
            .await
            .unwrap_or(Err(ApiError::Timeout))
            .map(|()| api::empty());
    }
    let work = api::handle(
        app,
        route.id,
        Caller { identity },
        resource,
        head.uri.query(),
        body,
    );
    within(route.timeout, work)
        .await
        .unwrap_or(Err(ApiError::Timeout))
}

/// Routes that change the keystore or the replicated state run on the leader, which
/// authorises them again (see [`writes`]).
pub(crate) fn needs_leader(id: routes::RouteId) -> bool {
    use routes::RouteId::*;
    matches!(
        id,
        KeyCreate
            | KeyImport
            | KeyDelete
            | ClusterAdd
            | ClusterRemove
            | PolicyWrite
            | PolicyAssign
            | PolicyDelete
            | IdentityDelete
    )
}

/// Publishes one audit event; `change`: the route changes state (see [`logs`] for what goes
/// to stdout). Nothing is built when the event would go nowhere.
pub(crate) fn audit(
    app: &App,
    ip: &dyn std::fmt::Display,
    path: &str,
    identity: &str,
    status: u16,
    elapsed: Duration,
    change: bool,
) {
    if !app.logs.wants_audit(change) {
        return;
    }
    let event = AuditEvent {
        time: GoTime::now_utc(),
        request: AuditRequest {
            ip: ip.to_string(),
            path: path.to_owned(),
            identity: identity.to_owned(),
        },
        response: AuditResponse {
            code: status,
            time: elapsed.as_millis() as u64,
        },
    };
    let n = app.logs.audit(&event, change);
    app.metrics
        .audit_events
        .fetch_add(n as u64, Ordering::Relaxed);
}

/// Reads at most `max` bytes of body; routes without a body never read it. Every chunk is
/// charged to `budgets` (the connection's and the server's) as it arrives, and the returned
/// permits hold the charge until the request is done with the body. A body that arrives in one
/// chunk (the usual case) is kept as it came, without a copy.
async fn read_body<'a>(
    head: &http::request::Parts,
    mut body: hyper::body::Incoming,
    max: u64,
    budgets: [&'a Budget; 2],
) -> Result<(Bytes, Held<'a, 2>), ApiError> {
    let mut held = Held::new(budgets);
    if max == 0 {
        return Ok((Bytes::new(), held));
    }
    if let Some(len) = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            return Err(ApiError::BodyTooLarge);
        }
    }
    let mut first: Option<Bytes> = None;
    let mut buf: Option<bytes::BytesMut> = None;
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::InvalidBody)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        len += data.len() as u64;
        if len > max {
            return Err(ApiError::BodyTooLarge);
        }
        held.take(data.len()).await;
        match (&mut buf, first.take()) {
            (Some(b), _) => b.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(f)) => {
                let mut b = bytes::BytesMut::with_capacity(f.len() + data.len());
                b.extend_from_slice(&f);
                b.extend_from_slice(&data);
                buf = Some(b);
            }
        }
    }
    let body = match (buf, first) {
        (Some(b), _) => b.freeze(),
        (None, Some(f)) => f,
        (None, None) => Bytes::new(),
    };
    Ok((body, held))
}

/// Connections the kernel queues for a listening port before they are accepted (tokio's
/// default for `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;

/// The longest the API port stays closed after start while the node cannot serve. A node that
/// is still sealed then (a whole-cluster restart while the keystore is down, a joiner not yet
/// added) opens it anyway and answers `503`, so `kes status`, `kes cluster status` and health
/// checks can tell why.
pub const API_PORT_WAIT: Duration = Duration::from_secs(30);

/// A bound port that is not listening yet: its address is taken (and known, for port 0), but
/// connections to it are refused until [`Port::listen`], so clients fail over at once rather
/// than reach a node that cannot answer them.
#[derive(Debug)]
pub struct Port {
    socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl Port {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens the port: connections are accepted from now on.
    pub fn listen(self) -> Result<TcpListener, ServerError> {
        let addr = self.addr;
        self.socket
            .listen(LISTEN_BACKLOG)
            .map_err(|source| ServerError::Bind { addr, source })
    }
}

/// Binds the configured address without listening on it yet (see [`Port`]).
pub async fn bind(addr: SocketAddr) -> Result<Port, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    // As TcpListener::bind does: a restarted node rebinds while old connections linger.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let addr = socket.local_addr().map_err(err)?;
    Ok(Port { socket, addr })
}
