//! What a benchmark run does: target, endpoints, credentials, load shape and limits.

use anyhow::{bail, Context};
use kes_crypto::ApiKey;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Hard limits, so a typo in a flag cannot turn a benchmark into a runaway.
pub mod limits {
    use std::time::Duration;

    /// Most concurrent requests (workers).
    pub const MAX_CONCURRENCY: usize = 4096;
    /// Most connections per endpoint.
    pub const MAX_CONNECTIONS: usize = 4096;
    /// Most keys the set-up creates and prepares.
    pub const MAX_KEYS: usize = 10_000;
    /// Largest plaintext or HMAC message (the KES body limit is 1 MB, base64 grows it by 4/3).
    pub const MAX_PLAINTEXT: usize = 512 * 1024;
    /// Longest measurement or warm-up.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
    /// Largest response body read.
    pub const MAX_RESPONSE: usize = 1 << 20;
    /// Latencies above this are recorded as this (the histogram's upper bound), in µs.
    pub const MAX_LATENCY_US: u64 = 120_000_000;
}

/// Which API the endpoints speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The KES API (this server, MinIO KES, a replica set of either).
    Kes,
    /// OpenBao's (or Vault's) transit secrets engine.
    Openbao,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Kes => "kes",
            TargetKind::Openbao => "openbao",
        }
    }
}

impl FromStr for TargetKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "kes" => Ok(TargetKind::Kes),
            "openbao" | "bao" | "vault" => Ok(TargetKind::Openbao),
            _ => bail!("unknown target '{s}' (kes or openbao)"),
        }
    }
}

/// HTTP version spoken on every connection (fixed by ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "http/1.1")]
    Http1,
    #[serde(rename = "h2")]
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::Http2 => "h2",
        }
    }
}

impl FromStr for Protocol {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "1.1" | "h1" | "http1" | "http/1.1" => Ok(Protocol::Http1),
            "2" | "h2" | "http2" => Ok(Protocol::Http2),
            _ => bail!("unknown protocol '{s}' (h1 or h2)"),
        }
    }
}

/// One kind of request in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Generate,
    Decrypt,
    Encrypt,
    Hmac,
    Describe,
    /// Creates a fresh key and deletes it again: two requests, measured as one operation.
    CreateDelete,
    /// Creates a fresh key and keeps it (create throughput, filling a server with keys).
    Create,
}

/// Number of operations, the length of per-operation arrays.
pub const N_OPS: usize = 7;

impl Op {
    pub const ALL: [Op; N_OPS] = [
        Op::Generate,
        Op::Decrypt,
        Op::Encrypt,
        Op::Hmac,
        Op::Describe,
        Op::CreateDelete,
        Op::Create,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Generate => "generate",
            Op::Decrypt => "decrypt",
            Op::Encrypt => "encrypt",
            Op::Hmac => "hmac",
            Op::Describe => "describe",
            Op::CreateDelete => "create-delete",
            Op::Create => "create",
        }
    }

    /// Position in [`Op::ALL`], for per-operation arrays.
    pub fn index(self) -> usize {
        match self {
            Op::Generate => 0,
            Op::Decrypt => 1,
            Op::Encrypt => 2,
            Op::Hmac => 3,
            Op::Describe => 4,
            Op::CreateDelete => 5,
            Op::Create => 6,
        }
    }
}

impl FromStr for Op {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "generate" | "dek" => Ok(Op::Generate),
            "decrypt" => Ok(Op::Decrypt),
            "encrypt" => Ok(Op::Encrypt),
            "hmac" => Ok(Op::Hmac),
            "describe" | "info" => Ok(Op::Describe),
            "create-delete" | "create+delete" | "create_delete" => Ok(Op::CreateDelete),
            "create" => Ok(Op::Create),
            _ => bail!(
                "unknown operation '{s}' (generate, decrypt, encrypt, hmac, describe, create-delete, create)"
            ),
        }
    }
}

