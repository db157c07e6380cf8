//! [`Admin`]: typed administrative calls on the meta servers — tables, envs, nodes, bulk
//! loads, cold backups, restores and backup policies — with the same leader following and
//! retries as the data path's routing lookups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wingkv_common::meta_client::LONG_META_CALL;
use wingkv_common::WingError;
use wingkv_proto::meta::{
    AddBackupPolicyRequest, BackupPolicy, BackupStatusResponse, BulkLoadControl, BulkLoadStatusResponse,
    CancelBackupRequest, ClusterInfoRequest, ClusterInfoResponse, ControlBulkLoadRequest, CreateTableRequest,
    DecommissionRequest, DelTableEnvsRequest, DropTableRequest, DropTableResponse, GetMetaLevelRequest,
    GetReplicaCountRequest, GetTableEnvsRequest, ListBackupPoliciesRequest, ListNodesRequest, ListTablesRequest,
    ModifyBackupPolicyRequest, NodeInfo, ProposeRequest, ProposeResponse, QueryBackupStatusRequest,
    QueryBulkLoadRequest, QueryRestoreStatusRequest, RecallTableRequest, ReplicaCountResponse, RestoreAppRequest,
    RestoreStatusResponse, ServerInfoRequest, ServerInfoResponse, SetMetaLevelRequest, SetReplicaCountRequest,
    SetTableEnvsRequest, StartBackupRequest, StartBulkLoadRequest, TableConfiguration, TableSummary,
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
/// `wingkv bulkgen` writes. [`Admin::restore_app`] takes one too, naming where a cold backup
/// was written: `provider://root/cluster/table/backup/backup_id`.
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

    /// Starts a cold backup of the live table `table` to `provider` under `root`: every
    /// partition's primary exports its data at one log index into
    /// `root/cluster/table/backup/backup_id/`, and the meta writes `backup_info` there last.
    /// Answers at once with the new backup (its id, status `BK_RUNNING`, location);
    /// [`Self::backup_status`] follows it. Fails with `TableNotFound`, `InvalidState` when a
    /// backup of the table is already running (or the table is being restored), and when the
    /// meta cannot list `root` on the provider. Each attempt may last up to 40 s (the meta
    /// checks the provider).
    pub async fn start_backup(
        &self,
        table: &str,
        provider: &str,
        root: &str,
    ) -> Result<BackupStatusResponse, WingError> {
        let req =
            StartBackupRequest { app_name: table.to_string(), provider: provider.to_string(), root: root.to_string() };
        self.inner
            .meta
            .call_long(LONG_META_CALL, |mut c| {
                let req = req.clone();
                async move { c.start_backup(req).await }
            })
            .await
    }

    /// The backups of table `table` (live or dropped: its backups outlive it), newest first, or
    /// only backup `backup_id`. With `detailed` each carries its partitions' progress (log
    /// index, bytes uploaded, node, retries). A table without backups answers an empty list;
    /// `backup_id` that is not one of them fails with `NotFound`.
    pub async fn backup_status(
        &self,
        table: &str,
        backup_id: Option<u64>,
        detailed: bool,
    ) -> Result<Vec<BackupStatusResponse>, WingError> {
        let req = QueryBackupStatusRequest { app_name: table.to_string(), backup_id, detailed };
        let r = self
            .inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.query_backup_status(req).await }
            })
            .await?;
        Ok(r.backups)
    }

    /// Cancels the running backup `backup_id` of table `table`; its files are removed from the
    /// provider. Answers the backup after the cancel (status `BK_CANCELED`). Fails with
    /// `NotFound` when there is no such backup and `InvalidState` when it is over already.
    pub async fn cancel_backup(&self, table: &str, backup_id: u64) -> Result<BackupStatusResponse, WingError> {
        let req = CancelBackupRequest { app_name: table.to_string(), backup_id };
        self.inner
            .meta
            .call_long(LONG_META_CALL, |mut c| {
                let req = req.clone();
                async move { c.cancel_backup(req).await }
            })
            .await
    }

    /// Creates the table `new_name` from backup `backup_id` of table `old_name`, as written in
    /// `source` (its `cluster` is the cluster the backup was taken in). The new table has the
    /// backup's partition count and `replica_count` replicas per partition (`None`: the
    /// backup's count); its replicas download, verify and ingest the backup's files, and it
    /// refuses data requests until every partition is restored. Answers once the table is
    /// created (status `RS_RUNNING`); [`Self::restore_status`] follows it. Fails with
    /// `AlreadyExists` when `new_name` is taken and `InvalidArgument` when the backup is missing
    /// or incomplete. Each attempt may last up to 40 s (the meta reads the provider and waits
    /// for the new table's primaries).
    pub async fn restore_app(
        &self,
        source: &BulkLoadSource,
        old_name: &str,
        backup_id: u64,
        new_name: &str,
        replica_count: Option<u32>,
    ) -> Result<RestoreStatusResponse, WingError> {
        let req = RestoreAppRequest {
            cluster: source.cluster.clone(),
            old_app_name: old_name.to_string(),
            backup_id,
            new_app_name: new_name.to_string(),
            provider: source.provider.clone(),
            root: source.root.clone(),
            replica_count,
        };
        self.inner
            .meta
            .call_long(LONG_META_CALL, |mut c| {
                let req = req.clone();
                async move { c.restore_app(req).await }
            })
            .await
    }

    /// The restore that created table `table`: its status (`RS_*`), source and, in `load`, the
    /// bulk load that moves the backup's files in; `detailed` adds each replica's download
    /// progress there. Fails when no table of that name was created by a restore.
    pub async fn restore_status(&self, table: &str, detailed: bool) -> Result<RestoreStatusResponse, WingError> {
        let req = QueryRestoreStatusRequest { app_name: table.to_string(), detailed };
        self.inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.query_restore_status(req).await }
            })
            .await
    }

    /// Adds the backup policy `policy`: its tables (`app_ids`) are backed up to its provider
    /// and root at `start_time` ("HH:MM", UTC) and every `interval_seconds` after, keeping the
    /// latest `backup_history_count` backups of each. Its last/next start times and `backups`
    /// are the meta's to set. Answers the policy as stored. Fails with `AlreadyExists` when the
    /// name is taken, `TableNotFound` when an app id is not a live table, and
    /// `InvalidArgument` on a bad field (an interval below the meta's minimum, a count of 0, a
    /// start time not `HH:MM`). Each attempt may last up to 40 s (the meta checks the
    /// provider).
    pub async fn add_backup_policy(&self, policy: BackupPolicy) -> Result<BackupPolicy, WingError> {
        let req = AddBackupPolicyRequest { policy: Some(policy) };
        self.inner
            .meta
            .call_long(LONG_META_CALL, |mut c| {
                let req = req.clone();
                async move { c.add_backup_policy(req).await }
            })
            .await
    }

    /// The backup policies named in `names` (every policy when empty), each with its backups
    /// (newest first) when `with_backups`. Fails with `NotFound` when a name is not a policy's.
    pub async fn list_backup_policies(
        &self,
        names: &[String],
        with_backups: bool,
    ) -> Result<Vec<BackupPolicy>, WingError> {
        let req = ListBackupPoliciesRequest { names: names.to_vec(), with_backups };
        let r = self
            .inner
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.list_backup_policies(req).await }
            })
            .await?;
        Ok(r.policies)
    }

    /// Changes the backup policy `change.name`: adds and removes tables, and sets each field
    /// that is `Some` (interval, start time, history count, enabled); the rest is kept.
    /// Answers the policy after the change. Fails with `NotFound` when no policy has that name,
    /// `TableNotFound` when an added app id is not a live table, and `InvalidArgument` on a
    /// field the meta refuses (as [`Self::add_backup_policy`]).
    pub async fn modify_backup_policy(&self, change: ModifyBackupPolicyRequest) -> Result<BackupPolicy, WingError> {
        self.inner
            .meta
            .call(|mut c| {
                let req = change.clone();
                async move { c.modify_backup_policy(req).await }
            })
            .await
    }
}
