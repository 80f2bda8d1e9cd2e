//! Sealing and opening data keys in every ciphertext layout the server accepts: the current
//! layout with AES256 and ChaCha20 keys, and the two legacy layouts older KES releases wrote
//! (MessagePack and JSON), which are converted before opening.

// Benchmark set-up may fail loudly: it is not reachable from outside input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kes_crypto::{KeyType, SecretKey};

/// What MinIO sends as associated data for SSE-S3.
const CONTEXT: &[u8] = br#"{"bucket":"bucket/object"}"#;

/// A legacy MessagePack ciphertext `[algorithm, key id, iv, nonce, bytes]`, built as the
/// kes-crypto tests build it.
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

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal_open");
    for size in [32usize, 4096] {
        let plaintext = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            let key = SecretKey::new(kind, [9u8; 32]);
            let ct = key.encrypt(&plaintext, CONTEXT);
            assert_eq!(
                key.decrypt(&ct, CONTEXT).unwrap().as_slice(),
                &plaintext[..]
            );
            let (body, iv, nonce) = split(&ct);
            let mp = msgpack(kind.as_str(), iv, nonce, body);
            let aead = match kind {
                KeyType::Aes256 => "AES-256-GCM-HMAC-SHA-256",
                KeyType::ChaCha20 => "ChaCha20Poly1305",
            };
            let b64 = kes_types::b64::encode;
            let json = format!(
                r#"{{"aead":"{aead}","iv":"{}","nonce":"{}","bytes":"{}"}}"#,
                b64(iv),
                b64(nonce),
                b64(body)
            )
            .into_bytes();
            assert!(key.decrypt(&mp, CONTEXT).is_ok());
            assert!(key.decrypt(&json, CONTEXT).is_ok());

            let id = format!("{kind}/{size}B");
            group.bench_function(BenchmarkId::new("seal", &id), |b| {
                b.iter(|| key.encrypt(black_box(&plaintext), black_box(CONTEXT)))
            });
            group.bench_function(BenchmarkId::new("open", &id), |b| {
                b.iter(|| key.decrypt(black_box(&ct), black_box(CONTEXT)))
            });
            group.bench_function(BenchmarkId::new("open_legacy_msgpack", &id), |b| {
                b.iter(|| key.decrypt(black_box(&mp), black_box(CONTEXT)))
            });
            group.bench_function(BenchmarkId::new("open_legacy_json", &id), |b| {
                b.iter(|| key.decrypt(black_box(&json), black_box(CONTEXT)))
            });
        }
    }
    group.finish();

    // The two other per-request costs of a generate: a fresh data key and the HMAC route.
    let mut group = c.benchmark_group("key_material");
    group.bench_function("secret_key_generate", |b| {
        b.iter(|| SecretKey::generate(black_box(KeyType::Aes256)))
    });
    let hmac = kes_crypto::HmacKey::new([3u8; 32]);
    group.bench_function("hmac_32B", |b| b.iter(|| hmac.mac(black_box(&[1u8; 32]))));
    group.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
