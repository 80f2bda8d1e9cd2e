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

/// Every metric name a node serves on /v1/metrics and /v1/cluster/metrics, families without
/// samples and histogram series included.
fn served_names(text: &str, into: &mut std::collections::BTreeSet<String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (w.next(), w.next()) {
                into.insert(name.to_owned());
                if kind == "histogram" {
                    for s in ["_bucket", "_sum", "_count"] {
                        into.insert(format!("{name}{s}"));
                    }
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            into.insert(line[..end].to_owned());
        }
    }
}

/// The `kes_...` names a file mentions.
fn mentioned_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(off) = text[i..].find("kes_") {
        let start = i + off;
        let mut end = start;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !is_ident(bytes[start - 1]) {
            out.insert(text[start..end].to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::test]
#[ignore = "needs prometheus (tests/deploy.sh monitoring)"]
async fn monitoring_names_only_served_metrics_and_prometheus_scrapes_the_nodes() {
    let c = ProcCluster::start(3, "1h", READY_WITHOUT_CERT);
    c.wait_all_ready(60).await;
    // Traffic of every kind, so that the labelled families (which appear only once observed)
    // have samples: 2xx, 4xx, and a 5xx from a keystore that fails (its folder replaced by a
    // file for a moment).
    c.client(0).create_key("metrics").await.unwrap();
    c.client(1).generate_key("metrics", b"").await.unwrap();
    let _ = c.client(2).describe_key("absent").await;
    let keys = c.files.keystore_dir.clone();
    let moved = keys.with_extension("moved");
    std::fs::rename(&keys, &moved).unwrap();
    std::fs::write(&keys, b"").unwrap();
    let e = c.client(0).create_key("fails").await.unwrap_err();
    std::fs::remove_file(&keys).unwrap();
    std::fs::rename(&moved, &keys).unwrap();
    assert!(!e.is_key_exists(), "{e:?}");
    let http = c.raw_client();
    let mut served = std::collections::BTreeSet::new();
    for i in 0..3 {
        for path in ["/v1/metrics", "/v1/cluster/metrics"] {
            let r = http.get(c.url(i, path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            served_names(&r.text().await.unwrap(), &mut served);
        }
    }
    assert!(served.contains("kes_cluster_replication_lag"), "{served:?}");
    assert!(
        served.contains("kes_cluster_certificate_expiry_timestamp_seconds"),
        "{served:?}"
    );

    let dir = repo().join("deploy/monitoring");
    let dashboard = std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "panel {}: empty expr", p["title"]);
            assert_eq!(t["datasource"]["uid"], "${datasource}");
        }
    }
    for file in [
        "grafana-dashboard.json",
        "kes-alerts.yml",
        "kes-alerts.test.yml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let names = mentioned_names(&text);
        assert!(!names.is_empty(), "{file} names no kes metric");
        let unknown: Vec<_> = names.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics no node serves: {unknown:?}"
        );
    }

    // The scrape configuration for real: Prometheus with the admin's client certificate
    // scrapes both endpoints of every node and loads the rules.
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    std::fs::create_dir(s.join("kes")).unwrap();
    std::fs::copy(&c.files.ca_file, s.join("kes/ca.cert")).unwrap();
    let admin = kes_tls::certgen::api_key_certificate(&c.files.api_key).unwrap();
    std::fs::write(s.join("kes/admin.cert"), &admin.cert_pem).unwrap();
    std::fs::write(s.join("kes/admin.key"), admin.key_pem.as_bytes()).unwrap();
    std::fs::copy(dir.join("kes-alerts.yml"), s.join("kes-alerts.yml")).unwrap();
    let mut cfg = std::fs::read_to_string(dir.join("prometheus.yml")).unwrap();
    for (i, n) in c.files.nodes.iter().enumerate() {
        cfg = cfg.replace(
            &format!("kes{}.example.net:7373", i + 1),
            &format!("127.0.0.1:{}", n.api_port),
        );
    }
    cfg = cfg.replace("scrape_interval: 15s", "scrape_interval: 1s");
    std::fs::write(s.join("prometheus.yml"), cfg).unwrap();
    let port = free_port();
    let log = std::fs::File::create(s.join("prometheus.log")).unwrap();
    let _prom = Child(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                s.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", s.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus"),
    );
    let prom = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |q: &str| format!("{api}/query?query={}", percent(q));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = get_json(&prom, &query("up == 1")).await;
        let n = up["data"]["result"].as_array().map_or(0, Vec::len);
        if n == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus scraped {n} of 6 targets: {}\n{}",
            get_json(&prom, &format!("{api}/targets")).await,
            std::fs::read_to_string(s.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let value = |v: &serde_json::Value| -> f64 {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN)
    };
    assert_eq!(
        value(&get_json(&prom, &query("sum(kes_cluster_is_leader)")).await),
        1.0
    );
    assert_eq!(
        value(&get_json(&prom, &query("count(kes_cluster_serving == 1)")).await),
        3.0
    );
    // Each node reports its API certificate, node certificate and cluster CA, all valid for
    // a year or more (`kes cluster local`'s certificates).
    let q = "count(kes_cluster_certificate_expiry_timestamp_seconds - time() > 300 * 86400)";
    assert_eq!(value(&get_json(&prom, &query(q)).await), 9.0);
    let rules = get_json(&prom, &format!("{api}/rules")).await.to_string();
    for alert in [
        "KesNodeDown",
        "KesNoLeader",
        "KesKmsUnreachable",
        "KesReplicationLag",
    ] {
        assert!(rules.contains(alert), "rules not loaded: {rules}");
    }
}