/// Parses `generate=3,decrypt=1` (a missing weight is 1) into weighted operations.
pub fn parse_mix(s: &str) -> anyhow::Result<Vec<(Op, u32)>> {
    let mut mix: Vec<(Op, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.split_once(['=', ':']) {
            Some((n, w)) => (
                n,
                w.trim()
                    .parse::<u32>()
                    .with_context(|| format!("invalid weight in '{part}'"))?,
            ),
            None => (part, 1),
        };
        let op: Op = name.parse()?;
        if mix.iter().any(|(o, _)| *o == op) {
            bail!("operation '{}' appears twice in the mix", op.as_str());
        }
        if weight > 0 {
            mix.push((op, weight));
        }
    }
    if mix.is_empty() {
        bail!("the operation mix is empty");
    }
    Ok(mix)
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A `kes:v1:` API key, turned into a self-signed client certificate.
    ApiKey(ApiKey),
    /// A PEM certificate and private key file.
    CertFiles { cert: PathBuf, key: PathBuf },
    /// An OpenBao/Vault token sent as `X-Vault-Token` (no client certificate).
    Token(String),
}

/// Which server certificates are trusted.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// PEM files (or directories of them) with trusted CA certificates.
    pub ca_files: Vec<PathBuf>,
    /// PEM texts with trusted CA certificates.
    pub ca_pems: Vec<String>,
    /// Accept any server certificate (handshake signatures are still checked).
    pub insecure: bool,
}

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Each worker sends its next request as soon as the previous one is answered.
    Closed,
    /// Requests are scheduled at a fixed total rate (per second); latency counts from the
    /// scheduled time. At most `concurrency` requests are in flight; when all are busy, the
    /// schedule falls behind and the delay shows up in the latencies.
    Open { rate: f64 },
}

/// A complete benchmark description. Defaults are those of the binary.
#[derive(Clone, Debug)]
pub struct Config {
    pub target: TargetKind,
    /// Endpoint URLs; `https://` is assumed when no scheme is given.
    pub endpoints: Vec<String>,
    pub auth: Option<Auth>,
    pub trust: Trust,
    pub protocol: Protocol,
    /// Connections per endpoint; 0 means one per concurrent request for HTTP/1.1 and one for
    /// HTTP/2.
    pub connections: usize,
    /// Requests in flight at once (workers).
    pub concurrency: usize,
    pub mix: Vec<(Op, u32)>,
    /// Keys the requests are spread over, named `<key_prefix>-<i>`.
    pub keys: usize,
    pub key_prefix: String,
    /// Plaintext size for encrypt, message size for hmac.
    pub plaintext_size: usize,
    /// Associated data (KES context) sent with generate, encrypt and decrypt.
    pub context: Vec<u8>,
    pub mode: Mode,
    pub warmup: Duration,
    /// Measurement time; the run also ends after `requests` measured requests if set.
    pub duration: Duration,
    pub requests: Option<u64>,
    /// Limit of one request (all retries included).
    pub timeout: Duration,
    /// Extra attempts on the same endpoint after a network error or a 503, as kms-go does.
    pub retries: u32,
    /// How long the set-up waits for the endpoints to answer (servers still starting).
    pub wait: Duration,
    /// Create missing keys during set-up.
    pub create_keys: bool,
    /// Seed of the operation and key choices, so runs are repeatable.
    pub seed: u64,
    /// Open a new connection (a full TLS handshake, no session resumption) for every request.
    pub reconnect: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target: TargetKind::Kes,
            endpoints: vec![kes_client::DEFAULT_ENDPOINT.to_owned()],
            auth: None,
            trust: Trust::default(),
            protocol: Protocol::Http1,
            connections: 0,
            concurrency: 16,
            mix: vec![(Op::Generate, 1)],
            keys: 1,
            key_prefix: "kes-bench".to_owned(),
            plaintext_size: 32,
            // What MinIO sends for SSE-S3: the canonical JSON of {bucket: bucket/object}.
            context: br#"{"bucket":"bucket/object"}"#.to_vec(),
            mode: Mode::Closed,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            requests: None,
            timeout: Duration::from_secs(15),
            retries: kes_client::limits::RETRIES,
            wait: Duration::from_secs(0),
            create_keys: true,
            seed: 1,
            reconnect: false,
        }
    }
}

