//! The seam between the cluster and the network: every node-to-node call goes through a
//! [`PeerTransport`], which carries an encoded request to a peer's node port and brings back the
//! encoded answer. [`super::client::Peers`] is the real one (HTTP/2 over mutual TLS); the
//! deterministic simulation (`tests/sim.rs`) puts an in-memory network with seeded loss, delay
//! and partitions in its place, delivering to [`super::server::serve_local`], the same routes
//! the node port serves.

use super::client::PeerError;
use async_trait::async_trait;
use kes_raft::types::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Carries one call to a peer.
#[async_trait]
pub trait PeerTransport: Send + Sync + 'static {
    /// Sends the msgpack `body` to `path` on peer `id` (reached at `addr`) and returns the
    /// answer's body if the peer answered 200; any other answer is [`PeerError::Remote`].
    async fn call_bytes(
        &self,
        id: NodeId,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError>;
}

impl dyn PeerTransport {
    /// POSTs `req` to `path` on peer `id` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        id: NodeId,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        call(self, id, addr, path, req, timeout).await
    }
}

/// One typed call over `transport`: msgpack both ways.
pub async fn call<T, Req, Resp>(
    transport: &T,
    id: NodeId,
    addr: &str,
    path: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, PeerError>
where
    T: PeerTransport + ?Sized,
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let body = rmp_serde::to_vec_named(req).map_err(|e| PeerError::Decode {
        id,
        message: e.to_string(),
    })?;
    let bytes = transport.call_bytes(id, addr, path, body, timeout).await?;
    rmp_serde::from_slice(&bytes).map_err(|e| PeerError::Decode {
        id,
        message: e.to_string(),
    })
}
