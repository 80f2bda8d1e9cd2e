//! The client's error type and the decoding of KES error responses.

use kes_types::wire::ErrorBody;
use kes_types::KesError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. The message is the server's, byte for byte,
    /// so callers can compare it with the canonical KES errors.
    #[error("{}", .0.message)]
    Api(KesError),
    /// No usable answer: connection refused, TLS failure, timeout, broken stream.
    #[error("{0}")]
    Transport(String),
    /// The server answered 2xx but the body was not what the API promises.
    #[error("invalid server response: {0}")]
    Decode(String),
    /// The client could not be set up: bad endpoint, unreadable certificate or key file.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The server's error, if the server answered with one.
    pub fn api(&self) -> Option<&KesError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status of a server error.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }

    pub fn is_key_not_found(&self) -> bool {
        self.api().is_some_and(KesError::is_key_not_found)
    }

    pub fn is_key_exists(&self) -> bool {
        self.api().is_some_and(KesError::is_key_exists)
    }

    pub fn is_not_allowed(&self) -> bool {
        self.api().is_some_and(KesError::is_not_allowed)
    }
}

impl From<KesError> for ClientError {
    fn from(e: KesError) -> Self {
        ClientError::Api(e)
    }
}

/// Turns an error response into a [`KesError`] the way kms-go's `parseErrorResponse` does:
/// JSON only when the Content-Type starts with `application/json`, `error` preferred over
/// `message`, and otherwise the raw body as the message.
pub fn parse_error_response(status: u16, content_type: Option<&str>, body: &[u8]) -> KesError {
    let is_json = content_type.is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    if is_json {
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            let message = match (parsed.error, parsed.message) {
                (Some(e), _) if !e.is_empty() => e,
                (_, Some(m)) => m,
                (Some(e), None) => e,
                (None, None) => String::new(),
            };
            return KesError::new(status, message);
        }
        // A JSON content type with a body that is not JSON: keep the text rather than
        // replacing the server's answer by a parse error that hides the status.
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if text.is_empty() {
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| format!("http status {status}"));
        return KesError::new(status, reason);
    }
    KesError::new(status, text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use kes_types::msg;

    #[test]
    fn parses_kes_error_body() {
        let body = KesError::key_not_found().body();
        let e = parse_error_response(404, Some("application/json"), body.as_bytes());
        assert_eq!(e, KesError::key_not_found());
        assert!(ClientError::Api(e).is_key_not_found());
    }

    #[test]
    fn error_field_wins_over_message() {
        let e = parse_error_response(
            400,
            Some("application/json; charset=utf-8"),
            br#"{"message":"m","error":"key does already exist"}"#,
        );
        assert_eq!(e.message, "key does already exist");
        assert!(e.is_key_exists());
        let e = parse_error_response(400, Some("application/json"), br#"{"error":""}"#);
        assert_eq!(e.message, "");
    }

    #[test]
    fn non_json_content_type_gives_raw_body() {
        let e = parse_error_response(
            404,
            Some("text/plain; charset=utf-8"),
            b"404 page not found\n",
        );
        assert_eq!(e, KesError::new(404, "404 page not found"));
        // Without a JSON content type, a JSON body is not decoded (as in kms-go).
        let e = parse_error_response(403, None, KesError::not_allowed().body().as_bytes());
        assert_ne!(e.message, msg::NOT_ALLOWED);
    }

    #[test]
    fn empty_or_broken_bodies_keep_the_status() {
        let e = parse_error_response(502, None, b"");
        assert_eq!(e, KesError::new(502, "bad gateway"));
        let e = parse_error_response(500, Some("application/json"), b"oops");
        assert_eq!(e, KesError::new(500, "oops"));
    }

    #[test]
    fn display_is_the_server_message() {
        let e = ClientError::Api(KesError::key_exists());
        assert_eq!(e.to_string(), "key already exists");
        assert_eq!(e.status(), Some(400));
    }
}
