//! `wingkv bench rebalance`: how long the meta takes to balance a cluster after servers joined,
//! and what a steady workload sees while it does, against the same workload just before.
//!
//! Add the servers first with the meta level at `steady`, where nothing moves to them. The bench
//! runs the workload for `--before-secs`, sets the level to `lively`, runs the same workload
//! until the balancer reports replicas and primaries balanced with no move in flight, and puts
//! the level back to what it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wingkv_client::{BalanceStatus, Client, ClientConfig};

use super::steady::{summary, SteadyWorkload};
use super::ycsb::{self, Workload, YcsbArgs};

/// Arguments of `wingkv bench rebalance`.
#[derive(Args, Debug)]
pub struct RebalanceArgs {
    /// Meta server addresses, comma separated.
    #[arg(long, default_value = "127.0.0.1:34601", value_delimiter = ',')]
    meta: Vec<String>,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// The table of the steady workload (loaded before, e.g. by `bench ycsb load`).
    #[arg(long, default_value = "usertable")]
    table: String,
    /// Records in that table.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Workload preset.
    #[arg(long, value_enum, default_value = "a")]
    workload: Workload,
    /// Operations per second the workload aims at: a steady load, so that latency before and
    /// during the moves compare (0 = as fast as possible).
    #[arg(long, default_value_t = 2_000)]
    target: u64,
    /// Concurrent requests.
    #[arg(long, default_value_t = 32)]
    threads: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Seconds of workload before balancing starts.
    #[arg(long, default_value_t = 60)]
    before_secs: u64,
    /// Give up when the cluster is not balanced after this many seconds.
    #[arg(long, default_value_t = 3_600)]
    timeout_secs: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl RebalanceArgs {
    fn workload(&self, duration_secs: u64) -> YcsbArgs {
        SteadyWorkload {
            meta: self.meta.clone(),
            tls: self.tls.clone(),
            table: self.table.clone(),
            records: self.records,
            workload: self.workload,
            target: self.target,
            threads: self.threads,
            value_size: self.value_size,
        }
        .ycsb(duration_secs)
    }
}

fn balanced(b: &BalanceStatus) -> bool {
    b.replicas_balanced && b.primaries_balanced && b.moves_in_flight == 0
}

/// Runs `wingkv bench rebalance`.
pub async fn run(args: RebalanceArgs) -> Result<()> {
    let mut config = ClientConfig::new(args.meta.clone());
    config.tls = args.tls.config()?;
    let client = Client::with_config(config).await?;
    let admin = client.admin();
    let level = admin.get_meta_level().await.context("get the meta level")?;
    let info = admin.cluster_info().await.context("cluster_info")?;
    let start = info.balance.unwrap_or_default();
    if balanced(&start) {
        bail!("the cluster is balanced already: add servers (at meta level steady) before this bench");
    }
    if level == "lively" {
        bail!("the meta level is lively already: set it to steady, add the servers, then run this bench");
    }

    eprintln!("workload for {} s before balancing", args.before_secs);
    let before = ycsb::run(args.workload(args.before_secs)).await.context("the workload before balancing")?;

    admin.set_meta_level("lively").await.context("set_meta_level lively")?;
    let started = Instant::now();
    let lively_at = wingkv_common::time::unix_millis();
    let stop = CancellationToken::new();
    let during = tokio::spawn(ycsb::run_until(args.workload(args.timeout_secs), stop.clone()));
    let timeout = Duration::from_secs(args.timeout_secs);
    let waited = wait_balanced(&client, timeout).await;
    let took = started.elapsed();
    stop.cancel();
    let during = during.await.context("the workload during balancing")?;
    // The level goes back whatever happened, so that a failed run leaves the cluster as it was.
    let restored = admin.set_meta_level(&level).await;
    let end = waited?;
    let during = during.context("the workload during balancing")?;
    restored.with_context(|| format!("set_meta_level {level}"))?;
    // A moved replica joins once it holds the log; applying it (a bulk load's ingestion fetches
    // its files from the other members) can take longer: the data has moved when every replica
    // of every partition applied the same entry.
    let applied = wait_applied_alike(&client, timeout.saturating_sub(took)).await?;
    let caught_up = started.elapsed();
    // The move counters start over with a meta leadership: a change of term makes them partial.
    let end_term = admin.cluster_info().await.context("cluster_info")?.meta_term;

    let report = json!({
        // When balancing started (unix ms), to match the servers' logs.
        "lively_at_unix_ms": lively_at,
        "rebalance_sec": took.as_secs_f64(),
        "caught_up_sec": caught_up.as_secs_f64(),
        "replicas_checked": applied,
        "replica_moves": end.replica_moves_done.saturating_sub(start.replica_moves_done),
        "primary_moves": end.primary_moves_done.saturating_sub(start.primary_moves_done),
        "moves_failed": end.moves_failed.saturating_sub(start.moves_failed),
        "alive_nodes": info.alive_nodes,
        "meta_term_changed": end_term != info.meta_term,
        "before": summary(&before),
        "during": summary(&during),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "balanced in {:.1} s, every replica applied alike at {:.1} s: {} replica moves, {} primary moves, {} failed",
            took.as_secs_f64(),
            caught_up.as_secs_f64(),
            report["replica_moves"],
            report["primary_moves"],
            report["moves_failed"]
        );
        for phase in ["before", "during"] {
            println!("{phase:>6}: {}", super::steady::line(&report[phase]));
        }
    }
    Ok(())
}

/// Polls the balancer until it reports the cluster balanced; answers its last status.
async fn wait_balanced(client: &Client, timeout: Duration) -> Result<BalanceStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.admin().cluster_info().await {
            Ok(info) => {
                let b = info.balance.unwrap_or_default();
                if balanced(&b) {
                    return Ok(b);
                }
                format!("{b:?}")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("not balanced after {timeout:?}; the balancer last said: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls the replica servers' `/metrics` until every member of each partition (by the catalog:
/// a replica left on a node it moved from, not removed yet, does not count) reports the same
/// applied index; answers how many replicas it compared. A failed poll is tried again.
async fn wait_applied_alike(client: &Client, timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match applied_by_members(client).await {
            Ok(applied) => {
                let behind: Vec<String> = applied
                    .iter()
                    .filter(|(_, v)| v.iter().any(|x| *x != v[0]))
                    .map(|((t, p), v)| format!("{t}.{p}: {v:?}"))
                    .collect();
                if behind.is_empty() {
                    return Ok(applied.values().map(Vec::len).sum());
                }
                format!("replicas apart: {behind:?}")
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("replicas not applied alike after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The applied index of every member replica, per (table id, partition index).
async fn applied_by_members(client: &Client) -> Result<BTreeMap<(u32, u32), Vec<u64>>> {
    let admin = client.admin();
    let mut members: BTreeMap<(u32, u32), Vec<String>> = BTreeMap::new();
    for t in admin.list_tables(false).await.context("list the tables")? {
        let conf = admin.query_table(&t.name).await.with_context(|| format!("query table {}", t.name))?;
        for p in conf.partitions {
            members.insert((conf.app_id, p.partition_index), p.members.into_iter().map(|m| m.address).collect());
        }
    }
    let mut applied: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    for n in admin.list_nodes().await.context("list the replica servers")? {
        if n.http_address.is_empty() {
            continue;
        }
        let text = super::http_get(&n.http_address, "/metrics").await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("wingkv_raft_applied_index{") else { continue };
            let Some((labels, value)) = rest.split_once("} ") else { continue };
            let label = |name: &str| -> Option<u32> {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"')?.parse().ok())
            };
            let (Some(table), Some(partition), Ok(value)) =
                (label("table_id"), label("partition"), value.trim().parse::<f64>())
            else {
                continue;
            };
            if members.get(&(table, partition)).is_some_and(|m| m.contains(&n.address)) {
                applied.entry((table, partition)).or_default().push(value as u64);
            }
        }
    }
    Ok(applied)
}
