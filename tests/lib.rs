//! Shared helpers for the integration tests: a per-run test CA, servers started on port 0 over
//! real TLS from a real configuration file, and raw HTTP clients with chosen identities so tests
//! can check exact status codes, headers and bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::ApiKey;
use kes_tls::certgen::{self, KeyKind, TestCa};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub use kes_server::logs::LogHub;

/// A certificate and key for a client, in the forms tests need.
#[derive(Clone)]
pub struct ClientCert {
    pub certs: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
}

impl ClientCert {
    pub fn from_api_key(key: &ApiKey) -> Self {
        let c = certgen::api_key_certificate(key).unwrap();
        Self {
            certs: vec![CertificateDer::from(c.cert_der.clone())],
            key_der: c.key_der.to_vec(),
        }
    }

    pub fn from_certified(c: &certgen::CertifiedKey) -> Self {
        Self {
            certs: vec![CertificateDer::from(c.cert_der.clone())],
            key_der: c.key_der.to_vec(),
        }
    }
}

/// Options for a test server.
pub struct ServerOpts {
    /// Extra YAML appended to the generated configuration (policies, api, cache, keys, ...).
    pub extra_yaml: String,
    /// `tls.auth: on`.
    pub verify_clients: bool,
    /// Use a filesystem keystore in this directory (else in-memory).
    pub fs_dir: Option<PathBuf>,
    /// Server key type.
    pub key_kind: KeyKind,
}

