//! A meta-managed cluster for tests: metas, replica servers, and the SDK's admin and data
//! clients of it.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use wingkv_client::{
    Admin, Client, ClientConfig, CreateTableOptions, NodeStatus, Table, TableConfiguration, TableSummary,
};
use wingkv_common::WingError;

use crate::{free_port, wait_for, MetaProcess, ReplicaProcess};

/// The admin client of the tests: leader-following, 10 s per call (retries included), so a
/// `wait_for` around it keeps its own deadline.
pub fn admin_client(addrs: &[String]) -> Result<Admin> {
    let mut config = ClientConfig::new(addrs.to_vec());
    config.request_timeout = Duration::from_secs(10);
    Ok(Admin::new(config)?)
}

/// Alive node ids, per the meta.
pub async fn alive_nodes(admin: &Admin) -> Result<BTreeSet<u64>, WingError> {
    let nodes = admin.list_nodes().await?;
    Ok(nodes.into_iter().filter(|n| n.status() == NodeStatus::Alive).map(|n| n.node_id).collect())
}

/// Whether every partition of `cfg` has a primary and `replica_count` distinct members, all in
/// `alive`.
pub fn fully_healthy(cfg: &TableConfiguration, alive: &BTreeSet<u64>) -> bool {
    cfg.partitions.iter().all(|p| {
        let members: BTreeSet<u64> = p.members.iter().map(|m| m.node_id).collect();
        members.len() == cfg.replica_count as usize
            && members.iter().all(|m| alive.contains(m))
            && p.primary.as_ref().is_some_and(|pr| members.contains(&pr.node_id))
    })
}

/// Config of the test metas: short, so repairs start quickly.
pub const META_CONFIG: &str =
    "node_timeout_ms = 3000\nreconcile_interval_ms = 200\nraft_heartbeat_ms = 100\nraft_election_timeout_ms = 500\n";
pub const REPLICA_CONFIG: &str =
    "[raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n";

/// Metas and meta-managed replica servers in a temp dir, with a leader-following meta client.
pub struct Cluster {
    _tmp: tempfile::TempDir,
    /// The meta servers.
    pub metas: Vec<MetaProcess>,
    /// The replica servers.
    pub replicas: Vec<ReplicaProcess>,
    /// An admin client of the metas (see [`admin_client`]).
    pub admin: Admin,
    /// An SDK client whose requests retry for up to 30 s, long enough to ride out a failover.
    pub client: Client,
}

impl Cluster {
    /// Starts `metas` metas and `replicas` replica servers; returns once all are alive.
    pub async fn start(metas: usize, replicas: usize) -> Result<Self> {
        Self::start_with(metas, replicas, "").await
    }

    /// Like [`start`](Self::start), with `replica_config` (TOML: top-level keys and tables
    /// other than `[raft]`) in every replica server's config.
    pub async fn start_with(metas: usize, replicas: usize, replica_config: &str) -> Result<Self> {
        let mut tmp = tempfile::tempdir()?;
        // For a post-mortem: WINGKV_KEEP_TEST_DIR=1 keeps the servers' data and logs.
        if std::env::var_os("WINGKV_KEEP_TEST_DIR").is_some() {
            tmp.disable_cleanup(true);
            eprintln!("cluster data and logs kept in {}", tmp.path().display());
        }
        let ports: Vec<u16> = (0..metas).map(|_| free_port()).collect::<Result<_>>()?;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers: String =
            addrs.iter().enumerate().map(|(i, a)| format!("[[peers]]\nid = {}\naddress = \"{a}\"\n", i + 1)).collect();
        let mut meta_procs = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let extra = if metas > 1 { format!("{META_CONFIG}{peers}") } else { META_CONFIG.to_string() };
            meta_procs.push(
                MetaProcess::start_meta(i as u64 + 1, &tmp.path().join(format!("meta{}", i + 1)), a, &extra).await?,
            );
        }
        let mut replica_procs = Vec::new();
        for i in 0..replicas {
            replica_procs.push(
                ReplicaProcess::start_with_meta(
                    &tmp.path().join(format!("replica{}", i + 1)),
                    &addrs,
                    // First, so it may set top-level keys; it must not open a `[raft]` table.
                    &format!("{replica_config}\n{REPLICA_CONFIG}"),
                )
                .await?,
            );
        }
        let admin = admin_client(&addrs)?;
        let mut config = ClientConfig::new(addrs.clone());
        config.request_timeout = Duration::from_secs(30);
        let client = Client::with_config(config).await?;
        let c = Self { _tmp: tmp, metas: meta_procs, replicas: replica_procs, admin, client };
        wait_for("every replica server alive", Duration::from_secs(30), || async {
            (alive_nodes(&c.admin).await.ok()?.len() == replicas).then_some(())
        })
        .await?;
        Ok(c)
    }

    /// Creates a table.
    pub async fn create(&self, name: &str, partitions: u32, replicas: u32) -> Result<TableConfiguration, WingError> {
        let options = CreateTableOptions {
            partition_count: Some(partitions),
            replica_count: Some(replicas),
            ..Default::default()
        };
        self.admin.create_table(name, options).await
    }

    /// Lists the live tables.
    pub async fn list(&self) -> Result<Vec<TableSummary>, WingError> {
        self.admin.list_tables(false).await
    }

    /// The SDK's handle of `name`, routed and retried by the SDK.
    pub async fn table(&self, name: &str) -> Result<Table, WingError> {
        self.client.open_table(name).await
    }

    /// The meta addresses.
    pub fn meta_addrs(&self) -> Vec<String> {
        self.metas.iter().map(|m| m.addr.clone()).collect()
    }
}
