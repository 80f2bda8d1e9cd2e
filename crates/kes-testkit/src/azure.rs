//! A fake Azure Key Vault with its identity endpoints, written from Microsoft's published REST
//! references (Key Vault secrets API 7.4, the Microsoft identity platform's client-credentials
//! flow, the instance metadata service's managed-identity token). No emulator exists.
//!
//! What it models, as the service does:
//! * Tokens: `POST /<tenant>/oauth2/v2.0/token` (client credentials; `invalid_client` 401 for
//!   a wrong secret, `unauthorized_client` 400 for an unknown application, `invalid_scope`
//!   400) and `GET /metadata/identity/oauth2/token` (needs `Metadata: true`; `expires_in` as
//!   a string). Tokens expire after a lifetime the test sets, and can be revoked.
//! * The vault: every request needs `api-version` (400 `BadParameter`) and a valid bearer
//!   token (401 with a `WWW-Authenticate` challenge). Secrets have versions with `enabled`,
//!   `nbf`, `exp` and `created`; names must match `[0-9A-Za-z-]{1,127}`.
//! * `PUT /secrets/<n>` adds a version; on a soft-deleted name it is 409 `Conflict` with inner
//!   code `ObjectIsDeletedButRecoverable`. `GET /secrets/<n>` reads the latest version (403
//!   `Forbidden`/`SecretDisabled` when disabled), `GET /secrets/<n>/<v>` one version,
//!   `GET /secrets/<n>/versions` and `GET /secrets` list with `maxresults` (at most 25) and an
//!   absolute `nextLink`, `PATCH /secrets/<n>/<v>` changes attributes.
//! * Soft delete: `DELETE /secrets/<n>` moves the secret to the deleted secrets; purging it
//!   (`DELETE /deletedsecrets/<n>`) within the purge delay after the delete is 409 (the
//!   deletion is still in progress), later 204; with purge protection, 403.
//! * Missing objects: 404 `SecretNotFound`.

use crate::fake::{error, FakeServer};
use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use kes_config::{AzureAuth, AzureConfig};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
pub const CLIENT_ID: &str = "00000000-0000-0000-0000-0000000000bb";
pub const CLIENT_SECRET: &str = "kes~test~secret";
/// The user-assigned managed identity the fake knows (the system-assigned one needs none).
pub const IDENTITY_CLIENT_ID: &str = "00000000-0000-0000-0000-0000000000cc";
const PAGE_MAX: usize = 25;

#[derive(Clone, Debug)]
pub struct Version {
    pub id: String,
    pub value: String,
    pub enabled: bool,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
    pub created: u64,
}

#[derive(Default)]
struct Secret {
    versions: Vec<Version>,
    deleted_at: Option<Instant>,
}

struct Vault {
    secrets: Mutex<BTreeMap<String, Secret>>,
    tokens: Mutex<HashMap<String, Instant>>,
    lifetime: Mutex<Duration>,
    purge_delay: Mutex<Duration>,
    purge_protection: Mutex<bool>,
    issued: AtomicU64,
    url: Mutex<String>,
}

/// The fake vault and identity endpoints on one server.
pub struct AzureFake {
    pub server: FakeServer,
    vault: Arc<Vault>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn kv_error(status: StatusCode, code: &str, inner: Option<&str>, message: &str) -> Response {
    let mut e = json!({"error": {"code": code, "message": message}});
    if let Some(i) = inner {
        e["error"]["innererror"] = json!({"code": i});
    }
    error(status, e)
}

fn not_found(name: &str) -> Response {
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        None,
        &format!("A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command."),
    )
}

