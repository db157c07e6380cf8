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
use wingkv_common::bulk_load::FileMeta;
use wingkv_common::provider::open_provider;
use wingkv_common::raft::{encode, read_err, write_err, NodeId};
use wingkv_common::WingError;

use crate::bulk_load::ingest::{files_present, ingest_files};
use crate::bulk_load::loader::{BulkLoadSource, BulkLoader, LoaderState};
use crate::bulk_load::{job_dir, BulkLoadEnv};
use crate::command::{BatchView, Command, CommandResponse};
use crate::raft_types::PartitionRaftConfig;
use crate::snapshot::{
    read_applied, AppliedState, PartitionSnapshotMeta, SnapshotDir, KEY_INGESTED_JOB, KEY_LAST_APPLIED, KEY_MEMBERSHIP,
};
use crate::store::{cf, CF_APPLIED};

type SmResult<T> = Result<T, StorageError<NodeId>>;

/// State machine of one partition replica.
pub struct PartitionStateMachine {
    db: Arc<DB>,
    snapshots: SnapshotDir,
    replica_dir: PathBuf,
    bulk: Arc<BulkLoadEnv>,
}

async fn blocking<T, F>(f: F) -> Result<T, WingError>
where
    F: FnOnce() -> Result<T, WingError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| WingError::Internal(format!("blocking task failed: {e}")))?
}

impl PartitionStateMachine {
    /// The state machine over `db`, with snapshots in `snapshots`; bulk-load files live under
    /// `replica_dir`.
    pub fn new(db: Arc<DB>, snapshots: SnapshotDir, replica_dir: PathBuf, bulk: Arc<BulkLoadEnv>) -> Self {
        Self { db, snapshots, replica_dir, bulk }
    }

    /// Writes `batch` with the applied state up to `last`.
    // openraft's StorageError is large by design; it is what the state machine traits return.
    #[allow(clippy::result_large_err)]
    fn write_applied(
        &self,
        mut batch: rocksdb::WriteBatch,
        last: Option<LogId<NodeId>>,
        membership: Option<StoredMembership<NodeId, BasicNode>>,
    ) -> SmResult<()> {
        let applied = cf(&self.db, CF_APPLIED).map_err(write_err)?;
        if let Some(l) = last {
            batch.put_cf(applied, KEY_LAST_APPLIED, encode(&Some(l)).map_err(write_err)?);
        }
        if let Some(m) = membership {
            batch.put_cf(applied, KEY_MEMBERSHIP, encode(&m).map_err(write_err)?);
        }
        // Not synced: the raft log is durable, and RocksDB recovers a prefix of the WAL, so a
        // crash loses at most applied state that is re-applied from the log.
        self.db.write(batch).map_err(write_err)
    }

