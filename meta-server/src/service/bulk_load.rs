//! The bulk-load RPCs: start a job, query its status, and control it (pause, restart, cancel,
//! clear). The leader's driver ([`crate::bulk_driver`]) does the work and renders the status.

use object_store::ObjectStore;
use tonic::Status;
use wingkv_common::bulk_load::{table_dir, BulkLoadInfo, BULK_LOAD_INFO};
use wingkv_common::provider::open_provider;
use wingkv_common::time::unix_millis;
use wingkv_common::WingError;
use wingkv_proto::meta::{
    BulkLoadControl, BulkLoadStatusResponse, ControlBulkLoadRequest, QueryBulkLoadRequest, StartBulkLoadRequest,
};

use crate::bulk_driver::status_response;
use crate::bulk_load::{BulkLoadControlAction, BulkLoadJob};
use crate::catalog::{AppState, Catalog, MetaCommand, MetaValue};
use crate::node::MetaNode;

/// The live table `name`, or `TableDropped` when it was dropped (its job is canceled).
fn table_for_bulk_load(catalog: &Catalog, name: &str) -> Result<AppState, WingError> {
    match catalog.live_app(name) {
        Ok(a) => Ok(a.clone()),
        Err(e) => {
            if catalog.apps.values().any(|a| a.name == name && a.is_dropped()) {
                Err(WingError::TableDropped(format!("table '{name}' was dropped; its bulk load was canceled")))
            } else {
                Err(e)
            }
        }
    }
}

/// The job a bulk-load command answered.
fn job_of(value: MetaValue) -> Result<BulkLoadJob, WingError> {
    match value {
        MetaValue::BulkLoad(j) => Ok(*j),
        other => Err(WingError::Internal(format!("unexpected meta answer {other:?}"))),
    }
}

/// Starts a job once the table's `bulk_load_info` on the provider matches the table.
pub(super) async fn start_bulk_load(
    node: &MetaNode,
    r: StartBulkLoadRequest,
) -> Result<BulkLoadStatusResponse, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    let app = table_for_bulk_load(&catalog, &r.app_name)?;
    if r.ingest_behind && app.envs.get("rocksdb.allow_ingest_behind").map(String::as_str) != Some("true") {
        return Err(WingError::InvalidArgument(format!(
            "--ingest_behind needs the table env rocksdb.allow_ingest_behind=true on '{}'",
            app.name
        ))
        .into());
    }
    // bulk_load_info is read and checked before any state changes.
    let store = open_provider(&r.provider, &node.config.bulk_load_provider)?;
    let dir = table_dir(&r.root, &r.cluster, &app.name)?;
    let info_path = dir.child(BULK_LOAD_INFO);
    let bytes = match store.get(&info_path).await {
        Ok(g) => g.bytes().await.map_err(|e| WingError::Unavailable(format!("{}://{info_path}: {e}", r.provider)))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(WingError::InvalidArgument(format!("{}://{info_path} does not exist", r.provider)).into())
        }
        Err(e) => return Err(WingError::Unavailable(format!("{}://{info_path}: {e}", r.provider)).into()),
    };
    BulkLoadInfo::parse(&bytes)?.check_matches(&app.name, app.partition_count)?;
    let cmd = MetaCommand::StartBulkLoad {
        app_name: app.name.clone(),
        cluster: r.cluster,
        provider: r.provider,
        root: r.root,
        ingest_behind: r.ingest_behind,
        now_ms: unix_millis(),
    };
    let job = job_of(node.propose(cmd).await?)?;
    node.bulk_wake.notify_one();
    tracing::info!(table = %app.name, job = job.job_id, "bulk load started");
    Ok(status_response(node, &app, Some(&job), None, false))
}

/// The status of a table's job, of one partition when asked, with each replica's progress
/// when `detailed`.
pub(super) async fn query_bulk_load_status(
    node: &MetaNode,
    r: QueryBulkLoadRequest,
) -> Result<BulkLoadStatusResponse, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    let app = table_for_bulk_load(&catalog, &r.app_name)?;
    if let Some(p) = r.partition_index {
        if p >= app.partition_count {
            return Err(WingError::InvalidArgument(format!(
                "table '{}' has {} partitions; there is no partition {p}",
                app.name, app.partition_count
            ))
            .into());
        }
    }
    let job = catalog.bulk_loads.get(&app.app_id);
    Ok(status_response(node, &app, job, r.partition_index, r.detailed))
}

/// Applies an operator's action to a table's job (the preconditions are Pegasus's).
pub(super) async fn control_bulk_load(
    node: &MetaNode,
    r: ControlBulkLoadRequest,
) -> Result<BulkLoadStatusResponse, Status> {
    let action = match BulkLoadControl::try_from(r.action) {
        Ok(BulkLoadControl::BlcPause) => BulkLoadControlAction::Pause,
        Ok(BulkLoadControl::BlcRestart) => BulkLoadControlAction::Restart,
        Ok(BulkLoadControl::BlcCancel) => BulkLoadControlAction::Cancel { force: false },
        Ok(BulkLoadControl::BlcForceCancel) => BulkLoadControlAction::Cancel { force: true },
        Ok(BulkLoadControl::BlcClear) => BulkLoadControlAction::Clear,
        Err(_) => return Err(WingError::InvalidArgument(format!("unknown bulk-load action {}", r.action)).into()),
    };
    let catalog = node.catalog();
    let app = table_for_bulk_load(&catalog, &r.app_name)?;
    let job = job_of(node.propose(MetaCommand::ControlBulkLoad { app_name: app.name.clone(), action }).await?)?;
    let job = (action != BulkLoadControlAction::Clear).then_some(job);
    Ok(status_response(node, &app, job.as_ref(), None, false))
}
