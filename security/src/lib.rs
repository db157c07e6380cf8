//! Mutual TLS for wingkv: every connection, client to server and server to server, is TLS 1.3
//! with a certificate from the cluster's CA on both sides, and the certificate says who the peer
//! is (see [`identity`]): a server of a role (meta, replica) or a user.
//!
//! - [`certs`] issues the CA, server and user certificates (`wingkv cert`).
//! - [`server`] accepts connections for a tonic server: TLS ones carry the peer's [`Identity`]
//!   into every request; a plaintext one on a secure server is kept so that it can be told
//!   "this server requires TLS" instead of seeing a broken connection.
//! - [`client`] connects tonic channels over TLS, presenting this process's certificate.
//! - [`authorize`] refuses, by gRPC method and identity, what a peer may not call.
//! - Certificate files are read again when they change ([`reload`]): rotation without restart.

pub mod authorize;
pub mod certs;
pub mod client;
pub mod config;
pub mod error;
pub mod identity;
mod reload;
pub mod server;
mod verify;

pub use config::TlsConfig;
pub use error::SecurityError;
pub use identity::{Identity, Peer, Role};

/// The TLS protocol versions wingkv speaks: 1.3 only.
pub(crate) static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The crypto provider of every TLS config here (ring).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
