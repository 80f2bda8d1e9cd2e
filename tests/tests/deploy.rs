//! deploy/ against real nodes. These need tools from Debian packages (HAProxy), so they are
//! `#[ignore]`d in the plain test run; `tests/deploy.sh` installs the tools and runs them with
//! `--ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_tests::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What load balancers and orchestrators need: readiness without a client certificate.
const READY_WITHOUT_CERT: &str = "api:\n  /v1/ready:\n    skip_auth: true\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Outcomes of the load loop, with when each failure happened.
#[derive(Default)]
struct Tally {
    ok: u64,
    failures: Vec<(Instant, String)>,
}

async fn load(client: kes_client::Client, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let r = async {
            let dek = client.generate_key("lb-key", b"ctx").await?;
            let plain = client.decrypt("lb-key", &dek.ciphertext.0, b"ctx").await?;
            assert_eq!(plain, dek.plaintext.0);
            Ok::<_, kes_client::ClientError>(())
        }
        .await;
        match r {
            Ok(()) => t.ok += 1,
            Err(e) => t.failures.push((Instant::now(), format!("{e:?}"))),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t
}

#[tokio::test]
#[ignore = "needs haproxy (tests/deploy.sh haproxy)"]
async fn haproxy_keeps_a_client_working_while_a_node_is_killed_and_restarted() {
    let mut c = ProcCluster::start(3, "1h", READY_WITHOUT_CERT);
    c.wait_all_ready(60).await;
    let lb_port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f"])
        .arg(repo().join("deploy/haproxy/haproxy.cfg"))
        .env("KES_LB_BIND", format!("127.0.0.1:{lb_port}"))
        .env("KES_CA_FILE", &c.files.ca_file)
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .stdin(Stdio::null());
    for (i, n) in c.files.nodes.iter().enumerate() {
        cmd.env(
            format!("KES_NODE{}", i + 1),
            format!("127.0.0.1:{}", n.api_port),
        );
    }
    let _haproxy = Child(cmd.spawn().expect("run haproxy"));
    let haproxy_log = || std::fs::read_to_string(log.path()).unwrap_or_default();

    let client = kes_client::Client::builder([format!("https://127.0.0.1:{lb_port}")])
        .api_key(&c.files.api_key)
        .ca_file(&c.files.ca_file)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.create_key("lb-key").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no answer through haproxy: {e:?}\n{}", haproxy_log()),
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let worker = tokio::spawn(load(client.clone(), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Kill the leader: the hardest case (writes need a new election too).
    let victim = c.wait_leader(10).await;
    let name = format!("kes{}", victim + 1);
    let killed_at = Instant::now();
    c.kill(victim);
    // HAProxy marks it down after two failed checks a second apart.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !haproxy_log().contains(&format!("kes_nodes/{name} is DOWN")) {
        assert!(
            Instant::now() < deadline,
            "haproxy never marked {name} down:\n{}",
            haproxy_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.start_node(victim);
    c.wait_ready(victim, 60).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !haproxy_log().contains(&format!("kes_nodes/{name} is UP")) {
        assert!(
            Instant::now() < deadline,
            "haproxy never marked {name} up again:\n{}",
            haproxy_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up_at = Instant::now();
    // Marked up by the HTTPS check of /v1/ready, not by a bare TCP connect.
    assert!(
        haproxy_log().contains(&format!(
            "kes_nodes/{name} is UP, reason: Layer7 check passed, code: 200"
        )),
        "{}",
        haproxy_log()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let t = worker.await.unwrap();

    // Only requests caught on the dying node's connections may fail, before HAProxy took it
    // out; from then on, and after the node is back, every request succeeds.
    let late: Vec<_> = t.failures.iter().filter(|(at, _)| *at > down_at).collect();
    assert!(
        late.is_empty(),
        "{} failures after {name} was marked down (first: {:?}); {} ok",
        late.len(),
        late.first().map(|f| &f.1),
        t.ok
    );
    assert!(
        t.failures.len() <= 3,
        "{} failures around the kill: {:?}",
        t.failures.len(),
        t.failures.iter().map(|f| &f.1).collect::<Vec<_>>()
    );
    assert!(t.ok > 50, "only {} requests succeeded", t.ok);
    eprintln!(
        "haproxy: {} ok, {} failed; {name} down {:.1}s after the kill, up {:.1}s after the restart began",
        t.ok,
        t.failures.len(),
        (down_at - killed_at).as_secs_f64(),
        (up_at - down_at).as_secs_f64() - 4.0
    );
}
