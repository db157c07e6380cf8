//! Running one parsed command against the cluster, producing text for people and JSON for
//! scripts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use wingkv_client::{CheckType, Client, ScanOptions, Table, Ttl};
use wingkv_proto::meta::*;

use super::commands::Cmd;
use super::escape::{escape, unescape};

/// What a command printed.
pub struct Output {
    /// For people.
    pub text: String,
    /// For scripts (`--json`).
    pub json: Value,
}

impl Output {
    fn new(text: impl Into<String>, json: Value) -> Self {
        Self { text: text.into(), json }
    }
}

/// The shell's session: the connection and the table in use.
pub struct Session {
    client: Client,
    table: Option<Table>,
    /// Table names seen last, for completion.
    pub table_names: Vec<String>,
}

fn arg(s: &str) -> Result<Bytes> {
    unescape(s).map(Bytes::from).map_err(|e| anyhow!(e))
}

fn show(b: &[u8]) -> String {
    escape(b)
}

/// Formats rows as an aligned table under `headers`.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out.trim_end().to_string()
}

fn ms_to_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if secs > now {
        format!("in {}s", secs - now)
    } else {
        format!("{}s ago", now - secs)
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// `93784000` → `1d 2h 3m`; 0 (unknown) → `-`.
fn uptime(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

fn parse_envs(s: &str) -> Result<HashMap<String, String>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("env '{p}' is not key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn check_type(name: &str) -> Result<CheckType> {
    let wire = format!("CT_{}", name.trim().to_ascii_uppercase());
    CheckType::from_str_name(&wire).ok_or_else(|| {
        anyhow!("unknown check type '{name}' (e.g. value_not_exist, value_exist, match_prefix, bytes_equal, int_less)")
    })
}

impl Session {
    /// A session on `client`.
    pub fn new(client: Client) -> Self {
        Self { client, table: None, table_names: Vec::new() }
    }

    fn table(&self) -> Result<&Table> {
        self.table.as_ref().ok_or_else(|| anyhow!("no table selected: run `use TABLE` first"))
    }

    async fn meta<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(wingkv_proto::meta::meta_client::MetaClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        Ok(self.client.meta().call(f).await?)
    }

    /// [`Self::meta`] for a call a live leader may take long to answer (create, bulk-load start).
    async fn meta_long<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(wingkv_proto::meta::meta_client::MetaClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        Ok(self.client.meta().call_long(wingkv_common::meta_client::LONG_META_CALL, f).await?)
    }

    async fn list_tables(&self, include_dropped: bool) -> Result<Vec<TableSummary>> {
        let r = self.meta(|mut c| async move { c.list_tables(ListTablesRequest { include_dropped }).await }).await?;
        Ok(r.tables)
    }

    /// Refreshes the table names used for completion.
    pub async fn refresh_table_names(&mut self) {
        if let Ok(t) = self.list_tables(false).await {
            self.table_names = t.into_iter().map(|t| t.name).collect();
        }
    }

    /// Runs `cmd`.
    pub async fn run(&mut self, cmd: Cmd) -> Result<Output> {
        match cmd {
            Cmd::ClusterInfo => {
                let i = self.meta(|mut c| async move { c.cluster_info(ClusterInfoRequest {}).await }).await?;
                let members: Vec<String> = i.meta_members.iter().map(|m| m.address.clone()).collect();
                let text = table(
                    &["name", "value"],
                    &[
                        vec!["cluster_name".into(), i.cluster_name.clone()],
                        vec!["meta_leader".into(), i.meta_leader.clone()],
                        vec!["meta_servers".into(), members.join(",")],
                        vec!["meta_term".into(), i.meta_term.to_string()],
                        vec!["alive_nodes".into(), i.alive_nodes.to_string()],
                        vec!["dead_nodes".into(), i.dead_nodes.to_string()],
                        vec!["table_count".into(), i.table_count.to_string()],
                        vec!["version".into(), i.version.clone()],
                    ],
                );
                Ok(Output::new(
                    text,
                    json!({"cluster_name": i.cluster_name, "meta_leader": i.meta_leader, "meta_servers": members,
                           "meta_term": i.meta_term, "alive_nodes": i.alive_nodes, "dead_nodes": i.dead_nodes,
                           "table_count": i.table_count, "version": i.version}),
                ))
            }
            Cmd::Nodes { detailed } => {
                let r = self.meta(|mut c| async move { c.list_nodes(ListNodesRequest {}).await }).await?;
                let rows: Vec<Vec<String>> = r
                    .nodes
                    .iter()
                    .map(|n| {
                        let mut row = vec![n.node_id.to_string(), n.address.clone(), n.status.clone()];
                        if detailed {
                            row.push(n.replica_count.to_string());
                            row.push(n.primary_count.to_string());
                            row.push(or_dash(&n.version));
                            row.push(uptime(n.uptime_ms));
                        }
                        row
                    })
                    .collect();
                let headers: &[&str] = if detailed {
                    &["node_id", "address", "status", "replicas", "primaries", "version", "uptime"]
                } else {
                    &["node_id", "address", "status"]
                };
                let j: Vec<Value> = r
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({"node_id": n.node_id, "address": n.address, "status": n.status,
                               "replica_count": n.replica_count, "primary_count": n.primary_count,
                               "version": n.version, "uptime_ms": n.uptime_ms, "http_address": n.http_address})
                    })
                    .collect();
                Ok(Output::new(table(headers, &rows), json!({ "nodes": j })))
            }
            Cmd::Ls { detailed } => {
                let tables = self.list_tables(detailed).await?;
                self.table_names = tables.iter().filter(|t| t.status == "AVAILABLE").map(|t| t.name.clone()).collect();
                let rows: Vec<Vec<String>> = tables
                    .iter()
                    .map(|t| {
                        let mut row = vec![
                            t.app_id.to_string(),
                            t.name.clone(),
                            t.status.clone(),
                            t.partition_count.to_string(),
                            t.replica_count.to_string(),
                        ];
                        if detailed {
                            row.push(format!("{}/{}", t.healthy_partitions, t.partition_count));
                            row.push(ms_to_time(t.create_time_ms));
                            row.push(ms_to_time(t.expire_time_ms));
                        }
                        row
                    })
                    .collect();
                let headers: &[&str] = if detailed {
                    &["app_id", "name", "status", "partitions", "replicas", "healthy", "created", "expires"]
                } else {
                    &["app_id", "name", "status", "partitions", "replicas"]
                };
                let j: Vec<Value> = tables
                    .iter()
                    .map(|t| {
                        json!({"app_id": t.app_id, "name": t.name, "status": t.status,
                                    "partition_count": t.partition_count, "replica_count": t.replica_count,
                                    "healthy_partitions": t.healthy_partitions, "envs": t.envs})
                    })
                    .collect();
                Ok(Output::new(table(headers, &rows), json!({ "tables": j })))
            }
            Cmd::App { name, detailed } => {
                let req = QueryTableRequest { name };
                let cfg = self
                    .meta(|mut c| {
                        let req = req.clone();
                        async move { c.query_table(req).await }
                    })
                    .await?;
                let mut text = table(
                    &["app_id", "name", "partitions", "replicas"],
                    &[vec![
                        cfg.app_id.to_string(),
                        cfg.name.clone(),
                        cfg.partition_count.to_string(),
                        cfg.replica_count.to_string(),
                    ]],
                );
                let parts: Vec<Value> = cfg
                    .partitions
                    .iter()
                    .map(|p| {
                        json!({"partition_index": p.partition_index, "ballot": p.ballot, "term": p.term,
                                    "primary": p.primary.as_ref().map(|x| x.address.clone()),
                                    "members": p.members.iter().map(|m| m.address.clone()).collect::<Vec<_>>()})
                    })
                    .collect();
                if detailed {
                    let rows: Vec<Vec<String>> = cfg
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                format!("{}.{}", cfg.app_id, p.partition_index),
                                p.primary.as_ref().map(|x| x.address.clone()).unwrap_or_else(|| "-".into()),
                                p.members.iter().map(|m| m.address.clone()).collect::<Vec<_>>().join(","),
                                p.ballot.to_string(),
                            ]
                        })
                        .collect();
                    text.push_str("\n\n");
                    text.push_str(&table(&["partition", "primary", "members", "ballot"], &rows));
                }
                Ok(Output::new(
                    text,
                    json!({"app_id": cfg.app_id, "name": cfg.name, "partition_count": cfg.partition_count,
                           "replica_count": cfg.replica_count, "envs": cfg.envs, "partitions": parts}),
                ))
            }
            Cmd::Create { name, partition_count, replica_count, envs } => {
                let envs = envs.as_deref().map(parse_envs).transpose()?.unwrap_or_default();
                let req = CreateTableRequest {
                    name: name.clone(),
                    partition_count: Some(partition_count),
                    replica_count: Some(replica_count),
                    envs: envs.into_iter().collect(),
                };
                let cfg = self
                    .meta_long(|mut c| {
                        let req = req.clone();
                        async move { c.create_table(req).await }
                    })
                    .await?;
                self.table_names.push(name.clone());
                Ok(Output::new(
                    format!(
                        "create app \"{name}\" succeed (app_id {}, {} partitions)",
                        cfg.app_id, cfg.partition_count
                    ),
                    json!({"app_id": cfg.app_id, "name": name, "partition_count": cfg.partition_count}),
                ))
            }
            Cmd::Drop { name, reserve_seconds } => {
                let req = DropTableRequest { name: name.clone(), reserve_seconds: reserve_seconds.unwrap_or(0) };
                let r = self
                    .meta(|mut c| {
                        let req = req.clone();
                        async move { c.drop_table(req).await }
                    })
                    .await?;
                if self.table.as_ref().is_some_and(|t| t.name() == name) {
                    self.table = None;
                }
                self.table_names.retain(|n| *n != name);
                Ok(Output::new(
                    format!(
                        "drop app \"{name}\" succeed (app_id {}, recallable until {})",
                        r.app_id,
                        ms_to_time(r.expire_time_ms)
                    ),
                    json!({"app_id": r.app_id, "name": name, "expire_time_ms": r.expire_time_ms}),
                ))
            }
            Cmd::Recall { app_id, new_name } => {
                let req = RecallTableRequest { app_id, new_name: new_name.unwrap_or_default() };
                let cfg = self
                    .meta(|mut c| {
                        let req = req.clone();
                        async move { c.recall_table(req).await }
                    })
                    .await?;
                Ok(Output::new(
                    format!("recall app {app_id} succeed as \"{}\"", cfg.name),
                    json!({"app_id": cfg.app_id, "name": cfg.name}),
                ))
            }
            Cmd::Use { name } => {
                let t = self.client.open_table(&name).await?;
                self.table = Some(t);
                Ok(Output::new(format!("OK (using {name})"), json!({"table": name})))
            }
            Cmd::SetAppEnvs { key, value } => {
                let name = self.table()?.name().to_string();
                let req = SetTableEnvsRequest { name, envs: [(key.clone(), value.clone())].into() };
                self.meta(|mut c| {
                    let req = req.clone();
                    async move { c.set_table_envs(req).await }
                })
                .await?;
                Ok(Output::new(format!("set app envs succeed: {key}={value}"), json!({"key": key, "value": value})))
            }
            Cmd::GetAppEnvs => {
                let req = GetTableEnvsRequest { name: self.table()?.name().to_string() };
                let r = self
                    .meta(|mut c| {
                        let req = req.clone();
                        async move { c.get_table_envs(req).await }
                    })
                    .await?;
                let rows: Vec<Vec<String>> = r.envs.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
                Ok(Output::new(table(&["key", "value"], &rows), json!({ "envs": r.envs })))
            }
            Cmd::DelAppEnvs { keys } => {
                let req = DelTableEnvsRequest { name: self.table()?.name().to_string(), keys: keys.clone() };
                self.meta(|mut c| {
                    let req = req.clone();
                    async move { c.del_table_envs(req).await }
                })
                .await?;
                Ok(Output::new(format!("del app envs succeed: {}", keys.join(",")), json!({ "deleted": keys })))
            }
            Cmd::ServerInfo => {
                let i = self.meta(|mut c| async move { c.cluster_info(ClusterInfoRequest {}).await }).await?;
                let n = self.meta(|mut c| async move { c.list_nodes(ListNodesRequest {}).await }).await?;
                // Every meta answers for itself, so a follower's version and uptime show too.
                let client = &self.client;
                let metas = i.meta_members.iter().map(|m| async move {
                    let info = client
                        .meta()
                        .call_at(&m.address, std::time::Duration::from_secs(3), |mut c| async move {
                            c.server_info(ServerInfoRequest {}).await
                        })
                        .await;
                    (m, info)
                });
                let metas = futures::future::join_all(metas).await;
                let mut rows = Vec::new();
                let mut servers = Vec::new();
                for (m, info) in &metas {
                    match info {
                        Ok(s) => {
                            rows.push(vec![
                                format!("meta{}", m.node_id),
                                m.address.clone(),
                                s.role.clone(),
                                s.version.clone(),
                                uptime(s.uptime_ms),
                                "-".into(),
                                "-".into(),
                                or_dash(&s.http_address),
                            ]);
                            servers.push(json!({"role": "meta", "id": m.node_id, "address": m.address, "status": s.role,
                                                "version": s.version, "uptime_ms": s.uptime_ms, "http_address": s.http_address}));
                        }
                        Err(e) => {
                            rows.push(vec![format!("meta{}", m.node_id), m.address.clone(), "UNREACHABLE".into()]);
                            servers.push(json!({"role": "meta", "id": m.node_id, "address": m.address,
                                                "status": "UNREACHABLE", "error": e.to_string()}));
                        }
                    }
                }
                for x in &n.nodes {
                    rows.push(vec![
                        format!("replica{}", x.node_id),
                        x.address.clone(),
                        x.status.clone(),
                        or_dash(&x.version),
                        uptime(x.uptime_ms),
                        x.replica_count.to_string(),
                        x.primary_count.to_string(),
                        or_dash(&x.http_address),
                    ]);
                    servers.push(json!({"role": "replica", "id": x.node_id, "address": x.address, "status": x.status,
                                        "version": x.version, "uptime_ms": x.uptime_ms, "replica_count": x.replica_count,
                                        "primary_count": x.primary_count, "http_address": x.http_address}));
                }
                Ok(Output::new(
                    table(
                        &["server", "address", "status", "version", "uptime", "replicas", "primaries", "http"],
                        &rows,
                    ),
                    json!({"version": i.version, "servers": servers,
                           "meta_servers": i.meta_members.iter().map(|m| m.address.clone()).collect::<Vec<_>>(),
                           "replica_servers": n.nodes.iter().map(|x| json!({"address": x.address, "status": x.status})).collect::<Vec<_>>()}),
                ))
            }
            Cmd::StartBulkLoad { app_name, cluster, provider, root, ingest_behind } => {
                let req = StartBulkLoadRequest { app_name, cluster, provider, root, ingest_behind };
                let r = self
                    .meta_long(|mut c| {
                        let req = req.clone();
                        async move { c.start_bulk_load(req).await }
                    })
                    .await?;
                Ok(Output::new(
                    format!("start bulk load succeed: table \"{}\" job {} from {}", r.app_name, r.job_id, r.source),
                    bulk_json(&r),
                ))
            }
            Cmd::QueryBulkLoadStatus { app_name, partition_index, detailed } => {
                let req = QueryBulkLoadRequest { app_name, partition_index, detailed };
                let r = self
                    .meta(|mut c| {
                        let req = req.clone();
                        async move { c.query_bulk_load_status(req).await }
                    })
                    .await?;
                Ok(Output::new(bulk_text(&r, detailed), bulk_json(&r)))
            }
            Cmd::PauseBulkLoad { app_name } => {
                self.control_bulk_load(app_name, BulkLoadControl::BlcPause, "pause").await
            }
            Cmd::RestartBulkLoad { app_name } => {
                self.control_bulk_load(app_name, BulkLoadControl::BlcRestart, "restart").await
            }
            Cmd::CancelBulkLoad { app_name, forced } => {
                let action = if forced { BulkLoadControl::BlcForceCancel } else { BulkLoadControl::BlcCancel };
                self.control_bulk_load(app_name, action, "cancel").await
            }
            Cmd::ClearBulkLoad { app_name } => {
                self.control_bulk_load(app_name, BulkLoadControl::BlcClear, "clear").await
            }
            data => self.run_data(data).await,
        }
    }

    async fn control_bulk_load(&self, app_name: String, action: BulkLoadControl, what: &str) -> Result<Output> {
        let req = ControlBulkLoadRequest { app_name, action: action as i32 };
        let r = self
            .meta(|mut c| {
                let req = req.clone();
                async move { c.control_bulk_load(req).await }
            })
            .await?;
        Ok(Output::new(format!("{what} bulk load succeed: table \"{}\" is {}", r.app_name, r.status), bulk_json(&r)))
    }

    async fn run_data(&mut self, cmd: Cmd) -> Result<Output> {
        let t = self.table()?.clone();
        Ok(match cmd {
            Cmd::Set { hash_key, sort_key, value, ttl_seconds } => {
                let ttl = ttl_seconds.filter(|s| *s > 0).map(|s| std::time::Duration::from_secs(s as u64));
                t.set_with_ttl(arg(&hash_key)?, arg(&sort_key)?, arg(&value)?, ttl).await?;
                Output::new("OK", json!({"ok": true}))
            }
            Cmd::Get { hash_key, sort_key } => match t.get(arg(&hash_key)?, arg(&sort_key)?).await? {
                Some(v) => Output::new(format!("\"{}\"", show(&v)), json!({"found": true, "value": show(&v)})),
                None => Output::new("Not found", json!({"found": false})),
            },
            Cmd::Del { hash_key, sort_key } => {
                t.del(arg(&hash_key)?, arg(&sort_key)?).await?;
                Output::new("OK", json!({"ok": true}))
            }
            Cmd::Exist { hash_key, sort_key } => {
                let e = t.exist(arg(&hash_key)?, arg(&sort_key)?).await?;
                Output::new(if e { "True" } else { "False" }, json!({ "exist": e }))
            }
            Cmd::Ttl { hash_key, sort_key } => match t.ttl(arg(&hash_key)?, arg(&sort_key)?).await? {
                None => Output::new("Not found", json!({"found": false})),
                Some(Ttl::Infinite) => Output::new("Infinite", json!({"found": true, "ttl_seconds": null})),
                Some(Ttl::Seconds(s)) => Output::new(format!("{s}"), json!({"found": true, "ttl_seconds": s})),
            },
            Cmd::Incr { hash_key, sort_key, increment } => {
                let v = t.incr(arg(&hash_key)?, arg(&sort_key)?, increment).await?;
                Output::new(v.to_string(), json!({ "new_value": v }))
            }
            Cmd::CheckAndSet {
                hash_key,
                check_sort_key,
                check_type: ct,
                check_operand,
                set_sort_key,
                set_value,
                ttl_seconds,
                return_check_value,
            } => {
                let ct = check_type(&ct)?;
                let csk = arg(&check_sort_key)?;
                let ssk = match set_sort_key {
                    Some(s) => arg(&s)?,
                    None => csk.clone(),
                };
                let ttl = ttl_seconds.filter(|s| *s > 0).map(|s| std::time::Duration::from_secs(s as u64));
                let r =
                    t.check_and_set(arg(&hash_key)?, csk, ct, arg(&check_operand)?, ssk, arg(&set_value)?, ttl).await?;
                let mut text =
                    if r.set { "set succeed".to_string() } else { "set failed: check not passed".to_string() };
                if return_check_value {
                    match &r.check_value {
                        Some(v) => text.push_str(&format!("\ncheck value: \"{}\"", show(v))),
                        None => text.push_str("\ncheck value: not found"),
                    }
                }
                Output::new(text, json!({"set": r.set, "check_value": r.check_value.as_ref().map(|v| show(v))}))
            }
            Cmd::MultiSet { hash_key, pairs } => {
                if pairs.len() % 2 != 0 {
                    bail!("multi_set needs sort key and value pairs; got {} words after the hash key", pairs.len());
                }
                let kvs = pairs.chunks(2).map(|c| Ok((arg(&c[0])?, arg(&c[1])?))).collect::<Result<Vec<_>>>()?;
                let n = kvs.len();
                t.multi_set(arg(&hash_key)?, kvs, None).await?;
                Output::new(format!("OK ({n} records)"), json!({"ok": true, "count": n}))
            }
            Cmd::MultiGet { hash_key, sort_keys } => {
                let sks = if sort_keys.is_empty() {
                    None
                } else {
                    Some(sort_keys.iter().map(|s| arg(s)).collect::<Result<Vec<_>>>()?)
                };
                let hk = arg(&hash_key)?;
                let kvs = t.multi_get(hk.clone(), sks).await?;
                let rows: Vec<Vec<String>> =
                    kvs.iter().map(|(k, v)| vec![show(&hk), show(k), format!("\"{}\"", show(v))]).collect();
                let j: Vec<Value> = kvs.iter().map(|(k, v)| json!({"sort_key": show(k), "value": show(v)})).collect();
                Output::new(
                    format!("{}\n\n{} records", table(&["hash_key", "sort_key", "value"], &rows), kvs.len()),
                    json!({ "hash_key": show(&hk), "records": j }),
                )
            }
            Cmd::MultiDel { hash_key, sort_keys } => {
                let sks = sort_keys.iter().map(|s| arg(s)).collect::<Result<Vec<_>>>()?;
                let n = t.multi_del(arg(&hash_key)?, sks).await?;
                Output::new(format!("OK ({n} deleted)"), json!({ "deleted": n }))
            }
            Cmd::SortkeyCount { hash_key } => {
                let n = t.sortkey_count(arg(&hash_key)?).await?;
                Output::new(n.to_string(), json!({ "count": n }))
            }
            Cmd::HashScan { hash_key, start_sort_key, stop_sort_key, max_count, no_value } => {
                let opts = ScanOptions {
                    start_sort_key: arg(&start_sort_key)?,
                    stop_sort_key: arg(&stop_sort_key)?,
                    limit: max_count.unwrap_or(0),
                    no_value,
                    ..Default::default()
                };
                scan_output(t.scan(arg(&hash_key)?, opts)).await?
            }
            Cmd::FullScan { max_count, no_value } => {
                let opts = ScanOptions { limit: max_count.unwrap_or(0), no_value, ..Default::default() };
                scan_output(t.full_scan(opts)).await?
            }
            Cmd::CountData => {
                let mut rows = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() });
                let mut n = 0u64;
                while let Some(r) = rows.next().await {
                    r?;
                    n += 1;
                }
                Output::new(format!("{n} records"), json!({ "count": n }))
            }
            other => bail!("'{other:?}' is not a data command"),
        })
    }
}

