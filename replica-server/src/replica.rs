//! One partition replica: a raft group member and its RocksDB, with the tasks it owns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use rocksdb::DB;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wingkv_common::channel::ChannelPool;
use wingkv_common::raft::log_store::{PurgeLimit, RocksLogStore};
use wingkv_common::raft::network::{leader_address, GrpcNetworkFactory};
use wingkv_common::raft::read_barrier::{ReadBarrier, ReadLease};
use wingkv_common::raft::stream::RaftPeers;
use wingkv_common::raft::NodeId;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::common::{BulkLoadStatus, ReplicaRole};
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::{
    BulkLoadAction, BulkLoadJobSpec, BulkLoadRequest, BulkLoadResponse, Member, ReplicaBulkLoadState, ReplicaStatus,
};

use crate::bulk_load::loader::BulkLoadSource;
use crate::bulk_load::slot::BulkLoadSlot;
use crate::command::{Command, CommandResponse};
use crate::config::ReplicaServerConfig;
use crate::log_clock::{LogClock, ReplicaClock};
use crate::proposal::{write_entry, BatchLimits, ProposalBatcher};
use crate::raft_log::log_prefix;
use crate::raft_types::PartitionRaft;
use crate::snapshot::{read_applied, SnapshotDir};
use crate::state_machine::{IngestEnv, PartitionStateMachine, PeerSource};
use crate::store::{DbOptions, SharedStorage};

mod transfer;

/// How long `close` waits for openraft's state-machine worker and snapshot builds to stop.
const STATE_MACHINE_STOP: Duration = Duration::from_secs(60);

/// Bytes of one chunk of a bulk-load file streamed to a peer.
const SERVE_CHUNK_BYTES: usize = 1 << 20;

/// The other members of partition `id`, as the source of a job's files for an ingestion that
/// lacks them: those of the latest membership the raft group knows (`raft`, once started), and
/// of the applied one in `db` (a member that left may still hold them).
fn peer_files(
    id: PartitionId,
    node_id: NodeId,
    db: Arc<DB>,
    raft: Arc<std::sync::OnceLock<PartitionRaft>>,
    pool: ChannelPool,
) -> PeerSource {
    Arc::new(move |source: &BulkLoadSource| {
        let mut peers = std::collections::BTreeMap::new();
        if let Some(raft) = raft.get() {
            let m = raft.metrics().borrow().membership_config.clone();
            peers.extend(m.membership().nodes().map(|(n, node)| (*n, node.addr.clone())));
        }
        match read_applied(&db) {
            Ok((_, m)) => {
                for (n, node) in m.membership().nodes() {
                    peers.entry(*n).or_insert_with(|| node.addr.clone());
                }
            }
            Err(e) => tracing::warn!(partition = %id, "cannot read the applied membership: {e}"),
        }
        peers.remove(&node_id);
        let peers = peers.into_values().collect();
        Arc::new(crate::bulk_load::source::PeerFiles::new(id, source.job_id, peers, pool.clone()))
            as Arc<dyn crate::bulk_load::source::FileSource>
    })
}

/// What every replica of a process shares.
#[derive(Clone)]
pub struct ReplicaContext {
    /// This node's raft id.
    pub node_id: NodeId,
    /// Server configuration.
    pub config: Arc<ReplicaServerConfig>,
    /// Shared RocksDB resources.
    pub storage: SharedStorage,
    /// Connections to peers.
    pub pool: ChannelPool,
    /// The raft connections to peers (a stream per peer), shared by every group.
    pub raft_peers: Arc<RaftPeers>,
    /// Bulk-load downloads and ingestion.
    pub bulk: Arc<crate::bulk_load::BulkLoadEnv>,
    /// Backup exports and uploads.
    pub backup: Arc<crate::backup::BackupLimits>,
    /// The hosted tables' envs, as the meta last sent them.
    pub tables: Arc<crate::admission::TableEnvs>,
    /// The raft logs of every replica of the process.
    pub raft_log: Arc<crate::raft_log::RaftLogDb>,
    /// Counts of proposed client writes and of the entries that carried them.
    pub proposals: Arc<crate::proposal::ProposalCounters>,
    /// The meta's latest facts about bulk-load jobs (which are finished), from heartbeats.
    pub bulk_jobs: Arc<tokio::sync::watch::Sender<Option<crate::bulk_load::JobFacts>>>,
    /// Stamps every report of a replica this server gives (heartbeats, statuses).
    pub reports: Arc<crate::report_clock::ReportClock>,
}