/// The query parameters of a request, decoded.
fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((crate::gcp::percent_decode(k), crate::gcp::percent_decode(v)))
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl AzureFake {
    pub async fn start() -> Result<AzureFake> {
        let vault = Arc::new(Vault {
            secrets: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(HashMap::new()),
            lifetime: Mutex::new(Duration::from_secs(3599)),
            purge_delay: Mutex::new(Duration::from_millis(200)),
            purge_protection: Mutex::new(false),
            issued: AtomicU64::new(0),
            url: Mutex::new(String::new()),
        });
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/metadata/identity/oauth2/token", get(imds))
            .route("/secrets", get(list_secrets))
            .route(
                "/secrets/{name}",
                get(get_latest).put(put_secret).delete(delete_secret),
            )
            .route("/secrets/{name}/versions", get(list_versions))
            .route(
                "/secrets/{name}/{version}",
                get(get_version).patch(patch_version),
            )
            .route("/deletedsecrets/{name}", delete(purge).get(get_deleted))
            .with_state(Arc::clone(&vault));
        let server = FakeServer::start(router, None).await?;
        *vault.url.lock() = server.url.clone();
        Ok(AzureFake { server, vault })
    }

    /// Store options pointing the identity endpoints here.
    pub fn options(&self) -> (String, String) {
        (self.server.url.clone(), self.server.url.clone())
    }

    pub fn config(&self) -> AzureConfig {
        AzureConfig {
            endpoint: self.server.url.clone(),
            auth: AzureAuth::ClientSecret {
                tenant_id: TENANT.to_owned(),
                client_id: CLIENT_ID.to_owned(),
                client_secret: CLIENT_SECRET.to_owned(),
            },
        }
    }

    pub fn tokens_issued(&self) -> u64 {
        self.vault.issued.load(Ordering::SeqCst)
    }

    pub fn set_token_lifetime(&self, d: Duration) {
        *self.vault.lifetime.lock() = d;
    }

    pub fn revoke_tokens(&self) {
        self.vault.tokens.lock().clear();
    }

    pub fn set_purge_delay(&self, d: Duration) {
        *self.vault.purge_delay.lock() = d;
    }

    pub fn set_purge_protection(&self, on: bool) {
        *self.vault.purge_protection.lock() = on;
    }

    /// Writes a version as KES's `SetSecret` does; its id.
    pub fn put(&self, name: &str, value: &str) -> String {
        add_version(&self.vault, name, value)
    }

    /// The versions of a live secret, oldest first.
    pub fn versions(&self, name: &str) -> Vec<Version> {
        self.vault
            .secrets
            .lock()
            .get(name)
            .filter(|s| s.deleted_at.is_none())
            .map(|s| s.versions.clone())
            .unwrap_or_default()
    }

    /// Whether `name` is soft-deleted (and not purged).
    pub fn is_deleted(&self, name: &str) -> bool {
        self.vault
            .secrets
            .lock()
            .get(name)
            .is_some_and(|s| s.deleted_at.is_some())
    }

    /// Changes a version's attributes.
    pub fn set_attributes(&self, name: &str, version: &str, enabled: bool, exp: Option<u64>) {
        let mut secrets = self.vault.secrets.lock();
        if let Some(v) = secrets
            .get_mut(name)
            .and_then(|s| s.versions.iter_mut().find(|v| v.id == version))
        {
            v.enabled = enabled;
            v.exp = exp;
        }
    }
}

fn add_version(vault: &Vault, name: &str, value: &str) -> String {
    let id = format!("{:032x}", rand::random::<u128>());
    let mut secrets = vault.secrets.lock();
    let s = secrets.entry(name.to_owned()).or_default();
    s.versions.push(Version {
        id: id.clone(),
        value: value.to_owned(),
        enabled: true,
        nbf: None,
        exp: None,
        created: now_secs(),
    });
    id
}

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_owned(), crate::gcp::percent_decode(v)))
        })
        .collect()
}

fn issue(vault: &Vault) -> (String, Duration) {
    let lifetime = *vault.lifetime.lock();
    let t = format!("eyJ0eXAiOiJKV1Qi.{:032x}", rand::random::<u128>());
    vault
        .tokens
        .lock()
        .insert(t.clone(), Instant::now() + lifetime);
    vault.issued.fetch_add(1, Ordering::SeqCst);
    (t, lifetime)
}

fn aad_error(status: StatusCode, code: &str, description: &str) -> Response {
    error(
        status,
        json!({"error": code, "error_description": description, "error_codes": [7000215], "timestamp": "2026-01-01 00:00:00Z"}),
    )
}

async fn token(
    State(vault): State<Arc<Vault>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if tenant != TENANT {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application was not found in the directory.",
        );
    }
    if f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    if f.get("scope").map(String::as_str) != Some("https://vault.azure.net/.default") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    }
    let (t, lifetime) = issue(&vault);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": t,
    }))
    .into_response()
}

