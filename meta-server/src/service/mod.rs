//! The meta gRPC service: [`MetaService`] answers each RPC of the `Meta` API by calling its
//! handler, grouped by subject in the submodules, and the meta group's raft transport
//! ([`raft::MetaGroup`]).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wingkv_common::WingError;
use wingkv_proto::meta::meta_server::Meta;
use wingkv_proto::meta::*;

use crate::catalog::{AppState, MetaValue};
use crate::node::MetaNode;

mod backup;
mod balance;
mod bulk_load;
mod cluster;
mod heartbeat;
pub mod raft;
mod table;

/// Serves the meta API.
pub struct MetaService {
    node: Arc<MetaNode>,
}

impl MetaService {
    /// The service of `node`.
    pub fn new(node: Arc<MetaNode>) -> Self {
        Self { node }
    }
}

/// The table a command that creates or changes one answered.
fn app_of(value: MetaValue) -> Result<AppState, WingError> {
    match value {
        MetaValue::App(a) => Ok(*a),
        other => Err(WingError::Internal(format!("unexpected meta answer {other:?}"))),
    }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn register_node(&self, req: Request<RegisterNodeRequest>) -> Result<Response<RegisterNodeResponse>, Status> {
        heartbeat::register_node(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        heartbeat::heartbeat(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn create_table(&self, req: Request<CreateTableRequest>) -> Result<Response<TableConfiguration>, Status> {
        table::create_table(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn drop_table(&self, req: Request<DropTableRequest>) -> Result<Response<DropTableResponse>, Status> {
        table::drop_table(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn recall_table(&self, req: Request<RecallTableRequest>) -> Result<Response<TableConfiguration>, Status> {
        table::recall_table(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn list_tables(&self, req: Request<ListTablesRequest>) -> Result<Response<ListTablesResponse>, Status> {
        table::list_tables(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn query_table(&self, req: Request<QueryTableRequest>) -> Result<Response<TableConfiguration>, Status> {
        table::query_table(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn list_nodes(&self, _req: Request<ListNodesRequest>) -> Result<Response<ListNodesResponse>, Status> {
        cluster::list_nodes(&self.node).await.map(Response::new)
    }

    async fn cluster_info(&self, _req: Request<ClusterInfoRequest>) -> Result<Response<ClusterInfoResponse>, Status> {
        cluster::cluster_info(&self.node).await.map(Response::new)
    }

    async fn server_info(&self, _req: Request<ServerInfoRequest>) -> Result<Response<ServerInfoResponse>, Status> {
        Ok(Response::new(cluster::server_info(&self.node)))
    }

    async fn set_table_envs(&self, req: Request<SetTableEnvsRequest>) -> Result<Response<TableEnvs>, Status> {
        table::set_table_envs(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn get_table_envs(&self, req: Request<GetTableEnvsRequest>) -> Result<Response<TableEnvs>, Status> {
        table::get_table_envs(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn del_table_envs(&self, req: Request<DelTableEnvsRequest>) -> Result<Response<TableEnvs>, Status> {
        table::del_table_envs(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn start_bulk_load(
        &self,
        req: Request<StartBulkLoadRequest>,
    ) -> Result<Response<BulkLoadStatusResponse>, Status> {
        bulk_load::start_bulk_load(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn query_bulk_load_status(
        &self,
        req: Request<QueryBulkLoadRequest>,
    ) -> Result<Response<BulkLoadStatusResponse>, Status> {
        bulk_load::query_bulk_load_status(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn control_bulk_load(
        &self,
        req: Request<ControlBulkLoadRequest>,
    ) -> Result<Response<BulkLoadStatusResponse>, Status> {
        bulk_load::control_bulk_load(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn set_meta_level(&self, req: Request<SetMetaLevelRequest>) -> Result<Response<MetaLevelResponse>, Status> {
        balance::set_meta_level(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn get_meta_level(&self, req: Request<GetMetaLevelRequest>) -> Result<Response<MetaLevelResponse>, Status> {
        balance::get_meta_level(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn propose(&self, req: Request<ProposeRequest>) -> Result<Response<ProposeResponse>, Status> {
        balance::propose(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn decommission(&self, req: Request<DecommissionRequest>) -> Result<Response<NodeInfo>, Status> {
        cluster::decommission(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn set_replica_count(
        &self,
        req: Request<SetReplicaCountRequest>,
    ) -> Result<Response<ReplicaCountResponse>, Status> {
        table::set_replica_count(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn get_replica_count(
        &self,
        req: Request<GetReplicaCountRequest>,
    ) -> Result<Response<ReplicaCountResponse>, Status> {
        table::get_replica_count(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn start_backup(&self, req: Request<StartBackupRequest>) -> Result<Response<BackupStatusResponse>, Status> {
        backup::start_backup(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn query_backup_status(
        &self,
        req: Request<QueryBackupStatusRequest>,
    ) -> Result<Response<QueryBackupStatusResponse>, Status> {
        backup::query_backup_status(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn cancel_backup(&self, req: Request<CancelBackupRequest>) -> Result<Response<BackupStatusResponse>, Status> {
        backup::cancel_backup(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn restore_app(&self, req: Request<RestoreAppRequest>) -> Result<Response<RestoreStatusResponse>, Status> {
        backup::restore_app(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn query_restore_status(
        &self,
        req: Request<QueryRestoreStatusRequest>,
    ) -> Result<Response<RestoreStatusResponse>, Status> {
        backup::query_restore_status(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn add_backup_policy(&self, req: Request<AddBackupPolicyRequest>) -> Result<Response<BackupPolicy>, Status> {
        backup::add_backup_policy(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn list_backup_policies(
        &self,
        req: Request<ListBackupPoliciesRequest>,
    ) -> Result<Response<ListBackupPoliciesResponse>, Status> {
        backup::list_backup_policies(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn modify_backup_policy(
        &self,
        req: Request<ModifyBackupPolicyRequest>,
    ) -> Result<Response<BackupPolicy>, Status> {
        backup::modify_backup_policy(&self.node, req.into_inner()).await.map(Response::new)
    }
}
