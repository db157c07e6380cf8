//! Restarts replicas whose raft group stopped.
//!
//! openraft stops a group's core for good when its storage fails (an append or an apply that
//! meets ENOSPC past the disk guard, an I/O error). Left alone, that replica answers
//! `Unavailable` until the process restarts. Here such a replica is closed (its tasks awaited)
//! and opened again from its files, as a restart of the process would, with a backoff while the
//! cause persists: a disk still full makes the reopened group stop again, or its open fail.
//! RocksDB clears its own no-space errors once space is back (its file manager polls), so the
//! shared raft-log DB needs nothing here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wingkv_common::{PartitionId, WingError};

use crate::manager::ReplicaManager;

/// How often open replicas are checked for a stopped group.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The first wait before a stopped replica is opened again; it doubles per stop up to `MAX_WAIT`.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between two reopens of one replica.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// A replica that ran this long since its last stop starts over from `FIRST_WAIT`.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// One replica's stops: how many in a row, and when the last one was seen.
struct Stops {
    count: u32,
    last: Instant,
}

/// Checks the replicas of `manager` every second and reopens those whose raft group stopped,
/// until `cancel` fires.
pub async fn run(manager: Arc<ReplicaManager>, cancel: CancellationToken) {
    let mut stops: HashMap<PartitionId, Stops> = HashMap::new();
    // Closed replicas waiting for their reopen, and when it is due.
    let mut due: HashMap<PartitionId, Instant> = HashMap::new();
    // Groups this server leads that were seen joint with no change running.
    let mut joint = HashMap::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        crate::membership::finish_joint_changes(&manager, &mut joint);
        for replica in manager.all() {
            let Some(reason) = replica.stopped_reason() else { continue };
            let id = replica.id();
            let s = stops.entry(id).or_insert(Stops { count: 0, last: Instant::now() });
            if s.last.elapsed() > FORGET_AFTER {
                s.count = 0;
            }
            s.count += 1;
            s.last = Instant::now();
            let wait = backoff(s.count);
            tracing::error!(partition = %id, stops = s.count, "raft group stopped: {reason}; reopening in {wait:?}");
            if manager.close_stopped(&replica, &reason).await {
                due.insert(id, Instant::now() + wait);
            }
        }
        let ready: Vec<PartitionId> = due.iter().filter(|(_, at)| **at <= Instant::now()).map(|(id, _)| *id).collect();
        for id in ready {
            if cancel.is_cancelled() {
                return;
            }
            let s = stops.entry(id).or_insert(Stops { count: 0, last: Instant::now() });
            let wait = backoff(s.count + 1);
            match manager.reopen(id, wait).await {
                Ok(_) => {
                    due.remove(&id);
                    manager.count_restart();
                    tracing::info!(partition = %id, "replica reopened after its raft group stopped");
                }
                // Removed meanwhile (the meta moved it away): nothing left to reopen.
                Err(WingError::NotFound(_)) => {
                    due.remove(&id);
                    stops.remove(&id);
                }
                Err(e) => {
                    s.count += 1;
                    s.last = Instant::now();
                    tracing::warn!(partition = %id, "cannot reopen the replica yet: {e}; next attempt in {wait:?}");
                    due.insert(id, Instant::now() + wait);
                }
            }
        }
    }
}

/// The wait before the reopen that follows the `stops`-th stop in a row.
fn backoff(stops: u32) -> Duration {
    FIRST_WAIT.saturating_mul(1u32 << stops.saturating_sub(1).min(5)).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_per_stop_up_to_its_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
