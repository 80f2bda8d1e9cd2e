//! `kes-floor`: the least a mutual-TLS HTTP server can do per request, as the floor the server's
//! CPU per operation is compared with (`benches/compare-builds.sh`).
//!
//! It terminates TLS with the same rustls configuration as `kes` (ring, TLS 1.3/1.2, any client
//! certificate required, ALPN h2 and http/1.1), serves HTTP/1.1 and HTTP/2 with hyper, reads
//! every request body and answers every request with the same 150-byte JSON: no routing, no
//! authorisation, no crypto, no logging. Allocator (jemalloc) and runtime (tokio, one worker per
//! core) are those of `kes`.
//!
//!     kes-floor --addr 127.0.0.1:7000 --cert server.cert --key server.key

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kes_tls::{CertSource, ClientAuthMode, ServerTlsSource};
use std::net::SocketAddr;
use std::path::PathBuf;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// 150 bytes, about the size of a generate answer for a 32-byte data key.
const ANSWER: &[u8] = br#"{"plaintext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","ciphertext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#;

const _: () = assert!(ANSWER.len() == 150);

#[derive(Parser, Debug)]
#[command(
    name = "kes-floor",
    about = "A minimal mutual-TLS HTTP server: the floor for CPU per request"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Server certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    // Read the body as a server must before it can answer.
    let _body = req.into_body().collect().await?;
    let mut resp = Response::new(Full::new(Bytes::from_static(ANSWER)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = ServerTlsSource {
        cert: CertSource::Files {
            cert: args.cert,
            key: args.key,
            password: None,
        },
        auth: ClientAuthMode::Any,
        ca: None,
        system_roots: false,
        client_cert_optional: false,
    }
    .build()
    .context("TLS configuration")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("bind {}", args.addr))?;
    eprintln!("kes-floor listening on {}", args.addr);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let svc = hyper::service::service_fn(answer);
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
