//! Bitwarden's client-side cryptography, as far as Secrets Manager needs it, implemented from
//! Bitwarden's published security whitepaper and SDK documentation:
//!
//! * A symmetric key is 64 bytes: an AES-256 key, then an HMAC-SHA256 key.
//! * An `EncString` of type 2 is `2.<base64 iv>|<base64 ciphertext>|<base64 mac>`:
//!   AES-256-CBC with PKCS#7 padding under a random 16-byte IV, and
//!   `mac = HMAC-SHA256(mac key, iv || ciphertext)`, checked (in constant time) before
//!   decrypting.
//! * A machine account's access token `0.<id>.<secret>:<base64 16-byte seed>` yields the key
//!   that opens the login's `encrypted_payload`: `prk = HMAC-SHA256("bitwarden-accesstoken",
//!   seed)`, then HKDF-Expand-SHA256(`prk`, info `"sm-access-token"`, 64 bytes).

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
type HmacSha256 = Hmac<Sha256>;
type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

/// Why an `EncString` or a key could not be used. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not an EncString of type 2 (AES-256-CBC + HMAC-SHA256)")]
    Format,
    #[error("the EncString's MAC does not match: wrong key or tampered data")]
    Mac,
    #[error("the EncString does not decrypt (bad padding)")]
    Padding,
    #[error("a symmetric key must be 64 bytes, got {0}")]
    KeyLength(usize),
}

/// An AES-256 key and an HMAC-SHA256 key, wiped on drop.
#[derive(Clone)]
pub struct SymmetricKey {
    enc: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(<redacted>)")
    }
}

impl SymmetricKey {
    /// From 64 bytes: encryption key, then MAC key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 64 {
            return Err(CryptoError::KeyLength(bytes.len()));
        }
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        enc.copy_from_slice(&bytes[..32]);
        mac.copy_from_slice(&bytes[32..]);
        Ok(Self { enc, mac })
    }

    fn mac_of(&self, iv: &[u8], data: &[u8]) -> HmacSha256 {
        let mut m = hmac(self.mac.as_slice());
        m.update(iv);
        m.update(data);
        m
    }

    /// Encrypts under a fresh random IV.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        self.encrypt_with_iv(&rand::random::<[u8; 16]>(), plaintext)
    }

    /// Encrypts under `iv` (tests use fixed IVs; everything else [`SymmetricKey::encrypt`]).
    pub fn encrypt_with_iv(&self, iv: &[u8; 16], plaintext: &[u8]) -> String {
        let ct = Enc::new(self.enc.as_slice().into(), iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mac = self.mac_of(iv, &ct).finalize().into_bytes();
        format!(
            "2.{}|{}|{}",
            B64.encode(iv),
            B64.encode(&ct),
            B64.encode(mac)
        )
    }

    /// Checks the MAC, then decrypts.
    pub fn decrypt(&self, enc: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let body = enc.trim().strip_prefix("2.").ok_or(CryptoError::Format)?;
        let mut parts = body.split('|');
        let (Some(iv), Some(ct), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Format);
        };
        let iv = B64.decode(iv).map_err(|_| CryptoError::Format)?;
        let ct = B64.decode(ct).map_err(|_| CryptoError::Format)?;
        let mac = B64.decode(mac).map_err(|_| CryptoError::Format)?;
        if iv.len() != 16 || ct.is_empty() || ct.len() % 16 != 0 || mac.len() != 32 {
            return Err(CryptoError::Format);
        }
        self.mac_of(&iv, &ct)
            .verify_slice(&mac)
            .map_err(|_| CryptoError::Mac)?;
        let pt = Dec::new(self.enc.as_slice().into(), iv.as_slice().into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ct)
            .map_err(|_| CryptoError::Padding)?;
        Ok(Zeroizing::new(pt))
    }
}

/// HMAC-SHA256 keyed with `key`, padded to the block size as RFC 2104 does (so no length
/// can fail).
fn hmac(key: &[u8]) -> HmacSha256 {
    use sha2::Digest as _;
    let mut block = Zeroizing::new([0u8; 64]);
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as hmac::digest::KeyInit>::new(&(*block).into())
}

/// HKDF-Expand with SHA-256 (RFC 5869, section 2.3) for at most 255 blocks.
fn hkdf_expand(prk: &[u8], info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let mut previous: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    let mut counter = 1u8;
    while out.len() < len {
        let mut m = hmac(prk);
        m.update(&previous);
        m.update(info);
        m.update(&[counter]);
        let mut block = m.finalize().into_bytes();
        let take = (len - out.len()).min(block.len());
        out.extend_from_slice(&block[..take]);
        previous = Zeroizing::new(block.to_vec());
        block.as_mut_slice().zeroize();
        counter = counter.wrapping_add(1);
    }
    out
}

