//! Cold backups, restores and backup policies in the meta state (DESIGN §9, Pegasus's names).
//! The records and their transitions here are pure; the leader's driver
//! ([`crate::backup_driver`]) moves them forward by proposing them.
//!
//! Where a backup lives on its provider (the bulk-load layout, so a restore is a bulk load):
//!
//! ```text
//! {root}/{cluster}/{table}/backup/{backup_id}/backup_info               written last, by the meta
//! {root}/{cluster}/{table}/backup/{backup_id}/{pidx}/bulk_load_metadata  written last, per partition
//! {root}/{cluster}/{table}/backup/{backup_id}/{pidx}/{node}-{n}.sst
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use wingkv_common::WingError;
use wingkv_proto::common::BackupStatus as WireBackupStatus;
use wingkv_proto::meta::RestoreStatus as WireRestoreStatus;

/// Name of the table-level file of a backup, written once every partition is uploaded.
pub const BACKUP_INFO: &str = "backup_info";

/// The shortest policy interval: a policy starts at most one backup of a table per interval.
pub const MIN_POLICY_INTERVAL_S: u64 = 1;
/// The longest policy interval (a leap year).
pub const MAX_POLICY_INTERVAL_S: u64 = 366 * 86_400;

/// Status of a backup or of one partition of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupStatus {
    /// Exporting and uploading.
    Running,
    /// Every file and `backup_info` are on the provider.
    Succeed,
    /// Given up (the table was dropped); its files are removed.
    Failed,
    /// Canceled by an operator; its files are removed.
    Canceled,
}

impl BackupStatus {
    /// Whether a backup in this status is over.
    pub fn is_terminal(self) -> bool {
        self != BackupStatus::Running
    }
}

impl From<BackupStatus> for WireBackupStatus {
    fn from(s: BackupStatus) -> Self {
        match s {
            BackupStatus::Running => WireBackupStatus::BkRunning,
            BackupStatus::Succeed => WireBackupStatus::BkSucceed,
            BackupStatus::Failed => WireBackupStatus::BkFailed,
            BackupStatus::Canceled => WireBackupStatus::BkCanceled,
        }
    }
}

/// One partition of a backup, as its primary reported it when done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionBackup {
    /// Uploaded with its `bulk_load_metadata`.
    pub done: bool,
    /// The applied log index the export is a snapshot of.
    pub log_index: u64,
    /// Bytes of its files.
    pub size: u64,
    /// Number of its files.
    pub file_count: u32,
    /// The replica that exported it.
    pub node_id: u64,
}

/// One backup of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Unique, never reused: the Unix ms of its start (or one more than the previous id).
    pub backup_id: u64,
    /// The table backed up.
    pub app_id: u32,
    /// Its name at the start (the directory on the provider).
    pub app_name: String,
    /// Its replica count (a restore's default).
    pub replica_count: u32,
    /// Its envs at the start (a restore gives them to the new table).
    pub envs: BTreeMap<String, String>,
    /// Provider name.
    pub provider: String,
    /// Root on the provider.
    pub root: String,
    /// Cluster name in the provider layout.
    pub cluster: String,
    /// The policy that started it, if one did.
    pub policy: Option<String>,
    /// Status of the whole backup.
    pub status: BackupStatus,
    /// Why it failed or was canceled.
    pub reason: String,
    /// Unix ms of the start.
    pub start_time_ms: u64,
    /// Unix ms of the end (0 while it runs).
    pub end_time_ms: u64,
    /// Per partition (as many as the table has).
    pub partitions: Vec<PartitionBackup>,
    /// Its files were removed from the provider (after a cancel or failure, or retirement).
    pub cleaned: bool,
    /// Beyond its policy's history count: its files are removed, then the record.
    pub retired: bool,
}

impl BackupRecord {
    /// Object path of the backup's directory.
    pub fn dir(&self) -> Result<object_store::path::Path, WingError> {
        backup_dir(&self.root, &self.cluster, &self.app_name, self.backup_id)
    }

