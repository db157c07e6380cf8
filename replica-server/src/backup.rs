//! Cold backup of a partition (DESIGN §9): the primary exports the live records of its replica at
//! one applied log index into SST files ([`crate::export`]: the DB's own files where they hold
//! exactly that, rewritten records elsewhere), uploads them to the provider with bounded
//! bandwidth and concurrency, and writes the partition's `bulk_load_metadata` last, so a backup
//! directory is a bulk-load directory and a restore is a bulk load.
//!
//! [`BackupSlot`] is the one owner of a replica's exports: each runs under a
//! `CancellationToken` on a `TaskTracker` of the slot, and its local files are removed by the task
//! itself before the tracker lets a cancel (or the replica's close) return.
//!
//! Backups of a table are incremental where the DB's own files are reused: a reused file that an
//! earlier backup of the partition on the same store already holds (the same name, so the same
//! SST file by its unique id, and the same size) is copied there by the store (`copy`: a
//! server-side copy on S3, a hard link on `local`) instead of uploaded. Each backup's directory
//! stays whole on its own: removing one never takes a file from another.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wingkv_common::backoff::BackoffPolicy;
use wingkv_common::bulk_load::{BulkLoadMetadata, FileMeta, BULK_LOAD_METADATA};
use wingkv_common::file_digest::{ContentHasher, DigestKind, FileDigest};
use wingkv_common::sync::MutexExt;
use wingkv_common::WingError;
use wingkv_proto::common::BackupStatus;
use wingkv_proto::replica_admin::BackupPartitionState;

use crate::bulk_load::download::RateLimiter;
use crate::bulk_load::io_pool::BulkIoPool;
use crate::bulk_load::source::{FileSource, ProviderFiles};
use crate::bulk_load::BulkLoadEnv;

/// Bytes of one multipart part (S3 wants at least 5 MiB but the last).
const PART_BYTES: usize = 8 << 20;
/// Bytes a local copy reads, hashes and copies at a time: small enough that the piece is still
/// in the core's cache when it is hashed (an 8 MiB buffer went to memory and back).
const LOCAL_PIECE_BYTES: usize = 256 << 10;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Attempts of one file's upload before the export fails (the meta then starts it again).
const UPLOAD_ATTEMPTS: u32 = 5;
/// Finished exports a slot remembers (their state answers the meta's next call).
const KEEP_FINISHED: usize = 64;

/// What the backups of every replica of a node share (they upload through the bulk-load
/// providers and read on the bulk-load I/O threads, [`BulkLoadEnv`]).
pub struct BackupLimits {
    /// Upload bandwidth of the node.
    pub limiter: RateLimiter,
    /// Files uploaded at once by the node.
    pub uploads: Semaphore,
    /// The permits of `uploads`.
    pub max_uploads: usize,
    /// Exports running at once on the node (each reads a whole partition).
    pub exports: Semaphore,
    /// The low-priority threads exports run on, one per export: an export holds its thread
    /// for a whole partition, so it must not take those the bulk-load downloads and the
    /// uploads' reads need.
    pub export_io: BulkIoPool,
    /// How exports write their files.
    pub export: crate::export::ExportOptions,
    /// Backoff between attempts of a file's upload.
    pub retry: BackoffPolicy,
}

impl BackupLimits {
    /// The limits `config` sets (`bulk_load.upload_bytes_per_sec`, ...); fails only if the
    /// export threads cannot start.
    pub fn new(config: &crate::config::BulkLoadConfig) -> std::io::Result<Self> {
        Ok(Self {
            limiter: RateLimiter::new(config.upload_bytes_per_sec),
            uploads: Semaphore::new(config.max_concurrent_uploads),
            max_uploads: config.max_concurrent_uploads,
            exports: Semaphore::new(config.max_concurrent_exports),
            export_io: BulkIoPool::new(config.max_concurrent_exports)?,
            export: crate::export::ExportOptions {
                file_bytes: config.backup_file_bytes,
                reuse_files: config.backup_reuse_files,
            },
            retry: config.retry,
        })
    }
}

/// Progress of one export, read by the meta's calls while it runs.
#[derive(Default)]
struct Progress {
    status: std::sync::Mutex<(i32, String)>,
    uploaded: AtomicU64,
    total: AtomicU64,
    log_index: AtomicU64,
    files: AtomicU32,
}

impl Progress {
    fn set(&self, status: BackupStatus, reason: String) {
        *self.status.locked() = (status as i32, reason);
    }

    fn status(&self) -> BackupStatus {
        BackupStatus::try_from(self.status.locked().0).unwrap_or(BackupStatus::BkInvalid)
    }

