//! `kes server`: loads the configuration (or builds a development one) and runs the server until
//! SIGINT or SIGTERM. SIGHUP reloads the TLS certificate, key and CA files.

use anyhow::{bail, Context};
use kes_server::logs::LogHub;
use kes_tls::certgen::{self, KeyKind};
use kes_tls::CertSource;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flags of `kes server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Path to the KES YAML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address, overriding the configuration's `address`.
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<String>,
    /// Start a development server: in-memory keystore, self-signed certificate, fresh admin API key.
    #[arg(long)]
    pub dev: bool,
    /// Deprecated and ignored (use the configuration file).
    #[arg(long, hide = true)]
    pub key: Option<String>,
    /// Deprecated and ignored (use the configuration file).
    #[arg(long, hide = true)]
    pub cert: Option<String>,
    /// Deprecated and ignored (use the configuration file).
    #[arg(long, hide = true)]
    pub auth: Option<String>,
}

/// The development configuration: in-memory keystore, KES's dev cache settings.
fn dev_config(admin: &str) -> anyhow::Result<kes_config::Config> {
    let yaml = format!(
        "address: 0.0.0.0:7373\nadmin:\n  identity: {admin}\ntls:\n  key: dev.key\n  cert: dev.cert\ncache:\n  expiry:\n    any: 5m\n    unused: 30s\nkeystore:\n  memory: {{}}\n"
    );
    Ok(kes_config::parse(&yaml, &|_| None)?.config)
}

fn init_logging(hub: &LogHub, level: kes_config::LogLevel) {
    let filter = match level {
        kes_config::LogLevel::Off => "error",
        kes_config::LogLevel::Debug => "debug",
        kes_config::LogLevel::Info => "info",
        kes_config::LogLevel::Warn => "warn",
        kes_config::LogLevel::Error => "error",
    };
    // openraft reports every election, vote and membership load at INFO: noise for an
    // operator (`kes cluster status` and the metrics show leader and term), so it shows only
    // with `log.error: debug` or a `KES_LOG` filter that asks for it.
    let libraries = match level {
        kes_config::LogLevel::Debug => "h2=warn,hyper=warn,rustls=warn",
        _ => "h2=warn,hyper=warn,rustls=warn,openraft=warn",
    };
    let filter = EnvFilter::try_from_env("KES_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{filter},{libraries}")));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(hub.error_layer())
        .try_init();
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    // KES accepts ":7373" meaning every interface.
    let s = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    s.parse()
        .with_context(|| format!("invalid --addr '{s}': want IP:PORT"))
}

fn local_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let hub = LogHub::new();
    for (flag, v) in [
        ("--key", &args.key),
        ("--cert", &args.cert),
        ("--auth", &args.auth),
    ] {
        if v.is_some() {
            eprintln!(
                "warning: '{flag}' is deprecated and ignored; set it in the configuration file"
            );
        }
    }
    let (config, cert, banner) = if args.dev {
        if args.config.is_some() {
            bail!("--dev and --config cannot be used together");
        }
        let api_key = kes_crypto::ApiKey::generate();
        let identity = api_key.identity();
        let ips = local_ips();
        let cert = certgen::self_signed(
            "localhost",
            &["localhost".to_owned()],
            &ips,
            Duration::from_secs(30 * 24 * 3600),
            KeyKind::EcdsaP256,
        )
        .context("failed to generate the development certificate")?;
        let config = dev_config(&identity)?;
        let src = CertSource::Memory {
            cert_der: cert.cert_der.clone(),
            key_der: cert.key_der.to_vec(),
        };
        (
            config,
            Some(src),
            Some((api_key, identity, cert.cert_pem.clone())),
        )
    } else {
        let Some(path) = &args.config else {
            bail!("no configuration: use --config <file>, or --dev for a development server");
        };
        let parsed = kes_config::load(path)
            .with_context(|| format!("failed to load '{}'", path.display()))?;
        for w in &parsed.warnings {
            eprintln!("warning: {}: {w}", path.display());
        }
        (parsed.config, None, None)
    };
    init_logging(&hub, config.log.error);
    if let Some(cluster) = &config.cluster {
        check_node_certificate(cluster)?;
    }
    if !args.dev {
        // Reported by /v1/cluster/metrics, for the certificate-expiry alerts.
        kes_tls::check::watch_expiry("api", &config.tls.cert);
        if let Some(cluster) = &config.cluster {
            kes_tls::check::watch_expiry("node", &cluster.tls.cert);
            kes_tls::check::watch_expiry("cluster-ca", &cluster.tls.ca);
        }
    }

    let addr = match &args.addr {
        Some(a) => parse_addr(a)?,
        None => config.address,
    };
    let server = kes_server::Server::new(&config, cert, hub).await?;
    let listener = kes_server::bind(addr).await?;
    let local = listener.local_addr();

    if let Some((api_key, identity, cert_pem)) = banner {
        let host = if local.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
        } else {
            local
        };
        println!("KES development server (in-memory keystore: keys are lost on exit)\n");
        println!("  Endpoint   https://{host}");
        println!("  API key    {}", api_key.to_text());
        println!("  Identity   {identity}\n");
        println!("For the kes CLI (the server certificate is self-signed, so use -k):");
        println!("  export KES_SERVER=https://{host}");
        println!("  export KES_API_KEY={}\n", api_key.to_text());
        println!("For MinIO:");
        println!("  export MINIO_KMS_KES_ENDPOINT=https://{host}");
        println!("  export MINIO_KMS_KES_API_KEY={}", api_key.to_text());
        println!("  export MINIO_KMS_KES_KEY_NAME=minio-default-key");
        match write_dev_cert(&cert_pem, local.port()) {
            Ok(path) => println!("  export MINIO_KMS_KES_CAPATH={}\n", path.display()),
            Err(e) => println!(
                "  (could not write the server certificate for MINIO_KMS_KES_CAPATH: {e})\n"
            ),
        }
    }
    tracing::info!(address = %local, "kes server starting; the api port opens once the node can serve");

    let shutdown = CancellationToken::new();
    spawn_signals(shutdown.clone(), server.reloader())?;
    // A node whose needed task ends (one that gives up for good because the keystore lost the
    // wrapping key, say) stops, and exits non-zero with the reason, instead of running
    // half-alive or sitting sealed.
    server.run(listener, shutdown).await?;
    tracing::info!("kes server stopped");
    Ok(())
}

/// Refuses to start with a node certificate the peers would refuse, and warns while it nears
/// its expiry (`kes_tls::check`).
fn check_node_certificate(cluster: &kes_config::ClusterConfig) -> anyhow::Result<()> {
    const WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
    let ok = kes_tls::check::check_node_certificate(
        &cluster.tls.cert,
        &cluster.tls.ca,
        cluster.node_id,
    )?;
    let left = ok.remaining();
    if left < WARN_BEFORE {
        tracing::warn!(
            cert = %cluster.tls.cert.display(),
            days_left = left.as_secs() / 86400,
            "the node certificate expires soon; issue a new one with `kes ca issue node` and restart the node"
        );
    }
    Ok(())
}

/// Writes the development certificate where MinIO can be pointed at it as its CA.
fn write_dev_cert(pem: &str, port: u16) -> std::io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("kes-dev-{port}.cert"));
    std::fs::write(&path, pem)?;
    Ok(path)
}

fn spawn_signals<R>(shutdown: CancellationToken, reload: R) -> anyhow::Result<()>
where
    R: Fn() -> Result<(), kes_server::ServerError> + Send + Sync + 'static,
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    if let Err(e) = reload() {
                        tracing::error!(error = %e, "failed to reload tls certificates; keeping the old ones");
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    Ok(())
}
