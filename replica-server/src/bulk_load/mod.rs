//! The replica side of bulk load: where a job's files come from ([`source`]: the provider, or
//! the other members of the group), downloading one of them ([`download`]), the owner of one
//! job's downloads ([`loader::BulkLoader`]), the replica's one owner of all of them
//! ([`slot::BulkLoadSlot`]), the ingestion of verified files when the `IngestSst` command is
//! applied ([`ingest`]), and the release of files no member needs any more ([`tidy`]).
//!
//! The rule that makes bulk load unable to crash a node: bulk-load state (metadata, local
//! files) is cleared only after the job's `CancellationToken` is cancelled and its
//! `TaskTracker` closed **and awaited** — no download task can outlive the state it writes to,
//! and everything is keyed by job id so an old job's task can never touch a newer job's files.

pub mod download;
pub mod ingest;
pub mod io_pool;
pub mod loader;
pub mod slot;
pub mod source;
pub mod tidy;

use std::path::{Path, PathBuf};

/// The directory of `job_id`'s files inside a replica directory.
pub fn job_dir(replica_dir: &Path, job_id: u64) -> PathBuf {
    replica_dir.join("bulk_load").join(job_id.to_string())
}

/// What every replica's bulk loads share on a node.
pub struct BulkLoadEnv {
    /// Where the providers point.
    pub provider: wingkv_common::provider::ProviderConfig,
    /// Node-wide download limits.
    pub limits: std::sync::Arc<loader::DownloadLimits>,
}

/// The meta leader's facts about bulk-load jobs, from its linearizable catalog (heartbeat
/// answers): a job id below `next_job_id` that is not in `live` is finished for good (ids are
/// never reused), so its local files may go once no member needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFacts {
    /// Jobs not finished yet.
    pub live: std::collections::BTreeSet<u64>,
    /// Every job id below this one was handed out.
    pub next_job_id: u64,
}

impl JobFacts {
    /// Whether job `job_id` is positively finished (succeeded, failed, canceled or cleared).
    pub fn is_finished(&self, job_id: u64) -> bool {
        job_id < self.next_job_id && !self.live.contains(&job_id)
    }
}

impl BulkLoadEnv {
    /// The environment described by `config`; fails only if its I/O threads cannot start.
    pub fn new(config: &crate::config::BulkLoadConfig) -> std::io::Result<Self> {
        Ok(Self {
            provider: config.provider.clone(),
            limits: std::sync::Arc::new(loader::DownloadLimits {
                limiter: download::RateLimiter::new(config.download_bytes_per_sec),
                slots: tokio::sync::Semaphore::new(config.max_concurrent_downloads),
                min_free_bytes: config.min_free_disk_bytes,
                retry: config.retry,
                retries: Default::default(),
                max_metadata_bytes: config.max_metadata_bytes,
                max_files: config.max_files_per_partition,
                io: io_pool::BulkIoPool::new(config.max_concurrent_downloads)?,
            }),
        })
    }
}
