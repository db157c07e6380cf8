//! The replicated meta state — tables, their partitions' members, registered nodes — and the
//! commands that change it. Applying a command is a pure, deterministic function of the state
//! and the command (times come inside the command), so every meta replica reaches the same
//! state; refusals (a taken name, an unknown table) are answers, not failures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wingkv_common::{PartitionId, WingError};

use crate::backup::{
    BackupCatalog, BackupPolicy, BackupRecord, BackupStatus, PartitionBackup, RestoreRecord, RestoreStatus,
};
use crate::bulk_load::{BulkLoadControlAction, BulkLoadJob, BulkLoadStatus};

/// A registered replica server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Raft node id, assigned at registration.
    pub node_id: u64,
    /// gRPC address.
    pub address: String,
}

/// One partition's membership as the meta knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Raft voters, in placement order (the first one bootstraps the group).
    pub members: Vec<u64>,
    /// Bumped on every membership change.
    pub ballot: u64,
}

/// When a dropped table was dropped and when it is gone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropInfo {
    /// Unix ms of the drop.
    pub drop_time_ms: u64,
    /// Unix ms after which it can no longer be recalled.
    pub expire_time_ms: u64,
}

/// A table ("app").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    /// Numeric id, never reused.
    pub app_id: u32,
    /// Unique name among live tables.
    pub name: String,
    /// Number of partitions (a power of two).
    pub partition_count: u32,
    /// Replicas per partition.
    pub replica_count: u32,
    /// Table envs.
    pub envs: BTreeMap<String, String>,
    /// Unix ms of the creation.
    pub create_time_ms: u64,
    /// Set while the table is dropped (and recallable until it expires).
    pub dropped: Option<DropInfo>,
    /// Partitions, by index.
    pub partitions: Vec<PartitionState>,
}

impl AppState {
    /// Whether the table is dropped.
    pub fn is_dropped(&self) -> bool {
        self.dropped.is_some()
    }

    /// Whether the table still holds its name at `now_ms` (live, or dropped but recallable).
    pub fn holds_name(&self, now_ms: u64) -> bool {
        self.dropped.is_none_or(|d| d.expire_time_ms > now_ms)
    }
}

/// The whole replicated meta state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Next table id to hand out (ids start at 1).
    pub next_app_id: u32,
    /// Next node id to hand out (ids start at 1).
    pub next_node_id: u64,
    /// Tables by id, dropped ones included until purged.
    pub apps: BTreeMap<u32, AppState>,
    /// Registered replica servers.
    pub nodes: BTreeMap<u64, NodeRecord>,
    /// Next bulk-load job id (ids start at 1).
    pub next_job_id: u64,
    /// Bulk-load jobs by table id (at most one per table).
    pub bulk_loads: BTreeMap<u32, BulkLoadJob>,
    /// Settings added after the first releases. Not in this struct's encoding: a snapshot
    /// stores them after it (see `MetaData::to_bytes`), so that snapshots of earlier builds,
    /// which end before them, still load.
    #[serde(skip)]
    pub settings: ClusterSettings,
    /// Backups, restores and backup policies: also stored after the struct (JSON).
    #[serde(skip)]
    pub backups: BackupCatalog,
}

/// What the meta does by itself, with Pegasus's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MetaLevel {
    /// Nothing automatic: no repair, no balancing (an operator is working on the cluster).
    Freezed,
    /// Repairs only: dead members replaced, partitions topped up to their replica count.
    #[default]
    Steady,
    /// Repairs, and the balancer moves replicas and primaries until every node holds its share.
    Lively,
}

impl MetaLevel {
    /// The name users type and see.
    pub fn as_str(self) -> &'static str {
        match self {
            MetaLevel::Freezed => "freezed",
            MetaLevel::Steady => "steady",
            MetaLevel::Lively => "lively",
        }
    }

    /// The level named `name` (as [`Self::as_str`], any case).
    pub fn parse(name: &str) -> Result<Self, WingError> {
        match name.to_ascii_lowercase().as_str() {
            "freezed" => Ok(MetaLevel::Freezed),
            "steady" => Ok(MetaLevel::Steady),
            "lively" => Ok(MetaLevel::Lively),
            other => {
                Err(WingError::InvalidArgument(format!("unknown meta level '{other}' (use freezed, steady or lively)")))
            }
        }
    }
}

/// Cluster-wide settings an operator changes at run time (JSON in snapshots: a field added
/// later reads as its default from an older snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// What the meta does by itself.
    pub meta_level: MetaLevel,
    /// Nodes being decommissioned: they get no new replica, and their primaries, then their
    /// replicas, move to other nodes (at meta levels steady and lively).
    pub draining: std::collections::BTreeSet<u64>,
}