    /// Ingests a job's files, fetching them again first when this replica lacks them (it was
    /// restarted or lagging), so every replica ends with the same data. Re-applying after a
    /// crash in the middle is safe: nothing after this entry was applied yet, so ingesting the
    /// same files again yields the same state.
    async fn ingest(&self, source: &BulkLoadSource, files: &[FileMeta], ingest_behind: bool) -> Result<(), WingError> {
        let dir = job_dir(&self.replica_dir, source.job_id);
        if !files_present(&dir, files) {
            let store = open_provider(&source.provider, &self.bulk.provider)?;
            let loader = BulkLoader::start(source.clone(), &self.replica_dir, store, self.bulk.limits.clone());
            let status = tokio::select! {
                s = loader.finished() => s,
                _ = self.bulk.shutdown.cancelled() => {
                    loader.stop().await;
                    return Err(WingError::Unavailable("shutting down during a bulk-load fetch".into()));
                }
            };
            if status.state != LoaderState::Downloaded || loader.downloaded_files().as_deref() != Some(files) {
                return Err(WingError::Unavailable(format!(
                    "job {}: cannot fetch the files to ingest again from {}: {:?}",
                    source.job_id, source.partition_dir, status.state
                )));
            }
        }
        let (db, files2, dir2) = (self.db.clone(), files.to_vec(), dir.clone());
        blocking(move || ingest_files(&db, &dir2, &files2, ingest_behind)).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(())
    }
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
        let mut view = BatchView::new(&self.db);
        let mut responses = Vec::new();
        let mut last = None;
        let mut membership = None;
        for entry in entries {
            let resp = match entry.payload {
                EntryPayload::Blank => CommandResponse::Done,
                EntryPayload::Normal(Command::IngestSst { source, files, ingest_behind }) => {
                    // Everything before this entry is written first, so the ingested rows land
                    // after it, at the same log index on every replica.
                    let before = std::mem::replace(&mut view, BatchView::new(&self.db));
                    self.write_applied(before.into_batch(), last.take(), membership.take())?;
                    let apply_err = |e: WingError| StorageIOError::apply(entry.log_id, AnyError::error(e));
                    // A job is ingested once: a second proposal (a new primary retrying) is a
                    // no-op, so it cannot put old rows over newer writes.
                    if is_ingested(&self.db, source.job_id).map_err(apply_err)? {
                        CommandResponse::Done
                    } else {
                        // Race window: the entry is committed, this replica has not ingested yet.
                        fail::fail_point!("bulk_load::before_ingest_apply");
                        match self.ingest(&source, &files, ingest_behind).await {
                            Ok(()) => {
                                let mut marker = rocksdb::WriteBatch::default();
                                let applied = cf(&self.db, CF_APPLIED).map_err(write_err)?;
                                marker.put_cf(applied, KEY_INGESTED_JOB, source.job_id.to_be_bytes());
                                self.write_applied(marker, Some(entry.log_id), None)?;
                                // Synced: the job's local files go once it is ingested, so a
                                // replay of this entry after a power loss would have to fetch
                                // them from the provider again (which may have dropped them).
                                self.db.flush_wal(true).map_err(write_err)?;
                                CommandResponse::Done
                            }
                            // RocksDB rejected the files themselves: the same on every replica
                            // (same md5), nothing was ingested, and the partition goes on.
                            Err(WingError::Corruption(reason)) => CommandResponse::Refused(reason),
                            Err(e) => return Err(apply_err(e).into()),
                        }
                    }
                }
                EntryPayload::Normal(cmd) => {
                    view.apply(&cmd).map_err(|e| StorageIOError::apply(entry.log_id, AnyError::error(e)))?
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    CommandResponse::Done
                }
            };
            last = Some(entry.log_id);
            responses.push(resp);
        }
        self.write_applied(view.into_batch(), last, membership)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSnapshotBuilder { db: self.db.clone(), snapshots: self.snapshots.clone() }
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
        blocking(move || dir.install(&db, &meta2, &path)).await.map_err(write_err)?;
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
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use wingkv_common::bulk_load::{md5_hex, BulkLoadMetadata};
    use wingkv_common::key::encode_key;
    use wingkv_common::provider::ProviderConfig;
    use wingkv_common::value::encode_value;

    use super::*;
    use crate::config::{BulkLoadConfig, StorageConfig};
    use crate::store::{data_cf, SharedStorage};

