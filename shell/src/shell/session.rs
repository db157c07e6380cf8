//! The shell's session: the connection, the table in use, and the dispatch of one parsed
//! command to its group's module, whose answer is rendered by [`super::format`].

use anyhow::{anyhow, Result};
use wingkv_client::{Admin, BulkLoadSource, Client, Table, TableStatus};

use super::backup;
use super::bulk_load::{self, BulkLoadView, Control};
use super::cluster;
use super::commands::Cmd;
use super::data;
use super::envs;
use super::format::{Output, View};
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

    /// One frame of the live display of `watched`: whether it still runs, its progress bar(s)
    /// and the text its query command prints.
    pub async fn frame(&self, watched: &Watched) -> Result<Frame> {
        Ok(match watched {
            Watched::BulkLoad { table, partition, detailed } => {
                let view = self.bulk_load_status(table, *partition, *detailed).await?;
                Frame { running: view.running(), bar: view.progress_bar(40), text: view.text() }
            }
            Watched::Backup { table, backup_id, detailed } => {
                let view = backup::status(&self.admin, table, *backup_id, *detailed).await?;
                Frame { running: view.running(), bar: view.progress_bar(40), text: view.text() }
            }
            Watched::Restore { table, detailed } => {
                let view = backup::restore_status(&self.admin, table, *detailed).await?;
                Frame { running: view.running(), bar: view.progress_bar(40), text: view.text() }
            }
        })
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
            Cmd::StartBackupApp { app_name, provider, root } => {
                Output::of(&backup::start(admin, &app_name, &provider, &root).await?)
            }
            Cmd::QueryBackupStatus { app_name, backup_id, detailed } => {
                Output::of(&backup::status(admin, &app_name, backup_id, detailed).await?)
            }
            Cmd::CancelBackup { app_name, backup_id } => {
                Output::of(&backup::cancel(admin, &app_name, backup_id).await?)
            }
            Cmd::RestoreApp { cluster, old_app_name, backup_id, new_app_name, provider, root, replica_count } => {
                let source = BulkLoadSource { provider, root, cluster };
                let new_name = new_app_name.unwrap_or_else(|| old_app_name.clone());
                let view = backup::restore(admin, &source, &old_app_name, backup_id, &new_name, replica_count).await?;
                self.table_names.push(new_name);
                Output::of(&view)
            }
            Cmd::QueryRestoreStatus { app_name, detailed } => {
                Output::of(&backup::restore_status(admin, &app_name, detailed).await?)
            }
            cmd @ (Cmd::AddBackupPolicy { .. }
            | Cmd::LsBackupPolicy
            | Cmd::QueryBackupPolicy { .. }
            | Cmd::ModifyBackupPolicy { .. }
            | Cmd::DisableBackupPolicy { .. }
            | Cmd::EnableBackupPolicy { .. }) => backup::policy(admin, cmd).await,
            data => data::run(self.table()?, data).await,
        }
    }
}

/// A status the live display refreshes: what a query command shows, with its arguments.
pub enum Watched {
    /// `query_bulk_load_status`.
    BulkLoad {
        /// Table name.
        table: String,
        /// Only this partition.
        partition: Option<u32>,
        /// With each replica's progress.
        detailed: bool,
    },
    /// `query_backup_status`.
    Backup {
        /// Table name.
        table: String,
        /// Only this backup.
        backup_id: Option<u64>,
        /// With each partition's progress.
        detailed: bool,
    },
    /// `query_restore_status`.
    Restore {
        /// The restored table's name.
        table: String,
        /// With each replica's progress.
        detailed: bool,
    },
}

impl Watched {
    /// What runs, as the live display's footer names it.
    pub fn what(&self) -> &'static str {
        match self {
            Watched::BulkLoad { .. } => "job",
            Watched::Backup { .. } => "backup",
            Watched::Restore { .. } => "restore",
        }
    }
}

/// One frame of a live display.
pub struct Frame {
    /// It still runs: the display keeps refreshing.
    pub running: bool,
    /// The progress bar(s), one line each.
    pub bar: String,
    /// What the query command prints.
    pub text: String,
}
