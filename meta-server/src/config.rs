//! The meta server's configuration: one typed struct, loaded from TOML with defaults, and
//! checked by [`MetaServerConfig::validate`] before the server starts.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wingkv_common::config::{check_backoff, require, within, InvalidConfig, MAX_MS, MAX_SECS};

/// The shortest period of the leader's reconcile loop and bulk-load driver, in milliseconds.
pub const MIN_RECONCILE_INTERVAL_MS: u64 = 50;

/// Most balancer moves a config may allow at once (each holds a task and, for a replica move,
/// a partition copy).
pub const MAX_BALANCE_MOVES: usize = 64;

/// A member of the meta group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPeer {
    /// Raft id of the meta server (> 0).
    pub id: u64,
    /// `host:port` the other metas, the replica servers and the clients reach it at.
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
    /// Where the meta group's RocksDB (raft log and catalog) is kept; default `./data/meta`.
    pub data_dir: PathBuf,
    /// Every member of the meta group, this one included. Empty: a group of one. The member
    /// with the smallest id bootstraps a new group.
    pub peers: Vec<MetaPeer>,
    /// Cluster name shown by `cluster_info` and used in bulk-load paths.
    pub cluster_name: String,
    /// A replica server not heard from for this long is dead, and its replicas are replaced
    /// on other nodes; default 10 s. Keep it well above the replicas' `heartbeat_interval_ms`.
    pub node_timeout_ms: u64,
    /// How long `create` waits for every partition to have a primary (and, on a new leader, for
    /// the nodes' first heartbeats before placing replicas); default 30 s.
    pub create_table_timeout_ms: u64,
    /// How long a dropped table stays recallable, in seconds, when `drop` gives no reserve
    /// time; default 7 days. 0: it is purged at the next reconcile.
    pub drop_reserve_seconds: u64,
    /// Period of the leader's reconcile loop (replica creation, repair, garbage collection) and
    /// of its bulk-load driver; default 500 ms, at least 50 ms.
    pub reconcile_interval_ms: u64,
    /// Balancer moves (replica or primary) running at once in the cluster, at meta level
    /// `lively`; default 4. Also bounds the members added at once to partitions below their
    /// replica count.
    pub balance_max_moves: usize,
    /// Balancer moves running at once that involve one node (as source or target); default 2.
    /// A replica move copies the partition to its target: this bounds what a new node takes in
    /// at once.
    pub balance_max_moves_per_node: usize,
    /// Raft heartbeat period of the meta group; default 200 ms.
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout (lower bound; the upper bound is twice this), above
    /// `raft_heartbeat_ms`; default 1 s. A leader without a quorum's acknowledgement for this
    /// long stops acting as leader.
    pub raft_election_timeout_ms: u64,
    /// Where bulk-load providers point (the meta reads `bulk_load_info` before a job starts).
    pub bulk_load_provider: wingkv_common::provider::ProviderConfig,
    /// Backoff of the bulk-load driver's calls to a partition's primary that fail transiently
    /// (Busy, throttled, unavailable): retried for as long as the job lives.
    pub bulk_load_retry: wingkv_common::backoff::BackoffPolicy,
    /// A partition of a running bulk load whose status and progress have not moved this long
    /// is shown as stalled and re-driven at once; default 60 s.
    pub bulk_load_stall_timeout_ms: u64,
    /// Mutual TLS (`[tls]`: `ca_file`, `cert_file`, `key_file`; the certificate of a meta
    /// server, see `wingkv cert issue-server --role meta`). Unset: plaintext, nothing checked.
    pub tls: Option<wingkv_security::TlsConfig>,
    /// Serve gRPC reflection (method listing for grpcurl). Default: on without TLS, off with
    /// TLS (it shows every certified peer the whole API).
    pub grpc_reflection: Option<bool>,
    /// Users (certificate common names) allowed the control plane on a secure cluster: create,
    /// drop, recall, envs, bulk-load control. Every certified user may read (list, query).
    pub admin_users: Vec<String>,
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
            balance_max_moves: 4,
            balance_max_moves_per_node: 2,
            raft_heartbeat_ms: 200,
            raft_election_timeout_ms: 1_000,
            bulk_load_provider: Default::default(),
            bulk_load_retry: Default::default(),
            bulk_load_stall_timeout_ms: 60_000,
            tls: None,
            grpc_reflection: None,
            admin_users: Vec::new(),
        }
    }
}

