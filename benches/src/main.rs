//! `kes-bench`: load generator for KES-compatible servers and OpenBao transit, and the
//! summary of several runs. See `benches/README.md`.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use kes_bench::config::{parse_mix, Auth, Config, Mode, Protocol, TargetKind, Trust};
use kes_bench::summary::{summarize, Baseline, Goals};
use kes_bench::transport::{Request, Transport};
use kes_bench::{run, ProgressMode, Report};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kes-bench",
    about = "Load generator for KES-compatible servers and OpenBao transit",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fold the JSON reports of several runs into medians, ratios and goal checks
    Summarize(SummarizeArgs),
    /// Wait until a KES endpoint answers GET /v1/ready with 200 (or, with --keys, until its
    /// cluster status counts that many keys) and print the seconds it took
    Wait(WaitArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// API to drive: kes, or openbao (transit engine)
    #[arg(long, default_value = "kes")]
    target: TargetKind,
    /// Endpoints, comma-separated [env: KES_SERVER for kes, BAO_ADDR or VAULT_ADDR for openbao]
    #[arg(short = 's', long = "server", value_name = "URLS")]
    server: Option<String>,
    /// KES API key (kes:v1:...) to authenticate with
    #[arg(long, env = "KES_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Client certificate (PEM) to authenticate with, together with --key
    #[arg(long, env = "KES_CLIENT_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM)
    #[arg(long, env = "KES_CLIENT_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// OpenBao/Vault token for the openbao target [env: BAO_TOKEN or VAULT_TOKEN]
    #[arg(long)]
    token: Option<String>,
    /// Trust the CA certificates in this PEM file or directory (repeatable)
    #[arg(long, value_name = "PATH")]
    ca: Vec<PathBuf>,
    /// Do not verify the server certificate
    #[arg(short = 'k', long)]
    insecure: bool,
    /// HTTP version: h1 (HTTP/1.1) or h2
    #[arg(long, default_value = "h1")]
    proto: Protocol,
    /// Requests in flight at once
    #[arg(short = 'c', long, default_value_t = 16)]
    concurrency: usize,
    /// Connections per endpoint [default: one per request in flight for h1, one for h2]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    connections: usize,
    /// Operation mix: generate, decrypt, encrypt, hmac, describe, create-delete with weights,
    /// e.g. generate=3,decrypt=1
    #[arg(short = 'm', long, default_value = "generate")]
    mix: String,
    /// Number of keys the requests are spread over
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Key names are <prefix>-0, <prefix>-1, ...
    #[arg(long, default_value = "kes-bench")]
    key_prefix: String,
    /// Plaintext size for encrypt and message size for hmac, in bytes
    #[arg(long, default_value_t = 32)]
    plaintext_size: usize,
    /// Context (associated data) sent with KES generate, encrypt and decrypt; "" for none
    #[arg(long, default_value = r#"{"bucket":"bucket/object"}"#)]
    context: String,
    /// Warm-up before measuring
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measurement time (the upper bound when --requests is given)
    #[arg(short = 'd', long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many measured requests
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Open loop: send this many requests per second in total, latency measured from each
    /// request's scheduled time
    #[arg(long)]
    rate: Option<f64>,
    /// Limit of one request, retries included
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Retries per endpoint after a network error or 503 (kms-go: 2)
    #[arg(long, default_value_t = kes_client::limits::RETRIES)]
    retries: u32,
    /// Wait up to this long for the server to become reachable
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Do not create the keys (they must exist)
    #[arg(long)]
    no_create: bool,
    /// Seed of the operation and key choices
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Name of this run in reports and summaries [default: the target]
    #[arg(long)]
    label: Option<String>,
    /// Also write the report as JSON to this file
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// No progress line
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Runtime worker threads [default: one per core]
    #[arg(long)]
    threads: Option<usize>,
    /// Open a new connection with a full TLS handshake (no session resumption) for every
    /// request: the throughput is then handshakes per second
    #[arg(long)]
    reconnect: bool,
}

#[derive(Args, Debug)]
struct WaitArgs {
    /// The endpoint
    #[arg(short = 's', long = "server", value_name = "URL")]
    server: String,
    /// KES API key (kes:v1:...) to authenticate with
    #[arg(long, env = "KES_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Trust the CA certificates in this PEM file or directory
    #[arg(long, value_name = "PATH")]
    ca: Vec<PathBuf>,
    /// Do not verify the server certificate
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Instead of readiness, wait until GET /v1/cluster/status reports at least this many
    /// cached keys
    #[arg(long)]
    keys: Option<u64>,
    /// Count from this instant (Unix time in milliseconds, e.g. `date +%s%3N` taken when the
    /// process was started) instead of from now
    #[arg(long, value_name = "UNIX_MS")]
    since: Option<u64>,
    /// Give up after this long
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Time between two probes
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    interval: Duration,
}

