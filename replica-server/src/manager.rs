//! The set of replicas a replica server hosts: create, open, close, remove, and reopen every
//! replica found on disk at start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::BasicNode;
use tokio_util::task::TaskTracker;
use wingkv_common::sync::RwLockExt;
use wingkv_common::{PartitionId, WingError};

use crate::replica::{Replica, ReplicaContext};

/// Tables being restored, as the replica server knows it: the meta's heartbeat answers name
/// them all, but a replica created for a restore is marked at its creation, and the mark stays
/// through the answer to any heartbeat sent before it (decided without that replica).
#[derive(Debug, Default)]
struct Restoring {
    tables: HashSet<u32>,
    /// Creation marks: table and the epoch they were made at.
    marks: HashMap<u32, u64>,
}

impl Restoring {
    fn mark(&mut self, app_id: u32, epoch: u64) {
        self.marks.insert(app_id, epoch);
        self.tables.insert(app_id);
    }

    /// Takes the answer to the heartbeat sent at `epoch`; answers whether the set changed.
    fn apply_answer(&mut self, restoring: &[u32], epoch: u64) -> bool {
        self.marks.retain(|_, m| *m >= epoch);
        let mut new: HashSet<u32> = restoring.iter().copied().collect();
        new.extend(self.marks.keys().copied());
        let changed = self.tables != new;
        self.tables = new;
        changed
    }
}

/// Owner of every hosted replica.
pub struct ReplicaManager {
    ctx: ReplicaContext,
    replicas: RwLock<HashMap<PartitionId, Arc<Replica>>>,
    /// Serializes create/open/close/remove, which are rare and touch directories.
    changes: tokio::sync::Mutex<()>,
    /// The highest meta leader term seen (heartbeat answers, fenced admin requests), kept on
    /// disk: orders of an older term come from a deposed meta leader and are refused.
    meta_term: crate::meta_fence::MetaTermFence,
    /// Tables the meta reported dropped: their replicas answer `TableDropped` to clients.
    dropped: RwLock<HashSet<u32>>,
    /// Tables being restored: their replicas refuse clients until it is done.
    restoring: RwLock<Restoring>,
    /// Orders heartbeats and creations of replicas of restored tables (see [`Restoring`]).
    restoring_epoch: AtomicU64,
    /// Replicas on disk that are not open (they could not be opened, or their raft group
    /// stopped and they wait for a reopen), with the reason: they answer `Unavailable`, never
    /// "not hosted", so that nobody takes them for lost and re-creates them.
    failed: RwLock<HashMap<PartitionId, String>>,
    /// Replicas reopened after their raft group stopped.
    restarts: AtomicU64,
    /// The changes requests asked for (see [`Self::run_to_end`]); awaited by [`Self::close_all`].
    lifecycle: TaskTracker,
    /// Set by [`Self::close_all`]: no replica is created, opened or removed after it.
    closed: AtomicBool,
}

impl ReplicaManager {
    /// A manager with no replica open yet.
    pub fn new(ctx: ReplicaContext) -> Result<Self, WingError> {
        let meta_term = crate::meta_fence::MetaTermFence::load(&ctx.config.data_dir)?;
        Ok(Self {
            ctx,
            replicas: RwLock::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            meta_term,
            dropped: RwLock::new(HashSet::new()),
            restoring: RwLock::new(Restoring::default()),
            restoring_epoch: AtomicU64::new(0),
            failed: RwLock::new(HashMap::new()),
            restarts: AtomicU64::new(0),
            lifecycle: TaskTracker::new(),
            closed: AtomicBool::new(false),
        })
    }

    /// Runs `change` (a create, open, close or removal a request asked for) on a task of its
    /// own and waits for it. The change ends even if the caller stops waiting: a request dropped
    /// by its client (a meta killed or timing out) must not leave a replica half made — a
    /// directory on disk that no map knows and whose raft group nobody owns.
    pub async fn run_to_end<T, F>(self: &Arc<Self>, change: impl FnOnce(Arc<Self>) -> F) -> Result<T, WingError>
    where
        F: std::future::Future<Output = Result<T, WingError>> + Send + 'static,
        T: Send + 'static,
    {
        self.lifecycle
            .spawn(change(self.clone()))
            .await
            .map_err(|e| WingError::Internal(format!("a replica change on node {} failed: {e}", self.ctx.node_id)))?
    }

