//! What the meta leader answers a replica server's heartbeat: which of its replicas to remove,
//! which of its tables are dropped, the envs of the tables it hosts, and which bulk-load jobs
//! are still live. The RPC itself is in `service::heartbeat`; this module only decides.
//!
//! A removal destroys data, so it is decided only on a **positive fact** of a catalog read
//! linearizably (the caller passes the read barrier first), never on the absence of one:
//! - the replica's table was purged: its id was handed out (`app_id < next_app_id`; ids are never
//!   reused) and is gone from the catalog, which only a committed `PurgeTable` does;
//! - or the partition's primary, in a term at least the replica's own (the last in which the
//!   replica knew a leader), reports a settled membership (one config, committed) that has this
//!   node neither as voter nor as learner, and the catalog does not list it either.
//!
//! A table the meta does not know (a newer table whose creation this meta has not applied, a
//! catalog restored from an older state) is never a reason to remove anything.

use std::collections::{BTreeSet, HashSet};

use wingkv_common::PartitionId;
use wingkv_proto::meta::HostedTable;

use crate::catalog::Catalog;
use crate::liveness::PrimaryInfo;

/// The answer to one heartbeat.
#[derive(Debug, Default, PartialEq)]
pub struct HeartbeatDecision {
    /// Replicas the node must remove.
    pub remove: Vec<PartitionId>,
    /// Hosted tables that are dropped (recallable).
    pub dropped: Vec<u32>,
    /// Hosted tables being restored (or whose restore failed): they must not serve.
    pub restoring: Vec<u32>,
    /// Hosted live tables with their envs.
    pub tables: Vec<HostedTable>,
    /// Bulk-load jobs not yet over, of any table: every other job id below
    /// `next_bulk_load_job_id` is finished, and a replica server removes its local files.
    pub live_bulk_load_jobs: Vec<u64>,
    /// The id the next bulk-load job will get (ids are never reused).
    pub next_bulk_load_job_id: u64,
}

/// What the decision needs to know about the partitions beyond the catalog.
pub trait PartitionFacts {
    /// The partition's primary as reported in the current meta term.
    fn primary(&self, pid: PartitionId) -> Option<PrimaryInfo>;
    /// The raft term `node` reported for its replica of `pid`, if it knew a leader in that term
    /// (itself or another). A replica campaigning alone raises its term with no leader — a
    /// member the group removed before it heard so does that forever — which says nothing
    /// about the group.
    fn led_term(&self, node: u64, pid: PartitionId) -> Option<u64>;
}