    fn state(&self, node_id: u64) -> BackupPartitionState {
        let (status, reason) = self.status.locked().clone();
        BackupPartitionState {
            node_id,
            status,
            uploaded_bytes: self.uploaded.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
            log_index: self.log_index.load(Ordering::Relaxed),
            file_count: self.files.load(Ordering::Relaxed),
            reason,
        }
    }
}

struct Entry {
    cancel: CancellationToken,
    tasks: TaskTracker,
    progress: Arc<Progress>,
    /// Canceled here: a later start of the same backup is refused (a late call of a deposed
    /// meta leader must not export into a backup that was finished or removed).
    canceled: bool,
}

#[derive(Default)]
struct SlotState {
    closed: bool,
    entries: BTreeMap<u64, Entry>,
}

/// The exports of one replica, by backup id. Its lock is never held across an await: a cancel
/// waiting for an export to stop never holds back a status call.
pub struct BackupSlot {
    node_id: u64,
    dir: PathBuf,
    state: std::sync::Mutex<SlotState>,
}

/// What one export needs besides its replica.
pub struct ExportJob {
    /// The backup.
    pub backup_id: u64,
    /// Where its files go.
    pub store: Arc<dyn ObjectStore>,
    /// The partition's backup directory on this machine's file system, when the store is the
    /// `local` provider: files are then copied in the kernel ([`upload_local`]).
    pub local_dir: Option<PathBuf>,
    /// The partition's backup directory on the store.
    pub partition_dir: ObjectPath,
    /// The node's bulk-load providers and I/O threads.
    pub env: Arc<BulkLoadEnv>,
    /// The node's backup limits.
    pub limits: Arc<BackupLimits>,
}

impl ExportJob {
    fn limits(&self) -> &BackupLimits {
        &self.limits
    }

    fn io(&self) -> &BulkIoPool {
        &self.env.limits.io
    }
}

/// What an export's task calls back into its replica for.
pub trait ExportSource: Send + Sync + 'static {
    /// The replica's RocksDB.
    fn db(&self) -> Arc<rocksdb::DB>;
    /// Fails unless the replica is still the primary (checked before the metadata is written:
    /// a deposed primary that lost its group never publishes).
    fn check_primary(&self) -> Result<(), WingError>;
}

