//! A raft log store on RocksDB, generic over the raft type config so that the meta server and
//! every partition replica use the same code.
//!
//! Layout: column family [`CF_RAFT_LOG`] maps `prefix ++ big-endian log index` to the bincode
//! entry; [`CF_RAFT_META`] holds `prefix ++ name` → the vote, the committed log id and the last
//! purged log id. The prefix tells groups apart when several share one DB: a replica server keeps
//! the logs of all its partition replicas in one RocksDB, so that one fsync of one WAL commits
//! the appends of every group at once (as Pegasus's shared log and TiKV's raft engine do); the
//! meta server's group has the DB to itself and an empty prefix. Appends are written unsynced and
//! acknowledged by the [`WalSyncer`] after one group fsync.
//!
//! What can wait on the disk runs on a blocking thread, never on the async runtime, whose few
//! threads drive the raft cores of every group of the process: the synced writes (vote,
//! truncation), purges and the scan at open. The fsync of appends runs on the [`WalSyncer`]
//! thread. Three calls stay on the runtime, measured (BENCHMARKS.md, "Storage off the
//! runtime"): the unsynced write of an append, the unsynced committed id and the reads of
//! entries to replicate. Each is a memtable write or a read of entries just written (memtable or
//! block cache), and moving them to blocking threads cost 30 % of write throughput on these
//! 2 cores (4,106 against 5,851 puts/s in the YCSB load).

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError, Vote};
use rocksdb::{ColumnFamily, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wal_sync::WalSyncer;
use super::{decode, encode, read_err, write_err, NodeId, CF_RAFT_LOG, CF_RAFT_META};
use crate::WingError;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// A purge the limit held back (see [`RocksLogStore::with_purge_limit`]), completed once the
/// limit allows it.
const KEY_PENDING_PURGE: &[u8] = b"pending_purge";

/// The highest log index the log may be purged up to (the state machine's durable applied
/// index, when it lives in the same DB).
pub type PurgeLimit = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// The raft log of one group, stored in RocksDB.
pub struct RocksLogStore<C> {
    db: Arc<DB>,
    syncer: WalSyncer,
    prefix: Arc<[u8]>,
    purge_limit: Option<PurgeLimit>,
    _config: PhantomData<C>,
}

impl<C> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            syncer: self.syncer.clone(),
            prefix: self.prefix.clone(),
            purge_limit: self.purge_limit.clone(),
            _config: PhantomData,
        }
    }
}

fn prefixed(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + suffix.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(suffix);
    k
}

/// Deletes every log entry and meta key of the group `prefix` from `db` (a removed replica's
/// log, or leftovers under the prefix of a replica created anew). Synced.
pub fn delete_group(db: &DB, prefix: &[u8]) -> Result<(), WingError> {
    let mut batch = WriteBatch::default();
    for name in [CF_RAFT_LOG, CF_RAFT_META] {
        let cf = db.cf_handle(name).ok_or_else(|| WingError::Storage(format!("column family {name} is missing")))?;
        match prefix_end(prefix) {
            Some(end) => batch.delete_range_cf(cf, prefix, &end),
            None => batch.delete_range_cf(cf, prefix, &[0xFFu8; 17][..]),
        }
    }
    Ok(db.write_opt(batch, &synced())?)
}

/// The first key after every key that starts with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

