//! The replica side of bulk load: downloading a partition's SST files from the provider
//! ([`download`]), the per-job owner of those downloads ([`loader::BulkLoader`]), and the
//! ingestion of verified files when the `IngestSst` command is applied ([`ingest`]).
//!
//! The rule that makes bulk load unable to crash a node: bulk-load state (metadata, local
//! files) is cleared only after the job's `CancellationToken` is cancelled and its
//! `TaskTracker` closed **and awaited** — no download task can outlive the state it writes to,
//! and everything is keyed by job id so an old job's task can never touch a newer job's files.

pub mod download;
pub mod ingest;
pub mod loader;
pub mod slot;

use std::path::{Path, PathBuf};

/// The directory of `job_id`'s files inside a replica directory.
pub fn job_dir(replica_dir: &Path, job_id: u64) -> PathBuf {
    replica_dir.join("bulk_load").join(job_id.to_string())
}

/// What the state machine needs to fetch files again at ingestion time.
pub struct BulkLoadEnv {
    /// Where the providers point.
    pub provider: wingkv_common::provider::ProviderConfig,
    /// Node-wide download limits.
    pub limits: std::sync::Arc<loader::DownloadLimits>,
    /// Fired when the server shuts down, to stop a fetch inside an apply.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl BulkLoadEnv {
    /// The environment described by `config`.
    pub fn new(config: &crate::config::BulkLoadConfig, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Self {
            provider: config.provider.clone(),
            limits: std::sync::Arc::new(loader::DownloadLimits {
                limiter: download::RateLimiter::new(config.download_bytes_per_sec),
                slots: tokio::sync::Semaphore::new(config.max_concurrent_downloads.max(1)),
                min_free_bytes: config.min_free_disk_bytes,
                retry: config.retry,
                retries: Default::default(),
            }),
            shutdown,
        }
    }
}
