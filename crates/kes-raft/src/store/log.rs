//! The Raft log and the vote.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, RaftLogReader, StorageIOError,
};

use super::{decode, encode, get, put, SledStore, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
use crate::types::{Entry, LogId, LogState, StorageError, TypeConfig, Vote};

/// The most entry bytes one replication read returns. An append-entries request carries them
/// to a peer in one body, and the node-to-node listener refuses bodies above 64 MiB; openraft
/// also caps the number of entries (`max_payload_entries`).
const MAX_READ_BYTES: usize = 16 << 20;

/// openraft's log storage: entries, vote, committed and purged log ids.
///
/// Cloning shares the database; openraft's log readers are clones.
///
/// The committed log id is written without a flush of its own, because openraft saves it on
/// every commit and an fsync each time would double the disk work of a write. It still reaches
/// disk with the next append, vote or snapshot flush, or with sled's periodic flush, and losing
/// the last few updates costs only freshness: a restarted node then re-applies up to an older
/// committed index and learns the rest from the leader.
#[derive(Clone, Debug)]
pub struct LogStore {
    pub(super) store: SledStore,
}

impl LogStore {
    pub(super) fn new(store: SledStore) -> Self {
        Self { store }
    }

    /// The state a restore seeded this directory with (see [`SledStore::seed_restore`]), in
    /// `kes_state`'s snapshot codec, until [`LogStore::clear_restore_seed`].
    pub fn restore_seed(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.store
            .meta
            .get(super::KEY_RESTORE)
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| {
                StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, AnyError::new(&e)).into()
            })
    }

    /// Forgets the restore seed, once the cluster is initialised and it can no longer be used.
    pub fn clear_restore_seed(&self) -> Result<(), StorageError> {
        self.store
            .meta
            .remove(super::KEY_RESTORE)
            .map(drop)
            .map_err(|e| {
                StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::new(&e)).into()
            })
    }

    fn read_range(
        &self,
        range: impl RangeBounds<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let keys = (map_bound(range.start_bound()), map_bound(range.end_bound()));
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in self.store.log.range(keys) {
            let (key, value) = item.map_err(|e| {
                StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Read, AnyError::new(&e))
            })?;
            let index = key_index(&key)?;
            let entry: Entry = decode(&value, ErrorSubject::LogIndex(index))?;
            // The key and the entry are written together; disagreement means the database was
            // damaged, and replicating the wrong entry would be worse than stopping.
            if entry.get_log_id().index != index {
                return Err(StorageIOError::new(
                    ErrorSubject::LogIndex(index),
                    ErrorVerb::Read,
                    AnyError::error(format!(
                        "entry stored under index {index} has index {}",
                        entry.get_log_id().index
                    )),
                )
                .into());
            }
            bytes = bytes.saturating_add(value.len());
            entries.push(entry);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(entries)
    }

    /// The last log id, as [`RaftLogStorage::get_log_state`] reports it to openraft: for the
    /// server's pre-vote, which compares logs without going through openraft.
    pub fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.log_state()?.1)
    }

    /// (last purged, last) log ids.
    fn log_state(&self) -> Result<(Option<LogId>, Option<LogId>), StorageError> {
        let last_purged: Option<LogId> =
            get(&self.store.meta, KEY_LAST_PURGED, ErrorSubject::Logs)?;
        // After a purge beyond the last entry (e.g. once a snapshot was installed) no entry is
        // left, and the last log id is the purged one. The maximum also covers entries that a
        // crash in the middle of a purge left behind below the purged id.
        let last = std::cmp::max(self.last_entry_log_id()?, last_purged);
        Ok((last_purged, last))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let last = self.store.log.last().map_err(|e| {
            StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Read, AnyError::new(&e))
        })?;
        match last {
            Some((key, value)) => {
                let index = key_index(&key)?;
                let entry: Entry = decode(&value, ErrorSubject::LogIndex(index))?;
                Ok(Some(*entry.get_log_id()))
            }
            None => Ok(None),
        }
    }

    /// Removes every entry whose key falls in `range`, as one atomic batch.
    fn remove_range(&self, range: (Bound<u64>, Bound<u64>)) -> Result<(), StorageError> {
        let keys = (map_bound(range.0.as_ref()), map_bound(range.1.as_ref()));
        let mut batch = sled::Batch::default();
        for item in self.store.log.range(keys).keys() {
            let key = item.map_err(|e| {
                StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, AnyError::new(&e))
            })?;
            batch.remove(key);
        }
        self.store.log.apply_batch(batch).map_err(|e| {
            StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, AnyError::new(&e)).into()
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(range, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(start..end, MAX_READ_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let (last_purged, last) = self.log_state()?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        put(&self.store.meta, KEY_VOTE, vote, ErrorSubject::Vote)?;
        // A vote granted and then forgotten in a crash could let this node vote twice in a term.
        self.store.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        get(&self.store.meta, KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        put(
            &self.store.meta,
            KEY_COMMITTED,
            &committed,
            ErrorSubject::Store,
        )
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get::<Option<LogId>>(&self.store.meta, KEY_COMMITTED, ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One batch, so that a crash keeps all of the appended entries or none of them.
        let mut batch = sled::Batch::default();
        for entry in entries {
            let log_id = *entry.get_log_id();
            let value = encode(&entry, ErrorSubject::Log(log_id))?;
            batch.insert(&index_key(log_id.index), value);
        }
        if let Err(e) = self.store.log.apply_batch(batch) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(StorageIOError::new(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                AnyError::new(&e),
            )
            .into());
        }
        // openraft counts an entry towards a quorum once the callback ran, so the entry must be
        // on disk by then.
        match self.store.flush(ErrorSubject::Logs).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(since = %log_id, "truncating raft log");
        self.remove_range((Bound::Included(log_id.index), Bound::Unbounded))?;
        // Entries from a deposed leader must not come back after a crash next to the new
        // leader's entries for the same indexes.
        self.store.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(upto = %log_id, "purging raft log");
        // The purged log id first: if a crash comes between the two writes, the log state still
        // says where the log starts, and the entries left over are purged again.
        put(
            &self.store.meta,
            KEY_LAST_PURGED,
            &log_id,
            ErrorSubject::Logs,
        )?;
        self.remove_range((Bound::Unbounded, Bound::Included(log_id.index)))?;
        self.store.flush(ErrorSubject::Logs).await
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StorageError::from(StorageIOError::new(
            ErrorSubject::Logs,
            ErrorVerb::Read,
            AnyError::error(format!("raft log key of {} bytes, expected 8", key.len())),
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn map_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::store::{KEY_LAYOUT, LAYOUT_VERSION};

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn replication_reads_stop_at_the_byte_limit_but_never_return_nothing() {
        let (mut log, _sm) = SledStore::open_temporary().unwrap();
        log.blocking_append((1..=10).map(blank)).await.unwrap();
        assert_eq!(log.read_range(3..8, 1).unwrap(), vec![blank(3)]);
        assert_eq!(log.read_range(3..8, usize::MAX).unwrap().len(), 5);
        assert_eq!(log.limited_get_log_entries(1, 11).await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn entries_left_below_the_purged_id_by_a_crash_are_ignored_and_purged_again() {
        let (mut log, _sm) = SledStore::open_temporary().unwrap();
        log.blocking_append((1..=5).map(blank)).await.unwrap();
        // A crash after the purged id was written and before the entries were removed.
        let purged = LogId::new(CommittedLeaderId::new(1, 1), 7);
        put(
            &log.store.meta,
            KEY_LAST_PURGED,
            &purged,
            ErrorSubject::Logs,
        )
        .unwrap();

        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(purged));
        assert_eq!(state.last_log_id, Some(purged));
        log.purge(purged).await.unwrap();
        assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_database_of_a_later_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _sm) = SledStore::open(dir.path()).unwrap();
            put(
                &log.store.meta,
                KEY_LAYOUT,
                &(LAYOUT_VERSION + 1),
                ErrorSubject::Store,
            )
            .unwrap();
            log.store.flush(ErrorSubject::Store).await.unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("layout version 2"), "{err}");
    }

    #[tokio::test]
    async fn a_restore_seed_is_kept_until_cleared_and_needs_an_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        SledStore::seed_restore(&dir, b"state").unwrap();
        // sled releases the directory's lock from its flush threads after the drop.
        let (log, _sm) = reopen(&dir).await;
        assert_eq!(log.restore_seed().unwrap().as_deref(), Some(&b"state"[..]));
        log.clear_restore_seed().unwrap();
        assert_eq!(log.restore_seed().unwrap(), None);
        drop((log, _sm));
        let e = SledStore::seed_restore(&dir, b"state").unwrap_err();
        assert!(
            matches!(
                e,
                super::super::SeedError::DataDir(
                    super::super::datadir::DataDirError::NotEmpty { .. }
                )
            ),
            "{e}"
        );
    }

    async fn reopen(dir: &std::path::Path) -> (LogStore, crate::StateMachineStore) {
        for _ in 0..100 {
            if let Ok(s) = SledStore::open(dir) {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        SledStore::open(dir).unwrap()
    }

    #[tokio::test]
    async fn a_damaged_entry_is_an_error_not_a_wrong_entry() {
        let (mut log, _sm) = SledStore::open_temporary().unwrap();
        log.blocking_append([blank(1), blank(2)]).await.unwrap();
        // Entry 2's bytes under key 3.
        let moved = log.store.log.get(index_key(2)).unwrap().unwrap();
        log.store.log.insert(index_key(3), moved).unwrap();
        assert!(log.try_get_log_entries(1..4).await.is_err());
        log.store.log.insert(index_key(3), &b"\xc1"[..]).unwrap();
        assert!(log.try_get_log_entries(3..4).await.is_err());
    }
}