async fn scan_output(
    mut rows: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<wingkv_client::Record, wingkv_client::Error>> + Send>,
    >,
) -> Result<Output> {
    let mut text_rows = Vec::new();
    let mut j = Vec::new();
    while let Some(r) = rows.next().await {
        let r = r.context("scan failed")?;
        text_rows.push(vec![show(&r.hash_key), show(&r.sort_key), format!("\"{}\"", show(&r.value))]);
        j.push(json!({"hash_key": show(&r.hash_key), "sort_key": show(&r.sort_key), "value": show(&r.value)}));
    }
    let n = j.len();
    Ok(Output::new(
        format!("{}\n\n{n} records", table(&["hash_key", "sort_key", "value"], &text_rows)),
        json!({ "records": j, "count": n }),
    ))
}

fn bulk_json(r: &BulkLoadStatusResponse) -> Value {
    json!({
        "app_name": r.app_name, "job_id": r.job_id, "status": r.status, "reason": r.reason, "source": r.source,
        "partitions": r.partitions.iter().map(|p| json!({
            "partition_index": p.partition_index, "status": p.status, "progress_percent": p.progress_percent,
            "drive_attempts": p.drive_attempts, "drive_backoff_ms": p.drive_backoff_ms, "last_error": p.last_error,
            "stalled_since_ms": p.stalled_since_ms,
            "replicas": p.replicas.iter().map(|x| json!({"node_id": x.node_id, "status": x.status,
                "downloaded_bytes": x.downloaded_bytes, "total_bytes": x.total_bytes, "reason": x.reason,
                "live_tasks": x.live_tasks, "retries": x.retries, "backoff_ms": x.backoff_ms})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Whether a job in `status` is still moving (a live display keeps refreshing it).
pub fn bulk_load_running(status: &str) -> bool {
    matches!(status, "BLS_DOWNLOADING" | "BLS_DOWNLOADED" | "BLS_INGESTING" | "BLS_PAUSING")
}

/// One line: a bar of `width` cells for the job's overall progress (the mean of its
/// partitions'), the status, and how many partitions are done.
pub fn bulk_progress_bar(status: &Value, width: usize) -> String {
    let parts = status["partitions"].as_array().map(Vec::as_slice).unwrap_or_default();
    let percent = if parts.is_empty() {
        0
    } else {
        parts.iter().map(|p| p["progress_percent"].as_u64().unwrap_or(0)).sum::<u64>() / parts.len() as u64
    };
    let done = parts
        .iter()
        .filter(|p| matches!(p["status"].as_str(), Some("BLS_DOWNLOADED" | "BLS_INGESTING" | "BLS_SUCCEED")))
        .count();
    let filled = (percent.min(100) as usize * width) / 100;
    format!(
        "[{}{}] {percent:>3}%  {}  {done}/{} partitions downloaded",
        "#".repeat(filled),
        "-".repeat(width - filled),
        status["status"].as_str().unwrap_or_default(),
        parts.len()
    )
}

fn bulk_text(r: &BulkLoadStatusResponse, detailed: bool) -> String {
    let mut out = format!("table: {}  job: {}  status: {}", r.app_name, r.job_id, r.status);
    if !r.reason.is_empty() {
        out.push_str(&format!("\nreason: {}", r.reason));
    }
    if !r.source.is_empty() {
        out.push_str(&format!("\nsource: {}", r.source));
    }
    if r.partitions.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = r
        .partitions
        .iter()
        .map(|p| {
            let mut row = vec![p.partition_index.to_string(), p.status.clone(), format!("{}%", p.progress_percent)];
            // Where the driver is waiting, or stuck: shown always, since that is what needs eyes.
            let mut note = Vec::new();
            if p.stalled_since_ms > 0 {
                note.push(format!("stalled since {}", ms_to_time(p.stalled_since_ms)));
            }
            if p.drive_attempts > 0 {
                note.push(format!("retry {} (backoff {} ms): {}", p.drive_attempts, p.drive_backoff_ms, p.last_error));
            }
            row.push(note.join("; "));
            if detailed {
                row.push(
                    p.replicas
                        .iter()
                        .map(|x| {
                            let mut r = format!(
                                "node{}:{}:{}/{}:tasks={}",
                                x.node_id, x.status, x.downloaded_bytes, x.total_bytes, x.live_tasks
                            );
                            if x.retries > 0 {
                                r.push_str(&format!(":retries={}:backoff={}ms", x.retries, x.backoff_ms));
                            }
                            r
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            row
        })
        .collect();
    let mut headers = vec!["partition", "status", "progress", "note"];
    if detailed {
        headers.push("replicas");
    }
    // The note column only when some partition has something to say.
    let mut rows = rows;
    if rows.iter().all(|r| r[3].is_empty()) {
        headers.remove(3);
        rows.iter_mut().for_each(|r| drop(r.remove(3)));
    }
    out.push_str("\n\n");
    out.push_str(&table(&headers, &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_shows_the_mean_of_the_partitions() {
        let status = json!({"status": "BLS_DOWNLOADING", "partitions": [
            {"status": "BLS_DOWNLOADED", "progress_percent": 100},
            {"status": "BLS_DOWNLOADING", "progress_percent": 0},
        ]});
        let bar = bulk_progress_bar(&status, 10);
        assert_eq!(bar, "[#####-----]  50%  BLS_DOWNLOADING  1/2 partitions downloaded");
        assert!(bulk_progress_bar(&json!({"status": "BLS_INVALID"}), 4).starts_with("[----]   0%"));
        assert!(bulk_load_running("BLS_INGESTING") && !bulk_load_running("BLS_SUCCEED"));
    }
}
