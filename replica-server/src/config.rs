//! The replica server's configuration: one typed struct, loaded from TOML with defaults, and
//! checked by [`ReplicaServerConfig::validate`] before the server starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wingkv_common::config::{check_backoff, require, within, InvalidConfig, MAX_MS, MAX_SECS};
use wingkv_common::raft::network::MAX_RAFT_MESSAGE_BYTES;

/// The shortest heartbeat period to the meta, in milliseconds.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 10;

/// The most bytes one request, one batch of writes or one snapshot chunk may have: each
/// travels to the followers in one raft message, with room to spare.
pub const MAX_ENTRY_BYTES: usize = MAX_RAFT_MESSAGE_BYTES / 2;

/// The smallest `max_request_bytes`: the SDK packs requests into `Batch` messages of up to
/// about 1 MiB plus one request of up to 64 KiB. A server that took less would end a client's
/// stream on its first full message, and the writes running on it would have unknown fates.
pub const MIN_REQUEST_BYTES: usize = 2 << 20;

/// The largest `max_concurrent_requests`.
pub const MAX_CONCURRENT_REQUESTS: usize = 1 << 20;

/// The largest `bulk_load.max_files_per_partition`: the `IngestSst` entry listing that many
/// files still fits in one raft message (see the test `the_largest_ingestion_fits`).
pub const MAX_FILES_PER_PARTITION: usize = 100_000;

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
    /// Period of the heartbeat to the meta, which reports this node's replicas; default 1 s,
    /// at least 10 ms. Keep it well under the meta's `node_timeout_ms`.
    pub heartbeat_interval_ms: u64,
    /// gRPC listen address (`host:port`); port 0 picks a free port.
    pub listen: String,
    /// Address other nodes use to reach this one; defaults to the bound listen address.
    pub advertise: Option<String>,
    /// HTTP address of `/metrics` and `/health`; defaults to the gRPC port + 10000 (any free
    /// port when the gRPC port is 0).
    pub http_listen: Option<String>,
    /// Root of this node's replicas, their shared raft log, the trash and the node id kept
    /// after registration; default `./data/replica`.
    pub data_dir: PathBuf,
    /// Raft timing and snapshot policy.
    pub raft: RaftConfig,
    /// RocksDB tuning.
    pub storage: StorageConfig,
    /// How long a write may wait for its raft commit before answering `Timeout`; default 10 s.
    pub write_timeout_ms: u64,
    /// How long a read may wait for its leadership confirmation; default 5 s.
    pub read_timeout_ms: u64,
    /// Largest data request accepted, in bytes; default 32 MiB. A write becomes one raft entry,
    /// so at most [`MAX_ENTRY_BYTES`]; at least [`MIN_REQUEST_BYTES`].
    pub max_request_bytes: usize,
    /// Most data requests the server works on at once (a scan counts until its stream ends);
    /// past it a request is answered `Busy` at once (load shedding). Default 1,024.
    pub max_concurrent_requests: usize,
    /// Most bytes of data requests (their encoded size) the server holds at once; past it a
    /// request is answered `Busy` at once. Default 256 MiB, at least `max_request_bytes`.
    pub max_inflight_request_bytes: usize,
    /// Bytes the filesystem of `data_dir` must keep free: below it client writes are refused
    /// with `DiskFull` (reads go on) until space is freed, so the raft log never meets a full
    /// disk. Default 256 MiB; 0 turns the guard off.
    pub reserved_disk_bytes: u64,
    /// Bulk-load downloads and their limits.
    pub bulk_load: BulkLoadConfig,
    /// How long a removed replica stays in `DATA_DIR/trash/` before it is deleted, so that a
    /// wrong removal can be undone by an operator (see the README). 0 deletes at once.
    pub replica_trash_grace_secs: u64,
    /// TEST ONLY, breaks linearizability on purpose: acknowledge a set or del as soon as it is
    /// handed to raft, before it commits. The fault suite turns it on to prove that its checker
    /// sees a violation. Only builds with the `failpoints` feature accept it.
    pub unsafe_ack_before_commit: bool,
    /// TEST ONLY: seconds added to this server's clock, as if its machine's clock were that far
    /// off, to show that replicas agree on TTL expiry whatever their clocks. Only builds with
    /// the `failpoints` feature accept a value other than 0.
    pub test_clock_offset_secs: i64,
    /// Mutual TLS (`[tls]`: `ca_file`, `cert_file`, `key_file`; the certificate of a replica
    /// server, see `wingkv cert issue-server --role replica`). Unset: plaintext, nothing checked.
    pub tls: Option<wingkv_security::TlsConfig>,
    /// Serve gRPC reflection (method listing for grpcurl). Default: on without TLS, off with
    /// TLS (it shows every certified peer the whole API).
    pub grpc_reflection: Option<bool>,
}

