//! Runs the balancer of the `lively` meta level from the reconcile loop: each tick, after the
//! repairs were planned on the same linearizable catalog, it plans moves with
//! [`crate::balance`] and runs them in the loop's task set (aborted with the leadership that
//! decided them; every request carries its meta term).
//!
//! - A replica move is a repair whose leaving member is alive: the new replica is created,
//!   caught up as a learner, and swapped in by one membership change, so the partition never
//!   has fewer voters than before; the old replica is removed by its node's next heartbeat,
//!   once the group and the catalog both say it is out (see `heartbeat`).
//! - A primary move asks the primary to hand over (`TransferPrimary`).
//!
//! Moves are throttled per node and cluster-wide, never touch a partition with a repair or
//! another move in flight, nor a table whose bulk load runs, and wait while any node is in
//! its grace period after a meta failover (its replicas are not known yet).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use wingkv_common::sync::MutexExt;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::replica_admin::{StatusRequest, TransferPrimaryRequest};

use crate::balance::{Assessment, Move, View};
use crate::catalog::Catalog;
use crate::liveness::{NodeState, PrimaryInfo};
use crate::node::MetaNode;

/// How long a primary handover may take on the primary (its campaign is at most 10 s).
const TRANSFER: Duration = Duration::from_secs(20);

/// The balancer's moves in flight and its counts since this meta became leader.
#[derive(Default)]
pub struct Progress {
    in_flight: Mutex<HashMap<PartitionId, Move>>,
    replica_moves: AtomicU64,
    primary_moves: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of [`Progress`] and of how balanced the cluster is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// How far from balanced.
    pub assessment: Assessment,
    /// Moves running.
    pub in_flight: u32,
    /// Replica moves done.
    pub replica_moves: u64,
    /// Primary moves done.
    pub primary_moves: u64,
    /// Moves that failed (retried on a later tick if still needed).
    pub failed: u64,
    /// Tables left alone (a bulk load runs).
    pub skipped_tables: Vec<String>,
}

impl Progress {
    /// Forgets the moves in flight (their tasks were aborted) and the counts.
    pub fn reset(&self) {
        self.in_flight.locked().clear();
        for c in [&self.replica_moves, &self.primary_moves, &self.failed] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Moves done, by kind (`replica`, `primary`), and failed.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.replica_moves.load(Ordering::Relaxed),
            self.primary_moves.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Moves running now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.locked().len() as u32
    }
}

/// How many manual moves may wait for the reconcile loop to take them.
const MANUAL_QUEUE: usize = 16;

/// A manual move (`propose`), handed to the reconcile loop so that it has one owner: the loop
/// runs it with its repairs, and aborts it with them when its leadership ends.
pub struct ManualMove {
    /// The move.
    pub m: Move,
    /// Its partition's primary when it was decided.
    pub primary: PrimaryInfo,
    /// The meta term it was decided in; the loop refuses it in any other.
    pub meta_term: u64,
    /// Answered when the move ends; dropped unanswered if it is aborted.
    pub done: oneshot::Sender<Result<(), WingError>>,
}

/// The bounded queue of [`ManualMove`]s from the service to the reconcile loop.
pub struct ManualMoves {
    tx: mpsc::Sender<ManualMove>,
    rx: Mutex<Option<mpsc::Receiver<ManualMove>>>,
}

impl Default for ManualMoves {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(MANUAL_QUEUE);
        Self { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl ManualMoves {
    /// Queues `mv`; `Busy` when the queue is full.
    pub fn submit(&self, mv: ManualMove) -> Result<(), WingError> {
        self.tx.try_send(mv).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                WingError::Busy(format!("{MANUAL_QUEUE} manual moves wait already; try again"))
            }
            mpsc::error::TrySendError::Closed(_) => WingError::Unavailable("this meta is shutting down".into()),
        })
    }

    /// The receiving end, for the one reconcile loop that takes it.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<ManualMove>> {
        self.rx.locked().take()
    }
}