impl<C> RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
    Entry<C>: Serialize + DeserializeOwned,
{
    /// A log store that has `db` to itself; `db` must have been opened with [`CF_RAFT_LOG`]
    /// and [`CF_RAFT_META`]. `syncer` is the group-commit thread of `db`.
    pub fn new(db: Arc<DB>, syncer: WalSyncer) -> Self {
        Self::shared(db, syncer, Vec::new())
    }

    /// The log of the group `prefix` in a DB that several groups share (see the module doc).
    /// Every group of one DB needs a prefix of the same length, so no prefix starts another.
    pub fn shared(db: Arc<DB>, syncer: WalSyncer, prefix: Vec<u8>) -> Self {
        Self { db, syncer, prefix: prefix.into(), purge_limit: None, _config: PhantomData }
    }

    fn index_key(&self, index: u64) -> Vec<u8> {
        prefixed(&self.prefix, &index.to_be_bytes())
    }

    /// The log index of a key of this group, `None` for another group's key.
    fn index_of(&self, key: &[u8]) -> Option<u64> {
        let rest = key.strip_prefix(&*self.prefix)?;
        Some(u64::from_be_bytes(rest.try_into().ok()?))
    }

    /// Never purges past what `limit` answers. openraft may purge the log up to a snapshot it
    /// is still installing; a crash then must not leave the log purged past the applied state.
    pub fn with_purge_limit(mut self, limit: PurgeLimit) -> Self {
        self.purge_limit = Some(limit);
        self
    }

    /// Runs `f` on a clone of this store on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, StorageError<NodeId>> + Send + 'static,
    ) -> Result<T, StorageError<NodeId>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| write_err(format!("raft log task failed: {e}")))?
    }

    fn entry_log_id(&self, index: u64) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let cf = self.log_cf()?;
        match self.db.get_cf(cf, self.index_key(index)).map_err(read_err)? {
            Some(v) => Ok(Some(decode::<Entry<C>>(&v).map_err(read_err)?.log_id)),
            None => Ok(None),
        }
    }

    fn log_cf(&self) -> Result<&ColumnFamily, StorageError<NodeId>> {
        self.db.cf_handle(CF_RAFT_LOG).ok_or_else(|| read_err("column family raft_log is missing"))
    }

    fn meta_cf(&self) -> Result<&ColumnFamily, StorageError<NodeId>> {
        self.db.cf_handle(CF_RAFT_META).ok_or_else(|| read_err("column family raft_meta is missing"))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
        let cf = self.meta_cf()?;
        match self.db.get_cf(cf, prefixed(&self.prefix, key)).map_err(read_err)? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), StorageError<NodeId>> {
        let cf = self.meta_cf()?;
        let bytes = encode(value).map_err(write_err)?;
        let opts = if sync { synced() } else { WriteOptions::default() };
        self.db.put_cf_opt(cf, prefixed(&self.prefix, key), bytes, &opts).map_err(write_err)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let cf = self.log_cf()?;
        let last = self.index_key(u64::MAX);
        // Bounded to this group: entries of another group that were deleted but not yet
        // compacted away would otherwise be stepped over one by one.
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(self.prefix.to_vec());
        let mut it = self.db.iterator_cf_opt(cf, opts, IteratorMode::From(&last, Direction::Reverse));
        match it.next() {
            Some(Ok((k, v))) if self.index_of(&k).is_some() => {
                let entry: Entry<C> = decode(&v).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
            Some(Err(e)) => Err(read_err(e)),
            _ => Ok(None),
        }
    }
}

impl<C> RaftLogReader<C> for RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
    Entry<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<NodeId>> {
        // On the runtime: recent entries, from the memtable or the block cache (module doc).
        self.read_entries((range.start_bound().cloned(), range.end_bound().cloned()))
    }
}

