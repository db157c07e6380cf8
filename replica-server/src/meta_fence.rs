//! The fence against a deposed meta leader: the highest meta leader term this server has seen,
//! kept in `DATA_DIR/meta_term`. An order decided under an older term is refused, after a
//! restart too: a replica server that forgot the term would take a removal from a meta leader
//! deposed while it was down (before any heartbeat answer taught it the new term).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use wingkv_common::sync::MutexExt;
use wingkv_common::WingError;

/// The file that holds the term, in the data directory.
const META_TERM_FILE: &str = "meta_term";

/// The highest meta term seen, in memory and on disk.
pub struct MetaTermFence {
    /// The highest term seen.
    seen: AtomicU64,
    /// The highest term recorded on disk (at most `seen`).
    recorded: AtomicU64,
    path: PathBuf,
    /// Orders the writes of a new term (rare: once per meta election).
    write: Mutex<()>,
}

impl MetaTermFence {
    /// The fence recorded in `data_dir` (0, no term seen, when there is no record).
    pub fn load(data_dir: &Path) -> Result<Self, WingError> {
        let path = data_dir.join(META_TERM_FILE);
        let seen = crate::durable::read_number(&path, "a meta term")?.unwrap_or(0);
        Ok(Self { seen: AtomicU64::new(seen), recorded: AtomicU64::new(seen), path, write: Mutex::new(()) })
    }

    /// The highest term seen.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    fn refused(term: u64, seen: u64, node_id: u64) -> WingError {
        WingError::InvalidState(format!(
            "order of meta term {term} refused: node {node_id} has seen meta term {seen} (a deposed meta leader)"
        ))
    }

    /// Fences an order decided by a meta leader of `term`: refused when a newer term was seen.
    /// Its term is recorded on disk before the order is taken; when it cannot be, the order is
    /// refused as `Unavailable` (the meta retries it). `None` or 0: an unfenced order (an
    /// operator's or a test's direct call), always taken.
    pub fn check(&self, term: Option<u64>, node_id: u64) -> Result<(), WingError> {
        let Some(term) = term.filter(|t| *t > 0) else {
            return Ok(());
        };
        self.observe(term, node_id)?;
        self.record(term).map_err(|e| {
            WingError::Unavailable(format!("cannot record meta term {term}, so its order is not taken: {e}"))
        })
    }

    /// Takes the term of a heartbeat answer: refused when older than one seen; a newer one
    /// fences at once in memory, and on disk as soon as it can be written (a full disk must not
    /// make the server deaf to the meta: the orders an answer carries are fenced again by
    /// [`check`](Self::check) when taken).
    pub fn observe_answer(&self, term: u64, node_id: u64) -> Result<(), WingError> {
        if term == 0 {
            return Ok(());
        }
        self.observe(term, node_id)?;
        if let Err(e) = self.record(term) {
            tracing::warn!("cannot record meta term {term} yet: {e}");
        }
        Ok(())
    }

    fn observe(&self, term: u64, node_id: u64) -> Result<(), WingError> {
        let seen = self.seen.fetch_max(term, Ordering::SeqCst);
        if term < seen {
            return Err(Self::refused(term, seen, node_id));
        }
        Ok(())
    }

    /// Records `term` on disk unless a term as new is already there.
    fn record(&self, term: u64) -> Result<(), WingError> {
        if self.recorded.load(Ordering::SeqCst) >= term {
            return Ok(());
        }
        let _write = self.write.locked();
        // The newest seen, not `term`: never write a term below one already taken in memory.
        let newest = self.seen().max(term);
        if self.recorded.load(Ordering::SeqCst) >= newest {
            return Ok(());
        }
        // A few bytes, synced, once per meta election: not worth a trip off the runtime.
        crate::durable::replace_file(&self.path, newest.to_string().as_bytes())?;
        self.recorded.store(newest, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_term_survives_a_reload_and_fences_older_orders() {
        let dir = tempfile::tempdir().unwrap();
        let fence = MetaTermFence::load(dir.path()).unwrap();
        assert_eq!(fence.seen(), 0);
        fence.check(Some(3), 1).unwrap();
        fence.check(None, 1).unwrap();
        fence.check(Some(0), 1).unwrap();
        let reloaded = MetaTermFence::load(dir.path()).unwrap();
        assert_eq!(reloaded.seen(), 3);
        let e = reloaded.check(Some(2), 1).unwrap_err().to_string();
        assert!(e.contains("meta term 2 refused") && e.contains("seen meta term 3"), "{e}");
        reloaded.check(Some(3), 1).unwrap();
        // A heartbeat answer's term fences at once, and is on disk for the next start.
        reloaded.observe_answer(5, 1).unwrap();
        assert!(reloaded.check(Some(4), 1).is_err());
        assert_eq!(MetaTermFence::load(dir.path()).unwrap().seen(), 5);
        std::fs::write(dir.path().join(META_TERM_FILE), "three").unwrap();
        let e = MetaTermFence::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("does not hold a meta term"), "{e}");
    }
}
