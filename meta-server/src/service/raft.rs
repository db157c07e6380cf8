//! The meta group's raft transport: serves the raft messages of the meta group (and only of
//! it) on the shared `RaftTransport` service.

use std::sync::Arc;

use tonic::Status;
use wingkv_common::raft::network::{serve_raft_message, RaftGroups, RaftMethod};
use wingkv_common::{PartitionId, WingError};

use crate::node::{MetaNode, META_GROUP};

/// The meta group, as the raft transport sees it.
pub struct MetaGroup {
    node: Arc<MetaNode>,
}

impl MetaGroup {
    /// The group of `node`.
    pub fn new(node: Arc<MetaNode>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl RaftGroups for MetaGroup {
    async fn serve(&self, group: PartitionId, method: RaftMethod, payload: &[u8]) -> Result<Vec<u8>, Status> {
        if group != META_GROUP {
            return Err(WingError::NotFound(format!("group {group} is not served by a meta server")).into());
        }
        serve_raft_message(&self.node.raft, method, payload).await
    }
}
