//! What a server shows the outside world, started and stopped as one: its gRPC services (each
//! request traced and measured by [`RpcMetricsLayer`], plus gRPC health and reflection) and its
//! HTTP endpoint (`/metrics`, `/health`).

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::metrics::{MetricsHttpServer, MetricsSource, RpcMetricsLayer, ServerMetrics, HTTP_ADDRESS_FILE};
use crate::WingError;

/// Where and what a [`Frontend`] serves.
pub struct FrontendSpec<'a> {
    /// The server's own gRPC services.
    pub routes: Routes,
    /// The gRPC names of all of them, reported SERVING by the health service and listed by
    /// reflection.
    pub service_names: &'a [&'a str],
    /// The bound gRPC listener.
    pub listener: tokio::net::TcpListener,
    /// Address of the HTTP endpoint (see [`crate::metrics::http_listen_address`]).
    pub http_listen: String,
    /// Where the HTTP address file goes.
    pub data_dir: &'a Path,
    /// The request metrics.
    pub metrics: Arc<ServerMetrics>,
    /// What a scrape reads.
    pub source: Arc<dyn MetricsSource>,
}

/// The running gRPC server and HTTP endpoint; stopping it stops the accept loops and lets
/// in-flight requests finish.
pub struct Frontend {
    shutdown: CancellationToken,
    health: tonic_health::server::HealthReporter,
    service_names: Vec<String>,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: MetricsHttpServer,
}

impl Frontend {
    /// Starts serving until `shutdown` fires.
    pub async fn spawn(spec: FrontendSpec<'_>, shutdown: CancellationToken) -> Result<Self, WingError> {
        let (routes, health) = add_introspection(spec.routes, spec.service_names).await?;
        let http = MetricsHttpServer::spawn(&spec.http_listen, spec.metrics.clone(), spec.source, shutdown.clone())?;
        let http_file = spec.data_dir.join(HTTP_ADDRESS_FILE);
        if let Err(e) = std::fs::write(&http_file, http.local_addr().to_string()) {
            // The endpoint already runs: stop it and wait for it before failing.
            shutdown.cancel();
            http.wait().await;
            return Err(WingError::Storage(format!("cannot write {}: {e}", http_file.display())));
        }
        let service_names = spec.service_names.iter().map(|s| s.to_string()).collect();
        let router = tonic::transport::Server::builder().layer(RpcMetricsLayer::new(spec.metrics)).add_routes(routes);
        // `Server::tcp_nodelay` only reaches sockets tonic accepts itself; these are ours. With
        // Nagle on, a response written in two pieces waits for the client's delayed ACK (40 ms).
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(spec.listener), |s| {
                if let Ok(s) = &s {
                    if let Err(e) = s.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                }
                s
            });
        let grpc = tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()));
        tracing::info!(http = %http.local_addr(), "serving /metrics and /health");
        Ok(Self { shutdown, health, service_names, grpc, http })
    }

    /// The bound address of the HTTP endpoint.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.http.local_addr()
    }

    /// Waits until `stop` fires or the gRPC server fails by itself, then fires the shutdown
    /// token (which also stops whatever else watches it) and waits for both servers to finish.
    pub async fn stop_when(mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), WingError> {
        let early = tokio::select! {
            r = &mut self.grpc => Some(r),
            _ = stop => None,
        };
        // Health checkers see the server go before its connections do.
        for name in self.service_names.iter().map(String::as_str).chain([""]) {
            self.health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
        }
        self.shutdown.cancel();
        let served = match early {
            Some(r) => r,
            // In-flight requests get a moment to finish; a long one (a table creation waiting
            // for primaries, a learner catching up) must not hold the process past it.
            None => match tokio::time::timeout(STOP_GRACE, &mut self.grpc).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("in-flight requests did not finish within {STOP_GRACE:?} of the stop; closing them");
                    self.grpc.abort();
                    Ok(Ok(()))
                }
            },
        };
        self.http.wait().await;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WingError::Internal(format!("gRPC server failed: {e}"))),
            Err(e) => Err(WingError::Internal(format!("gRPC server task failed: {e}"))),
        }
    }
}

/// How long a stopping server waits for its in-flight requests.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Adds the health service (the server and every named service SERVING) and reflection over
/// the wingkv protocol, so `grpc_health_probe` and `grpcurl` work without the .proto files.
async fn add_introspection(
    routes: Routes,
    services: &[&str],
) -> Result<(Routes, tonic_health::server::HealthReporter), WingError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // The empty name is the whole server, which health probes ask about by default.
    for name in services.iter().copied().chain([""]) {
        reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    // Only what this server serves is listed (the wingkv descriptor holds every service).
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(wingkv_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection");
    for name in services {
        reflection = reflection.with_service_name(*name);
    }
    let reflection = reflection.build_v1().map_err(|e| WingError::Internal(format!("gRPC reflection: {e}")))?;
    Ok((routes.add_service(health).add_service(reflection), reporter))
}
