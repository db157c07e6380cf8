//! The replica server's side of the meta: registration (a node id assigned once and kept in the
//! data dir, durably) and the heartbeat loop, which reports every hosted replica, applies the
//! table envs and drops the meta sends back, and hands the removals it orders — fenced by the
//! meta's term — to a [`Remover`] that runs them off the loop (a removal closes a replica and
//! moves its directory: it must never make the node miss heartbeats).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wingkv_common::meta_client::MetaClient;
use wingkv_common::report::report_from_status;
use wingkv_common::sync::MutexExt;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::meta::{HeartbeatRequest, RegisterNodeRequest};

use crate::manager::ReplicaManager;

/// Name of the file in the data dir that keeps the node id the meta assigned.
pub const NODE_ID_FILE: &str = "node_id";

/// The node id kept in `data_dir`, if any.
pub fn stored_node_id(data_dir: &Path) -> Result<Option<u64>, WingError> {
    crate::durable::read_number(&data_dir.join(NODE_ID_FILE), "a node id")
}

/// Registers this server with the meta (with `node_id`, or 0 for a new node) and returns the
/// node id, kept in `data_dir` for the next start.
pub async fn register(meta: &MetaClient, data_dir: &Path, node_id: u64, address: &str) -> Result<u64, WingError> {
    let req = RegisterNodeRequest { node_id, address: address.to_string() };
    let resp = meta.call(|mut c| {
        let req = req.clone();
        async move { c.register_node(req).await }
    });
    let id = resp.await?.node_id;
    if id != node_id {
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || write_node_id(&dir, id))
            .await
            .map_err(|e| WingError::Internal(format!("writing the node id failed: {e}")))??;
        tracing::info!(node_id = id, "registered with the meta as a new node");
    }
    Ok(id)
}

/// Writes the node id file durably (synced aside, renamed, directory synced): a crash leaves
/// either no id (the node registers again) or the whole id.
fn write_node_id(data_dir: &Path, id: u64) -> Result<(), WingError> {
    crate::durable::replace_file(&data_dir.join(NODE_ID_FILE), id.to_string().as_bytes())
}

/// Runs the replica removals the meta orders, one at a time, off the heartbeat loop. An order
/// already queued is not queued twice; each is checked against the newest meta term again when
/// its turn comes.
#[derive(Clone)]
pub struct Remover {
    tx: tokio::sync::mpsc::UnboundedSender<(PartitionId, u64)>,
    pending: Arc<std::sync::Mutex<std::collections::HashSet<PartitionId>>>,
}

impl Remover {
    /// Starts the worker on `tasks`; it stops when `cancel` fires (after the removal it is in).
    pub fn start(
        manager: Arc<ReplicaManager>,
        tasks: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(PartitionId, u64)>();
        let pending: Arc<std::sync::Mutex<std::collections::HashSet<PartitionId>>> = Arc::default();
        let done = pending.clone();
        tasks.spawn(async move {
            loop {
                let (pid, term) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    next = rx.recv() => match next {
                        Some(order) => order,
                        None => break,
                    },
                };
                match manager.check_meta_term(Some(term)) {
                    Err(e) => tracing::warn!(partition = %pid, "removal not done: {e}"),
                    Ok(()) => match manager.remove(pid).await {
                        Ok(()) => {}
                        Err(e) if e.code() == wingkv_common::ErrorCode::NotFound => {}
                        Err(e) => tracing::warn!(partition = %pid, "cannot remove replica: {e}"),
                    },
                }
                done.locked().remove(&pid);
            }
        });
        Self { tx, pending }
    }

    /// Queues the removal of `pid`, ordered by the meta leader of `meta_term`.
    pub fn order(&self, pid: PartitionId, meta_term: u64) {
        if self.pending.locked().insert(pid) {
            tracing::info!(partition = %pid, meta_term, "the meta says this replica no longer belongs here; removing it");
            let _ = self.tx.send((pid, meta_term));
        }
    }
}

/// What a heartbeat says about the server itself.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// The gRPC address peers use.
    pub address: String,
    /// Where `/metrics` is served.
    pub http_address: String,
    /// When the server started.
    pub started: std::time::Instant,
}

/// Reports to the meta every `interval` until `cancel` fires.
pub async fn run(
    meta: Arc<MetaClient>,
    manager: Arc<ReplicaManager>,
    remover: Remover,
    me: ServerIdentity,
    interval: Duration,
    cancel: CancellationToken,
) {
    let node_id = manager.node_id();
    let address = me.address.clone();
    let mut registered = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !registered {
            // Tell the meta our current address (it may have changed since the last run).
            match register(&meta, manager.data_dir(), node_id, &address).await {
                Ok(_) => registered = true,
                Err(e) => {
                    tracing::warn!("cannot reach the meta to register: {e}");
                    continue;
                }
            }
        }
        // Stamped before the replicas are listed (see `ReportStamp`).
        let stamp = manager.report_stamp();
        let epoch = manager.heartbeat_epoch();
        let replicas = manager.all().iter().map(|r| report_from_status(&r.status())).collect();
        let req = HeartbeatRequest {
            stamp: Some(stamp),
            node_id,
            address: address.clone(),
            replicas,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: me.started.elapsed().as_millis() as u64,
            http_address: me.http_address.clone(),
        };
        let resp = tokio::select! {
            _ = cancel.cancelled() => break,
            r = meta.call(|mut c| {
                let req = req.clone();
                async move { c.heartbeat(req).await }
            }) => r,
        };
        match resp {
            Ok(resp) => {
                // An answer of a meta term older than one seen: a deposed leader's view.
                if let Err(e) = manager.observe_meta_term(resp.meta_term) {
                    tracing::warn!("heartbeat answer ignored: {e}");
                    continue;
                }
                manager.apply_table_envs(&resp.tables);
                manager.set_dropped_tables(&resp.dropped_tables);
                // A recorded restore mark goes only on positive evidence: the meta names the
                // table live on this node and no longer restoring (not merely unknown to it).
                let mut restored = manager.set_restoring_tables(&resp.restoring_tables, epoch);
                restored.retain(|app| resp.tables.iter().any(|t| t.app_id == *app));
                if !restored.is_empty() {
                    manager.forget_restore_marks(&restored).await;
                }
                manager.set_bulk_load_jobs(crate::bulk_load::JobFacts {
                    live: resp.live_bulk_load_jobs.iter().copied().collect(),
                    next_job_id: resp.next_bulk_load_job_id,
                });
                for p in resp.remove {
                    remover.order(PartitionId::new(p.app_id, p.partition_index), resp.meta_term);
                }
            }
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
}
