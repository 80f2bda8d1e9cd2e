//! Conversion of the structured ciphertexts older KES releases wrote into the current layout.
//!
//! Only the first byte decides whether a conversion is attempted, and a conversion that fails
//! hands the input on unchanged: a current-layout ciphertext may begin with either marker byte
//! by chance, and it must still open.

use std::borrow::Cow;

use crate::gojson::{self, Kind, Value};
use crate::key::KeyType;

const IV_LEN: usize = 16;
const NONCE_LEN: usize = 12;

/// First byte of a MessagePack fixarray of five items (KES v0.20 up to 2024-01).
const MSGPACK_MARKER: u8 = 0x95;
/// First byte of a JSON object (KES v0.7 up to v0.19).
const JSON_MARKER: u8 = b'{';

/// The only two AEAD names the JSON layout may carry. `AES-256-GCM` (KES <= v0.6) derived its
/// per-message key differently, so such ciphertexts are refused rather than mis-decrypted.
const JSON_AEAD_NAMES: [&[u8]; 2] = [b"AES-256-GCM-HMAC-SHA-256", b"ChaCha20Poly1305"];

/// Returns `ciphertext` in the current `bytes || iv || nonce` layout.
pub(crate) fn to_current_layout(ciphertext: &[u8]) -> Cow<'_, [u8]> {
    let converted = match ciphertext.first() {
        Some(&MSGPACK_MARKER) => from_msgpack(ciphertext),
        Some(&JSON_MARKER) => from_json(ciphertext),
        _ => None,
    };
    match converted {
        Some(c) => Cow::Owned(c),
        None => Cow::Borrowed(ciphertext),
    }
}

/// `[str algorithm, str keyID, bin iv, bin nonce, bin bytes]` with nothing after it.
fn from_msgpack(b: &[u8]) -> Option<Vec<u8>> {
    let mut rd = b;
    if rmp::decode::read_array_len(&mut rd).ok()? != 5 {
        return None;
    }
    let algorithm = read_str(&mut rd)?;
    // The key ID was only checked by KES <= v0.22; it just has to be a string.
    read_str(&mut rd)?;
    let iv = read_bin(&mut rd)?;
    let nonce = read_bin(&mut rd)?;
    let bytes = read_bin(&mut rd)?;
    if !rd.is_empty() || iv.len() != IV_LEN || nonce.len() != NONCE_LEN {
        return None;
    }
    // The name is validated but not used: the stored key's type decides the algorithm.
    KeyType::parse_cipher(std::str::from_utf8(algorithm).ok()?)?;
    Some(join(bytes, iv, nonce))
}

fn read_str<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = rmp::decode::read_str_len(rd).ok()?;
    take(rd, len)
}

fn read_bin<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = rmp::decode::read_bin_len(rd).ok()?;
    take(rd, len)
}

fn take<'a>(rd: &mut &'a [u8], len: u32) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if rd.len() < len {
        return None;
    }
    let (head, tail) = rd.split_at(len);
    *rd = tail;
    Some(head)
}

/// `{"aead":A,"id":str?,"iv":b64,"nonce":b64,"bytes":b64}`, decoded with Go's rules.
fn from_json(b: &[u8]) -> Option<Vec<u8>> {
    const FIELDS: &[(&str, Kind)] = &[
        ("aead", Kind::Str),
        ("id", Kind::Str),
        ("iv", Kind::Bytes),
        ("nonce", Kind::Bytes),
        ("bytes", Kind::Bytes),
    ];
    let mut fields = gojson::decode(b, FIELDS)?.into_iter();
    let mut next = || fields.next().flatten();
    let aead = match next() {
        Some(Value::Str(s)) => s,
        _ => Vec::new(),
    };
    let _id = next();
    let mut bytes_field = || match next() {
        Some(Value::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    };
    let iv = bytes_field();
    let nonce = bytes_field();
    let bytes = bytes_field();
    if !JSON_AEAD_NAMES.contains(&aead.as_slice()) || iv.len() != IV_LEN || nonce.len() != NONCE_LEN
    {
        return None;
    }
    Some(join(&bytes, &iv, &nonce))
}

fn join(bytes: &[u8], iv: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + iv.len() + nonce.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(iv);
    out.extend_from_slice(nonce);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn msgpack(alg: &str, iv: &[u8], nonce: &[u8], bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![0x95];
        out.push(0xa0 | alg.len() as u8);
        out.extend_from_slice(alg.as_bytes());
        out.push(0xa2);
        out.extend_from_slice(b"id");
        for b in [iv, nonce, bytes] {
            out.push(0xc4);
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        out
    }

    #[test]
    fn msgpack_converts() {
        let m = msgpack("AES256-GCM_SHA256", &[1; 16], &[2; 12], b"ct");
        let mut want = b"ct".to_vec();
        want.extend_from_slice(&[1; 16]);
        want.extend_from_slice(&[2; 12]);
        assert_eq!(to_current_layout(&m).as_ref(), want.as_slice());
    }

    #[test]
    fn msgpack_failures_pass_through() {
        let good = msgpack("ChaCha20", &[1; 16], &[2; 12], b"ct");
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [
            msgpack("AES-256-GCM", &[1; 16], &[2; 12], b"ct"),
            msgpack("ChaCha20", &[1; 15], &[2; 12], b"ct"),
            msgpack("ChaCha20", &[1; 16], &[2; 13], b"ct"),
            trailing,
            good[..good.len() - 1].to_vec(),
        ] {
            assert!(matches!(to_current_layout(&bad), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn json_converts_and_rejects() {
        let iv = kes_types::b64::encode(&[1; 16]);
        let nonce = kes_types::b64::encode(&[2; 12]);
        let ok = format!(
            r#"{{"aead":"ChaCha20Poly1305","id":"x","iv":"{iv}","nonce":"{nonce}","bytes":"Y3Q="}}"#
        );
        let mut want = b"ct".to_vec();
        want.extend_from_slice(&[1; 16]);
        want.extend_from_slice(&[2; 12]);
        assert_eq!(to_current_layout(ok.as_bytes()).as_ref(), want.as_slice());

        for aead in ["AES-256-GCM", "", "chacha20poly1305x"] {
            let bad = ok.replace("ChaCha20Poly1305", aead);
            assert!(matches!(
                to_current_layout(bad.as_bytes()),
                Cow::Borrowed(_)
            ));
        }
        let no_aead = format!(r#"{{"iv":"{iv}","nonce":"{nonce}","bytes":"Y3Q="}}"#);
        assert!(matches!(
            to_current_layout(no_aead.as_bytes()),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn other_first_bytes_untouched() {
        assert!(matches!(to_current_layout(b""), Cow::Borrowed(_)));
        assert!(matches!(to_current_layout(b"[1]"), Cow::Borrowed(_)));
    }
}
