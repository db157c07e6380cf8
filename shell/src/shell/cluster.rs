//! The cluster commands: `cluster_info`, `nodes`, `server_info`.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use wingkv_client::{Admin, NodeInfo};

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
            ],
        )
    }
}

/// Runs `cluster_info`.
pub async fn cluster_info(admin: &Admin) -> Result<ClusterInfoView> {
    let i = admin.cluster_info().await?;
    Ok(ClusterInfoView {
        cluster_name: i.cluster_name,
        meta_leader: i.meta_leader,
        meta_servers: i.meta_members.into_iter().map(|m| m.address).collect(),
        meta_term: i.meta_term,
        alive_nodes: i.alive_nodes,
        dead_nodes: i.dead_nodes,
        table_count: i.table_count,
        version: i.version,
    })
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
        const DETAILED: [Col<NodeView>; 4] =
            [Col::plain("replica_count"), Col::plain("primary_count"), Col::dash("version"), Col::uptime("uptime_ms")];
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
        assert_eq!(
            detailed.text(),
            "node_id  address          status   replica_count  primary_count  version  uptime\n\
             1        127.0.0.1:34801  ALIVE    8              3              0.1.0    1h 2m\n\
             2        127.0.0.1:34802  UNKNOWN  8              3              -        -"
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
