//! moto servers for tests: started from the virtualenv `tests/services.sh install` creates,
//! on a free loopback port, one per test, and killed when the test ends, even if the test
//! process itself dies (see [`crate::Proc`]).

use crate::{free_port, service_bin, Proc};
use anyhow::{bail, Context, Result};
use kes_config::AwsConfig;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";

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