impl BackupSlot {
    /// The slot of the replica in `replica_dir` on node `node_id`. Leftovers of exports a
    /// crash interrupted are removed (blocking; called while the replica opens).
    pub fn new(node_id: u64, replica_dir: &Path) -> Self {
        let dir = replica_dir.join("backup");
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("cannot remove the leftover backup files in {}: {e}", dir.display());
            }
        }
        Self { node_id, dir, state: Default::default() }
    }

    fn canceled_error(&self, backup_id: u64) -> WingError {
        WingError::InvalidState(format!(
            "backup {backup_id} was canceled on node {}; it is not started again",
            self.node_id
        ))
    }

    /// The state of backup `backup_id`'s export here, if it runs or succeeded; an error if it
    /// was canceled here.
    pub fn existing(&self, backup_id: u64) -> Result<Option<BackupPartitionState>, WingError> {
        let st = self.state.locked();
        let Some(e) = st.entries.get(&backup_id) else { return Ok(None) };
        if e.canceled {
            return Err(self.canceled_error(backup_id));
        }
        Ok(matches!(e.progress.status(), BackupStatus::BkRunning | BackupStatus::BkSucceed)
            .then(|| e.progress.state(self.node_id)))
    }

    /// Starts exporting `job` from `source` (a failed earlier export of the same backup is
    /// replaced), or answers the one that runs or succeeded. Refused for a backup canceled here.
    pub async fn start(
        &self,
        source: Arc<dyn ExportSource>,
        job: ExportJob,
    ) -> Result<BackupPartitionState, WingError> {
        // A failed earlier export of this backup has ended its work; its task is awaited all the
        // same before it is replaced (outside the lock).
        let earlier = self.state.locked().entries.get(&job.backup_id).map(|e| e.tasks.clone());
        if let Some(tasks) = earlier {
            tasks.wait().await;
        }
        let mut st = self.state.locked();
        if st.closed {
            return Err(WingError::Unavailable(format!("the replica in {} is closing", self.dir.display())));
        }
        if let Some(e) = st.entries.get(&job.backup_id) {
            if e.canceled {
                return Err(self.canceled_error(job.backup_id));
            }
            if matches!(e.progress.status(), BackupStatus::BkRunning | BackupStatus::BkSucceed) {
                return Ok(e.progress.state(self.node_id));
            }
        }
        forget_finished(&mut st.entries);
        let entry = Entry {
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            progress: Arc::default(),
            canceled: false,
        };
        entry.progress.set(BackupStatus::BkRunning, String::new());
        let (cancel, progress) = (entry.cancel.clone(), entry.progress.clone());
        let local = self.dir.join(format!("{}-{}", job.backup_id, wingkv_common::time::unix_millis()));
        let prefix = format!("{}-{}-", self.node_id, wingkv_common::time::unix_millis());
        let backup_id = job.backup_id;
        entry.tasks.spawn(async move {
            let result = export(source, &job, &local, &prefix, &cancel, &progress).await;
            // The task owns its local files: they are gone before its tracker lets go.
            let dir = local.clone();
            let _ = job.io().run(move || std::fs::remove_dir_all(&dir)).await;
            match result {
                Ok(()) => {
                    progress.set(BackupStatus::BkSucceed, String::new());
                    tracing::info!(backup = backup_id, "partition backup uploaded");
                }
                Err(_) if cancel.is_cancelled() => progress.set(BackupStatus::BkCanceled, "canceled".into()),
                Err(e) => {
                    tracing::warn!(backup = backup_id, "partition backup failed: {e}");
                    progress.set(BackupStatus::BkFailed, e.to_string());
                }
            }
        });
        entry.tasks.close();
        let state = entry.progress.state(self.node_id);
        st.entries.insert(backup_id, entry);
        Ok(state)
    }

    /// Waits up to `wait` for backup `backup_id`'s export here to end, then answers its state
    /// (whatever it is: a failed export answers `BK_FAILED` with its reason, so the meta backs
    /// off before it starts it again). The wait holds no lock.
    pub async fn state_after(
        &self,
        backup_id: u64,
        wait: std::time::Duration,
    ) -> Result<BackupPartitionState, WingError> {
        let tasks = self.state.locked().entries.get(&backup_id).map(|e| e.tasks.clone());
        if let Some(tasks) = tasks {
            let _ = tokio::time::timeout(wait, tasks.wait()).await;
        }
        let st = self.state.locked();
        match st.entries.get(&backup_id) {
            Some(e) if e.canceled => Err(self.canceled_error(backup_id)),
            Some(e) => Ok(e.progress.state(self.node_id)),
            None => Err(WingError::NotFound(format!("no export of backup {backup_id} on node {}", self.node_id))),
        }
    }

    /// Stops backup `backup_id`'s export here and awaits it (its local files are gone when
    /// this returns); answers its last state, `BK_INVALID` if there was none. The backup stays
    /// known as canceled here: no later start runs it again. A caller that gives up waiting
    /// leaves the export canceled and still owned by the slot (its close awaits it).
    pub async fn cancel(&self, backup_id: u64) -> BackupPartitionState {
        let tasks = {
            let mut st = self.state.locked();
            let e = st.entries.entry(backup_id).or_insert_with(|| Entry {
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
                progress: Arc::default(),
                canceled: true,
            });
            e.canceled = true;
            e.cancel.cancel();
            e.tasks.close();
            e.tasks.clone()
        };
        tasks.wait().await;
        let st = self.state.locked();
        match st.entries.get(&backup_id) {
            Some(e) => e.progress.state(self.node_id),
            None => BackupPartitionState { node_id: self.node_id, ..Default::default() },
        }
    }

    /// Stops every export and awaits them; the slot starts nothing after.
    pub async fn close(&self) {
        let trackers: Vec<TaskTracker> = {
            let mut st = self.state.locked();
            st.closed = true;
            st.entries
                .values()
                .map(|e| {
                    e.cancel.cancel();
                    e.tasks.clone()
                })
                .collect()
        };
        for t in trackers {
            t.wait().await;
        }
    }
}

/// Keeps the slot's memory bounded: the oldest finished entries go.
fn forget_finished(entries: &mut BTreeMap<u64, Entry>) {
    // A canceled entry's export has ended once its status left Running (or it never ran).
    let finished: Vec<u64> =
        entries.iter().filter(|(_, e)| e.progress.status() != BackupStatus::BkRunning).map(|(id, _)| *id).collect();
    for id in finished.iter().take(finished.len().saturating_sub(KEEP_FINISHED)) {
        entries.remove(id);
    }
}

fn canceled() -> WingError {
    WingError::Unavailable("the backup was canceled".into())
}

