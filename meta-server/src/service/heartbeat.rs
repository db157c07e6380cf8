//! The RPCs of the replica servers themselves: registration and heartbeats. What a heartbeat
//! is answered is decided by [`crate::heartbeat::decide`].

use tonic::Status;
use wingkv_common::sync::MutexExt;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::meta::{HeartbeatRequest, HeartbeatResponse, RegisterNodeRequest, RegisterNodeResponse};

use crate::catalog::{MetaCommand, MetaValue};
use crate::heartbeat::decide;
use crate::liveness::{partitions_of, NodeFacts};
use crate::node::MetaNode;

/// Registers a replica server: node id 0 gets a new id; a known id gets its address updated.
pub(super) async fn register_node(node: &MetaNode, r: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status> {
    r.address
        .parse::<std::net::SocketAddr>()
        .map_err(|_| WingError::InvalidArgument(format!("'{}' is not a host:port address", r.address)))?;
    let value = node.propose(MetaCommand::RegisterNode { node_id: r.node_id, address: r.address }).await?;
    let MetaValue::NodeId(node_id) = value else {
        return Err(WingError::Internal("registration answered no node id".into()).into());
    };
    node.liveness.record(node.term(), node_id, Vec::new(), None);
    tracing::info!(node_id, "replica server registered");
    Ok(RegisterNodeResponse { node_id })
}

/// Records a replica server's heartbeat and answers what it must act on.
pub(super) async fn heartbeat(node: &MetaNode, r: HeartbeatRequest) -> Result<HeartbeatResponse, Status> {
    // The answer may order replicas removed: it is decided on a linearizable catalog (a
    // deposed or lagging leader fails here instead of answering from what it has applied).
    let meta_term = node.read_barrier_term().await?;
    let catalog = node.catalog();
    if !catalog.nodes.contains_key(&r.node_id) {
        return Err(WingError::NotFound(format!("node {} is not registered", r.node_id)).into());
    }
    let hosted: Vec<PartitionId> = partitions_of(&r.replicas).collect();
    node.liveness.record(meta_term, r.node_id, r.replicas, r.stamp.as_ref());
    let facts = NodeFacts { version: r.version, uptime_ms: r.uptime_ms, http_address: r.http_address };
    node.liveness.record_facts(r.node_id, facts);
    let repairs = node.repairs.locked().clone();
    let decision = decide(&catalog, r.node_id, &hosted, &repairs, &node.liveness);
    for pid in &decision.remove {
        tracing::info!(partition = %pid, node = r.node_id, meta_term, "telling the node to remove its replica");
    }
    Ok(HeartbeatResponse {
        remove: decision.remove.iter().map(|p| p.to_proto()).collect(),
        tables: decision.tables,
        meta_term,
        dropped_tables: decision.dropped,
        restoring_tables: decision.restoring,
        live_bulk_load_jobs: decision.live_bulk_load_jobs,
        next_bulk_load_job_id: decision.next_bulk_load_job_id,
    })
}
