//! Membership changes, on the leader: adding a learner or voter, removing a member (its id is
//! retired first, so every member refuses it from then on), and taking a snapshot. Moving the
//! leadership is in `transfer`.

use crate::{Cluster, ClusterError};
use kes_raft::types::NodeId;
use kes_state::Command;
use std::collections::BTreeSet;

impl Cluster {
    /// Adds node `id` at `address` as a learner, then as a voter if `voter`.
    pub async fn add_member(
        &self,
        id: NodeId,
        address: String,
        voter: bool,
    ) -> Result<(), ClusterError> {
        if self.state.read(|s| s.is_retired(id)) {
            return Err(ClusterError::Invalid(format!(
                "node {id} was removed from the group and its id cannot be used again: give the node a new id (cluster.node_id, and a certificate for kes-node-<new id>)"
            )));
        }
        if address.parse::<std::net::SocketAddr>().is_err() && !address.contains(':') {
            return Err(ClusterError::Invalid(format!(
                "invalid address '{address}': want host:port"
            )));
        }
        let node = openraft::BasicNode { addr: address };
        self.raft.add_learner(id, node, true).await.map_err(|e| {
            tracing::warn!(node = id, error = %e, "adding a learner failed");
            ClusterError::NoLeader
        })?;
        if voter {
            let mut voters: BTreeSet<NodeId> = self
                .members()
                .into_iter()
                .filter(|(_, _, v)| *v)
                .map(|(i, _, _)| i)
                .collect();
            voters.insert(id);
            self.raft
                .change_membership(voters, true)
                .await
                .map_err(|e| {
                    tracing::warn!(node = id, error = %e, "promoting to voter failed");
                    ClusterError::NoLeader
                })?;
        }
        tracing::info!(node = id, "member added");
        Ok(())
    }

    /// Removes member `id`.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ClusterError> {
        let members = self.members();
        if !members.iter().any(|(i, _, _)| *i == id) {
            return Err(ClusterError::Invalid(format!("node {id} is not a member")));
        }
        let voters: BTreeSet<NodeId> = members
            .iter()
            .filter(|(i, _, v)| *v && *i != id)
            .map(|(i, _, _)| *i)
            .collect();
        if voters.is_empty() {
            return Err(ClusterError::Invalid("cannot remove the last voter".into()));
        }
        // Retired first: from this commit on, every member refuses the id on the node port,
        // even while the membership change below is still in flight or fails (the operator
        // then repeats the removal).
        self.propose(Command::RetireNode { id }).await?;
        let is_voter = members.iter().any(|(i, _, v)| *i == id && *v);
        let change = if is_voter {
            openraft::ChangeMembers::ReplaceAllVoters(voters)
        } else {
            openraft::ChangeMembers::RemoveNodes([id].into_iter().collect())
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| {
                tracing::warn!(node = id, error = %e, "removing a member failed");
                ClusterError::NoLeader
            })?;
        tracing::info!(node = id, "member removed");
        Ok(())
    }

    /// Takes a snapshot of the state now (which also compacts the log).
    pub async fn snapshot(&self) -> Result<(), ClusterError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|_| ClusterError::NoLeader)
    }
}
