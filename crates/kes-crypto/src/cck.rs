//! The cluster cache key: the 32-byte AES-256-GCM key that seals every entry of the replicated
//! key cache, with the key name as associated data, so an entry cannot be moved to another
//! name. Only its wrapped form is ever persisted (by the server, through the keystore).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Sealing a cache entry failed: AES-GCM refuses only inputs far beyond any key's size, so this
/// means the entry must not be stored, not that the key is bad.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sealing a cache entry with the cluster cache key failed")]
pub struct CckSealError;

/// The 32-byte cluster cache key. Wiped when dropped; `Debug` shows nothing of it.
pub struct Cck(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Cck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cck(..)")
    }
}

impl Cck {
    /// A fresh key from the OS RNG.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// The key from its 32 bytes; `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        // Copied straight into the wiped buffer: no stray copy of the key on the stack.
        if b.len() != 32 {
            return None;
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(b);
        Some(Self(key))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }

    /// `nonce || AES-256-GCM(cck, value, AD = name)`, with a random nonce.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, CckSealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| CckSealError)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The value sealed under `name`; `None` if it was sealed under another name or key, or
    /// was altered.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seal_open_is_bound_to_key_and_name() {
        assert!(Cck::from_slice(&[1; 31]).is_none());
        assert!(Cck::from_slice(&[1; 33]).is_none());
        let cck = Cck::from_slice(&[7; 32]).unwrap();
        assert_eq!(cck.bytes(), &[7; 32]);
        let sealed = cck.seal("a", b"value").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + b"value".len() + TAG_LEN);
        assert_eq!(cck.open("a", &sealed).unwrap().as_slice(), b"value");
        assert!(cck.open("b", &sealed).is_none());
        assert!(Cck::generate().open("a", &sealed).is_none());
        let mut altered = sealed.clone();
        altered[NONCE_LEN] ^= 1;
        assert!(cck.open("a", &altered).is_none());
        assert!(cck.open("a", &sealed[..NONCE_LEN + TAG_LEN - 1]).is_none());
        // Two seals of one value differ (random nonces).
        assert_ne!(cck.seal("a", b"value").unwrap(), sealed);
    }

    #[test]
    fn debug_shows_no_key_material() {
        assert_eq!(
            format!("{:?}", Cck::from_slice(&[7; 32]).unwrap()),
            "Cck(..)"
        );
    }
}
