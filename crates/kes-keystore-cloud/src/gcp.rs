//! GCP Secret Manager (`keystore.gcp.secretmanager`), storing each key as MinIO KES does (its
//! `internal/keystore/gcp`): one secret per key, named by the key, with automatic replication,
//! whose version 1 holds the value.
//!
//! * Create: `POST …/secrets?secretId=<name>` (`409` is [`StoreError::AlreadyExists`], and
//!   Secret Manager decides races between creators), then `POST …/secrets/<name>:addVersion`
//!   with the value. When adding the version is refused, the new secret is deleted again so the
//!   name stays usable. When the answer to it is lost, the secret may be left without a
//!   version: it then reads as not found, and a create of the name reports that it exists
//!   until it is deleted (the cluster's leader settles such a create once the KMS answers).
//! * Get: `GET …/secrets/<name>/versions/1:access`. A disabled or destroyed version 1 reads as
//!   not found, so disabling it in Secret Manager revokes the key.
//! * Delete: `DELETE …/secrets/<name>` (every version).
//! * List: every page of `GET …/secrets`, the last path segment of each name, then KES's
//!   common paging.
//! * Status: a listing of one secret, which checks reachability and the token.
//!
//! Authentication: a service account's key signs a JWT (RS256, `kid` = `private_key_id`,
//! claims `iss`, `scope`, `aud`, `iat`, `exp`) that the token endpoint exchanges for an OAuth2
//! access token (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`), replaced at half
//! its life. Without credentials in the configuration, the store reads the service-account key
//! file that `GOOGLE_APPLICATION_CREDENTIALS` names, else asks the GCE metadata server, as
//! Google's libraries do.

use crate::http::{base_url, invalid_config, seg, Answer, Http, Limits, Op};
use crate::token::{Issued, Token, Tokens};
use async_trait::async_trait;
use base64::Engine as _;
use kes_config::{GcpConfig, DEFAULT_GCP_TOKEN_URI};
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

const SERVICE: &str = "gcp secret manager";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Lifetime asked for in the assertion; Google's maximum.
const ASSERTION_LIFETIME: u64 = 3600;
/// Secrets per listing page.
const LIST_PAGE_SIZE: usize = 250;
/// Pages one listing may fetch (250,000 secrets), so a listing always ends.
const MAX_LIST_PAGES: usize = 1000;
/// Largest secret payload Secret Manager stores.
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// The metadata server of GCE, GKE and Cloud Run.
const METADATA_HOST: &str = "metadata.google.internal";

/// How the store gets access tokens.
enum Auth {
    ServiceAccount {
        email: String,
        key_id: String,
        key: Box<RsaKeyPair>,
        token_uri: String,
        scopes: String,
    },
    /// The metadata server's token of the instance's service account.
    Metadata { url: String },
}

/// A KES keystore on GCP Secret Manager. Cheap to share behind an `Arc`.
pub struct GcpStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    /// `<endpoint>/v1/projects/<project>`.
    base: String,
    auth: Auth,
    tokens: Tokens,
}

impl fmt::Debug for GcpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpStore")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// The fields of a service-account key file this store reads.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default, deserialize_with = "crate::http::zeroizing")]
    private_key: Zeroizing<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// A PEM RSA private key (PKCS#8 as Google issues them, or PKCS#1), also when pasted with
/// literal `\n` escapes from a JSON key file.
fn rsa_key(pem: &str) -> Result<RsaKeyPair, StoreError> {
    let pem = Zeroizing::new(if pem.contains('\n') {
        pem.to_owned()
    } else {
        pem.replace("\\n", "\n")
    });
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        invalid_config(SERVICE, "credentials.private_key: no PEM private key found")
    })?;
    let parsed = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => {
            return Err(invalid_config(
                SERVICE,
                "credentials.private_key: not an RSA key",
            ))
        }
    };
    parsed.map_err(|e| invalid_config(SERVICE, format!("credentials.private_key: {e}")))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A signed service-account assertion.
