//! The raft state machine of a partition: applies committed commands to the replica's RocksDB
//! (one WriteBatch per applied batch of entries), ingests bulk-load files at their log index,
//! and manages its snapshots.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use rocksdb::DB;
use tokio_util::task::task_tracker::TaskTrackerToken;
use wingkv_common::backoff::BackoffPolicy;
use wingkv_common::bulk_load::FileMeta;
use wingkv_common::raft::versioned::Versioned;
use wingkv_common::raft::{encode, read_err, write_err, NodeId};
use wingkv_common::{PartitionId, WingError};

use crate::bulk_load::ingest::{ingest_files, record_ingested_at};
use crate::bulk_load::loader::BulkLoadSource;
use crate::bulk_load::slot::BulkLoadSlot;
use crate::bulk_load::source::FileSource;
use crate::command::{BatchView, Command, CommandResponse};
use crate::log_clock::LogClock;
use crate::raft_types::PartitionRaftConfig;
use crate::snapshot::{
    log_clock_of_snapshot, read_applied, AppliedState, PartitionSnapshotMeta, SnapshotDir, KEY_INGESTED_JOB,
    KEY_LAST_APPLIED, KEY_LOG_CLOCK, KEY_MEMBERSHIP,
};
use crate::store::{cf, CF_APPLIED};

type SmResult<T> = Result<T, StorageError<NodeId>>;

/// Finds the other members of the group that may hold a job's files (see
/// [`crate::bulk_load::source::PeerFiles`]): the state machine asks for them when an ingestion
/// lacks its files.
pub type PeerSource = Arc<dyn Fn(&BulkLoadSource) -> Arc<dyn FileSource> + Send + Sync>;

/// What the state machine needs for bulk-load ingestions.
pub struct IngestEnv {
    /// The replica's one owner of bulk-load files.
    pub slot: Arc<BulkLoadSlot>,
    /// The members that may hold a job's files.
    pub peers: PeerSource,
    /// Backoff between two attempts of an ingestion that failed locally (disk, I/O).
    pub retry: BackoffPolicy,
    /// The replica's DB was created with `allow_ingest_behind`.
    pub allow_ingest_behind: bool,
}

/// State machine of one partition replica.
pub struct PartitionStateMachine {
    /// The partition, for logs and its fail points.
    id: PartitionId,
    db: Arc<DB>,
    /// The partition's log clock, advanced by the stamps this state machine applies.
    clock: LogClock,
    snapshots: SnapshotDir,
    ingest: IngestEnv,
    /// Held for as long as openraft's state-machine worker owns this state machine: the
    /// replica's close waits for it (openraft's shutdown joins only its core).
    alive: TaskTrackerToken,
}

async fn blocking<T, F>(f: F) -> Result<T, WingError>
where
    F: FnOnce() -> Result<T, WingError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| WingError::Internal(format!("blocking task failed: {e}")))?
}

impl PartitionStateMachine {
    /// The state machine over `db`, with snapshots in `snapshots`. `alive` is held by the
    /// state machine and by each snapshot build, so that their owner can await them.
    pub fn new(
        id: PartitionId,
        db: Arc<DB>,
        clock: LogClock,
        snapshots: SnapshotDir,
        ingest: IngestEnv,
        alive: TaskTrackerToken,
    ) -> Self {
        Self { id, db, clock, snapshots, ingest, alive }
    }

    /// Applies entries that hold no ingestion on a blocking thread: their reads and their
    /// write batch (a RocksDB write can stall for seconds) never hold a runtime thread that
    /// every partition's raft core shares.
    // openraft's StorageError is large by design; it is what the state machine traits return.
    #[allow(clippy::result_large_err)]
    async fn apply_run(&self, run: Vec<Entry<PartitionRaftConfig>>) -> SmResult<Vec<CommandResponse>> {
        if run.is_empty() {
            return Ok(Vec::new());
        }
        let (db, id, clock) = (self.db.clone(), self.id, self.clock.clone());
        // Held by the blocking apply itself: should openraft drop this future mid-apply, the
        // replica's close still waits for the write to end before its files are touched.
        let alive = self.alive.clone();
        tokio::task::spawn_blocking(move || {
            let _alive = alive;
            apply_entries(id, &db, &clock, run)
        })
        .await
        .map_err(|e| write_err(format!("partition {id}: apply task failed: {e}")))?
    }

