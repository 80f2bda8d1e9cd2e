//! The snapshot codec: an 8-byte header naming the format, then the [`State`] as MessagePack
//! with named fields.
//!
//! Named fields cost a few bytes per record, next to sealed keys of about a hundred, and let a
//! later version add a defaulted field without a new header. A change that old code cannot
//! read gets a new version digit, so an old node refuses the snapshot instead of misreading it.
//!
//! Snapshots arrive from peers and from disk, so decoding treats its input as untrusted: every
//! length is checked against the input before anything is allocated for it, nesting depth is
//! bounded, trailing bytes are refused, and the decoded state must satisfy the invariants that
//! [`State::apply`] maintains.

use serde::{Deserialize, Serialize};

use crate::state::State;

/// The header of every snapshot this crate writes: format name and version 1.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"KESSNAP1";

/// The header without its version digit, to tell "another version" from "not a snapshot".
const MAGIC_STEM: &[u8] = b"KESSNAP";

/// The state nests a handful of levels; anything much deeper is not a snapshot and would only
/// cost stack.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a kes-state snapshot (missing header)")]
    NotASnapshot,
    #[error("unsupported kes-state snapshot version {version:?} (this build reads \"1\")")]
    UnsupportedVersion { version: char },
    #[error("malformed kes-state snapshot: {reason}")]
    Malformed { reason: String },
    #[error("kes-state snapshot has {count} bytes after its end")]
    TrailingBytes { count: u64 },
    #[error("inconsistent kes-state snapshot: {reason}")]
    Inconsistent { reason: String },
    /// Serialising the state failed. Its types all have a MessagePack form of known length, so
    /// this only reports a defect introduced by a future change to them.
    #[error("cannot encode kes-state snapshot: {reason}")]
    Encode { reason: String },
}