/// Decides the answer to node `node_id`, which hosts `hosted`; `repairs` are the partitions
/// whose membership change is in flight.
pub fn decide(
    catalog: &Catalog,
    node_id: u64,
    hosted: &[PartitionId],
    repairs: &HashSet<PartitionId>,
    facts: &impl PartitionFacts,
) -> HeartbeatDecision {
    let mut out = HeartbeatDecision::default();
    let mut apps = BTreeSet::new();
    for &pid in hosted {
        apps.insert(pid.app_id);
        if should_remove(catalog, node_id, pid, repairs, facts) {
            out.remove.push(pid);
        }
    }
    for id in apps {
        match catalog.apps.get(&id) {
            Some(app) if app.is_dropped() => out.dropped.push(id),
            Some(app) => {
                if catalog.backups.blocks_serving(id) {
                    out.restoring.push(id);
                }
                out.tables.push(HostedTable {
                    app_id: app.app_id,
                    partition_count: app.partition_count,
                    envs: app.envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
            }
            None => {}
        }
    }
    out.live_bulk_load_jobs =
        catalog.bulk_loads.values().filter(|j| !j.status.is_terminal()).map(|j| j.job_id).collect();
    out.next_bulk_load_job_id = catalog.next_job_id;
    out
}

fn should_remove(
    catalog: &Catalog,
    node_id: u64,
    pid: PartitionId,
    repairs: &HashSet<PartitionId>,
    facts: &impl PartitionFacts,
) -> bool {
    let Some(app) = catalog.apps.get(&pid.app_id) else {
        // Purged: the id was handed out and only a committed purge takes a table away.
        return pid.app_id != 0 && pid.app_id < catalog.next_app_id;
    };
    if app.is_dropped() || repairs.contains(&pid) {
        return false;
    }
    let Some(partition) = app.partitions.get(pid.partition_index as usize) else {
        return false;
    };
    if partition.members.contains(&node_id) {
        return false;
    }
    // The group itself must say the node is out, in a term no older than the node's own.
    let Some(primary) = facts.primary(pid) else {
        return false;
    };
    // A joint or uncommitted membership may still change back (a primary deposed before it
    // committed): only a settled one says the node is out.
    if primary.node_id == node_id || primary.voters.is_empty() || !primary.settled {
        return false;
    }
    let newer_than_primary = facts.led_term(node_id, pid).is_some_and(|t| t > primary.term);
    !newer_than_primary && !primary.voters.contains(&node_id) && !primary.learners.contains(&node_id)
}

/// The leader's live view answers the decision's questions.
impl PartitionFacts for crate::liveness::Liveness {
    fn primary(&self, pid: PartitionId) -> Option<PrimaryInfo> {
        crate::liveness::Liveness::primary(self, pid)
    }

    fn led_term(&self, node: u64, pid: PartitionId) -> Option<u64> {
        crate::liveness::Liveness::led_term(self, node, pid)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::catalog::{AppState, DropInfo, PartitionState};

    #[derive(Default)]
    struct Facts {
        primaries: HashMap<PartitionId, PrimaryInfo>,
        terms: HashMap<(u64, PartitionId), u64>,
    }

    impl PartitionFacts for Facts {
        fn primary(&self, pid: PartitionId) -> Option<PrimaryInfo> {
            self.primaries.get(&pid).cloned()
        }
        fn led_term(&self, node: u64, pid: PartitionId) -> Option<u64> {
            self.terms.get(&(node, pid)).copied()
        }
    }

    fn catalog_with(app_id: u32, members: Vec<u64>) -> Catalog {
        let mut c = Catalog { next_app_id: app_id + 1, ..Default::default() };
        c.apps.insert(
            app_id,
            AppState {
                app_id,
                name: "t".into(),
                partition_count: 1,
                replica_count: members.len() as u32,
                envs: BTreeMap::new(),
                create_time_ms: 0,
                dropped: None,
                partitions: vec![PartitionState { members, ballot: 1 }],
            },
        );
        c
    }

    fn primary(node_id: u64, term: u64, voters: Vec<u64>) -> PrimaryInfo {
        PrimaryInfo { node_id, term, voters, learners: vec![], settled: true }
    }

    #[test]
    fn an_unknown_table_is_never_removed() {
        // A meta that has not applied the creation of table 5 (next id still 5).
        let c = catalog_with(4, vec![1, 2, 3]);
        let d = decide(&c, 1, &[PartitionId::new(5, 0)], &HashSet::new(), &Facts::default());
        assert!(d.remove.is_empty(), "{d:?}");
    }

    #[test]
    fn a_purged_table_is_removed() {
        let mut c = catalog_with(4, vec![1, 2, 3]);
        c.apps.remove(&4);
        let d = decide(&c, 1, &[PartitionId::new(4, 0)], &HashSet::new(), &Facts::default());
        assert_eq!(d.remove, vec![PartitionId::new(4, 0)]);
    }

    #[test]
    fn a_dropped_table_is_kept_and_reported() {
        let mut c = catalog_with(4, vec![1, 2, 3]);
        c.apps.get_mut(&4).unwrap().dropped = Some(DropInfo { drop_time_ms: 1, expire_time_ms: 2 });
        let d = decide(&c, 1, &[PartitionId::new(4, 0)], &HashSet::new(), &Facts::default());
        assert!(d.remove.is_empty());
        assert_eq!(d.dropped, vec![4]);
        assert!(d.tables.is_empty());
    }

    #[test]
    fn only_jobs_not_over_are_live() {
        use crate::bulk_load::{BulkLoadJob, BulkLoadStatus};
        let mut c = catalog_with(4, vec![1, 2, 3]);
        let job = |job_id, status| BulkLoadJob {
            job_id,
            cluster: "c".into(),
            provider: "local".into(),
            root: "/r".into(),
            ingest_behind: false,
            status,
            reason: String::new(),
            partitions: vec![status],
            start_time_ms: 0,
        };
        c.bulk_loads.insert(4, job(7, BulkLoadStatus::Downloading));
        c.bulk_loads.insert(5, job(6, BulkLoadStatus::Succeed));
        c.next_job_id = 8;
        let d = decide(&c, 1, &[], &HashSet::new(), &Facts::default());
        assert_eq!(d.live_bulk_load_jobs, vec![7]);
        assert_eq!(d.next_bulk_load_job_id, 8);
    }

    #[test]
    fn a_non_member_goes_only_when_its_primary_says_so_in_a_term_at_least_its_own() {
        let pid = PartitionId::new(4, 0);
        let c = catalog_with(4, vec![1, 2, 3]);
        let mut f = Facts::default();
        // No primary known: kept.
        assert!(decide(&c, 9, &[pid], &HashSet::new(), &f).remove.is_empty());
        // The primary still lists it (as voter, then as learner): kept.
        f.primaries.insert(pid, primary(1, 5, vec![1, 2, 3, 9]));
        assert!(decide(&c, 9, &[pid], &HashSet::new(), &f).remove.is_empty());
        f.primaries.insert(pid, PrimaryInfo { learners: vec![9], ..primary(1, 5, vec![1, 2, 3]) });
        assert!(decide(&c, 9, &[pid], &HashSet::new(), &f).remove.is_empty());
        // The node knew a leader in a newer term than that primary's report: kept.
        f.primaries.insert(pid, primary(1, 5, vec![1, 2, 3]));
        f.terms.insert((9, pid), 6);
        assert!(decide(&c, 9, &[pid], &HashSet::new(), &f).remove.is_empty());
        // A newer term in which it knew no leader (it campaigns alone, removed before it heard
        // so): no led term newer than the primary's, removed.
        f.terms.remove(&(9, pid));
        assert_eq!(decide(&c, 9, &[pid], &HashSet::new(), &f).remove, vec![pid]);
        // A membership not settled (joint, or not committed: it may still change back): kept.
        f.primaries.insert(pid, PrimaryInfo { settled: false, ..primary(1, 5, vec![1, 2, 3]) });
        assert!(decide(&c, 9, &[pid], &HashSet::new(), &f).remove.is_empty());
        f.primaries.insert(pid, primary(1, 5, vec![1, 2, 3]));
        // A repair in flight: kept.
        f.terms.insert((9, pid), 5);
        assert!(decide(&c, 9, &[pid], &HashSet::from([pid]), &f).remove.is_empty());
        // Out of the group in a current term: removed.
        assert_eq!(decide(&c, 9, &[pid], &HashSet::new(), &f).remove, vec![pid]);
        // A member by the catalog: kept, whatever the primary says.
        assert!(decide(&c, 3, &[pid], &HashSet::new(), &f).remove.is_empty());
    }
}
