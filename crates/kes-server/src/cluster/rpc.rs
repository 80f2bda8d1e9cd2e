//! The node-to-node listener: Raft RPCs, forwarded client requests, fill proposals, read
//! indexes and the cache-key hand-over. Only peers with a cluster-CA certificate bound to a
//! member id get here (see `tls`).

use super::{Cluster, ForwardRequest, ForwardResponse, ProposeResult, ReadIndexResult};
use crate::App;
use axum::body::Body;
use axum::response::Response;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kes_raft::types::{NodeId, TypeConfig};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

fn answer<T: Serialize>(value: &T) -> Response {
    match rmp_serde::to_vec_named(value) {
        Ok(b) => Response::new(Body::from(b)),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn fail(status: StatusCode, message: &str) -> Response {
    let mut r = Response::new(Body::from(message.to_owned()));
    *r.status_mut() = status;
    r
}

async fn decode<T: DeserializeOwned>(req: Request<Body>) -> Result<T, Response> {
    let bytes = Limited::new(req.into_body(), super::net::MAX_PEER_BODY)
        .collect()
        .await
        .map_err(|_| fail(StatusCode::PAYLOAD_TOO_LARGE, "body too large"))?
        .to_bytes();
    rmp_serde::from_slice(&bytes).map_err(|e| fail(StatusCode::BAD_REQUEST, &e.to_string()))
}

/// Serves one peer connection.
pub async fn serve_peer(
    app: Arc<App>,
    cluster: Arc<Cluster>,
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
) {
    let Some(peer) = super::tls::peer_node_id(stream.get_ref().1.peer_certificates()) else {
        tracing::warn!(peer = %addr, "cluster connection without a kes-node-<id> certificate");
        return;
    };
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = Arc::clone(&app);
        let cluster = Arc::clone(&cluster);
        async move {
            Ok::<_, std::convert::Infallible>(
                handle(&app, &cluster, peer, req.map(Body::new)).await,
            )
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!(peer = %addr, error = %e, "cluster connection ended");
    }
}

async fn handle(
    app: &Arc<App>,
    cluster: &Arc<Cluster>,
    peer: NodeId,
    req: Request<Body>,
) -> Response {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/raft/append" => {
            let rpc: AppendEntriesRequest<TypeConfig> = match decode(req).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            if rpc.vote.leader_id().voted_for() != Some(peer) {
                return fail(
                    StatusCode::FORBIDDEN,
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
            let rpc: VoteRequest<NodeId> = match decode(req).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            if rpc.vote.leader_id().voted_for() != Some(peer) {
                return fail(
                    StatusCode::FORBIDDEN,
                    "vote request from a node that is not the sender",
                );
            }
            answer(&cluster.raft.vote(rpc).await)
        }
        "/raft/snapshot" => {
            let rpc: InstallSnapshotRequest<TypeConfig> = match decode(req).await {
                Ok(r) => r,
                Err(r) => return r,
            };
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
            let cmd: kes_state::Command = match decode(req).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            if !cluster.is_leader() {
                return answer(&ProposeResult::NotLeader {
                    leader: cluster.leader(),
                });
            }
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
            // Only members get the cache key.
            let member = cluster.members().iter().any(|(id, _, _)| *id == peer);
            let cck = cluster.cck().filter(|_| member);
            let bytes: Option<Vec<u8>> = cck.map(|c| c.bytes().to_vec());
            let resp = answer(&bytes);
            drop(bytes.map(zeroize::Zeroizing::new));
            resp
        }
        "/cluster/forward" => {
            let fwd: ForwardRequest = match decode(req).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            answer(&crate::forwarded(app, fwd).await)
        }
        "/cluster/prevote" => {
            let req: super::elect::PreVote = match decode(req).await {
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
        "/cluster/elect" => {
            let r = cluster.raft.trigger().elect().await;
            answer(&r.is_ok())
        }
        _ => fail(StatusCode::NOT_FOUND, "no such cluster route"),
    }
}

/// Turns a leader's answer back into the client's response, byte for byte.
pub fn relay(resp: ForwardResponse) -> Response {
    let mut r = Response::new(Body::from(resp.body));
    *r.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in resp.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}
