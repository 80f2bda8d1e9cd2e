//! A fake Entrust KeyControl secrets vault, over HTTPS with a test CA, written from Entrust's
//! published KeyControl vault API reference (no emulator exists).
//!
//! What it models, as the service does:
//! * Login: `POST /vault/1.0/Login/<vault_id>/` with `{"username","password"}` answers
//!   `{"access_token","expires_at"}` (RFC 3339); 401 for wrong credentials, 404 for an
//!   unknown vault. Requests carry the token in `X-Vault-Auth`; a missing, expired or revoked
//!   token is 401.
//! * `POST /vault/1.0/CreateSecret/` (`box_id`, `name`, `secret_data`; 409 when the name exists
//!   in the box; 404 for an unknown box; 400 for a malformed body), `CheckoutSecret/` and
//!   `DeleteSecret/` (`box_id`, `secret_id`; 404 when missing), `ListSecretIds/` (`box_id`,
//!   `max_items` at most 1000, `next_token`).
//!
//! Error bodies are `{"error": "...", "message": "..."}`.

use crate::fake::{tls_config, FakeServer};
use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use kes_config::KeyControlConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const VAULT_ID: &str = "8d5e5f44-0000-4000-8000-000000000001";
pub const BOX_ID: &str = "kes";
pub const USERNAME: &str = "kes";
pub const PASSWORD: &str = "kes-pa55word";

struct Vault {
    /// (box, name) -> data.
    secrets: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    tokens: Mutex<HashMap<String, Instant>>,
    lifetime: Mutex<Duration>,
    logins: AtomicU64,
}

/// The fake vault.
pub struct KeyControlFake {
    pub server: FakeServer,
    vault: Arc<Vault>,
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

fn kc_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "message": message})),
    )
        .into_response()
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days since the epoch to a civil date (Howard Hinnant's algorithm), to keep this fake free
    // of a date library.
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl KeyControlFake {
    pub async fn start() -> Result<KeyControlFake> {
        let vault = Arc::new(Vault {
            secrets: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(HashMap::new()),
            lifetime: Mutex::new(Duration::from_secs(3600)),
            logins: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/vault/1.0/Login/{vault}/", post(login))
            .route("/vault/1.0/CreateSecret/", post(create))
            .route("/vault/1.0/CheckoutSecret/", post(checkout))
            .route("/vault/1.0/DeleteSecret/", post(remove))
            .route("/vault/1.0/ListSecretIds/", post(list))
            .with_state(Arc::clone(&vault));
        let (tls, ca_pem) = tls_config()?;
        let server = FakeServer::start(router, Some(tls)).await?;
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("keycontrol-ca.pem");
        std::fs::write(&ca_file, ca_pem)?;
        Ok(KeyControlFake {
            server,
            vault,
            _dir: dir,
            ca_file,
        })
    }

    pub fn config(&self) -> KeyControlConfig {
        KeyControlConfig {
            endpoint: self.server.url.clone(),
            vault_id: VAULT_ID.to_owned(),
            box_id: BOX_ID.to_owned(),
            username: USERNAME.to_owned(),
            password: PASSWORD.to_owned(),
            ca: Some(self.ca_file.clone()),
        }
    }

    pub fn logins(&self) -> u64 {
        self.vault.logins.load(Ordering::SeqCst)
    }

    pub fn set_token_lifetime(&self, d: Duration) {
        *self.vault.lifetime.lock() = d;
    }

    pub fn revoke_tokens(&self) {
        self.vault.tokens.lock().clear();
    }

    /// Creates a secret directly, as KES does (any name, even an empty one).
    pub fn insert(&self, name: &str, data: &[u8]) {
        self.vault
            .secrets
            .lock()
            .insert((BOX_ID.to_owned(), name.to_owned()), data.to_vec());
    }

    pub fn secret(&self, name: &str) -> Option<Vec<u8>> {
        self.vault
            .secrets
            .lock()
            .get(&(BOX_ID.to_owned(), name.to_owned()))
            .cloned()
    }
}

fn authorized(v: &Vault, headers: &HeaderMap) -> Option<Response> {
    let token = headers.get("x-vault-auth").and_then(|h| h.to_str().ok());
    let ok = token.is_some_and(|t| {
        v.tokens
            .lock()
            .get(t)
            .is_some_and(|exp| Instant::now() < *exp)
    });
    (!ok).then(|| {
        kc_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid or expired X-Vault-Auth token",
        )
    })
}

fn body(b: &Bytes) -> Option<Value> {
    serde_json::from_slice::<Value>(b)
        .ok()
        .filter(Value::is_object)
}

async fn login(State(v): State<Arc<Vault>>, Path(vault): Path<String>, b: Bytes) -> Response {
    if vault != VAULT_ID {
        return kc_error(StatusCode::NOT_FOUND, "NotFound", "vault not found");
    }
    let req = body(&b).unwrap_or(Value::Null);
    if req["username"] != USERNAME || req["password"] != PASSWORD {
        return kc_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid username or password",
        );
    }
    let lifetime = *v.lifetime.lock();
    let t = format!("{:032x}", rand::random::<u128>());
    v.tokens.lock().insert(t.clone(), Instant::now() + lifetime);
    v.logins.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "access_token": t,
        "expires_at": rfc3339(SystemTime::now() + lifetime),
        "user": USERNAME,
    }))
    .into_response()
}

