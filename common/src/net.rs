//! Listening sockets for the servers.

use std::net::SocketAddr;

use crate::WingError;

/// Binds `addr` (`host:port`, port 0 = any free port) with SO_REUSEADDR, so a restarted server
/// gets its port back at once.
pub fn bind(addr: &str) -> Result<tokio::net::TcpListener, WingError> {
    let bad = |e: std::io::Error| WingError::Io(format!("cannot listen on {addr}: {e}"));
    let sock_addr: SocketAddr =
        addr.parse().map_err(|_| WingError::Config(format!("listen address '{addr}' is not host:port")))?;
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
