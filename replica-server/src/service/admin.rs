//! The replica admin service.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::{BasicNode, ChangeMembers};
use tonic::{Request, Response, Status};
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::replica_admin::replica_admin_server::ReplicaAdmin;
use wingkv_proto::replica_admin::{
    AddLearnerRequest, BackupAction, BackupPartitionRequest, BackupPartitionState, BulkLoadAction, BulkLoadRequest,
    BulkLoadResponse, CampaignRequest, ChangeMembershipRequest, ChecksumResponse, CreateReplicaRequest, Empty,
    FetchBulkLoadFileRequest, PartitionRequest, RemoveLearnersRequest, ReplicaBulkLoadState, ReplicaStatus,
    StatusRequest, StatusResponse, TransferPrimaryRequest,
};

use crate::manager::ReplicaManager;
use crate::replica::bulk_load_source;

/// How long the target of a primary handover campaigns: its voters' leases (the election
/// timeout) must run out first, and a competing candidate may cost it a round or two. Short
/// enough that the partition's pause (writes refused while the primary is quiet) stays well
/// inside a client's deadline when the target does not win.
const TRANSFER_CAMPAIGN: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest a backup start waits for its export to end before it answers (the meta's long
/// poll, `BackupPartitionRequest.wait_ms`): a request is never held open longer.
const MAX_BACKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves replica administration.
pub struct AdminService {
    manager: Arc<ReplicaManager>,
}

impl AdminService {
    /// The service over `manager`'s replicas.
    pub fn new(manager: Arc<ReplicaManager>) -> Self {
        Self { manager }
    }
}

fn validate_address(addr: &str) -> Result<(), WingError> {
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| WingError::InvalidArgument(format!("'{addr}' is not a host:port socket address")))
}

