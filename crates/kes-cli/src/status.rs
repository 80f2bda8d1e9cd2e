//! `kes status`, `kes log` and `kes metric`.

use crate::conn::{self, ConnArgs, ServerArg};
use crate::output::{outln, print_json, stdout_is_terminal, Color};
use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use kes_client::{ApiDescription, StatusResponse};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print one line per server
    #[arg(short = 's', long)]
    pub short: bool,
    /// Also list the server's APIs
    #[arg(long)]
    pub api: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// When to use colors (accepted for compatibility; output is plain)
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = Color::Auto, hide = true)]
    pub color: Color,
    /// Server endpoint(s), comma-separated
    /// [env: MINIO_KES_SERVER, KES_SERVER, MINIO_KMS_KES_ENDPOINT] [default: 127.0.0.1:7373]
    #[arg(long = "server", value_name = "HOST:PORT")]
    pub server: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Follow the audit log (the default)
    #[arg(long, conflicts_with = "error")]
    pub audit: bool,
    /// Follow the error log
    #[arg(long)]
    pub error: bool,
    /// Print events as JSON lines
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct MetricArgs {
    /// How often to sample the server's metrics
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_rate)]
    pub rate: Duration,
    /// Stop after this many samples (0: until interrupted)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,
    /// Print JSON lines (the default when the output is not a terminal)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Sampling faster than this only measures the sampling.
const MIN_RATE: Duration = Duration::from_millis(100);

fn parse_rate(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_RATE {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_RATE)
        ));
    }
    Ok(d)
}

/// One endpoint's answer, for `--json`.
#[derive(Serialize)]
struct EndpointStatus {
    endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apis: Option<Vec<ApiDescription>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let client = conn::client(a.server, &a.conn)?;
    let endpoints = client.endpoints();
    let mut results = Vec::with_capacity(endpoints.len());
    // Each node is asked on its own, as MinIO's `mc admin kms status` does: the point is to
    // see every node, not whichever answers first.
    for endpoint in &endpoints {
        let one = client.for_endpoint(endpoint)?;
        let mut r = EndpointStatus {
            endpoint: endpoint.clone(),
            status: None,
            apis: None,
            error: None,
        };
        match one.status().await {
            Ok(s) => r.status = Some(s),
            Err(e) => r.error = Some(e.to_string()),
        }
        if a.api && r.error.is_none() {
            match one.api().await {
                Ok(mut apis) => {
                    apis.sort_by(|x, y| x.path.cmp(&y.path));
                    r.apis = Some(apis);
                }
                Err(e) => r.error = Some(format!("failed to list APIs: {e}")),
            }
        }
        results.push(r);
    }

    if a.json {
        for r in &results {
            print_json(r)?;
        }
    } else {
        for (i, r) in results.iter().enumerate() {
            print_status(r, a.short, i > 0)?;
        }
    }

    let failed: Vec<&EndpointStatus> = results.iter().filter(|r| r.error.is_some()).collect();
    match failed.as_slice() {
        [] => Ok(()),
        [only] if results.len() == 1 => bail!(
            "failed to fetch status of {}: {}",
            only.endpoint,
            only.error.as_deref().unwrap_or_default()
        ),
        _ => bail!(
            "{} of {} servers did not answer",
            failed.len(),
            results.len()
        ),
    }
}

