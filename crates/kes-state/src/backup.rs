//! The backup file: a sealed copy of the replicated state that `kes cluster restore` turns into
//! the first state of a new cluster.
//!
//! Layout, all integers big-endian:
//!
//! ```text
//! "KESBAK"            6 bytes, the format's name
//! version             u16, BACKUP_VERSION
//! body length         u64
//! body                MessagePack with named fields: when and where it was taken, and the
//!                     state in the snapshot codec (which carries its own version)
//! SHA-256             32 bytes, of everything before it
//! ```
//!
//! The version comes before everything that may change with it, so that a file of another
//! version is reported as such rather than as damaged; the checksum covers the header too, so
//! that a flipped length or version bit is caught. The state holds no plaintext key material:
//! cache entries are sealed with the cluster cache key, which is in the state only wrapped by a
//! key that stays in the keystore.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::snapshot::SnapshotError;
use crate::state::State;

/// The name every backup file starts with.
pub const BACKUP_MAGIC: &[u8; 6] = b"KESBAK";
/// The backup format this build writes and reads.
pub const BACKUP_VERSION: u16 = 1;

const HEADER_LEN: usize = 6 + 2 + 8;
const CHECKSUM_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a kes backup file (it does not start with \"KESBAK\")")]
    NotABackup,
    #[error(
        "backup format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("truncated backup file: {found} of {expected} bytes")]
    Truncated { expected: u64, found: u64 },
    #[error("backup file has {count} bytes after its end")]
    TrailingBytes { count: u64 },
    #[error("backup file is corrupt: its checksum does not match its content")]
    ChecksumMismatch,
    #[error("malformed backup file: {reason}")]
    Malformed { reason: String },
    #[error("the backed-up state is not usable: {0}")]
    State(#[from] SnapshotError),
    #[error("the backed-up state is not initialised (a backup of a cluster that never started)")]
    Uninitialized,
}

/// A backup: the state and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// When it was taken (wall clock of the node that answered, ms since the Unix epoch).
    pub taken_at_ms: u64,
    /// The node that answered.
    pub node_id: u64,
    /// The leader's read index the state includes: every write acknowledged before the backup
    /// was asked for is in it.
    pub read_index: u64,
    pub state: State,
}

#[derive(Serialize, Deserialize)]
struct Body {
    taken_at_ms: u64,
    node_id: u64,
    read_index: u64,
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
}

