//! A [`KeyStore`] on a HashiCorp Vault or OpenBao KV secrets engine, storing each key exactly
//! where and how MinIO KES stores it, so a KES deployment can switch to this server (and back)
//! on the same Vault data.
//!
//! Layout (KES's `internal/keystore/vault`):
//! * KV v1: `<engine>/<prefix>/<name>` holds `{"<name>": "<value>"}`. Create reads the path
//!   first and writes only when it is empty. Delete is KV v1 delete. List is `LIST
//!   <engine>/<prefix>`.
//! * KV v2: `<engine>/data/<prefix>/<name>` written with `{"options":{"cas":0},"data":{"<name>":
//!   "<value>"}}`, so create-if-absent is atomic in Vault. Get reads version 1. Delete removes
//!   the metadata (all versions). List is `LIST <engine>/metadata/<prefix>`.
//! * Transit (optional): the stored string is the `vault:v1:…` ciphertext of the value from
//!   `<transit-engine>/encrypt/<key>`; reads decrypt it. Unwrapped values still read, so a store
//!   can turn transit on later.
//!
//! Creating on KV v1 is read-then-write, as in KES: atomic only among the creates of one
//! process (they are serialised here), not across servers sharing the engine. Use KV v2 when
//! several servers create keys concurrently.
//!
//! Deleting a missing key reports [`StoreError::NotFound`]: the store reads before it deletes,
//! because Vault's deletes succeed on missing paths and KES clients expect `404` for them.
//!
//! Authentication: AppRole or Kubernetes as configured, with the token renewed at 80% of its
//! TTL and a new login when renewal fails or the token nears its maximum TTL, and once more when
//! Vault answers 403 (the token may have expired while Vault was unreachable). Without either
//! (a config built in code; KES's YAML always has one), the store uses a static token from
//! [`ConnectOptions::token`], else from `VAULT_TOKEN` as Vault's own clients do.
//!
//! Every request has a deadline ([`Limits`]); reads, and writes that provably never reached
//! Vault, are retried a bounded number of times with exponential backoff. Failures are
//! classified as in [`kes_keystore::StoreError`]: unreachable, timed out, sealed or 5xx is
//! `Unavailable`, 403 is `Denied`, 404 is `NotFound`.
//!
//! Wiring into the server:
//! ```ignore
//! KeystoreConfig::Vault(cfg) => Arc::new(VaultStore::connect(cfg).await?) as Arc<dyn KeyStore>,
//! ```
//! vaultrs logs every Vault error answer (including the 404 of a missing key) at ERROR level
//! under its own target; the server's log filter should include `vaultrs=off` (this crate logs
//! what matters under `kes_keystore_vault`).

mod auth;
mod client;
mod error;
mod transit;

use async_trait::async_trait;
use auth::*;
use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use client::*;
use error::{classify, Op};
use kes_config::{KvVersion, VaultConfig};
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use parking_lot::RwLock;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
#[cfg(test)]
use transit::is_transit_ciphertext;
use vaultrs::api::{AuthInfo, EndpointMiddleware};
use vaultrs::client::VaultClientSettings;
use vaultrs::error::ClientError;
use zeroize::Zeroizing;

/// Deadline of one HTTP request to Vault, connecting included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of establishing a TCP and TLS connection to Vault.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one operation, the first included, when failures are retryable.
pub const DEFAULT_ATTEMPTS: usize = 3;
/// Longest wait between a failed token login and the next one, while Vault is unreachable.
const MAX_LOGIN_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Longest key name accepted: far above KES's 80 bytes, and short enough for any Vault path.
const MAX_NAME_LEN: usize = 255;
/// Striped locks serialising KV v1 creates per name: bounded memory however many names.
const CREATE_LOCK_STRIPES: usize = 64;

