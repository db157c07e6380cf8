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
use wingkv_common::WingError;

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
    /// State.
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
            state: self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            downloaded_bytes: self.shared.downloaded.load(Ordering::Relaxed),
            total_bytes: self.shared.total.load(Ordering::Relaxed),
            live_tasks: self.shared.live.load(Ordering::SeqCst),
            retries: self.shared.retries.load(Ordering::Relaxed),
            backoff_ms: self.shared.backoff_ms.load(Ordering::Relaxed),
            retrying_after: self.shared.retrying_after.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// The verified files, once every one is downloaded.
    pub fn downloaded_files(&self) -> Option<Vec<FileMeta>> {
        if self.status().state != LoaderState::Downloaded {
            return None;
        }
        self.shared.files.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the downloads end by themselves (downloaded, failed or canceled).
    pub async fn finished(&self) -> LoaderStatus {
        self.tracker.wait().await;
        self.status()
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
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn set_state(shared: &Shared, state: LoaderState) {
    *shared.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
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
            *shared.files.lock().unwrap_or_else(|p| p.into_inner()) = Some(files);
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
                *shared.retrying_after.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                let canceled = tokio::select! {
                    _ = cancel.cancelled() => true,
                    _ = tokio::time::sleep(delay) => false,
                };
                shared.backoff_ms.store(0, Ordering::Relaxed);
                *shared.retrying_after.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if canceled {
                    return Err(WingError::InvalidState("canceled".into()));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn free_disk_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether `path` already holds `meta`'s content (a file kept across a pause or restart).
async fn already_there(path: PathBuf, meta: FileMeta) -> bool {
    tokio::task::spawn_blocking(move || file_matches(&path, &meta)).await.unwrap_or(false)
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
    let meta = BulkLoadMetadata::parse(&bytes).map_err(|e| WingError::InvalidArgument(format!("{what}: {e}")))?;
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
                let Some(f) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                    return Ok(());
                };
                let dest = dir.join(&f.name);
                if already_there(dest.clone(), f.clone()).await {
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
                    download_file(&*from, &f.name, &dest, &f, &limits.limiter, &shared.downloaded, &cancel).await
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
mod tests {
    use std::time::{Duration, Instant};

    use wingkv_common::bulk_load::md5_hex;
    use wingkv_common::provider::{open_provider, ProviderConfig};

    use super::*;
    use crate::bulk_load::source::ProviderFiles;
    use object_store::ObjectStore;
    use wingkv_common::bulk_load::BULK_LOAD_METADATA;

    /// A loader of job `source` from the provider `store` (files listed by its metadata).
    fn start(
        source: BulkLoadSource,
        replica: &Path,
        store: Arc<dyn ObjectStore>,
        limits: Arc<DownloadLimits>,
    ) -> BulkLoader {
        let from: Arc<dyn FileSource> = Arc::new(ProviderFiles::new(store, &source.partition_dir).unwrap());
        BulkLoader::start(source, replica, from, None, limits)
    }

    struct Remote {
        _dir: tempfile::TempDir,
        store: Arc<dyn ObjectStore>,
        /// The bytes of every file.
        total: u64,
    }

    /// An SST file (uncompressed) holding one record whose value is `content`.
    fn sst_of(content: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sst");
        let mut opts = rocksdb::Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        let mut w = rocksdb::SstFileWriter::create(&opts);
        w.open(&path).unwrap();
        w.put(b"key", content).unwrap();
        w.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    /// A local provider holding partition `t/0` with SST files (name, the value they hold) and
    /// metadata that describes them, as `tamper` leaves it.
    async fn remote(files: &[(&str, Vec<u8>)], tamper: impl Fn(&mut BulkLoadMetadata)) -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ProviderConfig { local_root: dir.path().to_path_buf(), ..Default::default() };
        let store = open_provider("local", &cfg).unwrap();
        let pdir = object_store::path::Path::from("bl/c/t/0");
        let mut meta = BulkLoadMetadata::default();
        for (name, content) in files {
            let content = sst_of(content);
            store.put(&pdir.child(*name), content.clone().into()).await.unwrap();
            meta.files.push(FileMeta { name: name.to_string(), size: content.len() as u64, md5: md5_hex(&content) });
            meta.file_total_size += content.len() as u64;
        }
        let total = meta.file_total_size;
        tamper(&mut meta);
        store.put(&pdir.child(BULK_LOAD_METADATA), serde_json::to_vec(&meta).unwrap().into()).await.unwrap();
        Remote { _dir: dir, store, total }
    }

    fn source(job_id: u64) -> BulkLoadSource {
        BulkLoadSource { job_id, provider: "local".into(), partition_dir: "bl/c/t/0".into() }
    }

    fn limits(bytes_per_sec: u64) -> Arc<DownloadLimits> {
        Arc::new(DownloadLimits {
            limiter: RateLimiter::new(bytes_per_sec),
            slots: Semaphore::new(2),
            min_free_bytes: 0,
            retry: BackoffPolicy::new(Duration::from_millis(10), Duration::from_millis(100)),
            retries: AtomicU64::new(0),
            max_metadata_bytes: 64 << 10,
            max_files: 100,
        })
    }

    async fn settle(loader: &BulkLoader) -> LoaderStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = loader.status();
            if s.state != LoaderState::Downloading || Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn downloads_and_verifies_every_file() {
        let r = remote(&[("0.sst", vec![1; 100_000]), ("1.sst", vec![2; 5])], |_| {}).await;
        let replica = tempfile::tempdir().unwrap();
        let loader = start(source(7), replica.path(), r.store.clone(), limits(0));
        let s = settle(&loader).await;
        assert_eq!(s.state, LoaderState::Downloaded);
        assert_eq!((s.downloaded_bytes, s.total_bytes, s.live_tasks), (r.total, r.total, 0));
        assert_eq!(loader.downloaded_files().unwrap().len(), 2);
        let remote_file = object_store::path::Path::from("bl/c/t/0/1.sst");
        let want = r.store.get(&remote_file).await.unwrap().bytes().await.unwrap();
        assert_eq!(std::fs::read(replica.path().join("bulk_load/7/1.sst")).unwrap(), want.to_vec());
        let dir = loader.dir().to_path_buf();
        loader.clear().await;
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn bad_files_fail_with_a_reason_and_leave_no_partial_file() {
        let replica = tempfile::tempdir().unwrap();
        let r = remote(&[("0.sst", vec![1; 1000])], |m| m.files[0].md5 = "0".repeat(32)).await;
        let loader = start(source(1), replica.path(), r.store.clone(), limits(0));
        match settle(&loader).await.state {
            LoaderState::Failed(reason) => assert!(reason.contains("md5"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!replica.path().join("bulk_load/1/0.tmp").exists());
        assert!(!replica.path().join("bulk_load/1/0.sst").exists());

        let r = remote(&[("0.sst", vec![1; 1000])], |m| {
            m.files[0].size -= 1;
            m.file_total_size -= 1;
        })
        .await;
        let loader = start(source(2), replica.path(), r.store.clone(), limits(0));
        assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("larger")));

        let r = remote(&[], |m| {
            m.files.push(FileMeta { name: "../escape.sst".into(), size: 1, md5: md5_hex(b"x") });
            m.file_total_size = 1;
        })
        .await;
        let loader = start(source(3), replica.path(), r.store.clone(), limits(0));
        assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("..")));

        let empty = tempfile::tempdir().unwrap();
        let cfg = ProviderConfig { local_root: empty.path().to_path_buf(), ..Default::default() };
        let store = open_provider("local", &cfg).unwrap();
        let loader = start(source(4), replica.path(), store, limits(0));
        assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("does not exist")));
    }

    /// A provider whose first `failures` reads fail as a flaky network would, then recover.
    #[derive(Debug)]
    struct Flaky {
        inner: Arc<dyn ObjectStore>,
        failures: AtomicU32,
        /// Only reads of paths ending so fail ("" = all).
        suffix: &'static str,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Flaky({})", self.inner)
        }
    }

    #[tonic::async_trait]
    impl ObjectStore for Flaky {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            if location.as_ref().ends_with(self.suffix)
                && self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
            {
                return Err(object_store::Error::Generic { store: "flaky", source: "connection reset by peer".into() });
            }
            self.inner.get_opts(location, options).await
        }

        async fn delete(&self, location: &object_store::path::Path) -> object_store::Result<()> {
            self.inner.delete(location).await
        }

        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
        ) -> object_store::Result<()> {
            self.inner.copy(from, to).await
        }

        async fn copy_if_not_exists(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
        ) -> object_store::Result<()> {
            self.inner.copy_if_not_exists(from, to).await
        }
    }

    #[tokio::test]
    async fn transient_provider_failures_are_retried_with_backoff() {
        let r = remote(&[("0.sst", vec![6; 50_000]), ("1.sst", vec![7; 50_000])], |_| {}).await;
        let flaky: Arc<dyn ObjectStore> =
            Arc::new(Flaky { inner: r.store.clone(), failures: AtomicU32::new(5), suffix: "" });
        let replica = tempfile::tempdir().unwrap();
        let limits = limits(0);
        let loader = start(source(11), replica.path(), flaky, limits.clone());
        let s = settle(&loader).await;
        assert_eq!(s.state, LoaderState::Downloaded, "a flaky provider failed the job");
        assert_eq!((s.retries, s.backoff_ms, s.downloaded_bytes), (5, 0, r.total));
        assert_eq!(limits.retries.load(Ordering::Relaxed), 5);
        assert_eq!(loader.downloaded_files().unwrap().len(), 2);

        // While the provider stays down, the loader waits with growing backoff and cancels at once.
        let down: Arc<dyn ObjectStore> =
            Arc::new(Flaky { inner: r.store.clone(), failures: AtomicU32::new(u32::MAX), suffix: "" });
        let loader = start(source(12), replica.path(), down, limits.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while loader.status().retries < 4 {
            assert!(Instant::now() < deadline, "no retries");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(loader.status().state, LoaderState::Downloading, "a transient failure must not fail the job");
        let s = loader.clear().await;
        assert_eq!((s.state, s.live_tasks), (LoaderState::Canceled, 0));
    }

    /// Holds the first thread that reaches a fail point until the test releases it.
    #[cfg(feature = "failpoints")]
    struct Gate {
        entered: std::sync::mpsc::Receiver<()>,
        release: std::sync::mpsc::Sender<()>,
    }

    #[cfg(feature = "failpoints")]
    impl Gate {
        fn install(name: &str) -> Self {
            let (entered_tx, entered) = std::sync::mpsc::channel();
            let (release, release_rx) = std::sync::mpsc::channel::<()>();
            let (entered_tx, release_rx) = (Mutex::new(Some(entered_tx)), Mutex::new(release_rx));
            fail::cfg_callback(name, move || {
                // Only the first arrival waits; later ones pass.
                if let Some(tx) = entered_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                    let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
                }
            })
            .unwrap();
            Self { entered, release }
        }

        /// Waits (off the runtime) until a thread is held at the fail point.
        async fn wait_entered(self) -> std::sync::mpsc::Sender<()> {
            let Gate { entered, release } = self;
            tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
                .await
                .unwrap()
                .expect("nothing reached the fail point");
            release
        }
    }

    /// The Pegasus core dump, forced: a clear lands while a download task is between two chunks.
    /// The clear must wait for that task, and only then remove the files.
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failpoint_a_clear_between_two_chunks_waits_for_the_task() {
        let scenario = fail::FailScenario::setup();
        let gate = Gate::install("bulk_load::between_chunks");
        let r = remote(&[("0.sst", vec![8; 2_000_000])], |_| {}).await;
        let replica = tempfile::tempdir().unwrap();
        let loader = start(source(21), replica.path(), r.store.clone(), limits(0));
        let (dir, shared) = (loader.dir().to_path_buf(), loader.shared.clone());
        let release = gate.wait_entered().await;
        assert_eq!(shared.live.load(Ordering::SeqCst), 2, "the coordinator and the file task are live");
        let mut clear = Box::pin(loader.clear());
        // The task is held mid-download: the clear must not get past it.
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut clear).await.is_err(), "clear did not wait");
        assert!(dir.exists(), "files removed under a live task");
        release.send(()).unwrap();
        let s = tokio::time::timeout(Duration::from_secs(10), clear).await.expect("clear hangs");
        assert_eq!((s.state, s.live_tasks), (LoaderState::Canceled, 0));
        assert!(!dir.exists());
        scenario.teardown();
    }

    /// A new job starting while an old job's clear is between "tasks ended" and "files removed"
    /// keeps its own files: everything is keyed by job id.
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failpoint_a_new_job_during_an_old_jobs_clear_keeps_its_files() {
        let scenario = fail::FailScenario::setup();
        let r = remote(&[("0.sst", vec![9; 30_000])], |_| {}).await;
        let replica = tempfile::tempdir().unwrap();
        let old = start(source(31), replica.path(), r.store.clone(), limits(0));
        assert_eq!(settle(&old).await.state, LoaderState::Downloaded);
        let gate = Gate::install("bulk_load::before_clear");
        let old_dir = old.dir().to_path_buf();
        let clearing = tokio::spawn(old.clear());
        let release = gate.wait_entered().await;
        let new = start(source(32), replica.path(), r.store.clone(), limits(0));
        assert_eq!(settle(&new).await.state, LoaderState::Downloaded);
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), clearing).await.expect("clear hangs").unwrap();
        assert!(!old_dir.exists());
        assert!(new.dir().join("0.sst").exists(), "the old job's clear removed the new job's file");
        assert_eq!(new.downloaded_files().unwrap().len(), 1);
        scenario.teardown();
    }

    #[tokio::test]
    async fn a_file_that_is_not_an_sst_is_refused_at_download() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ProviderConfig { local_root: dir.path().to_path_buf(), ..Default::default() };
        let store = open_provider("local", &cfg).unwrap();
        let pdir = object_store::path::Path::from("bl/c/t/0");
        let junk = b"this is not a table file at all".to_vec();
        store.put(&pdir.child("0.sst"), junk.clone().into()).await.unwrap();
        let meta = BulkLoadMetadata {
            files: vec![FileMeta { name: "0.sst".into(), size: junk.len() as u64, md5: md5_hex(&junk) }],
            file_total_size: junk.len() as u64,
        };
        store.put(&pdir.child(BULK_LOAD_METADATA), serde_json::to_vec(&meta).unwrap().into()).await.unwrap();
        let replica = tempfile::tempdir().unwrap();
        let loader = start(source(8), replica.path(), store, limits(0));
        assert!(matches!(settle(&loader).await.state, LoaderState::Failed(ref m) if m.contains("not an SST")));
    }

    #[tokio::test]
    async fn clear_during_download_ends_every_task_before_removing_files() {
        let r = remote(&[("0.sst", vec![3; 400_000]), ("1.sst", vec![4; 400_000])], |_| {}).await;
        let replica = tempfile::tempdir().unwrap();
        // 50 KB/s: the download takes seconds, so it is surely running when cleared.
        let loader = start(source(9), replica.path(), r.store.clone(), limits(50_000));
        let deadline = Instant::now() + Duration::from_secs(10);
        while loader.status().downloaded_bytes == 0 {
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(loader.status().live_tasks > 0);
        let dir = loader.dir().to_path_buf();
        let shared = loader.shared.clone();
        // What is left to download takes this long at 50 KB/s: a clear that waited for the
        // download instead of stopping it would take at least as long (a bound that holds on a
        // loaded machine, unlike a small wall-clock budget).
        let status = loader.status();
        let left = Duration::from_secs_f64((status.total_bytes - status.downloaded_bytes) as f64 / 50_000.0);
        let started = Instant::now();
        loader.clear().await;
        assert!(started.elapsed() < left, "cancel took {:?}, the rest of the download {left:?}", started.elapsed());
        assert_eq!(shared.live.load(Ordering::SeqCst), 0, "a download task outlived clear()");
        assert_eq!(*shared.state.lock().unwrap(), LoaderState::Canceled);
        assert!(!dir.exists(), "files of a canceled job are left");
    }

    #[tokio::test]
    async fn a_paused_job_resumes_without_downloading_verified_files_again() {
        let r = remote(&[("0.sst", vec![5; 10_000])], |_| {}).await;
        let replica = tempfile::tempdir().unwrap();
        let first = start(source(5), replica.path(), r.store.clone(), limits(0));
        assert_eq!(settle(&first).await.state, LoaderState::Downloaded);
        first.stop().await;
        drop(first);
        let again = start(source(5), replica.path(), r.store.clone(), limits(0));
        let s = settle(&again).await;
        assert_eq!((s.state, s.downloaded_bytes), (LoaderState::Downloaded, r.total));
    }

    #[tokio::test]
    async fn oversized_metadata_and_too_many_files_fail_naming_the_limit() {
        let replica = tempfile::tempdir().unwrap();
        // 101 files: over the limit of 100.
        let many: Vec<(String, Vec<u8>)> = (0..101).map(|i| (format!("{i}.sst"), vec![1u8; 3])).collect();
        let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
        let r = remote(&many, |_| {}).await;
        let loader = start(source(41), replica.path(), r.store.clone(), limits(0));
        match settle(&loader).await.state {
            LoaderState::Failed(m) => assert!(m.contains("101 files") && m.contains("max_files_per_partition"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Metadata over 64 KiB: refused before it is read.
        let r = remote(&[("0.sst", vec![1; 10])], |m| {
            m.files.extend((0..2_000).map(|i| FileMeta { name: format!("pad-{i}.sst"), size: 0, md5: "0".repeat(32) }))
        })
        .await;
        let loader = start(source(42), replica.path(), r.store.clone(), limits(0));
        match settle(&loader).await.state {
            LoaderState::Failed(m) => assert!(m.contains("max_metadata_bytes"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!replica.path().join("bulk_load/41").exists() && !replica.path().join("bulk_load/42").exists());
    }

    #[tokio::test]
    async fn a_verified_list_is_recorded_only_once_every_file_is_verified() {
        let r = remote(&[("0.sst", vec![1; 1000]), ("1.sst", vec![2; 1000])], |_| {}).await;
        let replica = tempfile::tempdir().unwrap();
        let loader = start(source(43), replica.path(), r.store.clone(), limits(0));
        assert_eq!(settle(&loader).await.state, LoaderState::Downloaded);
        let mut listed = read_verified_list(loader.dir()).expect("no verified list");
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(listed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["0.sst", "1.sst"]);
        // The producer replaced 1.sst: a new attempt drops the list before it touches any file.
        let r = remote(&[("0.sst", vec![1; 1000]), ("1.sst", vec![3; 1000])], |_| {}).await;
        let down: Arc<dyn ObjectStore> =
            Arc::new(Flaky { inner: r.store.clone(), failures: AtomicU32::new(u32::MAX), suffix: "1.sst" });
        let again = start(source(43), replica.path(), down, limits(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        while again.status().retries == 0 {
            assert!(Instant::now() < deadline, "no retry");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(read_verified_list(again.dir()).is_none(), "a verified list outlived the start of a new attempt");
        again.stop().await;
    }

    /// A file that ends like an SST, with the md5 its metadata says, but a damaged block: RocksDB
    /// refuses it at download, before any ingestion is proposed.
    #[tokio::test]
    async fn a_damaged_sst_with_a_matching_md5_is_refused_by_rocksdb_at_download() {
        let r = remote(&[("0.sst", vec![7; 10_000])], |_| {}).await;
        let pdir = object_store::path::Path::from("bl/c/t/0");
        let mut bytes = r.store.get(&pdir.child("0.sst")).await.unwrap().bytes().await.unwrap().to_vec();
        bytes[100] ^= 0x5a;
        r.store.put(&pdir.child("0.sst"), bytes.clone().into()).await.unwrap();
        let meta = BulkLoadMetadata {
            files: vec![FileMeta { name: "0.sst".into(), size: bytes.len() as u64, md5: md5_hex(&bytes) }],
            file_total_size: bytes.len() as u64,
        };
        r.store.put(&pdir.child(BULK_LOAD_METADATA), serde_json::to_vec(&meta).unwrap().into()).await.unwrap();
        let replica = tempfile::tempdir().unwrap();
        let loader = start(source(44), replica.path(), r.store.clone(), limits(0));
        match settle(&loader).await.state {
            LoaderState::Failed(m) => assert!(m.contains("refused by RocksDB"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(read_verified_list(loader.dir()).is_none());
    }
}
