//! Membership changes of a partition's group, run to their end whoever asked for them.
//!
//! openraft 0.9 changes voters in two phases, a joint config and then the uniform one, and it
//! proposes the second phase from the future of the call that asked for the change. A caller
//! that stops waiting between the two (a meta killed or timing out, a request dropped) leaves
//! the group joint, and nothing finishes it: the meta plans changes only on settled memberships
//! (and a change still running is refused "in progress"). So a change asked of a replica
//! runs on a task the replica owns ([`Replica::change_membership`]), and a primary that finds its
//! group joint with no change running finishes it ([`finish_joint_changes`]): the previous
//! primary may have crashed between the phases.

use std::collections::{BTreeSet, HashMap};

use openraft::{ChangeMembers, ServerState};
use wingkv_common::raft::NodeId;
use wingkv_common::PartitionId;

use crate::manager::ReplicaManager;
use crate::replica::Replica;

/// The voters a joint group of `replica` is going to (its second config), if this replica leads
/// it and no change asked of it runs now.
fn joint_goal(replica: &Replica) -> Option<BTreeSet<NodeId>> {
    if replica.changing_membership() {
        return None;
    }
    let m = replica.raft().metrics().borrow().clone();
    if m.state != ServerState::Leader {
        return None;
    }
    let configs = m.membership_config.membership().get_joint_config().clone();
    (configs.len() > 1).then(|| configs.last().cloned()).flatten()
}

/// Finishes the changes the groups this server leads were left joint in. A group must be seen
/// joint, with no change running, in two checks in a row (`seen` keeps the first sighting): the
/// second phase of a change that just ran its first is proposed within moments.
pub fn finish_joint_changes(manager: &ReplicaManager, seen: &mut HashMap<PartitionId, BTreeSet<NodeId>>) {
    let mut now_joint = HashMap::new();
    for replica in manager.all() {
        let id = replica.id();
        let Some(goal) = joint_goal(&replica) else { continue };
        if seen.get(&id) == Some(&goal) {
            tracing::warn!(partition = %id, voters = ?goal, "the group was left in a joint membership: finishing the change");
            // The replica owns the change; the next checks see whether it ended.
            drop(replica.start_membership_change(ChangeMembers::ReplaceAllVoters(goal), false));
        } else {
            now_joint.insert(id, goal);
        }
    }
    *seen = now_joint;
}