impl MetaServerConfig {
    /// Checks that every value is one the server can run with, so that nothing derived from
    /// the config can panic, overflow or stall later: a zero timeout or period, a reserve time
    /// that overflows in milliseconds, an election timeout not above the heartbeat, a peer id
    /// of 0 or given twice. The error names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        within("id", self.id, 1, u64::MAX)?;
        let mut ids = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let field = format!("peers[{i}].id");
            within(&field, peer.id, 1, u64::MAX)?;
            require(ids.insert(peer.id), &field, peer.id, "an id no other peer has")?;
        }
        within("node_timeout_ms", self.node_timeout_ms, 1, MAX_MS)?;
        within("create_table_timeout_ms", self.create_table_timeout_ms, 1, MAX_MS)?;
        within("drop_reserve_seconds", self.drop_reserve_seconds, 0, MAX_SECS)?;
        within("reconcile_interval_ms", self.reconcile_interval_ms, MIN_RECONCILE_INTERVAL_MS, MAX_MS)?;
        within("balance_max_moves", self.balance_max_moves, 1, MAX_BALANCE_MOVES)?;
        within("balance_max_moves_per_node", self.balance_max_moves_per_node, 1, MAX_BALANCE_MOVES)?;
        within("raft_heartbeat_ms", self.raft_heartbeat_ms, 1, MAX_MS)?;
        require(
            self.raft_heartbeat_ms < self.raft_election_timeout_ms && self.raft_election_timeout_ms <= MAX_MS,
            "raft_election_timeout_ms",
            self.raft_election_timeout_ms,
            format!("more than raft_heartbeat_ms ({}), at most {MAX_MS}", self.raft_heartbeat_ms),
        )?;
        check_backoff("bulk_load_retry", &self.bulk_load_retry)?;
        within("bulk_load_stall_timeout_ms", self.bulk_load_stall_timeout_ms, 1, MAX_MS)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wingkv_common::backoff::BackoffPolicy;

    use super::*;

    /// The field `validate` names for `c`.
    fn rejected(c: MetaServerConfig) -> String {
        let e = c.validate().unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&e.field) && text.contains(&e.value) && text.contains(&e.allowed), "{text}");
        e.field
    }

    #[test]
    fn the_default_config_is_valid() {
        MetaServerConfig::default().validate().unwrap();
    }

    #[test]
    fn each_value_out_of_range_is_rejected_naming_its_field() {
        let d = MetaServerConfig::default;
        let peer = |id| MetaPeer { id, address: "127.0.0.1:1".into() };
        let retry = |base_ms, cap_ms| BackoffPolicy { base_ms, cap_ms };
        let cases: Vec<(MetaServerConfig, &str)> = vec![
            (MetaServerConfig { id: 0, ..d() }, "id"),
            (MetaServerConfig { peers: vec![peer(1), peer(0)], ..d() }, "peers[1].id"),
            (MetaServerConfig { peers: vec![peer(1), peer(2), peer(1)], ..d() }, "peers[2].id"),
            (MetaServerConfig { node_timeout_ms: 0, ..d() }, "node_timeout_ms"),
            (MetaServerConfig { node_timeout_ms: MAX_MS + 1, ..d() }, "node_timeout_ms"),
            (MetaServerConfig { create_table_timeout_ms: 0, ..d() }, "create_table_timeout_ms"),
            (MetaServerConfig { drop_reserve_seconds: u64::MAX, ..d() }, "drop_reserve_seconds"),
            (MetaServerConfig { reconcile_interval_ms: 49, ..d() }, "reconcile_interval_ms"),
            (MetaServerConfig { balance_max_moves: 0, ..d() }, "balance_max_moves"),
            (MetaServerConfig { balance_max_moves_per_node: 0, ..d() }, "balance_max_moves_per_node"),
            (MetaServerConfig { raft_heartbeat_ms: 0, ..d() }, "raft_heartbeat_ms"),
            (MetaServerConfig { raft_election_timeout_ms: 200, ..d() }, "raft_election_timeout_ms"),
            (MetaServerConfig { raft_election_timeout_ms: u64::MAX, ..d() }, "raft_election_timeout_ms"),
            (MetaServerConfig { bulk_load_retry: retry(0, 10), ..d() }, "bulk_load_retry.base_ms"),
            (MetaServerConfig { bulk_load_retry: retry(100, 99), ..d() }, "bulk_load_retry.cap_ms"),
            (MetaServerConfig { bulk_load_retry: retry(100, MAX_MS + 1), ..d() }, "bulk_load_retry.cap_ms"),
            (MetaServerConfig { bulk_load_stall_timeout_ms: 0, ..d() }, "bulk_load_stall_timeout_ms"),
        ];
        for (config, field) in cases {
            assert_eq!(rejected(config), field);
        }
    }

    #[test]
    fn the_error_says_what_is_allowed() {
        let e = MetaServerConfig { reconcile_interval_ms: 10, ..Default::default() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "invalid config: reconcile_interval_ms = 10; allowed: 50 to 86400000");
    }

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
