//! The value every keystore holds for a key name, in KES's encodings.
//!
//! Current KES writes `base64(protobuf miniohq.kms.KeyVersion)`; releases before 2024-02-29 wrote
//! JSON documents, which carry no HMAC key. Both are read, so a keystore populated by any KES
//! release can be served.

use kes_types::GoTime;
use zeroize::Zeroizing;

use crate::gojson::{self, Kind, Value};
use crate::key::{HmacKey, KeyType, SecretKey};

const KEY_LEN: usize = 32;
/// `miniohq.kms.HMACKey.Hash` for SHA-256.
const HASH_SHA256: u32 = 1;
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// The key material stored under one key name, with its provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    pub key: SecretKey,
    /// Absent for keys created before KES had HMAC keys; `/v1/key/hmac` answers 409 for those.
    pub hmac_key: Option<HmacKey>,
    /// Absent only for legacy JSON documents that did not record it.
    pub created_at: Option<GoTime>,
    /// The identity that created the key; empty when unknown.
    pub created_by: String,
}

/// A stored key value that is not a valid KES key encoding.
///
/// Variants carry lengths and codes, never bytes of the document, since those are key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    #[error("invalid key: malformed legacy JSON document")]
    Json,
    #[error("invalid key: not valid base64")]
    Base64,
    #[error("invalid key: malformed protobuf: {reason}")]
    Protobuf { reason: String },
    #[error("invalid key: secret key is missing")]
    MissingSecretKey,
    #[error("invalid key: secret key is {len} bytes, want 32")]
    SecretKeyLength { len: usize },
    #[error("invalid key: unknown secret key type {code}")]
    SecretKeyType { code: u32 },
    #[error("invalid key: unknown algorithm '{name}'")]
    Algorithm { name: String },
    #[error("invalid key: HMAC key is missing")]
    MissingHmacKey,
    #[error("invalid key: HMAC key is {len} bytes, want 32")]
    HmacKeyLength { len: usize },
    #[error("invalid key: unknown HMAC hash {code}")]
    HmacHash { code: u32 },
}

impl KeyVersion {
    /// A new random key of `kind` with its own random HMAC key, created now.
    pub fn generate(kind: KeyType, created_by: &str) -> Self {
        Self {
            key: SecretKey::generate(kind),
            hmac_key: Some(HmacKey::generate()),
            created_at: Some(GoTime::now_utc()),
            created_by: created_by.to_owned(),
        }
    }

    /// Wraps imported key bytes; the HMAC key is always fresh because it is never imported.
    pub fn import(kind: KeyType, bytes: [u8; KEY_LEN], created_by: &str) -> Self {
        Self {
            key: SecretKey::new(kind, bytes),
            hmac_key: Some(HmacKey::generate()),
            created_at: Some(GoTime::now_utc()),
            created_by: created_by.to_owned(),
        }
    }

    pub fn created_at_or_zero(&self) -> GoTime {
        self.created_at.unwrap_or_else(GoTime::zero)
    }

    /// Encodes the key for a keystore, as ASCII text without a trailing newline.
    ///
    /// A key with an HMAC key becomes `base64(protobuf KeyVersion)`, byte for byte what KES writes
    /// (a missing `created_at` is written as Go's zero time, as KES would). KES cannot encode a key
    /// without an HMAC key; such a key came from a legacy JSON document and is written back as
    /// one (`bytes`, `algorithm`, `created_at` if known, `created_by`), which both KES and
    /// [`KeyVersion::parse`] read as the same key, still without an HMAC key.
    pub fn encode(&self) -> Vec<u8> {
        match &self.hmac_key {
            Some(hmac_key) => self.encode_protobuf(hmac_key),
            None => self.encode_legacy_json(),
        }
    }

    fn encode_protobuf(&self, hmac_key: &HmacKey) -> Vec<u8> {
        let nanos = self.created_at_or_zero().unix_nanos();
        let message = pb::KeyVersion {
            key: Some(pb::SecretKey {
                key: self.key.secret_bytes().to_vec(),
                r#type: self.key.kind().proto_code(),
            }),
            hmac_key: Some(pb::HmacKey {
                key: hmac_key.secret_bytes().to_vec(),
                hash: HASH_SHA256,
            }),
            created_at: Some(pb::Timestamp {
                // Lossless: `GoTime` spans years -9999..=9999, far inside i64 seconds, and the
                // Euclidean remainder is in 0..1e9 as protobuf requires.
                seconds: nanos.div_euclid(NANOS_PER_SEC) as i64,
                nanos: nanos.rem_euclid(NANOS_PER_SEC) as i32,
            }),
            created_by: self.created_by.clone(),
        };
        let raw = Zeroizing::new(prost::Message::encode_to_vec(&message));
        kes_types::b64::encode(&raw).into_bytes()
    }

