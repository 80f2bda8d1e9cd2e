//! What a node finds after a restart: its vote, its log, its latest snapshot, and (once openraft
//! re-applies the committed entries after the snapshot) the state it had.

mod common;

use common::*;
use kes_raft::types::{Entry, StorageError};
use kes_raft::SledStore;
use kes_state::{Outcome, State};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder, StorageHelper, Vote};
use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

/// Opens `dir` again in this process. sled's background flush threads can hold its lock for a
/// moment after the previous store is dropped; a restarted node is a new process and never
/// meets this.
fn reopen(dir: &Path) -> anyhow::Result<(kes_raft::LogStore, kes_raft::StateMachineStore)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open(dir) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return Ok(r?),
        }
    }
}

fn history() -> Vec<Entry> {
    vec![
        membership(1, 1, three_nodes()),
        blank(1, 2),
        normal(1, 3, init()),
        normal(1, 4, put_key("k1", 10)),
        normal(1, 5, put_key("k2", 20)),
        normal(2, 6, delete_key("k1", 30)),
        normal(2, 7, put_key("k3", 40)),
    ]
}

#[tokio::test]
async fn restart_keeps_vote_log_snapshot_and_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = history();
    let vote = Vote::new_committed(2, 1);

    let (snapshot_meta, expected) = {
        let (mut log, mut sm) = SledStore::open(dir.path())?;
        log.save_vote(&vote).await?;
        log.blocking_append(entries.clone()).await?;

        let outcomes = sm.apply(entries[..5].to_vec()).await?;
        assert_eq!(outcomes, vec![Outcome::Applied; 5]);
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 5)));
        assert_eq!(
            snapshot.meta.last_membership.log_id(),
            &Some(log_id(1, 1, 1))
        );

        // Entries after the snapshot are applied in memory only; the committed id says how far
        // to re-apply them.
        let outcomes = sm.apply(entries[5..].to_vec()).await?;
        assert_eq!(outcomes, vec![Outcome::Applied; 2]);
        log.save_committed(Some(log_id(2, 1, 7))).await?;
        log.purge(log_id(1, 1, 2)).await?;

        let handle = sm.handle();
        assert_eq!(handle.applied_index(), 7);
        let expected = handle.read(State::clone);
        assert!(expected.key("k1").is_none() && expected.key("k3").is_some());
        (snapshot.meta, expected)
    };

    let (mut log, mut sm) = reopen(dir.path())?;
    let handle = sm.handle();

    assert_eq!(log.read_vote().await?, Some(vote));
    assert_eq!(log.read_committed().await?, Some(log_id(2, 1, 7)));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 7)));
    assert_eq!(
        log.try_get_log_entries(0..100).await?,
        entries[2..].to_vec()
    );

    // The state machine starts from the snapshot: k1 is not deleted yet, k3 not written yet.
    assert_eq!(sm.applied_state().await?.0, Some(log_id(1, 1, 5)));
    assert_eq!(handle.applied_index(), 5);
    handle.read(|s| {
        assert_eq!(s.last_applied(), 5);
        assert!(s.key("k1").is_some());
        assert!(s.key("k3").is_none());
    });
    let current = sm.get_current_snapshot().await?;
    assert_eq!(current.map(|s| s.meta), Some(snapshot_meta));

    // What openraft does first when it starts on this storage.
    let raft_state = StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await?;
    assert_eq!(raft_state.vote_ref(), &vote);
    assert_eq!(handle.applied_index(), 7);
    assert_eq!(handle.read(State::clone), expected);
    assert_eq!(handle.membership().log_id(), &Some(log_id(1, 1, 1)));
    Ok(())
}

