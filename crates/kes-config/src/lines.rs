//! Source lines for config paths, so that validation errors can point into the file.
//!
//! serde_yaml reports positions only for the errors it raises itself; once a value is
//! deserialized its position is gone. Rules checked afterwards (duplicate identities, a
//! missing `${VAR}`, an invalid duration) still need a line, so the text is parsed a second
//! time with an event parser that reports positions, and every mapping key and sequence item
//! is recorded under the same dotted path the validation code uses (`tls.cert`,
//! `policy.my-app.identities[1]`, `keys[0].name`).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Dotted path -> 1-based line. Best effort: a path missing here only costs a line number.
#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    pub(crate) fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        // A syntax error is reported by serde_yaml, which parses the same text; here it only
        // means the index stops where the parser stopped.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of the value at `path` (or of its key when the value is a mapping or sequence).
    pub(crate) fn get(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

/// The path of a mapping entry `key` under `parent`.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The path of sequence item `index` under `parent`.
pub(crate) fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

enum Frame {
    /// `key` is the key whose value comes next; `None` while the next scalar is a key.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A mapping or sequence used as a mapping key: nothing inside has a dotted path.
    Opaque,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

/// Stands in for keys that are not scalars; no config field has such a key.
const COMPLEX_KEY: &str = "?";

impl Builder {
    /// Where the next value goes: `None` when it is a mapping key or inside an opaque key.
    fn next_value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, next }) => {
                let p = item(path, *next);
                *next += 1;
                Some(p)
            }
            Some(Frame::Opaque) => None,
        }
    }

    /// Whether the next node is a mapping key; if it is one, it becomes the pending key.
    fn take_key(&mut self, key: &str, line: usize) -> bool {
        if let Some(Frame::Map { path, key: pending }) = self.stack.last_mut() {
            if pending.is_none() {
                // Inserted, not kept: with a duplicate key the later one is the one to report.
                self.lines.insert(join(path, key), line);
                *pending = Some(key.to_owned());
                return true;
            }
        }
        false
    }

    fn open(&mut self, is_map: bool, line: usize) {
        if self.take_key(COMPLEX_KEY, line) {
            self.stack.push(Frame::Opaque);
            return;
        }
        match self.next_value_path() {
            Some(path) => {
                // Keep the key's line: a block mapping starts on the line after its key.
                if !path.is_empty() {
                    self.lines.entry(path.clone()).or_insert(line);
                }
                self.stack.push(if is_map {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            None => self.stack.push(Frame::Opaque),
        }
    }

    fn value(&mut self, text: &str, line: usize) {
        if self.take_key(text, line) {
            return;
        }
        if let Some(path) = self.next_value_path() {
            if !path.is_empty() {
                // The scalar's own line, which is what a `${VAR}` error must name.
                self.lines.insert(path, line);
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, ..) => self.value(&text, line),
            Event::Alias(_) => self.value(COMPLEX_KEY, line),
            Event::MappingStart(..) => self.open(true, line),
            Event::SequenceStart(..) => self.open(false, line),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn records_keys_items_and_values() {
        let text = "\
address: 0.0.0.0:7373
tls:
  key: a.key
  cert:
    ${CERT}
policy:
  my-app:
    identities:
      - aaa
      - bbb
keys:
  - name: k1
  - { name: k2 }
keystore: { vault: { transit: { key: t } } }
";
        let idx = LineIndex::build(text);
        assert_eq!(idx.get("address"), Some(1));
        assert_eq!(idx.get("tls"), Some(2));
        assert_eq!(idx.get("tls.key"), Some(3));
        assert_eq!(idx.get("tls.cert"), Some(5));
        assert_eq!(idx.get("policy.my-app"), Some(7));
        assert_eq!(idx.get("policy.my-app.identities"), Some(8));
        assert_eq!(idx.get("policy.my-app.identities[1]"), Some(10));
        assert_eq!(idx.get("keys[0].name"), Some(12));
        assert_eq!(idx.get("keys[1].name"), Some(13));
        assert_eq!(idx.get("keystore.vault.transit.key"), Some(14));
        assert_eq!(idx.get("nope"), None);
    }

    #[test]
    fn duplicate_key_points_at_the_later_one() {
        let idx = LineIndex::build("a: 1\nb: 2\na: 3\n");
        assert_eq!(idx.get("a"), Some(3));
    }

    #[test]
    fn complex_keys_and_broken_text_do_not_panic() {
        let idx = LineIndex::build("? [a, b]\n: x\nc: 1\n");
        assert_eq!(idx.get("c"), Some(3));
        let idx = LineIndex::build("a: 1\nb: [\n");
        assert_eq!(idx.get("a"), Some(1));
    }
}
