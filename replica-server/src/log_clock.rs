//! The replicated notion of "now" of one partition, for TTL expiry.
//!
//! A primary stamps every entry of client writes with its clock ([`Command::Stamped`]); each
//! replica's log clock is the largest stamp it has applied, kept with the applied state and
//! carried by snapshots. Compaction, snapshots and checksums decide expiry by the log clock,
//! never by the local clock, so every replica at the same log index drops and counts the same
//! records, however far its own clock is off. A primary stamps no earlier than the log clock,
//! so the log clock never goes back across a failover.
//!
//! [`Command::Stamped`]: crate::command::Command::Stamped

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use wingkv_common::value::now_epoch_seconds;

/// A partition's log clock (seconds since 2016, the value header's epoch; 0 = nothing stamped
/// applied yet, under which nothing counts as expired). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct LogClock(Arc<AtomicU32>);

impl LogClock {
    /// The log clock now.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves the clock forward to `stamp` (never back).
    pub fn advance(&self, stamp: u32) {
        self.0.fetch_max(stamp, Ordering::AcqRel);
    }

    /// Sets the clock to `stamp`: the state of an installed snapshot replaces the old one.
    pub fn reset(&self, stamp: u32) {
        self.0.store(stamp, Ordering::Release);
    }
}

/// The time a replica decides with: this machine's clock, but never behind its partition's
/// log clock.
#[derive(Debug, Clone, Default)]
pub struct ReplicaClock {
    /// The partition's log clock.
    pub log: LogClock,
}

impl ReplicaClock {
    /// What a primary stamps and decides expiry with now.
    pub fn now(&self) -> u32 {
        now_epoch_seconds().max(self.log.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward_only_and_a_primary_never_stamps_behind_it() {
        let clock = ReplicaClock::default();
        let local = now_epoch_seconds();
        assert!(clock.now() >= local, "an empty log clock leaves the local time");
        clock.log.advance(local + 5_000);
        clock.log.advance(local);
        assert_eq!(clock.log.get(), local + 5_000);
        assert_eq!(clock.now(), local + 5_000, "a slow local clock stamps the log's time");
        clock.log.reset(7);
        assert_eq!(clock.log.get(), 7);
    }
}