#[derive(Args, Debug)]
struct SummarizeArgs {
    /// Report files written with --json
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Label the other labels are compared with, optionally with the throughput multiple they
    /// should reach: LABEL or LABEL=RATIO (repeatable; a label is not compared with baselines
    /// listed before it)
    #[arg(long, value_name = "LABEL[=RATIO]")]
    baseline: Vec<String>,
    /// A label not to compare with the baselines (repeatable), e.g. a fixed-rate run
    #[arg(long, value_name = "LABEL")]
    no_ratio: Vec<String>,
    /// Labels the throughput and p99 goals apply to (repeatable) [default: every label that is
    /// not a baseline]
    #[arg(long, value_name = "LABEL")]
    goal_label: Vec<String>,
    /// Goal: successful operations per second
    #[arg(long)]
    goal_throughput: Option<f64>,
    /// Goal: p99 latency in milliseconds
    #[arg(long)]
    goal_p99_ms: Option<f64>,
    /// Goal: throughput multiple of a baseline given without its own
    #[arg(long)]
    goal_ratio: Option<f64>,
    /// How the numbers were obtained, as key=value (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Write the summary as JSON here
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the markdown tables here
    #[arg(long, value_name = "FILE")]
    md: Option<PathBuf>,
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

fn config(a: &RunArgs) -> anyhow::Result<Config> {
    let server = match (&a.server, a.target) {
        (Some(s), _) => s.clone(),
        (None, TargetKind::Kes) => {
            env_first(&["KES_SERVER"]).unwrap_or_else(|| kes_client::DEFAULT_ENDPOINT.to_owned())
        }
        (None, TargetKind::Openbao) => env_first(&["BAO_ADDR", "VAULT_ADDR"])
            .unwrap_or_else(|| "http://127.0.0.1:8200".to_owned()),
    };
    let endpoints: Vec<String> = server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let auth = match a.target {
        TargetKind::Kes => {
            if a.token.is_some() {
                bail!("--token is for the openbao target");
            }
            match (&a.api_key, &a.cert, &a.key) {
                (Some(_), Some(_), _) => {
                    bail!("an API key cannot be combined with a client certificate")
                }
                (Some(k), None, _) => Some(Auth::ApiKey(
                    kes_crypto::ApiKey::parse(k.trim()).context("invalid API key")?,
                )),
                (None, Some(cert), Some(key)) => Some(Auth::CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            }
        }
        TargetKind::Openbao => a
            .token
            .clone()
            .or_else(|| env_first(&["BAO_TOKEN", "VAULT_TOKEN"]))
            .map(Auth::Token),
    };
    Ok(Config {
        target: a.target,
        endpoints,
        auth,
        trust: Trust {
            ca_files: a.ca.clone(),
            ca_pems: Vec::new(),
            insecure: a.insecure,
        },
        protocol: a.proto,
        connections: a.connections,
        concurrency: a.concurrency,
        mix: parse_mix(&a.mix)?,
        keys: a.keys,
        key_prefix: a.key_prefix.clone(),
        plaintext_size: a.plaintext_size,
        context: a.context.clone().into_bytes(),
        mode: match a.rate {
            Some(rate) => Mode::Open { rate },
            None => Mode::Closed,
        },
        warmup: a.warmup,
        duration: a.duration,
        requests: a.requests,
        timeout: a.timeout,
        retries: a.retries,
        wait: a.wait,
        create_keys: !a.no_create,
        seed: a.seed,
        reconnect: a.reconnect,
    })
}

fn run_bench(a: RunArgs) -> anyhow::Result<Report> {
    let cfg = config(&a)?;
    cfg.validate()?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.threads {
        if n == 0 || n > 1024 {
            bail!("--threads must be between 1 and 1024");
        }
        rt.worker_threads(n);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let progress = if a.quiet {
        ProgressMode::None
    } else {
        ProgressMode::Stderr
    };
    let mut report = rt.block_on(run(&cfg, progress))?;
    if let Some(label) = a.label {
        report.label = label;
    }
    print!("{}", report.render());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    Ok(report)
}

fn run_summarize(a: SummarizeArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in &a.reports {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read '{}'", path.display()))?;
        let r: Report = serde_json::from_str(&text)
            .with_context(|| format!("'{}' is not a kes-bench report", path.display()))?;
        runs.push(r);
    }
    let mut meta = BTreeMap::new();
    for m in &a.meta {
        let Some((k, v)) = m.split_once('=') else {
            bail!("--meta expects KEY=VALUE, got '{m}'");
        };
        meta.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let baselines = a
        .baseline
        .iter()
        .map(|b| Baseline::parse(b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let s = summarize(
        runs,
        &baselines,
        &a.no_ratio,
        Goals {
            throughput: a.goal_throughput,
            p99_ms: a.goal_p99_ms,
            ratio: a.goal_ratio,
        },
        &a.goal_label,
        meta,
    );
    print!("{}", s.brief());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&s)? + "\n")
            .with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    if let Some(path) = &a.md {
        std::fs::write(path, s.markdown())
            .with_context(|| format!("failed to write '{}'", path.display()))?;
    }
    Ok(())
}

/// Polls until the condition holds; prints the seconds since `--since` (or since the start).
fn run_wait(a: WaitArgs) -> anyhow::Result<()> {
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    };
    let since = a.since.unwrap_or_else(now_ms);
    let cfg = Config {
        endpoints: vec![a.server.clone()],
        auth: Some(Auth::ApiKey(
            kes_crypto::ApiKey::parse(a.api_key.trim()).context("invalid API key")?,
        )),
        trust: Trust {
            ca_files: a.ca.clone(),
            ca_pems: Vec::new(),
            insecure: a.insecure,
        },
        concurrency: 1,
        connections: 1,
        timeout: Duration::from_secs(2),
        retries: 0,
        ..Config::default()
    };
    let interval = a.interval.max(Duration::from_millis(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async {
        let transport = Transport::new(&cfg)?;
        let (path, want) = match a.keys {
            Some(n) => ("/v1/cluster/status", Some(n)),
            None => ("/v1/ready", None),
        };
        let req = Request::get(path.to_owned());
        let deadline = std::time::Instant::now() + a.timeout;
        let mut last = String::from("no answer yet");
        // Bounded by the deadline and, should the clock misbehave, by a count.
        let max_probes = a.timeout.as_millis() / interval.as_millis().max(1) + 10;
        for _ in 0..max_probes {
            match transport.send(0, &req).await {
                Ok(ans) if ans.status == 200 => match want {
                    None => {
                        println!("{:.3}", now_ms().saturating_sub(since) as f64 / 1000.0);
                        return Ok(());
                    }
                    Some(n) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&ans.body).unwrap_or_default();
                        let keys = v.get("keys").and_then(|k| k.as_u64()).unwrap_or(0);
                        if keys >= n {
                            println!("{:.3}", now_ms().saturating_sub(since) as f64 / 1000.0);
                            return Ok(());
                        }
                        last = format!("{keys} keys");
                    }
                },
                Ok(ans) => {
                    last = format!(
                        "{} {}",
                        ans.status,
                        String::from_utf8_lossy(&ans.body).trim()
                    )
                }
                Err(f) => last = f.to_string(),
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(interval).await;
        }
        bail!(
            "{} not reached within {}: {last}",
            if want.is_some() {
                "key count"
            } else {
                "readiness"
            },
            humantime::format_duration(a.timeout)
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Summarize(a)) => run_summarize(a),
        Some(Command::Wait(a)) => run_wait(a),
        None => match run_bench(cli.run) {
            // A run in which nothing succeeded measured nothing; scripts must notice.
            Ok(r) if r.total.ok == 0 => Err(anyhow::anyhow!("no request succeeded")),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn openbao_defaults_and_auth() {
        let cli = Cli::try_parse_from([
            "kes-bench",
            "--target",
            "openbao",
            "--token",
            "root",
            "-s",
            "http://127.0.0.1:8200",
            "--mix",
            "generate,decrypt",
        ])
        .unwrap();
        let cfg = config(&cli.run).unwrap();
        assert!(matches!(cfg.auth, Some(Auth::Token(ref t)) if t == "root"));
        assert_eq!(cfg.endpoints, vec!["http://127.0.0.1:8200"]);
        cfg.validate().unwrap();
        let cli = Cli::try_parse_from(["kes-bench", "--token", "x"]).unwrap();
        assert!(config(&cli.run).is_err());
    }
}
