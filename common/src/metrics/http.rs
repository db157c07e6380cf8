//! The HTTP side of a server: `/metrics` (Prometheus text) and `/health` (liveness).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::{MetricsSource, ServerMetrics};
use crate::WingError;

/// Name of the file in a server's data dir holding the address of its HTTP endpoint; written
/// before the gRPC address file, so whoever waits for the server finds both.
pub const HTTP_ADDRESS_FILE: &str = "http.addr";

/// The address others reach an HTTP endpoint bound at `bound` at: the advertised host of the
/// server (a wildcard bind address reaches nobody) with the bound port.
pub fn http_advertise_address(advertise: &str, bound: SocketAddr) -> String {
    match advertise.rsplit_once(':') {
        Some((host, _)) if bound.ip().is_unspecified() => format!("{host}:{}", bound.port()),
        _ => bound.to_string(),
    }
}

/// Where the HTTP endpoint listens: `configured` when set; otherwise the gRPC port + 10000 on
/// the same host (DESIGN §1), or any free port when the gRPC port was picked by the OS.
pub fn http_listen_address(
    configured: Option<&str>,
    grpc_listen: &str,
    grpc_bound: SocketAddr,
) -> Result<String, WingError> {
    if let Some(addr) = configured {
        return Ok(addr.to_string());
    }
    // The port as configured (a host name is fine here): 0 means the OS picked the gRPC port.
    let asked_any = grpc_listen.rsplit_once(':').is_some_and(|(_, port)| port.trim() == "0");
    if asked_any {
        return Ok(SocketAddr::new(grpc_bound.ip(), 0).to_string());
    }
    let port = u32::from(grpc_bound.port()) + 10_000;
    let port = u16::try_from(port).map_err(|_| {
        WingError::InvalidArgument(format!(
            "gRPC port {} + 10000 is not a port: set http_listen for the /metrics endpoint",
            grpc_bound.port()
        ))
    })?;
    Ok(SocketAddr::new(grpc_bound.ip(), port).to_string())
}

/// The HTTP endpoint of a server, on its own task until the shutdown token fires.
pub struct MetricsHttpServer {
    addr: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl MetricsHttpServer {
    /// Binds `listen` and serves `/metrics` from `metrics` + `source`, and `/health`.
    pub fn spawn(
        listen: &str,
        metrics: Arc<ServerMetrics>,
        source: Arc<dyn MetricsSource>,
        shutdown: CancellationToken,
    ) -> Result<Self, WingError> {
        let listener = crate::net::bind(listen)?;
        let addr = listener.local_addr().map_err(|e| WingError::Internal(e.to_string()))?;
        let router = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let (metrics, source) = (metrics.clone(), source.clone());
                    async move {
                        // RocksDB property reads are quick but blocking: off the runtime.
                        match tokio::task::spawn_blocking(move || metrics.render(source.as_ref())).await {
                            Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                                .into_response(),
                            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")).into_response(),
                        }
                    }
                }),
            )
            .route("/health", get(|| async { "ok\n" }));
        let handle = tokio::spawn(async move {
            let served = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::warn!("HTTP metrics endpoint stopped: {e}");
            }
        });
        Ok(Self { addr, handle })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the endpoint to stop (after the shutdown token fired).
    pub async fn wait(self) {
        if let Err(e) = self.handle.await {
            tracing::warn!("HTTP metrics task failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_address_follows_the_grpc_port() {
        let bound: SocketAddr = "127.0.0.1:34801".parse().unwrap();
        assert_eq!(http_listen_address(None, "127.0.0.1:34801", bound).unwrap(), "127.0.0.1:44801");
        assert_eq!(http_listen_address(Some("0.0.0.0:9100"), "127.0.0.1:34801", bound).unwrap(), "0.0.0.0:9100");
        let any: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(http_listen_address(None, "127.0.0.1:0", any).unwrap(), "127.0.0.1:0");
        assert_eq!(http_listen_address(None, "localhost:0", any).unwrap(), "127.0.0.1:0");
        let high: SocketAddr = "127.0.0.1:60000".parse().unwrap();
        let err = http_listen_address(None, "127.0.0.1:60000", high).unwrap_err().to_string();
        assert!(err.contains("http_listen"), "{err}");
        let wild: SocketAddr = "0.0.0.0:44801".parse().unwrap();
        assert_eq!(http_advertise_address("10.1.2.3:34801", wild), "10.1.2.3:44801");
        assert_eq!(http_advertise_address("10.1.2.3:34801", bound), "127.0.0.1:34801");
    }
}