/// The key that opens a machine account's login payload, from its access token's seed.
pub fn access_token_key(seed: &[u8; 16]) -> SymmetricKey {
    let mut m = hmac(b"bitwarden-accesstoken");
    m.update(seed);
    let mut prk = m.finalize().into_bytes();
    let okm = hkdf_expand(&prk, b"sm-access-token", 64);
    prk.as_mut_slice().zeroize();
    match SymmetricKey::from_bytes(&okm) {
        Ok(k) => k,
        // hkdf_expand returns exactly 64 bytes.
        Err(_) => SymmetricKey {
            enc: Zeroizing::new([0; 32]),
            mac: Zeroizing::new([0; 32]),
        },
    }
}

#[cfg(test)]
mod tests {
    //! Known answers computed independently with Python's `cryptography` (HMAC, HKDFExpand,
    //! AES-CBC with PKCS7): see the vectors' comments.
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn access_token_key_derivation() {
        let seed: [u8; 16] = core::array::from_fn(|i| i as u8);
        let k = access_token_key(&seed);
        let mut both = k.enc.to_vec();
        both.extend_from_slice(k.mac.as_slice());
        // HKDFExpand(SHA256, 64, b"sm-access-token").derive(HMAC(b"bitwarden-accesstoken", seed))
        assert_eq!(
            hex(&both),
            "565621a407eea6fe20ca2b3b6518635fa1ba327c3f010dc8e522a29e4c93d14b\
             8a18e3c2c6f3b33cc8e7f2b0a4ede285ee766ab9dbb76d35fe01104269ad0f99"
        );
    }

    #[test]
    fn enc_string_known_answers() {
        let key: Vec<u8> = (64u8..128).collect();
        let k = SymmetricKey::from_bytes(&key).unwrap();
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let hello = "2.AAECAwQFBgcICQoLDA0ODw==|MRbj6jMaA3h4nnXJgmJ+cA==|48DZN18zrS1zUS0CCNyekILonkCKvtmlYXbjs31WC4s=";
        assert_eq!(k.encrypt_with_iv(&iv, b"hello kes"), hello);
        assert_eq!(k.decrypt(hello).unwrap().as_slice(), b"hello kes");
        let empty = "2.EBESExQVFhcYGRobHB0eHw==|0F1n4APIo3Slie81lvOhpA==|98635k3zqIZSDmpzt3HsO0TSU43pG3gZsgoSaxJAr8w=";
        assert_eq!(k.decrypt(empty).unwrap().as_slice(), b"");
        let iv2: [u8; 16] = core::array::from_fn(|i| 16 + i as u8);
        assert_eq!(k.encrypt_with_iv(&iv2, b""), empty);
    }

    #[test]
    fn login_payload_known_answer() {
        let seed: [u8; 16] = core::array::from_fn(|i| i as u8);
        let payload = "2.ICEiIyQlJicoKSorLC0uLw==|a1j9IjR+pMjH/dorWl+6OM8VYILeEjAn64Wq3SR3sLPSKk/NvEeQg3rI6L0M2n09H0RiBtFGPH9mOUIKrR7FMX3tNDRihtup9PefmI1GAfwQac+Hchxr6DJ5giLsvdZcvO2dnTr8IUeP6H/wze8jFA==|5h3HnQ4+p4qCFiHNY2cCXIYArxKTqI/p7dDgt7hkbiM=";
        let json = access_token_key(&seed).decrypt(payload).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v["encryptionKey"],
            "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4yNjo+QkZKTlJWWl5iZmpucnZ6foKGiow=="
        );
    }

    #[test]
    fn tampering_and_bad_input_are_errors() {
        let k = SymmetricKey::from_bytes(&[7u8; 64]).unwrap();
        let good = k.encrypt(b"secret value");
        assert_eq!(k.decrypt(&good).unwrap().as_slice(), b"secret value");
        let other = SymmetricKey::from_bytes(&[8u8; 64]).unwrap();
        assert_eq!(other.decrypt(&good).unwrap_err(), CryptoError::Mac);
        let parts: Vec<&str> = good.split('|').collect();
        let flipped = format!("{}|{}|{}", parts[0], B64.encode([0u8; 16]), parts[2]);
        assert_eq!(k.decrypt(&flipped).unwrap_err(), CryptoError::Mac);
        for bad in [
            "",
            "2.",
            "0.a|b",
            "2.a|b|c",
            "2.AAAA|AAAA|AAAA",
            &good.replacen("2.", "1.", 1),
        ] {
            assert_eq!(k.decrypt(bad).unwrap_err(), CryptoError::Format, "{bad:?}");
        }
        assert_eq!(
            SymmetricKey::from_bytes(&[0; 32]).unwrap_err(),
            CryptoError::KeyLength(32)
        );
        assert!(!format!("{k:?}").contains('7'));
        // Random IVs: the same plaintext encrypts differently.
        assert_ne!(k.encrypt(b"x"), k.encrypt(b"x"));
    }
}
