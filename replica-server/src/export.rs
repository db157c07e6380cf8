//! The export of a partition for a backup (DESIGN §9): the live records of one applied log
//! index, as SST files a restore ingests all at once.
//!
//! The export reads a RocksDB checkpoint of the replica's DB (hard links of its files, taken
//! after a flush), opened as a DB of its own and flushed again: one consistent point, whose files
//! no compaction of the live DB can remove while they are read or uploaded.
//!
//! RocksDB's SST files are immutable, so where one of the checkpoint's data files holds exactly
//! the live records of its key range, the file itself is the export of that range: linked and
//! uploaded as it is, not rewritten. That holds when no other file of the checkpoint overlaps it
//! (nothing newer shadows a key of it, nothing older lies under it) and every key in it has
//! sequence number 0 — files a bulk load ingested (written by an `SstFileWriter`) and files a
//! compaction wrote into the last level. A table loaded in bulk and not written since is
//! exported as a copy of its files. The key ranges between reused files are rewritten from the
//! checkpoint's view with an `SstFileWriter` (records expired by the view's log clock left out).
//!
//! Every exported file covers a key range no other one touches, so a restore ingests them in
//! one call, each into the last level with sequence number 0 — which is what RocksDB requires
//! to take files a DB wrote (see [`crate::bulk_load::ingest`]). Reused files keep their records
//! expired since they were written; reads never show an expired record, and the restored table's
//! compactions drop them.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Options, SstFileWriter, DB};
use tokio_util::sync::CancellationToken;
use wingkv_common::value::{is_expired, stored_expire_ts};
use wingkv_common::WingError;

use crate::snapshot::{decode_applied, decode_log_clock, KEY_LAST_APPLIED, KEY_LOG_CLOCK};
use crate::store::{cf, data_cf, CF_APPLIED, CF_DATA};

/// Read-ahead of an export's pass over the data it rewrites.
const EXPORT_READAHEAD_BYTES: usize = 4 << 20;

/// The checkpoint's directory inside an export's directory.
const CHECKPOINT_DIR: &str = "checkpoint";

/// Block cache of the opened checkpoint (index and filter blocks; data blocks bypass it).
const CHECKPOINT_CACHE_BYTES: usize = 16 << 20;

/// How an export writes its files.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// Bytes at which a rewritten file is closed and the next one started.
    pub file_bytes: u64,
    /// Whether the checkpoint's files that hold exactly the live records of their range are
    /// exported as they are (`bulk_load.backup_reuse_files`); when not, everything is rewritten.
    pub reuse_files: bool,
}

/// One file of an export, announced once complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    /// Its name in the export's directory (and on the provider).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is one of the DB's own files named `sst-{unique id}.sst` after the id RocksDB
    /// gives every SST file: exports holding that name hold the same file, whichever replica
    /// made them (a bulk load's files are the same files on every replica), so an earlier
    /// backup's copy can stand for it. A DB file without a unique id is exported as it is too,
    /// under a name of the export's own, and this is false.
    pub by_unique_id: bool,
}

/// What [`export_partition`] wrote: the applied log index of the view it read, and its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// The applied log index of the view the files hold.
    pub applied_index: u64,
    /// The files in the export's directory, in key order.
    pub files: Vec<ExportedFile>,
    /// Records written into rewritten files.
    pub records: u64,
    /// How many of `files` are the checkpoint's own files, reused.
    pub reused_files: usize,
    /// Their bytes.
    pub reused_bytes: u64,
}

fn storage_err(what: &str, e: impl std::fmt::Display) -> WingError {
    WingError::Storage(format!("{what}: {e}"))
}

fn stopped() -> WingError {
    WingError::Unavailable("the export was stopped".into())
}

