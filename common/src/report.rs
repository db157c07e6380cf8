//! Conversion of a replica's admin status into the report a heartbeat carries.

use wingkv_proto::meta::ReplicaReport;
use wingkv_proto::replica_admin::ReplicaStatus;

/// The heartbeat report of a replica with admin status `s`.
pub fn report_from_status(s: &ReplicaStatus) -> ReplicaReport {
    ReplicaReport {
        partition: s.partition,
        role: s.role,
        term: s.term,
        leader_id: s.leader_id,
        applied_index: s.applied_index,
        last_log_index: s.last_log_index,
        voters: s.voters.iter().map(|m| m.node_id).collect(),
        learners: s.learners.iter().map(|m| m.node_id).collect(),
        settled: s.settled,
    }
}
