//! The meta leader's bulk-load driver: its own loop moves every live job forward by asking each
//! partition's primary (all partitions at once) to act on its group, and records what changed.
//!
//! A bulk load never gets stuck here: a call that fails (the primary is busy, throttled,
//! unreachable, or there is none yet) is retried after an exponential backoff with jitter, for
//! as long as the job lives; the attempt count, the backoff and the last error are visible in
//! `query_bulk_load_status`. A partition whose status and progress have not moved for
//! `bulk_load_stall_timeout_ms` is marked stalled and re-driven at once (to whichever replica is
//! primary now). Only a permanent problem fails a job: a missing or bad file (the replicas'
//! verification, or RocksDB refusing the ingestion), a bad name, not enough disk.
//!
//! [`status_response`] renders a job with what the driver knows of it (the replicas' progress,
//! retries, stalls) for `query_bulk_load_status` and the other bulk-load RPCs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use wingkv_common::sync::MutexExt;
use wingkv_common::time::unix_millis;
use wingkv_common::{ErrorCode, PartitionId, WingError};
use wingkv_proto::common::BulkLoadStatus as WireStatus;
use wingkv_proto::meta::{BulkLoadStatusResponse, PartitionBulkLoadStatus, ReplicaBulkLoadProgress};
use wingkv_proto::replica_admin::{BulkLoadAction, BulkLoadJobSpec, BulkLoadRequest, BulkLoadResponse};

use crate::bulk_load::{BulkLoadJob, BulkLoadStatus};
use crate::call_retry::CallRetry;
use crate::catalog::{AppState, MetaCommand};
use crate::node::MetaNode;

/// The driver's state of one partition of a running job.
#[derive(Debug, Clone)]
pub struct PartitionDrive {
    job_id: u64,
    /// Calls to the primary: backoff and last failure.
    retry: CallRetry,
    /// What the partition looked like when it last moved, and when that was.
    fingerprint: String,
    moved_at: Instant,
    moved_at_ms: u64,
    /// When the partition was last re-driven for a stall.
    redriven_at: Option<Instant>,
    /// Its replicas stopped and removed the files of this (canceled or failed) job.
    cleaned: bool,
}

impl PartitionDrive {
    fn new(job_id: u64, node: &MetaNode) -> Self {
        let now = Instant::now();
        Self {
            job_id,
            retry: CallRetry::new(&node.config.bulk_load_retry),
            fingerprint: String::new(),
            moved_at: now,
            moved_at_ms: unix_millis(),
            redriven_at: None,
            cleaned: false,
        }
    }

    /// The job this state belongs to.
    pub fn job_id(&self) -> u64 {
        self.job_id
    }

    /// Calls to the primary: transient failures in a row, backoff, last failure.
    pub fn retry(&self) -> &CallRetry {
        &self.retry
    }

    /// Unix ms since which the partition has not moved, when that is longer than `stall`.
    pub fn stalled_since_ms(&self, stall: Duration) -> Option<u64> {
        (self.moved_at.elapsed() >= stall).then_some(self.moved_at_ms)
    }
}