impl<C> RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
    Entry<C>: Serialize + DeserializeOwned,
{
    /// The entries of `range` (blocking).
    fn read_entries(
        &self,
        range: (std::ops::Bound<u64>, std::ops::Bound<u64>),
    ) -> Result<Vec<Entry<C>>, StorageError<NodeId>> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.log_cf()?;
        let mut out = Vec::new();
        let from = self.index_key(start);
        // Bounded to the range: without an upper bound, finding that the range ended means
        // stepping over every deleted (purged, not yet compacted) entry that follows it, which
        // in a shared DB is the purged head of the next group's log.
        let mut opts = ReadOptions::default();
        let upper = match range.end_bound() {
            Bound::Included(&e) if e < u64::MAX => Some(self.index_key(e + 1)),
            Bound::Excluded(&e) => Some(self.index_key(e)),
            _ => prefix_end(&self.prefix),
        };
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper);
        }
        let it = self.db.iterator_cf_opt(cf, opts, IteratorMode::From(&from, Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(read_err)?;
            let Some(idx) = self.index_of(&k) else { break };
            if !range.contains(&idx) {
                break;
            }
            out.push(decode(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl<C> RaftLogStorage<C> for RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
    Entry<C>: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<NodeId>> {
        self.blocking(|store| store.log_state()).await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.blocking(move |store| store.put_meta(KEY_VOTE, &vote, true)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.blocking(|store| store.get_meta(KEY_VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Not synced: a lost committed id only means re-applying from the state machine's own
        // applied index, which is always safe. A memtable write, on the runtime (module doc).
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.blocking(|store| Ok(store.get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The unsynced write on the runtime, the fsync on the syncer's thread (module doc).
        let cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, self.index_key(entry.log_id.index), encode(&entry).map_err(write_err)?);
        }
        self.db.write(batch).map_err(write_err)?;
        self.syncer.sync_then(move |r| callback.log_io_completed(r));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |store| {
            let cf = store.log_cf()?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, store.index_key(log_id.index), store.index_key(u64::MAX));
            batch.delete_cf(cf, store.index_key(u64::MAX));
            store.db.write_opt(batch, &synced()).map_err(write_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |store| store.purge_blocking(log_id)).await
    }
}

impl<C> RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
    Entry<C>: Serialize + DeserializeOwned,
{
    /// What [`RaftLogStorage::get_log_state`] answers (blocking).
    fn log_state(&self) -> Result<LogState<C>, StorageError<NodeId>> {
        // A purge held back by the limit is done now if the state machine has applied that far,
        // so the log on disk starts right after what it says it purged: a replica that installed
        // a snapshot and appended after it must not reopen with a gap before its first entry.
        if let Some(pending) = self.get_meta::<LogId<NodeId>>(KEY_PENDING_PURGE)? {
            if self.purge_limit.as_ref().and_then(|f| f()).is_none_or(|limit| limit >= pending.index) {
                self.purge_through(pending)?;
            }
        }
        let last_purged: Option<LogId<NodeId>> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    /// What [`RaftLogStorage::purge`] does (blocking).
    fn purge_blocking(&self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        if let Some(limit) = self.purge_limit.as_ref().and_then(|f| f()) {
            if log_id.index > limit {
                // Purge only what is applied; the rest is remembered and done by a later purge,
                // or when the log is opened again (`get_log_state`).
                self.put_meta(KEY_PENDING_PURGE, &log_id, false)?;
                return match self.entry_log_id(limit)? {
                    Some(applied) => self.purge_range(applied),
                    None => Ok(()),
                };
            }
        }
        self.purge_through(log_id)
    }
}

impl<C> RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
    Entry<C>: Serialize + DeserializeOwned,
{
    /// Purges through `log_id`, and forgets a held-back purge that this one covers.
    fn purge_through(&self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let pending: Option<LogId<NodeId>> = self.get_meta(KEY_PENDING_PURGE)?;
        self.purge_range(log_id)?;
        if pending.is_some_and(|p| p.index <= log_id.index) {
            let meta = self.meta_cf()?;
            self.db.delete_cf(meta, prefixed(&self.prefix, KEY_PENDING_PURGE)).map_err(write_err)?;
        }
        Ok(())
    }

    fn purge_range(&self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let cf = self.log_cf()?;
        let meta = self.meta_cf()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, prefixed(&self.prefix, KEY_LAST_PURGED), encode(&log_id).map_err(write_err)?);
        batch.delete_range_cf(cf, self.index_key(0), self.index_key(log_id.index.saturating_add(1)));
        self.db.write(batch).map_err(write_err)
    }
}
