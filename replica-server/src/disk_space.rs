//! The disk-space guard of client writes: while the filesystem of the data dir (raft log and
//! RocksDB) has less than `reserved_disk_bytes` free, writes are refused with `DiskFull` before
//! they are proposed, and reads go on. Writes resume by themselves once space is freed.
//!
//! Why before proposing: an append that meets ENOSPC fails in the shared raft log, and openraft
//! stops a group whose log fails; the reserve keeps the log's own writes (heartbeat-free raft
//! entries, membership changes, RocksDB flushes and compactions) clear of a full disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wingkv_common::sync::MutexExt;
use wingkv_common::WingError;

/// How long one reading of the free space is trusted: a statvfs per write would cost a syscall
/// each; this bounds how far writes can overshoot the reserve between two readings.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The guard of one replica server's data dir.
#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
    /// The last reading: when, and the free bytes then (`None` = statvfs failed).
    last: Mutex<Option<(Instant, Option<u64>)>>,
    /// Writes refused for want of space.
    pub refused_writes: AtomicU64,
}

impl DiskGuard {
    /// A guard that keeps `reserve` bytes free on the filesystem of `dir`.
    pub fn new(dir: &Path, reserve: u64) -> Self {
        Self { dir: dir.to_path_buf(), reserve, last: Mutex::new(None), refused_writes: AtomicU64::new(0) }
    }

    /// Free bytes of the guarded filesystem now, if it can be asked.
    pub fn free_now(&self) -> Option<u64> {
        free_disk_bytes(&self.dir)
    }

    /// Refuses a write with `DiskFull` while less than the reserve is free.
    pub fn check_write(&self) -> Result<(), WingError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = {
            let mut last = self.last.locked();
            match *last {
                Some((at, free)) if at.elapsed() < SAMPLE_EVERY => free,
                _ => {
                    let free = free_disk_bytes(&self.dir);
                    *last = Some((Instant::now(), free));
                    free
                }
            }
        };
        // A filesystem that cannot be asked is not taken for a full one.
        match free {
            Some(free) if free < self.reserve => {
                self.refused_writes.fetch_add(1, Ordering::Relaxed);
                Err(WingError::DiskFull(format!(
                    "{} has {free} bytes free, under the {} bytes reserved (reserved_disk_bytes); the write was \
                     not applied, reads are served, writes resume once space is freed",
                    self.dir.display(),
                    self.reserve
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Free bytes for unprivileged users on the filesystem of `dir`, if it can be asked.
pub fn free_disk_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_refuses_writes_and_zero_disables_the_guard() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_disk_bytes(dir.path()).unwrap();
        DiskGuard::new(dir.path(), 1).check_write().unwrap();
        DiskGuard::new(dir.path(), 0).check_write().unwrap();
        let full = DiskGuard::new(dir.path(), free.saturating_mul(2).max(1 << 40));
        let e = full.check_write().unwrap_err();
        assert_eq!(e.code(), wingkv_common::ErrorCode::DiskFull);
        assert!(e.to_string().contains("reserved_disk_bytes"), "{e}");
        assert_eq!(full.refused_writes.load(Ordering::Relaxed), 1);
    }
}
