//! The system under test: certificates, node configurations and `kes server` processes, one
//! per namespace, and the KMS the nodes share.

use crate::history::lock;
use crate::hosts::{self, node_ip, node_ns};
use anyhow::{bail, Context, Result};
use kes_tls::certgen::{KeyKind, TestCa};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

pub const API_PORT: u16 = 7373;
pub const PEER_PORT: u16 = 7374;
/// Certificates of a run are valid this long.
const CERT_VALIDITY: Duration = Duration::from_secs(2 * 24 * 3600);

pub fn endpoint(id: u64) -> String {
    format!("https://{}:{API_PORT}", node_ip(id))
}

pub fn peer_address(id: u64) -> String {
    format!("{}:{PEER_PORT}", node_ip(id))
}

/// Which KMS the nodes use.
#[derive(Clone)]
pub enum Kms {
    /// One filesystem keystore directory shared by every node (the namespaces share the
    /// file system). An outage replaces the directory by a plain file, so every keystore
    /// call fails as unavailable.
    Fs { dir: PathBuf },
    /// OpenBao with KV v2, in its own namespace, with approle login.
    OpenBao(Arc<Bao>),
}

impl Kms {
    pub fn name(&self) -> &'static str {
        match self {
            Kms::Fs { .. } => "fs",
            Kms::OpenBao(_) => "openbao",
        }
    }

    fn yaml(&self) -> String {
        match self {
            Kms::Fs { dir } => format!("keystore:\n  fs:\n    path: {}\n", dir.display()),
            Kms::OpenBao(b) => b.yaml(),
        }
    }

    /// Stops the KMS: the directory is blocked, or OpenBao is killed.
    pub async fn stop(&self) -> Result<String> {
        match self {
            Kms::Fs { dir } => {
                let away = dir.with_extension("away");
                std::fs::rename(dir, &away).context("moving the keystore away")?;
                std::fs::write(dir, b"keystore outage\n").context("blocking the keystore")?;
                Ok("keystore directory replaced by a file".into())
            }
            Kms::OpenBao(b) => {
                b.kill().await;
                Ok("OpenBao killed".into())
            }
        }
    }

    /// Freezes the KMS (OpenBao only): connections hang instead of failing.
    pub async fn pause(&self) -> Result<String> {
        match self {
            Kms::Fs { .. } => bail!("a filesystem keystore cannot be paused"),
            Kms::OpenBao(b) => {
                b.signal("STOP").await?;
                Ok("OpenBao paused (SIGSTOP)".into())
            }
        }
    }

    /// Cuts the KMS off from some nodes (OpenBao only).
    pub async fn cut(&self, nodes: &[u64]) -> Result<String> {
        match self {
            Kms::Fs { .. } => bail!("a filesystem keystore cannot be cut off"),
            Kms::OpenBao(_) => {
                for n in nodes {
                    hosts::drop_from(hosts::KMS_NS, node_ip(*n)).await?;
                }
                Ok(format!("OpenBao cut off from nodes {nodes:?}"))
            }
        }
    }

    /// Ends any outage. Idempotent.
    pub async fn start(&self) -> Result<()> {
        match self {
            Kms::Fs { dir } => {
                let away = dir.with_extension("away");
                if away.is_dir() {
                    if dir.is_file() {
                        std::fs::remove_file(dir)?;
                    }
                    std::fs::rename(&away, dir).context("restoring the keystore")?;
                }
                Ok(())
            }
            Kms::OpenBao(b) => {
                let _ = hosts::flush_rules(hosts::KMS_NS).await;
                let _ = b.signal("CONT").await;
                b.ensure_running().await
            }
        }
    }

    pub async fn shutdown(&self) {
        if let Kms::OpenBao(b) = self {
            b.kill().await;
        }
    }
}

/// An OpenBao server with integrated storage on local files, so it survives being killed.
pub struct Bao {
    bin: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    addr: String,
    http: reqwest::Client,
    unseal_key: String,
    token: String,
    role_id: String,
    secret_id: String,
    child: tokio::sync::Mutex<Option<Child>>,
}

