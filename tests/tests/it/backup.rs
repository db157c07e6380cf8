//! Cold backup and restore (DESIGN §9) on a onebox: a backup restores every row after its table
//! is purged (and no expired one); a backup taken under writes restores a prefix of each
//! partition holding every write acknowledged before it started; replica servers and the meta
//! killed with SIGKILL mid-backup and mid-restore; a cancel, or a drop, leaves no file on the
//! provider; a corrupted file fails the restore by name and the new table never serves (not
//! even after its replica servers restart with the meta stopped); a table loaded in bulk backs
//! up as its loaded files, and a second backup copies the unchanged ones on the provider;
//! policies start backups and keep only their history count.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use serde_json::Value;
use wingkv_client::{
    Admin, BackupStatus, BackupStatusResponse, BulkLoadSource, Client, RestoreStatus, RestoreStatusResponse,
    ScanOptions, Table,
};
use wingkv_common::bulk_load::BulkLoadMetadata;
use wingkv_common::{ErrorCode, WingError};
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::GetRequest;
use wingkv_tests::cli::{onebox_node, shell, shell_ok, wait_bulk_load_success};
use wingkv_tests::faults::Stopped;
use wingkv_tests::moto::Moto;
use wingkv_tests::onebox::{onebox, start_configured, Guard};
use wingkv_tests::{bin_path, hash_key_in, wait_for};

/// An order-independent digest of every live record of `table` (key, value and expiry time),
/// and how many there are.
async fn digest(table: &Table) -> Result<(u64, u64)> {
    let mut scan = table.full_scan(ScanOptions { batch_size: 5_000, ..Default::default() });
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(r) = scan.next().await {
        let r = r?;
        let mut h = DefaultHasher::new();
        (&r.hash_key[..], &r.sort_key[..], &r.value[..], r.expire_ts).hash(&mut h);
        sum = sum.wrapping_add(h.finish());
        count += 1;
    }
    Ok((count, sum))
}

/// Waits until backup `id` of `table` is over; fails unless it ended in `want`.
async fn wait_backup(
    admin: &Admin,
    table: &str,
    id: u64,
    want: BackupStatus,
    limit: Duration,
) -> Result<BackupStatusResponse> {
    let end = wait_for(&format!("backup {id} of {table} to end"), limit, || async {
        let b = admin.backup_status(table, Some(id), true).await.ok()?.into_iter().next()?;
        (b.status() != BackupStatus::BkRunning).then_some(b)
    })
    .await?;
    ensure!(end.status() == want, "backup {id} ended {:?}, not {want:?}: {end:?}", end.status());
    Ok(end)
}

/// Waits until the restore of `table` is over; fails unless it ended in `want`.
async fn wait_restore(
    admin: &Admin,
    table: &str,
    want: RestoreStatus,
    limit: Duration,
) -> Result<RestoreStatusResponse> {
    let end = wait_for(&format!("the restore of {table} to end"), limit, || async {
        let r = admin.restore_status(table, true).await.ok()?;
        (r.status() != RestoreStatus::RsRunning).then_some(r)
    })
    .await?;
    ensure!(end.status() == want, "the restore of {table} ended {:?}, not {want:?}: {end:?}", end.status());
    Ok(end)
}