    /// Object path of partition `pidx`'s directory.
    pub fn partition_dir(&self, pidx: u32) -> Result<String, WingError> {
        Ok(self.dir()?.child(pidx.to_string()).to_string())
    }

    /// The table's partition count.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Bytes of the partitions done.
    pub fn size(&self) -> u64 {
        self.partitions.iter().map(|p| p.size).sum()
    }

    /// Whether its files on the provider must be removed (and may be, once no replica
    /// exports any more).
    pub fn needs_cleanup(&self) -> bool {
        !self.cleaned && (matches!(self.status, BackupStatus::Failed | BackupStatus::Canceled) || self.retired)
    }
}

/// The object path of backup `backup_id` of table `table`.
pub fn backup_dir(
    root: &str,
    cluster: &str,
    table: &str,
    backup_id: u64,
) -> Result<object_store::path::Path, WingError> {
    let dir = wingkv_common::bulk_load::table_dir(root, cluster, table)?;
    Ok(dir.child("backup").child(backup_id.to_string()))
}

/// `backup_info`: what a restore needs to know about a backup, from the provider alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The backup's id.
    pub backup_id: u64,
    /// The table's id when backed up.
    pub app_id: u32,
    /// The table's name when backed up.
    pub app_name: String,
    /// Partitions (a restored table has as many).
    pub partition_count: u32,
    /// Replicas per partition.
    pub replica_count: u32,
    /// Table envs.
    pub envs: BTreeMap<String, String>,
    /// Unix ms of the start and end.
    pub start_time_ms: u64,
    /// Unix ms of the end.
    pub end_time_ms: u64,
    /// Per partition: log index, bytes, files.
    pub partitions: Vec<PartitionBackup>,
}

impl BackupInfo {
    /// Parses and checks `backup_info`.
    pub fn parse(bytes: &[u8]) -> Result<Self, WingError> {
        let info: Self = serde_json::from_slice(bytes)
            .map_err(|e| WingError::InvalidArgument(format!("{BACKUP_INFO} is not valid: {e}")))?;
        wingkv_common::naming::validate_partition_count(info.partition_count)
            .map_err(|e| WingError::InvalidArgument(format!("{BACKUP_INFO}: {e}")))?;
        if info.partitions.len() != info.partition_count as usize {
            return Err(WingError::InvalidArgument(format!(
                "{BACKUP_INFO} describes {} partitions of {}",
                info.partitions.len(),
                info.partition_count
            )));
        }
        Ok(info)
    }
}

/// Status of a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreStatus {
    /// The new table's replicas download and ingest the backup.
    Running,
    /// The table serves.
    Succeed,
    /// The load failed or was canceled, or the table was dropped; the table never serves.
    Failed,
}

impl From<RestoreStatus> for WireRestoreStatus {
    fn from(s: RestoreStatus) -> Self {
        match s {
            RestoreStatus::Running => WireRestoreStatus::RsRunning,
            RestoreStatus::Succeed => WireRestoreStatus::RsSucceed,
            RestoreStatus::Failed => WireRestoreStatus::RsFailed,
        }
    }
}

/// The restore that created a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// The new table.
    pub app_id: u32,
    /// The backup restored.
    pub backup_id: u64,
    /// The backed-up table's name (its directory on the provider).
    pub old_app_name: String,
    /// Provider name.
    pub provider: String,
    /// Root on the provider.
    pub root: String,
    /// Cluster name in the provider layout.
    pub cluster: String,
    /// The bulk-load job that moves the files in.
    pub job_id: u64,
    /// Status.
    pub status: RestoreStatus,
    /// Why it failed.
    pub reason: String,
    /// Unix ms of the start.
    pub start_time_ms: u64,
    /// Unix ms of the end (0 while it runs).
    pub end_time_ms: u64,
}

impl RestoreRecord {
    /// Object path of the backup directory of partition `pidx`: the restore job's source.
    pub fn partition_dir(&self, pidx: u32) -> Result<String, WingError> {
        let dir = backup_dir(&self.root, &self.cluster, &self.old_app_name, self.backup_id)?;
        Ok(dir.child(pidx.to_string()).to_string())
    }