/// Runs the driver until `cancel` fires; it acts only while this meta is the leader.
pub async fn run(node: Arc<MetaNode>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.reconcile_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            _ = node.bulk_wake.notified() => {}
        }
        if !node.is_leader() {
            if leading {
                // The next leadership starts afresh: every partition is driven at once.
                node.bulk_drive.locked().clear();
                node.bulk_cleaned.locked().clear();
            }
            leading = false;
            continue;
        }
        leading = true;
        // Drives (and cleans up after) jobs as the catalog is now, not as a deposed or lagging
        // leader last applied it.
        if let Err(e) = node.read_barrier_term().await {
            tracing::debug!("bulk-load driver skipped a tick: {e}");
            continue;
        }
        let catalog = node.catalog();
        // Every job at once: one table's slow ingestion never holds back another's load.
        let jobs = catalog
            .bulk_loads
            .iter()
            .filter_map(|(app_id, job)| catalog.apps.get(app_id).map(|app| drive(&node, app, job)));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = join_all(jobs) => {}
        }
        // A step taken (a partition downloaded or ingested, a job moved on) is followed at once
        // by the next one, not a tick later; a job that ended may end a restore.
        let now = node.catalog();
        let moved = |id: &u32, job: &BulkLoadJob| {
            now.bulk_loads
                .get(id)
                .is_some_and(|j| j.job_id == job.job_id && (j.status != job.status || j.partitions != job.partitions))
        };
        if catalog.bulk_loads.iter().any(|(id, job)| moved(id, job)) {
            tick.reset_immediately();
        }
        let ended = |id: &u32, job: &BulkLoadJob| {
            !job.status.is_terminal() && now.bulk_loads.get(id).is_some_and(|j| j.status.is_terminal())
        };
        if catalog.bulk_loads.iter().any(|(id, job)| ended(id, job)) {
            node.backup_wake.notify_one();
        }
        // Forget partitions of jobs that are over (and cleaned up, where that is due).
        let cleaned = node.bulk_cleaned.locked().clone();
        node.bulk_drive.locked().retain(|pid, d| {
            catalog.bulk_loads.get(&pid.app_id).is_some_and(|j| {
                j.job_id == d.job_id
                    && (!j.status.is_terminal()
                        || (matches!(j.status, BulkLoadStatus::Canceled | BulkLoadStatus::Failed)
                            && !cleaned.contains(&j.job_id)))
            })
        });
    }
}

async fn call_primary(
    node: &MetaNode,
    app: &AppState,
    job: &BulkLoadJob,
    pidx: u32,
    action: BulkLoadAction,
) -> Result<BulkLoadResponse, WingError> {
    let pid = PartitionId::new(app.app_id, pidx);
    let primary = node
        .liveness
        .primary(pid)
        .ok_or_else(|| WingError::Unavailable(format!("partition {pid} has no primary now")))?;
    // A restore's load reads the backup's directory; any other job, the table's.
    let restore_dir =
        node.with_catalog(|c| c.backups.restore_of_job(app.app_id, job.job_id).map(|r| r.partition_dir(pidx)));
    let spec = BulkLoadJobSpec {
        job_id: job.job_id,
        provider: job.provider.clone(),
        partition_dir: match restore_dir {
            Some(dir) => dir?,
            None => job.partition_dir(&app.name, pidx)?,
        },
        ingest_behind: job.ingest_behind,
    };
    let mut req = tonic::Request::new(BulkLoadRequest {
        partition: Some(pid.to_proto()),
        job: Some(spec),
        action: action as i32,
    });
    // Ingestion includes fetching files a lagging replica lacks; give it time.
    req.set_timeout(if action == BulkLoadAction::BlIngest {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(10)
    });
    let resp = node.admin(primary.node_id)?.bulk_load(req).await.map_err(|s| WingError::from_status(&s))?.into_inner();
    node.bulk_progress.locked().insert(pid, resp.replicas.clone());
    Ok(resp)
}

/// Calls partition `pidx`'s primary unless its backoff is pending (then `None`), and records
/// the outcome: a success resets the backoff, a failure grows it.
async fn attempt(
    node: &MetaNode,
    app: &AppState,
    job: &BulkLoadJob,
    pidx: u32,
    action: BulkLoadAction,
) -> Option<Result<BulkLoadResponse, WingError>> {
    let pid = PartitionId::new(app.app_id, pidx);
    {
        let mut drives = node.bulk_drive.locked();
        let d = drives.entry(pid).or_insert_with(|| PartitionDrive::new(job.job_id, node));
        if d.job_id != job.job_id {
            *d = PartitionDrive::new(job.job_id, node);
        }
        if !d.retry.due() {
            return None;
        }
    }
    let result = call_primary(node, app, job, pidx, action).await;
    // A replica the primary could not reach holds the partition back as much as an unreachable
    // primary does: back off the same way (the answer's progress is recorded all the same).
    let unreachable = match &result {
        Ok(r) => r
            .replicas
            .iter()
            .find(|x| x.status() == WireStatus::BlsUnknown)
            .map(|x| WingError::Unavailable(format!("node {}: {}", x.node_id, x.reason))),
        Err(_) => None,
    };
    let mut drives = node.bulk_drive.locked();
    if let Some(d) = drives.get_mut(&pid) {
        match result.as_ref().err().or(unreachable.as_ref()) {
            None => d.retry.succeeded(),
            Some(e) => {
                let backoff = d.retry.failed(e.to_string());
                tracing::info!(
                    partition = %pid,
                    job = job.job_id,
                    attempt = d.retry.attempts(),
                    ?backoff,
                    "bulk-load call to the primary failed; retrying after the backoff: {e}"
                );
            }
        }
    }
    Some(result)
}

