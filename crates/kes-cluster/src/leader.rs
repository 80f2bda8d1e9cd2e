//! Everything that must happen on the leader, from any node: committing a proposal, getting a
//! read index, running a forwarded write. One router finds the leader and one retry policy
//! applies to all three: while no leader is known, or the known one cannot be reached with
//! nothing sent, or it answers that it no longer leads, wait briefly and look again, until
//! the call's deadline. An answer, or a failure after the request may have reached the leader,
//! ends the call (a write is never sent twice).

use crate::peer::client::{PeerError, PEER_TIMEOUT};
use crate::peer::wire::{Forward, ForwardResult, ProposeResult, ReadIndexResult};
use crate::{Cluster, ClusterError};
use kes_raft::types::NodeId;
use kes_state::{Command, Outcome};
use std::time::Duration;
use tokio::time::Instant;

/// How long a proposal or a read index looks for a leader.
const FIND_LEADER: Duration = Duration::from_secs(1);

/// How long a forwarded write looks for a leader when none is known or the known one cannot be
/// reached (a leader that just died): an election with its pre-vote, with room to spare.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Pause between two looks for the leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Longest a forwarded write may take on the leader: it waits for the keystore and a Raft
/// commit there.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);

/// The outcome of one attempt at the leader.
enum Attempt<T> {
    Done(T),
    /// Nothing happened: look for the leader again.
    Again,
}

/// Where to send a call now.
enum Target {
    Here,
    Peer(NodeId, String),
    Unknown,
}

/// The outcome of [`Cluster::forward`].
#[derive(Debug)]
pub enum Forwarded {
    /// The leader's answer.
    Answered(ForwardResult),
    /// This node leads now: run the write here.
    RunHere,
}

impl Cluster {
    fn target(&self) -> Target {
        match self.leader() {
            Some(l) if l == self.id => Target::Here,
            Some(l) => match (&self.peers, self.node_addr(l)) {
                (Some(_), Some(addr)) => Target::Peer(l, addr),
                _ => Target::Unknown,
            },
            None => Target::Unknown,
        }
    }

    /// The retry policy: runs `attempt` against the current leader until it is done or
    /// `wait` has passed.
    async fn at_leader<T, F, Fut>(&self, wait: Duration, mut attempt: F) -> Result<T, ClusterError>
    where
        F: FnMut(Target) -> Fut,
        Fut: std::future::Future<Output = Result<Attempt<T>, ClusterError>>,
    {
        let mut deadline = Instant::now() + wait;
        loop {
            if let Attempt::Done(v) = attempt(self.target()).await? {
                return Ok(v);
            }
            // While a leadership transfer holds this node, the leader refuses new writes on
            // purpose: the wait starts when the hold ends (it ends by itself).
            if self.held_for().is_some() {
                deadline = deadline.max(Instant::now() + wait);
            }
            if Instant::now() + RETRY_PAUSE > deadline {
                return Err(ClusterError::NoLeader);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Commits `cmd` through the leader, wherever it is.
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Outcome), ClusterError> {
        let r = self
            .at_leader(FIND_LEADER, |target| {
                let cmd = cmd.clone();
                async move {
                    match target {
                        Target::Here => match self.raft.client_write(cmd).await {
                            Ok(r) => Ok(Attempt::Done((r.log_id.index, r.data, false))),
                            Err(e) => {
                                tracing::warn!(error = %e, "proposal failed");
                                Err(ClusterError::NotCommitted(e.to_string()))
                            }
                        },
                        Target::Peer(l, addr) => {
                            match self
                                .call::<_, ProposeResult>(l, &addr, "/cluster/propose", &cmd)
                                .await
                            {
                                Ok(ProposeResult::Applied { index, outcome }) => {
                                    Ok(Attempt::Done((index, outcome, true)))
                                }
                                Ok(ProposeResult::NotLeader { .. }) => Ok(Attempt::Again),
                                Ok(ProposeResult::Failed(m)) => {
                                    tracing::warn!(error = %m, "proposal failed on the leader");
                                    Err(ClusterError::NotCommitted(m))
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "proposal could not reach the leader");
                                    Ok(Attempt::Again)
                                }
                            }
                        }
                        Target::Unknown => Ok(Attempt::Again),
                    }
                }
            })
            .await?;
        let (index, outcome, remote) = r;
        if remote {
            self.wait_applied(index).await?;
        }
        Ok((index, outcome))
    }

    /// Waits until the local state has applied `index` (bounded).
    pub async fn wait_applied(&self, index: u64) -> Result<(), ClusterError> {
        let mut rx = self.state.applied_watch();
        let wait = async {
            while *rx.borrow_and_update() < index {
                if rx.changed().await.is_err() {
                    return Err(ClusterError::Internal("the state machine stopped"));
                }
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or(Err(ClusterError::NoLeader))
    }

    /// The leader's read index, for linearizable reads.
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        self.at_leader(FIND_LEADER, |target| async move {
            match target {
                Target::Here => match self.raft.get_read_log_id().await {
                    Ok((read, _)) => Ok(Attempt::Done(read.map(|l| l.index).unwrap_or(0))),
                    Err(_) => Err(ClusterError::NoLeader),
                },
                Target::Peer(l, addr) => {
                    match self
                        .call::<_, ReadIndexResult>(l, &addr, "/cluster/read-index", &())
                        .await
                    {
                        Ok(ReadIndexResult::Index(i)) => Ok(Attempt::Done(i)),
                        Ok(ReadIndexResult::NotLeader { .. }) | Err(_) => Ok(Attempt::Again),
                    }
                }
                Target::Unknown => Ok(Attempt::Again),
            }
        })
        .await
    }

    /// Sends a write to the leader and returns its answer. While there is no leader, or the
    /// leader refuses connections (the write surely did not reach it), waits up to
    /// [`LEADER_WAIT`] for one, so a write sent during a failover completes instead of
    /// failing. [`Forwarded::RunHere`]: this node became the leader meanwhile.
    pub async fn forward(&self, write: &Forward) -> Result<Forwarded, ClusterError> {
        self.at_leader(LEADER_WAIT, |target| async move {
            match target {
                Target::Here => Ok(Attempt::Done(Forwarded::RunHere)),
                Target::Peer(l, addr) => {
                    let Some(peers) = &self.peers else {
                        return Err(ClusterError::NoLeader);
                    };
                    match peers
                        .call::<_, ForwardResult>(l, &addr, "/cluster/write", write, FORWARD_TIMEOUT)
                        .await
                    {
                        Ok(ForwardResult::NotLeader { .. }) => Ok(Attempt::Again),
                        Ok(r) => Ok(Attempt::Done(Forwarded::Answered(r))),
                        Err(e) if e.nothing_sent() => {
                            tracing::debug!(error = %e, "leader unreachable: waiting for a new one");
                            Ok(Attempt::Again)
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "forwarded write failed");
                            Err(ClusterError::NoLeader)
                        }
                    }
                }
                Target::Unknown => Ok(Attempt::Again),
            }
        })
        .await
    }

    /// One call to a peer with the usual timeout.
    pub(crate) async fn call<Req, Resp>(
        &self,
        id: NodeId,
        addr: &str,
        path: &str,
        req: &Req,
    ) -> Result<Resp, PeerError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        match &self.peers {
            Some(peers) => peers.call(id, addr, path, req, PEER_TIMEOUT).await,
            None => Err(PeerError::NotConnected {
                id,
                message: "this node has no peers".into(),
            }),
        }
    }
}
