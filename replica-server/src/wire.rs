//! The decoders a replica server runs on bytes it did not write itself: raft transport messages
//! from peers, and log entries (written by this or an older build). Public only so that the
//! fuzz targets (`fuzz/`) drive the very code the server runs; each function panics when an
//! invariant breaks, which is what a fuzzer looks for.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use wingkv_common::raft::network::RaftMethod;
use wingkv_common::raft::versioned::Versioned;
use wingkv_common::raft::{decode, encode, NodeId};

use crate::command::Command;
use crate::raft_types::PartitionRaftConfig;

/// Decodes `bytes` as a log entry's command; one that decodes must encode and decode back to
/// itself. Answers whether it decoded.
pub fn check_command(bytes: &[u8]) -> bool {
    let Ok(cmd) = decode::<Versioned<Command>>(bytes) else { return false };
    round_trips(&cmd);
    true
}

/// Decodes `payload` as the raft transport does for a partition's `method`; a request that
/// decodes must encode and decode back to itself. Answers whether it decoded.
pub fn check_raft_request(method: RaftMethod, payload: &[u8]) -> bool {
    match method {
        RaftMethod::AppendEntries => {
            let Ok(req) = decode::<AppendEntriesRequest<PartitionRaftConfig>>(payload) else { return false };
            let again: AppendEntriesRequest<PartitionRaftConfig> =
                decode(&encode(&req).expect("encode")).expect("decode");
            assert_eq!(format!("{req:?}"), format!("{again:?}"), "an append request changed in a round trip");
        }
        RaftMethod::Vote => {
            let Ok(req) = decode::<VoteRequest<NodeId>>(payload) else { return false };
            round_trips(&req);
        }
        RaftMethod::InstallSnapshot => {
            let Ok(req) = decode::<InstallSnapshotRequest<PartitionRaftConfig>>(payload) else { return false };
            let again: InstallSnapshotRequest<PartitionRaftConfig> =
                decode(&encode(&req).expect("encode")).expect("decode");
            assert_eq!(format!("{req:?}"), format!("{again:?}"), "a snapshot chunk changed in a round trip");
        }
    }
    true
}

fn round_trips<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(value).expect("a decoded value encodes");
    let again: T = decode(&bytes).expect("an encoded value decodes");
    assert_eq!(&again, value, "a value changed in a round trip");
}
