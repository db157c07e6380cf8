//! What a scrape of a replica server's `/metrics` reads: per partition replica its raft state,
//! RocksDB figures and bulk-load progress; per node the throttling counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use wingkv_common::metrics::{MetricsSource, Scrape};
use wingkv_common::raft::stream::{STREAM_CALLS_SENT, STREAM_MESSAGES_SENT};
use wingkv_proto::common::ReplicaRole;

use crate::bulk_load::loader::LoaderState;
use crate::disk_space::DiskGuard;
use crate::load_shed::LoadShedder;
use crate::manager::ReplicaManager;
use crate::store::data_cf;

/// The RocksDB properties exported per replica: (metric, help, property).
const ROCKSDB_GAUGES: &[(&str, &str, &str)] = &[
    ("wingkv_rocksdb_estimate_num_keys", "Estimated keys in the data column family", "rocksdb.estimate-num-keys"),
    ("wingkv_rocksdb_sst_bytes", "Bytes of all SST files of the data column family", "rocksdb.total-sst-files-size"),
    ("wingkv_rocksdb_live_sst_bytes", "Bytes of the live SST files", "rocksdb.live-sst-files-size"),
    ("wingkv_rocksdb_memtable_bytes", "Bytes in all memtables", "rocksdb.cur-size-all-mem-tables"),
    ("wingkv_rocksdb_l0_files", "SST files at level 0 (writes stall when they pile up)", "rocksdb.num-files-at-level0"),
    (
        "wingkv_rocksdb_pending_compaction_bytes",
        "Estimated bytes compaction has to rewrite",
        "rocksdb.estimate-pending-compaction-bytes",
    ),
    ("wingkv_rocksdb_running_compactions", "Compactions running now", "rocksdb.num-running-compactions"),
    ("wingkv_rocksdb_write_stopped", "1 when RocksDB stops writes", "rocksdb.is-write-stopped"),
    (
        "wingkv_rocksdb_table_readers_bytes",
        "Memory of index and filter blocks held outside the block cache",
        "rocksdb.estimate-table-readers-mem",
    ),
];

/// Reads a replica server's state for `/metrics`.
pub struct ReplicaMetricsSource {
    manager: Arc<ReplicaManager>,
    shed: Arc<LoadShedder>,
    disk: Arc<DiskGuard>,
}

impl ReplicaMetricsSource {
    /// A source over `manager`'s replicas, the server's load shedding and its disk guard.
    pub fn new(manager: Arc<ReplicaManager>, shed: Arc<LoadShedder>, disk: Arc<DiskGuard>) -> Self {
        Self { manager, shed, disk }
    }
}