async fn imds(State(vault): State<Arc<Vault>>, headers: HeaderMap, uri: Uri) -> Response {
    let q = query(&uri);
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
        );
    }
    if q.get("resource").map(String::as_str) != Some("https://vault.azure.net") {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_resource", "error_description": "AADSTS500011: The resource principal was not found"}),
        );
    }
    if let Some(c) = q.get("client_id") {
        if c != IDENTITY_CLIENT_ID {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": "Identity not found"}),
            );
        }
    }
    let (t, lifetime) = issue(&vault);
    axum::Json(json!({
        "access_token": t,
        "expires_in": lifetime.as_secs().to_string(),
        "expires_on": (now_secs() + lifetime.as_secs()).to_string(),
        "resource": "https://vault.azure.net",
        "token_type": "Bearer",
    }))
    .into_response()
}

/// Checks the api-version and the bearer token of a vault request.
fn authorize(vault: &Vault, headers: &HeaderMap, q: &HashMap<String, String>) -> Option<Response> {
    if q.get("api-version").is_none_or(|v| v.is_empty()) {
        return Some(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            None,
            "The request URI contains an invalid 'api-version' parameter",
        ));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = token.is_some_and(|t| {
        vault
            .tokens
            .lock()
            .get(t)
            .is_some_and(|exp| Instant::now() < *exp)
    });
    if valid {
        return None;
    }
    let mut r = kv_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        None,
        if token.is_some() {
            "AKV10032: Invalid issuer or the token has expired."
        } else {
            "AKV10000: Request is missing a Bearer or PoP token."
        },
    );
    r.headers_mut().insert(
        "www-authenticate",
        axum::http::HeaderValue::from_static(
            "Bearer authorization=\"https://login.microsoftonline.com/tenant\", resource=\"https://vault.azure.net\"",
        ),
    );
    Some(r)
}

fn bundle(base: &str, name: &str, v: &Version, with_value: bool) -> Value {
    let mut b = json!({
        "id": format!("{base}/secrets/{name}/{}", v.id),
        "attributes": {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
    });
    if let Some(nbf) = v.nbf {
        b["attributes"]["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        b["attributes"]["exp"] = json!(exp);
    }
    if with_value {
        b["value"] = json!(v.value);
    }
    b
}

fn disabled() -> Response {
    kv_error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        Some("SecretDisabled"),
        "Operation get is not allowed on a disabled secret.",
    )
}

/// A page of `items` from `$skiptoken` with `maxresults`, and the nextLink.
fn page(q: &HashMap<String, String>, items: Vec<Value>, next_base: &str) -> Response {
    let max = q
        .get("maxresults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(PAGE_MAX);
    if max == 0 || max > PAGE_MAX {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            None,
            "maxresults must be between 1 and 25",
        );
    }
    let skip = q
        .get("$skiptoken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let end = (skip + max).min(items.len());
    let value: Vec<Value> = items
        .get(skip..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = (end < items.len())
        .then(|| format!("{next_base}?api-version=7.4&$skiptoken={end}&maxresults={max}"));
    axum::Json(json!({"value": value, "nextLink": next})).into_response()
}

async fn list_secrets(State(vault): State<Arc<Vault>>, headers: HeaderMap, uri: Uri) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    let base = vault.url.lock().clone();
    let items: Vec<Value> = vault
        .secrets
        .lock()
        .iter()
        .filter(|(_, s)| s.deleted_at.is_none())
        .filter_map(|(n, s)| {
            let latest = s.versions.last()?;
            let mut b = bundle(&base, n, latest, false);
            b["id"] = json!(format!("{base}/secrets/{n}"));
            Some(b)
        })
        .collect();
    page(&q, items, &format!("{base}/secrets"))
}

async fn put_secret(
    State(vault): State<Arc<Vault>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    if !valid_name(&name) {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            None,
            &format!("The request URI contains an invalid name: {name}"),
        );
    }
    let Some(value) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["value"].as_str().map(str::to_owned))
    else {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            None,
            "Property value is required",
        );
    };
    if value.len() > 25 * 1024 {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            None,
            "Secret value too large",
        );
    }
    if vault
        .secrets
        .lock()
        .get(&name)
        .is_some_and(|s| s.deleted_at.is_some())
    {
        return kv_error(
            StatusCode::CONFLICT,
            "Conflict",
            Some("ObjectIsDeletedButRecoverable"),
            &format!("Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."),
        );
    }
    let id = add_version(&vault, &name, &value);
    let base = vault.url.lock().clone();
    let secrets = vault.secrets.lock();
    match secrets
        .get(&name)
        .and_then(|s| s.versions.iter().find(|v| v.id == id))
    {
        Some(v) => axum::Json(bundle(&base, &name, v, true)).into_response(),
        None => not_found(&name),
    }
}

