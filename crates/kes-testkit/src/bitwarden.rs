//! A fake Bitwarden Secrets Manager (identity service and API on one server), written from
//! Bitwarden's public API documentation and security whitepaper (no emulator exists).
//!
//! What it models, as the service does:
//! * A machine account with an access token `0.<id>.<secret>:<seed>`. `POST /connect/token`
//!   (client credentials, scope `api.secrets`) answers a bearer token (a JWT whose payload
//!   names the `organization`), its `expires_in`, and `encrypted_payload`: the organisation's
//!   64-byte key as `{"encryptionKey"}`, encrypted as an `EncString` under the key derived
//!   from the seed. Wrong credentials or scope: 400 `invalid_client`/`invalid_scope`.
//!   Tokens expire after a lifetime the test sets and can be revoked (then 401).
//! * `GET /organizations/<org>/secrets` (ids, encrypted names, creation dates, projects; no
//!   values), `POST /organizations/<org>/secrets` (`key`, `value`, `note` must be type-2
//!   `EncString`s; `projectIds` must name the project; 400 otherwise), `GET /secrets/<id>`
//!   (404 `Resource not found.`), `POST /secrets/delete` (per-id results with `error` for
//!   missing ids), `GET /projects/<id>`. A wrong organisation is 404, as Bitwarden answers for
//!   resources the caller cannot see.
//!
//! Its `EncString` code is its own (not the store's), so the store's crypto is checked against
//! an independent implementation as well as against the known answers in its unit tests.

use crate::fake::{error, FakeServer};
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use kes_config::BitwardenConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub const ORG_ID: &str = "a7c2b1e0-0000-4000-8000-0000000000aa";
pub const PROJECT_ID: &str = "a7c2b1e0-0000-4000-8000-0000000000bb";
pub const OTHER_PROJECT_ID: &str = "a7c2b1e0-0000-4000-8000-0000000000cc";
pub const ACCESS_TOKEN_ID: &str = "a7c2b1e0-0000-4000-8000-0000000000dd";

type HmacSha256 = Hmac<Sha256>;

/// Encrypts as an `EncString` of type 2 under a 64-byte key.
pub fn encrypt(key: &[u8; 64], plaintext: &[u8]) -> String {
    let iv: [u8; 16] = rand::random();
    let ct = cbc::Encryptor::<aes::Aes256>::new(key[..32].into(), (&iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&key[32..]).expect("any key length");
    mac.update(&iv);
    mac.update(&ct);
    format!(
        "2.{}|{}|{}",
        B64.encode(iv),
        B64.encode(&ct),
        B64.encode(mac.finalize().into_bytes())
    )
}

/// Decrypts a type-2 `EncString`; `None` when malformed or not under `key`.
pub fn decrypt(key: &[u8; 64], enc: &str) -> Option<Vec<u8>> {
    let rest = enc.strip_prefix("2.")?;
    let parts: Vec<&str> = rest.split('|').collect();
    let [iv, ct, mac] = parts.as_slice() else {
        return None;
    };
    let (iv, ct, tag) = (
        B64.decode(iv).ok()?,
        B64.decode(ct).ok()?,
        B64.decode(mac).ok()?,
    );
    let mut m = <HmacSha256 as Mac>::new_from_slice(&key[32..]).ok()?;
    m.update(&iv);
    m.update(&ct);
    m.verify_slice(&tag).ok()?;
    cbc::Decryptor::<aes::Aes256>::new_from_slices(&key[..32], &iv)
        .ok()?
        .decrypt_padded_vec_mut::<Pkcs7>(&ct)
        .ok()
}

/// The key that opens a login's payload: HKDF-SHA256 (extract with the salt-less HMAC of
/// Bitwarden's shareable keys, expand with `sm-access-token`).
pub fn access_token_key(seed: &[u8; 16]) -> [u8; 64] {
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(b"bitwarden-accesstoken").expect("any key length");
    m.update(seed);
    let prk = m.finalize().into_bytes();
    let mut okm = [0u8; 64];
    let mut t: Vec<u8> = Vec::new();
    for (i, chunk) in okm.chunks_mut(32).enumerate() {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&prk).expect("any key length");
        m.update(&t);
        m.update(b"sm-access-token");
        m.update(&[i as u8 + 1]);
        t = m.finalize().into_bytes().to_vec();
        chunk.copy_from_slice(&t);
    }
    okm
}

#[derive(Clone, Debug)]
struct StoredSecret {
    key: String,
    value: String,
    note: String,
    project: String,
    created: String,
}

