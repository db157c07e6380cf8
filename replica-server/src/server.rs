//! The replica server: binds the gRPC listener, opens the hosted replicas and serves the data,
//! raft and admin services until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use wingkv_common::raft::network::{ChannelPool, MAX_RAFT_MESSAGE_BYTES};
use wingkv_common::WingError;
use wingkv_proto::data::data_server::DataServer;
use wingkv_proto::raft::raft_transport_server::RaftTransportServer;
use wingkv_proto::replica_admin::replica_admin_server::ReplicaAdminServer;

use crate::config::ReplicaServerConfig;
use crate::manager::ReplicaManager;
use crate::replica::ReplicaContext;
use crate::service::admin::AdminService;
use crate::service::data::DataService;
use crate::service::raft::RaftService;
use crate::store::SharedStorage;

/// Name of the file in the data dir that holds the address the server advertises.
pub const ADDRESS_FILE: &str = "server.addr";

/// A running replica server.
pub struct ReplicaServer {
    addr: SocketAddr,
    advertise: String,
    manager: Arc<ReplicaManager>,
    shutdown: CancellationToken,
    serve: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `addr` with SO_REUSEADDR, so a restarted server gets its port back at once.
pub fn bind(addr: &str) -> Result<tokio::net::TcpListener, WingError> {
    let bad =
        |e: std::io::Error| WingError::InvalidArgument(format!("cannot listen on {addr}: {e}"));
    let sock_addr: SocketAddr = addr.parse().map_err(|_| {
        WingError::InvalidArgument(format!("listen address '{addr}' is not host:port"))
    })?;
    let socket = if sock_addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(bad)?;
    socket.set_reuseaddr(true).map_err(bad)?;
    socket.bind(sock_addr).map_err(bad)?;
    socket.listen(1024).map_err(bad)
}

impl ReplicaServer {
    /// Starts a server: reopens every replica in the data dir, then serves.
    pub async fn start(config: ReplicaServerConfig) -> Result<Self, WingError> {
        if config.node_id == 0 {
            return Err(WingError::InvalidArgument(
                "node_id must be set to a positive number".into(),
            ));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            WingError::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let listener = bind(&config.listen)?;
        let addr = listener
            .local_addr()
            .map_err(|e| WingError::Internal(e.to_string()))?;
        let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
        let ctx = ReplicaContext {
            node_id: config.node_id,
            storage: SharedStorage::new(config.storage.clone()),
            pool: ChannelPool::default(),
            config: Arc::new(config.clone()),
        };
        let manager = Arc::new(ReplicaManager::new(ctx));
        let opened = manager.open_all().await?;
        tracing::info!(node_id = config.node_id, %addr, replicas = opened, "replica server listening");

        let max = config.max_request_bytes;
        let shutdown = CancellationToken::new();
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(
                DataServer::new(DataService::new(manager.clone())).max_decoding_message_size(max),
            )
            .add_service(
                RaftTransportServer::new(RaftService::new(manager.clone()))
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
            )
            .add_service(ReplicaAdminServer::new(AdminService::new(manager.clone())));
        let serve = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            shutdown.clone().cancelled_owned(),
        ));
        // Written last: its presence tells supervisors and tests the server is ready.
        let addr_file = config.data_dir.join(ADDRESS_FILE);
        std::fs::write(&addr_file, &advertise).map_err(|e| {
            WingError::Storage(format!("cannot write {}: {e}", addr_file.display()))
        })?;
        Ok(Self {
            addr,
            advertise,
            manager,
            shutdown,
            serve,
        })
    }

    /// The bound listen address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address peers should use.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// The hosted replicas.
    pub fn manager(&self) -> &Arc<ReplicaManager> {
        &self.manager
    }

    /// Waits until the gRPC server stops by itself (an error) or `stop` fires; then stops
    /// taking requests, lets in-flight ones finish and closes every replica.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), WingError> {
        let early = tokio::select! {
            r = &mut self.serve => Some(r),
            _ = stop => None,
        };
        self.shutdown.cancel();
        let served = match early {
            Some(r) => r,
            None => (&mut self.serve).await,
        };
        self.manager.close_all().await;
        tracing::info!("replica server stopped");
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WingError::Internal(format!("gRPC server failed: {e}"))),
            Err(e) => Err(WingError::Internal(format!("gRPC server task failed: {e}"))),
        }
    }
}
