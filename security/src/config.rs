//! Where a process finds its TLS files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[tls]` section of a server's config (and the SDK's TLS setting): the cluster's CA, and
/// this process's certificate and private key, all PEM. With it, a server accepts only TLS
/// connections from certificates of that CA and connects to its peers the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate every peer's certificate must be issued by.
    pub ca_file: PathBuf,
    /// This process's certificate (read again when it changes).
    pub cert_file: PathBuf,
    /// Its private key (read again when it changes).
    pub key_file: PathBuf,
}