impl MetricsSource for ReplicaMetricsSource {
    fn collect(&self, out: &mut Scrape) {
        let node = self.manager.node_id().to_string();
        let c = self.manager.admission_counters();
        out.counter(
            "wingkv_throttling_delayed_writes_total",
            "Client writes held by write throttling (delay)",
            &[],
            c.writes_delayed.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_throttling_rejected_writes_total",
            "Client writes refused with Busy by write throttling (reject)",
            &[],
            c.writes_rejected.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_denied_requests_total",
            "Client requests refused by a replica.deny_client_request env",
            &[],
            c.requests_denied.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_acl_refused_requests_total",
            "Data requests of users a table's replica_access_controller.allowed_users leaves out",
            &[],
            c.requests_refused_by_acl.load(Ordering::Relaxed),
        );
        if let Some(free) = self.disk.free() {
            out.gauge("wingkv_disk_free_bytes", "Free bytes of the data dir's filesystem", &[], free as f64);
        }
        out.counter(
            "wingkv_disk_full_writes_total",
            "Client writes refused with DiskFull: less than reserved_disk_bytes free",
            &[],
            self.disk.refused_writes.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_replica_restarts_total",
            "Replicas reopened after their raft group stopped (a storage error such as a full disk)",
            &[],
            self.manager.restarts(),
        );
        out.gauge(
            "wingkv_requests_in_flight",
            "Data requests in progress (at most max_concurrent_requests)",
            &[],
            self.shed.in_flight() as f64,
        );
        for (reason, count) in [("requests", &self.shed.shed_by_count), ("bytes", &self.shed.shed_by_bytes)] {
            out.counter(
                "wingkv_shed_requests_total",
                "Data requests refused with Busy by load shedding, by the limit they hit",
                &[("limit", reason)],
                count.load(Ordering::Relaxed),
            );
        }
        let p = self.manager.proposal_counters();
        out.counter(
            "wingkv_write_queue_full_total",
            "Client writes refused with Busy because their partition's raft queue was full",
            &[],
            p.queue_full.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_write_queue_expired_total",
            "Queued client writes dropped unproposed: their deadline passed or their caller left",
            &[],
            p.expired.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_range_read_steps_total",
            "Records examined by scans, counts and range multi_gets (expired ones included)",
            &[],
            crate::range::RANGE_STEPS.load(Ordering::Relaxed),
        );
        let p = self.manager.proposal_counters();
        out.counter(
            "wingkv_raft_proposed_entries_total",
            "Raft entries the primaries proposed for client writes (group commit: several writes per entry)",
            &[],
            p.entries.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_raft_proposed_writes_total",
            "Client writes the primaries proposed",
            &[],
            p.writes.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_raft_stream_calls_total",
            "Raft appends and votes this server sent on its streams to peers",
            &[],
            STREAM_CALLS_SENT.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_raft_stream_messages_total",
            "Stream messages that carried them (calls per message: how much the streams batch)",
            &[],
            STREAM_MESSAGES_SENT.load(Ordering::Relaxed),
        );
        out.counter(
            "wingkv_bulk_load_download_retries_total",
            "Bulk-load downloads retried after a transient failure",
            &[],
            self.manager.bulk_load_retries(),
        );
        let (fsyncs, fsync_time) = self.manager.raft_log_fsyncs();
        out.counter("wingkv_raft_log_fsyncs_total", "Fsyncs of the shared raft log", &[], fsyncs);
        out.counter(
            "wingkv_raft_log_fsync_microseconds_total",
            "Time spent in the shared raft log's fsyncs",
            &[],
            u64::try_from(fsync_time.as_micros()).unwrap_or(u64::MAX),
        );
        out.gauge(
            "wingkv_block_cache_bytes",
            "Bytes held by the block cache all replicas share",
            &[],
            self.manager.storage().block_cache_usage() as f64,
        );
        let replicas = self.manager.all();
        let mut primaries = 0u64;
        for r in &replicas {
            let id = r.id();
            let table = id.app_id.to_string();
            let pidx = id.partition_index.to_string();
            let labels = [("table_id", table.as_str()), ("partition", pidx.as_str())];
            let s = r.status();
            let primary = s.role == ReplicaRole::RolePrimary as i32;
            primaries += u64::from(primary);
            out.gauge("wingkv_raft_term", "Raft term of the partition replica", &labels, s.term as f64);
            out.gauge(
                "wingkv_raft_leader_id",
                "Node id of the partition's primary as this replica knows it (0: none)",
                &labels,
                s.leader_id.unwrap_or(0) as f64,
            );
            out.gauge(
                "wingkv_raft_is_primary",
                "1 when this replica is its partition's primary",
                &labels,
                f64::from(u8::from(primary)),
            );
            out.gauge(
                "wingkv_raft_last_log_index",
                "Last raft log index of the replica",
                &labels,
                s.last_log_index as f64,
            );
            out.gauge(
                "wingkv_raft_applied_index",
                "Last raft log index applied to RocksDB",
                &labels,
                s.applied_index as f64,
            );
            out.gauge(
                "wingkv_raft_snapshot_index",
                "Raft log index of the last snapshot",
                &labels,
                s.snapshot_index as f64,
            );
            out.gauge(
                "wingkv_raft_log_entries",
                "Raft log entries kept (last index - purged index)",
                &labels,
                s.last_log_index.saturating_sub(s.purged_index) as f64,
            );
            if let Ok(cf) = data_cf(r.db()) {
                for (metric, help, prop) in ROCKSDB_GAUGES {
                    if let Ok(Some(v)) = r.db().property_int_value_cf(cf, *prop) {
                        out.gauge(metric, help, &labels, v as f64);
                    }
                }
            }
            if let Some((job, p)) = r.bulk_load_progress() {
                let job = job.to_string();
                let labels = [("table_id", table.as_str()), ("partition", pidx.as_str()), ("job", job.as_str())];
                out.gauge(
                    "wingkv_bulk_load_downloaded_bytes",
                    "Bulk-load bytes downloaded and verified",
                    &labels,
                    p.downloaded_bytes as f64,
                );
                out.gauge("wingkv_bulk_load_total_bytes", "Bulk-load bytes to download", &labels, p.total_bytes as f64);
                out.gauge(
                    "wingkv_bulk_load_live_tasks",
                    "Bulk-load download tasks running",
                    &labels,
                    p.live_tasks as f64,
                );
                out.gauge(
                    "wingkv_bulk_load_retries",
                    "Transient download failures retried in this job",
                    &labels,
                    f64::from(p.retries),
                );
                out.gauge(
                    "wingkv_bulk_load_backoff_ms",
                    "Backoff the download waits now",
                    &labels,
                    p.backoff_ms as f64,
                );
                let failed = matches!(p.state, LoaderState::Failed(_));
                out.gauge(
                    "wingkv_bulk_load_failed",
                    "1 when this replica's download failed",
                    &labels,
                    f64::from(u8::from(failed)),
                );
            }
        }
        out.gauge(
            "wingkv_replicas",
            "Partition replicas hosted by this node",
            &[("node_id", node.as_str())],
            replicas.len() as f64,
        );
        out.gauge(
            "wingkv_primaries",
            "Partition primaries on this node",
            &[("node_id", node.as_str())],
            primaries as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A misspelt property would silently export nothing.
    #[test]
    fn rocksdb_property_names_are_known_to_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::store::SharedStorage::new(Default::default());
        let db = storage.open(dir.path()).unwrap();
        let cf = data_cf(&db).unwrap();
        for (metric, _, prop) in ROCKSDB_GAUGES {
            assert!(db.property_int_value_cf(cf, *prop).unwrap().is_some(), "{metric}: {prop} unknown");
        }
    }
}
