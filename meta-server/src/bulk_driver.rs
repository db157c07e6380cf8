//! The meta leader's bulk-load driver: each reconcile tick moves every live job forward by
//! asking each partition's primary to act on its group, and records what changed.

use std::time::Duration;

use wingkv_common::{PartitionId, WingError};
use wingkv_proto::replica_admin::{BulkLoadAction, BulkLoadJobSpec, BulkLoadRequest, BulkLoadResponse};

use crate::bulk_load::{BulkLoadJob, BulkLoadStatus};
use crate::catalog::{AppState, MetaCommand};
use crate::node::MetaNode;

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
    let spec = BulkLoadJobSpec {
        job_id: job.job_id,
        provider: job.provider.clone(),
        partition_dir: job.partition_dir(&app.name, pidx)?,
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
    node.bulk_progress.lock().unwrap_or_else(|e| e.into_inner()).insert(pid, resp.replicas.clone());
    Ok(resp)
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

/// Moves `job` of `app` forward by one step where it can.
pub async fn drive(node: &MetaNode, app: &AppState, job: &BulkLoadJob) {
    use BulkLoadStatus::*;
    match job.status {
        Downloading => {
            let mut all = true;
            for (pidx, status) in job.partitions.iter().enumerate() {
                if *status == Downloaded {
                    continue;
                }
                all = false;
                // Transient failures (no primary, Busy, unreachable) are retried next tick.
                let Ok(r) = call_primary(node, app, job, pidx as u32, BulkLoadAction::BlDownload).await else {
                    continue;
                };
                if let Some(f) = r.replicas.iter().find(|x| x.status == "BLS_FAILED") {
                    let reason = format!("partition {}.{pidx} on node {}: {}", app.app_id, f.node_id, f.reason);
                    set(node, app, job, None, Failed, reason).await;
                    return;
                }
                let members = app.partitions.get(pidx).map(|p| p.members.len()).unwrap_or(0);
                if r.replicas.len() >= members
                    && r.replicas.iter().all(|x| x.status == "BLS_DOWNLOADED" || x.status == "BLS_SUCCEED")
                {
                    set(node, app, job, Some(pidx as u32), Downloaded, String::new()).await;
                }
            }
            if all {
                set(node, app, job, None, Ingesting, String::new()).await;
            }
        }
        Ingesting => {
            let mut all = true;
            for (pidx, status) in job.partitions.iter().enumerate() {
                if *status == Succeed {
                    continue;
                }
                all = false;
                match call_primary(node, app, job, pidx as u32, BulkLoadAction::BlIngest).await {
                    Ok(r) if r.ingested => set(node, app, job, Some(pidx as u32), Succeed, String::new()).await,
                    Ok(_) => {}
                    Err(e) if e.code() == wingkv_common::ErrorCode::Corruption => {
                        let reason = format!("partition {}.{pidx}: ingestion failed: {e}", app.app_id);
                        set(node, app, job, None, Failed, reason).await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(table = %app.name, "ingest of partition {pidx} not done yet: {e}")
                    }
                }
            }
            if all {
                set(node, app, job, None, Succeed, String::new()).await;
            }
        }
        Pausing => {
            let mut paused = true;
            for pidx in 0..job.partitions.len() as u32 {
                paused &= call_primary(node, app, job, pidx, BulkLoadAction::BlPause).await.is_ok();
            }
            if paused {
                set(node, app, job, None, Paused, String::new()).await;
            }
        }
        Canceled | Failed => {
            // Tell every replica to stop and remove the job's files, once per leadership.
            if !node.bulk_cleaned.lock().unwrap_or_else(|e| e.into_inner()).insert(job.job_id) {
                return;
            }
            for pidx in 0..job.partitions.len() as u32 {
                if let Err(e) = call_primary(node, app, job, pidx, BulkLoadAction::BlCancel).await {
                    tracing::warn!(table = %app.name, job = job.job_id, "cannot clean partition {pidx}: {e}");
                }
            }
        }
        Invalid | Downloaded | Succeed | Paused => {}
    }
}
