//! [`BulkLoadSlot`]: the one owner of a replica's bulk-load files. Every download of a job —
//! the one the meta drives, and the fetch an ingestion needs — runs as the slot's loader, every
//! ingestion reads its files while holding the slot, and every removal of a job's files goes
//! through [`BulkLoader::clear`] or [`BulkLoadSlot::release`], which await every task first.
//! Once closed, the slot starts nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wingkv_common::bulk_load::FileMeta;
use wingkv_common::provider::open_provider;
use wingkv_common::WingError;
use wingkv_proto::common::BulkLoadStatus;
use wingkv_proto::replica_admin::{BulkLoadAction, ReplicaBulkLoadState};

use super::download::{file_intact, file_sized};
use super::ingest::ingested_at;
use super::io_pool::BulkIoPool;
use super::job_dir;
use super::loader::{read_verified_list, BulkLoadSource, BulkLoader, LoaderState};
use super::source::{FileSource, ProviderFiles};
use super::BulkLoadEnv;

struct Current {
    loader: BulkLoader,
    paused: bool,
    /// Fetches the files of a committed `IngestSst` being applied: nothing but the slot's
    /// close stops it (the raft log, not the meta's job, needs it).
    for_ingest: bool,
}

#[derive(Default)]
struct SlotState {
    closed: bool,
    current: Option<Current>,
}

/// The bulk-load job of one replica.
pub struct BulkLoadSlot {
    replica_dir: PathBuf,
    env: Arc<BulkLoadEnv>,
    state: tokio::sync::Mutex<SlotState>,
    /// Fired by [`close`](BulkLoadSlot::close): ends an ingestion's wait between two fetches.
    closing: CancellationToken,
}

/// Held while an ingestion reads a job's files: nothing else may start, stop or remove a
/// download of this replica meanwhile.
pub struct IngestGuard<'a> {
    _state: tokio::sync::MutexGuard<'a, SlotState>,
    /// The job's directory, holding every file of the ingestion, verified on disk.
    pub dir: PathBuf,
}

fn closed_error(dir: &Path) -> WingError {
    WingError::Unavailable(format!("the replica in {} is closing", dir.display()))
}

/// Whether `dir` holds exactly `files`: the recorded verified list names them (sizes and
/// digests as they were checked on download), each file has its size, and each is still whole
/// as read back (see [`file_intact`]) — unless `verified_here`: this process's loader of the
/// job checked every file's content (a download's digest and block checksums, a kept file's
/// digest read back), and the slot has owned the directory since, so another read would find
/// what that one did.
///
/// The read back runs on the bulk-load I/O threads, at the lowest priority. On tokio's
/// blocking pool it took both cores for the ingestion's second on every node of a load, and
/// the tables the nodes served waited for the CPU (BENCHMARKS.md, round 8).
async fn holds(io: &BulkIoPool, dir: PathBuf, files: Vec<FileMeta>, verified_here: bool) -> bool {
    let (listed_dir, listed_files) = (dir.clone(), files.clone());
    let listed = tokio::task::spawn_blocking(move || {
        let listed = read_verified_list(&listed_dir).is_some_and(|mut l| {
            l.sort_by(|a, b| a.name.cmp(&b.name));
            let mut want = listed_files.clone();
            want.sort_by(|a, b| a.name.cmp(&b.name));
            l == want
        });
        listed && listed_files.iter().all(|f| file_sized(&listed_dir.join(&f.name), f))
    })
    .await
    .unwrap_or(false);
    if !listed {
        return false;
    }
    verified_here || io.run(move || files.iter().all(|f| file_intact(&dir.join(&f.name), f))).await.unwrap_or(false)
}

impl BulkLoadSlot {
    /// An empty slot for the replica in `replica_dir`.
    pub fn new(replica_dir: PathBuf, env: Arc<BulkLoadEnv>) -> Self {
        Self { replica_dir, env, state: Default::default(), closing: CancellationToken::new() }
    }