fn print_status(r: &EndpointStatus, short: bool, separate: bool) -> anyhow::Result<()> {
    let Some(s) = &r.status else {
        return outln!(
            "● {}  offline: {}",
            r.endpoint,
            r.error.as_deref().unwrap_or_default()
        );
    };
    let uptime = humantime::format_duration(Duration::from_secs(s.uptime)).to_string();
    let latency = match (s.keystore_latency, s.keystore_unreachable) {
        (_, true) => "unreachable".to_owned(),
        (Some(ms), false) => format!("{ms}ms"),
        (None, false) => "-".to_owned(),
    };
    if short {
        return outln!(
            "● {}  version {}  up {}  keystore {}",
            r.endpoint,
            s.version,
            uptime,
            latency
        );
    }
    if separate {
        outln!()?;
    }
    outln!("● {}", r.endpoint)?;
    outln!("  {:<10} {}", "Version", s.version)?;
    outln!("  {:<10} {}", "Uptime", uptime)?;
    outln!("  {:<10} {}", "Keystore", latency)?;
    outln!(
        "  {:<10} {}/{} ({} used)",
        "System",
        s.os,
        s.arch,
        s.num_cpu_used
    )?;
    outln!("  {:<10} {}", "CPUs", s.num_cpu)?;
    outln!(
        "  {:<10} heap {}, stack {}",
        "Memory",
        mib(s.mem_heap_used),
        mib(s.mem_stack_used)
    )?;
    if let Some(apis) = &r.apis {
        outln!()?;
        outln!(
            "  {:<7} {:<28} {:>9} {:>8}",
            "Method",
            "API",
            "Max Body",
            "Timeout"
        )?;
        for api in apis {
            let timeout = if api.timeout == 0 {
                "-".to_owned()
            } else {
                format!("{}s", api.timeout)
            };
            outln!(
                "  {:<7} {:<28} {:>9} {:>8}",
                api.method,
                api.path,
                api.max_body,
                timeout
            )?;
        }
    }
    Ok(())
}

pub async fn log(a: LogArgs) -> anyhow::Result<()> {
    let client = conn::client(a.server.server, &a.conn)?;
    let json = a.json;
    let follow = async {
        if a.error {
            let mut events = client
                .error_log()
                .await
                .context("failed to subscribe to the error log")?;
            while let Some(ev) = events.next().await {
                let ev = ev.context("error log stream failed")?;
                if json {
                    print_json(&ev)?;
                } else {
                    outln!("{}", ev.message.trim_end())?;
                }
            }
        } else {
            let mut events = client
                .audit_log()
                .await
                .context("failed to subscribe to the audit log")?;
            while let Some(ev) = events.next().await {
                let ev = ev.context("audit log stream failed")?;
                if json {
                    print_json(&ev)?;
                } else {
                    let who: String = ev.request.identity.chars().take(12).collect();
                    outln!(
                        "{}  {}  {:<12}  {:<15}  {}  {}ms",
                        crate::output::date(&ev.time),
                        ev.response.code,
                        who,
                        ev.request.ip,
                        ev.request.path,
                        ev.response.time
                    )?;
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = follow => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Totals read from one Prometheus text exposition: every sample of a family summed, which
/// for KES's `code`-labelled counters gives the total over all status codes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub values: HashMap<String, f64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Self {
        let mut values = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // `name{labels} value [timestamp]`; label values may contain spaces, so split
            // after the closing brace.
            let (series, rest) = match line.find('{') {
                Some(open) => match line[open..].find('}') {
                    Some(close) => (&line[..open], &line[open + close + 1..]),
                    None => continue,
                },
                None => match line.split_once(char::is_whitespace) {
                    Some((name, rest)) => (name, rest),
                    None => continue,
                },
            };
            let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            else {
                continue;
            };
            *values.entry(series.to_owned()).or_insert(0.0) += value;
        }
        Self { values }
    }

    pub fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }
}

/// What `kes metric` prints per sample.
#[derive(Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Requests per second since the previous sample, by outcome.
    pub success_per_sec: f64,
    pub error_per_sec: f64,
    pub failure_per_sec: f64,
    /// Requests in flight.
    pub active: f64,
    /// Mean response time over the interval, in milliseconds.
    pub latency_ms: f64,
    pub uptime_secs: f64,
    pub heap_bytes: f64,
}

