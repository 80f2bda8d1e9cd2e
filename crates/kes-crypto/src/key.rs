//! Secret keys, the KES ciphertext layout and HMAC keys.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20::cipher::consts::U10;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::legacy;

const KEY_LEN: usize = 32;
const IV_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// SHA-256's block size.
const HMAC_BLOCK_LEN: usize = 64;
/// `iv || nonce`, appended to every ciphertext.
const RANDOM_LEN: usize = IV_LEN + NONCE_LEN;

/// Bytes a ciphertext is longer than its plaintext: tag, IV and nonce.
pub const CIPHERTEXT_OVERHEAD: usize = TAG_LEN + RANDOM_LEN;

/// The longest plaintext, and the longest associated data, that can be sealed.
///
/// This is AES-GCM's limit (ChaCha20-Poly1305's is higher); the server's body limits keep every
/// real input far below it.
pub const MAX_PLAINTEXT_LEN: u64 = 1 << 36;

/// The algorithm a [`SecretKey`] seals with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// AES-256-GCM with a per-message key `HMAC-SHA256(key, iv)`.
    Aes256,
    /// ChaCha20-Poly1305 with a per-message key `HChaCha20(key, iv)`.
    ChaCha20,
}

impl KeyType {
    /// The name KES shows for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256 => "AES256",
            KeyType::ChaCha20 => "ChaCha20",
        }
    }

    /// Parses every name KES has ever written for a key type, including the ones in legacy
    /// ciphertexts and key documents.
    pub fn parse_cipher(s: &str) -> Option<KeyType> {
        match s {
            "AES256" | "AES256-GCM_SHA256" => Some(KeyType::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" => Some(KeyType::ChaCha20),
            _ => None,
        }
    }

    /// The type KES picks for new keys on this machine: AES only where the CPU accelerates
    /// AES-GCM, because software AES is both slow and exposed to cache-timing attacks.
    pub fn for_this_cpu() -> KeyType {
        if has_hardware_aes_gcm() {
            KeyType::Aes256
        } else {
            KeyType::ChaCha20
        }
    }

    /// The number KES's protobuf `SecretKey.Type` uses (not the kms-go SDK's numbering).
    pub(crate) fn proto_code(self) -> u32 {
        match self {
            KeyType::Aes256 => 1,
            KeyType::ChaCha20 => 2,
        }
    }

    pub(crate) fn from_proto_code(code: u32) -> Option<KeyType> {
        match code {
            1 => Some(KeyType::Aes256),
            2 => Some(KeyType::ChaCha20),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn has_hardware_aes_gcm() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn has_hardware_aes_gcm() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
fn has_hardware_aes_gcm() -> bool {
    false
}

/// Opening a ciphertext failed. Deliberately carries no detail: every cause (malformed layout,
/// wrong key, wrong associated data, tampering) must look the same to a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed: ciphertext is not authentic")]
pub struct DecryptError;

/// Sealing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    #[error("encryption failed: plaintext or associated data exceeds {MAX_PLAINTEXT_LEN} bytes")]
    TooLarge,
    #[error("encryption failed: the OS random number generator is unavailable")]
    Random,
}

/// A 256-bit master key of one [`KeyType`].
#[derive(Clone)]
pub struct SecretKey {
    kind: KeyType,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl SecretKey {
    pub fn new(kind: KeyType, bytes: [u8; KEY_LEN]) -> Self {
        let mut bytes = bytes;
        let key = Self {
            kind,
            bytes: Zeroizing::new(bytes),
        };
        // `bytes` was passed by value; wipe this frame's copy as well.
        bytes.zeroize();
        key
    }

    /// A fresh key from the OS random number generator.
    pub fn generate(kind: KeyType) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        Self { kind, bytes }
    }

    pub fn kind(&self) -> KeyType {
        self.kind
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Seals `plaintext` in the current KES layout with a fresh random IV and nonce.
    ///
    /// Inputs longer than [`MAX_PLAINTEXT_LEN`] cannot be sealed; for them this returns an empty
    /// vector, which never opens. Use [`SecretKey::try_encrypt`] to see that as an error.
    pub fn encrypt(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        self.try_encrypt(plaintext, associated_data)
            .unwrap_or_default()
    }

    /// Seals `plaintext` in the current KES layout with a fresh random IV and nonce.
    pub fn try_encrypt(
        &self,
        plaintext: &[u8],
        associated_data: &[u8],
    ) -> Result<Vec<u8>, EncryptError> {
        // IV and nonce in one draw.
        let mut random = [0u8; RANDOM_LEN];
        crate::rng::fill(&mut random).map_err(|_| EncryptError::Random)?;
        let (iv, nonce) = split_random(&random);
        self.seal(plaintext, associated_data, &iv, &nonce)
    }

    /// A fresh 32-byte data key and its ciphertext sealed under this key (KES's generate): the
    /// data key, IV and nonce come from one draw of the generator in [`crate::rng`].
    pub fn generate_data_key(
        &self,
        associated_data: &[u8],
    ) -> Result<(Zeroizing<[u8; 32]>, Vec<u8>), EncryptError> {
        let mut random = Zeroizing::new([0u8; 32 + RANDOM_LEN]);
        crate::rng::fill(random.as_mut()).map_err(|_| EncryptError::Random)?;
        let mut data_key = Zeroizing::new([0u8; 32]);
        data_key.copy_from_slice(&random[..32]);
        let mut rest = [0u8; RANDOM_LEN];
        rest.copy_from_slice(&random[32..]);
        let (iv, nonce) = split_random(&rest);
        let ciphertext = self.seal(data_key.as_ref(), associated_data, &iv, &nonce)?;
        Ok((data_key, ciphertext))
    }

    /// Seals with a caller-chosen IV and nonce. Reusing an (IV, nonce) pair under one key
    /// destroys confidentiality, so this exists for known-answer tests only.
    ///
    /// Inputs longer than [`MAX_PLAINTEXT_LEN`] give an empty vector, as in [`SecretKey::encrypt`].
    pub fn encrypt_with(
        &self,
        plaintext: &[u8],
        associated_data: &[u8],
        iv: &[u8; IV_LEN],
        nonce: &[u8; NONCE_LEN],
    ) -> Vec<u8> {
        self.seal(plaintext, associated_data, iv, nonce)
            .unwrap_or_default()
    }

    fn seal(
        &self,
        plaintext: &[u8],
        associated_data: &[u8],
        iv: &[u8; IV_LEN],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, EncryptError> {
        let mut out = Vec::with_capacity(plaintext.len().saturating_add(CIPHERTEXT_OVERHEAD));
        out.extend_from_slice(plaintext);
        let nonce_ga = GenericArray::from(*nonce);
        let sealed = match self.kind {
            KeyType::Aes256 => aes_cipher(&self.bytes, iv).encrypt_in_place_detached(
                &nonce_ga,
                associated_data,
                &mut out,
            ),
            KeyType::ChaCha20 => chacha_cipher(&self.bytes, iv).encrypt_in_place_detached(
                &nonce_ga,
                associated_data,
                &mut out,
            ),
        };
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                out.extend_from_slice(iv);
                out.extend_from_slice(nonce);
                Ok(out)
            }
            Err(_) => {
                // The buffer still holds the plaintext.
                out.zeroize();
                Err(EncryptError::TooLarge)
            }
        }
    }

    /// Opens a ciphertext in the current layout or either legacy layout.
    ///
    /// The algorithm is always this key's; the algorithm named inside a legacy ciphertext is
    /// ignored, as KES does, so a ciphertext cannot choose how it is opened.
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let converted = legacy::to_current_layout(ciphertext);
        let ciphertext: &[u8] = &converted;
        if ciphertext.len() <= RANDOM_LEN {
            return Err(DecryptError);
        }
        let (sealed, random) = ciphertext.split_at(ciphertext.len() - RANDOM_LEN);
        let (iv, nonce) = random.split_at(IV_LEN);
        let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| DecryptError)?;
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError)?;
        if sealed.len() < TAG_LEN {
            return Err(DecryptError);
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| DecryptError)?;

        let mut plaintext = Zeroizing::new(body.to_vec());
        let nonce = GenericArray::from(*nonce);
        let tag = GenericArray::from(*tag);
        let opened = match self.kind {
            KeyType::Aes256 => aes_cipher(&self.bytes, iv).decrypt_in_place_detached(
                &nonce,
                associated_data,
                &mut plaintext,
                &tag,
            ),
            KeyType::ChaCha20 => chacha_cipher(&self.bytes, iv).decrypt_in_place_detached(
                &nonce,
                associated_data,
                &mut plaintext,
                &tag,
            ),
        };
        opened.map_err(|_| DecryptError)?;
        Ok(plaintext)
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && bool::from(self.bytes.ct_eq(&*other.bytes))
    }
}