fn assertion(
    email: &str,
    key_id: &str,
    key: &RsaKeyPair,
    token_uri: &str,
    scopes: &str,
) -> Result<String, StoreError> {
    let iat = now_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": key_id});
    let claims = json!({
        "iss": email,
        "scope": scopes,
        "aud": token_uri,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME,
    });
    let signing_input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| StoreError::unavailable(false, "signing the gcp token assertion failed"))?;
    Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", seg(k), seg(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(deserialize_with = "crate::http::zeroizing")]
    access_token: Zeroizing<String>,
    #[serde(default)]
    expires_in: u64,
}

/// Valid secret ids: `[A-Za-z0-9_-]{1,255}`.
fn valid_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl GcpStore {
    /// Connects with the default [`Limits`]; see [`GcpStore::connect_with`].
    pub async fn connect(cfg: &GcpConfig) -> Result<GcpStore, StoreError> {
        Self::connect_with(cfg, Limits::default()).await
    }

    /// Validates the configuration and gets a first access token, so that refused credentials
    /// stop the start with a clear error ([`StoreError::Denied`]); an unreachable token
    /// endpoint is [`StoreError::Unavailable`].
    pub async fn connect_with(cfg: &GcpConfig, limits: Limits) -> Result<GcpStore, StoreError> {
        let project = cfg.project_id.trim();
        if project.is_empty() {
            return Err(invalid_config(SERVICE, "project_id is empty"));
        }
        let endpoint = base_url(SERVICE, &cfg.endpoint)?;
        let scopes = cfg
            .scopes
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let auth = match &cfg.credentials {
            Some(c) => Auth::ServiceAccount {
                email: c.client_email.trim().to_owned(),
                key_id: c.private_key_id.trim().to_owned(),
                key: Box::new(rsa_key(&c.private_key)?),
                token_uri: base_url(SERVICE, &c.token_uri)?,
                scopes,
            },
            None => default_credentials(scopes).await?,
        };
        let http = Http::new(SERVICE, None, limits)?;
        let inner = Arc::new(Inner {
            http,
            base: format!("{endpoint}/v1/projects/{}", seg(project)),
            auth,
            tokens: Tokens::new(),
        });
        inner.token().await?;
        tracing::info!(%endpoint, project, "gcp secret manager keystore");
        Ok(GcpStore { inner })
    }
}

/// Google's application default credentials: the key file `GOOGLE_APPLICATION_CREDENTIALS`
/// names, else the metadata server where one exists.
async fn default_credentials(scopes: String) -> Result<Auth, StoreError> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
            invalid_config(
                SERVICE,
                format!(
                    "GOOGLE_APPLICATION_CREDENTIALS {}: {e}",
                    path.to_string_lossy()
                ),
            )
        })?);
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| invalid_config(SERVICE, format!("GOOGLE_APPLICATION_CREDENTIALS: {e}")))?;
        if file.kind != "service_account" {
            return Err(invalid_config(
                SERVICE,
                format!(
                    "GOOGLE_APPLICATION_CREDENTIALS: a key file of type '{}'; want service_account",
                    file.kind
                ),
            ));
        }
        return Ok(Auth::ServiceAccount {
            email: file.client_email,
            key_id: file.private_key_id,
            key: Box::new(rsa_key(&file.private_key)?),
            token_uri: base_url(
                SERVICE,
                file.token_uri.as_deref().unwrap_or(DEFAULT_GCP_TOKEN_URI),
            )?,
            scopes,
        });
    }
    let host = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| METADATA_HOST.to_owned());
    let lookup = if host.contains(':') {
        host.clone()
    } else {
        format!("{host}:80")
    };
    if tokio::net::lookup_host(&lookup).await.is_err() {
        return Err(invalid_config(
            SERVICE,
            "no credentials: set keystore.gcp.secretmanager.credentials or \
             GOOGLE_APPLICATION_CREDENTIALS, or run on GCP (no metadata server found)",
        ));
    }
    Ok(Auth::Metadata {
        url: format!(
            "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={}",
            seg(&scopes.replace(' ', ","))
        ),
    })
}

