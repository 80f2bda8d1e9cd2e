//! A fake Fortanix DSM (SDKMS), over HTTPS with a test CA, written from Fortanix's published
//! REST reference (no emulator exists).
//!
//! What it models, as the service does:
//! * Sessions: `POST /sys/v1/session/auth` with `Authorization: Basic <api key>` opens a
//!   session whose bearer token expires after a lifetime the test sets (401 for an unknown
//!   key, for a missing or expired token). Tokens can be revoked.
//! * Security objects: `POST /crypto/v1/keys` creates one (201; 409 when the name exists, as
//!   names are unique; 400 for a malformed request or an unknown group), `POST
//!   /crypto/v1/keys/export` and `/info` find one by name or kid (404 when missing; export
//!   needs the `EXPORT` operation and refuses disabled objects with 400), `DELETE
//!   /crypto/v1/keys/<kid>` removes one (204; 404), `GET /crypto/v1/keys` lists them as a JSON
//!   array with `sort=name:asc`, `limit` (at most 1000), `offset` and `group_id`.
//! * `GET /sys/v1/health`: 204.
//!
//! Error bodies are plain text, as DSM sends them.

use crate::fake::{tls_config, FakeServer};
use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use base64::Engine as _;
use kes_config::FortanixConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const GROUP_ID: &str = "3c7bd1a4-0000-4000-8000-00000000000a";
pub const OTHER_GROUP_ID: &str = "3c7bd1a4-0000-4000-8000-00000000000b";

#[derive(Clone, Debug)]
pub struct SObject {
    pub kid: String,
    pub name: String,
    pub group_id: String,
    pub obj_type: String,
    pub key_ops: Vec<String>,
    pub value: Vec<u8>,
    pub enabled: bool,
}

struct Dsm {
    api_key: String,
    /// kid -> object.
    objects: Mutex<BTreeMap<String, SObject>>,
    sessions: Mutex<HashMap<String, Instant>>,
    lifetime: Mutex<Duration>,
    sessions_opened: AtomicU64,
}

/// The fake DSM.
pub struct FortanixFake {
    pub server: FakeServer,
    dsm: Arc<Dsm>,
    _dir: tempfile::TempDir,
    /// A file holding the test CA, for `tls.ca`.
    pub ca_file: PathBuf,
}

fn text(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "text/plain")], message.to_owned()).into_response()
}