/// Bulk-load download settings of a replica server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkLoadConfig {
    /// Files downloaded at once by this node, over all its replicas; default 4. Also the
    /// number of low-priority threads that write, hash and verify them (`bulk_load::io_pool`).
    pub max_concurrent_downloads: usize,
    /// Download bandwidth of this node, bytes/s (0 = unlimited, the default).
    pub download_bytes_per_sec: u64,
    /// Bytes of disk a partition's download must leave free besides its files; default
    /// 256 MiB. A download that would leave less fails the job.
    pub min_free_disk_bytes: u64,
    /// Where the providers point (the `local` root, the `s3` endpoint and bucket).
    pub provider: wingkv_common::provider::ProviderConfig,
    /// Backoff of a download that failed transiently (provider unavailable, throttled): it is
    /// retried with this backoff for as long as the job lives, never abandoned.
    pub retry: wingkv_common::backoff::BackoffPolicy,
    /// Largest `bulk_load_metadata` a replica reads, in bytes (default 4 MiB); a larger one
    /// fails the job, naming this.
    pub max_metadata_bytes: u64,
    /// Most files in one partition of a job; more fail the job, naming this. Bounds the
    /// `IngestSst` raft entry too (each file is a name of at most 255 bytes, a size and a digest).
    /// Default 10 000, at most [`MAX_FILES_PER_PARTITION`].
    pub max_files_per_partition: usize,
    /// Backup upload bandwidth of this node, bytes/s (0 = unlimited, the default).
    pub upload_bytes_per_sec: u64,
    /// Backup files uploaded at once by this node; default 4.
    pub max_concurrent_uploads: usize,
    /// Partitions exported for backups at once by this node (each reads its whole partition
    /// and writes a copy to local disk before uploading it); default 2.
    pub max_concurrent_exports: usize,
    /// Size at which a backup's exported file is closed and the next one started; default
    /// 64 MiB (as pegasus-spark's bulk-load files).
    pub backup_file_bytes: u64,
    /// Whether a backup uploads the DB's own SST files where they hold exactly the live records
    /// of their key range (a bulk-loaded or compacted range), instead of rewriting them; default
    /// true. Their restore relies on RocksDB's experimental `allow_db_generated_files`: false
    /// rewrites everything, as releases before it did.
    pub backup_reuse_files: bool,
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
            upload_bytes_per_sec: 0,
            max_concurrent_uploads: 4,
            max_concurrent_exports: 2,
            backup_file_bytes: 64 << 20,
            backup_reuse_files: true,
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
            max_concurrent_requests: 1_024,
            max_inflight_request_bytes: 256 << 20,
            reserved_disk_bytes: 256 << 20,
            bulk_load: BulkLoadConfig::default(),
            unsafe_ack_before_commit: false,
            test_clock_offset_secs: 0,
            tls: None,
            grpc_reflection: None,
        }
    }
}

/// Raft settings of every partition group of the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Period of a primary's heartbeats to its group; default 150 ms.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time between this and
    /// `election_timeout_max_ms` starts an election; above `heartbeat_ms`, default 750 ms.
    /// Half of it is the lease of lease reads.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout, above the lower one; default 1.5 s. A primary
    /// without a quorum's acknowledgement for this long answers clients as no primary.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one; default 20 000.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind a snapshot (so a slightly lagging follower needs no snapshot);
    /// default 2 000.
    pub logs_to_keep_after_snapshot: u64,
    /// Bytes of one snapshot chunk on the wire; default 4 MiB, at most [`MAX_ENTRY_BYTES`].
    pub snapshot_chunk_bytes: u64,
    /// Most entries in one append RPC; default 512.
    pub max_payload_entries: u64,
    /// How long one snapshot chunk (the last one includes the install) may take; default 30 s.
    pub install_snapshot_timeout_ms: u64,
    /// Most raft entries of client writes a primary has in flight per partition; writes that
    /// arrive while all are in flight are proposed together as one entry (group commit).
    /// Default 1.
    pub max_inflight_proposals: usize,
    /// Most client writes of one partition waiting to be proposed; a write that finds the
    /// queue full is answered `Busy`. Default 1,024.
    pub max_queued_writes: usize,
    /// Most client writes in one entry; default 512.
    pub max_batch_commands: usize,
    /// Most key and value bytes of client writes in one entry (a larger single write goes
    /// alone); default 4 MiB.
    pub max_batch_bytes: usize,
    /// Serve linearizable reads under a leader lease (half of `election_timeout_min_ms` after
    /// each confirmed heartbeat round) instead of one round per batch of reads; default on.
    pub lease_reads: bool,
    /// Send appends and votes to each peer on one stream shared by every group, many per
    /// message, instead of one unary call each; default on. Off is for comparing the two.
    pub streams: bool,
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
            max_queued_writes: 1_024,
            max_batch_commands: 512,
            max_batch_bytes: 4 << 20,
            lease_reads: true,
            streams: true,
        }
    }
}

