//! The meta leader's reconcile loop: makes the replica servers host what the catalog says.
//!
//! Every tick, on the leader only, after a read barrier (the catalog it acts on is linearizable,
//! and every request it sends carries the term it confirmed, so replica servers can refuse a
//! deposed leader's orders):
//! - bootstrap the groups of new partitions (every member initialized with the same voters);
//! - repair: replace members on dead nodes, top up partitions below their replica count (at
//!   most `balance_max_moves` at once, a budget apart from the balancer's), take members out of partitions above it (never the
//!   primary; `set_replica_count`), and let a
//!   member that lost its replica (a wiped directory) **rejoin as a learner** — out of the voters
//!   first, then a fresh replica, caught up, then a voter again — never as a voter with an empty
//!   vote;
//! - adopt memberships a primary reports that the catalog missed, and take out learners that
//!   an aborted change left behind;
//! - purge expired dropped tables (a conditional command: nothing happens if a recall committed);
//! - drain decommissioned nodes, and at meta level `lively` balance (see [`crate::balancer`]);
//!   at `freezed`, none of the above but bootstraps and adoptions.
//!
//! Repairs, balancing moves and manual moves (`propose`, queued to the loop) run concurrently
//! in a `JoinSet` owned by the loop, one per partition at a time, and are aborted the moment
//! this meta stops leading or its term changes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wingkv_common::sync::MutexExt;
use wingkv_common::time::unix_millis;
use wingkv_common::{ErrorCode, PartitionId, WingError};
use wingkv_proto::replica_admin::{
    AddLearnerRequest, CampaignRequest, ChangeMembershipRequest, CreateReplicaRequest, Member, RemoveLearnersRequest,
    StatusRequest,
};

use crate::catalog::{AppState, MetaCommand, MetaLevel};
use crate::liveness::{NodeState, PrimaryInfo};
use crate::node::MetaNode;
use crate::placement;

/// How long a learner may take to catch up before a repair is retried.
const LEARNER_CATCH_UP: Duration = Duration::from_secs(120);

/// How long one membership change may take on the primary.
const MEMBERSHIP_CHANGE: Duration = Duration::from_secs(30);