/// Drops `table` with a 1 s reserve and waits until no replica server of the onebox in `dir`
/// holds a replica of it (the meta purged it).
async fn drop_and_purge(admin: &Admin, dir: &Path, table: &str) -> Result<()> {
    let dropped = admin.drop_table(table, Some(1)).await?;
    wait_for(&format!("{table}'s replicas to be removed"), Duration::from_secs(60), || async {
        for n in 1..=3 {
            let (addr, _) = onebox_node(dir, &format!("replica{n}")).ok()?;
            let mut admin = wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient::new(
                wingkv_tests::channel(&addr).ok()?,
            );
            let s = admin.status(wingkv_proto::replica_admin::StatusRequest { partition: None }).await.ok()?;
            if s.into_inner().replicas.iter().any(|x| x.partition.is_some_and(|p| p.app_id == dropped.app_id)) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Fails when a server of the onebox in `dir` logged a panic.
fn ensure_no_panic(dir: &Path) -> Result<()> {
    for f in files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        ensure!(!text.contains("panicked at"), "{} logged a panic", f.display());
    }
    Ok(())
}

/// 1 M rows (bulk-loaded, then SDK writes, some with a TTL) backed up to S3 (moto), the table
/// dropped and purged, restored under a new name: every row equal, expired rows still gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_on_s3_restores_every_row_after_the_table_is_purged() -> Result<()> {
    const ROWS: u64 = 1_000_000;
    let tmp = tempfile::tempdir()?;
    let mut moto = Moto::start(&tmp.path().join("moto.log")).await?;
    moto.create_bucket("wingkv")?;
    let s3 = moto.s3_config("wingkv");
    let provider_config = tmp.path().join("provider.toml");
    std::fs::write(&provider_config, format!("[s3]\n{s3}"))?;
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "t", "--partitions", "8", "--provider", "s3", "--root", "loads"])
        .args(["--generate", &ROWS.to_string(), "--value-size", "24", "--provider-config"])
        .arg(&provider_config)
        .output()?;
    ensure!(out.status.success(), "bulkgen to s3: {}", String::from_utf8_lossy(&out.stderr));

    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta =
        start_configured(&dir, &format!("[bulk_load_provider.s3]\n{s3}"), &format!("[bulk_load.provider.s3]\n{s3}"))?;
    shell_ok(&meta, "create t -p 8 -r 3; start_bulk_load -a t -c onebox -p s3 -r loads")?;
    wait_bulk_load_success(&meta, "t", Duration::from_secs(300)).await?;

    let client = Client::connect([meta.clone()]).await?;
    let admin = client.admin();
    let t = client.open_table("t").await?;
    // SDK writes over and beside the loaded rows: overwrites, new rows, rows that live a day,
    // and rows that expire in a second (gone before the backup starts).
    let writes = futures::stream::iter(0..2_000u32)
        .map(|i| {
            let t = t.clone();
            async move {
                match i % 4 {
                    0 => t.set(format!("k{i}"), "s", format!("sdk-{i}")).await,
                    1 => t.set(format!("sdk{i}"), "s", format!("new-{i}")).await,
                    2 => t.set_with_ttl(format!("day{i}"), "s", "lives", Some(Duration::from_secs(86_400))).await,
                    _ => t.set_with_ttl(format!("short{i}"), "s", "expires", Some(Duration::from_secs(1))).await,
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for w in writes {
        w?;
    }
    // Loaded rows, new SDK rows and day-long rows: every short one has expired (each lives
    // one to two seconds, by when it was written).
    let before = wait_for("every short TTL row to expire", Duration::from_secs(60), || async {
        digest(&t).await.ok().filter(|d| d.0 == ROWS + 500 + 500)
    })
    .await?;

    // The shell starts it and prints its id.
    let started: Value = serde_json::from_str(shell_ok(&meta, "start_backup_app -a t -p s3 -r backups")?.trim())?;
    let id = started["backup_id"].as_u64().with_context(|| format!("no backup id in {started}"))?;
    let done = wait_backup(&admin, "t", id, BackupStatus::BkSucceed, Duration::from_secs(300)).await?;
    ensure!(
        done.partitions.len() == 8 && done.partitions.iter().all(|p| p.log_index > 0 && p.file_count > 0),
        "{done:?}"
    );
    let listed: Value = serde_json::from_str(shell_ok(&meta, "query_backup_status -a t")?.trim())?;
    assert_eq!(listed["backups"][0]["status"], "BK_SUCCEED", "{listed}");

    drop_and_purge(&admin, &dir, "t").await?;
    let restore = format!("restore_app -c onebox -a t -i {id} -n t2 -p s3 -r backups");
    let restoring: Value = serde_json::from_str(shell_ok(&meta, &restore)?.trim())?;
    ensure!(restoring["app_name"] == "t2", "{restoring}");
    wait_restore(&admin, "t2", RestoreStatus::RsSucceed, Duration::from_secs(300)).await?;
    let status: Value = serde_json::from_str(shell_ok(&meta, "query_restore_status -a t2")?.trim())?;
    assert_eq!(status["status"], "RS_SUCCEED", "{status}");

    let t2 = client.open_table("t2").await?;
    assert_eq!(digest(&t2).await?, before, "the restored table holds exactly the backed-up rows");
    assert_eq!(t2.get("short3", "s").await?, None, "an expired row came back");
    assert_eq!(t2.get("k0", "s").await?.as_deref(), Some(&b"sdk-0"[..]));
    let ttl = t2.ttl("day2", "s").await?;
    ensure!(ttl.is_some(), "a day-long row lost its TTL: {ttl:?}");
    ensure_no_panic(&dir)?;
    Ok(())
}

/// A onebox on the local provider whose replica servers upload and download at `rate` bytes/s
/// (0: unlimited), with `rows` rows of 100 B loaded into table `t` (8 partitions, 3 replicas).
/// Answers (onebox dir, meta address, provider dir: backups go to its `backups`).
async fn slow_onebox_with_rows(tmp: &Path, rate: u64, rows: u32) -> Result<(PathBuf, String, PathBuf)> {
    let dir = tmp.join("onebox");
    let root = tmp.join("provider");
    let replica = format!(
        "[bulk_load]\nupload_bytes_per_sec = {rate}\ndownload_bytes_per_sec = {rate}\nbackup_file_bytes = 1048576\n\
         min_free_disk_bytes = 0\n"
    );
    let loads = root.join("loads");
    wingkv_tests::cli::bulkgen(
        &loads,
        &["--table", "t", "--partitions", "8", "--generate", &rows.to_string(), "--value-size", "100"],
    )?;
    let meta = start_configured(&dir, "", &replica)?;
    let load = format!("create t -p 8 -r 3; start_bulk_load -a t -c onebox -p local -r {}", loads.display());
    if let Err(e) = shell_ok(&meta, &load) {
        let _ = onebox(&dir, &["stop"]);
        return Err(e);
    }
    Ok((dir, meta, root))
}

/// The backup root under provider dir `root`.
fn backups(root: &Path) -> String {
    root.join("backups").display().to_string()
}

/// The sorted xxh3s of the files the `bulk_load_metadata` in `dir` lists, of their content (a
/// bulk load lists md5s, a backup xxh3s).
fn listed_contents(dir: &Path) -> Result<Vec<String>> {
    use wingkv_common::file_digest::{DigestKind, FileDigest};
    let meta = BulkLoadMetadata::parse(&std::fs::read(dir.join("bulk_load_metadata"))?)?;
    let mut digests = Vec::new();
    for f in &meta.files {
        let bytes = std::fs::read(dir.join(&f.name))?;
        ensure!(
            FileDigest::of(f.digest.kind(), &bytes).matches(&f.digest),
            "{} in {}: {}",
            f.name,
            dir.display(),
            f.digest
        );
        digests.push(FileDigest::of(DigestKind::Xxh3, &bytes).hex().to_string());
    }
    digests.sort();
    Ok(digests)
}

/// The kinds of digest the `bulk_load_metadata` in `dir` lists.
fn listed_digest_kinds(dir: &Path) -> Result<Vec<&'static str>> {
    let meta = BulkLoadMetadata::parse(&std::fs::read(dir.join("bulk_load_metadata"))?)?;
    let mut kinds: Vec<_> = meta.files.iter().map(|f| f.digest.kind().name()).collect();
    kinds.dedup();
    Ok(kinds)
}

/// A second backup copies on the provider what the first one uploaded of the DB's own files
/// (on `local`, a hard link: the same inode), rewrites only the partition written since, and
/// restores every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_copies_the_unchanged_files_on_the_provider() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) = slow_onebox_with_rows(tmp.path(), 0, 20_000).await?;
    let _guard = Guard(dir.clone());
    wait_bulk_load_success(&meta, "t", Duration::from_secs(120)).await?;
    let client = Client::connect([meta.clone()]).await?;
    let admin = client.admin();
    let t = client.open_table("t").await?;
    let first = admin.start_backup("t", "local", &backups(&root)).await?;
    wait_backup(&admin, "t", first.backup_id, BackupStatus::BkSucceed, Duration::from_secs(120)).await?;
    // One new row, in partition 5: that partition's export is rewritten, not copied.
    let hk = hash_key_in(5, 8)?;
    t.set(&hk, "new", "row").await?;
    let before = digest(&t).await?;
    let second = admin.start_backup("t", "local", &backups(&root)).await?;
    wait_backup(&admin, "t", second.backup_id, BackupStatus::BkSucceed, Duration::from_secs(120)).await?;

    let part = |id: u64, p: u32| root.join("backups/onebox/t/backup").join(id.to_string()).join(p.to_string());
    for p in 0..8 {
        let (a, b) = (part(first.backup_id, p), part(second.backup_id, p));
        let (files_a, files_b) = (listed_contents(&a)?, listed_contents(&b)?);
        if p == 5 {
            ensure!(files_a != files_b, "partition 5 was written between the backups but holds the same files");
            continue;
        }
        ensure!(!files_a.is_empty() && files_a == files_b, "partition {p}: first {files_a:?}, second {files_b:?}");
        for f in files_under(&b).into_iter().filter(|f| f.extension().is_some_and(|e| e == "sst")) {
            let name = f.file_name().context("file name")?;
            let (ino_a, ino_b) = (std::fs::metadata(a.join(name))?.ino(), std::fs::metadata(&f)?.ino());
            ensure!(ino_a == ino_b, "partition {p}: {} was uploaded again, not copied", f.display());
        }
    }
    admin.restore_app(&source("local", &backups(&root)), "t", second.backup_id, "t2", None).await?;
    wait_restore(&admin, "t2", RestoreStatus::RsSucceed, Duration::from_secs(120)).await?;
    assert_eq!(digest(&client.open_table("t2").await?).await?, before, "the restore of the second backup");
    ensure_no_panic(&dir)?;
    Ok(())
}

/// A backup taken while every partition is written restores, for each partition, a prefix of
/// its writes that holds every write acknowledged before the backup started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_a_prefix_of_each_partition() -> Result<()> {
    const PARTITIONS: u32 = 8;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let root = tmp.path().join("provider");
    let meta = start_configured(&dir, "", "")?;
    shell_ok(&meta, "create t -p 8 -r 3")?;
    let client = Client::connect([meta.clone()]).await?;
    let admin = client.admin();
    let t = client.open_table("t").await?;

    // One writer per partition, each writing seq 0, 1, 2, ... under one hash key of its
    // partition, one acknowledged write after another.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..PARTITIONS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for p in 0..PARTITIONS {
        let (t, acked, stop, hk) = (t.clone(), acked.clone(), stop.clone(), hash_key_in(p, PARTITIONS)?);
        writers.spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                t.set(&hk, format!("{seq:08}"), seq.to_string()).await.with_context(|| format!("write {hk}/{seq}"))?;
                seq += 1;
                acked[p as usize].store(seq, Ordering::SeqCst);
            }
            anyhow::Ok(())
        });
    }
    wait_for("every writer to be under way", Duration::from_secs(30), || async {
        acked.iter().all(|a| a.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await?;
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let b = admin.start_backup("t", "local", &backups(&root)).await?;
    wait_backup(&admin, "t", b.backup_id, BackupStatus::BkSucceed, Duration::from_secs(120)).await?;
    stop.store(true, Ordering::SeqCst);
    while let Some(w) = writers.join_next().await {
        w??;
    }
    admin.restore_app(&source("local", &backups(&root)), "t", b.backup_id, "t2", None).await?;
    wait_restore(&admin, "t2", RestoreStatus::RsSucceed, Duration::from_secs(120)).await?;
    let t2 = client.open_table("t2").await?;
    for p in 0..PARTITIONS {
        let hk = hash_key_in(p, PARTITIONS)?;
        let rows: Vec<_> = t2.scan(&hk, ScanOptions::default()).collect::<Vec<_>>().await;
        let mut n = 0u64;
        for r in rows {
            let r = r?;
            ensure!(r.sort_key[..] == *format!("{n:08}").as_bytes(), "partition {p}: a gap before seq {n}: {r:?}");
            ensure!(r.value[..] == *n.to_string().as_bytes(), "partition {p}: seq {n} has another value");
            n += 1;
        }
        ensure!(
            n >= before[p as usize],
            "partition {p}: {n} writes restored, {} were acknowledged before",
            before[p as usize]
        );
    }
    ensure_no_panic(&dir)?;
    Ok(())
}

fn source(provider: &str, root: &str) -> BulkLoadSource {
    BulkLoadSource { provider: provider.into(), root: root.into(), cluster: "onebox".into() }
}

/// Waits until backup `id` of `t` has uploaded some bytes (it is mid-way).
async fn wait_uploading(admin: &Admin, id: u64) -> Result<()> {
    wait_for("the backup to upload", Duration::from_secs(60), || async {
        let b = admin.backup_status("t", Some(id), false).await.ok()?.into_iter().next()?;
        (b.uploaded_bytes > 0 && b.status() == BackupStatus::BkRunning).then_some(())
    })
    .await
}

/// SIGKILL of a replica server, then of the meta, in the middle of a backup and then of a
/// restore: both finish, the restored table equals the source, nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_finish_through_replica_and_meta_kills() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) = slow_onebox_with_rows(tmp.path(), 1_000_000, 150_000).await?;
    let _guard = Guard(dir.clone());
    wait_bulk_load_success(&meta, "t", Duration::from_secs(180)).await?;
    let client = Client::connect([meta.clone()]).await?;
    let admin = client.admin();
    let before = digest(&client.open_table("t").await?).await?;

    let b = admin.start_backup("t", "local", &backups(&root)).await?;
    wait_uploading(&admin, b.backup_id).await?;
    onebox(&dir, &["kill", "replica2"])?;
    onebox(&dir, &["kill", "meta1"])?;
    let done = wait_backup(&admin, "t", b.backup_id, BackupStatus::BkSucceed, Duration::from_secs(300)).await?;
    ensure!(done.partitions.iter().all(|p| p.file_count > 0), "{done:?}");

    admin.restore_app(&source("local", &backups(&root)), "t", b.backup_id, "t2", None).await?;
    wait_for("the restore to download", Duration::from_secs(60), || async {
        let r = admin.restore_status("t2", true).await.ok()?;
        let load = r.load?;
        load.partitions.iter().any(|p| p.progress_percent > 0).then_some(())
    })
    .await?;
    onebox(&dir, &["kill", "replica1"])?;
    onebox(&dir, &["kill", "meta1"])?;
    wait_restore(&admin, "t2", RestoreStatus::RsSucceed, Duration::from_secs(300)).await?;
    let t2 = client.open_table("t2").await?;
    assert_eq!(digest(&t2).await?, before);
    // Each replica's restore mark is cleared once the meta stops reporting the restore, so a
    // restart no longer holds the table back until a heartbeat answer.
    let app = format!("{}.", t2.configuration().app_id);
    wait_for("the replicas' restore marks to be cleared", Duration::from_secs(30), || async {
        let marks: Vec<String> = files_under(&dir)
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains("trash"))
            .filter(|p| p.file_name().is_some_and(|n| n == "db_options.json"))
            .filter(|p| {
                p.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&app))
            })
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        (marks.len() >= 24 && marks.iter().all(|m| m.contains("\"restoring\":false"))).then_some(())
    })
    .await?;
    ensure_no_panic(&dir)?;
    Ok(())
}

