//! The meta leader's backup driver: moves every running backup forward, removes the provider
//! files of canceled, failed and retired backups, ends restores when their load ends, and starts
//! the backups of policies that are due (DESIGN §9).
//!
//! A backup partition's export runs on its primary ([`BackupAction::BkStart`] starts it or asks
//! how it goes); a call that fails, or an export that failed, is retried after an exponential
//! backoff for as long as the backup runs — an operator's cancel or the table's drop ends it.
//! When every partition is uploaded, every member's export of the backup is stopped and awaited
//! (an earlier primary's may still upload), files no partition's `bulk_load_metadata` names are
//! removed, and `backup_info` is written last: a backup with `backup_info` is whole. Files are
//! removed only on a fact of the catalog read after the leader's read barrier (canceled, failed,
//! retired), and only once every member has stopped exporting.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use tokio_util::sync::CancellationToken;
use wingkv_common::bulk_load::{BulkLoadMetadata, BULK_LOAD_METADATA};
use wingkv_common::provider::{local_path, open_provider, sync_local_file};
use wingkv_common::sync::MutexExt;
use wingkv_common::time::unix_millis;
use wingkv_common::{ErrorCode, PartitionId, WingError};
use wingkv_proto::common::BackupStatus as WireStatus;
use wingkv_proto::meta::{BackupStatusResponse, PartitionBackupStatus};
use wingkv_proto::replica_admin::{BackupAction, BackupPartitionRequest, BackupPartitionState};

use crate::backup::{BackupInfo, BackupRecord, BackupStatus, PartitionBackup, RestoreStatus, BACKUP_INFO};
use crate::bulk_load::BulkLoadStatus;
use crate::call_retry::CallRetry;
use crate::catalog::{AppState, Catalog, MetaCommand};
use crate::liveness::NodeState;
use crate::node::MetaNode;

/// The driver's state of one partition of a running backup (volatile: a new leader starts
/// afresh).
#[derive(Debug, Clone)]
pub struct BackupDrive {
    /// Calls to the primary: backoff and last failure.
    retry: CallRetry,
    /// The primary's last answer.
    state: Option<BackupPartitionState>,
}

/// The longest the driver waits in one call for a partition's export to end.
const MAX_EXPORT_WAIT: Duration = Duration::from_secs(5);

/// Key of [`BackupDrive`]s: backup id and partition index.
pub type DriveKey = (u64, u32);

/// Runs the driver until `cancel` fires; it acts only while this meta is the leader.
pub async fn run(node: Arc<MetaNode>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.reconcile_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            _ = node.backup_wake.notified() => {}
        }
        if !node.is_leader() {
            node.backup_drive.locked().clear();
            continue;
        }
        // Acts on the catalog as it is now, not as a deposed or lagging leader last applied it.
        let term = match node.read_barrier_term().await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("backup driver skipped a tick: {e}");
                continue;
            }
        };
        let catalog = node.catalog();
        let work = async {
            // Restores first: a slow backup step never holds back a restored table's opening.
            finish_restores(&node, &catalog).await;
            run_policies(&node, &catalog).await;
            let backups = catalog.backups.backups.values().map(|b| drive(&node, &catalog, b, term));
            join_all(backups).await;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = work => {}
        }
        let active: BTreeSet<u64> = catalog
            .backups
            .backups
            .values()
            .filter(|b| b.status == BackupStatus::Running || b.needs_cleanup())
            .map(|b| b.backup_id)
            .collect();
        node.backup_drive.locked().retain(|(id, _), _| active.contains(id));
    }
}

/// The key of a backup's own step (finishing, cleaning up) in [`MetaNode::backup_drive`].
fn step_key(b: &BackupRecord) -> DriveKey {
    (b.backup_id, u32::MAX)
}

