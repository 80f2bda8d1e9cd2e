//! Writes: the routes that change the keystore or the replicated state, which run on the
//! leader.
//!
//! The node that receives one parses it into a typed [`WriteOp`] (checking its syntax, so a
//! malformed request is answered at once), then runs it here if it leads, else sends it to the
//! leader (`Cluster::forward`). The leader trusts nothing of the member's checks: for a
//! forwarded write ([`Leader`]) it finds the route of the write's KES path in its own route
//! table, authorises the identity the member named with its own policies (policy, admin-only
//! routes), checks the write again and runs it through the same [`apply`] as a write of its
//! own, and writes the audit event. Its answer, success or the status and message of the
//! error as its error mapping made them, is what the member's client gets.

use crate::admin::node_id;
use crate::api::short;
use crate::error::ApiError;
use crate::routes::{Match, RouteId};
use crate::{audit, authorize, needs_leader, App};
use async_trait::async_trait;
use bytes::Bytes;
use kes_cluster::peer::wire::{Forward, ForwardResult};
use kes_cluster::{Forwarded, Refusal, WriteOp};
use kes_crypto::{KeyType, KeyVersion};
use kes_raft::types::NodeId;
use kes_state::{Command, Outcome, PolicyDef};
use kes_tls::PeerIdentity;
use kes_types::wire::ImportKeyRequest;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

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

fn admin_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

/// The route a write is requested on.
fn route_of(op: &WriteOp) -> RouteId {
    match op {
        WriteOp::CreateKey { .. } => RouteId::KeyCreate,
        WriteOp::ImportKey { .. } => RouteId::KeyImport,
        WriteOp::DeleteKey { .. } => RouteId::KeyDelete,
        WriteOp::SetPolicy { .. } => RouteId::PolicyWrite,
        WriteOp::AssignPolicy { .. } => RouteId::PolicyAssign,
        WriteOp::DeletePolicy { .. } => RouteId::PolicyDelete,
        WriteOp::DeleteIdentity { .. } => RouteId::IdentityDelete,
        WriteOp::AddNode { .. } => RouteId::ClusterAdd,
        WriteOp::RemoveNode { .. } => RouteId::ClusterRemove,
    }
}

/// The write a request to `route` asks for. Only for routes that [`needs_leader`].
pub fn parse(route: RouteId, resource: &str, body: &Bytes) -> Result<WriteOp, ApiError> {
    let name = || resource.to_owned();
    let op = match route {
        RouteId::KeyCreate => WriteOp::CreateKey { name: name() },
        RouteId::KeyImport => {
            check(&WriteOp::CreateKey { name: name() })?;
            let req: ImportKeyRequest = if body.is_empty() {
                ImportKeyRequest::default()
            } else {
                serde_json::from_slice(body).map_err(|_| ApiError::InvalidImportBody)?
            };
            WriteOp::ImportKey {
                name: name(),
                cipher: req.cipher,
                key: Zeroizing::new(req.key.0),
            }
        }
        RouteId::KeyDelete => WriteOp::DeleteKey { name: name() },
        RouteId::PolicyWrite => {
            check(&WriteOp::DeletePolicy { name: name() })?;
            let p: WritePolicy = admin_body(body)?;
            WriteOp::SetPolicy {
                name: name(),
                policy: PolicyDef {
                    allow: p.allow,
                    deny: p.deny,
                },
            }
        }
        RouteId::PolicyAssign => {
            check(&WriteOp::DeletePolicy { name: name() })?;
            let a: AssignPolicy = admin_body(body)?;
            WriteOp::AssignPolicy {
                policy: name(),
                identity: a.identity,
            }
        }
        RouteId::PolicyDelete => WriteOp::DeletePolicy { name: name() },
        RouteId::IdentityDelete => WriteOp::DeleteIdentity { identity: name() },
        RouteId::ClusterAdd => {
            let id = node_id(resource)?;
            let a: AddNode = admin_body(body)?;
            WriteOp::AddNode {
                id,
                address: a.address,
                voter: a.voter,
            }
        }
        RouteId::ClusterRemove => WriteOp::RemoveNode {
            id: node_id(resource)?,
        },
        _ => return Err(ApiError::BadRequest("not a write".into())),
    };
    check(&op)?;
    Ok(op)
}

