//! The env commands on the table in use: `set_app_envs`, `get_app_envs`, `del_app_envs`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use wingkv_client::Admin;

use super::format::{map_rows, View};

/// `set_app_envs`: the env set.
#[derive(Serialize)]
pub struct SetEnvView {
    key: String,
    value: String,
}

impl View for SetEnvView {
    fn text(&self) -> String {
        format!("set app envs succeed: {}={}", self.key, self.value)
    }
}

/// Runs `set_app_envs` on `table`.
pub async fn set(admin: &Admin, table: &str, key: String, value: String) -> Result<SetEnvView> {
    admin.set_envs(table, [(key.as_str(), value.as_str())]).await?;
    Ok(SetEnvView { key, value })
}

/// `get_app_envs`: the table's envs.
#[derive(Serialize)]
pub struct EnvsView {
    envs: BTreeMap<String, String>,
}

impl View for EnvsView {
    fn text(&self) -> String {
        map_rows(["key", "value"], &self.envs)
    }
}

/// Runs `get_app_envs` on `table`.
pub async fn get(admin: &Admin, table: &str) -> Result<EnvsView> {
    Ok(EnvsView { envs: admin.get_envs(table).await? })
}

/// `del_app_envs`: the keys deleted (as given; absent ones included).
#[derive(Serialize)]
pub struct DeletedEnvsView {
    deleted: Vec<String>,
}

impl View for DeletedEnvsView {
    fn text(&self) -> String {
        format!("del app envs succeed: {}", self.deleted.join(","))
    }
}

/// Runs `del_app_envs` on `table`.
pub async fn del(admin: &Admin, table: &str, keys: Vec<String>) -> Result<DeletedEnvsView> {
    admin.del_envs(table, keys.iter().map(String::as_str)).await?;
    Ok(DeletedEnvsView { deleted: keys })
}
