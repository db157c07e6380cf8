//! The cluster commands: `cluster_info`, `nodes`, `server_info`, the meta level and `propose`.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use wingkv_client::{Admin, BalanceStatus, NodeInfo};

use super::format::{fields, rows, Col, View};

/// `cluster_info`: the cluster's summary.
#[derive(Serialize)]
pub struct ClusterInfoView {
    cluster_name: String,
    meta_leader: String,
    meta_servers: Vec<String>,
    meta_term: u64,
    alive_nodes: u32,
    dead_nodes: u32,
    table_count: u32,
    version: String,
    meta_level: String,
    /// One line: balanced or not, moves in flight and done.
    balance: String,
    /// The balancer's figures, for scripts.
    balance_status: BalanceView,
}

/// The balancer's progress in `cluster_info --json`.
#[derive(Serialize, Default)]
struct BalanceView {
    replicas_balanced: bool,
    primaries_balanced: bool,
    moves_in_flight: u32,
    replica_moves_done: u64,
    primary_moves_done: u64,
    moves_failed: u64,
    skipped_tables: Vec<String>,
}

impl From<BalanceStatus> for BalanceView {
    fn from(b: BalanceStatus) -> Self {
        Self {
            replicas_balanced: b.replicas_balanced,
            primaries_balanced: b.primaries_balanced,
            moves_in_flight: b.moves_in_flight,
            replica_moves_done: b.replica_moves_done,
            primary_moves_done: b.primary_moves_done,
            moves_failed: b.moves_failed,
            skipped_tables: b.skipped_tables,
        }
    }
}

impl BalanceView {
    fn line(&self) -> String {
        let state = match (self.replicas_balanced, self.primaries_balanced) {
            (true, true) => "balanced".to_string(),
            (false, true) => "replicas unbalanced".to_string(),
            (true, false) => "primaries unbalanced".to_string(),
            (false, false) => "replicas and primaries unbalanced".to_string(),
        };
        let mut line = format!(
            "{state}; {} moves in flight, {} replica and {} primary moves done, {} failed",
            self.moves_in_flight, self.replica_moves_done, self.primary_moves_done, self.moves_failed
        );
        if !self.skipped_tables.is_empty() {
            line.push_str(&format!("; bulk loading, left alone: {}", self.skipped_tables.join(",")));
        }
        line
    }
}

impl View for ClusterInfoView {
    fn text(&self) -> String {
        fields(
            self,
            &[
                Col::plain("cluster_name"),
                Col::plain("meta_leader"),
                Col::plain("meta_servers"),
                Col::plain("meta_term"),
                Col::plain("alive_nodes"),
                Col::plain("dead_nodes"),
                Col::plain("table_count"),
                Col::plain("version"),
                Col::plain("meta_level"),
                Col::plain("balance"),
            ],
        )
    }
}

/// Runs `cluster_info`.
pub async fn cluster_info(admin: &Admin) -> Result<ClusterInfoView> {
    let i = admin.cluster_info().await?;
    let balance = BalanceView::from(i.balance.unwrap_or_default());
    Ok(ClusterInfoView {
        cluster_name: i.cluster_name,
        meta_leader: i.meta_leader,
        meta_servers: i.meta_members.into_iter().map(|m| m.address).collect(),
        meta_term: i.meta_term,
        alive_nodes: i.alive_nodes,
        dead_nodes: i.dead_nodes,
        table_count: i.table_count,
        version: i.version,
        meta_level: i.meta_level,
        balance: balance.line(),
        balance_status: balance,
    })
}

/// `set_meta_level` / `get_meta_level`: the level in force.
#[derive(Serialize)]
pub struct MetaLevelView {
    meta_level: String,
}

impl View for MetaLevelView {
    fn text(&self) -> String {
        fields(self, &[Col::plain("meta_level")])
    }
}

/// Runs `set_meta_level LEVEL`.
pub async fn set_meta_level(admin: &Admin, level: &str) -> Result<MetaLevelView> {
    Ok(MetaLevelView { meta_level: admin.set_meta_level(level).await? })
}

/// `propose`: the partition after the move.
#[derive(Serialize)]
pub struct ProposeView {
    partition: String,
    members: Vec<String>,
    primary: String,
}

impl View for ProposeView {
    fn text(&self) -> String {
        fields(self, &[Col::plain("partition"), Col::plain("members"), Col::plain("primary")])
    }
}

/// The node id that `node` names: an id, or the address of a registered replica server.
fn node_id(nodes: &[NodeInfo], node: &str) -> Result<u64> {
    if let Ok(id) = node.parse::<u64>() {
        return Ok(id);
    }
    nodes
        .iter()
        .find(|n| n.address == node)
        .map(|n| n.node_id)
        .ok_or_else(|| anyhow::anyhow!("no replica server has the id or address '{node}' (see `nodes`)"))
}

