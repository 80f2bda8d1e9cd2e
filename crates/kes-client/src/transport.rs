//! Sending a request through the load balancer with kms-go's retries, bounded reads of
//! answers, and transport errors that say what failed (TLS problems by name).

use super::*;

pub(crate) fn is_network_error(e: &reqwest::Error) -> bool {
    if find_tls_error(e).is_some() {
        return false;
    }
    if e.is_timeout() || e.is_connect() || e.is_request() {
        return true;
    }
    let mut src = e.source();
    while let Some(s) = src {
        if s.is::<std::io::Error>() {
            return true;
        }
        src = s.source();
    }
    false
}

/// The rustls error behind a failed request, if the handshake failed.
pub(crate) fn find_tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    e.source().and_then(find_tls_in)
}

pub(crate) fn find_tls_in<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    // io::Error::source skips its payload, so a rustls error wrapped in an io::Error (possibly
    // more than once) must be fetched with get_ref.
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(tls) = find_tls_in(inner) {
            return Some(tls);
        }
    }
    e.source().and_then(find_tls_in)
}

/// A handshake failure in words a user can act on; rustls's own texts carry ASN.1 OIDs.
pub(crate) fn describe_tls_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "the server certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server certificate is not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server certificate is not valid for this host name".into()
            }
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "the server certificate is not meant for TLS servers".into()
            }
            // webpki reports an unknown issuer as a signature mismatch when some root has the
            // issuer's name but another key type; either way, no trusted CA vouches for it.
            C::UnknownIssuer
            | C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "the server certificate is not trusted (unknown issuer)".into()
            }
            other => {
                let name = format!("{other:?}");
                let short = name.split([' ', '{', '(']).next().unwrap_or_default();
                format!("invalid server certificate: {short}")
            }
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the server aborted the TLS handshake ({alert:?})")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// One line naming the endpoint and the innermost cause; reqwest's own text only repeats the
/// URL and "error sending request".
pub(crate) fn transport_error(endpoint: &str, e: &reqwest::Error) -> ClientError {
    if e.is_timeout() {
        return ClientError::Transport(format!("{endpoint}: request timed out"));
    }
    if let Some(tls) = find_tls_error(e) {
        return ClientError::Transport(format!("{endpoint}: {}", describe_tls_error(tls)));
    }
    let mut cause = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    ClientError::Transport(format!("{endpoint}: {cause}"))
}

impl Client {
    /// Sends through the load balancer and turns non-2xx answers into [`ClientError::Api`].
    pub(crate) async fn send(&self, req: Request) -> Result<reqwest::Response, ClientError> {
        let n = self.lb.len().max(1);
        let offset = rand::thread_rng().gen_range(0..n);
        let resp = self
            .lb
            .send(offset, |endpoint| self.attempt(endpoint, &req))
            .await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(ClientError::Api(error_of(resp).await))
        }
    }

    /// Sends to one endpoint, retrying network errors and 503 up to twice after a short random
    /// pause, as kms-go's `retry.Do` does.
    pub(crate) async fn attempt(
        &self,
        endpoint: String,
        req: &Request,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{endpoint}{}", req.path);
        let mut retries = limits::RETRIES;
        loop {
            let mut rb = self.http.request(req.method.clone(), &url);
            match &req.body {
                Some(body) => {
                    rb = rb.body(body.clone());
                    if req.json {
                        rb = rb.header(CONTENT_TYPE, "application/json");
                    }
                }
                // Go sends `Content-Length: 0` for body-less POST/PUT; do the same.
                None if req.method == Method::POST || req.method == Method::PUT => {
                    rb = rb.body(Bytes::new());
                }
                None => {}
            }
            if let (false, Some(t)) = (req.stream, self.timeout) {
                rb = rb.timeout(t);
            }
            let result = rb.send().await;
            let retry = match &result {
                Ok(resp) => resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE,
                Err(e) => is_network_error(e),
            };
            if retry && retries > 0 {
                retries -= 1;
                let jitter = rand::thread_rng().gen_range(0..limits::RETRY_JITTER_MS);
                tokio::time::sleep(limits::RETRY_DELAY + Duration::from_millis(jitter)).await;
                continue;
            }
            tracing::trace!(url = %url, ok = result.is_ok(), "kes request");
            return result.map_err(|e| transport_error(&endpoint, &e));
        }
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        req: Request,
        limit: usize,
    ) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let body = read_limited(resp, limit).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub(crate) async fn empty(&self, req: Request) -> Result<(), ClientError> {
        let resp = self.send(req).await?;
        // Drain the (empty) body so the connection goes back to the pool.
        let _ = read_limited(resp, limits::MAX_RESPONSE).await;
        Ok(())
    }

    /// Sends an admin extension request with an optional JSON body and returns the raw answer.
    pub(crate) async fn admin(
        &self,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, ClientError> {
        let body = body
            .map(|b| serde_json::to_vec(&b).map(Bytes::from))
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let json = body.is_some();
        let resp = self
            .send(Request {
                method,
                path,
                body,
                json,
                stream: false,
            })
            .await?;
        Ok(read_limited(resp, limits::MAX_RESPONSE).await?.to_vec())
    }
}

/// Reads a body of at most `limit` bytes; more is an error rather than a memory hazard.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ClientError::Transport(format!("failed to read response: {e}")))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(ClientError::Decode(format!(
                "response larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Decodes an error answer, reading at most [`limits::MAX_ERROR_BODY`] of its body.
pub(crate) async fn error_of(mut resp: reqwest::Response) -> kes_types::KesError {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limits::MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= limits::MAX_ERROR_BODY {
            break;
        }
    }
    parse_error_response(status, content_type.as_deref(), &body)
}