async fn get_latest(
    State(vault): State<Arc<Vault>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    let base = vault.url.lock().clone();
    let secrets = vault.secrets.lock();
    match secrets
        .get(&name)
        .filter(|s| s.deleted_at.is_none())
        .and_then(|s| s.versions.last())
    {
        Some(v) if !v.enabled => disabled(),
        Some(v) => axum::Json(bundle(&base, &name, v, true)).into_response(),
        None => not_found(&name),
    }
}

async fn get_version(
    State(vault): State<Arc<Vault>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    let base = vault.url.lock().clone();
    let secrets = vault.secrets.lock();
    match secrets
        .get(&name)
        .filter(|s| s.deleted_at.is_none())
        .and_then(|s| s.versions.iter().find(|v| v.id == version))
    {
        Some(v) if !v.enabled => disabled(),
        Some(v) => axum::Json(bundle(&base, &name, v, true)).into_response(),
        None => not_found(&name),
    }
}

async fn patch_version(
    State(vault): State<Arc<Vault>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    let attrs = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["attributes"].clone();
    let base = vault.url.lock().clone();
    let mut secrets = vault.secrets.lock();
    match secrets
        .get_mut(&name)
        .filter(|s| s.deleted_at.is_none())
        .and_then(|s| s.versions.iter_mut().find(|v| v.id == version))
    {
        Some(v) => {
            if let Some(e) = attrs["enabled"].as_bool() {
                v.enabled = e;
            }
            if let Some(e) = attrs["exp"].as_u64() {
                v.exp = Some(e);
            }
            if let Some(n) = attrs["nbf"].as_u64() {
                v.nbf = Some(n);
            }
            axum::Json(bundle(&base, &name, v, false)).into_response()
        }
        None => not_found(&name),
    }
}

async fn list_versions(
    State(vault): State<Arc<Vault>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    let base = vault.url.lock().clone();
    let items: Option<Vec<Value>> = vault
        .secrets
        .lock()
        .get(&name)
        .filter(|s| s.deleted_at.is_none())
        .map(|s| {
            s.versions
                .iter()
                .map(|v| bundle(&base, &name, v, false))
                .collect()
        });
    match items {
        Some(items) => page(&q, items, &format!("{base}/secrets/{name}/versions")),
        None => not_found(&name),
    }
}

async fn delete_secret(
    State(vault): State<Arc<Vault>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    let base = vault.url.lock().clone();
    let mut secrets = vault.secrets.lock();
    match secrets.get_mut(&name).filter(|s| s.deleted_at.is_none()) {
        Some(s) => {
            s.deleted_at = Some(Instant::now());
            let now = now_secs();
            let mut b = s
                .versions
                .last()
                .map(|v| bundle(&base, &name, v, false))
                .unwrap_or_else(|| json!({}));
            b["recoveryId"] = json!(format!("{base}/deletedsecrets/{name}"));
            b["deletedDate"] = json!(now);
            b["scheduledPurgeDate"] = json!(now + 90 * 86400);
            axum::Json(b).into_response()
        }
        None => not_found(&name),
    }
}

async fn get_deleted(
    State(vault): State<Arc<Vault>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    let base = vault.url.lock().clone();
    let secrets = vault.secrets.lock();
    match secrets.get(&name).filter(|s| s.deleted_at.is_some()) {
        Some(_) => axum::Json(json!({"recoveryId": format!("{base}/deletedsecrets/{name}"), "id": format!("{base}/secrets/{name}")})).into_response(),
        None => kv_error(StatusCode::NOT_FOUND, "SecretNotFound", None, &format!("Deleted Secret not found: {name}")),
    }
}

