//! Bitwarden Secrets Manager (`keystore.bitwarden.secretsmanager`), a keystore KES never had,
//! implemented from Bitwarden's public API and security documentation (no SDK): one secret
//! per key in the configured project, whose name and value are encrypted on this side with the
//! organisation's key, so Bitwarden's servers see neither.
//!
//! * Login: the machine account's access token `0.<id>.<secret>:<seed>` logs in with the
//!   client-credentials grant at `<identity_url>/connect/token` (scope `api.secrets`); the
//!   answer's `encrypted_payload` opens with the key derived from the seed and holds the
//!   organisation's key ([`crypto`]). The bearer token is renewed at half its life and after a
//!   401; the organisation comes from the configuration or the token's `organization` claim.
//! * Names are `EncString`s, so finding a key by name needs a local index: the store lists the
//!   organisation's secrets (`GET /organizations/<org>/secrets`, names only), decrypts the
//!   names of those in the project, and keeps name → id for the keys it has looked up. A cached
//!   id whose secret is gone, or now has another name, sends the lookup back to the listing.
//! * Create: the name must be absent from a fresh listing; then `POST
//!   /organizations/<org>/secrets` with the encrypted name and value; then a second listing.
//!   When that listing holds an older secret of the same name (by creation time, then id),
//!   another writer won: the store deletes its own secret and reports
//!   [`StoreError::AlreadyExists`]. Lookups always take the oldest secret of a name, so a
//!   losing duplicate is never read even before it is deleted.
//! * Get: the secret by id (`GET /secrets/<id>`), name checked, value decrypted.
//! * Delete: every secret of the name (`POST /secrets/delete`).
//! * Status: `GET /projects/<project>`, which checks the token and the project.
//!
//! Races, since Bitwarden has no unique names and no conditional writes:
//! * Creates of one name in one process are serialised, and a cluster's leader serialises the
//!   creates and deletes of a name across the cluster, so within a cluster there is no race.
//! * Against writers outside the cluster (another server, the `bws` tool), the rule above
//!   leaves exactly one create successful provided each listing shows every secret whose
//!   create finished before it was requested (Bitwarden answers from its database, so this
//!   holds unless it serves listings from a lagging replica). The service cannot rule out: a
//!   losing duplicate left behind when deleting it fails (it is never read, and a delete of
//!   the name removes it); a name or value edited outside the store (an edited name moves the
//!   key, an edited value changes it: the cluster's re-confirmation then evicts the old
//!   material); and a delete racing an outside create of the same name (the delete removes
//!   the secrets it listed; a secret created after that listing survives as the new key).

pub mod crypto;

use crate::http::{invalid_config, seg, Answer, Http, Limits, Op};
use crate::token::{Issued, Token, Tokens};
use async_trait::async_trait;
use base64::Engine as _;
use crypto::{access_token_key, SymmetricKey};
use kes_config::BitwardenConfig;
use kes_keystore::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SERVICE: &str = "bitwarden secrets manager";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Largest secret value Bitwarden accepts, in characters of the encrypted form.
pub const MAX_SECRET_LEN: usize = 25_000;
/// Names kept in the lookup cache; past this it is cleared (the listing refills it).
const MAX_CACHED_NAMES: usize = 100_000;
/// Striped locks serialising the creates of one name: bounded memory however many names.
const CREATE_LOCK_STRIPES: usize = 64;

/// A parsed machine-account access token.
struct AccessToken {
    id: String,
    secret: Zeroizing<String>,
    key: SymmetricKey,
}

impl AccessToken {
    /// `0.<id>.<secret>:<base64 16-byte seed>`. Errors never quote the token.
    fn parse(token: &str) -> Result<AccessToken, StoreError> {
        let bad = |why: &str| invalid_config(SERVICE, format!("access_token: {why}"));
        let (head, seed) = token
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("want 0.<id>.<secret>:<key>"))?;
        let mut parts = head.split('.');
        let (Some(version), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("want 0.<id>.<secret>:<key>"));
        };
        if version != "0" {
            return Err(bad("only version 0 access tokens are known"));
        }
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(bad("the id is not a UUID"));
        }
        if secret.is_empty() {
            return Err(bad("the client secret is empty"));
        }
        let seed = Zeroizing::new(B64.decode(seed).map_err(|_| bad("the key is not base64"))?);
        let seed: &[u8; 16] = seed
            .as_slice()
            .try_into()
            .map_err(|_| bad("the key is not 16 bytes"))?;
        Ok(AccessToken {
            id: id.to_owned(),
            secret: Zeroizing::new(secret.to_owned()),
            key: access_token_key(seed),
        })
    }
}

