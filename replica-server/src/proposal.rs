//! Group commit of client writes: the [`ProposalBatcher`] of a primary gathers the writes that
//! queue up while earlier ones are in flight and proposes them as one raft entry
//! ([`Command::Stamped`], which also carries the primary's clock).
//!
//! Why: openraft 0.9's raft core appends one entry per `client_write` and waits for that
//! append's fsync before it takes the next write, so without batching a partition commits at
//! most one write per log fsync, however many clients write to it. With it, the writes that
//! arrive during one fsync share the next. A lone write is proposed at once, alone, so an
//! idle partition adds no latency.
//!
//! The queue in front of the batcher is bounded (`raft.max_queued_writes`): a write that finds
//! it full is answered `Busy` at once instead of growing the server's memory. A queued write
//! whose deadline passes, or whose caller has gone, is dropped before it is proposed, so a
//! write its client gave up on never commits later.
//!
//! The commands of a batch are applied in order, each with its own response, exactly as if
//! they were consecutive entries (they see each other's writes), and each caller is answered
//! only once the whole entry is applied, so every write still takes effect between its request
//! and its answer.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wingkv_common::raft::NodeId;
use wingkv_common::{PartitionId, WingError};

use wingkv_common::raft::versioned::Versioned;

use crate::command::{Command, CommandResponse};
use crate::log_clock::ReplicaClock;
use crate::raft_types::PartitionRaft;

/// What a proposed write answers: its apply result and the log index of its entry.
pub type ProposalResult = Result<(CommandResponse, u64), WingError>;

/// Limits of a [`ProposalBatcher`].
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most raft entries of one partition in flight (proposed, not yet applied) at once; writes
    /// that arrive while all are in flight wait and go together in the next. At least 1 (the
    /// config is validated).
    pub max_inflight: usize,
    /// Most commands in one entry; at least 1.
    pub max_commands: usize,
    /// Most key and value bytes in one entry (a larger single command goes alone).
    pub max_bytes: usize,
    /// How long an entry may take to commit and apply.
    pub write_timeout: Duration,
    /// Most writes waiting to be proposed; at least 1.
    pub max_queued: usize,
}

/// What the batchers of a process proposed, for `/metrics`.
#[derive(Debug, Default)]
pub struct ProposalCounters {
    /// Raft entries proposed for client writes.
    pub entries: AtomicU64,
    /// Client writes they carried.
    pub writes: AtomicU64,
    /// Writes refused with `Busy` because their partition's queue was full.
    pub queue_full: AtomicU64,
    /// Queued writes dropped unproposed because their deadline passed or their caller left.
    pub expired: AtomicU64,
}

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<ProposalResult>,
    /// Past it the write is not proposed any more.
    deadline: Instant,
    /// Who has the write: the batcher (to propose it) or its caller (who gave up on it).
    claim: Arc<Claim>,
}