impl Backup {
    /// The backup file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, BackupError> {
        let body = Body {
            taken_at_ms: self.taken_at_ms,
            node_id: self.node_id,
            read_index: self.read_index,
            state: self.state.encode_snapshot()?,
        };
        let body = rmp_serde::to_vec_named(&body).map_err(|e| BackupError::Malformed {
            reason: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
        out.extend_from_slice(BACKUP_MAGIC);
        out.extend_from_slice(&BACKUP_VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(&body);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Reads a backup file's bytes, checking, in this order, the name, the version, the length,
    /// the checksum, and then that the state decodes and is initialised.
    pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
        let Some((magic, rest)) = bytes.split_first_chunk::<6>() else {
            return Err(BackupError::NotABackup);
        };
        if magic != BACKUP_MAGIC {
            return Err(BackupError::NotABackup);
        }
        let Some((version, rest)) = rest.split_first_chunk::<2>() else {
            return Err(BackupError::Truncated {
                expected: HEADER_LEN as u64,
                found: bytes.len() as u64,
            });
        };
        let version = u16::from_be_bytes(*version);
        if version != BACKUP_VERSION {
            return Err(BackupError::UnsupportedVersion {
                found: version,
                supported: BACKUP_VERSION,
            });
        }
        let Some((len, rest)) = rest.split_first_chunk::<8>() else {
            return Err(BackupError::Truncated {
                expected: HEADER_LEN as u64,
                found: bytes.len() as u64,
            });
        };
        let len = u64::from_be_bytes(*len);
        let expected = (HEADER_LEN as u64)
            .saturating_add(len)
            .saturating_add(CHECKSUM_LEN as u64);
        let found = bytes.len() as u64;
        if found < expected {
            return Err(BackupError::Truncated { expected, found });
        }
        if found > expected {
            return Err(BackupError::TrailingBytes {
                count: found - expected,
            });
        }
        // Both fit in memory, so `expected` does too.
        let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(content).as_slice() != sum {
            return Err(BackupError::ChecksumMismatch);
        }
        let body: Body =
            rmp_serde::from_slice(&rest[..rest.len() - CHECKSUM_LEN]).map_err(|e| {
                BackupError::Malformed {
                    reason: e.to_string(),
                }
            })?;
        let state = State::decode_snapshot(&body.state)?;
        if !state.is_initialized() {
            return Err(BackupError::Uninitialized);
        }
        Ok(Backup {
            taken_at_ms: body.taken_at_ms,
            node_id: body.node_id,
            read_index: body.read_index,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Command, Outcome, PolicyDef};

    fn state() -> State {
        let mut s = State::default();
        s.apply(
            1,
            &Command::Init {
                wrapped_cck: vec![1; 48],
                admin: "old-admin".to_owned(),
                policies: BTreeMap::from([("p".to_owned(), PolicyDef::default())]),
                assignments: BTreeMap::from([
                    ("id".to_owned(), "p".to_owned()),
                    ("new-admin".to_owned(), "p".to_owned()),
                ]),
                at_ms: 5,
            },
        );
        s.apply(
            40,
            &Command::PutKey {
                name: "k".to_owned(),
                sealed: vec![0xFF; 100],
                at_ms: 6,
            },
        );
        s.apply(
            41,
            &Command::FillKey {
                name: "filled".to_owned(),
                sealed: vec![0xEE; 100],
                at_ms: 6,
                observed: 40,
            },
        );
        s.apply(
            90,
            &Command::DeleteKey {
                name: "gone".to_owned(),
                at_ms: 7,
            },
        );
        s.apply(91, &Command::RetireNode { id: 2 });
        s
    }

    fn backup() -> Backup {
        Backup {
            taken_at_ms: 1_700_000_000_000,
            node_id: 3,
            read_index: 91,
            state: state(),
        }
    }

    #[test]
    fn round_trip() -> Result<(), BackupError> {
        let b = backup();
        let bytes = b.encode()?;
        assert!(bytes.starts_with(BACKUP_MAGIC));
        assert_eq!(Backup::decode(&bytes)?, b);
        Ok(())
    }

    #[test]
    fn refuses_what_is_not_a_usable_backup() -> Result<(), BackupError> {
        let bytes = backup().encode()?;
        assert_eq!(Backup::decode(b""), Err(BackupError::NotABackup));
        assert_eq!(
            Backup::decode(b"version: v1\naddress: 0.0.0.0:7373\n"),
            Err(BackupError::NotABackup)
        );
        assert_eq!(
            Backup::decode(&bytes[..8]),
            Err(BackupError::Truncated {
                expected: 16,
                found: 8
            })
        );
        for len in 16..bytes.len() {
            assert!(
                matches!(
                    Backup::decode(&bytes[..len]),
                    Err(BackupError::Truncated { .. })
                ),
                "prefix of {len} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Backup::decode(&longer),
            Err(BackupError::TrailingBytes { count: 1 })
        );
        // Any flipped bit after the version is caught by the checksum (or the length).
        for i in 8..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(
                    Backup::decode(&bad),
                    Err(BackupError::ChecksumMismatch
                        | BackupError::Truncated { .. }
                        | BackupError::TrailingBytes { .. })
                ),
                "byte {i}"
            );
        }
        let mut other = bytes.clone();
        other[7] = 2;
        assert_eq!(
            Backup::decode(&other),
            Err(BackupError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
        let blank = Backup {
            state: State::default(),
            ..backup()
        };
        assert_eq!(
            Backup::decode(&blank.encode()?),
            Err(BackupError::Uninitialized)
        );
        Ok(())
    }

    #[test]
    fn restoring_renumbers_the_state_into_the_new_log() -> Result<(), BackupError> {
        let old = state();
        let mut s = State::default();
        s.apply(1, &Command::Noop);
        let cmd = Command::Restore {
            snapshot: old.encode_snapshot()?,
            admin: "new-admin".to_owned(),
        };
        assert_eq!(s.apply(2, &cmd), Outcome::Applied);
        assert!(s.is_initialized());
        assert_eq!(s.wrapped_cck(), old.wrapped_cck());
        assert_eq!(s.admin(), "new-admin");
        assert_eq!(s.last_applied(), 2);
        assert_eq!(s.pruned_below(), 2);
        assert_eq!(s.policies(""), vec!["p".to_owned()]);
        // The new admin's assignment is dropped, as `Init` drops it.
        assert_eq!(s.identities(""), vec!["id".to_owned()]);
        assert!(!s.is_retired(2));
        let names = &s.names;
        assert_eq!(names["k"].generation, 2);
        assert_eq!(names["k"].entry, old.names["k"].entry);
        assert_eq!(names["filled"].generation, 0);
        assert!(names["gone"].tombstone && names["gone"].generation == 2);
        s.check_invariants()
            .map_err(|reason| SnapshotError::Inconsistent { reason })?;
        // A fill observed after the restore is taken; a deleted name stays deleted for fills
        // that began before the restore.
        assert_eq!(
            s.apply(
                3,
                &Command::FillKey {
                    name: "gone".to_owned(),
                    sealed: vec![1; 10],
                    at_ms: 8,
                    observed: 1,
                }
            ),
            Outcome::StaleFill
        );
        let mut small = old.clone();
        small.drop_cache_entries();
        assert_eq!(small.key_count(), 0);
        assert!(small.names["gone"].tombstone);
        assert_eq!(small.names["k"].generation, 40);
        assert!(!small.names.contains_key("filled"));
        small
            .check_invariants()
            .map_err(|reason| SnapshotError::Inconsistent { reason })?;
        // Like `Init`, a restore does not apply twice, nor after `Init`, nor from bad bytes.
        assert_eq!(s.apply(4, &cmd), Outcome::AlreadyInitialized);
        let mut fresh = State::default();
        let bad = Command::Restore {
            snapshot: b"KESSNAP1\xc0".to_vec(),
            admin: "a".to_owned(),
        };
        assert_eq!(fresh.apply(1, &bad), Outcome::InvalidRestore);
        let blank = Command::Restore {
            snapshot: State::default().encode_snapshot()?,
            admin: "a".to_owned(),
        };
        assert_eq!(fresh.apply(2, &blank), Outcome::InvalidRestore);
        assert!(!fresh.is_initialized());
        Ok(())
    }
}