// Test-only handler plumbing: the error is the answer itself.
#[allow(clippy::result_large_err)]
fn box_of(req: &Value) -> Result<String, Response> {
    match req["box_id"].as_str() {
        Some(b) if b == BOX_ID => Ok(b.to_owned()),
        Some(_) => Err(kc_error(StatusCode::NOT_FOUND, "NotFound", "box not found")),
        None => Err(kc_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "box_id is required",
        )),
    }
}

async fn create(State(v): State<Arc<Vault>>, headers: HeaderMap, b: Bytes) -> Response {
    if let Some(r) = authorized(&v, &headers) {
        return r;
    }
    let Some(req) = body(&b) else {
        return kc_error(StatusCode::BAD_REQUEST, "BadRequest", "invalid JSON");
    };
    let bx = match box_of(&req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(name), Some(data)) = (
        req["name"].as_str(),
        req["secret_data"].as_str().and_then(|d| B64.decode(d).ok()),
    ) else {
        return kc_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "name and base64 secret_data are required",
        );
    };
    let mut secrets = v.secrets.lock();
    let key = (bx, name.to_owned());
    if secrets.contains_key(&key) {
        return kc_error(
            StatusCode::CONFLICT,
            "Conflict",
            "a secret with this name already exists in the box",
        );
    }
    secrets.insert(key, data);
    axum::Json(json!({"secret_id": name, "box_id": BOX_ID})).into_response()
}