async fn export(
    source: Arc<dyn ExportSource>,
    job: &ExportJob,
    local: &Path,
    prefix: &str,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Result<(), WingError> {
    let _export = tokio::select! {
        _ = cancel.cancelled() => return Err(canceled()),
        p = job.limits().exports.acquire() => p.map_err(|_| canceled())?,
    };
    // Each file is uploaded as soon as it is complete, while the export writes the next one.
    // The export runs on an export thread of its own and never waits for the uploads (they
    // read their files on the bulk-load I/O threads); an upload that fails stops it, and both
    // are awaited. (Uploads still running when one fails are dropped: on S3 their parts stay
    // until the bucket's lifecycle rule aborts them, see README.)
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<crate::export::ExportedFile>();
    let stop = cancel.child_token();
    let (db, dir, prefix, export_stop, options) =
        (source.db(), local.to_path_buf(), prefix.to_string(), stop.clone(), job.limits().export);
    let min_free = job.env.limits.min_free_bytes;
    let exporting = job.limits().export_io.run(move || {
        std::fs::create_dir_all(&dir).map_err(|e| WingError::Storage(format!("create {}: {e}", dir.display())))?;
        check_disk(&db, &dir, min_free)?;
        let mut announce = |file: &crate::export::ExportedFile| {
            let _ = tx.send(file.clone());
        };
        crate::export::export_partition(&db, &dir, &prefix, options, &export_stop, &mut announce)
    });
    let uploading = async {
        // A store that does not answer must not hold up a cancel: the uploads then see it.
        let earlier = match job.limits().export.reuse_files {
            true => tokio::select! {
                _ = cancel.cancelled() => HashMap::new(),
                found = earlier_files(job) => found,
            },
            false => HashMap::new(),
        };
        let earlier = &earlier;
        let uploaded: Result<Vec<FileMeta>, WingError> = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .map(|file| {
                progress.total.fetch_add(file.size, Ordering::Relaxed);
                progress.files.fetch_add(1, Ordering::Relaxed);
                async move {
                    if file.by_unique_id {
                        if let Some(meta) = copy_earlier(job, local, &file, earlier, cancel, progress).await? {
                            return Ok(meta);
                        }
                    }
                    upload_with_retries(job, local, file.name, file.size, cancel, progress).await
                }
            })
            .buffer_unordered(job.limits().max_uploads.max(1))
            .try_collect()
            .await;
        if uploaded.is_err() {
            stop.cancel();
        }
        uploaded
    };
    let (exported, uploaded) = tokio::join!(exporting, uploading);
    let export = exported??;
    let files = uploaded?;
    progress.log_index.store(export.applied_index, Ordering::Relaxed);
    tracing::info!(
        backup = job.backup_id,
        log_index = export.applied_index,
        records = export.records,
        files = export.files.len(),
        reused_files = export.reused_files,
        reused_bytes = export.reused_bytes,
        "partition exported and uploaded"
    );
    let mut files = files;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let meta = BulkLoadMetadata { file_total_size: files.iter().map(|f| f.size).sum(), files };
    let bytes = serde_json::to_vec(&meta).map_err(|e| WingError::Internal(format!("encode metadata: {e}")))?;
    // The metadata is what makes the partition's files a backup: only a primary still leading
    // its group writes it.
    source.check_primary()?;
    let path = job.partition_dir.child(BULK_LOAD_METADATA);
    if cancel.is_cancelled() {
        return Err(canceled());
    }
    // On `local`, the files' renames reach the disk before the metadata that lists them, and the
    // metadata before the partition counts as backed up (`object_store`'s puts never sync).
    if let Some(dir) = job.local_dir.clone() {
        // A partition with no files has no directory yet.
        job.io()
            .run(move || {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| WingError::Storage(format!("create {}: {e}", dir.display())))?;
                crate::durable::sync_dir(&dir)
            })
            .await??;
    }
    // Not raced against the cancel (a dropped request may still land): awaited, and removed
    // again when a cancel came meanwhile.
    job.store.put(&path, bytes.into()).await.map_err(|e| WingError::Unavailable(format!("put {path}: {e}")))?;
    if let Some(dir) = job.local_dir.clone() {
        job.io().run(move || wingkv_common::provider::sync_local_file(&dir.join(BULK_LOAD_METADATA))).await??;
    }
    if cancel.is_cancelled() {
        let _ = job.store.delete(&path).await;
        return Err(canceled());
    }
    Ok(())
}

