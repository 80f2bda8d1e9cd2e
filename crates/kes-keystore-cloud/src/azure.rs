//! Azure Key Vault (`keystore.azure.keyvault`), storing each key as MinIO KES does (its
//! `internal/keystore/azure`): one secret per key, named by the key, whose oldest enabled
//! version holds the value as text.
//!
//! * Create: the name must not exist (`GET …/secrets/<name>/versions`, which also sees
//!   disabled secrets), then `PUT …/secrets/<name>`. A name that is soft-deleted (`409`,
//!   `ObjectIsDeletedButRecoverable`) is purged, with bounded retries while Key Vault is still
//!   deleting it, and the `PUT` is sent again. Key Vault has no create-if-absent, so after the
//!   `PUT` the store lists the versions: when the oldest valid version is not the one it wrote,
//!   another creator won the race and the create reports [`StoreError::AlreadyExists`] (its
//!   newer version is never read). Creates of one name in one process are also serialised.
//! * Get: the oldest version (by creation time, then id) that is enabled and within its
//!   `nbf`/`exp` window, read by version. A secret without such a version reads as not found,
//!   so disabling a secret in Key Vault revokes the key.
//! * Delete: `DELETE …/secrets/<name>`, then purge `…/deletedsecrets/<name>` with bounded
//!   retries while the deletion is in progress, so the name can be created again at once. A
//!   vault with purge protection refuses the purge: the delete still succeeds, and the name is
//!   free again once Key Vault's retention ends.
//! * List: every page of `GET …/secrets`, following `nextLink` (only to the vault itself).
//! * Status: a listing of one secret.
//!
//! Authentication: an Entra ID client secret (`credentials`), exchanged for a token for
//! `https://vault.azure.net/.default` at `AZURE_AUTHORITY_HOST` (default
//! `https://login.microsoftonline.com`), or the managed identity from the instance metadata
//! service (`managed_identity`), or, with neither, the `AZURE_*` variables else the managed
//! identity. Tokens are replaced at half their life and once more when the vault answers 401.

use crate::http::{invalid_config, seg, Answer, Http, Limits, Op};
use crate::token::{Issued, Token, Tokens};
use async_trait::async_trait;
use kes_config::{AzureAuth, AzureConfig};
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

const SERVICE: &str = "azure key vault";
const API_VERSION: &str = "7.4";
/// Entra ID's public cloud authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service of Azure VMs.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Largest secret value Key Vault stores.
pub const MAX_SECRET_LEN: usize = 25 * 1024;
/// Entries per listing page, Key Vault's maximum.
const LIST_PAGE_SIZE: usize = 25;
/// Pages one listing may fetch (250,000 secrets), so a listing always ends.
const MAX_LIST_PAGES: usize = 10_000;
/// Pages of versions read for one get or create; a key has one version unless edited by hand.
const MAX_VERSION_PAGES: usize = 40;
/// Purges tried while Key Vault is still deleting a secret (KES: 25).
const PURGE_ATTEMPTS: u32 = 25;
/// Striped locks serialising the creates of one name: bounded memory however many names.
const CREATE_LOCK_STRIPES: usize = 64;

/// Where the store asks for tokens. [`AzureOptions::default`] reads `AZURE_AUTHORITY_HOST`
/// and `AZURE_POD_IDENTITY_AUTHORITY_HOST`, as Azure's libraries do.
#[derive(Clone, Debug)]
pub struct AzureOptions {
    pub limits: Limits,
    /// The Entra ID authority for client secrets.
    pub authority_host: String,
    /// The managed-identity endpoint.
    pub imds_endpoint: String,
}

impl Default for AzureOptions {
    fn default() -> Self {
        let env = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Self {
            limits: Limits::default(),
            authority_host: env("AZURE_AUTHORITY_HOST", DEFAULT_AUTHORITY_HOST),
            imds_endpoint: env("AZURE_POD_IDENTITY_AUTHORITY_HOST", DEFAULT_IMDS_ENDPOINT),
        }
    }
}

enum Login {
    ClientSecret {
        url: String,
        client_id: String,
        secret: Zeroizing<String>,
    },
    ManagedIdentity {
        url: String,
    },
}

/// A KES keystore on Azure Key Vault. Cheap to share behind an `Arc`.
pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    /// The vault's URL, without the trailing slash.
    vault: String,
    login: Login,
    tokens: Tokens,
    create_locks: Vec<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStore")
            .field("vault", &self.inner.vault)
            .finish_non_exhaustive()
    }
}

