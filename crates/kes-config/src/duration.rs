//! Go `time.ParseDuration` syntax, which KES config files use (`5m0s`, `1h2m`, `1.5s`).
//!
//! humantime accepts a different language (`5min`, `2 hours`) and rejects some Go forms
//! (`1.5s`, `µs`), so existing KES files would not parse with it.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DurationError {
    /// Why, e.g. `missing unit in duration`.
    pub reason: &'static str,
}

fn err(reason: &'static str) -> DurationError {
    DurationError { reason }
}

/// Go caps durations at `i64::MAX` nanoseconds (about 292 years); so do we, so that a value
/// accepted here is one a Go KES would accept too.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Fraction digits beyond nanosecond precision of an hour cannot change the result; capping
/// them keeps the arithmetic far from overflow.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a Go duration: an optional sign, then one or more `<number><unit>` parts, where a
/// number may have a fraction and a unit is `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m` or `h`.
/// A bare `0` is allowed. Negative durations are rejected, because no KES duration setting
/// has a meaning for them (`-0s` is zero and accepted).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err("empty duration"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = digits(rest);
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(r) => r.split_at(digits(r)),
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("invalid number in duration"));
        }
        let unit_len: usize = after_num
            .chars()
            .take_while(|c| *c != '.' && !c.is_ascii_digit())
            .map(char::len_utf8)
            .sum();
        let (unit, after_unit) = after_num.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit in duration")),
            _ => return Err(err("unknown unit in duration")),
        };

        let mut whole: u128 = 0;
        for d in int_part.bytes() {
            whole = whole * 10 + u128::from(d - b'0');
            if whole > MAX_NANOS {
                return Err(err("duration out of range"));
            }
        }
        let mut part = whole
            .checked_mul(unit_nanos)
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(|| err("duration out of range"))?;
        if !frac_part.is_empty() {
            let kept = &frac_part[..frac_part.len().min(MAX_FRACTION_DIGITS)];
            let mut frac: u128 = 0;
            let mut scale: u128 = 1;
            for d in kept.bytes() {
                frac = frac * 10 + u128::from(d - b'0');
                scale *= 10;
            }
            // Truncates below a nanosecond, as Go does.
            part += frac * unit_nanos / scale;
        }
        total += part;
        if total > MAX_NANOS {
            return Err(err("duration out of range"));
        }
        rest = after_unit;
    }
    if negative && total != 0 {
        return Err(err("negative duration"));
    }
    let nanos = u64::try_from(total).map_err(|_| err("duration out of range"))?;
    Ok(Duration::from_nanos(nanos))
}

fn digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn go_forms() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(ok("5m0s"), Duration::from_secs(300));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1h2m"), Duration::from_secs(3720));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok("10μs"), Duration::from_micros(10));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(
            ok("1h1m1s1ms1us1ns"),
            Duration::from_nanos(3_661_001_001_001)
        );
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("0.0000000019s"), Duration::from_nanos(1));
        assert_eq!(ok("2562047h"), Duration::from_secs(2_562_047 * 3600));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "-",
            "5",
            "1.5",
            ".s",
            "s",
            "5 m",
            "5min",
            "1d",
            "-5s",
            "-1ns",
            "1h-2m",
            "2562048h",
            "99999999999999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_duration("-5s").map_err(|e| e.reason),
            Err("negative duration")
        );
    }
}
