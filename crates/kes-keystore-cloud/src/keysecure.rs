//! Thales CipherTrust Manager, formerly Gemalto KeySecure (`keystore.gemalto.keysecure`),
//! storing each key as MinIO KES does (its `internal/keystore/gemalto`): one vault secret per
//! key, named by the key, of data type `seed`, whose material is the key's encoded form.
//!
//! * Create: `POST /api/v1/vault/secrets` with `{"name","dataType":"seed","material"}`; `201`
//!   created, `409` is [`StoreError::AlreadyExists`] (the manager keeps names unique and
//!   decides races).
//! * Get: `GET /api/v1/vault/secrets/<name>/export?type=name`. When the export is refused, the
//!   secret's state says whether it is deactivated, which reads as not found.
//! * Delete: `DELETE /api/v1/vault/secrets/<name>?type=name`.
//! * List: every page of `GET /api/v1/vault/secrets` with `limit` and `skip`.
//! * Status: a listing of one secret.
//!
//! Authentication: the refresh token (in `credentials.domain` when set) is exchanged at
//! `POST /api/v1/auth/tokens` for a JWT, renewed at half its life and when the manager answers
//! 401. `tls.ca` names the manager's CA.

use crate::http::{invalid_config, seg, Answer, Http, Limits, Op};
use crate::token::{Issued, Token, Tokens};
use async_trait::async_trait;
use kes_config::KeySecureConfig;
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SERVICE: &str = "ciphertrust manager";
/// Secrets per listing page.
const LIST_PAGE_SIZE: usize = 100;
/// Pages one listing may fetch (1,000,000 secrets), so a listing always ends.
const MAX_LIST_PAGES: usize = 10_000;
const MAX_NAME_LEN: usize = 1024;

/// A KES keystore on CipherTrust Manager / KeySecure. Cheap to share behind an `Arc`.
pub struct KeySecureStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    endpoint: String,
    refresh_token: Zeroizing<String>,
    domain: Option<String>,
    tokens: Tokens,
}

impl fmt::Debug for KeySecureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySecureStore")
            .field("endpoint", &self.inner.endpoint)
            .field("domain", &self.inner.domain)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(deserialize_with = "crate::http::zeroizing")]
    jwt: Zeroizing<String>,
    /// Seconds.
    #[serde(default)]
    duration: u64,
}

#[derive(Deserialize)]
struct Exported {
    #[serde(default, deserialize_with = "crate::http::zeroizing")]
    material: Zeroizing<String>,
}

#[derive(Deserialize)]
struct SecretInfo {
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
struct ListAnswer {
    #[serde(default)]
    resources: Vec<Named>,
    #[serde(default)]
    total: Option<usize>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: String,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

impl KeySecureStore {
    /// Connects with the default [`Limits`]; see [`KeySecureStore::connect_with`].
    pub async fn connect(cfg: &KeySecureConfig) -> Result<KeySecureStore, StoreError> {
        Self::connect_with(cfg, Limits::default()).await
    }

    /// Validates the configuration and gets a first JWT: a refused refresh token is
    /// [`StoreError::Denied`], an unreachable manager [`StoreError::Unavailable`].
    pub async fn connect_with(
        cfg: &KeySecureConfig,
        limits: Limits,
    ) -> Result<KeySecureStore, StoreError> {
        let endpoint = crate::http::base_url(SERVICE, &cfg.endpoint)?;
        let refresh_token = Zeroizing::new(cfg.token.trim().to_owned());
        if refresh_token.is_empty() {
            return Err(invalid_config(SERVICE, "credentials.token is empty"));
        }
        let inner = Arc::new(Inner {
            http: Http::new(SERVICE, cfg.ca.as_deref(), limits)?,
            endpoint,
            refresh_token,
            domain: cfg
                .domain
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
            tokens: Tokens::new(),
        });
        inner.token().await?;
        tracing::info!(endpoint = %inner.endpoint, domain = ?inner.domain, "ciphertrust manager keystore");
        Ok(KeySecureStore { inner })
    }
}

impl Inner {
    async fn login(&self) -> Result<Issued, StoreError> {
        let url = format!("{}/api/v1/auth/tokens", self.endpoint);
        let mut body = json!({
            "grant_type": "refresh_token",
            "refresh_token": self.refresh_token.as_str(),
        });
        if let Some(d) = &self.domain {
            body["domain"] = json!(d);
        }
        let body = Zeroizing::new(body.to_string());
        let a = self
            .http
            .send(Op::Idempotent, |c| {
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            })
            .await?;
        match a.status {
            200 | 201 => {
                let t: TokenAnswer = a.json(SERVICE)?;
                Ok(Issued {
                    token: t.jwt,
                    lifetime: Duration::from_secs(if t.duration == 0 { 300 } else { t.duration }),
                })
            }
            400 | 401 | 403 => Err(StoreError::Denied(format!(
                "ciphertrust manager refused the refresh token ({}): {}",
                a.status,
                a.message()
            ))),
            _ => Err(a.error(SERVICE, Op::Idempotent)),
        }
    }

