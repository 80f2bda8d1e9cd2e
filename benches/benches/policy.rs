//! Policy matching: the check every authenticated request goes through, for the admin, an
//! allowed identity (prefix patterns), a denied one (deny beats allow) and an unknown one, in a
//! configuration with many policies and identities.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kes_policy::{Access, Decision, Policy};

const POLICIES: usize = 100;
const IDENTITIES_PER_POLICY: usize = 10;

fn identity(p: usize, i: usize) -> String {
    format!("{:064x}", p * 1000 + i)
}

fn access() -> Access {
    let mut policies = Vec::new();
    let mut assignments = Vec::new();
    for p in 0..POLICIES {
        // A MinIO-like policy scoped to a tenant's key prefix, with an internal prefix denied.
        let policy = Policy {
            allow: [
                "/v1/key/create/",
                "/v1/key/generate/",
                "/v1/key/decrypt/",
                "/v1/key/describe/",
                "/v1/key/list/",
                "/v1/key/hmac/",
            ]
            .iter()
            .map(|r| format!("{r}tenant-{p}-*"))
            .chain(["/v1/status".to_owned(), "/v1/metrics".to_owned()])
            .collect(),
            deny: vec![format!("/v1/key/generate/tenant-{p}-internal*")],
        };
        policies.push((format!("policy-{p}"), policy));
        for i in 0..IDENTITIES_PER_POLICY {
            assignments.push((identity(p, i), format!("policy-{p}")));
        }
    }
    Access::new(&"a".repeat(64), policies, assignments).unwrap()
}

fn policy(c: &mut Criterion) {
    let access = access();
    let admin = "a".repeat(64);
    let user = identity(42, 3);
    let unknown = "f".repeat(64);
    let allowed = "/v1/key/decrypt/tenant-42-minio-default-key";
    let denied = "/v1/key/generate/tenant-42-internal-key";
    let other_tenant = "/v1/key/decrypt/tenant-7-key";
    assert_eq!(access.authorize(&admin, allowed), Decision::Admin);
    assert_eq!(access.authorize(&user, allowed), Decision::Allowed);
    assert_eq!(access.authorize(&user, denied), Decision::Denied);
    assert_eq!(access.authorize(&user, other_tenant), Decision::Denied);
    assert_eq!(access.authorize(&unknown, allowed), Decision::Denied);

    let mut group = c.benchmark_group("policy");
    for (name, id, path) in [
        ("admin", &admin, allowed),
        ("allowed", &user, allowed),
        ("denied_by_deny", &user, denied),
        ("denied_no_match", &user, other_tenant),
        ("unknown_identity", &unknown, allowed),
    ] {
        group.bench_function(format!("authorize/{name}"), |b| {
            b.iter(|| access.authorize(black_box(id), black_box(path)))
        });
    }
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
