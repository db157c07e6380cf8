//! Writing the bulk-load layout of [`crate::bulk_load`]: one partition's records, in key order,
//! into SST files rolled at a size limit, that partition's `bulk_load_metadata`, and the table's
//! `bulk_load_info`. `wingkv bulkgen` and the Python package (`wingkv.bulkload`, Spark) write
//! through this one piece, so every producer writes the bytes the replicas verify and ingest.
//!
//! Files are staged in a local directory and uploaded only once a partition is complete, with
//! its metadata after its files and `bulk_load_info` after every partition: a reader never sees
//! a half-written partition as finished, and a rerun of a failed writer overwrites the same
//! names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;

use crate::bulk_load::{BulkLoadInfo, BulkLoadMetadata, FileMeta, BULK_LOAD_INFO, BULK_LOAD_METADATA};
use crate::file_digest::{digest_file, DigestKind};
use crate::hash::partition_index;
use crate::key::{decode_key, encode_key};
use crate::value::encode_value;
use crate::WingError;

/// The SST file size a writer rolls at by default (pegasus-spark's 64 MB).
pub const DEFAULT_FILE_SIZE_LIMIT: u64 = 64 << 20;

/// The partition a writer writes, so each record's hash is checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSlot {
    /// The partition's index.
    pub index: u32,
    /// The table's partition count (a power of two).
    pub count: u32,
}