impl Eq for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("kind", &self.kind)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

fn aes_cipher(master: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Aes256Gcm {
    let key = Zeroizing::new(hmac_sha256(master, iv));
    Aes256Gcm::new((&*key).into())
}

fn chacha_cipher(master: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> ChaCha20Poly1305 {
    let mut key = chacha20::hchacha::<U10>(master.into(), iv.into());
    let cipher = ChaCha20Poly1305::new(&key);
    key.as_mut_slice().zeroize();
    cipher
}

/// HMAC-SHA256 with a 32-byte key.
///
/// RFC 2104 zero-pads keys shorter than the hash block to the block size; doing that here lets
/// the MAC be built from a block-sized key, which cannot fail, instead of from a slice through an
/// API that returns a `Result` for lengths HMAC never rejects.
pub(crate) fn hmac_sha256(key: &[u8; KEY_LEN], msg: &[u8]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; HMAC_BLOCK_LEN]);
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new((&*block).into());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// A 256-bit key for HMAC-SHA256, stored next to a secret key so `/v1/key/hmac` can be served
/// without ever exposing the encryption key.
#[derive(Clone)]
pub struct HmacKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl HmacKey {
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        let mut bytes = bytes;
        let key = Self {
            bytes: Zeroizing::new(bytes),
        };
        bytes.zeroize();
        key
    }

    /// A fresh key from the OS random number generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        Self { bytes }
    }

    /// HMAC-SHA256 of `msg`.
    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.bytes, msg)
    }

    /// Whether `tag` is the MAC of `msg`, compared in constant time.
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        bool::from(self.mac(msg).as_slice().ct_eq(tag))
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl PartialEq for HmacKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.bytes.ct_eq(&*other.bytes))
    }
}

