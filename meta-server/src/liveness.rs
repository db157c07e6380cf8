//! What the meta leader knows of the replica servers right now: when each was last heard from,
//! and the replicas each reported. Volatile: it starts over when a meta becomes leader (every
//! node then gets one `node_timeout` of grace before it can be declared dead).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wingkv_common::report::report_from_status;
use wingkv_common::sync::MutexExt;
use wingkv_common::PartitionId;
use wingkv_proto::common::{ReplicaRole, ReportStamp};
use wingkv_proto::meta::{NodeStatus, ReplicaReport};
use wingkv_proto::replica_admin::ReplicaStatus;

use crate::catalog::AppState;

/// Liveness of a replica server as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Heard from within `node_timeout`.
    Alive,
    /// Silent for `node_timeout` or more.
    Dead,
    /// Not heard from since this meta became leader, and still within the grace period.
    Unknown,
}

impl NodeState {
    /// The name shown to users (the proto enum's).
    pub fn as_str(self) -> &'static str {
        NodeStatus::from(self).as_str_name()
    }
}

impl From<NodeState> for NodeStatus {
    fn from(s: NodeState) -> Self {
        match s {
            NodeState::Alive => NodeStatus::Alive,
            NodeState::Dead => NodeStatus::Dead,
            NodeState::Unknown => NodeStatus::Unknown,
        }
    }
}

/// The primary of a partition, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryInfo {
    /// Node hosting the primary.
    pub node_id: u64,
    /// Raft term.
    pub term: u64,
    /// Voters the primary reported.
    pub voters: Vec<u64>,
    /// Learners the primary reported.
    pub learners: Vec<u64>,
    /// Its membership is one config and committed (see `ReplicaStatus.settled`): only then may
    /// it be recorded in the catalog, changed again, or tell that a node is out of the group.
    pub settled: bool,
}

/// The order of one server's reports: (start, sequence) on its own clock (`ReportStamp`).
type Stamp = (u64, u64);

/// Whether a report stamped `a` is known to be newer than one stamped `b`: only within one
/// start of the server. Across starts the later arrival wins: a server whose data dir was
/// wiped counts its starts from 1 again, and its reports must not look old for good.
fn newer(a: Stamp, b: Stamp) -> bool {
    a.0 == b.0 && a.1 > b.1
}

fn stamp_of(s: Option<&ReportStamp>) -> Option<Stamp> {
    s.filter(|s| s.boot > 0).map(|s| (s.boot, s.seq))
}

fn partition_of(r: &ReplicaReport) -> Option<PartitionId> {
    r.partition.map(|q| PartitionId::new(q.app_id, q.partition_index))
}

struct Inner {
    term: u64,
    since: Instant,
    last_seen: HashMap<u64, Instant>,
    reports: HashMap<u64, Vec<ReplicaReport>>,
    /// The stamp of each node's last list of replicas (its heartbeat).
    list_stamps: HashMap<u64, Stamp>,
    /// The stamps of single reports (status answers) newer than their node's last list.
    one_stamps: HashMap<(u64, PartitionId), Stamp>,
    facts: HashMap<u64, (NodeFacts, Instant)>,
}

/// What a node tells about itself in its heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Its binary's version.
    pub version: String,
    /// How long it had been up when it sent the heartbeat (see [`Liveness::facts`]).
    pub uptime_ms: u64,
    /// Where it serves `/metrics`.
    pub http_address: String,
}

/// Liveness and replica reports of every node.
pub struct Liveness {
    node_timeout: Duration,
    inner: Mutex<Inner>,
}