async fn purge(
    State(vault): State<Arc<Vault>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let q = query(&uri);
    if let Some(r) = authorize(&vault, &headers, &q) {
        return r;
    }
    if *vault.purge_protection.lock() {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some("ForbiddenByPolicy"),
            "Operation \"purge\" is not allowed because purge protection is enabled for this vault.",
        );
    }
    let delay = *vault.purge_delay.lock();
    let mut secrets = vault.secrets.lock();
    match secrets.get(&name).and_then(|s| s.deleted_at) {
        Some(at) if at.elapsed() < delay => kv_error(
            StatusCode::CONFLICT,
            "Conflict",
            Some("ObjectIsBeingDeleted"),
            &format!("Secret {name} is currently being deleted."),
        ),
        Some(_) => {
            secrets.remove(&name);
            StatusCode::NO_CONTENT.into_response()
        }
        None => kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            None,
            &format!("Deleted Secret not found: {name}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn token(fake: &AzureFake, secret: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", fake.server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={secret}&scope=https%3A%2F%2Fvault.azure.net%2F.default"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn call(
        fake: &AzureFake,
        method: reqwest::Method,
        path: &str,
        tok: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = reqwest::Client::new()
            .request(method, format!("{}{path}", fake.server.url))
            .bearer_auth(tok);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn behaves_like_key_vault() {
        use reqwest::Method as M;
        let fake = AzureFake::start().await.unwrap();
        fake.set_purge_delay(Duration::from_millis(300));
        // Identity.
        let (s, v) = token(&fake, "wrong").await;
        assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
        let (s, v) = token(&fake, CLIENT_SECRET).await;
        assert_eq!(s, 200);
        let t = v["access_token"].as_str().unwrap().to_owned();
        // Authentication and api-version.
        let (s, _) = call(&fake, M::GET, "/secrets?api-version=7.4", "nope", None).await;
        assert_eq!(s, 401);
        let (s, v) = call(&fake, M::GET, "/secrets", &t, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("BadParameter"))
        );
        // Versions, latest, disabled.
        let (f, tt) = (&fake, &t);
        let put = |n: &str, val: &str| {
            let path = format!("/secrets/{n}?api-version=7.4");
            let body = json!({ "value": val });
            async move { call(f, M::PUT, &path, tt, Some(body)).await }
        };
        let (s, v1) = put("a", "one").await;
        assert_eq!(s, 200);
        put("a", "two").await;
        let (_, latest) = call(&fake, M::GET, "/secrets/a?api-version=7.4", &t, None).await;
        assert_eq!(latest["value"], "two");
        let v1_id = v1["id"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let (s, _) = call(
            &fake,
            M::PATCH,
            &format!("/secrets/a/{v1_id}?api-version=7.4"),
            &t,
            Some(json!({"attributes": {"enabled": false}})),
        )
        .await;
        assert_eq!(s, 200);
        let (s, v) = call(
            &fake,
            M::GET,
            &format!("/secrets/a/{v1_id}?api-version=7.4"),
            &t,
            None,
        )
        .await;
        assert_eq!(
            (s, v["error"]["innererror"]["code"].as_str()),
            (403, Some("SecretDisabled"))
        );
        let (s, v) = call(&fake, M::GET, "/secrets/missing?api-version=7.4", &t, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("SecretNotFound"))
        );
        // Paging with nextLink.
        for i in 0..30 {
            put(&format!("p{i:02}"), "x").await;
        }
        let mut url = format!("{}/secrets?api-version=7.4&maxresults=25", fake.server.url);
        let mut seen = 0;
        loop {
            let r: Value = reqwest::Client::new()
                .get(&url)
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            seen += r["value"].as_array().unwrap().len();
            match r["nextLink"].as_str() {
                Some(n) => url = n.to_owned(),
                None => break,
            }
        }
        assert_eq!(seen, 31);
        // Soft delete and purge.
        let (s, _) = call(&fake, M::DELETE, "/secrets/a?api-version=7.4", &t, None).await;
        assert_eq!(s, 200);
        let (s, v) = put("a", "three").await;
        assert_eq!(
            (s, v["error"]["innererror"]["code"].as_str()),
            (409, Some("ObjectIsDeletedButRecoverable"))
        );
        let (s, _) = call(
            &fake,
            M::DELETE,
            "/deletedsecrets/a?api-version=7.4",
            &t,
            None,
        )
        .await;
        assert_eq!(s, 409, "purge while the deletion is in progress");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let (s, _) = call(
            &fake,
            M::DELETE,
            "/deletedsecrets/a?api-version=7.4",
            &t,
            None,
        )
        .await;
        assert_eq!(s, 204);
        let (s, _) = put("a", "three").await;
        assert_eq!(s, 200);
        // Token expiry.
        fake.set_token_lifetime(Duration::from_millis(100));
        let (_, v) = token(&fake, CLIENT_SECRET).await;
        let short = v["access_token"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (s, _) = call(&fake, M::GET, "/secrets/a?api-version=7.4", &short, None).await;
        assert_eq!(s, 401);
        // Rate limiting.
        fake.server.throttle(1, 2);
        let r = reqwest::Client::new()
            .get(format!("{}/secrets?api-version=7.4", fake.server.url))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
    }
}
