//! The gRPC channels of a process, shared by its clients and its raft groups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::MutexExt;
use tonic::transport::{Channel, Endpoint};
use wingkv_security::client::ClientTls;

/// Lazily connected gRPC channels by address, shared by every raft group (and every client) of
/// a process, so N groups between two nodes use one HTTP/2 connection. With TLS, every channel
/// is mutual TLS presenting this process's certificate.
#[derive(Clone, Default)]
pub struct ChannelPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTls>,
}

impl ChannelPool {
    /// A pool whose channels use `tls` (plaintext without).
    pub fn new(tls: Option<ClientTls>) -> Self {
        Self { channels: Arc::default(), tls }
    }

    /// The channel to `addr` (`host:port`), created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.channels.locked();
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
            None => endpoint.connect_lazy(),
        };
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