/// Runs `step` of backup `b` unless its backoff is pending; a failure grows the backoff.
async fn step(
    node: &MetaNode,
    b: &BackupRecord,
    step: impl std::future::Future<Output = Result<(), WingError>>,
) -> Result<(), WingError> {
    {
        let mut drives = node.backup_drive.locked();
        let d = drives
            .entry(step_key(b))
            .or_insert_with(|| BackupDrive { retry: CallRetry::new(&node.config.bulk_load_retry), state: None });
        if !d.retry.due() {
            return Ok(());
        }
    }
    let result = step.await;
    if let Some(d) = node.backup_drive.locked().get_mut(&step_key(b)) {
        match &result {
            Ok(()) => d.retry.succeeded(),
            Err(e) => {
                d.retry.failed(e.to_string());
            }
        }
    }
    result
}

async fn drive(node: &MetaNode, catalog: &Catalog, b: &BackupRecord, term: u64) {
    let result = match b.status {
        BackupStatus::Running => drive_running(node, catalog, b, term).await,
        _ if b.needs_cleanup() && catalog.backups.pinned(b.backup_id) => Ok(()),
        _ if b.needs_cleanup() => step(node, b, clean_up(node, catalog, b, term)).await,
        // Retired after its files were removed already (a failed backup of a policy).
        _ if b.retired && b.cleaned => propose(node, MetaCommand::RemoveBackup { backup_id: b.backup_id }).await,
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::info!(backup = b.backup_id, table = %b.app_name, "backup step not done; retried: {e}");
    }
}

fn provider(node: &MetaNode, b: &BackupRecord) -> Result<Arc<dyn ObjectStore>, WingError> {
    open_provider(&b.provider, &node.config.bulk_load_provider)
}

async fn propose(node: &MetaNode, cmd: MetaCommand) -> Result<(), WingError> {
    node.propose(cmd).await.map(|_| ())
}

async fn drive_running(node: &MetaNode, catalog: &Catalog, b: &BackupRecord, term: u64) -> Result<(), WingError> {
    let Some(app) = catalog.apps.get(&b.app_id).filter(|a| !a.is_dropped()) else {
        let reason = format!("table '{}' (app_id {}) was dropped during the backup", b.app_name, b.app_id);
        return propose(
            node,
            MetaCommand::FinishBackup {
                backup_id: b.backup_id,
                status: BackupStatus::Failed,
                reason,
                now_ms: unix_millis(),
            },
        )
        .await;
    };
    let todo: Vec<u32> = b.partitions.iter().enumerate().filter(|(_, p)| !p.done).map(|(i, _)| i as u32).collect();
    if todo.is_empty() {
        return step(node, b, finish(node, app, b, term)).await;
    }
    let calls = todo.iter().map(|&pidx| attempt(node, app, b, pidx, term));
    let mut finished = 0;
    for (&pidx, state) in todo.iter().zip(join_all(calls).await) {
        let Some(state) = state else { continue };
        if state.status() == WireStatus::BkSucceed {
            finished += 1;
            let done = PartitionBackup {
                done: true,
                log_index: state.log_index,
                size: state.total_bytes,
                file_count: state.file_count,
                node_id: state.node_id,
            };
            propose(node, MetaCommand::SetBackupPartition { backup_id: b.backup_id, partition: pidx, done }).await?;
            tracing::info!(backup = b.backup_id, partition = pidx, log_index = state.log_index, "partition backed up");
        }
    }
    if finished == todo.len() {
        // The last partitions are in: finished now, from the record as these proposals left it,
        // rather than at the next tick.
        let now = node.catalog();
        if let Some(fresh) = now.backups.backups.get(&b.backup_id).filter(|f| f.status == BackupStatus::Running) {
            if fresh.partitions.iter().all(|p| p.done) {
                return step(node, fresh, finish(node, app, fresh, term)).await;
            }
        }
    }
    Ok(())
}

