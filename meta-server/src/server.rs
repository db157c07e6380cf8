//! The meta server: opens the meta group's storage, joins (or bootstraps) the group, runs the
//! reconcile loop and serves the meta API and the group's raft transport.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::{BasicNode, SnapshotPolicy};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::service::Routes;
use wingkv_common::channel::ChannelPool;
use wingkv_common::frontend::{Frontend, FrontendSpec};
use wingkv_common::metrics::{http_advertise_address, http_listen_address, ServerMetrics};
use wingkv_common::net::{bind, ADDRESS_FILE};
use wingkv_common::raft::log_store::RocksLogStore;
use wingkv_common::raft::network::{GrpcNetworkFactory, RaftTransportService, MAX_RAFT_MESSAGE_BYTES};
use wingkv_common::raft::stream::RaftPeers;
use wingkv_common::raft::wal_sync::WalSyncer;
use wingkv_common::WingError;
use wingkv_proto::meta::meta_server::MetaServer as MetaGrpcServer;
use wingkv_proto::raft::raft_transport_server::RaftTransportServer;

use crate::config::MetaServerConfig;
use crate::metrics::MetaMetricsSource;
use crate::node::{MetaNode, META_GROUP};
use crate::raft_types::MetaRaft;
use crate::reconcile;
use crate::service::raft::MetaGroup;
use crate::service::MetaService;
use crate::state_machine::{open_meta_db, MetaStateMachine};

/// A running meta server.
pub struct MetaServer {
    addr: SocketAddr,
    node: Arc<MetaNode>,
    syncer: WalSyncer,
    tasks: TaskTracker,
    frontend: Frontend,
}

impl MetaServer {
    /// Starts a meta server; fails with `InvalidArgument` on a config that does not
    /// [validate](MetaServerConfig::validate).
    pub async fn start(mut config: MetaServerConfig) -> Result<Self, WingError> {
        config.validate().map_err(|e| WingError::InvalidArgument(e.to_string()))?;
        config.bulk_load_provider.default_local_root(config.tls.is_some());
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| WingError::Storage(format!("cannot create {}: {e}", config.data_dir.display())))?;
        let listener = bind(&config.listen)?;
        let addr = listener.local_addr().map_err(|e| WingError::Internal(e.to_string()))?;
        let http_listen = http_listen_address(config.http_listen.as_deref(), &config.listen, addr)?;
        let metrics = ServerMetrics::new("meta")?;
        let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
        let peers: BTreeMap<u64, BasicNode> = if config.peers.is_empty() {
            BTreeMap::from([(config.id, BasicNode { addr: advertise.clone() })])
        } else {
            config.peers.iter().map(|p| (p.id, BasicNode { addr: p.address.clone() })).collect()
        };
        if !peers.contains_key(&config.id) {
            return Err(WingError::InvalidArgument(format!("meta peers do not include this meta (id {})", config.id)));
        }

        let db = open_meta_db(&config.data_dir.join("meta-db"))?;
        let syncer = WalSyncer::start(db.clone(), "meta".into())
            .map_err(|e| WingError::Internal(format!("cannot start WAL sync thread: {e}")))?;
        let log_store = RocksLogStore::new(db.clone(), syncer.clone());
        let (sm, data) = MetaStateMachine::open(db.clone())?;
        let raft_config = openraft::Config {
            cluster_name: format!("{}-meta", config.cluster_name),
            heartbeat_interval: config.raft_heartbeat_ms,
            election_timeout_min: config.raft_election_timeout_ms,
            election_timeout_max: config.raft_election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(1_000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| WingError::InvalidArgument(format!("meta raft config: {e}")))?;
        let (client_tls, security) = wingkv_common::frontend::Security::from_config(
            config.tls.as_ref(),
            Arc::new(crate::access::MetaAccess::new(&config.admin_users)),
        )?;
        let pool = ChannelPool::new(client_tls);
        let network = GrpcNetworkFactory::new(META_GROUP, RaftPeers::new(pool.clone(), true));
        let raft = match MetaRaft::new(config.id, Arc::new(raft_config), network, log_store, sm).await {
            Ok(r) => r,
            Err(e) => {
                syncer.shutdown();
                return Err(WingError::Storage(format!("cannot start the meta raft: {e}")));
            }
        };
        // The smallest id bootstraps a new group; everyone else waits to be contacted.
        let bootstrapper = peers.keys().next().copied() == Some(config.id);
        let initialized = raft.is_initialized().await.map_err(|e| WingError::Internal(e.to_string()))?;
        if bootstrapper && !initialized {
            if let Err(e) = raft.initialize(peers.clone()).await {
                tracing::warn!("meta group initialize: {e}");
            } else {
                tracing::info!(members = peers.len(), "bootstrapped the meta group");
            }
        }

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let node = Arc::new(MetaNode::new(Arc::new(config.clone()), raft, data, pool, &tasks, shutdown.clone()));
        tasks.spawn(reconcile::run(node.clone(), shutdown.clone()));
        // Its own loop: a slow primary (an ingestion takes long) never delays repairs.
        tasks.spawn(crate::bulk_driver::run(node.clone(), shutdown.clone()));
        tasks.spawn(crate::backup_driver::run(node.clone(), shutdown.clone()));

        let routes = Routes::new(MetaGrpcServer::new(MetaService::new(node.clone()))).add_service(
            RaftTransportServer::new(RaftTransportService::new(MetaGroup::new(node.clone()), shutdown.clone()))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        );
        let spec = FrontendSpec {
            routes,
            service_names: &[
                <MetaGrpcServer<MetaService> as NamedService>::NAME,
                <RaftTransportServer<RaftTransportService<MetaGroup>> as NamedService>::NAME,
            ],
            listener,
            http_listen,
            data_dir: &config.data_dir,
            metrics,
            security,
            reflection: config.grpc_reflection.unwrap_or(config.tls.is_none()),
            source: Arc::new(MetaMetricsSource::new(node.clone())),
        };
        let frontend = match Frontend::spawn(spec, shutdown.clone()).await {
            Ok(f) => f,
            Err(e) => {
                // Everything started so far stops before the error is returned.
                shutdown.cancel();
                tasks.close();
                tasks.wait().await;
                let _ = node.raft.shutdown().await;
                syncer.shutdown();
                return Err(e);
            }
        };
        let _ = node.http_address.set(http_advertise_address(&advertise, frontend.http_addr()));
        let addr_file = config.data_dir.join(ADDRESS_FILE);
        std::fs::write(&addr_file, &advertise)
            .map_err(|e| WingError::Storage(format!("cannot write {}: {e}", addr_file.display())))?;
        tracing::info!(id = config.id, %addr, "meta server listening");
        Ok(Self { addr, node, syncer, tasks, frontend })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of `/metrics` and `/health`.
    pub fn http_addr(&self) -> SocketAddr {
        self.frontend.http_addr()
    }

    /// The meta node.
    pub fn node(&self) -> &Arc<MetaNode> {
        &self.node
    }

    /// Serves until `stop` fires (or the server fails), then stops everything and waits.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) -> Result<(), WingError> {
        let served = self.frontend.stop_when(stop).await;
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!("meta raft shutdown: {e}");
        }
        let syncer = self.syncer.clone();
        let _ = tokio::task::spawn_blocking(move || syncer.shutdown()).await;
        tracing::info!("meta server stopped");
        served
    }
}
