//! The RPCs that describe the cluster: its replica servers, the meta group, and this meta.

use tonic::Status;
use wingkv_proto::meta::{
    ClusterInfoResponse, ListNodesResponse, NodeAddress, NodeInfo, NodeStatus, ServerInfoResponse,
};

use crate::liveness::NodeState;
use crate::node::MetaNode;

/// Every registered replica server with its liveness, load and what it last told about itself.
pub(super) async fn list_nodes(node: &MetaNode) -> Result<ListNodesResponse, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    let load = catalog.load_by_node();
    let primaries = node.liveness.primary_counts();
    let nodes = catalog
        .nodes
        .values()
        .map(|n| {
            let state = node.liveness.state(n.node_id);
            let mut facts = node.liveness.facts(n.node_id).unwrap_or_default();
            if state != NodeState::Alive {
                // Not heard from lately: how long it has been up is not known.
                facts.uptime_ms = 0;
            }
            NodeInfo {
                node_id: n.node_id,
                address: n.address.clone(),
                status: NodeStatus::from(state).into(),
                replica_count: load.get(&n.node_id).map(|l| l.0).unwrap_or(0),
                primary_count: primaries.get(&n.node_id).copied().unwrap_or(0),
                last_heartbeat_ms_ago: node.liveness.silence_ms(n.node_id).unwrap_or(u64::MAX),
                version: facts.version,
                uptime_ms: facts.uptime_ms,
                http_address: facts.http_address,
            }
        })
        .collect();
    Ok(ListNodesResponse { nodes })
}

/// The meta group and the counts of nodes and tables, as the leader knows them.
pub(super) async fn cluster_info(node: &MetaNode) -> Result<ClusterInfoResponse, Status> {
    node.read_barrier().await?;
    let m = node.raft.metrics().borrow().clone();
    let meta_members = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| NodeAddress { node_id: *id, address: n.addr.clone() })
        .collect();
    let catalog = node.catalog();
    let states: Vec<NodeState> = catalog.nodes.keys().map(|n| node.liveness.state(*n)).collect();
    Ok(ClusterInfoResponse {
        cluster_name: node.config.cluster_name.clone(),
        meta_leader: node.leader_address().unwrap_or_default(),
        meta_members,
        meta_term: m.current_term,
        alive_nodes: states.iter().filter(|s| **s == NodeState::Alive).count() as u32,
        dead_nodes: states.iter().filter(|s| **s == NodeState::Dead).count() as u32,
        table_count: catalog.apps.values().filter(|a| !a.is_dropped()).count() as u32,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// This meta server itself; answered from what it knows, no leader needed.
pub(super) fn server_info(node: &MetaNode) -> ServerInfoResponse {
    let m = node.raft.metrics().borrow().clone();
    let role = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    let address = m.membership_config.membership().get_node(&m.id).map(|n| n.addr.clone()).unwrap_or_default();
    ServerInfoResponse {
        meta_id: m.id,
        address,
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_ms: node.started.elapsed().as_millis() as u64,
        role: role.into(),
        term: m.current_term,
        http_address: node.http_address.get().cloned().unwrap_or_default(),
    }
}
