//! The one place where failures become HTTP answers.
//!
//! Every handler returns `ApiError`; its status and message are chosen here and nowhere else.
//! Canonical errors are byte-exact with KES, because MinIO matches them with `errors.Is`, and the
//! choice between 4xx and 5xx decides whether clients fail over to another node: only definitive
//! answers are 4xx.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use kes_keystore::StoreError;
use kes_types::{msg, KesError};

pub use kes_cluster::StoreOp;
use kes_cluster::{ClusterError, Refusal};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("key does not exist")]
    KeyNotFound,
    #[error("key already exists")]
    KeyExists,
    #[error("not authorized")]
    NotAllowed,
    #[error("policy does not exist")]
    PolicyNotFound,
    #[error("identity does not exist")]
    IdentityNotFound,
    #[error("decryption failed")]
    Decrypt,
    #[error("invalid key name")]
    InvalidKeyName(String),
    #[error("invalid policy name")]
    InvalidPolicyName(String),
    #[error("invalid identity")]
    InvalidIdentity(String),
    #[error("invalid listing pattern")]
    InvalidPattern(String),
    #[error("invalid request body")]
    InvalidBody,
    #[error("invalid import request body")]
    InvalidImportBody,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("key does not support hmac")]
    NoHmac,
    #[error("client certificate required")]
    CertRequired,
    #[error("more than one client certificate")]
    ManyCerts,
    #[error("method not allowed")]
    MethodNotAllowed { got: String, want: &'static str },
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm(String),
    #[error("invalid key size")]
    InvalidKeySize(String),
    #[error("keystore {op:?} failed: {err}")]
    Store { op: StoreOp, err: StoreError },
    #[error("request timed out")]
    Timeout,
    /// The request body did not arrive within `limits.body_timeout`.
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("keystore not reachable")]
    NotReachable,
    #[error("keystore unavailable")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The node does not have the cluster cache key yet.
    #[error("node is sealed")]
    Sealed,
    /// No leader or no quorum reachable, or this node is cut off from the majority.
    #[error("cluster unavailable")]
    ClusterUnavailable,
    /// The keystore changed (a create or a delete) but the cluster did not commit the change
    /// yet; a background task is settling it.
    #[error("keystore {0:?} done but not committed")]
    PartialWrite(StoreOp),
    #[error("reserved key name")]
    ReservedName(String),
    /// Admin-only routes.
    #[error("admin only")]
    AdminOnly,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A leadership transfer that did not happen; a 503, so the operator tries again.
    #[error("leadership transfer failed: {0}")]
    TransferFailed(String),
    /// An unknown path; answered with Go's plain-text 404, not JSON.
    #[error("page not found")]
    NoRoute,
    /// The leader's answer to a write this node forwarded: its status and message, made by
    /// the leader's `to_kes`.
    #[error("refused by the leader: {}", .0.message)]
    Refused(Refusal),
}

/// The cluster's failures as the client sees them. The cluster says what happened; which
/// status that is (a definitive 4xx, or a 5xx that sends clients to another node) is decided
/// here.
impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::KeyNotFound => Self::KeyNotFound,
            ClusterError::KeyExists => Self::KeyExists,
            ClusterError::ReservedName(n) => Self::ReservedName(n),
            ClusterError::Sealed => Self::Sealed,
            ClusterError::CutOff | ClusterError::NoLeader => Self::ClusterUnavailable,
            ClusterError::NotCommitted(_) => Self::Unavailable,
            ClusterError::Transfer(m) => Self::TransferFailed(m),
            // Not a definitive 404: clients should try elsewhere or later.
            ClusterError::KmsUnreachable => Self::NotReachable,
            ClusterError::Store { op, err } => Self::store(op, err),
            ClusterError::Indeterminate(op) => Self::PartialWrite(op),
            ClusterError::Invalid(m) => Self::BadRequest(m),
            ClusterError::Internal(m) => Self::Internal(m),
        }
    }
}

impl ApiError {
    pub fn store(op: StoreOp, err: StoreError) -> Self {
        match err {
            StoreError::NotFound if op != StoreOp::Create => Self::KeyNotFound,
            StoreError::AlreadyExists if op == StoreOp::Create => Self::KeyExists,
            err => Self::Store { op, err },
        }
    }