/// A KES keystore on Bitwarden Secrets Manager. Cheap to share behind an `Arc`.
pub struct BitwardenStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    api: String,
    identity: String,
    project_id: String,
    configured_org: Option<String>,
    access: AccessToken,
    tokens: Tokens,
    /// Set by the first login: the organisation's id and key.
    org: RwLock<Option<(String, Arc<SymmetricKey>)>>,
    /// Name -> id of the secret that holds the key.
    ids: Mutex<HashMap<String, String>>,
    create_locks: Vec<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for BitwardenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitwardenStore")
            .field("api", &self.inner.api)
            .field("project_id", &self.inner.project_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct LoginAnswer {
    #[serde(deserialize_with = "crate::http::zeroizing")]
    access_token: Zeroizing<String>,
    #[serde(default)]
    expires_in: u64,
    #[serde(default)]
    encrypted_payload: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "encryptionKey", deserialize_with = "crate::http::zeroizing")]
    encryption_key: Zeroizing<String>,
}

#[derive(Deserialize)]
struct ProjectRef {
    id: String,
}

#[derive(Deserialize)]
struct SecretItem {
    id: String,
    /// The encrypted name.
    key: String,
    #[serde(default, rename = "creationDate")]
    creation_date: String,
    #[serde(default)]
    projects: Option<Vec<ProjectRef>>,
}

#[derive(Deserialize)]
struct SecretList {
    #[serde(default)]
    secrets: Vec<SecretItem>,
}