    /// The lock of replica changes, refused once the manager closed.
    async fn lock_changes(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, WingError> {
        let guard = self.changes.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(WingError::Unavailable(format!("node {} is shutting down", self.ctx.node_id)));
        }
        Ok(guard)
    }

    /// Fences an order decided by a meta leader of `term`: refused when a newer meta term was
    /// seen; otherwise the term is remembered. `None` or 0: an unfenced order (an operator's or a
    /// test's direct call), always accepted.
    pub fn check_meta_term(&self, term: Option<u64>) -> Result<(), WingError> {
        self.meta_term.check(term, self.ctx.node_id)
    }

    /// Takes the meta term of a heartbeat answer: refused when a newer one was seen (the answer
    /// is a deposed leader's view); a newer one fences from now on (see
    /// [`MetaTermFence::observe_answer`](crate::meta_fence::MetaTermFence::observe_answer)).
    pub fn observe_meta_term(&self, term: u64) -> Result<(), WingError> {
        self.meta_term.observe_answer(term, self.ctx.node_id)
    }

    /// Records the meta's facts about bulk-load jobs (which are finished): every replica
    /// releases the files of finished jobs no member needs.
    pub fn set_bulk_load_jobs(&self, facts: crate::bulk_load::JobFacts) {
        self.ctx.bulk_jobs.send_replace(Some(facts));
    }

    /// Records which hosted tables are dropped (the meta's heartbeat answer names all of them).
    pub fn set_dropped_tables(&self, dropped: &[u32]) {
        let new: HashSet<u32> = dropped.iter().copied().collect();
        let mut cur = self.dropped.write_locked();
        if *cur != new {
            tracing::info!(dropped = ?new, "tables dropped on the meta: their replicas stop serving clients");
            *cur = new;
        }
    }

    /// Marks the start of a heartbeat: answers its epoch, for [`Self::set_restoring_tables`].
    pub fn heartbeat_epoch(&self) -> u64 {
        self.restoring_epoch.fetch_add(1, Ordering::SeqCst)
    }

    /// Marks table `app_id` as being restored (a replica of it is created for a restore).
    pub fn mark_restoring(&self, app_id: u32) {
        let epoch = self.restoring_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.restoring.write_locked().mark(app_id, epoch);
    }

    /// Records which hosted tables are being restored, from the answer to the heartbeat of
    /// `epoch` (it names all of them); marks made by creations since that heartbeat was sent
    /// stay (the meta decided the answer without knowing of those replicas).
    /// Answers the tables whose restore this answer ended (see [`Self::forget_restore_marks`]).
    pub fn set_restoring_tables(&self, restoring: &[u32], epoch: u64) -> Vec<u32> {
        let mut cur = self.restoring.write_locked();
        let before = cur.tables.clone();
        if cur.apply_answer(restoring, epoch) {
            tracing::info!(restoring = ?cur.tables, "tables being restored: their replicas refuse clients until it is done");
        }
        before.difference(&cur.tables).copied().collect()
    }

