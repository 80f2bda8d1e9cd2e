//! `kes ca` as an operator runs it: the files it writes (parsed as X.509: usages, names, CA
//! flags, modes), certificates it issues forming a working cluster, and a node refusing to start
//! with a node certificate its peers would refuse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kes_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(kes_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("KES_CA_CERT")
        .env_remove("KES_CA_KEY")
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let r = kes_in(dir, args);
    assert!(r.ok, "kes {args:?} failed: {}", r.stderr);
    r.stdout
}

fn der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let mut certs = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem);
    let der: rustls::pki_types::CertificateDer = certs.next().unwrap().unwrap();
    der.to_vec()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

struct Cert {
    der: Vec<u8>,
}

impl Cert {
    fn load(path: &Path) -> Self {
        Self { der: der(path) }
    }
    fn x509(&self) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(&self.der).unwrap().1
    }
    fn ekus(&self) -> (bool, bool) {
        let c = self.x509();
        let eku = c.extended_key_usage().unwrap().expect("an EKU extension");
        (eku.value.server_auth, eku.value.client_auth)
    }
    fn dns(&self) -> Vec<String> {
        self.sans()
            .into_iter()
            .filter_map(|s| s.strip_prefix("dns:").map(str::to_owned))
            .collect()
    }
    fn sans(&self) -> Vec<String> {
        let c = self.x509();
        let Some(san) = c.subject_alternative_name().unwrap() else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    format!(
                        "ip:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap())
                    )
                }
                other => format!("{other:?}"),
            })
            .collect()
    }
}