fn ok_if_exists(r: Result<(), WingError>) -> Result<(), WingError> {
    match r {
        Err(e) if e.code() == ErrorCode::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Whether `app`'s replicas are created with RocksDB's `allow_ingest_behind` (an option fixed
/// when a DB is created, so it follows the table env as it is at creation).
fn allows_ingest_behind(app: &AppState) -> bool {
    app.envs.get("rocksdb.allow_ingest_behind").map(String::as_str) == Some("true")
}

/// Creates a replica of `pid` on `node` (with `initial_members`: bootstraps the group).
async fn create_replica(
    node: &MetaNode,
    on: u64,
    pid: PartitionId,
    initial_members: Vec<Member>,
    meta_term: u64,
) -> Result<(), WingError> {
    let mut admin = node.admin(on)?;
    let catalog = node.catalog();
    let (allow_ingest_behind, partition_count) = match catalog.apps.get(&pid.app_id) {
        Some(app) => (allows_ingest_behind(app), app.partition_count),
        None => (false, 0),
    };
    let req = CreateReplicaRequest {
        partition: Some(pid.to_proto()),
        initial_members,
        meta_term: Some(meta_term),
        allow_ingest_behind,
        partition_count,
        restoring: catalog.backups.blocks_serving(pid.app_id),
    };
    match admin.create_replica(req).await {
        Ok(s) => {
            node.liveness.record_one(meta_term, on, s.get_ref());
            Ok(())
        }
        Err(s) => Err(WingError::from_status(&s)),
    }
}

/// A partition claimed in a set (such as [`MetaNode::bootstrapping`]) for as long as this lives.
struct Claim<'a> {
    set: &'a Mutex<HashSet<PartitionId>>,
    pid: PartitionId,
}

impl<'a> Claim<'a> {
    /// Claims `pid` in `set`; `None` if it is claimed already.
    fn take(set: &'a Mutex<HashSet<PartitionId>>, pid: PartitionId) -> Option<Self> {
        // The lock is released first, and no claim is built when none is taken: a claim
        // releases on drop.
        let claimed = set.locked().insert(pid);
        claimed.then(|| Self { set, pid })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.locked().remove(&self.pid);
    }
}

/// Bootstraps the groups of `app`'s partitions that were never formed: only when every member
/// reported in this term (a positive fact) and none of those hosting the partition ever left
/// term 0 (nobody ever voted, so nobody can have forgotten a vote). Every missing member is
/// created with the full voter list, so each holds the membership and may vote.
///
/// The partition is claimed until every creation answered: the first members may form the
/// group (and report a primary) before the last one's replica exists, and that member must not
/// be taken for one that lost its replica (see [`plan_repair`]).
pub async fn bootstrap_app_replicas(node: &MetaNode, app: &AppState, meta_term: u64) {
    for (idx, p) in app.partitions.iter().enumerate() {
        let pid = PartitionId::new(app.app_id, idx as u32);
        if node.liveness.primary(pid).is_some() {
            continue;
        }
        if !p.members.iter().all(|m| node.liveness.state(*m) == NodeState::Alive) {
            continue;
        }
        let never_formed = p
            .members
            .iter()
            .filter(|m| node.liveness.hosted(**m).contains(&pid))
            .all(|m| node.liveness.reported_term(*m, pid) == Some(0));
        if !never_formed {
            continue;
        }
        let Some(_claim) = Claim::take(&node.bootstrapping, pid) else {
            continue;
        };
        let voters: Vec<Member> =
            p.members.iter().map(|n| Member { node_id: *n, address: node.node_address(*n) }).collect();
        let mut created = true;
        for m in &creation_order(&p.members) {
            if node.liveness.hosted(*m).contains(&pid) {
                continue;
            }
            if let Err(e) = ok_if_exists(create_replica(node, *m, pid, voters.clone(), meta_term).await) {
                tracing::warn!(partition = %pid, node = m, "cannot create replica: {e}");
                created = false;
            }
        }
        if created {
            let lead = campaign_first_member(node, pid, p.members.first().copied(), meta_term);
            if tokio::time::timeout(BOOTSTRAP_PRIMARY, lead).await.is_err() {
                tracing::info!(partition = %pid, "a new group's primary is not where placement put it: timed out");
            }
        }
    }
}

/// The order in which a new group's members are created, so that the first member, which
/// placement chose to lead (spreading them evenly, see [`placement::place`]), is the one whose
/// replica completes a quorum: openraft's `initialize` starts an election at once, and the
/// earlier members' elections failed for want of voters, so that one wins while the others
/// wait for their election timers.
fn creation_order(members: &[u64]) -> Vec<u64> {
    let Some((first, others)) = members.split_first() else { return Vec::new() };
    let before = (members.len() / 2).min(others.len());
    let mut order = others[..before].to_vec();
    order.push(*first);
    order.extend_from_slice(&others[before..]);
    order
}

/// How long the first member of a new group campaigns to become its primary.
const BOOTSTRAP_CAMPAIGN: Duration = Duration::from_secs(3);
/// How long making it primary may take in all (campaign, then handovers): table creation waits.
const BOOTSTRAP_PRIMARY: Duration = Duration::from_secs(10);

/// Makes `first`, the member placement chose to lead a new group (it spreads them evenly, see
/// [`placement::place`]), its primary. Left to their election timers, the members of a new
/// group elect whoever goes first, and a node can end up leading none of a table's partitions
/// (seen: 11, 5 and 0 primaries for 16 partitions on 3 nodes). Usually `first` leads already
/// (see [`creation_order`]) and its campaign answers at once; otherwise the winner hands over.
/// Either way the group has a primary, so a failure is only logged. At most [`BOOTSTRAP_PRIMARY`].
async fn campaign_first_member(node: &MetaNode, pid: PartitionId, first: Option<u64>, meta_term: u64) {
    let Some(first) = first else { return };
    let req = CampaignRequest {
        partition: Some(pid.to_proto()),
        // No member hands over: any other leader ends the campaign.
        from: 0,
        timeout_ms: BOOTSTRAP_CAMPAIGN.as_millis() as u64,
        meta_term: Some(meta_term),
    };
    let mut req = tonic::Request::new(req);
    req.set_timeout(BOOTSTRAP_CAMPAIGN + Duration::from_secs(1));
    let mut admin = match node.admin(first) {
        Ok(a) => a,
        Err(e) => return tracing::debug!(partition = %pid, node = first, "first member not asked to campaign: {e}"),
    };
    let campaign = admin.campaign(req).await;
    if campaign.is_ok() {
        return record_once_settled(node, &mut admin, pid, first, meta_term).await;
    }
    // Another member won the first election: it hands over, which costs little, since a new
    // group serves little or nothing yet. A leader just elected refuses until it heard from a
    // quorum, hence a few tries.
    let mut last = format!("{campaign:?}");
    for attempt in 1..=3u32 {
        tokio::time::sleep(Duration::from_millis(300) * attempt).await;
        let status = admin.status(StatusRequest { partition: Some(pid.to_proto()) }).await;
        let leader = status.ok().and_then(|s| s.get_ref().replicas.first().and_then(|r| r.leader_id));
        match leader {
            Some(l) if l == first => return record_once_settled(node, &mut admin, pid, first, meta_term).await,
            Some(l) if l != 0 => match crate::balancer::move_primary(node, pid, l, first, meta_term).await {
                Ok(()) => return record_once_settled(node, &mut admin, pid, first, meta_term).await,
                Err(e) => last = e.to_string(),
            },
            _ => last = "no primary yet".into(),
        }
    }
    tracing::info!(partition = %pid, node = first, "a new group's primary is not where placement put it: {last}");
}

/// Records `first`'s report once its membership is committed in its term (a leader just
/// elected reports it unsettled until then, and a recorded unsettled report holds up moves and
/// repairs of the partition until the node's next heartbeat); polls briefly, then gives up.
async fn record_once_settled(
    node: &MetaNode,
    admin: &mut wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient<tonic::transport::Channel>,
    pid: PartitionId,
    first: u64,
    meta_term: u64,
) {
    for _ in 0..40 {
        if let Ok(s) = admin.status(StatusRequest { partition: Some(pid.to_proto()) }).await {
            if let Some(r) = s.get_ref().replicas.first().filter(|r| r.settled != Some(false)) {
                node.liveness.record_one(meta_term, first, r);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
                    let req = StatusRequest { partition: Some(pid.to_proto()) };
                    if let Ok(resp) = admin.status(req).await {
                        for s in &resp.get_ref().replicas {
                            node.liveness.record_one(node.term(), *m, s);
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
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.reconcile_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Some(mut manual) = node.manual_moves.take_receiver() else {
        tracing::error!("a second reconcile loop for one meta node: not started");
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            Some(mv) = manual.recv() => {
                while repairs.try_join_next().is_some() {}
                crate::balancer::start_manual(&node, &mut repairs, mv, led_term.filter(|t| *t == node.term()));
                continue;
            }
        }
        while repairs.try_join_next().is_some() {}
        let term = node.term();
        if !node.is_leader() || led_term.is_some_and(|t| t != term) {
            if led_term.take().is_some() {
                // Whatever the repairs were doing was decided under a leadership that is over.
                abort_repairs(&node, &mut repairs).await;
                tracing::info!(term, "no longer the meta leader of the reconciled term: repairs aborted");
            }
            if !node.is_leader() {
                continue;
            }
        }
        if led_term != Some(term) {
            // A new leadership: every node not heard from in it gets a fresh grace period.
            node.liveness.enter_term(term);
            led_term = Some(term);
            tracing::info!(term, "meta leader: reconciling");
        }
        // Acts only on a linearizable catalog, in the term it was confirmed in.
        let meta_term = match node.read_barrier_term().await {
            Ok(t) if t == term => t,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("reconcile skipped: {e}");
                continue;
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = reconcile_once(&node, &mut repairs, meta_term) => {}
        }
    }
    abort_repairs(&node, &mut repairs).await;
}

async fn abort_repairs(node: &MetaNode, repairs: &mut JoinSet<()>) {
    repairs.abort_all();
    while repairs.join_next().await.is_some() {}
    node.repairs.locked().clear();
    node.repairs_done.locked().clear();
    node.adding.locked().clear();
    node.balancer.reset();
}

/// What one repair changes in a partition's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// A member that lost its replica (a wiped directory) gets a fresh one, as a learner first.
    Rejoin(u64),
    /// `lost` (a dead node, or a live one the balancer moves away from) is replaced by `add`.
    Replace {
        /// The member that goes.
        lost: u64,
        /// The node that gets a fresh replica and becomes a voter.
        add: u64,
    },
    /// A partition below its replica count gets a member.
    Add(u64),
    /// A partition above its replica count loses a member (never its primary).
    Remove(u64),
    /// A learner no repair or move of this leadership added (one an aborted or failed change
    /// left behind) leaves the group, so that its replica is removed.
    DropLearner(u64),
}

impl Change {
    fn kind(&self) -> &'static str {
        match self {
            Change::Rejoin(_) => "rejoin as a learner",
            Change::Replace { .. } => "replace a member",
            Change::Add(_) => "add a member",
            Change::Remove(_) => "remove a member",
            Change::DropLearner(_) => "drop a stray learner",
        }
    }

    /// The node that gets a fresh replica, if any.
    fn added(&self) -> Option<u64> {
        match *self {
            Change::Rejoin(n) | Change::Add(n) | Change::Replace { add: n, .. } => Some(n),
            Change::Remove(_) | Change::DropLearner(_) => None,
        }
    }

    /// The member that leaves the voters for good, if any.
    fn leaving(&self) -> Option<u64> {
        match *self {
            Change::Replace { lost: n, .. } | Change::Remove(n) => Some(n),
            Change::Rejoin(_) | Change::Add(_) | Change::DropLearner(_) => None,
        }
    }
}

/// One repair of a partition's membership (or a balancer's replica move, which is run the same
/// way: see [`Repair::moving`]).
pub(crate) struct Repair {
    pid: PartitionId,
    ballot: u64,
    members: Vec<u64>,
    change: Change,
    primary: PrimaryInfo,
    meta_term: u64,
}

impl Repair {
    /// The move of `pid`'s replica from `from` to `to`, on the catalog as it is now; `None` if
    /// the partition no longer has `from` and not `to` among its members.
    pub(crate) fn moving(
        pid: PartitionId,
        node: &MetaNode,
        from: u64,
        to: u64,
        primary: PrimaryInfo,
        meta_term: u64,
    ) -> Option<Self> {
        let (members, ballot) = node.with_catalog(|c| {
            let p = c.apps.get(&pid.app_id)?.partitions.get(pid.partition_index as usize)?;
            Some((p.members.clone(), p.ballot))
        })?;
        (members.contains(&from) && !members.contains(&to)).then_some(Self {
            pid,
            ballot,
            members,
            change: Change::Replace { lost: from, add: to },
            primary,
            meta_term,
        })
    }
}

async fn reconcile_once(node: &Arc<MetaNode>, repairs: &mut JoinSet<()>, meta_term: u64) {
    // Repairs that ended before this read are in it (their membership record included); only
    // then may their partitions be planned again, never on a read older than their end.
    let done: Vec<PartitionId> = std::mem::take(&mut *node.repairs_done.locked());
    let catalog = node.catalog();
    {
        let mut in_flight = node.repairs.locked();
        for pid in done {
            in_flight.remove(&pid);
        }
    }
    // Where replacements may go: alive nodes that are not draining.
    let alive: Vec<u64> = catalog
        .nodes
        .keys()
        .copied()
        .filter(|n| node.liveness.state(*n) == NodeState::Alive && !catalog.settings.draining.contains(n))
        .collect();
    // Replicas per node, kept up to date with the repairs planned below.
    let mut load = catalog.load_by_node();
    let now = unix_millis();
    // Freezed: nothing automatic but what creations need (bootstraps) and keeping the catalog
    // in step with the groups (adopting memberships they report).
    let level = catalog.settings.meta_level;
    let freezed = level == MetaLevel::Freezed;
    for app in catalog.apps.values() {
        if let Some(drop) = app.dropped {
            if drop.expire_time_ms <= now && !freezed {
                purge_app(node, app, now).await;
            }
            continue;
        }
        bootstrap_app_replicas(node, app, meta_term).await;
        for (idx, p) in app.partitions.iter().enumerate() {
            let pid = PartitionId::new(app.app_id, idx as u32);
            if node.repairs.locked().contains(&pid) || node.bootstrapping.locked().contains(&pid) {
                continue;
            }
            let Some(primary) = node.liveness.primary(pid) else {
                continue;
            };
            // A joint or uncommitted membership is a change still running (or one a deposed
            // primary may never commit): neither recorded nor changed again until it settles.
            if !primary.settled {
                tracing::debug!(partition = %pid, primary = primary.node_id, "membership not settled: left alone");
                continue;
            }
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
            if freezed {
                continue;
            }
            let Some(change) = plan_repair(node, &alive, &load, &catalog, app, p, pid, &primary) else {
                continue;
            };
            if let Change::Add(_) = change {
                let mut adding = node.adding.locked();
                if adding.len() >= node.config.balance_max_moves {
                    continue;
                }
                adding.insert(pid);
            }
            // What later plans of this tick see: the replicas this one adds and removes.
            if let Some(n) = change.added() {
                load.entry(n).or_default().0 += 1;
            }
            if let Some(n) = change.leaving() {
                let l = load.entry(n).or_default();
                l.0 = l.0.saturating_sub(1);
            }
            node.repairs.locked().insert(pid);
            let repair = Repair { pid, ballot: p.ballot, members: p.members.clone(), change, primary, meta_term };
            let node2 = node.clone();
            repairs.spawn(async move {
                let (kind, pid) = (change.kind(), repair.pid);
                tracing::info!(partition = %pid, ?change, meta_term, "repair: {kind}");
                match run_repair(&node2, &repair).await {
                    Ok(()) => tracing::info!(partition = %pid, ?change, "repair done: {kind}"),
                    Err(e) => tracing::warn!(partition = %pid, ?change, "repair failed (will retry): {kind}: {e}"),
                }
                node2.adding.locked().remove(&pid);
                node2.repairs_done.locked().push(pid);
            });
        }
    }
    if !freezed {
        crate::balancer::balance_once(node, repairs, &catalog, meta_term, level == MetaLevel::Lively);
    }
}

/// What a partition led by `primary` needs, if anything.
#[allow(clippy::too_many_arguments)]
fn plan_repair(
    node: &MetaNode,
    alive: &[u64],
    load: &placement::Load,
    catalog: &crate::catalog::Catalog,
    app: &AppState,
    p: &crate::catalog::PartitionState,
    pid: PartitionId,
    primary: &PrimaryInfo,
) -> Option<Change> {
    let state = |m: &u64| node.liveness.state(*m);
    // Learners exist only while a change of the partition runs, and none runs (the partition
    // is not claimed): the primary holding one is a positive fact it was left behind. The
    // primary itself refuses if the node is a voter by now.
    if let Some(l) = primary.learners.first() {
        return Some(Change::DropLearner(*l));
    }
    if p.members.len() as u32 > app.replica_count {
        // The committed count says one goes. Never the primary; of the others, what serves the
        // least: a dead member, one that lost its replica, a draining one, then the busiest.
        let rank = |m: &u64| {
            let class = if state(m) == NodeState::Dead {
                0
            } else if !node.liveness.hosted(*m).contains(&pid) {
                1
            } else if catalog.settings.draining.contains(m) {
                2
            } else {
                3
            };
            (class, std::cmp::Reverse(load.get(m).map_or(0, |l| l.0)), *m)
        };
        return p.members.iter().filter(|m| **m != primary.node_id).min_by_key(|m| rank(m)).map(|m| Change::Remove(*m));
    }
    // A new member goes only where no replica of the partition is: one there (a removal not
    // done yet, one left by a cut-short change) is the heartbeat rule's to remove first.
    let candidates: Vec<u64> =
        alive.iter().copied().filter(|n| !node.liveness.hosts(*n, pid) && !node.refused_target(pid, *n)).collect();
    if let Some(dead) = p.members.iter().copied().find(|m| state(m) == NodeState::Dead) {
        let Some(replacement) = placement::replacement(&candidates, load, &p.members) else {
            tracing::warn!(partition = %pid, "member {dead} is dead and no node can replace it");
            return None;
        };
        return Some(Change::Replace { lost: dead, add: replacement });
    }
    // A live member that reported in this term and does not host the replica lost it.
    // Rejoin only while every other member is alive: the group runs one voter short meanwhile.
    let all_alive = p.members.iter().all(|m| state(m) == NodeState::Alive);
    if let Some(m) = p.members.iter().copied().find(|m| !node.liveness.hosted(*m).contains(&pid)) {
        return all_alive.then_some(Change::Rejoin(m));
    }
    if (p.members.len() as u32) < app.replica_count && all_alive {
        return placement::replacement(&candidates, load, &p.members).map(Change::Add);
    }
    None
}

/// Records what the primary answered to a membership change as its latest report: its next
/// heartbeat may be older than the change, and the loop must not adopt the old voters back.
fn record_primary(node: &MetaNode, r: &Repair, status: &wingkv_proto::replica_admin::ReplicaStatus) {
    node.liveness.record_one(r.meta_term, r.primary.node_id, status);
}

fn status_err(s: tonic::Status) -> WingError {
    WingError::from_status(&s)
}

pub(crate) async fn run_repair(node: &MetaNode, r: &Repair) -> Result<(), WingError> {
    let add = match r.change {
        Change::Remove(_) => return remove_member(node, r).await,
        Change::DropLearner(l) => return drop_learner(node, r, l).await,
        Change::Rejoin(n) | Change::Add(n) | Change::Replace { add: n, .. } => n,
    };
    let p = Some(r.pid.to_proto());
    let fence = Some(r.meta_term);
    let mut primary_admin = node.admin(r.primary.node_id)?;
    let rejoin = matches!(r.change, Change::Rejoin(_));
    if rejoin {
        // A heartbeat that does not list the replica may only be older than its creation: the
        // node itself must say, now, that it does not host it.
        let req = StatusRequest { partition: p };
        match node.admin(add)?.status(req).await {
            Ok(s) => {
                for rep in &s.get_ref().replicas {
                    node.liveness.record_one(r.meta_term, add, rep);
                }
                return Err(WingError::InvalidState(format!("node {} hosts {} after all", add, r.pid)));
            }
            Err(s) if WingError::from_status(&s).code() == ErrorCode::NotFound => {}
            Err(s) => return Err(status_err(s)),
        }
    }
    if rejoin && (r.primary.voters.contains(&add) || r.primary.learners.contains(&add)) {
        // Out of the group first: the fresh replica must never count as a voter that forgot its
        // vote, and the primary must never see a member's log go back to empty.
        let voters: Vec<u64> = r.primary.voters.iter().copied().filter(|v| *v != add).collect();
        let mut req = tonic::Request::new(ChangeMembershipRequest { partition: p, voters, meta_term: fence });
        req.set_timeout(MEMBERSHIP_CHANGE);
        primary_admin.change_membership(req).await.map_err(status_err)?;
    }
    let created = create_replica(node, add, r.pid, Vec::new(), r.meta_term).await;
    if rejoin {
        // The node reported it does not host the replica: if it has one on disk after all (one
        // it could not open), it stays out of the group until an operator looks.
        created.map_err(|e| {
            WingError::InvalidState(format!("node {} cannot host a fresh replica of {}: {e}", add, r.pid))
        })?;
    } else {
        // Planned where the node reported no replica of the partition: one found there now is
        // not this repair's (a removal the node has not done yet), and must not join the group.
        created.map_err(|e| match e.code() {
            ErrorCode::AlreadyExists => {
                // Another node is picked for a while: this one may keep a directory it cannot
                // open, which no report shows.
                node.refuse_target(r.pid, add);
                WingError::InvalidState(format!(
                    "node {add} already has a replica of {} that is not a member (a removal not done yet): {e}",
                    r.pid
                ))
            }
            _ => e,
        })?;
    }
    let learner = Member { node_id: add, address: node.node_address(add) };
    let mut req = tonic::Request::new(AddLearnerRequest {
        partition: p,
        learner: Some(learner),
        blocking: true,
        meta_term: fence,
    });
    req.set_timeout(LEARNER_CATCH_UP);
    let status = primary_admin.add_learner(req).await.map_err(status_err)?;
    record_primary(node, r, status.get_ref());
    let lost = r.change.leaving();
    let voters: Vec<u64> =
        r.members.iter().copied().filter(|m| Some(*m) != lost).chain((!rejoin).then_some(add)).collect();
    let mut req =
        tonic::Request::new(ChangeMembershipRequest { partition: p, voters: voters.clone(), meta_term: fence });
    req.set_timeout(MEMBERSHIP_CHANGE);
    let status = primary_admin.change_membership(req).await.map_err(status_err)?;
    record_primary(node, r, status.get_ref());
    if voters != r.members {
        node.propose(MetaCommand::SetMembers { partition: r.pid, ballot: r.ballot, members: voters }).await?;
    }
    Ok(())
}

/// Takes the leaving member of a [`Change::Remove`] out of the group, then out of the catalog.
/// Its replica is removed by its node's next heartbeat, once both say it is out.
async fn remove_member(node: &MetaNode, r: &Repair) -> Result<(), WingError> {
    let Some(leaving) = r.change.leaving() else {
        return Err(WingError::Internal(format!("partition {}: {:?} removes no member", r.pid, r.change)));
    };
    let voters: Vec<u64> = r.members.iter().copied().filter(|m| *m != leaving).collect();
    let req = ChangeMembershipRequest {
        partition: Some(r.pid.to_proto()),
        voters: voters.clone(),
        meta_term: Some(r.meta_term),
    };
    let mut req = tonic::Request::new(req);
    req.set_timeout(MEMBERSHIP_CHANGE);
    let status = node.admin(r.primary.node_id)?.change_membership(req).await.map_err(status_err)?;
    record_primary(node, r, status.get_ref());
    node.propose(MetaCommand::SetMembers { partition: r.pid, ballot: r.ballot, members: voters }).await?;
    Ok(())
}

/// Takes `learner` out of the group; its replica is removed by its node's next heartbeat, once
/// the primary's report no longer lists it.
async fn drop_learner(node: &MetaNode, r: &Repair, learner: u64) -> Result<(), WingError> {
    let req = RemoveLearnersRequest {
        partition: Some(r.pid.to_proto()),
        learners: vec![learner],
        meta_term: Some(r.meta_term),
    };
    let mut req = tonic::Request::new(req);
    req.set_timeout(MEMBERSHIP_CHANGE);
    let status = node.admin(r.primary.node_id)?.remove_learners(req).await.map_err(status_err)?;
    record_primary(node, r, status.get_ref());
    Ok(())
}

/// Purges an expired dropped table. The command applies only if the table is still dropped
/// and expired when it is applied; its replicas are removed afterwards, when their nodes'
/// heartbeats find the table purged (a committed, positive fact).
async fn purge_app(node: &MetaNode, app: &AppState, now_ms: u64) {
    match node.propose(MetaCommand::PurgeExpiredTable { app_id: app.app_id, now_ms }).await {
        Ok(_) => tracing::info!(app_id = app.app_id, name = %app.name, "expired dropped table purged"),
        Err(e) => tracing::warn!(app_id = app.app_id, "table not purged: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_held_once_and_released_on_drop() {
        let set = Mutex::new(HashSet::new());
        let pid = PartitionId::new(1, 0);
        let first = Claim::take(&set, pid).expect("a first claim");
        assert!(Claim::take(&set, pid).is_none(), "claimed twice");
        assert!(set.locked().contains(&pid), "a refused claim released the first one");
        let other = Claim::take(&set, PartitionId::new(1, 1)).expect("another partition");
        drop(first);
        assert!(!set.locked().contains(&pid));
        assert!(Claim::take(&set, pid).is_some());
        drop(other);
        assert!(set.locked().is_empty());
    }
}