#[tonic::async_trait]
impl ReplicaAdmin for AdminService {
    async fn create_replica(&self, req: Request<CreateReplicaRequest>) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let id = PartitionId::from_proto(req.partition.as_ref())?;
        self.manager.check_meta_term(req.meta_term)?;
        let mut members = BTreeMap::new();
        for m in req.initial_members {
            validate_address(&m.address)?;
            if members.insert(m.node_id, BasicNode { addr: m.address }).is_some() {
                return Err(WingError::InvalidArgument(format!("node {} is listed twice", m.node_id)).into());
            }
        }
        if req.partition_count != 0 {
            wingkv_common::naming::validate_partition_count(req.partition_count)?;
            if id.partition_index >= req.partition_count {
                return Err(WingError::InvalidArgument(format!(
                    "partition {id} does not exist in a table of {} partitions",
                    req.partition_count
                ))
                .into());
            }
        }
        let db_options = crate::store::DbOptions {
            allow_ingest_behind: req.allow_ingest_behind,
            partition_count: req.partition_count,
            restoring: req.restoring,
        };
        if req.restoring {
            // Before the replica exists: a restored table never serves before its restore ends.
            self.manager.mark_restoring(id.app_id);
        }
        let replica = self.manager.run_to_end(move |m| async move { m.create(id, members, db_options).await }).await?;
        if req.restoring {
            // Again once it exists: an answer to a heartbeat sent while it was being created did
            // not name the table (the meta names only tables a heartbeat lists).
            self.manager.mark_restoring(id.app_id);
        }
        Ok(Response::new(replica.status()))
    }

    async fn open_replica(&self, req: Request<PartitionRequest>) -> Result<Response<ReplicaStatus>, Status> {
        let id = PartitionId::from_proto(req.get_ref().partition.as_ref())?;
        let replica = self.manager.run_to_end(move |m| async move { m.open(id).await }).await?;
        Ok(Response::new(replica.status()))
    }

    async fn close_replica(&self, req: Request<PartitionRequest>) -> Result<Response<Empty>, Status> {
        let id = PartitionId::from_proto(req.get_ref().partition.as_ref())?;
        self.manager.run_to_end(move |m| async move { m.close(id).await }).await?;
        Ok(Response::new(Empty {}))
    }

    async fn remove_replica(&self, req: Request<PartitionRequest>) -> Result<Response<Empty>, Status> {
        let id = PartitionId::from_proto(req.get_ref().partition.as_ref())?;
        self.manager.check_meta_term(req.get_ref().meta_term)?;
        self.manager.run_to_end(move |m| async move { m.remove(id).await }).await?;
        Ok(Response::new(Empty {}))
    }

    async fn add_learner(&self, req: Request<AddLearnerRequest>) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let id = PartitionId::from_proto(req.partition.as_ref())?;
        self.manager.check_meta_term(req.meta_term)?;
        let learner = req.learner.ok_or_else(|| WingError::InvalidArgument("add_learner needs a learner".into()))?;
        validate_address(&learner.address)?;
        let replica = self.manager.get(id)?;
        replica
            .raft()
            .add_learner(learner.node_id, BasicNode { addr: learner.address }, req.blocking)
            .await
            .map_err(|e| crate::replica::membership_error(id, e))?;
        Ok(Response::new(replica.status()))
    }

    async fn change_membership(
        &self,
        req: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let id = PartitionId::from_proto(req.partition.as_ref())?;
        self.manager.check_meta_term(req.meta_term)?;
        let voters: BTreeSet<u64> = req.voters.into_iter().collect();
        if voters.is_empty() {
            return Err(
                WingError::InvalidArgument(format!("partition {id}: a membership needs at least one voter")).into()
            );
        }
        let replica = self.manager.get(id)?;
        replica.change_membership(ChangeMembers::ReplaceAllVoters(voters), false).await?;
        Ok(Response::new(replica.status()))
    }

    async fn remove_learners(&self, req: Request<RemoveLearnersRequest>) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let id = PartitionId::from_proto(req.partition.as_ref())?;
        self.manager.check_meta_term(req.meta_term)?;
        let learners: BTreeSet<u64> = req.learners.into_iter().collect();
        if learners.is_empty() {
            return Err(WingError::InvalidArgument(format!("partition {id}: remove_learners names no learner")).into());
        }
        let replica = self.manager.get(id)?;
        // Checked against the membership now (openraft would refuse too: a voter keeps its
        // node), so that the error names what is wrong.
        let membership = replica.raft().metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = membership.membership().get_joint_config().iter().flatten().copied().collect();
        if let Some(v) = learners.iter().find(|l| voters.contains(l)) {
            return Err(WingError::InvalidState(format!(
                "partition {id}: node {v} is a voter, not a learner; it leaves by a membership change"
            ))
            .into());
        }
        replica.change_membership(ChangeMembers::RemoveNodes(learners), false).await?;
        Ok(Response::new(replica.status()))
    }

    async fn transfer_primary(&self, req: Request<TransferPrimaryRequest>) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let id = PartitionId::from_proto(req.partition.as_ref())?;
        self.manager.check_meta_term(req.meta_term)?;
        let replica = self.manager.get(id)?;
        replica.transfer_primary(req.to, req.meta_term, TRANSFER_CAMPAIGN).await?;
        Ok(Response::new(replica.status()))
    }

    async fn campaign(&self, req: Request<CampaignRequest>) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let id = PartitionId::from_proto(req.partition.as_ref())?;
        self.manager.check_meta_term(req.meta_term)?;
        let replica = self.manager.get(id)?;
        replica.campaign(req.from, std::time::Duration::from_millis(req.timeout_ms)).await?;
        Ok(Response::new(replica.status()))
    }

    async fn trigger_snapshot(&self, req: Request<PartitionRequest>) -> Result<Response<ReplicaStatus>, Status> {
        let id = PartitionId::from_proto(req.get_ref().partition.as_ref())?;
        let replica = self.manager.get(id)?;
        replica
            .raft()
            .trigger()
            .snapshot()
            .await
            .map_err(|e| WingError::Unavailable(format!("partition {id}: {e}")))?;
        Ok(Response::new(replica.status()))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let replicas = match req.get_ref().partition.as_ref() {
            Some(p) => vec![self.manager.get_for_status(PartitionId::from_proto(Some(p))?)?.status()],
            None => self.manager.all().iter().map(|r| r.status()).collect(),
        };
        let c = self.manager.admission_counters();
        Ok(Response::new(StatusResponse {
            node_id: self.manager.node_id(),
            replicas,
            writes_delayed: c.writes_delayed.load(Ordering::Relaxed),
            writes_rejected: c.writes_rejected.load(Ordering::Relaxed),
            requests_denied: c.requests_denied.load(Ordering::Relaxed),
            bulk_load_retries: self.manager.bulk_load_retries(),
        }))
    }

    async fn checksum(&self, req: Request<PartitionRequest>) -> Result<Response<ChecksumResponse>, Status> {
        let id = PartitionId::from_proto(req.get_ref().partition.as_ref())?;
        let db = self.manager.get(id)?.db().clone();
        // Dropped with this request's future: an abandoned checksum stops scanning.
        let stop = tokio_util::sync::CancellationToken::new();
        let _stop_on_drop = stop.clone().drop_guard();
        let (applied_index, record_count, digest) =
            tokio::task::spawn_blocking(move || crate::snapshot::checksum(&db, &stop))
                .await
                .map_err(|e| WingError::Internal(format!("checksum task failed: {e}")))??;
        Ok(Response::new(ChecksumResponse { applied_index, record_count, digest }))
    }

    async fn bulk_load(&self, req: Request<BulkLoadRequest>) -> Result<Response<BulkLoadResponse>, Status> {
        let r = req.into_inner();
        let id = PartitionId::from_proto(r.partition.as_ref())?;
        let (source, ingest_behind) = bulk_load_source(r.job.as_ref())?;
        let action = BulkLoadAction::try_from(r.action)
            .map_err(|_| WingError::InvalidArgument(format!("unknown bulk-load action {}", r.action)))?;
        let replica = self.manager.get(id)?;
        Ok(Response::new(replica.bulk_load_group(&source, ingest_behind, action).await?))
    }

    async fn bulk_load_replica(&self, req: Request<BulkLoadRequest>) -> Result<Response<ReplicaBulkLoadState>, Status> {
        let r = req.into_inner();
        let id = PartitionId::from_proto(r.partition.as_ref())?;
        let (source, ingest_behind) = bulk_load_source(r.job.as_ref())?;
        let action = BulkLoadAction::try_from(r.action)
            .map_err(|_| WingError::InvalidArgument(format!("unknown bulk-load action {}", r.action)))?;
        let replica = self.manager.get(id)?;
        Ok(Response::new(replica.bulk_load_local(&source, ingest_behind, action).await?))
    }

    async fn backup_partition(
        &self,
        req: Request<BackupPartitionRequest>,
    ) -> Result<Response<BackupPartitionState>, Status> {
        let r = req.into_inner();
        let id = PartitionId::from_proto(r.partition.as_ref())?;
        self.manager.check_meta_term(r.meta_term)?;
        let replica = self.manager.get(id)?;
        let state = match BackupAction::try_from(r.action) {
            Ok(BackupAction::BkStart) => {
                let wait = std::time::Duration::from_millis(u64::from(r.wait_ms)).min(MAX_BACKUP_WAIT);
                replica.start_backup(r.backup_id, &r.provider, &r.partition_dir, wait).await?
            }
            Ok(BackupAction::BkCancel) => replica.cancel_backup(r.backup_id).await,
            Err(_) => return Err(WingError::InvalidArgument(format!("unknown backup action {}", r.action)).into()),
        };
        Ok(Response::new(state))
    }

    type FetchBulkLoadFileStream = crate::bulk_load::source::FileChunks;

    async fn fetch_bulk_load_file(
        &self,
        req: Request<FetchBulkLoadFileRequest>,
    ) -> Result<Response<Self::FetchBulkLoadFileStream>, Status> {
        let r = req.into_inner();
        let id = PartitionId::from_proto(r.partition.as_ref())?;
        wingkv_common::bulk_load::validate_file_name(&r.name)?;
        let replica = self.manager.get(id)?;
        Ok(Response::new(replica.serve_bulk_load_file(r.job_id, &r.name).await?))
    }
}
