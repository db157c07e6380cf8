//! `wingkv bench backup`: bulk-load N generated rows into a fresh table, back it up to the
//! `local` provider (twice: the second backup copies what the first uploaded) and restore the
//! backup into a new table, timing both against the physical floor of the same bytes (the median
//! of three measures): one copy with fsync for the backup (each partition's data is written to
//! the provider once), one per replica for the restore (every replica holds its own copy).
//! Each measured phase starts after the same idle spell ([`super::IDLE_BEFORE`]).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use wingkv_client::{BackupStatus, BackupStatusResponse, BulkLoadSource, Client, ClientConfig, RestoreStatus};

use super::bulk::{copy_with_fsync, sst_files, timed_load_from, verify_sample, write_through_sdk, GeneratedLoadArgs};

/// The longest a backup or a restore may take in the bench.
const AT_MOST: Duration = Duration::from_secs(3_600);

/// Times each floor is measured (the median counts).
const FLOOR_ROUNDS: usize = 3;

/// The median of `d` (not empty).
fn median(d: &mut [Duration]) -> Duration {
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

/// Cores the servers may use and still count as quiet before the backup starts.
const QUIET_CORES: f64 = 0.2;

/// Arguments of `wingkv bench backup`.
#[derive(Args, Debug, Clone)]
pub struct BackupBenchArgs {
    #[command(flatten)]
    pub load: GeneratedLoadArgs,
    /// Rows written through the SDK after the load, before the backup: the first N generated
    /// rows again, with their values (they spread over every partition's key range, so the
    /// backup rewrites what it would otherwise upload as the loaded files).
    #[arg(long, default_value_t = 0)]
    pub writes_after_load: u64,
    /// Keep the tables and the files afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the backup bench.
pub fn run(args: BackupBenchArgs) -> Result<()> {
    if args.load.rows == 0 {
        bail!("--rows must be at least 1");
    }
    let stamp = wingkv_common::time::unix_secs();
    let (table, restored) = (format!("bench_backup_{stamp}"), format!("bench_restored_{stamp}"));
    let temp = tempfile::Builder::new().prefix("wingkv-bench-backup-").tempdir()?;
    let root = args.load.root.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;
    args.load.generate(&table, &root)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(async {
        let mut config = ClientConfig::new(args.load.meta.clone());
        config.tls = args.load.tls.config()?;
        let client = Client::with_config(config).await?;
        let result = measure(&client, &args, &root, &table, &restored).await;
        if !args.keep {
            for t in [&table, &restored] {
                let _ = client.admin().drop_table(t, Some(1)).await;
            }
        }
        result
    });
    if args.keep {
        let _ = temp.keep();
    } else {
        // The files generated for this run's table, also under a --root of the caller's (the
        // backups' directories went at the end of the measure).
        std::fs::remove_dir_all(root.join(&args.load.cluster).join(&table)).ok();
    }
    let mut report = report?;
    report["rows"] = json!(args.load.rows);
    report["value_size"] = json!(args.load.value_size);
    report["partitions"] = json!(args.load.partitions);
    report["replicas"] = json!(args.load.replicas);
    report["writes_after_load"] = json!(args.writes_after_load);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn measure(
    client: &Client,
    args: &BackupBenchArgs,
    root: &std::path::Path,
    table: &str,
    restored: &str,
) -> Result<Value> {
    let admin = client.admin();
    super::ensure_table(client, table, args.load.partitions, args.load.replicas).await?;
    let (load, _) = timed_load_from(client, &args.load.cluster, root, table).await?;
    if args.writes_after_load > 0 {
        let n = args.writes_after_load.min(args.load.rows);
        let errors = write_through_sdk(&client.open_table(table).await?, n, args.load.value_size, 64).await?;
        if errors > 0 {
            bail!("{errors} of the {n} writes after the load failed");
        }
    }
    let backups = root.join("backups");
    std::fs::create_dir_all(&backups)?;
    let backups_root = backups.display().to_string();

    // Backup: from the start to BK_SUCCEED (backup_info written), with the CPU every server
    // spent meanwhile.
    let cpu = super::cpu::CpuProbe::wingkv(client, &args.load.meta).await?;
    // The backup alone: once the load's own aftermath is over (every replica builds a raft
    // snapshot of its partition once the load is in, to let the job's files go).
    let settling = Instant::now();
    wait_post_load_snapshots(client, table, args.load.partitions as usize * args.load.replicas as usize).await?;
    cpu.wait_quiet(QUIET_CORES, AT_MOST).await?;
    let settle = settling.elapsed();
    tokio::time::sleep(super::IDLE_BEFORE).await;
    let cpu_before = cpu.sample().await?;
    let (done, backup) = timed_backup(client, table, &backups_root).await?;
    let backup_cpu = cpu_before.report(&cpu.sample().await?, args.load.rows);
    let backup_dir = backups.join(&done.cluster).join(table).join("backup").join(done.backup_id.to_string());

    // A second backup of the table, unchanged since: the files the first one uploaded as they
    // were in the DB are copied on the provider.
    let (second, second_backup) = timed_backup(client, table, &backups_root).await?;
    let second_dir = backups.join(&second.cluster).join(table).join("backup").join(second.backup_id.to_string());
    let files = sst_files(&backup_dir)?;
    let bytes: u64 = files.iter().map(|(_, s)| s).sum();

    // The floors: one copy of the backup's files for the backup, one per replica for a restore;
    // each the median of FLOOR_ROUNDS (this machine's disk takes from 1x to 3x as long for the
    // same copy from one minute to the next), each after an idle spell like the backup's (see
    // super::IDLE_BEFORE). The backup's floor is also measured back to back, as it was before.
    let floor_dir = root.join("floor-copy");
    let (mut backup_floors, mut hot_floors, mut restore_floors) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..FLOOR_ROUNDS {
        tokio::time::sleep(super::IDLE_BEFORE).await;
        for floors in [&mut backup_floors, &mut hot_floors] {
            let t = Instant::now();
            copy_with_fsync(&files, &floor_dir.join("backup"))?;
            floors.push(t.elapsed());
            std::fs::remove_dir_all(&floor_dir).ok();
        }
        tokio::time::sleep(super::IDLE_BEFORE).await;
        let t = Instant::now();
        for r in 0..args.load.replicas {
            copy_with_fsync(&files, &floor_dir.join(r.to_string()))?;
        }
        restore_floors.push(t.elapsed());
        std::fs::remove_dir_all(&floor_dir).ok();
    }
    let (backup_floor, hot_floor, restore_floor) =
        (median(&mut backup_floors), median(&mut hot_floors), median(&mut restore_floors));
    std::fs::remove_dir_all(&floor_dir).ok();

    // Restore: from the request to RS_SUCCEED (the table serves), after the same idle spell as
    // its floor.
    tokio::time::sleep(super::IDLE_BEFORE).await;
    let source = BulkLoadSource { provider: "local".into(), root: backups_root, cluster: done.cluster.clone() };
    let b = &done;
    let cpu_before = cpu.sample().await?;
    let started = Instant::now();
    admin.restore_app(&source, table, b.backup_id, restored, Some(args.load.replicas)).await.context("restore_app")?;
    loop {
        let s = admin.restore_status(restored, false).await?;
        match s.status() {
            RestoreStatus::RsSucceed => break,
            RestoreStatus::RsRunning if started.elapsed() < AT_MOST => {}
            other => bail!("the restore ended {}: {}", other.as_str_name(), s.reason),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restore = started.elapsed();
    let restore_cpu = cpu_before.report(&cpu.sample().await?, args.load.rows);
    let checked = verify_sample(&client.open_table(restored).await?, args.load.rows, args.load.value_size).await?;
    if !args.keep {
        std::fs::remove_dir_all(&backup_dir).ok();
        std::fs::remove_dir_all(&second_dir).ok();
    }
    let secs = |d: Duration| d.as_secs_f64();
    Ok(json!({
        "backup_id": b.backup_id,
        "load_sec": secs(load),
        "settle_sec": secs(settle),
        "backup_files": files.len(),
        "backup_bytes": bytes,
        "backup_sec": secs(backup),
        "backup_mib_per_sec": bytes as f64 / 1048576.0 / secs(backup).max(1e-9),
        "backup_floor_copy_fsync_sec": secs(backup_floor),
        "backup_floor_rounds_sec": backup_floors.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "idle_before_floor_sec": secs(super::IDLE_BEFORE),
        "backup_floor_back_to_back_sec": secs(hot_floor),
        "backup_floor_back_to_back_rounds_sec": hot_floors.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "backup_vs_back_to_back_floor": secs(backup) / secs(hot_floor).max(1e-9),
        "restore_floor_rounds_sec": restore_floors.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "backup_vs_floor": secs(backup) / secs(backup_floor).max(1e-9),
        "backup_cpu": backup_cpu,
        "second_backup_sec": secs(second_backup),
        "restore_sec": secs(restore),
        "restore_mib_per_sec": bytes as f64 / 1048576.0 / secs(restore).max(1e-9),
        "restore_floor_copy_fsync_sec": secs(restore_floor),
        "restore_vs_floor": secs(restore) / secs(restore_floor).max(1e-9),
        "restore_cpu": restore_cpu,
        "rows_checked": checked,
    }))
}

/// Waits until each of the `replicas` replicas of `table` has a raft snapshot
/// (`wingkv_raft_snapshot_index` > 0 on the replica servers' `/metrics`): once a bulk load is
/// in, every replica snapshots its partition so the job's files can go, a rewrite of its
/// data that would otherwise run alongside the backup measured.
async fn wait_post_load_snapshots(client: &Client, table: &str, replicas: usize) -> Result<()> {
    let admin = client.admin();
    let label = format!("table_id=\"{}\"", admin.query_table(table).await?.app_id);
    let started = Instant::now();
    loop {
        let mut snapshotted = 0;
        for node in admin.list_nodes().await? {
            let text = super::http_get(&node.http_address, "/metrics").await?;
            snapshotted += text
                .lines()
                .filter(|l| l.starts_with("wingkv_raft_snapshot_index{") && l.contains(&label))
                .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0))
                .count();
        }
        if snapshotted >= replicas {
            return Ok(());
        }
        if started.elapsed() > AT_MOST {
            bail!("only {snapshotted} of the {replicas} replicas of {table} built their snapshot after the load");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Backs `table` up to `root` on the `local` provider: its state once it succeeded, and how
/// long it took from the start to `BK_SUCCEED` (`backup_info` written).
async fn timed_backup(client: &Client, table: &str, root: &str) -> Result<(BackupStatusResponse, Duration)> {
    let admin = client.admin();
    let started = Instant::now();
    let b = admin.start_backup(table, "local", root).await.context("start_backup")?;
    loop {
        let s = admin.backup_status(table, Some(b.backup_id), false).await?.into_iter().next();
        let Some(s) = s else { bail!("backup {} is gone", b.backup_id) };
        match s.status() {
            BackupStatus::BkSucceed => return Ok((s, started.elapsed())),
            BackupStatus::BkRunning if started.elapsed() < AT_MOST => {}
            other => bail!("backup {} ended {} ({}): {}", b.backup_id, other.as_str_name(), s.reason, s.location),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_report(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "backup bench: {} rows of {} B, {} partitions x {} replicas; backup {} files ({:.1} MiB)",
        r["rows"],
        r["value_size"],
        r["partitions"],
        r["replicas"],
        r["backup_files"],
        f("backup_bytes") / 1048576.0
    );
    println!("  bulk load (setup)                 {:>9.2} s", f("load_sec"));
    println!("  until the servers are quiet       {:>9.2} s", f("settle_sec"));
    if r["writes_after_load"].as_u64().unwrap_or(0) > 0 {
        println!("  rows written through the SDK after the load: {}", r["writes_after_load"]);
    }
    let rounds = |k: &str| {
        r[k].as_array().map(|a| a.iter().map(|v| format!("{:.2}", v.as_f64().unwrap_or(0.0))).collect::<Vec<_>>())
    };
    println!(
        "  floor: copy+fsync once            {:>9.2} s  (median of {:?}, each after {:.0} s idle)",
        f("backup_floor_copy_fsync_sec"),
        rounds("backup_floor_rounds_sec").unwrap_or_default(),
        f("idle_before_floor_sec")
    );
    println!(
        "  floor: the same, back to back     {:>9.2} s  (median of {:?})",
        f("backup_floor_back_to_back_sec"),
        rounds("backup_floor_back_to_back_rounds_sec").unwrap_or_default()
    );
    println!(
        "  backup                            {:>9.2} s  ({:.2}x the floor, {:.2}x back to back, {:.1} MiB/s)",
        f("backup_sec"),
        f("backup_vs_floor"),
        f("backup_vs_back_to_back_floor"),
        f("backup_mib_per_sec")
    );
    println!("  backup {} (per row)", super::cpu::text(&r["backup_cpu"]).trim_start());
    println!("  second backup, nothing written    {:>9.2} s", f("second_backup_sec"));
    println!(
        "  floor: copy+fsync x replicas      {:>9.2} s  (median of {:?})",
        f("restore_floor_copy_fsync_sec"),
        rounds("restore_floor_rounds_sec").unwrap_or_default()
    );
    println!(
        "  restore                           {:>9.2} s  ({:.2}x the floor, {:.1} MiB/s)",
        f("restore_sec"),
        f("restore_vs_floor"),
        f("restore_mib_per_sec")
    );
    println!("  restore {} (per row)", super::cpu::text(&r["restore_cpu"]).trim_start());
    println!("  rows checked after the restore    {:>9}", r["rows_checked"]);
}