/// A hosted partition replica.
pub struct Replica {
    id: PartitionId,
    dir: PathBuf,
    raft: PartitionRaft,
    db: Arc<DB>,
    reads: ReadBarrier,
    proposals: ProposalBatcher,
    votes_held_until: Option<Instant>,
    /// A primary without a quorum acknowledgement for this long is no primary for clients.
    quorum_lost_after: Duration,
    write_timeout: Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Held by the state machine and its snapshot builds (tasks openraft runs): `close` waits
    /// until they let go.
    state_machine: TaskTracker,
    bulk: Arc<BulkLoadSlot>,
    /// This replica's backup exports (see [`crate::backup`]).
    backups: crate::backup::BackupSlot,
    bulk_env: Arc<crate::bulk_load::BulkLoadEnv>,
    backup_limits: Arc<crate::backup::BackupLimits>,
    db_options: DbOptions,
    pool: ChannelPool,
    node_id: NodeId,
    admission: crate::admission::Admission,
    #[cfg(feature = "failpoints")]
    unsafe_ack_before_commit: bool,
    /// This replica's clock and its partition's log clock.
    clock: ReplicaClock,
    /// The voter this primary is handing its role to (0: none); see [`transfer`].
    handing_to: std::sync::atomic::AtomicU64,
    reports: Arc<crate::report_clock::ReportClock>,
    /// Membership changes asked of this replica that are running (see [`Self::change_membership`]).
    membership_changes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Replica {
    /// Opens the replica stored in `dir` (creating it when empty) and starts its raft group.
    pub async fn open(id: PartitionId, dir: &Path, ctx: &ReplicaContext) -> Result<Arc<Self>, WingError> {
        let db_options = DbOptions::load(dir)?;
        let clock = ReplicaClock { log: LogClock::default() };
        let db = ctx.storage.open_with(&dir.join("db"), &db_options, &clock.log)?;
        let snapshots = SnapshotDir::open(dir.join("snapshot"))?;
        snapshots.recover_interrupted_install(&db)?;
        clock.log.reset(crate::snapshot::log_clock(&db)?);
        let rc = &ctx.config.raft;
        let raft_config = openraft::Config {
            cluster_name: format!("partition-{id}"),
            heartbeat_interval: rc.heartbeat_ms,
            election_timeout_min: rc.election_timeout_min_ms,
            election_timeout_max: rc.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(rc.snapshot_after_logs),
            max_in_snapshot_log_to_keep: rc.logs_to_keep_after_snapshot,
            snapshot_max_chunk_size: rc.snapshot_chunk_bytes,
            max_payload_entries: rc.max_payload_entries,
            install_snapshot_timeout: rc.install_snapshot_timeout_ms,
            ..Default::default()
        }
        .validate()
        .map_err(|e| WingError::InvalidArgument(format!("raft config: {e}")))?;
        ctx.raft_log.adopt_legacy_log(id, &db)?;
        ctx.raft_log.check_present(id, &db)?;
        let log_store = RocksLogStore::shared(ctx.raft_log.db.clone(), ctx.raft_log.syncer.clone(), log_prefix(id))
            .with_purge_limit(applied_purge_limit(db.clone()));
        // A replica that followed a leader before this start holds its votes for as long as a
        // follower's lease lasts: it forgot when it last heard from that leader, which may still
        // serve lease reads (see `ReadBarrier`).
        let followed_a_leader = {
            let mut store = log_store.clone();
            let vote = store.read_vote().await.map_err(|e| WingError::Storage(format!("{id}: read vote: {e}")))?;
            vote.is_some_and(|v| v.is_committed())
        };
        let votes_held_until = (rc.lease_reads && followed_a_leader)
            .then(|| Instant::now() + Duration::from_millis(rc.election_timeout_max_ms));
        let bulk = Arc::new(BulkLoadSlot::new(dir.to_path_buf(), ctx.bulk.clone()));
        let started = Arc::new(std::sync::OnceLock::new());
        let ingest = IngestEnv {
            slot: bulk.clone(),
            peers: peer_files(id, ctx.node_id, db.clone(), started.clone(), ctx.pool.clone()),
            retry: ctx.config.bulk_load.retry,
            allow_ingest_behind: db_options.allow_ingest_behind,
        };
        let state_machine = TaskTracker::new();
        let sm =
            PartitionStateMachine::new(id, db.clone(), clock.log.clone(), snapshots, ingest, state_machine.token());
        let network = GrpcNetworkFactory::new(id, ctx.raft_peers.clone());
        let raft = match PartitionRaft::new(ctx.node_id, Arc::new(raft_config), network, log_store, sm).await {
            Ok(r) => r,
            Err(e) => return Err(WingError::Storage(format!("cannot start raft for {id}: {e}"))),
        };
        let _ = started.set(raft.clone());
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        // Half the shortest election timeout: far inside the followers' lease
        // (`election_timeout_max`), whatever the clocks' drift.
        let lease = rc.lease_reads.then(|| ReadLease::new(Duration::from_millis(rc.election_timeout_min_ms / 2)));
        let reads = ReadBarrier::start(
            id,
            raft.clone(),
            Duration::from_millis(ctx.config.read_timeout_ms),
            lease,
            &tasks,
            cancel.clone(),
        );
        let write_timeout = Duration::from_millis(ctx.config.write_timeout_ms);
        let limits = BatchLimits {
            max_inflight: rc.max_inflight_proposals,
            max_commands: rc.max_batch_commands,
            max_bytes: rc.max_batch_bytes,
            write_timeout,
            max_queued: rc.max_queued_writes,
        };
        let proposals = ProposalBatcher::start(
            id,
            raft.clone(),
            clock.clone(),
            limits,
            ctx.proposals.clone(),
            &tasks,
            cancel.clone(),
        );
        tasks.spawn(crate::bulk_load::tidy::run(
            id,
            raft.clone(),
            db.clone(),
            bulk.clone(),
            ctx.pool.clone(),
            ctx.bulk_jobs.subscribe(),
            dir.to_path_buf(),
            cancel.clone(),
        ));
        tracing::info!(partition = %id, "replica opened");
        Ok(Arc::new(Self {
            id,
            dir: dir.to_path_buf(),
            raft,
            db,
            reads,
            proposals,
            votes_held_until,
            quorum_lost_after: Duration::from_millis(rc.election_timeout_max_ms),
            write_timeout,
            cancel,
            tasks,
            state_machine,
            bulk,
            backups: crate::backup::BackupSlot::new(ctx.node_id, dir),
            bulk_env: ctx.bulk.clone(),
            backup_limits: ctx.backup.clone(),
            db_options,
            pool: ctx.pool.clone(),
            node_id: ctx.node_id,
            admission: crate::admission::Admission::new(ctx.tables.get(id.app_id), ctx.tables.counters.clone()),
            #[cfg(feature = "failpoints")]
            unsafe_ack_before_commit: ctx.config.unsafe_ack_before_commit,
            clock,
            handing_to: std::sync::atomic::AtomicU64::new(0),
            reports: ctx.reports.clone(),
            membership_changes: Arc::default(),
        }))
    }

    /// The time this replica decides with: what a primary stamps writes and judges expiry by
    /// (its clock, never behind the partition's log clock; see [`crate::log_clock`]).
    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    /// The table's partition count as recorded when this replica was created (`None`: created
    /// by a meta that did not send it).
    pub fn recorded_partition_count(&self) -> Option<u32> {
        Some(self.db_options.partition_count).filter(|c| *c > 0)
    }

    /// Whether this replica was created for a restore whose end it has not heard of (as recorded
    /// when it was opened).
    pub fn created_for_restore(&self) -> bool {
        self.db_options.restoring
    }

    /// The partition this replica belongs to.
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// The replica's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why this replica's raft group stopped, if it did: a storage error (see
    /// [`crate::restart`]); a closed replica's group reports its shutdown.
    pub fn stopped_reason(&self) -> Option<String> {
        self.raft.metrics().borrow().running_state.as_ref().err().map(|f| f.to_string())
    }

    /// The raft handle.
    pub fn raft(&self) -> &PartitionRaft {
        &self.raft
    }

    /// How long a write may wait for its commit.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Admission of this replica's client requests (table envs: denial, write throttling).
    pub fn admission(&self) -> &crate::admission::Admission {
        &self.admission
    }

    /// A hold on this replica for work that runs outside its tasks (a blocking read of its
    /// DB): its close waits for every hold to be dropped.
    pub fn hold(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.tasks.token()
    }

    /// The replica's RocksDB.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Stops the replica's tasks and raft group and closes its RocksDB (once every other holder
    /// of the DB has let go). Waits for all of it: every task that touches the replica's files
    /// (bulk-load downloads, an ingestion's fetch, openraft's state-machine worker and snapshot
    /// builds) has ended when this returns, so the directory may then be removed. Answers an
    /// error (and the directory must stay) when the state machine did not let go in time.
    pub async fn close(&self) -> Result<(), WingError> {
        // The slot closes first: its downloads are stopped and awaited (verified files stay for a
        // reopen), and an ingestion waiting for files gives up, so the apply below can end.
        // Backup exports stop too, their local files removed.
        self.backups.close().await;
        self.bulk.close().await;
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(partition = %self.id, "raft shutdown: {e}");
        }
        // openraft's shutdown joins its core only; its state-machine worker ends when the core's
        // channel closes, after the command it is running (an ingestion, an install), and a
        // snapshot build runs on a task of its own.
        self.state_machine.close();
        if tokio::time::timeout(STATE_MACHINE_STOP, self.state_machine.wait()).await.is_err() {
            tracing::error!(partition = %self.id, "the state machine is still running {STATE_MACHINE_STOP:?} after close");
            return Err(WingError::Unavailable(format!(
                "replica {}: the state machine did not stop within {STATE_MACHINE_STOP:?}",
                self.id
            )));
        }
        // Open scans may still hold the DB for a moment; wait for them so a reopen of the same
        // replica finds it closed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.db) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if Arc::strong_count(&self.db) > 1 {
            tracing::warn!(partition = %self.id, holders = Arc::strong_count(&self.db), "RocksDB still held after close");
        }
        tracing::info!(partition = %self.id, "replica closed");
        Ok(())
    }

    /// Applies `changes` to the group's membership (see [`Self::start_membership_change`]).
    pub async fn change_membership(
        &self,
        changes: openraft::ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), WingError> {
        let id = self.id;
        self.start_membership_change(changes, retain)
            .await
            .map_err(|e| WingError::Internal(format!("membership change of {id} failed: {e}")))??;
        // openraft answers once the entry is applied but may publish its metrics a moment later:
        // the status the caller gets next must show the change settled, not the state before.
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(SETTLE_WAIT, metrics.wait_for(membership_settled)).await;
        Ok(())
    }

    /// Starts `changes` on a task the replica owns: it runs to its end (both phases of a voter
    /// change) even if whoever asked stops waiting, and stops only when the replica closes
    /// (see [`crate::membership`]).
    pub fn start_membership_change(
        &self,
        changes: openraft::ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> tokio::task::JoinHandle<Result<(), WingError>> {
        use std::sync::atomic::Ordering;
        let (raft, cancel, id) = (self.raft.clone(), self.cancel.clone(), self.id);
        let running = self.membership_changes.clone();
        running.fetch_add(1, Ordering::SeqCst);
        self.tasks.spawn(async move {
            // A replica being closed starts no change (its task tracker may be awaited already).
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(WingError::Unavailable(format!("replica {id} is closing"))),
                r = raft.change_membership(changes, retain) => r.map(|_| ()).map_err(|e| membership_error(id, e)),
            };
            running.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = &result {
                tracing::debug!(partition = %id, "membership change not done: {e}");
            }
            result
        })
    }

    /// Whether a membership change asked of this replica runs now.
    pub fn changing_membership(&self) -> bool {
        self.membership_changes.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// The current leader's address, if known.
    pub fn leader_address(&self) -> Option<String> {
        leader_address(&self.raft)
    }

    fn not_leader(&self) -> WingError {
        WingError::NotLeader { partition: self.id.to_string(), leader: self.leader_address() }
    }

    /// Refuses a vote request while this replica holds its votes after a restart (see
    /// `open`): the candidate counts it as unreachable and asks again later.
    pub fn check_may_vote(&self) -> Result<(), WingError> {
        // A replica that has no membership yet never voted in this group, or forgot that it did
        // (its directory was lost and re-created): granting a vote now could be its second in
        // a term. It votes only once its log holds a membership (bootstrap or replication from
        // a leader, which also records that leader's vote).
        if self.raft.metrics().borrow().membership_config.membership().voter_ids().next().is_none() {
            return Err(WingError::Unavailable(format!(
                "replica {} holds no membership yet (new or re-created) and does not vote",
                self.id
            )));
        }
        let left = self.votes_held_until.and_then(|until| until.checked_duration_since(Instant::now()));
        match left {
            Some(left) if !left.is_zero() => Err(WingError::Unavailable(format!(
                "replica {} restarted and holds its votes for {left:?} more (its former leader's lease)",
                self.id
            ))),
            _ => Ok(()),
        }
    }

    /// Fails fast with `NotLeader` when this replica is not the primary, and with
    /// `Unavailable` when its raft group stopped (it is reopened shortly, see [`crate::restart`]).
    pub fn check_primary(&self) -> Result<(), WingError> {
        let (leader, quorum_ack_ms) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if let Err(stopped) = &m.running_state {
                return Err(WingError::Unavailable(format!(
                    "partition {}: its raft group stopped ({stopped}); it is being reopened",
                    self.id
                )));
            }
            (m.state == ServerState::Leader, m.millis_since_quorum_ack)
        };
        if !leader {
            return Err(self.not_leader());
        }
        // openraft 0.9 keeps a leader cut off from its group in the Leader state; its writes
        // could only time out, and a newer leader may exist: it answers as no primary, naming
        // nobody (it does not know who leads now), so clients ask the other members.
        if quorum_ack_ms.is_none_or(|ms| ms >= self.quorum_lost_after.as_millis() as u64) {
            return Err(WingError::NotLeader { partition: self.id.to_string(), leader: None });
        }
        // Handing over: nothing new is admitted (its log must stay where the target caught up,
        // and a write's append would renew the followers' lease the target waits out). The
        // client retries and finds the new primary.
        if self.handing_to.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            return Err(WingError::NotLeader { partition: self.id.to_string(), leader: None });
        }
        Ok(())
    }

    /// Waits until a read may be served linearizably from the local RocksDB.
    pub async fn linearizable_read(&self) -> Result<(), WingError> {
        self.check_primary()?;
        self.reads.wait(self.id).await
    }

    /// Proposes `cmd` through raft and waits for it to be applied; answers the apply result and
    /// the log index. Client writes go through the replica's [`ProposalBatcher`] (group
    /// commit); an ingestion is an entry of its own. A client write still queued at `deadline`
    /// (or after the write timeout) is dropped unproposed.
    pub async fn propose(&self, cmd: Command, deadline: Instant) -> Result<(CommandResponse, u64), WingError> {
        self.check_primary()?;
        // Refused here, not by a follower forever: every entry travels in one raft message.
        let size = wingkv_common::raft::encoded_len(&cmd)
            .map_err(|e| WingError::Internal(format!("partition {}: size of a write: {e}", self.id)))?;
        if size > crate::config::MAX_ENTRY_BYTES as u64 {
            return Err(WingError::InvalidArgument(format!(
                "the write takes {size} bytes in the raft log; one entry holds at most {} (split it)",
                crate::config::MAX_ENTRY_BYTES
            )));
        }
        let started = Instant::now();
        #[cfg(feature = "failpoints")]
        if self.unsafe_ack_before_commit && matches!(cmd, Command::Put { .. } | Command::Delete { .. }) {
            // The deliberately broken mode (see the config): the write commits later, or never.
            let raft = self.raft.clone();
            self.tasks.spawn(async move {
                raft.client_write(wingkv_common::raft::versioned::Versioned(cmd)).await.map(|_| ())
            });
            return Ok((CommandResponse::Done, 0));
        }
        if matches!(cmd, Command::IngestSst { .. }) {
            return write_entry(self.id, &self.raft, self.write_timeout, cmd).await;
        }
        // The batcher bounds the whole wait, and drops the write if it is still queued at the
        // deadline.
        self.proposals.propose(cmd, deadline.min(started + self.write_timeout)).await
    }

    /// Starts exporting this primary's data for backup `backup_id` to `partition_dir` on
    /// `provider`, or answers the export that runs or succeeded (see [`crate::backup`]). The
    /// export is taken after a linearizable read: it holds every write acknowledged before.
    /// A running export is waited for up to `wait` before the answer (the meta's long poll).
    pub async fn start_backup(
        self: &Arc<Self>,
        backup_id: u64,
        provider: &str,
        partition_dir: &str,
        wait: std::time::Duration,
    ) -> Result<wingkv_proto::replica_admin::BackupPartitionState, WingError> {
        let state = match self.backups.existing(backup_id)? {
            Some(state) => state,
            None => self.export(backup_id, provider, partition_dir).await?,
        };
        if wait.is_zero() || state.status() != wingkv_proto::common::BackupStatus::BkRunning {
            return Ok(state);
        }
        self.backups.state_after(backup_id, wait).await
    }

    /// Starts this replica's export for backup `backup_id` (see [`crate::backup::BackupSlot::start`]).
    async fn export(
        self: &Arc<Self>,
        backup_id: u64,
        provider: &str,
        partition_dir: &str,
    ) -> Result<wingkv_proto::replica_admin::BackupPartitionState, WingError> {
        let partition_dir = object_store::path::Path::parse(partition_dir)
            .map_err(|e| WingError::InvalidArgument(format!("backup partition dir '{partition_dir}': {e}")))?;
        let store = wingkv_common::provider::open_provider(provider, &self.bulk_env.provider)?;
        self.linearizable_read().await?;
        let local_dir = wingkv_common::provider::local_path(provider, &self.bulk_env.provider, &partition_dir);
        let job = crate::backup::ExportJob {
            backup_id,
            store,
            local_dir,
            partition_dir,
            env: self.bulk_env.clone(),
            limits: self.backup_limits.clone(),
        };
        self.backups.start(self.clone(), job).await
    }

    /// Stops this replica's export for backup `backup_id` and awaits it.
    pub async fn cancel_backup(&self, backup_id: u64) -> wingkv_proto::replica_admin::BackupPartitionState {
        self.backups.cancel(backup_id).await
    }

    /// This replica's bulk-load job and its download progress, if it has one (see
    /// [`crate::bulk_load::slot::BulkLoadSlot::progress`]).
    pub fn bulk_load_progress(&self) -> Option<(u64, crate::bulk_load::loader::LoaderStatus)> {
        self.bulk.progress()
    }

    /// The replica's state as the admin service reports it.
    pub fn status(&self) -> ReplicaStatus {
        // Stamped before the metrics are read: a report stamped later reflects at least these.
        let stamp = self.reports.stamp();
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let settled = membership_settled(&m);
        let members = |ids: Vec<NodeId>| -> Vec<Member> {
            ids.into_iter()
                .map(|id| Member {
                    node_id: id,
                    address: membership.get_node(&id).map(|n: &BasicNode| n.addr.clone()).unwrap_or_default(),
                })
                .collect()
        };
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let role = match m.state {
            ServerState::Leader => ReplicaRole::RolePrimary,
            ServerState::Follower if voters.contains(&m.id) => ReplicaRole::RoleSecondary,
            ServerState::Follower | ServerState::Learner => ReplicaRole::RoleLearner,
            ServerState::Candidate => ReplicaRole::RoleCandidate,
            ServerState::Shutdown => ReplicaRole::RoleUnknown,
        };
        ReplicaStatus {
            partition: Some(self.id.to_proto()),
            role: role as i32,
            term: m.current_term,
            leader_id: m.current_leader,
            leader_address: self.leader_address().unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            voters: members(voters),
            learners: members(learners),
            settled: Some(settled),
            stamp: Some(stamp),
        }
    }
}

