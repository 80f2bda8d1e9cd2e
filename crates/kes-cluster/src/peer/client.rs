//! Calling peers: Raft RPCs, forwarded requests, fill proposals, read indexes and the cache-key
//! hand-over, all as msgpack bodies over HTTP/2 with mutual TLS.

use super::server::protocol_of;
use super::tls::node_name;
use super::transport::PeerTransport;
use super::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use async_trait::async_trait;
use kes_raft::types::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a peer call may take, apart from snapshot chunks.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest body a peer may send us (snapshot chunks are far smaller).
pub const MAX_PEER_BODY: usize = 64 << 20;

/// A peer whose calls time out and that has answered none for this long gets a new
/// connection. All calls to a peer share one HTTP/2 connection; after a partition its TCP
/// connection can sit in retransmission back-off for seconds after the network heals (the
/// back-off doubles up to a minute), and every call on it times out meanwhile, while a new
/// connection would work at once.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// HTTP/2 pings on idle and busy connections alike, so a dead connection is noticed even when
/// no call times out.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {id} at '{addr}' cannot be resolved: {message}")]
    Resolve {
        id: NodeId,
        addr: String,
        message: String,
    },
    #[error("peer {id} unreachable: {message}")]
    Unreachable { id: NodeId, message: String },
    /// No connection could be made, so the request was never sent.
    #[error("peer {id} unreachable: cannot connect: {message}")]
    NotConnected { id: NodeId, message: String },
    #[error("peer {id} answered {status}: {message}")]
    Remote {
        id: NodeId,
        status: u16,
        message: String,
    },
    #[error("peer {id} sent an invalid answer: {message}")]
    Decode { id: NodeId, message: String },
    /// The peer speaks another version of the node-to-node protocol.
    #[error("peer {id} speaks node-to-node protocol {theirs}, this node {ours}: every member must run a release of the same protocol version")]
    Version {
        id: NodeId,
        theirs: String,
        ours: u32,
    },
}

impl PeerError {
    /// Whether the request certainly never reached the peer (so sending it to another node
    /// cannot run it twice).
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Self::Resolve { .. } | Self::NotConnected { .. })
    }
}

/// HTTP clients for peers, one per (id, address), built lazily.
pub struct Peers {
    tls: rustls::ClientConfig,
    clients: Mutex<HashMap<(NodeId, String), (reqwest::Client, String)>>,
    /// Per peer: when a call last succeeded, or its connection was last replaced.
    fresh: Mutex<HashMap<NodeId, Instant>>,
}

impl Peers {
    pub fn new(tls: rustls::ClientConfig) -> Arc<Self> {
        Arc::new(Self {
            tls,
            clients: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
        })
    }

    fn answered(&self, id: NodeId) {
        self.fresh.lock().insert(id, Instant::now());
    }

    /// After a call to `id` failed with `e`: drops the peer's connection when it cannot
    /// connect, or when calls time out and none has succeeded for [`STALE_AFTER`] (at most
    /// once per [`STALE_AFTER`], so a peer that is down is not redialled on every call).
    fn failed(&self, id: NodeId, e: &reqwest::Error) {
        if e.is_connect() {
            self.forget(id);
            return;
        }
        if !e.is_timeout() {
            return;
        }
        let stale = {
            let mut fresh = self.fresh.lock();
            let last = fresh.entry(id).or_insert_with(Instant::now);
            if last.elapsed() >= STALE_AFTER {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if stale {
            tracing::debug!(peer = id, "calls time out: reconnecting");
            self.forget(id);
        }
    }

    async fn client(&self, id: NodeId, addr: &str) -> Result<(reqwest::Client, String), PeerError> {
        if let Some(c) = self.clients.lock().get(&(id, addr.to_owned())) {
            return Ok(c.clone());
        }
        let sock = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| PeerError::Resolve {
                id,
                addr: addr.to_owned(),
                message: e.to_string(),
            })?
            .next()
            .ok_or_else(|| PeerError::Resolve {
                id,
                addr: addr.to_owned(),
                message: "no address".into(),
            })?;
        // The URL names the peer by its member id, so TLS verifies the certificate is bound to
        // that id; `resolve` sends the connection to the advertised address.
        let name = node_name(id);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(self.tls.clone())
            .resolve(&name, sock)
            .http2_prior_knowledge()
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(PING_INTERVAL)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build()
            .map_err(|e| PeerError::Unreachable {
                id,
                message: e.to_string(),
            })?;
        let base = format!("https://{name}:{}", sock.port());
        self.clients
            .lock()
            .insert((id, addr.to_owned()), (client.clone(), base.clone()));
        Ok((client, base))
    }

    /// Drops the cached client of a peer, so the next call resolves and connects afresh.
    pub fn forget(&self, id: NodeId) {
        self.clients.lock().retain(|(i, _), _| *i != id);
    }

    /// POSTs `req` to `path` on peer `id` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        id: NodeId,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        super::transport::call(self, id, addr, path, req, timeout).await
    }
}

#[async_trait]
impl PeerTransport for Peers {
    async fn call_bytes(
        &self,
        id: NodeId,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let (client, base) = self.client(id, addr).await?;
        let resp = client
            .post(format!("{base}{path}"))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                self.failed(id, &e);
                let message = e.to_string();
                if e.is_connect() {
                    PeerError::NotConnected { id, message }
                } else {
                    PeerError::Unreachable { id, message }
                }
            })?;
        let status = resp.status().as_u16();
        let theirs = protocol_of(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| {
            self.failed(id, &e);
            PeerError::Unreachable {
                id,
                message: e.to_string(),
            }
        })?;
        self.answered(id);
        if theirs != Some(PROTOCOL_VERSION) {
            let theirs =
                theirs.map_or_else(|| "(unreadable)".to_owned(), |v| format!("version {v}"));
            tracing::error!(peer = id, path, "peer protocol mismatch: the peer speaks {theirs}, this node version {PROTOCOL_VERSION}");
            return Err(PeerError::Version {
                id,
                theirs,
                ours: PROTOCOL_VERSION,
            });
        }
        if status != 200 {
            return Err(PeerError::Remote {
                id,
                status,
                message: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes.to_vec())
    }
}

/// openraft's network factory over a [`PeerTransport`].
#[derive(Clone)]
pub struct Network {
    pub peers: Arc<dyn PeerTransport>,
}

pub struct Connection {
    peers: Arc<dyn PeerTransport>,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            peers: Arc::clone(&self.peers),
            target,
            addr: node.addr.clone(),
        }
    }
}

fn rpc_error<E: std::error::Error>(e: PeerError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        PeerError::Resolve { .. }
        | PeerError::Unreachable { .. }
        | PeerError::NotConnected { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl Connection {
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let r: Result<Resp, E> = self
            .peers
            .call(self.target, &self.addr, path, req, option.hard_ttl())
            .await
            .map_err(rpc_error)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("/raft/vote", &rpc, &option).await
    }
}
