//! [`RaftLogDb`]: the one RocksDB holding the raft logs of every partition replica of a replica
//! server, with one group-commit fsync thread. Sharing it is what makes writes to many
//! partitions cheap: one fsync of one WAL makes the appends of all of them durable at once,
//! where a log per replica cost an fsync per replica per append (as Pegasus's shared log and
//! TiKV's raft engine, for the same reason). The user data stays in each replica's own RocksDB.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB};
use wingkv_common::raft::log_store::delete_group;
use wingkv_common::raft::wal_sync::{BeforeSync, WalSyncer};
use wingkv_common::raft::{CF_RAFT_LOG, CF_RAFT_META};
use wingkv_common::{PartitionId, WingError};

use crate::store::{cf, CF_APPLIED};

/// The shared raft-log DB of a replica server and its fsync thread.
pub struct RaftLogDb {
    /// The DB ([`CF_RAFT_LOG`] and [`CF_RAFT_META`]).
    pub db: Arc<DB>,
    /// Its group-commit thread.
    pub syncer: WalSyncer,
}

/// Key (after the partition prefix, in [`CF_RAFT_META`]) telling that a replica's log exists.
const KEY_CREATED: &[u8] = b"created";
/// Key in the data DB's applied-state column family telling that the replica's log lives in
/// the shared DB.
const KEY_SHARED_LOG_MARK: &[u8] = b"shared_raft_log";

/// The key prefix of a partition's log in the shared DB (8 bytes: app id, partition index).
pub fn log_prefix(id: PartitionId) -> Vec<u8> {
    let mut p = Vec::with_capacity(8);
    p.extend_from_slice(&id.app_id.to_be_bytes());
    p.extend_from_slice(&id.partition_index.to_be_bytes());
    p
}