/// Percent-encodes a PromQL query for a URL.
fn percent(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A configuration file with every `${NAME}` set, parsed and validated as a node would.
fn parse_config(path: &std::path::Path) -> kes_config::Config {
    let text = std::fs::read_to_string(path).unwrap();
    let env = |name: &str| {
        Some(match name {
            "KES_NODE_ID" => "2".to_owned(),
            "KES_ADVERTISE" => "kes2:7374".to_owned(),
            "MINIO_KES_IDENTITY" => "1".repeat(64),
            _ => "0".repeat(64),
        })
    };
    match kes_config::parse(&text, &env) {
        Ok(p) => {
            assert!(
                p.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                p.warnings
            );
            p.config
        }
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn compose_and_its_node_configurations_agree() {
    let dir = repo().join("deploy/docker");
    for file in ["node.yaml", "node-openbao.yaml"] {
        let c = parse_config(&dir.join(file));
        let cluster = c.cluster.expect("a cluster section");
        assert_eq!(cluster.node_id, 2, "{file}: node_id from KES_NODE_ID");
        assert_eq!(cluster.advertise, "kes2:7374");
        assert_eq!(cluster.members.len(), 3);
        assert!(cluster.data_dir.starts_with("/var/lib/kes"));
    }
    let mut compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("compose.yaml")).unwrap()).unwrap();
    // Compose resolves `<<: *kes` merge keys.
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    for n in 1..=3 {
        let s = &compose["services"][format!("kes{n}").as_str()];
        assert_eq!(s["environment"]["KES_NODE_ID"], n.to_string().as_str());
        assert_eq!(
            s["environment"]["KES_ADVERTISE"],
            format!("kes{n}:7374").as_str()
        );
        assert_eq!(s["read_only"], true, "kes{n}");
        assert_eq!(s["cap_drop"][0], "ALL");
        let mounts: Vec<&str> = s["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(mounts.contains(&format!("./certs/kes{n}:/etc/kes/certs:ro").as_str()));
        assert!(mounts.contains(&"./${KES_CONFIG:-node.yaml}:/etc/kes/config.yaml:ro"));
        assert!(mounts.contains(&format!("kes{n}:/var/lib/kes").as_str()));
    }
    // The load balancer gets every variable haproxy.cfg uses, and the files it names exist.
    let lb = &services[&serde_yaml::Value::from("lb")];
    let haproxy = std::fs::read_to_string(repo().join("deploy/haproxy/haproxy.cfg")).unwrap();
    for var in [
        "KES_LB_BIND",
        "KES_CA_FILE",
        "KES_NODE1",
        "KES_NODE2",
        "KES_NODE3",
    ] {
        assert!(haproxy.contains(&format!("${{{var}}}")), "{var}");
        assert!(!lb["environment"][var].is_null(), "lb lacks {var}");
    }
    let lb_mount = lb["volumes"][0].as_str().unwrap();
    assert!(dir.join(lb_mount.split(':').next().unwrap()).exists());
    assert_eq!(
        compose["x-kes"]["build"]["dockerfile"],
        "deploy/docker/Dockerfile"
    );
    assert!(repo().join("deploy/docker/Dockerfile").exists());
}

#[tokio::test]
async fn kes_ready_exits_zero_only_when_the_node_is_ready() {
    let mut c = ProcCluster::start(1, "1h", READY_WITHOUT_CERT);
    c.wait_all_ready(30).await;
    let endpoint = c.files.nodes[0].endpoint();
    let ca = c.files.ca_file.clone();
    let ready = |extra: &[&str]| {
        Command::new(kes_bin())
            .args(["ready", "--server", &endpoint, "--timeout", "3s"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = ready(&["--ca", ca.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ready(&["-k"]).status.success());
    // Not trusting the server certificate is not ready.
    assert!(!ready(&[]).status.success());
    c.kill(0);
    let out = ready(&["-k"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not ready"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The upgrade procedure of docs/operations.md with the same binary: each follower stopped
/// with SIGTERM (as systemctl stop does) and started again, then leadership moved away from the
/// last node and it restarted too, under a load of crypto operations and key creations through
/// a client that lists every node. Nothing may fail.
///
/// The procedure waits for the client's bench time (30 s, kms-go's rule, which MinIO follows)
/// after stopping a node before it stops the next: a client benches a node it failed to reach,
/// and a request fails when every node it lists is benched or down. Without the wait this test
/// saw such failures when the third node went down within 30 s of the first.
#[tokio::test]
async fn rolling_restart_under_load_fails_no_request() {
    let mut c = ProcCluster::start(3, "1h", READY_WITHOUT_CERT);
    c.wait_all_ready(60).await;
    let client = c.client_for(&[0, 1, 2]);
    // The key `load` uses.
    client.create_key("lb-key").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let crypto = tokio::spawn(load(client.clone(), Arc::clone(&stop)));
    let writes = {
        let client = client.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut t = Tally::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match client.create_key(&format!("rolling-{i}")).await {
                    Ok(()) => t.ok += 1,
                    // Every name is new: "exists" means an attempt that reached a stopping
                    // node succeeded and the client's retry on another node found the key.
                    // The caller gets the key it asked for; kms-go retries the same way.
                    Err(e) if e.is_key_exists() => {
                        t.ok += 1;
                        eprintln!("create rolling-{i}: retried after success");
                    }
                    Err(e) => t.failures.push((Instant::now(), format!("{e:?}"))),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            t
        })
    };
    let leader = c.wait_leader(10).await;
    let mut order: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    order.push(leader);
    for (step, i) in order.into_iter().enumerate() {
        if step == 2 {
            // The last one is the leader: hand leadership to a restarted node first.
            let to = (i + 1) % 3;
            c.client(to)
                .cluster_transfer_leader(to as u64 + 1)
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.leader(to).await != Some(to) {
                assert!(
                    Instant::now() < deadline,
                    "leadership did not move to {}",
                    to + 1
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let stopped_at = Instant::now();
        let mut p = c.procs[i].take().unwrap();
        p.signal("TERM");
        assert!(p.wait_exit(30).is_some(), "node {} did not stop", i + 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.start_node(i);
        c.wait_ready(i, 60).await;
        // Caught up before the next one goes: the leader sees no lag.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let l = c.wait_leader(10).await;
            let st = c.client(l).cluster_status().await.unwrap();
            let lagging = st.members.iter().any(|m| m.lag.unwrap_or(0) > 0);
            if !lagging {
                break;
            }
            assert!(Instant::now() < deadline, "members still lag: {st:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let unbenched = stopped_at + kes_client::balancer::BENCH_TIME + Duration::from_secs(1);
        tokio::time::sleep_until(unbenched.into()).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let crypto = crypto.await.unwrap();
    let writes = writes.await.unwrap();
    eprintln!(
        "rolling restart: {} crypto round trips and {} creates, {} and {} failed",
        crypto.ok,
        writes.ok,
        crypto.failures.len(),
        writes.failures.len()
    );
    assert!(
        crypto.failures.is_empty(),
        "crypto failures: {:?}",
        crypto.failures.iter().map(|f| &f.1).collect::<Vec<_>>()
    );
    assert!(
        writes.failures.is_empty(),
        "create failures: {:?}",
        writes.failures.iter().map(|f| &f.1).collect::<Vec<_>>()
    );
    assert!(crypto.ok > 100 && writes.ok > 20);
}

/// Replacing a dead host as docs/operations.md says: remove the dead member, add a new node
/// under a new id. The cluster then survives another failure again.
#[tokio::test]
async fn replacing_a_dead_node_restores_fault_tolerance() {
    let mut c = ProcCluster::start_with_joiners(4, 3);
    for i in 0..3 {
        c.wait_ready(i, 60).await;
    }
    let leader = c.wait_leader(10).await;
    let dead = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let admin = c.client_for(&[leader, other]);
    admin.create_key("before").await.unwrap();
    c.kill(dead);
    admin.cluster_remove(dead as u64 + 1).await.unwrap();
    c.start_node(3);
    admin
        .cluster_add(
            4,
            &format!("127.0.0.1:{}", c.files.nodes[3].peer_port),
            true,
        )
        .await
        .unwrap();
    c.wait_ready(3, 60).await;
    let st = c.client(3).cluster_status().await.unwrap();
    let mut ids: Vec<u64> = st.members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    let mut want = vec![leader as u64 + 1, other as u64 + 1, 4];
    want.sort_unstable();
    assert_eq!(ids, want, "{st:?}");
    // Another failure: the leader and the new node are a majority of {leader, other, 4}.
    c.kill(other);
    let survivors = c.client_for(&[leader, 3]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match survivors.create_key("after").await {
            Ok(()) => break,
            // An earlier attempt went through before its answer was lost.
            Err(e) if e.is_key_exists() => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no writes with the replacement in place: {e:?}"),
        }
    }
    let dek = c.client(3).generate_key("before", b"").await.unwrap();
    assert_eq!(
        c.client(leader)
            .decrypt("before", &dek.ciphertext.0, b"")
            .await
            .unwrap(),
        dek.plaintext.0
    );
}
