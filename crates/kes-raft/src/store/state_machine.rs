//! The state machine: the applied [`State`] in memory, snapshots in sled.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kes_state::{Command, Outcome, State};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder,
    StorageIOError,
};
use parking_lot::RwLock;
use tokio::sync::watch;

use super::{decode, encode, SledStore, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// What has been applied, kept together so that a snapshot's state, log id and membership
/// always describe the same point of the log.
#[derive(Default)]
struct Applied {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Shared read access to the applied state, for the server's hot path.
///
/// Readers take a read lock for the duration of their closure; the only writer is the state
/// machine applying committed entries, which holds the write lock for one batch of entries.
/// Keep closures short (look up and copy out what you need), because a long read holds back
/// applying, and with it every reader queued behind the waiting writer.
pub struct StateHandle {
    applied: RwLock<Applied>,
    /// Raised under the write lock by every change of the applied state, before the lock is
    /// released: a reader that sees the same version twice saw no change in between.
    version: AtomicU64,
    /// The index of the last applied log entry, 0 before any. The handle owns the sender, so
    /// receivers never see it closed while the handle lives.
    applied_tx: watch::Sender<u64>,
}

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateHandle")
            .field("applied_index", &self.applied_index())
            .finish_non_exhaustive()
    }
}

impl StateHandle {
    fn new(applied: Applied) -> Self {
        let index = applied.last_applied.map_or(0, |id| id.index);
        Self {
            applied: RwLock::new(applied),
            version: AtomicU64::new(0),
            applied_tx: watch::Sender::new(index),
        }
    }

    /// Runs `f` on the applied state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.applied.read().state)
    }

    /// Changes with every change of the applied state (entries applied, a snapshot
    /// installed); the same version means the same state. For caches of what was read.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The index of the last applied log entry, 0 before any.
    pub fn applied_index(&self) -> u64 {
        *self.applied_tx.borrow()
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied.read().last_applied
    }

    /// The last membership the state machine applied.
    pub fn membership(&self) -> StoredMembership {
        self.applied.read().membership.clone()
    }

    /// Follows the index of the last applied log entry (0 before any): a caller that proposed
    /// an entry, or learnt a read index from the leader, waits on it until the state includes
    /// that index. The value only grows.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    /// Returns once the entry at `index` (and every entry before it) is applied. Never returns
    /// if it is not, so callers bound the wait with a timeout.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied_tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while this borrow exists.
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }

    fn publish(&self, index: u64) {
        self.applied_tx.send_if_modified(|current| {
            let changed = *current != index;
            *current = index;
            changed
        });
    }
}

/// openraft's state machine over [`State`].
///
/// Take [`StateMachineStore::handle`] (and so the applied watch) before handing the store to
/// `Raft::new`, which keeps it.
pub struct StateMachineStore {
    store: SledStore,
    handle: Arc<StateHandle>,
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl StateMachineStore {
    /// Starts from the persisted snapshot, if any. Entries after it stay in the log, and openraft
    /// applies them again at startup (up to the saved committed id) and as the leader commits.
    pub(super) fn restore(store: SledStore) -> Result<Self, StorageError> {
        let applied = match store.read_snapshot()? {
            Some((meta, data)) => {
                let state = decode_state(&meta, &data)?;
                tracing::info!(
                    last_log_id = %DisplayLogId(meta.last_log_id),
                    bytes = data.len(),
                    "restored state machine from snapshot"
                );
                Applied {
                    state,
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                }
            }
            None => Applied::default(),
        };
        Ok(Self {
            store,
            handle: Arc::new(StateHandle::new(applied)),
        })
    }

    /// Read access to the applied state, shared with the state machine.
    pub fn handle(&self) -> Arc<StateHandle> {
        Arc::clone(&self.handle)
    }

    /// Shorthand for [`StateHandle::applied_watch`].
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.handle.applied_watch()
    }

    fn apply_entries(&self, entries: impl Iterator<Item = Entry>) -> Vec<Outcome> {
        let mut replies = Vec::new();
        let index = {
            let mut applied = self.handle.applied.write();
            for entry in entries {
                let log_id = entry.log_id;
                // Blank and membership entries go through the state as `Noop`, so that the
                // state's own applied index follows the log and a snapshot can be checked
                // against its log id.
                let outcome = match &entry.payload {
                    EntryPayload::Blank => applied.state.apply(log_id.index, &Command::Noop),
                    EntryPayload::Normal(cmd) => applied.state.apply(log_id.index, cmd),
                    EntryPayload::Membership(membership) => {
                        applied.membership =
                            StoredMembership::new(Some(log_id), membership.clone());
                        applied.state.apply(log_id.index, &Command::Noop)
                    }
                };
                applied.last_applied = Some(log_id);
                replies.push(outcome);
            }
            self.handle.version.fetch_add(1, Ordering::Release);
            applied.last_applied.map_or(0, |id| id.index)
        };
        self.handle.publish(index);
        replies
    }

