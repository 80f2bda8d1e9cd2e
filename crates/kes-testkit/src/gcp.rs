//! GCP Secret Manager for tests: drongo's server (PyPI `drongo`, from the services virtualenv)
//! serves the Secret Manager REST API, and an OAuth2 front end in this process stands before
//! it as Google's token endpoint and API gateway do. The front end generates a service
//! account (an RSA key) per run, verifies the RS256 JWT assertions signed with it (signature,
//! key id, issuer, audience, scope, issue and expiry times), issues access tokens with a
//! lifetime the test chooses, and forwards API requests to drongo only with a valid, unexpired
//! token (`401 UNAUTHENTICATED` otherwise).

use crate::fake::{error, FakeServer};
use crate::{free_port, service_bin, Proc};
use anyhow::{bail, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use kes_config::{GcpConfig, GcpCredentials};
use parking_lot::Mutex;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PROJECT: &str = "kes-test";
pub const CLIENT_EMAIL: &str = "kes@kes-test.iam.gserviceaccount.com";
pub const KEY_ID: &str = "0123456789abcdef";
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Auth {
    public_key: Vec<u8>,
    token_url: Mutex<String>,
    /// Lifetime of the access tokens issued from now on.
    lifetime: Mutex<Duration>,
    tokens: Mutex<HashMap<String, Instant>>,
    issued: AtomicU64,
    drongo: String,
    http: reqwest::Client,
}

/// drongo behind the OAuth2 front end.
pub struct Gcp {
    bin: PathBuf,
    dir: tempfile::TempDir,
    drongo_port: u16,
    drongo: Option<Proc>,
    /// The front end: the token endpoint at `/token`, the API everywhere else.
    pub front: FakeServer,
    auth: Arc<Auth>,
    /// The service account's private key, PKCS#8 PEM.
    pub private_key: String,
}

impl Gcp {
    /// A running server; `None` when the services are not installed and not required.
    pub async fn start() -> Option<Gcp> {
        let bin = service_bin("drongo")?;
        Some(Self::start_with(bin).await.expect("starting drongo"))
    }

    async fn start_with(bin: PathBuf) -> Result<Gcp> {
        let (private_key, public_key) = rsa_key()?;
        let drongo_port = free_port();
        let auth = Arc::new(Auth {
            public_key,
            token_url: Mutex::new(String::new()),
            lifetime: Mutex::new(Duration::from_secs(3600)),
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            drongo: format!("http://127.0.0.1:{drongo_port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        });
        let router = Router::new()
            .route("/token", post(token))
            .fallback(forward)
            .with_state(Arc::clone(&auth));
        let front = FakeServer::start(router, None).await?;
        *auth.token_url.lock() = format!("{}/token", front.url);
        let mut gcp = Gcp {
            bin,
            dir: tempfile::tempdir()?,
            drongo_port,
            drongo: None,
            front,
            auth,
            private_key,
        };
        gcp.spawn().await?;
        Ok(gcp)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = self.dir.path().join("drongo.log");
        let args = vec![
            "server".to_owned(),
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            self.drongo_port.to_string(),
        ];
        let mut proc = Proc::spawn(&log, &self.bin, &args)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = format!("{}/drongo/health", self.auth.drongo);
        loop {
            if self.auth.http.get(&health).send().await.is_ok() {
                break;
            }
            if !proc.is_running() || Instant::now() > deadline {
                bail!("drongo did not come up:\n{}", proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.drongo = Some(proc);
        Ok(())
    }

    /// drongo's process, for SIGSTOP/SIGCONT.
    pub fn drongo(&self) -> &Proc {
        self.drongo.as_ref().expect("drongo is running")
    }

    /// The store config for this server: the front end as endpoint and token endpoint.
    pub fn config(&self) -> GcpConfig {
        GcpConfig {
            project_id: PROJECT.to_owned(),
            endpoint: self.front.url.clone(),
            scopes: vec![kes_config::DEFAULT_GCP_SCOPE.to_owned()],
            credentials: Some(GcpCredentials {
                client_email: CLIENT_EMAIL.to_owned(),
                client_id: "1".to_owned(),
                private_key_id: KEY_ID.to_owned(),
                private_key: self.private_key.clone(),
                token_uri: self.auth.token_url.lock().clone(),
            }),
        }
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.auth.issued.load(Ordering::SeqCst)
    }

    /// Lifetime of the access tokens issued from now on.
    pub fn set_token_lifetime(&self, d: Duration) {
        *self.auth.lifetime.lock() = d;
    }

    /// Revokes every access token issued so far.
    pub fn revoke_tokens(&self) {
        self.auth.tokens.lock().clear();
    }

    /// A token for direct API calls in tests.
    pub fn test_token(&self) -> String {
        let t = format!("test-{}", rand::random::<u64>());
        self.auth
            .tokens
            .lock()
            .insert(t.clone(), Instant::now() + Duration::from_secs(3600));
        t
    }

    /// A direct API call through the front end: `(status, JSON body)`.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .auth
            .http
            .request(method, format!("{}{path}", self.front.url))
            .bearer_auth(self.test_token());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// A fresh RSA key: PKCS#8 PEM of the private key, PKCS#1 DER of the public key.
fn rsa_key() -> Result<(String, Vec<u8>)> {
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
    let private_key = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)?.to_string();
    let public_key = key.to_public_key().to_pkcs1_der()?.as_bytes().to_vec();
    Ok((private_key, public_key))
}

/// A service-account key the token endpoint does not know.
pub fn unknown_private_key() -> String {
    rsa_key().expect("an RSA key").0
}

fn unauthenticated(message: &str) -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        json!({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}}),
    )
}

fn oauth_error(code: &str, description: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        json!({"error": code, "error_description": description}),
    )
}

fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Google's token endpoint for the JWT-bearer grant.
async fn token(State(auth): State<Arc<Auth>>, body: Bytes) -> Response {
    let body = String::from_utf8_lossy(&body);
    if form_field(&body, "grant_type").as_deref()
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type", "Invalid grant_type");
    }
    let Some(jwt) = form_field(&body, "assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token",
        );
    };
    let decode =
        |p: &str| -> Option<Value> { serde_json::from_slice(&B64URL.decode(p).ok()?).ok() };
    let (Some(header), Some(claims), Ok(sig)) = (decode(h), decode(c), B64URL.decode(s)) else {
        return oauth_error("invalid_grant", "Invalid JWT: malformed");
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &auth.public_key,
    );
    if header["alg"] != "RS256" || key.verify(format!("{h}.{c}").as_bytes(), &sig).is_err() {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    }
    if header["kid"] != KEY_ID || claims["iss"] != CLIENT_EMAIL {
        return oauth_error("invalid_grant", "Invalid grant: account not found");
    }
    if claims["aud"].as_str() != Some(auth.token_url.lock().as_str()) {
        return oauth_error("invalid_grant", "Invalid JWT: aud claim");
    }
    if claims["scope"].as_str().is_none_or(|s| s.is_empty()) {
        return oauth_error("invalid_scope", "Empty or missing scope not allowed.");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    match (iat, exp) {
        (Some(iat), Some(exp)) if iat <= now + 60 && exp > now && exp - iat <= 3600 => {}
        _ => {
            return oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
            )
        }
    }
    let lifetime = *auth.lifetime.lock();
    let t = format!("ya29.{:032x}", rand::random::<u128>());
    auth.tokens
        .lock()
        .insert(t.clone(), Instant::now() + lifetime);
    auth.issued.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "access_token": t,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// The API: requires a valid bearer token, then forwards to drongo.
async fn forward(
    State(auth): State<Arc<Auth>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = bearer.is_some_and(|t| {
        auth.tokens
            .lock()
            .get(t)
            .is_some_and(|exp| Instant::now() < *exp)
    });
    if !valid {
        return unauthenticated(
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = auth
        .http
        .request(method, format!("{}{path}", auth.drongo))
        .body(body.to_vec());
    if let Some(ct) = headers.get("content-type") {
        req = req.header("content-type", ct.as_bytes());
    }
    match req.send().await {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"code": 503, "message": format!("backend unavailable: {e}"), "status": "UNAVAILABLE"}}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(percent_decode("a%20b+c%3A"), "a b c:");
        assert_eq!(
            form_field("x=1&assertion=a.b.c", "assertion").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(form_field("x=1", "y"), None);
    }
}