/// Refuses an export that could fill the disk: a partition's export may be on local disk whole
/// (when uploads are slower than the export), about the size of its live SST files, and the
/// node keeps `min_free` bytes free besides (`bulk_load.min_free_disk_bytes`).
fn check_disk(db: &rocksdb::DB, dir: &Path, min_free: u64) -> Result<(), WingError> {
    let cf = crate::store::data_cf(db)?;
    let property = |name: &str| db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
    let need = property("rocksdb.live-sst-files-size") + property("rocksdb.cur-size-all-mem-tables");
    let Some(free) = crate::disk_space::free_disk_bytes(dir) else { return Ok(()) };
    if free < need.saturating_add(min_free) {
        return Err(WingError::Storage(format!(
            "not enough disk to export the partition for a backup: {free} bytes free in {}, it needs about \
             {need} plus bulk_load.min_free_disk_bytes = {min_free}",
            dir.display()
        )));
    }
    Ok(())
}

/// Earlier backups of a partition whose files an export looks for (the newest ones).
const EARLIER_BACKUPS_READ: usize = 4;

/// The reused files (`sst-…`) the newest earlier backups of `job`'s partition on its store hold,
/// by name: their path and what their metadata says of them. Only complete partitions (their
/// `bulk_load_metadata` written, which comes last) count; anything unreadable is skipped, and
/// the export then uploads.
async fn earlier_files(job: &ExportJob) -> HashMap<String, (ObjectPath, FileMeta)> {
    let mut found = HashMap::new();
    // `{root}/{cluster}/{table}/backup/{backup_id}/{pidx}`
    let parts: Vec<_> = job.partition_dir.parts().collect();
    let (Some(pidx), Some(backups)) = (parts.last(), parts.len().checked_sub(2)) else { return found };
    let backups: ObjectPath = parts[..backups].iter().cloned().collect();
    let Ok(listed) = job.store.list_with_delimiter(Some(&backups)).await else { return found };
    let mut ids: Vec<u64> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename()?.parse().ok())
        .filter(|id| *id != job.backup_id)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    for id in ids.into_iter().take(EARLIER_BACKUPS_READ) {
        let dir = backups.child(id.to_string()).child(pidx.clone());
        let files = ProviderFiles::from_path(job.store.clone(), dir.clone());
        let Ok(bytes) = files.metadata(job.env.limits.max_metadata_bytes).await else { continue };
        let Ok(meta) = BulkLoadMetadata::parse(&bytes) else { continue };
        for f in meta.files.into_iter().filter(|f| f.name.starts_with("sst-")) {
            found.entry(f.name.clone()).or_insert_with(|| (dir.child(f.name.as_str()), f));
        }
    }
    found
}

