//! The meta leader's reconcile loop: makes the replica servers host what the catalog says.
//!
//! Every tick, on the leader only: create replicas that a live member does not host (the first
//! member bootstraps a group nobody hosts yet), replace members on dead nodes (add learner on
//! the primary, then change membership, then record it), adopt memberships a primary reports
//! that the catalog missed, and remove expired dropped tables. Repairs run concurrently in a
//! `JoinSet` owned by the loop, one per partition at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wingkv_common::report::report_from_status;
use wingkv_common::{ErrorCode, PartitionId, WingError};
use wingkv_proto::replica_admin::{
    AddLearnerRequest, ChangeMembershipRequest, CreateReplicaRequest, Member, PartitionRequest, StatusRequest,
};

use crate::catalog::{AppState, MetaCommand};
use crate::liveness::{NodeState, PrimaryInfo};
use crate::node::{now_ms, MetaNode};
use crate::placement;

/// How long a learner may take to catch up before a repair is retried.
const LEARNER_CATCH_UP: Duration = Duration::from_secs(120);

fn ok_if_exists(r: Result<(), WingError>) -> Result<(), WingError> {
    match r {
        Err(e) if e.code() == ErrorCode::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Creates the replicas of `app` that its live members do not host yet.
pub async fn ensure_app_replicas(node: &MetaNode, app: &AppState) {
    for (idx, p) in app.partitions.iter().enumerate() {
        let pid = PartitionId::new(app.app_id, idx as u32);
        let nobody_hosts = p.members.iter().all(|m| !node.liveness.hosted(*m).contains(&pid));
        for (i, m) in p.members.iter().enumerate() {
            if node.liveness.state(*m) == NodeState::Dead || node.liveness.hosted(*m).contains(&pid) {
                continue;
            }
            let bootstrap = i == 0 && nobody_hosts && node.liveness.primary(pid).is_none();
            let initial_members = if bootstrap {
                p.members.iter().map(|n| Member { node_id: *n, address: node.node_address(*n) }).collect()
            } else {
                Vec::new()
            };
            let res = async {
                let mut admin = node.admin(*m)?;
                let req = CreateReplicaRequest { partition: Some(pid.to_proto()), initial_members };
                match admin.create_replica(req).await {
                    Ok(s) => {
                        node.liveness.record_one(node.term(), *m, report_from_status(s.get_ref()));
                        Ok(())
                    }
                    Err(s) => Err(WingError::from_status(&s)),
                }
            }
            .await;
            if let Err(e) = ok_if_exists(res) {
                tracing::warn!(partition = %pid, node = m, "cannot create replica: {e}");
            }
        }
    }
}

/// Polls the members of `app` until every partition reports a primary, or `timeout`.
pub async fn wait_primaries(node: &MetaNode, app: &AppState, timeout: Duration) -> Result<(), WingError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for (idx, p) in app.partitions.iter().enumerate() {
            let pid = PartitionId::new(app.app_id, idx as u32);
            if node.liveness.primary(pid).is_some() {
                continue;
            }
            for m in &p.members {
                if let Ok(mut admin) = node.admin(*m) {
                    if let Ok(resp) = admin.status(StatusRequest { partition: Some(pid.to_proto()) }).await {
                        for s in &resp.get_ref().replicas {
                            node.liveness.record_one(node.term(), *m, report_from_status(s));
                        }
                    }
                }
            }
            if node.liveness.primary(pid).is_none() {
                missing.push(pid.to_string());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(WingError::Timeout(format!(
                "table '{}' was created, but partitions {} have no primary after {timeout:?}",
                app.name,
                missing.join(",")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the reconcile loop until `cancel` fires; waits for its repairs before returning.
pub async fn run(node: Arc<MetaNode>, cancel: CancellationToken) {
    let mut repairs: JoinSet<()> = JoinSet::new();
    let mut led_term: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.reconcile_interval_ms.max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        while repairs.try_join_next().is_some() {}
        let term = node.raft.metrics().borrow().current_term;
        if !node.is_leader() {
            led_term = None;
            continue;
        }
        if led_term != Some(term) {
            // A new leadership: every node not heard from in it gets a fresh grace period.
            node.liveness.enter_term(term);
            led_term = Some(term);
            tracing::info!(term, "meta leader: reconciling");
        }
        reconcile_once(&node, &mut repairs).await;
    }
    repairs.abort_all();
    while repairs.join_next().await.is_some() {}
}

async fn reconcile_once(node: &Arc<MetaNode>, repairs: &mut JoinSet<()>) {
    let catalog = node.catalog();
    let alive: Vec<u64> =
        catalog.nodes.keys().copied().filter(|n| node.liveness.state(*n) == NodeState::Alive).collect();
    let now = now_ms();
    for app in catalog.apps.values() {
        if let Some(drop) = app.dropped {
            if drop.expire_time_ms <= now {
                purge_app(node, app).await;
            }
            continue;
        }
        ensure_app_replicas(node, app).await;
        for (idx, p) in app.partitions.iter().enumerate() {
            let pid = PartitionId::new(app.app_id, idx as u32);
            if node.repairs.lock().unwrap_or_else(|e| e.into_inner()).contains(&pid) {
                continue;
            }
            let Some(primary) = node.liveness.primary(pid) else {
                continue;
            };
            // The primary's voters are the truth; adopt a change the catalog missed (a meta
            // failover between a membership change and its record).
            let mut reported = primary.voters.clone();
            reported.sort();
            let mut known = p.members.clone();
            known.sort();
            if !reported.is_empty() && reported != known {
                let mut members: Vec<u64> = p.members.iter().copied().filter(|m| reported.contains(m)).collect();
                members.extend(reported.iter().copied().filter(|m| !p.members.contains(m)));
                let cmd = MetaCommand::SetMembers { partition: pid, ballot: p.ballot, members };
                if let Err(e) = node.propose(cmd).await {
                    tracing::warn!(partition = %pid, "cannot adopt reported membership: {e}");
                }
                continue;
            }
            let dead: Vec<u64> =
                p.members.iter().copied().filter(|m| node.liveness.state(*m) == NodeState::Dead).collect();
            let Some(lost) = dead.first().copied() else {
                continue;
            };
            let load = catalog.load_by_node();
            let Some(replacement) = placement::replacement(&alive, &load, &p.members) else {
                tracing::warn!(partition = %pid, "member {lost} is dead and no node can replace it");
                continue;
            };
            node.repairs.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
            let node2 = node.clone();
            let (members, ballot) = (p.members.clone(), p.ballot);
            repairs.spawn(async move {
                tracing::info!(partition = %pid, lost, replacement, "replacing a dead member");
                match replace_member(&node2, pid, ballot, &members, lost, replacement, &primary).await {
                    Ok(()) => tracing::info!(partition = %pid, lost, replacement, "member replaced"),
                    Err(e) => tracing::warn!(partition = %pid, lost, replacement, "repair failed (will retry): {e}"),
                }
                node2.repairs.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
            });
        }
    }
}

fn status_err(s: tonic::Status) -> WingError {
    WingError::from_status(&s)
}

async fn replace_member(
    node: &MetaNode,
    pid: PartitionId,
    ballot: u64,
    members: &[u64],
    lost: u64,
    replacement: u64,
    primary: &PrimaryInfo,
) -> Result<(), WingError> {
    let p = Some(pid.to_proto());
    let create = node
        .admin(replacement)?
        .create_replica(CreateReplicaRequest { partition: p, initial_members: vec![] })
        .await
        .map(|_| ())
        .map_err(status_err);
    ok_if_exists(create)?;
    let mut primary_admin = node.admin(primary.node_id)?;
    let learner = Member { node_id: replacement, address: node.node_address(replacement) };
    let mut req = tonic::Request::new(AddLearnerRequest { partition: p, learner: Some(learner), blocking: true });
    req.set_timeout(LEARNER_CATCH_UP);
    primary_admin.add_learner(req).await.map_err(status_err)?;
    let voters: Vec<u64> = members.iter().copied().filter(|m| *m != lost).chain([replacement]).collect();
    primary_admin
        .change_membership(ChangeMembershipRequest { partition: p, voters: voters.clone() })
        .await
        .map_err(status_err)?;
    node.propose(MetaCommand::SetMembers { partition: pid, ballot, members: voters }).await?;
    Ok(())
}

async fn purge_app(node: &MetaNode, app: &AppState) {
    for (idx, p) in app.partitions.iter().enumerate() {
        let pid = PartitionId::new(app.app_id, idx as u32);
        for m in &p.members {
            if node.liveness.state(*m) != NodeState::Alive {
                continue; // its heartbeat will be told to remove the replica
            }
            if let Ok(mut admin) = node.admin(*m) {
                if let Err(s) = admin.remove_replica(PartitionRequest { partition: Some(pid.to_proto()) }).await {
                    if WingError::from_status(&s).code() != ErrorCode::NotFound {
                        tracing::warn!(partition = %pid, node = m, "cannot remove replica of an expired table: {}", s.message());
                    }
                }
            }
        }
    }
    match node.propose(MetaCommand::PurgeTable { app_id: app.app_id }).await {
        Ok(_) => {
            tracing::info!(app_id = app.app_id, name = %app.name, "expired dropped table purged")
        }
        Err(e) => tracing::warn!(app_id = app.app_id, "cannot purge table: {e}"),
    }
}