/// The syntax checks of a write, KES's errors for the names it takes. Run where the request
/// arrives and again where it runs.
fn check(op: &WriteOp) -> Result<(), ApiError> {
    let key = |n: &str| crate::api::key_name(n).map(drop);
    let policy = |n: &str| crate::api::policy_name(n).map(drop);
    let identity = |i: &str| {
        if i.is_empty() || i.len() > 1024 {
            Err(ApiError::InvalidIdentity(i.to_owned()))
        } else {
            Ok(())
        }
    };
    match op {
        WriteOp::CreateKey { name } | WriteOp::DeleteKey { name } => key(name),
        WriteOp::ImportKey {
            name,
            cipher,
            key: bytes,
        } => {
            key(name)?;
            let cipher = if cipher.is_empty() { "AES256" } else { cipher };
            KeyType::parse_cipher(cipher)
                .ok_or_else(|| ApiError::UnsupportedAlgorithm(cipher.to_owned()))?;
            if bytes.len() != 32 {
                return Err(ApiError::InvalidKeySize(cipher.to_owned()));
            }
            Ok(())
        }
        WriteOp::SetPolicy { name, .. } | WriteOp::DeletePolicy { name } => policy(name),
        WriteOp::AssignPolicy {
            policy: p,
            identity: i,
        } => {
            policy(p)?;
            identity(i)
        }
        WriteOp::DeleteIdentity { identity: i } => identity(i),
        WriteOp::AddNode { id, .. } | WriteOp::RemoveNode { id } => {
            if *id == 0 {
                Err(ApiError::BadRequest(
                    "invalid node id '0': want a number >= 1".into(),
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Runs a write for `identity`: here when this node leads (or has no peers), else on the
/// leader.
pub async fn run(app: &App, identity: &str, client: &str, op: WriteOp) -> Result<(), ApiError> {
    let c = &app.cluster;
    // Waits out a leadership transfer, then counts as a write the leader's transfer waits for.
    let _ticket = c.begin_write().await;
    let op = if c.is_replicated() && !c.is_leader() {
        let write = Forward {
            identity: identity.to_owned(),
            client: client.to_owned(),
            op,
        };
        match c.forward(&write).await? {
            Forwarded::Answered(ForwardResult::Done) => return Ok(()),
            Forwarded::Answered(ForwardResult::Refused(r)) => return Err(ApiError::Refused(r)),
            Forwarded::Answered(ForwardResult::NotLeader { .. }) => {
                return Err(ApiError::ClusterUnavailable)
            }
            // Elected while the write waited for a leader: run it here.
            Forwarded::RunHere => write.op,
        }
    } else {
        op
    };
    apply(app, identity, op).await
}

fn outcome(o: Outcome) -> Result<(), ApiError> {
    match o {
        Outcome::Applied | Outcome::Duplicate => Ok(()),
        Outcome::PolicyNotFound => Err(ApiError::PolicyNotFound),
        Outcome::IdentityNotFound => Err(ApiError::IdentityNotFound),
        Outcome::IdentityIsAdmin => Err(ApiError::BadRequest(
            "the admin identity cannot be assigned to a policy".into(),
        )),
        Outcome::NotInitialized => Err(ApiError::Sealed),
        other => Err(ApiError::BadRequest(format!("not applied: {other:?}"))),
    }
}

/// Runs a write on this node, which leads, for `identity` (already authorised).
pub async fn apply(app: &App, identity: &str, op: WriteOp) -> Result<(), ApiError> {
    check(&op)?;
    let c = &app.cluster;
    match op {
        WriteOp::CreateKey { name } => {
            let version = KeyVersion::generate(app.key_type, identity);
            c.create(&name, &version).await?;
            tracing::info!(key = %name, identity = %short(identity), "key created");
        }
        WriteOp::ImportKey { name, cipher, key } => {
            let cipher = if cipher.is_empty() { "AES256" } else { &cipher };
            let kind = KeyType::parse_cipher(cipher)
                .ok_or_else(|| ApiError::UnsupportedAlgorithm(cipher.to_owned()))?;
            let bytes: [u8; 32] = key
                .as_slice()
                .try_into()
                .map_err(|_| ApiError::InvalidKeySize(cipher.to_owned()))?;
            let version = KeyVersion::import(kind, bytes, identity);
            c.create(&name, &version).await?;
            tracing::info!(key = %name, identity = %short(identity), "key imported");
        }
        WriteOp::DeleteKey { name } => {
            c.delete(&name).await?;
            tracing::info!(key = %name, identity = %short(identity), "key deleted");
        }
        WriteOp::SetPolicy { name, policy } => {
            let cmd = Command::SetPolicy {
                name,
                def: policy,
                at_ms: c.clock().wall_ms(),
                by: app.admin.clone(),
            };
            outcome(c.propose(cmd).await?.1)?;
        }
        WriteOp::AssignPolicy { policy, identity } => {
            if app.access.load().is_admin(&identity) {
                return outcome(Outcome::IdentityIsAdmin);
            }
            outcome(c.propose(Command::Assign { identity, policy }).await?.1)?;
        }
        WriteOp::DeletePolicy { name } => {
            outcome(c.propose(Command::DeletePolicy { name }).await?.1)?;
        }
        WriteOp::DeleteIdentity { identity } => {
            outcome(c.propose(Command::Unassign { identity }).await?.1)?;
        }
        WriteOp::AddNode { id, address, voter } => c.add_member(id, address, voter).await?,
        WriteOp::RemoveNode { id } => c.remove_member(id).await?,
    }
    Ok(())
}

/// The leader's side of forwarded writes.
pub struct Leader(pub Arc<App>);

impl Leader {
    /// Authorises and runs a forwarded write; the KES path it names, for the audit event.
    async fn run(&self, write: Forward) -> (Result<(), ApiError>, Option<(bool, String)>) {
        let app = &self.0;
        let path = write.op.path();
        let route = match app.routes.find(&path) {
            Match::Route { route, .. }
                if needs_leader(route.id) && route.id == route_of(&write.op) =>
            {
                route
            }
            _ => {
                return (
                    Err(ApiError::BadRequest("write cannot be forwarded".into())),
                    None,
                )
            }
        };
        let audited = route.is_audited() || route.is_admin_only();
        let peer = if write.identity.is_empty() {
            PeerIdentity::Missing
        } else {
            PeerIdentity::Identity(write.identity.clone())
        };
        let identity = match authorize(app, &peer, route, &path) {
            Ok(id) => id.to_owned(),
            Err(e) => return (Err(e), Some((audited, path))),
        };
        let work = apply(app, &identity, write.op);
        let r = tokio::time::timeout(route.timeout.max(Duration::from_secs(1)), work)
            .await
            .unwrap_or(Err(ApiError::Timeout));
        (r, Some((audited, path)))
    }
}

#[async_trait]
impl kes_cluster::WriteHandler for Leader {
    async fn forwarded(&self, from: NodeId, write: Forward) -> ForwardResult {
        let app = &self.0;
        let started = Instant::now();
        let identity = write.identity.clone();
        let client = write.client.clone();
        let (r, audit_path) = self.run(write).await;
        let status = match &r {
            Ok(()) => 200,
            Err(e) => e.to_kes().status,
        };
        if status == 403 || audit_path.is_none() {
            let path = audit_path.as_ref().map_or("", |(_, p)| p.as_str());
            tracing::warn!(peer = from, identity = %identity, path, status, "forwarded write refused");
        }
        if let Some((true, path)) = &audit_path {
            audit(
                app,
                &client,
                path,
                &identity,
                status,
                started.elapsed(),
                true,
            );
        }
        match r {
            Ok(()) => ForwardResult::Done,
            Err(e) => {
                let k = e.to_kes();
                ForwardResult::Refused(Refusal {
                    status: k.status,
                    message: k.message,
                })
            }
        }
    }
}
