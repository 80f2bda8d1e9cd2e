//! CI smoke test of the load generator: a short run of every operation against an in-process
//! server over real TLS, over HTTP/1.1 and HTTP/2, closed and open loop. It asserts only that
//! requests succeeded and none failed; timings belong to the benchmarks, not to tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kes_bench::config::{Auth, Config, Mode, Op, Protocol, Trust};
use kes_bench::{run, ProgressMode, Report};
use kes_crypto::ApiKey;
use kes_tests::{ServerOpts, TestServer};
use std::time::Duration;

fn config(server: &TestServer) -> Config {
    Config {
        endpoints: vec![server.url("")],
        auth: Some(Auth::ApiKey(
            ApiKey::parse(&server.admin.to_text()).expect("API key"),
        )),
        trust: Trust {
            ca_pems: vec![server.ca.ca_pem()],
            ..Trust::default()
        },
        concurrency: 4,
        keys: 3,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

#[track_caller]
fn assert_clean(r: &Report) {
    assert!(r.total.ok >= 1, "no request succeeded:\n{}", r.render());
    assert_eq!(r.total.errors, 0, "errors:\n{}", r.render());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_over_http1_and_http2() {
    let server = TestServer::start(ServerOpts::default()).await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let cfg = Config {
            protocol,
            mix: Op::ALL.iter().map(|op| (*op, 1)).collect(),
            ..config(&server)
        };
        let r = run(&cfg, ProgressMode::None).await.expect("run");
        assert_clean(&r);
        // Every operation of the mix ran and succeeded.
        assert_eq!(r.ops.len(), Op::ALL.len());
        for op in &r.ops {
            assert!(op.ok >= 1, "{} never succeeded:\n{}", op.op, r.render());
        }
        assert_eq!(r.protocol, protocol.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_and_request_limit() {
    let server = TestServer::start(ServerOpts::default()).await;
    let cfg = Config {
        mix: vec![(Op::Generate, 1), (Op::Decrypt, 1)],
        mode: Mode::Open { rate: 200.0 },
        duration: Duration::from_secs(1),
        ..config(&server)
    };
    let r = run(&cfg, ProgressMode::None).await.expect("open loop run");
    assert_clean(&r);
    assert_eq!(r.mode, "open");
    assert_eq!(r.scheduled, Some(200));

    let cfg = Config {
        requests: Some(50),
        ..config(&server)
    };
    let r = run(&cfg, ProgressMode::None).await.expect("limited run");
    assert_clean(&r);
    assert_eq!(r.total.ok, 50, "{}", r.render());

    // A new connection and handshake for every request, over both protocols.
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let cfg = Config {
            requests: Some(20),
            reconnect: true,
            protocol,
            ..config(&server)
        };
        let r = run(&cfg, ProgressMode::None).await.expect("reconnect run");
        assert_clean(&r);
        assert!(r.reconnect);
        assert_eq!(r.total.ok, 20, "{}", r.render());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_counted() {
    let server = TestServer::start(ServerOpts::default()).await;
    // Without creating keys, every generate is answered 404: counted by status, not fatal.
    let cfg = Config {
        create_keys: false,
        key_prefix: "missing".into(),
        duration: Duration::from_millis(500),
        warmup: Duration::ZERO,
        ..config(&server)
    };
    let r = run(&cfg, ProgressMode::None).await.expect("run");
    assert_eq!(r.total.ok, 0);
    assert!(
        r.errors.get("404").copied().unwrap_or(0) >= 1,
        "{:?}",
        r.errors
    );
    assert!(
        r.error_samples
            .get("404")
            .is_some_and(|m| m.contains("key does not exist")),
        "{:?}",
        r.error_samples
    );
}
