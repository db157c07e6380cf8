//! Streaming one remote file to disk: chunk by chunk, under a node-wide bandwidth limit,
//! cancellable between chunks, verified (size and digest of what arrived, RocksDB's block
//! checksums of what is on disk) before it is renamed into place.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wingkv_common::bulk_load::FileMeta;
use wingkv_common::file_digest::{digest_file, ContentHasher, FileDigest};
use wingkv_common::WingError;

use super::io_pool::BulkIoPool;
use super::loader::DownloadLimits;
use super::source::FileSource;

/// Bytes gathered before one write to the downloaded file.
const WRITE_BUFFER_BYTES: usize = 4 << 20;

/// A token bucket shared by every download of a node; 0 bytes/s = unlimited.
pub struct RateLimiter {
    bytes_per_sec: u64,
    state: tokio::sync::Mutex<(Instant, f64)>,
}

impl RateLimiter {
    /// A limiter of `bytes_per_sec` (0 = no limit).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec, state: tokio::sync::Mutex::new((Instant::now(), bytes_per_sec as f64)) }
    }

    /// Waits until `n` bytes may pass.
    pub async fn acquire(&self, n: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let rate = self.bytes_per_sec as f64;
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            // Refill, capped at one second's worth so an idle period cannot bank a burst.
            s.1 = (s.1 + now.duration_since(s.0).as_secs_f64() * rate).min(rate);
            s.0 = now;
            s.1 -= n as f64;
            if s.1 < 0.0 {
                Duration::from_secs_f64(-s.1 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Distinguishes the temp files of concurrent downloads of one file name (a retry racing a
/// late task of a stopped attempt never shares a temp file).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Downloads file `name` of `source` to `dest`, counting bytes into `progress`. The data goes
/// to a temp file of its own first; only a file whose size and digest match `expected` as the
/// stream delivered it, and whose blocks read back from the disk pass RocksDB's checksums,
/// becomes `dest`. On any failure or cancellation the partial file is removed.
#[allow(clippy::too_many_arguments)]
pub async fn download_file(
    source: &dyn FileSource,
    name: &str,
    dest: &Path,
    expected: &FileMeta,
    limits: &DownloadLimits,
    progress: &AtomicU64,
    cancel: &CancellationToken,
) -> Result<(), WingError> {
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dest.with_file_name(format!("{}.{}.{seq}.tmp", name, std::process::id()));
    let mut counted = 0;
    let result = fetch(source, name, &tmp, expected, limits, progress, &mut counted, cancel).await;
    if result.is_err() {
        // The partial file goes, and so do its bytes in the progress (a retry counts them again).
        progress.fetch_sub(counted, Ordering::Relaxed);
    }
    match result {
        Ok(()) => tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| WingError::Storage(format!("rename {}: {e}", tmp.display()))),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch(
    source: &dyn FileSource,
    name: &str,
    tmp: &Path,
    expected: &FileMeta,
    limits: &DownloadLimits,
    progress: &AtomicU64,
    counted: &mut u64,
    cancel: &CancellationToken,
) -> Result<(), WingError> {
    let remote = source.describe(name);
    let canceled = || WingError::InvalidState(format!("download of {remote} canceled"));
    let mut stream = tokio::select! {
        _ = cancel.cancelled() => return Err(canceled()),
        r = source.open(name) => r?,
    };
    let file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| WingError::Storage(format!("create {}: {e}", tmp.display())))?
        .into_std()
        .await;
    // Providers stream small chunks (8 KiB from a local store): they are gathered, then written
    // and hashed off the runtime in large pieces.
    let mut writer = Some(PacedWriter::new(file, tmp, expected.digest.hasher()));
    let mut pending: Vec<bytes::Bytes> = Vec::new();
    let mut pending_bytes = 0;
    let mut size = 0u64;
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => return Err(canceled()),
            c = stream.next() => c,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > expected.size {
            return Err(WingError::Corruption(format!(
                "{remote} is larger than the {} bytes its metadata says",
                expected.size
            )));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(canceled()),
            _ = limits.limiter.acquire(chunk.len() as u64) => {}
        }
        pending_bytes += chunk.len();
        progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        *counted += chunk.len() as u64;
        pending.push(chunk);
        if pending_bytes >= WRITE_BUFFER_BYTES {
            // Awaited even on a cancel: the write ends before its file can be removed.
            PacedWriter::write(&limits.io, &mut writer, std::mem::take(&mut pending), false).await?;
            pending_bytes = 0;
        }
        // Race window: a clear, pause or close arriving while a task is between two chunks.
        fail::fail_point!("bulk_load::between_chunks");
    }
    let got = PacedWriter::write(&limits.io, &mut writer, pending, true).await?;
    if size != expected.size {
        return Err(WingError::Corruption(format!("{remote} has {size} bytes; its metadata says {}", expected.size)));
    }
    if !got.matches(&expected.digest) {
        return Err(WingError::Corruption(format!("{remote} has {got}; its metadata says {}", expected.digest)));
    }
    // What is ingested is the file on disk, not the stream: RocksDB reads it back and checks
    // every block's checksum (far cheaper than a second md5, and it also refuses an SST whose
    // blocks were damaged before the provider's digest was taken).
    let (path, want) = (tmp.to_path_buf(), expected.clone());
    limits.io.run(move || check_on_disk(&path, &want, &remote)).await?
}

/// Checks the downloaded file at `path` as RocksDB will read it: every block's checksum. When
/// that fails the file's digest tells why: the file still matches `expected` (the provider's
/// file itself is damaged: `Corruption`, permanent) or it does not (the local disk did not keep
/// what was written: `Storage`, retried). Empty files are allowed and not read.
fn check_on_disk(path: &Path, expected: &FileMeta, remote: &str) -> Result<(), WingError> {
    use wingkv_rocksdb_ext::Error;
    if expected.size == 0 {
        return Ok(());
    }
    match wingkv_rocksdb_ext::verify_sst_checksums(path) {
        Ok(()) => Ok(()),
        Err(Error::Unreadable { reason, .. }) if file_matches(path, expected) => {
            Err(WingError::Corruption(format!("{remote} is not an SST file, or a damaged one: {reason}")))
        }
        Err(Error::Unreadable { reason, .. }) => Err(WingError::Storage(format!(
            "{} does not read back as written ({} differs; RocksDB: {reason})",
            path.display(),
            expected.digest.kind().name()
        ))),
        Err(e) => Err(WingError::Storage(e.to_string())),
    }
}

/// A downloaded file being written on the bulk-load I/O threads: hashed as written, and
/// flushed to the disk as it goes, so that a download never holds more than two pieces of
/// [`WRITEBACK_BYTES`] of dirty pages. Left to the page cache, gigabytes of them would be flushed at once, by the file's
/// `fsync` or by the kernel, and every other `fsync` of the node (the raft log's, which each
/// write of every table waits for) would queue behind that flush for seconds.
struct PacedWriter {
    file: std::fs::File,
    path: std::path::PathBuf,
    hasher: ContentHasher,
    /// Bytes written so far; the offset up to which writeback was started; and the offset up
    /// to which it is known done.
    written: u64,
    started: u64,
    done: u64,
}

/// Dirty bytes a download leaves to the page cache before it starts their writeback.
const WRITEBACK_BYTES: u64 = 8 << 20;

impl PacedWriter {
    fn new(file: std::fs::File, path: &Path, hasher: ContentHasher) -> Self {
        Self { file, path: path.to_path_buf(), hasher, written: 0, started: 0, done: 0 }
    }

    /// Writes `chunks` on one of `io`'s threads (and, when `last`, syncs the file); answers the
    /// digest of everything written so far. The writer travels to the thread and back; it is
    /// gone (and every later call fails) if that thread failed.
    async fn write(
        io: &BulkIoPool,
        slot: &mut Option<Self>,
        chunks: Vec<bytes::Bytes>,
        last: bool,
    ) -> Result<FileDigest, WingError> {
        let mut w = slot.take().ok_or_else(|| WingError::Internal("a failed download write is not retried".into()))?;
        let (w, result) = io
            .run(move || {
                let r = w.write_blocking(&chunks, last);
                (w, r)
            })
            .await?;
        let digest = result.map(|()| w.hasher.digest());
        *slot = Some(w);
        digest
    }

    fn write_blocking(&mut self, chunks: &[bytes::Bytes], last: bool) -> Result<(), WingError> {
        use std::io::Write;
        let err = |what: &str, e: std::io::Error| WingError::Storage(format!("{what} {}: {e}", self.path.display()));
        for c in chunks {
            self.hasher.update(c);
            self.file.write_all(c).map_err(|e| err("write", e))?;
            self.written += c.len() as u64;
        }
        if last {
            return self.file.sync_all().map_err(|e| err("sync", e));
        }
        if self.written - self.started >= WRITEBACK_BYTES {
            // Starts the writeback of what was just written, then waits for the one started
            // last time: at most two pieces of this file are dirty at once, and the download
            // goes at the disk's pace.
            self.writeback(self.started, self.written - self.started, false).map_err(|e| err("flush", e))?;
            self.writeback(self.done, self.started - self.done, true).map_err(|e| err("flush", e))?;
            self.done = self.started;
            self.started = self.written;
        }
        Ok(())
    }

    /// Starts the writeback of `len` bytes at `offset`; with `wait`, also waits until they are
    /// on the disk (their data; the file's size and metadata are synced at the end).
    #[cfg(target_os = "linux")]
    fn writeback(&self, offset: u64, len: u64, wait: bool) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Ok(());
        }
        let mut flags = libc::SYNC_FILE_RANGE_WRITE;
        if wait {
            flags |= libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        }
        // SAFETY: a valid open descriptor; the call only reads its arguments.
        let rc = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset as i64, len as i64, flags) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn writeback(&self, _offset: u64, len: u64, wait: bool) -> std::io::Result<()> {
        if wait && len > 0 {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// Whether a file this replica downloaded and verified is still whole at `path`: it has
/// `meta`'s size and every block passes RocksDB's checksum (blocking: reads it whole, at the
/// cost of a checksum rather than of a digest). Its digest was checked as it arrived; the job's
/// directory has one owner (its slot), so what can change the file since is the disk, which
/// the checksums see.
pub fn file_intact(path: &Path, meta: &FileMeta) -> bool {
    file_sized(path, meta) && (meta.size == 0 || wingkv_rocksdb_ext::verify_sst_checksums(path).is_ok())
}

/// Whether the file at `path` has `meta`'s size (blocking: one `stat`).
pub fn file_sized(path: &Path, meta: &FileMeta) -> bool {
    std::fs::metadata(path).map(|m| m.len()).ok() == Some(meta.size)
}

/// Whether the file at `path` has `meta`'s size and digest (blocking: reads it whole).
pub fn file_matches(path: &Path, meta: &FileMeta) -> bool {
    if !file_sized(path, meta) {
        return false;
    }
    digest_file(path, meta.digest.kind()).is_ok_and(|(size, digest)| size == meta.size && digest.matches(&meta.digest))
}

/// Whether a download error may pass by itself (the provider was unreachable, slow or
/// throttling): such a download is retried with backoff. A missing or bad file, a bad name or
/// a local disk error is permanent and fails the job with its reason.
pub fn is_transient(e: &WingError) -> bool {
    e.code().is_retryable()
}
