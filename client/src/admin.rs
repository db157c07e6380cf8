//! [`Admin`]: typed administrative calls on the meta servers — tables, envs, nodes and bulk
//! loads — with the same leader following and retries as the data path's routing lookups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wingkv_common::meta_client::LONG_META_CALL;
use wingkv_common::WingError;
use wingkv_proto::meta::{
    BulkLoadControl, BulkLoadStatusResponse, ClusterInfoRequest, ClusterInfoResponse, ControlBulkLoadRequest,
    CreateTableRequest, DecommissionRequest, DelTableEnvsRequest, DropTableRequest, DropTableResponse,
    GetMetaLevelRequest, GetReplicaCountRequest, GetTableEnvsRequest, ListNodesRequest, ListTablesRequest, NodeInfo,
    ProposeRequest, ProposeResponse, QueryBulkLoadRequest, RecallTableRequest, ReplicaCountResponse, ServerInfoRequest,
    ServerInfoResponse, SetMetaLevelRequest, SetReplicaCountRequest, SetTableEnvsRequest, StartBulkLoadRequest,
    TableConfiguration, TableSummary,
};

use crate::connection::{ClientConfig, ClientInner};

/// How to create a table: unset counts take the meta's defaults (4 partitions, 3 replicas).
#[derive(Debug, Clone, Default)]
pub struct CreateTableOptions {
    /// Partition count: a power of two in `1..=65536`.
    pub partition_count: Option<u32>,
    /// Replicas per partition, `1..=5`.
    pub replica_count: Option<u32>,
    /// Table envs set at creation (e.g. `rocksdb.allow_ingest_behind=true`).
    pub envs: BTreeMap<String, String>,
}

/// Where a bulk load reads its files: `provider://root/cluster/table` in the layout that
/// `wingkv bulkgen` writes.
#[derive(Debug, Clone)]
pub struct BulkLoadSource {
    /// Provider name known to the meta and replica servers (`local`, `s3`).
    pub provider: String,
    /// Root directory (or bucket prefix) on the provider.
    pub root: String,
    /// Cluster name in the layout (a onebox's is `onebox`).
    pub cluster: String,
}

/// Administrative operations on a cluster, through its meta servers.
///
/// Reached as [`Client::admin`](crate::Client::admin) (sharing the client's connections), or
/// built with [`Admin::new`] without a data client. Every call follows the meta leader: a
/// follower's `NotLeader` answer is followed to the leader, and unavailable or silent metas are
/// retried on the next one with backoff, all within the configured request timeout. Errors are
/// the SDK's [`Error`](crate::Error); those the meta answers itself (`TableNotFound`,
/// `InvalidArgument`, `AlreadyExists`, `InvalidState`, ...) are returned at once. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<ClientInner>,
}

impl Admin {
    /// An admin client of the metas in `config`. Unlike [`Client::with_config`](crate::Client::with_config)
    /// it does not wait for a meta to answer: a caller polling a cluster that is still starting
    /// uses it before any meta is up. Fails only on an empty address list.
    pub fn new(config: ClientConfig) -> Result<Self, WingError> {
        Ok(Self { inner: Arc::new(ClientInner::new(config)?) })
    }

    pub(crate) fn from_inner(inner: Arc<ClientInner>) -> Self {
        Self { inner }
    }

    /// The cluster's summary: name, meta leader and members, node and table counts, version.
    pub async fn cluster_info(&self) -> Result<ClusterInfoResponse, WingError> {
        self.inner.meta.call(|mut c| async move { c.cluster_info(ClusterInfoRequest {}).await }).await
    }

    /// Sets what the meta does by itself: `freezed` (nothing), `steady` (repairs; the
    /// default) or `lively` (repairs and balancing). Answers the level in force.
    pub async fn set_meta_level(&self, level: &str) -> Result<String, WingError> {
        let level = level.to_string();
        let r = self
            .inner
            .meta
            .call(|mut c| {
                let level = level.clone();
                async move { c.set_meta_level(SetMetaLevelRequest { level }).await }
            })
            .await?;
        Ok(r.level)
    }

