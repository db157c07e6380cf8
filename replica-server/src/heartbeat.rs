//! The replica server's side of the meta: registration (a node id assigned once and kept in the
//! data dir) and the heartbeat loop, which reports every hosted replica and removes the ones the
//! meta says no longer belong here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wingkv_common::meta_client::MetaClient;
use wingkv_common::report::report_from_status;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::meta::{HeartbeatRequest, RegisterNodeRequest};

use crate::manager::ReplicaManager;

/// Name of the file in the data dir that keeps the node id the meta assigned.
pub const NODE_ID_FILE: &str = "node_id";

/// The node id kept in `data_dir`, if any.
pub fn stored_node_id(data_dir: &Path) -> Result<Option<u64>, WingError> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            WingError::Corruption(format!("{} does not hold a node id: '{}'", path.display(), text.trim()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WingError::Storage(format!("cannot read {}: {e}", path.display()))),
    }
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
        let path = data_dir.join(NODE_ID_FILE);
        let tmp = data_dir.join("node_id.tmp");
        std::fs::write(&tmp, id.to_string())
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| WingError::Storage(format!("cannot write {}: {e}", path.display())))?;
        tracing::info!(node_id = id, "registered with the meta as a new node");
    }
    Ok(id)
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
        let replicas = manager.all().iter().map(|r| report_from_status(&r.status())).collect();
        let req = HeartbeatRequest {
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
                manager.apply_table_envs(&resp.tables);
                for p in resp.remove {
                    let pid = PartitionId::new(p.app_id, p.partition_index);
                    tracing::info!(partition = %pid, "the meta says this replica no longer belongs here; removing it");
                    if let Err(e) = manager.remove(pid).await {
                        tracing::warn!(partition = %pid, "cannot remove replica: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
}