impl Default for ServerOpts {
    fn default() -> Self {
        Self {
            extra_yaml: String::new(),
            verify_clients: false,
            fs_dir: None,
            key_kind: KeyKind::EcdsaP256,
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: ApiKey,
    pub ca: Arc<TestCa>,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub cancel: CancellationToken,
    pub handle: tokio::task::JoinHandle<()>,
    reload: Box<dyn Fn() -> Result<(), kes_server::ServerError> + Send + Sync>,
    pub app: std::sync::Arc<kes_server::App>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(path, data).unwrap();
}

impl TestServer {
    pub async fn start(opts: ServerOpts) -> Self {
        let ca = Arc::new(TestCa::new().unwrap());
        let admin = ApiKey::generate();
        Self::start_with(opts, ca, admin, None).await
    }

    /// Starts a server with a given CA and admin, optionally on a fixed address (restarts).
    pub async fn start_with(
        opts: ServerOpts,
        ca: Arc<TestCa>,
        admin: ApiKey,
        addr: Option<SocketAddr>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server_cert = ca
            .issue(
                "localhost",
                &["localhost".into()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                opts.key_kind,
            )
            .unwrap();
        write(&dir.path().join("server.cert"), &server_cert.cert_pem);
        write(
            &dir.path().join("server.key"),
            server_cert.key_pem.as_bytes(),
        );
        write(&dir.path().join("ca.cert"), ca.ca_pem());
        let keystore = match &opts.fs_dir {
            Some(d) => format!("keystore:\n  fs:\n    path: {}\n", d.display()),
            None => "keystore:\n  memory: {}\n".to_owned(),
        };
        let yaml = format!(
            "version: v1\naddress: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: {dir}/server.key\n  cert: {dir}/server.cert\n  ca: {dir}/ca.cert\n  auth: {auth}\nlog:\n  audit: off\n{keystore}{extra}\n",
            admin = admin.identity(),
            dir = dir.path().display(),
            auth = if opts.verify_clients { "on" } else { "off" },
            extra = opts.extra_yaml,
        );
        let config_path = dir.path().join("config.yaml");
        write(&config_path, &yaml);
        let parsed = kes_config::load(&config_path).unwrap();
        let server = kes_server::Server::new(&parsed.config, None, LogHub::new())
            .await
            .unwrap();
        let reload = Box::new(server.reloader());
        let app = std::sync::Arc::clone(server.app());
        let listener = kes_server::bind(addr.unwrap_or(parsed.config.address))
            .await
            .unwrap();
        let addr = listener.local_addr();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let handle = tokio::spawn(async move {
            server.run(listener, c).await.unwrap();
        });
        let s = Self {
            addr,
            admin,
            ca,
            dir,
            config_path,
            cancel,
            handle,
            reload,
            app,
        };
        s.wait_ready().await;
        s
    }

    /// Waits until `/v1/ready` answers 200 (the node elected itself and has its cache key)
    /// and the API port, which opens only then, accepts connections.
    pub async fn wait_ready(&self) {
        // Ready, and listening: the API port opens only once the node can serve, a moment
        // after the cluster says so.
        for _ in 0..200 {
            if self.app.cluster.serving() == kes_cluster::Serving::Ok
                && tokio::net::TcpStream::connect(self.addr).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("server at {} never became ready", self.addr);
    }

    /// Re-reads the certificate files, as SIGHUP does.
    pub fn reload(&self) {
        (self.reload)().unwrap();
    }

    /// Stops the server and waits until its listener is closed.
    pub async fn stop(self) -> (Arc<TestCa>, ApiKey, SocketAddr) {
        self.cancel.cancel();
        let ca = Arc::clone(&self.ca);
        let admin = ApiKey::parse(&self.admin.to_text()).unwrap();
        let addr = self.addr;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !self.handle.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        (ca, admin, addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn admin_client(&self) -> reqwest::Client {
        self.client(Some(&ClientCert::from_api_key(&self.admin)), Proto::Any)
    }

    pub fn api_key_client(&self, key: &ApiKey) -> reqwest::Client {
        self.client(Some(&ClientCert::from_api_key(key)), Proto::Any)
    }

    pub fn client(&self, cert: Option<&ClientCert>, proto: Proto) -> reqwest::Client {
        let tls = client_tls(&self.ca, cert, proto);
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30));
        if proto == Proto::Http2 {
            b = b.http2_prior_knowledge();
        }
        b.build().unwrap()
    }

    /// The project's own client, authenticated with `key`.
    pub fn kes_client(&self, key: &ApiKey) -> kes_client::Client {
        kes_client::Client::builder(vec![self.url("")])
            .api_key(key)
            .ca_pem(self.ca.ca_pem())
            .build()
            .unwrap()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    Any,
    Http1,
    Http2,
}

/// A rustls client configuration trusting the test CA, presenting `cert` if given.
pub fn client_tls(ca: &TestCa, cert: Option<&ClientCert>, proto: Proto) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.ca_der())).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match cert {
        Some(c) => b
            .with_client_auth_cert(
                c.certs.clone(),
                PrivateKeyDer::try_from(c.key_der.clone()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = match proto {
        Proto::Any => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Proto::Http1 => vec![b"http/1.1".to_vec()],
        Proto::Http2 => vec![b"h2".to_vec()],
    };
    cfg
}

/// Status, selected headers and body of a response.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a KES error answer, byte for byte.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            (self.status, self.text()),
            (status, kes_types::KesError::new(status, message).body()),
            "wrong error answer"
        );
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            self.content_length.as_deref(),
            Some(self.body.len().to_string().as_str())
        );
    }
}

pub async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> Answer {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(m, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let get = |h: &str| headers.get(h).map(|v| v.to_str().unwrap().to_owned());
    let content_type = get("content-type");
    let content_length = get("content-length");
    let body = resp.bytes().await.unwrap().to_vec();
    Answer {
        status,
        content_type,
        content_length,
        headers,
        body,
    }
}

pub fn b64(data: &[u8]) -> String {
    kes_types::b64::encode(data)
}

pub fn unb64(s: &serde_json::Value) -> Vec<u8> {
    kes_types::b64::decode(s.as_str().unwrap()).unwrap()
}

/// The `kes` binary, built once per test process so tests never run a stale one (`$KES_BIN`
/// names a prebuilt one instead).
pub fn kes_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("KES_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--workspace", "--all-targets"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the kes binary failed");
        // tests run from target/<profile>/deps/<test>; the binary is in target/<profile>.
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("kes")
    })
    .clone()
}

/// A `kes` child process that is killed when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits up to `secs` for the process to exit.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(st) = self.0.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

pub use kes_testkit::free_port;

/// Waits until a TCP connection to `addr` succeeds.
pub fn wait_listening(addr: SocketAddr, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("nothing listens on {addr}");
}

/// A cluster of real `kes` processes on loopback, from `kes_server::local`.
pub struct ProcCluster {
    pub files: kes_server::local::LocalCluster,
    pub procs: Vec<Option<Child>>,
    _dir: TempDir,
}

impl ProcCluster {
    /// Generates configurations for `n` nodes on free ports and starts them all.
    pub fn start(n: u64, offline: &str, extra_yaml: &str) -> Self {
        Self::generate(n, n, offline, extra_yaml)
    }

