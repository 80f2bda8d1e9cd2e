//! `kes-bench`: a load generator for KES-compatible servers and OpenBao's transit engine.
//!
//! The generator keeps a fixed set of mutually authenticated TLS connections (HTTP/1.1 or
//! HTTP/2) to one or more endpoints and drives them with a configurable operation mix, either
//! closed-loop (each of N workers sends its next request when the previous one is answered) or
//! open-loop at a fixed rate. In open-loop mode every latency is measured from the request's
//! intended send time, so a server that stalls is charged for the requests that queued behind
//! the stall instead of hiding them (coordinated omission). Several endpoints are used the way
//! kms-go uses them, through `kes-client`'s load balancer, so a benchmark of a replica set sees
//! the same failover a MinIO deployment would.
//!
//! The same measurement code drives OpenBao's transit engine (`datakey/plaintext` and `decrypt`
//! as the counterparts of generate and decrypt) so the two can be compared like for like.
//!
//! The library half ([`run`], [`summary`]) is what the binary and the CI smoke test call.

pub mod config;
pub mod engine;
pub mod report;
pub mod summary;
pub mod target;
pub mod transport;

pub use config::{Auth, Config, Mode, Op, Protocol, TargetKind, Trust};
pub use engine::{run, ProgressMode};
pub use report::{Latency, OpStats, Report, Tick};
