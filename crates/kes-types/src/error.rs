//! KES's canonical error texts and the error a client sees.
//!
//! MinIO compares errors with `errors.Is` against kms-go's `Error{code, message}` values, so the
//! status and message of the canonical errors must match byte for byte.

use std::fmt;

/// Messages clients compare against. Keep them exactly as KES sends them.
pub mod msg {
    pub const NOT_ALLOWED: &str = "not authorized: insufficient permissions";
    pub const KEY_NOT_FOUND: &str = "key does not exist";
    pub const KEY_EXISTS: &str = "key already exists";
    pub const POLICY_NOT_FOUND: &str = "policy does not exist";
    pub const IDENTITY_NOT_FOUND: &str = "identity does not exist";
    pub const DECRYPT: &str = "decryption failed: ciphertext is not authentic";
    pub const INVALID_BODY: &str = "invalid request body";
    pub const INVALID_IMPORT_BODY: &str = "invalid import key request body";
    pub const NO_HMAC: &str = "key does not support HMAC";
    pub const CERT_REQUIRED: &str = "tls: client certificate is required";
    pub const MANY_CERTS: &str = "tls: received more than one client certificate";
    pub const TLS_REQUIRED: &str = "insecure connection: TLS is required";
    pub const GENERATE_FAILED: &str = "failed to generate encryption key";
    pub const ENCRYPT_FAILED: &str = "failed to encrypt plaintext";
    pub const DECRYPT_FAILED: &str = "failed to decrypt ciphertext";
    pub const CREATE_FAILED: &str = "failed to create key";
    pub const READ_FAILED: &str = "failed to read key";
    pub const DELETE_FAILED: &str = "failed to delete key";
    pub const LIST_FAILED: &str = "failed to list keys";
    pub const NOT_REACHABLE: &str = "key store is not reachable";
    pub const UNAVAILABLE: &str = "key store is unavailable";
    pub const BODY_TOO_LARGE: &str = "request body too large";
    pub const TIMEOUT: &str = "request timed out";
}

/// An error answer from a KES server: HTTP status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KesError {
    pub status: u16,
    pub message: String,
}

impl KesError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn key_not_found() -> Self {
        Self::new(404, msg::KEY_NOT_FOUND)
    }
    pub fn key_exists() -> Self {
        Self::new(400, msg::KEY_EXISTS)
    }
    pub fn not_allowed() -> Self {
        Self::new(403, msg::NOT_ALLOWED)
    }
    pub fn decrypt() -> Self {
        Self::new(400, msg::DECRYPT)
    }

    /// kms-go maps two legacy texts onto the canonical errors; do the same.
    pub fn is_key_exists(&self) -> bool {
        self.status == 400
            && (self.message == msg::KEY_EXISTS || self.message == "key does already exist")
    }
    pub fn is_key_not_found(&self) -> bool {
        self.status == 404 && self.message == msg::KEY_NOT_FOUND
    }
    pub fn is_not_allowed(&self) -> bool {
        self.status == 403
            && (self.message == msg::NOT_ALLOWED || self.message == "prohibited by policy")
    }

    /// The error body exactly as KES writes it: `{"message":` + Go-encoded string + `\n}`.
    pub fn body(&self) -> String {
        let mut out = String::with_capacity(self.message.len() + 16);
        out.push_str("{\"message\":");
        out.push_str(&crate::gojson::go_string(&self.message));
        out.push_str("\n}");
        out
    }
}

impl fmt::Display for KesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for KesError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_matches_kes() {
        assert_eq!(
            KesError::key_not_found().body(),
            "{\"message\":\"key does not exist\"\n}"
        );
        assert_eq!(
            KesError::new(400, "key name '<a>' is bad").body(),
            "{\"message\":\"key name '\\u003ca\\u003e' is bad\"\n}"
        );
    }

    #[test]
    fn legacy_texts_map() {
        assert!(KesError::new(400, "key does already exist").is_key_exists());
        assert!(KesError::new(403, "prohibited by policy").is_not_allowed());
        assert!(!KesError::new(500, msg::KEY_NOT_FOUND).is_key_not_found());
    }
}