impl RaftLogDb {
    /// Opens (or creates) the shared log DB at `path` and starts its fsync thread.
    pub fn open(path: &Path) -> Result<Self, WingError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(2);
        let mut log = Options::default();
        // Entries live until the next snapshot: a big memtable keeps most of them out of SSTs.
        log.set_write_buffer_size(64 << 20);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_RAFT_LOG, log),
            ColumnFamilyDescriptor::new(CF_RAFT_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|e| WingError::Storage(format!("cannot open {}: {}", path.display(), e.into_string())))?;
        let db = Arc::new(db);
        let syncer = WalSyncer::start_with(db.clone(), "raft-log".into(), fsync_hold())
            .map_err(|e| WingError::Internal(format!("cannot start the raft-log sync thread: {e}")))?;
        Ok(Self { db, syncer })
    }

    /// Deletes every trace of partition `id`'s log (a removed replica, or leftovers under the
    /// id of a replica being created).
    pub fn delete(&self, id: PartitionId) -> Result<(), WingError> {
        delete_group(&self.db, &log_prefix(id))
            .map_err(|e| WingError::Storage(format!("cannot delete the raft log of {id}: {}", e.message())))
    }

    /// The partitions that have a log here (their `created` key).
    pub fn partitions(&self) -> Result<Vec<PartitionId>, WingError> {
        let meta = cf(&self.db, CF_RAFT_META)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(meta, IteratorMode::Start) {
            let (k, _) = item.map_err(|e| WingError::Storage(format!("raft-log DB: {}", e.into_string())))?;
            if k.len() == 8 + KEY_CREATED.len() && k.ends_with(KEY_CREATED) {
                let app_id = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
                let partition_index = u32::from_be_bytes([k[4], k[5], k[6], k[7]]);
                out.push(PartitionId::new(app_id, partition_index));
            }
        }
        Ok(out)
    }

    /// Moves a log kept in the replica's own DB (the layout before the shared log) into the
    /// shared DB, once: copied and synced here first, then removed there.
    pub fn adopt_legacy_log(&self, id: PartitionId, data_db: &DB) -> Result<(), WingError> {
        let storage =
            |e: rocksdb::Error| WingError::Storage(format!("moving the raft log of {id}: {}", e.into_string()));
        let prefix = log_prefix(id);
        let mut batch = WriteBatch::default();
        let mut moved = 0usize;
        for name in [CF_RAFT_LOG, CF_RAFT_META] {
            let (Some(from), to) = (data_db.cf_handle(name), cf(&self.db, name)?) else { continue };
            for item in data_db.iterator_cf(from, IteratorMode::Start) {
                let (k, v) = item.map_err(storage)?;
                let mut key = prefix.clone();
                key.extend_from_slice(&k);
                batch.put_cf(to, key, v);
                moved += 1;
            }
        }
        if moved == 0 {
            return Ok(());
        }
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        self.db.write_opt(batch, &synced).map_err(storage)?;
        let mut clear = WriteBatch::default();
        for name in [CF_RAFT_LOG, CF_RAFT_META] {
            if let Some(from) = data_db.cf_handle(name) {
                clear.delete_range_cf(from, &[][..], &[0xFFu8; 32][..]);
            }
        }
        data_db.write_opt(clear, &synced).map_err(storage)?;
        tracing::info!(partition = %id, keys = moved, "moved the replica's raft log into the shared log DB");
        Ok(())
    }

    /// Copies the raft log and raft meta (vote, committed, purged) of `id` into the replica's
    /// own data DB, in the layout [`Self::adopt_legacy_log`] reads, synced: a replica directory
    /// moved to the trash then holds everything it needs to be opened again, and opening it
    /// moves the log back into this DB. The shared copy is left for the caller to delete.
    pub fn export_to(&self, id: PartitionId, data_db: &DB) -> Result<usize, WingError> {
        let storage =
            |e: rocksdb::Error| WingError::Storage(format!("exporting the raft log of {id}: {}", e.into_string()));
        let prefix = log_prefix(id);
        let mut batch = WriteBatch::default();
        let mut copied = 0usize;
        for name in [CF_RAFT_LOG, CF_RAFT_META] {
            let (from, to) = (cf(&self.db, name)?, cf(data_db, name)?);
            let mode = IteratorMode::From(&prefix, rocksdb::Direction::Forward);
            for item in self.db.iterator_cf(from, mode) {
                let (k, v) = item.map_err(storage)?;
                let Some(own) = k.strip_prefix(prefix.as_slice()) else { break };
                batch.put_cf(to, own, v);
                copied += 1;
            }
        }
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        data_db.write_opt(batch, &synced).map_err(storage)?;
        Ok(copied)
    }

    /// Refuses to start a replica whose log went missing. A replica's data DB carries a mark
    /// once its log lives in the shared DB, and the shared DB a `created` key per replica
    /// (dropped with the rest of its log). Data with the mark but no log means the shared DB
    /// was lost or is not the one it was: starting with an empty log and no vote could let the
    /// replica vote twice in a term, so it stays down, with the reason.
    pub fn check_present(&self, id: PartitionId, data_db: &DB) -> Result<(), WingError> {
        let storage = |e: rocksdb::Error| WingError::Storage(format!("raft log of {id}: {}", e.into_string()));
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        let applied = cf(data_db, CF_APPLIED)?;
        let meta = cf(&self.db, CF_RAFT_META)?;
        let mut created = log_prefix(id);
        created.extend_from_slice(KEY_CREATED);
        let marked = data_db.get_cf(applied, KEY_SHARED_LOG_MARK).map_err(storage)?.is_some();
        let present = self.db.get_cf(meta, &created).map_err(storage)?.is_some();
        if marked && !present {
            return Err(WingError::Corruption(format!(
                "replica {id} has data but its raft log is missing from the shared raft-log DB; \
                 refusing to start it with an empty log and no vote (restore the raft-log dir, or \
                 remove the replica and let the meta re-replicate it)"
            )));
        }
        if !present {
            self.db.put_cf_opt(meta, &created, b"1", &synced).map_err(storage)?;
        }
        if !marked {
            data_db.put_cf_opt(applied, KEY_SHARED_LOG_MARK, b"1", &synced).map_err(storage)?;
        }
        Ok(())
    }

    /// Syncs what is queued and stops the fsync thread (at shutdown, after every replica closed).
    pub fn close(&self) {
        self.syncer.shutdown();
    }
}

