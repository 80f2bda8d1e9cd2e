//! Identities and `kes:v1:` API keys.
//!
//! An identity is the SHA-256 of a certificate's SubjectPublicKeyInfo. An API key is an Ed25519
//! seed from which a client derives a throwaway self-signed certificate; hashing the matching
//! Ed25519 SPKI gives the same identity the server computes from that certificate, so the identity
//! is known before any certificate exists.

use std::fmt;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

const TEXT_PREFIX: &str = "kes:v1:";
const SEED_LEN: usize = 32;
/// Byte 0 of an encoded API key: the key type, where 0 is Ed25519 and nothing else exists yet.
const TYPE_ED25519: u8 = 0;

/// DER of `SubjectPublicKeyInfo { AlgorithmIdentifier { id-Ed25519 }, BIT STRING (32 bytes) }`
/// up to the key itself.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER of a version-1 `PrivateKeyInfo { 0, { id-Ed25519 }, OCTET STRING { OCTET STRING (32) } }`
/// up to the seed. Version 1 (no embedded public key) is what Go and OpenSSL write and what every
/// PKCS#8 reader accepts.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The KES identity of a certificate: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn identity_of_spki(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// The DER SubjectPublicKeyInfo of an Ed25519 public key.
pub fn ed25519_spki_der(public_key: &[u8; 32]) -> [u8; 44] {
    let mut spki = [0u8; 44];
    spki[..ED25519_SPKI_PREFIX.len()].copy_from_slice(&ED25519_SPKI_PREFIX);
    spki[ED25519_SPKI_PREFIX.len()..].copy_from_slice(public_key);
    spki
}

/// Text that is not an API key, or a private key that is not an Ed25519 PKCS#8 key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("invalid API key: not valid base64")]
    Base64,
    #[error("invalid API key: {len} bytes, want 33")]
    Length { len: usize },
    #[error("invalid API key: unsupported key type {kind}")]
    KeyType { kind: u8 },
    #[error("invalid private key: not an Ed25519 PKCS#8 private key")]
    Pkcs8,
}

/// An Ed25519 API key (`kes:v1:...`).
#[derive(Clone)]
pub struct ApiKey {
    seed: Zeroizing<[u8; SEED_LEN]>,
    public: [u8; 32],
}

impl ApiKey {
    /// A new key from the OS random number generator.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        OsRng.fill_bytes(seed.as_mut());
        Self::from_seed_ref(&seed)
    }

    /// The key with the given RFC 8032 seed (the Ed25519 private key).
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Self {
        let seed = Zeroizing::new(seed);
        Self::from_seed_ref(&seed)
    }

    fn from_seed_ref(seed: &[u8; SEED_LEN]) -> Self {
        // `SigningKey` wipes itself on drop.
        let public = SigningKey::from_bytes(seed).verifying_key().to_bytes();
        Self {
            seed: Zeroizing::new(*seed),
            public,
        }
    }

    /// Parses `kes:v1:` + base64(0x00 || seed); the prefix is optional, as in KES.
    pub fn parse(s: &str) -> Result<ApiKey, ApiKeyError> {
        let encoded = s.strip_prefix(TEXT_PREFIX).unwrap_or(s);
        let raw = Zeroizing::new(kes_types::b64::decode(encoded).map_err(|_| ApiKeyError::Base64)?);
        if raw.len() != 1 + SEED_LEN {
            return Err(ApiKeyError::Length { len: raw.len() });
        }
        if raw[0] != TYPE_ED25519 {
            return Err(ApiKeyError::KeyType { kind: raw[0] });
        }
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        seed.copy_from_slice(&raw[1..]);
        Ok(Self::from_seed_ref(&seed))
    }

    /// The `kes:v1:` text form. This is the secret itself, which is why `ApiKey` has no
    /// `Display`: it must never end up in a log line by accident.
    pub fn to_text(&self) -> String {
        let mut raw = Zeroizing::new([0u8; 1 + SEED_LEN]);
        raw[0] = TYPE_ED25519;
        raw[1..].copy_from_slice(self.seed.as_ref());
        let mut text = String::with_capacity(TEXT_PREFIX.len() + 44);
        text.push_str(TEXT_PREFIX);
        let mut encoded = Zeroizing::new(kes_types::b64::encode(raw.as_ref()));
        text.push_str(&encoded);
        encoded.zeroize();
        text
    }

    /// The identity of every certificate made from this key.
    pub fn identity(&self) -> String {
        identity_of_spki(&ed25519_spki_der(&self.public))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The private key as version-1 PKCS#8 DER, the input certificate generators take.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + SEED_LEN));
        der.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        der.extend_from_slice(self.seed.as_ref());
        der
    }

    /// Reads an Ed25519 private key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), version 1
    /// or 2; an embedded public key must match the seed.
    pub fn from_pkcs8_pem(pem: &str) -> Result<ApiKey, ApiKeyError> {
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|_| ApiKeyError::Pkcs8)?;
        let seed = Zeroizing::new(signing.to_bytes());
        Ok(Self::from_seed_ref(&seed))
    }

    /// Reads an Ed25519 private key from PKCS#8 DER, version 1 or 2.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<ApiKey, ApiKeyError> {
        let signing = SigningKey::from_pkcs8_der(der).map_err(|_| ApiKeyError::Pkcs8)?;
        let seed = Zeroizing::new(signing.to_bytes());
        Ok(Self::from_seed_ref(&seed))
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.seed.ct_eq(other.seed.as_ref()))
    }
}

impl Eq for ApiKey {}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("identity", &self.identity())
            .field("seed", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_prefix_optional() {
        let key = ApiKey::generate();
        let text = key.to_text();
        assert!(text.starts_with("kes:v1:"));
        assert_eq!(text.len(), 7 + 44);
        assert_eq!(ApiKey::parse(&text).unwrap(), key);
        assert_eq!(ApiKey::parse(&text[7..]).unwrap(), key);
        assert_eq!(ApiKey::parse(&text).unwrap().identity(), key.identity());
    }

    #[test]
    fn parse_errors() {
        assert_eq!(ApiKey::parse("kes:v1:!!!!"), Err(ApiKeyError::Base64));
        assert_eq!(
            ApiKey::parse(&kes_types::b64::encode(&[0u8; 32])),
            Err(ApiKeyError::Length { len: 32 })
        );
        let mut raw = [0u8; 33];
        raw[0] = 1;
        assert_eq!(
            ApiKey::parse(&kes_types::b64::encode(&raw)),
            Err(ApiKeyError::KeyType { kind: 1 })
        );
        // Only the exact lowercase prefix is stripped.
        let text = ApiKey::generate().to_text().replace("kes:v1:", "KES:v1:");
        assert_eq!(ApiKey::parse(&text), Err(ApiKeyError::Base64));
    }

    #[test]
    fn pkcs8_round_trip() {
        let key = ApiKey::generate();
        let der = key.pkcs8_der();
        assert_eq!(der.len(), 48);
        assert_eq!(ApiKey::from_pkcs8_der(&der).unwrap(), key);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            kes_types::b64::encode(&der)
        );
        assert_eq!(ApiKey::from_pkcs8_pem(&pem).unwrap(), key);
        assert_eq!(ApiKey::from_pkcs8_pem("nonsense"), Err(ApiKeyError::Pkcs8));
    }

    #[test]
    fn debug_is_redacted() {
        let key = ApiKey::from_seed([0x11; 32]);
        let text = format!("{key:?}");
        assert!(text.contains(&key.identity()));
        assert!(!text.contains("[17"));
        assert!(!text.contains(&key.to_text()[7..]));
    }
}
