//! The cluster's consensus layer below the network: the openraft type configuration
//! ([`types`]) that fixes what goes through the log ([`kes_state::Command`]) and what applying
//! it answers ([`kes_state::Outcome`]), and the storage adapter ([`store`]) that keeps the Raft
//! log, the vote and the state machine's snapshots in one sled database and the applied
//! [`kes_state::State`] in memory, where the server reads it on every crypto request without a
//! Raft round-trip. The node-to-node network lives with the server, which owns TLS; this crate
//! only decides what is durable and when, so that a node killed at any instant restarts with
//! every entry and vote it ever acknowledged.

// openraft's storage traits fix the error type (`StorageError`, some 200 bytes); the helpers
// that feed them return it as is rather than boxing it only to unbox it again.
#![allow(clippy::result_large_err)]

pub mod store;
pub mod types;

pub use store::datadir::{DataDirError, DATA_FORMAT_VERSION, FORMAT_FILE};
pub use store::{LogStore, SeedError, SledStore, SnapshotBuilder, StateHandle, StateMachineStore};
pub use types::TypeConfig;
