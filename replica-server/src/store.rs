//! The RocksDB instance of one replica: column families, options, and the TTL compaction filter.

use std::path::Path;
use std::sync::Arc;

use rocksdb::compaction_filter::Decision;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, DB};
use wingkv_common::raft::{CF_RAFT_LOG, CF_RAFT_META};
use wingkv_common::value::stored_expire_ts;
use wingkv_common::WingError;

use crate::config::StorageConfig;
use crate::log_clock::LogClock;

/// Column family of user records (RocksDB's default one, as in Pegasus).
pub const CF_DATA: &str = "default";
/// Column family of the state machine's applied state (last applied log id, membership).
pub const CF_APPLIED: &str = "applied";

/// The user-data column family of `db`.
pub fn data_cf(db: &DB) -> Result<&ColumnFamily, WingError> {
    cf(db, CF_DATA)
}

/// The named column family of `db`.
pub fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, WingError> {
    db.cf_handle(name).ok_or_else(|| WingError::Storage(format!("column family {name} is missing")))
}

/// The options a replica's RocksDB is created with, chosen from the table's envs when the
/// replica is created and kept in its directory (`db_options.json`): RocksDB cannot change
/// them later, so every reopen uses the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DbOptions {
    /// `rocksdb.allow_ingest_behind`: bulk loads may ingest below existing data.
    pub allow_ingest_behind: bool,
    /// The table's partition count, which never changes: keys that hash elsewhere are refused.
    /// 0: not recorded (a replica created by an older meta); heartbeats then tell it.
    pub partition_count: u32,
    /// Created for a restore: the replica refuses clients from its opening (after a restart
    /// too, before any heartbeat answer) until the meta answers that its table's restore ended;
    /// cleared then (see `ReplicaManager::forget_restore_marks`).
    pub restoring: bool,
}

/// The file that holds a replica's [`DbOptions`].
const DB_OPTIONS: &str = "db_options.json";

impl DbOptions {
    /// The options of the replica in `replica_dir` (defaults when it has none recorded: a
    /// replica created before they were).
    pub fn load(replica_dir: &Path) -> Result<Self, WingError> {
        let path = replica_dir.join(DB_OPTIONS);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| WingError::Corruption(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(WingError::Storage(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Records these options for the replica in `replica_dir` (synced).
    pub fn save(&self, replica_dir: &Path) -> Result<(), WingError> {
        let bytes = serde_json::to_vec(self).map_err(|e| WingError::Internal(format!("encode db options: {e}")))?;
        crate::durable::replace_file(&replica_dir.join(DB_OPTIONS), &bytes)
    }
}

/// Options shared by all replicas of a process (one block cache for all of them).
#[derive(Clone)]
pub struct SharedStorage {
    cache: Cache,
    config: StorageConfig,
}

impl SharedStorage {
    /// Creates the shared block cache.
    pub fn new(config: StorageConfig) -> Self {
        Self { cache: Cache::new_lru_cache(config.block_cache_bytes as usize), config }
    }

    /// Bytes the shared block cache holds now.
    pub fn block_cache_usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Options for the user-data column family. `Pegasus`-compatible records: expired ones are
    /// dropped by compaction.
    pub fn data_options(&self, clock: &LogClock) -> Options {
        let mut o = Options::default();
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_size(self.config.write_buffer_bytes as usize);
        o.set_max_write_buffer_number(3);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        o.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
        // Expiry by the partition's log clock, not this machine's: every replica drops the same
        // records (see `crate::log_clock`).
        let clock = clock.clone();
        o.set_compaction_filter("wingkv_ttl", move |_level: u32, _key: &[u8], value: &[u8]| {
            match stored_expire_ts(value) {
                Some(ts) if crate::snapshot::droppable(ts, clock.get()) => Decision::Remove,
                _ => Decision::Keep,
            }
        });
        o
    }

    /// Opens (or creates) the RocksDB of a replica at `path` with the default options and a log
    /// clock of its own (tests and tools).
    pub fn open(&self, path: &Path) -> Result<Arc<DB>, WingError> {
        self.open_with(path, &DbOptions::default(), &LogClock::default())
    }

    /// Opens (or creates) the RocksDB of a replica at `path` with `options`; compaction drops
    /// expired records by `clock`.
    pub fn open_with(&self, path: &Path, options: &DbOptions, clock: &LogClock) -> Result<Arc<DB>, WingError> {
        let mut db_opts = Options::default();
        // Reserves the last level for files ingested behind (RocksDB fixes it at creation).
        db_opts.set_allow_ingest_behind(options.allow_ingest_behind);
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(2);
        db_opts.set_max_total_wal_size(self.config.write_buffer_bytes * 4);
        let mut small = Options::default();
        small.set_write_buffer_size(4 << 20);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_DATA, self.data_options(clock)),
            ColumnFamilyDescriptor::new(CF_RAFT_LOG, small.clone()),
            ColumnFamilyDescriptor::new(CF_RAFT_META, small.clone()),
            ColumnFamilyDescriptor::new(CF_APPLIED, small),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)
            .map_err(|e| WingError::Storage(format!("cannot open {}: {}", path.display(), e.into_string())))?;
        Ok(Arc::new(db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wingkv_common::value::encode_value;

    /// Compaction drops what is expired by the log clock (with the grace), whatever the local
    /// clock says: with no stamped write applied yet it drops nothing.
    #[test]
    fn compaction_drops_records_expired_by_the_log_clock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = LogClock::default();
        let db =
            SharedStorage::new(StorageConfig::default()).open_with(dir.path(), &DbOptions::default(), &clock).unwrap();
        let cf = data_cf(&db).unwrap();
        // Long ago by the local clock; the log clock alone decides.
        let now = 100_000;
        db.put_cf(cf, b"\x00\x01early", encode_value(1, b"v")).unwrap();
        db.flush_cf(cf).unwrap();
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        assert_eq!(db.iterator_cf(cf, rocksdb::IteratorMode::Start).count(), 1, "dropped at log clock 0");
        db.delete_cf(cf, b"\x00\x01early").unwrap();
        clock.advance(now);
        db.put_cf(cf, b"\x00\x01alive", encode_value(0, b"v")).unwrap();
        db.put_cf(cf, b"\x00\x01later", encode_value(now + 3_600, b"v")).unwrap();
        db.put_cf(cf, b"\x00\x01grace", encode_value(now - 1, b"v")).unwrap();
        let gone_ts = now - crate::snapshot::EXPIRY_GRACE_SECONDS - 1;
        db.put_cf(cf, b"\x00\x01gone", encode_value(gone_ts, b"v")).unwrap();
        db.flush_cf(cf).unwrap();
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        let keys: Vec<Vec<u8>> =
            db.iterator_cf(cf, rocksdb::IteratorMode::Start).map(|kv| kv.unwrap().0.to_vec()).collect();
        assert_eq!(keys, vec![b"\x00\x01alive".to_vec(), b"\x00\x01grace".to_vec(), b"\x00\x01later".to_vec()]);
    }
}