/// A change of the meta state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Register a node (node_id 0 = assign a new id), or update its address.
    RegisterNode {
        /// Existing id, or 0.
        node_id: u64,
        /// Its address.
        address: String,
    },
    /// Create a table with the given placement (`placement[i]` = members of partition i).
    CreateTable {
        /// Name (validated before proposing).
        name: String,
        /// Partitions.
        partition_count: u32,
        /// Replicas per partition.
        replica_count: u32,
        /// Initial envs.
        envs: BTreeMap<String, String>,
        /// Members per partition.
        placement: Vec<Vec<u64>>,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// Drop a live table, recallable for `reserve_ms`.
    DropTable {
        /// The live table to drop.
        name: String,
        /// Reserve time.
        reserve_ms: u64,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// Bring a dropped table back, optionally under a new name.
    RecallTable {
        /// Table id.
        app_id: u32,
        /// New name, if any.
        new_name: Option<String>,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// Forget a table unconditionally. Kept only so that entries already in a log still decode:
    /// wingkv proposes [`MetaCommand::PurgeExpiredTable`].
    PurgeTable {
        /// Table id.
        app_id: u32,
    },
    /// Set envs of a live table.
    SetEnvs {
        /// The live table whose envs change.
        name: String,
        /// Envs to set.
        envs: BTreeMap<String, String>,
    },
    /// Delete envs of a live table.
    DelEnvs {
        /// The live table whose envs change.
        name: String,
        /// Keys to delete.
        keys: Vec<String>,
    },
    /// Start a bulk load of a live table (its `bulk_load_info` was checked before proposing).
    StartBulkLoad {
        /// Table name.
        app_name: String,
        /// Cluster name in the remote layout.
        cluster: String,
        /// Provider of the remote files (`local`, `s3`, ...).
        provider: String,
        /// Root on the provider.
        root: String,
        /// Ingest below existing data.
        ingest_behind: bool,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// Move job `job_id` of `app_id` (or one of its partitions) to `status`.
    SetBulkLoadStatus {
        /// Table id.
        app_id: u32,
        /// The job the driver saw (a stale update of an older job is ignored).
        job_id: u64,
        /// A partition, or the whole job.
        partition: Option<u32>,
        /// New status.
        status: BulkLoadStatus,
        /// Reason (failures).
        reason: String,
    },
    /// An operator's pause, restart, cancel or clear.
    ControlBulkLoad {
        /// Table name.
        app_name: String,
        /// What to do.
        action: BulkLoadControlAction,
    },
    /// Record a partition's new members, if its ballot is still `ballot`.
    SetMembers {
        /// The partition whose members change.
        partition: PartitionId,
        /// Ballot the change was decided on.
        ballot: u64,
        /// New members.
        members: Vec<u64>,
    },
    /// Forget a dropped table, if at apply time it is still dropped and expired at `now_ms`: a
    /// purge decided on a stale view (a recall committed meanwhile) does nothing.
    PurgeExpiredTable {
        /// Table id.
        app_id: u32,
        /// Unix ms at the leader when it decided.
        now_ms: u64,
    },
    /// Set what the meta does by itself.
    SetMetaLevel {
        /// The new level.
        level: MetaLevel,
    },
    /// Start (`draining`) or stop decommissioning a registered node.
    SetDraining {
        /// The node.
        node_id: u64,
        /// Whether it drains.
        draining: bool,
    },
    /// Change how many replicas each partition of a live table keeps; the reconcile loop adds
    /// or removes members until every partition has that many.
    SetReplicaCount {
        /// The live table.
        name: String,
        /// The new count (validated).
        replica_count: u32,
    },
    /// Start a backup of a live table (the provider was checked before proposing).
    StartBackup {
        /// Table name.
        app_name: String,
        /// Provider name.
        provider: String,
        /// Root on the provider.
        root: String,
        /// Cluster name in the provider layout.
        cluster: String,
        /// The policy that starts it, if one does.
        policy: Option<String>,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// Record that a partition of a running backup is uploaded.
    SetBackupPartition {
        /// The backup.
        backup_id: u64,
        /// The partition.
        partition: u32,
        /// What its primary reported.
        done: PartitionBackup,
    },
    /// End a running backup (every partition done, a failure, or an operator's cancel).
    FinishBackup {
        /// The backup.
        backup_id: u64,
        /// Succeed, Failed or Canceled.
        status: BackupStatus,
        /// Why (failures, cancels).
        reason: String,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// Record that a backup's files are gone from the provider.
    SetBackupCleaned {
        /// The backup.
        backup_id: u64,
    },
    /// Mark a finished backup for removal (beyond its policy's history count).
    RetireBackup {
        /// The backup.
        backup_id: u64,
    },
    /// Forget a backup whose files were removed.
    RemoveBackup {
        /// The backup.
        backup_id: u64,
    },
    /// Create a table from a backup: the table, its restore record and the bulk load that
    /// moves the backup's files in, in one change (the table never serves before the load).
    CreateRestoredTable {
        /// The new table's name (validated).
        name: String,
        /// The backup's partition count.
        partition_count: u32,
        /// Replicas per partition.
        replica_count: u32,
        /// The backup's envs.
        envs: BTreeMap<String, String>,
        /// Members per partition.
        placement: Vec<Vec<u64>>,
        /// The backup restored.
        backup_id: u64,
        /// The backed-up table's name.
        old_app_name: String,
        /// Provider name.
        provider: String,
        /// Root on the provider.
        root: String,
        /// Cluster name in the provider layout.
        cluster: String,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// End the restore of table `app_id` whose load is job `job_id`.
    FinishRestore {
        /// The restored table.
        app_id: u32,
        /// Its load.
        job_id: u64,
        /// Succeed or Failed.
        status: RestoreStatus,
        /// Why it failed.
        reason: String,
        /// Unix ms at the leader.
        now_ms: u64,
    },
    /// Add a backup policy (validated before proposing).
    AddBackupPolicy {
        /// The policy (its `last_start_ms` is 0).
        policy: BackupPolicy,
    },
    /// Change a backup policy.
    ModifyBackupPolicy {
        /// Its name.
        name: String,
        /// Tables to add.
        add_app_ids: Vec<u32>,
        /// Tables to remove.
        remove_app_ids: Vec<u32>,
        /// New interval.
        interval_s: Option<u64>,
        /// New minute of the day.
        start_minute: Option<u32>,
        /// New history count.
        history_count: Option<u32>,
        /// Enable or disable.
        enabled: Option<bool>,
    },
    /// Record that a policy started its backups at `now_ms`.
    BackupPolicyStarted {
        /// Its name.
        name: String,
        /// Unix ms at the leader.
        now_ms: u64,
    },
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MetaValue {
    /// Nothing to report.
    #[default]
    Done,
    /// The node id of a registration.
    NodeId(u64),
    /// The table after the change.
    App(Box<AppState>),
    /// A bulk-load job after the change.
    BulkLoad(Box<BulkLoadJob>),
    /// A backup after the change.
    Backup(Box<BackupRecord>),
    /// A restore after the change.
    Restore(Box<RestoreRecord>),
    /// A backup policy after the change.
    BackupPolicy(Box<BackupPolicy>),
}

/// The result of applying a command.
pub type MetaResponse = Result<MetaValue, WingError>;

impl Catalog {
    /// The live table called `name`.
    pub fn live_app(&self, name: &str) -> Result<&AppState, WingError> {
        self.apps
            .values()
            .find(|a| a.name == name && !a.is_dropped())
            .ok_or_else(|| WingError::TableNotFound(format!("no table named '{name}'")))
    }

    fn live_app_mut(&mut self, name: &str) -> Result<&mut AppState, WingError> {
        self.apps
            .values_mut()
            .find(|a| a.name == name && !a.is_dropped())
            .ok_or_else(|| WingError::TableNotFound(format!("no table named '{name}'")))
    }

    /// Refuses `name` when a table holds it at `now_ms` (a dropped table keeps its name until it
    /// expires).
    pub fn check_name_free(&self, name: &str, now_ms: u64) -> Result<(), WingError> {
        match self.apps.values().find(|a| a.name == name && a.holds_name(now_ms)) {
            None => Ok(()),
            Some(a) if a.is_dropped() => Err(WingError::AlreadyExists(format!(
                "table '{name}' (app_id {}) was dropped and is reserved until it expires; recall it or wait",
                a.app_id
            ))),
            Some(a) => Err(WingError::AlreadyExists(format!("table '{name}' exists (app_id {})", a.app_id))),
        }
    }

    /// Replicas of live tables per node, and how many of them are first in their member list.
    pub fn load_by_node(&self) -> BTreeMap<u64, (u32, u32)> {
        let mut load: BTreeMap<u64, (u32, u32)> = self.nodes.keys().map(|n| (*n, (0, 0))).collect();
        for app in self.apps.values().filter(|a| !a.is_dropped()) {
            for p in &app.partitions {
                for (i, m) in p.members.iter().enumerate() {
                    let e = load.entry(*m).or_default();
                    e.0 += 1;
                    if i == 0 {
                        e.1 += 1;
                    }
                }
            }
        }
        load
    }

    /// Adds a live table (the `CreateTable` change).
    fn create_app(
        &mut self,
        name: &str,
        partition_count: u32,
        replica_count: u32,
        envs: &BTreeMap<String, String>,
        placement: &[Vec<u64>],
        now_ms: u64,
    ) -> Result<AppState, WingError> {
        self.check_name_free(name, now_ms)?;
        if placement.len() != partition_count as usize {
            return Err(WingError::Internal("placement does not cover every partition".into()));
        }
        self.next_app_id = self.next_app_id.max(1);
        let app_id = self.next_app_id;
        self.next_app_id += 1;
        let app = AppState {
            app_id,
            name: name.to_string(),
            partition_count,
            replica_count,
            envs: envs.clone(),
            create_time_ms: now_ms,
            dropped: None,
            partitions: placement.iter().map(|m| PartitionState { members: m.clone(), ballot: 1 }).collect(),
        };
        self.apps.insert(app_id, app.clone());
        Ok(app)
    }

    /// Adds a bulk-load job of `app_id`, downloading (the `StartBulkLoad` change), reading from
    /// `(cluster, provider, root)`.
    fn start_job(
        &mut self,
        app_id: u32,
        partition_count: u32,
        (cluster, provider, root): (&str, &str, &str),
        ingest_behind: bool,
        now_ms: u64,
    ) -> BulkLoadJob {
        self.next_job_id = self.next_job_id.max(1);
        let job = BulkLoadJob {
            job_id: self.next_job_id,
            cluster: cluster.to_string(),
            provider: provider.to_string(),
            root: root.to_string(),
            ingest_behind,
            status: BulkLoadStatus::Downloading,
            reason: String::new(),
            partitions: vec![BulkLoadStatus::Downloading; partition_count as usize],
            start_time_ms: now_ms,
        };
        self.next_job_id += 1;
        self.bulk_loads.insert(app_id, job.clone());
        job
    }

    /// The backup `backup_id`.
    fn backup_mut(&mut self, backup_id: u64) -> Result<&mut BackupRecord, WingError> {
        self.backups.backups.get_mut(&backup_id).ok_or_else(|| WingError::NotFound(format!("no backup {backup_id}")))
    }

    /// Applies a backup, restore or policy change.
    fn apply_backup(&mut self, cmd: &MetaCommand) -> MetaResponse {
        let backup = |b: &BackupRecord| Ok(MetaValue::Backup(Box::new(b.clone())));
        match cmd {
            MetaCommand::StartBackup { app_name, provider, root, cluster, policy, now_ms } => {
                let app = self.live_app(app_name)?.clone();
                if self.backups.blocks_serving(app.app_id) {
                    return Err(WingError::InvalidState(format!(
                        "table '{app_name}' is being restored (or its restore failed); it cannot be backed up"
                    )));
                }
                if let Some(b) = self.backups.running_backup(app.app_id) {
                    return Err(WingError::InvalidState(format!(
                        "table '{app_name}' already has a backup running (backup {})",
                        b.backup_id
                    )));
                }
                let backup_id = self.backups.next_backup_id(*now_ms);
                let record = BackupRecord {
                    backup_id,
                    app_id: app.app_id,
                    app_name: app.name.clone(),
                    replica_count: app.replica_count,
                    envs: app.envs.clone(),
                    provider: provider.clone(),
                    root: root.clone(),
                    cluster: cluster.clone(),
                    policy: policy.clone(),
                    status: BackupStatus::Running,
                    reason: String::new(),
                    start_time_ms: *now_ms,
                    end_time_ms: 0,
                    partitions: vec![PartitionBackup::default(); app.partition_count as usize],
                    cleaned: false,
                    retired: false,
                };
                self.backups.backups.insert(backup_id, record.clone());
                Ok(MetaValue::Backup(Box::new(record)))
            }
            MetaCommand::SetBackupPartition { backup_id, partition, done } => {
                let b = self.backup_mut(*backup_id)?;
                if b.status == BackupStatus::Running {
                    let slot = b.partitions.get_mut(*partition as usize).ok_or_else(|| {
                        WingError::InvalidArgument(format!("backup {backup_id} has no partition {partition}"))
                    })?;
                    *slot = done.clone();
                }
                backup(b)
            }
            MetaCommand::FinishBackup { backup_id, status, reason, now_ms } => {
                let b = self.backup_mut(*backup_id)?;
                if b.status.is_terminal() {
                    return Err(WingError::InvalidState(format!(
                        "backup {backup_id} already ended ({:?}); it cannot be canceled or ended again",
                        b.status
                    )));
                }
                if *status == BackupStatus::Succeed && !b.partitions.iter().all(|p| p.done) {
                    return Err(WingError::Internal(format!("backup {backup_id} has partitions not uploaded")));
                }
                b.status = *status;
                b.reason = reason.clone();
                b.end_time_ms = *now_ms;
                backup(b)
            }
            MetaCommand::SetBackupCleaned { backup_id } => {
                let b = self.backup_mut(*backup_id)?;
                b.cleaned = true;
                backup(b)
            }
            MetaCommand::RetireBackup { backup_id } => {
                if self.backups.pinned(*backup_id) {
                    return Err(WingError::InvalidState(format!(
                        "backup {backup_id} is being restored; it is retired after the restore"
                    )));
                }
                let b = self.backup_mut(*backup_id)?;
                if !b.status.is_terminal() {
                    return Err(WingError::InvalidState(format!("backup {backup_id} still runs")));
                }
                b.retired = true;
                backup(b)
            }
            MetaCommand::RemoveBackup { backup_id } => {
                let b = self.backup_mut(*backup_id)?;
                if !b.cleaned {
                    return Err(WingError::InvalidState(format!("backup {backup_id} still has files on its provider")));
                }
                self.backups.backups.remove(backup_id);
                Ok(MetaValue::Done)
            }
            MetaCommand::CreateRestoredTable {
                name,
                partition_count,
                replica_count,
                envs,
                placement,
                backup_id,
                old_app_name,
                provider,
                root,
                cluster,
                now_ms,
            } => {
                // A backup this cluster knows must be whole and kept (a cancel may have won
                // against its end after `backup_info` was written).
                if let Some(b) = self.backups.backups.get(backup_id).filter(|b| b.app_name == *old_app_name) {
                    if b.status != BackupStatus::Succeed || b.retired {
                        return Err(WingError::InvalidState(format!(
                            "backup {backup_id} of table '{old_app_name}' is {:?}{}; it cannot be restored",
                            b.status,
                            if b.retired { " and retired" } else { "" }
                        )));
                    }
                }
                let app = self.create_app(name, *partition_count, *replica_count, envs, placement, *now_ms)?;
                let job = self.start_job(app.app_id, *partition_count, (cluster, provider, root), false, *now_ms);
                let restore = RestoreRecord {
                    app_id: app.app_id,
                    backup_id: *backup_id,
                    old_app_name: old_app_name.clone(),
                    provider: provider.clone(),
                    root: root.clone(),
                    cluster: cluster.clone(),
                    job_id: job.job_id,
                    status: RestoreStatus::Running,
                    reason: String::new(),
                    start_time_ms: *now_ms,
                    end_time_ms: 0,
                };
                self.backups.restores.insert(app.app_id, restore);
                Ok(MetaValue::App(Box::new(app)))
            }
            MetaCommand::FinishRestore { app_id, job_id, status, reason, now_ms } => {
                let r = self
                    .backups
                    .restores
                    .get_mut(app_id)
                    .filter(|r| r.job_id == *job_id)
                    .ok_or_else(|| WingError::NotFound(format!("no restore of app {app_id} by job {job_id}")))?;
                if r.status == RestoreStatus::Running {
                    r.status = *status;
                    r.reason = reason.clone();
                    r.end_time_ms = *now_ms;
                }
                Ok(MetaValue::Restore(Box::new(r.clone())))
            }
            MetaCommand::AddBackupPolicy { policy } => {
                if self.backups.policies.contains_key(&policy.name) {
                    return Err(WingError::AlreadyExists(format!("backup policy '{}' exists", policy.name)));
                }
                self.backups.policies.insert(policy.name.clone(), policy.clone());
                Ok(MetaValue::BackupPolicy(Box::new(policy.clone())))
            }
            MetaCommand::ModifyBackupPolicy {
                name,
                add_app_ids,
                remove_app_ids,
                interval_s,
                start_minute,
                history_count,
                enabled,
            } => {
                let p = self
                    .backups
                    .policies
                    .get_mut(name)
                    .ok_or_else(|| WingError::NotFound(format!("no backup policy named '{name}'")))?;
                p.app_ids.extend(add_app_ids);
                for id in remove_app_ids {
                    p.app_ids.remove(id);
                }
                if let Some(v) = interval_s {
                    p.interval_s = *v;
                }
                if let Some(v) = start_minute {
                    p.start_minute = *v;
                }
                if let Some(v) = history_count {
                    p.history_count = *v;
                }
                if let Some(v) = enabled {
                    p.enabled = *v;
                }
                Ok(MetaValue::BackupPolicy(Box::new(p.clone())))
            }
            MetaCommand::BackupPolicyStarted { name, now_ms } => {
                let p = self
                    .backups
                    .policies
                    .get_mut(name)
                    .ok_or_else(|| WingError::NotFound(format!("no backup policy named '{name}'")))?;
                p.last_start_ms = p.last_start_ms.max(*now_ms);
                Ok(MetaValue::BackupPolicy(Box::new(p.clone())))
            }
            other => Err(WingError::Internal(format!("not a backup command: {other:?}"))),
        }
    }

    /// Applies `cmd`.
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        match cmd {
            MetaCommand::RegisterNode { node_id, address } => {
                if *node_id != 0 {
                    let rec = self.nodes.get_mut(node_id).ok_or_else(|| {
                        WingError::NotFound(format!("node {node_id} is not registered in this cluster"))
                    })?;
                    rec.address = address.clone();
                    return Ok(MetaValue::NodeId(*node_id));
                }
                self.next_node_id = self.next_node_id.max(1);
                let id = self.next_node_id;
                self.next_node_id += 1;
                self.nodes.insert(id, NodeRecord { node_id: id, address: address.clone() });
                Ok(MetaValue::NodeId(id))
            }
            MetaCommand::CreateTable { name, partition_count, replica_count, envs, placement, now_ms } => {
                let app = self.create_app(name, *partition_count, *replica_count, envs, placement, *now_ms)?;
                Ok(MetaValue::App(Box::new(app)))
            }
            MetaCommand::DropTable { name, reserve_ms, now_ms } => {
                let app = self.live_app_mut(name)?;
                app.dropped =
                    Some(DropInfo { drop_time_ms: *now_ms, expire_time_ms: now_ms.saturating_add(*reserve_ms) });
                let app = app.clone();
                // The drop cancels the table's bulk load in the same change.
                if let Some(job) = self.bulk_loads.get_mut(&app.app_id).filter(|j| !j.status.is_terminal()) {
                    job.cancel("the table was dropped");
                }
                Ok(MetaValue::App(Box::new(app)))
            }
            MetaCommand::RecallTable { app_id, new_name, now_ms } => {
                let app = self
                    .apps
                    .get(app_id)
                    .ok_or_else(|| WingError::TableNotFound(format!("no table with app_id {app_id}")))?;
                let Some(drop) = app.dropped else {
                    return Err(WingError::InvalidState(format!(
                        "table '{}' (app_id {app_id}) is not dropped",
                        app.name
                    )));
                };
                if drop.expire_time_ms <= *now_ms {
                    return Err(WingError::TableNotFound(format!(
                        "table with app_id {app_id} expired and cannot be recalled"
                    )));
                }
                let name = new_name.clone().unwrap_or_else(|| app.name.clone());
                if let Some(other) =
                    self.apps.values().find(|a| a.app_id != *app_id && a.name == name && a.holds_name(*now_ms))
                {
                    return Err(WingError::AlreadyExists(format!(
                        "name '{name}' is taken by app_id {}; recall with a new name",
                        other.app_id
                    )));
                }
                let app = self.apps.get_mut(app_id).ok_or_else(|| WingError::Internal("app vanished".into()))?;
                app.dropped = None;
                app.name = name;
                Ok(MetaValue::App(Box::new(app.clone())))
            }
            MetaCommand::PurgeTable { app_id } => {
                self.apps.remove(app_id);
                self.bulk_loads.remove(app_id);
                Ok(MetaValue::Done)
            }
            MetaCommand::PurgeExpiredTable { app_id, now_ms } => {
                let app = self
                    .apps
                    .get(app_id)
                    .ok_or_else(|| WingError::TableNotFound(format!("no table with app_id {app_id}")))?;
                match app.dropped {
                    Some(d) if d.expire_time_ms <= *now_ms => {}
                    Some(_) => {
                        return Err(WingError::InvalidState(format!(
                            "table '{}' (app_id {app_id}) has not expired; not purged",
                            app.name
                        )))
                    }
                    None => {
                        return Err(WingError::InvalidState(format!(
                            "table '{}' (app_id {app_id}) is live (recalled); not purged",
                            app.name
                        )))
                    }
                }
                self.apps.remove(app_id);
                self.bulk_loads.remove(app_id);
                self.backups.restores.remove(app_id);
                Ok(MetaValue::Done)
            }
            MetaCommand::StartBulkLoad { app_name, cluster, provider, root, ingest_behind, now_ms } => {
                let app = self.live_app(app_name)?;
                let (app_id, partition_count) = (app.app_id, app.partition_count);
                if self.backups.blocks_serving(app_id) {
                    return Err(WingError::InvalidState(format!(
                        "table '{app_name}' is being restored (or its restore failed); it takes no bulk load"
                    )));
                }
                if let Some(job) = self.bulk_loads.get(&app_id).filter(|j| !j.status.is_terminal()) {
                    return Err(WingError::InvalidState(format!(
                        "table '{app_name}' already has a bulk load running (job {}, {})",
                        job.job_id,
                        job.status.as_str()
                    )));
                }
                let job = self.start_job(app_id, partition_count, (cluster, provider, root), *ingest_behind, *now_ms);
                Ok(MetaValue::BulkLoad(Box::new(job)))
            }
            MetaCommand::SetBulkLoadStatus { app_id, job_id, partition, status, reason } => {
                let Some(job) = self.bulk_loads.get_mut(app_id).filter(|j| j.job_id == *job_id) else {
                    return Err(WingError::InvalidState(format!("bulk-load job {job_id} of app {app_id} is gone")));
                };
                // A canceled or finished job never moves again.
                if job.status.is_terminal() {
                    return Ok(MetaValue::BulkLoad(Box::new(job.clone())));
                }
                match partition {
                    Some(p) => {
                        let slot = job
                            .partitions
                            .get_mut(*p as usize)
                            .ok_or_else(|| WingError::InvalidArgument(format!("job {job_id} has no partition {p}")))?;
                        *slot = *status;
                    }
                    None => {
                        job.status = *status;
                        job.reason = reason.clone();
                        if *status == BulkLoadStatus::Ingesting {
                            job.partitions.iter_mut().for_each(|p| *p = BulkLoadStatus::Ingesting);
                        }
                    }
                }
                Ok(MetaValue::BulkLoad(Box::new(job.clone())))
            }
            MetaCommand::ControlBulkLoad { app_name, action } => {
                let app_id = self.live_app(app_name)?.app_id;
                let job = self
                    .bulk_loads
                    .get_mut(&app_id)
                    .ok_or_else(|| WingError::InvalidState(format!("table '{app_name}' has no bulk load")))?;
                if *action == BulkLoadControlAction::Clear {
                    if !job.status.is_terminal() {
                        return Err(WingError::InvalidState(format!(
                            "cannot clear the bulk load of table '{app_name}': it is {}",
                            job.status.as_str()
                        )));
                    }
                    let job = job.clone();
                    self.bulk_loads.remove(&app_id);
                    return Ok(MetaValue::BulkLoad(Box::new(job)));
                }
                job.control(app_name, *action)?;
                Ok(MetaValue::BulkLoad(Box::new(job.clone())))
            }
            MetaCommand::SetEnvs { name, envs } => {
                let app = self.live_app_mut(name)?;
                app.envs.extend(envs.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(MetaValue::App(Box::new(app.clone())))
            }
            MetaCommand::DelEnvs { name, keys } => {
                let app = self.live_app_mut(name)?;
                for k in keys {
                    app.envs.remove(k);
                }
                Ok(MetaValue::App(Box::new(app.clone())))
            }
            MetaCommand::SetMembers { partition, ballot, members } => {
                let app = self
                    .apps
                    .get_mut(&partition.app_id)
                    .ok_or_else(|| WingError::TableNotFound(format!("no table with app_id {}", partition.app_id)))?;
                let p = app
                    .partitions
                    .get_mut(partition.partition_index as usize)
                    .ok_or_else(|| WingError::NotFound(format!("no partition {partition}")))?;
                if p.ballot != *ballot {
                    return Err(WingError::InvalidState(format!(
                        "partition {partition} changed meanwhile (ballot {} != {ballot})",
                        p.ballot
                    )));
                }
                p.members = members.clone();
                p.ballot += 1;
                Ok(MetaValue::Done)
            }
            MetaCommand::SetMetaLevel { level } => {
                self.settings.meta_level = *level;
                Ok(MetaValue::Done)
            }
            MetaCommand::SetDraining { node_id, draining } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(WingError::NotFound(format!("node {node_id} is not registered in this cluster")));
                }
                if *draining {
                    self.settings.draining.insert(*node_id);
                } else {
                    self.settings.draining.remove(node_id);
                }
                Ok(MetaValue::Done)
            }
            MetaCommand::SetReplicaCount { name, replica_count } => {
                wingkv_common::naming::validate_replica_count(*replica_count)?;
                let app_id = self.live_app(name)?.app_id;
                // Checked here, not only by the service: a bulk load started between the
                // service's read and this apply must not see members come and go under it.
                if let Some(job) = self.bulk_loads.get(&app_id).filter(|j| !j.status.is_terminal()) {
                    return Err(WingError::InvalidState(format!(
                        "table '{name}' has a bulk load running (job {}, {}): change its replica count after it ends",
                        job.job_id,
                        job.status.as_str()
                    )));
                }
                let app = self.live_app_mut(name)?;
                app.replica_count = *replica_count;
                Ok(MetaValue::App(Box::new(app.clone())))
            }
            MetaCommand::StartBackup { .. }
            | MetaCommand::SetBackupPartition { .. }
            | MetaCommand::FinishBackup { .. }
            | MetaCommand::SetBackupCleaned { .. }
            | MetaCommand::RetireBackup { .. }
            | MetaCommand::RemoveBackup { .. }
            | MetaCommand::CreateRestoredTable { .. }
            | MetaCommand::FinishRestore { .. }
            | MetaCommand::AddBackupPolicy { .. }
            | MetaCommand::ModifyBackupPolicy { .. }
            | MetaCommand::BackupPolicyStarted { .. } => self.apply_backup(cmd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, now_ms: u64) -> MetaCommand {
        MetaCommand::CreateTable {
            name: name.into(),
            partition_count: 2,
            replica_count: 1,
            envs: BTreeMap::new(),
            placement: vec![vec![1], vec![2]],
            now_ms,
        }
    }

    fn app_id(r: MetaResponse) -> u32 {
        match r.unwrap() {
            MetaValue::App(a) => a.app_id,
            other => panic!("{other:?}"),
        }
    }

    /// Meta log entries written before format versions (bare commands) decode as today's.
    #[test]
    fn commands_written_before_format_versions_still_decode() {
        use wingkv_common::raft::versioned::Versioned;
        use wingkv_common::raft::{decode, encode};
        let commands = vec![
            create("t", 5),
            MetaCommand::SetEnvs { name: "t".into(), envs: BTreeMap::from([("k".into(), "v".into())]) },
            MetaCommand::PurgeTable { app_id: 9 },
        ];
        for cmd in commands {
            let read: Versioned<MetaCommand> = decode(&encode(&cmd).unwrap()).unwrap();
            assert_eq!(read.0, cmd);
            let again: Versioned<MetaCommand> = decode(&encode(&read).unwrap()).unwrap();
            assert_eq!(again.0, cmd);
        }
    }

    #[test]
    fn names_are_unique_until_a_dropped_table_expires() {
        let mut c = Catalog::default();
        let id = app_id(c.apply(&create("t", 0)));
        assert_eq!(id, 1);
        assert!(matches!(c.apply(&create("t", 1)), Err(WingError::AlreadyExists(_))));
        c.apply(&MetaCommand::DropTable { name: "t".into(), reserve_ms: 100, now_ms: 10 }).unwrap();
        assert!(matches!(c.live_app("t"), Err(WingError::TableNotFound(_))));
        // Reserved while recallable.
        assert!(matches!(c.apply(&create("t", 50)), Err(WingError::AlreadyExists(_))));
        // Recall brings it back.
        assert_eq!(app_id(c.apply(&MetaCommand::RecallTable { app_id: id, new_name: None, now_ms: 60 })), id);
        c.apply(&MetaCommand::DropTable { name: "t".into(), reserve_ms: 100, now_ms: 70 }).unwrap();
        // Expired: the name is free, and ids are never reused.
        let id2 = app_id(c.apply(&create("t", 171)));
        assert_eq!(id2, 2);
        assert!(c.apply(&MetaCommand::RecallTable { app_id: id, new_name: None, now_ms: 171 }).is_err());
    }

    #[test]
    fn a_purge_applies_only_to_a_table_still_dropped_and_expired() {
        let mut c = Catalog::default();
        let id = app_id(c.apply(&create("t", 0)));
        let purge = |now_ms| MetaCommand::PurgeExpiredTable { app_id: id, now_ms };
        // Live: refused.
        assert!(matches!(c.apply(&purge(10)), Err(WingError::InvalidState(_))));
        c.apply(&MetaCommand::DropTable { name: "t".into(), reserve_ms: 100, now_ms: 10 }).unwrap();
        // Dropped, not expired: refused.
        assert!(matches!(c.apply(&purge(50)), Err(WingError::InvalidState(_))));
        // A purge decided after expiry, applied after a recall committed: refused, nothing lost.
        c.apply(&MetaCommand::RecallTable { app_id: id, new_name: None, now_ms: 60 }).unwrap();
        assert!(matches!(c.apply(&purge(200)), Err(WingError::InvalidState(_))));
        assert!(c.apps.contains_key(&id));
        // Dropped and expired: purged.
        c.apply(&MetaCommand::DropTable { name: "t".into(), reserve_ms: 100, now_ms: 300 }).unwrap();
        assert_eq!(c.apply(&purge(400)), Ok(MetaValue::Done));
        assert!(!c.apps.contains_key(&id));
    }

    #[test]
    fn recall_into_a_taken_name_needs_a_new_name() {
        let mut c = Catalog::default();
        let id = app_id(c.apply(&create("t", 0)));
        c.apply(&MetaCommand::DropTable { name: "t".into(), reserve_ms: 1_000, now_ms: 0 }).unwrap();
        c.apply(&MetaCommand::PurgeTable { app_id: 99 }).unwrap();
        // The name is reserved, so nobody can take it; a recall under a new name works.
        let r = c.apply(&MetaCommand::RecallTable { app_id: id, new_name: Some("t2".into()), now_ms: 5 });
        assert_eq!(app_id(r), id);
        assert_eq!(c.live_app("t2").unwrap().app_id, id);
        assert!(c.apply(&MetaCommand::RecallTable { app_id: id, new_name: None, now_ms: 6 }).is_err());
    }

    #[test]
    fn registration_and_membership_ballots() {
        let mut c = Catalog::default();
        assert_eq!(c.apply(&MetaCommand::RegisterNode { node_id: 0, address: "a".into() }), Ok(MetaValue::NodeId(1)));
        assert_eq!(c.apply(&MetaCommand::RegisterNode { node_id: 0, address: "b".into() }), Ok(MetaValue::NodeId(2)));
        assert_eq!(c.apply(&MetaCommand::RegisterNode { node_id: 1, address: "a2".into() }), Ok(MetaValue::NodeId(1)));
        assert_eq!(c.nodes[&1].address, "a2");
        assert!(c.apply(&MetaCommand::RegisterNode { node_id: 7, address: "x".into() }).is_err());
        let id = app_id(c.apply(&create("t", 0)));
        let p = PartitionId::new(id, 1);
        c.apply(&MetaCommand::SetMembers { partition: p, ballot: 1, members: vec![1] }).unwrap();
        assert!(c.apply(&MetaCommand::SetMembers { partition: p, ballot: 1, members: vec![2] }).is_err());
        assert_eq!(c.apps[&id].partitions[1], PartitionState { members: vec![1], ballot: 2 });
    }

    #[test]
    fn a_replica_count_changes_only_on_a_live_table_without_a_running_bulk_load() {
        let mut c = Catalog::default();
        let id = app_id(c.apply(&create("t", 0)));
        let set = |n| MetaCommand::SetReplicaCount { name: "t".into(), replica_count: n };
        assert!(matches!(c.apply(&set(0)), Err(WingError::InvalidArgument(_))));
        assert!(matches!(
            c.apply(&MetaCommand::SetReplicaCount { name: "u".into(), replica_count: 3 }),
            Err(WingError::TableNotFound(_))
        ));
        assert_eq!(c.apps[&id].replica_count, 1, "a refused change changed the table");
        c.apply(&set(3)).unwrap();
        assert_eq!(c.apps[&id].replica_count, 3);
        let start = MetaCommand::StartBulkLoad {
            app_name: "t".into(),
            cluster: "c".into(),
            provider: "local".into(),
            root: "/r".into(),
            ingest_behind: false,
            now_ms: 1,
        };
        c.apply(&start).unwrap();
        assert!(matches!(c.apply(&set(5)), Err(WingError::InvalidState(_))));
        assert_eq!(c.apps[&id].replica_count, 3);
        c.apply(&MetaCommand::ControlBulkLoad {
            app_name: "t".into(),
            action: BulkLoadControlAction::Cancel { force: false },
        })
        .unwrap();
        c.apply(&set(5)).unwrap();
        assert_eq!(c.apps[&id].replica_count, 5);
        c.apply(&MetaCommand::DropTable { name: "t".into(), reserve_ms: 100, now_ms: 10 }).unwrap();
        assert!(matches!(c.apply(&set(3)), Err(WingError::TableNotFound(_))));
    }

    #[test]
    fn a_restore_creates_the_table_its_load_and_its_record_in_one_change() {
        let mut c = Catalog::default();
        let restore = MetaCommand::CreateRestoredTable {
            name: "t2".into(),
            partition_count: 2,
            replica_count: 1,
            envs: BTreeMap::from([("k".into(), "v".into())]),
            placement: vec![vec![1], vec![2]],
            backup_id: 1_000,
            old_app_name: "t".into(),
            provider: "s3".into(),
            root: "b".into(),
            cluster: "onebox".into(),
            now_ms: 5,
        };
        let id = app_id(c.apply(&restore));
        let job = c.bulk_loads[&id].clone();
        assert_eq!(job.status, BulkLoadStatus::Downloading);
        let r = c.backups.restore_of_job(id, job.job_id).unwrap();
        assert_eq!(r.partition_dir(1).unwrap(), "b/onebox/t/backup/1000/1");
        assert!(c.backups.blocks_serving(id));
        // The name is taken like any table's, and the table takes no other load meanwhile.
        assert!(matches!(c.apply(&restore), Err(WingError::AlreadyExists(_))));
        let bulk = MetaCommand::StartBulkLoad {
            app_name: "t2".into(),
            cluster: "c".into(),
            provider: "local".into(),
            root: "/r".into(),
            ingest_behind: false,
            now_ms: 6,
        };
        assert!(matches!(c.apply(&bulk), Err(WingError::InvalidState(_))));
        let finish = |job_id| MetaCommand::FinishRestore {
            app_id: id,
            job_id,
            status: RestoreStatus::Succeed,
            reason: String::new(),
            now_ms: 9,
        };
        assert!(c.apply(&finish(job.job_id + 1)).is_err(), "a stale job ends no restore");
        c.apply(&finish(job.job_id)).unwrap();
        assert!(!c.backups.blocks_serving(id));
        c.apply(&MetaCommand::DropTable { name: "t2".into(), reserve_ms: 0, now_ms: 10 }).unwrap();
        c.apply(&MetaCommand::PurgeExpiredTable { app_id: id, now_ms: 11 }).unwrap();
        assert!(c.backups.restores.is_empty(), "a purge forgets the table's restore");
    }

    #[test]
    fn backups_run_one_at_a_time_end_once_and_are_forgotten_only_once_cleaned() {
        let mut c = Catalog::default();
        app_id(c.apply(&create("t", 0)));
        let start = MetaCommand::StartBackup {
            app_name: "t".into(),
            provider: "local".into(),
            root: "/r".into(),
            cluster: "c".into(),
            policy: None,
            now_ms: 100,
        };
        let id = match c.apply(&start).unwrap() {
            MetaValue::Backup(b) => b.backup_id,
            other => panic!("{other:?}"),
        };
        assert!(matches!(c.apply(&start), Err(WingError::InvalidState(_))), "one backup of a table at a time");
        let finish = |status| MetaCommand::FinishBackup { backup_id: id, status, reason: String::new(), now_ms: 200 };
        assert!(c.apply(&finish(BackupStatus::Succeed)).is_err(), "not every partition is uploaded");
        for p in 0..2 {
            let done = PartitionBackup { done: true, log_index: 5, size: 10, file_count: 1, node_id: 1 };
            c.apply(&MetaCommand::SetBackupPartition { backup_id: id, partition: p, done }).unwrap();
        }
        c.apply(&finish(BackupStatus::Succeed)).unwrap();
        assert!(c.apply(&finish(BackupStatus::Canceled)).is_err(), "a finished backup ends once");
        assert!(c.apply(&MetaCommand::RemoveBackup { backup_id: id }).is_err(), "its files are still there");
        c.apply(&MetaCommand::RetireBackup { backup_id: id }).unwrap();
        assert!(c.backups.backups[&id].needs_cleanup());
        c.apply(&MetaCommand::SetBackupCleaned { backup_id: id }).unwrap();
        c.apply(&MetaCommand::RemoveBackup { backup_id: id }).unwrap();
        assert!(c.backups.backups.is_empty());
        // A restore never reads a backup this cluster knows is not whole, and a backup a
        // running restore reads is not retired.
        let restore_of = |backup_id, name: &str| MetaCommand::CreateRestoredTable {
            name: name.into(),
            partition_count: 2,
            replica_count: 1,
            envs: BTreeMap::new(),
            placement: vec![vec![1], vec![2]],
            backup_id,
            old_app_name: "t".into(),
            provider: "local".into(),
            root: "/r".into(),
            cluster: "c".into(),
            now_ms: 300,
        };
        let canceled = match c.apply(&MetaCommand::StartBackup {
            app_name: "t".into(),
            provider: "local".into(),
            root: "/r".into(),
            cluster: "c".into(),
            policy: None,
            now_ms: 250,
        }) {
            Ok(MetaValue::Backup(b)) => b.backup_id,
            other => panic!("{other:?}"),
        };
        c.apply(&MetaCommand::FinishBackup {
            backup_id: canceled,
            status: BackupStatus::Canceled,
            reason: "op".into(),
            now_ms: 260,
        })
        .unwrap();
        assert!(matches!(c.apply(&restore_of(canceled, "r1")), Err(WingError::InvalidState(_))));
        let mut whole = c.backups.backups[&canceled].clone();
        whole.backup_id = 7;
        whole.status = BackupStatus::Succeed;
        c.backups.backups.insert(7, whole);
        c.apply(&restore_of(7, "r1")).unwrap();
        assert!(c.backups.pinned(7));
        assert!(matches!(c.apply(&MetaCommand::RetireBackup { backup_id: 7 }), Err(WingError::InvalidState(_))));
        c.backups.backups.remove(&canceled);
        c.backups.backups.remove(&7);
        // A new backup gets a new id even at the same time.
        let again = MetaCommand::StartBackup {
            app_name: "t".into(),
            provider: "local".into(),
            root: "/r".into(),
            cluster: "c".into(),
            policy: None,
            now_ms: 100,
        };
        match c.apply(&again).unwrap() {
            MetaValue::Backup(b) => assert!(b.backup_id > id),
            other => panic!("{other:?}"),
        }
    }
}