/// The rates between two snapshots taken `interval` apart.
pub fn sample(prev: &Snapshot, cur: &Snapshot, interval: Duration) -> Sample {
    let secs = interval.as_secs_f64().max(f64::EPSILON);
    // Counters restart from zero when the server restarts; a negative delta means that.
    let rate = |name: &str| ((cur.get(name) - prev.get(name)).max(0.0)) / secs;
    let count = (cur.get("kes_http_response_time_count")
        - prev.get("kes_http_response_time_count"))
    .max(0.0);
    let sum =
        (cur.get("kes_http_response_time_sum") - prev.get("kes_http_response_time_sum")).max(0.0);
    Sample {
        success_per_sec: rate("kes_http_request_success"),
        error_per_sec: rate("kes_http_request_error"),
        failure_per_sec: rate("kes_http_request_failure"),
        active: cur.get("kes_http_request_active"),
        latency_ms: if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        },
        uptime_secs: cur.get("kes_system_up_time"),
        heap_bytes: cur.get("kes_system_mem_heap_used"),
    }
}

pub async fn metric(a: MetricArgs) -> anyhow::Result<()> {
    let client = conn::client(a.server.server, &a.conn)?;
    let json = a.json || !stdout_is_terminal();
    let run = async {
        let mut prev = Snapshot::parse(&client.metrics().await.context("failed to fetch metrics")?);
        let mut ticker = tokio::time::interval(a.rate);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        if !json {
            outln!(
                "{:>10} {:>10} {:>10} {:>7} {:>11} {:>12}",
                "2xx/s",
                "4xx/s",
                "5xx/s",
                "active",
                "latency",
                "uptime"
            )?;
        }
        let mut n = 0u64;
        loop {
            ticker.tick().await;
            let cur = Snapshot::parse(&client.metrics().await.context("failed to fetch metrics")?);
            let s = sample(&prev, &cur, a.rate);
            if json {
                print_json(&s)?;
            } else {
                let uptime = humantime::format_duration(Duration::from_secs(s.uptime_secs as u64));
                outln!(
                    "{:>10.1} {:>10.1} {:>10.1} {:>7} {:>9.1}ms {:>12}",
                    s.success_per_sec,
                    s.error_per_sec,
                    s.failure_per_sec,
                    s.active,
                    s.latency_ms,
                    uptime.to_string()
                )?;
            }
            prev = cur;
            n += 1;
            if a.count > 0 && n >= a.count {
                return anyhow::Ok(());
            }
        }
    };
    tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP kes_http_request_success Number of requests
# TYPE kes_http_request_success counter
kes_http_request_success{code="200"} 10
kes_http_request_success{code="204"} 2
kes_http_request_error{code="404",x="a b"} 3
kes_http_request_active 1
kes_http_response_time_bucket{le="0.01"} 4
kes_http_response_time_sum 0.5
kes_http_response_time_count 10
kes_system_up_time 42.5
"#;

    #[test]
    fn parses_prometheus_text() {
        let s = Snapshot::parse(TEXT);
        assert_eq!(s.get("kes_http_request_success"), 12.0);
        assert_eq!(s.get("kes_http_request_error"), 3.0);
        assert_eq!(s.get("kes_http_request_active"), 1.0);
        assert_eq!(s.get("kes_system_up_time"), 42.5);
        assert_eq!(s.get("missing"), 0.0);
    }

    #[test]
    fn rates_between_snapshots() {
        let prev = Snapshot::parse(TEXT);
        let cur = Snapshot::parse(
            &TEXT
                .replace("} 10\n", "} 30\n")
                .replace("sum 0.5", "sum 1.5")
                .replace("count 10", "count 20"),
        );
        let s = sample(&prev, &cur, Duration::from_secs(2));
        assert_eq!(s.success_per_sec, 10.0);
        assert_eq!(s.error_per_sec, 0.0);
        assert_eq!(s.latency_ms, 100.0);
        // A restarted server's counters drop; that is not a negative rate.
        let s = sample(&cur, &prev, Duration::from_secs(2));
        assert_eq!(s.success_per_sec, 0.0);
    }

    #[test]
    fn rate_has_a_floor() {
        assert!(parse_rate("10ms").is_err());
        assert_eq!(parse_rate("5s").unwrap(), Duration::from_secs(5));
    }
}
