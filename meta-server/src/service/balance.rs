//! The RPCs of placement: the meta level (what the meta does by itself) and manual moves.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use wingkv_common::sync::MutexExt;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::meta::{
    GetMetaLevelRequest, MetaLevelResponse, ProposeRequest, ProposeResponse, SetMetaLevelRequest,
};

use crate::balance::Move;
use crate::balancer::ManualMove;
use crate::catalog::{MetaCommand, MetaLevel};
use crate::liveness::NodeState;
use crate::node::MetaNode;

/// Longest a manual move may take: a replica move copies the partition to its target.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a manual move waits for its partition's previous change to be released.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// Sets the meta level; answers the level now in force.
pub(super) async fn set_meta_level(node: &MetaNode, req: SetMetaLevelRequest) -> Result<MetaLevelResponse, Status> {
    let level = MetaLevel::parse(&req.level)?;
    node.propose(MetaCommand::SetMetaLevel { level }).await?;
    tracing::info!(level = level.as_str(), "meta level set");
    Ok(MetaLevelResponse { level: level.as_str().into() })
}

/// The meta level, read linearizably.
pub(super) async fn get_meta_level(node: &MetaNode, _req: GetMetaLevelRequest) -> Result<MetaLevelResponse, Status> {
    node.read_barrier().await?;
    Ok(MetaLevelResponse { level: node.with_catalog(|c| c.settings.meta_level.as_str().into()) })
}

/// Runs one manual move (`propose`), checked first against the catalog read linearizably.
pub(super) async fn propose(node: &Arc<MetaNode>, req: ProposeRequest) -> Result<ProposeResponse, Status> {
    let meta_term = node.read_barrier_term().await?;
    let (pid, members) = node.with_catalog(|c| -> Result<_, WingError> {
        let app = c.live_app(&req.table)?;
        let p = app.partitions.get(req.partition_index as usize).ok_or_else(|| {
            WingError::InvalidArgument(format!(
                "table '{}' has {} partitions; there is no partition {}",
                req.table, app.partition_count, req.partition_index
            ))
        })?;
        if !c.nodes.contains_key(&req.to) {
            return Err(WingError::InvalidArgument(format!("node {} is not registered", req.to)));
        }
        Ok((PartitionId::new(app.app_id, req.partition_index), p.members.clone()))
    })?;
    if node.liveness.state(req.to) != NodeState::Alive {
        return Err(WingError::Unavailable(format!("node {} is not alive", req.to)).into());
    }
    let primary = node
        .liveness
        .primary(pid)
        .ok_or_else(|| WingError::Unavailable(format!("partition {pid} has no primary now; try again")))?;
    if !primary.settled {
        return Err(WingError::Busy(format!("partition {pid} is changing its membership now; try again")).into());
    }
    let m = match req.action.as_str() {
        "move_primary" => {
            if !members.contains(&req.to) {
                return Err(WingError::InvalidArgument(format!(
                    "node {} is not a member of partition {pid} (members: {members:?})",
                    req.to
                ))
                .into());
            }
            Move::Primary { pid, from: primary.node_id, to: req.to }
        }
        "move_replica" => {
            if !members.contains(&req.from) || members.contains(&req.to) {
                return Err(WingError::InvalidArgument(format!(
                    "move_replica needs a member to leave (-f) and a node that is not one to join (-t); \
                     partition {pid} has members {members:?}"
                ))
                .into());
            }
            if node.liveness.hosts(req.to, pid) {
                return Err(WingError::InvalidState(format!(
                    "node {} still has a replica of partition {pid} that is not a member (its removal \
                     is pending); try again once it is gone",
                    req.to
                ))
                .into());
            }
            if req.from == primary.node_id {
                return Err(WingError::InvalidState(format!(
                    "node {} leads partition {pid}: hand its primary over first (propose -p move_primary)",
                    req.from
                ))
                .into());
            }
            Move::Replica { pid, from: req.from, to: req.to }
        }
        other => {
            return Err(WingError::InvalidArgument(format!(
                "unknown propose action '{other}' (use move_primary or move_replica)"
            ))
            .into())
        }
    };
    // One change of a partition at a time: the reconciler and the balancer skip it meanwhile,
    // and release it once a catalog read follows the move's end.
    // A change that just ended is released at the reconciler's next catalog read: wait a little.
    let claim_by = std::time::Instant::now() + CLAIM_WAIT;
    while !node.repairs.locked().insert(pid) {
        if std::time::Instant::now() >= claim_by {
            return Err(WingError::Busy(format!("partition {pid} has a membership change in flight; try again")).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reconcile loop owns the move (it is aborted with the loop's leadership); a caller
    // that goes away does not leave it half done. The claim is released however it ends.
    let (done, answer) = tokio::sync::oneshot::channel();
    if let Err(e) = node.manual_moves.submit(ManualMove { m, primary, meta_term, done }) {
        node.repairs_done.locked().push(pid);
        return Err(e.into());
    }
    match tokio::time::timeout(PROPOSE_TIMEOUT, answer).await {
        Ok(Ok(result)) => result?,
        Ok(Err(_)) => {
            return Err(WingError::Unavailable(format!(
                "the move of {pid} was aborted: this meta stopped leading; check the partition and try again"
            ))
            .into())
        }
        Err(_) => {
            return Err(WingError::Timeout(format!(
                "the move of {pid} did not end within {PROPOSE_TIMEOUT:?}; it goes on in the meta"
            ))
            .into())
        }
    }
    let members = node.with_catalog(|c| {
        c.apps.get(&pid.app_id).and_then(|a| a.partitions.get(pid.partition_index as usize)).map(|p| p.members.clone())
    });
    let primary = node.liveness.primary(pid).map(|p| p.node_id).unwrap_or(0);
    tracing::info!(partition = %pid, ?m, "manual move done");
    Ok(ProposeResponse { members: members.unwrap_or_default(), primary })
}
