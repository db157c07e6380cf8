//! The backup RPCs: start, query and cancel backups, restore a table from one, and manage
//! backup policies. The leader's driver ([`crate::backup_driver`]) does the work.

use object_store::ObjectStore;
use tonic::Status;
use wingkv_common::naming::{validate_replica_count, validate_table_name};
use wingkv_common::provider::open_provider;
use wingkv_common::time::{format_time_of_day, parse_time_of_day, unix_millis};
use wingkv_common::WingError;
use wingkv_proto::meta::{
    AddBackupPolicyRequest, BackupPolicy as WirePolicy, BackupStatusResponse, CancelBackupRequest,
    ListBackupPoliciesRequest, ListBackupPoliciesResponse, ModifyBackupPolicyRequest, QueryBackupStatusRequest,
    QueryBackupStatusResponse, QueryRestoreStatusRequest, RestoreAppRequest, RestoreStatusResponse, StartBackupRequest,
};

use super::table::create_placed;
use crate::backup::{
    backup_dir, BackupInfo, BackupPolicy, BackupRecord, BackupStatus, BACKUP_INFO, MAX_POLICY_INTERVAL_S,
    MIN_POLICY_INTERVAL_S,
};
use crate::backup_driver::status_response;
use crate::catalog::{AppState, Catalog, MetaCommand, MetaValue};
use crate::node::MetaNode;

fn backup_of(value: MetaValue) -> Result<BackupRecord, WingError> {
    match value {
        MetaValue::Backup(b) => Ok(*b),
        other => Err(WingError::Internal(format!("unexpected meta answer {other:?}"))),
    }
}

fn policy_of(value: MetaValue) -> Result<BackupPolicy, WingError> {
    match value {
        MetaValue::BackupPolicy(p) => Ok(*p),
        other => Err(WingError::Internal(format!("unexpected meta answer {other:?}"))),
    }
}

/// Opens `provider` and lists `dir` on it: a bad provider, credentials or bucket is refused
/// before anything is recorded.
async fn probe(node: &MetaNode, provider: &str, dir: &object_store::path::Path) -> Result<(), WingError> {
    let store = open_provider(provider, &node.config.bulk_load_provider)?;
    store
        .list_with_delimiter(Some(dir))
        .await
        .map(|_| ())
        .map_err(|e| WingError::Unavailable(format!("provider '{provider}' cannot list {dir}: {e}")))
}

/// Starts a backup of a live table.
pub(super) async fn start_backup(node: &MetaNode, r: StartBackupRequest) -> Result<BackupStatusResponse, Status> {
    node.read_barrier().await?;
    let app = node.with_catalog(|c| c.live_app(&r.app_name).cloned())?;
    let cluster = node.config.cluster_name.clone();
    let table_dir = wingkv_common::bulk_load::table_dir(&r.root, &cluster, &app.name)?;
    probe(node, &r.provider, &table_dir).await?;
    let cmd = MetaCommand::StartBackup {
        app_name: app.name.clone(),
        provider: r.provider,
        root: r.root,
        cluster,
        policy: None,
        now_ms: unix_millis(),
    };
    let b = backup_of(node.propose(cmd).await?)?;
    tracing::info!(table = %app.name, backup = b.backup_id, "backup started");
    // Its exports start now, not at the driver's next tick.
    node.backup_wake.notify_one();
    Ok(status_response(node, &b, false))
}

/// The backups of table `app_name` (by the name they were taken under), newest first.
fn backups_of<'a>(catalog: &'a Catalog, app_name: &str) -> Vec<&'a BackupRecord> {
    catalog.backups.backups.values().rev().filter(|b| b.app_name == app_name).collect()
}

