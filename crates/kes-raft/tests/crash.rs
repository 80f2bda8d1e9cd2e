//! Crash test: a child process (this test binary, re-run with an environment switch) appends,
//! votes, snapshots and purges in a loop, printing each step once the store returned from it,
//! and is killed with SIGKILL at an arbitrary point. Every reopen must succeed and hold every
//! step the child printed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use kes_raft::types::EntryPayload;
use kes_raft::SledStore;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder, Vote};

const CHILD_ENV: &str = "KES_RAFT_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";

/// Sealed bytes are opaque to the store; a value derived from the index shows a misplaced entry.
fn key_name(index: u64) -> String {
    format!("key-{index}")
}

fn child(dir: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (mut log, mut sm) = SledStore::open(dir)?;
        let last = log
            .get_log_state()
            .await?
            .last_log_id
            .map_or(0, |id| id.index);
        // What openraft does on start: catch the state machine up with the log (in this test
        // every entry counts as committed).
        let applied = sm.applied_state().await?.0.map_or(0, |id| id.index);
        let backlog = log.try_get_log_entries(applied + 1..=last).await?;
        sm.apply(backlog).await?;

        let mut out = std::io::stdout().lock();
        if last == 0 {
            log.blocking_append([blank(1, 1), normal(1, 2, init())])
                .await?;
            sm.apply([blank(1, 1), normal(1, 2, init())]).await?;
            writeln!(out, "ack 2")?;
        }
        let start = last.max(2) + 1;
        for index in start..start + 10_000 {
            let entry = normal(1, index, put_key(&key_name(index), index));
            log.blocking_append([entry.clone()]).await?;
            writeln!(out, "ack {index}")?;
            out.flush()?;
            sm.apply([entry]).await?;
            if index % 16 == 0 {
                log.save_vote(&Vote::new(index, 1)).await?;
                writeln!(out, "vote {index}")?;
            }
            if index % 32 == 0 {
                let snapshot = sm.build_snapshot().await?;
                let covered = snapshot.meta.last_log_id.map_or(0, |id| id.index);
                writeln!(out, "snap {covered}")?;
                log.purge(log_id(1, 1, covered - 8)).await?;
                writeln!(out, "purged {}", covered - 8)?;
            }
            out.flush()?;
        }
        Ok(())
    })
}

#[derive(Default, Debug)]
struct Acked {
    ack: u64,
    vote: u64,
    snap: u64,
    purged: u64,
}

fn run_child_until_killed(dir: &Path, kill_after_acks: usize) -> anyhow::Result<Acked> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut acked = Acked::default();
    let mut acks = 0;
    let mut killed = false;
    // Lines printed before the kill are still in the pipe; read to the end.
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Some((what, n)) = line.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "ack" => {
                acked.ack = acked.ack.max(n);
                acks += 1;
            }
            "vote" => acked.vote = acked.vote.max(n),
            "snap" => acked.snap = acked.snap.max(n),
            "purged" => acked.purged = acked.purged.max(n),
            _ => continue,
        }
        if acks >= kill_after_acks && !killed {
            child.kill()?;
            killed = true;
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(
        killed,
        "child ended on its own ({status}) after {acks} acknowledged appends"
    );
    Ok(acked)
}

async fn check(dir: &Path, acked: &Acked) -> anyhow::Result<u64> {
    let (mut log, mut sm) = SledStore::open(dir)?;
    let state = log.get_log_state().await?;
    let last = state.last_log_id.map_or(0, |id| id.index);
    let purged = state.last_purged_log_id.map_or(0, |id| id.index);
    assert!(
        last >= acked.ack,
        "log ends at {last}, {} was acknowledged",
        acked.ack
    );
    assert!(
        purged >= acked.purged,
        "purged to {purged}, {} was acknowledged",
        acked.purged
    );

    let entries = log.try_get_log_entries(purged + 1..=last).await?;
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    let want: Vec<u64> = (purged + 1..=last).collect();
    assert_eq!(indexes, want, "log has holes");
    for entry in &entries {
        let index = entry.log_id.index;
        if index > 2 {
            assert_eq!(
                entry.payload,
                EntryPayload::Normal(put_key(&key_name(index), index)),
                "entry {index}"
            );
        }
    }

    let vote = log.read_vote().await?.unwrap_or_default();
    assert!(
        vote >= Vote::new(acked.vote, 1),
        "vote {vote} older than acknowledged {}",
        acked.vote
    );

    let applied = sm.applied_state().await?.0.map_or(0, |id| id.index);
    assert!(
        applied >= acked.snap,
        "snapshot at {applied}, {} was acknowledged",
        acked.snap
    );
    assert!(
        applied <= last,
        "snapshot at {applied} beyond the log end {last}"
    );
    let handle = sm.handle();
    handle.read(|s| {
        assert_eq!(s.last_applied(), applied);
        for index in 3..=applied {
            assert!(
                s.key(&key_name(index)).is_some(),
                "snapshot lacks key {index}"
            );
        }
    });
    Ok(last)
}

#[test]
fn acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut last = 0;
    // Uneven counts, so the kill lands at different points of the vote/snapshot/purge cycle.
    for kill_after in [45, 97, 150, 71, 203] {
        let acked = run_child_until_killed(dir.path(), kill_after)?;
        assert!(acked.ack > last, "child made no progress");
        last = rt.block_on(check(dir.path(), &acked))?;
    }
    Ok(())
}
