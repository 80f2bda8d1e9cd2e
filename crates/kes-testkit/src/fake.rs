//! The HTTP(S) server under every fake KMS: an axum router on a loopback port, over plain
//! HTTP or TLS, with the controls outage tests need. `stop` closes the listener and every open
//! connection (clients get "connection refused"), `start` serves again on the same port with
//! the state kept, `pause` accepts requests and answers none until `resume` (a hung KMS), and
//! `throttle` answers the next requests `429` with a `Retry-After`, as rate-limited services
//! do.

use crate::free_port;
use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

/// What a test can do to a running fake.
#[derive(Default)]
pub struct Control {
    paused: tokio::sync::watch::Sender<bool>,
    throttled: AtomicUsize,
    retry_after: AtomicU64,
    requests: AtomicU64,
}

impl Control {
    /// Requests received so far, throttled and paused ones included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A fake KMS's HTTP server.
pub struct FakeServer {
    pub port: u16,
    /// `http://127.0.0.1:<port>` or `https://localhost:<port>`.
    pub url: String,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub control: Arc<Control>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl FakeServer {
    /// Serves `router` on a free loopback port, over TLS when `tls` is given (the certificate
    /// must name `localhost`).
    pub async fn start(router: Router, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Self> {
        let control = Arc::new(Control::default());
        let ctl = Arc::clone(&control);
        let router = router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let ctl = Arc::clone(&ctl);
                async move { gate(ctl, req, next).await }
            },
        ));
        let port = free_port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let server = FakeServer {
            port,
            url,
            router,
            tls,
            control,
            task: Mutex::new(None),
        };
        server.resume_serving().await?;
        Ok(server)
    }

    /// Serves again after [`FakeServer::stop`], on the same port and with the same state.
    pub async fn resume_serving(&self) -> Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", self.port))?;
        let router = self.router.clone();
        let tls = self.tls.clone();
        let task = tokio::spawn(serve(listener, router, tls));
        if let Some(old) = self.task.lock().replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Closes the listener and every connection: the KMS is down.
    pub async fn stop(&self) {
        let task = self.task.lock().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Requests are accepted but not answered until [`FakeServer::resume`].
    pub fn pause(&self) {
        self.control.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.control.paused.send_replace(false);
    }

    /// The next `count` requests get `429` with `Retry-After: <secs>`.
    pub fn throttle(&self, count: usize, retry_after_secs: u64) {
        self.control
            .retry_after
            .store(retry_after_secs, Ordering::SeqCst);
        self.control.throttled.store(count, Ordering::SeqCst);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

async fn gate(ctl: Arc<Control>, req: Request, next: Next) -> Response {
    ctl.requests.fetch_add(1, Ordering::SeqCst);
    let mut paused = ctl.paused.subscribe();
    // A paused server holds the request until it is resumed (or the client gives up).
    let _ = paused.wait_for(|p| !*p).await;
    let throttled = ctl
        .throttled
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if throttled {
        let secs = ctl.retry_after.load(Ordering::SeqCst);
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json")],
            r#"{"error":{"code":429,"message":"Too many requests","status":"RESOURCE_EXHAUSTED"}}"#,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
        return resp;
    }
    next.run(req).await
}

/// Accepts connections until aborted; aborting drops the connection set, which ends every
/// open connection too.
async fn serve(listener: TcpListener, router: Router, tls: Option<Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move { router.oneshot(req.map(Body::new)).await }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

/// A TLS configuration for fakes: a certificate for `localhost` and 127.0.0.1 from a fresh
/// test CA, and that CA's PEM for the client's `tls.ca`.
pub fn tls_config() -> Result<(Arc<rustls::ServerConfig>, String)> {
    let ca = kes_tls::certgen::TestCa::new()?;
    let leaf = ca.issue(
        "localhost",
        &["localhost".to_owned()],
        &["127.0.0.1".parse()?],
        kes_tls::certgen::KeyKind::EcdsaP256,
    )?;
    let cert = rustls::pki_types::CertificateDer::from(leaf.cert_der.clone());
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf.key_der.to_vec())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(kes_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), ca.ca_pem()))
}

/// A JSON error answer.
pub fn error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}
