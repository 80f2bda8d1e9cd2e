//! OpenBao servers for tests: started from the virtualenv `tests/services.sh install` creates,
//! on a free loopback port, one per test, and killed when the test ends, even if the test
//! process itself dies (see [`crate::Proc`]).

use crate::{free_port, service_bin, Proc};
use anyhow::{bail, Context, Result};
use kes_config::{KvVersion, VaultConfig, VaultTls};
use kes_tls::certgen::{KeyKind, TestCa};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const ROOT_TOKEN: &str = "kes-test-root";

/// Client certificates and CA for a TLS listener.
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// PEM of the client certificate followed by its key, for reqwest.
    client_identity: Vec<u8>,
    ca_pem: String,
}

impl Tls {
    pub fn generate(dir: &Path) -> Result<Tls> {
        let ca = TestCa::new()?;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server = ca.issue(
            "openbao",
            &["localhost".to_owned()],
            &[localhost],
            KeyKind::EcdsaP256,
        )?;
        let client = ca.issue("kes", &[], &[], KeyKind::EcdsaP256)?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        Ok(Tls {
            ca: write("ca.pem", &ca.ca_pem())?,
            server_cert: write("server.pem", &server.cert_pem)?,
            server_key: write("server.key", &server.key_pem)?,
            client_cert: write("client.pem", &client.cert_pem)?,
            client_key: write("client.key", &client.key_pem)?,
            client_identity: format!("{}{}", client.cert_pem, *client.key_pem).into_bytes(),
            ca_pem: ca.ca_pem(),
        })
    }
}

enum Mode {
    Dev,
    /// Raft storage on local files, which survives restarts; unsealed with this key after each start.
    Persistent {
        unseal_key: String,
    },
}

/// One OpenBao server.
pub struct Bao {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub port: u16,
    cluster_port: u16,
    pub addr: String,
    pub token: String,
    mode: Mode,
    tls: Option<Tls>,
    pub http: reqwest::Client,
    proc: Option<Proc>,
}

impl Bao {
    /// A dev-mode server (in memory, unsealed, root token [`ROOT_TOKEN`]); `None` when the
    /// services are not installed and not required.
    pub async fn dev() -> Option<Bao> {
        let bin = service_bin("bao")?;
        Some(
            Self::start_new(bin, false, false)
                .await
                .expect("starting openbao"),
        )
    }

    /// A server with storage on disk, initialised with one unseal key, optionally serving TLS
    /// that requires client certificates.
    pub async fn persistent(tls: bool) -> Option<Bao> {
        let bin = service_bin("bao")?;
        Some(
            Self::start_new(bin, true, tls)
                .await
                .expect("starting openbao"),
        )
    }