    /// Applies one `IngestSst` entry (everything before it is applied and written already).
    async fn apply_ingest(&self, entry: Entry<PartitionRaftConfig>) -> SmResult<CommandResponse> {
        let log_id = entry.log_id;
        let EntryPayload::Normal(Versioned(Command::IngestSst { source, files, ingest_behind })) = entry.payload else {
            return Err(write_err(format!("partition {}: entry {log_id} is not an ingestion", self.id)));
        };
        let apply_err = |e: WingError| StorageIOError::apply(log_id, AnyError::error(e));
        // A job is ingested once: a second proposal (a new primary retrying) is a no-op, so it
        // cannot put old rows over newer writes.
        let (db, job_id) = (self.db.clone(), source.job_id);
        if blocking(move || is_ingested(&db, job_id)).await.map_err(apply_err)? {
            let db = self.db.clone();
            let recorded =
                blocking(move || write_applied(&db, rocksdb::WriteBatch::default(), Some(log_id), None, None));
            recorded.await.map_err(apply_err)?;
            return Ok(CommandResponse::Done);
        }
        // Race window: the entry is committed, this replica has not ingested yet.
        fail::fail_point!("bulk_load::before_ingest_apply");
        Ok(self.ingest(&source, &files, ingest_behind, log_id).await.map_err(apply_err)?)
    }

    /// Ingests a job's files at `log_id` and records it (the ingested-job mark and the applied
    /// index, synced). Files this replica lacks, or holds with other content, are fetched from
    /// the group's other members first — never from the provider, which may have dropped them.
    /// A local failure (disk, I/O) is retried with backoff until it succeeds or the replica
    /// closes; it never makes this replica skip an entry the others apply. RocksDB refusing
    /// the files themselves (`Corruption`: their bytes were verified by their digest on this disk, so
    /// every replica holds the same bytes and is refused alike) answers `Refused`.
    async fn ingest(
        &self,
        source: &BulkLoadSource,
        files: &[FileMeta],
        ingest_behind: bool,
        log_id: LogId<NodeId>,
    ) -> Result<CommandResponse, WingError> {
        let mut backoff = self.ingest.retry.start();
        loop {
            if ingest_behind && !self.ingest.allow_ingest_behind {
                // Never skipped here while the others ingest: this replica waits, loudly, for an
                // operator (the primary refuses such a job before proposing it; only a replica
                // re-created after the table env changed can meet this).
                let delay = backoff.next_delay();
                tracing::error!(
                    job = source.job_id,
                    "cannot ingest behind: this replica's DB was created without rocksdb.allow_ingest_behind"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = self.ingest.slot.closing() => {
                        return Err(WingError::Unavailable("replica closing during an ingestion".into()))
                    }
                }
            }
            let peers = (self.ingest.peers)(source);
            let held = self.ingest.slot.fetch_for_ingest(source, files, peers).await?;
            let (db, snapshots, files2, dir) =
                (self.db.clone(), self.snapshots.clone(), files.to_vec(), held.dir.clone());
            let job_id = source.job_id;
            let done = blocking(move || {
                let _no_snapshot = snapshots.exclusive();
                match ingest_files(&db, &dir, &files2, ingest_behind) {
                    Ok(()) => {}
                    Err(WingError::Corruption(reason)) => return Ok(CommandResponse::Refused(reason)),
                    Err(e) => return Err(e),
                }
                // The job's files stay (hard links of what RocksDB took) until no member may
                // need them (see `bulk_load::tidy`). Recorded before the mark, which comes last:
                // nothing can fail after it.
                record_ingested_at(&dir, log_id.index)?;
                let mut marker = rocksdb::WriteBatch::default();
                let applied = cf(&db, CF_APPLIED)?;
                marker.put_cf(applied, KEY_INGESTED_JOB, job_id.to_be_bytes());
                marker.put_cf(
                    applied,
                    KEY_LAST_APPLIED,
                    encode(&Some(log_id)).map_err(|e| WingError::Internal(format!("encode applied log id: {e}")))?,
                );
                let mut opts = rocksdb::WriteOptions::default();
                opts.set_sync(true);
                db.write_opt(marker, &opts)?;
                Ok(CommandResponse::Done)
            })
            .await;
            drop(held);
            match done {
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!(job = job_id, ?delay, "bulk-load ingestion failed here, retrying: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // The next attempt finds the slot closed and ends the apply.
                        _ = self.ingest.slot.closing() => {}
                    }
                }
            }
        }
    }
}