#[derive(Deserialize)]
struct Secret {
    id: String,
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct DeleteAnswer {
    #[serde(default)]
    data: Vec<DeleteResult>,
}

#[derive(Deserialize)]
struct DeleteResult {
    #[serde(default)]
    error: Option<String>,
}

/// The `organization` claim of a JWT access token, read without checking the signature (the
/// token came from the identity service over TLS; only the id is taken from it).
fn organization_claim(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = B64URL.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match &v["organization"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => a.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn crypto_error(what: &str, e: crypto::CryptoError) -> StoreError {
    StoreError::Invalid(format!("{what}: {e}"))
}

impl BitwardenStore {
    /// Connects with the default [`Limits`]; see [`BitwardenStore::connect_with`].
    pub async fn connect(cfg: &BitwardenConfig) -> Result<BitwardenStore, StoreError> {
        Self::connect_with(cfg, Limits::default()).await
    }

    /// Parses the access token and logs in: a refused token is [`StoreError::Denied`], an
    /// unreachable identity service [`StoreError::Unavailable`].
    pub async fn connect_with(
        cfg: &BitwardenConfig,
        limits: Limits,
    ) -> Result<BitwardenStore, StoreError> {
        let access = AccessToken::parse(&cfg.access_token)?;
        let project_id = cfg.project_id.trim().to_owned();
        if project_id.is_empty() {
            return Err(invalid_config(SERVICE, "project_id is empty"));
        }
        let inner = Arc::new(Inner {
            http: Http::new(SERVICE, None, limits)?,
            api: crate::http::base_url(SERVICE, &cfg.api_url)?,
            identity: crate::http::base_url(SERVICE, &cfg.identity_url)?,
            project_id,
            configured_org: cfg
                .organization_id
                .as_deref()
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned),
            access,
            tokens: Tokens::new(),
            org: RwLock::new(None),
            ids: Mutex::new(HashMap::new()),
            create_locks: (0..CREATE_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        });
        inner.token().await?;
        tracing::info!(api = %inner.api, project = %inner.project_id, "bitwarden secrets manager keystore");
        Ok(BitwardenStore { inner })
    }
}

impl Inner {
    async fn login(&self) -> Result<Issued, StoreError> {
        let url = format!("{}/connect/token", self.identity);
        let body = Zeroizing::new(format!(
            "scope=api.secrets&client_id={}&client_secret={}&grant_type=client_credentials",
            seg(&self.access.id),
            seg(&self.access.secret)
        ));
        let a = self
            .http
            .send(Op::Idempotent, |c| {
                c.post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.to_string())
            })
            .await?;
        match a.status {
            200 => {}
            400 | 401 | 403 => {
                return Err(StoreError::Denied(format!(
                    "bitwarden refused the access token ({}): {}",
                    a.status,
                    a.message()
                )))
            }
            _ => return Err(a.error("the bitwarden identity service", Op::Idempotent)),
        }
        let l: LoginAnswer = a.json("the bitwarden identity service")?;
        let payload = self.access.key.decrypt(&l.encrypted_payload).map_err(|e| {
            crypto_error(
                "the login's encrypted payload (is the access token's key part right?)",
                e,
            )
        })?;
        let p: Payload = serde_json::from_slice(&payload)
            .map_err(|e| StoreError::Invalid(format!("the login's payload: {e}")))?;
        let key_bytes = Zeroizing::new(
            B64.decode(p.encryption_key.as_bytes())
                .map_err(|_| StoreError::Invalid("the organisation key is not base64".into()))?,
        );
        let key = SymmetricKey::from_bytes(&key_bytes)
            .map_err(|e| crypto_error("the organisation key", e))?;
        let org = match (&self.configured_org, organization_claim(&l.access_token)) {
            (Some(c), _) => c.clone(),
            (None, Some(o)) => o,
            (None, None) => {
                return Err(invalid_config(
                    SERVICE,
                    "organization_id is not set and the access token names no organization",
                ))
            }
        };
        *self.org.write() = Some((org, Arc::new(key)));
        Ok(Issued {
            token: l.access_token,
            lifetime: Duration::from_secs(if l.expires_in == 0 {
                3600
            } else {
                l.expires_in
            }),
        })
    }

    async fn token(&self) -> Result<Token, StoreError> {
        self.tokens.get(|| self.login()).await
    }

    /// The organisation and its key, after a login.
    async fn org(&self) -> Result<(String, Arc<SymmetricKey>), StoreError> {
        self.token().await?;
        self.org
            .read()
            .clone()
            .ok_or_else(|| StoreError::unavailable(true, "not logged in to bitwarden"))
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

    /// Every key of the project: name -> ids, oldest first. Secrets whose names do not decrypt
    /// (not written with this organisation's key) are not keys.
    async fn index(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        let (org, key) = self.org().await?;
        let url = format!("{}/organizations/{}/secrets", self.api, seg(&org));
        let a = self.call(Op::Idempotent, |c| c.get(&url)).await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        let list: SecretList = a.json(SERVICE)?;
        let mut by_name: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut undecryptable = 0usize;
        for s in list.secrets {
            if let Some(projects) = &s.projects {
                if !projects.iter().any(|p| p.id == self.project_id) {
                    continue;
                }
            }
            match key
                .decrypt(&s.key)
                .ok()
                .and_then(|n| String::from_utf8(n.to_vec()).ok())
            {
                Some(name) => by_name
                    .entry(name)
                    .or_default()
                    .push((s.creation_date, s.id)),
                None => undecryptable += 1,
            }
        }
        if undecryptable > 0 {
            tracing::debug!(
                count = undecryptable,
                "bitwarden secrets whose names do not decrypt were skipped"
            );
        }
        let index: BTreeMap<String, Vec<String>> = by_name
            .into_iter()
            .map(|(name, mut v)| {
                v.sort();
                (name, v.into_iter().map(|(_, id)| id).collect())
            })
            .collect();
        let mut ids = self.ids.lock();
        if ids.len() > MAX_CACHED_NAMES {
            ids.clear();
        }
        ids.retain(|name, _| index.contains_key(name));
        for (name, v) in &index {
            if let Some(first) = v.first() {
                ids.insert(name.clone(), first.clone());
            }
        }
        Ok(index)
    }

    /// Reads a secret by id: `Ok(None)` when it is gone or holds another name.
    async fn read(&self, id: &str, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let (_, key) = self.org().await?;
        let url = format!("{}/secrets/{}", self.api, seg(id));
        let a = self.call(Op::Idempotent, |c| c.get(&url)).await?;
        if a.status == 404 {
            return Ok(None);
        }
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        let s: Secret = a.json(SERVICE)?;
        let stored_name = key
            .decrypt(&s.key)
            .map_err(|e| crypto_error("the secret's name", e))?;
        if s.id != id || stored_name.as_slice() != name.as_bytes() {
            return Ok(None);
        }
        key.decrypt(&s.value)
            .map(Some)
            .map_err(|e| crypto_error("the secret's value", e))
    }

    async fn delete_ids(&self, ids: &[String]) -> Result<(), StoreError> {
        let url = format!("{}/secrets/delete", self.api);
        let body = json!(ids).to_string();
        let a = self
            .call(Op::Idempotent, |c| {
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Idempotent));
        }
        let d: DeleteAnswer = a.json(SERVICE)?;
        let errors: Vec<String> = d.data.into_iter().filter_map(|r| r.error).collect();
        if errors.is_empty() {
            Ok(())
        } else if errors.len() == ids.len() {
            // Each one is already gone (deleted by someone else meanwhile).
            Err(StoreError::NotFound)
        } else {
            Err(StoreError::unavailable(
                false,
                format!(
                    "bitwarden deleted some secrets of the name but not all: {}",
                    errors.join("; ")
                ),
            ))
        }
    }
}

#[async_trait]
impl KeyStore for BitwardenStore {
    fn kind(&self) -> &'static str {
        "bitwarden"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if name.is_empty() || name.len() > 1000 {
            return Err(StoreError::Invalid(format!("invalid key name '{name}'")));
        }
        let text = std::str::from_utf8(value).map_err(|_| {
            StoreError::Invalid("bitwarden secrets hold text; the value is not UTF-8".into())
        })?;
        let inner = &self.inner;
        let (org, key) = inner.org().await?;
        let enc_value = Zeroizing::new(key.encrypt(text.as_bytes()));
        if enc_value.len() > MAX_SECRET_LEN || value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds bitwarden's limit once encrypted ({MAX_SECRET_LEN} characters)",
                value.len()
            )));
        }
        let stripe = name.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        }) % CREATE_LOCK_STRIPES;
        let _serialised = match inner.create_locks.get(stripe) {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        if inner.index().await?.contains_key(name) {
            return Err(StoreError::AlreadyExists);
        }
        let url = format!("{}/organizations/{}/secrets", inner.api, seg(&org));
        let body = Zeroizing::new(
            json!({
                "key": key.encrypt(name.as_bytes()),
                "value": enc_value.as_str(),
                "note": key.encrypt(b""),
                "projectIds": [inner.project_id],
            })
            .to_string(),
        );
        let a = inner
            .call(Op::Write, |c| {
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            })
            .await?;
        if !a.ok() {
            return Err(a.error(SERVICE, Op::Write));
        }
        let ours: Secret = a.json(SERVICE)?;
        // Another writer may have created the name meanwhile: the oldest secret wins.
        let index = inner.index().await?;
        match index.get(name).and_then(|v| v.first()) {
            Some(first) if *first == ours.id => Ok(()),
            Some(_) => {
                if let Err(e) = inner.delete_ids(std::slice::from_ref(&ours.id)).await {
                    tracing::warn!(key = %name, error = %e, "deleting a duplicate that lost a create race failed; it is never read");
                }
                inner.ids.lock().remove(name);
                Err(StoreError::AlreadyExists)
            }
            None => Err(StoreError::unavailable(
                false,
                "bitwarden does not list the secret just created (is it outside the project?)",
            )),
        }
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let inner = &self.inner;
        let cached = inner.ids.lock().get(name).cloned();
        if let Some(id) = cached {
            if let Some(v) = inner.read(&id, name).await? {
                return Ok(v.to_vec());
            }
        }
        let index = inner.index().await?;
        let id = index
            .get(name)
            .and_then(|v| v.first())
            .ok_or(StoreError::NotFound)?;
        match inner.read(id, name).await? {
            Some(v) => Ok(v.to_vec()),
            None => Err(StoreError::NotFound),
        }
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let inner = &self.inner;
        let index = inner.index().await?;
        let ids = index.get(name).ok_or(StoreError::NotFound)?;
        let result = inner.delete_ids(ids).await;
        inner.ids.lock().remove(name);
        result
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let index = self.inner.index().await?;
        Ok(page_from(index.into_keys(), prefix, continue_at, limit))
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let start = Instant::now();
        let url = format!(
            "{}/projects/{}",
            self.inner.api,
            seg(&self.inner.project_id)
        );
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

    #[test]
    fn access_tokens() {
        let seed = B64.encode([1u8; 16]);
        let t = AccessToken::parse(&format!(
            "0.ec2c1d46-6a4b-4751-a310-af9601317f2d.secret:{seed}"
        ))
        .unwrap();
        assert_eq!(t.id, "ec2c1d46-6a4b-4751-a310-af9601317f2d");
        for bad in [
            String::new(),
            "0.id.secret".to_owned(),
            format!("1.ec2c1d46.secret:{seed}"),
            format!("0.not-a-uuid!.secret:{seed}"),
            format!("0.ec2c1d46..:{seed}"),
            "0.ec2c1d46.secret:bm90IDE2IGJ5dGVz".to_owned(),
            "0.ec2c1d46.secret:***".to_owned(),
        ] {
            match AccessToken::parse(&bad) {
                Err(StoreError::Unavailable {
                    retryable: false,
                    message,
                }) => {
                    assert!(message.contains("access_token"), "{message}");
                    assert!(!message.contains("secret:"), "the token leaked: {message}");
                }
                Err(e) => panic!("{bad:?}: {e:?}"),
                Ok(_) => panic!("{bad:?} parsed"),
            }
        }
    }

    #[test]
    fn organization_claims() {
        let jwt = |claims: &str| format!("h.{}.s", B64URL.encode(claims));
        assert_eq!(
            organization_claim(&jwt(r#"{"organization":"o1"}"#)).as_deref(),
            Some("o1")
        );
        assert_eq!(
            organization_claim(&jwt(r#"{"organization":["o2"]}"#)).as_deref(),
            Some("o2")
        );
        assert_eq!(organization_claim(&jwt("{}")), None);
        assert_eq!(organization_claim("garbage"), None);
    }
}
