//! Attacks on real `kes` processes over real TLS, one per defence. Each test fails when its
//! defence is taken out: the identity taken from the leaf certificate only, the trust and
//! usage checks of `tls.auth: on`, the closed node-to-node port, and the connection and
//! request limits that keep unknown clients from locking others out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::ApiKey;
use kes_tests::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use std::time::{Duration, Instant};

/// A certificate made by the test: its DER, its key (PKCS#8) and, for CAs, what signs with it.
struct Made {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Made {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn identity(&self) -> String {
        kes_tls::certgen::certificate_identity(self.cert.der()).unwrap()
    }

    /// This certificate alone, with its own key.
    fn client(&self) -> ClientCert {
        ClientCert {
            certs: vec![self.der()],
            key_der: self.key.serialize_der(),
        }
    }
}

fn make(cn: &str, ca: bool, eku: &[ExtendedKeyUsagePurpose], issuer: Option<&Made>) -> Made {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    params.extended_key_usages = eku.to_vec();
    let cert = match issuer {
        Some(i) => params.signed_by(&key, &i.cert, &i.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Made { cert, key }
}

/// The outcome of one request: the status, or that the TLS handshake (or connection) failed.
async fn attempt(
    client: &reqwest::Client,
    method: &str,
    url: &str,
) -> Result<(u16, String), String> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    match client.request(m, url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            Ok((status, r.text().await.unwrap_or_default()))
        }
        Err(e) => Err(format!("{e:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The identity is the leaf certificate's, and nothing else.

#[tokio::test]
async fn a_spoofed_chain_is_never_taken_for_the_admin() {
    let s = ProcServer::start("", "", &[]);
    s.wait_ready().await;
    // The admin's certificate is public; its key is not.
    let admin_cert = CertificateDer::from(
        kes_tls::certgen::api_key_certificate(&s.admin)
            .unwrap()
            .cert_der,
    );
    let attacker_ca = make("attacker", true, &[], None);
    let attacker_plain = make(
        "attacker",
        false,
        &[ExtendedKeyUsagePurpose::ClientAuth],
        None,
    );
    let with_attacker_key = |made: &Made, chain: Vec<CertificateDer<'static>>| ClientCert {
        certs: chain,
        key_der: made.key.serialize_der(),
    };
    let cases = [
        (
            "CA-flagged attacker certificate, then the admin's",
            with_attacker_key(&attacker_ca, vec![attacker_ca.der(), admin_cert.clone()]),
        ),
        (
            "plain attacker certificate, then the admin's",
            with_attacker_key(
                &attacker_plain,
                vec![attacker_plain.der(), admin_cert.clone()],
            ),
        ),
        (
            "the admin's certificate, then a CA-flagged attacker certificate",
            with_attacker_key(&attacker_ca, vec![admin_cert.clone(), attacker_ca.der()]),
        ),
        (
            "the admin's certificate, then a plain attacker certificate",
            with_attacker_key(
                &attacker_plain,
                vec![admin_cert.clone(), attacker_plain.der()],
            ),
        ),
        ("a CA certificate as the leaf", attacker_ca.client()),
    ];
    for (i, (what, cert)) in cases.iter().enumerate() {
        for proto in [Proto::Http1, Proto::Http2] {
            let c = s.client(Some(cert), proto);
            // Answered as someone else, or refused at the handshake: never as the admin.
            if let Ok((status, body)) =
                attempt(&c, "GET", &s.url("/v1/identity/self/describe")).await
            {
                assert!(
                    !(status == 200 && body.contains("\"admin\":true")),
                    "{what} ({proto:?}) was answered as the admin: {body}"
                );
            }
            let key = format!("spoofed-{i}-{proto:?}");
            // Refused at the handshake (an error), or answered 403/400.
            if let Ok((status, body)) =
                attempt(&c, "PUT", &s.url(&format!("/v1/key/create/{key}"))).await
            {
                assert!(
                    status == 403 || status == 400,
                    "{what} ({proto:?}) could create a key: {status} {body}"
                );
            }
            let admin = s.admin_client();
            let d = send(
                &admin,
                "GET",
                &s.url(&format!("/v1/key/describe/{key}")),
                None,
            )
            .await;
            assert_eq!(d.status, 404, "{what}: the key exists");
        }
    }
    // The CA leaf gets KES's `not authorized`, and the plain chain KES's answer for two leaves.
    let c = s.client(Some(&cases[0].1), Proto::Http1);
    let a = send(&c, "PUT", &s.url("/v1/key/create/x"), None).await;
    a.assert_error(403, "not authorized: insufficient permissions");
    let c = s.client(Some(&cases[4].1), Proto::Http1);
    send(&c, "PUT", &s.url("/v1/key/create/x"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
    let c = s.client(Some(&cases[1].1), Proto::Http1);
    send(&c, "PUT", &s.url("/v1/key/create/x"), None)
        .await
        .assert_error(400, "tls: received more than one client certificate");

    // API keys: the admin's works, another one is just another identity.
    let a = send(
        &s.admin_client(),
        "PUT",
        &s.url("/v1/key/create/real"),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let other = s.client(
        Some(&ClientCert::from_api_key(&ApiKey::generate())),
        Proto::Any,
    );
    send(&other, "PUT", &s.url("/v1/key/create/other"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
}

/// Repeats a request that must succeed until the node has initialised its state (policies
/// included), for at most 30 s.
async fn wait_serving(client: &reqwest::Client, url: &str) {
    let mut last = Err(String::new());
    for _ in 0..150 {
        last = attempt(client, "PUT", url).await;
        if matches!(last, Ok((200, _))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} was never served: {last:?}");
}

// ---------------------------------------------------------------------------------------------
// `tls.auth: on`: only the configured CA, and the client usage.

#[tokio::test]
async fn verified_clients_need_the_configured_ca_and_the_client_usage() {
    let dir = tempfile::tempdir().unwrap();
    let client_ca = make("client CA", true, &[], None);
    let public_ca = make("some public CA", true, &[], None);
    write(&dir.path().join("client-ca.pem"), client_ca.cert.pem());
    // The system's roots, as rustls-native-certs reads them: the "public" CA is one of them.
    write(&dir.path().join("system-roots.pem"), public_ca.cert.pem());
    let good = make(
        "app",
        false,
        &[ExtendedKeyUsagePurpose::ClientAuth],
        Some(&client_ca),
    );
    let server_only = make(
        "web-server",
        false,
        &[ExtendedKeyUsagePurpose::ServerAuth],
        Some(&client_ca),
    );
    let public = make(
        "someone",
        false,
        &[ExtendedKeyUsagePurpose::ClientAuth],
        Some(&public_ca),
    );
    let policy = format!(
        "policy:\n  apps:\n    allow:\n    - /v1/key/*\n    identities:\n    - {}\n    - {}\n    - {}\n",
        good.identity(),
        server_only.identity(),
        public.identity()
    );
    let tls = format!(
        "  auth: on\n  ca: {}\n",
        dir.path().join("client-ca.pem").display()
    );
    let roots = dir.path().join("system-roots.pem");
    let roots = roots.to_str().unwrap();
    let s = ProcServer::start(&tls, &policy, &[("SSL_CERT_FILE", roots)]);

    let ok = |c: &Made| s.client(Some(&c.client()), Proto::Any);
    wait_serving(&ok(&good), &s.url("/v1/key/create/good")).await;
    for (what, cert) in [("serverAuth-only", &server_only), ("public-CA", &public)] {
        let a = attempt(&ok(cert), "PUT", &s.url(&format!("/v1/key/create/{what}"))).await;
        assert!(
            a.is_err(),
            "the {what} certificate completed the handshake: {a:?}"
        );
    }
    let log = s.log();
    assert!(
        log.contains("lacks Extended Key Usage Client Authentication")
            && log.contains("web-server"),
        "no log line names the certificate and its missing usage:\n{log}"
    );

    // The public CA is trusted only when the configuration asks for the system's roots.
    let tls = format!("{tls}  system_roots: on\n");
    let s2 = ProcServer::start(&tls, &policy, &[("SSL_CERT_FILE", roots)]);
    wait_serving(
        &s2.client(Some(&good.client()), Proto::Any),
        &s2.url("/v1/key/create/good"),
    )
    .await;
    let a = attempt(
        &s2.client(Some(&public.client()), Proto::Any),
        "PUT",
        &s2.url("/v1/key/create/public"),
    )
    .await;
    assert_eq!(
        a.map(|(st, _)| st),
        Ok(200),
        "with tls.system_roots: on, the public CA is trusted"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The node-to-node port answers current members only, and the leader checks what it is
//    asked.

use kes_cluster::peer::client::{PeerError, Peers};
use kes_cluster::peer::wire::{Forward, ForwardResult};
use kes_cluster::{Refusal, WriteOp};
use kes_state::{Command, PolicyDef};

/// A node-port client with node `i`'s certificate (which the cluster CA issued, whether or not
/// node `i` is a member).
fn peer_client(c: &ProcCluster, i: usize) -> std::sync::Arc<Peers> {
    let d = c.files.nodes[i].config.parent().unwrap();
    let tls = kes_config::ClusterTls {
        key: d.join("peer.key"),
        cert: d.join("peer.cert"),
        ca: c.files.dir.join("cluster-ca.cert"),
    };
    Peers::new(kes_cluster::peer::tls::client_config(&tls).unwrap())
}

fn peer_addr(c: &ProcCluster, i: usize) -> String {
    format!("127.0.0.1:{}", c.files.nodes[i].peer_port)
}

/// Everything an attacker could ask of node `target` on its node port, each as it would be
/// sent, with what it would do if it were obeyed.
async fn every_route(
    peers: &Peers,
    c: &ProcCluster,
    target: usize,
    attacker: &str,
) -> Vec<(&'static str, Result<(), PeerError>)> {
    let id = target as u64 + 1;
    let addr = peer_addr(c, target);
    let t = Duration::from_secs(5);
    let mut out = Vec::new();
    let grant = Command::SetPolicy {
        name: "owned".into(),
        def: PolicyDef {
            allow: vec!["/v1/*".into()],
            deny: vec![],
        },
        at_ms: 1,
        by: attacker.into(),
    };
    out.push((
        "/cluster/propose",
        peers
            .call::<_, serde_json::Value>(id, &addr, "/cluster/propose", &grant, t)
            .await
            .map(|_| ()),
    ));
    let fwd = Forward {
        identity: c.files.api_key.identity(),
        client: "203.0.113.9".into(),
        op: WriteOp::CreateKey {
            name: "planted".into(),
        },
    };
    out.push((
        "/cluster/write",
        peers
            .call::<_, ForwardResult>(id, &addr, "/cluster/write", &fwd, t)
            .await
            .map(|_| ()),
    ));
    out.push((
        "/cluster/cck",
        peers
            .call::<_, Option<Vec<u8>>>(id, &addr, "/cluster/cck", &(), t)
            .await
            .map(|_| ()),
    ));
    out.push((
        "/cluster/elect",
        peers
            .call::<_, bool>(id, &addr, "/cluster/elect", &(), t)
            .await
            .map(|_| ()),
    ));
    // A hold would stop the node's writes and campaigns for seconds.
    out.push((
        "/cluster/hold",
        peers
            .call::<_, bool>(
                id,
                &addr,
                "/cluster/hold",
                &kes_cluster::transfer::Hold {
                    target: 9,
                    ms: 10_000,
                },
                t,
            )
            .await
            .map(|_| ()),
    ));
    out.push((
        "/cluster/read-index",
        peers
            .call::<_, serde_json::Value>(id, &addr, "/cluster/read-index", &(), t)
            .await
            .map(|_| ()),
    ));
    out.push((
        "/cluster/applied",
        peers
            .call::<_, u64>(id, &addr, "/cluster/applied", &(), t)
            .await
            .map(|_| ()),
    ));
    out.push((
        "/cluster/prevote",
        peers
            .call::<_, bool>(
                id,
                &addr,
                "/cluster/prevote",
                &kes_cluster::elect::PreVote { last_log: None },
                t,
            )
            .await
            .map(|_| ()),
    ));
    for route in ["/raft/append", "/raft/vote", "/raft/snapshot"] {
        out.push((
            route,
            peers
                .call::<_, serde_json::Value>(id, &addr, route, &(), t)
                .await
                .map(|_| ()),
        ));
    }
    out
}

async fn policies(c: &ProcCluster, node: usize) -> String {
    let a = send(
        &c.raw_client(),
        "GET",
        &c.url(node, "/v1/policy/list/*"),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    a.text()
}

#[tokio::test]
async fn the_node_port_refuses_non_members_and_removed_members() {
    // Five nodes configured (so five certificates from the cluster CA), three started: nodes 4
    // and 5 hold valid certificates but were never members.
    let mut c = ProcCluster::start_with(kes_server::local::LocalOptions {
        nodes: 5,
        offline: "30s".into(),
        initial_members: Some(3),
        ..Default::default()
    });
    c.wait_all_ready(60).await;
    let leader = c.wait_leader(30).await;
    let before = policies(&c, leader).await;
    let status = c.client(leader).cluster_status().await.unwrap();
    let term = status.term;

    let stranger = peer_client(&c, 3);
    for target in 0..3 {
        for (route, r) in every_route(&stranger, &c, target, "stranger").await {
            assert!(
                matches!(r, Err(PeerError::Remote { status: 403, .. })),
                "node {} answered a non-member on {route}: {r:?}",
                target + 1
            );
        }
    }
    // Nothing changed: no policy, no key, no election, no member.
    assert_eq!(policies(&c, leader).await, before);
    let admin = c.raw_client();
    let a = send(
        &admin,
        "GET",
        &c.url(leader, "/v1/key/describe/planted"),
        None,
    )
    .await;
    assert_eq!(a.status, 404, "a non-member planted a key");
    let after = c.client(leader).cluster_status().await.unwrap();
    assert_eq!(after.term, term, "a non-member triggered an election");
    assert_eq!(after.members.len(), 3);
    assert!(
        c.log(leader).contains("cluster request refused"),
        "refusals are not logged"
    );

    // A removed member is a stranger from then on, and its id cannot come back.
    let removed = if leader == 2 { 1 } else { 2 };
    c.client(leader)
        .cluster_remove(removed as u64 + 1)
        .await
        .unwrap();
    c.kill(removed);
    let former = peer_client(&c, removed);
    for target in (0..3).filter(|t| *t != removed) {
        for (route, r) in every_route(&former, &c, target, "former").await {
            assert!(
                matches!(r, Err(PeerError::Remote { status: 403, .. })),
                "node {} answered a removed member on {route}: {r:?}",
                target + 1
            );
        }
    }
    assert_eq!(policies(&c, leader).await, before);
    let readd = send(
        &admin,
        "PUT",
        &c.url(leader, &format!("/v1/cluster/add/{}", removed + 1)),
        Some(format!("{{\"address\":\"{}\"}}", peer_addr(&c, removed)).into_bytes()),
    )
    .await;
    assert_eq!(
        readd.status,
        400,
        "a removed id was added again: {}",
        readd.text()
    );
}

#[tokio::test]
async fn the_leader_authorises_what_members_ask_for() {
    let c = ProcCluster::start(3, "30s", "");
    c.wait_all_ready(60).await;
    let leader = c.wait_leader(30).await;
    let member = (leader + 1) % 3;
    let peers = peer_client(&c, member);
    let id = leader as u64 + 1;
    let addr = peer_addr(&c, leader);
    let t = Duration::from_secs(10);
    let before = policies(&c, leader).await;

    // A write forwarded for an identity without permission is refused by the leader.
    let nobody = ApiKey::generate();
    let fwd = |identity: String, op: WriteOp| Forward {
        identity,
        client: "192.0.2.1".into(),
        op,
    };
    let create = |key: &str| WriteOp::CreateKey { name: key.into() };
    let refused = |r: ForwardResult| match r {
        ForwardResult::Refused(Refusal { status, message }) => (status, message),
        other => panic!("not refused: {other:?}"),
    };
    let r: ForwardResult = peers
        .call(
            id,
            &addr,
            "/cluster/write",
            &fwd(nobody.identity(), create("by-nobody")),
            t,
        )
        .await
        .unwrap();
    let (status, message) = refused(r);
    assert_eq!(
        (status, message.as_str()),
        (403, "not authorized: insufficient permissions")
    );
    let others = [
        WriteOp::SetPolicy {
            name: "owned".into(),
            policy: PolicyDef {
                allow: vec!["/v1/*".into()],
                deny: vec![],
            },
        },
        WriteOp::AssignPolicy {
            policy: "owned".into(),
            identity: nobody.identity(),
        },
        WriteOp::RemoveNode { id: 1 },
        WriteOp::DeleteKey {
            name: "by-admin".into(),
        },
    ];
    for op in others {
        let what = format!("{op:?}");
        let r: ForwardResult = peers
            .call(id, &addr, "/cluster/write", &fwd(nobody.identity(), op), t)
            .await
            .unwrap();
        assert_eq!(refused(r).0, 403, "{what}");
    }
    // A write the leader's checks refuse whatever the identity: an invalid name.
    let r: ForwardResult = peers
        .call(
            id,
            &addr,
            "/cluster/write",
            &fwd(c.files.api_key.identity(), create("a/b")),
            t,
        )
        .await
        .unwrap();
    assert_eq!(refused(r).0, 400);
    // The same forwarded for the admin works: the path members use is intact.
    let r: ForwardResult = peers
        .call(
            id,
            &addr,
            "/cluster/write",
            &fwd(c.files.api_key.identity(), create("by-admin")),
            t,
        )
        .await
        .unwrap();
    assert!(matches!(r, ForwardResult::Done), "{r:?}");

    // Members propose cache maintenance only: not policies, assignments or keys.
    let proposals = [
        Command::SetPolicy {
            name: "owned".into(),
            def: PolicyDef {
                allow: vec!["/v1/*".into()],
                deny: vec![],
            },
            at_ms: 1,
            by: "member".into(),
        },
        Command::Assign {
            identity: nobody.identity(),
            policy: "owned".into(),
        },
        Command::PutKey {
            name: "planted".into(),
            sealed: vec![0; 60],
            at_ms: 1,
        },
        Command::RetireNode { id: 1 },
    ];
    for cmd in &proposals {
        let r = peers
            .call::<_, serde_json::Value>(id, &addr, "/cluster/propose", cmd, t)
            .await;
        assert!(
            matches!(r, Err(PeerError::Remote { status: 403, .. })),
            "the leader committed {cmd:?} for a member: {r:?}"
        );
    }
    assert_eq!(policies(&c, leader).await, before);
    let a = send(
        &c.raw_client(),
        "GET",
        &c.url(leader, "/v1/key/describe/by-nobody"),
        None,
    )
    .await;
    assert_eq!(a.status, 404);

    // Snapshots come only from the leader, chunk by chunk: a follower's vote, or a chunk far
    // beyond what was received, is refused before anything is allocated.
    let term = c.client(leader).cluster_status().await.unwrap().term;
    let snapshot = |leader_id: u64, committed: bool, offset: u64| {
        let mut vote = openraft::Vote::new(term, leader_id);
        if committed {
            vote.commit();
        }
        openraft::raft::InstallSnapshotRequest::<kes_raft::types::TypeConfig> {
            vote,
            meta: openraft::SnapshotMeta {
                last_log_id: None,
                last_membership: Default::default(),
                snapshot_id: "forged".into(),
            },
            offset,
            data: vec![1, 2, 3],
            done: false,
        }
    };
    let target = (leader + 2) % 3;
    let (tid, taddr) = (target as u64 + 1, peer_addr(&c, target));
    let from_leader = peer_client(&c, leader);
    for (what, via, req) in [
        (
            "a follower's own vote",
            &peers,
            snapshot(member as u64 + 1, true, 0),
        ),
        (
            "an uncommitted vote",
            &peers,
            snapshot(member as u64 + 1, false, 0),
        ),
        (
            "the leader's vote from a follower",
            &peers,
            snapshot(id, true, 0),
        ),
        (
            "a chunk 1 TiB in",
            &from_leader,
            snapshot(id, true, 1 << 40),
        ),
    ] {
        let r = via
            .call::<_, serde_json::Value>(tid, &taddr, "/raft/snapshot", &req, t)
            .await;
        assert!(
            matches!(r, Err(PeerError::Remote { status: 403, .. })),
            "a snapshot with {what} was accepted: {r:?}"
        );
    }
    // The cluster still works.
    c.client(target).create_key("after").await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. No lock-out before authentication.

use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 TLS connector presenting the certificate of `key`.
fn connector(s: &ProcServer, key: &ApiKey) -> tokio_rustls::TlsConnector {
    let cert = ClientCert::from_api_key(key);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(s.ca.ca_der())).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(std::sync::Arc::new(AnyChain::new(&cert)));
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
}

/// A connector presenting a certificate nobody knows (any client can make one).
fn stranger_connector(s: &ProcServer) -> tokio_rustls::TlsConnector {
    connector(s, &ApiKey::generate())
}

fn admin_connector(s: &ProcServer) -> tokio_rustls::TlsConnector {
    connector(s, &s.admin)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `to` from the loopback address `from`.
async fn connect(
    connector: &tokio_rustls::TlsConnector,
    from: Ipv4Addr,
    to: SocketAddr,
) -> Option<Tls> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::from((from, 0))).ok()?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .ok()?
        .ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .ok()?
        .ok()
}

/// Reads until the server closes the connection or `within` passes; true if it closed.
async fn closed_within(tls: &mut Tls, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one HTTP/1.1 response head and returns its status.
async fn status_of(tls: &mut Tls, within: Duration) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&got);
    head.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_lock_out_the_admin() {
    // A small connection limit so that the flood exceeds it several times over; idle timeouts
    // long, so only the limits' eviction can make room.
    let s = ProcServer::start(
        "",
        "limits:\n  connections: 300\n  connections_per_ip: 5000\n  header_timeout: 5m\n  idle_timeout: 5m\n",
        &[],
    );
    s.wait_ready().await;
    let stranger = stranger_connector(&s);
    // 2,000 connections with completed handshakes, from 100 addresses, none sending a request.
    let mut held = Vec::new();
    for i in 0..2000u32 {
        let from = Ipv4Addr::new(127, 0, 1 + (i % 100) as u8, 1 + (i / 100) as u8);
        if let Some(c) = connect(&stranger, from, s.addr).await {
            held.push(c);
        }
    }
    assert!(
        held.len() >= 300,
        "the flood itself failed: {} connections",
        held.len()
    );
    // The admin, on new connections, is served at once, again and again.
    for i in 0..20 {
        let c = s.admin_client();
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.put(s.url(&format!("/v1/key/create/k{i}"))).send(),
        )
        .await;
        let ok = matches!(&r, Ok(Ok(resp)) if resp.status() == 200);
        assert!(
            ok,
            "request {i} of the admin was not served during the flood after {:?}: {r:?}",
            t0.elapsed()
        );
    }
    // The strangers' idle connections are what made room.
    let mut closed = 0;
    for c in held.iter_mut() {
        if closed_within(c, Duration::from_millis(1)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1000, "only {closed} idle connections were closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let s = ProcServer::start(
        "",
        "limits:\n  connections: 1000\n  connections_per_ip: 50\n  header_timeout: 5m\n  idle_timeout: 5m\n",
        &[],
    );
    s.wait_ready().await;
    let stranger = stranger_connector(&s);
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Some(c) = connect(&stranger, Ipv4Addr::new(127, 0, 0, 2), s.addr).await {
            held.push(c);
        }
    }
    // At most 50 of them stay open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = 0;
    for c in held.iter_mut() {
        if !closed_within(c, Duration::from_millis(5)).await {
            open += 1;
        }
    }
    assert!(
        open <= 50,
        "{open} connections from one address stayed open"
    );
    let a = send(
        &s.admin_client(),
        "PUT",
        &s.url("/v1/key/create/mine"),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let s = ProcServer::start(
        "",
        "limits:\n  header_timeout: 1s\n  idle_timeout: 2s\n  body_timeout: 1s\n",
        &[],
    );
    s.wait_ready().await;
    let lo = Ipv4Addr::LOCALHOST;
    let stranger = stranger_connector(&s);
    let admin = admin_connector(&s);

    // No request at all after the handshake.
    let mut c = connect(&stranger, lo, s.addr).await.unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(6)).await,
        "an idle connection stayed open"
    );

    // Headers that never end.
    let mut c = connect(&stranger, lo, s.addr).await.unwrap();
    c.write_all(b"PUT /v1/key/create/slow HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(6)).await,
        "slow headers kept the connection"
    );

    // Idle between two requests.
    let mut c = connect(&admin, lo, s.addr).await.unwrap();
    c.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut c, Duration::from_secs(5)).await, Some(200));
    assert!(
        closed_within(&mut c, Duration::from_secs(8)).await,
        "an idle keep-alive connection stayed open"
    );

    // Slow headers on a connection that already served a request.
    let mut c = connect(&admin, lo, s.addr).await.unwrap();
    c.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut c, Duration::from_secs(5)).await, Some(200));
    c.write_all(b"GET /v1/status HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(6)).await,
        "slow headers of a second request kept the connection"
    );

    // A body that never arrives: the authorised caller gets 408 once the body timeout passes.
    let mut c = connect(&admin, lo, s.addr).await.unwrap();
    c.write_all(
        b"PUT /v1/key/import/never HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    assert_eq!(status_of(&mut c, Duration::from_secs(6)).await, Some(408));

    // An unauthorised caller is answered before its body is read (it never comes).
    let mut c = connect(&stranger, lo, s.addr).await.unwrap();
    c.write_all(
        b"POST /v1/key/encrypt/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(
        status_of(&mut c, Duration::from_millis(900)).await,
        Some(403)
    );
}

#[tokio::test]
async fn request_heads_must_arrive_within_the_header_timeout() {
    // The idle timeout is long: only the header timeout can close these connections.
    let s = ProcServer::start(
        "",
        "limits:\n  header_timeout: 1s\n  idle_timeout: 1m\n",
        &[],
    );
    s.wait_ready().await;
    let lo = Ipv4Addr::LOCALHOST;
    let admin = admin_connector(&s);
    let status = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n";

    // Requests 600 ms apart on one keep-alive connection, 3 s in all: every request starts the
    // head clock anew, so none of them is cut.
    let mut c = connect(&admin, lo, s.addr).await.unwrap();
    for i in 0..5 {
        c.write_all(status).await.unwrap();
        assert_eq!(
            status_of(&mut c, Duration::from_secs(5)).await,
            Some(200),
            "request {i} on the keep-alive connection"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    // The next head trickles in, a byte every 200 ms, after the connection was quiet: it is
    // cut about a second after its first byte although bytes keep coming.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let head = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in head.iter() {
        if c.write_all(&[*byte]).await.is_err()
            || closed_within(&mut c, Duration::from_millis(200)).await
        {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        closed,
        "a head trickling in for {took:?} kept the connection"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "the trickled head was cut after {took:?}, not about a second"
    );

    // The same right after a request, while the connection is busy with requests.
    let mut c = connect(&admin, lo, s.addr).await.unwrap();
    c.write_all(status).await.unwrap();
    assert_eq!(status_of(&mut c, Duration::from_secs(5)).await, Some(200));
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in head.iter() {
        if c.write_all(&[*byte]).await.is_err()
            || closed_within(&mut c, Duration::from_millis(200)).await
        {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        closed,
        "a head trickling in for {took:?} kept the connection"
    );
    assert!(
        took < Duration::from_secs(4),
        "the trickled head was cut after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_http2_bodies_stay_within_the_memory_bound() {
    // Bound stated in the README: per connection at most CONN_BODY_BUDGET (2 MiB) of bodies
    // being read plus the HTTP/2 connection window (256 KiB) buffered, whatever the number
    // of streams; this flood of 4 connections x 250 streams, each trying to send almost 1 MB,
    // would pin about 1 GB without the bounds.
    let s = ProcServer::start("", "limits:\n  body_timeout: 8s\n", &[]);
    s.wait_ready().await;
    send(&s.admin_client(), "PUT", &s.url("/v1/key/create/k"), None).await;
    let before = rss_kib(s.pid());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = s.client(Some(&ClientCert::from_api_key(&s.admin)), Proto::Http2);
        for _ in 0..250 {
            let client = client.clone();
            let url = s.url("/v1/key/encrypt/k");
            tasks.push(tokio::spawn(async move {
                let chunks = futures_util::stream::iter(
                    (0..60).map(|_| Ok::<Vec<u8>, std::io::Error>(vec![b' '; 16 * 1024])),
                );
                let body = futures_util::StreamExt::chain(chunks, futures_util::stream::pending());
                let _ = client
                    .post(url)
                    .header("content-length", "1000000")
                    .body(reqwest::Body::wrap_stream(body))
                    .send()
                    .await;
            }));
        }
    }
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_kib(s.pid()));
    }
    // The server still answers others meanwhile.
    let a = send(&s.admin_client(), "GET", &s.url("/v1/status"), None).await;
    assert_eq!(a.status, 200);
    for t in tasks {
        t.abort();
    }
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 96 * 1024,
        "resident memory grew by {grew} KiB under the flood"
    );
}

// ---------------------------------------------------------------------------------------------
// The node-to-node protocol carries a version; nodes of different versions refuse each other.

/// A client of node `i`'s node port that sends raw requests, with node `from`'s certificate.
fn raw_peer(c: &ProcCluster, from: usize, to: usize) -> reqwest::Client {
    let d = c.files.nodes[from].config.parent().unwrap();
    let tls = kes_config::ClusterTls {
        key: d.join("peer.key"),
        cert: d.join("peer.cert"),
        ca: c.files.dir.join("cluster-ca.cert"),
    };
    let addr: SocketAddr = peer_addr(c, to).parse().unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(kes_cluster::peer::tls::client_config(&tls).unwrap())
        .resolve(&format!("kes-node-{}", to + 1), addr)
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn peers_of_another_protocol_version_are_refused() {
    use kes_cluster::peer::{PROTOCOL_HEADER, PROTOCOL_VERSION};
    let c = ProcCluster::start(3, "30s", "");
    c.wait_all_ready(60).await;
    let member = raw_peer(&c, 1, 0);
    let url = format!(
        "https://kes-node-1:{}/cluster/applied",
        c.files.nodes[0].peer_port
    );
    let body = rmp_serde::to_vec_named(&()).unwrap();

    // A node of the first release sends no version: refused, and told why.
    let old = member.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(old.status(), 400);
    let why = old.text().await.unwrap();
    assert!(
        why.contains("peer protocol version 1 refused")
            && why.contains(&format!("this node speaks version {PROTOCOL_VERSION}")),
        "{why}"
    );
    // A newer one too.
    let newer = member
        .post(&url)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION + 1)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(newer.status(), 400);
    // The same version is served, and the answer carries it.
    let same = member
        .post(&url)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    assert_eq!(
        same.headers().get(PROTOCOL_HEADER).unwrap(),
        &PROTOCOL_VERSION.to_string()
    );
    assert!(c.log(0).contains("peer protocol version 1 refused"));

    // The other way round: a peer that answers without the version (an older node 3, on a
    // port of its own) is not believed.
    let d = c.files.nodes[2].config.parent().unwrap();
    let tls = kes_config::ClusterTls {
        key: d.join("peer.key"),
        cert: d.join("peer.cert"),
        ca: c.files.dir.join("cluster-ca.cert"),
    };
    let acceptor =
        tokio_rustls::TlsAcceptor::from(kes_cluster::peer::tls::server_config(&tls).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let svc = hyper::service::service_fn(|_req| async {
                let applied = rmp_serde::to_vec_named(&7u64).unwrap();
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(applied),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc),
            );
        }
    });
    let peers = peer_client(&c, 0);
    let r = peers
        .call::<_, u64>(
            3,
            &old_addr.to_string(),
            "/cluster/applied",
            &(),
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(r, Err(PeerError::Version { ours, .. }) if ours == PROTOCOL_VERSION),
        "{r:?}"
    );
    server.abort();
}

/// A node stopped for a restart (SIGTERM, as systemd and Kubernetes stop it) stops accepting
/// at once but answers the requests it has started; only then does it exit. Without the drain
/// the process exited under the request, and a client saw its connection drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_answers_the_requests_it_started() {
    let s = ProcServer::start("", "", &[]);
    s.wait_ready().await;
    let admin = admin_connector(&s);
    let lo = Ipv4Addr::LOCALHOST;
    let mut c = connect(&admin, lo, s.addr).await.unwrap();
    // A request in progress: its headers are in, its body is still on the way.
    let body = br#"{"context":"e30="}"#;
    c.write_all(
        format!(
            "POST /v1/key/create/drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n\
             POST /v1/key/generate/drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&mut c, Duration::from_secs(5)).await, Some(200));
    c.write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = s.pid().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    // The listener closes at once: new connections are refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(s.addr).await.is_err(),
        "a stopping server still accepted a connection"
    );
    // The rest of the body, within the close grace: the started request is answered.
    c.write_all(&body[5..]).await.unwrap();
    assert_eq!(
        status_of(&mut c, Duration::from_secs(5)).await,
        Some(200),
        "the request in progress was dropped: {}",
        s.log()
    );
    // Then the connection closes and the process exits.
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
}