    fn encode_legacy_json(&self) -> Vec<u8> {
        let algorithm = match self.key.kind() {
            KeyType::Aes256 => "AES256-GCM_SHA256",
            KeyType::ChaCha20 => "XCHACHA20-POLY1305",
        };
        let key = Zeroizing::new(kes_types::b64::encode(self.key.secret_bytes()));
        let created_by = ascii_json_string(&self.created_by);
        let created_at = self
            .created_at
            .map(|t| format!(r#""created_at":"{t}","#))
            .unwrap_or_default();
        // Assembled by hand into one exactly sized buffer so no stray copy of the key text is
        // left behind by reallocation.
        let parts = [
            r#"{"bytes":""#,
            key.as_str(),
            r#"","algorithm":""#,
            algorithm,
            r#"","#,
            created_at.as_str(),
            r#""created_by":"#,
            created_by.as_str(),
            "}",
        ];
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    /// Parses a stored key value: legacy JSON if the bytes are valid JSON (as KES decides),
    /// otherwise base64 protobuf, which must carry a 32-byte AES256 or ChaCha20 key and a 32-byte
    /// SHA-256 HMAC key.
    pub fn parse(stored: &[u8]) -> Result<KeyVersion, KeyDecodeError> {
        if gojson::valid(stored) {
            return parse_legacy_json(stored);
        }
        let text = std::str::from_utf8(stored).map_err(|_| KeyDecodeError::Base64)?;
        let raw = Zeroizing::new(kes_types::b64::decode(text).map_err(|_| KeyDecodeError::Base64)?);
        let message = <pb::KeyVersion as prost::Message>::decode(raw.as_slice()).map_err(|e| {
            KeyDecodeError::Protobuf {
                reason: e.to_string(),
            }
        })?;

        let secret = message
            .key
            .as_ref()
            .ok_or(KeyDecodeError::MissingSecretKey)?;
        let bytes = key_bytes(&secret.key).ok_or(KeyDecodeError::SecretKeyLength {
            len: secret.key.len(),
        })?;
        let kind =
            KeyType::from_proto_code(secret.r#type).ok_or(KeyDecodeError::SecretKeyType {
                code: secret.r#type,
            })?;

        let hmac = message
            .hmac_key
            .as_ref()
            .ok_or(KeyDecodeError::MissingHmacKey)?;
        let hmac_bytes = key_bytes(&hmac.key).ok_or(KeyDecodeError::HmacKeyLength {
            len: hmac.key.len(),
        })?;
        if hmac.hash != HASH_SHA256 {
            return Err(KeyDecodeError::HmacHash { code: hmac.hash });
        }

        // KES reads a missing timestamp as the Unix epoch (protobuf's zero Timestamp), and
        // normalizes out-of-range nanos into seconds rather than rejecting them.
        let ts = message.created_at.clone().unwrap_or_default();
        let created_at =
            GoTime::from_unix_nanos(i128::from(ts.seconds) * NANOS_PER_SEC + i128::from(ts.nanos));

        Ok(KeyVersion {
            key: SecretKey::new(kind, *bytes),
            hmac_key: Some(HmacKey::new(*hmac_bytes)),
            created_at,
            created_by: message.created_by.clone(),
        })
    }
}

/// A JSON string literal with every non-ASCII character escaped, so the encoded key stays ASCII
/// like the protobuf form: some keystores mangle anything else.
fn ascii_json_string(s: &str) -> String {
    let escaped = serde_json::Value::from(s).to_string();
    let mut out = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn key_bytes(v: &[u8]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let bytes: [u8; KEY_LEN] = v.try_into().ok()?;
    Some(Zeroizing::new(bytes))
}

fn parse_legacy_json(stored: &[u8]) -> Result<KeyVersion, KeyDecodeError> {
    const FIELDS: &[(&str, Kind)] = &[
        ("bytes", Kind::Bytes),
        ("algorithm", Kind::Str),
        ("created_at", Kind::Time),
        ("created_by", Kind::Str),
    ];
    let mut fields = gojson::decode(stored, FIELDS)
        .ok_or(KeyDecodeError::Json)?
        .into_iter();
    let mut next = || fields.next().flatten();
    let bytes = match next() {
        Some(Value::Bytes(b)) => b,
        _ => Zeroizing::new(Vec::new()),
    };
    let algorithm = match next() {
        Some(Value::Str(s)) => s,
        _ => Vec::new(),
    };
    let created_at = match next() {
        Some(Value::Time(t)) => Some(t),
        _ => None,
    };
    let created_by = match next() {
        // Go replaces invalid UTF-8 in JSON strings with U+FFFD.
        Some(Value::Str(s)) => String::from_utf8_lossy(&s).into_owned(),
        _ => String::new(),
    };

    // The oldest documents have no algorithm; every key of that era was AES.
    let kind = if algorithm.is_empty() {
        KeyType::Aes256
    } else {
        std::str::from_utf8(&algorithm)
            .ok()
            .and_then(KeyType::parse_cipher)
            .ok_or_else(|| KeyDecodeError::Algorithm {
                name: String::from_utf8_lossy(&algorithm)
                    .chars()
                    .take(64)
                    .collect(),
            })?
    };
    let key = key_bytes(&bytes).ok_or(KeyDecodeError::SecretKeyLength { len: bytes.len() })?;
    Ok(KeyVersion {
        key: SecretKey::new(kind, *key),
        hmac_key: None,
        created_at,
        created_by,
    })
}

/// Hand-written prost messages for KES's `internal/protobuf/crypto.proto` (package
/// `miniohq.kms`), so the build needs no protoc.
mod pb {
    use zeroize::Zeroize;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct SecretKey {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub r#type: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct HmacKey {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub hash: u32,
    }

    /// `google.protobuf.Timestamp`
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct KeyVersion {
        #[prost(message, optional, tag = "1")]
        pub key: Option<SecretKey>,
        #[prost(message, optional, tag = "2")]
        pub hmac_key: Option<HmacKey>,
        #[prost(message, optional, tag = "3")]
        pub created_at: Option<Timestamp>,
        #[prost(string, tag = "4")]
        pub created_by: String,
    }

    impl Drop for SecretKey {
        fn drop(&mut self) {
            self.key.zeroize();
        }
    }

    impl Drop for HmacKey {
        fn drop(&mut self) {
            self.key.zeroize();
        }
    }
}