/// Notes what partition `pidx` looks like now; one that has not moved for the stall timeout is
/// re-driven at once (its backoff is cut short, once per stall timeout).
fn observe(node: &MetaNode, app: &AppState, job: &BulkLoadJob, pidx: u32) {
    let pid = PartitionId::new(app.app_id, pidx);
    let status = job.partitions.get(pidx as usize).map(|s| s.as_str()).unwrap_or_default();
    let fingerprint = {
        let progress = node.bulk_progress.locked();
        let replicas = progress.get(&pid).map(Vec::as_slice).unwrap_or_default();
        let mut f = format!("{}:{status}", job.job_id);
        for r in replicas {
            f.push_str(&format!(" {}:{}:{}", r.node_id, r.status().as_str_name(), r.downloaded_bytes));
        }
        f
    };
    let stall = Duration::from_millis(node.config.bulk_load_stall_timeout_ms);
    let mut drives = node.bulk_drive.locked();
    let Some(d) = drives.get_mut(&pid).filter(|d| d.job_id == job.job_id) else {
        return;
    };
    let now = Instant::now();
    if d.fingerprint != fingerprint {
        d.fingerprint = fingerprint;
        d.moved_at = now;
        d.moved_at_ms = unix_millis();
        d.redriven_at = None;
        return;
    }
    let due = d.redriven_at.is_none_or(|at| now.duration_since(at) >= stall);
    if now.duration_since(d.moved_at) >= stall && due {
        tracing::warn!(
            partition = %pid,
            job = job.job_id,
            status,
            "bulk load stalled for {:?}: re-driving it",
            now.duration_since(d.moved_at)
        );
        // Cut the wait short; the attempt count stays, so the status still shows the history.
        d.redriven_at = Some(now);
        d.retry.due_now();
    }
}

async fn set(
    node: &MetaNode,
    app: &AppState,
    job: &BulkLoadJob,
    partition: Option<u32>,
    status: BulkLoadStatus,
    reason: String,
) {
    let cmd = MetaCommand::SetBulkLoadStatus { app_id: app.app_id, job_id: job.job_id, partition, status, reason };
    match node.propose(cmd).await {
        Ok(_) => tracing::info!(
            table = %app.name,
            job = job.job_id,
            partition = ?partition,
            status = status.as_str(),
            "bulk load moved"
        ),
        Err(e) => {
            tracing::warn!(table = %app.name, job = job.job_id, "cannot record bulk-load status: {e}")
        }
    }
}

/// Whether every member of partition `pidx` answered (none unreachable): only then has an
/// action such as pause or cancel reached the whole group.
fn answered_by_all(app: &AppState, pidx: u32, r: &BulkLoadResponse) -> bool {
    let members = app.partitions.get(pidx as usize).map(|p| p.members.len()).unwrap_or(0);
    r.replicas.len() >= members && r.replicas.iter().all(|x| x.status() != WireStatus::BlsUnknown)
}