/// RocksDB settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Bytes of the block cache shared by every replica of the process; default 256 MiB.
    pub block_cache_bytes: u64,
    /// Bytes of the memtable of each replica's data column family; default 32 MiB. Each
    /// replica's WAL is capped at four times this.
    pub write_buffer_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { block_cache_bytes: 256 << 20, write_buffer_bytes: 32 << 20 }
    }
}

impl ReplicaServerConfig {
    /// Checks that every value is one the server can run with, so that nothing derived from
    /// the config can panic, overflow or stall later: a zero timeout or period, a limit of 0
    /// that lets nothing through, a size that overflows when converted or multiplied, or that
    /// does not fit in a raft message, election timeouts not above the heartbeat. The error
    /// names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        require(
            self.node_id > 0 || !self.meta_servers.is_empty(),
            "node_id",
            self.node_id,
            "more than 0 when meta_servers is empty",
        )?;
        within("heartbeat_interval_ms", self.heartbeat_interval_ms, MIN_HEARTBEAT_INTERVAL_MS, MAX_MS)?;
        within("write_timeout_ms", self.write_timeout_ms, 1, MAX_MS)?;
        within("read_timeout_ms", self.read_timeout_ms, 1, MAX_MS)?;
        within("max_request_bytes", self.max_request_bytes, MIN_REQUEST_BYTES, MAX_ENTRY_BYTES)?;
        within("max_concurrent_requests", self.max_concurrent_requests, 1, MAX_CONCURRENT_REQUESTS)?;
        // Counted in permits of a semaphore, which takes a `u32` at a time.
        within(
            "max_inflight_request_bytes",
            self.max_inflight_request_bytes,
            self.max_request_bytes,
            u32::MAX as usize,
        )?;
        within("replica_trash_grace_secs", self.replica_trash_grace_secs, 0, MAX_SECS)?;
        // The test switches exist only in builds for tests, so that a production binary cannot
        // be configured into breaking linearizability or trusting a wrong clock.
        let test_build = cfg!(feature = "failpoints");
        let test_only = "(a test switch; this build has none, build with the failpoints feature)";
        let ack = self.unsafe_ack_before_commit;
        require(test_build || !ack, "unsafe_ack_before_commit", ack, format!("false {test_only}"))?;
        let offset = self.test_clock_offset_secs;
        require(test_build || offset == 0, "test_clock_offset_secs", offset, format!("0 {test_only}"))?;
        self.raft.validate()?;
        self.storage.validate()?;
        self.bulk_load.validate()
    }
}

