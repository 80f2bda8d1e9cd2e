//! Fortanix DSM, formerly SDKMS (`keystore.fortanix.sdkms`), storing each key as MinIO KES
//! does (its `internal/keystore/fortanix`): one opaque security object per key, named by the
//! key, whose value is the key's encoded form, exportable and manageable by the application.
//!
//! * Create: `POST /crypto/v1/keys` with `{"obj_type":"OPAQUE","name","group_id"?,"key_ops":
//!   ["EXPORT","APPMANAGEABLE"],"value":base64(value),"enabled":true}`. DSM keeps names unique,
//!   so `409` is [`StoreError::AlreadyExists`] and DSM decides races.
//! * Get: `POST /crypto/v1/keys/export` by name. When DSM refuses the export, the object's
//!   info says whether it is disabled, which reads as not found (disabling revokes the key).
//! * Delete: the object's `kid` from `POST /crypto/v1/keys/info`, then
//!   `DELETE /crypto/v1/keys/<kid>`.
//! * List: `GET /crypto/v1/keys` sorted by name, page by page with `limit` and `offset` until a
//!   short page (KES never advanced the page and looped once a key existed), in the
//!   configured group when one is set.
//! * Status: a listing of one object.
//!
//! Authentication: the API key opens a session (`POST /sys/v1/session/auth` with Basic auth);
//! its bearer token is renewed at half its life and when DSM answers 401. `tls.ca` names the
//! CAs of an on-premises DSM.

use crate::http::{invalid_config, seg, Answer, Http, Limits, Op};
use crate::token::{Issued, Token, Tokens};
use async_trait::async_trait;
use base64::Engine as _;
use kes_config::FortanixConfig;
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SERVICE: &str = "fortanix dsm";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Objects per listing page.
const LIST_PAGE_SIZE: usize = 100;
/// Pages one listing may fetch (1,000,000 objects), so a listing always ends.
const MAX_LIST_PAGES: usize = 10_000;
/// Longest object name accepted.
const MAX_NAME_LEN: usize = 4096;

/// A KES keystore on Fortanix DSM. Cheap to share behind an `Arc`.
pub struct FortanixStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    endpoint: String,
    group_id: Option<String>,
    api_key: Zeroizing<String>,
    tokens: Tokens,
}

impl fmt::Debug for FortanixStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FortanixStore")
            .field("endpoint", &self.inner.endpoint)
            .field("group_id", &self.inner.group_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Session {
    #[serde(deserialize_with = "crate::http::zeroizing")]
    access_token: Zeroizing<String>,
    #[serde(default)]
    expires_in: u64,
}

#[derive(Deserialize)]
struct SObject {
    #[serde(default)]
    kid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "crate::http::zeroizing")]
    value: Zeroizing<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

impl FortanixStore {
    /// Connects with the default [`Limits`]; see [`FortanixStore::connect_with`].
    pub async fn connect(cfg: &FortanixConfig) -> Result<FortanixStore, StoreError> {
        Self::connect_with(cfg, Limits::default()).await
    }

    /// Validates the configuration and opens a session: a refused API key is
    /// [`StoreError::Denied`], an unreachable DSM [`StoreError::Unavailable`].
    pub async fn connect_with(
        cfg: &FortanixConfig,
        limits: Limits,
    ) -> Result<FortanixStore, StoreError> {
        let endpoint = crate::http::base_url(SERVICE, &cfg.endpoint)?;
        let api_key = Zeroizing::new(cfg.api_key.trim().to_owned());
        if api_key.is_empty() {
            return Err(invalid_config(SERVICE, "credentials.key is empty"));
        }
        if reqwest::header::HeaderValue::from_str(&format!("Basic {}", api_key.as_str())).is_err() {
            return Err(invalid_config(
                SERVICE,
                "credentials.key holds characters a header cannot carry",
            ));
        }
        let inner = Arc::new(Inner {
            http: Http::new(SERVICE, cfg.ca.as_deref(), limits)?,
            endpoint,
            group_id: cfg
                .group_id
                .as_deref()
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned),
            api_key,
            tokens: Tokens::new(),
        });
        inner.token().await?;
        tracing::info!(endpoint = %inner.endpoint, group = ?inner.group_id, "fortanix dsm keystore");
        Ok(FortanixStore { inner })
    }
}

