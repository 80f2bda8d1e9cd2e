//! Moving the leadership to a chosen voter (`kes cluster leader <id>`, before a rolling
//! restart stops the leader).
//!
//! openraft 0.9 has no leadership transfer, and its leader lease makes every voter refuse a
//! vote while it still hears the leader. A campaign of the target alone therefore only
//! disrupts: its higher term makes the leader step down at its next append, and whichever
//! voter campaigns first afterwards wins, and a write committed between the target's campaign
//! and the step-down leaves the target's log behind, so that it cannot win at all. So a
//! transfer goes in three steps, from whichever node the request reached:
//!
//! 1. **Hold** every voter for at most [`HOLD`]: a held node starts no new write (a write
//!    waits for the hold to end, then goes to whichever node leads) and a held node other
//!    than the target starts no campaign. The leader answers its hold only once the writes it
//!    was running are done and the target has every entry of its log, so nothing can be
//!    committed without the target any more.
//! 2. The target **campaigns**: the leader steps down, the leases run out, the target's
//!    pre-vote and vote succeed (its log is as recent as anyone's, and nobody else campaigns).
//! 3. Once this node sees the target lead (or after [`TRANSFER_WAIT`]), the holds are
//!    **released**. A target that does not take over is reported, and the released voters
//!    elect a leader as after any failure.
//!
//! A hold that is never released (the requesting node died) ends by itself after [`HOLD`].

use crate::peer::client::PeerError;
use crate::{Cluster, ClusterError};
use kes_raft::types::NodeId;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How long a transfer holds the voters: the leader's catch-up ([`CATCH_UP`]), then the
/// target's campaign (the lease, an election timeout, a pre-vote and a vote), with room to
/// spare. Released as soon as the transfer is over.
pub const HOLD: Duration = Duration::from_secs(8);

/// The longest hold a voter accepts.
const HOLD_MAX: Duration = Duration::from_secs(10);

/// How long the leader waits for its writes in progress to finish and for the target to have
/// its whole log.
const CATCH_UP: Duration = Duration::from_secs(3);

/// How long a transfer waits for the target to lead once it campaigns.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(5);

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(20);

/// A hold request: no new writes, and no campaign unless this node is `target`, for `ms`
/// milliseconds (0 releases).
#[derive(Debug, Serialize, Deserialize)]
pub struct Hold {
    pub target: NodeId,
    pub ms: u64,
}

/// A node's hold and its writes in progress.
#[derive(Default)]
pub(crate) struct Holds {
    /// Monotonic milliseconds (the cluster clock) until which the node is held.
    until: AtomicU64,
    target: AtomicU64,
    /// Writes between [`Cluster::begin_write`] and the drop of their [`WriteTicket`].
    writes: AtomicUsize,
}

