//! The connecting side: TLS to a server of the cluster, presenting this process's certificate
//! (a server's own, or a user's), for tonic channels.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::reload::ReloadingKey;
use crate::server::load_roots;
use crate::verify::ClusterServerVerifier;
use crate::{provider, SecurityError, TlsConfig, PROTOCOL_VERSIONS};

/// How long a connection may take, TCP and TLS handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to servers of the cluster over mutual TLS.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// A connector with the files of `config`: the server must present a server certificate
    /// of its CA; this side presents the certificate of `config` (read again when it changes).
    pub fn new(config: &TlsConfig) -> Result<Self, SecurityError> {
        let provider = provider();
        let roots = Arc::new(load_roots(&config.ca_file)?);
        let key = ReloadingKey::load(&config.cert_file, &config.key_file, provider.clone())?;
        let verifier = Arc::new(ClusterServerVerifier { roots, provider: provider.clone() });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|e| SecurityError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(key));
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { connector: tokio_rustls::TlsConnector::from(Arc::new(tls)) })
    }

    /// A TLS connection to `addr` (`host:port`), within [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, addr: &str) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
        let attempt = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            // The name is not checked (see `verify`); SNI needs one, and an address has none.
            let name = ServerName::try_from("wingkv-server").map_err(|e| io::Error::other(e.to_string()))?;
            let tls = self
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {addr} failed: {e}")))?;
            Ok(TokioIo::new(tls))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, format!("no TLS connection to {addr} within {CONNECT_TIMEOUT:?}"))
        })?
    }

    /// The certificate (DER) the server at `addr` presents now: what a client sees after a
    /// rotation.
    pub async fn server_certificate(&self, addr: &str) -> io::Result<Vec<u8>> {
        let tls = self.connect(addr).await?;
        let (_, conn) = tls.inner().get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| io::Error::other(format!("{addr} presented no certificate")))
    }

    /// A tonic connector (`Endpoint::connect_with_connector_lazy`) dialing the endpoint's
    /// `http://host:port` over TLS.
    pub fn connector(
        &self,
    ) -> impl tower::Service<
        http::Uri,
        Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
        Error = io::Error,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let tls = self.clone();
        tower::service_fn(move |uri: http::Uri| {
            let tls = tls.clone();
            async move {
                let host = uri.host().ok_or_else(|| io::Error::other(format!("no host in {uri}")))?;
                let port = uri.port_u16().unwrap_or(80);
                tls.connect(&format!("{host}:{port}")).await
            }
        })
    }
}
