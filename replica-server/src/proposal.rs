//! Group commit of client writes: the [`ProposalBatcher`] of a primary gathers the writes that
//! queue up while earlier ones are in flight and proposes them as one raft entry
//! ([`Command::Batch`]).
//!
//! Why: openraft 0.9's raft core appends one entry per `client_write` and waits for that
//! append's fsync before it takes the next write, so without batching a partition commits at
//! most one write per log fsync, however many clients write to it. With it, the writes that
//! arrive during one fsync share the next. A lone write is proposed at once, as itself, so an
//! idle partition adds no latency.
//!
//! The commands of a batch are applied in order, each with its own response, exactly as if
//! they were consecutive entries (they see each other's writes), and each caller is answered
//! only once the whole entry is applied, so every write still takes effect between its request
//! and its answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wingkv_common::raft::NodeId;
use wingkv_common::{PartitionId, WingError};

use crate::command::{Command, CommandResponse};
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
}

/// What the batchers of a process proposed, for `/metrics`.
#[derive(Debug, Default)]
pub struct ProposalCounters {
    /// Raft entries proposed for client writes.
    pub entries: AtomicU64,
    /// Client writes they carried.
    pub writes: AtomicU64,
}

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<ProposalResult>,
}

/// The entry point for a primary's client writes (see the module doc).
#[derive(Clone)]
pub struct ProposalBatcher {
    partition: PartitionId,
    tx: mpsc::UnboundedSender<Proposal>,
}

impl ProposalBatcher {
    /// Starts the batching loop on `tracker`; it stops when `cancel` fires, and whoever still
    /// waits then is told the replica is closing.
    pub fn start(
        partition: PartitionId,
        raft: PartitionRaft,
        limits: BatchLimits,
        counters: Arc<ProposalCounters>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tracker.spawn(run(partition, raft, limits, counters, rx, cancel));
        Self { partition, tx }
    }

    /// Proposes `cmd` (never an `IngestSst` or a `Batch`) and waits until it is applied.
    pub async fn propose(&self, cmd: Command) -> ProposalResult {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Proposal { cmd, reply }).map_err(|_| self.closing())?;
        rx.await.map_err(|_| self.closing())?
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
    limits: BatchLimits,
    counters: Arc<ProposalCounters>,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
    cancel: CancellationToken,
) {
    let mut inflight = FuturesUnordered::new();
    let mut next: Option<Proposal> = None;
    loop {
        let free = inflight.len() < limits.max_inflight;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(()) = inflight.next(), if !inflight.is_empty() => {}
            p = rx.recv(), if free && next.is_none() => match p {
                Some(p) => next = Some(p),
                None => break,
            },
        }
        // A slot is free and a write waits: take it and whatever queued behind it.
        if let Some(first) = next.take() {
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
                        bytes += size;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            counters.entries.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            inflight.push(commit(partition, raft.clone(), limits.write_timeout, batch));
        }
    }
    // Dropped here: the waiters of in-flight entries and of queued writes learn that the
    // replica is closing (their entries may still commit under the next primary).
}

/// Proposes `batch` as one entry and answers each of its writes.
async fn commit(partition: PartitionId, raft: PartitionRaft, timeout: Duration, batch: Vec<Proposal>) {
    let (mut cmds, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let single = cmds.len() == 1;
    let cmd = if single { cmds.swap_remove(0) } else { Command::Batch(cmds) };
    let answers: Vec<ProposalResult> = match write_entry(partition, &raft, timeout, cmd).await {
        Ok(answer) if single => vec![Ok(answer)],
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
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
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
        Command::Batch(cmds) => cmds.iter().map(command_bytes).sum(),
    }
}
