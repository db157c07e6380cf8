//! Ingesting a job's verified SST files into a replica's RocksDB (blocking; called while the
//! `IngestSst` log entry is applied, so every replica ingests at the same log index).
//!
//! RocksDB takes hard links of the files (`move_files`), made in a directory of their own, so
//! the job's directory keeps its verified copies (the same inodes, no extra disk) for the
//! members that may still need them (see `super::tidy`).
//!
//! Files a DB wrote (a backup's reused files, see [`crate::export`]) are taken with RocksDB's
//! `allow_db_generated_files`, chosen by the files themselves: every replica holds the same
//! bytes (verified by their digest), so every replica ingests alike or is refused alike.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{IngestExternalFileOptions, DB};
use wingkv_common::bulk_load::FileMeta;
use wingkv_common::WingError;

use crate::store::data_cf;

/// The file in a job's directory that records the log index the job was ingested at.
pub const INGESTED_AT: &str = "ingested_at";

/// Distinguishes the link directories of ingestions (a retry never meets a leftover).
static LINK_SEQ: AtomicU64 = AtomicU64::new(0);

/// Ingests `files` from `dir` into the data column family of `db`, atomically (all or none).
/// Bad files are `Corruption`; anything else is `Storage`. The files in `dir` stay.
/// `ingest_behind` puts the rows below all existing data (the DB must have been opened with
/// `allow_ingest_behind`).
pub fn ingest_files(db: &DB, dir: &Path, files: &[FileMeta], ingest_behind: bool) -> Result<(), WingError> {
    let names: Vec<&str> = files.iter().filter(|f| f.size > 0).map(|f| f.name.as_str()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let links = dir.join(format!("ingest-{}-{}", std::process::id(), LINK_SEQ.fetch_add(1, Ordering::Relaxed)));
    let storage = |what: &str, e: std::io::Error| WingError::Storage(format!("{what} {}: {e}", links.display()));
    std::fs::create_dir_all(&links).map_err(|e| storage("create", e))?;
    let result = (|| {
        let mut paths = Vec::with_capacity(names.len());
        for name in &names {
            let link = links.join(name);
            std::fs::hard_link(dir.join(name), &link).map_err(|e| storage("link into", e))?;
            paths.push(link);
        }
        let mut opts = ingest_options(&paths)?;
        opts.set_ingest_behind(ingest_behind);
        db.ingest_external_file_cf_opts(data_cf(db)?, &opts, paths).map_err(|e| {
            let msg = format!("cannot ingest the bulk-load files in {}: {}", dir.display(), e.clone().into_string());
            match e.kind() {
                // The files themselves, or the request, are refused: the same on every replica
                // (the files were verified by their digest on each replica's disk).
                rocksdb::ErrorKind::Corruption
                | rocksdb::ErrorKind::InvalidArgument
                | rocksdb::ErrorKind::NotSupported
                | rocksdb::ErrorKind::TryAgain => WingError::Corruption(msg),
                _ => WingError::Storage(msg),
            }
        })
    })();
    let _ = std::fs::remove_dir_all(&links);
    result
}

/// The options that ingest `paths` by moving them: with `allow_db_generated_files` when any of
/// them was written by a DB rather than an `SstFileWriter` (RocksDB then takes them only if
/// every key's sequence number is 0 and no two files, nor a file and the data there, overlap).
/// A file whose bytes are not an SST file is `Corruption`; one that cannot be read is `Storage`.
fn ingest_options(paths: &[PathBuf]) -> Result<IngestExternalFileOptions, WingError> {
    let mut opts = IngestExternalFileOptions::default();
    opts.set_move_files(true);
    let mut db_generated = false;
    for path in paths {
        match wingkv_rocksdb_ext::sst_file_properties(path) {
            Ok(props) => db_generated |= !props.by_sst_file_writer,
            Err(e @ wingkv_rocksdb_ext::Error::Io { .. }) => return Err(WingError::Storage(e.to_string())),
            Err(e) => return Err(WingError::Corruption(e.to_string())),
        }
    }
    if db_generated {
        wingkv_rocksdb_ext::allow_db_generated_files(&mut opts, true);
    }
    Ok(opts)
}

/// Has RocksDB take `files` of `dir` together, as the replicas' ingestion will, by ingesting
/// links to them into a scratch DB (blocking): files that overlap, or DB-written files with
/// sequence numbers, are refused here (`Corruption`, with RocksDB's reason) rather than by
/// every replica at the ingestion's log index. Each file's blocks were checked when it was
/// downloaded (`super::download`); the records are not read again here.
pub fn verify_with_rocksdb(dir: &Path, files: &[FileMeta]) -> Result<(), WingError> {
    let names: Vec<&str> = files.iter().filter(|f| f.size > 0).map(|f| f.name.as_str()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let scratch = dir.join(format!("verify-{}-{}", std::process::id(), LINK_SEQ.fetch_add(1, Ordering::Relaxed)));
    let storage = |what: &str, e: String| WingError::Storage(format!("{what} in {}: {e}", scratch.display()));
    let result = (|| {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, scratch.join("db")).map_err(|e| storage("open a scratch DB", e.into_string()))?;
        let mut links = Vec::with_capacity(names.len());
        for name in &names {
            let link = scratch.join(name);
            std::fs::hard_link(dir.join(name), &link).map_err(|e| storage("link", e.to_string()))?;
            links.push(link);
        }
        let refused = |e: rocksdb::Error| {
            WingError::Corruption(format!("the files of {} are refused by RocksDB: {}", dir.display(), e.into_string()))
        };
        let ingest = ingest_options(&links)?;
        db.ingest_external_file_opts(&ingest, links).map_err(refused)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Records in job directory `dir` that the job was ingested at log index `index` (synced).
pub fn record_ingested_at(dir: &Path, index: u64) -> Result<(), WingError> {
    crate::durable::replace_file(&dir.join(INGESTED_AT), index.to_string().as_bytes())
}

/// The log index job directory `dir` was ingested at, if it was.
pub fn ingested_at(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(INGESTED_AT)).ok()?.trim().parse().ok()
}
