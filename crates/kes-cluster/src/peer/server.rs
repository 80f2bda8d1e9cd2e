//! The node-to-node listener: Raft RPCs, forwarded client requests, fill proposals, read
//! indexes and the cache-key hand-over.
//!
//! Only peers with a cluster-CA certificate bound to one member id get a connection (see
//! `tls`); every request is then checked against the current membership, as the node applies
//! it: an id that is not a member (never was, or was removed: removed ids stay refused, see
//! `Command::RetireNode`) gets `403` and changes nothing. Each route also checks what the
//! member may ask: Raft's replication and snapshots come only from the voter whose leadership
//! the request carries; votes and elections only from voters; proposals only for the cache
//! commands a follower makes (fills, confirmations, evictions, tombstones of keys the
//! keystore no longer has), with their times bounded by this node's clock; forwarded writes
//! are authorised again for the identity they name (by the server's [`WriteHandler`]).
//!
//! A request without this node's [`PROTOCOL_VERSION`] is refused before anything else.

use super::wire::{Forward, ProposeResult, ReadIndexResult};
use super::{WriteHandler, PROTOCOL_HEADER, PROTOCOL_VERSION};
use crate::Cluster;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use kes_raft::types::{NodeId, TypeConfig};
use kes_state::Command;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;

type Response = http::Response<Full<Bytes>>;

/// A route's answer: its status and msgpack body (a plain-text message when not 200).
type Reply = (StatusCode, Bytes);

