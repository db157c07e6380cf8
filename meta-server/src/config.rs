//! The meta server's configuration: one typed struct, loaded from TOML with defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A member of the meta group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPeer {
    /// Raft id of the meta server (> 0).
    pub id: u64,
    /// Its gRPC address.
    pub address: String,
}

/// Everything a meta server can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaServerConfig {
    /// This meta server's raft id (> 0).
    pub id: u64,
    /// gRPC listen address; port 0 picks a free port.
    pub listen: String,
    /// Address the other metas and the clients use; defaults to the bound address.
    pub advertise: Option<String>,
    /// HTTP address of `/metrics` and `/health`; defaults to the gRPC port + 10000 (any free
    /// port when the gRPC port is 0).
    pub http_listen: Option<String>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Every member of the meta group, this one included. Empty: a group of one. The member
    /// with the smallest id bootstraps a new group.
    pub peers: Vec<MetaPeer>,
    /// Cluster name shown by `cluster_info` and used in bulk-load paths.
    pub cluster_name: String,
    /// A replica server silent this long is dead.
    pub node_timeout_ms: u64,
    /// How long `create` waits for every partition to have a primary.
    pub create_table_timeout_ms: u64,
    /// Default reserve time of a dropped table.
    pub drop_reserve_seconds: u64,
    /// Period of the leader's reconcile loop (replica creation, repair, garbage collection).
    pub reconcile_interval_ms: u64,
    /// Raft heartbeat period of the meta group.
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout (lower bound; the upper bound is twice this).
    pub raft_election_timeout_ms: u64,
    /// Where bulk-load providers point (the meta reads `bulk_load_info` before a job starts).
    pub bulk_load_provider: wingkv_common::provider::ProviderConfig,
    /// Backoff of the bulk-load driver's calls to a partition's primary that fail transiently
    /// (Busy, throttled, unavailable): retried for as long as the job lives.
    pub bulk_load_retry: wingkv_common::backoff::BackoffPolicy,
    /// A partition of a running bulk load whose status and progress have not moved this long
    /// is shown as stalled and re-driven at once.
    pub bulk_load_stall_timeout_ms: u64,
}

impl Default for MetaServerConfig {
    fn default() -> Self {
        Self {
            id: 1,
            listen: "127.0.0.1:34601".into(),
            advertise: None,
            http_listen: None,
            data_dir: PathBuf::from("./data/meta"),
            peers: Vec::new(),
            cluster_name: "onebox".into(),
            node_timeout_ms: 10_000,
            create_table_timeout_ms: 30_000,
            drop_reserve_seconds: 7 * 24 * 3600,
            reconcile_interval_ms: 500,
            raft_heartbeat_ms: 200,
            raft_election_timeout_ms: 1_000,
            bulk_load_provider: Default::default(),
            bulk_load_retry: Default::default(),
            bulk_load_stall_timeout_ms: 60_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_peers() {
        let c: MetaServerConfig = wingkv_common::config::parse_toml(
            "id = 2\n[[peers]]\nid = 1\naddress = \"127.0.0.1:1\"\n[[peers]]\nid = 2\naddress = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.node_timeout_ms, 10_000);
    }
}
