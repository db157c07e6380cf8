//! What a server shows the outside world, started and stopped as one: its gRPC services (each
//! request traced and measured by [`RpcMetricsLayer`], plus gRPC health and reflection) and its
//! HTTP endpoint (`/metrics`, `/health`).

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use wingkv_security::authorize::{AuthorizeLayer, Policy, Refusals};
use wingkv_security::server::ServerTls;

use crate::metrics::{MetricsHttpServer, MetricsSource, RpcMetricsLayer, Scrape, ServerMetrics, HTTP_ADDRESS_FILE};
use crate::WingError;

/// What makes a server secure: mutual TLS on its listener, and who may call what.
pub struct Security {
    /// The TLS acceptor (the server's certificate, the cluster's CA).
    pub tls: ServerTls,
    /// Who may call which method.
    pub policy: Arc<dyn Policy>,
}

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
    /// Mutual TLS and authorization; `None` serves plaintext to anyone (development).
    pub security: Option<Security>,
    /// Whether gRPC reflection is served (it lists the whole API to every peer).
    pub reflection: bool,
}

impl Security {
    /// The TLS sides of a server whose config has `tls`: the connector its own calls use, and
    /// its listener's security with `policy` deciding who calls what. Without `tls`: plaintext,
    /// nothing checked. A missing or bad file is an `InvalidArgument` naming it.
    pub fn from_config(
        tls: Option<&wingkv_security::TlsConfig>,
        policy: Arc<dyn Policy>,
    ) -> Result<(Option<wingkv_security::client::ClientTls>, Option<Security>), WingError> {
        let Some(tls) = tls else { return Ok((None, None)) };
        let bad = |e: wingkv_security::SecurityError| WingError::InvalidArgument(format!("[tls]: {e}"));
        let client = wingkv_security::client::ClientTls::new(tls).map_err(bad)?;
        let server = ServerTls::new(tls).map_err(bad)?;
        Ok((Some(client), Some(Security { tls: server, policy })))
    }
}

/// A server's metrics source plus the count of requests its authorization refused.
struct WithRefusals {
    inner: Arc<dyn MetricsSource>,
    refusals: Arc<Refusals>,
}

impl MetricsSource for WithRefusals {
    fn collect(&self, out: &mut Scrape) {
        self.inner.collect(out);
        for (reason, count) in [("plaintext", &self.refusals.plaintext), ("denied", &self.refusals.denied)] {
            out.counter(
                "wingkv_refused_requests_total",
                "Requests refused by authorization: plaintext on a secure server, or a peer its policy denies",
                &[("reason", reason)],
                count.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }
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
        let (routes, health) = add_introspection(spec.routes, spec.service_names, spec.reflection).await?;
        let refusals = Arc::new(Refusals::default());
        let source = Arc::new(WithRefusals { inner: spec.source, refusals: refusals.clone() });
        let http = MetricsHttpServer::spawn(&spec.http_listen, spec.metrics.clone(), source, shutdown.clone())?;
        let http_file = spec.data_dir.join(HTTP_ADDRESS_FILE);
        if let Err(e) = std::fs::write(&http_file, http.local_addr().to_string()) {
            // The endpoint already runs: stop it and wait for it before failing.
            shutdown.cancel();
            http.wait().await;
            return Err(WingError::Storage(format!("cannot write {}: {e}", http_file.display())));
        }
        let service_names = spec.service_names.iter().map(|s| s.to_string()).collect();
        let (tls, policy) = match spec.security {
            Some(s) => (Some(s.tls), Some(s.policy)),
            None => (None, None),
        };
        let router = tonic::transport::Server::builder()
            .layer(RpcMetricsLayer::new(spec.metrics))
            .layer(AuthorizeLayer::new(policy, refusals))
            .add_routes(routes);
        let incoming = wingkv_security::server::incoming(spec.listener, tls);
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
    with_reflection: bool,
) -> Result<(Routes, tonic_health::server::HealthReporter), WingError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // The empty name is the whole server, which health probes ask about by default.
    for name in services.iter().copied().chain([""]) {
        reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    if !with_reflection {
        return Ok((routes.add_service(health), reporter));
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
