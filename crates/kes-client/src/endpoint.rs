//! Endpoint strings and URL paths, normalised and escaped as kms-go and the KES CLI do.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Go's `url.PathEscape`: unreserved characters and `$&+:=@` stay, everything else (including
/// `/`, `;`, `,`, `?` and `*`) is percent-encoded with upper-case hex.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b':')
    .remove(b'=')
    .remove(b'@');

/// Go's `url.QueryEscape` minus its `+` for space, which a percent-encoded space also means.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escapes one path segment like Go's `url.PathEscape` (`*` becomes `%2A`).
pub fn path_escape(segment: &str) -> String {
    utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

/// Escapes a query parameter value.
pub fn query_escape(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Normalises one endpoint: surrounding space and trailing `/` removed, `http://` replaced by
/// `https://` (KES only speaks TLS), and a bare `host:port` given `https://`. Empty input
/// yields `None`.
pub fn normalize_endpoint(endpoint: &str) -> Option<String> {
    let trimmed = endpoint.trim();
    let rest = strip_prefix_ignore_case(trimmed, "https://")
        .or_else(|| strip_prefix_ignore_case(trimmed, "http://"))
        .unwrap_or(trimmed);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return None;
    }
    Some(format!("https://{rest}"))
}

/// Splits a comma-separated endpoint list and normalises each entry, skipping empty ones.
pub fn parse_endpoints(list: &str) -> Vec<String> {
    list.split(',').filter_map(normalize_endpoint).collect()
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Whether a normalised endpoint points at this host by name or loopback address. kms-go also
/// ranks endpoints on a local interface network; telling those apart needs the interface
/// table, which the standard library does not expose, so only loopback is recognised.
pub fn is_localhost(endpoint: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_kes() {
        assert_eq!(
            normalize_endpoint(" 127.0.0.1:7373/ ").as_deref(),
            Some("https://127.0.0.1:7373")
        );
        assert_eq!(
            normalize_endpoint("http://kes:7373").as_deref(),
            Some("https://kes:7373")
        );
        assert_eq!(
            normalize_endpoint("HTTPS://kes:7373//").as_deref(),
            Some("https://kes:7373")
        );
        assert_eq!(
            normalize_endpoint("https://[::1]:7373").as_deref(),
            Some("https://[::1]:7373")
        );
        assert_eq!(normalize_endpoint("  "), None);
        assert_eq!(normalize_endpoint("https://"), None);
        assert_eq!(
            parse_endpoints("a:1, ,http://b:2/,"),
            vec!["https://a:1".to_owned(), "https://b:2".to_owned()]
        );
    }

    #[test]
    fn escapes_like_go_path_escape() {
        assert_eq!(path_escape("*"), "%2A");
        assert_eq!(path_escape("my-key_1"), "my-key_1");
        assert_eq!(path_escape("a/b c?d;e,f"), "a%2Fb%20c%3Fd%3Be%2Cf");
        assert_eq!(path_escape("$&+:=@.~"), "$&+:=@.~");
        assert_eq!(path_escape("ü%"), "%C3%BC%25");
        assert_eq!(path_escape(""), "");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }

    #[test]
    fn recognises_localhost() {
        assert!(is_localhost("https://localhost:7373"));
        assert!(is_localhost("https://127.0.0.1:7373"));
        assert!(is_localhost("https://127.1.2.3:7373"));
        assert!(is_localhost("https://[::1]:7373"));
        assert!(!is_localhost("https://10.0.0.1:7373"));
        assert!(!is_localhost("https://kes.example:7373"));
        assert!(!is_localhost("not a url"));
    }
}
