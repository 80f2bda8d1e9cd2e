//! Admin-only extensions beyond KES: changing policies and assignments (replicated through
//! Raft), and operating the cluster (status, membership, leadership, snapshots, metrics).

use crate::api::{empty, json};
use crate::error::ApiError;
use crate::routes::RouteId;
use crate::App;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue};
use kes_state::{Command, Outcome, PolicyDef};
use kes_types::valid_name;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Default, Deserialize)]
struct WritePolicy {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AssignPolicy {
    identity: String,
}

#[derive(Debug, Deserialize)]
struct AddNode {
    address: String,
    #[serde(default = "yes")]
    voter: bool,
}

fn yes() -> bool {
    true
}

/// One member in `/v1/cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: u64,
    pub address: String,
    pub voter: bool,
    /// Highest log index known replicated to it (leader's view), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// How far it is behind the leader's last log index, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// `/v1/cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: u64,
    pub sealed: bool,
    pub serving: bool,
    pub cut_off: bool,
    pub keys: usize,
    pub tombstones: usize,
    pub members: Vec<MemberStatus>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

fn node_id(resource: &str) -> Result<u64, ApiError> {
    resource
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("invalid node id '{resource}': want a number >= 1"))
        })
}

fn outcome(o: Outcome) -> Result<Response, ApiError> {
    match o {
        Outcome::Applied | Outcome::Duplicate => Ok(empty()),
        Outcome::PolicyNotFound => Err(ApiError::PolicyNotFound),
        Outcome::IdentityNotFound => Err(ApiError::IdentityNotFound),
        Outcome::IdentityIsAdmin => Err(ApiError::BadRequest(
            "the admin identity cannot be assigned to a policy".into(),
        )),
        Outcome::NotInitialized => Err(ApiError::Sealed),
        other => Err(ApiError::BadRequest(format!("not applied: {other:?}"))),
    }
}

pub fn status(app: &App) -> ClusterStatus {
    let c = &app.cluster;
    let m = c.raft.metrics().borrow().clone();
    let last = m.last_log_index;
    let repl = m.replication.clone().unwrap_or_default();
    let leading = m.current_leader == Some(c.id);
    let members = c
        .members()
        .into_iter()
        .map(|(id, address, voter)| {
            let matched = repl.get(&id).and_then(|l| l.map(|l| l.index));
            let matched = if id == c.id { last } else { matched };
            MemberStatus {
                id,
                address,
                voter,
                matched,
                lag: match (last, matched) {
                    (Some(l), Some(m)) if leading => Some(l.saturating_sub(m)),
                    _ => None,
                },
            }
        })
        .collect();
    let (keys, tombstones) = c.state.read(|s| (s.key_count(), s.tombstone_count()));
    ClusterStatus {
        node_id: c.id,
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: last,
        commit_index: m.last_applied.map(|l| l.index),
        applied_index: c.applied_index(),
        sealed: c.is_sealed(),
        serving: c.serving() == crate::cluster::Serving::Ok,
        cut_off: c.is_cut_off(),
        keys,
        tombstones,
        members,
    }
}