#[tokio::test]
async fn installed_snapshot_survives_restart_and_an_older_build_does_not_replace_it(
) -> anyhow::Result<()> {
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let entries = history();

    let (_leader_log, mut leader_sm) = SledStore::open(leader_dir.path())?;
    leader_sm.apply(entries.clone()).await?;
    let snapshot = leader_sm.build_snapshot().await?;
    let leader_state = leader_sm.handle().read(State::clone);

    let follower_state = {
        let (_log, mut sm) = SledStore::open(follower_dir.path())?;
        let mut watch = sm.applied_watch();
        // A build that started before the install and finishes after it.
        let mut stale = sm.get_snapshot_builder().await;

        let mut data = sm.begin_receiving_snapshot().await?;
        *data = Cursor::new(snapshot.snapshot.get_ref().clone());
        sm.install_snapshot(&snapshot.meta, data).await?;
        assert_eq!(*watch.borrow_and_update(), 7);

        let stale = stale.build_snapshot().await?;
        assert_eq!(stale.meta.last_log_id, None);
        let current = sm.get_current_snapshot().await?;
        assert_eq!(current.map(|s| s.meta), Some(snapshot.meta.clone()));
        sm.handle().read(State::clone)
    };
    assert_eq!(follower_state, leader_state);

    let (_log, mut sm) = reopen(follower_dir.path())?;
    assert_eq!(
        sm.applied_state().await?,
        (
            snapshot.meta.last_log_id,
            snapshot.meta.last_membership.clone()
        )
    );
    assert_eq!(sm.handle().read(State::clone), leader_state);
    Ok(())
}

#[tokio::test]
async fn snapshots_that_do_not_match_their_metadata_are_refused() -> anyhow::Result<()> {
    let entries = history();
    let (_log, mut leader) = SledStore::open_temporary()?;
    leader.apply(entries.clone()).await?;
    let snapshot = leader.build_snapshot().await?;

    let (_log, mut follower) = SledStore::open_temporary()?;
    let mut mislabelled = snapshot.meta.clone();
    mislabelled.last_log_id = Some(log_id(2, 1, 9));
    let garbage = b"KESSNAP1 but not msgpack".to_vec();
    let cases = [
        (mislabelled, snapshot.snapshot.get_ref().clone()),
        (snapshot.meta.clone(), garbage),
        (snapshot.meta.clone(), Vec::new()),
    ];
    for (meta, bytes) in cases {
        let result: Result<(), StorageError> = follower
            .install_snapshot(&meta, Box::new(Cursor::new(bytes)))
            .await;
        assert!(result.is_err(), "installed a bad snapshot for {meta}");
    }
    assert_eq!(follower.applied_state().await?.0, None);
    assert!(follower.get_current_snapshot().await?.is_none());
    assert_eq!(follower.handle().read(State::clone), State::default());
    Ok(())
}

#[tokio::test]
async fn readers_wait_for_an_index_to_be_applied() -> anyhow::Result<()> {
    let (_log, mut sm) = SledStore::open_temporary()?;
    let handle = sm.handle();
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle.wait_applied(4).await;
            handle.read(|s| s.key("k1").map(|k| k.sealed.clone()))
        })
    };
    let entries = history();
    sm.apply(entries[..3].to_vec()).await?;
    assert!(!waiter.is_finished());
    sm.apply(entries[3..4].to_vec()).await?;
    let sealed = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await??;
    assert_eq!(sealed, Some(b"sealed:k1:10".to_vec()));
    Ok(())
}

#[tokio::test]
async fn truncate_removes_the_tail_for_good() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = history();
    {
        let (mut log, _sm) = SledStore::open(dir.path())?;
        log.blocking_append(entries.clone()).await?;
        log.truncate(log_id(1, 1, 5)).await?;
        // A new leader's entries for the truncated indexes.
        log.blocking_append([blank(3, 5), normal(3, 6, put_key("k9", 50))])
            .await?;
    }
    let (mut log, _sm) = reopen(dir.path())?;
    let state = log.get_log_state().await?;
    assert_eq!(state.last_log_id, Some(log_id(3, 1, 6)));
    let got = log.try_get_log_entries(1..10).await?;
    let mut want = entries[..4].to_vec();
    want.extend([blank(3, 5), normal(3, 6, put_key("k9", 50))]);
    assert_eq!(got, want);
    Ok(())
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _first = SledStore::open(dir.path())?;
    assert!(SledStore::open(dir.path()).is_err());
    Ok(())
}
