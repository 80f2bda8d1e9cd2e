//! Elections with a pre-vote.
//!
//! openraft 0.9 campaigns whenever its election timer fires, and every campaign raises the
//! candidate's term. A node that stops hearing the leader while the others still do (a
//! partition, a one-way link loss, a cut ring link) therefore keeps raising its term; when the
//! link heals, it rejects the leader's appends with its higher term, the leader steps down, and
//! until a new leader is elected the rejoined node applies nothing and keeps serving keys that
//! were deleted meanwhile, although it is connected to the majority again.
//!
//! So openraft's timer is off (`enable_elect: false`) and this driver decides when to campaign:
//! after [`LEASE`] plus a random election timeout without hearing a leader, it asks the other
//! voters first. A voter agrees only if it is not the leader, has not heard a leader within
//! [`LEASE`] either, and the candidate's log is at least as recent as its own, which are the
//! conditions under which the real vote would succeed. Only with a majority (itself included)
//! does the node start the real election. The pre-vote changes no state, so a node that cannot
//! win an election cannot disturb the group, and once its link heals the leader's next
//! heartbeat brings it up to date.

use crate::Cluster;
use kes_raft::types::{LogId, NodeId};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a voter must not have heard a leader before it agrees to a pre-vote; openraft's
/// leader lease (`election_timeout_max`), inside which it would refuse the real vote anyway.
pub const LEASE: Duration = Duration::from_millis(crate::ELECTION_TIMEOUT_MAX);

/// How often the driver looks at the time since the leader was last heard.
const TICK: Duration = Duration::from_millis(50);

/// Longest wait for a peer's pre-vote answer.
const PREVOTE_TIMEOUT: Duration = Duration::from_millis(500);

/// Shortest time between two elections of the only voter.
const SINGLE_VOTER_RETRY: Duration = Duration::from_millis(500);

/// A pre-vote request: the candidate's last log id.
#[derive(Debug, Serialize, Deserialize)]
pub struct PreVote {
    pub last_log: Option<LogId>,
}

impl Cluster {
    /// A random election timeout past the lease, as openraft would draw it, from the node's
    /// random source (seeded in the simulation, see [`Cluster::seed_rng`]).
    fn draw_timeout(&self) -> Duration {
        let ms = self
            .rng
            .lock()
            .gen_range(crate::ELECTION_TIMEOUT_MIN..crate::ELECTION_TIMEOUT_MAX);
        LEASE + Duration::from_millis(ms)
    }

    /// This node's answer to `candidate`'s pre-vote.
    pub fn grant_prevote(&self, candidate: NodeId, req: &PreVote) -> bool {
        if self.is_leader() {
            return false;
        }
        let heard = self.since_contact();
        if heard < LEASE {
            tracing::debug!(
                candidate,
                heard_ms = heard.as_millis() as u64,
                "pre-vote refused: the leader was heard recently"
            );
            return false;
        }
        match self.log.last_log_id() {
            Ok(mine) => {
                let granted = req.last_log >= mine;
                if !granted {
                    tracing::debug!(candidate, "pre-vote refused: the candidate's log is behind");
                }
                granted
            }
            Err(e) => {
                tracing::warn!(error = %e, "pre-vote refused: cannot read the last log id");
                false
            }
        }
    }

    /// Whether a majority of the voters (this node included) agree to this node's campaign.
    async fn prevote(&self, voters: &[(NodeId, String)]) -> bool {
        let Some(peers) = &self.peers else {
            return false;
        };
        let last_log = match self.log.last_log_id() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no pre-vote: cannot read the last log id");
                return false;
            }
        };
        let req = PreVote { last_log };
        let asks = voters
            .iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, addr)| {
                let req = &req;
                async move {
                    match peers
                        .call::<_, bool>(*id, addr, "/cluster/prevote", req, PREVOTE_TIMEOUT)
                        .await
                    {
                        Ok(granted) => granted,
                        // A peer of a version without pre-votes: it campaigns by its own timer,
                        // so refusing it ours would only cost availability.
                        Err(crate::peer::client::PeerError::Remote { status: 404, .. }) => true,
                        Err(_) => false,
                    }
                }
            });
        let granted = 1 + futures_util::future::join_all(asks)
            .await
            .into_iter()
            .filter(|g| *g)
            .count();
        let needed = voters.len() / 2 + 1;
        tracing::debug!(granted, needed, "pre-vote");
        granted >= needed
    }

    /// Starts elections after a successful pre-vote, until `cancel` fires.
    pub async fn run_elections(
        self: Arc<Self>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let mut timeout = self.draw_timeout();
        let mut last_attempt: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(TICK) => {}
            }
            if self.is_leader() {
                continue;
            }
            // A leadership transfer to another node is under way (`transfer`).
            if self.held_for().is_some_and(|target| target != self.id) {
                continue;
            }
            let voters = self.voters();
            if !voters.iter().any(|(id, _)| *id == self.id) {
                // A learner, or a node not (yet, or any more) in the group.
                continue;
            }
            let since_attempt = last_attempt.map_or(Duration::MAX, |t| t.elapsed());
            if voters.len() == 1 {
                // The only voter needs nobody's agreement and should not wait.
                if since_attempt >= SINGLE_VOTER_RETRY {
                    last_attempt = Some(Instant::now());
                    let _ = self.raft.trigger().elect().await;
                }
                continue;
            }
            if self.since_contact().min(since_attempt) < timeout {
                continue;
            }
            last_attempt = Some(Instant::now());
            timeout = self.draw_timeout();
            if !self.prevote(&voters).await {
                continue;
            }
            // The pre-vote took time: a leader may have been heard meanwhile.
            if self.is_leader() || self.since_contact() < LEASE {
                continue;
            }
            tracing::info!("no leader heard and a majority agrees: starting an election");
            if let Err(e) = self.raft.trigger().elect().await {
                tracing::warn!(error = %e, "election not started");
            }
        }
    }
}
