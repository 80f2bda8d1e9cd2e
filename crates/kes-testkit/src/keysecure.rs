//! A fake Thales CipherTrust Manager (formerly Gemalto KeySecure), over HTTPS with a test CA,
//! written from the published CipherTrust Manager REST reference (no emulator exists).
//!
//! What it models, as the service does:
//! * Tokens: `POST /api/v1/auth/tokens` with `grant_type=refresh_token` exchanges a refresh
//!   token (per domain) for a JWT with a `duration` the test sets; 401 for an unknown refresh
//!   token or domain. JWTs expire and can be revoked; requests without a valid one get 401.
//! * Vault secrets: `POST /api/v1/vault/secrets` (201; 409 when the name exists; 400 for a
//!   missing name or material, or a data type other than the known ones),
//!   `GET /api/v1/vault/secrets/<id>/export?type=name` (the material; 404; 400 `NCERRInvalidState`
//!   for a deactivated secret), `GET /api/v1/vault/secrets/<id>?type=name` (metadata with its
//!   `state`), `DELETE /api/v1/vault/secrets/<id>?type=name` (204; 404) and
//!   `GET /api/v1/vault/secrets` with `limit` and `skip` (`{skip, limit, total, resources}`).
//!
//! Error bodies are CipherTrust's `{"code","codeDesc","message"}`.

use crate::fake::{tls_config, FakeServer};
use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kes_config::KeySecureConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DOMAIN: &str = "kes";

#[derive(Clone, Debug)]
pub struct Secret {
    pub name: String,
    pub data_type: String,
    pub material: String,
    pub state: String,
}

struct Manager {
    refresh_token: String,
    secrets: Mutex<BTreeMap<String, Secret>>,
    jwts: Mutex<HashMap<String, Instant>>,
    lifetime: Mutex<Duration>,
    issued: AtomicU64,
}

/// The fake manager.
pub struct KeySecureFake {
    pub server: FakeServer,
    manager: Arc<Manager>,
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

fn ct_error(status: StatusCode, code: u32, desc: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "codeDesc": desc, "message": message})),
    )
        .into_response()
}

impl KeySecureFake {
    pub async fn start() -> Result<KeySecureFake> {
        let manager = Arc::new(Manager {
            refresh_token: format!("{:048x}", rand::random::<u128>()),
            secrets: Mutex::new(BTreeMap::new()),
            jwts: Mutex::new(HashMap::new()),
            lifetime: Mutex::new(Duration::from_secs(300)),
            issued: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/api/v1/auth/tokens", post(tokens))
            .route("/api/v1/vault/secrets", post(create).get(list))
            .route("/api/v1/vault/secrets/{id}/export", get(export))
            .route("/api/v1/vault/secrets/{id}", get(info).delete(remove))
            .with_state(Arc::clone(&manager));
        let (tls, ca_pem) = tls_config()?;
        let server = FakeServer::start(router, Some(tls)).await?;
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ciphertrust-ca.pem");
        std::fs::write(&ca_file, ca_pem)?;
        Ok(KeySecureFake {
            server,
            manager,
            _dir: dir,
            ca_file,
        })
    }

    pub fn config(&self) -> KeySecureConfig {
        KeySecureConfig {
            endpoint: self.server.url.clone(),
            token: self.manager.refresh_token.clone(),
            domain: Some(DOMAIN.to_owned()),
            ca: Some(self.ca_file.clone()),
        }
    }

    pub fn tokens_issued(&self) -> u64 {
        self.manager.issued.load(Ordering::SeqCst)
    }

    pub fn set_token_lifetime(&self, d: Duration) {
        *self.manager.lifetime.lock() = d;
    }

    pub fn revoke_tokens(&self) {
        self.manager.jwts.lock().clear();
    }

    /// Creates a secret directly, as KES does.
    pub fn insert(&self, name: &str, material: &str) {
        self.manager.secrets.lock().insert(
            name.to_owned(),
            Secret {
                name: name.to_owned(),
                data_type: "seed".to_owned(),
                material: material.to_owned(),
                state: "Active".to_owned(),
            },
        );
    }

    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.manager.secrets.lock().get(name).cloned()
    }

    pub fn set_state(&self, name: &str, state: &str) {
        if let Some(s) = self.manager.secrets.lock().get_mut(name) {
            s.state = state.to_owned();
        }
    }
}

fn authorized(m: &Manager, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = token.is_some_and(|t| {
        m.jwts
            .lock()
            .get(t)
            .is_some_and(|exp| Instant::now() < *exp)
    });
    (!ok).then(|| {
        ct_error(
            StatusCode::UNAUTHORIZED,
            10,
            "NCERRAuthentication: Authentication failed",
            "Token is expired or invalid",
        )
    })
}

fn by_name(uri: &Uri) -> bool {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .any(|p| p == "type=name")
}

fn view(s: &Secret) -> Value {
    json!({
        "id": format!("{:x}", s.name.len()),
        "name": s.name,
        "dataType": s.data_type,
        "state": s.state,
        "objectType": "Secret Data",
        "createdAt": "2026-01-01T00:00:00Z",
    })
}

async fn tokens(State(m): State<Arc<Manager>>, body: Bytes) -> Response {
    let req = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    if req["grant_type"] != "refresh_token" {
        return ct_error(
            StatusCode::BAD_REQUEST,
            15,
            "NCERRInvalidParamValue: Invalid parameter value",
            "unsupported grant_type",
        );
    }
    let domain_ok = req["domain"].as_str().is_none_or(|d| d == DOMAIN);
    if req["refresh_token"].as_str() != Some(m.refresh_token.as_str()) || !domain_ok {
        return ct_error(
            StatusCode::UNAUTHORIZED,
            10,
            "NCERRAuthentication: Authentication failed",
            "Invalid refresh token",
        );
    }
    let lifetime = *m.lifetime.lock();
    let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{:032x}.sig", rand::random::<u128>());
    m.jwts.lock().insert(jwt.clone(), Instant::now() + lifetime);
    m.issued.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::OK,
        axum::Json(json!({
            "jwt": jwt,
            "duration": lifetime.as_secs(),
            "token_type": "Bearer",
            "client_id": "kes",
        })),
    )
        .into_response()
}