    /// `provider://path` of the backup.
    pub fn source(&self) -> String {
        match backup_dir(&self.root, &self.cluster, &self.old_app_name, self.backup_id) {
            Ok(d) => format!("{}://{d}", self.provider),
            Err(_) => String::new(),
        }
    }
}

/// A backup policy: tables backed up at a time of day and every interval after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPolicy {
    /// Unique name.
    pub name: String,
    /// Provider name.
    pub provider: String,
    /// Root on the provider.
    pub root: String,
    /// Tables by id (ids are never reused; a dropped table is skipped).
    pub app_ids: BTreeSet<u32>,
    /// Seconds between backups.
    pub interval_s: u64,
    /// Minute of the day (UTC) backups are aligned to.
    pub start_minute: u32,
    /// Backups of each table kept; older ones are removed.
    pub history_count: u32,
    /// Whether it starts backups.
    pub enabled: bool,
    /// Unix ms of its creation.
    pub create_time_ms: u64,
    /// Unix ms of its last start (0: none).
    pub last_start_ms: u64,
}

impl BackupPolicy {
    /// The first start time after its last start (or at or after its creation): the grid of
    /// `start_minute` plus whole intervals.
    pub fn next_start_ms(&self) -> u64 {
        const DAY_MS: u64 = 86_400_000;
        let interval = self.interval_s.clamp(MIN_POLICY_INTERVAL_S, MAX_POLICY_INTERVAL_S) * 1000;
        let after = if self.last_start_ms == 0 { self.create_time_ms } else { self.last_start_ms.saturating_add(1) };
        // The grid point at start_minute on the day of `after` (or the day before, if later).
        let mut anchor = after - after % DAY_MS + u64::from(self.start_minute.min(24 * 60 - 1)) * 60_000;
        if anchor > after {
            anchor = anchor.saturating_sub(DAY_MS);
        }
        let steps = after.saturating_sub(anchor).div_ceil(interval);
        anchor.saturating_add(steps.saturating_mul(interval))
    }
}

/// Backups, restores and policies: a section of the meta snapshot of its own (JSON, after the
/// catalog's struct; see `MetaData::to_bytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupCatalog {
    /// The last backup id handed out.
    pub last_backup_id: u64,
    /// Backups by id.
    pub backups: BTreeMap<u64, BackupRecord>,
    /// Restores by the new table's id.
    pub restores: BTreeMap<u32, RestoreRecord>,
    /// Policies by name.
    pub policies: BTreeMap<String, BackupPolicy>,
}

impl BackupCatalog {
    /// A new backup id: the start time, or one more than the last id.
    pub fn next_backup_id(&mut self, now_ms: u64) -> u64 {
        self.last_backup_id = now_ms.max(self.last_backup_id + 1);
        self.last_backup_id
    }

    /// The running backup of `app_id`, if any (one at a time per table).
    pub fn running_backup(&self, app_id: u32) -> Option<&BackupRecord> {
        self.backups.values().find(|b| b.app_id == app_id && b.status == BackupStatus::Running)
    }

    /// Whether table `app_id` is being restored, or its restore failed: it must not serve.
    pub fn blocks_serving(&self, app_id: u32) -> bool {
        self.restores.get(&app_id).is_some_and(|r| r.status != RestoreStatus::Succeed)
    }

    /// Whether a running restore reads backup `backup_id` (its files must stay).
    pub fn pinned(&self, backup_id: u64) -> bool {
        self.restores.values().any(|r| r.backup_id == backup_id && r.status == RestoreStatus::Running)
    }

    /// The restore whose load is bulk-load job `job_id` of table `app_id`.
    pub fn restore_of_job(&self, app_id: u32, job_id: u64) -> Option<&RestoreRecord> {
        self.restores.get(&app_id).filter(|r| r.job_id == job_id)
    }

