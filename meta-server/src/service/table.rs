//! The table RPCs: create, drop, recall, list and query tables, their envs and replica counts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::Status;
use wingkv_common::naming::{
    validate_partition_count, validate_replica_count, validate_table_name, DEFAULT_PARTITION_COUNT,
    DEFAULT_REPLICA_COUNT,
};
use wingkv_common::time::unix_millis;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::meta::{
    CreateTableRequest, DelTableEnvsRequest, DropTableRequest, DropTableResponse, GetReplicaCountRequest,
    GetTableEnvsRequest, ListTablesRequest, ListTablesResponse, NodeAddress, PartitionConfiguration, QueryTableRequest,
    RecallTableRequest, ReplicaCountResponse, SetReplicaCountRequest, SetTableEnvsRequest, TableConfiguration,
    TableEnvs, TableStatus, TableSummary,
};

use super::app_of;
use crate::catalog::{AppState, Catalog, MetaCommand};
use crate::liveness::NodeState;
use crate::node::MetaNode;
use crate::placement;
use crate::reconcile::{bootstrap_app_replicas, wait_primaries};

/// `app` as clients route by it: each partition's members and the primary reported now.
fn table_configuration(node: &MetaNode, catalog: &Catalog, app: &AppState) -> TableConfiguration {
    let addr = |n: u64| NodeAddress {
        node_id: n,
        address: catalog.nodes.get(&n).map(|r| r.address.clone()).unwrap_or_default(),
    };
    let partitions = app
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let primary = node.liveness.primary(PartitionId::new(app.app_id, i as u32));
            PartitionConfiguration {
                partition_index: i as u32,
                members: p.members.iter().map(|n| addr(*n)).collect(),
                term: primary.as_ref().map(|p| p.term).unwrap_or(0),
                primary: primary.map(|p| addr(p.node_id)),
                ballot: p.ballot,
            }
        })
        .collect();
    TableConfiguration {
        app_id: app.app_id,
        name: app.name.clone(),
        partition_count: app.partition_count,
        replica_count: app.replica_count,
        envs: app.envs.clone(),
        partitions,
    }
}