fn answer<T: Serialize>(value: &T) -> Reply {
    match rmp_serde::to_vec_named(value) {
        Ok(b) => (StatusCode::OK, Bytes::from(b)),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn fail(status: StatusCode, message: &str) -> Reply {
    (status, Bytes::from(message.to_owned()))
}

fn response((status, body): Reply) -> Response {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    rmp_serde::from_slice(body).map_err(|e| fail(StatusCode::BAD_REQUEST, &e.to_string()))
}

/// Decodes `data` as each request body the node port takes, the way its routes do, and as a
/// peer certificate: the surface a member (or anyone holding a cluster certificate) reaches.
/// For the fuzz target; every outcome other than a panic or a hang is fine.
pub fn decode_any(data: &[u8]) {
    let _ = rmp_serde::from_slice::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = rmp_serde::from_slice::<VoteRequest<NodeId>>(data);
    let _ = rmp_serde::from_slice::<InstallSnapshotRequest<TypeConfig>>(data);
    let _ = rmp_serde::from_slice::<Command>(data);
    let _ = rmp_serde::from_slice::<Forward>(data);
    let _ = rmp_serde::from_slice::<crate::elect::PreVote>(data);
    let _ = kes_state::State::decode_snapshot(data);
    let cert = rustls::pki_types::CertificateDer::from(data);
    let _ = super::tls::peer_node_id(Some(std::slice::from_ref(&cert)));
}

/// The protocol version a request or answer carries (1: none, the first release).
pub fn protocol_of(headers: &http::HeaderMap) -> Option<u32> {
    match headers.get(PROTOCOL_HEADER) {
        None => Some(1),
        Some(v) => v.to_str().ok()?.trim().parse().ok(),
    }
}

/// Serves one peer connection with `builder` (the server's limits), running forwarded writes
/// through `writes`.
pub async fn serve_peer(
    cluster: Arc<Cluster>,
    writes: Arc<dyn WriteHandler>,
    builder: Builder<TokioExecutor>,
    stream: kes_tls::Served,
    addr: SocketAddr,
    conn: Arc<kes_tls::Conn>,
) {
    let Some(peer) = super::tls::peer_node_id(stream.tls().peer_certificates()) else {
        tracing::warn!(peer = %addr, "cluster connection refused: the certificate does not carry exactly one kes-node-<id> name");
        return;
    };
    let busy = Arc::clone(&conn);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let writes = Arc::clone(&writes);
        let cluster = Arc::clone(&cluster);
        let conn = Arc::clone(&busy);
        async move {
            let _busy = conn.request();
            let mut resp = handle(writes.as_ref(), &cluster, peer, addr, req).await;
            resp.headers_mut()
                .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let served = builder.serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.drive(served, |c| c.graceful_shutdown()).await {
        tracing::debug!(peer = %addr, error = %e, "cluster connection ended");
    }
}

/// What a peer id is to this node now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Voter,
    Learner,
    /// This node knows no membership yet (it was started to join and the leader has not
    /// reached it): only the leader's replication can make it a member, so only that is
    /// accepted, from any id the cluster CA vouches for.
    Joining,
    /// Not a member, or removed.
    Stranger,
}

/// The standing of `peer` in the membership this node has applied.
pub fn standing(cluster: &Cluster, peer: NodeId) -> Standing {
    if cluster.state.read(|s| s.is_retired(peer)) {
        return Standing::Stranger;
    }
    let members = cluster.members();
    if members.is_empty() {
        return Standing::Joining;
    }
    match members.iter().find(|(id, _, _)| *id == peer) {
        Some((_, _, true)) => Standing::Voter,
        Some((_, _, false)) => Standing::Learner,
        None => Standing::Stranger,
    }
}

/// Which standings a route accepts.
fn admitted(route: &str, standing: Standing) -> bool {
    use Standing::*;
    match route {
        // Replication, snapshots and votes come from voters (a joining node has no list yet).
        "/raft/append" | "/raft/snapshot" | "/raft/vote" => matches!(standing, Voter | Joining),
        "/cluster/prevote" | "/cluster/elect" | "/cluster/hold" => standing == Voter,
        "/cluster/propose"
        | "/cluster/read-index"
        | "/cluster/cck"
        | "/cluster/write"
        | "/cluster/applied" => matches!(standing, Voter | Learner),
        _ => false,
    }
}

fn refuse(peer: NodeId, addr: &(dyn Display + Sync), route: &str, why: &str) -> Reply {
    tracing::warn!(peer, addr = %addr, route, reason = why, "cluster request refused");
    fail(StatusCode::FORBIDDEN, why)
}

/// The hyper layer of the node port: the protocol version, the membership, the body under
/// its bound, then [`route`].
async fn handle(
    writes: &dyn WriteHandler,
    cluster: &Arc<Cluster>,
    peer: NodeId,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Response {
    let path = req.uri().path().to_owned();
    let version = protocol_of(req.headers());
    if version != Some(PROTOCOL_VERSION) {
        let why = format!(
            "peer protocol {} refused: this node speaks version {PROTOCOL_VERSION}; every member must run a release of the same protocol version (see docs/operations.md, \"Upgrades\")",
            version.map_or_else(|| "(unreadable)".to_owned(), |v| format!("version {v}")),
        );
        tracing::error!(peer, addr = %addr, route = %path, "{why}");
        return response(fail(StatusCode::BAD_REQUEST, &why));
    }
    let standing = match admit(cluster, peer, &addr, &path) {
        Ok(s) => s,
        Err(r) => return response(r),
    };
    let body = match Limited::new(req.into_body(), super::client::MAX_PEER_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return response(fail(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
    };
    response(route(writes, cluster, peer, &addr, standing, &path, &body).await)
}

/// Serves one request from peer `peer` that arrived by other means than the node port (the
/// simulated network): the same membership checks and routes, with the status and body of the
/// answer.
pub async fn serve_local(
    writes: &dyn WriteHandler,
    cluster: &Arc<Cluster>,
    peer: NodeId,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let addr = "(simulated)";
    let (status, bytes) = match admit(cluster, peer, &addr, path) {
        Ok(standing) => route(writes, cluster, peer, &addr, standing, path, body).await,
        Err(r) => r,
    };
    (status.as_u16(), bytes.to_vec())
}

/// The standing of `peer`, if it may use `path`.
fn admit(
    cluster: &Cluster,
    peer: NodeId,
    addr: &(dyn Display + Sync),
    path: &str,
) -> Result<Standing, Reply> {
    let standing = standing(cluster, peer);
    if !admitted(path, standing) {
        let why = match standing {
            Standing::Stranger => "not a member of this cluster",
            _ => "route not open to this member",
        };
        return Err(refuse(peer, addr, path, why));
    }
    Ok(standing)
}

/// The routes, for a peer admitted with `standing`.
async fn route(
    writes: &dyn WriteHandler,
    cluster: &Arc<Cluster>,
    peer: NodeId,
    addr: &(dyn Display + Sync),
    standing: Standing,
    path: &str,
    req: &[u8],
) -> Reply {
    match path {
        "/raft/append" => {
            let rpc: AppendEntriesRequest<TypeConfig> = match decode(req) {
                Ok(r) => r,
                Err(r) => return r,
            };
            if rpc.vote.leader_id().voted_for() != Some(peer) {
                return refuse(
                    peer,
                    addr,
                    path,
                    "append from a node that is not the sender",
                );
            }
            let r = cluster.raft.append_entries(rpc).await;
            if r.as_ref().is_ok_and(|r| r.is_success()) {
                cluster.touch_contact();
            }
            answer(&r)
        }
        "/raft/vote" => {
            let rpc: VoteRequest<NodeId> = match decode(req) {
                Ok(r) => r,
                Err(r) => return r,
            };
            if rpc.vote.leader_id().voted_for() != Some(peer) {
                return refuse(
                    peer,
                    addr,
                    path,
                    "vote request from a node that is not the sender",
                );
            }
            answer(&cluster.raft.vote(rpc).await)
        }
        "/raft/snapshot" => {
            let rpc: InstallSnapshotRequest<TypeConfig> = match decode(req) {
                Ok(r) => r,
                Err(r) => return r,
            };
            // Only a leader sends snapshots: the request carries the sender's committed
            // (leader) vote, which openraft then checks against its own.
            let known_leader = standing == Standing::Joining || cluster.leader() == Some(peer);
            if rpc.vote.leader_id().voted_for() != Some(peer)
                || !rpc.vote.is_committed()
                || !known_leader
            {
                return refuse(
                    peer,
                    addr,
                    path,
                    "snapshot from a node that is not the leader",
                );
            }
            if let Err(why) = cluster.snapshot_chunk(
                &rpc.meta.snapshot_id,
                rpc.offset,
                rpc.data.len() as u64,
                rpc.done,
            ) {
                return refuse(peer, addr, path, &why);
            }
            let done = rpc.done;
            let r = cluster.raft.install_snapshot(rpc).await;
            if done && r.is_ok() {
                tracing::info!(leader = peer, "snapshot installed from the leader");
                cluster.clear_decoded();
                cluster.touch_contact();
            }
            answer(&r)
        }
        "/cluster/propose" => {
            let cmd: Command = match decode(req) {
                Ok(r) => r,
                Err(r) => return r,
            };
            // A leadership transfer holds new writes: the member asks again.
            let ticket = cluster.try_begin_write();
            if !cluster.is_leader() || ticket.is_none() {
                return answer(&ProposeResult::NotLeader {
                    leader: cluster.leader(),
                });
            }
            let cmd = match cluster.admit_proposal(cmd).await {
                Ok(cmd) => cmd,
                Err(why) => return refuse(peer, addr, path, &why),
            };
            match cluster.raft.client_write(cmd).await {
                Ok(r) => answer(&ProposeResult::Applied {
                    index: r.log_id.index,
                    outcome: r.data,
                }),
                Err(e) => answer(&ProposeResult::Failed(e.to_string())),
            }
        }
        "/cluster/read-index" => {
            if !cluster.is_leader() {
                return answer(&ReadIndexResult::NotLeader {
                    leader: cluster.leader(),
                });
            }
            match cluster.raft.get_read_log_id().await {
                Ok((read, _)) => {
                    answer(&ReadIndexResult::Index(read.map(|l| l.index).unwrap_or(0)))
                }
                Err(_) => answer(&ReadIndexResult::NotLeader {
                    leader: cluster.leader(),
                }),
            }
        }
        "/cluster/cck" => {
            let bytes: Option<Vec<u8>> = cluster.cck().map(|c| c.bytes().to_vec());
            let resp = answer(&bytes);
            drop(bytes.map(zeroize::Zeroizing::new));
            resp
        }
        "/cluster/write" => {
            let write: Forward = match decode(req) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let ticket = cluster.try_begin_write();
            if !cluster.is_leader() || ticket.is_none() {
                return answer(&super::wire::ForwardResult::NotLeader {
                    leader: cluster.leader(),
                });
            }
            answer(&writes.forwarded(peer, write).await)
        }
        "/cluster/prevote" => {
            let req: crate::elect::PreVote = match decode(req) {
                Ok(r) => r,
                Err(r) => return r,
            };
            answer(&cluster.grant_prevote(peer, &req))
        }
        "/cluster/applied" => {
            let applied = cluster
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index);
            answer(&applied)
        }
        "/cluster/hold" => {
            let req: crate::transfer::Hold = match decode(req) {
                Ok(r) => r,
                Err(r) => return r,
            };
            answer(&cluster.hold(&req).await)
        }
        "/cluster/elect" => {
            tracing::info!(peer, "election requested by a member");
            let r = cluster.raft.trigger().elect().await;
            answer(&r.is_ok())
        }
        _ => fail(StatusCode::NOT_FOUND, "no such cluster route"),
    }
}
