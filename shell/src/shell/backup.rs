//! The cold-backup commands, with Pegasus's names: `start_backup_app`, `query_backup_status`,
//! `cancel_backup`, `restore_app`, `query_restore_status`, and the backup policies'
//! `add_backup_policy`, `ls_backup_policy`, `query_backup_policy`, `modify_backup_policy`,
//! `disable_backup_policy`, `enable_backup_policy` — plus the progress bars of the live display
//! of backups and restores.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use wingkv_client::{Admin, BulkLoadSource};
use wingkv_proto::common::BackupStatus;
use wingkv_proto::meta::{
    BackupPolicy, BackupStatusResponse, ModifyBackupPolicyRequest, RestoreStatus, RestoreStatusResponse,
};

use super::bulk_load::BulkLoadView;
use super::commands::{AppRef, Cmd};
use super::format::{fields, ms_to_time, rows, Col, Output, View};

/// The app ids of `refs`, in order and without repeats; names are looked up among the live
/// tables (one `ls`, only when some name is given).
async fn app_ids(admin: &Admin, refs: &[AppRef]) -> Result<Vec<u32>> {
    let names_given = refs.iter().any(|r| matches!(r, AppRef::Name(_)));
    let tables = if names_given { admin.list_tables(false).await? } else { Vec::new() };
    let mut ids = Vec::new();
    for r in refs {
        let id = match r {
            AppRef::Id(id) => *id,
            AppRef::Name(name) => tables.iter().find(|t| t.name == *name).map(|t| t.app_id).ok_or_else(|| {
                anyhow!("no live table is named '{name}' (give app ids or table names; `ls` shows the ids)")
            })?,
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `[####------]  40%`: a bar of `width` cells.
fn bar(percent: u64, width: usize) -> String {
    let percent = percent.min(100);
    let filled = (percent as usize * width) / 100;
    format!("[{}{}] {percent:>3}%", "#".repeat(filled), "-".repeat(width - filled))
}

/// One partition of a backup (a detailed query).
#[derive(Serialize)]
struct PartitionBackupView {
    partition_index: u32,
    status: String,
    #[serde(skip)]
    state: BackupStatus,
    /// The log index the partition's export is a snapshot of (0 until known).
    log_index: u64,
    uploaded_bytes: u64,
    total_bytes: u64,
    file_count: u32,
    /// The replica server that exports it.
    node_id: u64,
    /// The meta's failed calls in a row, its backoff, and the last failure.
    attempts: u32,
    backoff_ms: u64,
    last_error: String,
}

/// Which command a [`BackupView`] answers, for its text.
#[derive(Clone, Copy)]
enum Shown {
    Started,
    Canceled,
    /// One of a list (`query_backup_status`, `query_backup_policy`).
    Listed,
}

/// One backup, as every backup command answers it.
#[derive(Serialize)]
pub struct BackupView {
    backup_id: u64,
    app_name: String,
    app_id: u32,
    /// `BK_RUNNING`, `BK_SUCCEED`, `BK_FAILED` or `BK_CANCELED`.
    status: String,
    #[serde(skip)]
    state: BackupStatus,
    reason: String,
    provider: String,
    root: String,
    cluster: String,
    /// `provider://path` of the backup's directory.
    location: String,
    /// The policy that started it; empty for an operator's.
    policy: String,
    start_time_ms: u64,
    /// 0 while it runs.
    end_time_ms: u64,
    uploaded_bytes: u64,
    total_bytes: u64,
    progress_percent: u32,
    /// Its files were removed from the provider (a canceled or failed backup).
    cleaned: bool,
    /// Per partition; filled only for a detailed query.
    partitions: Vec<PartitionBackupView>,
    #[serde(skip)]
    shown: Shown,
}

impl BackupView {
    fn new(b: BackupStatusResponse, shown: Shown) -> Self {
        let state = b.status();
        let partitions = b
            .partitions
            .into_iter()
            .map(|p| PartitionBackupView {
                partition_index: p.partition_index,
                status: p.status().as_str_name().to_string(),
                state: p.status(),
                log_index: p.log_index,
                uploaded_bytes: p.uploaded_bytes,
                total_bytes: p.total_bytes,
                file_count: p.file_count,
                node_id: p.node_id,
                attempts: p.attempts,
                backoff_ms: p.backoff_ms,
                last_error: p.last_error,
            })
            .collect();
        Self {
            backup_id: b.backup_id,
            app_name: b.app_name,
            app_id: b.app_id,
            status: state.as_str_name().to_string(),
            state,
            reason: b.reason,
            provider: b.provider,
            root: b.root,
            cluster: b.cluster,
            location: b.location,
            policy: b.policy,
            start_time_ms: b.start_time_ms,
            end_time_ms: b.end_time_ms,
            uploaded_bytes: b.uploaded_bytes,
            total_bytes: b.total_bytes,
            progress_percent: b.progress_percent,
            cleaned: b.cleaned,
            partitions,
            shown,
        }
    }

    fn running(&self) -> bool {
        self.state == BackupStatus::BkRunning
    }

    /// One line: a bar of `width` cells, the id and status, the bytes uploaded, and (for a
    /// detailed query) how many partitions are uploaded.
    fn progress_bar(&self, width: usize) -> String {
        let mut line = format!(
            "{}  backup {}  {}  {}/{} bytes uploaded",
            bar(u64::from(self.progress_percent), width),
            self.backup_id,
            self.status,
            self.uploaded_bytes,
            self.total_bytes
        );
        if !self.partitions.is_empty() {
            let done = self.partitions.iter().filter(|p| p.state == BackupStatus::BkSucceed).count();
            line.push_str(&format!("  {done}/{} partitions uploaded", self.partitions.len()));
        }
        line
    }

    /// The columns of a list of backups; `with_table` adds the table (a policy's backups are
    /// of several tables).
    fn columns(with_table: bool) -> Vec<Col<BackupView>> {
        let mut cols = vec![Col::plain("backup_id")];
        if with_table {
            cols.push(Col::plain("app_name"));
        }
        cols.extend([
            Col::plain("status"),
            Col::ago("start_time_ms"),
            Col::ago("end_time_ms"),
            Col::plain("total_bytes"),
            Col::percent("progress_percent"),
            Col::dash("location"),
            Col::plain("policy").omit_empty(),
            Col::plain("reason").omit_empty(),
        ]);
        cols
    }

    /// The backup's partitions as a table, under a line naming the backup.
    fn partitions_text(&self) -> String {
        let head = format!("backup {} ({}):", self.backup_id, self.status);
        if self.partitions.is_empty() {
            return format!("{head} no partition reported");
        }
        let cols = [
            Col::plain("partition_index"),
            Col::plain("status"),
            Col::plain("log_index"),
            Col::plain("uploaded_bytes"),
            Col::plain("total_bytes"),
            Col::plain("file_count"),
            Col::plain("node_id"),
            Col::plain("attempts"),
            Col::plain("last_error").omit_empty(),
        ];
        format!("{head}\n{}", rows(&self.partitions, &cols))
    }
}

impl View for BackupView {
    fn text(&self) -> String {
        match self.shown {
            Shown::Started => format!(
                "start backup succeed: backup_id {} of table \"{}\" to {}",
                self.backup_id, self.app_name, self.location
            ),
            Shown::Canceled => format!(
                "cancel backup succeed: backup {} of table \"{}\" is {}",
                self.backup_id, self.app_name, self.status
            ),
            Shown::Listed => rows(std::slice::from_ref(self), &Self::columns(true)),
        }
    }
}

/// `query_backup_status`: a table's backups, newest first (or the one asked for).
#[derive(Serialize)]
pub struct BackupsView {
    app_name: String,
    backups: Vec<BackupView>,
    /// The text shows each backup's partitions too.
    #[serde(skip)]
    detailed: bool,
}

impl BackupsView {
    /// Whether some backup shown still runs (the live display keeps refreshing it).
    pub fn running(&self) -> bool {
        self.backups.iter().any(BackupView::running)
    }

    /// A progress line (a bar of `width` cells) for each running backup.
    pub fn progress_bar(&self, width: usize) -> String {
        self.backups.iter().filter(|b| b.running()).map(|b| b.progress_bar(width)).collect::<Vec<_>>().join("\n")
    }
}

impl View for BackupsView {
    fn text(&self) -> String {
        if self.backups.is_empty() {
            return format!("table \"{}\" has no backup", self.app_name);
        }
        let mut out = rows(&self.backups, &BackupView::columns(false));
        if self.detailed {
            for b in &self.backups {
                out.push_str("\n\n");
                out.push_str(&b.partitions_text());
            }
        }
        out
    }
}

/// Runs `start_backup_app`.
pub async fn start(admin: &Admin, table: &str, provider: &str, root: &str) -> Result<BackupView> {
    Ok(BackupView::new(admin.start_backup(table, provider, root).await?, Shown::Started))
}

/// Runs `query_backup_status`.
pub async fn status(admin: &Admin, table: &str, backup_id: Option<u64>, detailed: bool) -> Result<BackupsView> {
    let backups = admin.backup_status(table, backup_id, detailed).await?;
    if let (Some(id), true) = (backup_id, backups.is_empty()) {
        bail!("table \"{table}\" has no backup {id} (`query_backup_status -a {table}` lists its backups)");
    }
    Ok(BackupsView {
        app_name: table.to_string(),
        backups: backups.into_iter().map(|b| BackupView::new(b, Shown::Listed)).collect(),
        detailed,
    })
}

/// Runs `cancel_backup`.
pub async fn cancel(admin: &Admin, table: &str, backup_id: u64) -> Result<BackupView> {
    Ok(BackupView::new(admin.cancel_backup(table, backup_id).await?, Shown::Canceled))
}

/// Which command a [`RestoreView`] answers, for its text.
#[derive(Clone, Copy)]
enum RestoreShown {
    Started,
    /// A status query; `true`: with each replica's download progress.
    Status(bool),
}

/// A restore, as `restore_app` and `query_restore_status` answer it.
#[derive(Serialize)]
pub struct RestoreView {
    /// The new table.
    app_name: String,
    app_id: u32,
    backup_id: u64,
    /// The backed-up table.
    old_app_name: String,
    /// `RS_RUNNING`, `RS_SUCCEED` or `RS_FAILED`.
    status: String,
    #[serde(skip)]
    state: RestoreStatus,
    reason: String,
    start_time_ms: u64,
    /// 0 while it runs.
    end_time_ms: u64,
    /// `provider://path` of the backup restored from.
    source: String,
    /// The bulk load that moves the backup's files in, as `query_bulk_load_status` shows it.
    load: Option<BulkLoadView>,
    #[serde(skip)]
    shown: RestoreShown,
}

impl RestoreView {
    fn new(r: RestoreStatusResponse, shown: RestoreShown) -> Self {
        let state = r.status();
        let detailed = matches!(shown, RestoreShown::Status(true));
        Self {
            app_name: r.app_name,
            app_id: r.app_id,
            backup_id: r.backup_id,
            old_app_name: r.old_app_name,
            status: state.as_str_name().to_string(),
            state,
            reason: r.reason,
            start_time_ms: r.start_time_ms,
            end_time_ms: r.end_time_ms,
            source: r.source,
            load: r.load.map(|l| BulkLoadView::status_view(l, detailed)),
            shown,
        }
    }

    /// Whether the restore still runs (the live display keeps refreshing it).
    pub fn running(&self) -> bool {
        self.state == RestoreStatus::RsRunning
    }

    /// One line: the load's progress bar of `width` cells, and the restore's status.
    pub fn progress_bar(&self, width: usize) -> String {
        match &self.load {
            Some(load) => format!("{}  (restore {})", load.progress_bar(width), self.status),
            None => format!("{}  {}", bar(0, width), self.status),
        }
    }

    fn status_text(&self, detailed: bool) -> String {
        let mut out = format!("table: {}  app_id: {}  status: {}", self.app_name, self.app_id, self.status);
        out.push_str(&format!("\nrestored from: backup {} of table \"{}\"", self.backup_id, self.old_app_name));
        if !self.source.is_empty() {
            out.push_str(&format!(" at {}", self.source));
        }
        out.push_str(&format!(
            "\nstart_time: {}  end_time: {}",
            ms_to_time(self.start_time_ms),
            ms_to_time(self.end_time_ms)
        ));
        if !self.reason.is_empty() {
            out.push_str(&format!("\nreason: {}", self.reason));
        }
        if let Some(load) = &self.load {
            out.push_str(&format!("\nload: {}", load.status));
            let partitions = load.partitions_text(detailed);
            if !partitions.is_empty() {
                out.push_str("\n\n");
                out.push_str(&partitions);
            }
        }
        out
    }
}

impl View for RestoreView {
    fn text(&self) -> String {
        match self.shown {
            RestoreShown::Started => format!(
                "restore app succeed: table \"{}\" (app_id {}) created from backup {} of table \"{}\"; \
                 restore {} (`query_restore_status -a {}` follows it)",
                self.app_name, self.app_id, self.backup_id, self.old_app_name, self.status, self.app_name
            ),
            RestoreShown::Status(detailed) => self.status_text(detailed),
        }
    }
}

/// Runs `restore_app`: the table `new_name` from backup `backup_id` of `old_name` at `source`.
pub async fn restore(
    admin: &Admin,
    source: &BulkLoadSource,
    old_name: &str,
    backup_id: u64,
    new_name: &str,
    replica_count: Option<u32>,
) -> Result<RestoreView> {
    let r = admin.restore_app(source, old_name, backup_id, new_name, replica_count).await?;
    Ok(RestoreView::new(r, RestoreShown::Started))
}

/// Runs `query_restore_status`.
pub async fn restore_status(admin: &Admin, table: &str, detailed: bool) -> Result<RestoreView> {
    let r = admin.restore_status(table, detailed).await?;
    Ok(RestoreView::new(r, RestoreShown::Status(detailed)))
}

/// One backup policy.
#[derive(Serialize)]
pub struct PolicyView {
    name: String,
    provider: String,
    root: String,
    app_ids: Vec<u32>,
    interval_seconds: u64,
    /// `HH:MM` (UTC): backups start at this time of day and every interval after.
    start_time: String,
    /// Backups kept of each table.
    backup_history_count: u32,
    enabled: bool,
    /// Unix ms of the last start (0: none yet) and of the next one.
    last_backup_start_ms: u64,
    next_backup_start_ms: u64,
    /// Its backups, newest first: for `query_backup_policy`, at most `-b` of them.
    backups: Vec<BackupView>,
    /// How many backups of it the meta keeps (`backups` may show fewer).
    #[serde(skip)]
    kept_backups: usize,
    /// The change that answered it (`add`, `modify`, ...), for the text.
    #[serde(skip)]
    changed: Option<&'static str>,
}

impl PolicyView {
    /// `p`, with at most `max_backups` of its backups.
    fn new(p: BackupPolicy, max_backups: usize, changed: Option<&'static str>) -> Self {
        let kept_backups = p.backups.len();
        Self {
            name: p.name,
            provider: p.provider,
            root: p.root,
            app_ids: p.app_ids,
            interval_seconds: p.interval_seconds,
            start_time: p.start_time,
            backup_history_count: p.backup_history_count,
            enabled: p.enabled,
            last_backup_start_ms: p.last_backup_start_ms,
            next_backup_start_ms: p.next_backup_start_ms,
            backups: p.backups.into_iter().take(max_backups).map(|b| BackupView::new(b, Shown::Listed)).collect(),
            kept_backups,
            changed,
        }
    }

    /// The policy's fields, as rows (`fields`) or columns (`ls_backup_policy`).
    fn columns() -> Vec<Col<PolicyView>> {
        vec![
            Col::plain("name"),
            Col::plain("enabled"),
            Col::plain("provider"),
            Col::plain("root"),
            Col::plain("app_ids"),
            Col::plain("interval_seconds"),
            Col::plain("start_time"),
            Col::plain("backup_history_count"),
            Col::ago("last_backup_start_ms"),
            Col::ago("next_backup_start_ms"),
        ]
    }
}

impl View for PolicyView {
    fn text(&self) -> String {
        let policy = fields(self, &Self::columns());
        match self.changed {
            Some(what) => format!("{what} backup policy succeed: \"{}\"\n\n{policy}", self.name),
            None => policy,
        }
    }
}

/// `ls_backup_policy` / `query_backup_policy`: policies, with their backups for the latter.
#[derive(Serialize)]
pub struct PoliciesView {
    policies: Vec<PolicyView>,
    /// The text shows each policy's fields and backups (`query_backup_policy`), not a table.
    #[serde(skip)]
    with_backups: bool,
}

impl View for PoliciesView {
    fn text(&self) -> String {
        if self.policies.is_empty() {
            return "no backup policy".into();
        }
        if !self.with_backups {
            return rows(&self.policies, &PolicyView::columns());
        }
        let shown: Vec<String> = self
            .policies
            .iter()
            .map(|p| {
                let mut out = p.text();
                if p.backups.is_empty() {
                    out.push_str("\n\nno backup yet");
                } else {
                    out.push_str(&format!(
                        "\n\nbackups (newest first, {} of {}):\n{}",
                        p.backups.len(),
                        p.kept_backups,
                        rows(&p.backups, &BackupView::columns(true))
                    ));
                }
                out
            })
            .collect();
        shown.join("\n\n")
    }
}

/// Runs a backup-policy command: `add_backup_policy`, `ls_backup_policy`,
/// `query_backup_policy`, `modify_backup_policy`, `disable_backup_policy` or
/// `enable_backup_policy`.
pub async fn policy(admin: &Admin, cmd: Cmd) -> Result<Output> {
    match cmd {
        Cmd::AddBackupPolicy {
            policy_name,
            provider,
            root,
            app_ids: apps,
            interval_seconds,
            start_time,
            history_count,
        } => {
            let policy = BackupPolicy {
                name: policy_name,
                provider,
                root,
                app_ids: app_ids(admin, &apps).await?,
                interval_seconds,
                start_time,
                backup_history_count: history_count,
                enabled: true,
                ..Default::default()
            };
            let p = admin.add_backup_policy(policy).await?;
            Output::of(&PolicyView::new(p, 0, Some("add")))
        }
        Cmd::LsBackupPolicy => {
            let policies = admin.list_backup_policies(&[], false).await?;
            let policies = policies.into_iter().map(|p| PolicyView::new(p, 0, None)).collect();
            Output::of(&PoliciesView { policies, with_backups: false })
        }
        Cmd::QueryBackupPolicy { policy_names, backup_info_count } => {
            let policies = admin.list_backup_policies(&policy_names, true).await?;
            let missing: Vec<&str> =
                policy_names.iter().filter(|n| !policies.iter().any(|p| p.name == **n)).map(String::as_str).collect();
            if !missing.is_empty() {
                bail!("no backup policy named {} (`ls_backup_policy` lists them)", missing.join(","));
            }
            let policies = policies.into_iter().map(|p| PolicyView::new(p, backup_info_count, None)).collect();
            Output::of(&PoliciesView { policies, with_backups: true })
        }
        Cmd::ModifyBackupPolicy {
            policy_name,
            add_app_ids,
            remove_app_ids,
            interval_seconds,
            start_time,
            history_count,
        } => {
            if add_app_ids.is_empty()
                && remove_app_ids.is_empty()
                && interval_seconds.is_none()
                && start_time.is_none()
                && history_count.is_none()
            {
                bail!("modify_backup_policy needs something to change: -a, -r, -i, -s or -c");
            }
            let change = ModifyBackupPolicyRequest {
                name: policy_name,
                add_app_ids: app_ids(admin, &add_app_ids).await?,
                remove_app_ids: app_ids(admin, &remove_app_ids).await?,
                interval_seconds,
                start_time,
                backup_history_count: history_count,
                enabled: None,
            };
            let p = admin.modify_backup_policy(change).await?;
            Output::of(&PolicyView::new(p, 0, Some("modify")))
        }
        Cmd::DisableBackupPolicy { policy_name } => set_enabled(admin, policy_name, false).await,
        Cmd::EnableBackupPolicy { policy_name } => set_enabled(admin, policy_name, true).await,
        other => bail!("'{other:?}' is not a backup-policy command"),
    }
}

/// `disable_backup_policy` / `enable_backup_policy`: a modification of `enabled` only.
async fn set_enabled(admin: &Admin, name: String, enabled: bool) -> Result<Output> {
    let change = ModifyBackupPolicyRequest { name, enabled: Some(enabled), ..Default::default() };
    let p = admin.modify_backup_policy(change).await?;
    Output::of(&PolicyView::new(p, 0, Some(if enabled { "enable" } else { "disable" })))
}

#[cfg(test)]
mod tests {
    use wingkv_proto::meta::{BulkLoadStatusResponse, PartitionBackupStatus};

    use super::*;

    fn backup(id: u64, status: BackupStatus, percent: u32, partitions: &[BackupStatus]) -> BackupStatusResponse {
        BackupStatusResponse {
            backup_id: id,
            app_name: "t".into(),
            app_id: 2,
            status: status.into(),
            location: format!("local:///bk/onebox/t/backup/{id}"),
            uploaded_bytes: 50,
            total_bytes: 100,
            progress_percent: percent,
            partitions: partitions
                .iter()
                .enumerate()
                .map(|(i, s)| PartitionBackupStatus {
                    partition_index: i as u32,
                    status: (*s).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_backup_has_a_progress_line() {
        use BackupStatus::{BkRunning, BkSucceed};
        let view = BackupsView {
            app_name: "t".into(),
            backups: vec![
                BackupView::new(backup(9, BkRunning, 50, &[BkSucceed, BkRunning]), Shown::Listed),
                BackupView::new(backup(8, BkSucceed, 100, &[]), Shown::Listed),
            ],
            detailed: true,
        };
        assert!(view.running());
        assert_eq!(
            view.progress_bar(10),
            "[#####-----]  50%  backup 9  BK_RUNNING  50/100 bytes uploaded  1/2 partitions uploaded"
        );
        let text = view.text();
        assert!(text.starts_with("backup_id  status      start_time"), "{text}");
        assert!(text.contains("\n\nbackup 9 (BK_RUNNING):\npartition_index  status"), "{text}");
        assert!(text.ends_with("backup 8 (BK_SUCCEED): no partition reported"), "{text}");
        let empty = BackupsView { app_name: "t".into(), backups: vec![], detailed: false };
        assert!(!empty.running() && empty.text() == "table \"t\" has no backup");
    }

    #[test]
    fn json_has_the_status_names_and_no_text_only_fields() -> Result<()> {
        let view = BackupView::new(backup(7, BackupStatus::BkFailed, 10, &[]), Shown::Started);
        let json = serde_json::to_value(&view)?;
        assert_eq!(json["status"], "BK_FAILED");
        assert_eq!(json["backup_id"], 7);
        assert!(json.get("shown").is_none() && json.get("state").is_none());
        assert_eq!(view.text(), "start backup succeed: backup_id 7 of table \"t\" to local:///bk/onebox/t/backup/7");
        Ok(())
    }

    #[test]
    fn a_restore_shows_its_load() -> Result<()> {
        let r = RestoreStatusResponse {
            app_name: "t2".into(),
            app_id: 5,
            backup_id: 7,
            old_app_name: "t".into(),
            status: RestoreStatus::RsRunning.into(),
            load: Some(BulkLoadStatusResponse { app_name: "t2".into(), job_id: 3, ..Default::default() }),
            ..Default::default()
        };
        let view = RestoreView::new(r, RestoreShown::Status(false));
        assert!(view.running());
        assert!(view.progress_bar(4).ends_with("(restore RS_RUNNING)"), "{}", view.progress_bar(4));
        let text = view.text();
        let head = "table: t2  app_id: 5  status: RS_RUNNING\nrestored from: backup 7 of table \"t\"\nstart_time: -";
        assert!(text.starts_with(head), "{text}");
        let json = serde_json::to_value(&view)?;
        assert_eq!(json["status"], "RS_RUNNING");
        assert_eq!(json["load"]["job_id"], 3);
        Ok(())
    }

    #[test]
    fn query_backup_policy_shows_at_most_the_count_asked() {
        let p = BackupPolicy {
            name: "daily".into(),
            app_ids: vec![1, 2],
            start_time: "01:30".into(),
            backups: (0..5).map(|i| backup(i, BackupStatus::BkSucceed, 100, &[])).collect(),
            ..Default::default()
        };
        let view = PoliciesView { policies: vec![PolicyView::new(p, 3, None)], with_backups: true };
        let text = view.text();
        assert!(text.contains("app_ids               1,2"), "{text}");
        assert!(text.contains("backups (newest first, 3 of 5):\nbackup_id  app_name"), "{text}");
        assert_eq!(view.policies[0].backups.len(), 3);
    }
}
