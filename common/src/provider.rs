//! Remote stores that bulk-load files come from, through `object_store`: `local` (a directory:
//! `/` by default on a plaintext cluster, named by the operator on a secure one), `s3` (any
//! S3-compatible endpoint) and `memory` (tests).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::WingError;

/// Where the providers point.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Directory the `local` provider's paths are relative to (`/`: `-r /data/bl` reads
    /// `/data/bl/...`). Unset: `/` on a plaintext server; a secure server has no default (it
    /// would let any admin read every file the server can), so its `local` provider refuses
    /// until this is set.
    pub local_root: Option<PathBuf>,
    /// The `s3` provider.
    pub s3: S3Config,
}

impl ProviderConfig {
    /// A config whose `local` provider reads under `root`.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self { local_root: Some(root.into()), ..Default::default() }
    }

    /// Gives an unset `local_root` its plaintext default, `/`; a `secure` server keeps it
    /// unset, so that only a root the operator named is ever read.
    pub fn default_local_root(&mut self, secure: bool) {
        if !secure && self.local_root.is_none() {
            self.local_root = Some(PathBuf::from("/"));
        }
    }
}

/// The `s3` provider; unset fields come from the standard `AWS_*` environment variables.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL (e.g. `http://127.0.0.1:9000` for a local server).
    pub endpoint: Option<String>,
    /// Bucket that holds the bulk-load root (`AWS_BUCKET` when unset).
    pub bucket: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Credentials (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` when unset); the secret is
    /// never logged.
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP (local test servers).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    // Configs end up in logs: the secret never does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Size of the chunks a `local` provider reads files in.
const LOCAL_READ_CHUNK_BYTES: usize = 1 << 20;

/// Where `location` of provider `kind` lies on this machine's file system: `Some` only for the
/// `local` provider, by `object_store`'s own mapping. A writer that has the file locally can
/// then copy it in the kernel (`copy_file_range`) instead of through a user-space buffer.
pub fn local_path(kind: &str, config: &ProviderConfig, location: &object_store::path::Path) -> Option<PathBuf> {
    if kind != "local" {
        return None;
    }
    let local = object_store::local::LocalFileSystem::new_with_prefix(config.local_root.as_ref()?).ok()?;
    local.path_to_filesystem(location).ok()
}

/// Syncs a file the `local` provider holds, and its directory: `object_store`'s local puts never
/// sync, so a writer whose file must survive a crash (a backup's metadata, its `backup_info`)
/// calls this after the put. Blocking.
pub fn sync_local_file(path: &std::path::Path) -> Result<(), WingError> {
    let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(path).map_err(|e| WingError::Storage(format!("sync {}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    sync(dir).map_err(|e| WingError::Storage(format!("sync directory {}: {e}", dir.display())))
}

/// Opens the provider named `kind` (`local`, `s3`, `memory`).
pub fn open_provider(kind: &str, config: &ProviderConfig) -> Result<Arc<dyn ObjectStore>, WingError> {
    let err = |e: object_store::Error| WingError::InvalidArgument(format!("provider '{kind}': {e}"));
    match kind {
        "local" => {
            let root = config.local_root.as_ref().ok_or_else(|| {
                WingError::InvalidArgument(
                    "the local provider has no root on this secure cluster: set local_root in the server's \
                     provider config ([bulk_load_provider] of a meta, [bulk_load.provider] of a replica)"
                        .into(),
                )
            })?;
            std::fs::create_dir_all(root)
                .map_err(|e| WingError::InvalidArgument(format!("local provider root {}: {e}", root.display())))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(root).map_err(err)?;
            // Read in 1 MiB chunks: the default 8 KiB makes a blocking-pool trip per 8 KiB,
            // which bounded bulk-load downloads at a fraction of the disk's speed.
            Ok(Arc::new(object_store::chunked::ChunkedStore::new(Arc::new(local), LOCAL_READ_CHUNK_BYTES)))
        }
        "s3" => {
            let s3 = &config.s3;
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_allow_http(s3.allow_http);
            if let Some(v) = &s3.endpoint {
                b = b.with_endpoint(v);
            }
            if let Some(v) = &s3.bucket {
                b = b.with_bucket_name(v);
            }
            b = b.with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()));
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &s3.secret_access_key {
                b = b.with_secret_access_key(v);
            }
            Ok(Arc::new(b.build().map_err(err)?))
        }
        "memory" => Ok(Arc::new(object_store::memory::InMemory::new())),
        other => {
            Err(WingError::InvalidArgument(format!("unknown bulk-load provider '{other}' (use local, s3 or memory)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s3_secret_never_shows_in_debug_output() {
        let s3 = S3Config { secret_access_key: Some("hunter2-secret".into()), ..Default::default() };
        let shown = format!("{:?}", ProviderConfig { s3, ..Default::default() });
        assert!(!shown.contains("hunter2-secret") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_local_location_maps_to_its_file_and_no_other_provider_does() {
        let dir = tempfile::tempdir().unwrap();
        let config = ProviderConfig::local(dir.path());
        let at = object_store::path::Path::from("backups/onebox/t/backup/7/3");
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(local_path("local", &config, &at), Some(root.join("backups/onebox/t/backup/7/3")));
        assert_eq!(local_path("s3", &config, &at), None);
        assert_eq!(local_path("local", &ProviderConfig::default(), &at), None, "no root, no path");
    }

    #[test]
    fn a_secure_server_reads_no_local_root_it_was_not_given() {
        let mut secure = ProviderConfig::default();
        secure.default_local_root(true);
        let e = open_provider("local", &secure).err().unwrap().to_string();
        assert!(e.contains("no root") && e.contains("local_root"), "{e}");
        let mut plaintext = ProviderConfig::default();
        plaintext.default_local_root(false);
        assert_eq!(plaintext.local_root.as_deref(), Some(std::path::Path::new("/")));
        let mut named = ProviderConfig::local("/srv/bulk");
        named.default_local_root(true);
        assert_eq!(named.local_root.as_deref(), Some(std::path::Path::new("/srv/bulk")));
    }

    #[test]
    fn providers() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ProviderConfig::local(dir.path());
        open_provider("local", &cfg).unwrap();
        open_provider("memory", &cfg).unwrap();
        let e = open_provider("ftp", &cfg).err().unwrap();
        assert!(e.to_string().contains("unknown bulk-load provider 'ftp'"), "{e}");
    }
}