/// Time limits of a [`VaultStore`]. [`Limits::default`] is what [`VaultStore::connect`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of one HTTP request ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// Deadline of opening a connection ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Tries of a retryable operation, at least 1 ([`DEFAULT_ATTEMPTS`]). Between tries the
    /// store waits 100 ms, then 200 ms, ... up to 1 s. An operation therefore gives up after at
    /// most about `attempts * request_timeout + attempts` seconds. A refused connection is not
    /// tried again: nothing listens at the endpoint, so the caller learns of the outage at once.
    pub attempts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// What [`VaultStore::connect_with`] takes beyond the KES config.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    pub limits: Limits,
    /// Static token, used only when the config has neither AppRole nor Kubernetes. `None`
    /// reads `VAULT_TOKEN`.
    pub token: Option<Zeroizing<String>>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("limits", &self.limits)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A KES keystore on a Vault/OpenBao KV engine. Cheap to share behind an `Arc`; dropping it
/// stops its token renewal.
pub struct VaultStore {
    inner: Arc<Inner>,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultStore")
            .field("endpoint", &self.inner.endpoint)
            .field("engine", &self.inner.engine)
            .field("version", &self.inner.version)
            .field("prefix", &self.inner.prefix)
            .field("namespace", &self.inner.kv_namespace)
            .field("transit", &self.inner.transit)
            .finish_non_exhaustive()
    }
}

impl Drop for VaultStore {
    fn drop(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
    }
}

struct Inner {
    endpoint: String,
    reqwest: reqwest::Client,
    settings: Arc<VaultClientSettings>,
    engine: String,
    version: KvVersion,
    /// Without leading or trailing `/`; empty for the engine's root.
    prefix: String,
    /// `X-Vault-Namespace` of KV and transit requests.
    kv_namespace: Option<String>,
    /// (engine, key)
    transit: Option<(String, String)>,
    login: Login,
    /// Namespace of token requests (login, renew): the auth method's namespace.
    auth_namespace: Option<String>,
    token: RwLock<TokenState>,
    login_lock: tokio::sync::Mutex<()>,
    create_locks: Vec<tokio::sync::Mutex<()>>,
    limits: Limits,
}

fn invalid_config(message: impl fmt::Display) -> StoreError {
    StoreError::unavailable(
        false,
        format!("invalid vault keystore configuration: {message}"),
    )
}

/// `""` is no namespace; `/` is the root namespace, which is also no header.
fn namespace(ns: &str) -> Option<String> {
    let ns = ns.trim();
    (!ns.is_empty() && ns != "/").then(|| ns.to_owned())
}

/// vaultrs puts namespaces and tokens into headers and panics on invalid header values, so
/// every one is checked before it gets there.
fn check_header(what: &str, value: &str) -> Result<(), StoreError> {
    if reqwest::header::HeaderValue::from_str(value).is_err() || value.contains(['\r', '\n']) {
        return Err(invalid_config(format!(
            "{what} contains characters not allowed in HTTP headers"
        )));
    }
    Ok(())
}