/// Asks partition `pidx`'s primary to start (or report) its export, unless its backoff is
/// pending; answers the primary's state, and records a failure (a failed call, or a failed
/// export that the next call starts again) into the backoff.
async fn attempt(
    node: &MetaNode,
    app: &AppState,
    b: &BackupRecord,
    pidx: u32,
    term: u64,
) -> Option<BackupPartitionState> {
    let key = (b.backup_id, pidx);
    {
        let mut drives = node.backup_drive.locked();
        let d = drives
            .entry(key)
            .or_insert_with(|| BackupDrive { retry: CallRetry::new(&node.config.bulk_load_retry), state: None });
        if !d.retry.due() {
            return None;
        }
    }
    let pid = PartitionId::new(app.app_id, pidx);
    // A long poll: the primary answers when its export ends, so the driver learns of it then
    // rather than a tick later; no longer than a tick, so the driver's other work waits no more
    // than it did between ticks.
    let wait = Duration::from_millis(node.config.reconcile_interval_ms).min(MAX_EXPORT_WAIT);
    let result = async {
        let primary = node
            .liveness
            .primary(pid)
            .ok_or_else(|| WingError::Unavailable(format!("partition {pid} has no primary now")))?;
        let req = BackupPartitionRequest {
            partition: Some(pid.to_proto()),
            backup_id: b.backup_id,
            provider: b.provider.clone(),
            partition_dir: b.partition_dir(pidx)?,
            action: BackupAction::BkStart.into(),
            meta_term: Some(term),
            wait_ms: wait.as_millis() as u32,
        };
        let mut req = tonic::Request::new(req);
        req.set_timeout(wait + Duration::from_secs(10));
        let state = node
            .admin(primary.node_id)?
            .backup_partition(req)
            .await
            .map_err(|s| WingError::from_status(&s))?
            .into_inner();
        match state.status() {
            WireStatus::BkFailed | WireStatus::BkCanceled => {
                Err(WingError::Unavailable(format!("the export on node {} failed: {}", state.node_id, state.reason)))
            }
            _ => Ok(state),
        }
    }
    .await;
    let mut drives = node.backup_drive.locked();
    let d = drives.get_mut(&key)?;
    match result {
        Ok(state) => {
            d.retry.succeeded();
            d.state = Some(state.clone());
            Some(state)
        }
        Err(e) => {
            let backoff = d.retry.failed(e.to_string());
            tracing::info!(
                partition = %pid,
                backup = b.backup_id,
                attempt = d.retry.attempts(),
                ?backoff,
                "backup call failed; retrying after the backoff: {e}"
            );
            None
        }
    }
}

/// Stops and awaits backup `b`'s export on every member of every partition of `app`. Fails,
/// naming them, unless every member answered, or is dead (a dead process exports nothing, and
/// its restart removes its local files).
async fn stop_exports(node: &MetaNode, app: Option<&AppState>, b: &BackupRecord, term: u64) -> Result<(), WingError> {
    let Some(app) = app else { return Ok(()) };
    let calls = app.partitions.iter().enumerate().flat_map(|(pidx, p)| {
        let pid = PartitionId::new(app.app_id, pidx as u32);
        p.members.iter().map(move |m| async move {
            if node.liveness.state(*m) == NodeState::Dead {
                return Ok(());
            }
            let req = BackupPartitionRequest {
                partition: Some(pid.to_proto()),
                backup_id: b.backup_id,
                action: BackupAction::BkCancel.into(),
                meta_term: Some(term),
                ..Default::default()
            };
            let mut req = tonic::Request::new(req);
            req.set_timeout(Duration::from_secs(30));
            let answer = match node.admin(*m) {
                Ok(mut admin) => admin.backup_partition(req).await.map(|_| ()).map_err(|s| WingError::from_status(&s)),
                Err(e) => Err(e),
            };
            match answer {
                Ok(()) => Ok(()),
                // No such replica there: nothing of it exports.
                Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::TableNotFound) => Ok(()),
                Err(e) => Err(format!("{pid} on node {m}: {e}")),
            }
        })
    });
    let failed: Vec<String> = join_all(calls).await.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(WingError::Unavailable(format!(
        "backup {}: {} member(s) did not stop exporting yet: {}",
        b.backup_id,
        failed.len(),
        failed.join("; ")
    )))
}