    /// Applies `action` for the job `source` and answers this replica's state.
    pub async fn act(
        &self,
        node_id: u64,
        source: &BulkLoadSource,
        action: BulkLoadAction,
    ) -> Result<ReplicaBulkLoadState, WingError> {
        let mut st = self.state.lock().await;
        if st.closed {
            return Err(closed_error(&self.replica_dir));
        }
        if let Some(c) = st.current.as_ref().filter(|c| c.for_ingest) {
            // Raft applies in order: an earlier ingestion comes first, whatever the meta asks.
            let s = c.loader.status();
            let status = if action == BulkLoadAction::BlCancel {
                BulkLoadStatus::BlsCanceled
            } else {
                BulkLoadStatus::BlsDownloading
            };
            return Ok(ReplicaBulkLoadState {
                node_id,
                status: status.into(),
                reason: format!(
                    "fetching the files of job {} from the members, for an ingestion being applied",
                    c.loader.source().job_id
                ),
                live_tasks: s.live_tasks as u64,
                ..Default::default()
            });
        }
        // Another job's leftovers go first, tasks awaited before files are removed; the files of
        // a job ingested here stay for the members that may still need them (see `tidy`).
        if let Some(old) = st.current.take_if(|c| c.loader.source().job_id != source.job_id) {
            let dir = old.loader.dir().to_path_buf();
            // Unknown (the read's task failed) counts as ingested: the files stay.
            let ingested = tokio::task::spawn_blocking(move || ingested_at(&dir).is_some()).await.unwrap_or(true);
            if ingested {
                old.loader.stop().await;
            } else {
                old.loader.clear().await;
            }
        }
        match action {
            BulkLoadAction::BlDownload | BulkLoadAction::BlIngest => {
                let restart = match st.current.as_ref() {
                    None => true,
                    // A failure stays visible until the meta decides (it fails the job); only a
                    // paused or interrupted attempt starts again.
                    Some(c) => c.paused || c.loader.status().state == LoaderState::Canceled,
                };
                if restart {
                    if let Some(old) = st.current.take() {
                        // Keep verified files: a restart resumes where the last attempt stopped.
                        old.loader.stop().await;
                    }
                    let store = open_provider(&source.provider, &self.env.provider)?;
                    let from: Arc<dyn FileSource> = Arc::new(ProviderFiles::new(store, &source.partition_dir)?);
                    let loader =
                        BulkLoader::start(source.clone(), &self.replica_dir, from, None, self.env.limits.clone());
                    st.current = Some(Current { loader, paused: false, for_ingest: false });
                }
            }
            BulkLoadAction::BlPause => {
                if let Some(c) = st.current.as_mut() {
                    c.loader.stop().await;
                    c.paused = true;
                }
            }
            BulkLoadAction::BlCancel => {
                let live_tasks = match st.current.take() {
                    Some(old) => old.loader.clear().await.live_tasks as u64,
                    None => 0,
                };
                return Ok(ReplicaBulkLoadState {
                    node_id,
                    status: BulkLoadStatus::BlsCanceled.into(),
                    live_tasks,
                    ..Default::default()
                });
            }
        }
        Ok(match st.current.as_ref() {
            None => ReplicaBulkLoadState { node_id, status: BulkLoadStatus::BlsInvalid.into(), ..Default::default() },
            Some(c) => {
                let s = c.loader.status();
                let (status, reason) = match s.state {
                    _ if c.paused => (BulkLoadStatus::BlsPaused, String::new()),
                    // Not a failure: why the download waits, for the operator.
                    LoaderState::Downloading => {
                        (BulkLoadStatus::BlsDownloading, s.retrying_after.clone().unwrap_or_default())
                    }
                    LoaderState::Downloaded => (BulkLoadStatus::BlsDownloaded, String::new()),
                    LoaderState::Failed(r) => (BulkLoadStatus::BlsFailed, r),
                    LoaderState::Canceled => (BulkLoadStatus::BlsCanceled, String::new()),
                };
                ReplicaBulkLoadState {
                    node_id,
                    status: status.into(),
                    downloaded_bytes: s.downloaded_bytes,
                    total_bytes: s.total_bytes,
                    reason,
                    live_tasks: s.live_tasks as u64,
                    retries: s.retries,
                    backoff_ms: s.backoff_ms,
                }
            }
        })
    }