/// A queued write is claimed exactly once: by the batcher, which proposes it, or by its caller
/// at the deadline, who then knows for sure that it was never proposed (`Busy`, not applied)
/// rather than that it may still commit (`Timeout`).
#[derive(Debug, Default)]
struct Claim(AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Claim {
    /// The batcher takes the write; false when its caller abandoned it first.
    fn take(&self) -> bool {
        self.0.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The caller gives the write up; false when the batcher took it first.
    fn abandon(&self) -> bool {
        self.0.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// The entry point for a primary's client writes (see the module doc).
#[derive(Clone)]
pub struct ProposalBatcher {
    partition: PartitionId,
    tx: mpsc::Sender<Proposal>,
    counters: Arc<ProposalCounters>,
    max_queued: usize,
    /// Writes handed to the batcher whose callers still wait (queued or in flight).
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a write as pending for as long as its caller waits.
struct Pending<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProposalBatcher {
    /// Starts the batching loop on `tracker`; it stops when `cancel` fires, and whoever still
    /// waits then is told the replica is closing.
    pub fn start(
        partition: PartitionId,
        raft: PartitionRaft,
        clock: ReplicaClock,
        limits: BatchLimits,
        counters: Arc<ProposalCounters>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(limits.max_queued);
        tracker.spawn(run(partition, raft, clock, limits, counters.clone(), rx, cancel));
        Self { partition, tx, counters, max_queued: limits.max_queued, pending: Arc::default() }
    }

    /// Writes whose callers still wait for an answer (queued or proposed, not answered).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Proposes `cmd` (never an `IngestSst` or a `Batch`) and waits until it is applied, at
    /// most until `deadline`. A full queue answers `Busy` at once; so does a write still queued
    /// at `deadline`, which is then never proposed. A write proposed but not applied by then
    /// answers `Timeout`: it may still commit.
    pub async fn propose(&self, cmd: Command, deadline: Instant) -> ProposalResult {
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        self.pending.fetch_add(1, Ordering::SeqCst);
        let _pending = Pending(&self.pending);
        match self.tx.try_send(Proposal { cmd, reply, deadline, claim: claim.clone() }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(WingError::Busy(format!(
                    "partition {}: {} writes are queued for raft already; not applied, retry with backoff",
                    self.partition, self.max_queued
                )));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.closing()),
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(answer) => answer.map_err(|_| self.closing())?,
            Err(_) if claim.abandon() => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                Err(not_proposed(self.partition))
            }
            Err(_) => Err(timed_out(self.partition, deadline.saturating_duration_since(started))),
        }
    }

    fn closing(&self) -> WingError {
        WingError::Unavailable(format!(
            "replica {} is closing; a write handed to it may or may not be applied",
            self.partition
        ))
    }
}

async fn run(
    partition: PartitionId,
    raft: PartitionRaft,
    clock: ReplicaClock,
    limits: BatchLimits,
    counters: Arc<ProposalCounters>,
    mut rx: mpsc::Receiver<Proposal>,
    cancel: CancellationToken,
) {
    let mut inflight = FuturesUnordered::new();
    let mut next: Option<Proposal> = None;
    let mut tick = tokio::time::interval(CLOCK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let free = inflight.len() < limits.max_inflight;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(()) = inflight.next(), if !inflight.is_empty() => {}
            _ = tick.tick(), if inflight.is_empty() && next.is_none() => {
                // An idle primary stamps an empty entry now and then, so the log clock (and
                // with it TTL expiry in compaction) moves on without client writes.
                let behind = clock.log.get().saturating_add(CLOCK_TICK.as_secs() as u32) < clock.now();
                if behind && raft.metrics().borrow().state.is_leader() {
                    inflight.push(commit(partition, raft.clone(), limits, clock.clone(), Vec::new()));
                }
            }
            p = rx.recv(), if free && next.is_none() => match p {
                Some(p) => next = Some(p),
                None => break,
            },
        }
        // A slot is free and a write waits: take it and whatever queued behind it. Each write
        // is claimed only as it joins an entry, so one that waited past its deadline (even as
        // the write held over from the previous entry) is dropped, never proposed.
        if let Some(first) = next.take() {
            let Some(first) = take_wanted(partition, &counters, first) else { continue };
            let mut batch = vec![first];
            let mut bytes = command_bytes(&batch[0].cmd);
            while batch.len() < limits.max_commands && bytes < limits.max_bytes {
                match rx.try_recv() {
                    Ok(p) => {
                        let size = command_bytes(&p.cmd);
                        if bytes + size > limits.max_bytes {
                            next = Some(p);
                            break;
                        }
                        let Some(p) = take_wanted(partition, &counters, p) else { continue };
                        bytes += size;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            counters.entries.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            inflight.push(commit(partition, raft.clone(), limits, clock.clone(), batch));
        }
    }
    // Dropped here: the waiters of in-flight entries and of queued writes learn that the
    // replica is closing (their entries may still commit under the next primary).
}

/// How often an idle primary checks whether its log clock needs a stamp (and how far behind
/// its clock the log clock may fall before it gets one).
const CLOCK_TICK: Duration = Duration::from_secs(60);

/// `p`, claimed for an entry, if it is still wanted (its deadline has not passed and its
/// caller has not given it up); otherwise it is answered, if anyone still waits, and dropped.
fn take_wanted(partition: PartitionId, counters: &ProposalCounters, p: Proposal) -> Option<Proposal> {
    if Instant::now() < p.deadline && !p.reply.is_closed() && p.claim.take() {
        return Some(p);
    }
    // Abandoned by its caller, who counted it already; otherwise it is ours to count.
    if p.claim.abandon() {
        counters.expired.fetch_add(1, Ordering::Relaxed);
        let _ = p.reply.send(Err(not_proposed(partition)));
    }
    None
}

/// The answer to a write dropped from the queue at its deadline.
fn not_proposed(partition: PartitionId) -> WingError {
    WingError::Busy(format!("partition {partition}: the write waited in the queue past its deadline; not applied"))
}

/// Proposes `batch` as one entry and answers each of its writes.
async fn commit(
    partition: PartitionId,
    raft: PartitionRaft,
    limits: BatchLimits,
    clock: ReplicaClock,
    batch: Vec<Proposal>,
) {
    let (cmds, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    // Stamped when proposed: the stamp advances the log clock of every replica that applies it.
    let cmd = Command::Stamped { now: clock.now(), cmds };
    let answers: Vec<ProposalResult> = match write_entry(partition, &raft, limits.write_timeout, cmd).await {
        Ok((CommandResponse::Batch(responses), index)) if responses.len() == replies.len() => {
            responses.into_iter().map(|r| Ok((r, index))).collect()
        }
        Ok((other, _)) => {
            let e = WingError::Internal(format!("partition {partition}: a batch of writes was answered {other:?}"));
            vec![Err(e); replies.len()]
        }
        Err(e) => vec![Err(e); replies.len()],
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// Proposes `cmd` as one entry and waits, at most `timeout`, until it is applied.
pub async fn write_entry(
    partition: PartitionId,
    raft: &PartitionRaft,
    timeout: Duration,
    cmd: Command,
) -> ProposalResult {
    match tokio::time::timeout(timeout, raft.client_write(Versioned(cmd))).await {
        Ok(Ok(r)) => Ok((r.data, r.log_id.index)),
        Ok(Err(e)) => Err(write_error(partition, e)),
        Err(_) => Err(timed_out(partition, timeout)),
    }
}

/// The answer to a write that did not commit within `timeout`.
pub fn timed_out(partition: PartitionId, timeout: Duration) -> WingError {
    WingError::Timeout(format!("partition {partition}: write not committed within {timeout:?} (it may still commit)"))
}

/// What a raft error of a write handed to raft means to its client.
fn write_error(
    partition: PartitionId,
    e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> WingError {
    match e {
        // The primary was checked before the write was handed to raft; leadership lost since
        // leaves the write's fate open: it may still commit under the new leader.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => WingError::Unavailable(format!(
            "partition {partition}: leadership moved to {:?} while the write was in flight; it may or may not be applied",
            f.leader_node.map(|n| n.addr)
        )),
        RaftError::APIError(e) => WingError::Internal(format!("partition {partition}: {e}")),
        RaftError::Fatal(e) => WingError::Unavailable(format!("partition {partition}: raft stopped: {e}")),
    }
}

/// The key and value bytes of a command, to bound the size of an entry.
fn command_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Put { key, value } => key.len() + value.len(),
        Command::Delete { key } => key.len(),
        Command::MultiPut { entries } => entries.iter().map(|(k, v)| k.len() + v.len()).sum(),
        Command::MultiDelete { keys, .. } => keys.iter().map(|k| k.len()).sum(),
        Command::Incr { key, .. } => key.len() + 16,
        Command::CheckAndSet { check_key, operand, set_key, set_value, .. } => {
            check_key.len() + operand.len() + set_key.len() + set_value.len()
        }
        Command::IngestSst { files, .. } => files.len() * 64,
        Command::Batch(cmds) | Command::Stamped { cmds, .. } => cmds.iter().map(command_bytes).sum(),
    }
}
