//! A meta-managed cluster for tests: metas, replica servers, and a routed data client that
//! finds each key's primary through the meta (the SDK's job, kept minimal here).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use wingkv_common::channel::ChannelPool;
use wingkv_common::hash::partition_index;
use wingkv_common::meta_client::MetaClient;
use wingkv_common::{ErrorCode, WingError};
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::{GetRequest, SetRequest};
use wingkv_proto::meta::{ListNodesRequest, NodeStatus, QueryTableRequest, TableConfiguration};

use crate::{channel, free_port, wait_for, MetaProcess, ReplicaProcess};
use wingkv_proto::meta::{CreateTableRequest, ListTablesRequest, ListTablesResponse};

/// A leader-following meta client for `addrs`.
pub fn meta_client(addrs: &[String]) -> Result<MetaClient> {
    Ok(MetaClient::new(addrs.to_vec(), ChannelPool::default())?)
}

/// The configuration of `table`.
pub async fn query(meta: &MetaClient, table: &str) -> Result<TableConfiguration, WingError> {
    let req = QueryTableRequest { name: table.to_string() };
    meta.call(|mut c| {
        let req = req.clone();
        async move { c.query_table(req).await }
    })
    .await
}

/// Alive node ids, per the meta.
pub async fn alive_nodes(meta: &MetaClient) -> Result<BTreeSet<u64>, WingError> {
    let nodes = meta.call(|mut c| async move { c.list_nodes(ListNodesRequest {}).await }).await?;
    Ok(nodes.nodes.into_iter().filter(|n| n.status() == NodeStatus::Alive).map(|n| n.node_id).collect())
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

/// Writes and reads records of one table, routing by the partition hash and retrying
/// NotLeader/Unavailable (refreshing the configuration) until `timeout`.
pub struct RoutedTable<'a> {
    meta: &'a MetaClient,
    name: String,
    /// Deadline of one operation.
    pub timeout: Duration,
}

impl<'a> RoutedTable<'a> {
    /// A client of `name`.
    pub fn new(meta: &'a MetaClient, name: &str) -> Self {
        Self { meta, name: name.to_string(), timeout: Duration::from_secs(30) }
    }

    async fn primary(&self, hk: &[u8], sk: &[u8]) -> Result<(u32, u32, String), WingError> {
        let cfg = query(self.meta, &self.name).await?;
        let pidx = partition_index(hk, sk, cfg.partition_count);
        let primary = cfg
            .partitions
            .get(pidx as usize)
            .and_then(|p| p.primary.clone())
            .ok_or_else(|| WingError::Unavailable(format!("partition {}.{pidx} has no primary", cfg.app_id)))?;
        Ok((cfg.app_id, pidx, primary.address))
    }

    async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, WingError>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let last = match f().await {
                Ok(v) => return Ok(v),
                // NotFound: a replica not (yet) hosted where the stale configuration pointed.
                Err(e) if e.code().is_retryable() || e.code() == ErrorCode::NotFound => e.to_string(),
                // A replica learns a recall from its next heartbeat: the meta decides.
                Err(e) if e.code() == ErrorCode::TableDropped => {
                    if query(self.meta, &self.name).await.is_err() {
                        return Err(anyhow!("{what}: {e}"));
                    }
                    e.to_string()
                }
                Err(e) => return Err(anyhow!("{what}: {e}")),
            };
            if Instant::now() >= deadline {
                bail!("{what}: not done within {:?}: {last}", self.timeout);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets `hk/sk = value`.
    pub async fn set(&self, hk: &str, sk: &str, value: &[u8]) -> Result<()> {
        let value = Bytes::copy_from_slice(value);
        self.retry(&format!("set {hk}/{sk}"), || {
            let value = value.clone();
            async move {
                let (app_id, pidx, addr) = self.primary(hk.as_bytes(), sk.as_bytes()).await?;
                let mut c = DataClient::new(channel(&addr).map_err(|e| WingError::Unavailable(e.to_string()))?);
                let req = SetRequest {
                    partition: Some(wingkv_common::PartitionId::new(app_id, pidx).to_proto()),
                    hash_key: Bytes::copy_from_slice(hk.as_bytes()),
                    sort_key: Bytes::copy_from_slice(sk.as_bytes()),
                    value,
                    ttl_seconds: 0,
                };
                c.set(req).await.map(|_| ()).map_err(|s| WingError::from_status(&s))
            }
        })
        .await
    }

    /// Reads `hk/sk`.
    pub async fn get(&self, hk: &str, sk: &str) -> Result<Option<Bytes>> {
        self.retry(&format!("get {hk}/{sk}"), || async move {
            let (app_id, pidx, addr) = self.primary(hk.as_bytes(), sk.as_bytes()).await?;
            let mut c = DataClient::new(channel(&addr).map_err(|e| WingError::Unavailable(e.to_string()))?);
            let req = GetRequest {
                partition: Some(wingkv_common::PartitionId::new(app_id, pidx).to_proto()),
                hash_key: Bytes::copy_from_slice(hk.as_bytes()),
                sort_key: Bytes::copy_from_slice(sk.as_bytes()),
            };
            let r = c.get(req).await.map_err(|s| WingError::from_status(&s))?.into_inner();
            Ok(r.found.then_some(r.value))
        })
        .await
    }
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
    /// A client of the metas.
    pub meta: MetaClient,
}

impl Cluster {
    /// Starts `metas` metas and `replicas` replica servers; returns once all are alive.
    pub async fn start(metas: usize, replicas: usize) -> Result<Self> {
        Self::start_with(metas, replicas, "").await
    }

    /// Like [`start`](Self::start), appending `replica_config` (TOML) to every replica
    /// server's config.
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
                    &format!("{REPLICA_CONFIG}{replica_config}"),
                )
                .await?,
            );
        }
        let meta = meta_client(&addrs)?;
        let c = Self { _tmp: tmp, metas: meta_procs, replicas: replica_procs, meta };
        wait_for("every replica server alive", Duration::from_secs(30), || async {
            (alive_nodes(&c.meta).await.ok()?.len() == replicas).then_some(())
        })
        .await?;
        Ok(c)
    }

    /// Creates a table.
    pub async fn create(&self, name: &str, partitions: u32, replicas: u32) -> Result<TableConfiguration, WingError> {
        let req = CreateTableRequest {
            name: name.into(),
            partition_count: Some(partitions),
            replica_count: Some(replicas),
            envs: Default::default(),
        };
        self.meta
            .call_long(wingkv_common::meta_client::LONG_META_CALL, |mut c| {
                let req = req.clone();
                async move { c.create_table(req).await }
            })
            .await
    }

    /// Lists the live tables.
    pub async fn list(&self) -> Result<ListTablesResponse, WingError> {
        self.meta.call(|mut c| async move { c.list_tables(ListTablesRequest { include_dropped: false }).await }).await
    }

    /// The meta addresses.
    pub fn meta_addrs(&self) -> Vec<String> {
        self.metas.iter().map(|m| m.addr.clone()).collect()
    }
}
