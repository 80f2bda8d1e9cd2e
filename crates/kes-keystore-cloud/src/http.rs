//! The HTTP plumbing every backend shares: one reqwest client per store (rustls on ring, the
//! configured CA or the system roots), bounded retries with backoff and `Retry-After`, bounded
//! response bodies, and the mapping of transport failures and HTTP statuses onto
//! [`StoreError`].

use kes_keystore::StoreError;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

/// Deadline of one HTTP request, connecting included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of opening a TCP and TLS connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one request, the first included, when failures are transient.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Longest wait a `Retry-After` answer is honoured with; longer ones end the retries.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Largest response body read from a KMS.
pub const MAX_RESPONSE_LEN: usize = 8 << 20;
/// Longest error text taken from a KMS answer into an error message.
const MAX_MESSAGE_LEN: usize = 300;

/// Time limits and retries of a store. [`Limits::default`] is what `connect` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of one HTTP request ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// Deadline of opening a connection ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Tries of a request whose failure is transient, at least 1 ([`DEFAULT_ATTEMPTS`]).
    /// Between tries the store waits 100 ms, 200 ms, ... (at most 1 s), or what the KMS's
    /// `Retry-After` asks for, up to `max_retry_after`.
    pub attempts: u32,
    /// Longest `Retry-After` honoured ([`DEFAULT_MAX_RETRY_AFTER`]).
    pub max_retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl Limits {
    /// Upper bound of one operation's time: every attempt and every wait between them.
    pub fn operation_bound(&self) -> Duration {
        let attempts = self.attempts.max(1);
        (self.request_timeout + self.max_retry_after.max(Duration::from_secs(1))) * attempts
    }
}

/// Deserializes a secret string straight into memory that is wiped on drop.
pub(crate) fn zeroizing<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<zeroize::Zeroizing<String>, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(zeroize::Zeroizing::new)
}

/// A configuration the store cannot work with; never retried.
pub(crate) fn invalid_config(service: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(
        false,
        format!("invalid {service} keystore configuration: {message}"),
    )
}

/// Whether a request may be sent again after its answer was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Reads, and writes whose repetition ends the same way (delete, purge).
    Idempotent,
    /// Writes that must not be repeated once they may have arrived (creates).
    Write,
}

/// An HTTP answer of any status.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json<T: DeserializeOwned>(&self, service: &str) -> Result<T, StoreError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            StoreError::Invalid(format!(
                "{service} answered {} with unexpected JSON: {e}",
                self.status
            ))
        })
    }

    /// The error text of the answer: the usual JSON fields of the KMSes' error bodies, else
    /// the start of the body.
    pub fn message(&self) -> String {
        let text = match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) => [
                "/error/message",
                "/error_description",
                "/message",
                "/error",
                "/codeDesc",
                "/description",
            ]
            .iter()
            .find_map(|p| v.pointer(p).and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| v.to_string()),
            Err(_) => String::from_utf8_lossy(&self.body).into_owned(),
        };
        let text = text.trim();
        match text.char_indices().nth(MAX_MESSAGE_LEN) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text.to_owned(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        let v = self.headers.get(RETRY_AFTER)?.to_str().ok()?;
        v.trim().parse::<u64>().ok().map(Duration::from_secs)
    }

    /// The store error for a status that the backend does not treat specially.
    pub fn error(&self, service: &str, op: Op) -> StoreError {
        let status = self.status;
        let message = self.message();
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        match status {
            404 => StoreError::NotFound,
            409 => StoreError::AlreadyExists,
            401 | 403 => StoreError::Denied(format!("{service} answered {status}{detail}")),
            // Throttled or temporarily unable: the request was not processed.
            429 | 503 => {
                StoreError::unavailable(true, format!("{service} answered {status}{detail}"))
            }
            500..=599 => StoreError::unavailable(
                op == Op::Idempotent,
                format!("{service} answered {status}{detail}"),
            ),
            // Any other refusal means the request does not fit this KMS (a setting, a
            // permission model, a version): retries do not fix it.
            _ => StoreError::unavailable(
                false,
                format!("{service} rejected the request with {status}{detail}"),
            ),
        }
    }
}

/// One HTTPS client with its limits.
#[derive(Clone)]
pub(crate) struct Http {
    pub client: reqwest::Client,
    pub limits: Limits,
    pub service: &'static str,
}