impl FortanixFake {
    pub async fn start() -> Result<FortanixFake> {
        let api_key = B64.encode(format!("{}:{:032x}", uuid_like(), rand::random::<u128>()));
        let dsm = Arc::new(Dsm {
            api_key,
            objects: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(HashMap::new()),
            lifetime: Mutex::new(Duration::from_secs(600)),
            sessions_opened: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/sys/v1/session/auth", post(session))
            .route("/sys/v1/health", get(|| async { StatusCode::NO_CONTENT }))
            .route("/crypto/v1/keys", post(create).get(list))
            .route("/crypto/v1/keys/export", post(export))
            .route("/crypto/v1/keys/info", post(info))
            .route("/crypto/v1/keys/{kid}", delete(remove))
            .with_state(Arc::clone(&dsm));
        let (tls, ca_pem) = tls_config()?;
        let server = FakeServer::start(router, Some(tls)).await?;
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("dsm-ca.pem");
        std::fs::write(&ca_file, ca_pem)?;
        Ok(FortanixFake {
            server,
            dsm,
            _dir: dir,
            ca_file,
        })
    }

    pub fn config(&self) -> FortanixConfig {
        FortanixConfig {
            endpoint: self.server.url.clone(),
            group_id: Some(GROUP_ID.to_owned()),
            api_key: self.dsm.api_key.clone(),
            ca: Some(self.ca_file.clone()),
        }
    }

    pub fn sessions_opened(&self) -> u64 {
        self.dsm.sessions_opened.load(Ordering::SeqCst)
    }

    pub fn set_session_lifetime(&self, d: Duration) {
        *self.dsm.lifetime.lock() = d;
    }

    pub fn revoke_sessions(&self) {
        self.dsm.sessions.lock().clear();
    }

    /// Creates an object directly, as KES does (in `group`).
    pub fn insert(&self, name: &str, value: &[u8], group: &str) {
        let kid = uuid_like();
        self.dsm.objects.lock().insert(
            kid.clone(),
            SObject {
                kid,
                name: name.to_owned(),
                group_id: group.to_owned(),
                obj_type: "OPAQUE".to_owned(),
                key_ops: vec!["EXPORT".to_owned(), "APPMANAGEABLE".to_owned()],
                value: value.to_vec(),
                enabled: true,
            },
        );
    }

    pub fn object(&self, name: &str) -> Option<SObject> {
        self.dsm
            .objects
            .lock()
            .values()
            .find(|o| o.name == name)
            .cloned()
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) {
        if let Some(o) = self
            .dsm
            .objects
            .lock()
            .values_mut()
            .find(|o| o.name == name)
        {
            o.enabled = enabled;
        }
    }
}

fn uuid_like() -> String {
    let r = rand::random::<u128>();
    let h = format!("{r:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn authorized(dsm: &Dsm, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = token.is_some_and(|t| {
        dsm.sessions
            .lock()
            .get(t)
            .is_some_and(|exp| Instant::now() < *exp)
    });
    (!ok).then(|| {
        text(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: session expired or not found",
        )
    })
}

fn view(o: &SObject, with_value: bool) -> Value {
    let mut v = json!({
        "kid": o.kid,
        "name": o.name,
        "group_id": o.group_id,
        "obj_type": o.obj_type,
        "key_ops": o.key_ops,
        "enabled": o.enabled,
        "key_size": o.value.len() * 8,
        "created_at": "20260101T000000Z",
    });
    if with_value {
        v["value"] = json!(B64.encode(&o.value));
    }
    v
}

async fn session(State(dsm): State<Arc<Dsm>>, headers: HeaderMap) -> Response {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if basic != Some(dsm.api_key.as_str()) {
        return text(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    let lifetime = *dsm.lifetime.lock();
    let t = B64.encode(rand::random::<[u8; 32]>());
    dsm.sessions
        .lock()
        .insert(t.clone(), Instant::now() + lifetime);
    dsm.sessions_opened.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "access_token": t,
        "entity_id": uuid_like(),
    }))
    .into_response()
}

async fn create(State(dsm): State<Arc<Dsm>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = authorized(&dsm, &headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return text(StatusCode::BAD_REQUEST, "Invalid JSON body");
    };
    let (Some(name), Some(obj_type)) = (req["name"].as_str(), req["obj_type"].as_str()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing field `name` or `obj_type`",
        );
    };
    if obj_type != "OPAQUE" {
        return text(
            StatusCode::BAD_REQUEST,
            "only OPAQUE objects may be imported here",
        );
    }
    let Some(value) = req["value"].as_str().and_then(|v| B64.decode(v).ok()) else {
        return text(StatusCode::BAD_REQUEST, "invalid or missing `value`");
    };
    let group = req["group_id"].as_str().unwrap_or(GROUP_ID);
    if group != GROUP_ID && group != OTHER_GROUP_ID {
        return text(StatusCode::BAD_REQUEST, "group not found");
    }
    let key_ops: Vec<String> = req["key_ops"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut objects = dsm.objects.lock();
    if objects.values().any(|o| o.name == name) {
        return text(
            StatusCode::CONFLICT,
            "A security object with the same name already exists",
        );
    }
    let o = SObject {
        kid: uuid_like(),
        name: name.to_owned(),
        group_id: group.to_owned(),
        obj_type: obj_type.to_owned(),
        key_ops,
        value,
        enabled: req["enabled"].as_bool().unwrap_or(true),
    };
    let v = view(&o, false);
    objects.insert(o.kid.clone(), o);
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn find<'a>(objects: &'a BTreeMap<String, SObject>, req: &Value) -> Option<&'a SObject> {
    if let Some(kid) = req["kid"].as_str() {
        return objects.get(kid);
    }
    let name = req["name"].as_str()?;
    objects.values().find(|o| o.name == name)
}

