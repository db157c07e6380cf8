//! The meta gRPC service and the meta group's raft transport.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use wingkv_common::naming::{
    validate_partition_count, validate_replica_count, validate_table_name, DEFAULT_PARTITION_COUNT,
    DEFAULT_REPLICA_COUNT,
};
use wingkv_common::raft::network::{serve_raft_message, RaftGroups, RaftMethod};
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::meta::meta_server::Meta;
use wingkv_proto::meta::*;

use crate::bulk_load::{BulkLoadControlAction, BulkLoadJob, BulkLoadStatus};
use crate::catalog::{AppState, Catalog, MetaCommand, MetaValue};
use crate::heartbeat::decide;
use crate::liveness::{NodeFacts, NodeState};
use crate::node::{now_ms, MetaNode, META_GROUP};
use crate::placement;
use crate::reconcile::{bootstrap_app_replicas, wait_primaries};
use object_store::ObjectStore;
use wingkv_common::bulk_load::{table_dir, BulkLoadInfo, BULK_LOAD_INFO};
use wingkv_common::provider::open_provider;

/// Serves the meta API.
pub struct MetaService {
    node: Arc<MetaNode>,
}

impl MetaService {
    /// The service of `node`.
    pub fn new(node: Arc<MetaNode>) -> Self {
        Self { node }
    }