/// Writes one partition's records, strictly ascending by encoded key, into `{n}.sst` files of
/// about `file_size_limit` bytes in a local staging directory.
pub struct PartitionWriter {
    dir: PathBuf,
    file_size_limit: u64,
    slot: Option<PartitionSlot>,
    open: Option<(rocksdb::SstFileWriter<'static>, PathBuf, String)>,
    files: Vec<FileMeta>,
    last_key: Option<Vec<u8>>,
    records: u64,
}

impl PartitionWriter {
    /// A writer staging its files in `dir` (created if missing). With `slot`, each record of
    /// [`put_record`](Self::put_record) must hash to that partition.
    pub fn new(dir: &Path, file_size_limit: u64, slot: Option<PartitionSlot>) -> Result<Self, WingError> {
        if let Some(s) = slot {
            crate::naming::validate_partition_count(s.count)?;
            if s.index >= s.count {
                return Err(WingError::InvalidArgument(format!(
                    "partition index {} is out of range for {} partitions",
                    s.index, s.count
                )));
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| WingError::Io(format!("create staging directory {}: {e}", dir.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file_size_limit: file_size_limit.max(1),
            slot,
            open: None,
            files: Vec::new(),
            last_key: None,
            records: 0,
        })
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends the user record `(hash_key, sort_key)` with `value` expiring at `expire_ts` (0 =
    /// never). Fails as [`encode_record`](Self::encode_record) does, and on a key that is not
    /// greater than the one before (a duplicate is named as such).
    pub fn put_record(
        &mut self,
        hash_key: &[u8],
        sort_key: &[u8],
        value: &[u8],
        expire_ts: u32,
    ) -> Result<(), WingError> {
        let (key, stored) = self.encode_record(hash_key, sort_key, value, expire_ts)?;
        self.put(&key, &stored)
    }

    /// The encoded key and stored value of a user record, for a caller that sorts before
    /// [`put`](Self::put). Fails on a hash key over 64 KiB and on a record of another partition.
    pub fn encode_record(
        &self,
        hash_key: &[u8],
        sort_key: &[u8],
        value: &[u8],
        expire_ts: u32,
    ) -> Result<(Vec<u8>, Vec<u8>), WingError> {
        let key = encode_key(hash_key, sort_key)?;
        if let Some(s) = self.slot {
            let got = partition_index(hash_key, sort_key, s.count);
            if got != s.index {
                return Err(WingError::InvalidArgument(format!(
                    "record ({}) belongs to partition {got} of {}, not to partition {} this writer writes",
                    show_key(&key),
                    s.count,
                    s.index
                )));
            }
        }
        Ok((key, encode_value(expire_ts, value)))
    }

    /// Appends an encoded key and stored value (see [`crate::key`], [`crate::value`]).
    pub fn put(&mut self, key: &[u8], stored_value: &[u8]) -> Result<(), WingError> {
        if let Some(last) = &self.last_key {
            match key.cmp(last.as_slice()) {
                std::cmp::Ordering::Greater => {}
                std::cmp::Ordering::Equal => {
                    return Err(WingError::InvalidArgument(format!("duplicate key ({})", show_key(key))))
                }
                std::cmp::Ordering::Less => {
                    return Err(WingError::InvalidArgument(format!(
                        "keys out of order: ({}) after ({}); sort the records first",
                        show_key(key),
                        show_key(last)
                    )))
                }
            }
        }
        if self.open.is_none() {
            let name = format!("{}.sst", self.files.len());
            let path = self.dir.join(&name);
            let w = rocksdb::SstFileWriter::create(sst_options());
            w.open(&path).map_err(|e| WingError::Storage(format!("create {}: {e}", path.display())))?;
            self.open = Some((w, path, name));
        }
        let full = match self.open.as_mut() {
            Some((w, path, _)) => {
                w.put(key, stored_value).map_err(|e| WingError::Storage(format!("write {}: {e}", path.display())))?;
                w.file_size() >= self.file_size_limit
            }
            None => false,
        };
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        self.records += 1;
        if full {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> Result<(), WingError> {
        let Some((mut w, path, name)) = self.open.take() else { return Ok(()) };
        w.finish().map_err(|e| WingError::Storage(format!("finish {}: {e}", path.display())))?;
        drop(w);
        // md5: what DESIGN §5 asks of every bulk-load producer.
        let (size, digest) =
            digest_file(&path, DigestKind::Md5).map_err(|e| WingError::Io(format!("read {}: {e}", path.display())))?;
        self.files.push(FileMeta { name, size, digest });
        Ok(())
    }

    /// Closes the last file and answers the partition's metadata (no files for no records).
    pub fn finish(mut self) -> Result<BulkLoadMetadata, WingError> {
        self.close_file()?;
        let files = std::mem::take(&mut self.files);
        Ok(BulkLoadMetadata { file_total_size: files.iter().map(|f| f.size).sum(), files })
    }
}

/// The options of every SST a writer makes (LZ4, RocksDB's defaults otherwise), made once: an
/// `SstFileWriter` borrows its options for as long as it lives.
fn sst_options() -> &'static rocksdb::Options {
    static OPTIONS: std::sync::OnceLock<rocksdb::Options> = std::sync::OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut options = rocksdb::Options::default();
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options
    })
}

/// `hash_key=…, sort_key=…` of an encoded key, escaped, for messages.
fn show_key(key: &[u8]) -> String {
    match decode_key(key) {
        Ok((hk, sk)) => format!("hash_key={}, sort_key={}", escape(hk), escape(sk)),
        Err(_) => format!("key={}", escape(key)),
    }
}

/// At most 64 bytes of `b`, printable ASCII as is and the rest as `\xNN`.
fn escape(b: &[u8]) -> String {
    let shown: String = b.iter().take(64).flat_map(|c| std::ascii::escape_default(*c)).map(char::from).collect();
    if b.len() > 64 {
        format!("'{shown}'… ({} bytes)", b.len())
    } else {
        format!("'{shown}'")
    }
}

/// Uploads partition `pidx`'s staged files from `local`, then its `bulk_load_metadata`, under
/// the table directory `dir` (see [`crate::bulk_load::table_dir`]).
pub async fn upload_partition(
    store: &Arc<dyn ObjectStore>,
    dir: &object_store::path::Path,
    pidx: u32,
    local: &Path,
    meta: &BulkLoadMetadata,
) -> Result<(), WingError> {
    let pdir = dir.child(pidx.to_string());
    for f in &meta.files {
        let path = local.join(&f.name);
        let bytes = tokio::fs::read(&path).await.map_err(|e| WingError::Io(format!("read {}: {e}", path.display())))?;
        put(store, &pdir.child(f.name.as_str()), bytes).await?;
    }
    put(store, &pdir.child(BULK_LOAD_METADATA), json(meta)?).await
}

/// Writes the table's `bulk_load_info` under `dir`: the last step of a producer, once every
/// partition is uploaded.
pub async fn write_info(
    store: &Arc<dyn ObjectStore>,
    dir: &object_store::path::Path,
    info: &BulkLoadInfo,
) -> Result<(), WingError> {
    put(store, &dir.child(BULK_LOAD_INFO), json(info)?).await
}

fn json(value: &impl serde::Serialize) -> Result<Vec<u8>, WingError> {
    serde_json::to_vec(value).map_err(|e| WingError::Internal(format!("encode JSON: {e}")))
}

async fn put(store: &Arc<dyn ObjectStore>, path: &object_store::path::Path, bytes: Vec<u8>) -> Result<(), WingError> {
    store.put(path, bytes.into()).await.map_err(|e| WingError::Io(format!("upload {path}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_files_and_refuses_bad_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartitionWriter::new(dir.path(), 4096, None).unwrap();
        for i in 0..2000u32 {
            w.put_record(format!("k{i:05}").as_bytes(), b"s", &[b'v'; 100], 0).unwrap();
        }
        let e = w.put_record(b"k01999", b"s", b"x", 0).unwrap_err().to_string();
        assert!(e.contains("duplicate key") && e.contains("hash_key='k01999'"), "{e}");
        let e = w.put_record(b"k00001", b"s", b"x", 0).unwrap_err().to_string();
        assert!(e.contains("out of order"), "{e}");
        assert_eq!(w.records(), 2000);
        let meta = w.finish().unwrap();
        assert!(meta.files.len() > 1, "{meta:?}");
        assert_eq!(meta.file_total_size, meta.files.iter().map(|f| f.size).sum::<u64>());
        let first = std::fs::read(dir.path().join("0.sst")).unwrap();
        assert_eq!(meta.files[0].digest, crate::file_digest::FileDigest::md5_of(&first));
    }

    #[test]
    fn records_of_another_partition_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let slot = PartitionSlot { index: partition_index(b"a", b"", 8), count: 8 };
        let mut w = PartitionWriter::new(dir.path(), DEFAULT_FILE_SIZE_LIMIT, Some(slot)).unwrap();
        w.put_record(b"a", b"1", b"v", 0).unwrap();
        let other = (0..100).map(|i| format!("h{i}")).find(|h| partition_index(h.as_bytes(), b"", 8) != slot.index);
        let other = other.unwrap();
        let e = w.put_record(other.as_bytes(), b"1", b"v", 0).unwrap_err().to_string();
        assert!(e.contains("belongs to partition"), "{e}");
        assert!(PartitionWriter::new(dir.path(), 1, Some(PartitionSlot { index: 8, count: 8 })).is_err());
        assert!(PartitionWriter::new(dir.path(), 1, Some(PartitionSlot { index: 0, count: 6 })).is_err());
        assert!(w.finish().unwrap().files.len() == 1);
    }
}
