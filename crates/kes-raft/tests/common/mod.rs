//! Log entries and commands for the storage tests.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use kes_raft::types::{Entry, EntryPayload, LogId, Membership, Node, NodeId};
use kes_state::Command;
use openraft::CommittedLeaderId;

pub fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

pub fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

pub fn normal(term: u64, index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

pub fn three_nodes() -> Membership {
    let nodes: BTreeMap<NodeId, Node> = (1..=3)
        .map(|id| (id, Node::new(format!("10.0.0.{id}:7374"))))
        .collect();
    Membership::new(vec![nodes.keys().copied().collect::<BTreeSet<_>>()], nodes)
}

pub fn membership(term: u64, index: u64, m: Membership) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Membership(m),
    }
}

pub fn init() -> Command {
    Command::Init {
        wrapped_cck: vec![0xcc; 60],
        admin: "admin-identity".to_owned(),
        policies: BTreeMap::new(),
        assignments: BTreeMap::new(),
        at_ms: 1_000,
    }
}

pub fn put_key(name: &str, at_ms: u64) -> Command {
    Command::PutKey {
        name: name.to_owned(),
        // Stands in for a sealed KeyVersion: distinct per name and time, so a wrong entry shows.
        sealed: format!("sealed:{name}:{at_ms}").into_bytes(),
        at_ms,
    }
}

pub fn delete_key(name: &str, at_ms: u64) -> Command {
    Command::DeleteKey {
        name: name.to_owned(),
        at_ms,
    }
}
