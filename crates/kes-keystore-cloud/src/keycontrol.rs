//! Entrust KeyControl (`keystore.entrust.keycontrol`), storing each key as MinIO KES does (its
//! `internal/keystore/entrust`): one secret per key in the configured box of a secrets vault,
//! named by the key, whose data is the key's encoded form.
//!
//! * Create: `POST /vault/1.0/CreateSecret/` with `{"box_id","name","secret_data":base64}`;
//!   `409` is [`StoreError::AlreadyExists`] (names are unique in a box, so the vault decides
//!   races).
//! * Get: `POST /vault/1.0/CheckoutSecret/` with `{"box_id","secret_id"}`; `404` is not found.
//! * Delete: `POST /vault/1.0/DeleteSecret/`.
//! * List: every page of `POST /vault/1.0/ListSecretIds/` (`max_items`, `next_token`). Empty
//!   names, which KES passed on, are dropped.
//! * Status: a listing of one secret id.
//!
//! Authentication: `POST /vault/1.0/Login/<vault_id>/` with the user's name and password
//! gives a token sent as `X-Vault-Auth`, renewed at half its life (from `expires_at`) and
//! when the vault answers 401. `tls.ca` names the vault's CA.

use crate::http::{invalid_config, seg, Answer, Http, Limits, Op};
use crate::token::{Issued, Token, Tokens};
use async_trait::async_trait;
use base64::Engine as _;
use kes_config::KeyControlConfig;
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SERVICE: &str = "entrust keycontrol";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Ids per listing page.
const LIST_PAGE_SIZE: usize = 100;
/// Pages one listing may fetch (1,000,000 secrets), so a listing always ends.
const MAX_LIST_PAGES: usize = 10_000;
const MAX_NAME_LEN: usize = 1024;

/// A KES keystore on an Entrust KeyControl secrets vault. Cheap to share behind an `Arc`.
pub struct KeyControlStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    endpoint: String,
    vault_id: String,
    box_id: String,
    username: String,
    password: Zeroizing<String>,
    tokens: Tokens,
}