async fn export(State(dsm): State<Arc<Dsm>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = authorized(&dsm, &headers) {
        return r;
    }
    let req = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let objects = dsm.objects.lock();
    match find(&objects, &req) {
        None => text(StatusCode::NOT_FOUND, "sobject does not exist"),
        Some(o) if !o.enabled => text(StatusCode::BAD_REQUEST, "sobject is disabled"),
        Some(o) if !o.key_ops.iter().any(|k| k == "EXPORT") => text(
            StatusCode::BAD_REQUEST,
            "operation EXPORT is not allowed on this sobject",
        ),
        Some(o) => axum::Json(view(o, true)).into_response(),
    }
}

async fn info(State(dsm): State<Arc<Dsm>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = authorized(&dsm, &headers) {
        return r;
    }
    let req = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let objects = dsm.objects.lock();
    match find(&objects, &req) {
        None => text(StatusCode::NOT_FOUND, "sobject does not exist"),
        Some(o) => axum::Json(view(o, false)).into_response(),
    }
}

async fn remove(
    State(dsm): State<Arc<Dsm>>,
    headers: HeaderMap,
    Path(kid): Path<String>,
) -> Response {
    if let Some(r) = authorized(&dsm, &headers) {
        return r;
    }
    match dsm.objects.lock().remove(&kid) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => text(StatusCode::NOT_FOUND, "sobject does not exist"),
    }
}

async fn list(State(dsm): State<Arc<Dsm>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = authorized(&dsm, &headers) {
        return r;
    }
    let q: HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_owned(), crate::gcp::percent_decode(v)))
        })
        .collect();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return text(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000");
    }
    let offset = q
        .get("offset")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let mut objects: Vec<SObject> = dsm
        .objects
        .lock()
        .values()
        .filter(|o| q.get("group_id").is_none_or(|g| *g == o.group_id))
        .cloned()
        .collect();
    match q.get("sort").map(String::as_str) {
        None | Some("name:asc") => objects.sort_by(|a, b| a.name.cmp(&b.name)),
        Some("name:desc") => objects.sort_by(|a, b| b.name.cmp(&a.name)),
        Some(other) => return text(StatusCode::BAD_REQUEST, &format!("invalid sort {other}")),
    }
    let page: Vec<Value> = objects
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| view(o, false))
        .collect();
    axum::Json(page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn behaves_like_dsm() {
        let fake = FortanixFake::start().await.unwrap();
        let ca = std::fs::read(&fake.ca_file).unwrap();
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let url = |p: &str| format!("{}{p}", fake.server.url);
        let r = http
            .post(url("/sys/v1/session/auth"))
            .header("authorization", "Basic bad")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r: Value = http
            .post(url("/sys/v1/session/auth"))
            .header("authorization", format!("Basic {}", fake.config().api_key))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = r["access_token"].as_str().unwrap().to_owned();
        let post = |p: &str, b: Value| http.post(url(p)).bearer_auth(&t).json(&b).send();
        let body = json!({"obj_type": "OPAQUE", "name": "a", "key_ops": ["EXPORT"], "value": "aGk=", "enabled": true});
        assert_eq!(
            post("/crypto/v1/keys", body.clone())
                .await
                .unwrap()
                .status(),
            201
        );
        assert_eq!(post("/crypto/v1/keys", body).await.unwrap().status(), 409);
        let r: Value = post("/crypto/v1/keys/export", json!({"name": "a"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["value"], "aGk=");
        assert_eq!(
            post("/crypto/v1/keys/export", json!({"name": "b"}))
                .await
                .unwrap()
                .status(),
            404
        );
        fake.set_enabled("a", false);
        assert_eq!(
            post("/crypto/v1/keys/export", json!({"name": "a"}))
                .await
                .unwrap()
                .status(),
            400
        );
        for i in 0..5 {
            fake.insert(&format!("p{i}"), b"x", GROUP_ID);
        }
        let names = |v: Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|o| o["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let page: Value = http
            .get(url("/crypto/v1/keys?sort=name:asc&limit=2&offset=2"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(names(page), ["p1", "p2"]);
        let kid = fake.object("a").unwrap().kid;
        assert_eq!(
            http.delete(url(&format!("/crypto/v1/keys/{kid}")))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(
            http.delete(url(&format!("/crypto/v1/keys/{kid}")))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        fake.revoke_sessions();
        assert_eq!(
            post("/crypto/v1/keys/info", json!({"name": "p1"}))
                .await
                .unwrap()
                .status(),
            401
        );
    }
}
