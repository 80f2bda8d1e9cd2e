//! The route handlers. Each gets the authenticated caller, the resource name and the (bounded)
//! body, and returns a response or an `ApiError`.

use crate::error::ApiError;
use crate::routes::{RouteId, MAX_BULK_ITEMS};
use crate::App;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use kes_types::wire::*;
use kes_types::{list_prefix, to_go_json_line, valid_name, valid_pattern, Bytes64, GoTime};
use serde::Serialize;
use std::collections::BTreeMap;

/// A 200 answer with KES's JSON encoding.
pub fn json<T: Serialize>(value: &T) -> Response {
    let body = to_go_json_line(value);
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON answer whose fields are all byte strings (the crypto routes), written directly (see
/// [`kes_types::b64::json_line`]); the same bytes [`json`] gives for the wire types.
pub fn bytes_json(fields: &[(&'static str, &[u8])]) -> Response {
    let mut resp = Response::new(Body::from(kes_types::b64::json_line(fields)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// KES's empty success: 200, `Content-Length: 0`, no content type.
pub fn empty() -> Response {
    let mut resp = Response::new(Body::empty());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// A key name from a route's resource, or KES's error for an invalid one.
pub(crate) fn key_name(resource: &str) -> Result<&str, ApiError> {
    if valid_name(resource) {
        Ok(resource)
    } else {
        Err(ApiError::InvalidKeyName(resource.to_owned()))
    }
}

/// A policy name from a route's resource, or KES's error for an invalid one.
pub(crate) fn policy_name(resource: &str) -> Result<&str, ApiError> {
    if valid_name(resource) {
        Ok(resource)
    } else {
        Err(ApiError::InvalidPolicyName(resource.to_owned()))
    }
}

fn pattern(resource: &str) -> Result<&str, ApiError> {
    if valid_pattern(resource) {
        Ok(list_prefix(resource))
    } else {
        Err(ApiError::InvalidPattern(resource.to_owned()))
    }
}

/// Decodes an optional JSON body: an empty body is the zero value, as KES only parses bodies
/// with a positive Content-Length.
fn decode<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)
}

/// The caller as seen by a handler.
pub struct Caller<'a> {
    pub identity: &'a str,
}

pub async fn handle(
    app: &App,
    route: RouteId,
    caller: Caller<'_>,
    resource: &str,
    query: Option<&str>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use RouteId::*;
    // The crypto routes are nearly every request: their future stays small and is polled in
    // place. Every other route's state (lists, policies, logs, admin, with their awaits) lives
    // in a boxed future of its own, so a generate does not carry, move and initialise
    // kilobytes of state it never uses.
    match route {
        KeyGenerate => {
            let name = key_name(resource)?;
            let req: GenerateRequest = decode(&body)?;
            with_key(app, name, |key| {
                let (plaintext, ciphertext) = key
                    .version
                    .key
                    .generate_data_key(&req.context.0)
                    .map_err(|_| ApiError::Internal(kes_types::msg::GENERATE_FAILED))?;
                // The response body is the only copy of the data key that leaves this
                // function (`plaintext` wipes itself).
                Ok(bytes_json(&[
                    ("plaintext", plaintext.as_ref()),
                    ("ciphertext", &ciphertext),
                ]))
            })
            .await
        }
        KeyEncrypt => {
            let name = key_name(resource)?;
            let req: EncryptRequest = decode(&body)?;
            with_key(app, name, |key| {
                let ciphertext = key.version.key.encrypt(&req.plaintext.0, &req.context.0);
                Ok(bytes_json(&[("ciphertext", &ciphertext)]))
            })
            .await
        }
        KeyDecrypt => {
            let name = key_name(resource)?;
            let req: DecryptRequest = decode(&body)?;
            with_key(app, name, |key| {
                let plaintext = key
                    .version
                    .key
                    .decrypt(&req.ciphertext.0, &req.context.0)
                    .map_err(|_| ApiError::Decrypt)?;
                Ok(bytes_json(&[("plaintext", &plaintext)]))
            })
            .await
        }
        KeyHmac => {
            let name = key_name(resource)?;
            let req: HmacRequest = decode(&body)?;
            with_key(app, name, |key| {
                let mac_key = key.version.hmac_key.as_ref().ok_or(ApiError::NoHmac)?;
                Ok(bytes_json(&[("hmac", &mac_key.mac(&req.message.0))]))
            })
            .await
        }
        _ => Box::pin(handle_other(app, route, caller, resource, query, body)).await,
    }
}

/// Runs `op` on key `name`: on this thread's view of the replica when the key is served as it
/// is (`Cluster::with_fresh`, nearly every request), else after `Cluster::get` did what the key
/// needs (a keystore read, a re-confirmation, the offline rules).
async fn with_key(
    app: &App,
    name: &str,
    op: impl Fn(&kes_cluster::CachedKey) -> Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    if let Some(answer) = app.cluster.with_fresh(name, &op) {
        return answer;
    }
    let key = app.cluster.get(name).await?;
    op(&key)
}

async fn handle_other(
    app: &App,
    route: RouteId,
    caller: Caller<'_>,
    resource: &str,
    query: Option<&str>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use RouteId::*;
    match route {
        // Served by `handle` itself.
        KeyGenerate | KeyEncrypt | KeyDecrypt | KeyHmac => Err(ApiError::NoRoute),
        Version => Ok(json(&VersionResponse {
            version: crate::VERSION.to_owned(),
            commit: crate::COMMIT.to_owned(),
        })),
        Ready => app.ready().await.map(|()| empty()),
        Status => Ok(json(&app.status().await)),
        Metrics => {
            let mut resp = Response::new(Body::from(app.metrics.render()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        Api => {
            let list: Vec<ApiDescription> = app
                .routes
                .all()
                .iter()
                .map(|r| ApiDescription {
                    method: r.method.to_owned(),
                    path: r.path.to_owned(),
                    max_body: r.max_body,
                    timeout: r.timeout.as_secs(),
                })
                .collect();
            Ok(json(&list))
        }
        KeyDescribe => {
            let name = key_name(resource)?;
            let key = app.cluster.describe(name).await?;
            Ok(json(&DescribeKeyResponse {
                name: name.to_owned(),
                algorithm: key.version.key.kind().as_str().to_owned(),
                created_at: key.version.created_at_or_zero(),
                created_by: key.version.created_by.clone(),
            }))
        }
        KeyList => {
            let prefix = pattern(resource)?;
            let continue_at = query_param(query, "continue_at").unwrap_or_default();
            let page = app.cluster.list(prefix, &continue_at).await?;
            Ok(json(&ListKeysResponse {
                names: page.names,
                continue_at: page.continue_at,
            }))
        }
        KeyBulkDecrypt => {
            let name = key_name(resource)?;
            let reqs: Vec<DecryptRequest> = if body.is_empty() {
                Vec::new()
            } else {
                serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?
            };
            if reqs.len() > MAX_BULK_ITEMS {
                return Err(ApiError::InvalidBody);
            }
            let key = app.cluster.get(name).await?;
            let mut out = Vec::with_capacity(reqs.len());
            for r in &reqs {
                let p = key
                    .version
                    .key
                    .decrypt(&r.ciphertext.0, &r.context.0)
                    .map_err(|_| ApiError::Decrypt)?;
                out.push(DecryptResponse {
                    plaintext: Bytes64(p.to_vec()),
                });
            }
            Ok(json(&out))
        }
        PolicyDescribe | PolicyRead => {
            policy_name(resource)?;
            let access = app.access.load();
            let p = access.policy(resource).ok_or(ApiError::PolicyNotFound)?;
            if route == PolicyDescribe {
                return Ok(json(&DescribePolicyResponse {
                    name: p.name.clone(),
                    created_at: app.started,
                    created_by: app.admin.clone(),
                }));
            }
            Ok(json(&ReadPolicyResponse {
                name: p.name.clone(),
                allow: rules(&p.policy.allow),
                deny: rules(&p.policy.deny),
                created_at: app.started,
                created_by: app.admin.clone(),
            }))
        }
        PolicyList => {
            let prefix = pattern(resource)?;
            Ok(json(&ListPoliciesResponse {
                names: app.access.load().policy_names(prefix),
                continue_at: String::new(),
            }))
        }
        IdentityDescribe => {
            if resource.is_empty() || resource.len() > 1024 {
                return Err(ApiError::InvalidIdentity(resource.to_owned()));
            }
            let access = app.access.load();
            if access.is_admin(resource) {
                return Ok(json(&DescribeIdentityResponse {
                    policy: String::new(),
                    admin: true,
                    created_at: app.started,
                    created_by: String::new(),
                }));
            }
            let p = access
                .policy_of(resource)
                .ok_or(ApiError::IdentityNotFound)?;
            Ok(json(&DescribeIdentityResponse {
                policy: p.name.clone(),
                admin: false,
                created_at: app.started,
                created_by: app.admin.clone(),
            }))
        }
        IdentityList => {
            let prefix = pattern(resource)?;
            Ok(json(&ListIdentitiesResponse {
                identities: app.access.load().identity_names(prefix),
                continue_at: String::new(),
            }))
        }
        SelfDescribe => {
            let access = app.access.load();
            if access.is_admin(caller.identity) {
                return Ok(json(&SelfDescribeResponse {
                    identity: caller.identity.to_owned(),
                    admin: true,
                    created_at: app.started,
                    created_by: String::new(),
                    policy: String::new(),
                    allow: BTreeMap::new(),
                    deny: BTreeMap::new(),
                }));
            }
            let p = access
                .policy_of(caller.identity)
                .ok_or(ApiError::IdentityNotFound)?;
            Ok(json(&SelfDescribeResponse {
                identity: caller.identity.to_owned(),
                admin: false,
                created_at: app.started,
                created_by: app.admin.clone(),
                policy: p.name.clone(),
                allow: rules(&p.policy.allow),
                deny: rules(&p.policy.deny),
            }))
        }
        ClusterStatus | ClusterLeader | ClusterSnapshot | ClusterMetrics | ClusterBackup => {
            crate::admin::handle(app, route, resource).await
        }
        // Writes run on the leader (`crate::writes`), never through here.
        KeyCreate | KeyImport | KeyDelete | PolicyWrite | PolicyAssign | PolicyDelete
        | IdentityDelete | ClusterAdd | ClusterRemove => {
            Err(ApiError::Internal("write routed as a read"))
        }
        LogError => Ok(stream(app.logs.subscribe_error())),
        LogAudit => Ok(stream(app.logs.subscribe_audit())),
    }
}

fn rules(patterns: &[String]) -> BTreeMap<String, Rule> {
    patterns.iter().map(|p| (p.clone(), Rule {})).collect()
}

/// First 8 characters of an identity, for logs.
pub fn short(identity: &str) -> &str {
    identity.get(..8).unwrap_or(identity)
}

/// A query parameter's percent-decoded value.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// An ND-JSON stream that lasts until the client goes away.
fn stream(rx: tokio::sync::broadcast::Receiver<std::sync::Arc<[u8]>>) -> Response {
    use futures_util::stream::unfold;
    let s = unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => {
                    return Some((Ok::<_, std::io::Error>(Bytes::copy_from_slice(&line)), rx))
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(s));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// Used by `GoTime` consumers that need "now" for the start time.
pub fn now() -> GoTime {
    GoTime::now_utc()
}