    /// Makes sure this replica holds `files` of job `source`, verified on disk, for an
    /// ingestion being applied, and answers with the slot held until the ingestion is done.
    /// Missing or different files are fetched from `peers` (the other members of the group),
    /// never from the provider, as the slot's loader; a failed fetch is retried with backoff
    /// until it succeeds or the slot closes (`Unavailable`).
    pub async fn fetch_for_ingest(
        &self,
        source: &BulkLoadSource,
        files: &[FileMeta],
        peers: Arc<dyn FileSource>,
    ) -> Result<IngestGuard<'_>, WingError> {
        let dir = job_dir(&self.replica_dir, source.job_id);
        let mut backoff = self.env.limits.retry.start();
        // A fetch ended downloaded before, and what it wrote did not verify after all.
        let mut downloaded_before = false;
        loop {
            let mut st = self.state.lock().await;
            if st.closed {
                return Err(closed_error(&self.replica_dir));
            }
            // Whatever runs now stops (verified files stay): the files this entry needs are
            // at the members, and nothing else may write the directory during the check.
            if let Some(c) = st.current.take() {
                c.loader.stop().await;
                if c.loader.source().job_id == source.job_id && c.loader.status().state == LoaderState::Downloaded {
                    // Kept as the job's loader (its status answers the meta), not restarted.
                    st.current = Some(c);
                }
            }
            let verified_here = st.current.as_ref().is_some_and(|c| {
                c.loader.source().job_id == source.job_id && c.loader.status().state == LoaderState::Downloaded
            });
            if holds(&self.env.limits.io, dir.clone(), files.to_vec(), verified_here).await {
                if let Some(c) = st.current.as_mut() {
                    c.for_ingest = false;
                }
                return Ok(IngestGuard { _state: st, dir });
            }
            tracing::info!(job = source.job_id, dir = %dir.display(), "fetching bulk-load files from peers to ingest");
            let loader = BulkLoader::start(
                source.clone(),
                &self.replica_dir,
                peers.clone(),
                Some(files.to_vec()),
                self.env.limits.clone(),
            );
            let done = loader.done();
            st.current = Some(Current { loader, paused: false, for_ingest: true });
            drop(st);
            // Waits without holding the slot: a close (or a cancel) stops the loader, and this
            // wait ends with it.
            let state = done.finished().await;
            if state == LoaderState::Downloaded && !std::mem::replace(&mut downloaded_before, true) {
                continue;
            }
            let delay = backoff.next_delay();
            tracing::warn!(job = source.job_id, ?delay, "cannot fetch bulk-load files from peers yet: {state:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.closing.cancelled() => {}
            }
        }
    }

    /// Resolves once the slot is closing.
    pub async fn closing(&self) {
        self.closing.cancelled().await
    }

    /// The job of this replica and its download progress, for metrics; `None` without a job,
    /// or while an action holds the slot (a scrape never waits for one).
    pub fn progress(&self) -> Option<(u64, super::loader::LoaderStatus)> {
        let st = self.state.try_lock().ok()?;
        st.current.as_ref().map(|c| (c.loader.source().job_id, c.loader.status()))
    }

    /// The verified files of `job_id`, if this replica has all of them.
    pub async fn downloaded_files(&self, job_id: u64) -> Option<Vec<FileMeta>> {
        let st = self.state.lock().await;
        st.current.as_ref().filter(|c| c.loader.source().job_id == job_id).and_then(|c| c.loader.downloaded_files())
    }

    /// The path of file `name` of `job_id` if this replica holds it verified (for a member that
    /// lacks it).
    pub fn held_file(&self, job_id: u64, name: &str) -> Option<PathBuf> {
        let dir = job_dir(&self.replica_dir, job_id);
        let listed = read_verified_list(&dir)?;
        listed.iter().any(|f| f.name == name).then(|| dir.join(name))
    }

    /// Ends job `job_id` here: its tasks awaited, then its files removed (a cancel, a finished
    /// job's release). Answers whether there was anything to remove.
    pub async fn release(&self, job_id: u64) -> bool {
        let st = &mut *self.state.lock().await;
        if st.current.as_ref().is_some_and(|c| c.for_ingest && c.loader.source().job_id == job_id) {
            // An ingestion being applied needs them (it keeps the slot while it ingests).
            return false;
        }
        if let Some(c) = st.current.take_if(|c| c.loader.source().job_id == job_id) {
            c.loader.clear().await;
            return true;
        }
        let dir = job_dir(&self.replica_dir, job_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot remove bulk-load files: {e}");
                false
            }
        }
    }

    /// Closes the slot: the current download stops and every task is awaited; verified files
    /// stay (a reopen resumes, or removes them once the job is over). Nothing starts after.
    pub async fn close(&self) {
        self.closing.cancel();
        let mut st = self.state.lock().await;
        st.closed = true;
        if let Some(c) = st.current.take() {
            c.loader.stop().await;
        }
    }
}
