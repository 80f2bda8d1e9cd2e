//! openraft's own storage test suite, run against the sled store: the contract every Raft
//! storage must meet (log state, purge and truncate, vote, membership recovery, snapshot
//! transfer), each case on a fresh database in its own temporary directory.

use kes_raft::types::{StorageError, TypeConfig};
use kes_raft::{LogStore, SledStore, StateMachineStore};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) = SledStore::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    Suite::test_all(SledBuilder)?;
    Ok(())
}

/// The suite again on the temporary (single-node) database.
struct TemporaryBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for TemporaryBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let (log, sm) = SledStore::open_temporary()?;
        Ok(((), log, sm))
    }
}

#[test]
fn openraft_storage_suite_temporary() -> anyhow::Result<()> {
    Suite::test_all(TemporaryBuilder)?;
    Ok(())
}
