//! The replica server: binds the gRPC listener, opens the hosted replicas and serves the data,
//! raft and admin services until shut down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::service::Routes;
use wingkv_common::channel::ChannelPool;
use wingkv_common::frontend::{Frontend, FrontendSpec};
use wingkv_common::meta_client::MetaClient;
use wingkv_common::metrics::{http_advertise_address, http_listen_address, ServerMetrics};
use wingkv_common::net::{bind, ADDRESS_FILE};
use wingkv_common::raft::network::{RaftTransportService, MAX_RAFT_MESSAGE_BYTES};
use wingkv_common::raft::stream::RaftPeers;
use wingkv_common::WingError;
use wingkv_proto::data::data_server::DataServer;
use wingkv_proto::raft::raft_transport_server::RaftTransportServer;
use wingkv_proto::replica_admin::replica_admin_server::ReplicaAdminServer;

use crate::config::ReplicaServerConfig;
use crate::disk_space::DiskGuard;
use crate::heartbeat::{self, register, stored_node_id, ServerIdentity};
use crate::load_shed::{LoadShedder, ShedService};
use crate::manager::ReplicaManager;
use crate::metrics::ReplicaMetricsSource;
use crate::replica::ReplicaContext;
use crate::service::admin::AdminService;
use crate::service::data::DataService;
use crate::service::raft::HostedGroups;
use crate::store::SharedStorage;

/// A running replica server.
pub struct ReplicaServer {
    addr: SocketAddr,
    advertise: String,
    manager: Arc<ReplicaManager>,
    tasks: TaskTracker,
    frontend: Frontend,
}

impl ReplicaServer {
    /// Starts a server: reopens every replica in the data dir, then serves. Fails with
    /// `InvalidArgument` on a config that does not [validate](ReplicaServerConfig::validate).
    pub async fn start(mut config: ReplicaServerConfig) -> Result<Self, WingError> {
        let started = std::time::Instant::now();
        config.validate().map_err(|e| WingError::InvalidArgument(e.to_string()))?;
        config.bulk_load.provider.default_local_root(config.tls.is_some());
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| WingError::Storage(format!("cannot create {}: {e}", config.data_dir.display())))?;
        let listener = bind(&config.listen)?;
        let addr = listener.local_addr().map_err(|e| WingError::Internal(e.to_string()))?;
        let http_listen = http_listen_address(config.http_listen.as_deref(), &config.listen, addr)?;
        let metrics = ServerMetrics::new("replica")?;
        let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
        let (client_tls, security) = wingkv_common::frontend::Security::from_config(
            config.tls.as_ref(),
            Arc::new(crate::access::ReplicaAccess),
        )?;
        let pool = ChannelPool::new(client_tls);
        let (node_id, meta) = resolve_node_id(&config, &advertise, &pool).await?;
        let shutdown = CancellationToken::new();
        let raft_log = Arc::new(crate::raft_log::RaftLogDb::open(&config.data_dir.join("raft-log"))?);
        let ctx = ReplicaContext {
            raft_log,
            bulk: Arc::new(
                crate::bulk_load::BulkLoadEnv::new(&config.bulk_load)
                    .map_err(|e| WingError::Internal(format!("cannot start the bulk-load I/O threads: {e}")))?,
            ),
            backup: Arc::new(
                crate::backup::BackupLimits::new(&config.bulk_load)
                    .map_err(|e| WingError::Internal(format!("cannot start the backup export threads: {e}")))?,
            ),
            bulk_jobs: Arc::new(tokio::sync::watch::channel(None).0),
            tables: Arc::new(crate::admission::TableEnvs::default()),
            proposals: Arc::default(),
            reports: Arc::new(crate::report_clock::ReportClock::start(&config.data_dir)?),
            node_id,
            storage: SharedStorage::new(config.storage.clone()),
            raft_peers: RaftPeers::new(pool.clone(), config.raft.streams),
            pool,
            config: Arc::new(config.clone()),
        };
        let manager = Arc::new(ReplicaManager::new(ctx)?);
        let opened = manager.open_all().await?;
        tracing::info!(node_id, %addr, replicas = opened, "replica server listening");
        if config.unsafe_ack_before_commit {
            tracing::error!("unsafe_ack_before_commit is set: writes are acknowledged before they commit (test only)");
        }

