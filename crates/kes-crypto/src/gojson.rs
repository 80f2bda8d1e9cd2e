//! Decoding a JSON object into a flat struct the way Go's `encoding/json` does.
//!
//! The legacy ciphertexts and key documents were written and read by Go, and whether a stored
//! value opens depends on the reader agreeing with Go on every document Go accepted: keys match
//! field names case-insensitively, unknown keys are ignored, a repeated key overwrites, `null`
//! leaves a string untouched but empties a byte slice, `[]byte` is padded base64 (CR/LF ignored)
//! or an array of small integers, and strings are bytes that need not be valid UTF-8.

use std::fmt;

use kes_types::GoTime;
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use zeroize::Zeroizing;

/// The Go type of one struct field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `string`
    Str,
    /// `[]byte`
    Bytes,
    /// `time.Time`
    Time,
}

/// A decoded field value.
pub(crate) enum Value {
    /// The unescaped string bytes, exactly as Go would compare them for ASCII content.
    Str(Vec<u8>),
    Bytes(Zeroizing<Vec<u8>>),
    Time(GoTime),
}

/// Field values in the order of the `fields` passed to [`decode`]; `None` where the document left
/// the field at Go's zero value.
pub(crate) type Fields = Vec<Option<Value>>;

/// Decodes `json` into the struct described by `fields` (JSON name, Go type).
///
/// Errors carry no detail on purpose: callers either fall back to another format or report a
/// position-free failure, and a message could echo secret bytes from the document.
pub(crate) fn decode(json: &[u8], fields: &[(&str, Kind)]) -> Option<Fields> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let values = StructSeed { fields }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(values)
}

/// Go's `json.Valid`.
pub(crate) fn valid(json: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(json);
    IgnoredAny::deserialize(&mut de).is_ok() && de.end().is_ok()
}

struct StructSeed<'a> {
    fields: &'a [(&'a str, Kind)],
}

impl<'de> DeserializeSeed<'de> for StructSeed<'_> {
    type Value = Fields;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StructSeed<'_> {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or null")
    }

    // `null` into a Go struct is a no-op, not an error.
    fn visit_unit<E: de::Error>(self) -> Result<Fields, E> {
        Ok(self.fields.iter().map(|_| None).collect())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut values: Fields = self.fields.iter().map(|_| None).collect();
        while let Some(index) = map.next_key_seed(KeySeed {
            fields: self.fields,
        })? {
            let Some(index) = index else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let (_, kind) = self.fields[index];
            match map.next_value_seed(ValueSeed { kind })? {
                Update::Keep => {}
                Update::Set(v) => values[index] = Some(v),
            }
        }
        Ok(values)
    }
}

/// Resolves an object key to the index of the field it sets, if any.
struct KeySeed<'a> {
    fields: &'a [(&'a str, Kind)],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        // As bytes, because Go accepts keys that are not valid UTF-8 (they just match nothing).
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Option<usize>, E> {
        Ok(self
            .fields
            .iter()
            .position(|(name, _)| go_fold_eq(key, name)))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        self.visit_bytes(key.as_bytes())
    }
}

