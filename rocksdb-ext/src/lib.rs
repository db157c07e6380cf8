//! What wingkv needs of RocksDB beyond what rust-rocksdb offers: calls of RocksDB's C++
//! API that its C API does not expose, through a small shim (`src/shim.cc`) compiled against
//! the same RocksDB sources librocksdb-sys builds.
//!
//! - [`sst_file_properties`]: how an SST file was made (by `SstFileWriter` or by a DB), the
//!   largest sequence number of its keys and its unique id, read from its table properties.
//! - [`allow_db_generated_files`]: lets an ingestion take files a DB wrote
//!   (`IngestExternalFileOptions::allow_db_generated_files`, RocksDB's experimental option),
//!   which is how a backup made of a DB's own files is restored.
//! - [`verify_sst_checksums`]: reads a whole SST file and checks every block's checksum, much
//!   as `sst_dump --command=verify` does, without decompressing or iterating its records.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use rocksdb::IngestExternalFileOptions;

extern "C" {
    fn wingkv_ingest_options_set_allow_db_generated_files(options: *mut c_void, allow: u8);
    fn wingkv_sst_file_properties(
        path: *const c_char,
        key_largest_seqno: *mut u64,
        entries: *mut u64,
        by_sst_file_writer: *mut u8,
        unique_id: *mut u8,
        unique_id_len: *mut usize,
        error: *mut *mut c_char,
    ) -> c_int;
    fn wingkv_sst_verify_checksums(path: *const c_char, error: *mut *mut c_char) -> c_int;
    fn wingkv_free(p: *mut c_char);
}

/// Why an SST file's properties could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path cannot be passed to RocksDB (it holds a NUL byte or is not UTF-8).
    #[error("the path {0} cannot be passed to RocksDB")]
    BadPath(PathBuf),
    /// The file could not be read (missing, or a failed read): the same bytes may read later.
    #[error("cannot read the SST file {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// RocksDB's reason.
        reason: String,
    },
    /// The file's bytes are not an SST file RocksDB can read: they never will be.
    #[error("{path} is not a readable SST file: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// RocksDB's reason.
        reason: String,
    },
}

/// What an SST file's table properties say about how it can be ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SstFileProperties {
    /// The largest sequence number of the keys written in the file; `None` when the file
    /// predates the property. Files an `SstFileWriter` made hold 0; a DB's files hold 0 only
    /// where a compaction into the last level zeroed them.
    pub key_largest_seqno: Option<u64>,
    /// Entries, range deletions included.
    pub entries: u64,
    /// Written by an `SstFileWriter` (ingestible as is), not by a DB.
    pub by_sst_file_writer: bool,
    /// The file's unique id (RocksDB's, from what its properties say it is made of: the DB or
    /// writer session and the file number), in hex; `None` for files that predate it. Copies
    /// of one file have the same id; two files with the same id are copies of one file.
    pub unique_id: Option<String>,
}

impl SstFileProperties {
    /// Whether an ingestion with [`allow_db_generated_files`] takes the file into an empty
    /// key range: every key's sequence number is 0 (RocksDB refuses any other).
    pub fn all_seqnos_zero(&self) -> bool {
        self.key_largest_seqno == Some(0)
    }
}

/// Reads the table properties of the SST file at `path` (blocking: it opens the file).
pub fn sst_file_properties(path: &Path) -> Result<SstFileProperties, Error> {
    let c_path = c_path(path)?;
    let (mut seqno, mut entries, mut by_writer) = (0u64, 0u64, 0u8);
    let (mut id, mut id_len) = ([0u8; 24], 0usize);
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: the shim reads `c_path` (NUL-terminated, alive for the call) and writes only
    // through the out pointers, which point to locals (`id` has the 24 bytes it may write).
    let rc = unsafe {
        wingkv_sst_file_properties(
            c_path.as_ptr(),
            &mut seqno,
            &mut entries,
            &mut by_writer,
            id.as_mut_ptr(),
            &mut id_len,
            &mut error,
        )
    };
    if rc != 0 {
        return Err(shim_error(path, rc, error));
    }
    Ok(SstFileProperties {
        key_largest_seqno: (seqno != u64::MAX).then_some(seqno),
        entries,
        by_sst_file_writer: by_writer != 0,
        unique_id: (id_len == id.len()).then(|| id.iter().map(|b| format!("{b:02x}")).collect()),
    })
}