/// Cluster metrics in Prometheus text format, on their own endpoint so the KES one keeps KES's
/// families exactly.
pub fn metrics(app: &App) -> String {
    let st = status(app);
    let mut out = String::new();
    let mut g = |name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    g(
        "kes_cluster_node_id",
        "This node's member id.",
        st.node_id as f64,
    );
    g(
        "kes_cluster_is_leader",
        "1 if this node is the leader.",
        f64::from(u8::from(st.leader == Some(st.node_id))),
    );
    g("kes_cluster_term", "Current Raft term.", st.term as f64);
    g(
        "kes_cluster_applied_index",
        "Last log index applied to the state.",
        st.applied_index as f64,
    );
    g(
        "kes_cluster_sealed",
        "1 while the node lacks the cluster cache key.",
        f64::from(u8::from(st.sealed)),
    );
    g(
        "kes_cluster_cut_off",
        "1 while the node has no contact with the majority.",
        f64::from(u8::from(st.cut_off)),
    );
    g(
        "kes_cluster_serving",
        "1 if the node serves crypto operations.",
        f64::from(u8::from(st.serving)),
    );
    g(
        "kes_cluster_cached_keys",
        "Keys in the replicated cache.",
        st.keys as f64,
    );
    g(
        "kes_cluster_tombstones",
        "Tombstones in the replicated cache.",
        st.tombstones as f64,
    );
    g(
        "kes_cluster_members",
        "Members of the group.",
        st.members.len() as f64,
    );
    let _ = writeln!(
        out,
        "# HELP kes_cluster_replication_lag Log entries a member is behind the leader (leader only).\n# TYPE kes_cluster_replication_lag gauge"
    );
    for m in &st.members {
        if let Some(lag) = m.lag {
            let _ = writeln!(
                out,
                "kes_cluster_replication_lag{{member=\"{}\"}} {lag}",
                m.id
            );
        }
    }
    app.cluster.kms.render(&mut out);
    kes_tls::check::render_expiry(&mut out);
    out
}

