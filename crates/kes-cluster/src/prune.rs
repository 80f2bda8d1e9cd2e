//! Tombstone pruning, a background duty of the leader.
//!
//! Every delete leaves a tombstone and every create or delete a generation in the replicated
//! state, so without pruning the state (and every snapshot, and each node's memory) grows with
//! every key ever deleted. The leader periodically proposes [`Command::PruneTombstones`], which
//! forgets entry-less names below a prune point.
//!
//! Why this is safe whatever point is chosen: a tombstone's only job after the delete is to
//! make the state machine refuse a [`Command::FillKey`] whose keystore read may have begun
//! before the delete (`observed < generation`), since such a read may have returned the deleted
//! key. Applying a prune raises the state's prune point, and the state machine refuses every
//! fill observed below the prune point, for any name. A fill observed at or above it began its
//! read after every pruned generation was applied on its proposer, so it would have been
//! accepted with the tombstone still there. No outcome that protects a delete changes, and the
//! decision is made in `apply`, from the log alone: it does not depend on clocks, on how long a
//! keystore read or a proposal may take (neither has a hard bound: the keystore client has its
//! own retries, and a proposal may sit in a deposed leader's log until the next leader commits
//! it), or on what the members answered.
//!
//! What the point chosen does decide is which fills are refused needlessly: a refused fill
//! costs nothing visible (its proposer has already served the key) but a keystore read on the
//! next miss elsewhere. So the leader prunes below the smallest applied index of all members
//! as it was at least [`FILL_MARGIN`] ago: a member's fill whose read began after that sample
//! observed at least that index, so only fills that took longer than [`FILL_MARGIN`] from read
//! to commit (far beyond a healthy keystore's read time and [`crate::KMS_READ_TIMEOUT`]) are refused.
//!
//! A member that does not answer blocks pruning for that round. Safety does not need this (the
//! prune point protects its fills too), but a member cut off for a while may come back with
//! fills begun long ago, and refusing them all at once would send a burst of reads to the
//! keystore; tombstones wait instead. A member that is gone for good should be removed
//! (`kes cluster rm`), or tombstones accumulate until it is.

use crate::Cluster;
use kes_raft::types::NodeId;
use kes_state::Command;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the leader samples the members' applied indexes and considers a prune. Also the
/// highest rate of prune proposals: at most one per interval.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// How old a sample of the members' applied indexes must be before the leader prunes below
/// it: longer than any fill should take from the start of its keystore read to its commit
/// (a keystore read bounded by its client's timeouts, then a proposal of at most three tries
/// of [`crate::peer::client::PEER_TIMEOUT`]).
pub const FILL_MARGIN: Duration = Duration::from_secs(120);

/// Longest wait for a member's applied index.
const APPLIED_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many samples are kept (with the default interval and margin, five are).
const MAX_SAMPLES: usize = 64;

/// The leader's memory of the members' applied indexes.
pub struct Pruner {
    margin: Duration,
    /// (when, the smallest applied index of all members then), oldest first.
    samples: VecDeque<(Instant, u64)>,
}

/// What one round did.
#[derive(Debug, PartialEq, Eq)]
pub enum PruneRound {
    /// Not the leader: samples were dropped, as they belong to one leadership.
    NotLeader,
    /// A member did not answer.
    Blocked(Vec<NodeId>),
    /// No sample is old enough yet, or nothing lies below the point.
    Nothing,
    /// A prune below this index was committed.
    Pruned { before_index: u64, forgotten: usize },
    /// The prune was not committed (lost leadership, no quorum); the next round tries again.
    Failed,
}

impl Pruner {
    pub fn new(margin: Duration) -> Self {
        Self {
            margin,
            samples: VecDeque::new(),
        }
    }

    /// One round at `now`: sample the members, and prune below the newest sample older than
    /// the margin if anything lies below it.
    pub async fn round(&mut self, cluster: &Cluster, now: Instant) -> PruneRound {
        if !cluster.is_leader() {
            self.samples.clear();
            return PruneRound::NotLeader;
        }
        match cluster.min_applied().await {
            Ok(min) => {
                self.samples.push_back((now, min));
                if self.samples.len() > MAX_SAMPLES {
                    self.samples.pop_front();
                }
            }
            Err(silent) => {
                tracing::debug!(members = ?silent, "tombstones not pruned: members did not answer");
                return PruneRound::Blocked(silent);
            }
        }
        // The newest sample old enough; the ones before it are no longer needed.
        let old_enough = |at: &Instant| now.saturating_duration_since(*at) >= self.margin;
        while self.samples.get(1).is_some_and(|(at, _)| old_enough(at)) {
            self.samples.pop_front();
        }
        let point = self
            .samples
            .front()
            .filter(|(at, _)| old_enough(at))
            .map(|(_, min)| *min);
        let Some(before_index) = point else {
            return PruneRound::Nothing;
        };
        let (prunable, tombstones) = cluster.state.read(|s| {
            (
                s.has_prunable(before_index) && before_index > s.pruned_below(),
                s.tombstone_count(),
            )
        });
        if !prunable {
            return PruneRound::Nothing;
        }
        match cluster
            .raft
            .client_write(Command::PruneTombstones { before_index })
            .await
        {
            Ok(_) => {
                let left = cluster.state.read(|s| s.tombstone_count());
                let forgotten = tombstones.saturating_sub(left);
                tracing::info!(before_index, forgotten, "tombstones pruned");
                PruneRound::Pruned {
                    before_index,
                    forgotten,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "tombstone prune not committed");
                PruneRound::Failed
            }
        }
    }
}

impl Cluster {
    /// The smallest applied index of all members (voters and learners), this node included,
    /// or the members that did not answer.
    pub(crate) async fn min_applied(&self) -> Result<u64, Vec<NodeId>> {
        let mut min = self.applied_index();
        let others: Vec<(NodeId, String)> = self
            .members()
            .into_iter()
            .filter(|(id, _, _)| *id != self.id)
            .map(|(id, addr, _)| (id, addr))
            .collect();
        if others.is_empty() {
            return Ok(min);
        }
        let Some(peers) = &self.peers else {
            return Err(others.into_iter().map(|(id, _)| id).collect());
        };
        let asks = others.iter().map(|(id, addr)| async move {
            peers
                .call::<_, u64>(*id, addr, "/cluster/applied", &(), APPLIED_TIMEOUT)
                .await
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut silent = Vec::new();
        for ((id, _), answer) in others.iter().zip(answers) {
            match answer {
                Ok(applied) => min = min.min(applied),
                Err(e) => {
                    tracing::debug!(peer = id, error = %e, "no applied index from member");
                    silent.push(*id);
                }
            }
        }
        if silent.is_empty() {
            Ok(min)
        } else {
            Err(silent)
        }
    }

    /// The pruning duty: a round every [`PRUNE_EVERY`] while this node leads. Runs until
    /// `cancel` fires.
    pub async fn run_prune(
        self: Arc<Self>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let mut pruner = Pruner::new(FILL_MARGIN);
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if self.is_sealed() {
                continue;
            }
            pruner.round(&self, Instant::now()).await;
        }
    }
}
