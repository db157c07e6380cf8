//! A raft log store on RocksDB, generic over the raft type config so that the meta server and
//! every partition replica use the same code.
//!
//! Layout: column family [`CF_RAFT_LOG`] maps the big-endian log index to the bincode entry;
//! [`CF_RAFT_META`] holds the vote, the committed log id and the last purged log id. Appends are
//! written unsynced and acknowledged by the [`WalSyncer`] after one group fsync.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError, Vote};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wal_sync::WalSyncer;
use super::{decode, encode, read_err, write_err, NodeId, CF_RAFT_LOG, CF_RAFT_META};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The highest log index the log may be purged up to (the state machine's durable applied
/// index, when it lives in the same DB).
pub type PurgeLimit = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// The raft log of one group, stored in RocksDB.
pub struct RocksLogStore<C> {
    db: Arc<DB>,
    syncer: WalSyncer,
    purge_limit: Option<PurgeLimit>,
    _config: PhantomData<C>,
}

impl<C> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            syncer: self.syncer.clone(),
            purge_limit: self.purge_limit.clone(),
            _config: PhantomData,
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
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
    /// A log store on `db`, which must have been opened with [`CF_RAFT_LOG`] and
    /// [`CF_RAFT_META`]. `syncer` is the group-commit thread of `db`.
    pub fn new(db: Arc<DB>, syncer: WalSyncer) -> Self {
        Self { db, syncer, purge_limit: None, _config: PhantomData }
    }

    /// Never purges past what `limit` answers. openraft may purge the log up to a snapshot it
    /// is still installing; a crash then must not leave the log purged past the applied state.
    pub fn with_purge_limit(mut self, limit: PurgeLimit) -> Self {
        self.purge_limit = Some(limit);
        self
    }

    fn entry_log_id(&self, index: u64) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let cf = self.log_cf()?;
        match self.db.get_cf(cf, index_key(index)).map_err(read_err)? {
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
        match self.db.get_cf(cf, key).map_err(read_err)? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), StorageError<NodeId>> {
        let cf = self.meta_cf()?;
        let bytes = encode(value).map_err(write_err)?;
        let opts = if sync { synced() } else { WriteOptions::default() };
        self.db.put_cf_opt(cf, key, bytes, &opts).map_err(write_err)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let cf = self.log_cf()?;
        let mut it = self.db.iterator_cf(cf, IteratorMode::End);
        match it.next() {
            Some(Ok((_, v))) => {
                let entry: Entry<C> = decode(&v).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
            Some(Err(e)) => Err(read_err(e)),
            None => Ok(None),
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
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.log_cf()?;
        let mut out = Vec::new();
        let it = self.db.iterator_cf(cf, IteratorMode::From(&index_key(start), Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(read_err)?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(read_err)?);
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
        let last_purged: Option<LogId<NodeId>> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Not synced: a lost committed id only means re-applying from the state machine's own
        // applied index, which is always safe.
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), encode(&entry).map_err(write_err)?);
        }
        self.db.write(batch).map_err(write_err)?;
        self.syncer.sync_then(move |r| callback.log_io_completed(r));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }

    async fn purge(&mut self, mut log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        if let Some(limit) = self.purge_limit.as_ref().and_then(|f| f()) {
            if log_id.index > limit {
                // Purge only what is applied; a later purge takes the rest.
                match self.entry_log_id(limit)? {
                    Some(id) => log_id = id,
                    None => return Ok(()),
                }
            }
        }
        let cf = self.log_cf()?;
        let meta = self.meta_cf()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, KEY_LAST_PURGED, encode(&log_id).map_err(write_err)?);
        batch.delete_range_cf(cf, index_key(0), index_key(log_id.index.saturating_add(1)));
        self.db.write(batch).map_err(write_err)
    }
}