struct Bw {
    client_secret: String,
    seed: [u8; 16],
    org_key: [u8; 64],
    /// id -> secret.
    secrets: Mutex<BTreeMap<String, StoredSecret>>,
    tokens: Mutex<HashMap<String, Instant>>,
    lifetime: Mutex<Duration>,
    logins: AtomicU64,
    clock: AtomicU64,
}

/// The fake identity service and API.
pub struct BitwardenFake {
    pub server: FakeServer,
    bw: Arc<Bw>,
}

fn uuid() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl BitwardenFake {
    pub async fn start() -> Result<BitwardenFake> {
        let bw = Arc::new(Bw {
            client_secret: format!("{:030x}", rand::random::<u128>()),
            seed: rand::random(),
            org_key: {
                let mut k = [0u8; 64];
                k[..32].copy_from_slice(&rand::random::<[u8; 32]>());
                k[32..].copy_from_slice(&rand::random::<[u8; 32]>());
                k
            },
            secrets: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(HashMap::new()),
            lifetime: Mutex::new(Duration::from_secs(3600)),
            logins: AtomicU64::new(0),
            clock: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/connect/token", post(token))
            .route("/organizations/{org}/secrets", get(list).post(create))
            .route("/secrets/{id}", get(read))
            .route("/secrets/delete", post(delete))
            .route("/projects/{id}", get(project))
            .with_state(Arc::clone(&bw));
        let server = FakeServer::start(router, None).await?;
        Ok(BitwardenFake { server, bw })
    }

    /// The machine account's access token.
    pub fn access_token(&self) -> String {
        format!(
            "0.{ACCESS_TOKEN_ID}.{}:{}",
            self.bw.client_secret,
            B64.encode(self.bw.seed)
        )
    }

    pub fn config(&self) -> BitwardenConfig {
        BitwardenConfig {
            api_url: self.server.url.clone(),
            identity_url: self.server.url.clone(),
            organization_id: None,
            project_id: PROJECT_ID.to_owned(),
            access_token: self.access_token(),
        }
    }

    pub fn logins(&self) -> u64 {
        self.bw.logins.load(Ordering::SeqCst)
    }

    pub fn set_token_lifetime(&self, d: Duration) {
        *self.bw.lifetime.lock() = d;
    }

    pub fn revoke_tokens(&self) {
        self.bw.tokens.lock().clear();
    }

    /// Creates a secret as another client (the `bws` tool, the web vault) would; its id.
    pub fn insert(&self, name: &str, value: &str, project: &str) -> String {
        insert(
            &self.bw,
            encrypt(&self.bw.org_key, name.as_bytes()),
            encrypt(&self.bw.org_key, value.as_bytes()),
            project,
        )
    }

    /// Stores a secret whose name is not an `EncString` of this organisation's key.
    pub fn insert_foreign(&self, project: &str) -> String {
        let other = [9u8; 64];
        insert(
            &self.bw,
            encrypt(&other, b"foreign"),
            encrypt(&other, b"x"),
            project,
        )
    }

    /// Every secret: (id, decrypted name, decrypted value), oldest first.
    pub fn secrets(&self) -> Vec<(String, String, String)> {
        let mut all: Vec<(String, StoredSecret)> = self
            .bw
            .secrets
            .lock()
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.1.created.cmp(&b.1.created));
        all.into_iter()
            .filter_map(|(id, s)| {
                let name = String::from_utf8(decrypt(&self.bw.org_key, &s.key)?).ok()?;
                let value = String::from_utf8(decrypt(&self.bw.org_key, &s.value)?).ok()?;
                Some((id, name, value))
            })
            .collect()
    }

    /// The stored (encrypted) name and value of a secret.
    pub fn raw(&self, id: &str) -> Option<(String, String)> {
        self.bw
            .secrets
            .lock()
            .get(id)
            .map(|s| (s.key.clone(), s.value.clone()))
    }
}

fn insert(bw: &Bw, key: String, value: String, project: &str) -> String {
    let id = uuid();
    // A strictly increasing creation time, like the database's timestamps.
    let tick = bw.clock.fetch_add(1, Ordering::SeqCst);
    bw.secrets.lock().insert(
        id.clone(),
        StoredSecret {
            key,
            value,
            note: String::new(),
            project: project.to_owned(),
            created: format!("2026-01-01T00:00:00.{tick:07}Z"),
        },
    );
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

async fn token(State(bw): State<Arc<Bw>>, body: Bytes) -> Response {
    let f = form(&body);
    let invalid = |e: &str| {
        error(
            StatusCode::BAD_REQUEST,
            json!({"error": e, "error_description": e}),
        )
    };
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return invalid("unsupported_grant_type");
    }
    if f.get("client_id").map(String::as_str) != Some(ACCESS_TOKEN_ID)
        || f.get("client_secret") != Some(&bw.client_secret)
    {
        return invalid("invalid_client");
    }
    if f.get("scope").map(String::as_str) != Some("api.secrets") {
        return invalid("invalid_scope");
    }
    let lifetime = *bw.lifetime.lock();
    let claims = json!({"sub": ACCESS_TOKEN_ID, "organization": ORG_ID, "scope": ["api.secrets"], "client_id": ACCESS_TOKEN_ID});
    let t = format!(
        "{}.{}.{}",
        B64URL.encode(r#"{"alg":"RS256","typ":"at+jwt"}"#),
        B64URL.encode(claims.to_string()),
        B64URL.encode(rand::random::<[u8; 32]>())
    );
    bw.tokens
        .lock()
        .insert(t.clone(), Instant::now() + lifetime);
    bw.logins.fetch_add(1, Ordering::SeqCst);
    let payload = json!({"encryptionKey": B64.encode(bw.org_key)}).to_string();
    axum::Json(json!({
        "access_token": t,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
        "scope": "api.secrets",
        "encrypted_payload": encrypt(&access_token_key(&bw.seed), payload.as_bytes()),
    }))
    .into_response()
}

fn authorized(bw: &Bw, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = token.is_some_and(|t| bw.tokens.lock().get(t).is_some_and(|e| Instant::now() < *e));
    (!ok).then(|| StatusCode::UNAUTHORIZED.into_response())
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        json!({"message": "Resource not found.", "validationErrors": null, "exceptionMessage": null, "object": "error"}),
    )
}

fn bad_request(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        json!({"message": "The model state is invalid.", "validationErrors": {"": [message]}, "object": "error"}),
    )
}