/// Tests hold this server's raft-log fsyncs while a file exists:
/// `FAILPOINTS='raft_log::before_fsync=return(/path/to/file)'`. Whether a write commits
/// without a node's flush is then seen, not timed (a leader's own flush is not needed; a
/// follower's answer is).
#[cfg(feature = "failpoints")]
fn fsync_hold() -> Option<BeforeSync> {
    /// What the server logs when the fail point begins holding its raft-log fsyncs.
    const FSYNC_HELD: &str = "raft-log fsync held by a fail point";
    fn hold() {
        fail::fail_point!("raft_log::before_fsync", |file: Option<String>| {
            let Some(file) = file.map(std::path::PathBuf::from) else { return };
            if file.exists() {
                tracing::info!(file = %file.display(), "{FSYNC_HELD}");
            }
            while file.exists() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
    }
    Some(Box::new(hold))
}

#[cfg(not(feature = "failpoints"))]
fn fsync_hold() -> Option<BeforeSync> {
    None
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use wingkv_common::raft::encode;
    use wingkv_common::raft::log_store::RocksLogStore;

    use super::*;
    use crate::raft_types::PartitionRaftConfig;

    type Store = RocksLogStore<PartitionRaftConfig>;

    fn entry(index: u64) -> Entry<PartitionRaftConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    /// Writes entries `range` straight into `db` under `prefix` (what `append` writes).
    fn put_entries(db: &DB, prefix: &[u8], range: std::ops::RangeInclusive<u64>) {
        let cf = db.cf_handle(CF_RAFT_LOG).unwrap();
        for i in range {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&i.to_be_bytes());
            db.put_cf(cf, key, encode(&entry(i)).unwrap()).unwrap();
        }
    }

    #[tokio::test]
    async fn groups_sharing_the_db_see_only_their_own_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLogDb::open(dir.path()).unwrap();
        let (a, b, c) = (PartitionId::new(1, 0), PartitionId::new(1, 1), PartitionId::new(2, 0));
        let store = |id| Store::shared(log.db.clone(), log.syncer.clone(), log_prefix(id));
        let (mut sa, mut sb, mut sc) = (store(a), store(b), store(c));
        put_entries(&log.db, &log_prefix(a), 1..=5);
        put_entries(&log.db, &log_prefix(b), 1..=9);
        sa.save_vote(&Vote::new(3, 7)).await.unwrap();
        sb.save_vote(&Vote::new(4, 8)).await.unwrap();

        assert_eq!(sa.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
        assert_eq!(sb.read_vote().await.unwrap(), Some(Vote::new(4, 8)));
        assert_eq!(sc.read_vote().await.unwrap(), None);
        // The last entry of a group is its own even with a later group right after it.
        assert_eq!(sa.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(5));
        assert_eq!(sb.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(9));
        assert_eq!(sc.get_log_state().await.unwrap().last_log_id, None);
        let read: Vec<u64> = sa.try_get_log_entries(3..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(read, vec![3, 4, 5]);
        let read: Vec<u64> = sb.try_get_log_entries(2..=4).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(read, vec![2, 3, 4]);
        let read: Vec<u64> = sb.try_get_log_entries(8..10).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(read, vec![8, 9]);

        sa.purge(LogId::new(CommittedLeaderId::new(1, 1), 3)).await.unwrap();
        sb.truncate(LogId::new(CommittedLeaderId::new(1, 1), 8)).await.unwrap();
        let left_a: Vec<u64> = sa.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        let left_b: Vec<u64> = sb.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(left_a, vec![4, 5]);
        assert_eq!(left_b, (1..=7).collect::<Vec<_>>());

        log.delete(a).unwrap();
        assert_eq!(sa.read_vote().await.unwrap(), None);
        assert!(sa.try_get_log_entries(0..).await.unwrap().is_empty());
        assert_eq!(sb.read_vote().await.unwrap(), Some(Vote::new(4, 8)), "deleting 1.0 left 1.1 alone");
        assert_eq!(sb.try_get_log_entries(0..).await.unwrap().len(), 7);
        log.close();
    }

    #[tokio::test]
    async fn an_exported_log_is_adopted_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLogDb::open(&dir.path().join("log")).unwrap();
        let data = crate::store::SharedStorage::new(Default::default()).open(&dir.path().join("data")).unwrap();
        let (a, b) = (PartitionId::new(3, 1), PartitionId::new(3, 2));
        let store = |id| Store::shared(log.db.clone(), log.syncer.clone(), log_prefix(id));
        put_entries(&log.db, &log_prefix(a), 1..=4);
        put_entries(&log.db, &log_prefix(b), 1..=2);
        store(a).save_vote(&Vote::new(5, 2)).await.unwrap();
        log.check_present(a, &data).unwrap();
        assert!(log.export_to(a, &data).unwrap() >= 5, "entries and vote copied");
        log.delete(a).unwrap();
        assert_eq!(store(a).read_vote().await.unwrap(), None);
        // Opening the directory again moves it back: same vote, same entries; b untouched.
        log.adopt_legacy_log(a, &data).unwrap();
        log.check_present(a, &data).unwrap();
        assert_eq!(store(a).read_vote().await.unwrap(), Some(Vote::new(5, 2)));
        let read: Vec<u64> = store(a).try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(read, vec![1, 2, 3, 4]);
        assert_eq!(store(b).try_get_log_entries(0..).await.unwrap().len(), 2);
        log.close();
    }

    #[tokio::test]
    async fn a_purge_held_back_by_the_limit_is_done_when_the_log_reopens() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLogDb::open(dir.path()).unwrap();
        let id = PartitionId::new(5, 0);
        let applied = Arc::new(AtomicU64::new(0));
        let limit: wingkv_common::raft::log_store::PurgeLimit = {
            let applied = applied.clone();
            Arc::new(move || Some(applied.load(Ordering::SeqCst)))
        };
        let mut store = Store::shared(log.db.clone(), log.syncer.clone(), log_prefix(id)).with_purge_limit(limit);
        // A fresh replica is sent a snapshot at 39999: openraft purges up to it before the state
        // machine has applied it, then appends what follows.
        store.purge(LogId::new(CommittedLeaderId::new(7, 1), 39_999)).await.unwrap();
        put_entries(&log.db, &log_prefix(id), 40_000..=40_003);
        applied.store(39_999, Ordering::SeqCst);
        // Opened again: the log starts right after what it says it purged (openraft reads the
        // entry after `last_purged` first; a gap there keeps the replica from opening).
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(39_999));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(40_003));
        let first: Vec<u64> =
            store.try_get_log_entries(40_000..=40_000).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(first, vec![40_000]);
        log.close();
    }

    #[test]
    fn a_replica_whose_log_went_missing_stays_down() {
        let dir = tempfile::tempdir().unwrap();
        let data = crate::store::SharedStorage::new(Default::default()).open(&dir.path().join("data")).unwrap();
        let id = PartitionId::new(4, 1);
        let log = RaftLogDb::open(&dir.path().join("log")).unwrap();
        log.check_present(id, &data).unwrap();
        log.check_present(id, &data).unwrap();
        log.close();
        drop(log);
        // The shared DB is lost; the data says the replica had a log there.
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
        let fresh = RaftLogDb::open(&dir.path().join("log")).unwrap();
        assert!(fresh.partitions().unwrap().is_empty());
        let err = fresh.check_present(id, &data).unwrap_err().to_string();
        assert!(err.contains("raft log is missing"), "{err}");
        // A replica created anew (its log deleted first, a new data dir) starts.
        let other = crate::store::SharedStorage::new(Default::default()).open(&dir.path().join("data2")).unwrap();
        fresh.delete(id).unwrap();
        fresh.check_present(id, &other).unwrap();
        assert_eq!(fresh.partitions().unwrap(), vec![id]);
        fresh.delete(id).unwrap();
        assert!(fresh.partitions().unwrap().is_empty());
        fresh.close();
    }

    #[tokio::test]
    async fn a_log_kept_in_the_replica_db_moves_into_the_shared_db() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLogDb::open(&dir.path().join("log")).unwrap();
        let data = crate::store::SharedStorage::new(Default::default()).open(&dir.path().join("data")).unwrap();
        let id = PartitionId::new(3, 2);
        // The old layout: the partition's own DB, keys without a prefix.
        put_entries(&data, &[], 1..=4);
        let meta = data.cf_handle(CF_RAFT_META).unwrap();
        data.put_cf(meta, b"vote", encode(&Vote::<u64>::new(2, 5)).unwrap()).unwrap();

        log.adopt_legacy_log(id, &data).unwrap();
        let mut s = Store::shared(log.db.clone(), log.syncer.clone(), log_prefix(id));
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 5)));
        assert_eq!(s.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(4));
        let old = data.cf_handle(CF_RAFT_LOG).unwrap();
        assert!(data.iterator_cf(old, IteratorMode::Start).next().is_none(), "the old copy is gone");
        // A second start finds nothing left to move and keeps the shared copy.
        log.adopt_legacy_log(id, &data).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 5)));
        log.close();
    }
}
