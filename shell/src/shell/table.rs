//! The table commands: `ls`, `app`, `create`, `drop`, `recall`, `use`.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use serde::Serialize;
use wingkv_client::{
    Admin, CreateTableOptions, PartitionId, ReplicaCountResponse, TableConfiguration, TableStatus, TableSummary,
};

use super::format::{ms_to_time, rows, Col, View};

/// One table of `ls`.
#[derive(Serialize)]
pub struct TableView {
    app_id: u32,
    pub name: String,
    /// `AVAILABLE` or `DROPPED`.
    pub status: String,
    /// The same, typed.
    #[serde(skip)]
    pub state: TableStatus,
    partition_count: u32,
    replica_count: u32,
    /// Partitions with a primary and every member healthy.
    healthy_partitions: u32,
    create_time_ms: u64,
    /// When a dropped table is gone for good (0 for a live one).
    expire_time_ms: u64,
    envs: BTreeMap<String, String>,
}

impl From<TableSummary> for TableView {
    fn from(t: TableSummary) -> Self {
        let state = t.status();
        Self {
            app_id: t.app_id,
            name: t.name,
            status: state.as_str_name().to_string(),
            state,
            partition_count: t.partition_count,
            replica_count: t.replica_count,
            healthy_partitions: t.healthy_partitions,
            create_time_ms: t.create_time_ms,
            expire_time_ms: t.expire_time_ms,
            envs: t.envs,
        }
    }
}

/// `ls [-d]`: the tables, with `-d` also the dropped ones that can be recalled.
#[derive(Serialize)]
pub struct TablesView {
    pub tables: Vec<TableView>,
    #[serde(skip)]
    detailed: bool,
}

impl View for TablesView {
    fn text(&self) -> String {
        const BRIEF: [Col<TableView>; 5] = [
            Col::plain("app_id"),
            Col::plain("name"),
            Col::plain("status"),
            Col::plain("partition_count"),
            Col::plain("replica_count"),
        ];
        const DETAILED: [Col<TableView>; 3] =
            [Col::plain("healthy_partitions"), Col::ago("create_time_ms"), Col::ago("expire_time_ms")];
        let cols = if self.detailed { [&BRIEF[..], &DETAILED[..]].concat() } else { BRIEF.to_vec() };
        rows(&self.tables, &cols)
    }
}

/// Runs `ls`.
pub async fn ls(admin: &Admin, detailed: bool) -> Result<TablesView> {
    let tables = admin.list_tables(detailed).await?.into_iter().map(TableView::from).collect();
    Ok(TablesView { tables, detailed })
}

/// One partition of `app`.
#[derive(Serialize)]
struct PartitionView {
    /// `app_id.partition_index`.
    partition: String,
    partition_index: u32,
    /// Raft voters, in placement order.
    members: Vec<String>,
    primary: Option<String>,
    /// Raft term of the primary.
    term: u64,
    /// Bumped on every membership change.
    ballot: u64,
}

/// `app NAME [-d]`: one table and, with `-d`, its partitions' placement.
#[derive(Serialize)]
pub struct AppView {
    app_id: u32,
    name: String,
    partition_count: u32,
    replica_count: u32,
    envs: BTreeMap<String, String>,
    partitions: Vec<PartitionView>,
    #[serde(skip)]
    detailed: bool,
}

impl View for AppView {
    fn text(&self) -> String {
        let mut text = rows(
            &[self],
            &[Col::plain("app_id"), Col::plain("name"), Col::plain("partition_count"), Col::plain("replica_count")],
        );
        if self.detailed {
            text.push_str("\n\n");
            text.push_str(&rows(
                &self.partitions,
                &[Col::plain("partition"), Col::plain("primary"), Col::plain("members"), Col::plain("ballot")],
            ));
        }
        text
    }
}

impl AppView {
    fn new(cfg: TableConfiguration, detailed: bool) -> Self {
        let partitions = cfg
            .partitions
            .into_iter()
            .map(|p| PartitionView {
                partition: PartitionId::new(cfg.app_id, p.partition_index).to_string(),
                partition_index: p.partition_index,
                members: p.members.into_iter().map(|m| m.address).collect(),
                primary: p.primary.map(|x| x.address),
                term: p.term,
                ballot: p.ballot,
            })
            .collect();
        Self {
            app_id: cfg.app_id,
            name: cfg.name,
            partition_count: cfg.partition_count,
            replica_count: cfg.replica_count,
            envs: cfg.envs,
            partitions,
            detailed,
        }
    }
}

/// Runs `app`.
pub async fn app(admin: &Admin, name: &str, detailed: bool) -> Result<AppView> {
    Ok(AppView::new(admin.query_table(name).await?, detailed))
}

/// `create`: the new table.
#[derive(Serialize)]
pub struct CreatedView {
    app_id: u32,
    name: String,
    partition_count: u32,
}

impl View for CreatedView {
    fn text(&self) -> String {
        format!("create app \"{}\" succeed (app_id {}, {} partitions)", self.name, self.app_id, self.partition_count)
    }
}