/// Deletes `objects` from `store` (in batches where the store can).
async fn delete_all(
    store: &dyn ObjectStore,
    objects: Vec<object_store::path::Path>,
    provider: &str,
) -> Result<(), WingError> {
    let locations = futures::stream::iter(objects.into_iter().map(Ok)).boxed();
    let mut deleted = store.delete_stream(locations);
    while let Some(r) = deleted.next().await {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(WingError::Unavailable(format!("{provider}: delete: {e}"))),
        }
    }
    Ok(())
}

/// Every partition is uploaded: stops every export, removes files no metadata names, writes
/// `backup_info`, and records the backup done.
async fn finish(node: &MetaNode, app: &AppState, b: &BackupRecord, term: u64) -> Result<(), WingError> {
    stop_exports(node, Some(app), b, term).await?;
    let store = provider(node, b)?;
    let sweeps = (0..b.partition_count()).map(|pidx| sweep_partition(store.as_ref(), b, pidx));
    futures::future::try_join_all(sweeps).await?;
    let info = BackupInfo {
        backup_id: b.backup_id,
        app_id: b.app_id,
        app_name: b.app_name.clone(),
        partition_count: b.partition_count(),
        replica_count: b.replica_count,
        envs: b.envs.clone(),
        start_time_ms: b.start_time_ms,
        end_time_ms: unix_millis(),
        partitions: b.partitions.clone(),
    };
    let bytes =
        serde_json::to_vec_pretty(&info).map_err(|e| WingError::Internal(format!("encode backup_info: {e}")))?;
    let path = b.dir()?.child(BACKUP_INFO);
    store.put(&path, bytes.into()).await.map_err(|e| WingError::Unavailable(format!("put {path}: {e}")))?;
    // On `local`, the backup counts as done only once its `backup_info` is on disk.
    if let Some(file) = local_path(&b.provider, &node.config.bulk_load_provider, &path) {
        tokio::task::spawn_blocking(move || sync_local_file(&file))
            .await
            .map_err(|e| WingError::Internal(format!("sync backup_info: {e}")))??;
    }
    propose(
        node,
        MetaCommand::FinishBackup {
            backup_id: b.backup_id,
            status: BackupStatus::Succeed,
            reason: String::new(),
            now_ms: info.end_time_ms,
        },
    )
    .await?;
    tracing::info!(backup = b.backup_id, table = %b.app_name, bytes = b.size(), "backup succeeded");
    Ok(())
}

/// Removes the files of partition `pidx`'s directory that its `bulk_load_metadata` does not
/// name (exports of earlier primaries, attempts that failed).
async fn sweep_partition(store: &dyn ObjectStore, b: &BackupRecord, pidx: u32) -> Result<(), WingError> {
    let dir = object_store::path::Path::parse(b.partition_dir(pidx)?)
        .map_err(|e| WingError::Internal(format!("backup dir: {e}")))?;
    let meta_path = dir.child(BULK_LOAD_METADATA);
    let unavailable = |e: object_store::Error| WingError::Unavailable(format!("{}://{dir}: {e}", b.provider));
    let bytes = store.get(&meta_path).await.map_err(unavailable)?.bytes().await.map_err(unavailable)?;
    let meta = BulkLoadMetadata::parse(&bytes)?;
    let keep: BTreeSet<String> = meta.files.iter().map(|f| f.name.clone()).collect();
    let objects: Vec<object_store::ObjectMeta> = store.list(Some(&dir)).try_collect().await.map_err(unavailable)?;
    let unreferenced = objects
        .into_iter()
        .map(|o| o.location)
        .filter(|l| l.filename().is_some_and(|n| n != BULK_LOAD_METADATA && !keep.contains(n)))
        .collect();
    delete_all(store, unreferenced, &b.provider).await
}