    /// A point-in-time copy to build a snapshot from. openraft builds snapshots in a task of
    /// their own while entries keep being applied; copying here, on the applying task, means
    /// no lock is held while the snapshot is encoded, and readers never wait for it.
    fn capture(&self) -> SnapshotBuilder {
        let applied = self.handle.applied.read();
        SnapshotBuilder {
            store: self.store.clone(),
            state: Arc::new(applied.state.clone()),
            last_applied: applied.last_applied,
            membership: applied.membership.clone(),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.handle.applied.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.apply_entries(entries.into_iter()))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.capture()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Decoding a large state is CPU work; keep it off the runtime's worker threads.
        let (state, data) = {
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || decode_state(&meta, &data).map(|s| (s, data)))
        }
        .await
        .map_err(|e| snapshot_error(meta.clone(), ErrorVerb::Read, AnyError::new(&e)))??;
        // On disk before the state is replaced and before openraft, told it is installed,
        // purges the entries the snapshot covers.
        self.store.write_snapshot(meta, &data, false)?;
        self.store
            .flush(ErrorSubject::Snapshot(Some(meta.signature())))
            .await?;
        let index = meta.last_log_id.map_or(0, |id| id.index);
        {
            let mut applied = self.handle.applied.write();
            *applied = Applied {
                state,
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            self.handle.version.fetch_add(1, Ordering::Release);
        }
        self.handle.publish(index);
        tracing::info!(
            last_log_id = %DisplayLogId(meta.last_log_id),
            bytes = data.len(),
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.store.read_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot now, from the state as it is; openraft's own builds go through
/// [`RaftStateMachine::get_snapshot_builder`].
impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.capture().build_snapshot().await
    }
}

/// A snapshot of the state as it was when openraft asked for a builder.
pub struct SnapshotBuilder {
    store: SledStore,
    state: Arc<State>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl std::fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let state = Arc::clone(&self.state);
        let data = tokio::task::spawn_blocking(move || state.encode_snapshot())
            .await
            .map_err(|e| write_sm_error(AnyError::new(&e)))?
            .map_err(|e| write_sm_error(AnyError::new(&e)))?;
        // Unique even for two snapshots of one log id, as openraft asks: sled's ids only grow,
        // across restarts too.
        let seq = self
            .store
            .db
            .generate_id()
            .map_err(|e| write_sm_error(AnyError::new(&e)))?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        // A build runs concurrently with the state machine and may end after a newer snapshot
        // was installed; that one stays the persisted snapshot.
        if self.store.write_snapshot(&meta, &data, true)? {
            self.store
                .flush(ErrorSubject::Snapshot(Some(meta.signature())))
                .await?;
            tracing::info!(
                last_log_id = %DisplayLogId(meta.last_log_id),
                bytes = data.len(),
                "built snapshot"
            );
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl SledStore {
    /// Writes the snapshot, both parts in one batch. With `only_if_newer`, a persisted snapshot
    /// of a later log id is kept instead; returns whether the snapshot was written.
    fn write_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        only_if_newer: bool,
    ) -> Result<bool, StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let _guard = self.snapshot_write.lock();
        if only_if_newer {
            if let Some(current) = self.read_snapshot_meta()? {
                if current.last_log_id > meta.last_log_id {
                    return Ok(false);
                }
            }
        }
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, encode(meta, subject())?);
        batch.insert(KEY_SNAPSHOT_DATA, data);
        self.snapshot
            .apply_batch(batch)
            .map_err(|e| StorageIOError::new(subject(), ErrorVerb::Write, AnyError::new(&e)))?;
        Ok(true)
    }

    fn read_snapshot_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        match self.snapshot.get(KEY_SNAPSHOT_META) {
            Ok(Some(bytes)) => decode(&bytes, ErrorSubject::Snapshot(None)).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(read_snapshot_error(AnyError::new(&e))),
        }
    }

    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        // Under the write lock, so that meta and data come from the same snapshot.
        let _guard = self.snapshot_write.lock();
        let Some(meta) = self.read_snapshot_meta()? else {
            return Ok(None);
        };
        match self.snapshot.get(KEY_SNAPSHOT_DATA) {
            Ok(Some(data)) => Ok(Some((meta, data.to_vec()))),
            Ok(None) => Err(snapshot_error(
                meta,
                ErrorVerb::Read,
                AnyError::error("snapshot metadata without snapshot data"),
            )),
            Err(e) => Err(read_snapshot_error(AnyError::new(&e))),
        }
    }
}

/// Decodes snapshot bytes (from a peer or from disk: untrusted) and checks that they are the
/// state `meta` describes, so that a mislabelled snapshot is refused rather than installed.
fn decode_state(meta: &SnapshotMeta, data: &[u8]) -> Result<State, StorageError> {
    let state = State::decode_snapshot(data)
        .map_err(|e| snapshot_error(meta.clone(), ErrorVerb::Read, AnyError::new(&e)))?;
    let expected = meta.last_log_id.map_or(0, |id| id.index);
    if state.last_applied() != expected {
        return Err(snapshot_error(
            meta.clone(),
            ErrorVerb::Read,
            AnyError::error(format!(
                "snapshot state is applied up to index {}, its metadata says {expected}",
                state.last_applied()
            )),
        ));
    }
    Ok(state)
}

fn snapshot_error(meta: SnapshotMeta, verb: ErrorVerb, source: AnyError) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(Some(meta.signature())), verb, source).into()
}

fn read_snapshot_error(source: AnyError) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), ErrorVerb::Read, source).into()
}

fn write_sm_error(source: AnyError) -> StorageError {
    StorageIOError::write_state_machine(source).into()
}

/// Shows an optional log id as openraft does, `None` as "none".
struct DisplayLogId(Option<LogId>);

impl std::fmt::Display for DisplayLogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("none"),
        }
    }
}
