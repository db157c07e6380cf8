//! The TLS flags of the commands that connect to a cluster (`shell`, `bench`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use wingkv_security::TlsConfig;

/// How to reach a secure cluster: the three files, or a directory of `wingkv cert` output (a
/// secure onebox's `DIR/tls`) and the user whose certificate to present.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// The cluster's CA certificate (PEM).
    #[arg(long, env = "WINGKV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This user's certificate (PEM).
    #[arg(long, env = "WINGKV_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This user's private key (PEM).
    #[arg(long, env = "WINGKV_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// A directory holding `ca.crt` and `USER.crt`/`USER.key` (e.g. a secure onebox's `tls/`).
    #[arg(long, env = "WINGKV_TLS_DIR", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub tls_dir: Option<PathBuf>,
    /// The user whose files `--tls-dir` holds.
    #[arg(long, env = "WINGKV_TLS_USER", default_value = "admin")]
    pub tls_user: String,
}

impl TlsArgs {
    /// The TLS settings the flags give: none, or all three files.
    pub fn config(&self) -> Result<Option<TlsConfig>> {
        if let Some(dir) = &self.tls_dir {
            let user = &self.tls_user;
            return Ok(Some(TlsConfig {
                ca_file: dir.join("ca.crt"),
                cert_file: dir.join(format!("{user}.crt")),
                key_file: dir.join(format!("{user}.key")),
            }));
        }
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(TlsConfig { ca_file: ca.clone(), cert_file: cert.clone(), key_file: key.clone() }))
            }
            _ => bail!("TLS needs all of --tls-ca, --tls-cert and --tls-key (or --tls-dir)"),
        }
    }
}