impl Http {
    /// The client: rustls on ring, trusting `ca` (a PEM file or a directory of them) or else
    /// the system's roots, which `SSL_CERT_FILE` and `SSL_CERT_DIR` replace when set (the way
    /// to trust a private CA for the KMSes whose KES section has no `tls.ca`).
    pub fn new(
        service: &'static str,
        ca: Option<&Path>,
        limits: Limits,
    ) -> Result<Http, StoreError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(ca) => kes_tls::add_ca(&mut roots, ca)
                .map_err(|e| invalid_config(service, format!("tls.ca: {e}")))?,
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // One unparsable system certificate must not break the others.
                    let _ = roots.add(cert);
                }
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(kes_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid_config(service, format!("tls: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .timeout(limits.request_timeout)
            .connect_timeout(limits.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            // A KMS redirect would carry credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid_config(service, format!("http client: {e}")))?;
        Ok(Http {
            client,
            limits: Limits {
                attempts: limits.attempts.max(1),
                ..limits
            },
            service,
        })
    }

    fn backoff(attempt: u32) -> Duration {
        let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.saturating_sub(1));
        let jitter = Duration::from_millis(rand::random::<u64>() % 50);
        base.min(Duration::from_secs(1)) + jitter
    }

    /// Sends the request `build` makes, with bounded retries: failures to connect (nothing was
    /// sent), `429` and `503` (not processed, after the `Retry-After` the KMS asks for, when
    /// it is short enough) are retried for every request; timeouts, lost answers and other
    /// `5xx` only for [`Op::Idempotent`] ones. Returns the last answer whatever its status.
    pub async fn send<F>(&self, op: Op, build: F) -> Result<Answer, StoreError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let service = self.service;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.limits.attempts;
            let result = match build(&self.client).send().await {
                Ok(resp) => read(resp).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(answer) => {
                    let wait = match answer.status {
                        429 | 503 => match answer.retry_after() {
                            Some(d) if d > self.limits.max_retry_after => None,
                            Some(d) => Some(d),
                            None => Some(Self::backoff(attempt)),
                        },
                        500..=599 if op == Op::Idempotent => Some(Self::backoff(attempt)),
                        _ => None,
                    };
                    match wait {
                        Some(d) if !last => {
                            tracing::debug!(
                                service,
                                status = answer.status,
                                wait_ms = d.as_millis() as u64,
                                "retrying"
                            );
                            tokio::time::sleep(d).await;
                        }
                        _ => return Ok(answer),
                    }
                }
                Err(e) => {
                    let err = transport_error(service, &e, op);
                    let retryable = matches!(
                        err,
                        StoreError::Unavailable {
                            retryable: true,
                            ..
                        }
                    );
                    if last || !retryable {
                        return Err(err);
                    }
                    tokio::time::sleep(Self::backoff(attempt)).await;
                }
            }
        }
    }
}

/// Reads a response body, at most [`MAX_RESPONSE_LEN`] bytes.
async fn read(mut resp: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_LEN {
            // Kept as a (truncated) answer: the caller's JSON decoding reports it.
            body.extend_from_slice(&chunk[..MAX_RESPONSE_LEN - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Classifies a request that got no complete HTTP answer.
pub(crate) fn transport_error(service: &str, e: &reqwest::Error, op: Op) -> StoreError {
    let (retryable, what) = if e.is_connect() {
        // Refused, unreachable, or a failed TLS handshake: nothing reached the KMS.
        (true, "cannot connect to")
    } else if e.is_timeout() {
        (op == Op::Idempotent, "no answer in time from")
    } else {
        (op == Op::Idempotent, "request failed to")
    };
    StoreError::unavailable(retryable, format!("{what} {service}: {}", describe(e)))
}

/// An error and its sources on one line, without the URL: its path carries the key name,
/// which belongs in log fields. reqwest hides the useful part (connection refused,
/// certificate unknown) in the source chain.
fn describe(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    // Bounded, so a deep chain cannot make an unbounded message.
    for _ in 0..8 {
        let Some(e) = cur else { break };
        let s = e.to_string();
        let s = match s.find(" for url (") {
            Some(i) => s[..i].to_owned(),
            None => s,
        };
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// Percent-encodes one path segment.
pub(crate) fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// An endpoint as KES takes it: a URL, or a bare `host[:port]` meaning HTTPS. Without the
/// trailing slash.
pub(crate) fn base_url(service: &str, endpoint: &str) -> Result<String, StoreError> {
    let e = endpoint.trim().trim_end_matches('/');
    if e.is_empty() {
        return Err(invalid_config(service, "endpoint is empty"));
    }
    let e = if e.contains("://") {
        e.to_owned()
    } else {
        format!("https://{e}")
    };
    let url = reqwest::Url::parse(&e)
        .map_err(|err| invalid_config(service, format!("endpoint '{e}': {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid_config(
            service,
            format!("endpoint '{e}': want an https:// URL or host:port"),
        ));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn messages_from_error_bodies() {
        assert_eq!(
            answer(400, r#"{"error":{"code":400,"message":"bad thing"}}"#).message(),
            "bad thing"
        );
        assert_eq!(
            answer(400, r#"{"error":"invalid_grant","error_description":"no"}"#).message(),
            "no"
        );
        assert_eq!(answer(500, "plain text").message(), "plain text");
        assert!(answer(500, &"x".repeat(5000)).message().len() < 400);
    }

    #[test]
    fn statuses() {
        use StoreError as E;
        assert!(matches!(answer(404, "").error("s", Op::Write), E::NotFound));
        assert!(matches!(
            answer(409, "").error("s", Op::Write),
            E::AlreadyExists
        ));
        assert!(matches!(
            answer(401, "").error("s", Op::Write),
            E::Denied(_)
        ));
        for (status, op, retryable) in [
            (429, Op::Write, true),
            (503, Op::Write, true),
            (500, Op::Idempotent, true),
            (500, Op::Write, false),
            (400, Op::Idempotent, false),
        ] {
            match answer(status, "x").error("s", op) {
                E::Unavailable {
                    retryable: r,
                    message,
                } => {
                    assert_eq!(r, retryable, "{status}");
                    assert!(message.contains(&status.to_string()), "{message}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            base_url("s", "secretmanager.googleapis.com:443").unwrap(),
            "https://secretmanager.googleapis.com:443"
        );
        assert_eq!(
            base_url("s", "http://127.0.0.1:1/").unwrap(),
            "http://127.0.0.1:1"
        );
        for bad in ["", "ftp://x", "https://a b"] {
            assert!(base_url("s", bad).is_err(), "{bad}");
        }
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn operation_bound_covers_every_attempt() {
        let l = Limits::default();
        assert!(l.operation_bound() >= l.request_timeout * l.attempts);
    }
}
