//! Errors of loading, issuing and checking certificates.

use std::path::PathBuf;

/// What went wrong with a certificate, a key or a TLS setting.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {what}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A TLS setting rustls refused (e.g. a key that does not match its certificate).
    #[error("TLS: {0}")]
    Tls(String),
    /// Issuing a certificate failed.
    #[error("cannot issue the certificate: {0}")]
    Issue(String),
    /// A name not fit for a certificate (empty, or with characters a name must not hold).
    #[error("{0}")]
    InvalidName(String),
}
