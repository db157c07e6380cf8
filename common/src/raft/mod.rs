//! openraft glue shared by the meta server and the replica server: the RocksDB log store with
//! group commit, and the gRPC network that carries every raft group of a process.

// openraft's error types are large by design; they are what its traits return.
#![allow(clippy::result_large_err)]

#[cfg(feature = "storage")]
pub mod log_store;
pub mod network;
pub mod read_barrier;
pub mod stream;
pub mod versioned;
#[cfg(feature = "storage")]
pub mod wal_sync;

use openraft::{AnyError, StorageError, StorageIOError};

/// Column family of the raft log: key = log index (u64 BE), value = bincode entry.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family of the raft metadata: vote, committed, last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";

/// Node ids of every raft group in wingkv.
pub type NodeId = u64;

/// A storage read error in openraft's terms.
pub fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::error(e.to_string())).into()
}

/// A storage write error in openraft's terms.
pub fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::error(e.to_string())).into()
}

/// Encodes a raft payload for storage or the wire.
pub fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(v)
}

/// The size [`encode`] would give `v`, computed without encoding it.
pub fn encoded_len<T: serde::Serialize>(v: &T) -> Result<u64, bincode::Error> {
    bincode::serialized_size(v)
}

/// Decodes a raft payload from storage or the wire.
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(b)
}