/// Applies `entries` (none an ingestion) as one write batch with the applied state (blocking).
// openraft's StorageError is large by design; it is what the state machine traits return.
#[allow(clippy::result_large_err)]
fn apply_entries(
    id: PartitionId,
    db: &DB,
    clock: &LogClock,
    entries: Vec<Entry<PartitionRaftConfig>>,
) -> SmResult<Vec<CommandResponse>> {
    // A stalled disk under one partition's client writes, in tests:
    // `FAILPOINTS='apply::1.0=sleep(3000)'`.
    #[cfg(feature = "failpoints")]
    if entries.iter().any(|e| matches!(e.payload, EntryPayload::Normal(_))) {
        fail::fail_point!(&format!("apply::{id}"));
    }
    let mut view = BatchView::new(db);
    let mut responses = Vec::with_capacity(entries.len());
    let mut last = None;
    let mut membership = None;
    let mut stamp = None;
    for entry in entries {
        if let EntryPayload::Normal(Versioned(Command::Stamped { now, .. })) = &entry.payload {
            stamp = stamp.max(Some(*now)).filter(|s| *s > clock.get());
        }
        let resp = match entry.payload {
            EntryPayload::Blank => CommandResponse::Done,
            EntryPayload::Normal(cmd) => view
                .apply(&cmd)
                .map_err(|e| StorageIOError::apply(entry.log_id, AnyError::error(format!("partition {id}: {e}"))))?,
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m));
                CommandResponse::Done
            }
        };
        last = Some(entry.log_id);
        responses.push(resp);
    }
    write_applied(db, view.into_batch(), last, membership, stamp).map_err(write_err)?;
    if let Some(stamp) = stamp {
        clock.advance(stamp);
    }
    Ok(responses)
}

/// Writes `batch` with the applied state up to `last` and the log clock advanced to `stamp`
/// (blocking).
fn write_applied(
    db: &DB,
    mut batch: rocksdb::WriteBatch,
    last: Option<LogId<NodeId>>,
    membership: Option<StoredMembership<NodeId, BasicNode>>,
    stamp: Option<u32>,
) -> Result<(), WingError> {
    let applied = cf(db, CF_APPLIED)?;
    if let Some(stamp) = stamp {
        batch.put_cf(applied, KEY_LOG_CLOCK, stamp.to_be_bytes());
    }
    if let Some(l) = last {
        batch.put_cf(
            applied,
            KEY_LAST_APPLIED,
            encode(&Some(l)).map_err(|e| WingError::Internal(format!("encode applied log id: {e}")))?,
        );
    }
    if let Some(m) = membership {
        batch.put_cf(
            applied,
            KEY_MEMBERSHIP,
            encode(&m).map_err(|e| WingError::Internal(format!("encode membership: {e}")))?,
        );
    }
    // Not synced: the raft log is durable, and RocksDB recovers a prefix of the WAL, so a
    // crash loses at most applied state that is re-applied from the log.
    Ok(db.write(batch)?)
}

/// Whether bulk-load job `job_id` was ingested into this replica, or superseded by a newer job
/// (whose ingestion makes an older job's late `IngestSst` a no-op on every replica alike).
pub fn is_ingested(db: &DB, job_id: u64) -> Result<bool, WingError> {
    Ok(job_id <= crate::snapshot::ingested_job(db)?)
}

async fn open_snapshot(meta: PartitionSnapshotMeta, path: PathBuf) -> SmResult<Snapshot<PartitionRaftConfig>> {
    let file = tokio::fs::File::open(&path).await.map_err(|e| read_err(format!("open {}: {e}", path.display())))?;
    Ok(Snapshot { meta, snapshot: Box::new(file) })
}

