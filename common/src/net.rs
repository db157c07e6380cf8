//! Listening sockets for the servers.

use std::net::SocketAddr;

use crate::WingError;

/// Binds `addr` (`host:port`, port 0 = any free port) with SO_REUSEADDR, so a restarted server
/// gets its port back at once.
pub fn bind(addr: &str) -> Result<tokio::net::TcpListener, WingError> {
    let bad = |e: std::io::Error| WingError::InvalidArgument(format!("cannot listen on {addr}: {e}"));
    let sock_addr: SocketAddr =
        addr.parse().map_err(|_| WingError::InvalidArgument(format!("listen address '{addr}' is not host:port")))?;
    let socket = if sock_addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(bad)?;
    socket.set_reuseaddr(true).map_err(bad)?;
    socket.bind(sock_addr).map_err(bad)?;
    socket.listen(1024).map_err(bad)
}

/// Name of the file in a server's data dir that holds the address it advertises; written once
/// the server serves, so supervisors and tests can wait for it.
pub const ADDRESS_FILE: &str = "server.addr";

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested");
}

/// A tonic server on its own task; stopping it stops the accept loop and lets in-flight
/// requests finish.
pub struct GrpcServer {
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    /// Serves `router` on `listener` until `shutdown` fires.
    pub fn spawn(
        router: tonic::transport::server::Router,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let handle = tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()));
        Self { shutdown, handle }
    }

    /// Waits until `stop` fires or the server fails by itself, then fires the shutdown token
    /// (which also stops whatever else watches it) and waits for the server to finish.
    pub async fn stop_when(mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), WingError> {
        let early = tokio::select! {
            r = &mut self.handle => Some(r),
            _ = stop => None,
        };
        self.shutdown.cancel();
        let served = match early {
            Some(r) => r,
            None => self.handle.await,
        };
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WingError::Internal(format!("gRPC server failed: {e}"))),
            Err(e) => Err(WingError::Internal(format!("gRPC server task failed: {e}"))),
        }
    }
}