impl Config {
    /// Connections per endpoint after resolving the automatic choice.
    pub fn connections_per_endpoint(&self) -> usize {
        match (self.connections, self.protocol) {
            (0, Protocol::Http1) => self.concurrency,
            (0, Protocol::Http2) => 1,
            (n, _) => n,
        }
    }

    pub fn uses(&self, op: Op) -> bool {
        self.mix.iter().any(|(o, _)| *o == op)
    }

    /// Rejects combinations that cannot run, with a message naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.endpoints.is_empty() {
            bail!("no endpoint given");
        }
        if self.concurrency == 0 || self.concurrency > limits::MAX_CONCURRENCY {
            bail!(
                "--concurrency must be between 1 and {}",
                limits::MAX_CONCURRENCY
            );
        }
        if self.connections > limits::MAX_CONNECTIONS {
            bail!("--connections must be at most {}", limits::MAX_CONNECTIONS);
        }
        if self.keys == 0 || self.keys > limits::MAX_KEYS {
            bail!("--keys must be between 1 and {}", limits::MAX_KEYS);
        }
        if self.plaintext_size > limits::MAX_PLAINTEXT {
            bail!("--plaintext-size must be at most {}", limits::MAX_PLAINTEXT);
        }
        if self.duration.is_zero() || self.duration > limits::MAX_DURATION {
            bail!("--duration must be between 1ms and 24h");
        }
        if self.warmup > limits::MAX_DURATION {
            bail!("--warmup must be at most 24h");
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be longer than zero");
        }
        if self.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        if let Mode::Open { rate } = self.mode {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                bail!("--rate must be between 0 and 10,000,000 requests per second");
            }
        }
        if self.mix.is_empty() {
            bail!("the operation mix is empty");
        }
        match self.target {
            TargetKind::Kes => {
                if matches!(self.auth, Some(Auth::Token(_))) {
                    bail!("--token is for the openbao target; KES authenticates with --api-key or --cert/--key");
                }
            }
            TargetKind::Openbao => {
                if !matches!(self.auth, Some(Auth::Token(_))) {
                    bail!("the openbao target needs --token");
                }
                if self.uses(Op::CreateDelete) {
                    bail!("create-delete is not supported against openbao (transit keys cannot be deleted without changing their configuration)");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn mix_parsing() {
        assert_eq!(
            parse_mix("generate=3, decrypt").unwrap(),
            vec![(Op::Generate, 3), (Op::Decrypt, 1)]
        );
        assert_eq!(
            parse_mix("create+delete:2,hmac=0").unwrap(),
            vec![(Op::CreateDelete, 2)]
        );
        assert!(parse_mix("").is_err());
        assert!(parse_mix("generate,generate").is_err());
        assert!(parse_mix("sign").is_err());
        assert!(parse_mix("generate=x").is_err());
        for op in Op::ALL {
            assert_eq!(op.as_str().parse::<Op>().unwrap(), op);
            assert_eq!(Op::ALL[op.index()], op);
        }
    }

    #[test]
    fn validation() {
        let mut c = Config {
            auth: Some(Auth::ApiKey(ApiKey::generate())),
            ..Config::default()
        };
        c.validate().unwrap();
        assert_eq!(c.connections_per_endpoint(), 16);
        c.protocol = Protocol::Http2;
        assert_eq!(c.connections_per_endpoint(), 1);
        c.target = TargetKind::Openbao;
        assert!(c.validate().is_err());
        c.auth = Some(Auth::Token("t".into()));
        c.validate().unwrap();
        c.mix = vec![(Op::CreateDelete, 1)];
        assert!(c.validate().is_err());
        let c = Config {
            mode: Mode::Open { rate: 0.0 },
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
