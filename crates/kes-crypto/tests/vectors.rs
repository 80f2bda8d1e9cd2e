//! Known-answer tests against `testdata/vectors.json`, which `testdata/gen_vectors.py` computes
//! with Python's `cryptography` package: an implementation that shares no code with this crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::{
    ed25519_spki_der, identity_of_spki, ApiKey, DecryptError, HmacKey, KeyType, KeyVersion,
    SecretKey,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    ciphertexts: Vec<CiphertextVector>,
    key_versions: Vec<KeyVersionVector>,
    api_keys: Vec<ApiKeyVector>,
    bad_api_keys: Vec<String>,
    hmac: Vec<HmacVector>,
}

#[derive(Deserialize)]
struct CiphertextVector {
    name: String,
    kind: String,
    key: String,
    associated_data: String,
    ciphertext: String,
    plaintext: Option<String>,
    iv: Option<String>,
    nonce: Option<String>,
}

#[derive(Deserialize)]
struct KeyVersionVector {
    name: String,
    stored: String,
    ok: bool,
    kind: Option<String>,
    key: Option<String>,
    hmac_key: Option<String>,
    created_at: Option<String>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    reencode: bool,
}

#[derive(Deserialize)]
struct ApiKeyVector {
    seed: String,
    text: String,
    public_key: String,
    spki_der: String,
    identity: String,
    pkcs8_der: String,
    pkcs8_pem: String,
}

#[derive(Deserialize)]
struct HmacVector {
    key: String,
    message: String,
    mac: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("../testdata/vectors.json")).expect("vectors.json parses")
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().expect("length")
}

fn kind(s: &str) -> KeyType {
    KeyType::parse_cipher(s).expect("key type")
}

#[test]
fn ciphertexts() {
    let v = vectors();
    assert!(v.ciphertexts.len() > 50);
    let (mut opened, mut refused) = (0, 0);
    for c in &v.ciphertexts {
        let key = SecretKey::new(kind(&c.kind), arr(&c.key));
        let ad = unhex(&c.associated_data);
        let ct = unhex(&c.ciphertext);
        let got = key.decrypt(&ct, &ad);
        match &c.plaintext {
            Some(pt) => {
                let pt = unhex(pt);
                assert_eq!(got.as_deref(), Ok(&pt), "{}", c.name);
                opened += 1;
                if let (Some(iv), Some(nonce)) = (&c.iv, &c.nonce) {
                    let again = key.encrypt_with(&pt, &ad, &arr(iv), &arr(nonce));
                    assert_eq!(
                        hex::encode(again),
                        c.ciphertext,
                        "{}: re-encryption",
                        c.name
                    );
                }
            }
            None => {
                assert_eq!(got, Err(DecryptError), "{}", c.name);
                refused += 1;
            }
        }
    }
    assert!(
        opened > 20 && refused > 20,
        "{opened} opened, {refused} refused"
    );
}

#[test]
fn key_versions() {
    let v = vectors();
    for kv in &v.key_versions {
        let parsed = KeyVersion::parse(kv.stored.as_bytes());
        if !kv.ok {
            assert!(parsed.is_err(), "{}: parsed {parsed:?}", kv.name);
            continue;
        }
        let parsed = parsed.unwrap_or_else(|e| panic!("{}: {e}", kv.name));
        let want_kind = kind(kv.kind.as_deref().expect("kind"));
        let want_key = SecretKey::new(want_kind, arr(kv.key.as_deref().expect("key")));
        assert_eq!(parsed.key, want_key, "{}", kv.name);
        assert_eq!(
            parsed.hmac_key,
            kv.hmac_key.as_deref().map(|h| HmacKey::new(arr(h))),
            "{}",
            kv.name
        );
        assert_eq!(
            parsed.created_at.map(|t| t.to_string()),
            kv.created_at,
            "{}",
            kv.name
        );
        assert_eq!(parsed.created_by, kv.created_by, "{}", kv.name);
        if kv.reencode {
            assert_eq!(
                String::from_utf8(parsed.encode()).expect("ascii"),
                kv.stored,
                "{}: re-encoding",
                kv.name
            );
        }
        // Whatever was read must survive a write and a re-read unchanged.
        assert_eq!(
            KeyVersion::parse(&parsed.encode()).as_ref(),
            Ok(&parsed),
            "{}",
            kv.name
        );
    }
}

#[test]
fn api_keys() {
    let v = vectors();
    for a in &v.api_keys {
        let key = ApiKey::parse(&a.text).expect("api key");
        assert_eq!(key, ApiKey::from_seed(arr(&a.seed)));
        assert_eq!(key.to_text(), a.text);
        assert_eq!(hex::encode(key.public_key()), a.public_key);
        assert_eq!(hex::encode(ed25519_spki_der(&key.public_key())), a.spki_der);
        assert_eq!(identity_of_spki(&unhex(&a.spki_der)), a.identity);
        assert_eq!(key.identity(), a.identity);
        assert_eq!(hex::encode(key.pkcs8_der().as_slice()), a.pkcs8_der);
        assert_eq!(ApiKey::from_pkcs8_pem(&a.pkcs8_pem).expect("pem"), key);
        // The prefix is optional.
        assert_eq!(
            ApiKey::parse(&a.text["kes:v1:".len()..]).expect("bare"),
            key
        );
    }
    for bad in &v.bad_api_keys {
        assert!(ApiKey::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn hmac() {
    for h in vectors().hmac {
        let key = HmacKey::new(arr(&h.key));
        assert_eq!(hex::encode(key.mac(&unhex(&h.message))), h.mac);
    }
}
