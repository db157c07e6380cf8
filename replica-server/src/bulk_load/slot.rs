//! [`BulkLoadSlot`]: the (at most one) bulk-load job of a replica, and the actions the meta
//! drives it with. Replacing or clearing a job always goes through
//! [`BulkLoader::clear`], which awaits every download task before any file is removed.

use std::path::PathBuf;
use std::sync::Arc;

use wingkv_common::provider::open_provider;
use wingkv_common::WingError;
use wingkv_proto::replica_admin::{BulkLoadAction, ReplicaBulkLoadState};

use super::loader::{BulkLoadSource, BulkLoader, LoaderState};
use super::BulkLoadEnv;
use wingkv_common::bulk_load::FileMeta;

struct Current {
    loader: BulkLoader,
    paused: bool,
}

/// The bulk-load job of one replica.
pub struct BulkLoadSlot {
    replica_dir: PathBuf,
    env: Arc<BulkLoadEnv>,
    current: tokio::sync::Mutex<Option<Current>>,
}

impl BulkLoadSlot {
    /// An empty slot for the replica in `replica_dir`.
    pub fn new(replica_dir: PathBuf, env: Arc<BulkLoadEnv>) -> Self {
        Self { replica_dir, env, current: tokio::sync::Mutex::new(None) }
    }

    /// Applies `action` for the job `source` and answers this replica's state.
    pub async fn act(
        &self,
        node_id: u64,
        source: &BulkLoadSource,
        action: BulkLoadAction,
    ) -> Result<ReplicaBulkLoadState, WingError> {
        let mut cur = self.current.lock().await;
        // Another job's leftovers go first, tasks awaited before files are removed.
        if cur.as_ref().is_some_and(|c| c.loader.source().job_id != source.job_id) {
            if let Some(old) = cur.take() {
                old.loader.clear().await;
            }
        }
        match action {
            BulkLoadAction::BlDownload | BulkLoadAction::BlIngest => {
                let restart = match cur.as_ref() {
                    None => true,
                    // A failure stays visible until the meta decides (it fails the job); only a
                    // paused or interrupted attempt starts again.
                    Some(c) => c.paused || c.loader.status().state == LoaderState::Canceled,
                };
                if restart {
                    if let Some(old) = cur.take() {
                        // Keep verified files: a restart resumes where the last attempt stopped.
                        old.loader.stop().await;
                    }
                    let store = open_provider(&source.provider, &self.env.provider)?;
                    let loader = BulkLoader::start(source.clone(), &self.replica_dir, store, self.env.limits.clone());
                    *cur = Some(Current { loader, paused: false });
                }
            }
            BulkLoadAction::BlPause => {
                if let Some(c) = cur.as_mut() {
                    c.loader.stop().await;
                    c.paused = true;
                }
            }
            BulkLoadAction::BlCancel => {
                let live_tasks = match cur.take() {
                    Some(old) => old.loader.clear().await.live_tasks as u64,
                    None => 0,
                };
                return Ok(ReplicaBulkLoadState {
                    node_id,
                    status: "BLS_CANCELED".into(),
                    live_tasks,
                    ..Default::default()
                });
            }
        }
        Ok(match cur.as_ref() {
            None => ReplicaBulkLoadState { node_id, status: "BLS_INVALID".into(), ..Default::default() },
            Some(c) => {
                let s = c.loader.status();
                let (status, reason) = match s.state {
                    _ if c.paused => ("BLS_PAUSED", String::new()),
                    // Not a failure: why the download waits, for the operator.
                    LoaderState::Downloading => ("BLS_DOWNLOADING", s.retrying_after.clone().unwrap_or_default()),
                    LoaderState::Downloaded => ("BLS_DOWNLOADED", String::new()),
                    LoaderState::Failed(r) => ("BLS_FAILED", r),
                    LoaderState::Canceled => ("BLS_CANCELED", String::new()),
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

    /// The job of this replica and its download progress, for metrics; `None` without a job,
    /// or while an action holds the slot (a scrape never waits for one).
    pub fn progress(&self) -> Option<(u64, super::loader::LoaderStatus)> {
        let cur = self.current.try_lock().ok()?;
        cur.as_ref().map(|c| (c.loader.source().job_id, c.loader.status()))
    }

    /// The verified files of `job_id`, if this replica has all of them.
    pub async fn downloaded_files(&self, job_id: u64) -> Option<Vec<FileMeta>> {
        let cur = self.current.lock().await;
        cur.as_ref().filter(|c| c.loader.source().job_id == job_id).and_then(|c| c.loader.downloaded_files())
    }

    /// Ends the job here: tasks awaited, then files removed (replica close, drop, cancel).
    pub async fn clear(&self) {
        if let Some(old) = self.current.lock().await.take() {
            old.loader.clear().await;
        }
    }
}