impl Bao {
    /// Creates the KMS namespace, starts OpenBao there, initialises and unseals it, mounts
    /// KV v2 at `kv` and creates an approle for the nodes.
    pub async fn setup(bin: &Path, dir: &Path, log: &Path) -> Result<Arc<Bao>> {
        if !bin.is_file() {
            bail!(
                "OpenBao is not at {} (run `tests/services.sh install`, or pass --bao-bin)",
                bin.display()
            );
        }
        hosts::create_host(hosts::KMS_NS, "k", hosts::KMS_IP)?;
        std::fs::create_dir_all(dir.join("data"))?;
        let ip = hosts::KMS_IP;
        let hcl = format!(
            "storage \"raft\" {{\n  path = {data:?}\n  node_id = \"kms\"\n}}\n\
             listener \"tcp\" {{\n  address = \"{ip}:8200\"\n  cluster_address = \"{ip}:8201\"\n  tls_disable = true\n}}\n\
             api_addr = \"http://{ip}:8200\"\ncluster_addr = \"https://{ip}:8201\"\ndisable_mlock = true\n",
            data = dir.join("data").display().to_string(),
        );
        std::fs::write(dir.join("bao.hcl"), hcl)?;
        let mut bao = Bao {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            log: log.to_owned(),
            addr: format!("http://{ip}:8200"),
            // Initialising generates keys and can take a while on a busy machine.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            unseal_key: String::new(),
            token: String::new(),
            role_id: String::new(),
            secret_id: String::new(),
            child: tokio::sync::Mutex::new(None),
        };
        bao.spawn().await?;
        let init = bao
            .api(
                "PUT",
                "sys/init",
                Some(serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?;
        bao.unseal_key = init["keys_base64"][0]
            .as_str()
            .context("no unseal key from sys/init")?
            .to_owned();
        bao.token = init["root_token"]
            .as_str()
            .context("no root token from sys/init")?
            .to_owned();
        bao.unseal().await?;
        bao.api(
            "POST",
            "sys/mounts/kv",
            Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await?;
        bao.api(
            "POST",
            "sys/auth/approle",
            Some(serde_json::json!({"type": "approle"})),
        )
        .await?;
        bao.api(
            "PUT",
            "sys/policies/acl/kes",
            Some(serde_json::json!({"policy": "path \"kv/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"})),
        )
        .await?;
        bao.api(
            "POST",
            "auth/approle/role/kes",
            Some(serde_json::json!({"token_policies": ["kes"], "token_ttl": "24h", "token_max_ttl": "48h"})),
        )
        .await?;
        let r = bao
            .api("GET", "auth/approle/role/kes/role-id", None)
            .await?;
        bao.role_id = r["data"]["role_id"].as_str().context("role_id")?.to_owned();
        let r = bao
            .api("POST", "auth/approle/role/kes/secret-id", None)
            .await?;
        bao.secret_id = r["data"]["secret_id"]
            .as_str()
            .context("secret_id")?
            .to_owned();
        Ok(Arc::new(bao))
    }

    fn yaml(&self) -> String {
        format!(
            "keystore:\n  vault:\n    endpoint: {}\n    engine: kv\n    version: v2\n    prefix: kes\n    approle:\n      engine: approle\n      id: {}\n      secret: {}\n    status:\n      ping: 2s\n",
            self.addr, self.role_id, self.secret_id
        )
    }

    async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut rb = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        if !self.token.is_empty() {
            rb = rb.header("X-Vault-Token", &self.token);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.with_context(|| format!("OpenBao {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("OpenBao {path}: {status} {text}");
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    async fn spawn(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let log2 = log.try_clone()?;
        let child = Command::new("ip")
            .arg("netns")
            .arg("exec")
            .arg(hosts::KMS_NS)
            .arg(&self.bin)
            .arg("server")
            .arg(format!("-config={}", self.dir.join("bao.hcl").display()))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .context("starting OpenBao")?;
        *self.child.lock().await = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("OpenBao did not come up; see {}", self.log.display())
    }

    async fn unseal(&self) -> Result<()> {
        self.api(
            "PUT",
            "sys/unseal",
            Some(serde_json::json!({"key": self.unseal_key})),
        )
        .await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "OpenBao not active after unsealing; see {}",
            self.log.display()
        )
    }

    async fn kill(&self) {
        if let Some(mut c) = self.child.lock().await.take() {
            if let Some(pid) = c.id() {
                let _ = signal(pid, "CONT").await;
            }
            let _ = c.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
    }

    async fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.child.lock().await.as_ref().and_then(Child::id);
        match pid {
            Some(pid) => signal(pid, sig).await,
            None => Ok(()),
        }
    }

    async fn ensure_running(&self) -> Result<()> {
        let running = {
            let mut c = self.child.lock().await;
            match c.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(None)),
                None => false,
            }
        };
        if !running {
            self.spawn().await?;
            self.unseal().await?;
        }
        Ok(())
    }
}

struct NodeProc {
    child: Option<Child>,
    paused: bool,
}

/// The nodes of a run. Cheap to clone; every clone controls the same processes.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    work: PathBuf,
    logs: PathBuf,
    kes_bin: PathBuf,
    api_key: kes_crypto::ApiKey,
    api_ca: TestCa,
    peer_ca: TestCa,
    peer_ca_file: PathBuf,
    offline: String,
    kms: Kms,
    procs: Mutex<BTreeMap<u64, NodeProc>>,
}

impl Db {
    pub fn new(work: &Path, logs: &Path, kes_bin: &Path, kms: Kms, offline: &str) -> Result<Self> {
        std::fs::create_dir_all(work)?;
        std::fs::create_dir_all(logs)?;
        let cert = |e: kes_tls::certgen::CertGenError| anyhow::anyhow!("certificates: {e}");
        let api_ca = TestCa::with_validity("kes-jepsen API CA", CERT_VALIDITY).map_err(cert)?;
        let peer_ca =
            TestCa::with_validity("kes-jepsen cluster CA", CERT_VALIDITY).map_err(cert)?;
        let peer_ca_file = work.join("cluster-ca.cert");
        std::fs::write(&peer_ca_file, peer_ca.ca_pem())?;
        std::fs::write(work.join("ca.cert"), api_ca.ca_pem())?;
        Ok(Self {
            inner: Arc::new(Inner {
                work: work.to_owned(),
                logs: logs.to_owned(),
                kes_bin: kes_bin.to_owned(),
                api_key: kes_crypto::ApiKey::generate(),
                api_ca,
                peer_ca,
                peer_ca_file,
                offline: offline.to_owned(),
                kms,
                procs: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    pub fn api_key(&self) -> &kes_crypto::ApiKey {
        &self.inner.api_key
    }

    pub fn ca_pem(&self) -> String {
        self.inner.api_ca.ca_pem()
    }

    pub fn kms(&self) -> &Kms {
        &self.inner.kms
    }

    fn node_dir(&self, id: u64) -> PathBuf {
        self.inner.work.join(format!("n{id}"))
    }

    /// Creates node `id`'s namespace, certificates and configuration. `members` are the
    /// initial voters for a node of the first set; a node added later has none.
    pub fn prepare(&self, id: u64, members: Option<&[u64]>) -> Result<()> {
        if id == 0 || id > hosts::MAX_NODE_ID {
            bail!("node id {id} out of range 1..={}", hosts::MAX_NODE_ID);
        }
        hosts::create_host(&node_ns(id), &id.to_string(), node_ip(id))?;
        let dir = self.node_dir(id);
        std::fs::create_dir_all(&dir)?;
        let cert = |e: kes_tls::certgen::CertGenError| anyhow::anyhow!("certificates: {e}");
        let ips = [IpAddr::V4(node_ip(id))];
        let api = self
            .inner
            .api_ca
            .issue(&node_ip(id).to_string(), &[], &ips, KeyKind::EcdsaP256)
            .map_err(cert)?;
        let name = format!("kes-node-{id}");
        let peer = self
            .inner
            .peer_ca
            .issue(&name, std::slice::from_ref(&name), &ips, KeyKind::EcdsaP256)
            .map_err(cert)?;
        write_private(&dir.join("api.key"), api.key_pem.as_bytes())?;
        std::fs::write(dir.join("api.cert"), &api.cert_pem)?;
        write_private(&dir.join("peer.key"), peer.key_pem.as_bytes())?;
        std::fs::write(dir.join("peer.cert"), &peer.cert_pem)?;
        let members = match members {
            Some(m) => {
                let mut s = String::from("  members:\n");
                for id in m {
                    s.push_str(&format!("    {id}: {}\n", peer_address(*id)));
                }
                s
            }
            None => String::new(),
        };
        let d = dir.display();
        let config = format!(
            "# Node {id} of a kes-jepsen run.\n\
             address: {ip}:{API_PORT}\n\
             admin:\n  identity: {admin}\n\
             tls:\n  key: {d}/api.key\n  cert: {d}/api.cert\n\
             cache:\n  expiry:\n    offline: {offline}\n\
             log:\n  audit: off\n\
             {keystore}\
             cluster:\n  node_id: {id}\n  address: {peer}\n  data_dir: {d}/data\n{members}  tls:\n    key: {d}/peer.key\n    cert: {d}/peer.cert\n    ca: {ca}\n",
            ip = node_ip(id),
            admin = self.inner.api_key.identity(),
            offline = self.inner.offline,
            keystore = self.inner.kms.yaml(),
            peer = peer_address(id),
            ca = self.inner.peer_ca_file.display(),
        );
        std::fs::write(dir.join("config.yaml"), config)?;
        lock(&self.inner.procs).insert(
            id,
            NodeProc {
                child: None,
                paused: false,
            },
        );
        Ok(())
    }

    /// Starts (or restarts) node `id`'s process inside its namespace.
    pub fn start(&self, id: u64) -> Result<()> {
        let mut procs = lock(&self.inner.procs);
        let p = procs
            .get_mut(&id)
            .with_context(|| format!("node {id} was never prepared"))?;
        if p.child.is_some() {
            return Ok(());
        }
        let log_path = self.inner.logs.join(format!("n{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("{}", log_path.display()))?;
        let log2 = log.try_clone()?;
        let config = self.node_dir(id).join("config.yaml");
        let child = Command::new("ip")
            .arg("netns")
            .arg("exec")
            .arg(node_ns(id))
            .arg(&self.inner.kes_bin)
            .arg("server")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.inner.kes_bin.display()))?;
        p.child = Some(child);
        p.paused = false;
        Ok(())
    }

    fn pid(&self, id: u64) -> Option<u32> {
        lock(&self.inner.procs)
            .get(&id)
            .and_then(|p| p.child.as_ref())
            .and_then(Child::id)
    }

    /// SIGKILL; the process is reaped before this returns.
    pub async fn kill(&self, id: u64) {
        let child = lock(&self.inner.procs)
            .get_mut(&id)
            .and_then(|p| p.child.take());
        if let Some(mut c) = child {
            if let Some(pid) = c.id() {
                let _ = signal(pid, "CONT").await;
            }
            let _ = c.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
    }

    pub async fn pause(&self, id: u64) -> Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        signal(pid, "STOP").await?;
        if let Some(p) = lock(&self.inner.procs).get_mut(&id) {
            p.paused = true;
        }
        Ok(())
    }

    pub async fn resume(&self, id: u64) -> Result<()> {
        let Some(pid) = self.pid(id) else {
            return Ok(());
        };
        signal(pid, "CONT").await?;
        if let Some(p) = lock(&self.inner.procs).get_mut(&id) {
            p.paused = false;
        }
        Ok(())
    }

    /// Resumes every paused node and starts every stopped one that is still prepared.
    pub async fn heal_processes(&self) {
        let ids: Vec<u64> = lock(&self.inner.procs).keys().copied().collect();
        for id in ids {
            let _ = self.resume(id).await;
            if let Err(e) = self.start(id) {
                eprintln!("restarting node {id}: {e:#}");
            }
        }
    }

    /// Whether node `id`'s process exited by itself (a crash), reaping it.
    pub fn exited(&self, id: u64) -> Option<std::process::ExitStatus> {
        let mut procs = lock(&self.inner.procs);
        let p = procs.get_mut(&id)?;
        let c = p.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => {
                p.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Stops node `id` for good and removes its namespace.
    pub async fn remove(&self, id: u64) {
        self.kill(id).await;
        lock(&self.inner.procs).remove(&id);
        let ns = node_ns(id);
        let tag = id.to_string();
        let _ = tokio::task::spawn_blocking(move || hosts::remove_host(&ns, &tag)).await;
    }

    /// Kills every node.
    pub async fn kill_all(&self) {
        let ids: Vec<u64> = lock(&self.inner.procs).keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }

    pub fn prepared(&self) -> Vec<u64> {
        lock(&self.inner.procs).keys().copied().collect()
    }
}

async fn signal(pid: u32, sig: &str) -> Result<()> {
    let out = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "kill -{sig} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    Ok(())
}