        let max = config.max_request_bytes;
        let shed = Arc::new(LoadShedder::new(config.max_concurrent_requests, config.max_inflight_request_bytes));
        let disk = Arc::new(DiskGuard::new(&config.data_dir, config.reserved_disk_bytes));
        let data = DataServer::new(DataService::new(
            manager.clone(),
            shed.clone(),
            disk.clone(),
            metrics.clone(),
            shutdown.clone(),
        ))
        .max_decoding_message_size(max);
        let routes = Routes::new(ShedService::new(data, shed.clone()))
            .add_service(
                RaftTransportServer::new(RaftTransportService::new(
                    HostedGroups::new(manager.clone()),
                    shutdown.clone(),
                ))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
            )
            .add_service(ReplicaAdminServer::new(AdminService::new(manager.clone())));
        let spec = FrontendSpec {
            routes,
            service_names: &[
                <DataServer<DataService> as NamedService>::NAME,
                <RaftTransportServer<RaftTransportService<HostedGroups>> as NamedService>::NAME,
                <ReplicaAdminServer<AdminService> as NamedService>::NAME,
            ],
            listener,
            http_listen,
            data_dir: &config.data_dir,
            metrics,
            security,
            reflection: config.grpc_reflection.unwrap_or(config.tls.is_none()),
            source: Arc::new(ReplicaMetricsSource::new(manager.clone(), shed.clone(), disk.clone())),
        };
        let frontend = match Frontend::spawn(spec, shutdown.clone()).await {
            Ok(f) => f,
            Err(e) => {
                // The replicas opened above close cleanly before the error is returned.
                shutdown.cancel();
                manager.close_all().await;
                return Err(e);
            }
        };
        let tasks = TaskTracker::new();
        if let Some(meta) = meta {
            let interval = Duration::from_millis(config.heartbeat_interval_ms);
            let me = ServerIdentity {
                address: advertise.clone(),
                http_address: http_advertise_address(&advertise, frontend.http_addr()),
                started,
            };
            let remover = heartbeat::Remover::start(manager.clone(), &tasks, shutdown.clone());
            tasks.spawn(heartbeat::run(meta, manager.clone(), remover, me, interval, shutdown.clone()));
        }
        tasks.spawn(crate::restart::run(manager.clone(), shutdown.clone()));
        tasks.spawn(disk.clone().run(shutdown.clone()));
        tasks.spawn(sweep_trash(manager.trash_dir(), config.replica_trash_grace_secs, shutdown.clone()));
        // Written last: its presence tells supervisors and tests the server is ready.
        let addr_file = config.data_dir.join(ADDRESS_FILE);
        std::fs::write(&addr_file, &advertise)
            .map_err(|e| WingError::Storage(format!("cannot write {}: {e}", addr_file.display())))?;
        Ok(Self { addr, advertise, manager, tasks, frontend })
    }

    /// The bound listen address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address peers should use.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// The bound address of `/metrics` and `/health`.
    pub fn http_addr(&self) -> SocketAddr {
        self.frontend.http_addr()
    }

    /// The hosted replicas.
    pub fn manager(&self) -> &Arc<ReplicaManager> {
        &self.manager
    }

    /// Waits until the gRPC server stops by itself (an error) or `stop` fires; then stops
    /// taking requests, lets in-flight ones finish and closes every replica.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) -> Result<(), WingError> {
        let served = self.frontend.stop_when(stop).await;
        self.tasks.close();
        self.tasks.wait().await;
        self.manager.close_all().await;
        tracing::info!("replica server stopped");
        served
    }
}

/// Deletes trash entries past their grace period, at start and then every minute, until
/// `cancel` fires.
async fn sweep_trash(trash: std::path::PathBuf, grace_secs: u64, cancel: CancellationToken) {
    let grace = Duration::from_secs(grace_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(60).min(grace.max(Duration::from_secs(1))));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let dir = trash.clone();
        match tokio::task::spawn_blocking(move || crate::trash::sweep(&dir, grace)).await {
            Ok(Ok(deleted)) => {
                for path in deleted {
                    tracing::info!(trash = %path.display(), "removed replica deleted after its grace period");
                }
            }
            Ok(Err(e)) => tracing::warn!("trash sweep: {e}"),
            Err(e) => tracing::warn!("trash sweep failed: {e}"),
        }
    }
}

/// This server's node id: from the config when standalone; otherwise the one kept in the data
/// dir, or a new one from the meta at the first start.
async fn resolve_node_id(
    config: &ReplicaServerConfig,
    advertise: &str,
    pool: &ChannelPool,
) -> Result<(u64, Option<Arc<MetaClient>>), WingError> {
    if config.meta_servers.is_empty() {
        if config.node_id == 0 {
            return Err(WingError::InvalidArgument(
                "node_id must be set (> 0) when no meta_servers are configured".into(),
            ));
        }
        return Ok((config.node_id, None));
    }
    let mut meta = MetaClient::new(config.meta_servers.clone(), pool.clone())?;
    // A heartbeat is a short call: a meta that does not answer within a second is frozen or cut
    // off, and the next one is tried, so a new meta leader is found within a heartbeat or two.
    meta.attempt_timeout = Duration::from_secs(1);
    let meta = Arc::new(meta);
    let id = match stored_node_id(&config.data_dir)? {
        Some(id) if config.node_id != 0 && config.node_id != id => {
            return Err(WingError::InvalidArgument(format!(
                "node_id {} in the config contradicts node id {id} kept in {}",
                config.node_id,
                config.data_dir.display()
            )))
        }
        Some(id) => id,
        None => {
            let mut attempt = 0;
            loop {
                match register(&meta, &config.data_dir, 0, advertise).await {
                    Ok(id) => break id,
                    Err(e) if attempt < 6 => {
                        attempt += 1;
                        tracing::warn!("cannot register with the meta yet: {e}");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    };
    Ok((id, Some(meta)))
}
