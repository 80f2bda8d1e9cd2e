//! Admin-only extensions beyond KES: changing policies and assignments (replicated through
//! Raft), and operating the cluster (status, membership, leadership, snapshots, metrics).

use crate::api::{empty, json};
use crate::error::ApiError;
use crate::routes::RouteId;
use crate::App;
use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue};
pub use kes_types::wire::{ClusterStatus, MemberStatus};
use std::fmt::Write;

pub(crate) fn node_id(resource: &str) -> Result<u64, ApiError> {
    resource
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("invalid node id '{resource}': want a number >= 1"))
        })
}

pub fn status(app: &App) -> ClusterStatus {
    let c = &app.cluster;
    let m = c.raft_metrics();
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
        serving: c.serving() == kes_cluster::Serving::Ok,
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
        taken_at_ms: c.clock().wall_ms(),
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

pub async fn handle(app: &App, route: RouteId, resource: &str) -> Result<Response, ApiError> {
    let c = &app.cluster;
    match route {
        RouteId::ClusterStatus => Ok(json(&status(app))),
        RouteId::ClusterMetrics => {
            let mut resp = Response::new(Body::from(metrics(app)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        RouteId::ClusterLeader => {
            c.transfer_leadership(node_id(resource)?).await?;
            Ok(empty())
        }
        RouteId::ClusterBackup => backup(app).await,
        RouteId::ClusterSnapshot => {
            c.snapshot().await?;
            Ok(empty())
        }
        _ => Err(ApiError::NoRoute),
    }
}