/// A write in progress on this node; the leader's hold waits for it.
pub struct WriteTicket<'a>(&'a Holds);

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        self.0.writes.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Cluster {
    /// The target of the transfer holding this node, if one does.
    pub fn held_for(&self) -> Option<NodeId> {
        let h = &self.holds;
        (self.clock.mono_ms() < h.until.load(Ordering::SeqCst))
            .then(|| h.target.load(Ordering::SeqCst))
    }

    /// Registers a write, unless a transfer holds this node.
    pub fn try_begin_write(&self) -> Option<WriteTicket<'_>> {
        let h = &self.holds;
        // Counted first, the hold looked at second: a leader's hold, which is set first and
        // counts second, either sees this write or is seen by it.
        h.writes.fetch_add(1, Ordering::SeqCst);
        let ticket = WriteTicket(h);
        self.held_for().is_none().then_some(ticket)
    }

    /// Registers a write, after any transfer holding this node is over (at most [`HOLD_MAX`]).
    pub async fn begin_write(&self) -> WriteTicket<'_> {
        loop {
            if let Some(t) = self.try_begin_write() {
                return t;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Applies a hold (see the module documentation). On the leader, answers once its writes
    /// in progress are done and `target` has the whole log, or `false` if that takes longer
    /// than [`CATCH_UP`].
    pub async fn hold(&self, req: &Hold) -> bool {
        let ms = req.ms.min(HOLD_MAX.as_millis() as u64);
        let h = &self.holds;
        h.target.store(req.target, Ordering::SeqCst);
        h.until.store(self.clock.mono_ms() + ms, Ordering::SeqCst);
        if ms == 0 {
            tracing::info!(target = req.target, "leadership transfer hold released");
            return true;
        }
        tracing::info!(target = req.target, ms, "held for a leadership transfer");
        if !self.is_leader() {
            return true;
        }
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let writes = h.writes.load(Ordering::SeqCst);
            let caught_up = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let last = m.last_log_index;
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&req.target).cloned())
                    .flatten()
                    .map(|l| l.index);
                last.is_none() || matched == last
            };
            if writes == 0 && caught_up {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    target = req.target,
                    writes,
                    caught_up,
                    "leadership transfer: the target did not catch up in time"
                );
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Holds (or with `ms` 0 releases) voter `id`.
    async fn hold_voter(&self, id: NodeId, addr: &str, req: &Hold) -> Result<bool, PeerError> {
        if id == self.id {
            return Ok(self.hold(req).await);
        }
        self.call(id, addr, "/cluster/hold", req).await
    }

    /// Moves the leadership to voter `id` (see the module documentation) and answers once
    /// this node sees it lead.
    pub async fn transfer_leadership(&self, id: NodeId) -> Result<(), ClusterError> {
        let voters = self.voters();
        let Some((_, target_addr)) = voters.iter().find(|(i, _)| *i == id).cloned() else {
            return Err(ClusterError::Invalid(format!("node {id} is not a voter")));
        };
        let Some(leader) = self.leader() else {
            return Err(ClusterError::NoLeader);
        };
        if leader == id {
            return Ok(());
        }
        let hold = |ms: u64| {
            let req = Hold { target: id, ms };
            let voters = &voters;
            async move {
                let answers = voters
                    .iter()
                    .map(|(v, addr)| async { (*v, self.hold_voter(*v, addr, &req).await) });
                futures_util::future::join_all(answers).await
            }
        };
        let release = || async {
            for (v, r) in hold(0).await {
                if let Err(e) = r {
                    tracing::warn!(node = v, error = %e, "leadership transfer: release failed");
                }
            }
        };
        let mut leader_ready = false;
        for (v, r) in hold(HOLD.as_millis() as u64).await {
            match r {
                Ok(ready) if v == leader => leader_ready = ready,
                Ok(_) => {}
                // A leader of a version without holds (during a rolling upgrade): its target
                // campaigns unprepared, as with that version.
                Err(PeerError::Remote { status: 404, .. }) if v == leader => leader_ready = true,
                // A voter that cannot be reached cannot campaign either, in all likelihood.
                Err(e) => tracing::warn!(node = v, error = %e, "leadership transfer: hold failed"),
            }
        }
        if !leader_ready {
            release().await;
            return Err(ClusterError::Transfer(format!(
                "node {id} could not be brought up to date with the leader (node {leader}) in time; the leadership did not move, try again"
            )));
        }
        tracing::info!(from = leader, to = id, "moving the leadership");
        let campaign = if id == self.id {
            self.raft.trigger().elect().await.is_ok()
        } else {
            self.call::<_, bool>(id, &target_addr, "/cluster/elect", &())
                .await
                .unwrap_or(false)
        };
        let deadline = Instant::now() + TRANSFER_WAIT;
        while campaign && self.leader() != Some(id) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        release().await;
        match self.leader() {
            Some(l) if l == id => {
                tracing::info!(node = id, "leadership moved");
                Ok(())
            }
            now => Err(ClusterError::Transfer(format!(
                "node {id} did not take over the leadership within {} s (leader now: {}); try again",
                TRANSFER_WAIT.as_secs(),
                now.map_or("none".to_owned(), |l| format!("node {l}"))
            ))),
        }
    }
}
