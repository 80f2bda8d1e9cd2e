//! Property tests: sealing round-trips, any tampering is detected, the legacy layouts carry the
//! same bytes, key encodings round-trip, and no input makes a parser panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::{ApiKey, DecryptError, HmacKey, KeyType, KeyVersion, SecretKey};
use kes_types::GoTime;
use proptest::prelude::*;

fn key_type() -> impl Strategy<Value = KeyType> {
    prop_oneof![Just(KeyType::Aes256), Just(KeyType::ChaCha20)]
}

fn secret_key() -> impl Strategy<Value = SecretKey> {
    (key_type(), any::<[u8; 32]>()).prop_map(|(k, b)| SecretKey::new(k, b))
}

/// Instants `GoTime` can represent, from Go's zero time to the end of year 9999, in UTC.
fn go_time() -> impl Strategy<Value = GoTime> {
    (-62_135_596_800i64..253_402_300_799i64, 0u32..1_000_000_000).prop_map(|(s, n)| {
        GoTime::from_unix_nanos(i128::from(s) * 1_000_000_000 + i128::from(n)).expect("in range")
    })
}

fn msgpack(algorithm: &str, iv: &[u8], nonce: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x95];
    for s in [algorithm.as_bytes(), b"0123456789abcdef0123456789abcdef"] {
        out.push(0xd9);
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }
    for b in [iv, nonce, bytes] {
        out.push(0xc6);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Splits a current-layout ciphertext into (AEAD output, iv, nonce).
fn split(ct: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let (body, random) = ct.split_at(ct.len() - 28);
    let (iv, nonce) = random.split_at(16);
    (body, iv, nonce)
}

proptest! {
    #[test]
    fn seal_open_round_trip(
        key in secret_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..600),
        ad in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let ct = key.encrypt(&plaintext, &ad);
        prop_assert_eq!(ct.len(), plaintext.len() + kes_crypto::CIPHERTEXT_OVERHEAD);
        let opened = key.decrypt(&ct, &ad).expect("opens");
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
    }

    #[test]
    fn any_flipped_ciphertext_byte_is_detected(
        key in secret_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..100),
        ad in proptest::collection::vec(any::<u8>(), 0..20),
        index in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut ct = key.encrypt(&plaintext, &ad);
        let i = index.index(ct.len());
        ct[i] ^= mask;
        prop_assert_eq!(key.decrypt(&ct, &ad), Err(DecryptError));
    }

    #[test]
    fn any_changed_associated_data_is_detected(
        key in secret_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..100),
        ad in proptest::collection::vec(any::<u8>(), 1..40),
        index in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        extra in any::<u8>(),
    ) {
        let ct = key.encrypt(&plaintext, &ad);
        let mut flipped = ad.clone();
        flipped[index.index(ad.len())] ^= mask;
        prop_assert_eq!(key.decrypt(&ct, &flipped), Err(DecryptError));
        let mut longer = ad.clone();
        longer.push(extra);
        prop_assert_eq!(key.decrypt(&ct, &longer), Err(DecryptError));
        prop_assert_eq!(key.decrypt(&ct, &ad[..ad.len() - 1]), Err(DecryptError));
    }

    #[test]
    fn truncation_is_detected(
        key in secret_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        cut in 1usize..80,
    ) {
        let ct = key.encrypt(&plaintext, b"");
        let keep = ct.len().saturating_sub(cut);
        prop_assert_eq!(key.decrypt(&ct[..keep], b""), Err(DecryptError));
    }

    #[test]
    fn legacy_layouts_carry_the_same_ciphertext(
        key in secret_key(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        ad in proptest::collection::vec(any::<u8>(), 0..20),
        name in prop::sample::select(vec!["AES256", "AES256-GCM_SHA256", "ChaCha20", "XCHACHA20-POLY1305"]),
        aead in prop::sample::select(vec!["AES-256-GCM-HMAC-SHA-256", "ChaCha20Poly1305"]),
    ) {
        let ct = key.encrypt(&plaintext, &ad);
        let (body, iv, nonce) = split(&ct);

        let mp = msgpack(name, iv, nonce, body);
        let opened = key.decrypt(&mp, &ad).expect("msgpack opens");
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());

        let b64 = kes_types::b64::encode;
        let json = format!(
            r#"{{"aead":"{aead}","iv":"{}","nonce":"{}","bytes":"{}"}}"#,
            b64(iv), b64(nonce), b64(body)
        );
        let opened = key.decrypt(json.as_bytes(), &ad).expect("json opens");
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
        let refused = json.replace(aead, "AES-256-GCM");
        prop_assert_eq!(key.decrypt(refused.as_bytes(), &ad), Err(DecryptError));
    }

    #[test]
    fn key_version_round_trip(
        key in secret_key(),
        hmac in proptest::option::of(any::<[u8; 32]>()),
        created_at in go_time(),
        no_created_at in any::<bool>(),
        created_by in any::<String>(),
    ) {
        let kv = KeyVersion {
            key,
            hmac_key: hmac.map(HmacKey::new),
            // Only the legacy JSON encoding can say "unknown"; protobuf always has a time.
            created_at: if no_created_at && hmac.is_none() { None } else { Some(created_at) },
            created_by,
        };
        let encoded = kv.encode();
        prop_assert!(encoded.is_ascii());
        prop_assert!(!encoded.ends_with(b"\n"));
        prop_assert_eq!(KeyVersion::parse(&encoded), Ok(kv));
    }

    #[test]
    fn key_version_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = KeyVersion::parse(&bytes);
    }

    #[test]
    fn mangled_key_version_never_panics(
        kind in key_type(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        legacy in any::<bool>(),
    ) {
        let mut kv = KeyVersion::generate(kind, "someone");
        if legacy {
            kv.hmac_key = None;
        }
        let mut bytes = kv.encode();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = KeyVersion::parse(&bytes);
    }

    #[test]
    fn decrypt_never_panics(
        key in secret_key(),
        first in prop::sample::select(vec![0x95u8, b'{', 0]),
        rest in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut ct = vec![first];
        ct.extend_from_slice(&rest);
        prop_assert_eq!(key.decrypt(&ct, b""), Err(DecryptError));
    }

    #[test]
    fn api_key_text_round_trip(seed in any::<[u8; 32]>()) {
        let key = ApiKey::from_seed(seed);
        prop_assert_eq!(ApiKey::parse(&key.to_text()), Ok(key.clone()));
        prop_assert_eq!(ApiKey::from_pkcs8_der(&key.pkcs8_der()), Ok(key));
    }

    #[test]
    fn api_key_parse_never_panics(s in ".{0,80}") {
        let _ = ApiKey::parse(&s);
        let _ = ApiKey::from_pkcs8_pem(&s);
    }
}