/// A table's backups (or one of them), newest first; none is an empty list.
pub(super) async fn query_backup_status(
    node: &MetaNode,
    r: QueryBackupStatusRequest,
) -> Result<QueryBackupStatusResponse, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    let all = backups_of(&catalog, &r.app_name);
    let chosen: Vec<&BackupRecord> = match r.backup_id {
        Some(id) => all.into_iter().filter(|b| b.backup_id == id).collect(),
        None => all,
    };
    if let (Some(id), true) = (r.backup_id, chosen.is_empty()) {
        return Err(WingError::NotFound(format!("no backup {id} of table '{}'", r.app_name)).into());
    }
    let backups = chosen.into_iter().map(|b| status_response(node, b, r.detailed)).collect();
    Ok(QueryBackupStatusResponse { backups })
}

/// Cancels a running backup; the driver removes its files.
pub(super) async fn cancel_backup(node: &MetaNode, r: CancelBackupRequest) -> Result<BackupStatusResponse, Status> {
    node.read_barrier().await?;
    let found = node.with_catalog(|c| c.backups.backups.get(&r.backup_id).map(|b| b.app_name == r.app_name));
    if found != Some(true) {
        return Err(WingError::NotFound(format!("no backup {} of table '{}'", r.backup_id, r.app_name)).into());
    }
    let cmd = MetaCommand::FinishBackup {
        backup_id: r.backup_id,
        status: BackupStatus::Canceled,
        reason: "canceled by the operator".into(),
        now_ms: unix_millis(),
    };
    let b = backup_of(node.propose(cmd).await?)?;
    tracing::info!(table = %b.app_name, backup = b.backup_id, "backup canceled");
    Ok(status_response(node, &b, false))
}

/// Reads and checks `backup_info` of backup `backup_id` of `old_name` on the provider.
async fn read_backup_info(node: &MetaNode, r: &RestoreAppRequest) -> Result<BackupInfo, WingError> {
    let store = open_provider(&r.provider, &node.config.bulk_load_provider)?;
    let path = backup_dir(&r.root, &r.cluster, &r.old_app_name, r.backup_id)?.child(BACKUP_INFO);
    let bytes = match store.get(&path).await {
        Ok(g) => g.bytes().await.map_err(|e| WingError::Unavailable(format!("{}://{path}: {e}", r.provider)))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(WingError::InvalidArgument(format!(
                "{}://{path} does not exist: no complete backup {} of table '{}' in cluster '{}' under root '{}'",
                r.provider, r.backup_id, r.old_app_name, r.cluster, r.root
            )))
        }
        Err(e) => return Err(WingError::Unavailable(format!("{}://{path}: {e}", r.provider))),
    };
    let info =
        BackupInfo::parse(&bytes).map_err(|e| WingError::InvalidArgument(format!("{}://{path}: {e}", r.provider)))?;
    if info.backup_id != r.backup_id || info.app_name != r.old_app_name {
        return Err(WingError::InvalidArgument(format!(
            "{}://{path} describes backup {} of table '{}', not backup {} of '{}'",
            r.provider, info.backup_id, info.app_name, r.backup_id, r.old_app_name
        )));
    }
    Ok(info)
}

/// Creates a table from a backup; its load runs on (see `QueryRestoreStatus`).
pub(super) async fn restore_app(node: &MetaNode, r: RestoreAppRequest) -> Result<RestoreStatusResponse, Status> {
    validate_table_name(&r.new_app_name)?;
    if let Some(n) = r.replica_count {
        validate_replica_count(n)?;
    }
    node.read_barrier().await?;
    node.with_catalog(|c| c.check_name_free(&r.new_app_name, unix_millis()))?;
    let info = read_backup_info(node, &r).await?;
    super::table::validate_envs(&info.envs)
        .map_err(|e| WingError::InvalidArgument(format!("the envs in the backup's backup_info: {e}")))?;
    let replica_count = r.replica_count.unwrap_or(info.replica_count);
    validate_replica_count(replica_count)?;
    let (name, envs) = (r.new_app_name.clone(), info.envs.clone());
    let (old_app_name, provider, root, cluster) =
        (r.old_app_name.clone(), r.provider.clone(), r.root.clone(), r.cluster.clone());
    let backup_id = r.backup_id;
    let app = create_placed(node, &r.new_app_name, info.partition_count, replica_count, |placement, now_ms| {
        MetaCommand::CreateRestoredTable {
            name,
            partition_count: info.partition_count,
            replica_count,
            envs,
            placement,
            backup_id,
            old_app_name,
            provider,
            root,
            cluster,
            now_ms,
        }
    })
    .await?;
    node.bulk_wake.notify_one();
    tracing::info!(table = %app.name, backup = r.backup_id, from = %r.old_app_name, "restore started");
    Ok(restore_response(node, &node.catalog(), &app, false)?)
}

