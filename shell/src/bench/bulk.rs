//! `wingkv bench bulkload`: generate N rows as bulk-load files, load them into a fresh table and
//! time each phase; copy the same files with fsync as the physical floor; write the same rows
//! through the SDK into a second table for comparison; watch the replica servers' memory on
//! their `/metrics` meanwhile.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wingkv_client::{BulkLoadSource, BulkLoadStatus, Client, ClientConfig, Table};

use super::steady::{summary, SteadyWorkload};
use super::ycsb::{self, Workload};
use crate::bulkgen::{BulkgenArgs, GeneratedRows, GENERATED_SORT_KEY};

/// The longest the workload alongside a load runs: it is stopped when the load ends.
const ALONGSIDE_AT_MOST_SECS: u64 = 24 * 3_600;

/// Arguments of `wingkv bench bulkload`.
#[derive(Args, Debug, Clone)]
pub struct BulkBenchArgs {
    #[command(flatten)]
    pub load: GeneratedLoadArgs,
    /// Rows written through the SDK for comparison (default: all of them; 0: skip). With fewer,
    /// the time for all rows is extrapolated from their rate, and the report says so.
    #[arg(long)]
    pub sdk_rows: Option<u64>,
    /// Concurrent SDK writes.
    #[arg(long, default_value_t = 64)]
    pub sdk_threads: usize,
    /// Keep the tables and the files afterwards.
    #[arg(long)]
    pub keep: bool,
    /// A table (loaded before, e.g. by `bench ycsb load`) on which a steady YCSB workload runs
    /// for `--alongside-before-secs` before the bulk load and then all along it; both are
    /// reported, so that what the load costs the serving side shows.
    #[arg(long)]
    pub alongside: Option<String>,
    /// Records in the `--alongside` table.
    #[arg(long, default_value_t = 100_000)]
    pub alongside_records: u64,
    /// The workload's YCSB preset.
    #[arg(long, value_enum, default_value = "b")]
    pub alongside_workload: Workload,
    /// Operations per second the workload aims at (0: as fast as possible).
    #[arg(long, default_value_t = 2_000)]
    pub alongside_target: u64,
    /// The workload's concurrent requests.
    #[arg(long, default_value_t = 32)]
    pub alongside_threads: usize,
    /// Seconds of workload before the bulk load starts.
    #[arg(long, default_value_t = 30)]
    pub alongside_before_secs: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the bulk-load and backup benches share: the cluster, and the rows generated and
/// bulk-loaded into a table of their own.
#[derive(Args, Debug, Clone)]
pub struct GeneratedLoadArgs {
    /// Meta server addresses, comma separated.
    #[arg(long, default_value = "127.0.0.1:34601", value_delimiter = ',')]
    pub meta: Vec<String>,
    #[command(flatten)]
    pub tls: crate::tls_args::TlsArgs,
    /// Rows to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Partitions of the table.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Replicas per partition.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Where the files go (the `local` provider's root; an absolute path the servers can read,
    /// and write for a backup). Default: a new directory under the system temp dir.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Cluster name of the bulk-load layout (the onebox's is `onebox`).
    #[arg(long, default_value = "onebox")]
    pub cluster: String,
}

impl GeneratedLoadArgs {
    /// Writes the rows as table `table`'s bulk-load layout under `root` (`bulkgen`, local
    /// provider, 64 MiB files, seed 1: the same rows every run).
    pub fn generate(&self, table: &str, root: &Path) -> Result<()> {
        crate::bulkgen::run(BulkgenArgs {
            summary_to_stderr: true,
            table: table.to_string(),
            partitions: self.partitions,
            cluster: self.cluster.clone(),
            provider: "local".into(),
            root: root.display().to_string(),
            input: None,
            generate: Some(self.rows),
            value_size: self.value_size,
            file_size_mb: 64,
            seed: 1,
            provider_config: None,
            app_id: 0,
        })
        .map(|_| ())
    }
}

/// Runs the bulk-load bench.
pub fn run(args: BulkBenchArgs) -> Result<()> {
    if args.load.rows == 0 || args.sdk_threads == 0 {
        bail!("--rows and --sdk-threads must be at least 1");
    }
    let stamp = wingkv_common::time::unix_secs();
    let table = format!("bench_bulk_{stamp}");
    let sdk_table = format!("bench_sdk_{stamp}");
    let (root, _temp) = match &args.load.root {
        Some(r) => (r.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("wingkv-bench-bulk-").tempdir()?;
            // With --keep the files outlive the run; otherwise the directory goes at the end.
            if args.keep {
                (t.keep(), None)
            } else {
                (t.path().to_path_buf(), Some(t))
            }
        }
    };
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;

    // 1. Generate: partition, sort and write the SSTs, as a producer would.
    let started = Instant::now();
    args.load.generate(&table, &root)?;
    let generate = started.elapsed();
    let files = sst_files(&root.join(&args.load.cluster).join(&table))?;
    let file_bytes: u64 = files.iter().map(|(_, size)| size).sum();

    // 2. The physical floor: every replica needs its own copy of every file, on disk (after
    // the same idle spell as the load).
    let floor_dir = root.join("floor-copy");
    std::thread::sleep(super::IDLE_BEFORE);
    let started = Instant::now();
    for r in 0..args.load.replicas {
        copy_with_fsync(&files, &floor_dir.join(r.to_string()))?;
    }
    let floor = started.elapsed();
    std::fs::remove_dir_all(&floor_dir).ok();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(async {
        let mut config = ClientConfig::new(args.load.meta.clone());
        config.tls = args.load.tls.config()?;
        let client = Client::with_config(config).await?;
        let result = measure(&client, &args, &root, &table, &sdk_table).await;
        if !args.keep {
            for t in [&table, &sdk_table] {
                let _ = client.admin().drop_table(t, Some(1)).await;
            }
        }
        result
    });
    if !args.keep {
        std::fs::remove_dir_all(root.join(&args.load.cluster).join(&table)).ok();
    }
    let mut report = report?;
    let load_secs = report["load_sec"].as_f64().unwrap_or(0.0);
    report["rows"] = json!(args.load.rows);
    report["value_size"] = json!(args.load.value_size);
    report["partitions"] = json!(args.load.partitions);
    report["replicas"] = json!(args.load.replicas);
    report["sst_files"] = json!(files.len());
    report["sst_bytes"] = json!(file_bytes);
    report["generate_sec"] = json!(generate.as_secs_f64());
    report["floor_copy_fsync_sec"] = json!(floor.as_secs_f64());
    report["load_vs_floor"] = json!(load_secs / floor.as_secs_f64().max(1e-9));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn measure(client: &Client, args: &BulkBenchArgs, root: &Path, table: &str, sdk_table: &str) -> Result<Value> {
    super::ensure_table(client, table, args.load.partitions, args.load.replicas).await?;
    let steady = args.alongside.as_ref().map(|t| SteadyWorkload {
        meta: args.load.meta.clone(),
        tls: args.load.tls.clone(),
        table: t.clone(),
        records: args.alongside_records,
        workload: args.alongside_workload,
        target: args.alongside_target,
        threads: args.alongside_threads,
        value_size: args.load.value_size,
    });
    let before = match &steady {
        Some(w) => Some(ycsb::run(w.ycsb(args.alongside_before_secs)).await.context("the workload before the load")?),
        None => None,
    };
    // 3. Load, the replica servers' memory watched meanwhile (the watch ends either way), and
    // the workload alongside, stopped and awaited whatever the load's outcome.
    let stop = CancellationToken::new();
    let during = steady.as_ref().map(|w| tokio::spawn(ycsb::run_until(w.ycsb(ALONGSIDE_AT_MOST_SECS), stop.clone())));
    if steady.is_none() {
        // Alongside a workload the load starts after its measure of the workload alone instead.
        tokio::time::sleep(super::IDLE_BEFORE).await;
    }
    let rss = RssWatch::start(client).await;
    let timed = timed_load(client, args, root, table).await;
    let max_rss = rss.stop().await;
    stop.cancel();
    let during = match during {
        Some(h) => Some(h.await.context("the workload during the load")?.context("the workload during the load")?),
        None => None,
    };
    let (load, download) = timed?;

    // 4. Every sampled row reads back as generated.
    let bulk_table = client.open_table(table).await?;
    let checked = verify_sample(&bulk_table, args.load.rows, args.load.value_size).await?;

    // 5. The same rows through the SDK.
    let sdk_rows = args.sdk_rows.unwrap_or(args.load.rows).min(args.load.rows);
    let mut report = json!({
        "load_sec": load.as_secs_f64(),
        "download_sec": download.as_secs_f64(),
        // From the first status past downloading to success, so the two phases add up.
        "ingest_sec": load.saturating_sub(download).as_secs_f64(),
        "rows_checked": checked,
        "max_replica_rss_bytes": max_rss,
    });
    if let (Some(w), Some(before), Some(during)) = (&steady, before, during) {
        report["alongside"] = json!({
            "table": w.table,
            "workload": format!("{:?}", w.workload),
            "target_ops_per_sec": w.target,
            "before": summary(&before),
            "during": summary(&during),
        });
    }
    if sdk_rows > 0 {
        super::ensure_table(client, sdk_table, args.load.partitions, args.load.replicas).await?;
        let sdk = client.open_table(sdk_table).await?;
        let started = Instant::now();
        let errors = write_through_sdk(&sdk, sdk_rows, args.load.value_size, args.sdk_threads).await?;
        let took = started.elapsed().as_secs_f64();
        // Only the rows that were written count.
        let rate = sdk_rows.saturating_sub(errors) as f64 / took.max(1e-9);
        let all = args.load.rows as f64 / rate;
        report["sdk_rows"] = json!(sdk_rows);
        report["sdk_sec"] = json!(took);
        report["sdk_rows_per_sec"] = json!(rate);
        report["sdk_errors"] = json!(errors);
        report["sdk_all_rows_sec"] = json!(all);
        report["sdk_extrapolated"] = json!(sdk_rows < args.load.rows);
        report["bulk_load_speedup"] = json!(all / load.as_secs_f64().max(1e-9));
    }
    Ok(report)
}

/// Starts the bulk load of `table` and polls it to the end; answers the time to success and the
/// time until the job was first seen past downloading.
async fn timed_load(client: &Client, args: &BulkBenchArgs, root: &Path, table: &str) -> Result<(Duration, Duration)> {
    timed_load_from(client, &args.load.cluster, root, table).await
}

/// Bulk-loads `table` from the `local` layout under `root` (cluster `cluster`): answers how long
/// the whole load took and how long until every partition was downloaded.
pub(super) async fn timed_load_from(
    client: &Client,
    cluster: &str,
    root: &Path,
    table: &str,
) -> Result<(Duration, Duration)> {
    let admin = client.admin();
    let source = BulkLoadSource { provider: "local".into(), root: root.display().to_string(), cluster: cluster.into() };
    let started = Instant::now();
    admin.start_bulk_load(table, &source, false).await.context("start_bulk_load")?;
    let mut downloaded_at = None;
    let deadline = started + Duration::from_secs(3_600);
    let load = loop {
        let s = admin.bulk_load_status(table, None, false).await?;
        let now = started.elapsed();
        match s.status() {
            BulkLoadStatus::BlsDownloaded | BulkLoadStatus::BlsIngesting => {
                downloaded_at.get_or_insert(now);
            }
            BulkLoadStatus::BlsSucceed => break now,
            BulkLoadStatus::BlsFailed | BulkLoadStatus::BlsCanceled => {
                bail!("the bulk load ended {}: {}", s.status().as_str_name(), s.reason)
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("the bulk load did not finish within an hour (status {})", s.status().as_str_name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok((load, downloaded_at.unwrap_or(load)))
}

fn print_report(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "bulk load bench: {} rows of {} B, {} partitions x {} replicas, {} SST files ({:.1} MiB)",
        r["rows"],
        r["value_size"],
        r["partitions"],
        r["replicas"],
        r["sst_files"],
        f("sst_bytes") / 1048576.0
    );
    println!("  generate (bulkgen)          {:>9.2} s", f("generate_sec"));
    println!("  floor: copy+fsync x replicas {:>8.2} s", f("floor_copy_fsync_sec"));
    println!("  bulk load total             {:>9.2} s  ({:.2}x the floor)", f("load_sec"), f("load_vs_floor"));
    println!("    download + verify         {:>9.2} s", f("download_sec"));
    println!("    ingest                    {:>9.2} s", f("ingest_sec"));
    println!("  rows checked after the load {:>9}", r["rows_checked"]);
    println!("  max replica server RSS      {:>9.1} MiB", f("max_replica_rss_bytes") / 1048576.0);
    if let Some(a) = r.get("alongside") {
        println!("  workload {} on {} alongside:", a["workload"], a["table"]);
        println!("    before the load           {}", super::steady::line(&a["before"]));
        println!("    during the load           {}", super::steady::line(&a["during"]));
    }
    if r.get("sdk_rows").is_some() {
        let how = if r["sdk_extrapolated"] == true { " (extrapolated from the rows written)" } else { "" };
        println!(
            "  SDK: {} rows in {:.2} s = {:.0} rows/s, {} errors; all rows {:.1} s{how}",
            r["sdk_rows"],
            f("sdk_sec"),
            f("sdk_rows_per_sec"),
            r["sdk_errors"],
            f("sdk_all_rows_sec")
        );
        println!("  bulk load is {:.1}x faster than the SDK", f("bulk_load_speedup"));
    }
}

/// The SST files under `dir` (recursively), with their sizes.
pub(super) fn sst_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "sst") {
                out.push((e.path(), meta.len()));
            }
        }
    }
    Ok(out)
}

/// Copies `files` into `dest`, each file fsynced, then the directory.
pub(super) fn copy_with_fsync(files: &[(PathBuf, u64)], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    for (i, (src, _)) in files.iter().enumerate() {
        let to = dest.join(format!("{i}.sst"));
        std::fs::copy(src, &to).with_context(|| format!("copy {}", src.display()))?;
        std::fs::File::open(&to)?.sync_all()?;
    }
    std::fs::File::open(dest)?.sync_all()?;
    Ok(())
}

/// Reads about 1000 rows spread over the generated ones and checks their values.
pub(super) async fn verify_sample(table: &Table, rows: u64, value_size: usize) -> Result<u64> {
    let step = (rows / 1_000).max(1);
    let mut checked = 0;
    for (i, (hk, value)) in GeneratedRows::new(rows, value_size, 1).enumerate() {
        if !(i as u64).is_multiple_of(step) {
            continue;
        }
        let got = table.get(&hk, GENERATED_SORT_KEY).await?;
        if got.as_deref() != Some(value.as_slice()) {
            bail!(
                "row {hk} does not read back as generated after the bulk load (got {:?} bytes)",
                got.map(|v| v.len())
            );
        }
        checked += 1;
    }
    Ok(checked)
}

/// Writes the first `n` generated rows with `threads` concurrent sets; answers the errors.
pub(super) async fn write_through_sdk(table: &Table, n: u64, value_size: usize, threads: usize) -> Result<u64> {
    let (tx, rx) = async_channel(threads * 4);
    let errors = Arc::new(AtomicU64::new(0));
    let mut writers = JoinSet::new();
    for _ in 0..threads {
        let (rx, table, errors) = (rx.clone(), table.clone(), errors.clone());
        writers.spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some((hk, value)) = next else { break };
                if table.set(&hk, GENERATED_SORT_KEY, &value).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    for row in GeneratedRows::new(n, value_size, 1) {
        if tx.send(row).await.is_err() {
            break;
        }
    }
    drop(tx);
    while let Some(r) = writers.join_next().await {
        r.context("an SDK writer failed")?;
    }
    Ok(errors.load(Ordering::Relaxed))
}

type RowSender = tokio::sync::mpsc::Sender<(String, Vec<u8>)>;
type RowReceiver = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<(String, Vec<u8>)>>>;

/// A bounded queue many writers pull from.
fn async_channel(bound: usize) -> (RowSender, RowReceiver) {
    let (tx, rx) = tokio::sync::mpsc::channel(bound);
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

/// Samples the replica servers' resident memory from their `/metrics` every 250 ms.
struct RssWatch {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

impl RssWatch {
    async fn start(client: &Client) -> Self {
        let addrs: Vec<String> = match client.admin().list_nodes().await {
            Ok(nodes) => nodes.into_iter().map(|n| n.http_address).filter(|a| !a.is_empty()).collect(),
            Err(e) => {
                eprintln!("cannot list the replica servers, their memory goes unwatched: {e}");
                Vec::new()
            }
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut max = 0u64;
            loop {
                for a in &addrs {
                    if let Ok(text) = super::http_get(a, "/metrics").await {
                        if let Some(rss) = super::sample(&text, "process_resident_memory_bytes") {
                            max = max.max(rss as u64);
                        }
                    }
                }
                tokio::select! {
                    _ = token.cancelled() => break max,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the sampling, waits for the sampler and answers the largest RSS seen (bytes).
    async fn stop(self) -> u64 {
        self.stop.cancel();
        self.task.await.unwrap_or(0)
    }
}
