//! The Raft storage adapter over sled: [`LogStore`] (openraft's `RaftLogStorage`) and
//! [`StateMachineStore`] (openraft's `RaftStateMachine`), both opened from one database by
//! [`SledStore::open`].
//!
//! Layout, one sled database with three trees:
//! - `raft_log`: entry index as big-endian `u64` -> entry, so that key order is index order and
//!   ranges of indexes are ranges of keys;
//! - `raft_meta`: the vote, the committed log id, the last purged log id, the layout version,
//!   and the state a restore seeded the directory with, until the cluster is initialised;
//! - `sm_snapshot`: the latest state-machine snapshot, its metadata and its bytes.
//!
//! Values are MessagePack with named fields, so that a later version can add a defaulted field.
//!
//! The applied [`kes_state::State`] is not written on every apply: it lives in memory and is
//! rebuilt on open from the persisted snapshot, after which openraft re-applies the committed
//! entries that follow it. That keeps applying an entry free of disk writes, and is safe because
//! openraft only purges entries that a persisted snapshot covers.
//!
//! Durability: an append is on disk (sled flushed) before openraft is told it is, and so are a
//! vote, a truncation, a purge, and a snapshot that is built or installed. The committed log id
//! is written without its own flush (see [`LogStore`]).

pub mod datadir;
mod log;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::StorageError;

pub use log::LogStore;
pub use state_machine::{SnapshotBuilder, StateHandle, StateMachineStore};

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const SNAPSHOT_TREE: &str = "sm_snapshot";

const KEY_LAYOUT: &[u8] = b"layout";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_RESTORE: &[u8] = b"restore";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// sled's page cache (its default is 1 GiB). The applied state lives in memory anyway; the
/// cache only serves log reads, which are mostly of the recent tail, since openraft purges the
/// log behind each snapshot.
const CACHE_BYTES: u64 = 64 << 20;

/// The version of the layout above. A database written by a later, incompatible layout is
/// refused at open instead of being misread.
const LAYOUT_VERSION: u64 = 1;

/// The sled database behind a node's Raft storage. Cloning shares it.
///
/// Open it with [`SledStore::open`], which hands out the two halves openraft takes; the value
/// itself stays inside them.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    snapshot: sled::Tree,
    /// Serialises "is this snapshot newer than the persisted one?" with the write that follows,
    /// because a snapshot build runs in its own task and may finish after an install.
    snapshot_write: Arc<parking_lot::Mutex<()>>,
    /// Whether [`SledStore::flush`] waits for sled's flush: always, but in the simulation,
    /// whose database stands for the disk itself (see [`SledStore::open_simulated`]).
    flushes: bool,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if missing) the database in `dir` and returns the log store and the state
    /// machine, the latter restored from the latest persisted snapshot.
    ///
    /// sled locks the directory, so a second open of the same `dir` fails while the first
    /// database is alive, in this process or another.
    /// The directory's format marker is checked first (see [`datadir`]).
    pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
        datadir::prepare_data_dir(dir).map_err(|e| open_error(&e))?;
        Self::open_config(sled::Config::new().path(dir))
    }

    /// Creates a database in `dir`, which must be empty or missing, holding `snapshot` (a state
    /// in `kes_state`'s snapshot codec, from a backup) as the state to initialise the cluster
    /// with: the node that initialises it proposes that state instead of its configuration's.
    /// On disk when this returns.
    pub fn seed_restore(dir: &Path, snapshot: &[u8]) -> Result<(), SeedError> {
        datadir::ensure_empty(dir)?;
        datadir::prepare_data_dir(dir)?;
        let (log, _sm) = Self::open(dir)?;
        log.store
            .meta
            .insert(KEY_RESTORE, snapshot)
            .map_err(|e| open_error(&e))?;
        log.store.db.flush().map_err(|e| open_error(&e))?;
        Ok(())
    }

    /// Opens a database that lives only as long as the returned stores (sled keeps it in a
    /// temporary file that is removed on drop): for the single-node mode that runs without a
    /// `cluster:` section, and for tests.
    pub fn open_temporary() -> Result<(LogStore, StateMachineStore), StorageError> {
        Self::open_config(sled::Config::new().temporary(true))
    }

    fn open_config(config: sled::Config) -> Result<(LogStore, StateMachineStore), StorageError> {
        let db = config
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| open_error(&e))?;
        Self::open_db(db, true)
    }

    /// Opens the stores on a database the caller keeps, as the deterministic simulation does:
    /// it keeps each node's (temporary) database across the node's crash and restart, as a disk
    /// would be, and every write counts as durable at once. Waiting for sled's flush, which
    /// runs on sled's own threads, would let real time into a simulation whose clock jumps
    /// whenever every task waits.
    pub fn open_simulated(db: sled::Db) -> Result<(LogStore, StateMachineStore), StorageError> {
        Self::open_db(db, false)
    }

    fn open_db(db: sled::Db, flushes: bool) -> Result<(LogStore, StateMachineStore), StorageError> {
        let store = SledStore {
            log: db.open_tree(LOG_TREE).map_err(|e| open_error(&e))?,
            meta: db.open_tree(META_TREE).map_err(|e| open_error(&e))?,
            snapshot: db.open_tree(SNAPSHOT_TREE).map_err(|e| open_error(&e))?,
            db,
            snapshot_write: Arc::new(parking_lot::Mutex::new(())),
            flushes,
        };
        store.check_layout()?;
        let sm = StateMachineStore::restore(store.clone())?;
        Ok((LogStore::new(store), sm))
    }

    fn check_layout(&self) -> Result<(), StorageError> {
        match get::<u64>(&self.meta, KEY_LAYOUT, ErrorSubject::Store)? {
            Some(LAYOUT_VERSION) => Ok(()),
            Some(other) => Err(StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Read,
                AnyError::error(format!(
                    "raft storage layout version {other} is not supported (this build reads \
                     {LAYOUT_VERSION})"
                )),
            )
            .into()),
            None => put(&self.meta, KEY_LAYOUT, &LAYOUT_VERSION, ErrorSubject::Store),
        }
    }

    /// Makes every write so far durable. sled flushes on its own thread pool, so this does not
    /// block the runtime.
    async fn flush(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        if !self.flushes {
            return Ok(());
        }
        self.db
            .flush_async()
            .await
            .map(drop)
            .map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(&e)).into())
    }
}

/// Why [`SledStore::seed_restore`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error("cannot write the data directory: {0}")]
    Storage(#[from] StorageError),
}

fn open_error(e: &(dyn std::error::Error + 'static)) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Store,
        ErrorVerb::Read,
        AnyError::from_dyn(e, None),
    )
    .into()
}

fn encode<T: Serialize>(value: &T, subject: ErrorSubject<u64>) -> Result<Vec<u8>, StorageError> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(&e)).into())
}

fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    subject: ErrorSubject<u64>,
) -> Result<T, StorageError> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| StorageIOError::new(subject, ErrorVerb::Read, AnyError::new(&e)).into())
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    subject: ErrorSubject<u64>,
) -> Result<Option<T>, StorageError> {
    match tree.get(key) {
        Ok(Some(bytes)) => decode(&bytes, subject).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(StorageIOError::new(subject, ErrorVerb::Read, AnyError::new(&e)).into()),
    }
}

fn put<T: Serialize>(
    tree: &sled::Tree,
    key: &[u8],
    value: &T,
    subject: ErrorSubject<u64>,
) -> Result<(), StorageError> {
    let bytes = encode(value, subject.clone())?;
    tree.insert(key, bytes)
        .map(drop)
        .map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(&e)).into())
}
