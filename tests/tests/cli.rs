//! The `kes` binary as a user runs it: `kes server --dev` followed by the client commands the
//! README shows, `kes server --config` with SIGHUP and SIGTERM, and configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

struct Dev {
    server: Child,
    endpoint: String,
    api_key: String,
}

fn start_dev() -> Dev {
    let port = free_port();
    let mut child = Command::new(kes_bin())
        .args(["server", "--dev", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Child(child);
    let mut endpoint = String::new();
    let mut api_key = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("Endpoint"), Some(e), _) => endpoint = e.to_owned(),
            (Some("API"), Some("key"), Some(k)) => api_key = k.to_owned(),
            (Some("export"), Some(v), _) if v.starts_with("MINIO_KMS_KES_CAPATH=") => break,
            _ => {}
        }
    }
    assert!(
        endpoint.starts_with("https://127.0.0.1:"),
        "banner shows the endpoint"
    );
    assert!(api_key.starts_with("kes:v1:"), "banner shows the API key");
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), 10);
    let dev = Dev {
        server,
        endpoint,
        api_key,
    };
    // The API port opens once the node can serve; this also checks the answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !kes(&dev, &["key", "dek", "no-such-key"])
        .stderr
        .contains("key does not exist")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "dev server never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    dev
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kes(dev: &Dev, args: &[&str]) -> Out {
    let out = Command::new(kes_bin())
        .args(args)
        .arg("-k")
        .env("KES_SERVER", &dev.endpoint)
        .env("KES_API_KEY", &dev.api_key)
        .env_remove("MINIO_KES_SERVER")
        .env_remove("MINIO_KES_API_KEY")
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn ok(o: Out) -> String {
    assert!(o.ok, "command failed: {}", o.stderr);
    o.stdout
}

#[test]
fn dev_server_and_client_commands() {
    let dev = start_dev();

    ok(kes(&dev, &["key", "create", "my-key", "second-key"]));
    let info: serde_json::Value =
        serde_json::from_str(&ok(kes(&dev, &["key", "info", "my-key", "--json"]))).unwrap();
    assert_eq!(info["name"], "my-key");
    let ls = ok(kes(&dev, &["key", "ls"]));
    assert!(ls.contains("my-key") && ls.contains("second-key"), "{ls}");
    let ls = ok(kes(&dev, &["ls", "sec"]));
    assert!(ls.contains("second-key") && !ls.contains("my-key"), "{ls}");

    // dek: plaintext and ciphertext; decrypt gives the plaintext back (base64) with the context.
    let ctx = b64(br#"{"bucket":"bucket/object"}"#);
    let dek = ok(kes(&dev, &["key", "dek", "my-key", &ctx]));
    let field = |name: &str| {
        dek.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in {dek}"))
    };
    let (plaintext, ciphertext) = (field("plaintext:"), field("ciphertext:"));
    let dec = ok(kes(&dev, &["key", "decrypt", "my-key", &ciphertext, &ctx]));
    assert_eq!(dec.trim(), plaintext);
    let wrong = kes(&dev, &["key", "decrypt", "my-key", &ciphertext]);
    assert!(!wrong.ok);
    assert!(
        wrong
            .stderr
            .contains("decryption failed: ciphertext is not authentic"),
        "{}",
        wrong.stderr
    );

    // encrypt a message and decrypt it.
    let ct = ok(kes(&dev, &["key", "encrypt", "my-key", "hello world"]));
    let pt = ok(kes(&dev, &["key", "decrypt", "my-key", ct.trim()]));
    assert_eq!(pt.trim(), b64(b"hello world"));

    // import, remove, and errors that name the problem.
    ok(kes(&dev, &["key", "import", "imported", &b64(&[5u8; 32])]));
    let e = kes(&dev, &["key", "create", "imported"]);
    assert!(
        !e.ok && e.stderr.contains("key already exists"),
        "{}",
        e.stderr
    );
    ok(kes(&dev, &["key", "rm", "my-key"]));
    let e = kes(&dev, &["key", "info", "my-key"]);
    assert!(
        !e.ok && e.stderr.contains("key does not exist"),
        "{}",
        e.stderr
    );
    let e = kes(&dev, &["key", "create", "bad.name"]);
    assert!(
        !e.ok && e.stderr.contains("key name 'bad.name'"),
        "{}",
        e.stderr
    );

    // status, identity, policy listing, metrics.
    let st = ok(kes(&dev, &["status", "--json"]));
    assert!(st.contains("\"version\""), "{st}");
    let me = ok(kes(&dev, &["identity", "info", "--json"]));
    assert!(me.contains("\"admin\":true"), "{me}");
    let ids = ok(kes(&dev, &["identity", "ls"]));
    let of = Command::new(kes_bin())
        .args(["identity", "of", &dev.api_key])
        .output()
        .unwrap();
    let identity = String::from_utf8_lossy(&of.stdout).into_owned();
    assert!(ids.contains(identity.trim()), "{ids} / {identity}");
    ok(kes(&dev, &["policy", "ls"]));
    let m = ok(kes(&dev, &["metric", "--count", "1"]));
    assert!(!m.trim().is_empty());

    // The server stops cleanly on SIGTERM.
    let mut server = dev.server;
    server.signal("TERM");
    let st = server.wait_exit(10).expect("server exits on SIGTERM");
    assert!(st.success(), "{st:?}");
}

#[test]
fn identity_new_writes_a_usable_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.key");
    let cert = dir.path().join("client.cert");
    let out = Command::new(kes_bin())
        .args([
            "identity",
            "new",
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--ip",
            "127.0.0.1",
            "client",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let of_cert = Command::new(kes_bin())
        .args(["identity", "of", cert.to_str().unwrap()])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&of_cert.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "identity is 64 hex characters: {id}");
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(
        kes_tls::certgen::pem_certificate_identity(&pem).unwrap(),
        id
    );
}

fn write_config(
    dir: &std::path::Path,
    port: u16,
    admin: &str,
    ca: &kes_tls::certgen::TestCa,
    extra: &str,
) -> std::path::PathBuf {
    let cert = ca
        .issue(
            "localhost",
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
            kes_tls::certgen::KeyKind::EcdsaP256,
        )
        .unwrap();
    write(&dir.join("server.cert"), &cert.cert_pem);
    write(&dir.join("server.key"), cert.key_pem.as_bytes());
    let yaml = format!(
        "address: 127.0.0.1:{port}\nadmin:\n  identity: ${{KES_TEST_ADMIN}}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\nkeystore:\n  fs:\n    path: {d}/keys\nkeys:\n  - name: preset-key\n{extra}",
        d = dir.display()
    );
    let _ = admin;
    let path = dir.join("config.yaml");
    write(&path, yaml);
    path
}

fn server_cert(port: u16, ca: &kes_tls::certgen::TestCa, admin: &kes_crypto::ApiKey) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = client_tls(ca, Some(&ClientCert::from_api_key(admin)), Proto::Http1);
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    })
}

