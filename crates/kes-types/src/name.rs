//! KES's rules for key, policy and identity names and for listing patterns.

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 80;

/// `[0-9A-Za-z_-]{1,80}`, no leading or trailing `-`, and not exactly `_`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN || name == "_" {
        return false;
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return false;
    }
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// A listing pattern: empty, `*`, or a valid name prefix optionally followed by one `*`.
pub fn valid_pattern(pattern: &str) -> bool {
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if body.len() > MAX_NAME_LEN || body.is_empty() || body == "_" {
        return false;
    }
    let b = body.as_bytes();
    // A prefix may end in '-' when a '*' follows ("my-*"), but never start with one.
    if b[0] == b'-' || (!pattern.ends_with('*') && b[b.len() - 1] == b'-') {
        return false;
    }
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// The literal prefix a listing pattern selects: `""` and `"*"` select everything, and one
/// trailing `*` is stripped (KES HEAD keeps it for keys, which matches nothing; we do not).
pub fn list_prefix(pattern: &str) -> &str {
    pattern.strip_suffix('*').unwrap_or(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "my-key", "_-___---_", "A0_z", &"x".repeat(80)] {
            assert!(valid_name(ok), "{ok} should be valid");
        }
        for bad in [
            "",
            "_",
            "-a",
            "a-",
            "my.key",
            "key/",
            "ключ",
            "a b",
            &"x".repeat(81),
        ] {
            assert!(!valid_name(bad), "{bad} should be invalid");
        }
    }

    #[test]
    fn patterns() {
        for ok in ["", "*", "my", "my*", "my-*", "_-*"] {
            assert!(valid_pattern(ok), "{ok} should be valid");
        }
        for bad in ["**", "a*b", "*a", "a.b*", "-a*", "a-"] {
            assert!(!valid_pattern(bad), "{bad} should be invalid");
        }
        assert_eq!(list_prefix("*"), "");
        assert_eq!(list_prefix("my-key*"), "my-key");
        assert_eq!(list_prefix("abc"), "abc");
    }
}