/// Valid secret names: `[0-9A-Za-z-]{1,127}`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(deserialize_with = "crate::http::zeroizing")]
    access_token: Zeroizing<String>,
    /// A number from Entra ID, a string from the metadata service.
    #[serde(default)]
    expires_in: serde_json::Value,
}

#[derive(Deserialize, Default)]
struct Attributes {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    created: Option<u64>,
}

#[derive(Deserialize)]
struct Item {
    id: String,
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Deserialize)]
struct ItemPage {
    #[serde(default)]
    value: Vec<Item>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    id: String,
    #[serde(default, deserialize_with = "crate::http::zeroizing")]
    value: Zeroizing<String>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The last path segment of a Key Vault id.
fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// The inner error code of a Key Vault error body (`ObjectIsDeletedButRecoverable`, ...).
fn inner_code(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/innererror/code")
                .or_else(|| v.pointer("/error/code"))
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

impl AzureStore {
    /// Connects with the default [`AzureOptions`]; see [`AzureStore::connect_with`].
    pub async fn connect(cfg: &AzureConfig) -> Result<AzureStore, StoreError> {
        Self::connect_with(cfg, AzureOptions::default()).await
    }

    /// Validates the configuration and gets a first token: refused credentials are
    /// [`StoreError::Denied`], an unreachable identity endpoint [`StoreError::Unavailable`].
    pub async fn connect_with(
        cfg: &AzureConfig,
        opts: AzureOptions,
    ) -> Result<AzureStore, StoreError> {
        let vault = crate::http::base_url(SERVICE, &cfg.endpoint)?;
        let authority = crate::http::base_url(SERVICE, &opts.authority_host)?;
        let imds = crate::http::base_url(SERVICE, &opts.imds_endpoint)?;
        let env = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let client_secret = |tenant: &str, client: &str, secret: &str| {
            if tenant.trim().is_empty() || client.trim().is_empty() || secret.is_empty() {
                return Err(invalid_config(
                    SERVICE,
                    "credentials need tenant_id, client_id and client_secret",
                ));
            }
            Ok(Login::ClientSecret {
                url: format!("{authority}/{}/oauth2/v2.0/token", seg(tenant.trim())),
                client_id: client.trim().to_owned(),
                secret: Zeroizing::new(secret.to_owned()),
            })
        };
        let managed = |client: Option<&str>| {
            let mut url = format!(
                "{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                seg(VAULT_RESOURCE)
            );
            if let Some(c) = client.map(str::trim).filter(|c| !c.is_empty()) {
                url.push_str("&client_id=");
                url.push_str(&seg(c));
            }
            Login::ManagedIdentity { url }
        };
        let login = match &cfg.auth {
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                client_secret: secret,
            } => client_secret(tenant_id, client_id, secret)?,
            AzureAuth::ManagedIdentity { client_id } => managed(client_id.as_deref()),
            AzureAuth::Default => match (
                env("AZURE_TENANT_ID"),
                env("AZURE_CLIENT_ID"),
                env("AZURE_CLIENT_SECRET").map(Zeroizing::new),
            ) {
                (Some(t), Some(c), Some(s)) => client_secret(&t, &c, &s)?,
                (_, c, _) => managed(c.as_deref()),
            },
        };
        let inner = Arc::new(Inner {
            http: Http::new(SERVICE, None, opts.limits)?,
            vault,
            login,
            tokens: Tokens::new(),
            create_locks: (0..CREATE_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        });
        inner.token().await?;
        tracing::info!(vault = %inner.vault, "azure key vault keystore");
        Ok(AzureStore { inner })
    }
}

impl Inner {
    async fn login(&self) -> Result<Issued, StoreError> {
        let (answer, who) = match &self.login {
            Login::ClientSecret {
                url,
                client_id,
                secret,
            } => {
                let body = Zeroizing::new(format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
                    seg(client_id),
                    seg(secret),
                    seg(VAULT_SCOPE)
                ));
                let a = self
                    .http
                    .send(Op::Idempotent, |c| {
                        c.post(url)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(body.to_string())
                    })
                    .await?;
                (a, "entra id")
            }
            Login::ManagedIdentity { url } => {
                let a = self
                    .http
                    .send(Op::Idempotent, |c| c.get(url).header("Metadata", "true"))
                    .await?;
                (a, "the managed identity endpoint")
            }
        };
        match answer.status {
            200 => {
                let t: TokenAnswer = answer.json(who)?;
                let secs = match &t.expires_in {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .unwrap_or(3600);
                if t.access_token.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "{who} returned an empty token"
                    )));
                }
                Ok(Issued {
                    token: t.access_token,
                    lifetime: Duration::from_secs(secs),
                })
            }
            // invalid_client, unauthorized_client, an unknown tenant or identity.
            400 | 401 | 403 | 404 => Err(StoreError::Denied(format!(
                "{who} refused the credentials ({}): {}",
                answer.status,
                answer.message()
            ))),
            _ => Err(answer.error(who, Op::Idempotent)),
        }
    }

    async fn token(&self) -> Result<Token, StoreError> {
        self.tokens.get(|| self.login()).await
    }

    /// Sends an authenticated request; once more with a new token when the vault answers 401.
    async fn call<F>(&self, op: Op, build: F) -> Result<Answer, StoreError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let (token, generation) = self.token().await?;
        let answer = self
            .http
            .send(op, |c| build(c).bearer_auth(token.as_str()))
            .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        self.tokens.invalidate(generation);
        let (token, _) = self.token().await?;
        self.http
            .send(op, |c| build(c).bearer_auth(token.as_str()))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}?api-version={API_VERSION}", self.vault)
    }

    /// Every item of a paged listing, following `nextLink` on the vault only.
    async fn items(&self, first: String, max_pages: usize) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut url = first;
        for _ in 0..max_pages {
            let a = self.call(Op::Idempotent, |c| c.get(&url)).await?;
            if !a.ok() {
                return Err(a.error(SERVICE, Op::Idempotent));
            }
            let page: ItemPage = a.json(SERVICE)?;
            items.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                None => return Ok(items),
                Some(next) if next.starts_with(&format!("{}/", self.vault)) && next != url => {
                    url = next;
                }
                Some(_) => {
                    return Err(StoreError::Invalid(
                        "key vault's nextLink leads away from the vault".into(),
                    ))
                }
            }
        }
        Err(StoreError::unavailable(
            false,
            format!("listing stopped after {max_pages} pages"),
        ))
    }

    /// The versions of a secret; `NotFound` when there is no such secret.
    async fn versions(&self, name: &str) -> Result<Vec<Item>, StoreError> {
        let url = format!(
            "{}&maxresults={LIST_PAGE_SIZE}",
            self.url(&format!("secrets/{}/versions", seg(name)))
        );
        self.items(url, MAX_VERSION_PAGES).await
    }

    /// The id of the version KES reads: the oldest enabled one within its validity window.
    fn oldest_valid(versions: &[Item]) -> Option<&str> {
        let now = now_secs();
        versions
            .iter()
            .filter(|v| {
                let a = &v.attributes;
                a.enabled.unwrap_or(true)
                    && a.nbf.is_none_or(|nbf| nbf <= now)
                    && a.exp.is_none_or(|exp| exp > now)
            })
            .min_by(|x, y| {
                (
                    x.attributes.created.unwrap_or(u64::MAX),
                    last_segment(&x.id),
                )
                    .cmp(&(
                        y.attributes.created.unwrap_or(u64::MAX),
                        last_segment(&y.id),
                    ))
            })
            .map(|v| last_segment(&v.id))
    }

    /// Purges a deleted secret, retrying while Key Vault is still deleting it. `Ok(false)` when
    /// the vault refuses purges (purge protection, or no purge permission).
    async fn purge(&self, name: &str) -> Result<bool, StoreError> {
        let url = self.url(&format!("deletedsecrets/{}", seg(name)));
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=PURGE_ATTEMPTS {
            let a = self.call(Op::Idempotent, |c| c.delete(&url)).await?;
            match a.status {
                200..=299 | 404 => return Ok(true),
                403 => {
                    tracing::warn!(key = %name, error = %a.message(), "key vault refused to purge a deleted secret");
                    return Ok(false);
                }
                // The deletion is still in progress.
                409 if attempt < PURGE_ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                _ => return Err(a.error(SERVICE, Op::Idempotent)),
            }
        }
        Err(StoreError::unavailable(
            true,
            "key vault did not finish deleting the secret in time",
        ))
    }

    async fn put(&self, name: &str, value: &str) -> Result<Answer, StoreError> {
        let url = self.url(&format!("secrets/{}", seg(name)));
        let body = Zeroizing::new(json!({ "value": value }).to_string());
        self.call(Op::Write, |c| {
            c.put(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
        })
        .await
    }
}

