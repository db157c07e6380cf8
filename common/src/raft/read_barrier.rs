//! Batched linearizable reads.
//!
//! A read is linearizable if, after it arrived, the primary confirmed its leadership with a
//! quorum and its state machine caught up with the commit index of that moment (read-index).
//! One confirmation round serves every read that arrived before the round started, so under
//! load N concurrent reads cost one heartbeat round instead of N.
//!
//! With a [`ReadLease`], a confirmed round also starts a lease: openraft's followers refuse to
//! vote for anyone else until `election_timeout_max` after they last heard from their leader,
//! so for a while after a round *started* (its quorum answered heartbeats sent after that
//! instant) no other leader can exist. Reads in that window, in the same term, are served
//! without a round: every write acknowledged in this term was applied here before its answer,
//! and the round applied everything of the earlier terms. The lease is a fraction of the
//! followers' (see [`ReadLease::new`]), and a replica that restarts holds its votes for the
//! followers' lease (it forgot when it last heard from its leader), so neither clock drift nor
//! a quick restart lets a second leader in while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, Raft, RaftTypeConfig, ServerState};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::NodeId;
use crate::sync::MutexExt;
use crate::{PartitionId, WingError};

type Waiter = oneshot::Sender<Result<(), WingError>>;

/// The current term if this node is the leader.
type LeaderTerm = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// A leader's read lease (see the module doc).
pub struct ReadLease {
    duration: Duration,
    /// The term and the end of the lease of the last confirmed round.
    until: Mutex<Option<(u64, Instant)>>,
    /// Whether a renewal round is queued, so reads late in a lease ask for one once.
    renewing: AtomicBool,
}

impl ReadLease {
    /// A lease of `duration` after the start of each confirmed round. It must be well below
    /// the followers' `election_timeout_max` (they refuse votes that long after a heartbeat);
    /// wingkv uses half of `election_timeout_min`.
    pub fn new(duration: Duration) -> Self {
        Self { duration, until: Mutex::new(None), renewing: AtomicBool::new(false) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<(u64, Instant)>> {
        self.until.locked()
    }

    /// What is left of the lease in `term` (`None`: no lease).
    fn remaining(&self, term: u64, now: Instant) -> Option<Duration> {
        match *self.state() {
            Some((t, until)) if t == term && now < until => Some(until - now),
            _ => None,
        }
    }

    /// A round that started at `started`, in `term`, confirmed the leadership.
    fn renew(&self, term: u64, started: Instant) {
        let until = started + self.duration;
        let mut state = self.state();
        match *state {
            Some((t, u)) if t == term && u >= until => {}
            _ => *state = Some((term, until)),
        }
    }
}

/// Entry point for reads that need a leadership confirmation.
#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::UnboundedSender<Waiter>,
    lease: Option<Arc<ReadLease>>,
    leader_term: LeaderTerm,
}

impl ReadBarrier {
    /// Starts the confirmation loop on `tracker`; it stops when `cancel` fires. With `lease`,
    /// reads within a lease skip the round.
    pub fn start<C>(
        partition: PartitionId,
        raft: Raft<C>,
        timeout: Duration,
        lease: Option<ReadLease>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self
    where
        C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = raft.metrics();
        let leader_term: LeaderTerm = Arc::new(move || {
            let m = metrics.borrow();
            (m.state == ServerState::Leader).then_some(m.current_term)
        });
        let lease = lease.map(Arc::new);
        tracker.spawn(run(partition, raft, timeout, rx, lease.clone(), leader_term.clone(), cancel));
        Self { tx, lease, leader_term }
    }

    /// Waits until a read started now may be served from the local state machine.
    pub async fn wait(&self, partition: PartitionId) -> Result<(), WingError> {
        if let (Some(lease), Some(term)) = (&self.lease, (self.leader_term)()) {
            if let Some(left) = lease.remaining(term, Instant::now()) {
                // Renew ahead of the end, so a steady stream of reads never waits for a round.
                if left < lease.duration / 2 && !lease.renewing.swap(true, Ordering::AcqRel) {
                    let (tx, _) = oneshot::channel();
                    let _ = self.tx.send(tx);
                }
                return Ok(());
            }
        }
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| WingError::Unavailable(format!("replica {partition} is closing")))?;
        rx.await.map_err(|_| WingError::Unavailable(format!("replica {partition} is closing")))?
    }
}

async fn run<C>(
    partition: PartitionId,
    raft: Raft<C>,
    timeout: Duration,
    mut rx: mpsc::UnboundedReceiver<Waiter>,
    lease: Option<Arc<ReadLease>>,
    leader_term: LeaderTerm,
    cancel: CancellationToken,
) where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            w = rx.recv() => match w { Some(w) => w, None => break },
        };
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        if let Some(lease) = &lease {
            lease.renewing.store(false, Ordering::Release);
        }
        // Taken before the round: its heartbeats are sent after this instant and this term.
        let (started, term) = (Instant::now(), leader_term());
        let result = tokio::select! {
            _ = cancel.cancelled() => Err(WingError::Unavailable(format!("replica {partition} is closing"))),
            r = tokio::time::timeout(timeout, raft.ensure_linearizable()) => match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(map_check_error(partition, e)),
                Err(_) => Err(WingError::Timeout(format!(
                    "partition {partition}: leadership not confirmed within {timeout:?}"
                ))),
            },
        };
        if let (Ok(()), Some(lease), Some(term)) = (&result, &lease, term) {
            lease.renew(term, started);
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
    // Whoever still waits learns the replica is closing (their senders drop with `rx`).
}

fn map_check_error(partition: PartitionId, e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> WingError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            WingError::NotLeader { partition: partition.to_string(), leader: f.leader_node.map(|n| n.addr) }
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            WingError::Unavailable(format!("partition {partition}: no quorum ({q})"))
        }
        RaftError::Fatal(f) => WingError::Unavailable(format!("partition {partition}: raft stopped: {f}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_round_start_in_its_term_only() {
        let lease = ReadLease::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(lease.remaining(3, t0), None, "no lease before a round");
        lease.renew(3, t0);
        assert_eq!(lease.remaining(3, t0 + Duration::from_millis(40)), Some(Duration::from_millis(60)));
        assert_eq!(lease.remaining(4, t0 + Duration::from_millis(40)), None, "another term has no lease");
        assert_eq!(lease.remaining(3, t0 + Duration::from_millis(100)), None, "expired");
        // An older round never shortens a lease; a newer one extends it.
        lease.renew(3, t0 + Duration::from_millis(50));
        lease.renew(3, t0 + Duration::from_millis(10));
        assert_eq!(lease.remaining(3, t0 + Duration::from_millis(100)), Some(Duration::from_millis(50)));
        // A round in a new term replaces the lease of the old one.
        lease.renew(5, t0 + Duration::from_millis(20));
        assert_eq!(lease.remaining(3, t0 + Duration::from_millis(30)), None);
        assert_eq!(lease.remaining(5, t0 + Duration::from_millis(30)), Some(Duration::from_millis(90)));
    }
}