impl Inner {
    async fn login(&self) -> Result<Issued, StoreError> {
        let answer = match &self.auth {
            Auth::ServiceAccount {
                email,
                key_id,
                key,
                token_uri,
                scopes,
            } => {
                let jwt = Zeroizing::new(assertion(email, key_id, key, token_uri, scopes)?);
                let body = Zeroizing::new(form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &jwt),
                ]));
                self.http
                    .send(Op::Idempotent, |c| {
                        c.post(token_uri)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(body.to_string())
                    })
                    .await?
            }
            Auth::Metadata { url } => {
                self.http
                    .send(Op::Idempotent, |c| {
                        c.get(url).header("Metadata-Flavor", "Google")
                    })
                    .await?
            }
        };
        match answer.status {
            200 => {
                let t: TokenAnswer = answer.json("the gcp token endpoint")?;
                if t.access_token.is_empty() {
                    return Err(StoreError::Invalid(
                        "the gcp token endpoint returned an empty token".into(),
                    ));
                }
                Ok(Issued {
                    token: t.access_token,
                    lifetime: Duration::from_secs(if t.expires_in == 0 {
                        ASSERTION_LIFETIME
                    } else {
                        t.expires_in
                    }),
                })
            }
            // invalid_grant, invalid_client, unauthorized_client: the credentials are refused.
            400 | 401 | 403 => Err(StoreError::Denied(format!(
                "the gcp token endpoint refused the credentials ({}): {}",
                answer.status,
                answer.message()
            ))),
            _ => Err(answer.error("the gcp token endpoint", Op::Idempotent)),
        }
    }

    async fn token(&self) -> Result<Token, StoreError> {
        self.tokens.get(|| self.login()).await
    }

    /// Sends an authenticated request; once more with a new token when the current one is
    /// refused (it may have been revoked, or expired while the KMS was unreachable).
    async fn call<F>(&self, op: Op, build: F) -> Result<Answer, StoreError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let (token, generation) = self.token().await?;
        let answer = self
            .http
            .send(op, |c| build(c, &token).bearer_auth(token.as_str()))
            .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        self.tokens.invalidate(generation);
        let (token, _) = self.token().await?;
        self.http
            .send(op, |c| build(c, &token).bearer_auth(token.as_str()))
            .await
    }

    fn secret_url(&self, name: &str) -> String {
        format!("{}/secrets/{}", self.base, seg(name))
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        let url = self.secret_url(name);
        let a = self.call(Op::Idempotent, |c, _| c.delete(&url)).await?;
        if a.ok() {
            Ok(())
        } else {
            Err(a.error(SERVICE, Op::Idempotent))
        }
    }
}