/// Key names become one path segment under the prefix, so nothing may leave that folder or
/// change the request's meaning. KES's own names (`[0-9A-Za-z_-]`) always pass.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl VaultStore {
    /// Connects with the default [`Limits`]; see [`VaultStore::connect_with`].
    pub async fn connect(cfg: &VaultConfig) -> Result<VaultStore, StoreError> {
        Self::connect_with(cfg, ConnectOptions::default()).await
    }

    /// Validates the config, builds the HTTPS client, logs in (or checks the static token) and
    /// starts the token renewal. Fails when Vault cannot be reached or refuses the login.
    /// Must run inside a Tokio runtime, which the renewal task is spawned on.
    pub async fn connect_with(
        cfg: &VaultConfig,
        opts: ConnectOptions,
    ) -> Result<VaultStore, StoreError> {
        let endpoint = cfg.endpoint.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| invalid_config(format!("endpoint '{endpoint}': {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid_config(format!(
                "endpoint '{endpoint}': want an http:// or https:// URL"
            )));
        }
        let engine = cfg.engine.trim().trim_matches('/').to_owned();
        if engine.is_empty() {
            return Err(invalid_config("engine is empty"));
        }
        let prefix = cfg.prefix.trim().trim_matches('/').to_owned();
        let kv_namespace = namespace(&cfg.namespace);
        if let Some(ns) = &kv_namespace {
            check_header("namespace", ns)?;
        }
        let transit = match &cfg.transit {
            Some(t) if t.key.trim().is_empty() => {
                return Err(invalid_config("transit.key is empty"))
            }
            Some(t) => Some((
                t.engine.trim().trim_matches('/').to_owned(),
                t.key.trim().to_owned(),
            )),
            None => None,
        };
        let (login, initial_token) = match (&cfg.approle, &cfg.kubernetes) {
            (Some(_), Some(_)) => {
                return Err(invalid_config(
                    "approle and kubernetes are both set; want one",
                ))
            }
            (Some(a), None) => (
                Login::AppRole {
                    namespace: auth_namespace(&a.namespace, &kv_namespace),
                    engine: non_empty(&a.engine, "approle"),
                    role_id: Zeroizing::new(a.id.clone()),
                    secret_id: Zeroizing::new(a.secret.clone()),
                },
                None,
            ),
            (None, Some(k)) => {
                let jwt = if k.jwt_is_path() {
                    Jwt::File(PathBuf::from(k.jwt.trim()))
                } else {
                    Jwt::Inline(Zeroizing::new(k.jwt.trim().to_owned()))
                };
                (
                    Login::Kubernetes {
                        namespace: auth_namespace(&k.namespace, &kv_namespace),
                        engine: non_empty(&k.engine, "kubernetes"),
                        role: k.role.clone(),
                        jwt,
                    },
                    None,
                )
            }
            (None, None) => {
                let token = match opts.token {
                    Some(t) => t,
                    None => Zeroizing::new(std::env::var("VAULT_TOKEN").unwrap_or_default()),
                };
                let token = Zeroizing::new(token.trim().to_owned());
                if token.is_empty() {
                    return Err(invalid_config(
                        "no login method: configure approle or kubernetes, or set VAULT_TOKEN",
                    ));
                }
                check_header("VAULT_TOKEN", &token)?;
                (Login::Token, Some(token))
            }
        };
        if let Some(ns) = login.namespace() {
            check_header("auth namespace", ns)?;
        }
        let limits = Limits {
            attempts: opts.limits.attempts.max(1),
            ..opts.limits
        };
        let reqwest = http_client(cfg, &limits)?;
        // vaultrs wants settings for its client trait; only the address is read from them
        // here. Built by hand, because its builder reads VAULT_* variables.
        let settings = Arc::new(VaultClientSettings {
            address: url,
            ca_certs: Vec::new(),
            identity: None,
            timeout: Some(limits.request_timeout),
            token: String::new(),
            verify: true,
            version: 1,
            wrapping: false,
            namespace: None,
        });
        let inner = Arc::new(Inner {
            endpoint,
            reqwest,
            settings,
            engine,
            version: cfg.version,
            prefix,
            auth_namespace: login.namespace().map(str::to_owned),
            kv_namespace,
            transit,
            login,
            token: RwLock::new(TokenState {
                token: Arc::new(initial_token.clone().unwrap_or_default()),
                generation: 0,
            }),
            login_lock: tokio::sync::Mutex::new(()),
            create_locks: (0..CREATE_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            limits,
        });
        let lease = match initial_token {
            Some(_) => inner.lookup_self().await?,
            None => inner.login_now().await?,
        };
        let renewal = (!lease.ttl.is_zero()).then(|| {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(renew_loop(weak, lease))
        });
        tracing::info!(
            endpoint = %inner.endpoint,
            engine = %inner.engine,
            version = ?inner.version,
            transit = inner.transit.is_some(),
            token_ttl_s = lease.ttl.as_secs(),
            "connected to vault"
        );
        Ok(VaultStore { inner, renewal })
    }
}

fn non_empty(value: &str, default: &str) -> String {
    let v = value.trim().trim_matches('/');
    if v.is_empty() {
        default.to_owned()
    } else {
        v.to_owned()
    }
}

