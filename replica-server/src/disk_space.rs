//! The disk-space guard of client writes: while the filesystem of the data dir (raft log and
//! RocksDB) has less than `reserved_disk_bytes` free, writes are refused with `DiskFull` before
//! they are proposed, and reads go on. Writes resume by themselves once space is freed.
//!
//! Why before proposing: an append that meets ENOSPC fails in the shared raft log, and openraft
//! stops a group whose log fails; the reserve keeps the log's own writes (heartbeat-free raft
//! entries, membership changes, RocksDB flushes and compactions) clear of a full disk. A group
//! that meets ENOSPC anyway is reopened once it can write again ([`crate::restart`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wingkv_common::WingError;

/// How often the free space is read. The reading is taken off the runtime (a statvfs can hang
/// on a sick disk) and writes only look at the last one; this bounds how far writes can
/// overshoot the reserve between two readings.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The last reading's value when the filesystem could not be asked.
const UNKNOWN: u64 = u64::MAX;

/// The guard of one replica server's data dir.
#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
    /// Free bytes at the last reading ([`UNKNOWN`]: statvfs failed).
    free: AtomicU64,
    /// Writes refused for want of space.
    pub refused_writes: AtomicU64,
}

impl DiskGuard {
    /// A guard that keeps `reserve` bytes free on the filesystem of `dir`, with a first reading
    /// taken now; [`Self::run`] keeps it current.
    pub fn new(dir: &Path, reserve: u64) -> Self {
        let guard =
            Self { dir: dir.to_path_buf(), reserve, free: AtomicU64::new(UNKNOWN), refused_writes: AtomicU64::new(0) };
        guard.read_free_space();
        guard
    }

    fn read_free_space(&self) {
        self.free.store(free_disk_bytes(&self.dir).unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// Reads the free space every [`SAMPLE_EVERY`] on a blocking thread until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let guard = self.clone();
            if tokio::task::spawn_blocking(move || guard.read_free_space()).await.is_err() {
                return;
            }
        }
    }

    /// Free bytes of the guarded filesystem at the last reading, if it could be asked.
    pub fn free(&self) -> Option<u64> {
        Some(self.free.load(Ordering::Relaxed)).filter(|f| *f != UNKNOWN)
    }

    /// Refuses a write with `DiskFull` while less than the reserve is free.
    pub fn check_write(&self) -> Result<(), WingError> {
        if self.reserve == 0 {
            return Ok(());
        }
        // A filesystem that cannot be asked is not taken for a full one.
        match self.free() {
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
