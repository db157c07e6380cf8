//! The accepting side: a TLS acceptor that requires a client certificate of the cluster's CA,
//! and the stream of connections a tonic server serves, each carrying its [`PeerInfo`].

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic::transport::server::Connected;

use crate::identity::{Identity, Peer, PeerInfo};
use crate::reload::ReloadingKey;
use crate::{provider, SecurityError, TlsConfig, PROTOCOL_VERSIONS};

/// How long a new connection has to send its first byte and finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this, accepting waits (a flood of slow handshakes
/// costs a bounded amount of memory).
const MAX_HANDSHAKES: usize = 256;
/// The first byte of a TLS record carrying a handshake (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The CA certificates in the PEM file `path`.
pub fn load_roots(path: &Path) -> Result<RootCertStore, SecurityError> {
    let bad = |what: String| SecurityError::BadPem { path: path.to_path_buf(), what };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(format!("cannot read the CA: {e}")))? {
        let cert = cert.map_err(|e| bad(format!("bad CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no CA certificate".into()));
    }
    Ok(roots)
}

/// The TLS side of a secure server.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl ServerTls {
    /// Mutual TLS 1.3 with the files of `config`: clients must present a certificate of its CA.
    pub fn new(config: &TlsConfig) -> Result<Self, SecurityError> {
        let provider = provider();
        let roots = Arc::new(load_roots(&config.ca_file)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| SecurityError::Tls(format!("client verifier: {e}")))?;
        let key = ReloadingKey::load(&config.cert_file, &config.key_file, provider.clone())?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|e| SecurityError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(key));
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)) })
    }
}

/// One accepted connection, as tonic serves it.
pub enum ServerIo {
    /// A plaintext connection (a server without TLS, or a client that did not speak TLS).
    Plain(TcpStream, PeerInfo),
    /// A TLS connection and the certificate's identity.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl Connected for ServerIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            ServerIo::Plain(_, i) | ServerIo::Tls(_, i) => i.clone(),
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            ServerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            ServerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Plain(s, _) => s.is_write_vectored(),
            ServerIo::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s, _) => Pin::new(s).poll_flush(cx),
            ServerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            ServerIo::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener` for a tonic server (`serve_with_incoming`): with `tls`, each
/// is either TLS with a verified certificate or plaintext marked [`Peer::Plaintext`] (to be
/// refused request by request, with a message a client can show); without, each is plaintext
/// and [`Peer::Unsecured`]. Handshakes run concurrently (at most [`MAX_HANDSHAKES`]) and each
/// has [`HANDSHAKE_TIMEOUT`]. The accepting task ends, aborting the handshakes in progress,
/// when the server drops the stream.
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<ServerIo>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut handshakes = JoinSet::new();
        loop {
            while handshakes.len() >= MAX_HANDSHAKES {
                handshakes.join_next().await;
            }
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // A full file table or a reset before accept: the listener itself is fine.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // With Nagle on, a response written in two pieces waits for the client's delayed ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
            let Some(tls) = tls.clone() else {
                let info = PeerInfo { remote: Some(remote), peer: Peer::Unsecured };
                if tx.send(Ok(ServerIo::Plain(tcp, info))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            handshakes.spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, remote, &tls)).await {
                    Ok(Ok(io)) => {
                        let _ = tx.send(Ok(io)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%remote, "TLS connection refused: {e}"),
                    Err(_) => {
                        tracing::info!(%remote, "TLS connection dropped: no handshake within {HANDSHAKE_TIMEOUT:?}")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn handshake(tcp: TcpStream, remote: SocketAddr, tls: &ServerTls) -> io::Result<ServerIo> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before its first byte"));
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(ServerIo::Plain(tcp, PeerInfo { remote: Some(remote), peer: Peer::Plaintext }));
    }
    let stream = tls.acceptor.accept(tcp).await?;
    let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
    let der = cert.ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no client certificate"))?;
    let identity = Identity::from_certificate(&der).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    let info = PeerInfo { remote: Some(remote), peer: Peer::Certified(Arc::new(identity)) };
    Ok(ServerIo::Tls(Box::new(stream), info))
}
