//! `wingkv bench`: measure a cluster the way the field does — YCSB's core workloads through the
//! SDK (`ycsb`), a bulk load against the same rows written through the SDK and against a raw
//! copy of the files (`bulkload`), a backup and a restore against a raw copy of the same bytes
//! (`backup`), and the balancer's moves after servers joined (`rebalance`).
//! `ycsb --system etcd` measures etcd v3 with the same workload, for a side-by-side figure.

mod backup;
mod bulk;
mod cpu;
mod keys;
mod rebalance;
mod stats;
mod steady;
mod system;
mod ycsb;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wingkv_client::{Client, CreateTableOptions, ErrorCode};

/// The idle spell before each timed phase of the bulk-load and backup benches and before each
/// of their floor copies. This VM's host takes back memory the guest has kept free for about
/// 2 s (virtio-balloon free page reporting), and writing a copy into such pages takes twice as
/// long as into pages freed a moment before (1.63–1.66 s against 0.83 s for the same 1.1 GB,
/// BENCHMARKS "Backup: the end learned at once, the floor in the backup's state"). So each
/// phase and each floor starts after the same idle spell, and writes into memory in the same
/// state.
pub(super) const IDLE_BEFORE: Duration = Duration::from_secs(10);

/// Arguments of `wingkv bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// YCSB-like load and run phases (workloads A, B, C, E) through the SDK.
    Ycsb(ycsb::YcsbArgs),
    /// Bulk-load N generated rows; time each phase against a raw copy of the files and against
    /// writing the same rows through the SDK.
    Bulkload(bulk::BulkBenchArgs),
    /// Bulk-load N generated rows, back the table up and restore it; time both against a raw
    /// copy of the backup's files.
    Backup(backup::BackupBenchArgs),
    /// After servers joined (at meta level steady): time to balance at level lively, and a
    /// steady workload's throughput and latency while the balancer moves, against before.
    Rebalance(rebalance::RebalanceArgs),
}

/// Runs `wingkv bench`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    match args.command {
        BenchCommand::Ycsb(a) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if a.client_threads > 0 {
                rt.worker_threads(a.client_threads);
            }
            rt.enable_all().build()?.block_on(ycsb::run(a))?;
        }
        BenchCommand::Bulkload(a) => {
            bulk::run(a)?;
        }
        BenchCommand::Backup(a) => {
            backup::run(a)?;
        }
        BenchCommand::Rebalance(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(rebalance::run(a))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `table` unless it exists (waiting until every partition has a primary).
async fn ensure_table(client: &Client, table: &str, partitions: u32, replicas: u32) -> Result<()> {
    let admin = client.admin();
    match admin.query_table(table).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code() == ErrorCode::TableNotFound => {}
        Err(e) => return Err(e).context("query the table"),
    }
    let options =
        CreateTableOptions { partition_count: Some(partitions), replica_count: Some(replicas), ..Default::default() };
    admin.create_table(table, options).await.with_context(|| format!("create table {table}"))?;
    Ok(())
}

/// The body of `GET http://{addr}{path}` (a plain HTTP/1.1 request, enough for `/metrics`).
async fn http_get(addr: &str, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .with_context(|| format!("GET {addr}{path}: no answer within 5 s"))?
        .with_context(|| format!("GET {addr}{path}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("GET {addr}{path}: not an HTTP answer"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {addr}{path}: {}", head.lines().next().unwrap_or(""));
    Ok(body.to_string())
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
