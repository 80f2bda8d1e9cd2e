//! moto servers for tests: started from the virtualenv `tests/services.sh install` creates,
//! on a free loopback port, one per test, and killed when the test ends, even if the test
//! process itself dies (see [`Proc`]). The process handling matches the Vault crate's tests.

// Test support: a panic is how a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{bail, Context, Result};
use kes_config::AwsConfig;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";

/// The services virtualenv: `$KES_SERVICES_VENV`, else `<workspace>/target/services-venv`.
fn venv() -> PathBuf {
    std::env::var_os("KES_SERVICES_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/services-venv"))
}

/// The path of a program from the virtualenv, or `None` when the test should be skipped.
/// With `KES_REQUIRE_SERVICES` set (to anything but `0`), a missing program fails the test.
pub fn service_bin(name: &str) -> Option<PathBuf> {
    let path = venv().join("bin").join(name);
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var("KES_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!(
            "{} is missing and KES_REQUIRE_SERVICES is set: run `tests/services.sh install`",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found; run `tests/services.sh install` to test against a real server",
        path.display()
    );
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A server process under a tiny shell watchdog: the shell starts the server in the
/// background, prints its pid, and kills it once its own stdin closes, which happens when this
/// handle is dropped or when the test process exits for any reason.
pub struct Proc {
    watchdog: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(log: &Path, program: &Path, args: &[String]) -> Result<Proc> {
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!; read _; kill -9 $! 2>/dev/null; wait"#)
            .arg("sh")
            .arg(log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let stdout = watchdog.stdout.take().context("watchdog stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("pid from {line:?}"))?;
        Ok(Proc {
            watchdog,
            pid,
            log: log.to_owned(),
        })
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the server (SIGKILL, so nothing is flushed that a crash would not flush) and
    /// waits until it is gone.
    pub fn kill(&mut self) {
        if self.watchdog.stdin.is_none() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One moto server: Secrets Manager and KMS, in memory.
pub struct Moto {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    pub endpoint: String,
    http: reqwest::Client,
    proc: Option<Proc>,
}

impl Moto {
    /// A running server; `None` when the services are not installed and not required.
    pub async fn start() -> Option<Moto> {
        let bin = service_bin("moto_server")?;
        let port = free_port();
        let mut moto = Moto {
            bin,
            dir: tempfile::tempdir().expect("a temporary directory"),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an http client"),
            proc: None,
        };
        moto.spawn().await.expect("starting moto");
        Some(moto)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = self.dir.path().join("moto.log");
        let args = vec![
            "-H".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        let mut proc = Proc::spawn(&log, &self.bin, &args)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .http
                .get(format!("{}/", self.endpoint))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            if !proc.is_running() || Instant::now() > deadline {
                bail!("moto did not come up:\n{}", proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.proc = Some(proc);
        Ok(())
    }

    pub fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("moto is running")
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts a killed server again on the same port; moto keeps nothing across restarts.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// One call of the AWS JSON protocol, as any AWS SDK sends it. moto takes the service and
    /// region from the credential scope and checks no signature.
    pub async fn call(&self, service: &str, target: &str, body: Value) -> Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("X-Amz-Target", target)
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                format!("AWS4-HMAC-SHA256 Credential=test/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body.to_string())
            .send()
            .await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((code, value))
    }

    /// Calls Secrets Manager and fails unless it answers 200.
    pub async fn secrets(&self, operation: &str, body: Value) -> Result<Value> {
        let (code, v) = self
            .call(
                "secretsmanager",
                &format!("secretsmanager.{operation}"),
                body,
            )
            .await?;
        if code != 200 {
            bail!("{operation}: {code} {v}");
        }
        Ok(v)
    }

    /// A new symmetric KMS key; its id.
    pub async fn create_kms_key(&self) -> Result<String> {
        let (code, v) = self
            .call(
                "kms",
                "TrentService.CreateKey",
                json!({"Description": "kes tests"}),
            )
            .await?;
        if code != 200 {
            bail!("CreateKey: {code} {v}");
        }
        Ok(v["KeyMetadata"]["KeyId"]
            .as_str()
            .context("KeyId")?
            .to_owned())
    }

    /// The store config for this server, with static credentials.
    pub fn config(&self, kms_key: Option<String>) -> AwsConfig {
        AwsConfig {
            endpoint: self.endpoint.clone(),
            region: REGION.to_owned(),
            kms_key,
            access_key: Some("test".to_owned()),
            secret_key: Some("test".to_owned()),
            session_token: None,
        }
    }
}