/// The table called `name` that a restore created: the live one, else a dropped one.
fn restored_app<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a AppState, WingError> {
    let mut named: Vec<&AppState> =
        catalog.apps.values().filter(|a| a.name == name && catalog.backups.restores.contains_key(&a.app_id)).collect();
    named.sort_by_key(|a| (a.is_dropped(), std::cmp::Reverse(a.app_id)));
    named.first().copied().ok_or_else(|| WingError::NotFound(format!("table '{name}' was not created by a restore")))
}

fn restore_response(
    node: &MetaNode,
    catalog: &Catalog,
    app: &AppState,
    detailed: bool,
) -> Result<RestoreStatusResponse, WingError> {
    let r = catalog
        .backups
        .restores
        .get(&app.app_id)
        .ok_or_else(|| WingError::NotFound(format!("table '{}' was not created by a restore", app.name)))?;
    let job = catalog.bulk_loads.get(&app.app_id).filter(|j| j.job_id == r.job_id);
    let mut load = crate::bulk_driver::status_response(node, app, job, None, detailed);
    load.source = r.source();
    Ok(RestoreStatusResponse {
        app_name: app.name.clone(),
        app_id: app.app_id,
        backup_id: r.backup_id,
        old_app_name: r.old_app_name.clone(),
        status: wingkv_proto::meta::RestoreStatus::from(r.status).into(),
        reason: r.reason.clone(),
        start_time_ms: r.start_time_ms,
        end_time_ms: r.end_time_ms,
        source: r.source(),
        load: Some(load),
    })
}

/// The restore of table `app_name`, with each partition's load progress.
pub(super) async fn query_restore_status(
    node: &MetaNode,
    r: QueryRestoreStatusRequest,
) -> Result<RestoreStatusResponse, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    let app = restored_app(&catalog, &r.app_name)?;
    Ok(restore_response(node, &catalog, app, r.detailed)?)
}

/// A policy as the RPCs answer it, with its backups (newest first) when asked.
fn policy_response(node: &MetaNode, catalog: &Catalog, p: &BackupPolicy, with_backups: bool) -> WirePolicy {
    let backups = if with_backups {
        catalog
            .backups
            .backups
            .values()
            .rev()
            .filter(|b| b.policy.as_deref() == Some(&p.name) && !b.retired)
            .map(|b| status_response(node, b, false))
            .collect()
    } else {
        Vec::new()
    };
    WirePolicy {
        name: p.name.clone(),
        provider: p.provider.clone(),
        root: p.root.clone(),
        app_ids: p.app_ids.iter().copied().collect(),
        interval_seconds: p.interval_s,
        start_time: format_time_of_day(p.start_minute),
        backup_history_count: p.history_count,
        enabled: p.enabled,
        last_backup_start_ms: p.last_start_ms,
        next_backup_start_ms: p.next_start_ms(),
        backups,
    }
}

fn check_interval(interval_s: u64) -> Result<(), WingError> {
    if !(MIN_POLICY_INTERVAL_S..=MAX_POLICY_INTERVAL_S).contains(&interval_s) {
        return Err(WingError::InvalidArgument(format!(
            "backup interval {interval_s} s is out of range ({MIN_POLICY_INTERVAL_S} to {MAX_POLICY_INTERVAL_S} s)"
        )));
    }
    Ok(())
}

