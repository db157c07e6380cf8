//! The raft transport service: routes each message to the raft group of its partition.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wingkv_common::raft::network::{serve_raft_message, RaftMethod};
use wingkv_common::PartitionId;
use wingkv_proto::raft::raft_transport_server::RaftTransport;
use wingkv_proto::raft::RaftMessage;

use crate::manager::ReplicaManager;

/// Serves raft messages for every hosted replica.
pub struct RaftService {
    manager: Arc<ReplicaManager>,
}

impl RaftService {
    /// The service over `manager`'s replicas.
    pub fn new(manager: Arc<ReplicaManager>) -> Self {
        Self { manager }
    }

    async fn serve(
        &self,
        method: RaftMethod,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let id = PartitionId::from_proto(msg.partition.as_ref())?;
        let replica = self.manager.get(id)?;
        let payload = serve_raft_message(replica.raft(), method, &msg.payload).await?;
        Ok(Response::new(RaftMessage {
            partition: msg.partition,
            payload: payload.into(),
        }))
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.serve(RaftMethod::AppendEntries, req).await
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.serve(RaftMethod::Vote, req).await
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.serve(RaftMethod::InstallSnapshot, req).await
    }
}