    /// Moves one replica (`move_replica`: a new one on node `to`, then node `from`'s leaves) or
    /// the primary (`move_primary`: to the member on node `to`) of partition `partition_index`
    /// of `table`; answers the partition's members and primary after the move.
    pub async fn propose(
        &self,
        table: &str,
        partition_index: u32,
        action: &str,
        from: u64,
        to: u64,
    ) -> Result<ProposeResponse, WingError> {
        let req = ProposeRequest { table: table.into(), partition_index, action: action.into(), from, to };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.propose(req).await }
            })
            .await
    }

    /// Starts draining replica server `node_id` (or stops, with `recommission`): it gets no
    /// new replica, and its primaries then its replicas move away. Answers the node as
    /// [`Self::list_nodes`] shows it: its `drain` is `drained` once it holds nothing.
    pub async fn decommission(&self, node_id: u64, recommission: bool) -> Result<NodeInfo, WingError> {
        self.inner
            .meta
            .call(|mut c| async move { c.decommission(DecommissionRequest { node_id, recommission }).await })
            .await
    }

    /// Changes how many replicas each partition of `table` keeps (1..=5); the meta then adds
    /// or removes members (at meta level `steady` or `lively`). Answers the count and how many
    /// partitions have it already; [`Self::get_replica_count`] follows the change.
    pub async fn set_replica_count(&self, table: &str, replica_count: u32) -> Result<ReplicaCountResponse, WingError> {
        let req = SetReplicaCountRequest { table: table.into(), replica_count };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.set_replica_count(req).await }
            })
            .await
    }

    /// `table`'s replica count and its partitions' member counts now.
    pub async fn get_replica_count(&self, table: &str) -> Result<ReplicaCountResponse, WingError> {
        let req = GetReplicaCountRequest { table: table.into() };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.get_replica_count(req).await }
            })
            .await
    }

    /// The meta level (see [`Self::set_meta_level`]).
    pub async fn get_meta_level(&self) -> Result<String, WingError> {
        let r = self.inner.meta.call(|mut c| async move { c.get_meta_level(GetMetaLevelRequest {}).await }).await?;
        Ok(r.level)
    }

    /// The cluster's summary as the meta at `meta_addr` answers it: one attempt, without leader
    /// following, so it succeeds only on a leader with a quorum (`NotLeader` otherwise). For
    /// tools that watch one meta through an election.
    pub async fn cluster_info_at(&self, meta_addr: &str, timeout: Duration) -> Result<ClusterInfoResponse, WingError> {
        self.inner
            .meta
            .call_at(meta_addr, timeout, |mut c| async move { c.cluster_info(ClusterInfoRequest {}).await })
            .await
    }

    /// About the meta server at `meta_addr` itself (leader or not): its role in the meta
    /// group, version and uptime. One attempt, without leader following: fails with `Timeout`
    /// when that meta does not answer within `timeout`, or `Unavailable` when it cannot be
    /// reached.
    pub async fn server_info(&self, meta_addr: &str, timeout: Duration) -> Result<ServerInfoResponse, WingError> {
        self.inner
            .meta
            .call_at(meta_addr, timeout, |mut c| async move { c.server_info(ServerInfoRequest {}).await })
            .await
    }

    /// The replica servers the meta knows, with their liveness and replica/primary counts.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, WingError> {
        let r = self.inner.meta.call(|mut c| async move { c.list_nodes(ListNodesRequest {}).await }).await?;
        Ok(r.nodes)
    }

    /// The live tables, and with `include_dropped` also the dropped ones that can still be
    /// recalled.
    pub async fn list_tables(&self, include_dropped: bool) -> Result<Vec<TableSummary>, WingError> {
        let r = self
            .inner
            .meta
            .call(|mut c| async move { c.list_tables(ListTablesRequest { include_dropped }).await })
            .await?;
        Ok(r.tables)
    }

    /// The configuration of the live table `name`: its partitions' members and primaries.
    /// Fails with `TableNotFound` when there is no such table (a dropped one included).
    pub async fn query_table(&self, name: &str) -> Result<TableConfiguration, WingError> {
        self.inner.query_table(name).await
    }

    /// Creates the table `name` and answers once every partition has a primary. Fails with
    /// `AlreadyExists` when the name is taken and `InvalidArgument` on a bad name or counts.
    /// The meta may take long to answer (it waits for the primaries), so each attempt may last
    /// up to 40 s.
    pub async fn create_table(&self, name: &str, options: CreateTableOptions) -> Result<TableConfiguration, WingError> {
        let req = CreateTableRequest {
            name: name.to_string(),
            partition_count: options.partition_count,
            replica_count: options.replica_count,
            envs: options.envs,
        };
        self.inner
            .meta
            .call_long(LONG_META_CALL, |mut c| {
                let req = req.clone();
                async move { c.create_table(req).await }
            })
            .await
    }

    /// Drops the table `name`: it stops serving at once and can be recalled for
    /// `reserve_seconds` (`None`: the meta's default), after which it is gone for good. Answers
    /// its app id and the Unix time (ms) it expires. Fails with `TableNotFound`.
    pub async fn drop_table(&self, name: &str, reserve_seconds: Option<u64>) -> Result<DropTableResponse, WingError> {
        let req = DropTableRequest { name: name.to_string(), reserve_seconds: reserve_seconds.unwrap_or(0) };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.drop_table(req).await }
            })
            .await
    }

    /// Brings the dropped table `app_id` back, under `new_name` or its old name. Fails with
    /// `TableNotFound` when no recallable table has that id, and `AlreadyExists` when the name
    /// is taken.
    pub async fn recall_table(&self, app_id: u32, new_name: Option<&str>) -> Result<TableConfiguration, WingError> {
        let req = RecallTableRequest { app_id, new_name: new_name.unwrap_or_default().to_string() };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.recall_table(req).await }
            })
            .await
    }

    /// The envs of table `table`. Fails with `TableNotFound`.
    pub async fn get_envs(&self, table: &str) -> Result<BTreeMap<String, String>, WingError> {
        let req = GetTableEnvsRequest { name: table.to_string() };
        let r = self
            .inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.get_table_envs(req).await }
            })
            .await?;
        Ok(r.envs)
    }

    /// Sets `envs` on table `table` (other envs are kept) and answers all its envs after the
    /// change. Replicas apply them within a heartbeat. Fails with `InvalidArgument` on no envs
    /// or a value the meta refuses (e.g. a malformed throttling spec), and `TableNotFound`.
    pub async fn set_envs(
        &self,
        table: &str,
        envs: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Result<BTreeMap<String, String>, WingError> {
        let req = SetTableEnvsRequest {
            name: table.to_string(),
            envs: envs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        };
        let r = self
            .inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.set_table_envs(req).await }
            })
            .await?;
        Ok(r.envs)
    }

    /// Deletes the envs `keys` of table `table` (absent keys are ignored) and answers the envs
    /// left. Fails with `TableNotFound`.
    pub async fn del_envs(
        &self,
        table: &str,
        keys: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<BTreeMap<String, String>, WingError> {
        let req = DelTableEnvsRequest { name: table.to_string(), keys: keys.into_iter().map(Into::into).collect() };
        let r = self
            .inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.del_table_envs(req).await }
            })
            .await?;
        Ok(r.envs)
    }

    /// Deletes every env of table `table`; answers the envs left (none, unless another client
    /// set one meanwhile: the meta has no single call for this, so it is a read, then a delete
    /// of the keys read). Fails with `TableNotFound`.
    pub async fn clear_envs(&self, table: &str) -> Result<BTreeMap<String, String>, WingError> {
        let envs = self.get_envs(table).await?;
        if envs.is_empty() {
            return Ok(envs);
        }
        self.del_envs(table, envs.into_keys()).await
    }

    /// Starts a bulk load of table `table` from the SST files at `source`; with
    /// `ingest_behind` the files go below the existing data (the table needs the env
    /// `rocksdb.allow_ingest_behind=true`). Answers the new job's status. Fails with
    /// `InvalidArgument` when the source is missing or does not match the table (partition
    /// count, provider), and `InvalidState` when the table already has a job. Each attempt may
    /// last up to 40 s (the meta reads the provider).
    pub async fn start_bulk_load(
        &self,
        table: &str,
        source: &BulkLoadSource,
        ingest_behind: bool,
    ) -> Result<BulkLoadStatusResponse, WingError> {
        let req = StartBulkLoadRequest {
            app_name: table.to_string(),
            cluster: source.cluster.clone(),
            provider: source.provider.clone(),
            root: source.root.clone(),
            ingest_behind,
        };
        self.inner
            .meta
            .call_long(LONG_META_CALL, |mut c| {
                let req = req.clone();
                async move { c.start_bulk_load(req).await }
            })
            .await
    }

    /// The bulk load of table `table`: status `BLS_INVALID` (and job 0) when it has none.
    /// `partition` narrows the answer to one partition; `detailed` adds each replica's download
    /// progress. Fails with `TableNotFound`.
    pub async fn bulk_load_status(
        &self,
        table: &str,
        partition: Option<u32>,
        detailed: bool,
    ) -> Result<BulkLoadStatusResponse, WingError> {
        let req = QueryBulkLoadRequest { app_name: table.to_string(), partition_index: partition, detailed };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.query_bulk_load_status(req).await }
            })
            .await
    }

    /// Pauses the downloading bulk load of `table`. Fails with `InvalidState` from any other
    /// status.
    pub async fn pause_bulk_load(&self, table: &str) -> Result<BulkLoadStatusResponse, WingError> {
        self.control_bulk_load(table, BulkLoadControl::BlcPause).await
    }

    /// Resumes the paused (or pausing) bulk load of `table`. Fails with `InvalidState` from any
    /// other status.
    pub async fn restart_bulk_load(&self, table: &str) -> Result<BulkLoadStatusResponse, WingError> {
        self.control_bulk_load(table, BulkLoadControl::BlcRestart).await
    }

    /// Cancels the bulk load of `table`. Without `forced` only a downloading or paused job can
    /// be canceled; `forced` cancels from any live status (ingesting included). Fails with
    /// `InvalidState` otherwise.
    pub async fn cancel_bulk_load(&self, table: &str, forced: bool) -> Result<BulkLoadStatusResponse, WingError> {
        let action = if forced { BulkLoadControl::BlcForceCancel } else { BulkLoadControl::BlcCancel };
        self.control_bulk_load(table, action).await
    }

    /// Removes the record of the finished (succeeded, failed or canceled) bulk load of `table`,
    /// so a new one can start. Fails with `InvalidState` while the job is live or when the
    /// table has none.
    pub async fn clear_bulk_load(&self, table: &str) -> Result<BulkLoadStatusResponse, WingError> {
        self.control_bulk_load(table, BulkLoadControl::BlcClear).await
    }

    async fn control_bulk_load(
        &self,
        table: &str,
        action: BulkLoadControl,
    ) -> Result<BulkLoadStatusResponse, WingError> {
        let req = ControlBulkLoadRequest { app_name: table.to_string(), action: action as i32 };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.control_bulk_load(req).await }
            })
            .await
    }
}