/// The first replica of `r` whose download failed for good, as a job failure reason.
fn failed_replica(app: &AppState, pidx: u32, r: &BulkLoadResponse) -> Option<String> {
    let f = r.replicas.iter().find(|x| x.status() == WireStatus::BlsFailed)?;
    Some(format!("partition {}.{pidx} on node {}: {}", app.app_id, f.node_id, f.reason))
}

/// The partitions of `job` not yet in `done`.
fn pending(job: &BulkLoadJob, done: BulkLoadStatus) -> Vec<u32> {
    job.partitions.iter().enumerate().filter(|(_, s)| **s != done).map(|(i, _)| i as u32).collect()
}

/// Moves `job` of `app` forward by one step where it can.
pub async fn drive(node: &MetaNode, app: &AppState, job: &BulkLoadJob) {
    use BulkLoadStatus::*;
    match job.status {
        Downloading => {
            let todo = pending(job, Downloaded);
            if todo.is_empty() {
                set(node, app, job, None, Ingesting, String::new()).await;
                return;
            }
            let calls = todo.iter().map(|&p| attempt(node, app, job, p, BulkLoadAction::BlDownload));
            let results = join_all(calls).await;
            for (&pidx, result) in todo.iter().zip(results) {
                observe(node, app, job, pidx);
                let Some(Ok(r)) = result else { continue };
                if let Some(reason) = failed_replica(app, pidx, &r) {
                    set(node, app, job, None, Failed, reason).await;
                    return;
                }
                let members = app.partitions.get(pidx as usize).map(|p| p.members.len()).unwrap_or(0);
                if r.replicas.len() >= members
                    && r.replicas
                        .iter()
                        .all(|x| x.status() == WireStatus::BlsDownloaded || x.status() == WireStatus::BlsSucceed)
                {
                    set(node, app, job, Some(pidx), Downloaded, String::new()).await;
                }
            }
        }
        Ingesting => {
            let todo = pending(job, Succeed);
            if todo.is_empty() {
                set(node, app, job, None, Succeed, String::new()).await;
                return;
            }
            let calls = todo.iter().map(|&p| attempt(node, app, job, p, BulkLoadAction::BlIngest));
            let results = join_all(calls).await;
            for (&pidx, result) in todo.iter().zip(results) {
                observe(node, app, job, pidx);
                if let Some(reason) =
                    result.as_ref().and_then(|r| r.as_ref().ok()).and_then(|r| failed_replica(app, pidx, r))
                {
                    // A member that had to download again (re-replicated, restarted) and could not.
                    set(node, app, job, None, Failed, reason).await;
                    return;
                }
                match result {
                    Some(Ok(r)) if r.ingested => set(node, app, job, Some(pidx), Succeed, String::new()).await,
                    // RocksDB refused the files themselves: the same on every replica.
                    Some(Err(e)) if e.code() == ErrorCode::Corruption => {
                        let reason = format!("partition {}.{pidx}: ingestion failed: {e}", app.app_id);
                        set(node, app, job, None, Failed, reason).await;
                        return;
                    }
                    _ => {}
                }
            }
        }
        Pausing => {
            let todo: Vec<u32> = (0..job.partitions.len() as u32).collect();
            let calls = todo.iter().map(|&p| attempt(node, app, job, p, BulkLoadAction::BlPause));
            let results = join_all(calls).await;
            let paused =
                todo.iter().zip(&results).all(|(&p, r)| matches!(r, Some(Ok(r)) if answered_by_all(app, p, r)));
            if paused {
                set(node, app, job, None, Paused, String::new()).await;
            }
        }
        Canceled | Failed => {
            // Every replica stops and removes the job's files; retried with backoff until each
            // partition's primary has done it, once per leadership.
            if node.bulk_cleaned.locked().contains(&job.job_id) {
                return;
            }
            let is_cleaned = |p: u32| {
                let drives = node.bulk_drive.locked();
                drives.get(&PartitionId::new(app.app_id, p)).is_some_and(|d| d.job_id == job.job_id && d.cleaned)
            };
            let todo: Vec<u32> = (0..job.partitions.len() as u32).filter(|&p| !is_cleaned(p)).collect();
            let calls = todo.iter().map(|&p| attempt(node, app, job, p, BulkLoadAction::BlCancel));
            for (&pidx, r) in todo.iter().zip(join_all(calls).await) {
                if matches!(&r, Some(Ok(r)) if answered_by_all(app, pidx, r)) {
                    let mut drives = node.bulk_drive.locked();
                    if let Some(d) = drives.get_mut(&PartitionId::new(app.app_id, pidx)) {
                        d.cleaned = true;
                    }
                }
            }
            if (0..job.partitions.len() as u32).all(is_cleaned) {
                node.bulk_cleaned.locked().insert(job.job_id);
            }
        }
        Invalid | Downloaded | Succeed | Paused => {}
    }
}