fn check_history_count(count: u32) -> Result<(), WingError> {
    if count == 0 {
        return Err(WingError::InvalidArgument("backup_history_count must keep at least 1 backup".into()));
    }
    Ok(())
}

/// Refuses table ids that are not live tables.
fn check_live_apps(catalog: &Catalog, ids: &[u32]) -> Result<(), WingError> {
    for id in ids {
        if catalog.apps.get(id).is_none_or(|a| a.is_dropped()) {
            return Err(WingError::TableNotFound(format!("no live table with app_id {id}")));
        }
    }
    Ok(())
}

/// Adds a backup policy.
pub(super) async fn add_backup_policy(node: &MetaNode, r: AddBackupPolicyRequest) -> Result<WirePolicy, Status> {
    let p = r.policy.ok_or_else(|| WingError::InvalidArgument("add_backup_policy without a policy".into()))?;
    validate_table_name(&p.name).map_err(|e| WingError::InvalidArgument(format!("policy name: {e}")))?;
    check_interval(p.interval_seconds)?;
    check_history_count(p.backup_history_count)?;
    let start_minute =
        parse_time_of_day(&p.start_time).map_err(|e| WingError::InvalidArgument(format!("start time: {e}")))?;
    if p.app_ids.is_empty() {
        return Err(WingError::InvalidArgument("a backup policy needs at least one table".into()).into());
    }
    node.read_barrier().await?;
    node.with_catalog(|c| check_live_apps(c, &p.app_ids))?;
    let dir = wingkv_common::bulk_load::table_dir(&p.root, &node.config.cluster_name, "policy-check")?;
    probe(node, &p.provider, &dir).await?;
    let policy = BackupPolicy {
        name: p.name,
        provider: p.provider,
        root: p.root,
        app_ids: p.app_ids.into_iter().collect(),
        interval_s: p.interval_seconds,
        start_minute,
        history_count: p.backup_history_count,
        enabled: true,
        create_time_ms: unix_millis(),
        last_start_ms: 0,
    };
    let policy = policy_of(node.propose(MetaCommand::AddBackupPolicy { policy }).await?)?;
    tracing::info!(policy = %policy.name, "backup policy added");
    Ok(policy_response(node, &node.catalog(), &policy, false))
}

/// The policies named (every policy when none is).
pub(super) async fn list_backup_policies(
    node: &MetaNode,
    r: ListBackupPoliciesRequest,
) -> Result<ListBackupPoliciesResponse, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    for name in &r.names {
        if !catalog.backups.policies.contains_key(name) {
            return Err(WingError::NotFound(format!("no backup policy named '{name}'")).into());
        }
    }
    let policies = catalog
        .backups
        .policies
        .values()
        .filter(|p| r.names.is_empty() || r.names.contains(&p.name))
        .map(|p| policy_response(node, &catalog, p, r.with_backups))
        .collect();
    Ok(ListBackupPoliciesResponse { policies })
}

/// Changes a policy (tables, interval, start time, history count, enabled).
pub(super) async fn modify_backup_policy(node: &MetaNode, r: ModifyBackupPolicyRequest) -> Result<WirePolicy, Status> {
    if let Some(i) = r.interval_seconds {
        check_interval(i)?;
    }
    if let Some(c) = r.backup_history_count {
        check_history_count(c)?;
    }
    let start_minute = r.start_time.as_deref().map(parse_time_of_day).transpose()?;
    node.read_barrier().await?;
    node.with_catalog(|c| check_live_apps(c, &r.add_app_ids))?;
    let cmd = MetaCommand::ModifyBackupPolicy {
        name: r.name,
        add_app_ids: r.add_app_ids,
        remove_app_ids: r.remove_app_ids,
        interval_s: r.interval_seconds,
        start_minute,
        history_count: r.backup_history_count,
        enabled: r.enabled,
    };
    let policy = policy_of(node.propose(cmd).await?)?;
    tracing::info!(policy = %policy.name, enabled = policy.enabled, "backup policy modified");
    Ok(policy_response(node, &node.catalog(), &policy, false))
}
