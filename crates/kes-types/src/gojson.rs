//! JSON output as Go's `json.Encoder` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped, and a
//! trailing newline. Clients do not care about the escaping, but error bodies are compared byte
//! for byte with KES in tests, and one encoder for everything keeps the two from drifting.

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};
use std::io;

#[derive(Clone, Copy, Default)]
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        // Most fragments (base64, key names, identities) hold nothing Go escapes: one byte scan
        // instead of decoding every character. U+2028 and U+2029 both start with 0xE2.
        if !bytes
            .iter()
            .any(|&b| matches!(b, b'<' | b'>' | b'&' | 0xE2))
        {
            return writer.write_all(bytes);
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        // Go writes \b and \f as \u0008 and \u000c; the rest match serde_json.
        let s: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xF) as usize],
                ];
                return writer.write_all(&buf);
            }
        };
        writer.write_all(s)
    }
}

/// Serializes `value` as compact Go-style JSON without a trailing newline.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, GoFormatter);
    // Serializing plain data structures into a Vec cannot fail; fall back to `null` rather than
    // panic if a future type makes it possible.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

/// Serializes `value` as `json.Encoder` does: compact, HTML-escaped, newline-terminated.
pub fn to_go_json_line<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = to_go_json(value);
    out.push(b'\n');
    out
}

/// A single JSON string literal, Go-escaped.
pub fn go_string(s: &str) -> String {
    String::from_utf8(to_go_json(s)).unwrap_or_else(|_| String::from("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        assert_eq!(go_string("a<b>&c"), "\"a\\u003cb\\u003e\\u0026c\"");
        assert_eq!(go_string("x\u{2028}y"), "\"x\\u2028y\"");
        assert_eq!(go_string("\u{8}\u{c}\u{1}"), "\"\\u0008\\u000c\\u0001\"");
        assert_eq!(go_string("q\"\\\n"), "\"q\\\"\\\\\\n\"");
        assert_eq!(to_go_json_line(&[1, 2]), b"[1,2]\n");
    }
}