/// Runs `propose -g TABLE.PIDX -p ACTION -t NODE [-f NODE]`.
pub async fn propose(admin: &Admin, gpid: &str, action: &str, target: &str, from: Option<&str>) -> Result<ProposeView> {
    let (table, index) = gpid
        .rsplit_once('.')
        .and_then(|(t, i)| Some((t, i.parse::<u32>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("-g takes TABLE.PARTITION_INDEX (e.g. t.3), not '{gpid}'"))?;
    let nodes = admin.list_nodes().await?;
    let to = node_id(&nodes, target)?;
    let from = match (action, from) {
        ("move_replica", None) => anyhow::bail!("move_replica needs -f NODE, the member that leaves"),
        (_, Some(f)) => node_id(&nodes, f)?,
        (_, None) => 0,
    };
    let r = admin.propose(table, index, action, from, to).await?;
    let address = |id: u64| {
        nodes.iter().find(|n| n.node_id == id).map(|n| n.address.clone()).unwrap_or_else(|| format!("node {id}"))
    };
    Ok(ProposeView {
        partition: gpid.to_string(),
        members: r.members.iter().map(|m| address(*m)).collect(),
        primary: address(r.primary),
    })
}

/// Runs `decommission NODE` (or `recommission NODE`): the node as `nodes -d` shows it.
pub async fn decommission(admin: &Admin, node: &str, recommission: bool) -> Result<NodesView> {
    let id = node_id(&admin.list_nodes().await?, node)?;
    let n = admin.decommission(id, recommission).await?;
    Ok(NodesView { nodes: vec![NodeView::from(n)], detailed: true })
}

/// Runs `get_meta_level`.
pub async fn get_meta_level(admin: &Admin) -> Result<MetaLevelView> {
    Ok(MetaLevelView { meta_level: admin.get_meta_level().await? })
}

/// One replica server of `nodes`.
#[derive(Serialize)]
struct NodeView {
    node_id: u64,
    address: String,
    status: String,
    replica_count: u32,
    primary_count: u32,
    version: String,
    uptime_ms: u64,
    http_address: String,
    /// `draining` or `drained` once decommissioned, empty in service.
    drain: String,
}

impl From<NodeInfo> for NodeView {
    fn from(n: NodeInfo) -> Self {
        let status = n.status().as_str_name().to_string();
        Self {
            node_id: n.node_id,
            address: n.address,
            status,
            replica_count: n.replica_count,
            primary_count: n.primary_count,
            version: n.version,
            uptime_ms: n.uptime_ms,
            http_address: n.http_address,
            drain: n.drain,
        }
    }
}

/// `nodes [-d]`: the replica servers.
#[derive(Serialize)]
pub struct NodesView {
    nodes: Vec<NodeView>,
    /// The text shows counts, version and uptime too.
    #[serde(skip)]
    detailed: bool,
}

impl View for NodesView {
    fn text(&self) -> String {
        const BRIEF: [Col<NodeView>; 3] = [Col::plain("node_id"), Col::plain("address"), Col::plain("status")];
        const DETAILED: [Col<NodeView>; 5] = [
            Col::plain("replica_count"),
            Col::plain("primary_count"),
            Col::dash("drain"),
            Col::dash("version"),
            Col::uptime("uptime_ms"),
        ];
        let cols = if self.detailed { [&BRIEF[..], &DETAILED[..]].concat() } else { BRIEF.to_vec() };
        rows(&self.nodes, &cols)
    }
}

/// Runs `nodes`.
pub async fn nodes(admin: &Admin, detailed: bool) -> Result<NodesView> {
    let nodes = admin.list_nodes().await?.into_iter().map(NodeView::from).collect();
    Ok(NodesView { nodes, detailed })
}

/// One server of `server_info`: a meta (as it answers for itself) or a replica server (as the
/// meta leader knows it). Fields a server does not have are left out of the JSON.
#[derive(Serialize)]
struct ServerView {
    /// `meta1`, `replica2`, ...
    server: String,
    role: &'static str,
    id: u64,
    address: String,
    /// A meta's role in the meta group, a replica server's liveness, or `UNREACHABLE`.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_address: Option<String>,
    /// Why an unreachable meta did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl ServerView {
    fn new(role: &'static str, id: u64, address: String, status: String) -> Self {
        Self {
            server: format!("{role}{id}"),
            role,
            id,
            address,
            status,
            version: None,
            uptime_ms: None,
            replica_count: None,
            primary_count: None,
            http_address: None,
            error: None,
        }
    }
}

/// A replica server's address and liveness (the older, shorter list of `server_info`).
#[derive(Serialize)]
struct ReplicaServer {
    address: String,
    status: String,
}

/// `server_info`: every server's version, uptime and role.
#[derive(Serialize)]
pub struct ServerInfoView {
    /// The meta leader's version.
    version: String,
    servers: Vec<ServerView>,
    meta_servers: Vec<String>,
    replica_servers: Vec<ReplicaServer>,
}

impl View for ServerInfoView {
    fn text(&self) -> String {
        rows(
            &self.servers,
            &[
                Col::plain("server"),
                Col::plain("address"),
                Col::plain("status"),
                Col::dash("version"),
                Col::uptime("uptime_ms"),
                Col::plain("replica_count"),
                Col::plain("primary_count"),
                Col::dash("http_address"),
            ],
        )
    }
}

/// How long `server_info` waits for each meta to answer for itself.
const META_ANSWER: Duration = Duration::from_secs(3);

/// Runs `server_info`.
pub async fn server_info(admin: &Admin) -> Result<ServerInfoView> {
    let info = admin.cluster_info().await?;
    let nodes = admin.list_nodes().await?;
    // Every meta answers for itself, so a follower's version and uptime show too.
    let metas = info.meta_members.iter().map(|m| async move { (m, admin.server_info(&m.address, META_ANSWER).await) });
    let mut servers = Vec::new();
    for (m, answer) in futures::future::join_all(metas).await {
        servers.push(match answer {
            Ok(s) => ServerView {
                version: Some(s.version),
                uptime_ms: Some(s.uptime_ms),
                http_address: Some(s.http_address),
                ..ServerView::new("meta", m.node_id, m.address.clone(), s.role)
            },
            Err(e) => ServerView {
                error: Some(e.to_string()),
                ..ServerView::new("meta", m.node_id, m.address.clone(), "UNREACHABLE".into())
            },
        });
    }
    for n in &nodes {
        servers.push(ServerView {
            version: Some(n.version.clone()),
            uptime_ms: Some(n.uptime_ms),
            replica_count: Some(n.replica_count),
            primary_count: Some(n.primary_count),
            http_address: Some(n.http_address.clone()),
            ..ServerView::new("replica", n.node_id, n.address.clone(), n.status().as_str_name().to_string())
        });
    }
    Ok(ServerInfoView {
        version: info.version,
        servers,
        meta_servers: info.meta_members.into_iter().map(|m| m.address).collect(),
        replica_servers: nodes
            .into_iter()
            .map(|n| ReplicaServer { status: n.status().as_str_name().to_string(), address: n.address })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(node_id: u64, status: &str) -> NodeInfo {
        NodeInfo {
            node_id,
            address: format!("127.0.0.1:3480{node_id}"),
            status: wingkv_client::NodeStatus::from_str_name(status).map_or(-1, i32::from),
            replica_count: 8,
            primary_count: 3,
            version: "0.1.0".into(),
            uptime_ms: 3_723_000,
            ..Default::default()
        }
    }

    #[test]
    fn nodes_text_is_headed_by_the_json_names() -> Result<()> {
        let view = |detailed| NodesView { nodes: vec![node(1, "ALIVE").into(), node(2, "UNKNOWN").into()], detailed };
        assert_eq!(
            view(false).text(),
            "node_id  address          status\n1        127.0.0.1:34801  ALIVE\n2        127.0.0.1:34802  UNKNOWN"
        );
        let mut detailed = view(true);
        detailed.nodes[1].version.clear();
        detailed.nodes[1].uptime_ms = 0;
        detailed.nodes[0].drain = "draining".into();
        assert_eq!(
            detailed.text(),
            "node_id  address          status   replica_count  primary_count  drain     version  uptime\n\
             1        127.0.0.1:34801  ALIVE    8              3              draining  0.1.0    1h 2m\n\
             2        127.0.0.1:34802  UNKNOWN  8              3              -         -        -"
        );
        let json = serde_json::to_value(&detailed)?;
        assert_eq!(json["nodes"][0]["uptime_ms"], 3_723_000);
        assert!(json.get("detailed").is_none());
        Ok(())
    }

    #[test]
    fn an_unreachable_meta_has_only_what_is_known() -> Result<()> {
        let down = ServerView {
            error: Some("timeout".into()),
            ..ServerView::new("meta", 2, "127.0.0.1:34602".into(), "UNREACHABLE".into())
        };
        let json = serde_json::to_string(&down)?;
        assert_eq!(
            json,
            r#"{"server":"meta2","role":"meta","id":2,"address":"127.0.0.1:34602","status":"UNREACHABLE","error":"timeout"}"#
        );
        let view = ServerInfoView {
            version: String::new(),
            servers: vec![down],
            meta_servers: vec![],
            replica_servers: vec![],
        };
        assert!(view
            .text()
            .ends_with("meta2   127.0.0.1:34602  UNREACHABLE  -        -       -              -              -"));
        Ok(())
    }
}
