//! The server's clock of reports: every list of replicas (a heartbeat) and every replica status
//! it answers carries a [`ReportStamp`], so that the meta can tell which of two reports of this
//! server is newer whatever order they arrive in. A heartbeat's list can reach the meta after
//! the answer to a `CreateReplica` that ran after the list was taken; without the order, the
//! meta would take the created replica for lost.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use wingkv_common::WingError;
use wingkv_proto::common::ReportStamp;

/// Where the count of starts is kept.
const BOOT_FILE: &str = "boot_count";

/// Stamps reports with (this start's number, a sequence).
#[derive(Debug)]
pub struct ReportClock {
    boot: u64,
    seq: AtomicU64,
}

impl ReportClock {
    /// Counts this start in `data_dir` (synced before any report is stamped), so that every
    /// start stamps with a number of its own: sequences of two starts are never compared.
    pub fn start(data_dir: &Path) -> Result<Self, WingError> {
        let path = data_dir.join(BOOT_FILE);
        let last = crate::durable::read_number(&path, "a count of starts")?.unwrap_or(0);
        let boot = last + 1;
        crate::durable::replace_file(&path, boot.to_string().as_bytes())?;
        Ok(Self { boot, seq: AtomicU64::new(0) })
    }

    /// The stamp of a report taken now: greater than every stamp handed out before.
    pub fn stamp(&self) -> ReportStamp {
        ReportStamp { boot: self.boot, seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_grow_within_a_start_and_each_start_has_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let first = ReportClock::start(dir.path()).unwrap();
        let (a, b) = (first.stamp(), first.stamp());
        assert!((a.boot, a.seq) < (b.boot, b.seq));
        let second = ReportClock::start(dir.path()).unwrap();
        let c = second.stamp();
        assert!(c.boot > b.boot, "a start reused the number of the one before: {b:?} then {c:?}");
    }

    #[test]
    fn a_damaged_count_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BOOT_FILE), "twelve").unwrap();
        let e = ReportClock::start(dir.path()).unwrap_err().to_string();
        assert!(e.contains(BOOT_FILE) && e.contains("twelve"), "{e}");
    }
}