/// `app`'s bulk load as the RPCs answer it: `job` (none: `BLS_INVALID`) with each partition's
/// status and progress, and while it runs, the driver's retries and stalls; only partition
/// `only` when given, and each replica's progress when `detailed`.
pub fn status_response(
    node: &MetaNode,
    app: &AppState,
    job: Option<&BulkLoadJob>,
    only: Option<u32>,
    detailed: bool,
) -> BulkLoadStatusResponse {
    let Some(job) = job else {
        return BulkLoadStatusResponse {
            app_name: app.name.clone(),
            status: WireStatus::BlsInvalid.into(),
            ..Default::default()
        };
    };
    let progress = node.bulk_progress.locked().clone();
    let drives = node.bulk_drive.locked().clone();
    let stall = Duration::from_millis(node.config.bulk_load_stall_timeout_ms);
    let partitions = job
        .partitions
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|p| p as usize == *i))
        .map(|(i, st)| {
            let pid = PartitionId::new(app.app_id, i as u32);
            let reps = progress.get(&pid).cloned().unwrap_or_default();
            // Retry and stall state only while the job runs and the partition is not done.
            let running = matches!(job.status, BulkLoadStatus::Downloading | BulkLoadStatus::Ingesting)
                && !matches!(st, BulkLoadStatus::Downloaded | BulkLoadStatus::Succeed);
            let drive = drives.get(&pid).filter(|d| running && d.job_id() == job.job_id);
            let (done, total) = reps.iter().fold((0u64, 0u64), |(d, t), r| (d + r.downloaded_bytes, t + r.total_bytes));
            let percent = match st {
                BulkLoadStatus::Downloaded | BulkLoadStatus::Ingesting | BulkLoadStatus::Succeed => 100,
                _ if total == 0 => 0,
                _ => (done.saturating_mul(100) / total).min(100) as u32,
            };
            PartitionBulkLoadStatus {
                partition_index: i as u32,
                status: WireStatus::from(*st).into(),
                progress_percent: percent,
                replicas: if detailed {
                    reps.iter()
                        .map(|r| ReplicaBulkLoadProgress {
                            node_id: r.node_id,
                            status: r.status,
                            downloaded_bytes: r.downloaded_bytes,
                            total_bytes: r.total_bytes,
                            reason: r.reason.clone(),
                            live_tasks: r.live_tasks,
                            retries: r.retries,
                            backoff_ms: r.backoff_ms,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                drive_attempts: drive.map(|d| d.retry().attempts()).unwrap_or(0),
                drive_backoff_ms: drive.map(|d| d.retry().backoff_ms()).unwrap_or(0),
                last_error: drive.map(|d| d.retry().last_error().to_string()).unwrap_or_default(),
                stalled_since_ms: drive.and_then(|d| d.stalled_since_ms(stall)).unwrap_or(0),
            }
        })
        .collect();
    BulkLoadStatusResponse {
        app_name: app.name.clone(),
        job_id: job.job_id,
        status: WireStatus::from(job.status).into(),
        reason: job.reason.clone(),
        partitions,
        source: format!("{}://{}/{}/{}", job.provider, job.root.trim_end_matches('/'), job.cluster, app.name),
    }
}