/// Exports the live records of `db` at one point in time into SST files in `dir` (rewritten
/// ones named `{prefix}{n}.sst`), calling `on_file` as each one is complete (so it can be
/// uploaded while the next is made). Blocking: call from a blocking thread. Stops with
/// `Unavailable` when `stop` is cancelled. The checkpoint is gone when this returns; the files
/// stay in `dir` (reused ones as hard links, which take no space of their own).
pub fn export_partition(
    db: &DB,
    dir: &Path,
    prefix: &str,
    options: ExportOptions,
    stop: &CancellationToken,
    on_file: &mut dyn FnMut(&ExportedFile),
) -> Result<Export, WingError> {
    let checkpoint = dir.join(CHECKPOINT_DIR);
    let result = (|| {
        rocksdb::checkpoint::Checkpoint::new(db)?.create_checkpoint(&checkpoint)?;
        let view = open_checkpoint(&checkpoint)?;
        export_view(&view, &checkpoint, dir, prefix, options, stop, on_file)
    })();
    if let Err(e) = std::fs::remove_dir_all(&checkpoint) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove the backup checkpoint {}: {e}", checkpoint.display());
        }
    }
    result
}

/// Opens the checkpoint at `path` (every column family of the replica's DB) and flushes its
/// data column family, so every record of its view is in a file: what the WAL it holds replays
/// must be found by the overlap test like any other record.
fn open_checkpoint(path: &Path) -> Result<DB, WingError> {
    let names = DB::list_cf(&Options::default(), path)?;
    let mut cf_options = Options::default();
    // Nothing but this export reads it: no compaction is wanted.
    cf_options.set_disable_auto_compactions(true);
    // Index and filter blocks in a small cache, not in memory per open file: a partition's
    // files may hold more of them than a replica server should keep for one export.
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(CHECKPOINT_CACHE_BYTES));
    table.set_cache_index_and_filter_blocks(true);
    cf_options.set_block_based_table_factory(&table);
    let descriptors: Vec<_> = names.iter().map(|n| ColumnFamilyDescriptor::new(n, cf_options.clone())).collect();
    let mut db_options = Options::default();
    db_options.set_max_background_jobs(1);
    let view = DB::open_cf_descriptors(&db_options, path, descriptors)?;
    view.flush_cf(data_cf(&view)?)?;
    Ok(view)
}

/// One data file of the checkpoint: where it is and the user keys it spans.
struct DataFile {
    path: PathBuf,
    start: Vec<u8>,
    end: Vec<u8>,
    size: u64,
    /// Its unique id (hex), read when it is found reusable.
    unique_id: Option<String>,
}

/// The checkpoint's data files that hold exactly the live records of their key range, in key
/// order (see the module's documentation).
fn reusable_files(view: &DB, checkpoint: &Path) -> Result<Vec<DataFile>, WingError> {
    let mut files: Vec<DataFile> = Vec::new();
    for f in view.live_files()? {
        if f.column_family_name != CF_DATA {
            continue;
        }
        let (Some(start), Some(end)) = (f.start_key, f.end_key) else { continue };
        let path = checkpoint.join(f.name.trim_start_matches('/'));
        files.push(DataFile { path, start, end, size: f.size as u64, unique_id: None });
    }
    files.sort_by(|a, b| a.start.cmp(&b.start));
    let mut reusable = Vec::new();
    // Sorted by start: a file overlaps an earlier one when some earlier end reaches its start,
    // and a later one when the next file starts within it.
    let mut earlier_end: Option<Vec<u8>> = None;
    let mut alone = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let overlaps_earlier = earlier_end.as_ref().is_some_and(|e| *e >= f.start);
        let overlaps_later = files.get(i + 1).is_some_and(|next| next.start <= f.end);
        alone.push(!overlaps_earlier && !overlaps_later);
        if earlier_end.as_ref().is_none_or(|e| *e < f.end) {
            earlier_end = Some(f.end.clone());
        }
    }
    for (mut f, alone) in files.into_iter().zip(alone) {
        if !alone {
            continue;
        }
        let props =
            wingkv_rocksdb_ext::sst_file_properties(&f.path).map_err(|e| storage_err("a checkpoint file", e))?;
        if props.all_seqnos_zero() && props.entries > 0 {
            f.unique_id = props.unique_id;
            reusable.push(f);
        }
    }
    Ok(reusable)
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Writes the export of the opened checkpoint `view` (whose files are in `checkpoint`) into `dir`.
fn export_view(
    view: &DB,
    checkpoint: &Path,
    dir: &Path,
    prefix: &str,
    options: ExportOptions,
    stop: &CancellationToken,
    on_file: &mut dyn FnMut(&ExportedFile),
) -> Result<Export, WingError> {
    let applied = cf(view, CF_APPLIED)?;
    let (last, _) = decode_applied(view.get_cf(applied, KEY_LAST_APPLIED)?, None)?;
    let clock = decode_log_clock(view.get_cf(applied, KEY_LOG_CLOCK)?)?;
    let mut out = Export { applied_index: last.map(|l| l.index).unwrap_or(0), ..Default::default() };
    let reused = if options.reuse_files { reusable_files(view, checkpoint)? } else { Vec::new() };
    let mut writer = RangeWriter { dir, prefix, file_bytes: options.file_bytes, on_file, out: &mut out };
    // The key space in order: the range before each reused file is rewritten, then the file
    // is linked; then the range after the last.
    let mut lower: Option<Vec<u8>> = None;
    for file in &reused {
        writer.rewrite(view, lower.take(), Some(file.start.clone()), clock, stop)?;
        if stop.is_cancelled() {
            return Err(stopped());
        }
        writer.link(file)?;
        lower = Some(successor(&file.end));
    }
    writer.rewrite(view, lower, None, clock, stop)?;
    Ok(out)
}

