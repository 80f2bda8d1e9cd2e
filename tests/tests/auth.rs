//! Identities, policies and the TLS modes, over real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_crypto::ApiKey;
use kes_tests::*;
use kes_tls::certgen::KeyKind;
use rustls::pki_types::CertificateDer;
use std::net::{IpAddr, Ipv4Addr};

fn policy_yaml(name: &str, allow: &[&str], deny: &[&str], ids: &[String]) -> String {
    let list = |v: Vec<String>| {
        if v.is_empty() {
            " []\n".to_owned()
        } else {
            v.iter().map(|s| format!("\n    - {s}")).collect::<String>() + "\n"
        }
    };
    format!(
        "  {name}:\n    allow:{}    deny:{}    identities:{}",
        list(allow.iter().map(|s| s.to_string()).collect()),
        list(deny.iter().map(|s| s.to_string()).collect()),
        list(ids.to_vec()),
    )
}

#[tokio::test]
async fn policies_allow_deny_prefix_empty_unknown() {
    let app = ApiKey::generate();
    let empty = ApiKey::generate();
    let stranger = ApiKey::generate();
    let extra = format!(
        "policy:\n{}{}",
        policy_yaml(
            "app",
            &[
                "/v1/key/create/app*",
                "/v1/key/generate/app*",
                "/v1/key/decrypt/app*",
                "/v1/status"
            ],
            &["/v1/key/generate/app-secret*"],
            &[app.identity()],
        ),
        policy_yaml("nothing", &[], &[], &[empty.identity()]),
    );
    let s = TestServer::start(ServerOpts {
        extra_yaml: extra,
        ..Default::default()
    })
    .await;
    let admin = s.admin_client();
    for k in ["app-1", "app-secret-1", "other"] {
        assert_eq!(
            send(&admin, "PUT", &s.url(&format!("/v1/key/create/{k}")), None)
                .await
                .status,
            200
        );
    }
    let ac = s.api_key_client(&app);
    assert_eq!(
        send(&ac, "PUT", &s.url("/v1/key/generate/app-1"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        send(&ac, "PUT", &s.url("/v1/key/create/app-2"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        send(&ac, "GET", &s.url("/v1/status"), None).await.status,
        200
    );
    // deny wins over the allow prefix
    send(&ac, "PUT", &s.url("/v1/key/generate/app-secret-1"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
    // not allowed at all
    send(&ac, "PUT", &s.url("/v1/key/generate/other"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
    send(&ac, "DELETE", &s.url("/v1/key/delete/app-1"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
    // exact pattern: "/v1/status" does not allow "/v1/status/"-like paths or others
    send(&ac, "GET", &s.url("/v1/metrics"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
    // authorization runs before name validation
    send(&ac, "PUT", &s.url("/v1/key/generate/bad.name"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
    send(&ac, "PUT", &s.url("/v1/key/generate/app.bad"), None)
        .await
        .assert_error(
            400,
            "key name 'app.bad' is empty, too long or contains invalid characters",
        );
    // the empty policy denies everything; an unknown identity is denied
    for key in [&empty, &stranger] {
        let c = s.api_key_client(key);
        send(&c, "GET", &s.url("/v1/status"), None)
            .await
            .assert_error(403, "not authorized: insufficient permissions");
        send(&c, "PUT", &s.url("/v1/key/generate/app-1"), None)
            .await
            .assert_error(403, "not authorized: insufficient permissions");
    }
    // the project's client maps the canonical errors
    let kc = s.kes_client(&app);
    let e = kc.generate_key("other", b"").await.unwrap_err();
    assert!(e.is_not_allowed(), "{e:?}");
    let e = kc.create_key("app-1").await.unwrap_err();
    assert!(e.is_key_exists(), "{e:?}");
}

#[tokio::test]
async fn certificate_identities_of_every_key_type() {
    let ca = std::sync::Arc::new(kes_tls::certgen::TestCa::new().unwrap());
    let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let ed = ca.issue("ed", &[], &lo, KeyKind::Ed25519).unwrap();
    let p256 = ca.issue("p256", &[], &lo, KeyKind::EcdsaP256).unwrap();
    let p384 = ca.issue("p384", &[], &lo, KeyKind::EcdsaP384).unwrap();
    let rsa = rsa_cert(&ca);
    let ids: Vec<String> = [&ed, &p256, &p384, &rsa]
        .iter()
        .map(|c| kes_tls::certgen::certificate_identity(&c.cert_der).unwrap())
        .collect();
    let extra = format!(
        "policy:\n{}",
        policy_yaml("status", &["/v1/identity/self/describe"], &[], &ids)
    );
    for server_kind in [KeyKind::Ed25519, KeyKind::EcdsaP256] {
        let s = TestServer::start_with(
            ServerOpts {
                extra_yaml: extra.clone(),
                key_kind: server_kind,
                ..Default::default()
            },
            ca.clone(),
            ApiKey::generate(),
            None,
        )
        .await;
        for (cert, id) in [&ed, &p256, &p384, &rsa].iter().zip(&ids) {
            let c = s.client(Some(&ClientCert::from_certified(cert)), Proto::Any);
            let me = send(&c, "GET", &s.url("/v1/identity/self/describe"), None).await;
            assert_eq!(me.status, 200, "{}", me.text());
            assert_eq!(me.json()["identity"], id.as_str());
        }
    }
}

/// An RSA-2048 client certificate signed by the test CA (rcgen cannot generate RSA keys).
fn rsa_cert(ca: &kes_tls::certgen::TestCa) -> kes_tls::certgen::CertifiedKey {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let der = key.to_pkcs8_der().unwrap();
    ca.issue_with_key_der("rsa", der.as_bytes()).unwrap()
}

#[tokio::test]
async fn api_key_identity_matches_certificate() {
    let s = TestServer::start(ServerOpts::default()).await;
    // The admin is configured by API-key identity; a certificate derived from the key is admin.
    let me = send(
        &s.admin_client(),
        "GET",
        &s.url("/v1/identity/self/describe"),
        None,
    )
    .await
    .json();
    assert_eq!(me["identity"], s.admin.identity());
    assert_eq!(me["admin"], true);
    // A fresh certificate from the same key (new serial and validity) is the same identity.
    let me2 = send(
        &s.admin_client(),
        "GET",
        &s.url("/v1/identity/self/describe"),
        None,
    )
    .await
    .json();
    assert_eq!(me2["identity"], me["identity"]);
}

#[tokio::test]
async fn more_than_one_leaf_and_ca_in_chain() {
    let s = TestServer::start(ServerOpts::default()).await;
    let a = kes_tls::certgen::api_key_certificate(&s.admin).unwrap();
    let other = kes_tls::certgen::api_key_certificate(&ApiKey::generate()).unwrap();
    // leaf + CA: the CA is ignored, the identity is the leaf's.
    let with_ca = ClientCert {
        certs: vec![
            CertificateDer::from(a.cert_der.clone()),
            CertificateDer::from(s.ca.ca_der()),
        ],
        key_der: a.key_der.to_vec(),
    };
    let c = s.client(Some(&with_ca), Proto::Any);
    assert_eq!(
        send(&c, "GET", &s.url("/v1/status"), None).await.status,
        200
    );
    // two leaves: KES's 400.
    let two = ClientCert {
        certs: vec![
            CertificateDer::from(a.cert_der.clone()),
            CertificateDer::from(other.cert_der.clone()),
        ],
        key_der: a.key_der.to_vec(),
    };
    let c = s.client(Some(&two), Proto::Any);
    send(&c, "GET", &s.url("/v1/status"), None)
        .await
        .assert_error(400, "tls: received more than one client certificate");
}

#[tokio::test]
async fn tls_auth_on_verifies_chains() {
    let s = TestServer::start(ServerOpts {
        verify_clients: true,
        ..Default::default()
    })
    .await;
    // A self-signed API-key certificate does not chain to tls.ca: the handshake fails.
    let c = s.admin_client();
    assert!(c.get(s.url("/v1/status")).send().await.is_err());
    // A certificate issued by the CA passes; its identity is then subject to policy.
    let issued = s.ca.issue("client", &[], &[], KeyKind::EcdsaP256).unwrap();
    let c = s.client(Some(&ClientCert::from_certified(&issued)), Proto::Any);
    send(&c, "GET", &s.url("/v1/status"), None)
        .await
        .assert_error(403, "not authorized: insufficient permissions");
    let v = send(&c, "GET", &s.url("/version"), None).await;
    assert_eq!(v.status, 200);
}

#[tokio::test]
async fn skip_auth_makes_certificates_optional() {
    let extra = "api:\n  /v1/status:\n    skip_auth: true\n  /v1/ready:\n    skip_auth: true\n    timeout: 3s\n";
    let s = TestServer::start(ServerOpts {
        extra_yaml: extra.into(),
        ..Default::default()
    })
    .await;
    let anon = s.client(None, Proto::Any);
    assert_eq!(
        send(&anon, "GET", &s.url("/v1/status"), None).await.status,
        200
    );
    assert_eq!(
        send(&anon, "GET", &s.url("/v1/ready"), None).await.status,
        200
    );
    assert_eq!(
        send(&anon, "GET", &s.url("/version"), None).await.status,
        200
    );
    send(&anon, "PUT", &s.url("/v1/key/create/x"), None)
        .await
        .assert_error(400, "tls: client certificate is required");
    let api = send(&s.admin_client(), "GET", &s.url("/v1/api"), None)
        .await
        .json();
    let ready = api
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/v1/ready")
        .unwrap();
    assert_eq!(ready["timeout"], 3);
}

#[tokio::test]
async fn tls12_and_tls13() {
    let s = TestServer::start(ServerOpts {
        key_kind: KeyKind::Ed25519,
        ..Default::default()
    })
    .await;
    let cert = ClientCert::from_api_key(&s.admin);
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(s.ca.ca_der())).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                cert.certs.clone(),
                rustls::pki_types::PrivateKeyDer::try_from(cert.key_der.clone()).unwrap(),
            )
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
}

#[tokio::test]
async fn slow_handshakes_do_not_block_others() {
    let s = TestServer::start(ServerOpts::default()).await;
    // Connections that never start a handshake must not hold up real clients.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    let a = send(&s.admin_client(), "GET", &s.url("/v1/status"), None).await;
    assert_eq!(a.status, 200);
    drop(idle);
}

#[tokio::test]
async fn certificates_reload() {
    let s = TestServer::start(ServerOpts::default()).await;
    let before = server_cert_der(&s).await;
    let fresh =
        s.ca.issue(
            "localhost",
            &["localhost".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            KeyKind::EcdsaP256,
        )
        .unwrap();
    write(&s.dir.path().join("server.cert"), &fresh.cert_pem);
    write(&s.dir.path().join("server.key"), fresh.key_pem.as_bytes());
    // The running server keeps its certificate until told to reload.
    assert_eq!(server_cert_der(&s).await, before);
    s.reload();
    assert_eq!(server_cert_der(&s).await, fresh.cert_der);
}

async fn server_cert_der(s: &TestServer) -> Vec<u8> {
    let cfg = client_tls(
        &s.ca,
        Some(&ClientCert::from_api_key(&s.admin)),
        Proto::Http1,
    );
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