fn is_enc_string(s: &str) -> bool {
    s.strip_prefix("2.")
        .is_some_and(|r| r.split('|').count() == 3 && r.split('|').all(|p| B64.decode(p).is_ok()))
}

fn view(id: &str, s: &StoredSecret, with_value: bool) -> Value {
    let mut v = json!({
        "id": id,
        "organizationId": ORG_ID,
        "key": s.key,
        "creationDate": s.created,
        "revisionDate": s.created,
        "projects": [{"id": s.project, "name": "kes"}],
        "read": true,
        "write": true,
        "object": "secret",
    });
    if with_value {
        v["value"] = json!(s.value);
        v["note"] = json!(s.note);
    }
    v
}

async fn list(State(bw): State<Arc<Bw>>, headers: HeaderMap, Path(org): Path<String>) -> Response {
    if let Some(r) = authorized(&bw, &headers) {
        return r;
    }
    if org != ORG_ID {
        return not_found();
    }
    let secrets: Vec<Value> = bw
        .secrets
        .lock()
        .iter()
        .map(|(id, s)| view(id, s, false))
        .collect();
    axum::Json(json!({"secrets": secrets, "projects": [{"id": PROJECT_ID, "name": "kes"}], "object": "SecretsWithProjectsList"}))
        .into_response()
}

async fn create(
    State(bw): State<Arc<Bw>>,
    headers: HeaderMap,
    Path(org): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = authorized(&bw, &headers) {
        return r;
    }
    if org != ORG_ID {
        return not_found();
    }
    let req = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let (Some(key), Some(value)) = (req["key"].as_str(), req["value"].as_str()) else {
        return bad_request("Key and Value are required.");
    };
    let note = req["note"].as_str().unwrap_or_default();
    if !is_enc_string(key) || !is_enc_string(value) || (!note.is_empty() && !is_enc_string(note)) {
        return bad_request("Key, Value and Note must be encrypted strings.");
    }
    if value.len() > 35_000 {
        return bad_request("Value exceeds 35000 characters.");
    }
    let project = match req["projectIds"].as_array().map(Vec::as_slice) {
        Some([p]) if p == PROJECT_ID || p == OTHER_PROJECT_ID => {
            p.as_str().unwrap_or_default().to_owned()
        }
        _ => {
            return bad_request(
                "A machine account must create secrets in exactly one project it can write to.",
            )
        }
    };
    let id = insert(&bw, key.to_owned(), value.to_owned(), &project);
    let mut secrets = bw.secrets.lock();
    if let Some(s) = secrets.get_mut(&id) {
        s.note = note.to_owned();
        return axum::Json(view(&id, s, true)).into_response();
    }
    not_found()
}