/// Builds snapshots from a consistent view of the replica's RocksDB.
pub struct PartitionSnapshotBuilder {
    db: Arc<DB>,
    snapshots: SnapshotDir,
    /// Held while the build runs (openraft runs it on a task of its own).
    _alive: TaskTrackerToken,
}

impl RaftSnapshotBuilder<PartitionRaftConfig> for PartitionSnapshotBuilder {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<PartitionRaftConfig>> {
        let (db, dir) = (self.db.clone(), self.snapshots.clone());
        let (meta, path) = blocking(move || dir.build(&db)).await.map_err(write_err)?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        open_snapshot(meta, path).await
    }
}

impl RaftStateMachine<PartitionRaftConfig> for PartitionStateMachine {
    type SnapshotBuilder = PartitionSnapshotBuilder;

    async fn applied_state(&mut self) -> SmResult<AppliedState> {
        read_applied(&self.db).map_err(read_err)
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<CommandResponse>>
    where
        I: IntoIterator<Item = Entry<PartitionRaftConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut run = Vec::new();
        for entry in entries {
            if matches!(entry.payload, EntryPayload::Normal(Versioned(Command::IngestSst { .. }))) {
                // Everything before the ingestion is written first, so the ingested rows land
                // after it, at the same log index on every replica.
                responses.extend(self.apply_run(std::mem::take(&mut run)).await?);
                responses.push(self.apply_ingest(entry).await?);
            } else {
                run.push(entry);
            }
        }
        responses.extend(self.apply_run(run).await?);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSnapshotBuilder { db: self.db.clone(), snapshots: self.snapshots.clone(), _alive: self.alive.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<tokio::fs::File>> {
        let path = self.snapshots.receiving_path();
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| write_err(format!("create {}: {e}", path.display())))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(&mut self, meta: &PartitionSnapshotMeta, snapshot: Box<tokio::fs::File>) -> SmResult<()> {
        wingkv_common::bulk_load::validate_file_name(&meta.snapshot_id).map_err(write_err)?;
        snapshot.sync_all().await.map_err(write_err)?;
        // The file openraft hands back is the one this stream wrote; find its path through the
        // descriptor, so a newer stream that began meanwhile cannot swap files under us.
        let path = {
            use std::os::fd::AsRawFd;
            std::fs::read_link(format!("/proc/self/fd/{}", snapshot.as_raw_fd())).map_err(write_err)?
        };
        drop(snapshot);
        let (db, dir, meta2) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        blocking(move || {
            // A slow copy to a new replica, in tests: `FAILPOINTS='snapshot::install=sleep(4000)'`
            // (on a blocking thread, as the install itself).
            fail::fail_point!("snapshot::install");
            dir.install(&db, &meta2, &path)
        })
        .await
        .map_err(write_err)?;
        self.clock.reset(log_clock_of_snapshot(&meta.snapshot_id));
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<PartitionRaftConfig>>> {
        match self.snapshots.current().map_err(read_err)? {
            Some((meta, path)) => Ok(Some(open_snapshot(meta, path).await?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use wingkv_common::bulk_load::BulkLoadMetadata;
    use wingkv_common::file_digest::FileDigest;
    use wingkv_common::key::encode_key;
    use wingkv_common::provider::{open_provider, ProviderConfig};
    use wingkv_common::value::encode_value;
    use wingkv_proto::replica_admin::BulkLoadAction;

    use super::*;
    use crate::bulk_load::ingest::ingested_at;
    use crate::bulk_load::job_dir;
    use crate::bulk_load::source::ProviderFiles;
    use crate::bulk_load::BulkLoadEnv;
    use crate::config::{BulkLoadConfig, StorageConfig};
    use crate::store::{data_cf, SharedStorage};

    fn entry(index: u64, cmd: Command) -> Entry<PartitionRaftConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(Versioned(cmd)) }
    }

    /// A remote partition directory `bl/onebox/t/0` holding one SST of `keys` (value "bulk"),
    /// written the way any producer would, with its metadata.
    fn remote_partition(keys: &[&str]) -> (tempfile::TempDir, FileMeta) {
        let remote = tempfile::tempdir().unwrap();
        let pdir = remote.path().join("bl/onebox/t/0");
        std::fs::create_dir_all(&pdir).unwrap();
        let sst = pdir.join("0.sst");
        {
            let opts = rocksdb::Options::default();
            let mut w = rocksdb::SstFileWriter::create(&opts);
            w.open(&sst).unwrap();
            for k in keys {
                w.put(encode_key(k.as_bytes(), b"").unwrap(), encode_value(0, b"bulk")).unwrap();
            }
            w.finish().unwrap();
        }
        let bytes = std::fs::read(&sst).unwrap();
        let file = FileMeta { name: "0.sst".into(), size: bytes.len() as u64, digest: FileDigest::md5_of(&bytes) };
        let meta = BulkLoadMetadata { files: vec![file.clone()], file_total_size: file.size };
        std::fs::write(pdir.join("bulk_load_metadata"), serde_json::to_vec(&meta).unwrap()).unwrap();
        (remote, file)
    }

    struct Fixture {
        replica: tempfile::TempDir,
        db: Arc<DB>,
        sm: PartitionStateMachine,
        slot: Arc<BulkLoadSlot>,
        alive: tokio_util::task::TaskTracker,
    }

    /// A state machine on a fresh replica dir. What stands for the group's other members here
    /// is `peers` (the real ones answer over RPC: see the integration tests); by default the
    /// files at `remote`.
    fn state_machine(remote: &std::path::Path, peers: Option<Arc<dyn FileSource>>) -> Fixture {
        let replica = tempfile::tempdir().unwrap();
        let db = SharedStorage::new(StorageConfig::default()).open(&replica.path().join("db")).unwrap();
        let mut config =
            BulkLoadConfig { provider: ProviderConfig::local(remote), min_free_disk_bytes: 0, ..Default::default() };
        config.retry = BackoffPolicy::new(Duration::from_millis(10), Duration::from_millis(100));
        let env = Arc::new(BulkLoadEnv::new(&config).unwrap());
        let snapshots = SnapshotDir::open(replica.path().join("snapshot")).unwrap();
        let slot = Arc::new(BulkLoadSlot::new(replica.path().to_path_buf(), env.clone()));
        let peers = peers.unwrap_or_else(|| {
            let store = open_provider("local", &env.provider).unwrap();
            Arc::new(ProviderFiles::new(store, "bl/onebox/t/0").unwrap())
        });
        let ingest = IngestEnv {
            slot: slot.clone(),
            peers: Arc::new(move |_| peers.clone()),
            retry: config.retry,
            allow_ingest_behind: false,
        };
        let alive = tokio_util::task::TaskTracker::new();
        let sm = PartitionStateMachine::new(
            PartitionId::new(1, 0),
            db.clone(),
            LogClock::default(),
            snapshots,
            ingest,
            alive.token(),
        );
        Fixture { replica, db, sm, slot, alive }
    }

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: Bytes::from(encode_key(k.as_bytes(), b"").unwrap()),
            value: Bytes::from(encode_value(0, v.as_bytes())),
        }
    }

    fn get(db: &DB, k: &str) -> Option<String> {
        let v = db.get_cf(data_cf(db).unwrap(), encode_key(k.as_bytes(), b"").unwrap()).unwrap()?;
        Some(String::from_utf8(v[4..].to_vec()).unwrap())
    }

    fn source(job_id: u64) -> BulkLoadSource {
        BulkLoadSource { job_id, provider: "local".into(), partition_dir: "bl/onebox/t/0".into() }
    }

    fn ingest_cmd(job: u64, file: &FileMeta) -> Command {
        Command::IngestSst { source: source(job), files: vec![file.clone()], ingest_behind: false }
    }

    #[tokio::test]
    async fn ingest_lands_between_the_writes_around_it_and_keeps_the_files_for_members() {
        let (remote, file) = remote_partition(&["k1", "k2", "k3"]);
        let mut f = state_machine(remote.path(), None);
        let entries = vec![entry(1, put("k1", "before")), entry(2, ingest_cmd(1, &file)), entry(3, put("k2", "after"))];
        // The replica never downloaded the files: apply fetches and verifies them first.
        let out = f.sm.apply(entries).await.unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(get(&f.db, "k1").as_deref(), Some("bulk"), "the ingest comes after the write before it");
        assert_eq!(get(&f.db, "k2").as_deref(), Some("after"), "the write after the ingest wins");
        assert_eq!(get(&f.db, "k3").as_deref(), Some("bulk"));
        assert_eq!(read_applied(&f.db).unwrap().0.map(|l| l.index), Some(3));
        // The verified files stay, for members that still have to ingest them.
        let dir = job_dir(f.replica.path(), 1);
        assert_eq!(ingested_at(&dir), Some(2));
        assert!(f.slot.held_file(1, "0.sst").is_some());
        // The meta's next job does not take them away either.
        f.slot.act(1, &source(2), BulkLoadAction::BlDownload).await.unwrap();
        assert!(f.slot.held_file(1, "0.sst").is_some(), "a new job removed files members may need");
    }

    /// A leader applies an entry once two followers have it on disk, maybe before its own
    /// fsync (third_party/openraft/WINGKV.md). A power loss can then leave its state machine
    /// ahead of its log. Opened again, openraft purges the log up to what was applied: the log
    /// reads as one that ends there, and the data written stays.
    #[tokio::test]
    async fn a_state_machine_ahead_of_its_log_opens_with_the_log_purged_to_it() {
        use openraft::storage::{RaftLogReader, RaftLogStorage, StorageHelper};
        use openraft::RaftState;

        use crate::raft_log::{log_prefix, RaftLogDb};

        let remote = tempfile::tempdir().unwrap();
        let mut f = state_machine(remote.path(), None);
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLogDb::open(dir.path()).unwrap();
        let mut store = wingkv_common::raft::log_store::RocksLogStore::<PartitionRaftConfig>::shared(
            log.db.clone(),
            log.syncer.clone(),
            log_prefix(PartitionId::new(1, 0)),
        )
        .with_purge_limit(crate::replica::applied_purge_limit(f.db.clone()));
        let entries: Vec<_> = (1..=5).map(|i| entry(i, put(&format!("k{i}"), "v"))).collect();
        // Written as the store's `append` writes them.
        let log_cf = log.db.cf_handle(wingkv_common::raft::CF_RAFT_LOG).unwrap();
        for e in &entries {
            let mut key = log_prefix(PartitionId::new(1, 0));
            key.extend_from_slice(&e.log_id.index.to_be_bytes());
            log.db.put_cf(log_cf, key, wingkv_common::raft::encode(e).unwrap()).unwrap();
        }
        f.sm.apply(entries).await.unwrap();
        // The unsynced tail (4 and 5) lost with the page cache.
        store.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4)).await.unwrap();

        let state: RaftState<u64, openraft::BasicNode, _> =
            StorageHelper::new(&mut store, &mut f.sm).get_initial_state().await.unwrap();
        let applied = Some(LogId::new(CommittedLeaderId::new(1, 1), 5));
        assert_eq!(state.committed, applied);
        let on_disk = store.get_log_state().await.unwrap();
        assert_eq!(on_disk.last_purged_log_id, applied);
        assert_eq!(on_disk.last_log_id, applied);
        assert!(store.try_get_log_entries(0..).await.unwrap().is_empty());
        assert_eq!(get(&f.db, "k5").as_deref(), Some("v"));
        log.close();
    }

    /// A source that never answers (a member that accepted the call and froze).
    struct Frozen;

    #[tonic::async_trait]
    impl FileSource for Frozen {
        fn describe(&self, name: &str) -> String {
            format!("frozen/{name}")
        }
        async fn open(&self, _name: &str) -> Result<crate::bulk_load::source::FileStream, WingError> {
            std::future::pending().await
        }
        async fn metadata(&self, _max: u64) -> Result<Bytes, WingError> {
            std::future::pending().await
        }
    }

    /// A close while an apply waits for files from the members: the fetch ends, the apply
    /// answers an error (nothing marked applied), and no task of the slot is left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_ends_an_ingestion_waiting_for_its_files() {
        let (remote, file) = remote_partition(&["k1"]);
        let mut f = state_machine(remote.path(), Some(Arc::new(Frozen)));
        let slot = f.slot.clone();
        let apply = tokio::spawn(async move {
            let r = f.sm.apply(vec![entry(1, ingest_cmd(5, &file))]).await;
            (r.is_err(), f.db, f.replica, f.alive, f.sm)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while slot.progress().is_none_or(|(_, s)| s.live_tasks == 0) {
            assert!(std::time::Instant::now() < deadline, "the fetch did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::timeout(Duration::from_secs(10), slot.close()).await.expect("close hangs");
        let (failed, db, _replica, alive, sm) =
            tokio::time::timeout(Duration::from_secs(10), apply).await.expect("apply hangs after close").unwrap();
        assert!(failed, "the apply must fail, not skip the entry");
        assert_eq!(read_applied(&db).unwrap().0, None, "an entry not ingested was marked applied");
        assert!(slot.progress().is_none());
        drop(sm);
        alive.close();
        tokio::time::timeout(Duration::from_secs(1), alive.wait()).await.expect("the state machine's token is held");
    }

    #[tokio::test]
    async fn act_after_close_is_refused() {
        let (remote, _file) = remote_partition(&["k1"]);
        let f = state_machine(remote.path(), None);
        f.slot.close().await;
        let e = f.slot.act(1, &source(6), BulkLoadAction::BlDownload).await.unwrap_err();
        assert!(matches!(e, WingError::Unavailable(ref m) if m.contains("closing")), "{e}");
        assert!(f.slot.progress().is_none(), "a loader started after close");
        assert!(!job_dir(f.replica.path(), 6).exists());
    }

    /// A replica holds a file of the right name and size but other content, a damaged block
    /// (and a verified list naming the right digest): it must not ingest it, but fetch the real
    /// one.
    #[tokio::test]
    async fn a_same_size_file_with_another_digest_is_fetched_again() {
        let (remote, file) = remote_partition(&["k1", "k2"]);
        let mut f = state_machine(remote.path(), None);
        let dir = job_dir(f.replica.path(), 7);
        std::fs::create_dir_all(&dir).unwrap();
        let mut other = std::fs::read(remote.path().join("bl/onebox/t/0/0.sst")).unwrap();
        other[10] ^= 0xff;
        std::fs::write(dir.join("0.sst"), &other).unwrap();
        std::fs::write(dir.join(crate::bulk_load::loader::VERIFIED_LIST), serde_json::to_vec(&[&file]).unwrap())
            .unwrap();
        f.sm.apply(vec![entry(1, ingest_cmd(7, &file))]).await.unwrap();
        assert_eq!((get(&f.db, "k1"), get(&f.db, "k2")), (Some("bulk".into()), Some("bulk".into())));
        assert_eq!(
            std::fs::read(dir.join("0.sst")).unwrap(),
            std::fs::read(remote.path().join("bl/onebox/t/0/0.sst")).unwrap()
        );
    }

    /// Forced: the replica loses its verified files (a restart, a wiped dir) right before the
    /// committed `IngestSst` applies. It fetches them again and ingests the same rows; a
    /// duplicate of the entry later is a no-op that cannot put old rows over newer writes.
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failpoint_files_lost_right_before_ingestion_are_fetched_again() {
        let scenario = fail::FailScenario::setup();
        let (remote, file) = remote_partition(&["k1", "k2"]);
        let mut f = state_machine(remote.path(), None);
        // The replica had downloaded and verified its files...
        let state = f.slot.act(1, &source(4), BulkLoadAction::BlDownload).await.unwrap();
        assert_eq!(state.status(), wingkv_proto::common::BulkLoadStatus::BlsDownloading);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while f.slot.downloaded_files(4).await.is_none() {
            assert!(std::time::Instant::now() < deadline, "no download");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ...and loses them just before the entry applies.
        let dir = job_dir(f.replica.path(), 4);
        fail::cfg_callback("bulk_load::before_ingest_apply", move || {
            let _ = std::fs::remove_dir_all(&dir);
        })
        .unwrap();
        f.sm.apply(vec![entry(1, ingest_cmd(4, &file)), entry(2, put("k1", "newer"))]).await.unwrap();
        assert_eq!((get(&f.db, "k1"), get(&f.db, "k2")), (Some("newer".into()), Some("bulk".into())));
        // A duplicate proposal of the same job (a new primary retrying) changes nothing.
        f.sm.apply(vec![entry(3, ingest_cmd(4, &file))]).await.unwrap();
        assert_eq!(get(&f.db, "k1").as_deref(), Some("newer"), "a duplicate ingestion put old rows over a newer write");
        scenario.teardown();
    }

    /// The members' files, noting an open that comes before `released`.
    #[cfg(feature = "failpoints")]
    struct Watched {
        inner: ProviderFiles,
        released: Arc<std::sync::atomic::AtomicBool>,
        early: Arc<std::sync::atomic::AtomicBool>,
    }

    #[cfg(feature = "failpoints")]
    #[tonic::async_trait]
    impl FileSource for Watched {
        fn describe(&self, name: &str) -> String {
            self.inner.describe(name)
        }
        async fn open(&self, name: &str) -> Result<crate::bulk_load::source::FileStream, WingError> {
            if !self.released.load(std::sync::atomic::Ordering::SeqCst) {
                self.early.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            self.inner.open(name).await
        }
        async fn metadata(&self, max: u64) -> Result<Bytes, WingError> {
            self.inner.metadata(max).await
        }
    }

    /// Forced: the job's own download (the slot's loader, from the provider) is between two
    /// chunks when the committed `IngestSst` applies. The apply path stops that download and
    /// awaits its task before it touches the directory (one owner: no task of the job outlives
    /// the hand-over), fetches what is missing, and ingests the right rows; nothing of either
    /// download is left behind.
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failpoint_the_jobs_download_and_the_apply_path_on_the_same_job() {
        let scenario = fail::FailScenario::setup();
        let keys: Vec<String> = (0..20_000).map(|i| format!("k{i:05}")).collect();
        let (remote, file) = remote_partition(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        // The members' side notes whether the apply path asked for a file while the job's
        // download task was still held.
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let early = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = open_provider("local", &ProviderConfig::local(remote.path())).unwrap();
        let peers = Arc::new(Watched {
            inner: ProviderFiles::new(store, "bl/onebox/t/0").unwrap(),
            released: released.clone(),
            early: early.clone(),
        });
        let mut f = state_machine(remote.path(), Some(peers));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, release_rx) = (std::sync::Mutex::new(Some(held_tx)), std::sync::Mutex::new(release_rx));
        let released2 = released.clone();
        fail::cfg_callback("bulk_load::between_chunks", move || {
            if let Some(tx) = held_tx.lock().unwrap().take() {
                let _ = tx.send(());
                let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
                released2.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap();
        f.slot.act(1, &source(9), BulkLoadAction::BlDownload).await.unwrap();
        tokio::task::spawn_blocking(move || held_rx.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the download never reached the fail point");
        let slot = f.slot.clone();
        let mut apply = tokio::spawn(async move {
            f.sm.apply(vec![entry(1, ingest_cmd(9, &file))]).await.unwrap();
            (f.db, f.replica, f.sm)
        });
        // The job's download task is held mid-file: the apply must wait for it to end.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut apply).await.is_err(),
            "the apply went on while a download task of the job was still running"
        );
        release_tx.send(()).unwrap();
        let (db, replica, _sm) =
            tokio::time::timeout(Duration::from_secs(20), apply).await.expect("apply hangs").unwrap();
        assert_eq!(get(&db, "k00000").as_deref(), Some("bulk"));
        assert_eq!(get(&db, "k19999").as_deref(), Some("bulk"));
        assert!(slot.progress().is_none_or(|(_, s)| s.live_tasks == 0), "a download task is left");
        assert!(
            !early.load(std::sync::atomic::Ordering::SeqCst),
            "the apply path fetched while a download task of the job was still running"
        );
        let leftovers: Vec<_> = std::fs::read_dir(job_dir(replica.path(), 9))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".tmp") || n.starts_with("ingest-"))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
        scenario.teardown();
    }
}