impl Liveness {
    /// Empty view with the given timeout.
    pub fn new(node_timeout: Duration) -> Self {
        Self {
            node_timeout,
            inner: Mutex::new(Inner {
                term: 0,
                since: Instant::now(),
                last_seen: HashMap::new(),
                reports: HashMap::new(),
                list_stamps: HashMap::new(),
                one_stamps: HashMap::new(),
                facts: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    /// Starts over when `term` (the meta leader's raft term) is new: what was seen under
    /// another leadership says nothing about now.
    pub fn enter_term(&self, term: u64) {
        Self::enter(&mut self.lock(), term);
    }

    fn enter(i: &mut Inner, term: u64) {
        if i.term != term {
            i.term = term;
            i.since = Instant::now();
            i.last_seen.clear();
            i.reports.clear();
            i.list_stamps.clear();
            i.one_stamps.clear();
            i.facts.clear();
        }
    }

    /// Records the list of replicas `node` sent (a heartbeat), taken at `stamp`, seen as leader
    /// of `term`. A list older than what is known of a partition does not replace it: a
    /// heartbeat can arrive after the answer to a replica's creation it was taken before, and
    /// that replica must not look lost. A list older than the last one is dropped.
    pub fn record(&self, term: u64, node: u64, mut reports: Vec<ReplicaReport>, stamp: Option<&ReportStamp>) {
        let mut guard = self.lock();
        let i = &mut *guard;
        Self::enter(i, term);
        i.last_seen.insert(node, Instant::now());
        let Some(stamp) = stamp_of(stamp) else {
            i.list_stamps.remove(&node);
            i.one_stamps.retain(|(n, _), _| *n != node);
            i.reports.insert(node, reports);
            return;
        };
        if i.list_stamps.get(&node).is_some_and(|last| *last == stamp || newer(*last, stamp)) {
            return;
        }
        let old = i.reports.remove(&node).unwrap_or_default();
        for ((_, pid), _) in i.one_stamps.iter().filter(|((n, _), s)| *n == node && newer(**s, stamp)) {
            reports.retain(|r| partition_of(r) != Some(*pid));
            reports.extend(old.iter().filter(|r| partition_of(r) == Some(*pid)).cloned());
        }
        i.one_stamps.retain(|(n, _), s| *n != node || newer(*s, stamp));
        i.list_stamps.insert(node, stamp);
        i.reports.insert(node, reports);
    }

    /// Records what `node` told about itself in a heartbeat.
    pub fn record_facts(&self, node: u64, facts: NodeFacts) {
        self.lock().facts.insert(node, (facts, Instant::now()));
    }

    /// What `node` last told about itself, its uptime brought up to now.
    pub fn facts(&self, node: u64) -> Option<NodeFacts> {
        let i = self.lock();
        let (f, at) = i.facts.get(&node)?;
        Some(NodeFacts { uptime_ms: f.uptime_ms + at.elapsed().as_millis() as u64, ..f.clone() })
    }

    /// Replaces one partition's report of `node` with `status` (an answer to a status poll or
    /// an admin order) in `term`, unless `node` already reported something newer.
    pub fn record_one(&self, term: u64, node: u64, status: &ReplicaStatus) {
        let report = report_from_status(status);
        let Some(pid) = partition_of(&report) else {
            return;
        };
        let mut guard = self.lock();
        let i = &mut *guard;
        Self::enter(i, term);
        i.last_seen.insert(node, Instant::now());
        if let Some(stamp) = stamp_of(status.stamp.as_ref()) {
            let newer_list = i.list_stamps.get(&node).is_some_and(|s| newer(*s, stamp));
            let newer_one = i.one_stamps.get(&(node, pid)).is_some_and(|s| newer(*s, stamp));
            if newer_list || newer_one {
                return;
            }
            i.one_stamps.insert((node, pid), stamp);
        }
        let list = i.reports.entry(node).or_default();
        list.retain(|r| r.partition != report.partition);
        list.push(report);
    }

    /// Liveness of `node`.
    pub fn state(&self, node: u64) -> NodeState {
        let i = self.lock();
        match i.last_seen.get(&node) {
            Some(t) if t.elapsed() < self.node_timeout => NodeState::Alive,
            Some(_) => NodeState::Dead,
            None if i.since.elapsed() < self.node_timeout => NodeState::Unknown,
            None => NodeState::Dead,
        }
    }

    /// Milliseconds since `node` was last heard from.
    pub fn silence_ms(&self, node: u64) -> Option<u64> {
        self.lock().last_seen.get(&node).map(|t| t.elapsed().as_millis() as u64)
    }

    /// Whether `node` reported hosting a replica of `p`.
    pub fn hosts(&self, node: u64, p: PartitionId) -> bool {
        self.with_report(node, p, |_| Some(())).is_some()
    }

    /// Partitions `node` reported hosting.
    pub fn hosted(&self, node: u64) -> BTreeSet<PartitionId> {
        self.lock().reports.get(&node).map(|rs| partitions_of(rs).collect()).unwrap_or_default()
    }

    /// How many of `app`'s partitions are healthy: as many members as the table asks for, every
    /// member alive, and a primary reported.
    pub fn healthy_partitions(&self, app: &AppState) -> u32 {
        app.partitions
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                p.members.len() as u32 >= app.replica_count
                    && p.members.iter().all(|m| self.state(*m) == NodeState::Alive)
                    && self.primary(PartitionId::new(app.app_id, *i as u32)).is_some()
            })
            .count() as u32
    }

    /// The primary of `p` reported by an alive node with the highest term.
    pub fn primary(&self, p: PartitionId) -> Option<PrimaryInfo> {
        let i = self.lock();
        let mut best: Option<PrimaryInfo> = None;
        for (node, reports) in &i.reports {
            let alive = i.last_seen.get(node).is_some_and(|t| t.elapsed() < self.node_timeout);
            if !alive {
                continue;
            }
            for r in reports {
                let same = r
                    .partition
                    .as_ref()
                    .is_some_and(|q| q.app_id == p.app_id && q.partition_index == p.partition_index);
                if same && r.role == ReplicaRole::RolePrimary as i32 && best.as_ref().is_none_or(|b| r.term > b.term) {
                    best = Some(PrimaryInfo {
                        node_id: *node,
                        term: r.term,
                        voters: r.voters.clone(),
                        learners: r.learners.clone(),
                        // An older server does not say: as every meta did before it asked.
                        settled: r.settled.unwrap_or(true),
                    });
                }
            }
        }
        best
    }

    /// What `node` last reported of its replica of `p`, through `f`.
    fn with_report<T>(&self, node: u64, p: PartitionId, f: impl FnOnce(&ReplicaReport) -> Option<T>) -> Option<T> {
        let i = self.lock();
        i.reports.get(&node)?.iter().find(|r| partition_of(r) == Some(p)).and_then(f)
    }

    /// The raft term `node` last reported for its replica of `p`, if it reported one.
    pub fn reported_term(&self, node: u64, p: PartitionId) -> Option<u64> {
        self.with_report(node, p, |r| Some(r.term))
    }

    /// The raft term `node` last reported for its replica of `p`, if it knew a leader in it.
    pub fn led_term(&self, node: u64, p: PartitionId) -> Option<u64> {
        self.with_report(node, p, |r| {
            (r.leader_id.is_some() || r.role == ReplicaRole::RolePrimary as i32).then_some(r.term)
        })
    }

    /// Number of primaries each node reported.
    pub fn primary_counts(&self) -> HashMap<u64, u32> {
        let i = self.lock();
        i.reports
            .iter()
            .map(|(n, rs)| (*n, rs.iter().filter(|r| r.role == ReplicaRole::RolePrimary as i32).count() as u32))
            .collect()
    }
}

/// The partitions of `reports` (reports without one are skipped).
pub fn partitions_of(reports: &[ReplicaReport]) -> impl Iterator<Item = PartitionId> + '_ {
    reports.iter().filter_map(|r| r.partition.as_ref()).map(|p| PartitionId::new(p.app_id, p.partition_index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(p: PartitionId, role: ReplicaRole, term: u64) -> ReplicaReport {
        ReplicaReport {
            partition: Some(p.to_proto()),
            role: role as i32,
            term,
            voters: vec![1, 2, 3],
            ..Default::default()
        }
    }

    #[test]
    fn states_and_primaries() {
        let l = Liveness::new(Duration::from_secs(60));
        assert_eq!(l.state(1), NodeState::Unknown);
        let p = PartitionId::new(1, 0);
        l.record(1, 1, vec![report(p, ReplicaRole::RolePrimary, 2)], None);
        l.record(
            1,
            2,
            vec![report(p, ReplicaRole::RolePrimary, 3), report(PartitionId::new(1, 1), ReplicaRole::RoleSecondary, 3)],
            None,
        );
        assert_eq!(l.state(1), NodeState::Alive);
        assert_eq!(l.primary(p).unwrap().node_id, 2, "the higher term wins");
        assert_eq!(l.hosted(2).len(), 2);
        assert_eq!(l.primary(PartitionId::new(1, 1)), None);
        l.enter_term(1);
        assert_eq!(l.state(1), NodeState::Alive, "same term: nothing forgotten");
        l.enter_term(2);
        assert_eq!(l.state(1), NodeState::Unknown);
    }

    #[test]
    fn silence_past_the_timeout_is_death() {
        let l = Liveness::new(Duration::ZERO);
        l.record(1, 1, vec![], None);
        assert_eq!(l.state(1), NodeState::Dead);
        assert_eq!(l.state(2), NodeState::Dead);
    }

    #[test]
    fn only_a_server_that_says_so_reports_a_membership_unsettled() {
        let l = Liveness::new(Duration::from_secs(60));
        let p = PartitionId::new(1, 0);
        let primary = |settled| ReplicaReport { settled, ..report(p, ReplicaRole::RolePrimary, 2) };
        l.record(1, 1, vec![primary(Some(false))], None);
        assert!(!l.primary(p).unwrap().settled);
        l.record(1, 1, vec![primary(Some(true))], None);
        assert!(l.primary(p).unwrap().settled);
        // A server older than the field: as before it, settled.
        l.record(1, 1, vec![primary(None)], None);
        assert!(l.primary(p).unwrap().settled);
    }

    fn stamp(boot: u64, seq: u64) -> ReportStamp {
        ReportStamp { boot, seq }
    }

    fn status(p: PartitionId, at: ReportStamp) -> ReplicaStatus {
        ReplicaStatus { partition: Some(p.to_proto()), stamp: Some(at), ..Default::default() }
    }

    #[test]
    fn a_heartbeat_taken_before_a_creation_does_not_hide_the_created_replica() {
        let l = Liveness::new(Duration::from_secs(60));
        let (p, q) = (PartitionId::new(1, 0), PartitionId::new(1, 1));
        l.record(1, 4, vec![report(q, ReplicaRole::RoleSecondary, 1)], Some(&stamp(1, 5)));
        // The creation's answer (stamped 7), then a heartbeat listed at 6 that arrives late.
        l.record_one(1, 4, &status(p, stamp(1, 7)));
        l.record(1, 4, vec![report(q, ReplicaRole::RoleSecondary, 1)], Some(&stamp(1, 6)));
        assert!(l.hosts(4, p), "a list older than the creation hid the replica");
        assert!(l.hosts(4, q));
        // A heartbeat listed after the creation is the truth (the replica was removed since).
        l.record(1, 4, vec![report(q, ReplicaRole::RoleSecondary, 1)], Some(&stamp(1, 8)));
        assert!(!l.hosts(4, p));
        // An answer older than that list, or a list older than it, changes nothing.
        l.record_one(1, 4, &status(p, stamp(1, 7)));
        l.record(1, 4, vec![report(p, ReplicaRole::RoleSecondary, 1)], Some(&stamp(1, 3)));
        assert!(!l.hosts(4, p) && l.hosts(4, q));
        // Another start: the later arrival wins, even with a lower start count (a wiped dir).
        l.record(1, 4, vec![report(p, ReplicaRole::RoleSecondary, 1)], Some(&stamp(2, 1)));
        assert!(l.hosts(4, p) && !l.hosts(4, q));
        l.record(1, 4, vec![report(q, ReplicaRole::RoleSecondary, 1)], Some(&stamp(1, 1)));
        assert!(!l.hosts(4, p) && l.hosts(4, q), "a server that counts its starts again was ignored");
    }
}