impl RaftConfig {
    fn validate(&self) -> Result<(), InvalidConfig> {
        within("raft.heartbeat_ms", self.heartbeat_ms, 1, MAX_MS)?;
        require(
            self.heartbeat_ms < self.election_timeout_min_ms && self.election_timeout_min_ms <= MAX_MS,
            "raft.election_timeout_min_ms",
            self.election_timeout_min_ms,
            format!("more than raft.heartbeat_ms ({}), at most {MAX_MS}", self.heartbeat_ms),
        )?;
        require(
            self.election_timeout_min_ms < self.election_timeout_max_ms && self.election_timeout_max_ms <= MAX_MS,
            "raft.election_timeout_max_ms",
            self.election_timeout_max_ms,
            format!("more than raft.election_timeout_min_ms ({}), at most {MAX_MS}", self.election_timeout_min_ms),
        )?;
        within("raft.snapshot_after_logs", self.snapshot_after_logs, 1, u64::MAX)?;
        within("raft.snapshot_chunk_bytes", self.snapshot_chunk_bytes, 1, MAX_ENTRY_BYTES as u64)?;
        within("raft.max_payload_entries", self.max_payload_entries, 1, u64::MAX)?;
        within("raft.install_snapshot_timeout_ms", self.install_snapshot_timeout_ms, 1, MAX_MS)?;
        within("raft.max_inflight_proposals", self.max_inflight_proposals, 1, usize::MAX)?;
        within("raft.max_batch_commands", self.max_batch_commands, 1, usize::MAX)?;
        // A tokio channel's capacity.
        within("raft.max_queued_writes", self.max_queued_writes, 1, tokio::sync::Semaphore::MAX_PERMITS)?;
        within("raft.max_batch_bytes", self.max_batch_bytes, 0, MAX_ENTRY_BYTES)
    }
}

impl StorageConfig {
    fn validate(&self) -> Result<(), InvalidConfig> {
        // Both are handed to RocksDB as `usize`; the WAL limit is four memtables.
        let fits = |v: u64| usize::try_from(v).is_ok();
        let block_cache = self.block_cache_bytes;
        require(fits(block_cache), "storage.block_cache_bytes", block_cache, format!("0 to {}", usize::MAX))?;
        within("storage.write_buffer_bytes", self.write_buffer_bytes, 1, u64::MAX / 4)?;
        let write_buffer = self.write_buffer_bytes;
        require(fits(write_buffer), "storage.write_buffer_bytes", write_buffer, format!("1 to {}", usize::MAX))
    }
}

impl BulkLoadConfig {
    fn validate(&self) -> Result<(), InvalidConfig> {
        let most = tokio::sync::Semaphore::MAX_PERMITS;
        within("bulk_load.max_concurrent_downloads", self.max_concurrent_downloads, 1, most)?;
        check_backoff("bulk_load.retry", &self.retry)?;
        within("bulk_load.max_metadata_bytes", self.max_metadata_bytes, 1, u64::MAX)?;
        within("bulk_load.max_concurrent_uploads", self.max_concurrent_uploads, 1, most)?;
        within("bulk_load.max_concurrent_exports", self.max_concurrent_exports, 1, most)?;
        within("bulk_load.backup_file_bytes", self.backup_file_bytes, 1 << 20, 4 << 30)?;
        within("bulk_load.max_files_per_partition", self.max_files_per_partition, 1, MAX_FILES_PER_PARTITION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field `validate` names for `c`.
    fn rejected(c: ReplicaServerConfig) -> String {
        let e = c.validate().unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&e.field) && text.contains(&e.value) && text.contains(&e.allowed), "{text}");
        e.field
    }

    #[test]
    fn the_default_config_is_valid() {
        let with_metas = ReplicaServerConfig { meta_servers: vec!["127.0.0.1:34601".into()], ..Default::default() };
        with_metas.validate().unwrap();
        ReplicaServerConfig { node_id: 1, ..Default::default() }.validate().unwrap();
    }

    /// A production build (no `failpoints`) refuses the switches that break guarantees on
    /// purpose; a test build takes them.
    #[test]
    fn test_switches_are_accepted_only_by_a_test_build() {
        let ack = ReplicaServerConfig { node_id: 1, unsafe_ack_before_commit: true, ..Default::default() };
        let clock = ReplicaServerConfig { node_id: 1, test_clock_offset_secs: 3_600, ..Default::default() };
        if cfg!(feature = "failpoints") {
            ack.validate().unwrap();
            clock.validate().unwrap();
        } else {
            assert_eq!(rejected(ack), "unsafe_ack_before_commit");
            assert_eq!(rejected(clock), "test_clock_offset_secs");
        }
    }