impl Inner {
    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// The stored string at `name`, without transit decryption.
    async fn read_raw(&self, name: &str) -> Result<String, StoreError> {
        let (engine, path) = (self.engine.clone(), self.path(name));
        let data: HashMap<String, Value> = match self.version {
            KvVersion::V1 => {
                self.run(Op::Read, move |c| {
                    let (engine, path) = (engine.clone(), path.clone());
                    Box::pin(async move { vaultrs::kv1::get(&c, &engine, &path).await })
                })
                .await?
            }
            KvVersion::V2 => {
                self.run(Op::Read, move |c| {
                    let (engine, path) = (engine.clone(), path.clone());
                    Box::pin(async move { vaultrs::kv2::read_version(&c, &engine, &path, 1).await })
                })
                .await?
            }
        };
        match data.get(name) {
            Some(Value::String(s)) if s.len() <= 2 * MAX_VALUE_LEN => Ok(s.clone()),
            Some(Value::String(_)) => Err(StoreError::Invalid("the entry is too large".into())),
            Some(_) => Err(StoreError::Invalid(format!(
                "the entry's field '{name}' is not a string"
            ))),
            None => Err(StoreError::Invalid(format!(
                "the entry has no field '{name}'"
            ))),
        }
    }

    /// Whether an entry exists at `name` (any version, for KV v2).
    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let (engine, path) = (self.engine.clone(), self.path(name));
        let result = match self.version {
            KvVersion::V1 => {
                self.run(Op::Read, move |c| {
                    let (engine, path) = (engine.clone(), path.clone());
                    Box::pin(
                        async move { vaultrs::kv1::get_raw(&c, &engine, &path).await.map(|_| ()) },
                    )
                })
                .await
            }
            KvVersion::V2 => {
                self.run(Op::Read, move |c| {
                    let (engine, path) = (engine.clone(), path.clone());
                    Box::pin(async move {
                        vaultrs::kv2::read_metadata(&c, &engine, &path)
                            .await
                            .map(|_| ())
                    })
                })
                .await
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create_lock(&self, name: &str) -> &tokio::sync::Mutex<()> {
        // FNV-1a: stable and dependency-free; collisions only serialise unrelated creates.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let i = (h % self.create_locks.len() as u64) as usize;
        &self.create_locks[i]
    }
}

#[async_trait]
impl KeyStore for VaultStore {
    fn kind(&self) -> &'static str {
        "vault"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let inner = &*self.inner;
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!("invalid key name '{name}'")));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        let stored = inner.wrap(value).await?;
        let key = name;
        let (engine, path, name) = (inner.engine.clone(), inner.path(name), name.to_owned());
        match inner.version {
            KvVersion::V1 => {
                let _serialised = inner.create_lock(key).lock().await;
                if inner.exists(key).await? {
                    return Err(StoreError::AlreadyExists);
                }
                let stored = Arc::new(stored);
                inner
                    .run(Op::Write, move |c| {
                        let (engine, path, name, stored) = (
                            engine.clone(),
                            path.clone(),
                            name.clone(),
                            Arc::clone(&stored),
                        );
                        Box::pin(async move {
                            let data = HashMap::from([(name.as_str(), stored.as_str())]);
                            vaultrs::kv1::set(&c, &engine, &path, &data).await
                        })
                    })
                    .await
            }
            KvVersion::V2 => {
                let stored = Arc::new(stored);
                let written = inner
                    .run(Op::Write, move |c| {
                        let (engine, path, name, stored) = (
                            engine.clone(),
                            path.clone(),
                            name.clone(),
                            Arc::clone(&stored),
                        );
                        Box::pin(async move {
                            let data = HashMap::from([(name.as_str(), stored.as_str())]);
                            let cas =
                                vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 0 };
                            match vaultrs::kv2::set_with_options(&c, &engine, &path, &data, cas)
                                .await
                            {
                                Ok(_) => Ok(Ok(())),
                                Err(e) => bad_request(e).map(Err),
                            }
                        })
                    })
                    .await?;
                match written {
                    Ok(()) => Ok(()),
                    // Vault answers a failed check-and-set with a plain 400. Whether it was
                    // that, and not some other rejection, is settled by looking rather than by
                    // matching the message text.
                    Err(message) if inner.exists(key).await? => {
                        tracing::debug!(key = %key, %message, "create lost the check-and-set");
                        Err(StoreError::AlreadyExists)
                    }
                    Err(message) => Err(StoreError::unavailable(
                        false,
                        format!("vault rejected the create: {message}"),
                    )),
                }
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let stored = self.inner.read_raw(name).await?;
        let value = self.inner.unwrap(stored).await?;
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "the entry holds {} bytes, more than the limit of {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        Ok(value)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let inner = &*self.inner;
        if !valid_name(name) || !inner.exists(name).await? {
            return Err(StoreError::NotFound);
        }
        let (engine, path) = (inner.engine.clone(), inner.path(name));
        let version = inner.version;
        // Deleting is idempotent in Vault, so even a delete whose answer was lost may be sent
        // again: classify as a read.
        inner
            .run(Op::Read, move |c| {
                let (engine, path) = (engine.clone(), path.clone());
                Box::pin(async move {
                    match version {
                        KvVersion::V1 => vaultrs::kv1::delete(&c, &engine, &path).await,
                        KvVersion::V2 => vaultrs::kv2::delete_metadata(&c, &engine, &path).await,
                    }
                })
            })
            .await
            .or_else(|e| match e {
                // Someone else deleted it in between: the outcome the caller asked for.
                StoreError::NotFound => Ok(()),
                other => Err(other),
            })
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let inner = &*self.inner;
        let (engine, folder) = (inner.engine.clone(), inner.prefix.clone());
        let version = inner.version;
        let listed = inner
            .run(Op::Read, move |c| {
                let (engine, folder) = (engine.clone(), folder.clone());
                Box::pin(async move {
                    match version {
                        KvVersion::V1 => vaultrs::kv1::list(&c, &engine, &folder)
                            .await
                            .map(|r| r.data.keys),
                        KvVersion::V2 => vaultrs::kv2::list(&c, &engine, &folder).await,
                    }
                })
            })
            .await;
        let names = match listed {
            Ok(names) => names,
            // Vault answers 404 for a folder with no entries.
            Err(StoreError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        // Entries ending in `/` are sub-folders, which KES never creates.
        Ok(page_from(
            names.into_iter().filter(|n| !n.ends_with('/')),
            prefix,
            continue_at,
            limit,
        ))
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let inner = &*self.inner;
        let start = Instant::now();
        // Asked directly rather than through vaultrs, whose health type requires fields that
        // OpenBao does not send. Without a namespace, since health belongs to the server; a
        // standby that forwards requests is healthy.
        let url = format!(
            "{}/v1/sys/health?standbyok=true&perfstandbyok=true",
            inner.endpoint
        );
        let resp = inner
            .reqwest
            .get(&url)
            .send()
            .await
            .map_err(|e| error::from_reqwest(e, Op::Read))?;
        let code = resp.status().as_u16();
        let health: Value = resp.json().await.unwrap_or(Value::Null);
        let flag = |f: &str| health.get(f).and_then(Value::as_bool);
        if code == 501 || flag("initialized") == Some(false) {
            return Err(StoreError::unavailable(true, "vault is not initialized"));
        }
        if code == 503 || flag("sealed") == Some(true) {
            return Err(StoreError::unavailable(true, "vault is sealed"));
        }
        if code != 200 && code != 429 && code != 473 {
            return Err(error::from_status(code, "sys/health", Op::Read));
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
    fn names() {
        for ok in ["a", "my-key", "_-___---_", "conf-0123-create-get-a", "a.b"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a?b",
            "a b",
            "a%2f",
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn transit_prefix() {
        assert!(is_transit_ciphertext("vault:v1:abc"));
        assert!(is_transit_ciphertext("vault:v12:abc"));
        assert!(!is_transit_ciphertext("vault:v:abc"));
        assert!(!is_transit_ciphertext("vault:vx:abc"));
        assert!(!is_transit_ciphertext("CiQKIL"));
    }

    #[test]
    fn namespaces() {
        assert_eq!(namespace(""), None);
        assert_eq!(namespace("/"), None);
        assert_eq!(namespace("ns1"), Some("ns1".to_owned()));
        let kv = Some("team".to_owned());
        assert_eq!(auth_namespace("", &kv), kv);
        assert_eq!(auth_namespace("/", &kv), None);
        assert_eq!(auth_namespace("other", &kv), Some("other".to_owned()));
    }
}
