//! Turning vaultrs errors into [`StoreError`]s: who failed, and whether sending the request again
//! is safe.

use kes_keystore::StoreError;
use vaultrs::error::ClientError;

/// What kind of request failed, which decides whether a transport failure may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Reads and other requests without side effects: always safe to send again.
    Read,
    /// Writes: safe to send again only when the request provably never left this process
    /// (connection refused). A write whose answer was lost may have been applied, and a
    /// check-and-set create sent twice would report `AlreadyExists` for its own entry.
    Write,
}

/// Classifies a failed Vault call.
pub(crate) fn classify(err: ClientError, op: Op) -> StoreError {
    match err {
        ClientError::APIError { code, errors } => from_status(code, &errors.join("; "), op),
        ClientError::RestClientError { source } => from_rest(source, op),
        ClientError::JsonParseError { source } => {
            StoreError::Invalid(format!("vault answered with unexpected JSON: {source}"))
        }
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            StoreError::Invalid("vault answered without the expected data".into())
        }
        other => StoreError::unavailable(false, format!("vault client: {other}")),
    }
}

fn from_rest(err: rustify::errors::ClientError, op: Op) -> StoreError {
    use rustify::errors::ClientError as Rest;
    match err {
        Rest::ServerResponseError { code, content } => {
            from_status(code, content.as_deref().unwrap_or_default(), op)
        }
        Rest::RequestError {
            source,
            url: _,
            method,
        } => match source.downcast::<reqwest::Error>() {
            Ok(e) => from_reqwest(e, op),
            Err(source) => StoreError::unavailable(
                op == Op::Read,
                format!("request to vault failed ({method}): {}", chain(&*source)),
            ),
        },
        Rest::ResponseError { source } => StoreError::unavailable(
            op == Op::Read,
            format!("reading vault's answer failed: {}", chain(&*source)),
        ),
        Rest::ResponseParseError { source, .. } | Rest::DataParseError { source } => {
            StoreError::Invalid(format!("vault answered with unexpected data: {source}"))
        }
        other => StoreError::unavailable(false, format!("vault request: {other}")),
    }
}

/// Classifies a failed request that got no HTTP answer.
pub(crate) fn from_reqwest(e: reqwest::Error, op: Op) -> StoreError {
    let (retryable, what) = if e.is_connect() {
        // Connection refused or failed TLS handshake: nothing reached Vault.
        (true, "cannot connect to vault")
    } else if e.is_timeout() {
        (op == Op::Read, "vault did not answer in time")
    } else {
        (op == Op::Read, "request to vault failed")
    };
    // Without the URL: its path carries the key name, which belongs in the caller's log
    // fields, not in an error message that may reach a client.
    StoreError::unavailable(retryable, format!("{what}: {}", chain(&e.without_url())))
}

/// Maps an HTTP status from Vault. 404 and 403 are definitive answers; everything else is the
/// keystore failing, which the server must report as its own upstream failure rather than as
/// a client error.
pub(crate) fn from_status(code: u16, detail: &str, op: Op) -> StoreError {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    match code {
        404 => StoreError::NotFound,
        401 | 403 => StoreError::Denied(format!("vault answered {code}{detail}")),
        // Sealed, standby without forwarding, or rate-limited: the request was not processed.
        429 | 503 => StoreError::unavailable(true, format!("vault answered {code}{detail}")),
        500..=599 => {
            StoreError::unavailable(op == Op::Read, format!("vault answered {code}{detail}"))
        }
        // Any other 4xx means the request does not fit this Vault (wrong engine version or
        // mount, a policy on the mount): a configuration problem that retries cannot fix.
        _ => StoreError::unavailable(
            false,
            format!("vault rejected the request with {code}{detail}"),
        ),
    }
}

/// An error and its sources on one line: reqwest hides the useful part (connection refused,
/// certificate unknown) in the source chain.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    // Bounded: a cyclic or very deep chain must not produce an unbounded message.
    for _ in 0..8 {
        let Some(e) = cur else { break };
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// Whether the connection was refused (nothing listens at the endpoint), anywhere in the
/// error's chain of sources.
pub(crate) fn is_refused(err: &ClientError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error vaultrs returns for a request to a port nothing listens on.
    async fn refused_request() -> ClientError {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let url = format!("http://127.0.0.1:{port}/v1/sys/health");
        let Err(e) = reqwest::Client::new().get(&url).send().await else {
            panic!("a closed port answered");
        };
        ClientError::RestClientError {
            source: rustify::errors::ClientError::RequestError {
                source: e.into(),
                url,
                method: "GET".into(),
            },
        }
    }

    #[tokio::test]
    #[allow(clippy::panic)]
    async fn a_refused_connection_is_recognised() {
        let e = refused_request().await;
        assert!(is_refused(&e), "{e:?}");
        assert!(!is_refused(&ClientError::APIError {
            code: 503,
            errors: vec!["sealed".into()]
        }));
        // Still safe to send again (nothing reached Vault), so a caller may retry later.
        assert!(matches!(
            classify(e, Op::Write),
            StoreError::Unavailable {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn statuses() {
        assert!(matches!(
            from_status(404, "", Op::Read),
            StoreError::NotFound
        ));
        assert!(
            matches!(from_status(403, "permission denied", Op::Write), StoreError::Denied(m) if m.contains("permission denied"))
        );
        for (code, op, retryable) in [
            (503, Op::Write, true),
            (429, Op::Read, true),
            (500, Op::Read, true),
            (500, Op::Write, false),
            (400, Op::Read, false),
            (405, Op::Write, false),
        ] {
            match from_status(code, "x", op) {
                StoreError::Unavailable {
                    retryable: r,
                    message,
                } => {
                    assert_eq!(r, retryable, "{code} {op:?}");
                    assert!(message.contains(&code.to_string()), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }
}