/// Writes an export's files in key order and announces each.
struct RangeWriter<'a> {
    dir: &'a Path,
    prefix: &'a str,
    file_bytes: u64,
    on_file: &'a mut dyn FnMut(&ExportedFile),
    out: &'a mut Export,
}

impl RangeWriter<'_> {
    fn next_name(&self) -> String {
        format!("{}{}.sst", self.prefix, self.out.files.len())
    }

    fn announce(&mut self, file: ExportedFile) {
        (self.on_file)(&file);
        self.out.files.push(file);
    }

    /// Exports checkpoint file `file` as it is (a hard link), named after its unique id (after
    /// the export when it has none: such a file is never copied from an earlier backup).
    fn link(&mut self, file: &DataFile) -> Result<(), WingError> {
        let (name, by_id) = match &file.unique_id {
            Some(id) => (format!("sst-{id}.sst"), true),
            None => (self.next_name(), false),
        };
        std::fs::hard_link(&file.path, self.dir.join(&name)).map_err(|e| storage_err("link a checkpoint file", e))?;
        self.out.reused_files += 1;
        self.out.reused_bytes += file.size;
        self.announce(ExportedFile { name, size: file.size, by_unique_id: by_id });
        Ok(())
    }

    /// Rewrites the live records of `[lower, upper)` into files of about `file_bytes`; the
    /// last one ends with the range, so no file spans a reused one.
    fn rewrite(
        &mut self,
        view: &DB,
        lower: Option<Vec<u8>>,
        upper: Option<Vec<u8>>,
        clock: u32,
        stop: &CancellationToken,
    ) -> Result<(), WingError> {
        let mut opts = Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // One pass over everything: read ahead, and keep nothing in the block cache.
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        read.set_readahead_size(EXPORT_READAHEAD_BYTES);
        if let Some(lower) = lower {
            read.set_iterate_lower_bound(lower);
        }
        if let Some(upper) = upper {
            read.set_iterate_upper_bound(upper);
        }
        let mut it = view.raw_iterator_cf_opt(data_cf(view)?, read);
        it.seek_to_first();
        let mut writer: Option<(SstFileWriter, String)> = None;
        let mut n = 0u64;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            n += 1;
            if n.is_multiple_of(4096) && stop.is_cancelled() {
                return Err(stopped());
            }
            if !stored_expire_ts(v).is_some_and(|ts| clock > 0 && is_expired(ts, clock)) {
                let (w, _) = match writer.as_mut() {
                    Some(w) => w,
                    None => {
                        let name = self.next_name();
                        let w = SstFileWriter::create(&opts);
                        w.open(self.dir.join(&name))?;
                        writer.insert((w, name))
                    }
                };
                w.put(k, v)?;
                self.out.records += 1;
                if w.file_size() >= self.file_bytes {
                    if let Some((w, name)) = writer.take() {
                        self.finish(w, name)?;
                    }
                }
            }
            it.next();
        }
        it.status()?;
        if let Some((w, name)) = writer.take() {
            self.finish(w, name)?;
        }
        Ok(())
    }

    fn finish(&mut self, mut w: SstFileWriter, name: String) -> Result<(), WingError> {
        w.finish()?;
        let size = std::fs::metadata(self.dir.join(&name)).map_err(|e| storage_err("stat an exported file", e))?.len();
        self.announce(ExportedFile { name, size, by_unique_id: false });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::snapshot::checksum;
    use crate::store::SharedStorage;
    use openraft::{CommittedLeaderId, LogId};
    use wingkv_common::raft::encode;
    use wingkv_common::value::encode_value;

    const CLOCK: u32 = 100_000;

    fn key(i: usize) -> Vec<u8> {
        wingkv_common::key::encode_key(format!("h{i:06}").as_bytes(), b"s").unwrap()
    }

    /// Values that do not compress, so 1 MiB files roll.
    fn value(seed: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed as u64;
        let v: Vec<u8> = (0..1_000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect();
        encode_value(0, &v)
    }

    fn set_applied(db: &DB, index: u64) {
        let ap = cf(db, CF_APPLIED).unwrap();
        let log_id: LogId<wingkv_common::raft::NodeId> = LogId::new(CommittedLeaderId::new(3, 1), index);
        db.put_cf(ap, KEY_LAST_APPLIED, encode(&Some(log_id)).unwrap()).unwrap();
        db.put_cf(ap, KEY_LOG_CLOCK, CLOCK.to_be_bytes()).unwrap();
    }

    /// Bulk-loads keys `range` into `db` as files of `per_file` keys (each its own range).
    fn bulk_load(db: &DB, dir: &Path, range: std::ops::Range<usize>, per_file: usize) {
        let mut paths = Vec::new();
        let keys: Vec<usize> = range.collect();
        for (n, chunk) in keys.chunks(per_file).enumerate() {
            let path = dir.join(format!("load-{}-{n}.sst", chunk[0]));
            let opts = Options::default();
            let mut w = SstFileWriter::create(&opts);
            w.open(&path).unwrap();
            for &i in chunk {
                w.put(key(i), value(i)).unwrap();
            }
            w.finish().unwrap();
            paths.push(path);
        }
        db.ingest_external_file_cf(data_cf(db).unwrap(), paths).unwrap();
    }

    fn run_export(db: &DB, reuse_files: bool) -> (tempfile::TempDir, Export) {
        let out = tempfile::tempdir().unwrap();
        let mut announced = Vec::new();
        let options = ExportOptions { file_bytes: 1 << 20, reuse_files };
        let export = export_partition(db, out.path(), "n1-", options, &CancellationToken::new(), &mut |f| {
            announced.push(f.clone())
        })
        .unwrap();
        assert_eq!(announced, export.files, "every file is announced once complete, in order");
        assert!(!out.path().join(CHECKPOINT_DIR).exists(), "the checkpoint is removed");
        (out, export)
    }

    /// Restores `export` into a fresh DB the way a restore does, and answers its checksum.
    fn restore(storage: &SharedStorage, out: &Path, export: &Export) -> (u64, u64) {
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = storage.open(&dst_dir.path().join("db")).unwrap();
        let files: Vec<_> = export
            .files
            .iter()
            .map(|f| wingkv_common::bulk_load::FileMeta {
                name: f.name.clone(),
                size: f.size,
                digest: wingkv_common::file_digest::FileDigest::of(wingkv_common::file_digest::DigestKind::Xxh3, b""),
            })
            .collect();
        crate::bulk_load::ingest::verify_with_rocksdb(out, &files).unwrap();
        crate::bulk_load::ingest::ingest_files(&dst, out, &files, false).unwrap();
        dst.put_cf(cf(&dst, CF_APPLIED).unwrap(), KEY_LOG_CLOCK, CLOCK.to_be_bytes()).unwrap();
        let (_, count, digest) = checksum(&dst, &CancellationToken::new()).unwrap();
        (count, digest)
    }

    #[test]
    fn a_bulk_loaded_partition_is_exported_as_its_own_files() {
        let storage = SharedStorage::new(StorageConfig::default());
        let src_dir = tempfile::tempdir().unwrap();
        let src = storage.open(&src_dir.path().join("db")).unwrap();
        bulk_load(&src, src_dir.path(), 0..3_000, 1_000);
        set_applied(&src, 9);
        let (out, export) = run_export(&src, true);
        assert_eq!(export.applied_index, 9);
        assert_eq!((export.reused_files, export.files.len(), export.records), (3, 3, 0), "{export:?}");
        // Named after the files: a second export has the same names.
        assert!(export.files.iter().all(|f| f.by_unique_id && f.name.starts_with("sst-")), "{export:?}");
        let (_, again) = run_export(&src, true);
        assert_eq!(again.files, export.files);
        let (_, count, digest) = checksum(&src, &CancellationToken::new()).unwrap();
        assert_eq!(restore(&storage, out.path(), &export), (count, digest));
        assert_eq!(count, 3_000);
    }

    #[test]
    fn files_under_newer_writes_are_rewritten_and_the_rest_reused() {
        let storage = SharedStorage::new(StorageConfig::default());
        let src_dir = tempfile::tempdir().unwrap();
        let src = storage.open(&src_dir.path().join("db")).unwrap();
        // Four bulk-loaded files of 1000 keys; then writes within the second file's range
        // (an update, a delete, a new key, an expired record) stay in the memtable, which the
        // checkpoint flushes: that file is rewritten with them, the other three are reused.
        bulk_load(&src, src_dir.path(), 0..4_000, 1_000);
        let data = data_cf(&src).unwrap();
        src.put_cf(data, key(1_500), encode_value(0, b"updated")).unwrap();
        src.delete_cf(data, key(1_501)).unwrap();
        let mut new_key = key(1_502);
        new_key.push(b'x');
        src.put_cf(data, &new_key, encode_value(0, b"new")).unwrap();
        src.put_cf(data, key(1_503), encode_value(1, b"expired")).unwrap();
        set_applied(&src, 12);
        let (out, export) = run_export(&src, true);
        assert_eq!(export.reused_files, 3, "{export:?}");
        assert_eq!(export.records, 999, "the rewritten range: 1000 - delete - expired + new");
        let (_, count, digest) = checksum(&src, &CancellationToken::new()).unwrap();
        assert_eq!(count, 3_999);
        assert_eq!(restore(&storage, out.path(), &export), (count, digest));

        // Nothing reused: the same records.
        let (out, all) = run_export(&src, false);
        assert_eq!((all.reused_files, all.records), (0, 3_999), "{all:?}");
        assert_eq!(restore(&storage, out.path(), &all), (count, digest));
    }

    #[test]
    fn compacted_files_are_reused_and_a_stopped_export_leaves_no_checkpoint() {
        let storage = SharedStorage::new(StorageConfig::default());
        let src_dir = tempfile::tempdir().unwrap();
        let src = storage.open(&src_dir.path().join("db")).unwrap();
        let data = data_cf(&src).unwrap();
        for i in 0..3_000 {
            src.put_cf(data, key(i), value(i)).unwrap();
        }
        src.flush_cf(data).unwrap();
        // A compaction into the last level zeroes every key's sequence number.
        let mut compact = rocksdb::CompactOptions::default();
        compact.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        src.compact_range_cf_opt::<&[u8], &[u8]>(data, None, None, &compact);
        set_applied(&src, 30);
        let (out, export) = run_export(&src, true);
        assert!(export.reused_files >= 1 && export.records == 0, "{export:?}");
        let (_, count, digest) = checksum(&src, &CancellationToken::new()).unwrap();
        assert_eq!(restore(&storage, out.path(), &export), (count, digest));

        let stopped = CancellationToken::new();
        stopped.cancel();
        let again = tempfile::tempdir().unwrap();
        let options = ExportOptions { file_bytes: 1 << 20, reuse_files: true };
        let err = export_partition(&src, again.path(), "n1-", options, &stopped, &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), wingkv_common::ErrorCode::Unavailable);
        assert!(!again.path().join(CHECKPOINT_DIR).exists());
    }
}
