//! Identity hashing: what the server computes for every new TLS connection (the SHA-256 of the
//! client certificate's public key), from a bare SPKI and from a whole certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kes_crypto::{ed25519_spki_der, identity_of_spki, ApiKey};
use kes_tls::certgen::{self, KeyKind, TestCa};

fn identity(c: &mut Criterion) {
    let mut group = c.benchmark_group("identity");
    let key = ApiKey::generate();
    let spki = ed25519_spki_der(&key.public_key());
    assert_eq!(identity_of_spki(&spki), key.identity());
    group.bench_function("identity_of_spki/ed25519", |b| {
        b.iter(|| identity_of_spki(black_box(&spki)))
    });

    // From DER certificates, as a connection presents them: parse, then hash the SPKI.
    let api_cert = certgen::api_key_certificate(&key).unwrap();
    let ca = TestCa::new().unwrap();
    let ecdsa = ca.issue("client", &[], &[], KeyKind::EcdsaP256).unwrap();
    for (name, der) in [
        ("ed25519_api_key", api_cert.cert_der.clone()),
        ("ecdsa_p256", ecdsa.cert_der.clone()),
    ] {
        certgen::certificate_identity(&der).unwrap();
        group.bench_function(format!("certificate_identity/{name}"), |b| {
            b.iter(|| certgen::certificate_identity(black_box(&der)))
        });
    }
    group.bench_function("api_key_parse", |b| {
        let text = key.to_text();
        b.iter(|| ApiKey::parse(black_box(&text)))
    });
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
