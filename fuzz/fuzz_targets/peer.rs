//! Node-to-node request decoding: every body the node port takes (Raft RPCs, proposals,
//! forwarded writes, pre-votes, snapshots) and the peer certificate's member id, on arbitrary
//! input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kes_cluster::peer::server::decode_any(data);
});