    /// Clears the restore mark recorded in the directories of the replicas of `ended` tables,
    /// which the meta reports live and no longer restoring, so that a restart no longer holds them back
    /// until the first heartbeat answer. A mark that cannot be cleared only costs that wait.
    pub async fn forget_restore_marks(&self, ended: &[u32]) {
        let dirs: Vec<(PartitionId, PathBuf)> = self
            .replicas
            .read_locked()
            .values()
            .filter(|r| ended.contains(&r.id().app_id) && r.created_for_restore())
            .map(|r| (r.id(), self.dir_of(r.id())))
            .collect();
        for (id, dir) in dirs {
            let cleared = tokio::task::spawn_blocking(move || -> Result<bool, WingError> {
                let mut options = crate::store::DbOptions::load(&dir)?;
                if !options.restoring {
                    return Ok(false);
                }
                options.restoring = false;
                options.save(&dir).map(|()| true)
            })
            .await;
            match cleared {
                Ok(Ok(true)) => {
                    tracing::info!(partition = %id, "its table's restore ended: the restore mark is cleared")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(partition = %id, "cannot clear the restore mark: {e}"),
                Err(e) => tracing::warn!(partition = %id, "clearing the restore mark stopped: {e}"),
            }
        }
    }

    /// Refuses client requests to a table the meta reported dropped (recall lifts it), or being
    /// restored (a half-restored table never serves).
    pub fn check_table_serves(&self, id: PartitionId) -> Result<(), WingError> {
        if self.dropped.read_locked().contains(&id.app_id) {
            return Err(WingError::TableDropped(format!(
                "table with app_id {} was dropped; recall it to serve it again",
                id.app_id
            )));
        }
        // Unavailable (clients retry): once the restore succeeds, every replica hears so within a
        // heartbeat.
        if self.restoring.read_locked().tables.contains(&id.app_id) {
            return Err(WingError::Unavailable(format!(
                "table with app_id {} is being restored from a backup (or its restore failed); it serves once \
                 the restore succeeds (query_restore_status)",
                id.app_id
            )));
        }
        Ok(())
    }

    /// Refuses `peer` on table `app_id` unless the table's access list allows it.
    pub fn check_access(&self, app_id: u32, peer: &wingkv_security::Peer) -> Result<(), WingError> {
        self.ctx.tables.check_access(app_id, peer)
    }

    /// The partition count of `replica`'s table: recorded at its creation, else as the meta
    /// last told it.
    pub fn partition_count(&self, replica: &Replica) -> Option<u32> {
        replica.recorded_partition_count().or_else(|| self.ctx.tables.partition_count(replica.id().app_id))
    }

    /// A stamp of a report taken now (see [`crate::report_clock`]).
    pub fn report_stamp(&self) -> wingkv_proto::common::ReportStamp {
        self.ctx.reports.stamp()
    }

    /// This node's raft id.
    pub fn node_id(&self) -> u64 {
        self.ctx.node_id
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.ctx.config.data_dir
    }

    fn root(&self) -> PathBuf {
        self.ctx.config.data_dir.join("replica")
    }

    fn dir_of(&self, id: PartitionId) -> PathBuf {
        self.root().join(id.to_string())
    }

    /// The open replica of `id`.
    pub fn get(&self, id: PartitionId) -> Result<Arc<Replica>, WingError> {
        if let Some(r) = self.replicas.read_locked().get(&id) {
            return Ok(r.clone());
        }
        if let Some(count) = self.ctx.tables.partition_count(id.app_id).filter(|c| id.partition_index >= *c) {
            // A positive fact from the meta, not a replica still to come: no retry helps.
            return Err(WingError::InvalidArgument(format!(
                "partition {id} does not exist: table {} has {count} partitions",
                id.app_id
            )));
        }
        if let Some(reason) = self.failed.read_locked().get(&id) {
            return Err(WingError::Unavailable(format!(
                "replica {id} is on node {}'s disk but not serving: {reason}",
                self.ctx.node_id
            )));
        }
        Err(WingError::NotFound(format!("partition {id} is not hosted on node {}", self.ctx.node_id)))
    }

    /// The open replica of `id` for an admin status: "not hosted" only when nothing of it is on
    /// disk. A directory without an open replica (being created or removed right now) is
    /// `Unavailable`: whoever asks must not take the replica for lost (a rejoin would take the
    /// member out of its group and then fail to create it).
    pub fn get_for_status(&self, id: PartitionId) -> Result<Arc<Replica>, WingError> {
        match self.get(id) {
            Err(WingError::NotFound(e)) if self.dir_of(id).exists() => Err(WingError::Unavailable(format!(
                "replica {id} is on node {}'s disk but not open (being created or removed): {e}",
                self.ctx.node_id
            ))),
            other => other,
        }
    }

    fn set_failed(&self, id: PartitionId, reason: Option<String>) {
        let mut failed = self.failed.write_locked();
        match reason {
            Some(r) => failed.insert(id, r),
            None => failed.remove(&id),
        };
    }

    /// Applies the envs of the hosted tables (from a heartbeat answer) to every replica live.
    pub fn apply_table_envs(&self, tables: &[wingkv_proto::meta::HostedTable]) {
        let replicas = self.all();
        for t in tables {
            let envs: BTreeMap<String, String> = t.envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let settings = self.ctx.tables.set(t.app_id, t.partition_count, &envs);
            for r in replicas.iter().filter(|r| r.id().app_id == t.app_id) {
                r.admission().update(settings);
            }
        }
    }

    /// What admission did on this node (throttled, rejected and denied requests).
    pub fn admission_counters(&self) -> &crate::admission::AdmissionCounters {
        &self.ctx.tables.counters
    }

    /// Counts of the client writes the primaries of this node proposed.
    pub fn proposal_counters(&self) -> &crate::proposal::ProposalCounters {
        &self.ctx.proposals
    }

    /// Transient bulk-load download failures retried on this node since start.
    pub fn bulk_load_retries(&self) -> u64 {
        self.ctx.bulk.limits.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The raft log's fsyncs since start, and their time in all.
    pub fn raft_log_fsyncs(&self) -> (u64, std::time::Duration) {
        self.ctx.raft_log.syncer.times().snapshot()
    }

    /// The RocksDB settings and block cache every replica shares.
    pub fn storage(&self) -> &crate::store::SharedStorage {
        &self.ctx.storage
    }

    /// Every open replica.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        let map = self.replicas.read_locked();
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by_key(|r| r.id());
        v
    }

    fn insert(&self, r: Arc<Replica>) {
        self.replicas.write_locked().insert(r.id(), r);
    }

    fn take(&self, id: PartitionId) -> Option<Arc<Replica>> {
        self.replicas.write_locked().remove(&id)
    }

    /// Opens every replica stored under the data dir; returns how many were opened. A replica
    /// that fails to open is logged and skipped, so one bad replica does not keep the others
    /// down.
    pub async fn open_all(&self) -> Result<usize, WingError> {
        let root = self.root();
        std::fs::create_dir_all(&root)
            .map_err(|e| WingError::Storage(format!("cannot create {}: {e}", root.display())))?;
        let mut ids = Vec::new();
        let entries =
            std::fs::read_dir(&root).map_err(|e| WingError::Storage(format!("cannot list {}: {e}", root.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            match name.parse::<PartitionId>() {
                Ok(id) => ids.push(id),
                Err(_) => tracing::warn!(dir = %name, "ignoring a directory that is not a replica"),
            }
        }
        ids.sort();
        // Logs of replicas whose directory is gone (a crash in the middle of a removal).
        for orphan in self.ctx.raft_log.partitions()?.into_iter().filter(|p| !ids.contains(p)) {
            tracing::info!(partition = %orphan, "deleting the raft log of a replica that no longer exists");
            self.ctx.raft_log.delete(orphan)?;
        }
        let mut opened = 0;
        for id in ids {
            match self.open(id).await {
                Ok(_) => opened += 1,
                Err(e) => {
                    tracing::error!(partition = %id, "cannot reopen replica: {e}");
                    self.set_failed(id, Some(format!("it could not be opened: {e}")));
                }
            }
        }
        Ok(opened)
    }

    /// Creates a new replica; with `initial_members`, bootstraps its group with those voters.
    pub async fn create(
        &self,
        id: PartitionId,
        initial_members: BTreeMap<u64, BasicNode>,
        db_options: crate::store::DbOptions,
    ) -> Result<Arc<Replica>, WingError> {
        let _guard = self.lock_changes().await?;
        if self.get(id).is_ok() || self.dir_of(id).exists() {
            return Err(WingError::AlreadyExists(format!("replica {id} already exists on node {}", self.ctx.node_id)));
        }
        if !initial_members.is_empty() && !initial_members.contains_key(&self.ctx.node_id) {
            return Err(WingError::InvalidArgument(format!(
                "initial members of {id} do not include this node ({})",
                self.ctx.node_id
            )));
        }
        // A new replica starts from an empty log, whatever an earlier one of the same id left.
        self.ctx.raft_log.delete(id)?;
        let dir = self.dir_of(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| WingError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        #[cfg(feature = "failpoints")]
        {
            // A slow creation, for tests of a caller that gives up in the middle of one.
            let pause = (|| {
                fail::fail_point!("replica::create", |ms| ms.and_then(|v| v.parse::<u64>().ok()));
                None
            })();
            if let Some(ms) = pause {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let opened = match db_options.save(&dir) {
            Ok(()) => Replica::open(id, &dir, &self.ctx).await,
            Err(e) => Err(e),
        };
        let replica = match opened {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = self.ctx.raft_log.delete(id);
                return Err(e);
            }
        };
        if !initial_members.is_empty() {
            if let Err(e) = replica.raft().initialize(initial_members).await {
                if let Err(close) = replica.close().await {
                    // The directory stays: something still runs in it.
                    return Err(WingError::Internal(format!("cannot initialize group {id}: {e}; {close}")));
                }
                let _ = std::fs::remove_dir_all(&dir);
                let _ = self.ctx.raft_log.delete(id);
                return Err(WingError::Internal(format!("cannot initialize group {id}: {e}")));
            }
        }
        self.insert(replica.clone());
        Ok(replica)
    }

    /// Opens a replica that exists on disk.
    pub async fn open(&self, id: PartitionId) -> Result<Arc<Replica>, WingError> {
        let _guard = self.lock_changes().await?;
        self.open_locked(id).await
    }

    /// Opens again a replica closed by [`Self::close_stopped`]. When that fails, clients are
    /// told why and when the next attempt is (`next_attempt`); a replica removed meanwhile
    /// answers `NotFound` and is forgotten.
    pub async fn reopen(&self, id: PartitionId, next_attempt: Duration) -> Result<Arc<Replica>, WingError> {
        let _guard = self.lock_changes().await?;
        let opened = self.open_locked(id).await;
        match &opened {
            Ok(_) => {}
            Err(WingError::NotFound(_)) => self.set_failed(id, None),
            Err(e) => self.set_failed(
                id,
                Some(format!(
                    "its raft group stopped and it cannot be reopened yet ({e}); next attempt in {next_attempt:?}"
                )),
            ),
        }
        opened
    }

    async fn open_locked(&self, id: PartitionId) -> Result<Arc<Replica>, WingError> {
        if let Ok(r) = self.get(id) {
            return Ok(r);
        }
        let dir = self.dir_of(id);
        if !dir.exists() {
            return Err(WingError::NotFound(format!("replica {id} does not exist on node {}", self.ctx.node_id)));
        }
        let replica = Replica::open(id, &dir, &self.ctx).await?;
        if replica.created_for_restore() {
            // Before clients can reach it: after a restart no heartbeat answer has said yet that
            // its table is being restored.
            self.mark_restoring(id.app_id);
        }
        self.insert(replica.clone());
        self.set_failed(id, None);
        Ok(replica)
    }

    /// Closes `stopped`, whose raft group stopped for `reason`, if it is still the open replica
    /// of its partition (not removed or reopened meanwhile); until it is opened again it answers
    /// `Unavailable` with the reason. Returns whether it was closed.
    pub async fn close_stopped(&self, stopped: &Arc<Replica>, reason: &str) -> bool {
        let _guard = self.changes.lock().await;
        let id = stopped.id();
        let current = self.replicas.read_locked().get(&id).cloned();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, stopped)) {
            return false;
        }
        self.take(id);
        self.set_failed(id, Some(format!("its raft group stopped ({reason}); it is being reopened")));
        if let Err(e) = stopped.close().await {
            tracing::error!(partition = %id, "closing the stopped replica: {e}");
        }
        true
    }

    /// Counts a replica reopened after its raft group stopped.
    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Replicas reopened after their raft group stopped, since start.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Closes a replica, keeping its data.
    pub async fn close(&self, id: PartitionId) -> Result<(), WingError> {
        let _guard = self.lock_changes().await?;
        let replica = self.take(id).ok_or_else(|| WingError::NotFound(format!("replica {id} is not open")))?;
        replica.close().await
    }

    /// The trash of removed replicas (see [`crate::trash`]).
    pub fn trash_dir(&self) -> PathBuf {
        self.ctx.config.data_dir.join(crate::trash::TRASH_DIR)
    }

    /// Closes a replica (if open), awaiting everything it runs, and moves its directory, with
    /// its raft log folded in, to the trash, where it stays for `replica_trash_grace_secs`.
    pub async fn remove(&self, id: PartitionId) -> Result<(), WingError> {
        let _guard = self.lock_changes().await?;
        let dir = self.dir_of(id);
        let replica = self.take(id);
        if replica.is_none() && !dir.exists() {
            return Err(WingError::NotFound(format!("replica {id} does not exist on node {}", self.ctx.node_id)));
        }
        if let Some(r) = replica {
            // Nothing is moved while a task of the replica may still touch its files.
            r.close().await?;
            drop(r);
        }
        let (log, storage, trash) = (self.ctx.raft_log.clone(), self.ctx.storage.clone(), self.trash_dir());
        let grace = self.ctx.config.replica_trash_grace_secs;
        self.set_failed(id, None);
        let moved = tokio::task::spawn_blocking(move || -> Result<PathBuf, WingError> {
            {
                let options = crate::store::DbOptions::load(&dir)?;
                let db = storage.open_with(&dir.join("db"), &options, &crate::log_clock::LogClock::default())?;
                log.export_to(id, &db)?;
                db.flush().map_err(|e| WingError::Storage(format!("flush of {id}: {}", e.into_string())))?;
            }
            let moved = crate::trash::move_to_trash(id, &dir, &trash)?;
            log.delete(id)?;
            if grace == 0 {
                std::fs::remove_dir_all(&moved)
                    .map_err(|e| WingError::Storage(format!("cannot delete {}: {e}", moved.display())))?;
            }
            Ok(moved)
        })
        .await
        .map_err(|e| WingError::Internal(format!("removal of {id} failed: {e}")))??;
        if grace == 0 {
            tracing::info!(partition = %id, "replica removed (no trash grace period)");
        } else {
            tracing::info!(partition = %id, trash = %moved.display(), grace_secs = grace, "replica removed to the trash");
        }
        Ok(())
    }

    /// Closes every replica (at shutdown), waiting for each.
    pub async fn close_all(&self) {
        // Changes already asked for end first; those still waiting for the lock are refused.
        self.closed.store(true, Ordering::SeqCst);
        self.lifecycle.close();
        self.lifecycle.wait().await;
        let _guard = self.changes.lock().await;
        let all: Vec<_> = self.replicas.write_locked().drain().map(|(_, r)| r).collect();
        for r in all {
            if let Err(e) = r.close().await {
                tracing::error!("{e}");
            }
        }
        // Last: what the replicas appended is synced before the thread stops.
        let log = self.ctx.raft_log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::Restoring;

    #[test]
    fn a_creation_mark_outlives_the_answer_to_an_earlier_heartbeat_only() {
        let mut r = Restoring::default();
        // Heartbeat of epoch 0 sent; then a replica of table 7 is created for a restore.
        r.mark(7, 2);
        // The answer to heartbeat 0 (or to heartbeat 2, sent before the replica was listed)
        // was decided without it: the mark stays.
        r.apply_answer(&[], 0);
        assert!(r.tables.contains(&7));
        r.apply_answer(&[], 2);
        assert!(r.tables.contains(&7));
        // The next heartbeat listed it: the meta's answer rules.
        r.apply_answer(&[7], 3);
        assert!(r.tables.contains(&7));
        assert!(r.apply_answer(&[], 4), "the restore ended: lifted");
        assert!(r.tables.is_empty());
    }
}