    /// Backups of policy `policy` and table `app_id` beyond the policy's history count: the
    /// successful ones older than its newest `history_count` successes, and the failed or
    /// canceled ones older than its newest `history_count` of those (kept a while to be seen).
    /// Failures never push a good backup out; a running backup, or one a running restore reads,
    /// is never retired.
    pub fn beyond_history(&self, policy: &BackupPolicy, app_id: u32) -> Vec<u64> {
        let ours = || {
            self.backups
                .values()
                .rev()
                .filter(|b| b.policy.as_deref() == Some(&policy.name) && b.app_id == app_id && !b.retired)
        };
        let keep = policy.history_count.max(1) as usize;
        let succeeded = ours().filter(|b| b.status == BackupStatus::Succeed).skip(keep);
        let failed = ours().filter(|b| matches!(b.status, BackupStatus::Failed | BackupStatus::Canceled)).skip(keep);
        // A backup a restore is reading waits until the restore ends.
        succeeded.chain(failed).map(|b| b.backup_id).filter(|id| !self.pinned(*id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(start_minute: u32, interval_s: u64, create: u64) -> BackupPolicy {
        BackupPolicy {
            name: "p".into(),
            provider: "local".into(),
            root: "/r".into(),
            app_ids: BTreeSet::from([1]),
            interval_s,
            start_minute,
            history_count: 2,
            enabled: true,
            create_time_ms: create,
            last_start_ms: 0,
        }
    }

    #[test]
    fn policy_starts_are_on_the_grid_of_the_start_time_and_interval() {
        const H: u64 = 3_600_000;
        let day = 20_000 * 24 * H;
        // Created at 10:30, start 02:00, every 4 h: 02, 06, 10, 14 -> next is 14:00.
        let mut p = policy(120, 4 * 3600, day + 10 * H + H / 2);
        assert_eq!(p.next_start_ms(), day + 14 * H);
        p.last_start_ms = day + 14 * H + 5;
        assert_eq!(p.next_start_ms(), day + 18 * H);
        // Created at 01:00, start 02:00, daily: today's 02:00.
        let p = policy(120, 24 * 3600, day + H);
        assert_eq!(p.next_start_ms(), day + 2 * H);
        // Created exactly at a grid point: that point.
        let p = policy(0, 3600, day + 3 * H);
        assert_eq!(p.next_start_ms(), day + 3 * H);
    }

    #[test]
    fn ids_are_unique_and_history_keeps_the_newest() {
        let mut c = BackupCatalog::default();
        assert_eq!(c.next_backup_id(100), 100);
        assert_eq!(c.next_backup_id(100), 101);
        assert_eq!(c.next_backup_id(50), 102);
        let p = policy(0, 60, 0);
        for (id, status) in [(1, BackupStatus::Succeed), (2, BackupStatus::Failed), (3, BackupStatus::Succeed)] {
            c.backups.insert(
                id,
                BackupRecord {
                    backup_id: id,
                    app_id: 1,
                    app_name: "t".into(),
                    replica_count: 1,
                    envs: BTreeMap::new(),
                    provider: "local".into(),
                    root: "/r".into(),
                    cluster: "c".into(),
                    policy: Some("p".into()),
                    status,
                    reason: String::new(),
                    start_time_ms: id,
                    end_time_ms: id,
                    partitions: vec![],
                    cleaned: false,
                    retired: false,
                },
            );
        }
        // History 2: both successes kept, the one failure kept (to be seen).
        assert!(c.beyond_history(&p, 1).is_empty());
        assert!(c.beyond_history(&p, 2).is_empty());
        // Failures in a row never push the good backups out; older failures go.
        for id in [4, 5, 6] {
            let mut f = c.backups[&2].clone();
            f.backup_id = id;
            c.backups.insert(id, f);
        }
        assert_eq!(c.beyond_history(&p, 1), vec![4, 2]);
        let mut s = c.backups[&3].clone();
        s.backup_id = 7;
        c.backups.insert(7, s);
        assert_eq!(c.beyond_history(&p, 1), vec![1, 4, 2]);
    }
}
