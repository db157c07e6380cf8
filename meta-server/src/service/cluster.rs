//! The RPCs that describe the cluster: its replica servers, the meta group, and this meta.

use std::collections::{BTreeMap, HashMap};

use tonic::Status;
use wingkv_common::WingError;
use wingkv_proto::meta::{
    BalanceStatus, ClusterInfoResponse, DecommissionRequest, ListNodesResponse, NodeAddress, NodeInfo, NodeStatus,
    ServerInfoResponse,
};

use crate::catalog::{Catalog, MetaCommand, NodeRecord};
use crate::liveness::NodeState;
use crate::node::MetaNode;

/// Every registered replica server with its liveness, load and what it last told about itself.
pub(super) async fn list_nodes(node: &MetaNode) -> Result<ListNodesResponse, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    let loads = Loads::of(node, &catalog);
    let nodes = catalog.nodes.values().map(|n| node_info(node, &catalog, &loads, n)).collect();
    Ok(ListNodesResponse { nodes })
}

/// Starts or stops draining a node; answers the node as `nodes` shows it.
pub(super) async fn decommission(node: &MetaNode, req: DecommissionRequest) -> Result<NodeInfo, Status> {
    node.propose(MetaCommand::SetDraining { node_id: req.node_id, draining: !req.recommission }).await?;
    tracing::info!(node = req.node_id, draining = !req.recommission, "decommission");
    let catalog = node.catalog();
    let record = catalog
        .nodes
        .get(&req.node_id)
        .ok_or_else(|| WingError::NotFound(format!("node {} is not registered", req.node_id)))?;
    Ok(node_info(node, &catalog, &Loads::of(node, &catalog), record))
}

/// Replicas (from the catalog) and primaries (as reported) per node.
struct Loads {
    replicas: BTreeMap<u64, (u32, u32)>,
    primaries: HashMap<u64, u32>,
}

impl Loads {
    fn of(node: &MetaNode, catalog: &Catalog) -> Self {
        Self { replicas: catalog.load_by_node(), primaries: node.liveness.primary_counts() }
    }
}

/// `n` as `nodes` shows it.
fn node_info(node: &MetaNode, catalog: &Catalog, loads: &Loads, n: &NodeRecord) -> NodeInfo {
    let state = node.liveness.state(n.node_id);
    let mut facts = node.liveness.facts(n.node_id).unwrap_or_default();
    if state != NodeState::Alive {
        // Not heard from lately: how long it has been up is not known.
        facts.uptime_ms = 0;
    }
    let replica_count = loads.replicas.get(&n.node_id).map(|l| l.0).unwrap_or(0);
    NodeInfo {
        node_id: n.node_id,
        address: n.address.clone(),
        status: NodeStatus::from(state).into(),
        replica_count,
        primary_count: loads.primaries.get(&n.node_id).copied().unwrap_or(0),
        last_heartbeat_ms_ago: node.liveness.silence_ms(n.node_id).unwrap_or(u64::MAX),
        version: facts.version,
        uptime_ms: facts.uptime_ms,
        http_address: facts.http_address,
        drain: drain_state(node, catalog, n.node_id, replica_count).into(),
    }
}

/// Whether node `id` drains, and whether it is empty: no replica listed in the catalog and
/// none it reports hosting (those moved away are removed by its heartbeats).
fn drain_state(node: &MetaNode, catalog: &Catalog, id: u64, listed: u32) -> &'static str {
    if !catalog.settings.draining.contains(&id) {
        return "";
    }
    let empty = listed == 0 && node.liveness.state(id) == NodeState::Alive && node.liveness.hosted(id).is_empty();
    if empty {
        "drained"
    } else {
        "draining"
    }
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
    let b = crate::balancer::status(node, &catalog);
    let balance = BalanceStatus {
        replicas_balanced: b.assessment.replicas_balanced,
        primaries_balanced: b.assessment.primaries_balanced,
        moves_in_flight: b.in_flight,
        replica_moves_done: b.replica_moves,
        primary_moves_done: b.primary_moves,
        moves_failed: b.failed,
        skipped_tables: b.skipped_tables,
    };
    Ok(ClusterInfoResponse {
        cluster_name: node.config.cluster_name.clone(),
        meta_leader: node.leader_address().unwrap_or_default(),
        meta_members,
        meta_term: m.current_term,
        alive_nodes: states.iter().filter(|s| **s == NodeState::Alive).count() as u32,
        dead_nodes: states.iter().filter(|s| **s == NodeState::Dead).count() as u32,
        table_count: catalog.apps.values().filter(|a| !a.is_dropped()).count() as u32,
        version: env!("CARGO_PKG_VERSION").into(),
        meta_level: catalog.settings.meta_level.as_str().into(),
        balance: Some(balance),
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
