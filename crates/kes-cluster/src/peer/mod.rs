//! The node-to-node protocol: Raft's RPCs and the cluster's own calls, as msgpack bodies over
//! HTTP/2 with mutual TLS on the node port.
//!
//! - `wire`: the messages, including the typed writes a member sends to the leader;
//! - `client`: calling peers (one HTTP/2 connection per peer), and openraft's network;
//! - `server`: the node port's routes, each checked against the membership (`guard`);
//! - `tls`: the node certificates, bound to `kes-node-<id>` names;
//! - `transport`: the seam every call goes through (the real network, or a simulated one).
//!
//! Every request and every answer carries [`PROTOCOL_HEADER`]; a node refuses a peer that
//! speaks another [`PROTOCOL_VERSION`] (and says so in its log) instead of mixing message
//! formats silently.

pub mod client;
mod guard;
pub mod server;
pub mod tls;
pub mod transport;
pub mod wire;

use async_trait::async_trait;
use kes_raft::types::NodeId;
use wire::{Forward, ForwardResult};

/// The version of the node-to-node protocol. Raise it with every change of a message that an
/// older node would misread; nodes of different versions refuse each other, so a change of it
/// needs the whole cluster stopped and started on the new version (see docs/operations.md).
///
/// 1: the first release (writes forwarded as tunnelled HTTP requests, no header).
/// 2: typed writes (`/cluster/write`), the version header.
pub const PROTOCOL_VERSION: u32 = 2;

/// The header carrying [`PROTOCOL_VERSION`] on every request and answer.
pub const PROTOCOL_HEADER: &str = "kes-peer-protocol";

/// What runs a write a member forwarded, on the leader: the server, which authorises it for
/// the identity it names (with the leader's own policies), runs it and writes its audit event.
#[async_trait]
pub trait WriteHandler: Send + Sync + 'static {
    async fn forwarded(&self, from: NodeId, write: Forward) -> ForwardResult;
}
