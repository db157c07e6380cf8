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

use std::path::{Path, PathBuf};

/// The directory of `job_id`'s files inside a replica directory.
pub fn job_dir(replica_dir: &Path, job_id: u64) -> PathBuf {
    replica_dir.join("bulk_load").join(job_id.to_string())
}