/// `/v1/cluster/backup`: the applied state at or after the leader's read index, so every write
/// acknowledged before the request is in it, as a backup file. Any member answers: the leader
/// vouches for the index, and a member's applied state at that index is the leader's.
async fn backup(app: &App) -> Result<Response, ApiError> {
    let c = &app.cluster;
    let index = c.read_index().await?;
    c.wait_applied(index).await?;
    let state = c.state.read(|s| s.is_initialized().then(|| s.clone()));
    let Some(state) = state else {
        return Err(ApiError::Sealed);
    };
    let backup = kes_state::Backup {
        taken_at_ms: crate::cluster::now_ms(),
        node_id: c.id,
        read_index: index,
        state,
    };
    // Encoding a large state and its checksum is CPU work: off the runtime's workers.
    let bytes = tokio::task::spawn_blocking(move || backup.encode())
        .await
        .map_err(|_| ApiError::Internal("backup task failed"))?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot encode a backup");
            ApiError::Internal("cannot encode the backup")
        })?;
    tracing::info!(read_index = index, bytes = bytes.len(), "backup taken");
    let mut resp = Response::new(Body::from(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

pub async fn handle(
    app: &App,
    route: RouteId,
    resource: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = &app.cluster;
    let at_ms = crate::cluster::now_ms();
    match route {
        RouteId::PolicyWrite => {
            if !valid_name(resource) {
                return Err(ApiError::InvalidPolicyName(resource.to_owned()));
            }
            let p: WritePolicy = parse(&body)?;
            let cmd = Command::SetPolicy {
                name: resource.to_owned(),
                def: PolicyDef {
                    allow: p.allow,
                    deny: p.deny,
                },
                at_ms,
                by: app.admin.clone(),
            };
            outcome(c.propose(cmd).await?.1)
        }
        RouteId::PolicyAssign => {
            if !valid_name(resource) {
                return Err(ApiError::InvalidPolicyName(resource.to_owned()));
            }
            let a: AssignPolicy = parse(&body)?;
            if a.identity.is_empty() || a.identity.len() > 1024 {
                return Err(ApiError::InvalidIdentity(a.identity));
            }
            if app.access.load().is_admin(&a.identity) {
                return outcome(Outcome::IdentityIsAdmin);
            }
            let cmd = Command::Assign {
                identity: a.identity,
                policy: resource.to_owned(),
            };
            outcome(c.propose(cmd).await?.1)
        }
        RouteId::PolicyDelete => {
            if !valid_name(resource) {
                return Err(ApiError::InvalidPolicyName(resource.to_owned()));
            }
            outcome(
                c.propose(Command::DeletePolicy {
                    name: resource.to_owned(),
                })
                .await?
                .1,
            )
        }
        RouteId::IdentityDelete => {
            if resource.is_empty() || resource.len() > 1024 {
                return Err(ApiError::InvalidIdentity(resource.to_owned()));
            }
            outcome(
                c.propose(Command::Unassign {
                    identity: resource.to_owned(),
                })
                .await?
                .1,
            )
        }
        RouteId::ClusterStatus => Ok(json(&status(app))),
        RouteId::ClusterMetrics => {
            let mut resp = Response::new(Body::from(metrics(app)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        RouteId::ClusterAdd => {
            let id = node_id(resource)?;
            let a: AddNode = parse(&body)?;
            if c.state.read(|s| s.is_retired(id)) {
                return Err(ApiError::BadRequest(format!(
                    "node {id} was removed from the group and its id cannot be used again: give the node a new id (cluster.node_id, and a certificate for kes-node-<new id>)"
                )));
            }
            if a.address.parse::<std::net::SocketAddr>().is_err() && !a.address.contains(':') {
                return Err(ApiError::BadRequest(format!(
                    "invalid address '{}': want host:port",
                    a.address
                )));
            }
            let node = openraft::BasicNode { addr: a.address };
            c.raft.add_learner(id, node, true).await.map_err(|e| {
                tracing::warn!(node = id, error = %e, "adding a learner failed");
                ApiError::ClusterUnavailable
            })?;
            if a.voter {
                let mut voters: std::collections::BTreeSet<u64> = c
                    .members()
                    .into_iter()
                    .filter(|(_, _, v)| *v)
                    .map(|(i, _, _)| i)
                    .collect();
                voters.insert(id);
                c.raft.change_membership(voters, true).await.map_err(|e| {
                    tracing::warn!(node = id, error = %e, "promoting to voter failed");
                    ApiError::ClusterUnavailable
                })?;
            }
            tracing::info!(node = id, "member added");
            Ok(empty())
        }
        RouteId::ClusterRemove => {
            let id = node_id(resource)?;
            let members = c.members();
            if !members.iter().any(|(i, _, _)| *i == id) {
                return Err(ApiError::BadRequest(format!("node {id} is not a member")));
            }
            let voters: std::collections::BTreeSet<u64> = members
                .iter()
                .filter(|(i, _, v)| *v && *i != id)
                .map(|(i, _, _)| *i)
                .collect();
            if voters.is_empty() {
                return Err(ApiError::BadRequest("cannot remove the last voter".into()));
            }
            // Retired first: from this commit on, every member refuses the id on the node
            // port, even while the membership change below is still in flight or fails (the
            // operator then repeats the removal).
            c.propose(Command::RetireNode { id }).await?;
            let is_voter = members.iter().any(|(i, _, v)| *i == id && *v);
            let change = if is_voter {
                openraft::ChangeMembers::ReplaceAllVoters(voters)
            } else {
                openraft::ChangeMembers::RemoveNodes([id].into_iter().collect())
            };
            c.raft.change_membership(change, false).await.map_err(|e| {
                tracing::warn!(node = id, error = %e, "removing a member failed");
                ApiError::ClusterUnavailable
            })?;
            tracing::info!(node = id, "member removed");
            Ok(empty())
        }
        RouteId::ClusterLeader => {
            let id = node_id(resource)?;
            let members = c.members();
            let Some((_, addr, true)) = members.iter().find(|(i, _, _)| *i == id).cloned() else {
                return Err(ApiError::BadRequest(format!("node {id} is not a voter")));
            };
            // openraft 0.9 has no leadership transfer: the target starts an election, which it
            // wins when its log is up to date.
            if id == c.id {
                c.raft
                    .trigger()
                    .elect()
                    .await
                    .map_err(|_| ApiError::ClusterUnavailable)?;
            } else {
                let peers = c.peers.as_ref().ok_or(ApiError::ClusterUnavailable)?;
                let _: bool = peers
                    .call(
                        id,
                        &addr,
                        "/cluster/elect",
                        &(),
                        crate::cluster::net::PEER_TIMEOUT,
                    )
                    .await?;
            }
            Ok(empty())
        }
        RouteId::ClusterBackup => backup(app).await,
        RouteId::ClusterSnapshot => {
            c.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|_| ApiError::ClusterUnavailable)?;
            Ok(empty())
        }
        _ => Err(ApiError::NoRoute),
    }
}
