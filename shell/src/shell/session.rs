//! The shell's session: the connection, the table in use, and the dispatch of one parsed
//! command to its group's module, whose answer is rendered by [`super::format`].

use anyhow::{anyhow, Result};
use wingkv_client::{Admin, BulkLoadSource, Client, Table, TableStatus};

use super::bulk_load::{self, BulkLoadView, Control};
use super::cluster;
use super::commands::Cmd;
use super::data;
use super::envs;
use super::format::Output;
use super::table;

/// The shell's session: the connection and the table in use.
pub struct Session {
    client: Client,
    admin: Admin,
    table: Option<Table>,
    /// Table names seen last, for completion.
    pub table_names: Vec<String>,
}

impl Session {
    /// A session on `client`.
    pub fn new(client: Client) -> Self {
        Self { admin: client.admin(), client, table: None, table_names: Vec::new() }
    }

    fn table(&self) -> Result<&Table> {
        self.table.as_ref().ok_or_else(|| anyhow!("no table selected: run `use TABLE` first"))
    }

    fn table_name(&self) -> Result<String> {
        Ok(self.table()?.name().to_string())
    }

    /// Refreshes the table names used for completion.
    pub async fn refresh_table_names(&mut self) {
        if let Ok(t) = self.admin.list_tables(false).await {
            self.table_names = t.into_iter().map(|t| t.name).collect();
        }
    }

    /// A table's bulk-load status (what `query_bulk_load_status` shows), for the live display.
    pub async fn bulk_load_status(&self, table: &str, partition: Option<u32>, detailed: bool) -> Result<BulkLoadView> {
        bulk_load::status(&self.admin, table, partition, detailed).await
    }

    /// Runs `cmd` (any but `help` and `exit`, which the shell handles) and renders its answer;
    /// a data command without a table in use fails with a hint to run `use`.
    pub async fn run(&mut self, cmd: Cmd) -> Result<Output> {
        let admin = &self.admin;
        match cmd {
            Cmd::ClusterInfo => Output::of(&cluster::cluster_info(admin).await?),
            Cmd::Nodes { detailed } => Output::of(&cluster::nodes(admin, detailed).await?),
            Cmd::ServerInfo => Output::of(&cluster::server_info(admin).await?),
            Cmd::SetMetaLevel { level } => Output::of(&cluster::set_meta_level(admin, &level).await?),
            Cmd::GetMetaLevel => Output::of(&cluster::get_meta_level(admin).await?),
            Cmd::Decommission { node } => Output::of(&cluster::decommission(admin, &node, false).await?),
            Cmd::Recommission { node } => Output::of(&cluster::decommission(admin, &node, true).await?),
            Cmd::Propose { gpid, action, target, from } => {
                Output::of(&cluster::propose(admin, &gpid, &action, &target, from.as_deref()).await?)
            }
            Cmd::Ls { detailed } => {
                let view = table::ls(admin, detailed).await?;
                self.table_names =
                    view.tables.iter().filter(|t| t.state == TableStatus::Available).map(|t| t.name.clone()).collect();
                Output::of(&view)
            }
            Cmd::App { name, detailed } => Output::of(&table::app(admin, &name, detailed).await?),
            Cmd::Create { name, partition_count, replica_count, envs } => {
                let view = table::create(admin, &name, partition_count, replica_count, envs.as_deref()).await?;
                self.table_names.push(name);
                Output::of(&view)
            }
            Cmd::Drop { name, reserve_seconds } => {
                let view = table::drop(admin, &name, reserve_seconds).await?;
                if self.table.as_ref().is_some_and(|t| t.name() == name) {
                    self.table = None;
                }
                self.table_names.retain(|n| *n != name);
                Output::of(&view)
            }
            Cmd::Recall { app_id, new_name } => Output::of(&table::recall(admin, app_id, new_name.as_deref()).await?),
            Cmd::SetReplicaCount { name, replica_count } => {
                Output::of(&table::set_replica_count(admin, &name, replica_count).await?)
            }
            Cmd::GetReplicaCount { name } => Output::of(&table::get_replica_count(admin, &name).await?),
            Cmd::Use { name } => {
                self.table = Some(self.client.open_table(&name).await?);
                Output::of(&table::UseView { table: name })
            }
            Cmd::SetAppEnvs { key, value } => Output::of(&envs::set(admin, &self.table_name()?, key, value).await?),
            Cmd::GetAppEnvs => Output::of(&envs::get(admin, &self.table_name()?).await?),
            Cmd::DelAppEnvs { keys } => Output::of(&envs::del(admin, &self.table_name()?, keys).await?),
            Cmd::StartBulkLoad { app_name, cluster, provider, root, ingest_behind } => {
                let source = BulkLoadSource { provider, root, cluster };
                Output::of(&bulk_load::start(admin, &app_name, &source, ingest_behind).await?)
            }
            Cmd::QueryBulkLoadStatus { app_name, partition_index, detailed } => {
                Output::of(&self.bulk_load_status(&app_name, partition_index, detailed).await?)
            }
            Cmd::PauseBulkLoad { app_name } => Output::of(&bulk_load::control(admin, &app_name, Control::Pause).await?),
            Cmd::RestartBulkLoad { app_name } => {
                Output::of(&bulk_load::control(admin, &app_name, Control::Restart).await?)
            }
            Cmd::CancelBulkLoad { app_name, forced } => {
                Output::of(&bulk_load::control(admin, &app_name, Control::Cancel(forced)).await?)
            }
            Cmd::ClearBulkLoad { app_name } => Output::of(&bulk_load::control(admin, &app_name, Control::Clear).await?),
            data => data::run(self.table()?, data).await,
        }
    }
}