    /// `total` nodes configured, the first `initial` of them forming the group and started;
    /// the rest wait to be started with [`Self::start_node`] and added.
    pub fn start_with_joiners(total: u64, initial: u64) -> Self {
        Self::generate(total, initial, "30s", "")
    }

    fn generate(total: u64, initial: u64, offline: &str, extra_yaml: &str) -> Self {
        Self::start_with(kes_server::local::LocalOptions {
            nodes: total,
            offline: offline.into(),
            extra_yaml: extra_yaml.into(),
            initial_members: Some(initial),
            ..Default::default()
        })
    }

    /// Generates configurations from `opts` (on free ports unless it names ports) and starts
    /// the initial members.
    pub fn start_with(opts: kes_server::local::LocalOptions) -> Self {
        let initial = opts.initial_members.unwrap_or(opts.nodes);
        let mut c = Self::prepare(opts);
        for i in 0..initial as usize {
            c.start_node(i);
        }
        c
    }

    /// Generates configurations from `opts` (on free ports unless it names ports) and starts
    /// nothing, for tests that prepare the nodes' directories first.
    pub fn prepare(mut opts: kes_server::local::LocalOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if opts.ports.is_none() {
            opts.ports = Some(
                (0..opts.nodes)
                    .map(|_| (free_port(), free_port()))
                    .collect(),
            );
        }
        let files = kes_server::local::LocalCluster::generate(dir.path(), &opts).unwrap();
        Self {
            files,
            procs: (0..opts.nodes).map(|_| None).collect(),
            _dir: dir,
        }
    }

    /// Runs the `kes` CLI with this cluster's admin API key, CA and endpoints (`nodes`).
    pub fn cli(&self, nodes: &[usize], args: &[&str]) -> std::process::Output {
        let eps: Vec<String> = nodes
            .iter()
            .map(|i| self.files.nodes[*i].endpoint())
            .collect();
        std::process::Command::new(kes_bin())
            .args(args)
            .env("KES_SERVER", eps.join(","))
            .env("KES_API_KEY", self.files.api_key.to_text())
            .env("KES_CA", &self.files.ca_file)
            .output()
            .unwrap()
    }

    pub fn start_node(&mut self, i: usize) {
        let p = self.spawn(i);
        self.procs[i] = Some(p);
    }

    fn spawn(&self, i: usize) -> Child {
        let node = &self.files.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.config.with_file_name("node.log"))
            .unwrap();
        Child(
            std::process::Command::new(kes_bin())
                .args(["server", "--config"])
                .arg(&node.config)
                .env(
                    "KES_LOG",
                    std::env::var("KES_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
                )
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// Node `i`'s log so far, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.files.nodes[i].config.with_file_name("node.log"))
            .unwrap_or_default()
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            c.signal("KILL");
            c.wait_exit(10);
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.start_node(i);
    }

    pub fn signal(&self, i: usize, sig: &str) {
        if let Some(c) = &self.procs[i] {
            c.signal(sig);
        }
    }

    /// A client for node `i` only.
    pub fn client(&self, i: usize) -> kes_client::Client {
        self.client_for(&[i])
    }

    /// A client over several nodes, with kms-go's failover.
    pub fn client_for(&self, nodes: &[usize]) -> kes_client::Client {
        let eps: Vec<String> = nodes
            .iter()
            .map(|i| self.files.nodes[*i].endpoint())
            .collect();
        kes_client::Client::builder(eps)
            .api_key(&self.files.api_key)
            .ca_file(&self.files.ca_file)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Waits until node `i` is ready (elected group, cache key present).
    pub async fn wait_ready(&self, i: usize, secs: u64) {
        let c = self.client(i);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(true) = c.is_ready().await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "node {} not ready after {secs}s; log:\n{}",
            i + 1,
            self.log(i)
        );
    }

    pub async fn wait_all_ready(&self, secs: u64) {
        for i in 0..self.procs.len() {
            if self.procs[i].is_some() {
                self.wait_ready(i, secs).await;
            }
        }
    }

    /// A plain HTTP client with the admin API key's certificate, for requests that must reach
    /// one node exactly once (no retries, no failover), and the URL of `path` on node `i`.
    pub fn raw_client(&self) -> reqwest::Client {
        let cert = ClientCert::from_api_key(&self.files.api_key);
        let mut roots = rustls::RootCertStore::empty();
        kes_tls::add_ca(&mut roots, &self.files.ca_file).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(cert.certs, PrivateKeyDer::try_from(cert.key_der).unwrap())
            .unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap()
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.files.nodes[i].endpoint())
    }

