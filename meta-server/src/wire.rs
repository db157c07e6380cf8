//! The decoders a meta server runs on bytes it did not write itself: raft transport messages
//! from its peers, and log entries (written by this or an older build). Public only so that the
//! fuzz targets (`fuzz/`) drive the very code the server runs; each function panics when an
//! invariant breaks, which is what a fuzzer looks for.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest};
use wingkv_common::raft::network::RaftMethod;
use wingkv_common::raft::versioned::Versioned;
use wingkv_common::raft::{decode, encode};

use crate::catalog::MetaCommand;
use crate::raft_types::MetaRaftConfig;

/// Decodes `bytes` as a meta log entry's command; one that decodes must encode and decode back
/// to itself. Answers whether it decoded.
pub fn check_command(bytes: &[u8]) -> bool {
    let Ok(cmd) = decode::<Versioned<MetaCommand>>(bytes) else { return false };
    let again: Versioned<MetaCommand> = decode(&encode(&cmd).expect("encode")).expect("decode");
    assert_eq!(again, cmd, "a meta command changed in a round trip");
    true
}

/// Decodes `payload` as the meta's raft transport does for `method` (votes are the replica's
/// type too, see `wingkv_replica_server::wire`). Answers whether it decoded.
pub fn check_raft_request(method: RaftMethod, payload: &[u8]) -> bool {
    fn same<T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(value: &T) {
        let again: T = decode(&encode(value).expect("encode")).expect("decode");
        assert_eq!(format!("{value:?}"), format!("{again:?}"), "a raft request changed in a round trip");
    }
    match method {
        RaftMethod::AppendEntries => match decode::<AppendEntriesRequest<MetaRaftConfig>>(payload) {
            Ok(req) => same(&req),
            Err(_) => return false,
        },
        RaftMethod::InstallSnapshot => match decode::<InstallSnapshotRequest<MetaRaftConfig>>(payload) {
            Ok(req) => same(&req),
            Err(_) => return false,
        },
        RaftMethod::Vote => return false,
    }
    true
}