/// Copies reused file `file` on the store from an earlier backup that holds it, instead of
/// uploading it; answers `None` when no earlier backup holds it or the copy fails (the caller
/// uploads it then).
async fn copy_earlier(
    job: &ExportJob,
    local: &Path,
    file: &crate::export::ExportedFile,
    earlier: &HashMap<String, (ObjectPath, FileMeta)>,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Result<Option<FileMeta>, WingError> {
    let Some((from, meta)) = earlier.get(&file.name).filter(|(_, m)| m.size == file.size) else { return Ok(None) };
    let to = job.partition_dir.child(file.name.as_str());
    // Not raced against the cancel, like an upload's completion: a copy that lands after a
    // cancel is deleted.
    if let Err(e) = job.store.copy(from, &to).await {
        tracing::info!(backup = job.backup_id, file = %file.name, "copy from {from} failed; uploading instead: {e}");
        return Ok(None);
    }
    if cancel.is_cancelled() {
        let _ = job.store.delete(&to).await;
        return Err(canceled());
    }
    progress.uploaded.fetch_add(file.size, Ordering::Relaxed);
    let path = local.join(&file.name);
    job.io()
        .run(move || std::fs::remove_file(&path))
        .await?
        .map_err(|e| WingError::Storage(format!("remove a copied export file: {e}")))?;
    Ok(Some(FileMeta { name: file.name.clone(), size: file.size, digest: meta.digest.clone() }))
}

async fn upload_with_retries(
    job: &ExportJob,
    local: &Path,
    name: String,
    size: u64,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Result<FileMeta, WingError> {
    let _slot = tokio::select! {
        _ = cancel.cancelled() => return Err(canceled()),
        p = job.limits().uploads.acquire() => p.map_err(|_| canceled())?,
    };
    let mut backoff = job.limits().retry.start();
    loop {
        let mut counted = 0;
        let path = local.join(&name);
        match upload(job, &path, &name, cancel, progress, &mut counted).await {
            Ok(digest) => {
                // Uploaded: the local copy goes now, so a partition never needs all of its
                // export on disk at once.
                job.io()
                    .run(move || std::fs::remove_file(&path))
                    .await?
                    .map_err(|e| WingError::Storage(format!("remove an uploaded export file: {e}")))?;
                return Ok(FileMeta { name, size, digest });
            }
            Err(e) => {
                progress.uploaded.fetch_sub(counted, Ordering::Relaxed);
                if cancel.is_cancelled() || backoff.attempts() + 1 >= UPLOAD_ATTEMPTS {
                    return Err(e);
                }
                let delay = backoff.next_delay();
                tracing::info!(backup = job.backup_id, file = %name, "upload failed; retrying in {delay:?}: {e}");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(canceled()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Uploads the file at `path` as `name` in the partition's directory; answers its digest: an
/// xxh3, which a restore checks on every replica at a small part of md5's CPU (see
/// [`wingkv_common::file_digest`]).
async fn upload(
    job: &ExportJob,
    path: &Path,
    name: &str,
    cancel: &CancellationToken,
    progress: &Progress,
    counted: &mut u64,
) -> Result<FileDigest, WingError> {
    if let Some(dir) = &job.local_dir {
        return upload_local(job, path, &dir.join(name), cancel, progress, counted).await;
    }
    let remote = job.partition_dir.child(name);
    let remote_err = |e: object_store::Error| WingError::Unavailable(format!("upload {remote}: {e}"));
    let opened = path.to_path_buf();
    let mut file = Some(
        job.io()
            .run(move || std::fs::File::open(&opened))
            .await?
            .map_err(|e| WingError::Storage(format!("open {}: {e}", path.display())))?,
    );
    let upload = job.store.put_multipart(&remote).await.map_err(remote_err)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut hasher = Some(ContentHasher::new(DigestKind::Xxh3));
    let result: Result<(), WingError> = async {
        loop {
            let (f, h) = (file.take(), hasher.take());
            let (f, h, chunk) = job.io().run(move || read_chunk(f, h)).await??;
            (file, hasher) = (Some(f), Some(h));
            if chunk.is_empty() {
                return Ok(());
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(canceled()),
                _ = job.limits().limiter.acquire(chunk.len() as u64) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(canceled()),
                r = writer.wait_for_capacity(PARTS_IN_FLIGHT) => r.map_err(remote_err)?,
            }
            writer.write(&chunk);
            progress.uploaded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            *counted += chunk.len() as u64;
        }
    }
    .await;
    match result {
        Ok(()) => {
            // Not raced against the cancel: an upload dropped mid-completion would leave its
            // parts on the store, where no listing shows them. What remains is at most
            // PARTS_IN_FLIGHT parts; a file completed after a cancel is deleted.
            writer.finish().await.map_err(remote_err)?;
            if cancel.is_cancelled() {
                let _ = job.store.delete(&remote).await;
                return Err(canceled());
            }
            hasher.map(ContentHasher::finish).ok_or_else(|| WingError::Internal("an upload lost its hasher".into()))
        }
        Err(e) => {
            // An upload left incomplete holds parts on S3 (not an object); abort drops them.
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Distinguishes the staging files of concurrent local uploads.
static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// Uploads the file at `path` to `dest` on the `local` provider; answers its digest.
///
/// Through `object_store` every byte is read into a buffer, copied into the upload's own
/// buffer and written from there; on this project's VMs writing 1 GB from a buffer cost
/// 0.3–2.6 CPU-seconds from run to run, where reading it once and having the kernel copy it
/// (`copy_file_range`) cost a steady 0.42–0.49 (BENCHMARKS.md, "Backups record xxh3"). So each
/// piece is read once for the digest and copied by the kernel into a staging file that
/// `object_store`'s listings skip (`NAME#DIGITS`, its own staging form), which is synced (the
/// store's local uploads never were) and renamed into place: a reader never sees a partial
/// file, and a failure or cancel removes the staging file.
async fn upload_local(
    job: &ExportJob,
    path: &Path,
    dest: &Path,
    cancel: &CancellationToken,
    progress: &Progress,
    counted: &mut u64,
) -> Result<FileDigest, WingError> {
    let seq = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut staging = dest.as_os_str().to_owned();
    staging.push(format!("#{}{seq:06}", std::process::id()));
    let staging = PathBuf::from(staging);
    let (from, to) = (path.to_path_buf(), staging.clone());
    let copy = job.io().run(move || LocalCopy::open(&from, &to)).await?;
    let mut copy = Some(copy?);
    let result: Result<FileDigest, WingError> = async {
        loop {
            let mut c = copy.take().ok_or_else(|| WingError::Internal("a local upload lost its file".into()))?;
            let (c, n) = job
                .io()
                .run(move || {
                    let n = c.step();
                    (c, n)
                })
                .await?;
            let n = n?;
            if n == 0 {
                let (c, dest) = (c, dest.to_path_buf());
                return job.io().run(move || c.finish(&dest)).await?;
            }
            copy = Some(c);
            progress.uploaded.fetch_add(n, Ordering::Relaxed);
            *counted += n;
            tokio::select! {
                _ = cancel.cancelled() => return Err(canceled()),
                _ = job.limits().limiter.acquire(n) => {}
            }
        }
    }
    .await;
    if result.is_err() {
        drop(copy);
        let _ = job.io().run(move || std::fs::remove_file(&staging)).await;
    } else if cancel.is_cancelled() {
        // As for the store's uploads: a file completed after a cancel is deleted.
        let dest = dest.to_path_buf();
        let _ = job.io().run(move || std::fs::remove_file(&dest)).await;
        return Err(canceled());
    }
    result
}

/// One local upload in progress (blocking calls, on the bulk-load I/O threads).
struct LocalCopy {
    src: std::fs::File,
    dst: std::fs::File,
    staging: PathBuf,
    hasher: ContentHasher,
    buf: Vec<u8>,
    offset: u64,
}

impl LocalCopy {
    fn open(src: &Path, staging: &Path) -> Result<Self, WingError> {
        let err = |what: &str, p: &Path, e: std::io::Error| WingError::Storage(format!("{what} {}: {e}", p.display()));
        if let Some(parent) = staging.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("create", parent, e))?;
        }
        Ok(Self {
            src: std::fs::File::open(src).map_err(|e| err("open", src, e))?,
            dst: std::fs::File::create(staging).map_err(|e| err("create", staging, e))?,
            staging: staging.to_path_buf(),
            hasher: ContentHasher::new(DigestKind::Xxh3),
            buf: vec![0u8; LOCAL_PIECE_BYTES],
            offset: 0,
        })
    }

    /// Copies up to [`PART_BYTES`] more, piece by piece; answers the bytes copied (0 at the end).
    fn step(&mut self) -> Result<u64, WingError> {
        let mut stepped = 0;
        while stepped < PART_BYTES as u64 {
            let n = self.piece()?;
            if n == 0 {
                break;
            }
            stepped += n;
        }
        Ok(stepped)
    }

    /// Reads the next piece, hashes it and has the kernel copy the same range; answers its
    /// length (0 at the end).
    fn piece(&mut self) -> Result<u64, WingError> {
        use std::os::unix::fs::FileExt;
        let storage =
            |what: &str, e: std::io::Error| WingError::Storage(format!("{what} {}: {e}", self.staging.display()));
        // Read in order: `copy_range` names its offsets and leaves the file position alone.
        let n = fill(&self.src, &mut self.buf).map_err(|e| storage("read the source of", e))?;
        self.hasher.update(&self.buf[..n]);
        let mut copied = 0;
        while copied < n {
            match copy_range(&self.src, &self.dst, self.offset + copied as u64, n - copied) {
                Ok(0) => break,
                Ok(k) => copied += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if copied < n {
            // No kernel copy here (another file system, an old kernel): the bytes already read.
            self.dst
                .write_all_at(&self.buf[copied..n], self.offset + copied as u64)
                .map_err(|e| storage("write", e))?;
        }
        self.offset += n as u64;
        Ok(n as u64)
    }

    /// Syncs the staging file and renames it to `dest`; answers the digest.
    fn finish(self, dest: &Path) -> Result<FileDigest, WingError> {
        let storage =
            |what: &str, e: std::io::Error| WingError::Storage(format!("{what} {}: {e}", self.staging.display()));
        self.dst.sync_all().map_err(|e| storage("sync", e))?;
        std::fs::rename(&self.staging, dest).map_err(|e| storage("rename", e))?;
        Ok(self.hasher.finish())
    }
}

/// Has the kernel copy `len` bytes at `offset` of `src` to the same offset of `dst`.
#[cfg(target_os = "linux")]
fn copy_range(src: &std::fs::File, dst: &std::fs::File, offset: u64, len: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let (mut from, mut to) = (offset as libc::loff_t, offset as libc::loff_t);
    // SAFETY: two valid open descriptors and offsets owned by this frame.
    let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut from, dst.as_raw_fd(), &mut to, len, 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn copy_range(_: &std::fs::File, _: &std::fs::File, _: u64, _: usize) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::Unsupported.into())
}

type Chunk = (std::fs::File, ContentHasher, Vec<u8>);

/// Reads the next chunk of `file` and hashes it (blocking).
fn read_chunk(file: Option<std::fs::File>, hasher: Option<ContentHasher>) -> Result<Chunk, WingError> {
    let (Some(file), Some(mut hasher)) = (file, hasher) else {
        return Err(WingError::Internal("an upload lost its file".into()));
    };
    let mut buf = vec![0u8; PART_BYTES];
    let n = fill(&file, &mut buf).map_err(|e| WingError::Storage(format!("read an exported file: {e}")))?;
    buf.truncate(n);
    hasher.update(&buf);
    Ok((file, hasher, buf))
}

/// Reads `file` from its position until `buf` is full or the file ends; answers the bytes read.
fn fill(mut file: &std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local upload copies the file whole through its staging file, which the provider's
    /// listing never shows, and answers the xxh3 of the bytes.
    #[tokio::test]
    async fn a_local_copy_lands_whole_and_its_staging_file_is_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.sst");
        // Over two pieces, the last one short.
        let bytes: Vec<u8> = (0..PART_BYTES * 2 + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&src, &bytes).unwrap();
        let root = dir.path().join("provider");
        let dest = root.join("b/1/0/f.sst");
        let staging = root.join("b/1/0/f.sst#1000001");
        let mut copy = LocalCopy::open(&src, &staging).unwrap();
        assert_eq!(copy.step().unwrap(), PART_BYTES as u64);
        let store = object_store::local::LocalFileSystem::new_with_prefix(&root).unwrap();
        let listed: Vec<_> = store.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        assert!(listed.is_empty(), "a staging file was listed: {listed:?}");
        while copy.step().unwrap() > 0 {}
        let digest = copy.finish(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert!(!staging.exists());
        assert_eq!(digest, FileDigest::of(DigestKind::Xxh3, &bytes));
        let listed: Vec<_> = store.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        assert_eq!(listed, vec!["b/1/0/f.sst".to_string()]);
    }

    struct Primary(Arc<rocksdb::DB>);

    impl ExportSource for Primary {
        fn db(&self) -> Arc<rocksdb::DB> {
            self.0.clone()
        }

        fn check_primary(&self) -> Result<(), WingError> {
            Ok(())
        }
    }

    /// A start that may wait answers once the export has ended (the meta's long poll), with
    /// the partition's metadata written by then; a later start answers the same, at once.
    #[tokio::test]
    async fn a_waiting_start_answers_when_the_export_has_ended() {
        use crate::config::{BulkLoadConfig, StorageConfig};
        use wingkv_common::provider::{local_path, open_provider, ProviderConfig};
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::SharedStorage::new(StorageConfig::default()).open(&dir.path().join("db")).unwrap();
        let cf = crate::store::data_cf(&db).unwrap();
        for i in 0..1000u32 {
            db.put_cf(cf, format!("key{i:05}"), [7u8; 100]).unwrap();
        }
        let config = BulkLoadConfig {
            provider: ProviderConfig::local(dir.path().join("provider")),
            min_free_disk_bytes: 0,
            ..Default::default()
        };
        let env = Arc::new(BulkLoadEnv::new(&config).unwrap());
        let partition_dir = ObjectPath::from("backups/onebox/t/backup/1/0");
        let job = ExportJob {
            backup_id: 1,
            store: open_provider("local", &env.provider).unwrap(),
            local_dir: local_path("local", &env.provider, &partition_dir),
            partition_dir,
            env,
            limits: Arc::new(BackupLimits::new(&config).unwrap()),
        };
        let slot = BackupSlot::new(1, &dir.path().join("replica"));
        let started = slot.start(Arc::new(Primary(db)), job).await.unwrap();
        assert_eq!(started.status(), BackupStatus::BkRunning);
        let ended = slot.state_after(1, std::time::Duration::from_secs(120)).await.unwrap();
        assert_eq!(ended.status(), BackupStatus::BkSucceed, "{ended:?}");
        assert!(ended.file_count > 0 && ended.total_bytes > 0, "{ended:?}");
        let metadata = dir.path().join("provider/backups/onebox/t/backup/1/0").join(BULK_LOAD_METADATA);
        let listed = BulkLoadMetadata::parse(&std::fs::read(&metadata).unwrap()).unwrap();
        assert_eq!(listed.files.len(), ended.file_count as usize);
        let again = slot.state_after(1, std::time::Duration::from_secs(120)).await.unwrap();
        assert_eq!(again, ended);
        slot.close().await;
    }
}