    async fn token(&self) -> Result<Token, StoreError> {
        self.tokens.get(|| self.login()).await
    }

    async fn call<F>(&self, op: Op, build: F) -> Result<Answer, StoreError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let (token, generation) = self.token().await?;
        let a = self
            .http
            .send(op, |c| build(c).bearer_auth(token.as_str()))
            .await?;
        if a.status != 401 {
            return Ok(a);
        }
        self.tokens.invalidate(generation);
        let (token, _) = self.token().await?;
        self.http
            .send(op, |c| build(c).bearer_auth(token.as_str()))
            .await
    }

    fn secret_url(&self, name: &str, suffix: &str) -> String {
        format!(
            "{}/api/v1/vault/secrets/{}{suffix}?type=name",
            self.endpoint,
            seg(name)
        )
    }

    fn list_url(&self, limit: usize, skip: usize) -> String {
        format!(
            "{}/api/v1/vault/secrets?limit={limit}&skip={skip}",
            self.endpoint
        )
    }
}

#[async_trait]
impl KeyStore for KeySecureStore {
    fn kind(&self) -> &'static str {
        "gemalto"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!("invalid key name '{name}'")));
        }
        let material = std::str::from_utf8(value).map_err(|_| {
            StoreError::Invalid("ciphertrust secrets hold text; the value is not UTF-8".into())
        })?;
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        let url = format!("{}/api/v1/vault/secrets", self.inner.endpoint);
        let body = Zeroizing::new(
            json!({"name": name, "dataType": "seed", "material": material}).to_string(),
        );
        let a = self
            .inner
            .call(Op::Write, |c| {
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            })
            .await?;
        if a.ok() {
            Ok(())
        } else {
            Err(a.error(SERVICE, Op::Write))
        }
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let url = self.inner.secret_url(name, "/export");
        let a = self.inner.call(Op::Idempotent, |c| c.get(&url)).await?;
        if !a.ok() {
            let err = a.error(SERVICE, Op::Idempotent);
            // A deactivated secret cannot be exported: that key is revoked.
            if matches!(a.status, 400 | 403 | 422) {
                let url = self.inner.secret_url(name, "");
                if let Ok(info) = self.inner.call(Op::Idempotent, |c| c.get(&url)).await {
                    if info.ok() {
                        if let Ok(i) = info.json::<SecretInfo>(SERVICE) {
                            if !i.state.is_empty() && i.state != "Active" {
                                return Err(StoreError::NotFound);
                            }
                        }
                    }
                }
            }
            return Err(err);
        }
        let e: Exported = a.json(SERVICE)?;
        if e.material.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "the secret holds {} bytes, more than the limit of {MAX_VALUE_LEN}",
                e.material.len()
            )));
        }
        Ok(e.material.as_bytes().to_vec())
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let url = self.inner.secret_url(name, "");
        let a = self.inner.call(Op::Idempotent, |c| c.delete(&url)).await?;
        if a.ok() {
            Ok(())
        } else {
            Err(a.error(SERVICE, Op::Idempotent))
        }
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let mut names = Vec::new();
        let mut skip = 0;
        for _ in 0..MAX_LIST_PAGES {
            let url = self.inner.list_url(LIST_PAGE_SIZE, skip);
            let a = self.inner.call(Op::Idempotent, |c| c.get(&url)).await?;
            if !a.ok() {
                return Err(a.error(SERVICE, Op::Idempotent));
            }
            let page: ListAnswer = a.json(SERVICE)?;
            let got = page.resources.len();
            skip += got;
            names.extend(
                page.resources
                    .into_iter()
                    .map(|r| r.name)
                    .filter(|n| n.starts_with(prefix) && n.as_str() >= continue_at),
            );
            if got < LIST_PAGE_SIZE || page.total.is_some_and(|t| skip >= t) {
                return Ok(page_from(names, prefix, continue_at, limit));
            }
        }
        Err(StoreError::unavailable(
            false,
            format!("listing stopped after {MAX_LIST_PAGES} pages of secrets"),
        ))
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let start = Instant::now();
        let url = self.inner.list_url(1, 0);
        let a = self.inner.call(Op::Idempotent, |c| c.get(&url)).await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        Ok(StoreStatus {
            latency: start.elapsed(),
        })
    }
}