/// A canceled, failed or retired backup: stops every export, removes its directory from the
/// provider, and records it (a retired one is then forgotten).
async fn clean_up(node: &MetaNode, catalog: &Catalog, b: &BackupRecord, term: u64) -> Result<(), WingError> {
    stop_exports(node, catalog.apps.get(&b.app_id), b, term).await?;
    let store = provider(node, b)?;
    let dir = b.dir()?;
    // `backup_info` first: a backup half removed never looks whole to a restore.
    match store.delete(&dir.child(BACKUP_INFO)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(WingError::Unavailable(format!("{}://{dir}: delete {BACKUP_INFO}: {e}", b.provider))),
    }
    let unavailable = |e: object_store::Error| WingError::Unavailable(format!("{}://{dir}: {e}", b.provider));
    let objects: Vec<object_store::ObjectMeta> = store.list(Some(&dir)).try_collect().await.map_err(unavailable)?;
    let count = objects.len();
    delete_all(store.as_ref(), objects.into_iter().map(|o| o.location).collect(), &b.provider).await?;
    // A local provider keeps the empty directories; they hold nothing.
    propose(node, MetaCommand::SetBackupCleaned { backup_id: b.backup_id }).await?;
    tracing::info!(backup = b.backup_id, table = %b.app_name, files = count, "backup files removed");
    if b.retired {
        propose(node, MetaCommand::RemoveBackup { backup_id: b.backup_id }).await?;
    }
    Ok(())
}

/// Ends every running restore whose load ended.
async fn finish_restores(node: &MetaNode, catalog: &Catalog) {
    for r in catalog.backups.restores.values().filter(|r| r.status == RestoreStatus::Running) {
        let job = catalog.bulk_loads.get(&r.app_id).filter(|j| j.job_id == r.job_id);
        let (status, reason) = match job.map(|j| (j.status, j.reason.clone())) {
            Some((BulkLoadStatus::Succeed, _)) => (RestoreStatus::Succeed, String::new()),
            Some((BulkLoadStatus::Failed | BulkLoadStatus::Canceled | BulkLoadStatus::Invalid, why)) => {
                (RestoreStatus::Failed, format!("the load of the backup's files ended: {why}"))
            }
            Some(_) => continue,
            None => (RestoreStatus::Failed, "the load of the backup's files was cleared".to_string()),
        };
        let cmd = MetaCommand::FinishRestore {
            app_id: r.app_id,
            job_id: r.job_id,
            status,
            reason: reason.clone(),
            now_ms: unix_millis(),
        };
        match node.propose(cmd).await {
            Ok(_) => tracing::info!(app_id = r.app_id, backup = r.backup_id, ?status, %reason, "restore ended"),
            Err(e) => tracing::warn!(app_id = r.app_id, "cannot record the end of a restore: {e}"),
        }
    }
}

/// Starts the backups of every enabled policy that is due, and retires backups beyond each
/// policy's history count.
async fn run_policies(node: &MetaNode, catalog: &Catalog) {
    let now = unix_millis();
    for p in catalog.backups.policies.values() {
        if p.enabled && now >= p.next_start_ms() {
            for app_id in &p.app_ids {
                let Some(app) = catalog.apps.get(app_id).filter(|a| !a.is_dropped()) else { continue };
                if catalog.backups.running_backup(*app_id).is_some() || catalog.backups.blocks_serving(*app_id) {
                    tracing::info!(policy = %p.name, table = %app.name, "policy backup skipped: the table is busy");
                    continue;
                }
                let cmd = MetaCommand::StartBackup {
                    app_name: app.name.clone(),
                    provider: p.provider.clone(),
                    root: p.root.clone(),
                    cluster: node.config.cluster_name.clone(),
                    policy: Some(p.name.clone()),
                    now_ms: now,
                };
                match node.propose(cmd).await {
                    Ok(_) => tracing::info!(policy = %p.name, table = %app.name, "policy backup started"),
                    Err(e) => tracing::warn!(policy = %p.name, table = %app.name, "policy backup not started: {e}"),
                }
            }
            if let Err(e) = node.propose(MetaCommand::BackupPolicyStarted { name: p.name.clone(), now_ms: now }).await {
                tracing::warn!(policy = %p.name, "cannot record the policy's start: {e}");
            }
        }
        let apps: BTreeSet<u32> = catalog
            .backups
            .backups
            .values()
            .filter(|b| b.policy.as_deref() == Some(&p.name))
            .map(|b| b.app_id)
            .collect();
        for app_id in apps {
            for backup_id in catalog.backups.beyond_history(p, app_id) {
                if let Err(e) = node.propose(MetaCommand::RetireBackup { backup_id }).await {
                    tracing::warn!(policy = %p.name, backup = backup_id, "cannot retire a backup: {e}");
                }
            }
        }
    }
}

