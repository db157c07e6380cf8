//! This process's certificate and key, read again when their files change: an operator rotates
//! a certificate by replacing the files, and new connections present the new one without a
//! restart (connections already open keep theirs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::SecurityError;

/// How long a look at the files' modification times is trusted: a handshake stats the two
/// files at most this often.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type Stamp = (Option<SystemTime>, Option<SystemTime>);

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// A certificate and key pair kept current with its files.
pub(crate) struct ReloadingKey {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for ReloadingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingKey").field("cert", &self.cert).field("key", &self.key).finish()
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(cert), mtime(key))
}

/// Reads a PEM certificate chain (end entity first) and its private key.
pub(crate) fn load_certified(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, SecurityError> {
    let bad = |path: &Path, what: String| SecurityError::BadPem { path: path.to_path_buf(), what };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("bad certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert, "holds no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, format!("no private key: {e}")))?;
    CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| bad(key, format!("unusable key for {}: {e}", cert.display())))
}

impl ReloadingKey {
    /// Loads the pair now (an error if it is unusable).
    pub(crate) fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, SecurityError> {
        let s = stamp(cert, key);
        let loaded = load_certified(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            loaded: RwLock::new(Loaded { key: Arc::new(loaded), stamp: s, checked: Instant::now() }),
        })
    }

    /// The current pair: reloaded first if the files changed since they were last read. A pair
    /// that does not load (a rotation half done: a new certificate with the old key) keeps the
    /// previous one in use, and is tried again at the next check.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        {
            let Ok(l) = self.loaded.read() else { return self.poisoned() };
            if l.checked.elapsed() < CHECK_EVERY {
                return l.key.clone();
            }
        }
        let Ok(mut l) = self.loaded.write() else { return self.poisoned() };
        if l.checked.elapsed() >= CHECK_EVERY {
            l.checked = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != l.stamp {
                match load_certified(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert.display(), "certificate reloaded");
                        l.key = Arc::new(k);
                        l.stamp = now;
                    }
                    Err(e) => tracing::warn!("certificate change not taken (the previous one stays): {e}"),
                }
            }
        }
        l.key.clone()
    }

    fn poisoned(&self) -> Arc<CertifiedKey> {
        // A panic while the lock was held cannot leave a half-written pair: take it anyway.
        match self.loaded.read() {
            Ok(l) => l.key.clone(),
            Err(p) => p.into_inner().key.clone(),
        }
    }
}

impl rustls::server::ResolvesServerCert for ReloadingKey {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingKey {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