async fn checkout(State(v): State<Arc<Vault>>, headers: HeaderMap, b: Bytes) -> Response {
    if let Some(r) = authorized(&v, &headers) {
        return r;
    }
    let req = body(&b).unwrap_or(Value::Null);
    let bx = match box_of(&req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = req["secret_id"].as_str().unwrap_or_default().to_owned();
    match v.secrets.lock().get(&(bx, id.clone())) {
        Some(d) => {
            axum::Json(json!({"secret_id": id, "secret_data": B64.encode(d)})).into_response()
        }
        None => kc_error(StatusCode::NOT_FOUND, "NotFound", "secret not found"),
    }
}

async fn remove(State(v): State<Arc<Vault>>, headers: HeaderMap, b: Bytes) -> Response {
    if let Some(r) = authorized(&v, &headers) {
        return r;
    }
    let req = body(&b).unwrap_or(Value::Null);
    let bx = match box_of(&req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = req["secret_id"].as_str().unwrap_or_default().to_owned();
    match v.secrets.lock().remove(&(bx, id)) {
        Some(_) => axum::Json(json!({})).into_response(),
        None => kc_error(StatusCode::NOT_FOUND, "NotFound", "secret not found"),
    }
}

async fn list(State(v): State<Arc<Vault>>, headers: HeaderMap, b: Bytes) -> Response {
    if let Some(r) = authorized(&v, &headers) {
        return r;
    }
    let req = body(&b).unwrap_or(Value::Null);
    let bx = match box_of(&req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let max = req["max_items"].as_u64().unwrap_or(100) as usize;
    if max == 0 || max > 1000 {
        return kc_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "max_items must be between 1 and 1000",
        );
    }
    let start = req["next_token"]
        .as_str()
        .and_then(|t| B64.decode(t).ok())
        .and_then(|t| String::from_utf8(t).ok());
    let secrets = v.secrets.lock();
    let names: Vec<&String> = secrets
        .keys()
        .filter(|(b, n)| *b == bx && start.as_ref().is_none_or(|s| n > s))
        .map(|(_, n)| n)
        .take(max + 1)
        .collect();
    let more = names.len() > max;
    let page: Vec<&String> = names.into_iter().take(max).collect();
    let next = more.then(|| page.last().map(|l| B64.encode(l))).flatten();
    axum::Json(json!({"secret_ids": page, "next_token": next})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 3661)),
            "2024-02-29T01:01:01Z"
        );
    }

    #[tokio::test]
    async fn behaves_like_keycontrol() {
        let fake = KeyControlFake::start().await.unwrap();
        let ca = std::fs::read(&fake.ca_file).unwrap();
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let url = |p: &str| format!("{}/vault/1.0/{p}", fake.server.url);
        let r = http
            .post(url(&format!("Login/{VAULT_ID}/")))
            .json(&json!({"username": USERNAME, "password": "no"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .post(url("Login/other/"))
            .json(&json!({"username": USERNAME, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r: Value = http
            .post(url(&format!("Login/{VAULT_ID}/")))
            .json(&json!({"username": USERNAME, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = r["access_token"].as_str().unwrap().to_owned();
        assert!(r["expires_at"].as_str().unwrap().ends_with('Z'));
        let post = |p: &str, b: Value| http.post(url(p)).header("X-Vault-Auth", &t).json(&b).send();
        let create = json!({"box_id": BOX_ID, "name": "a", "secret_data": "aGk="});
        assert_eq!(
            post("CreateSecret/", create.clone())
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(post("CreateSecret/", create).await.unwrap().status(), 409);
        let r: Value = post(
            "CheckoutSecret/",
            json!({"box_id": BOX_ID, "secret_id": "a"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(r["secret_data"], "aGk=");
        assert_eq!(
            post(
                "CheckoutSecret/",
                json!({"box_id": "other", "secret_id": "a"})
            )
            .await
            .unwrap()
            .status(),
            404
        );
        for i in 0..5 {
            fake.insert(&format!("p{i}"), b"x");
        }
        let mut next = Value::Null;
        let mut seen = 0;
        loop {
            let r: Value = post(
                "ListSecretIds/",
                json!({"box_id": BOX_ID, "max_items": 2, "next_token": next}),
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            seen += r["secret_ids"].as_array().unwrap().len();
            next = r["next_token"].clone();
            if next.is_null() {
                break;
            }
        }
        assert_eq!(seen, 6);
        assert_eq!(
            post("DeleteSecret/", json!({"box_id": BOX_ID, "secret_id": "a"}))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            post("DeleteSecret/", json!({"box_id": BOX_ID, "secret_id": "a"}))
                .await
                .unwrap()
                .status(),
            404
        );
        fake.revoke_tokens();
        assert_eq!(
            post("ListSecretIds/", json!({"box_id": BOX_ID}))
                .await
                .unwrap()
                .status(),
            401
        );
    }
}