/// Backup `b` as the RPCs answer it, with each partition's progress when `detailed`.
pub fn status_response(node: &MetaNode, b: &BackupRecord, detailed: bool) -> BackupStatusResponse {
    let drives: HashMap<DriveKey, BackupDrive> = node
        .backup_drive
        .locked()
        .iter()
        .filter(|((id, _), _)| *id == b.backup_id)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let running = b.status == BackupStatus::Running;
    let partitions: Vec<PartitionBackupStatus> = b
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let d = drives.get(&(b.backup_id, i as u32)).filter(|_| running && !p.done);
            let s = d.and_then(|d| d.state.as_ref());
            let status = match (p.done, b.status) {
                (true, _) => WireStatus::BkSucceed,
                (false, BackupStatus::Running) => WireStatus::BkRunning,
                (false, other) => other.into(),
            };
            PartitionBackupStatus {
                partition_index: i as u32,
                status: status.into(),
                log_index: if p.done { p.log_index } else { s.map(|s| s.log_index).unwrap_or(0) },
                uploaded_bytes: if p.done { p.size } else { s.map(|s| s.uploaded_bytes).unwrap_or(0) },
                total_bytes: if p.done { p.size } else { s.map(|s| s.total_bytes).unwrap_or(0) },
                file_count: if p.done { p.file_count } else { s.map(|s| s.file_count).unwrap_or(0) },
                node_id: if p.done { p.node_id } else { s.map(|s| s.node_id).unwrap_or(0) },
                attempts: d.map(|d| d.retry.attempts()).unwrap_or(0),
                backoff_ms: d.map(|d| d.retry.backoff_ms()).unwrap_or(0),
                last_error: d.map(|d| d.retry.last_error().to_string()).unwrap_or_default(),
            }
        })
        .collect();
    let uploaded: u64 = partitions.iter().map(|p| p.uploaded_bytes).sum();
    let total: u64 = partitions.iter().map(|p| p.total_bytes).sum();
    let done = b.partitions.iter().filter(|p| p.done).count() as u64;
    // Partitions done count whole; those exporting count by their uploaded share.
    let percent = match b.status {
        BackupStatus::Succeed => 100,
        _ if b.partitions.is_empty() => 0,
        _ => {
            let running_share: f64 = partitions
                .iter()
                .zip(&b.partitions)
                .filter(|(s, p)| !p.done && s.total_bytes > 0)
                .map(|(s, _)| s.uploaded_bytes as f64 / s.total_bytes as f64)
                .sum();
            (((done as f64 + running_share) * 100.0 / b.partitions.len() as f64) as u32).min(99)
        }
    };
    BackupStatusResponse {
        backup_id: b.backup_id,
        app_name: b.app_name.clone(),
        app_id: b.app_id,
        status: WireStatus::from(b.status).into(),
        reason: b.reason.clone(),
        provider: b.provider.clone(),
        root: b.root.clone(),
        cluster: b.cluster.clone(),
        start_time_ms: b.start_time_ms,
        end_time_ms: b.end_time_ms,
        uploaded_bytes: uploaded,
        total_bytes: total,
        progress_percent: percent,
        partitions: if detailed { partitions } else { Vec::new() },
        policy: b.policy.clone().unwrap_or_default(),
        location: b.dir().map(|d| format!("{}://{d}", b.provider)).unwrap_or_default(),
        cleaned: b.cleaned,
    }
}