/// The error a client gets for a membership change openraft refused.
pub fn membership_error(id: PartitionId, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> WingError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            WingError::NotLeader { partition: id.to_string(), leader: f.leader_node.map(|n| n.addr) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(_) => WingError::Busy(format!("partition {id}: {c}")),
            other => WingError::InvalidArgument(format!("partition {id}: {other}")),
        },
        RaftError::Fatal(f) => WingError::Unavailable(format!("partition {id}: raft stopped: {f}")),
    }
}

/// How long a finished membership change waits for its metrics to show it settled.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// Whether the membership of `m` is one config (a joint one is a change still running) and
/// applied (so committed).
fn membership_settled(m: &openraft::RaftMetrics<NodeId, BasicNode>) -> bool {
    let applied = m.last_applied.map(|l| l.index);
    m.membership_config.membership().get_joint_config().len() == 1
        && m.membership_config.log_id().is_none_or(|l| applied.is_some_and(|a| l.index <= a))
}

impl crate::backup::ExportSource for Replica {
    fn db(&self) -> Arc<DB> {
        self.db.clone()
    }

    fn check_primary(&self) -> Result<(), WingError> {
        Replica::check_primary(self)
    }
}

/// The job a bulk-load request names.
pub fn bulk_load_source(spec: Option<&BulkLoadJobSpec>) -> Result<(BulkLoadSource, bool), WingError> {
    let spec = spec.ok_or_else(|| WingError::InvalidArgument("bulk-load request without a job".into()))?;
    object_store::path::Path::parse(&spec.partition_dir)
        .map_err(|e| WingError::InvalidArgument(format!("bulk-load partition dir '{}': {e}", spec.partition_dir)))?;
    Ok((
        BulkLoadSource {
            job_id: spec.job_id,
            provider: spec.provider.clone(),
            partition_dir: spec.partition_dir.clone(),
        },
        spec.ingest_behind,
    ))
}

