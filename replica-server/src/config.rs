//! The replica server's configuration: one typed struct, loaded from TOML with defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a replica server can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaServerConfig {
    /// This node's raft node id. With `meta_servers` set, leave it 0: the meta assigns one at
    /// the first start and it is kept in the data dir. Without metas (a standalone server for
    /// tests and tools) it must be set.
    pub node_id: u64,
    /// Meta server addresses (`host:port`). Empty: standalone, no registration or heartbeats.
    pub meta_servers: Vec<String>,
    /// Period of the heartbeat to the meta.
    pub heartbeat_interval_ms: u64,
    /// gRPC listen address (`host:port`); port 0 picks a free port.
    pub listen: String,
    /// Address other nodes use to reach this one; defaults to the bound listen address.
    pub advertise: Option<String>,
    /// HTTP address of `/metrics` and `/health`; defaults to the gRPC port + 10000 (any free
    /// port when the gRPC port is 0).
    pub http_listen: Option<String>,
    /// Root of the replicas' data.
    pub data_dir: PathBuf,
    /// Raft timing and snapshot policy.
    pub raft: RaftConfig,
    /// RocksDB tuning.
    pub storage: StorageConfig,
    /// How long a write may wait for its raft commit before answering `Timeout`.
    pub write_timeout_ms: u64,
    /// How long a read may wait for its leadership confirmation.
    pub read_timeout_ms: u64,
    /// Largest accepted request, in bytes.
    pub max_request_bytes: usize,
    /// Bulk-load downloads.
    pub bulk_load: BulkLoadConfig,
    /// How long a removed replica stays in `DATA_DIR/trash/` before it is deleted, so that a
    /// wrong removal can be undone by an operator (see the README). 0 deletes at once.
    pub replica_trash_grace_secs: u64,
    /// TEST ONLY, breaks linearizability on purpose: acknowledge a set or del as soon as it is
    /// handed to raft, before it commits. The fault suite turns it on to prove that its checker
    /// sees a violation. Never set it on a real cluster.
    pub unsafe_ack_before_commit: bool,
}

/// Bulk-load download settings of a replica server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkLoadConfig {
    /// Files downloaded at once by this node.
    pub max_concurrent_downloads: usize,
    /// Download bandwidth of this node, bytes/s (0 = unlimited).
    pub download_bytes_per_sec: u64,
    /// Free disk a download must leave.
    pub min_free_disk_bytes: u64,
    /// Where the providers point.
    pub provider: wingkv_common::provider::ProviderConfig,
    /// Backoff of a download that failed transiently (provider unavailable, throttled): it is
    /// retried with this backoff for as long as the job lives, never abandoned.
    pub retry: wingkv_common::backoff::BackoffPolicy,
    /// Largest `bulk_load_metadata` a replica reads; a larger one fails the job, naming this.
    pub max_metadata_bytes: u64,
    /// Most files in one partition of a job; more fail the job, naming this. Bounds the
    /// `IngestSst` raft entry too (each file is a name of at most 255 bytes, a size and an md5).
    pub max_files_per_partition: usize,
}

impl Default for BulkLoadConfig {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: 4,
            download_bytes_per_sec: 0,
            min_free_disk_bytes: 256 << 20,
            provider: Default::default(),
            retry: Default::default(),
            max_metadata_bytes: 4 << 20,
            max_files_per_partition: 10_000,
        }
    }
}

impl Default for ReplicaServerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            meta_servers: Vec::new(),
            heartbeat_interval_ms: 1_000,
            replica_trash_grace_secs: 86_400,
            listen: "127.0.0.1:34801".to_string(),
            advertise: None,
            http_listen: None,
            data_dir: PathBuf::from("./data/replica"),
            raft: RaftConfig::default(),
            storage: StorageConfig::default(),
            write_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            max_request_bytes: 32 << 20,
            bulk_load: BulkLoadConfig::default(),
            unsafe_ack_before_commit: false,
        }
    }
}

/// Raft settings of every partition group of the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind a snapshot (so a slightly lagging follower needs no snapshot).
    pub logs_to_keep_after_snapshot: u64,
    /// Size of one snapshot chunk on the wire.
    pub snapshot_chunk_bytes: u64,
    /// Most entries in one append RPC.
    pub max_payload_entries: u64,
    /// How long one snapshot chunk (the last one includes the install) may take.
    pub install_snapshot_timeout_ms: u64,
    /// Most raft entries of client writes a primary has in flight per partition; writes that
    /// arrive while all are in flight are proposed together as one entry (group commit).
    pub max_inflight_proposals: usize,
    /// Most client writes in one entry.
    pub max_batch_commands: usize,
    /// Most key and value bytes of client writes in one entry.
    pub max_batch_bytes: usize,
    /// Serve linearizable reads under a leader lease (half of `election_timeout_min_ms` after
    /// each confirmed heartbeat round) instead of one round per batch of reads.
    pub lease_reads: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1_500,
            snapshot_after_logs: 20_000,
            logs_to_keep_after_snapshot: 2_000,
            snapshot_chunk_bytes: 4 << 20,
            max_payload_entries: 512,
            install_snapshot_timeout_ms: 30_000,
            max_inflight_proposals: 1,
            max_batch_commands: 512,
            max_batch_bytes: 4 << 20,
            lease_reads: true,
        }
    }
}

/// RocksDB settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Block cache shared by every replica of the process.
    pub block_cache_bytes: u64,
    /// Memtable size of each replica's data column family.
    pub write_buffer_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { block_cache_bytes: 256 << 20, write_buffer_bytes: 32 << 20 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_and_defaults() {
        let c: ReplicaServerConfig =
            wingkv_common::config::parse_toml("node_id = 7\nlisten = \"127.0.0.1:0\"\n[raft]\nheartbeat_ms = 50\n")
                .unwrap();
        assert_eq!(c.node_id, 7);
        assert_eq!(c.raft.heartbeat_ms, 50);
        assert_eq!(c.raft.election_timeout_min_ms, 750);
        assert_eq!(c.storage.write_buffer_bytes, 32 << 20);
        let err = wingkv_common::config::parse_toml::<ReplicaServerConfig>("nod_id = 1").unwrap_err().to_string();
        assert!(err.contains("nod_id"), "{err}");
    }
}
