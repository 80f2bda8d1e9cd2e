//! Base64 as Go's `encoding/json` does it for `[]byte`: standard alphabet with padding, `\r` and
//! `\n` ignored when decoding, `null` meaning empty.

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits tolerated.
pub const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes `data` as standard padded base64.
pub fn encode(data: &[u8]) -> String {
    GO_STD.encode(data)
}

/// Decodes standard padded base64, ignoring CR and LF as Go does.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        GO_STD.decode(cleaned)
    } else {
        GO_STD.decode(text)
    }
}

/// The JSON line of an object whose fields are all byte strings (`{"plaintext":"…",
/// "ciphertext":"…"}` and the other crypto answers), written straight into one buffer: the
/// same bytes `to_go_json_line` gives for the struct with [`Bytes64`] fields in this order,
/// without the serializer's per-byte escape scans (base64 never needs escaping) and without a
/// second copy of the bytes, which may be a data key. Field names are static ASCII without
/// characters JSON escapes.
pub fn json_line(fields: &[(&'static str, &[u8])]) -> Vec<u8> {
    let len: usize = fields
        .iter()
        .map(|(name, value)| name.len() + 6 + value.len().div_ceil(3) * 4)
        .sum();
    // Exactly the answer's length (`{`, `}` and the newline, one comma fewer than fields), so
    // the buffer becomes the response body as it is, without another allocation.
    let mut out = Vec::with_capacity((len + 2).max(3));
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":\"");
        let start = out.len();
        out.resize(start + value.len().div_ceil(3) * 4, 0);
        // The buffer was sized for exactly this encoding.
        let n = GO_STD.encode_slice(value, &mut out[start..]).unwrap_or(0);
        out.truncate(start + n);
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
    out
}

/// A byte string carried in JSON as base64 (Go's `[]byte`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes64(pub Vec<u8>);

impl fmt::Debug for Bytes64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Request and response bytes may be key material; never print them.
        write!(f, "Bytes64({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes64 {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

/// Byte strings up to this size are encoded on the stack when serialized (data keys, KES
/// ciphertexts of them, HMACs): no allocation per response.
const STACK_ENCODE: usize = 192;

impl Serialize for Bytes64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() <= STACK_ENCODE {
            let mut buf = [0u8; STACK_ENCODE / 3 * 4];
            if let Ok(n) = GO_STD.encode_slice(&self.0, &mut buf) {
                let r = match std::str::from_utf8(&buf[..n]) {
                    Ok(text) => s.serialize_str(text),
                    Err(_) => s.serialize_str(&encode(&self.0)),
                };
                // The bytes may be a data key: leave no copy of it on the stack.
                zeroize::Zeroize::zeroize(&mut buf);
                return r;
            }
        }
        s.serialize_str(&encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes64, E> {
                decode(v).map(Bytes64).map_err(E::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Bytes64, E> {
                Ok(Bytes64::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Bytes64, E> {
                Ok(Bytes64::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Bytes64, D::Error> {
                d.deserialize_any(V)
            }
        }
        d.deserialize_option(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn json_line_writes_what_the_serializer_writes(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            b in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let want = crate::to_go_json_line(&crate::wire::GenerateResponse {
                plaintext: Bytes64(a.clone()),
                ciphertext: Bytes64(b.clone()),
            });
            prop_assert_eq!(json_line(&[("plaintext", &a), ("ciphertext", &b)]), want);
            let want = crate::to_go_json_line(&crate::wire::HmacResponse { hmac: Bytes64(a.clone()) });
            prop_assert_eq!(json_line(&[("hmac", &a)]), want);
            let line = json_line(&[("plaintext", &a), ("ciphertext", &b)]);
            prop_assert_eq!(line.len(), line.capacity());
        }
    }

    #[test]
    fn decodes_like_go() {
        assert_eq!(decode("e30=").unwrap(), b"{}");
        assert_eq!(decode("e3\r\n0=").unwrap(), b"{}");
        assert!(decode("e30").is_err(), "padding is required");
        assert!(decode("e3-=").is_err(), "url alphabet is rejected");
        assert_eq!(decode("").unwrap(), b"");
    }

    #[test]
    fn null_is_empty() {
        let v: Bytes64 = serde_json::from_str("null").unwrap();
        assert!(v.0.is_empty());
        let v: Bytes64 = serde_json::from_str("\"AAE=\"").unwrap();
        assert_eq!(v.0, vec![0, 1]);
        assert!(serde_json::from_str::<Bytes64>("12").is_err());
    }
}
