//! [`BulkLoader`]: the owner of one job's downloads on one replica.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wingkv_common::backoff::BackoffPolicy;
use wingkv_common::bulk_load::{validate_file_name, BulkLoadMetadata, FileMeta};
use wingkv_common::sync::MutexExt;
use wingkv_common::WingError;

use crate::disk_space::free_disk_bytes;

use super::download::{download_file, file_matches, is_transient, RateLimiter};
use super::job_dir;
use super::source::FileSource;

/// Where one partition's files of one job come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkLoadSource {
    /// The job (never reused, so local state keyed by it cannot mix jobs).
    pub job_id: u64,
    /// Provider name (`local`, `s3`, `memory`).
    pub provider: String,
    /// Object path of the partition's directory: `{root}/{cluster}/{table}/{pidx}`.
    pub partition_dir: String,
}

/// Node-wide download limits shared by every loader.
pub struct DownloadLimits {
    /// Bandwidth of all downloads together.
    pub limiter: RateLimiter,
    /// Concurrent file downloads.
    pub slots: Semaphore,
    /// Free disk a download must leave.
    pub min_free_bytes: u64,
    /// Backoff of transient download failures.
    pub retry: BackoffPolicy,
    /// Transient download failures retried on this node since start.
    pub retries: AtomicU64,
    /// Largest `bulk_load_metadata` read.
    pub max_metadata_bytes: u64,
    /// Most files in one partition's job.
    pub max_files: usize,
    /// Where downloads are written, hashed and read back (low-priority threads).
    pub io: super::io_pool::BulkIoPool,
}

/// Where a loader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderState {
    /// Downloading (or about to).
    Downloading,
    /// Every file is on disk and verified.
    Downloaded,
    /// Stopped by an error, with its reason.
    Failed(String),
    /// Stopped by cancellation.
    Canceled,
}

/// Progress and state of a loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderStatus {
    /// Where the job's downloads are (running, done, paused, failed, canceled).
    pub state: LoaderState,
    /// Bytes on disk and verified (or being written).
    pub downloaded_bytes: u64,
    /// Bytes to download in all.
    pub total_bytes: u64,
    /// Download tasks running now.
    pub live_tasks: usize,
    /// Transient failures retried so far.
    pub retries: u32,
    /// The backoff being waited now (0 when no retry is pending).
    pub backoff_ms: u64,
    /// The last transient failure, while a retry is pending.
    pub retrying_after: Option<String>,
}

struct Shared {
    state: Mutex<LoaderState>,
    files: Mutex<Option<Vec<FileMeta>>>,
    downloaded: AtomicU64,
    total: AtomicU64,
    live: AtomicUsize,
    retries: AtomicU32,
    backoff_ms: AtomicU64,
    retrying_after: Mutex<Option<String>>,
}

/// The downloads of one job on one replica. Dropping it without [`clear`](Self::clear) or
/// [`stop`](Self::stop) still cancels the downloads (the token is cancelled on drop), but only
/// those two wait for them.
pub struct BulkLoader {
    source: BulkLoadSource,
    dir: PathBuf,
    cancel: CancellationToken,
    tracker: TaskTracker,
    shared: Arc<Shared>,
}

impl Drop for BulkLoader {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Decrements the live-task count however a task ends.
struct LiveTask(Arc<Shared>);

impl LiveTask {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.live.fetch_add(1, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BulkLoader {
    /// Starts downloading job `source`'s files into the replica at `replica_dir` from `from`:
    /// the files `known` lists (an `IngestSst` being applied), or else those of the job's
    /// `bulk_load_metadata`.
    pub fn start(
        source: BulkLoadSource,
        replica_dir: &Path,
        from: Arc<dyn FileSource>,
        known: Option<Vec<FileMeta>>,
        limits: Arc<DownloadLimits>,
    ) -> Self {
        let dir = job_dir(replica_dir, source.job_id);
        let shared = Arc::new(Shared {
            state: Mutex::new(LoaderState::Downloading),
            files: Mutex::new(None),
            downloaded: AtomicU64::new(0),
            total: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            retries: AtomicU32::new(0),
            backoff_ms: AtomicU64::new(0),
            retrying_after: Mutex::new(None),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let run = coordinate(source.clone(), dir.clone(), from, known, limits, shared.clone(), cancel.clone());
        tracker.spawn(run);
        tracker.close();
        Self { source, dir, cancel, tracker, shared }
    }

    /// The job's source.
    pub fn source(&self) -> &BulkLoadSource {
        &self.source
    }

    /// The job's local directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Progress and state.
    pub fn status(&self) -> LoaderStatus {
        LoaderStatus {
            state: self.shared.state.locked().clone(),
            downloaded_bytes: self.shared.downloaded.load(Ordering::Relaxed),
            total_bytes: self.shared.total.load(Ordering::Relaxed),
            live_tasks: self.shared.live.load(Ordering::SeqCst),
            retries: self.shared.retries.load(Ordering::Relaxed),
            backoff_ms: self.shared.backoff_ms.load(Ordering::Relaxed),
            retrying_after: self.shared.retrying_after.locked().clone(),
        }
    }

    /// The verified files, once every one is downloaded.
    pub fn downloaded_files(&self) -> Option<Vec<FileMeta>> {
        if self.status().state != LoaderState::Downloaded {
            return None;
        }
        self.shared.files.locked().clone()
    }

    /// A handle that waits for the end of the downloads without holding the loader.
    pub fn done(&self) -> LoaderDone {
        LoaderDone { tracker: self.tracker.clone(), shared: self.shared.clone() }
    }

    /// Stops the downloads and waits until every task has ended; keeps the files (pause).
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }

    /// Stops the downloads, waits until every task has ended, and only then removes the job's
    /// local files. This order is what makes a cancel, a failure or a replica close safe.
    /// Answers the status after the wait: its `live_tasks` is what the operator sees (0, unless
    /// a task escaped its tracker, which would be a bug worth seeing).
    pub async fn clear(self) -> LoaderStatus {
        self.stop().await;
        // Race window: every task has ended, the files are not removed yet.
        fail::fail_point!("bulk_load::before_clear");
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), "cannot remove bulk-load files: {e}");
            }
        }
        self.status()
    }
}