impl State {
    /// The state as snapshot bytes, deterministic: equal states give equal bytes.
    ///
    /// Returns a `Result` because serde serialisers are fallible by signature, and this crate
    /// does not panic; for the state's own types it always succeeds.
    pub fn encode_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
        self.serialize(&mut ser)
            .map_err(|e| SnapshotError::Encode {
                reason: e.to_string(),
            })?;
        Ok(out)
    }

    /// Reads snapshot bytes written by [`State::encode_snapshot`]. Any other input, including
    /// truncated, corrupted or hostile bytes, gives an error.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        let Some((header, body)) = bytes.split_first_chunk::<8>() else {
            return Err(SnapshotError::NotASnapshot);
        };
        if header != SNAPSHOT_MAGIC {
            return match header.split_last() {
                Some((version, stem)) if stem == MAGIC_STEM => {
                    Err(SnapshotError::UnsupportedVersion {
                        version: char::from(*version),
                    })
                }
                _ => Err(SnapshotError::NotASnapshot),
            };
        }
        // A cursor reader copies only as many bytes as the input holds, whatever length a
        // corrupted prefix announces, and reports how far it got.
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
        de.set_max_depth(MAX_DEPTH);
        let state = State::deserialize(&mut de).map_err(|e| SnapshotError::Malformed {
            reason: e.to_string(),
        })?;
        let trailing = (body.len() as u64).saturating_sub(de.position());
        if trailing != 0 {
            return Err(SnapshotError::TrailingBytes { count: trailing });
        }
        state
            .check_invariants()
            .map_err(|reason| SnapshotError::Inconsistent { reason })?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Command, PolicyDef};

    fn sample() -> State {
        let mut s = State::default();
        s.apply(
            1,
            &Command::Init {
                wrapped_cck: vec![1; 48],
                admin: "admin".to_owned(),
                policies: BTreeMap::from([("p".to_owned(), PolicyDef::default())]),
                assignments: BTreeMap::from([("id".to_owned(), "p".to_owned())]),
                at_ms: 5,
            },
        );
        s.apply(
            2,
            &Command::PutKey {
                name: "k".to_owned(),
                sealed: vec![0xFF; 100],
                at_ms: 6,
            },
        );
        s.apply(
            3,
            &Command::DeleteKey {
                name: "gone".to_owned(),
                at_ms: 7,
            },
        );
        s
    }

    #[test]
    fn round_trip() -> Result<(), SnapshotError> {
        let s = sample();
        let bytes = s.encode_snapshot()?;
        assert!(bytes.starts_with(SNAPSHOT_MAGIC));
        assert_eq!(State::decode_snapshot(&bytes)?, s);
        let empty = State::default();
        assert_eq!(State::decode_snapshot(&empty.encode_snapshot()?)?, empty);
        Ok(())
    }

    /// Snapshots written before pruning existed have no prune point: they still decode, with
    /// the point at 0, and encode again with it.
    #[test]
    fn snapshots_without_a_prune_point_decode() -> Result<(), SnapshotError> {
        use crate::state::{NameState, PolicyRecord};

        #[derive(Serialize)]
        struct Before {
            initialized: bool,
            #[serde(with = "serde_bytes")]
            wrapped_cck: Option<Vec<u8>>,
            admin: String,
            init_at_ms: u64,
            names: BTreeMap<String, NameState>,
            policies: BTreeMap<String, PolicyRecord>,
            assignments: BTreeMap<String, String>,
            last_applied: u64,
        }
        let s = sample();
        let before = Before {
            initialized: s.initialized,
            wrapped_cck: s.wrapped_cck.clone(),
            admin: s.admin.clone(),
            init_at_ms: s.init_at_ms,
            names: s.names.clone(),
            policies: s.policies.clone(),
            assignments: s.assignments.clone(),
            last_applied: s.last_applied,
        };
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        let mut ser = rmp_serde::Serializer::new(&mut bytes).with_struct_map();
        before
            .serialize(&mut ser)
            .map_err(|e| SnapshotError::Encode {
                reason: e.to_string(),
            })?;
        let decoded = State::decode_snapshot(&bytes)?;
        assert_eq!(decoded, s);
        assert_eq!(decoded.pruned_below(), 0);
        assert!(decoded.encode_snapshot()?.len() > bytes.len());
        Ok(())
    }

    #[test]
    fn sealed_bytes_are_stored_as_msgpack_bin() -> Result<(), SnapshotError> {
        // One bin8 header and the raw bytes, not an array of 100 integers of two bytes each.
        let bytes = sample().encode_snapshot()?;
        let mut sealed = vec![0xC4, 100];
        sealed.extend_from_slice(&[0xFF; 100]);
        assert!(bytes.windows(sealed.len()).any(|w| w == sealed.as_slice()));
        Ok(())
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            State::decode_snapshot(b""),
            Err(SnapshotError::NotASnapshot)
        );
        assert_eq!(
            State::decode_snapshot(b"KESSNAP"),
            Err(SnapshotError::NotASnapshot)
        );
        assert_eq!(
            State::decode_snapshot(b"NOTASNAP\x80"),
            Err(SnapshotError::NotASnapshot)
        );
        assert_eq!(
            State::decode_snapshot(b"KESSNAP2\x80"),
            Err(SnapshotError::UnsupportedVersion { version: '2' })
        );
    }

    #[test]
    fn rejects_truncation_and_trailing_bytes() -> Result<(), SnapshotError> {
        let bytes = sample().encode_snapshot()?;
        for len in 8..bytes.len() {
            assert!(
                matches!(
                    State::decode_snapshot(&bytes[..len]),
                    Err(SnapshotError::Malformed { .. })
                ),
                "prefix of {len} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            State::decode_snapshot(&longer),
            Err(SnapshotError::TrailingBytes { count: 1 })
        );
        Ok(())
    }

    #[test]
    fn rejects_huge_announced_lengths_without_allocating() {
        // A map header announcing 2^32-1 entries, then a bin header announcing 4 GiB.
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&[0xDF, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend_from_slice(&[0xC6, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            State::decode_snapshot(&bytes),
            Err(SnapshotError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_deep_nesting() {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.push(0x81); // a map of one entry
        bytes.push(0xA1); // key: 1-char string
        bytes.push(b'z'); // an unknown field, whose value is skipped
        bytes.extend(std::iter::repeat_n(0x91, 100_000)); // arrays of one array of ...
        bytes.push(0xC0);
        assert!(matches!(
            State::decode_snapshot(&bytes),
            Err(SnapshotError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_inconsistent_states() -> Result<(), SnapshotError> {
        type Forge = fn(&mut State);
        let forgeries: [(&str, Forge); 6] = [
            ("assignment to a missing policy", |s| {
                s.assignments.insert("x".to_owned(), "missing".to_owned());
            }),
            ("admin assigned", |s| {
                s.assignments.insert("admin".to_owned(), "p".to_owned());
            }),
            ("entry under a tombstone", |s| {
                if let Some(ns) = s.names.get_mut("k") {
                    ns.tombstone = true;
                }
            }),
            ("generation from the future", |s| {
                if let Some(ns) = s.names.get_mut("gone") {
                    ns.generation = 99;
                }
            }),
            ("data before initialisation", |s| s.initialized = false),
            ("no wrapped cache key", |s| s.wrapped_cck = None),
        ];
        for (what, forge) in forgeries {
            let mut s = sample();
            forge(&mut s);
            let bytes = s.encode_snapshot()?;
            assert!(
                matches!(
                    State::decode_snapshot(&bytes),
                    Err(SnapshotError::Inconsistent { .. })
                ),
                "{what}"
            );
        }
        Ok(())
    }
}