impl Replica {
    /// Applies a bulk-load action on this replica only.
    pub async fn bulk_load_local(
        &self,
        source: &BulkLoadSource,
        ingest_behind: bool,
        action: BulkLoadAction,
    ) -> Result<ReplicaBulkLoadState, WingError> {
        if crate::state_machine::is_ingested(&self.db, source.job_id)? {
            return Ok(ReplicaBulkLoadState {
                node_id: self.node_id,
                status: BulkLoadStatus::BlsSucceed.into(),
                ..Default::default()
            });
        }
        let starts = matches!(action, BulkLoadAction::BlDownload | BulkLoadAction::BlIngest);
        if ingest_behind && starts && !self.db_options.allow_ingest_behind {
            // Refused before anything is proposed: RocksDB fixes the option when a DB is created.
            return Ok(ReplicaBulkLoadState {
                node_id: self.node_id,
                status: BulkLoadStatus::BlsFailed.into(),
                reason: format!(
                    "replica {} on node {} was created without rocksdb.allow_ingest_behind; it cannot ingest behind",
                    self.id, self.node_id
                ),
                ..Default::default()
            });
        }
        self.bulk.act(self.node_id, source, action).await
    }

    /// Streams file `name` of bulk-load job `job_id` to a member that lacks it; `NotFound` when
    /// this replica does not hold it verified.
    pub async fn serve_bulk_load_file(
        &self,
        job_id: u64,
        name: &str,
    ) -> Result<crate::bulk_load::source::FileChunks, WingError> {
        let (slot, file_name) = (self.bulk.clone(), name.to_string());
        let held = tokio::task::spawn_blocking(move || slot.held_file(job_id, &file_name)).await.ok().flatten();
        let path = held.ok_or_else(|| {
            WingError::NotFound(format!(
                "replica {} on node {} holds no verified {name} of job {job_id}",
                self.id, self.node_id
            ))
        })?;
        // The open descriptor keeps the content readable even if the job's files are released
        // meanwhile.
        let file =
            tokio::fs::File::open(&path).await.map_err(|e| WingError::NotFound(format!("{}: {e}", path.display())))?;
        Ok(Box::pin(futures::stream::try_unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::with_capacity(SERVE_CHUNK_BYTES);
            let n = (&mut file)
                .take(SERVE_CHUNK_BYTES as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| tonic::Status::internal(format!("read: {e}")))?;
            Ok((n > 0).then_some((wingkv_proto::replica_admin::BulkLoadFileChunk { data: buf.into() }, file)))
        })))
    }

    /// Applies a bulk-load action on every replica of the group (this one must be primary);
    /// `BL_INGEST` proposes the ingestion once every replica has verified its files.
    pub async fn bulk_load_group(
        &self,
        source: &BulkLoadSource,
        ingest_behind: bool,
        action: BulkLoadAction,
    ) -> Result<BulkLoadResponse, WingError> {
        self.check_primary()?;
        let ingested = crate::state_machine::is_ingested(&self.db, source.job_id)?;
        let spec = BulkLoadJobSpec {
            job_id: source.job_id,
            provider: source.provider.clone(),
            partition_dir: source.partition_dir.clone(),
            ingest_behind,
        };
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        // Every replica at once, each within 5 s: one frozen or slow secondary shows as
        // BLS_UNKNOWN in this answer instead of holding the meta's call past its deadline.
        let calls = membership.voter_ids().map(|voter| {
            let addr = membership.get_node(&voter).map(|n| n.addr.clone()).unwrap_or_default();
            let spec = spec.clone();
            async move {
                let state = if voter == self.node_id {
                    self.bulk_load_local(source, ingest_behind, action).await
                } else {
                    let req =
                        BulkLoadRequest { partition: Some(self.id.to_proto()), job: Some(spec), action: action as i32 };
                    async {
                        let channel = self.pool.get(&addr).map_err(|e| WingError::Unavailable(e.to_string()))?;
                        let mut req = tonic::Request::new(req);
                        req.set_timeout(Duration::from_secs(5));
                        let resp = ReplicaAdminClient::new(channel).bulk_load_replica(req).await;
                        resp.map(|r| r.into_inner()).map_err(|s| WingError::from_status(&s))
                    }
                    .await
                };
                state.unwrap_or_else(|e| ReplicaBulkLoadState {
                    node_id: voter,
                    status: BulkLoadStatus::BlsUnknown.into(),
                    reason: e.to_string(),
                    ..Default::default()
                })
            }
        });
        let replicas = futures::future::join_all(calls).await;
        if ingested || action != BulkLoadAction::BlIngest {
            return Ok(BulkLoadResponse { replicas, ingested });
        }
        let all_ready = replicas
            .iter()
            .all(|r| r.status() == BulkLoadStatus::BlsDownloaded || r.status() == BulkLoadStatus::BlsSucceed);
        let files = self.bulk.downloaded_files(source.job_id).await;
        let (true, Some(files)) = (all_ready, files) else {
            return Ok(BulkLoadResponse { replicas, ingested: false });
        };
        // The ingestion is not subject to the table's write throttling, on purpose: it is one
        // raft entry that moves verified files into RocksDB (no memtable, no WAL growth), so
        // holding it back would relieve no pressure and only stretch the job. Raft-level pushback
        // (Busy, NotLeader, a timeout) reaches the meta, which retries with backoff.
        if let (CommandResponse::Refused(reason), _) = self
            .propose(
                Command::IngestSst { source: source.clone(), files, ingest_behind },
                Instant::now() + self.write_timeout,
            )
            .await?
        {
            return Err(WingError::Corruption(reason));
        }
        tracing::info!(partition = %self.id, job = source.job_id, "bulk-load files ingested");
        Ok(BulkLoadResponse { replicas, ingested: true })
    }
}

/// The log is never purged past the applied index that is on disk: the data DB's writes are not
/// synced (the raft log, in another DB, is what is durable). The index is read first and synced
/// after, so what the limit answers is durable even if the state machine applies more in
/// between. (A rare fsync: purges follow snapshots.)
pub(crate) fn applied_purge_limit(db: Arc<DB>) -> PurgeLimit {
    Arc::new(move || {
        let applied = read_applied(&db).ok().map(|(last, _)| last.map(|l| l.index).unwrap_or(0))?;
        db.flush_wal(true).ok()?;
        Some(applied)
    })
}