/// A canceled backup, and one whose table is dropped, leave no file on the provider and none on
/// the replica servers' disks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_or_dropped_backup_leaves_no_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) = slow_onebox_with_rows(tmp.path(), 1_000_000, 100_000).await?;
    let _guard = Guard(dir.clone());
    wait_bulk_load_success(&meta, "t", Duration::from_secs(180)).await?;
    let client = Client::connect([meta.clone()]).await?;
    let admin = client.admin();
    let local_exports =
        || files_under(&dir).into_iter().filter(|p| p.components().any(|c| c.as_os_str() == "backup")).count();

    let b = admin.start_backup("t", "local", &backups(&root)).await?;
    wait_uploading(&admin, b.backup_id).await?;
    let backup_dir = root.join("backups/onebox/t/backup").join(b.backup_id.to_string());
    ensure!(!files_under(&backup_dir).is_empty(), "the backup has not written to {}", backup_dir.display());
    let canceled: Value =
        serde_json::from_str(shell_ok(&meta, &format!("cancel_backup -a t -i {}", b.backup_id))?.trim())?;
    assert_eq!(canceled["status"], "BK_CANCELED", "{canceled}");
    wait_for("the canceled backup's files to be removed", Duration::from_secs(60), || async {
        let b = admin.backup_status("t", Some(b.backup_id), false).await.ok()?.into_iter().next()?;
        b.cleaned.then_some(())
    })
    .await?;
    let left = files_under(&backup_dir);
    ensure!(left.is_empty(), "files left on the provider after a cancel: {left:?}");
    ensure!(local_exports() == 0, "export files left on a replica server");

    let b = admin.start_backup("t", "local", &backups(&root)).await?;
    wait_uploading(&admin, b.backup_id).await?;
    admin.drop_table("t", None).await?;
    let end = wait_backup(&admin, "t", b.backup_id, BackupStatus::BkFailed, Duration::from_secs(60)).await?;
    ensure!(end.reason.contains("dropped"), "{end:?}");
    wait_for("the failed backup's files to be removed", Duration::from_secs(60), || async {
        let b = admin.backup_status("t", Some(b.backup_id), false).await.ok()?.into_iter().next()?;
        b.cleaned.then_some(())
    })
    .await?;
    let backup_dir = root.join("backups/onebox/t/backup").join(b.backup_id.to_string());
    let left = files_under(&backup_dir);
    ensure!(left.is_empty(), "files left on the provider after a drop: {left:?}");
    ensure!(local_exports() == 0, "export files left on a replica server");
    ensure_no_panic(&dir)?;
    Ok(())
}