/// Starts manual move `mv` in the loop's task set if it was decided in `led_term` (the term the
/// loop acts in now); the partition was claimed by its submitter and is released when it ends.
pub fn start_manual(node: &Arc<MetaNode>, tasks: &mut JoinSet<()>, mv: ManualMove, led_term: Option<u64>) {
    let pid = mv.m.pid();
    if led_term != Some(mv.meta_term) || !node.is_leader() {
        node.repairs_done.locked().push(pid);
        let _ = mv.done.send(Err(WingError::NotLeader { partition: "meta".into(), leader: node.leader_address() }));
        return;
    }
    // Counted with the balancer's moves: its plans see it as done, and it takes a slot.
    node.balancer.in_flight.locked().insert(pid, mv.m);
    let node2 = node.clone();
    tasks.spawn(async move {
        let ManualMove { m, primary, meta_term, done } = mv;
        tracing::info!(partition = %pid, ?m, meta_term, "manual move: a {}", m.kind());
        let result = run_move(&node2, m, primary, meta_term).await;
        node2.balancer.in_flight.locked().remove(&pid);
        node2.repairs_done.locked().push(pid);
        // The caller may have gone (its RPC timed out): the move ran all the same.
        let _ = done.send(result);
    });
}

/// The planner's view of `catalog` now, and the names of the tables it leaves alone.
fn view(node: &MetaNode, catalog: &Catalog) -> (View, Vec<String>) {
    let alive = |n: &u64| node.liveness.state(*n) == NodeState::Alive;
    let draining: Vec<u64> = catalog.settings.draining.iter().copied().filter(alive).collect();
    let nodes: Vec<u64> =
        catalog.nodes.keys().copied().filter(|n| alive(n) && !catalog.settings.draining.contains(n)).collect();
    let mut skipped = Vec::new();
    let mut apps = Vec::new();
    let mut primaries = HashMap::new();
    for app in catalog.apps.values().filter(|a| !a.is_dropped()) {
        if catalog.bulk_loads.get(&app.app_id).is_some_and(|j| !j.status.is_terminal()) {
            skipped.push(app.name.clone());
            continue;
        }
        for i in 0..app.partition_count {
            let pid = PartitionId::new(app.app_id, i);
            if let Some(p) = node.liveness.primary(pid) {
                primaries.insert(pid, p.node_id);
            }
        }
        apps.push(app.clone());
    }
    let mut busy: HashSet<PartitionId> = node.repairs.locked().clone();
    busy.extend(node.bootstrapping.locked().iter().copied());
    (View { nodes, draining, apps, primaries, busy }, skipped)
}

/// How balanced the cluster is and what the balancer is doing.
pub fn status(node: &MetaNode, catalog: &Catalog) -> Status {
    let (view, skipped_tables) = view(node, catalog);
    let (replica_moves, primary_moves, failed) = node.balancer.counts();
    Status {
        assessment: view.assess(),
        in_flight: node.balancer.in_flight(),
        replica_moves,
        primary_moves,
        failed,
        skipped_tables,
    }
}