#[async_trait]
impl KeyStore for AzureStore {
    fn kind(&self) -> &'static str {
        "azure"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!(
                "'{name}' is not a valid key vault secret name (letters, digits and '-', at most 127)"
            )));
        }
        // Key Vault stores text; KES only ever stores ASCII.
        let value = std::str::from_utf8(value).map_err(|_| {
            StoreError::Invalid("key vault stores text; the value is not UTF-8".into())
        })?;
        if value.len() > MAX_VALUE_LEN.min(MAX_SECRET_LEN) {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds key vault's limit of {MAX_SECRET_LEN}",
                value.len()
            )));
        }
        let inner = &self.inner;
        let stripe = name.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        }) % CREATE_LOCK_STRIPES;
        let _serialised = match inner.create_locks.get(stripe) {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        match inner.versions(name).await {
            Ok(_) => return Err(StoreError::AlreadyExists),
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let mut answer = inner.put(name, value).await?;
        if answer.status == 409 && inner_code(&answer) == "ObjectIsDeletedButRecoverable" {
            if !inner.purge(name).await? {
                return Err(StoreError::unavailable(
                    false,
                    format!("key vault keeps a deleted secret '{name}' and refuses to purge it (purge protection?)"),
                ));
            }
            answer = inner.put(name, value).await?;
        }
        if !answer.ok() {
            return Err(match answer.status {
                // A 409 here is a deletion still in progress, not an existing key.
                409 => StoreError::unavailable(
                    true,
                    format!("key vault answered 409: {}", answer.message()),
                ),
                _ => answer.error(SERVICE, Op::Write),
            });
        }
        let written: Bundle = answer.json(SERVICE)?;
        let ours = last_segment(&written.id).to_owned();
        // Another server may have written the name since the check above.
        let versions = inner.versions(name).await?;
        match Inner::oldest_valid(&versions) {
            Some(v) if v == ours => Ok(()),
            Some(_) => Err(StoreError::AlreadyExists),
            None => Err(StoreError::unavailable(
                false,
                "key vault lists no valid version of the secret just written",
            )),
        }
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let inner = &self.inner;
        let versions = inner.versions(name).await?;
        let version = Inner::oldest_valid(&versions).ok_or(StoreError::NotFound)?;
        let url = inner.url(&format!("secrets/{}/{}", seg(name), seg(version)));
        let a = inner.call(Op::Idempotent, |c| c.get(&url)).await?;
        if !a.ok() {
            // Disabled between the listing and the read.
            if a.status == 403 && inner_code(&a) == "SecretDisabled" {
                return Err(StoreError::NotFound);
            }
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        let bundle: Bundle = a.json(SERVICE)?;
        if bundle.value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "the secret holds {} bytes, more than the limit of {MAX_VALUE_LEN}",
                bundle.value.len()
            )));
        }
        Ok(bundle.value.as_bytes().to_vec())
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let url = self.inner.url(&format!("secrets/{}", seg(name)));
        let a = self.inner.call(Op::Idempotent, |c| c.delete(&url)).await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        self.inner.purge(name).await.map(|_| ())
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let url = format!("{}&maxresults={LIST_PAGE_SIZE}", self.inner.url("secrets"));
        let items = self.inner.items(url, MAX_LIST_PAGES).await?;
        let names = items
            .iter()
            .map(|i| last_segment(&i.id))
            .filter(|n| n.starts_with(prefix) && *n >= continue_at)
            .map(str::to_owned);
        Ok(page_from(names, prefix, continue_at, limit))
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let start = Instant::now();
        let url = format!("{}&maxresults=1", self.inner.url("secrets"));
        let a = self.inner.call(Op::Idempotent, |c| c.get(&url)).await?;
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

    fn item(id: &str, created: u64, enabled: bool) -> Item {
        Item {
            id: format!("https://v.vault.azure.net/secrets/k/{id}"),
            attributes: Attributes {
                enabled: Some(enabled),
                nbf: None,
                exp: None,
                created: Some(created),
            },
        }
    }

    #[test]
    fn oldest_valid_version() {
        let v = [item("b", 5, true), item("a", 5, true), item("c", 1, false)];
        assert_eq!(Inner::oldest_valid(&v), Some("a"));
        let mut expired = item("d", 0, true);
        expired.attributes.exp = Some(1);
        let mut future = item("e", 0, true);
        future.attributes.nbf = Some(u64::MAX);
        assert_eq!(Inner::oldest_valid(&[expired, future]), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("my-key-1"));
        for bad in ["", "a_b", "a.b", &"a".repeat(128)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(last_segment("https://v/secrets/name/ver"), "ver");
    }
}
