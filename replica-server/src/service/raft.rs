//! The raft transport of a replica server: routes each message to the raft group of its
//! partition.

use std::sync::Arc;

use tonic::Status;
use wingkv_common::raft::network::{serve_raft_message, RaftGroups, RaftMethod};
use wingkv_common::PartitionId;

use crate::manager::ReplicaManager;

/// The partition groups hosted by one replica server.
pub struct HostedGroups {
    manager: Arc<ReplicaManager>,
}

impl HostedGroups {
    /// The groups of `manager`'s replicas.
    pub fn new(manager: Arc<ReplicaManager>) -> Self {
        Self { manager }
    }
}

#[tonic::async_trait]
impl RaftGroups for HostedGroups {
    async fn serve(&self, group: PartitionId, method: RaftMethod, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let replica = self.manager.get(group)?;
        if method == RaftMethod::Vote {
            replica.check_may_vote()?;
        }
        serve_raft_message(replica.raft(), method, payload).await
    }
}