#[test]
fn protobuf_without_created_at_reads_back_as_go_zero_time() {
    let mut kv = KeyVersion::generate(KeyType::Aes256, "x");
    kv.created_at = None;
    let parsed = KeyVersion::parse(&kv.encode()).expect("parses");
    assert_eq!(parsed.created_at, Some(GoTime::zero()));
}

#[test]
fn generated_key_versions() {
    for kind in [KeyType::Aes256, KeyType::ChaCha20] {
        let kv = KeyVersion::generate(kind, "creator");
        assert_eq!(kv.key.kind(), kind);
        assert!(kv.hmac_key.is_some());
        assert!(kv.created_at.is_some());
        assert_eq!(kv.created_by, "creator");
        assert_ne!(kv.key, KeyVersion::generate(kind, "creator").key);

        let imported = KeyVersion::import(kind, [5u8; 32], "importer");
        assert_eq!(imported.key, SecretKey::new(kind, [5u8; 32]));
        assert_ne!(
            imported.hmac_key,
            KeyVersion::import(kind, [5u8; 32], "importer").hmac_key
        );
    }
    let legacy = KeyVersion::parse(br#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#)
        .expect("legacy");
    assert_eq!(legacy.created_at_or_zero(), GoTime::zero());
}

#[test]
fn for_this_cpu_is_stable() {
    assert_eq!(KeyType::for_this_cpu(), KeyType::for_this_cpu());
}