/// A file of the backup corrupted on the provider: the restore fails naming it, and the new
/// table never serves (not even the partitions that loaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_backup_file_fails_the_restore_by_name_and_the_table_never_serves() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) = slow_onebox_with_rows(tmp.path(), 0, 20_000).await?;
    let _guard = Guard(dir.clone());
    wait_bulk_load_success(&meta, "t", Duration::from_secs(120)).await?;
    let client = Client::connect([meta.clone()]).await?;
    let admin = client.admin();
    let b = admin.start_backup("t", "local", &backups(&root)).await?;
    wait_backup(&admin, "t", b.backup_id, BackupStatus::BkSucceed, Duration::from_secs(120)).await?;

    // A table loaded in bulk and not written since backs up as its loaded files, uploaded as
    // they are: the same bytes in every partition. The backup lists them by xxh3.
    for p in 0..8 {
        let loaded = listed_contents(&root.join("loads/onebox/t").join(p.to_string()))?;
        let backup_dir = root.join("backups/onebox/t/backup").join(b.backup_id.to_string()).join(p.to_string());
        let backed_up = listed_contents(&backup_dir)?;
        ensure!(!loaded.is_empty() && loaded == backed_up, "partition {p}: loaded {loaded:?}, backed up {backed_up:?}");
        ensure!(
            listed_digest_kinds(&backup_dir)? == ["xxh3"],
            "partition {p}: {:?}",
            listed_digest_kinds(&backup_dir)?
        );
    }

    // One SST of partition 3: same size, one byte flipped in the middle.
    let part = root.join("backups/onebox/t/backup").join(b.backup_id.to_string()).join("3");
    let victim = files_under(&part)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .with_context(|| format!("no SST in {}", part.display()))?;
    let mut bytes = std::fs::read(&victim)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes)?;
    let name = victim.file_name().and_then(|n| n.to_str()).context("file name")?.to_string();

    admin.restore_app(&source("local", &backups(&root)), "t", b.backup_id, "t2", None).await?;
    let end = wait_restore(&admin, "t2", RestoreStatus::RsFailed, Duration::from_secs(120)).await?;
    ensure!(end.reason.contains(&name), "the failure does not name {name}: {}", end.reason);
    let t2 = client.open_table("t2").await?;
    let hk = hash_key_in(0, 8)?;
    match t2.get(&hk, "s").await {
        Ok(v) => bail!("the half-restored table served a read: {v:?}"),
        Err(e) => ensure!(e.to_string().contains("restore"), "unexpected error: {e}"),
    }

    // The gate outlives a restart, before any heartbeat answer: with the meta stopped, every
    // replica server is killed and restarted by the supervisor, and each still refuses the
    // table (asked directly: a client's retries would end asking the stopped meta).
    let members: Vec<String> = t2.configuration().partitions[0].members.iter().map(|m| m.address.clone()).collect();
    let partition = Some(wingkv_common::PartitionId::new(t2.configuration().app_id, 0).to_proto());
    let meta_stopped = Stopped::stop(onebox_node(&dir, "meta1")?.1.context("meta1's pid")? as i32);
    for r in ["replica1", "replica2", "replica3"] {
        let old = onebox_node(&dir, r)?.1;
        onebox(&dir, &["kill", r])?;
        wait_for(&format!("{r} to be restarted"), Duration::from_secs(60), || async {
            onebox_node(&dir, r).ok()?.1.filter(|pid| Some(*pid) != old).map(|_| ())
        })
        .await?;
    }
    let answers = wait_for("the restarted servers to answer a read of t2", Duration::from_secs(60), || async {
        let mut answers = Vec::new();
        for addr in &members {
            let mut data = DataClient::new(wingkv_tests::channel(addr).ok()?);
            let get = GetRequest { partition, hash_key: hk.clone().into(), sort_key: "s".into() };
            match data.get(get).await {
                Ok(r) => answers.push(Ok(r.into_inner())),
                Err(status) => match wingkv_tests::wing_error(&status) {
                    // A follower, or a server not listening yet: no answer about the table.
                    WingError::NotLeader { .. } => {}
                    _ if !status.metadata().contains_key(wingkv_common::error::ERROR_CODE_HEADER) => {}
                    e => answers.push(Err(e)),
                },
            }
        }
        (!answers.is_empty()).then_some(answers)
    })
    .await?;
    drop(meta_stopped);
    for answer in answers {
        match answer {
            Ok(r) => {
                bail!("after a restart, before any heartbeat answer, the half-restored table served a read: {r:?}")
            }
            Err(e) => ensure!(e.code() == ErrorCode::Unavailable && e.to_string().contains("restore"), "{e}"),
        }
    }
    ensure_no_panic(&dir)?;
    Ok(())
}