    #[test]
    fn each_value_out_of_range_is_rejected_naming_its_field() {
        let d = || ReplicaServerConfig { node_id: 1, ..Default::default() };
        let raft = |f: fn(&mut RaftConfig)| {
            let mut c = d();
            f(&mut c.raft);
            c
        };
        let storage = |f: fn(&mut StorageConfig)| {
            let mut c = d();
            f(&mut c.storage);
            c
        };
        let bulk = |f: fn(&mut BulkLoadConfig)| {
            let mut c = d();
            f(&mut c.bulk_load);
            c
        };
        let cases: Vec<(ReplicaServerConfig, &str)> = vec![
            (ReplicaServerConfig { node_id: 0, ..d() }, "node_id"),
            (ReplicaServerConfig { heartbeat_interval_ms: 9, ..d() }, "heartbeat_interval_ms"),
            (ReplicaServerConfig { write_timeout_ms: 0, ..d() }, "write_timeout_ms"),
            (ReplicaServerConfig { read_timeout_ms: MAX_MS + 1, ..d() }, "read_timeout_ms"),
            (ReplicaServerConfig { max_request_bytes: 0, ..d() }, "max_request_bytes"),
            // Under what one of the SDK's batch messages may hold.
            (ReplicaServerConfig { max_request_bytes: 1 << 20, ..d() }, "max_request_bytes"),
            (ReplicaServerConfig { max_request_bytes: MAX_RAFT_MESSAGE_BYTES, ..d() }, "max_request_bytes"),
            (ReplicaServerConfig { replica_trash_grace_secs: u64::MAX, ..d() }, "replica_trash_grace_secs"),
            (ReplicaServerConfig { max_concurrent_requests: 0, ..d() }, "max_concurrent_requests"),
            (ReplicaServerConfig { max_inflight_request_bytes: 1 << 20, ..d() }, "max_inflight_request_bytes"),
            (raft(|r| r.max_queued_writes = 0), "raft.max_queued_writes"),
            (raft(|r| r.heartbeat_ms = 0), "raft.heartbeat_ms"),
            (raft(|r| r.election_timeout_min_ms = 150), "raft.election_timeout_min_ms"),
            (raft(|r| r.election_timeout_max_ms = 750), "raft.election_timeout_max_ms"),
            (raft(|r| r.election_timeout_max_ms = u64::MAX), "raft.election_timeout_max_ms"),
            (raft(|r| r.snapshot_after_logs = 0), "raft.snapshot_after_logs"),
            (raft(|r| r.snapshot_chunk_bytes = 0), "raft.snapshot_chunk_bytes"),
            (raft(|r| r.snapshot_chunk_bytes = 1 << 40), "raft.snapshot_chunk_bytes"),
            (raft(|r| r.max_payload_entries = 0), "raft.max_payload_entries"),
            (raft(|r| r.install_snapshot_timeout_ms = 0), "raft.install_snapshot_timeout_ms"),
            (raft(|r| r.max_inflight_proposals = 0), "raft.max_inflight_proposals"),
            (raft(|r| r.max_batch_commands = 0), "raft.max_batch_commands"),
            (raft(|r| r.max_batch_bytes = usize::MAX), "raft.max_batch_bytes"),
            (storage(|s| s.write_buffer_bytes = 0), "storage.write_buffer_bytes"),
            (storage(|s| s.write_buffer_bytes = u64::MAX / 2), "storage.write_buffer_bytes"),
            (bulk(|b| b.max_concurrent_downloads = 0), "bulk_load.max_concurrent_downloads"),
            (bulk(|b| b.max_concurrent_downloads = usize::MAX), "bulk_load.max_concurrent_downloads"),
            (bulk(|b| b.retry.base_ms = 0), "bulk_load.retry.base_ms"),
            (bulk(|b| b.retry.cap_ms = 1), "bulk_load.retry.cap_ms"),
            (bulk(|b| b.max_metadata_bytes = 0), "bulk_load.max_metadata_bytes"),
            (bulk(|b| b.max_files_per_partition = 0), "bulk_load.max_files_per_partition"),
            (bulk(|b| b.max_files_per_partition = MAX_FILES_PER_PARTITION + 1), "bulk_load.max_files_per_partition"),
        ];
        for (config, field) in cases {
            assert_eq!(rejected(config), field);
        }
    }

    #[test]
    fn the_error_says_what_is_allowed() {
        let e = ReplicaServerConfig { node_id: 1, write_timeout_ms: 0, ..Default::default() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "invalid config: write_timeout_ms = 0; allowed: 1 to 86400000");
    }

    /// The `IngestSst` entry of a partition with the most files the config allows, each with
    /// the longest name, fits in one raft message.
    #[test]
    fn the_largest_ingestion_fits() {
        let cmd = crate::command::largest_ingestion(MAX_FILES_PER_PARTITION);
        let bytes = wingkv_common::raft::encode(&cmd).unwrap().len();
        assert!(bytes < MAX_ENTRY_BYTES, "{bytes} bytes");
    }

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