/// Reads `k=v,k=v` (blanks around keys and values are dropped).
fn parse_envs(s: &str) -> Result<BTreeMap<String, String>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("env '{p}' is not key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Runs `create`; `envs` is `k=v,k=v`.
pub async fn create(
    admin: &Admin,
    name: &str,
    partition_count: u32,
    replica_count: u32,
    envs: Option<&str>,
) -> Result<CreatedView> {
    let envs = envs.map(parse_envs).transpose()?.unwrap_or_default();
    let options =
        CreateTableOptions { partition_count: Some(partition_count), replica_count: Some(replica_count), envs };
    let cfg = admin.create_table(name, options).await?;
    Ok(CreatedView { app_id: cfg.app_id, name: name.to_string(), partition_count: cfg.partition_count })
}

/// `drop`: the dropped table and until when it can be recalled.
#[derive(Serialize)]
pub struct DroppedView {
    app_id: u32,
    name: String,
    expire_time_ms: u64,
}

impl View for DroppedView {
    fn text(&self) -> String {
        format!(
            "drop app \"{}\" succeed (app_id {}, recallable until {})",
            self.name,
            self.app_id,
            ms_to_time(self.expire_time_ms)
        )
    }
}

/// Runs `drop`.
pub async fn drop(admin: &Admin, name: &str, reserve_seconds: Option<u64>) -> Result<DroppedView> {
    let r = admin.drop_table(name, reserve_seconds).await?;
    Ok(DroppedView { app_id: r.app_id, name: name.to_string(), expire_time_ms: r.expire_time_ms })
}

/// `recall`: the table brought back, under its (new) name.
#[derive(Serialize)]
pub struct RecalledView {
    app_id: u32,
    name: String,
}

impl View for RecalledView {
    fn text(&self) -> String {
        format!("recall app {} succeed as \"{}\"", self.app_id, self.name)
    }
}

/// Runs `recall`.
pub async fn recall(admin: &Admin, app_id: u32, new_name: Option<&str>) -> Result<RecalledView> {
    let cfg = admin.recall_table(app_id, new_name).await?;
    Ok(RecalledView { app_id: cfg.app_id, name: cfg.name })
}

/// `set_replica_count` / `get_replica_count`: the count and how far the partitions are.
#[derive(Serialize)]
pub struct ReplicaCountView {
    table: String,
    replica_count: u32,
    partition_count: u32,
    partitions_at_count: u32,
    min_members: u32,
    max_members: u32,
}

impl View for ReplicaCountView {
    fn text(&self) -> String {
        let mut text = format!(
            "table \"{}\": replica_count {}, {}/{} partitions at it",
            self.table, self.replica_count, self.partitions_at_count, self.partition_count
        );
        if self.partitions_at_count < self.partition_count {
            text.push_str(&format!(" (members now {}..={})", self.min_members, self.max_members));
        }
        text
    }
}

impl From<ReplicaCountResponse> for ReplicaCountView {
    fn from(r: ReplicaCountResponse) -> Self {
        Self {
            table: r.table,
            replica_count: r.replica_count,
            partition_count: r.partition_count,
            partitions_at_count: r.partitions_at_count,
            min_members: r.min_members,
            max_members: r.max_members,
        }
    }
}

/// Runs `set_replica_count TABLE N`.
pub async fn set_replica_count(admin: &Admin, name: &str, replica_count: u32) -> Result<ReplicaCountView> {
    Ok(admin.set_replica_count(name, replica_count).await?.into())
}

/// Runs `get_replica_count TABLE`.
pub async fn get_replica_count(admin: &Admin, name: &str) -> Result<ReplicaCountView> {
    Ok(admin.get_replica_count(name).await?.into())
}

/// `use`: the table the data commands now use.
#[derive(Serialize)]
pub struct UseView {
    pub table: String,
}

impl View for UseView {
    fn text(&self) -> String {
        format!("OK (using {})", self.table)
    }
}

#[cfg(test)]
mod tests {
    use wingkv_proto::meta::{NodeAddress, PartitionConfiguration};

    use super::*;

    #[test]
    fn envs_are_key_value_pairs() -> Result<()> {
        let envs = parse_envs(" a = 1 ,b=x=y,,")?;
        assert_eq!(envs.get("a").map(String::as_str), Some("1"));
        assert_eq!(envs.get("b").map(String::as_str), Some("x=y"));
        let err = parse_envs("a=1,nokv").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("env 'nokv' is not key=value"));
        Ok(())
    }

    #[test]
    fn app_detail_shows_each_partition_by_its_id() {
        let member = |n: u64| NodeAddress { node_id: n, address: format!("127.0.0.1:3480{n}") };
        let cfg = TableConfiguration {
            app_id: 3,
            name: "t".into(),
            partition_count: 2,
            replica_count: 2,
            partitions: vec![
                PartitionConfiguration {
                    partition_index: 0,
                    members: vec![member(1), member(2)],
                    primary: Some(member(2)),
                    term: 2,
                    ballot: 1,
                },
                PartitionConfiguration {
                    partition_index: 1,
                    members: vec![member(2)],
                    ballot: 4,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let view = AppView::new(cfg, true);
        assert_eq!(
            view.text(),
            "app_id  name  partition_count  replica_count\n\
             3       t     2                2\n\
             \n\
             partition  primary          members                          ballot\n\
             3.0        127.0.0.1:34802  127.0.0.1:34801,127.0.0.1:34802  1\n\
             3.1        -                127.0.0.1:34802                  4"
        );
    }
}