/// Reads the whole SST file at `path` and checks the checksum of every block and of its footer
/// (blocking). A file that is not an SST, or whose bytes differ from what its writer wrote, is
/// [`Error::Unreadable`]; a failed read is [`Error::Io`].
pub fn verify_sst_checksums(path: &Path) -> Result<(), Error> {
    let c_path = c_path(path)?;
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: the shim reads `c_path` (NUL-terminated, alive for the call) and writes only
    // `error`.
    let rc = unsafe { wingkv_sst_verify_checksums(c_path.as_ptr(), &mut error) };
    if rc != 0 {
        return Err(shim_error(path, rc, error));
    }
    Ok(())
}

/// `path` as the shim takes it: UTF-8 without NUL bytes.
fn c_path(path: &Path) -> Result<CString, Error> {
    path.to_str().and_then(|s| CString::new(s).ok()).ok_or_else(|| Error::BadPath(path.to_path_buf()))
}

/// The error a shim call answered `rc` (1: unreadable, 2: I/O) with `error`, which it frees.
fn shim_error(path: &Path, rc: c_int, error: *mut c_char) -> Error {
    let reason = if error.is_null() {
        "no reason given".to_string()
    } else {
        // SAFETY: a non-null `error` is a NUL-terminated string malloc'd by the shim, freed
        // once, here.
        let reason = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
        unsafe { wingkv_free(error) };
        reason
    };
    let path = path.to_path_buf();
    if rc == 2 {
        Error::Io { path, reason }
    } else {
        Error::Unreadable { path, reason }
    }
}

// rust-rocksdb's `IngestExternalFileOptions` is one pointer to the C API's options object
// (`pub(crate) inner`): a struct of one field that is as large as that field holds it at offset
// 0. Checked here, at compile time, so a rust-rocksdb that changes the struct fails the build
// rather than the shim writing through something else.
const _: () = assert!(std::mem::size_of::<IngestExternalFileOptions>() == std::mem::size_of::<*mut c_void>());