impl Eq for HmacKey {}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

/// Splits one random draw into the IV and the nonce of a seal.
fn split_random(random: &[u8; RANDOM_LEN]) -> ([u8; IV_LEN], [u8; NONCE_LEN]) {
    let mut iv = [0u8; IV_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    iv.copy_from_slice(&random[..IV_LEN]);
    nonce.copy_from_slice(&random[IV_LEN..]);
    (iv, nonce)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The cipher states built from secret keys wipe themselves when dropped: the AES key
    /// schedule (inside every AES-GCM cipher, this crate's and the cluster cache key's), the
    /// ChaCha20-Poly1305 key and ChaCha20's state. Fails to compile without the `zeroize`
    /// features of the workspace manifest.
    #[test]
    fn cipher_states_are_wiped_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>() {}
        wiped::<aes::Aes256>();
        wiped::<chacha20poly1305::ChaCha20Poly1305>();
        wiped::<chacha20poly1305::XChaCha20Poly1305>();
        wiped::<chacha20::ChaCha20>();
    }

    #[test]
    fn generated_data_keys_open_and_differ() {
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            let key = SecretKey::generate(kind);
            let (a, ct_a) = key.generate_data_key(b"ctx").unwrap();
            let (b, ct_b) = key.generate_data_key(b"ctx").unwrap();
            assert_ne!(*a, *b);
            assert_ne!(ct_a, ct_b);
            assert_eq!(key.decrypt(&ct_a, b"ctx").unwrap().as_slice(), a.as_ref());
            assert!(key.decrypt(&ct_a, b"other").is_err());
        }
    }

    #[test]
    fn key_type_names() {
        for (name, kind) in [
            ("AES256", KeyType::Aes256),
            ("AES256-GCM_SHA256", KeyType::Aes256),
            ("ChaCha20", KeyType::ChaCha20),
            ("XCHACHA20-POLY1305", KeyType::ChaCha20),
        ] {
            assert_eq!(KeyType::parse_cipher(name), Some(kind), "{name}");
        }
        for name in ["", "aes256", "AES-256-GCM", "ChaCha20Poly1305", "AES256 "] {
            assert_eq!(KeyType::parse_cipher(name), None, "{name}");
        }
        assert_eq!(KeyType::Aes256.as_str(), "AES256");
        assert_eq!(KeyType::ChaCha20.as_str(), "ChaCha20");
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            assert_eq!(KeyType::parse_cipher(kind.as_str()), Some(kind));
            assert_eq!(KeyType::from_proto_code(kind.proto_code()), Some(kind));
        }
        assert_eq!(KeyType::from_proto_code(0), None);
        assert_eq!(KeyType::from_proto_code(3), None);
    }

    #[test]
    fn hmac_matches_rfc4231_case_1() {
        // RFC 4231 test case 1 uses a 20-byte key; pad it to 32 with zeros, which by RFC 2104 is
        // the same key, so the published tag must come out.
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let tag = hmac_sha256(&key, b"Hi There");
        assert_eq!(
            hex::encode(tag),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn overhead_is_44_bytes() {
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            let key = SecretKey::generate(kind);
            let ct = key.encrypt(&[7u8; 32], b"ctx");
            assert_eq!(ct.len(), 76);
            assert_eq!(
                key.decrypt(&ct, b"ctx").map(|p| p.to_vec()),
                Ok(vec![7u8; 32])
            );
        }
    }

    #[test]
    fn fresh_randomness_per_encryption() {
        let key = SecretKey::generate(KeyType::Aes256);
        assert_ne!(key.encrypt(b"x", b""), key.encrypt(b"x", b""));
    }

    #[test]
    fn wrong_key_type_does_not_open() {
        let bytes = [9u8; 32];
        let aes = SecretKey::new(KeyType::Aes256, bytes);
        let chacha = SecretKey::new(KeyType::ChaCha20, bytes);
        let ct = aes.encrypt(b"secret", b"");
        assert_eq!(chacha.decrypt(&ct, b""), Err(DecryptError));
    }

    #[test]
    fn short_ciphertexts_fail() {
        let key = SecretKey::new(KeyType::Aes256, [1u8; 32]);
        for len in [0, 1, 27, 28, 29, 43] {
            assert_eq!(
                key.decrypt(&vec![0u8; len], b""),
                Err(DecryptError),
                "{len}"
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = SecretKey::new(KeyType::ChaCha20, [0xab; 32]);
        let hk = HmacKey::new([0xab; 32]);
        for text in [format!("{key:?}"), format!("{hk:?}")] {
            assert!(!text.to_lowercase().contains("ab, "), "{text}");
            assert!(!text.contains("171"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }

    #[test]
    fn hmac_verify() {
        let k = HmacKey::new([3u8; 32]);
        let tag = k.mac(b"msg");
        assert!(k.verify(b"msg", &tag));
        assert!(!k.verify(b"msh", &tag));
        assert!(!k.verify(b"msg", &tag[..31]));
    }
}