/// Plans and starts the moves the throttle allows, on `catalog` read in `meta_term`: draining
/// nodes' moves, and with `balance` the balancing ones.
pub fn balance_once(node: &Arc<MetaNode>, tasks: &mut JoinSet<()>, catalog: &Catalog, meta_term: u64, balance: bool) {
    if catalog.nodes.keys().any(|n| node.liveness.state(*n) == NodeState::Unknown) {
        return;
    }
    let (max_moves, per_node) = (node.config.balance_max_moves, node.config.balance_max_moves_per_node);
    let (mut view, _) = view(node, catalog);
    let mut in_flight = node.balancer.in_flight.locked();
    let mut load: HashMap<u64, usize> = HashMap::new();
    for m in in_flight.values() {
        // Planned as if done: the view (reports, catalog) shows a move only once it ended, and
        // a plan that does not count the moves still running repeats their work, then undoes
        // it (seen as two primaries handed back and forth between two nodes for good).
        view.apply(m);
        for n in m.nodes() {
            *load.entry(n).or_default() += 1;
        }
    }
    while in_flight.len() < max_moves {
        let loaded: HashSet<u64> = load.iter().filter(|(_, c)| **c >= per_node).map(|(n, _)| *n).collect();
        let Some(m) = view.next_move(&loaded, balance) else {
            break;
        };
        let pid = m.pid();
        // Not while a change of the group runs (see `PrimaryInfo::settled`), and never onto a
        // node that still has a replica of the partition (one whose removal is pending, or one
        // that refused a creation). A move not started leaves the plan as it was.
        let Some(primary) = node.liveness.primary(pid).filter(|p| p.settled) else {
            tracing::debug!(partition = %pid, ?m, "balance: no settled primary reported; move not started");
            view.busy.insert(pid);
            continue;
        };
        if let Move::Replica { to, .. } = m {
            if node.liveness.hosts(to, pid) || node.refused_target(pid, to) {
                tracing::debug!(partition = %pid, ?m, "balance: the target still has a replica; move not started");
                view.busy.insert(pid);
                continue;
            }
        }
        view.apply(&m);
        for n in m.nodes() {
            *load.entry(n).or_default() += 1;
        }
        in_flight.insert(pid, m);
        node.repairs.locked().insert(pid);
        let node2 = node.clone();
        tasks.spawn(async move {
            tracing::info!(partition = %pid, ?m, meta_term, "balance: move a {}", m.kind());
            let result = run_move(&node2, m, primary, meta_term).await;
            let progress = &node2.balancer;
            match result {
                Ok(()) => {
                    tracing::info!(partition = %pid, ?m, "balance: {} moved", m.kind());
                    let done = match m {
                        Move::Replica { .. } => &progress.replica_moves,
                        Move::Primary { .. } => &progress.primary_moves,
                    };
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(partition = %pid, ?m, "balance: {} move failed (replanned later): {e}", m.kind());
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            progress.in_flight.locked().remove(&pid);
            node2.repairs_done.locked().push(pid);
        });
    }
}

/// Runs move `m`, decided in `meta_term` when `primary` led its partition.
pub async fn run_move(node: &MetaNode, m: Move, primary: PrimaryInfo, meta_term: u64) -> Result<(), WingError> {
    match m {
        Move::Replica { pid, from, to } => {
            match crate::reconcile::Repair::moving(pid, node, from, to, primary, meta_term) {
                Some(r) => crate::reconcile::run_repair(node, &r).await,
                None => Err(WingError::InvalidState(format!(
                    "partition {pid} no longer has node {from} and not node {to} among its members"
                ))),
            }
        }
        Move::Primary { pid, from, to } => move_primary(node, pid, from, to, meta_term).await,
    }
}

/// Hands `pid`'s primary from `from` to `to`, and records both nodes' answers, so that the
/// next plan sees the new primary before its heartbeat arrives.
pub(crate) async fn move_primary(
    node: &MetaNode,
    pid: PartitionId,
    from: u64,
    to: u64,
    meta_term: u64,
) -> Result<(), WingError> {
    let mut req =
        tonic::Request::new(TransferPrimaryRequest { partition: Some(pid.to_proto()), to, meta_term: Some(meta_term) });
    req.set_timeout(TRANSFER);
    let status = node.admin(from)?.transfer_primary(req).await.map_err(|s| WingError::from_status(&s))?;
    node.liveness.record_one(meta_term, from, status.get_ref());
    let req = StatusRequest { partition: Some(pid.to_proto()) };
    let status = node.admin(to)?.status(req).await.map_err(|s| WingError::from_status(&s))?;
    for r in &status.get_ref().replicas {
        node.liveness.record_one(meta_term, to, r);
    }
    Ok(())
}
