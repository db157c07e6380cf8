//! Ingesting a job's verified SST files into a replica's RocksDB (blocking; called while the
//! `IngestSst` log entry is applied, so every replica ingests at the same log index).

use std::path::Path;

use rocksdb::{IngestExternalFileOptions, DB};
use wingkv_common::bulk_load::FileMeta;
use wingkv_common::WingError;

use crate::store::data_cf;

/// Checks that every file of `files` is in `dir` with its size.
pub fn files_present(dir: &Path, files: &[FileMeta]) -> bool {
    files.iter().all(|f| std::fs::metadata(dir.join(&f.name)).is_ok_and(|m| m.len() == f.size))
}

/// Ingests `files` from `dir` into the data column family of `db`, atomically (all or none).
/// Bad files are `Corruption` (the same on every replica); anything else is `Storage`.
/// The files are moved into the DB. `ingest_behind` puts the rows below all existing data (the
/// DB must have been opened with `allow_ingest_behind`).
pub fn ingest_files(db: &DB, dir: &Path, files: &[FileMeta], ingest_behind: bool) -> Result<(), WingError> {
    let paths: Vec<std::path::PathBuf> = files.iter().filter(|f| f.size > 0).map(|f| dir.join(&f.name)).collect();
    if paths.is_empty() {
        return Ok(());
    }
    let mut opts = IngestExternalFileOptions::default();
    opts.set_move_files(true);
    opts.set_ingest_behind(ingest_behind);
    db.ingest_external_file_cf_opts(data_cf(db)?, &opts, paths).map_err(|e| {
        let msg = format!("cannot ingest the bulk-load files in {}: {}", dir.display(), e.clone().into_string());
        match e.kind() {
            // The files themselves are bad: every replica (same md5) fails the same way.
            rocksdb::ErrorKind::Corruption | rocksdb::ErrorKind::InvalidArgument | rocksdb::ErrorKind::NotSupported => {
                WingError::Corruption(msg)
            }
            _ => WingError::Storage(msg),
        }
    })
}