#[test]
fn ca_new_and_issue_write_the_right_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(
        d,
        &["ca", "new", "--name", "acme kes CA", "--expiry", "87600h"],
    );
    assert!(out.contains("ca.cert") && out.contains("ca.key"), "{out}");

    // The CA: CA:TRUE (critical), keyCertSign and cRLSign, self-signed, private key 0600.
    let ca = Cert::load(&d.join("ca.cert"));
    let c = ca.x509();
    let bc = c.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = c.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert_eq!(c.subject(), c.issuer());
    assert_eq!(
        c.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "acme kes CA"
    );
    let v = c.validity();
    assert!(v.not_after.timestamp() - v.not_before.timestamp() >= 87600 * 3600);
    assert_eq!(mode(&d.join("ca.key")), 0o600);
    assert_eq!(mode(&d.join("ca.cert")), 0o644);
    assert!(c.verify_signature(None).is_ok());

    // Server: serverAuth only, the names given, issued by the CA.
    ok(
        d,
        &[
            "ca",
            "issue",
            "server",
            "--dns",
            "kes1.example.net,kes.example.net",
            "--ip",
            "10.0.0.1",
            "--expiry",
            "720h",
        ],
    );
    let server = Cert::load(&d.join("server.cert"));
    assert_eq!(server.ekus(), (true, false));
    assert_eq!(
        server.sans(),
        vec!["dns:kes1.example.net", "dns:kes.example.net", "ip:10.0.0.1"]
    );
    let s = server.x509();
    assert!(!s.is_ca());
    assert!(s.key_usage().unwrap().unwrap().value.digital_signature());
    assert!(!s.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(s.issuer(), c.subject());
    assert!(s.verify_signature(Some(c.public_key())).is_ok());
    let v = s.validity();
    assert!((v.not_after.timestamp() - v.not_before.timestamp() - 720 * 3600).abs() <= 600);
    assert_eq!(mode(&d.join("server.key")), 0o600);

    // Client: clientAuth only; the identity printed is the certificate's.
    let out = ok(
        d,
        &[
            "ca",
            "issue",
            "client",
            "--name",
            "minio",
            "--key-type",
            "ed25519",
            "--json",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let client = Cert::load(&d.join("client.cert"));
    assert_eq!(client.ekus(), (false, true));
    let identity = kes_tls::certgen::certificate_identity(&client.der).unwrap();
    assert_eq!(json["identity"], identity.as_str());
    let of = ok(d, &["identity", "of", "client.cert"]);
    assert!(of.contains(&identity), "{of}");
    assert_eq!(
        client
            .x509()
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "minio"
    );
    assert_eq!(mode(&d.join("client.key")), 0o600);

    // Node: both usages, kes-node-<id> first, then the host's names; RSA 3072 on request.
    ok(
        d,
        &[
            "ca",
            "issue",
            "node",
            "--id",
            "7",
            "--dns",
            "kes7.example.net",
            "--ip",
            "10.0.0.7",
            "--key-type",
            "rsa-3072",
        ],
    );
    let node = Cert::load(&d.join("node7.cert"));
    assert_eq!(node.ekus(), (true, true));
    assert_eq!(
        node.sans(),
        vec!["dns:kes-node-7", "dns:kes7.example.net", "ip:10.0.0.7"]
    );
    assert_eq!(node.x509().public_key().parsed().unwrap().key_size(), 3072);
    assert!(node.x509().verify_signature(Some(c.public_key())).is_ok());
    assert_eq!(mode(&d.join("node7.key")), 0o600);
    kes_tls::check::check_node_certificate(&d.join("node7.cert"), &d.join("ca.cert"), 7).unwrap();

    // Bad input is refused with a message naming the problem, and nothing is overwritten.
    let before = std::fs::read(d.join("server.cert")).unwrap();
    for (args, says) in [
        (
            vec!["ca", "issue", "server", "--dns", "x"],
            "already exists",
        ),
        (
            vec![
                "ca", "issue", "server", "--cert", "s2.cert", "--key", "s2.key",
            ],
            "--dns",
        ),
        (vec!["ca", "issue", "node", "--id", "0"], "--id"),
        (
            vec![
                "ca", "issue", "client", "--cert", "c.cert", "--key", "c.key", "--expiry", "20y",
            ],
            "CA certificate expires",
        ),
        (
            vec![
                "ca",
                "issue",
                "client",
                "--cert",
                "c.cert",
                "--key",
                "c.key",
                "--key-type",
                "dsa",
            ],
            "unknown key type",
        ),
        (
            vec![
                "ca", "issue", "client", "--cert", "c.cert", "--key", "c.key", "--expiry", "soon",
            ],
            "not a duration",
        ),
        (
            vec![
                "ca",
                "issue",
                "client",
                "--cert",
                "c.cert",
                "--key",
                "c.key",
                "--ca-cert",
                "missing.cert",
            ],
            "missing.cert",
        ),
        (
            vec![
                "ca",
                "issue",
                "client",
                "--cert",
                "c.cert",
                "--key",
                "c.key",
                "--ca-cert",
                "server.cert",
                "--ca-key",
                "server.key",
            ],
            "not a CA",
        ),
        (
            vec![
                "ca",
                "issue",
                "client",
                "--cert",
                "c.cert",
                "--key",
                "c.key",
                "--ca-key",
                "server.key",
            ],
            "does not belong",
        ),
        (
            vec![
                "ca", "issue", "server", "--cert", "c.cert", "--key", "c.key", "--dns", "bad name",
            ],
            "invalid DNS name",
        ),
        (
            vec![
                "ca",
                "issue",
                "server",
                "--cert",
                "no/dir/c.cert",
                "--key",
                "c.key",
                "--dns",
                "x",
            ],
            "does not exist",
        ),
        (vec!["ca", "new"], "already exists"),
    ] {
        let r = kes_in(d, &args);
        assert!(!r.ok, "{args:?} succeeded");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    assert_eq!(std::fs::read(d.join("server.cert")).unwrap(), before);
    assert!(!d.join("c.cert").exists() && !d.join("c.key").exists());
}

/// Replaces node `i`'s node-to-node certificate and key.
fn put_node_cert(c: &kes_server::local::LocalCluster, i: usize, cert: &Path, key: &Path) {
    let node_dir = c.nodes[i].config.parent().unwrap().to_owned();
    std::fs::copy(cert, node_dir.join("peer.cert")).unwrap();
    std::fs::copy(key, node_dir.join("peer.key")).unwrap();
}

#[test]
fn a_node_refuses_to_start_with_an_unusable_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let opts = kes_server::local::LocalOptions {
        nodes: 1,
        ports: Some(vec![(free_port(), free_port())]),
        ..Default::default()
    };
    let files = kes_server::local::LocalCluster::generate(dir.path(), &opts).unwrap();
    let d = dir.path();
    let cluster_ca: [&str; 4] = ["--ca-cert", "cluster-ca.cert", "--ca-key", "cluster-ca.key"];
    let api_ca: [&str; 4] = ["--ca-cert", "ca.cert", "--ca-key", "ca.key"];
    let issue = |kind: &str, name: &str, ca: &[&str], extra: &[&str]| -> (PathBuf, PathBuf) {
        let (cert, key) = (format!("{name}.cert"), format!("{name}.key"));
        let mut args = vec!["ca", "issue", kind, "--cert", &cert, "--key", &key];
        args.extend_from_slice(ca);
        args.extend_from_slice(extra);
        ok(d, &args);
        (d.join(cert), d.join(key))
    };
    let cases = [
        (
            issue("node", "other-id", &cluster_ca, &["--id", "2"]),
            "lacks the DNS name kes-node-1",
        ),
        (
            issue("node", "other-ca", &api_ca, &["--id", "1"]),
            "not issued by the cluster CA",
        ),
        (
            issue("client", "client-only", &cluster_ca, &[]),
            "lacks serverAuth",
        ),
        (
            issue(
                "server",
                "server-only",
                &cluster_ca,
                &["--dns", "kes-node-1"],
            ),
            "lacks clientAuth",
        ),
    ];
    let node_cert = files.nodes[0].config.with_file_name("peer.cert");
    for ((cert, key), says) in cases {
        put_node_cert(&files, 0, &cert, &key);
        let mut p = Child(
            Command::new(kes_bin())
                .args(["server", "--config"])
                .arg(&files.nodes[0].config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let status = p.wait_exit(20).expect("the node did not exit");
        assert!(!status.success());
        let mut stderr = String::new();
        std::io::Read::read_to_string(p.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(stderr.contains(says), "{}: {stderr}", cert.display());
        assert!(
            stderr.contains(&node_cert.display().to_string()),
            "names the file: {stderr}"
        );
        assert!(
            stderr.contains("kes ca issue node --id 1"),
            "says the fix: {stderr}"
        );
        // Nothing was started: the node never wrote its Raft state.
        assert!(!files.nodes[0].data_dir.exists(), "{stderr}");
    }
}

#[tokio::test]
async fn certificates_from_kes_ca_replace_a_clusters_certificates() {
    // A running cluster gets new node certificates of every key type the CLI offers, issued by
    // `kes ca issue node` from its cluster CA, and new API certificates from `kes ca issue
    // server`; restarted, it serves the key it had.
    let mut c = ProcCluster::start(3, "1h", "");
    c.wait_all_ready(60).await;
    c.client(0).create_key("from-kes-ca").await.unwrap();
    let d = c.files.dir.clone();
    for (i, kt) in ["rsa-3072", "ed25519", "ecdsa-p384"].iter().enumerate() {
        let id = (i + 1).to_string();
        let (node_cert, node_key) = (format!("n{id}.cert"), format!("n{id}.key"));
        ok(
            &d,
            &[
                "ca",
                "issue",
                "node",
                "--id",
                &id,
                "--ip",
                "127.0.0.1",
                "--key-type",
                kt,
                "--ca-cert",
                "cluster-ca.cert",
                "--ca-key",
                "cluster-ca.key",
                "--cert",
                &node_cert,
                "--key",
                &node_key,
            ],
        );
        let (api_cert, api_key) = (format!("a{id}.cert"), format!("a{id}.key"));
        ok(
            &d,
            &[
                "ca",
                "issue",
                "server",
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
                "--key-type",
                kt,
                "--cert",
                &api_cert,
                "--key",
                &api_key,
            ],
        );
        c.kill(i);
        put_node_cert(&c.files, i, &d.join(node_cert), &d.join(node_key));
        let node_dir = c.files.nodes[i].config.parent().unwrap().to_owned();
        std::fs::copy(d.join(api_cert), node_dir.join("api.cert")).unwrap();
        std::fs::copy(d.join(api_key), node_dir.join("api.key")).unwrap();
    }
    for i in 0..3 {
        c.start_node(i);
    }
    c.wait_all_ready(60).await;
    let dek = c.client(1).generate_key("from-kes-ca", b"").await.unwrap();
    let plain = c
        .client(2)
        .decrypt("from-kes-ca", &dek.ciphertext.0, b"")
        .await
        .unwrap();
    assert_eq!(plain, dek.plaintext.0);
    for i in 0..3 {
        let served = Cert::load(&c.files.nodes[i].config.with_file_name("peer.cert"));
        assert_eq!(served.dns()[0], format!("kes-node-{}", i + 1));
    }
}
