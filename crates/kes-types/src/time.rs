//! Timestamps as Go's `time.RFC3339Nano`: fraction without trailing zeros, `Z` for UTC.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A point in time serialized the way Go serializes `time.Time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoTime(pub OffsetDateTime);

impl GoTime {
    /// Go's zero time, `0001-01-01T00:00:00Z`, used for legacy keys without a timestamp.
    pub fn zero() -> Self {
        Self(
            OffsetDateTime::from_unix_timestamp(-62_135_596_800)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    pub fn now_utc() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::zero()
    }

    pub fn unix_nanos(&self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    pub fn from_unix_nanos(n: i128) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(n).ok().map(Self)
    }

    pub fn parse(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339).ok().map(Self)
    }
}

impl fmt::Display for GoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        let nanos = t.nanosecond();
        if nanos != 0 {
            let mut frac = format!("{nanos:09}");
            while frac.ends_with('0') {
                frac.pop();
            }
            write!(f, ".{frac}")?;
        }
        let off = t.offset();
        if off == UtcOffset::UTC {
            f.write_str("Z")
        } else {
            let (h, m, _) = off.as_hms();
            let sign = if off.is_negative() { '-' } else { '+' };
            write!(f, "{sign}{:02}:{:02}", h.abs(), m.abs())
        }
    }
}

impl Serialize for GoTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoTime::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_like_go() {
        assert_eq!(GoTime::zero().to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(
            GoTime(datetime!(2024-03-01 10:20:30.123400 UTC)).to_string(),
            "2024-03-01T10:20:30.1234Z"
        );
        assert_eq!(
            GoTime(datetime!(2024-03-01 10:20:30 +05:30)).to_string(),
            "2024-03-01T10:20:30+05:30"
        );
        let t = GoTime(datetime!(2024-03-01 10:20:30.000000001 UTC));
        assert_eq!(GoTime::parse(&t.to_string()), Some(t));
    }
}