async fn create(State(m): State<Arc<Manager>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = authorized(&m, &headers) {
        return r;
    }
    let req = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let (Some(name), Some(material)) = (req["name"].as_str(), req["material"].as_str()) else {
        return ct_error(
            StatusCode::BAD_REQUEST,
            15,
            "NCERRMissingParam: Missing parameter",
            "name and material are required",
        );
    };
    let data_type = req["dataType"].as_str().unwrap_or("blob");
    if !["seed", "blob", "password"].contains(&data_type) {
        return ct_error(
            StatusCode::BAD_REQUEST,
            15,
            "NCERRInvalidParamValue: Invalid parameter value",
            "invalid dataType",
        );
    }
    let mut secrets = m.secrets.lock();
    if secrets.contains_key(name) {
        return ct_error(
            StatusCode::CONFLICT,
            5,
            "NCERRResourceAlreadyExists: Resource already exists",
            "Resource already exists",
        );
    }
    let s = Secret {
        name: name.to_owned(),
        data_type: data_type.to_owned(),
        material: material.to_owned(),
        state: "Active".to_owned(),
    };
    let v = view(&s);
    secrets.insert(name.to_owned(), s);
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn missing() -> Response {
    ct_error(
        StatusCode::NOT_FOUND,
        4,
        "NCERRResourceNotFound: Resource not found",
        "Resource not found",
    )
}

async fn export(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    if let Some(r) = authorized(&m, &headers) {
        return r;
    }
    if !by_name(&uri) {
        return missing();
    }
    match m.secrets.lock().get(&id) {
        None => missing(),
        Some(s) if s.state != "Active" => ct_error(
            StatusCode::BAD_REQUEST,
            21,
            "NCERRInvalidState: Invalid object state",
            "the secret is not active",
        ),
        Some(s) => {
            let mut v = view(s);
            v["material"] = json!(s.material);
            axum::Json(v).into_response()
        }
    }
}

async fn info(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    if let Some(r) = authorized(&m, &headers) {
        return r;
    }
    match m.secrets.lock().get(&id).filter(|_| by_name(&uri)) {
        None => missing(),
        Some(s) => axum::Json(view(s)).into_response(),
    }
}

async fn remove(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    if let Some(r) = authorized(&m, &headers) {
        return r;
    }
    if !by_name(&uri) {
        return missing();
    }
    match m.secrets.lock().remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => missing(),
    }
}

async fn list(State(m): State<Arc<Manager>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = authorized(&m, &headers) {
        return r;
    }
    let q: HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10);
    let skip = q
        .get("skip")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let secrets = m.secrets.lock();
    let resources: Vec<Value> = secrets.values().skip(skip).take(limit).map(view).collect();
    axum::Json(
        json!({"skip": skip, "limit": limit, "total": secrets.len(), "resources": resources}),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn behaves_like_ciphertrust() {
        let fake = KeySecureFake::start().await.unwrap();
        let ca = std::fs::read(&fake.ca_file).unwrap();
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let url = |p: &str| format!("{}{p}", fake.server.url);
        let r = http
            .post(url("/api/v1/auth/tokens"))
            .json(&json!({"grant_type": "refresh_token", "refresh_token": "bad"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r: Value = http
            .post(url("/api/v1/auth/tokens"))
            .json(&json!({"grant_type": "refresh_token", "refresh_token": fake.config().token, "domain": DOMAIN}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = r["jwt"].as_str().unwrap().to_owned();
        let create = json!({"name": "a", "dataType": "seed", "material": "m"});
        assert_eq!(
            http.post(url("/api/v1/vault/secrets"))
                .bearer_auth(&t)
                .json(&create)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        let r = http
            .post(url("/api/v1/vault/secrets"))
            .bearer_auth(&t)
            .json(&create)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        assert!(r.json::<Value>().await.unwrap()["codeDesc"]
            .as_str()
            .unwrap()
            .starts_with("NCERRResourceAlreadyExists"));
        let r: Value = http
            .get(url("/api/v1/vault/secrets/a/export?type=name"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["material"], "m");
        fake.set_state("a", "Deactivated");
        assert_eq!(
            http.get(url("/api/v1/vault/secrets/a/export?type=name"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        for i in 0..5 {
            fake.insert(&format!("p{i}"), "x");
        }
        let r: Value = http
            .get(url("/api/v1/vault/secrets?limit=2&skip=4"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (
                r["total"].as_u64(),
                r["resources"].as_array().unwrap().len()
            ),
            (Some(6), 2)
        );
        assert_eq!(
            http.delete(url("/api/v1/vault/secrets/a?type=name"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(
            http.delete(url("/api/v1/vault/secrets/a?type=name"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        fake.revoke_tokens();
        assert_eq!(
            http.get(url("/api/v1/vault/secrets"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
}
