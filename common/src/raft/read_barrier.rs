//! Batched linearizable reads.
//!
//! A read is linearizable if, after it arrived, the primary confirmed its leadership with a
//! quorum and its state machine caught up with the commit index of that moment (read-index).
//! One confirmation round serves every read that arrived before the round started, so under
//! load N concurrent reads cost one heartbeat round instead of N.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, Raft, RaftTypeConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::NodeId;
use crate::{PartitionId, WingError};

type Waiter = oneshot::Sender<Result<(), WingError>>;

/// Entry point for reads that need a leadership confirmation.
#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl ReadBarrier {
    /// Starts the confirmation loop on `tracker`; it stops when `cancel` fires.
    pub fn start<C>(
        partition: PartitionId,
        raft: Raft<C>,
        timeout: Duration,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self
    where
        C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        tracker.spawn(run(partition, raft, timeout, rx, cancel));
        Self { tx }
    }

    /// Waits until a read started now may be served from the local state machine.
    pub async fn wait(&self, partition: PartitionId) -> Result<(), WingError> {
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
