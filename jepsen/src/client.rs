//! The harness's view of a node: KES API calls over mutual TLS, one attempt each, no
//! failover and no retries, so every operation in the history is exactly one request.
//! (The project's client retries like kms-go, which would turn one recorded create into
//! several requests and blur what the checker sees.)

use anyhow::{Context, Result};
use base64::Engine;
use kes_types::wire::{DecryptResponse, EncryptResponse, GenerateResponse};
use kes_types::Bytes64;
use reqwest::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

/// How a call ended, in Jepsen's terms.
#[derive(Clone, Debug)]
pub enum Outcome<T> {
    Ok(T),
    /// Certainly not executed, or a definite negative answer; `kind` is `not-found`,
    /// `exists`, `refused` (no connection) or `rejected` (another 4xx, with its message).
    Fail(String),
    /// Unknown: timeout, broken connection, 5xx.
    Info(String),
}

impl<T> Outcome<T> {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Api {
    /// A client authenticating with the admin API key and trusting only the run's CA.
    pub fn new(api_key: &kes_crypto::ApiKey, ca_pem: &str) -> Result<Self> {
        let ck = kes_tls::certgen::api_key_certificate(api_key)
            .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        let ca: Vec<CertificateDer<'static>> = {
            use rustls::pki_types::pem::PemObject;
            CertificateDer::pem_slice_iter(ca_pem.as_bytes()).collect::<Result<_, _>>()?
        };
        for c in ca {
            roots.add(c)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(ck.cert_der.clone())],
                PrivateKeyDer::try_from(ck.key_der.to_vec())
                    .map_err(|e| anyhow::anyhow!("client key: {e}"))?,
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(16)
            .build()
            .context("HTTP client")?;
        Ok(Self { http })
    }

    async fn call(
        &self,
        method: Method,
        url: String,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Outcome<Vec<u8>> {
        let mut rb = self.http.request(method, &url).timeout(timeout);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Outcome::Fail(format!("refused: {e}")),
            Err(e) if e.is_timeout() => return Outcome::Info("timeout".into()),
            Err(e) => return Outcome::Info(format!("transport: {e}")),
        };
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) if e.is_timeout() => return Outcome::Info("timeout".into()),
            Err(e) => return Outcome::Info(format!("transport: {e}")),
        };
        if (200..300).contains(&status) {
            return Outcome::Ok(body);
        }
        let err = kes_client::parse_error_response(status, ct.as_deref(), &body);
        if err.is_key_not_found() {
            Outcome::Fail("not-found".into())
        } else if err.is_key_exists() {
            Outcome::Fail("exists".into())
        } else if status >= 500 {
            Outcome::Info(format!("{status} {}", err.message))
        } else {
            Outcome::Fail(format!("rejected: {status} {}", err.message))
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(o: Outcome<Vec<u8>>) -> Outcome<T> {
        match o {
            Outcome::Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => Outcome::Ok(v),
                Err(e) => Outcome::Info(format!("bad response: {e}")),
            },
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    pub async fn create(&self, base: &str, name: &str, t: Duration) -> Outcome<()> {
        let url = format!("{base}/v1/key/create/{}", kes_client::path_escape(name));
        match self.call(Method::POST, url, None, t).await {
            Outcome::Ok(_) => Outcome::Ok(()),
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    pub async fn delete(&self, base: &str, name: &str, t: Duration) -> Outcome<()> {
        let url = format!("{base}/v1/key/delete/{}", kes_client::path_escape(name));
        match self.call(Method::DELETE, url, None, t).await {
            Outcome::Ok(_) => Outcome::Ok(()),
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    pub async fn describe(&self, base: &str, name: &str, t: Duration) -> Outcome<()> {
        let url = format!("{base}/v1/key/describe/{}", kes_client::path_escape(name));
        match self.call(Method::GET, url, None, t).await {
            Outcome::Ok(_) => Outcome::Ok(()),
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    pub async fn generate(
        &self,
        base: &str,
        name: &str,
        context: &[u8],
        t: Duration,
    ) -> Outcome<GenerateResponse> {
        let url = format!("{base}/v1/key/generate/{}", kes_client::path_escape(name));
        let body = serde_json::json!({ "context": Bytes64(context.to_vec()) });
        Self::decode(self.call(Method::POST, url, Some(body), t).await)
    }

    pub async fn encrypt(
        &self,
        base: &str,
        name: &str,
        plaintext: &[u8],
        t: Duration,
    ) -> Outcome<Vec<u8>> {
        let url = format!("{base}/v1/key/encrypt/{}", kes_client::path_escape(name));
        let body = serde_json::json!({ "plaintext": Bytes64(plaintext.to_vec()) });
        match Self::decode::<EncryptResponse>(self.call(Method::POST, url, Some(body), t).await) {
            Outcome::Ok(r) => Outcome::Ok(r.ciphertext.0),
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    pub async fn decrypt(
        &self,
        base: &str,
        name: &str,
        ciphertext: &[u8],
        context: &[u8],
        t: Duration,
    ) -> Outcome<Vec<u8>> {
        let url = format!("{base}/v1/key/decrypt/{}", kes_client::path_escape(name));
        let body = serde_json::json!({
            "ciphertext": Bytes64(ciphertext.to_vec()),
            "context": Bytes64(context.to_vec()),
        });
        match Self::decode::<DecryptResponse>(self.call(Method::POST, url, Some(body), t).await) {
            Outcome::Ok(r) => Outcome::Ok(r.plaintext.0),
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    /// `GET /v1/cluster/status` as JSON.
    pub async fn cluster_status(&self, base: &str, t: Duration) -> Outcome<serde_json::Value> {
        Self::decode(
            self.call(Method::GET, format!("{base}/v1/cluster/status"), None, t)
                .await,
        )
    }

    /// `PUT /v1/cluster/add/{id}`: adds a node as a voter.
    pub async fn cluster_add(
        &self,
        base: &str,
        id: u64,
        address: &str,
        t: Duration,
    ) -> Outcome<()> {
        let body = serde_json::json!({ "address": address, "voter": true });
        match self
            .call(
                Method::PUT,
                format!("{base}/v1/cluster/add/{id}"),
                Some(body),
                t,
            )
            .await
        {
            Outcome::Ok(_) => Outcome::Ok(()),
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    /// `DELETE /v1/cluster/remove/{id}`.
    pub async fn cluster_remove(&self, base: &str, id: u64, t: Duration) -> Outcome<()> {
        match self
            .call(
                Method::DELETE,
                format!("{base}/v1/cluster/remove/{id}"),
                None,
                t,
            )
            .await
        {
            Outcome::Ok(_) => Outcome::Ok(()),
            Outcome::Fail(f) => Outcome::Fail(f),
            Outcome::Info(i) => Outcome::Info(i),
        }
    }

    /// `GET /v1/ready`.
    pub async fn ready(&self, base: &str, t: Duration) -> bool {
        self.call(Method::GET, format!("{base}/v1/ready"), None, t)
            .await
            .is_ok()
    }
}