async fn read(State(bw): State<Arc<Bw>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = authorized(&bw, &headers) {
        return r;
    }
    match bw.secrets.lock().get(&id) {
        Some(s) => axum::Json(view(&id, s, true)).into_response(),
        None => not_found(),
    }
}

async fn delete(State(bw): State<Arc<Bw>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = authorized(&bw, &headers) {
        return r;
    }
    let Ok(ids) = serde_json::from_slice::<Vec<String>>(&body) else {
        return bad_request("A list of ids is required.");
    };
    let mut secrets = bw.secrets.lock();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| match secrets.remove(id) {
            Some(_) => json!({"id": id, "error": null}),
            None => json!({"id": id, "error": "Secret not found."}),
        })
        .collect();
    axum::Json(json!({"data": data, "continuationToken": null, "object": "list"})).into_response()
}

async fn project(
    State(bw): State<Arc<Bw>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = authorized(&bw, &headers) {
        return r;
    }
    if id != PROJECT_ID && id != OTHER_PROJECT_ID {
        return not_found();
    }
    axum::Json(json!({"id": id, "organizationId": ORG_ID, "name": "kes", "object": "project"}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same known answers the store's unit tests use, computed with Python's
    /// `cryptography`, so the fake's crypto is checked independently too.
    #[test]
    fn known_answers() {
        let seed: [u8; 16] = core::array::from_fn(|i| i as u8);
        let hex: String = access_token_key(&seed)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "565621a407eea6fe20ca2b3b6518635fa1ba327c3f010dc8e522a29e4c93d14b8a18e3c2c6f3b33cc8e7f2b0a4ede285ee766ab9dbb76d35fe01104269ad0f99");
        let key: [u8; 64] = core::array::from_fn(|i| 64 + i as u8);
        let hello = "2.AAECAwQFBgcICQoLDA0ODw==|MRbj6jMaA3h4nnXJgmJ+cA==|48DZN18zrS1zUS0CCNyekILonkCKvtmlYXbjs31WC4s=";
        assert_eq!(decrypt(&key, hello).unwrap(), b"hello kes");
        assert_eq!(
            decrypt(&key, &encrypt(&key, b"round trip")).unwrap(),
            b"round trip"
        );
        assert!(decrypt(&[0u8; 64], hello).is_none());
    }

    #[tokio::test]
    async fn behaves_like_secrets_manager() {
        let fake = BitwardenFake::start().await.unwrap();
        let http = reqwest::Client::new();
        let url = |p: &str| format!("{}{p}", fake.server.url);
        let login = |secret: &str| {
            http.post(url("/connect/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("scope=api.secrets&client_id={ACCESS_TOKEN_ID}&client_secret={secret}&grant_type=client_credentials"))
                .send()
        };
        let r = login("wrong").await.unwrap();
        assert_eq!(r.status(), 400);
        let r: Value = login(&fake.bw.client_secret)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let payload = decrypt(
            &access_token_key(&fake.bw.seed),
            r["encrypted_payload"].as_str().unwrap(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            B64.decode(v["encryptionKey"].as_str().unwrap()).unwrap(),
            fake.bw.org_key
        );
        let t = r["access_token"].as_str().unwrap().to_owned();
        // Plaintext is refused; EncStrings are stored.
        let r = http
            .post(url(&format!("/organizations/{ORG_ID}/secrets")))
            .bearer_auth(&t)
            .json(&json!({"key": "plain", "value": "plain", "projectIds": [PROJECT_ID]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let k = &fake.bw.org_key;
        let r: Value = http.post(url(&format!("/organizations/{ORG_ID}/secrets"))).bearer_auth(&t).json(&json!({"key": encrypt(k, b"n"), "value": encrypt(k, b"v"), "note": "", "projectIds": [PROJECT_ID]})).send().await.unwrap().json().await.unwrap();
        let id = r["id"].as_str().unwrap().to_owned();
        let r: Value = http
            .get(url(&format!("/secrets/{id}")))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(decrypt(k, r["value"].as_str().unwrap()).unwrap(), b"v");
        let r: Value = http
            .get(url(&format!("/organizations/{ORG_ID}/secrets")))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(r["secrets"][0].get("value").is_none());
        assert_eq!(
            http.get(url("/organizations/other/secrets"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        let r: Value = http
            .post(url("/secrets/delete"))
            .bearer_auth(&t)
            .json(&json!([id, "missing"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(r["data"][0]["error"].is_null());
        assert_eq!(r["data"][1]["error"], "Secret not found.");
        assert_eq!(
            http.get(url(&format!("/secrets/{id}")))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        fake.revoke_tokens();
        assert_eq!(
            http.get(url(&format!("/projects/{PROJECT_ID}")))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
}