    fn table_configuration(&self, catalog: &Catalog, app: &AppState) -> TableConfiguration {
        let addr = |n: u64| NodeAddress {
            node_id: n,
            address: catalog.nodes.get(&n).map(|r| r.address.clone()).unwrap_or_default(),
        };
        let partitions = app
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let primary = self.node.liveness.primary(PartitionId::new(app.app_id, i as u32));
                PartitionConfiguration {
                    partition_index: i as u32,
                    members: p.members.iter().map(|n| addr(*n)).collect(),
                    term: primary.as_ref().map(|p| p.term).unwrap_or(0),
                    primary: primary.map(|p| addr(p.node_id)),
                    ballot: p.ballot,
                }
            })
            .collect();
        TableConfiguration {
            app_id: app.app_id,
            name: app.name.clone(),
            partition_count: app.partition_count,
            replica_count: app.replica_count,
            envs: app.envs.clone(),
            partitions,
        }
    }

    fn healthy_partitions(&self, app: &AppState) -> u32 {
        app.partitions
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                p.members.len() as u32 >= app.replica_count
                    && p.members.iter().all(|m| self.node.liveness.state(*m) == NodeState::Alive)
                    && self.node.liveness.primary(PartitionId::new(app.app_id, *i as u32)).is_some()
            })
            .count() as u32
    }

    /// The alive nodes to place a new table's replicas on. A new leader has not heard from
    /// every node yet (each is `Unknown` for a grace period): while some are still unknown, wait
    /// for their heartbeats (so placement sees the whole cluster), until `deadline`.
    async fn alive_for_placement(&self, catalog: &Catalog, deadline: std::time::Instant) -> Vec<u64> {
        loop {
            let states: Vec<(u64, NodeState)> =
                catalog.nodes.keys().map(|n| (*n, self.node.liveness.state(*n))).collect();
            let alive: Vec<u64> = states.iter().filter(|(_, s)| *s == NodeState::Alive).map(|(n, _)| *n).collect();
            let unknown = states.iter().any(|(_, s)| *s == NodeState::Unknown);
            if !unknown || std::time::Instant::now() >= deadline {
                return alive;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn app_of(value: MetaValue) -> Result<AppState, WingError> {
        match value {
            MetaValue::App(a) => Ok(*a),
            other => Err(WingError::Internal(format!("unexpected meta answer {other:?}"))),
        }
    }
}

/// Refuses empty keys, and values of the envs replicas act on (throttling, denial) that do not
/// parse: a bad value is refused here, never half-applied by the replicas.
fn validate_envs<'a>(envs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), WingError> {
    let mut known = BTreeMap::new();
    for (k, v) in envs {
        if k.trim().is_empty() {
            return Err(WingError::InvalidArgument("an env key is empty".into()));
        }
        known.insert(k.clone(), v.clone());
    }
    wingkv_common::throttling::validate_envs(&known).map_err(|e| WingError::InvalidArgument(e.to_string()))
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn register_node(&self, req: Request<RegisterNodeRequest>) -> Result<Response<RegisterNodeResponse>, Status> {
        let r = req.into_inner();
        r.address
            .parse::<std::net::SocketAddr>()
            .map_err(|_| WingError::InvalidArgument(format!("'{}' is not a host:port address", r.address)))?;
        let value = self.node.propose(MetaCommand::RegisterNode { node_id: r.node_id, address: r.address }).await?;
        let MetaValue::NodeId(node_id) = value else {
            return Err(WingError::Internal("registration answered no node id".into()).into());
        };
        self.node.liveness.record(self.node.term(), node_id, Vec::new());
        tracing::info!(node_id, "replica server registered");
        Ok(Response::new(RegisterNodeResponse { node_id }))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let r = req.into_inner();
        // The answer may order replicas removed: it is decided on a linearizable catalog (a
        // deposed or lagging leader fails here instead of answering from what it has applied).
        let meta_term = self.node.read_barrier_term().await?;
        let catalog = self.node.catalog();
        if !catalog.nodes.contains_key(&r.node_id) {
            return Err(WingError::NotFound(format!("node {} is not registered", r.node_id)).into());
        }
        let hosted: Vec<PartitionId> = r
            .replicas
            .iter()
            .filter_map(|rep| rep.partition.as_ref())
            .map(|p| PartitionId::new(p.app_id, p.partition_index))
            .collect();
        self.node.liveness.record(meta_term, r.node_id, r.replicas);
        let facts = NodeFacts { version: r.version, uptime_ms: r.uptime_ms, http_address: r.http_address };
        self.node.liveness.record_facts(r.node_id, facts);
        let repairs = self.node.repairs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let decision = decide(&catalog, r.node_id, &hosted, &repairs, &self.node.liveness);
        for pid in &decision.remove {
            tracing::info!(partition = %pid, node = r.node_id, meta_term, "telling the node to remove its replica");
        }
        Ok(Response::new(HeartbeatResponse {
            remove: decision.remove.iter().map(|p| p.to_proto()).collect(),
            tables: decision.tables,
            meta_term,
            dropped_tables: decision.dropped,
            live_bulk_load_jobs: catalog
                .bulk_loads
                .values()
                .filter(|j| !j.status.is_terminal())
                .map(|j| j.job_id)
                .collect(),
            next_bulk_load_job_id: catalog.next_job_id,
        }))
    }

    async fn create_table(&self, req: Request<CreateTableRequest>) -> Result<Response<TableConfiguration>, Status> {
        let r = req.into_inner();
        validate_table_name(&r.name)?;
        let partition_count = r.partition_count.unwrap_or(DEFAULT_PARTITION_COUNT);
        let replica_count = r.replica_count.unwrap_or(DEFAULT_REPLICA_COUNT);
        validate_partition_count(partition_count)?;
        validate_replica_count(replica_count)?;
        validate_envs(&r.envs)?;
        let timeout = Duration::from_millis(self.node.config.create_table_timeout_ms);
        let deadline = std::time::Instant::now() + timeout;
        let meta_term = self.node.read_barrier_term().await?;
        let catalog = self.node.catalog();
        let now = now_ms();
        catalog.check_name_free(&r.name, now)?;
        let alive = self.alive_for_placement(&catalog, deadline).await;
        let placement = placement::place(&alive, &catalog.load_by_node(), partition_count, replica_count)?;
        let cmd = MetaCommand::CreateTable {
            name: r.name.clone(),
            partition_count,
            replica_count,
            envs: r.envs.into_iter().collect(),
            placement,
            now_ms: now,
        };
        let app = Self::app_of(self.node.propose(cmd).await?)?;
        tracing::info!(app_id = app.app_id, name = %app.name, partition_count, replica_count, "table created");
        bootstrap_app_replicas(&self.node, &app, meta_term).await;
        let left = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_secs(1));
        wait_primaries(&self.node, &app, left).await?;
        let catalog = self.node.catalog();
        Ok(Response::new(self.table_configuration(&catalog, &app)))
    }

    async fn drop_table(&self, req: Request<DropTableRequest>) -> Result<Response<DropTableResponse>, Status> {
        let r = req.into_inner();
        let reserve_s = if r.reserve_seconds == 0 { self.node.config.drop_reserve_seconds } else { r.reserve_seconds };
        let cmd = MetaCommand::DropTable { name: r.name, reserve_ms: reserve_s.saturating_mul(1000), now_ms: now_ms() };
        let app = Self::app_of(self.node.propose(cmd).await?)?;
        tracing::info!(app_id = app.app_id, name = %app.name, "table dropped");
        let expire_time_ms = app.dropped.map(|d| d.expire_time_ms).unwrap_or(0);
        Ok(Response::new(DropTableResponse { app_id: app.app_id, expire_time_ms }))
    }

    async fn recall_table(&self, req: Request<RecallTableRequest>) -> Result<Response<TableConfiguration>, Status> {
        let r = req.into_inner();
        let new_name = if r.new_name.is_empty() { None } else { Some(r.new_name) };
        if let Some(n) = &new_name {
            validate_table_name(n)?;
        }
        let cmd = MetaCommand::RecallTable { app_id: r.app_id, new_name, now_ms: now_ms() };
        let app = Self::app_of(self.node.propose(cmd).await?)?;
        tracing::info!(app_id = app.app_id, name = %app.name, "table recalled");
        let catalog = self.node.catalog();
        Ok(Response::new(self.table_configuration(&catalog, &app)))
    }

    async fn list_tables(&self, req: Request<ListTablesRequest>) -> Result<Response<ListTablesResponse>, Status> {
        self.node.read_barrier().await?;
        let include_dropped = req.get_ref().include_dropped;
        let now = now_ms();
        let tables = self.node.with_catalog(|c| {
            c.apps
                .values()
                .filter(|a| if include_dropped { a.holds_name(now) } else { !a.is_dropped() })
                .map(|a| TableSummary {
                    app_id: a.app_id,
                    name: a.name.clone(),
                    partition_count: a.partition_count,
                    replica_count: a.replica_count,
                    status: if a.is_dropped() { "DROPPED" } else { "AVAILABLE" }.into(),
                    create_time_ms: a.create_time_ms,
                    drop_time_ms: a.dropped.map(|d| d.drop_time_ms).unwrap_or(0),
                    expire_time_ms: a.dropped.map(|d| d.expire_time_ms).unwrap_or(0),
                    healthy_partitions: self.healthy_partitions(a),
                    envs: a.envs.clone(),
                })
                .collect()
        });
        Ok(Response::new(ListTablesResponse { tables }))
    }

    async fn query_table(&self, req: Request<QueryTableRequest>) -> Result<Response<TableConfiguration>, Status> {
        self.node.read_barrier().await?;
        let name = &req.get_ref().name;
        let catalog = self.node.catalog();
        let app = catalog.live_app(name)?;
        Ok(Response::new(self.table_configuration(&catalog, app)))
    }

    async fn list_nodes(&self, _req: Request<ListNodesRequest>) -> Result<Response<ListNodesResponse>, Status> {
        self.node.read_barrier().await?;
        let catalog = self.node.catalog();
        let load = catalog.load_by_node();
        let primaries = self.node.liveness.primary_counts();
        let nodes = catalog
            .nodes
            .values()
            .map(|n| {
                let state = self.node.liveness.state(n.node_id);
                let mut facts = self.node.liveness.facts(n.node_id).unwrap_or_default();
                if state != NodeState::Alive {
                    // Not heard from lately: how long it has been up is not known.
                    facts.uptime_ms = 0;
                }
                NodeInfo {
                    node_id: n.node_id,
                    address: n.address.clone(),
                    status: state.as_str().into(),
                    replica_count: load.get(&n.node_id).map(|l| l.0).unwrap_or(0),
                    primary_count: primaries.get(&n.node_id).copied().unwrap_or(0),
                    last_heartbeat_ms_ago: self.node.liveness.silence_ms(n.node_id).unwrap_or(u64::MAX),
                    version: facts.version,
                    uptime_ms: facts.uptime_ms,
                    http_address: facts.http_address,
                }
            })
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn cluster_info(&self, _req: Request<ClusterInfoRequest>) -> Result<Response<ClusterInfoResponse>, Status> {
        self.node.read_barrier().await?;
        let m = self.node.raft.metrics().borrow().clone();
        let meta_members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| NodeAddress { node_id: *id, address: n.addr.clone() })
            .collect();
        let catalog = self.node.catalog();
        let states: Vec<NodeState> = catalog.nodes.keys().map(|n| self.node.liveness.state(*n)).collect();
        Ok(Response::new(ClusterInfoResponse {
            cluster_name: self.node.config.cluster_name.clone(),
            meta_leader: self.node.leader_address().unwrap_or_default(),
            meta_members,
            meta_term: m.current_term,
            alive_nodes: states.iter().filter(|s| **s == NodeState::Alive).count() as u32,
            dead_nodes: states.iter().filter(|s| **s == NodeState::Dead).count() as u32,
            table_count: catalog.apps.values().filter(|a| !a.is_dropped()).count() as u32,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn server_info(&self, _req: Request<ServerInfoRequest>) -> Result<Response<ServerInfoResponse>, Status> {
        // Answered by this meta from what it knows itself: no leader needed.
        let m = self.node.raft.metrics().borrow().clone();
        let role = match m.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Shutdown => "shutdown",
        };
        let address = m.membership_config.membership().get_node(&m.id).map(|n| n.addr.clone()).unwrap_or_default();
        Ok(Response::new(ServerInfoResponse {
            meta_id: m.id,
            address,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.node.started.elapsed().as_millis() as u64,
            role: role.into(),
            term: m.current_term,
            http_address: self.node.http_address.get().cloned().unwrap_or_default(),
        }))
    }

    async fn set_table_envs(&self, req: Request<SetTableEnvsRequest>) -> Result<Response<TableEnvs>, Status> {
        let r = req.into_inner();
        if r.envs.is_empty() {
            return Err(WingError::InvalidArgument("set_app_envs needs at least one key".into()).into());
        }
        validate_envs(&r.envs)?;
        let envs: BTreeMap<String, String> = r.envs.into_iter().collect();
        let app = Self::app_of(self.node.propose(MetaCommand::SetEnvs { name: r.name, envs }).await?)?;
        Ok(Response::new(TableEnvs { envs: app.envs }))
    }

    async fn get_table_envs(&self, req: Request<GetTableEnvsRequest>) -> Result<Response<TableEnvs>, Status> {
        self.node.read_barrier().await?;
        let envs = self.node.with_catalog(|c| c.live_app(&req.get_ref().name).map(|a| a.envs.clone()))?;
        Ok(Response::new(TableEnvs { envs }))
    }

    async fn start_bulk_load(
        &self,
        req: Request<StartBulkLoadRequest>,
    ) -> Result<Response<BulkLoadStatusResponse>, Status> {
        let r = req.into_inner();
        self.node.read_barrier().await?;
        let catalog = self.node.catalog();
        let app = Self::table_for_bulk_load(&catalog, &r.app_name)?;
        if r.ingest_behind && app.envs.get("rocksdb.allow_ingest_behind").map(String::as_str) != Some("true") {
            return Err(WingError::InvalidArgument(format!(
                "--ingest_behind needs the table env rocksdb.allow_ingest_behind=true on '{}'",
                app.name
            ))
            .into());
        }
        // bulk_load_info is read and checked before any state changes.
        let store = open_provider(&r.provider, &self.node.config.bulk_load_provider)?;
        let dir = table_dir(&r.root, &r.cluster, &app.name)?;
        let info_path = dir.child(BULK_LOAD_INFO);
        let bytes = match store.get(&info_path).await {
            Ok(g) => {
                g.bytes().await.map_err(|e| WingError::Unavailable(format!("{}://{info_path}: {e}", r.provider)))?
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(WingError::InvalidArgument(format!("{}://{info_path} does not exist", r.provider)).into())
            }
            Err(e) => return Err(WingError::Unavailable(format!("{}://{info_path}: {e}", r.provider)).into()),
        };
        BulkLoadInfo::parse(&bytes)?.check_matches(&app.name, app.partition_count)?;
        let cmd = MetaCommand::StartBulkLoad {
            app_name: app.name.clone(),
            cluster: r.cluster,
            provider: r.provider,
            root: r.root,
            ingest_behind: r.ingest_behind,
            now_ms: now_ms(),
        };
        let job = Self::job_of(self.node.propose(cmd).await?)?;
        tracing::info!(table = %app.name, job = job.job_id, "bulk load started");
        Ok(Response::new(self.bulk_load_status(&app, Some(&job), None, false)))
    }

    async fn query_bulk_load_status(
        &self,
        req: Request<QueryBulkLoadRequest>,
    ) -> Result<Response<BulkLoadStatusResponse>, Status> {
        let r = req.into_inner();
        self.node.read_barrier().await?;
        let catalog = self.node.catalog();
        let app = Self::table_for_bulk_load(&catalog, &r.app_name)?;
        if let Some(p) = r.partition_index {
            if p >= app.partition_count {
                return Err(WingError::InvalidArgument(format!(
                    "table '{}' has {} partitions; there is no partition {p}",
                    app.name, app.partition_count
                ))
                .into());
            }
        }
        let job = catalog.bulk_loads.get(&app.app_id);
        Ok(Response::new(self.bulk_load_status(&app, job, r.partition_index, r.detailed)))
    }

    async fn control_bulk_load(
        &self,
        req: Request<ControlBulkLoadRequest>,
    ) -> Result<Response<BulkLoadStatusResponse>, Status> {
        let r = req.into_inner();
        let action = match BulkLoadControl::try_from(r.action) {
            Ok(BulkLoadControl::BlcPause) => BulkLoadControlAction::Pause,
            Ok(BulkLoadControl::BlcRestart) => BulkLoadControlAction::Restart,
            Ok(BulkLoadControl::BlcCancel) => BulkLoadControlAction::Cancel { force: false },
            Ok(BulkLoadControl::BlcForceCancel) => BulkLoadControlAction::Cancel { force: true },
            Ok(BulkLoadControl::BlcClear) => BulkLoadControlAction::Clear,
            Err(_) => return Err(WingError::InvalidArgument(format!("unknown bulk-load action {}", r.action)).into()),
        };
        let catalog = self.node.catalog();
        let app = Self::table_for_bulk_load(&catalog, &r.app_name)?;
        let job = Self::job_of(
            self.node.propose(MetaCommand::ControlBulkLoad { app_name: app.name.clone(), action }).await?,
        )?;
        let job = (action != BulkLoadControlAction::Clear).then_some(job);
        Ok(Response::new(self.bulk_load_status(&app, job.as_ref(), None, false)))
    }

    async fn del_table_envs(&self, req: Request<DelTableEnvsRequest>) -> Result<Response<TableEnvs>, Status> {
        let r = req.into_inner();
        if r.keys.is_empty() {
            return Err(WingError::InvalidArgument("del_app_envs needs at least one key".into()).into());
        }
        let app = Self::app_of(self.node.propose(MetaCommand::DelEnvs { name: r.name, keys: r.keys }).await?)?;
        Ok(Response::new(TableEnvs { envs: app.envs }))
    }
}

impl MetaService {
    fn bulk_load_status(
        &self,
        app: &AppState,
        job: Option<&BulkLoadJob>,
        only: Option<u32>,
        detailed: bool,
    ) -> BulkLoadStatusResponse {
        let Some(job) = job else {
            return BulkLoadStatusResponse {
                app_name: app.name.clone(),
                status: "BLS_INVALID".into(),
                ..Default::default()
            };
        };
        let progress = self.node.bulk_progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let drives = self.node.bulk_drive.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stall = std::time::Duration::from_millis(self.node.config.bulk_load_stall_timeout_ms.max(1));
        let partitions = job
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|p| p as usize == *i))
            .map(|(i, st)| {
                let pid = PartitionId::new(app.app_id, i as u32);
                let reps = progress.get(&pid).cloned().unwrap_or_default();
                // Retry and stall state only while the job runs and the partition is not done.
                let running = matches!(job.status, BulkLoadStatus::Downloading | BulkLoadStatus::Ingesting)
                    && !matches!(st, BulkLoadStatus::Downloaded | BulkLoadStatus::Succeed);
                let drive = drives.get(&pid).filter(|d| running && d.job_id() == job.job_id);
                let (done, total) =
                    reps.iter().fold((0u64, 0u64), |(d, t), r| (d + r.downloaded_bytes, t + r.total_bytes));
                let percent = match st {
                    BulkLoadStatus::Downloaded | BulkLoadStatus::Ingesting | BulkLoadStatus::Succeed => 100,
                    _ if total == 0 => 0,
                    _ => (done.saturating_mul(100) / total).min(100) as u32,
                };
                PartitionBulkLoadStatus {
                    partition_index: i as u32,
                    status: st.as_str().into(),
                    progress_percent: percent,
                    replicas: if detailed {
                        reps.iter()
                            .map(|r| ReplicaBulkLoadProgress {
                                node_id: r.node_id,
                                status: r.status.clone(),
                                downloaded_bytes: r.downloaded_bytes,
                                total_bytes: r.total_bytes,
                                reason: r.reason.clone(),
                                live_tasks: r.live_tasks,
                                retries: r.retries,
                                backoff_ms: r.backoff_ms,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    drive_attempts: drive.map(|d| d.attempts()).unwrap_or(0),
                    drive_backoff_ms: drive.map(|d| d.backoff_ms()).unwrap_or(0),
                    last_error: drive.map(|d| d.last_error().to_string()).unwrap_or_default(),
                    stalled_since_ms: drive.and_then(|d| d.stalled_since_ms(stall)).unwrap_or(0),
                }
            })
            .collect();
        BulkLoadStatusResponse {
            app_name: app.name.clone(),
            job_id: job.job_id,
            status: job.status.as_str().into(),
            reason: job.reason.clone(),
            partitions,
            source: format!("{}://{}/{}/{}", job.provider, job.root.trim_end_matches('/'), job.cluster, app.name),
        }
    }

    /// The live table `name`, or `TableDropped` when it was dropped (its job is canceled).
    fn table_for_bulk_load(catalog: &Catalog, name: &str) -> Result<AppState, WingError> {
        match catalog.live_app(name) {
            Ok(a) => Ok(a.clone()),
            Err(e) => {
                if catalog.apps.values().any(|a| a.name == name && a.is_dropped()) {
                    Err(WingError::TableDropped(format!("table '{name}' was dropped; its bulk load was canceled")))
                } else {
                    Err(e)
                }
            }
        }
    }

    fn job_of(value: MetaValue) -> Result<BulkLoadJob, WingError> {
        match value {
            MetaValue::BulkLoad(j) => Ok(*j),
            other => Err(WingError::Internal(format!("unexpected meta answer {other:?}"))),
        }
    }
}

/// The meta group, as the raft transport sees it.
pub struct MetaGroup {
    node: Arc<MetaNode>,
}

impl MetaGroup {
    /// The group of `node`.
    pub fn new(node: Arc<MetaNode>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl RaftGroups for MetaGroup {
    async fn serve(&self, group: PartitionId, method: RaftMethod, payload: &[u8]) -> Result<Vec<u8>, Status> {
        if group != META_GROUP {
            return Err(WingError::NotFound(format!("group {group} is not served by a meta server")).into());
        }
        serve_raft_message(&self.node.raft, method, payload).await
    }
}