    /// The current leader's index (0-based), as node `via` sees it.
    pub async fn leader(&self, via: usize) -> Option<usize> {
        let st = self.client(via).cluster_status().await.ok()?;
        st.leader.map(|id| id as usize - 1)
    }

    /// Waits until some live node reports a leader that is alive.
    pub async fn wait_leader(&self, secs: u64) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            for i in 0..self.procs.len() {
                if self.procs[i].is_none() {
                    continue;
                }
                if let Some(l) = self.leader(i).await {
                    if self.procs.get(l).is_some_and(|p| p.is_some()) {
                        return l;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no leader after {secs}s");
    }
}

/// A single `kes server` process with a configuration the test writes, for attacks that must
/// hit a real process: its own sockets, file descriptors, memory and log.
pub struct ProcServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: ApiKey,
    pub ca: Arc<TestCa>,
    pub dir: TempDir,
}

impl ProcServer {
    /// `tls_extra` goes under `tls:` (indented two spaces: `  auth: on\n`), `extra_yaml` at the
    /// end of the file; `env` is added to the process's environment (an empty value removes
    /// the variable, e.g. `("KES_LOG", "")` for the default log filter).
    pub fn start(tls_extra: &str, extra_yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(TestCa::new().unwrap());
        let admin = ApiKey::generate();
        let server_cert = ca
            .issue(
                "localhost",
                &["localhost".into()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                KeyKind::EcdsaP256,
            )
            .unwrap();
        write(&dir.path().join("server.cert"), &server_cert.cert_pem);
        write(
            &dir.path().join("server.key"),
            server_cert.key_pem.as_bytes(),
        );
        let port = free_port();
        let yaml = format!(
            "version: v1\naddress: 127.0.0.1:{port}\nadmin:\n  identity: {admin}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n{tls_extra}log:\n  audit: off\nkeystore:\n  memory: {{}}\n{extra_yaml}\n",
            admin = admin.identity(),
            d = dir.path().display(),
        );
        let config = dir.path().join("config.yaml");
        write(&config, &yaml);
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = std::process::Command::new(kes_bin());
        cmd.args(["server", "--config"])
            .arg(&config)
            .env("KES_LOG", "info,openraft=warn")
            .stdout(std::process::Stdio::null())
            .stderr(log);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let child = Child(cmd.spawn().unwrap());
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_listening(addr, 60);
        Self {
            child,
            addr,
            admin,
            ca,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// A client presenting `cert` (any chain, any key: the chain is sent as given, even when
    /// its leaf does not belong to the key).
    pub fn client(&self, cert: Option<&ClientCert>, proto: Proto) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.ca.ca_der())).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut tls = match cert {
            Some(c) => b.with_client_cert_resolver(Arc::new(AnyChain::new(c))),
            None => b.with_no_client_auth(),
        };
        tls.alpn_protocols = match proto {
            Proto::Any => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Proto::Http1 => vec![b"http/1.1".to_vec()],
            Proto::Http2 => vec![b"h2".to_vec()],
        };
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(20));
        if proto == Proto::Http2 {
            b = b.http2_prior_knowledge();
        }
        b.build().unwrap()
    }

    pub fn admin_client(&self) -> reqwest::Client {
        self.client(Some(&ClientCert::from_api_key(&self.admin)), Proto::Any)
    }

    /// Waits until the node answers `/v1/ready` with 200.
    pub async fn wait_ready(&self) {
        let c = self.admin_client();
        for _ in 0..300 {
            if let Ok(r) = c.get(self.url("/v1/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("server never became ready; log:\n{}", self.log());
    }
}

/// Presents a fixed chain with a fixed key, without checking that they belong together (an
/// attacker's client does not either).
#[derive(Debug)]
pub struct AnyChain(Arc<rustls::sign::CertifiedKey>);

impl AnyChain {
    pub fn new(c: &ClientCert) -> Self {
        let key = kes_tls::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::try_from(c.key_der.clone()).unwrap())
            .unwrap();
        Self(Arc::new(rustls::sign::CertifiedKey::new(
            c.certs.clone(),
            key,
        )))
    }
}

impl rustls::client::ResolvesClientCert for AnyChain {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