    fn entry(index: u64, cmd: Command) -> Entry<PartitionRaftConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(cmd) }
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
        let file = FileMeta { name: "0.sst".into(), size: bytes.len() as u64, md5: md5_hex(&bytes) };
        let meta = BulkLoadMetadata { files: vec![file.clone()], file_total_size: file.size };
        std::fs::write(pdir.join("bulk_load_metadata"), serde_json::to_vec(&meta).unwrap()).unwrap();
        (remote, file)
    }

    /// A state machine on a fresh replica dir whose `local` provider points at `remote`.
    fn state_machine(remote: &std::path::Path) -> (tempfile::TempDir, Arc<DB>, PartitionStateMachine) {
        let replica = tempfile::tempdir().unwrap();
        let db = SharedStorage::new(StorageConfig::default()).open(&replica.path().join("db")).unwrap();
        let config = BulkLoadConfig {
            provider: ProviderConfig { local_root: remote.to_path_buf(), ..Default::default() },
            min_free_disk_bytes: 0,
            ..Default::default()
        };
        let env = Arc::new(BulkLoadEnv::new(&config, tokio_util::sync::CancellationToken::new()));
        let snapshots = SnapshotDir::open(replica.path().join("snapshot")).unwrap();
        let sm = PartitionStateMachine::new(db.clone(), snapshots, replica.path().to_path_buf(), env);
        (replica, db, sm)
    }

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: Bytes::from(encode_key(k.as_bytes(), b"").unwrap()),
            value: Bytes::from(encode_value(0, v.as_bytes())),
        }
    }

    fn get(db: &DB, k: &str) -> String {
        let v = db.get_cf(data_cf(db).unwrap(), encode_key(k.as_bytes(), b"").unwrap()).unwrap().unwrap();
        String::from_utf8(v[4..].to_vec()).unwrap()
    }

    fn source(job_id: u64) -> BulkLoadSource {
        BulkLoadSource { job_id, provider: "local".into(), partition_dir: "bl/onebox/t/0".into() }
    }

    #[tokio::test]
    async fn ingest_lands_between_the_writes_around_it_and_refetches_missing_files() {
        let (remote, file) = remote_partition(&["k1", "k2", "k3"]);
        let (replica, db, mut sm) = state_machine(remote.path());
        let entries = vec![
            entry(1, put("k1", "before")),
            entry(2, Command::IngestSst { source: source(1), files: vec![file], ingest_behind: false }),
            entry(3, put("k2", "after")),
        ];
        // The replica never downloaded the files: apply fetches and verifies them first.
        let out = sm.apply(entries).await.unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(get(&db, "k1"), "bulk", "the ingest comes after the write before it");
        assert_eq!(get(&db, "k2"), "after", "the write after the ingest wins");
        assert_eq!(get(&db, "k3"), "bulk");
        assert_eq!(read_applied(&db).unwrap().0.map(|l| l.index), Some(3));
        assert!(!crate::bulk_load::job_dir(replica.path(), 1).exists(), "local files are removed after ingestion");
    }

    /// Forced: the replica loses its verified files (a restart, a wiped dir) right before the
    /// committed `IngestSst` applies. It fetches them again and ingests the same rows; a
    /// duplicate of the entry later is a no-op that cannot put old rows over newer writes.
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failpoint_files_lost_right_before_ingestion_are_fetched_again() {
        let scenario = fail::FailScenario::setup();
        let (remote, file) = remote_partition(&["k1", "k2"]);
        let (replica, db, mut sm) = state_machine(remote.path());
        // The replica had downloaded and verified its files...
        let store = open_provider("local", &sm.bulk.provider).unwrap();
        let loader = BulkLoader::start(source(4), replica.path(), store, sm.bulk.limits.clone());
        assert_eq!(loader.finished().await.state, LoaderState::Downloaded);
        loader.stop().await;
        // ...and loses them just before the entry applies.
        let dir = job_dir(replica.path(), 4);
        fail::cfg_callback("bulk_load::before_ingest_apply", move || {
            let _ = std::fs::remove_dir_all(&dir);
        })
        .unwrap();
        let ingest = || Command::IngestSst { source: source(4), files: vec![file.clone()], ingest_behind: false };
        sm.apply(vec![entry(1, ingest()), entry(2, put("k1", "newer"))]).await.unwrap();
        assert_eq!((get(&db, "k1"), get(&db, "k2")), ("newer".to_string(), "bulk".to_string()));
        // A duplicate proposal of the same job (a new primary retrying) changes nothing.
        sm.apply(vec![entry(3, ingest())]).await.unwrap();
        assert_eq!(get(&db, "k1"), "newer", "a duplicate ingestion put old rows over a newer write");
        scenario.teardown();
    }
}