#[test]
fn config_file_server_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let ca = kes_tls::certgen::TestCa::new().unwrap();
    let admin = kes_crypto::ApiKey::generate();
    let port = free_port();
    let config = write_config(dir.path(), port, &admin.identity(), &ca, "");
    let server = Child(
        Command::new(kes_bin())
            .args(["server", "--config", config.to_str().unwrap()])
            .env("KES_TEST_ADMIN", admin.identity())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), 10);
    // `keys:` were created at start, in the filesystem layout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !dir.path().join("keys/preset-key").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "configured key not created"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let before = server_cert(port, &ca, &admin);
    let fresh = ca
        .issue(
            "localhost",
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
            kes_tls::certgen::KeyKind::Ed25519,
        )
        .unwrap();
    write(&dir.path().join("server.cert"), &fresh.cert_pem);
    write(&dir.path().join("server.key"), fresh.key_pem.as_bytes());
    assert_eq!(server_cert(port, &ca, &admin), before);
    server.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if server_cert(port, &ca, &admin) == fresh.cert_der {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certificate not reloaded after SIGHUP"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn start_failure(config_text: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    write(&path, config_text);
    let mut cmd = Command::new(kes_bin());
    cmd.args(["server", "--config", path.to_str().unwrap()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "server must refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn configuration_errors_name_the_problem() {
    let base = "admin:\n  identity: abc\ntls:\n  key: k\n  cert: c\n";
    let e = start_failure(
        &format!("{base}keystore:\n  fs:\n    path: /tmp/x\n  memory: {{}}\n"),
        &[],
    );
    assert!(e.contains("more than one keystore"), "{e}");
    let e = start_failure("admin:\n  identity: ${KES_UNSET_VAR}\ntls:\n  key: k\n  cert: c\nkeystore:\n  memory: {}\n", &[]);
    assert!(e.contains("KES_UNSET_VAR") && e.contains("line"), "{e}");
    let e = start_failure(
        &format!("{base}  auth: maybe\nkeystore:\n  memory: {{}}\n"),
        &[],
    );
    assert!(e.contains("tls.auth"), "{e}");
    let e = start_failure(
        &format!("{base}keystore:\n  gcp:\n    secretmanager:\n      project_id: p\n"),
        &[],
    );
    // A GCP section without credentials, off GCP: the start stops and says what to set.
    assert!(e.contains("gcp") && e.contains("credentials"), "{e}");
    let e = start_failure(&format!("{base}keystore:\n  memory: {{}}\n"), &[]);
    assert!(
        e.contains("'k'") || e.contains("'c'"),
        "names the missing certificate file: {e}"
    );
}

/// openraft's own INFO lines: its start-up state, elections and votes.
fn is_openraft_line(line: &str) -> bool {
    [
        "openraft",
        "get_initial_state",
        "vote is changing",
        "a quorum granted",
        "startup done",
    ]
    .iter()
    .any(|m| line.contains(m))
}

/// A plain single node (no `cluster:` section) is a one-node Raft group: at the default level
/// its log shows the server's lines, not openraft's elections and votes; a `KES_LOG` filter
/// that asks for them shows them.
#[tokio::test]
async fn openraft_is_quiet_at_the_default_level() {
    let quiet = ProcServer::start("", "", &[("KES_LOG", ""), ("RUST_LOG", "")]);
    quiet.wait_ready().await;
    let log = quiet.log();
    assert!(
        log.contains("kes server listening"),
        "the server's own INFO lines are written:\n{log}"
    );
    let raft: Vec<&str> = log.lines().filter(|l| is_openraft_line(l)).collect();
    assert!(
        raft.is_empty(),
        "openraft INFO lines by default:\n{}",
        raft.join("\n")
    );

    let loud = ProcServer::start("", "", &[("KES_LOG", "info")]);
    loud.wait_ready().await;
    assert!(
        loud.log().lines().any(is_openraft_line),
        "KES_LOG=info shows openraft's lines:\n{}",
        loud.log()
    );
}

/// A node opens its API port only once it can serve, so requests sent from the first moment a
/// connection is accepted are answered, never with `503` (a create 130 ms after the port
/// opened used to get `503 not ready` while the node set up its cache key in the keystore).
/// Several starts, since that window was short.
#[tokio::test]
async fn api_port_opens_only_once_the_node_can_serve() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let ca = kes_tls::certgen::TestCa::new().unwrap();
        let admin = kes_crypto::ApiKey::generate();
        let port = free_port();
        let config = write_config(dir.path(), port, &admin.identity(), &ca, "");
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let _server = Child(
            Command::new(kes_bin())
                .args(["server", "--config", config.to_str().unwrap()])
                .env("KES_TEST_ADMIN", admin.identity())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(client_tls(
                &ca,
                Some(&ClientCert::from_api_key(&admin)),
                Proto::Http1,
            ))
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap();
        let base = format!("https://127.0.0.1:{port}/v1/key/create/");
        // Connect in a tight loop: the first create goes out right after the port opens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut statuses = Vec::new();
        while statuses.len() < 20 {
            match client
                .put(format!("{base}early-{round}-{}", statuses.len()))
                .send()
                .await
            {
                Ok(r) => statuses.push(r.status().as_u16()),
                Err(e) if e.is_connect() => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the port never opened"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(e) => panic!("create failed: {e}"),
            }
        }
        assert!(
            statuses.iter().all(|s| *s == 200),
            "creates from the moment the port opened: {statuses:?}\n{}",
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
    }
}