impl fmt::Debug for KeyControlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyControlStore")
            .field("endpoint", &self.inner.endpoint)
            .field("vault_id", &self.inner.vault_id)
            .field("box_id", &self.inner.box_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct LoginAnswer {
    #[serde(deserialize_with = "crate::http::zeroizing")]
    access_token: Zeroizing<String>,
    /// RFC 3339.
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct Checkout {
    #[serde(default, deserialize_with = "crate::http::zeroizing")]
    secret_data: Zeroizing<String>,
}

#[derive(Deserialize)]
struct Ids {
    #[serde(default)]
    secret_ids: Vec<String>,
    #[serde(default)]
    next_token: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

/// Seconds from now until an RFC 3339 time; `None` when it does not parse.
fn until(expires_at: &str) -> Option<Duration> {
    let at = time::OffsetDateTime::parse(
        expires_at.trim(),
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs(left.whole_seconds().max(0) as u64))
}

impl KeyControlStore {
    /// Connects with the default [`Limits`]; see [`KeyControlStore::connect_with`].
    pub async fn connect(cfg: &KeyControlConfig) -> Result<KeyControlStore, StoreError> {
        Self::connect_with(cfg, Limits::default()).await
    }

    /// Validates the configuration and logs in to the vault: refused credentials are
    /// [`StoreError::Denied`], an unreachable vault [`StoreError::Unavailable`].
    pub async fn connect_with(
        cfg: &KeyControlConfig,
        limits: Limits,
    ) -> Result<KeyControlStore, StoreError> {
        let endpoint = crate::http::base_url(SERVICE, &cfg.endpoint)?;
        for (field, v) in [
            ("vault_id", &cfg.vault_id),
            ("box_id", &cfg.box_id),
            ("credentials.username", &cfg.username),
        ] {
            if v.trim().is_empty() {
                return Err(invalid_config(SERVICE, format!("{field} is empty")));
            }
        }
        let inner = Arc::new(Inner {
            http: Http::new(SERVICE, cfg.ca.as_deref(), limits)?,
            endpoint,
            vault_id: cfg.vault_id.trim().to_owned(),
            box_id: cfg.box_id.trim().to_owned(),
            username: cfg.username.trim().to_owned(),
            password: Zeroizing::new(cfg.password.clone()),
            tokens: Tokens::new(),
        });
        inner.token().await?;
        tracing::info!(endpoint = %inner.endpoint, vault = %inner.vault_id, r#box = %inner.box_id, "entrust keycontrol keystore");
        Ok(KeyControlStore { inner })
    }
}

impl Inner {
    async fn login(&self) -> Result<Issued, StoreError> {
        let url = format!("{}/vault/1.0/Login/{}/", self.endpoint, seg(&self.vault_id));
        let body = Zeroizing::new(
            json!({"username": self.username, "password": self.password.as_str()}).to_string(),
        );
        let a = self
            .http
            .send(Op::Idempotent, |c| {
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            })
            .await?;
        match a.status {
            200 => {
                let l: LoginAnswer = a.json(SERVICE)?;
                let lifetime = l
                    .expires_at
                    .as_deref()
                    .and_then(until)
                    .unwrap_or(Duration::from_secs(3600));
                Ok(Issued {
                    token: l.access_token,
                    lifetime,
                })
            }
            400 | 401 | 403 | 404 => Err(StoreError::Denied(format!(
                "entrust keycontrol refused the login to vault '{}' ({}): {}",
                self.vault_id,
                a.status,
                a.message()
            ))),
            _ => Err(a.error(SERVICE, Op::Idempotent)),
        }
    }

    async fn token(&self) -> Result<Token, StoreError> {
        self.tokens.get(|| self.login()).await
    }

    /// `POST /vault/1.0/<op>/` with a JSON body, authenticated, once more with a new token
    /// after a 401.
    async fn post(
        &self,
        op: Op,
        action: &str,
        body: serde_json::Value,
    ) -> Result<Answer, StoreError> {
        let url = format!("{}/vault/1.0/{action}/", self.endpoint);
        let body = Zeroizing::new(body.to_string());
        let send = |token: Arc<Zeroizing<String>>| {
            let url = &url;
            let body = &body;
            async move {
                self.http
                    .send(op, |c| {
                        c.post(url)
                            .header("content-type", "application/json")
                            .header("X-Vault-Auth", token.as_str())
                            .body(body.to_string())
                    })
                    .await
            }
        };
        let (token, generation) = self.token().await?;
        let a = send(token).await?;
        if a.status != 401 {
            return Ok(a);
        }
        self.tokens.invalidate(generation);
        let (token, _) = self.token().await?;
        send(token).await
    }

    async fn ids(&self, limit: usize, next: Option<&str>) -> Result<Ids, StoreError> {
        let mut body = json!({"box_id": self.box_id, "max_items": limit});
        if let Some(n) = next {
            body["next_token"] = json!(n);
        }
        let a = self.post(Op::Idempotent, "ListSecretIds", body).await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        a.json(SERVICE)
    }
}

#[async_trait]
impl KeyStore for KeyControlStore {
    fn kind(&self) -> &'static str {
        "entrust"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!("invalid key name '{name}'")));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        let body = json!({
            "box_id": self.inner.box_id,
            "name": name,
            "secret_data": B64.encode(value),
        });
        let a = self.inner.post(Op::Write, "CreateSecret", body).await?;
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
        let body = json!({"box_id": self.inner.box_id, "secret_id": name});
        let a = self
            .inner
            .post(Op::Idempotent, "CheckoutSecret", body)
            .await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        let c: Checkout = a.json(SERVICE)?;
        let value = B64
            .decode(c.secret_data.as_bytes())
            .map_err(|e| StoreError::Invalid(format!("secret data is not base64: {e}")))?;
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "the secret holds {} bytes, more than the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        Ok(value)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let body = json!({"box_id": self.inner.box_id, "secret_id": name});
        let a = self
            .inner
            .post(Op::Idempotent, "DeleteSecret", body)
            .await?;
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
        let mut next: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self.inner.ids(LIST_PAGE_SIZE, next.as_deref()).await?;
            names.extend(
                page.secret_ids.into_iter().filter(|n| {
                    !n.is_empty() && n.starts_with(prefix) && n.as_str() >= continue_at
                }),
            );
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != next.as_ref() => next = Some(t),
                _ => return Ok(page_from(names, prefix, continue_at, limit)),
            }
        }
        Err(StoreError::unavailable(
            false,
            format!("listing stopped after {MAX_LIST_PAGES} pages of secret ids"),
        ))
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let start = Instant::now();
        self.inner.ids(1, None).await?;
        Ok(StoreStatus {
            latency: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times() {
        let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(120))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let d = until(&soon).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(until("2000-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(until("tomorrow"), None);
    }
}