/// Sets `IngestExternalFileOptions::allow_db_generated_files` on `options`: the ingestion takes
/// files written by a DB, not only by an `SstFileWriter`, provided every key of every file has
/// sequence number 0 and the files overlap neither each other nor the data already there
/// (RocksDB checks both and refuses the ingestion otherwise).
pub fn allow_db_generated_files(options: &mut IngestExternalFileOptions, allow: bool) {
    // SAFETY: see the assertion above: the struct's bytes are the C API's pointer, which
    // `IngestExternalFileOptions::default()` made and which lives as long as `options`.
    unsafe {
        let raw = std::ptr::read((options as *mut IngestExternalFileOptions).cast::<*mut c_void>());
        wingkv_ingest_options_set_allow_db_generated_files(raw, u8::from(allow));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::{Options, SstFileWriter, DB};

    fn write_sst(path: &Path, keys: &[&[u8]]) {
        let opts = Options::default();
        let mut w = SstFileWriter::create(&opts);
        w.open(path).unwrap();
        for k in keys {
            w.put(k, b"v").unwrap();
        }
        w.finish().unwrap();
    }

    /// The files of the data a DB holds after a full compaction (every key's seqno zeroed).
    fn compacted_db_files(dir: &Path, keys: &[&[u8]]) -> Vec<PathBuf> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_disable_auto_compactions(true);
        let db = DB::open(&opts, dir).unwrap();
        for k in keys {
            db.put(k, b"v").unwrap();
        }
        db.flush().unwrap();
        let mut compact = rocksdb::CompactOptions::default();
        compact.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        db.compact_range_opt::<&[u8], &[u8]>(None, None, &compact);
        db.live_files().unwrap().iter().map(|f| dir.join(f.name.trim_start_matches('/'))).collect()
    }

    #[test]
    fn tells_writer_files_from_db_files_and_their_seqnos() {
        let tmp = tempfile::tempdir().unwrap();
        let sst = tmp.path().join("w.sst");
        write_sst(&sst, &[b"a", b"b"]);
        let p = sst_file_properties(&sst).unwrap();
        assert!(p.by_sst_file_writer && p.all_seqnos_zero() && p.entries == 2, "{p:?}");
        // A copy is the same file; another file (same content, another writer) is not.
        let copy = tmp.path().join("copy.sst");
        std::fs::copy(&sst, &copy).unwrap();
        let other = tmp.path().join("other.sst");
        write_sst(&other, &[b"a", b"b"]);
        let id = p.unique_id.clone().unwrap();
        assert_eq!(id.len(), 48);
        assert_eq!(sst_file_properties(&copy).unwrap().unique_id, Some(id.clone()));
        assert_ne!(sst_file_properties(&other).unwrap().unique_id, Some(id));

        // Flushed, not compacted: the keys keep their sequence numbers.
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let flushed = tmp.path().join("flushed");
        let db = DB::open(&opts, &flushed).unwrap();
        db.put(b"k", b"v").unwrap();
        db.flush().unwrap();
        let file = flushed.join(db.live_files().unwrap()[0].name.trim_start_matches('/'));
        let p = sst_file_properties(&file).unwrap();
        assert!(!p.by_sst_file_writer && !p.all_seqnos_zero(), "{p:?}");

        let files = compacted_db_files(&tmp.path().join("compacted"), &[b"x", b"y"]);
        let p = sst_file_properties(&files[0]).unwrap();
        assert!(!p.by_sst_file_writer && p.all_seqnos_zero(), "{p:?}");

        let err = sst_file_properties(&tmp.path().join("missing.sst")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing.sst"), "{err}");
        let junk = tmp.path().join("junk.sst");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let err = sst_file_properties(&junk).unwrap_err();
        assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    }

    #[test]
    fn an_ingestion_takes_db_files_only_when_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let files = compacted_db_files(&tmp.path().join("src"), &[b"x", b"y"]);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let dst = DB::open(&opts, tmp.path().join("dst")).unwrap();

        let mut ingest = IngestExternalFileOptions::default();
        let refused = dst.ingest_external_file_opts(&ingest, files.clone()).unwrap_err();
        assert!(refused.to_string().contains("version"), "{refused}");

        allow_db_generated_files(&mut ingest, true);
        dst.ingest_external_file_opts(&ingest, files).unwrap();
        assert_eq!(dst.get(b"y").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_damaged_block_is_found_by_the_checksums_and_missed_by_an_ingestion() {
        let tmp = tempfile::tempdir().unwrap();
        let sst = tmp.path().join("big.sst");
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("key{i:06}").into_bytes()).collect();
        {
            let opts = Options::default();
            let mut w = SstFileWriter::create(&opts);
            w.open(&sst).unwrap();
            for k in &keys {
                w.put(k, [b'v'; 100]).unwrap();
            }
            w.finish().unwrap();
        }
        verify_sst_checksums(&sst).unwrap();
        // One byte of a data block in the middle of the file: an ingestion reads only the first
        // and last keys, the index and the properties, and takes it.
        let mut bytes = std::fs::read(&sst).unwrap();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x40;
        let damaged = tmp.path().join("damaged.sst");
        std::fs::write(&damaged, &bytes).unwrap();
        let err = verify_sst_checksums(&damaged).unwrap_err();
        assert!(matches!(err, Error::Unreadable { .. }) && err.to_string().contains("damaged.sst"), "{err}");
        assert!(err.to_string().to_lowercase().contains("checksum"), "{err}");

        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, tmp.path().join("db")).unwrap();
        db.ingest_external_file_opts(&IngestExternalFileOptions::default(), vec![damaged]).unwrap();

        // Not an SST at all; missing.
        let junk = tmp.path().join("junk.sst");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        assert!(matches!(verify_sst_checksums(&junk), Err(Error::Unreadable { .. })));
        assert!(matches!(verify_sst_checksums(&tmp.path().join("missing.sst")), Err(Error::Io { .. })));
    }
}