/// Waits for a loader's downloads to end (see [`BulkLoader::done`]).
pub struct LoaderDone {
    tracker: TaskTracker,
    shared: Arc<Shared>,
}

impl LoaderDone {
    /// The loader's state once its downloads ended (downloaded, failed or canceled).
    pub async fn finished(self) -> LoaderState {
        self.tracker.wait().await;
        self.shared.state.locked().clone()
    }
}

fn set_state(shared: &Shared, state: LoaderState) {
    *shared.state.locked() = state;
}

async fn coordinate(
    source: BulkLoadSource,
    dir: PathBuf,
    from: Arc<dyn FileSource>,
    known: Option<Vec<FileMeta>>,
    limits: Arc<DownloadLimits>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let _live = LiveTask::new(&shared);
    let outcome = download_all(&dir, &from, known, &limits, &shared, &cancel).await;
    let state = match outcome {
        Ok(files) => {
            *shared.files.locked() = Some(files);
            LoaderState::Downloaded
        }
        Err(_) if cancel.is_cancelled() => LoaderState::Canceled,
        Err(e) => {
            tracing::warn!(job = source.job_id, dir = %source.partition_dir, "bulk-load download failed: {e}");
            LoaderState::Failed(e.to_string())
        }
    };
    set_state(&shared, state);
}