/// Go's case-insensitive field-name match for an ASCII field name: simple Unicode case folding,
/// under which only the Kelvin sign (U+212A) and long s (U+017F) fold onto ASCII letters.
fn go_fold_eq(key: &[u8], name: &str) -> bool {
    let Ok(key) = std::str::from_utf8(key) else {
        return false;
    };
    let mut key_chars = key.chars().map(|c| match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    });
    let mut name_chars = name.chars().map(|c| c.to_ascii_lowercase());
    loop {
        match (key_chars.next(), name_chars.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

enum Update {
    Keep,
    Set(Value),
}

struct ValueSeed {
    kind: Kind,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Update;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Update, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Update;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Update, E> {
        Ok(match self.kind {
            Kind::Bytes => Update::Set(Value::Bytes(Zeroizing::new(Vec::new()))),
            Kind::Str | Kind::Time => Update::Keep,
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Update, E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Update, D::Error> {
        d.deserialize_bytes(Present { kind: self.kind })
    }
}

/// A non-null field value: a string (as raw unescaped bytes) or an array.
struct Present {
    kind: Kind,
}

impl<'de> Visitor<'de> for Present {
    type Value = Update;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array")
    }

    fn visit_bytes<E: de::Error>(self, s: &[u8]) -> Result<Update, E> {
        let value = match self.kind {
            Kind::Str => Value::Str(s.to_vec()),
            Kind::Bytes => {
                let text = std::str::from_utf8(s).map_err(|_| E::custom("invalid base64"))?;
                let bytes =
                    kes_types::b64::decode(text).map_err(|_| E::custom("invalid base64"))?;
                Value::Bytes(Zeroizing::new(bytes))
            }
            Kind::Time => {
                let text = std::str::from_utf8(s).map_err(|_| E::custom("invalid time"))?;
                Value::Time(GoTime::parse(text).ok_or_else(|| E::custom("invalid time"))?)
            }
        };
        Ok(Update::Set(value))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Update, E> {
        self.visit_bytes(s.as_bytes())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Update, A::Error> {
        if self.kind != Kind::Bytes {
            return Err(de::Error::custom("unexpected array"));
        }
        // Go decodes a JSON array into `[]byte` element by element; `null` elements stay zero.
        let mut bytes = Zeroizing::new(Vec::new());
        while let Some(b) = seq.next_element::<Option<u8>>()? {
            bytes.push(b.unwrap_or(0));
        }
        Ok(Update::Set(Value::Bytes(bytes)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const FIELDS: &[(&str, Kind)] = &[
        ("aead", Kind::Str),
        ("bytes", Kind::Bytes),
        ("created_at", Kind::Time),
    ];

    fn str_of(v: &Option<Value>) -> Option<&[u8]> {
        match v {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn bytes_of(v: &Option<Value>) -> Option<&[u8]> {
        match v {
            Some(Value::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn go_field_matching() {
        let f = decode(
            br#"{"AEAD":"a","BYTE\u017f":"AQI=","x":[1,{"y":null}],"Created_At":null}"#,
            FIELDS,
        )
        .expect("must decode");
        assert_eq!(str_of(&f[0]), Some(&b"a"[..]));
        assert_eq!(bytes_of(&f[1]), Some(&[1u8, 2][..]));
        assert!(f[2].is_none());
    }

    #[test]
    fn repeated_keys_and_nulls() {
        let f = decode(
            br#"{"aead":"a","aead":null,"bytes":"AQI=","bytes":null}"#,
            FIELDS,
        )
        .expect("must decode");
        // null keeps a string but empties a byte slice
        assert_eq!(str_of(&f[0]), Some(&b"a"[..]));
        assert_eq!(bytes_of(&f[1]), Some(&[][..]));
    }

    #[test]
    fn byte_arrays_and_lenient_base64() {
        let f = decode(br#"{"bytes":[0,255,null,7]}"#, FIELDS).expect("must decode");
        assert_eq!(bytes_of(&f[1]), Some(&[0u8, 255, 0, 7][..]));
        let f = decode(b"{\"bytes\":\"AQ\\r\\n==\"}", FIELDS).expect("must decode");
        assert_eq!(bytes_of(&f[1]), Some(&[1u8][..]));
        // Go's StdEncoding ignores non-zero trailing bits.
        let f = decode(br#"{"bytes":"AR=="}"#, FIELDS).expect("must decode");
        assert_eq!(bytes_of(&f[1]), Some(&[1u8][..]));
    }

    #[test]
    fn non_utf8_strings_are_accepted() {
        let f = decode(b"{\"aead\":\"\xff\xfe\",\"\xff\":1}", FIELDS).expect("must decode");
        assert_eq!(str_of(&f[0]), Some(&b"\xff\xfe"[..]));
        assert!(valid(b"{\"a\":\"\xff\"}"));
    }

    #[test]
    fn rejections() {
        for doc in [
            &br#"{"bytes":[256]}"#[..],
            br#"{"bytes":[-1]}"#,
            br#"{"bytes":[1.0]}"#,
            br#"{"bytes":["1"]}"#,
            br#"{"bytes":"AQ"}"#,
            br#"{"bytes":5}"#,
            br#"{"aead":5}"#,
            br#"{"aead":["a"]}"#,
            br#"{"created_at":"yesterday"}"#,
            br#"{"created_at":1}"#,
            br#"[]"#,
            br#""s""#,
            br#"{"aead":"a"} x"#,
            br#"{"aead":"a""#,
        ] {
            assert!(
                decode(doc, FIELDS).is_none(),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        let f = decode(b" null ", FIELDS).expect("null decodes to zero values");
        assert!(f.iter().all(Option::is_none));
    }
}