/// A policy backs its table up every interval and keeps only its history count: older backups
/// are removed from the provider; disabled, it starts no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_backs_up_every_interval_and_keeps_its_history_count() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) = slow_onebox_with_rows(tmp.path(), 0, 5_000).await?;
    let _guard = Guard(dir.clone());
    wait_bulk_load_success(&meta, "t", Duration::from_secs(120)).await?;
    let pol = root.join("pol");
    let add = |name: &str, start: &str| {
        format!("add_backup_policy -p {name} -b local -r {} -a t -i 2 -s {start} -c 2", pol.display())
    };
    let (ok, _, err) = shell(&meta, &add("daily", "00:00"))?;
    ensure!(ok, "{err}");
    let (ok, _, err) = shell(&meta, &add("bad", "25:00"))?;
    ensure!(!ok && err.contains("HH:MM"), "a bad start time must be refused: {err}");

    let table_dir = pol.join("onebox/t/backup");
    let policy = |meta: &str| -> Result<Value> {
        let v: Value = serde_json::from_str(shell_ok(meta, "query_backup_policy -p daily -b 10")?.trim())?;
        Ok(v["policies"][0].clone())
    };
    // At least 4 backups started; the 2 newest successful ones kept, older ones retired and
    // their files removed (a backup running meanwhile is neither).
    wait_for("the policy to start 4 backups and retire the older ones", Duration::from_secs(120), || async {
        let started = std::fs::read_dir(&table_dir).map(|d| d.count()).unwrap_or(0);
        let p = policy(&meta).ok()?;
        let listed = p["backups"].as_array()?;
        let succeeded = listed.iter().filter(|b| b["status"] == "BK_SUCCEED").count();
        let kept: Vec<String> =
            listed.iter().filter_map(|b| b["backup_id"].as_u64()).map(|id| id.to_string()).collect();
        let with_files: Vec<String> = std::fs::read_dir(&table_dir)
            .ok()?
            .flatten()
            .filter(|d| !files_under(&d.path()).is_empty())
            .map(|d| d.file_name().to_string_lossy().to_string())
            .collect();
        let only_kept_have_files = with_files.iter().all(|d| kept.contains(d));
        (started >= 4 && succeeded == 2 && only_kept_have_files).then_some(())
    })
    .await?;
    let (ok, _, err) = shell(&meta, "disable_backup_policy -p daily")?;
    ensure!(ok, "{err}");
    let p = policy(&meta)?;
    assert_eq!(p["enabled"], false, "{p}");
    let listed: Value = serde_json::from_str(shell_ok(&meta, "ls_backup_policy")?.trim())?;
    ensure!(listed["policies"].as_array().is_some_and(|a| a.len() == 1), "{listed}");
    ensure_no_panic(&dir)?;
    Ok(())
}