#[derive(Deserialize)]
struct AccessAnswer {
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct ListAnswer {
    #[serde(default)]
    secrets: Vec<SecretName>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: String,
}

#[derive(Deserialize)]
struct SecretName {
    name: String,
}

#[async_trait]
impl KeyStore for GcpStore {
    fn kind(&self) -> &'static str {
        "gcp"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if !valid_id(name) {
            return Err(StoreError::Invalid(format!(
                "'{name}' is not a valid secret id for gcp secret manager (letters, digits, '-' and '_', at most 255)"
            )));
        }
        if value.len() > MAX_VALUE_LEN.min(MAX_SECRET_LEN) {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds secret manager's limit of {MAX_SECRET_LEN}",
                value.len()
            )));
        }
        let inner = &self.inner;
        let url = format!("{}/secrets?secretId={}", inner.base, seg(name));
        let body = json!({"replication": {"automatic": {}}}).to_string();
        let a = inner
            .call(Op::Write, |c, _| {
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Write));
        }
        let url = format!("{}:addVersion", inner.secret_url(name));
        let body = Zeroizing::new(json!({"payload": {"data": B64.encode(value)}}).to_string());
        // (error, whether the version was surely not added)
        let (err, not_added) = match inner
            .call(Op::Write, |c, _| {
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            })
            .await
        {
            Ok(a) if a.ok() => return Ok(()),
            Ok(a) => (
                a.error(SERVICE, Op::Write),
                a.status < 500 || a.status == 503,
            ),
            // Retryable write failures never reached the KMS.
            Err(e) => {
                let sent = !matches!(
                    e,
                    StoreError::Unavailable {
                        retryable: true,
                        ..
                    }
                );
                (e, !sent)
            }
        };
        // The secret exists without a value. Remove it when the version was surely not added,
        // so the name can be created again.
        if not_added {
            if let Err(e) = inner.delete_secret(name).await {
                tracing::warn!(key = %name, error = %e, "removing a secret whose version was not added failed");
            }
        }
        Err(match err {
            // The secret was created by this call, so these answers are not about the key.
            StoreError::AlreadyExists | StoreError::NotFound => StoreError::unavailable(
                false,
                "gcp secret manager: adding the secret's version failed",
            ),
            other => other,
        })
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if !valid_id(name) {
            return Err(StoreError::NotFound);
        }
        let url = format!("{}/versions/1:access", self.inner.secret_url(name));
        let a = self.inner.call(Op::Idempotent, |c, _| c.get(&url)).await?;
        if !a.ok() {
            // FAILED_PRECONDITION: version 1 is disabled or destroyed, so the key is revoked.
            let status = serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/status")
                        .and_then(|s| s.as_str())
                        .map(str::to_owned)
                });
            if matches!(a.status, 400 | 412) && status.as_deref() == Some("FAILED_PRECONDITION") {
                return Err(StoreError::NotFound);
            }
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        let v: AccessAnswer = a.json(SERVICE)?;
        let value = B64
            .decode(v.payload.data.as_bytes())
            .map_err(|e| StoreError::Invalid(format!("secret payload is not base64: {e}")))?;
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "the secret holds {} bytes, more than the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        Ok(value)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_id(name) {
            return Err(StoreError::NotFound);
        }
        self.inner.delete_secret(name).await
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let mut names = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_LIST_PAGES {
            let mut url = format!("{}/secrets?pageSize={LIST_PAGE_SIZE}", self.inner.base);
            if !token.is_empty() {
                url.push_str("&pageToken=");
                url.push_str(&seg(&token));
            }
            let a = self.inner.call(Op::Idempotent, |c, _| c.get(&url)).await?;
            if !a.ok() {
                return Err(a.error(SERVICE, Op::Idempotent));
            }
            let page: ListAnswer = a.json(SERVICE)?;
            names.extend(
                page.secrets
                    .into_iter()
                    .filter_map(|s| s.name.rsplit('/').next().map(str::to_owned))
                    .filter(|n| n.starts_with(prefix) && n.as_str() >= continue_at),
            );
            if page.next_page_token.is_empty() || page.next_page_token == token {
                return Ok(page_from(names, prefix, continue_at, limit));
            }
            token = page.next_page_token;
        }
        Err(StoreError::unavailable(
            false,
            format!("listing stopped after {MAX_LIST_PAGES} pages of secrets"),
        ))
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let start = Instant::now();
        let url = format!("{}/secrets?pageSize=1", self.inner.base);
        let a = self.inner.call(Op::Idempotent, |c, _| c.get(&url)).await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        Ok(StoreStatus {
            latency: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids() {
        assert!(valid_id("my-key_1"));
        for bad in ["", "a.b", "a/b", "ä", &"a".repeat(256)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn bad_keys_are_config_errors() {
        for pem in [
            "",
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            match rsa_key(pem) {
                Err(StoreError::Unavailable {
                    retryable: false,
                    message,
                }) => assert!(message.contains("private_key"), "{message}"),
                Err(e) => panic!("{pem:?}: {e:?}"),
                Ok(_) => panic!("{pem:?} parsed"),
            }
        }
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form(&[("a", "x y"), ("b", "1:2")]), "a=x%20y&b=1%3A2");
    }
}
