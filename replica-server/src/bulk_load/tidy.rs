//! Releasing a replica's bulk-load files once no member can need them, on positive facts only:
//!
//! - a job **ingested here** keeps its verified files (hard links of what RocksDB took) while
//!   this replica's raft log still holds its `IngestSst` entry: a member that replays or
//!   receives the entry without the files fetches them from one that has them. Once every
//!   member of the group reports an applied index past the entry, the replica snapshots and
//!   purges its log through it (any later member gets the rows in a snapshot), and the files go.
//! - a job **not ingested here** keeps its files until the meta's catalog says the job is
//!   finished (the first facts after a start clean up what a replica that was down kept).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rocksdb::DB;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wingkv_common::channel::ChannelPool;
use wingkv_common::raft::NodeId;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::StatusRequest;

use super::ingest::ingested_at;
use super::slot::BulkLoadSlot;
use super::JobFacts;
use crate::raft_types::PartitionRaft;

/// How often a replica looks at its bulk-load files.
const TIDY_INTERVAL: Duration = Duration::from_secs(2);

/// How long a member may take to report its applied index.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The job directories under a replica directory: job id, and the log index the job was
/// ingested at here, if it was (blocking).
fn job_dirs(replica_dir: &Path) -> Vec<(u64, Option<u64>)> {
    let Ok(entries) = std::fs::read_dir(replica_dir.join("bulk_load")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u64>().ok()?, ingested_at(&e.path()))))
        .collect()
}

/// Runs until `cancel`: every [`TIDY_INTERVAL`], releases what no member needs.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    id: PartitionId,
    raft: PartitionRaft,
    db: Arc<DB>,
    slot: Arc<BulkLoadSlot>,
    pool: ChannelPool,
    facts: watch::Receiver<Option<JobFacts>>,
    replica_dir: PathBuf,
    cancel: CancellationToken,
) {
    let mut announced_start = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TIDY_INTERVAL) => {}
        }
        let current = facts.borrow().clone();
        let dirs = {
            let dir = replica_dir.clone();
            tokio::task::spawn_blocking(move || job_dirs(&dir)).await.unwrap_or_default()
        };
        for (job_id, ingested) in dirs {
            if cancel.is_cancelled() {
                return;
            }
            let released = match ingested {
                Some(index) => release_ingested(id, &raft, &db, &pool, index).await,
                None => current.as_ref().is_some_and(|f| f.is_finished(job_id)),
            };
            if released && slot.release(job_id).await {
                let when = if announced_start { "" } else { " (first look after the replica opened)" };
                tracing::info!(partition = %id, job = job_id, "removed the bulk-load files of a finished job{when}");
            }
        }
        announced_start |= current.is_some();
    }
}

/// Whether the files of a job ingested at `index` may go, driving there. Only when every
/// member of the group (as this replica's latest membership names them: a member being added
/// is in it before it receives any entry) reports an applied index past the entry: then the
/// replica snapshots and purges its log through it, and the files go once the log no longer
/// holds the entry — a member added later receives a snapshot, never the entry. The members
/// are asked again at the moment of release: one added meanwhile may have received the entry
/// before the purge and still need the files.
async fn release_ingested(id: PartitionId, raft: &PartitionRaft, db: &DB, pool: &ChannelPool, index: u64) -> bool {
    let m = raft.metrics().borrow().clone();
    // The entry may still be replayed here only if the applied index on disk is before it.
    let durable = crate::snapshot::read_applied(db).ok().and_then(|(l, _)| l).map(|l| l.index).unwrap_or(0);
    if durable < index {
        return false;
    }
    let members: Vec<(NodeId, String)> = m
        .membership_config
        .membership()
        .nodes()
        .filter(|(n, _)| **n != m.id)
        .map(|(n, node)| (*n, node.addr.clone()))
        .collect();
    for (node, addr) in &members {
        match member_applied(id, pool, addr).await {
            Ok(applied) if applied >= index => {}
            Ok(applied) => {
                tracing::debug!(partition = %id, node, applied, index, "a member still needs the bulk-load files");
                return false;
            }
            Err(e) => {
                tracing::debug!(partition = %id, node, "cannot ask a member for its applied index: {e}");
                return false;
            }
        }
    }
    if m.purged.is_some_and(|p| p.index >= index) {
        return true;
    }
    // Every member has the rows: the entry leaves this log.
    if m.snapshot.is_none_or(|s| s.index < index) {
        let _ = raft.trigger().snapshot().await;
    } else {
        let _ = raft.trigger().purge_log(index).await;
    }
    false
}

async fn member_applied(id: PartitionId, pool: &ChannelPool, addr: &str) -> Result<u64, WingError> {
    let channel = pool.get(addr).map_err(|e| WingError::Unavailable(format!("{addr}: {e}")))?;
    let mut req = tonic::Request::new(StatusRequest { partition: Some(id.to_proto()) });
    req.set_timeout(MEMBER_STATUS_TIMEOUT);
    let status = ReplicaAdminClient::new(channel).status(req).await.map_err(|s| WingError::from_status(&s))?;
    status
        .into_inner()
        .replicas
        .first()
        .map(|r| r.applied_index)
        .ok_or_else(|| WingError::NotFound(format!("{addr} does not host {id}")))
}