    /// Status and message as the client sees them.
    pub fn to_kes(&self) -> KesError {
        let e = |status: u16, m: &str| KesError::new(status, m);
        match self {
            Self::KeyNotFound => e(404, msg::KEY_NOT_FOUND),
            Self::KeyExists => e(400, msg::KEY_EXISTS),
            Self::NotAllowed => e(403, msg::NOT_ALLOWED),
            Self::PolicyNotFound => e(404, msg::POLICY_NOT_FOUND),
            Self::IdentityNotFound => e(404, msg::IDENTITY_NOT_FOUND),
            Self::Decrypt => e(400, msg::DECRYPT),
            Self::InvalidKeyName(n) => KesError::new(
                400,
                format!("key name '{n}' is empty, too long or contains invalid characters"),
            ),
            Self::InvalidPolicyName(n) => KesError::new(
                400,
                format!("policy name '{n}' is empty, too long or contains invalid characters"),
            ),
            Self::InvalidIdentity(n) => KesError::new(
                400,
                format!("identity '{n}' is empty, too long or contains invalid characters"),
            ),
            Self::InvalidPattern(p) => KesError::new(
                400,
                format!("listing pattern '{p}' is empty, too long or is invalid"),
            ),
            Self::InvalidBody => e(400, msg::INVALID_BODY),
            Self::InvalidImportBody => e(400, msg::INVALID_IMPORT_BODY),
            Self::BodyTooLarge => e(413, msg::BODY_TOO_LARGE),
            Self::NoHmac => e(409, msg::NO_HMAC),
            Self::CertRequired => e(400, msg::CERT_REQUIRED),
            Self::ManyCerts => e(400, msg::MANY_CERTS),
            Self::MethodNotAllowed { got, want } => {
                KesError::new(405, format!("received method '{got}' expected '{want}'"))
            }
            Self::UnsupportedAlgorithm(c) => {
                KesError::new(406, format!("algorithm '{c}' is not supported"))
            }
            Self::InvalidKeySize(c) => KesError::new(406, format!("invalid key size for '{c}'")),
            Self::Store { op, err } => {
                let m = match op {
                    StoreOp::Create => msg::CREATE_FAILED,
                    StoreOp::Read => msg::READ_FAILED,
                    StoreOp::Delete => msg::DELETE_FAILED,
                    StoreOp::List => msg::LIST_FAILED,
                };
                // A backend's definitive refusal is still not the client's fault in KES's
                // model; every store failure is a 502 so clients try another node.
                let _ = err;
                e(502, m)
            }
            Self::Timeout => e(503, msg::TIMEOUT),
            Self::BodyTimeout => e(408, "request body not received in time"),
            Self::NotReachable => e(504, msg::NOT_REACHABLE),
            Self::Unavailable => e(502, msg::UNAVAILABLE),
            Self::Internal(m) => e(500, m),
            Self::Sealed => e(
                503,
                "node is sealed: the cluster cache key is not available yet",
            ),
            Self::TransferFailed(m) => KesError::new(503, m.clone()),
            Self::ClusterUnavailable => e(
                503,
                "cluster unavailable: no leader or no quorum reachable from this node",
            ),
            // 5xx, so clients retry (a retried delete finds nothing and commits the tombstone; a
            // retried create answers "key already exists").
            Self::PartialWrite(StoreOp::Delete) => e(
                503,
                "key deleted in the keystore; the cluster cache is being updated",
            ),
            Self::PartialWrite(_) => e(
                503,
                "key created in the keystore; the cluster cache is being updated",
            ),
            Self::ReservedName(n) => KesError::new(400, format!("key name '{n}' is reserved")),
            Self::AdminOnly => e(403, msg::NOT_ALLOWED),
            Self::BadRequest(m) => KesError::new(400, m.clone()),
            Self::NoRoute => e(404, "404 page not found"),
            Self::Refused(r) => KesError::new(r.status, r.message.clone()),
        }
    }
}

/// Builds KES's error response: JSON body `{"message":"..."\n}` with an explicit length.
pub fn error_response(err: &KesError) -> Response {
    let body = err.body();
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(body.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::NoRoute => {
                let body = "404 page not found\n";
                let mut resp = Response::new(Body::from(body));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                h.insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                resp
            }
            Self::MethodNotAllowed { want, .. } => {
                let mut resp = error_response(&self.to_kes());
                resp.headers_mut()
                    .insert(header::ACCEPT, HeaderValue::from_static(want));
                resp
            }
            other => error_response(&other.to_kes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster's failures get the statuses that make clients do the right thing: 4xx only
    /// for definitive answers, 503/504/502 where another node or a retry may succeed.
    #[test]
    fn cluster_errors_map_to_statuses() {
        let status = |e: ClusterError| ApiError::from(e).to_kes().status;
        assert_eq!(status(ClusterError::KeyNotFound), 404);
        assert_eq!(status(ClusterError::KeyExists), 400);
        assert_eq!(status(ClusterError::ReservedName("x".into())), 400);
        assert_eq!(status(ClusterError::Sealed), 503);
        assert_eq!(status(ClusterError::CutOff), 503);
        assert_eq!(status(ClusterError::NoLeader), 503);
        assert_eq!(status(ClusterError::NotCommitted("lost".into())), 502);
        assert_eq!(status(ClusterError::KmsUnreachable), 504);
        assert_eq!(
            status(ClusterError::store(
                StoreOp::Read,
                StoreError::unavailable(true, "down")
            )),
            502
        );
        assert_eq!(
            status(ClusterError::store(StoreOp::Read, StoreError::NotFound)),
            404
        );
        assert_eq!(status(ClusterError::Invalid("no".into())), 400);
        assert_eq!(status(ClusterError::Transfer("no".into())), 503);
        assert_eq!(status(ClusterError::Internal("bug")), 500);
        let partial = ApiError::from(ClusterError::Indeterminate(StoreOp::Delete)).to_kes();
        assert_eq!(
            (partial.status, partial.message.as_str()),
            (
                503,
                "key deleted in the keystore; the cluster cache is being updated"
            )
        );
        // A leader's refusal reaches the client as the leader made it.
        let refused = ApiError::Refused(Refusal {
            status: 403,
            message: "not authorized: insufficient permissions".into(),
        })
        .to_kes();
        assert_eq!(refused.status, 403);
        assert_eq!(refused.body(), ApiError::NotAllowed.to_kes().body());
    }
}
