//! Decoding stored keys: what a keystore read costs on a cache miss, for the current encoding
//! (base64 protobuf) and the legacy JSON document, and encoding for comparison.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kes_crypto::{KeyType, KeyVersion};

fn key_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_decode");
    let current = KeyVersion::generate(KeyType::Aes256, &"c".repeat(64));
    let protobuf = current.encode();
    assert_eq!(KeyVersion::parse(&protobuf).unwrap(), current);
    // A key without an HMAC key is written back as KES's legacy JSON document.
    let legacy = KeyVersion {
        hmac_key: None,
        ..current.clone()
    };
    let json = legacy.encode();
    assert_eq!(json.first(), Some(&b'{'));
    assert_eq!(KeyVersion::parse(&json).unwrap(), legacy);

    group.bench_function("parse/protobuf", |b| {
        b.iter(|| KeyVersion::parse(black_box(&protobuf)))
    });
    group.bench_function("parse/legacy_json", |b| {
        b.iter(|| KeyVersion::parse(black_box(&json)))
    });
    group.bench_function("encode/protobuf", |b| {
        b.iter(|| black_box(&current).encode())
    });
    group.finish();
}

criterion_group!(benches, key_decode);
criterion_main!(benches);