/// The alive nodes to place a new table's replicas on. A new leader has not heard from every
/// node yet (each is `Unknown` for a grace period): while some are still unknown, wait for
/// their heartbeats (so placement sees the whole cluster), until `deadline`.
async fn alive_for_placement(node: &MetaNode, catalog: &Catalog, deadline: Instant) -> Vec<u64> {
    loop {
        let states: Vec<(u64, NodeState)> = catalog.nodes.keys().map(|n| (*n, node.liveness.state(*n))).collect();
        // A draining node takes nothing new.
        let alive: Vec<u64> = states
            .iter()
            .filter(|(n, s)| *s == NodeState::Alive && !catalog.settings.draining.contains(n))
            .map(|(n, _)| *n)
            .collect();
        let unknown = states.iter().any(|(_, s)| *s == NodeState::Unknown);
        if !unknown || Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Refuses empty keys, and values of the envs replicas act on (throttling, denial) that do not
/// parse: a bad value is refused here, never half-applied by the replicas.
pub(super) fn validate_envs<'a>(envs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), WingError> {
    let mut known = BTreeMap::new();
    for (k, v) in envs {
        if k.trim().is_empty() {
            return Err(WingError::InvalidArgument("an env key is empty".into()));
        }
        known.insert(k.clone(), v.clone());
    }
    wingkv_common::table_acl::allowed_users(&known).map_err(WingError::InvalidArgument)?;
    wingkv_common::throttling::validate_envs(&known).map_err(|e| WingError::InvalidArgument(e.to_string()))
}

/// Creates a table, places its replicas, and waits (up to `create_table_timeout_ms`) until
/// every partition has a primary.
pub(super) async fn create_table(node: &MetaNode, r: CreateTableRequest) -> Result<TableConfiguration, Status> {
    validate_table_name(&r.name)?;
    let partition_count = r.partition_count.unwrap_or(DEFAULT_PARTITION_COUNT);
    let replica_count = r.replica_count.unwrap_or(DEFAULT_REPLICA_COUNT);
    validate_partition_count(partition_count)?;
    validate_replica_count(replica_count)?;
    validate_envs(&r.envs)?;
    let (name, envs) = (r.name.clone(), r.envs.into_iter().collect());
    let app = create_placed(node, &r.name, partition_count, replica_count, |placement, now_ms| {
        MetaCommand::CreateTable { name, partition_count, replica_count, envs, placement, now_ms }
    })
    .await?;
    let catalog = node.catalog();
    Ok(table_configuration(node, &catalog, &app))
}

/// Places the replicas of a new table `name` on the alive nodes, proposes
/// `command(placement, now_ms)` (which creates it), creates its replicas and waits (up to
/// `create_table_timeout_ms`) until every partition has a primary.
pub(super) async fn create_placed(
    node: &MetaNode,
    name: &str,
    partition_count: u32,
    replica_count: u32,
    command: impl FnOnce(Vec<Vec<u64>>, u64) -> MetaCommand,
) -> Result<AppState, Status> {
    let timeout = Duration::from_millis(node.config.create_table_timeout_ms);
    let deadline = Instant::now() + timeout;
    let meta_term = node.read_barrier_term().await?;
    let catalog = node.catalog();
    let now = unix_millis();
    catalog.check_name_free(name, now)?;
    let alive = alive_for_placement(node, &catalog, deadline).await;
    let placement = placement::place(&alive, &catalog.load_by_node(), partition_count, replica_count)?;
    let app = app_of(node.propose(command(placement, now)).await?)?;
    tracing::info!(app_id = app.app_id, name = %app.name, partition_count, replica_count, "table created");
    bootstrap_app_replicas(node, &app, meta_term).await;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    wait_primaries(node, &app, left).await?;
    Ok(app)
}

/// Drops a live table; it stays recallable for the request's reserve time (0: the configured
/// `drop_reserve_seconds`).
pub(super) async fn drop_table(node: &MetaNode, r: DropTableRequest) -> Result<DropTableResponse, Status> {
    let reserve_s = if r.reserve_seconds == 0 { node.config.drop_reserve_seconds } else { r.reserve_seconds };
    let cmd =
        MetaCommand::DropTable { name: r.name, reserve_ms: reserve_s.saturating_mul(1000), now_ms: unix_millis() };
    let app = app_of(node.propose(cmd).await?)?;
    tracing::info!(app_id = app.app_id, name = %app.name, "table dropped");
    let expire_time_ms = app.dropped.map(|d| d.expire_time_ms).unwrap_or(0);
    Ok(DropTableResponse { app_id: app.app_id, expire_time_ms })
}

/// Brings a dropped table back, under a new name when one is given.
pub(super) async fn recall_table(node: &MetaNode, r: RecallTableRequest) -> Result<TableConfiguration, Status> {
    let new_name = if r.new_name.is_empty() { None } else { Some(r.new_name) };
    if let Some(n) = &new_name {
        validate_table_name(n)?;
    }
    let cmd = MetaCommand::RecallTable { app_id: r.app_id, new_name, now_ms: unix_millis() };
    let app = app_of(node.propose(cmd).await?)?;
    tracing::info!(app_id = app.app_id, name = %app.name, "table recalled");
    let catalog = node.catalog();
    Ok(table_configuration(node, &catalog, &app))
}

/// The live tables (and the dropped ones still recallable, when asked) with their health.
pub(super) async fn list_tables(node: &MetaNode, r: ListTablesRequest) -> Result<ListTablesResponse, Status> {
    node.read_barrier().await?;
    let include_dropped = r.include_dropped;
    let now = unix_millis();
    let tables = node.with_catalog(|c| {
        c.apps
            .values()
            .filter(|a| if include_dropped { a.holds_name(now) } else { !a.is_dropped() })
            .map(|a| TableSummary {
                app_id: a.app_id,
                name: a.name.clone(),
                partition_count: a.partition_count,
                replica_count: a.replica_count,
                status: if a.is_dropped() { TableStatus::Dropped } else { TableStatus::Available }.into(),
                create_time_ms: a.create_time_ms,
                drop_time_ms: a.dropped.map(|d| d.drop_time_ms).unwrap_or(0),
                expire_time_ms: a.dropped.map(|d| d.expire_time_ms).unwrap_or(0),
                healthy_partitions: node.liveness.healthy_partitions(a),
                envs: a.envs.clone(),
            })
            .collect()
    });
    Ok(ListTablesResponse { tables })
}

/// The configuration of the live table `name`.
pub(super) async fn query_table(node: &MetaNode, r: QueryTableRequest) -> Result<TableConfiguration, Status> {
    node.read_barrier().await?;
    let catalog = node.catalog();
    let app = catalog.live_app(&r.name)?;
    Ok(table_configuration(node, &catalog, app))
}

/// Sets (adds or replaces) envs of a table; every value is validated first.
pub(super) async fn set_table_envs(node: &MetaNode, r: SetTableEnvsRequest) -> Result<TableEnvs, Status> {
    if r.envs.is_empty() {
        return Err(WingError::InvalidArgument("set_app_envs needs at least one key".into()).into());
    }
    validate_envs(&r.envs)?;
    let envs: BTreeMap<String, String> = r.envs.into_iter().collect();
    let app = app_of(node.propose(MetaCommand::SetEnvs { name: r.name, envs }).await?)?;
    Ok(TableEnvs { envs: app.envs })
}

/// The envs of the live table `name`.
pub(super) async fn get_table_envs(node: &MetaNode, r: GetTableEnvsRequest) -> Result<TableEnvs, Status> {
    node.read_barrier().await?;
    let envs = node.with_catalog(|c| c.live_app(&r.name).map(|a| a.envs.clone()))?;
    Ok(TableEnvs { envs })
}

/// Removes envs of a table.
pub(super) async fn del_table_envs(node: &MetaNode, r: DelTableEnvsRequest) -> Result<TableEnvs, Status> {
    if r.keys.is_empty() {
        return Err(WingError::InvalidArgument("del_app_envs needs at least one key".into()).into());
    }
    let app = app_of(node.propose(MetaCommand::DelEnvs { name: r.name, keys: r.keys }).await?)?;
    Ok(TableEnvs { envs: app.envs })
}

/// How many replicas `app`'s partitions keep, and how many they have now.
fn replica_count_of(app: &AppState) -> ReplicaCountResponse {
    let sizes = app.partitions.iter().map(|p| p.members.len() as u32);
    ReplicaCountResponse {
        table: app.name.clone(),
        replica_count: app.replica_count,
        partition_count: app.partition_count,
        partitions_at_count: sizes.clone().filter(|n| *n == app.replica_count).count() as u32,
        min_members: sizes.clone().min().unwrap_or(0),
        max_members: sizes.max().unwrap_or(0),
    }
}

/// Changes a live table's replica count; the reconcile loop then adds or removes members.
/// A larger count needs that many alive servers that are not draining, so that every partition
/// can reach it.
pub(super) async fn set_replica_count(
    node: &MetaNode,
    r: SetReplicaCountRequest,
) -> Result<ReplicaCountResponse, Status> {
    validate_replica_count(r.replica_count)?;
    node.read_barrier().await?;
    let catalog = node.catalog();
    let app = catalog.live_app(&r.table)?;
    if r.replica_count > app.replica_count {
        let hosts = catalog
            .nodes
            .keys()
            .filter(|n| node.liveness.state(**n) == NodeState::Alive && !catalog.settings.draining.contains(n))
            .count();
        if (hosts as u32) < r.replica_count {
            return Err(WingError::InvalidArgument(format!(
                "table '{}' cannot keep {} replicas: {hosts} replica servers are alive and not draining",
                r.table, r.replica_count
            ))
            .into());
        }
    }
    let cmd = MetaCommand::SetReplicaCount { name: r.table.clone(), replica_count: r.replica_count };
    let app = app_of(node.propose(cmd).await?)?;
    tracing::info!(app_id = app.app_id, name = %app.name, replica_count = app.replica_count, "replica count set");
    Ok(replica_count_of(&app))
}

/// A live table's replica count and its partitions' member counts, read linearizably.
pub(super) async fn get_replica_count(
    node: &MetaNode,
    r: GetReplicaCountRequest,
) -> Result<ReplicaCountResponse, Status> {
    node.read_barrier().await?;
    Ok(node.with_catalog(|c| c.live_app(&r.table).map(replica_count_of))?)
}