/// Runs `attempt` until it succeeds or fails for good: a transient failure (the provider
/// unreachable or throttling) is retried after an exponential backoff with jitter, for as long
/// as the job lives (`cancel`); the count and the current backoff show in the loader's status.
async fn with_retry<T, F, Fut>(
    limits: &DownloadLimits,
    shared: &Shared,
    cancel: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Result<T, WingError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WingError>>,
{
    let mut backoff = limits.retry.start();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && !cancel.is_cancelled() => {
                let delay = backoff.next_delay();
                shared.retries.fetch_add(1, Ordering::Relaxed);
                limits.retries.fetch_add(1, Ordering::Relaxed);
                shared.backoff_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
                tracing::info!(%what, attempt = backoff.attempts(), ?delay, "bulk-load download retried: {e}");
                *shared.retrying_after.locked() = Some(e.to_string());
                let canceled = tokio::select! {
                    _ = cancel.cancelled() => true,
                    _ = tokio::time::sleep(delay) => false,
                };
                shared.backoff_ms.store(0, Ordering::Relaxed);
                *shared.retrying_after.locked() = None;
                if canceled {
                    return Err(WingError::InvalidState("canceled".into()));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `path` already holds `meta`'s content (a file kept across a pause or restart).
async fn already_there(limits: &DownloadLimits, path: PathBuf, meta: FileMeta) -> bool {
    limits.io.run(move || file_matches(&path, &meta)).await.unwrap_or(false)
}

/// Reads and checks the job's file list from its `bulk_load_metadata`.
async fn read_file_list(
    from: &Arc<dyn FileSource>,
    limits: &DownloadLimits,
    shared: &Shared,
    cancel: &CancellationToken,
) -> Result<BulkLoadMetadata, WingError> {
    let what = from.describe(wingkv_common::bulk_load::BULK_LOAD_METADATA);
    let bytes = with_retry(limits, shared, cancel, &what, || async {
        tokio::select! {
            _ = cancel.cancelled() => Err(WingError::InvalidState("canceled".into())),
            r = from.metadata(limits.max_metadata_bytes) => r,
        }
    })
    .await?;
    let meta =
        BulkLoadMetadata::parse(&bytes).map_err(|e| WingError::InvalidArgument(format!("{what}: {}", e.message())))?;
    if meta.files.len() > limits.max_files {
        return Err(WingError::InvalidArgument(format!(
            "{what} lists {} files, over the limit of {} (bulk_load.max_files_per_partition)",
            meta.files.len(),
            limits.max_files
        )));
    }
    Ok(meta)
}

/// The file recording a job's verified file list in its directory: written (synced) once every
/// file is on disk and verified; what an ingestion compares with the list its command names.
pub const VERIFIED_LIST: &str = "verified_files.json";

async fn download_all(
    dir: &Path,
    from: &Arc<dyn FileSource>,
    known: Option<Vec<FileMeta>>,
    limits: &Arc<DownloadLimits>,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
) -> Result<Vec<FileMeta>, WingError> {
    // A job's own download (from the provider) is checked by RocksDB too before it counts as
    // downloaded, so that no ingestion is proposed that a replica could refuse; a fetch for an
    // ingestion (files listed by the raft log) gets bytes that passed that check on a member.
    let from_provider = known.is_none();
    let files = match known {
        Some(files) => files,
        None => read_file_list(from, limits, shared, cancel).await?.files,
    };
    let total: u64 = files.iter().map(|f| f.size).sum();
    shared.total.store(total, Ordering::Relaxed);
    // Checked before any task starts: no early return may leave a task unawaited.
    for f in &files {
        validate_file_name(&f.name)?;
    }
    tokio::fs::create_dir_all(dir).await.map_err(|e| WingError::Storage(format!("create {}: {e}", dir.display())))?;
    // Until this attempt verified every file, the directory holds no verified list: a file may
    // be replaced by this attempt.
    match tokio::fs::remove_file(dir.join(VERIFIED_LIST)).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(WingError::Storage(format!("remove {}: {e}", dir.join(VERIFIED_LIST).display())))
        }
        _ => {}
    }
    if let Some(free) = free_disk_bytes(dir) {
        if free < total.saturating_add(limits.min_free_bytes) {
            return Err(WingError::Storage(format!(
                "not enough disk for {}: {} bytes free, {} needed plus {} kept free",
                dir.display(),
                free,
                total,
                limits.min_free_bytes
            )));
        }
    }
    // Downloads stop on the job's cancellation, or on the first failure of a sibling.
    let downloads = cancel.child_token();
    // A few workers take the files in turn: a job of many files is not a task per file.
    let queue = Arc::new(Mutex::new(files.clone()));
    let workers = limits.slots.available_permits().clamp(1, 8).min(files.len().max(1));
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (queue, from, limits, shared, cancel, dir) =
            (queue.clone(), from.clone(), limits.clone(), shared.clone(), downloads.clone(), dir.to_path_buf());
        tasks.spawn(async move {
            let _live = LiveTask::new(&shared);
            loop {
                // A pause or cancel stops the start of new work (re-checking a kept file reads
                // it whole).
                if cancel.is_cancelled() {
                    return Err(WingError::InvalidState("canceled".into()));
                }
                let Some(f) = queue.locked().pop() else {
                    return Ok(());
                };
                let dest = dir.join(&f.name);
                if already_there(&limits, dest.clone(), f.clone()).await {
                    shared.downloaded.fetch_add(f.size, Ordering::Relaxed);
                    continue;
                }
                let what = from.describe(&f.name);
                with_retry(&limits, &shared, &cancel, &what, || async {
                    let _slot = tokio::select! {
                        _ = cancel.cancelled() => return Err(WingError::InvalidState("canceled".into())),
                        p = limits.slots.acquire() => {
                            p.map_err(|_| WingError::InvalidState("download slots closed".into()))?
                        }
                    };
                    download_file(&*from, &f.name, &dest, &f, &limits, &shared.downloaded, &cancel).await
                })
                .await?;
            }
        });
    }
    let mut first_err = None;
    // Every task is awaited, even after a failure, so none outlives this function.
    while let Some(joined) = tasks.join_next().await {
        let r = joined.map_err(|e| WingError::Internal(format!("download task failed: {e}"))).and_then(|r| r);
        if let Err(e) = r {
            downloads.cancel();
            // The first real failure, not a sibling's "canceled" that it caused.
            let canceled = |e: &WingError| matches!(e, WingError::InvalidState(_));
            if first_err.as_ref().is_none_or(|f| canceled(f) && !canceled(&e)) {
                first_err = Some(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if downloads.is_cancelled() => Err(WingError::InvalidState("canceled".into())),
        None => {
            if from_provider {
                let (dir, files) = (dir.to_path_buf(), files.clone());
                tokio::task::spawn_blocking(move || super::ingest::verify_with_rocksdb(&dir, &files))
                    .await
                    .map_err(|e| WingError::Internal(format!("verify task failed: {e}")))??;
            }
            let list = serde_json::to_vec(&files).map_err(|e| WingError::Internal(format!("encode file list: {e}")))?;
            let path = dir.join(VERIFIED_LIST);
            tokio::task::spawn_blocking(move || crate::durable::replace_file(&path, &list))
                .await
                .map_err(|e| WingError::Internal(format!("write file list: {e}")))??;
            Ok(files)
        }
    }
}

/// The verified file list recorded in job directory `dir`, if any.
pub fn read_verified_list(dir: &Path) -> Option<Vec<FileMeta>> {
    serde_json::from_slice(&std::fs::read(dir.join(VERIFIED_LIST)).ok()?).ok()
}

#[cfg(test)]
mod tests;
