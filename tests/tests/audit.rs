//! The audit stream records every policy, identity and membership change, refused ones
//! included: who asked (identity, address), what (the path names the policy, identity or
//! node) and the outcome (status).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;
use kes_tests::*;
use kes_types::wire::AuditEvent;
use std::time::Duration;

/// A request and what its audit event must say: client, method, path, body, the caller's
/// identity and the status.
type Step<'a> = (
    &'a reqwest::Client,
    &'static str,
    String,
    Option<Vec<u8>>,
    String,
    u16,
);

#[tokio::test]
async fn policy_identity_and_cluster_changes_are_audited_refusals_included() {
    let s = TestServer::start(ServerOpts::default()).await;
    let admin = s.admin_client();
    let resp = admin.get(s.url("/v1/log/audit")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();

    // An identity whose policy allows the policy routes: still refused, as they are
    // admin-only, and the refusal is audited.
    let ops = kes_crypto::ApiKey::generate();
    let ops_client = s.api_key_client(&ops);
    let stranger = kes_crypto::ApiKey::generate();
    let stranger_client = s.api_key_client(&stranger);
    let policy = br#"{"allow":["/v1/policy/*","/v1/identity/*"],"deny":[]}"#.to_vec();
    let assign = format!(r#"{{"identity":"{}"}}"#, ops.identity()).into_bytes();
    let steps: Vec<Step> = vec![
        (
            &admin,
            "PUT",
            "/v1/policy/write/ops".to_owned(),
            Some(policy.clone()),
            s.admin.identity(),
            200,
        ),
        (
            &admin,
            "PUT",
            "/v1/policy/assign/ops".to_owned(),
            Some(assign),
            s.admin.identity(),
            200,
        ),
        (
            &ops_client,
            "PUT",
            "/v1/policy/write/mine".to_owned(),
            Some(policy),
            ops.identity(),
            403,
        ),
        (
            &stranger_client,
            "DELETE",
            format!("/v1/identity/delete/{}", ops.identity()),
            None,
            stranger.identity(),
            403,
        ),
        (
            &ops_client,
            "DELETE",
            "/v1/cluster/remove/7".to_owned(),
            None,
            ops.identity(),
            403,
        ),
        (
            &admin,
            "DELETE",
            format!("/v1/identity/delete/{}", ops.identity()),
            None,
            s.admin.identity(),
            200,
        ),
        (
            &admin,
            "DELETE",
            "/v1/policy/delete/ops".to_owned(),
            None,
            s.admin.identity(),
            200,
        ),
        (
            &admin,
            "DELETE",
            "/v1/cluster/remove/7".to_owned(),
            None,
            s.admin.identity(),
            400,
        ),
        // A backup copies the state out: audited, and refused to anyone but the admin.
        (
            &admin,
            "GET",
            "/v1/cluster/backup".to_owned(),
            None,
            s.admin.identity(),
            200,
        ),
        (
            &ops_client,
            "GET",
            "/v1/cluster/backup".to_owned(),
            None,
            ops.identity(),
            403,
        ),
    ];
    for (client, method, path, body, _, status) in &steps {
        let answer = send(client, method, &s.url(path), body.clone()).await;
        assert_eq!(answer.status, *status, "{method} {path}: {}", answer.text());
    }
    // Reads are not audited: this one must not show up between the changes.
    send(&admin, "GET", &s.url("/v1/policy/list/*"), None).await;

    let mut buf = Vec::new();
    let mut events: Vec<AuditEvent> = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while events.len() < steps.len() {
            buf.extend_from_slice(&stream.next().await.unwrap().unwrap());
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                events.push(serde_json::from_slice(&line).unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} audit events arrived: {events:?}", events.len()));
    let seen: Vec<(String, String, u16)> = events
        .iter()
        .map(|e| {
            (
                e.request.path.clone(),
                e.request.identity.clone(),
                e.response.code,
            )
        })
        .collect();
    let want: Vec<(String, String, u16)> = steps
        .iter()
        .map(|(_, _, path, _, identity, status)| (path.clone(), identity.clone(), *status))
        .collect();
    assert_eq!(seen, want);
    for e in &events {
        assert_eq!(e.request.ip, "127.0.0.1");
    }
}
