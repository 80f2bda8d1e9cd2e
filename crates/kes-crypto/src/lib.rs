//! The cryptographic core of the service, byte-compatible with MinIO KES.
//!
//! A [`SecretKey`] seals and opens data keys in exactly the ciphertext layout KES writes
//! (`AEAD output || iv || nonce`) and still opens the two structured layouts older KES releases
//! produced (MessagePack and JSON), so ciphertexts stored by MinIO under any KES version keep
//! decrypting. A [`KeyVersion`] is what every keystore holds for one key name; it is encoded and
//! parsed in KES's own formats (base64 protobuf, and the legacy JSON documents) so a keystore can be
//! shared with, or migrated from, an upstream KES deployment. [`ApiKey`] and [`identity_of_spki`]
//! turn `kes:v1:` API keys and certificates into the identities policies are written against.
//!
//! Everything here is pure computation: no I/O, no async, no global state beyond the OS RNG and the per-thread
//! generator seeded from it (`rng.rs`).
//! Secret material lives in zeroize-on-drop storage and never appears in `Debug` output.

#![forbid(unsafe_code)]

mod apikey;
mod cck;
mod gojson;
mod key;
mod keyversion;
mod legacy;
mod rng;

pub use apikey::{ed25519_spki_der, identity_of_spki, ApiKey, ApiKeyError};
pub use cck::{Cck, CckSealError};
pub use key::{
    DecryptError, EncryptError, HmacKey, KeyType, SecretKey, CIPHERTEXT_OVERHEAD, MAX_PLAINTEXT_LEN,
};
pub use keyversion::{KeyDecodeError, KeyVersion};