    async fn start_new(bin: PathBuf, persistent: bool, tls: bool) -> Result<Bao> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let tls = if tls {
            Some(Tls::generate(dir.path())?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(t) = &tls {
            http = http
                .add_root_certificate(reqwest::Certificate::from_pem(t.ca_pem.as_bytes())?)
                .identity(reqwest::Identity::from_pem(&t.client_identity)?);
        }
        let mut bao = Bao {
            bin,
            port,
            cluster_port: free_port(),
            addr: format!("{scheme}://127.0.0.1:{port}"),
            token: ROOT_TOKEN.to_owned(),
            mode: if persistent {
                Mode::Persistent {
                    unseal_key: String::new(),
                }
            } else {
                Mode::Dev
            },
            tls,
            http: http.build()?,
            dir,
            proc: None,
        };
        if persistent {
            bao.write_config()?;
        }
        bao.start().await?;
        if persistent {
            let (code, init) = bao
                .api_as(
                    "PUT",
                    "sys/init",
                    Some(json!({"secret_shares": 1, "secret_threshold": 1})),
                    None,
                    None,
                )
                .await?;
            if code != 200 {
                bail!("init: {code} {init}");
            }
            bao.token = init["root_token"]
                .as_str()
                .context("root_token")?
                .to_owned();
            let key = init["keys_base64"][0]
                .as_str()
                .context("keys_base64")?
                .to_owned();
            bao.mode = Mode::Persistent { unseal_key: key };
            bao.unseal().await?;
        }
        Ok(bao)
    }

    fn write_config(&self) -> Result<()> {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let listener_tls = match &self.tls {
            None => "tls_disable = true".to_owned(),
            Some(t) => format!(
                "tls_cert_file = {:?}\n  tls_key_file = {:?}\n  tls_client_ca_file = {:?}\n  tls_require_and_verify_client_cert = true",
                t.server_cert, t.server_key, t.ca
            ),
        };
        // OpenBao keeps only integrated (raft) storage: a single node on local files.
        let hcl = format!(
            "storage \"raft\" {{\n  path = {data:?}\n  node_id = \"node1\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  {listener_tls}\n}}\napi_addr = \"{addr}\"\ncluster_addr = \"https://127.0.0.1:{cluster}\"\n",
            port = self.port,
            cluster = self.cluster_port,
            addr = self.addr,
        );
        std::fs::write(self.dir.path().join("bao.hcl"), hcl)?;
        Ok(())
    }

    /// Starts the process and waits until it answers `sys/health` (with any status).
    pub async fn start(&mut self) -> Result<()> {
        let args: Vec<String> = match self.mode {
            Mode::Dev => vec![
                "server".into(),
                "-dev".into(),
                "-dev-no-store-token".into(),
                format!("-dev-root-token-id={ROOT_TOKEN}"),
                format!("-dev-listen-address=127.0.0.1:{}", self.port),
            ],
            Mode::Persistent { .. } => vec![
                "server".into(),
                format!("-config={}", self.dir.path().join("bao.hcl").display()),
            ],
        };
        let log = self.dir.path().join("bao.log");
        let mut proc = Proc::spawn(&log, &self.bin, &args)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            if !proc.is_running() || Instant::now() > deadline {
                bail!("openbao did not come up:\n{}", proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Unseals a persistent server and waits until it is active.
    pub async fn unseal(&self) -> Result<()> {
        let Mode::Persistent { unseal_key } = &self.mode else {
            return Ok(());
        };
        let (code, body) = self
            .api_as(
                "PUT",
                "sys/unseal",
                Some(json!({"key": unseal_key})),
                None,
                None,
            )
            .await?;
        if code != 200 {
            bail!("unseal: {code} {body}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await?;
            if r.status() == 200 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("openbao not active after unseal: {}", r.status());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("openbao is running")
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts a killed server again on the same port (and unseals it).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start().await?;
        self.unseal().await
    }

    /// Calls the HTTP API with the root token; returns the status and the JSON body (`null`
    /// when empty).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        self.api_as(method, path, body, Some(&self.token), None)
            .await
    }

    /// Like [`Bao::api`], in a namespace.
    pub async fn api_ns(
        &self,
        ns: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        self.api_as(method, path, body, Some(&self.token), Some(ns))
            .await
    }

    pub async fn api_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        ns: Option<&str>,
    ) -> Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(ns) = ns {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((code, value))
    }

    /// Calls the API and fails unless it answers 2xx.
    pub async fn ok(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let (code, v) = self.api(method, path, Some(body)).await?;
        if !(200..300).contains(&code) {
            bail!("{method} {path}: {code} {v}");
        }
        Ok(v)
    }

    /// Mounts a secrets engine (`kv` with version "1"/"2", or `transit`).
    pub async fn mount(&self, path: &str, kind: &str, kv_version: Option<&str>) -> Result<()> {
        let mut body = json!({"type": kind});
        if let Some(v) = kv_version {
            body["options"] = json!({"version": v});
        }
        self.ok("POST", &format!("sys/mounts/{path}"), body).await?;
        Ok(())
    }

    /// Sets up AppRole at `auth/approle` in `ns` (root when `None`) with a policy `kes` that
    /// allows everything on `paths`; returns the role and secret ids.
    pub async fn approle(
        &self,
        ns: Option<&str>,
        paths: &[&str],
        ttl: &str,
        max_ttl: &str,
    ) -> Result<(String, String)> {
        let call = |method: &'static str, path: &'static str, body: Value| async move {
            let (code, v) = match ns {
                Some(ns) => self.api_ns(ns, method, path, Some(body)).await?,
                None => self.api(method, path, Some(body)).await?,
            };
            if !(200..300).contains(&code) {
                bail!("{method} {path}: {code} {v}");
            }
            Ok(v)
        };
        call("POST", "sys/auth/approle", json!({"type": "approle"})).await?;
        let policy: String = paths
            .iter()
            .map(|p| format!("path \"{p}\" {{ capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }}\n"))
            .collect();
        call("PUT", "sys/policies/acl/kes", json!({"policy": policy})).await?;
        call(
            "POST",
            "auth/approle/role/kes",
            json!({"token_policies": ["kes"], "token_ttl": ttl, "token_max_ttl": max_ttl}),
        )
        .await?;
        let role = call("GET", "auth/approle/role/kes/role-id", Value::Null).await?;
        let secret = call("POST", "auth/approle/role/kes/secret-id", json!({})).await?;
        Ok((
            role["data"]["role_id"]
                .as_str()
                .context("role_id")?
                .to_owned(),
            secret["data"]["secret_id"]
                .as_str()
                .context("secret_id")?
                .to_owned(),
        ))
    }

    /// The store config for a mount, with this server's address and TLS files.
    pub fn config(&self, engine: &str, version: KvVersion) -> VaultConfig {
        VaultConfig {
            endpoint: self.addr.clone(),
            engine: engine.to_owned(),
            version,
            namespace: String::new(),
            prefix: "kes".to_owned(),
            transit: None,
            approle: None,
            kubernetes: None,
            tls: match &self.tls {
                None => VaultTls::default(),
                Some(t) => VaultTls {
                    key: Some(t.client_key.clone()),
                    cert: Some(t.client_cert.clone()),
                    ca: Some(t.ca.clone()),
                },
            },
            status_ping: Duration::from_secs(15),
        }
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }
}