impl Inner {
    async fn login(&self) -> Result<Issued, StoreError> {
        let url = format!("{}/sys/v1/session/auth", self.endpoint);
        let auth = Zeroizing::new(format!("Basic {}", self.api_key.as_str()));
        let a = self
            .http
            .send(Op::Idempotent, |c| {
                c.post(&url).header("authorization", auth.as_str())
            })
            .await?;
        match a.status {
            200 => {
                let s: Session = a.json(SERVICE)?;
                Ok(Issued {
                    token: s.access_token,
                    lifetime: Duration::from_secs(if s.expires_in == 0 {
                        600
                    } else {
                        s.expires_in
                    }),
                })
            }
            401 | 403 => Err(StoreError::Denied(format!(
                "fortanix dsm refused the api key ({}): {}",
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

    /// `POST` of a JSON body that names an object.
    async fn post_name(&self, path: &str, name: &str) -> Result<Answer, StoreError> {
        let url = format!("{}{path}", self.endpoint);
        let body = json!({ "name": name }).to_string();
        self.call(Op::Idempotent, |c| {
            c.post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
        })
        .await
    }

    async fn info(&self, name: &str) -> Result<SObject, StoreError> {
        let a = self.post_name("/crypto/v1/keys/info", name).await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        a.json(SERVICE)
    }

    fn list_url(&self, limit: usize, offset: usize) -> String {
        let mut url = format!(
            "{}/crypto/v1/keys?sort=name:asc&limit={limit}&offset={offset}",
            self.endpoint
        );
        if let Some(g) = &self.group_id {
            url.push_str("&group_id=");
            url.push_str(&seg(g));
        }
        url
    }
}

#[async_trait]
impl KeyStore for FortanixStore {
    fn kind(&self) -> &'static str {
        "fortanix"
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
        let mut body = json!({
            "obj_type": "OPAQUE",
            "name": name,
            "key_ops": ["EXPORT", "APPMANAGEABLE"],
            "value": B64.encode(value),
            "enabled": true,
        });
        if let Some(g) = &self.inner.group_id {
            body["group_id"] = json!(g);
        }
        let body = Zeroizing::new(body.to_string());
        let url = format!("{}/crypto/v1/keys", self.inner.endpoint);
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
        let a = self.inner.post_name("/crypto/v1/keys/export", name).await?;
        if !a.ok() {
            let err = a.error(SERVICE, Op::Idempotent);
            // DSM refuses to export a disabled object: that key is revoked.
            if matches!(a.status, 400 | 403) {
                if let Ok(info) = self.inner.info(name).await {
                    if info.enabled == Some(false) {
                        return Err(StoreError::NotFound);
                    }
                }
            }
            return Err(err);
        }
        let obj: SObject = a.json(SERVICE)?;
        let value = B64
            .decode(obj.value.as_bytes())
            .map_err(|e| StoreError::Invalid(format!("exported value is not base64: {e}")))?;
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "the object holds {} bytes, more than the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        Ok(value)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let info = self.inner.info(name).await?;
        if info.kid.is_empty() {
            return Err(StoreError::Invalid("fortanix dsm returned no kid".into()));
        }
        let url = format!("{}/crypto/v1/keys/{}", self.inner.endpoint, seg(&info.kid));
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
        for page in 0..MAX_LIST_PAGES {
            let url = self.inner.list_url(LIST_PAGE_SIZE, page * LIST_PAGE_SIZE);
            let a = self.inner.call(Op::Idempotent, |c| c.get(&url)).await?;
            if !a.ok() {
                return Err(a.error(SERVICE, Op::Idempotent));
            }
            let objects: Vec<SObject> = a.json(SERVICE)?;
            let full = objects.len() >= LIST_PAGE_SIZE;
            names.extend(
                objects
                    .into_iter()
                    .map(|o| o.name)
                    .filter(|n| n.starts_with(prefix) && n.as_str() >= continue_at),
            );
            if !full {
                return Ok(page_from(names, prefix, continue_at, limit));
            }
        }
        Err(StoreError::unavailable(
            false,
            format!("listing stopped after {MAX_LIST_PAGES} pages of objects"),
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
