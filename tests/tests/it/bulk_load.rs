//! Bulk load end to end on a onebox: bulkgen → local provider → start_bulk_load → BLS_SUCCEED,
//! every row readable with its value, replicas identical; and the clear errors of bad starts.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use serde_json::Value;
use wingkv_client::{Client, PartitionId, ScanOptions};
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::PartitionRequest;
use wingkv_tests::cli::{
    bulkgen, ensure_no_crash, shell, slow_onebox_with_layout, wait_bulk_load, wait_bulk_load_success,
};
use wingkv_tests::onebox::Guard;
use wingkv_tests::{bin_path, channel, wait_for};

fn value_of(i: u64) -> String {
    format!("value-{i}-{}", i.wrapping_mul(2_654_435_761) % 1_000_003)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_end_to_end() -> Result<()> {
    let rows: u64 = std::env::var("WINGKV_BULK_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;

    // Rows in a CSV, then the bulk-load layout on the local provider.
    let csv = tmp.path().join("rows.csv");
    let mut text = String::with_capacity(rows as usize * 32);
    for i in 0..rows {
        text.push_str(&format!("user{i},profile,{}\n", value_of(i)));
    }
    std::fs::write(&csv, text)?;
    let remote = tmp.path().join("remote");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "t", "--partitions", "8", "--cluster", "onebox", "--provider", "local"])
        .arg("--root")
        .arg(&remote)
        .arg("--input")
        .arg(&csv)
        .output()?;
    ensure!(out.status.success(), "bulkgen: {}", String::from_utf8_lossy(&out.stderr));
    let root = remote.display().to_string();

    let (ok, _, err) = shell(&meta, "create t -p 8 -r 3; use t; set before bulk kept")?;
    ensure!(ok, "create: {err}");

    // Bad starts: clear errors, nothing changes.
    for (script, want) in [
        (format!("start_bulk_load -a t -c onebox -p ftp -r {root}"), "unknown bulk-load provider 'ftp'"),
        (format!("start_bulk_load -a t -c nowhere -p local -r {root}"), "does not exist"),
        (format!("start_bulk_load -a nope -c onebox -p local -r {root}"), "no table named 'nope'"),
        (format!("start_bulk_load -a t -c onebox -p local -r {root} -i"), "allow_ingest_behind"),
    ] {
        let (ok, _, err) = shell(&meta, &script)?;
        ensure!(!ok && err.contains(want), "`{script}`: expected '{want}', got: {err}");
    }
    // A layout made for 2 partitions does not load into a table of 4.
    let (ok, _, err) = shell(&meta, "create four -p 4 -r 3")?;
    ensure!(ok, "{err}");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "four", "--partitions", "2", "--generate", "10", "--root"])
        .arg(&remote)
        .output()?;
    ensure!(out.status.success(), "bulkgen: {}", String::from_utf8_lossy(&out.stderr));
    let (ok, _, err) = shell(&meta, &format!("start_bulk_load -a four -c onebox -p local -r {root}"))?;
    ensure!(!ok && err.contains("has 2 partitions"), "a partition-count mismatch must be refused: {err}");

    let (ok, out, err) = shell(&meta, &format!("start_bulk_load -a t -c onebox -p local -r {root}"))?;
    ensure!(ok, "start_bulk_load: {err}");
    let started: Value = serde_json::from_str(out.trim())?;
    assert_eq!(started["status"], "BLS_DOWNLOADING");
    let (ok, _, err) = shell(&meta, &format!("start_bulk_load -a t -c onebox -p local -r {root}"))?;
    ensure!(!ok && err.contains("already has a bulk load"), "a second start must be refused: {err}");

    wait_bulk_load_success(&meta, "t", Duration::from_secs(180)).await?;

    // Every row, with its value, exactly once; the row written before the load is still there.
    let client = Client::connect([meta.clone()]).await?;
    let t = client.open_table("t").await?;
    let mut seen = 0u64;
    let mut scan = t.full_scan(ScanOptions { batch_size: 5_000, ..Default::default() });
    while let Some(r) = scan.next().await {
        let r = r?;
        if r.hash_key.as_ref() == b"before" {
            continue;
        }
        let hk = std::str::from_utf8(&r.hash_key)?;
        let i: u64 = hk.strip_prefix("user").context("unexpected key")?.parse()?;
        ensure!(r.value.as_ref() == value_of(i).as_bytes(), "{hk} has a wrong value");
        seen += 1;
    }
    assert_eq!(seen, rows, "a scan must count every loaded row exactly once");
    for i in (0..rows).step_by((rows / 200).max(1) as usize) {
        let got = t.get(format!("user{i}"), "profile").await?;
        ensure!(got.as_deref() == Some(value_of(i).as_bytes()), "user{i} not readable through the SDK");
    }
    assert_eq!(t.get("before", "bulk").await?.as_deref(), Some(&b"kept"[..]));

    // Replicas of each partition hold identical data.
    wingkv_tests::faults::wait_converged(&meta, "t", Duration::from_secs(30)).await?;

    // A finished job: clear works, then a new start is allowed again.
    let (ok, _, err) = shell(&meta, "clear_bulk_load -a t; query_bulk_load_status -a t")?;
    if !ok {
        bail!("clear: {err}");
    }
    Ok(())
}

/// The seed scenario: replica servers restart again and again while partitions download; no
/// process dies on its own, the job still succeeds, and no file of an abandoned attempt stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_during_download_neither_crash_nor_stall_the_job() -> Result<()> {
    // 20 cycles in CI; `./run.sh test --long` runs 100; WINGKV_SEED_CYCLES picks any number.
    let default = if std::env::var_os("WINGKV_LONG_TESTS").is_some() { 100 } else { 20 };
    let cycles: usize = std::env::var("WINGKV_SEED_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) = slow_onebox_with_layout(tmp.path(), "")?;
    let _guard = Guard(dir.clone());
    let (ok, _, err) = shell(&meta, &format!("create t -p 8 -r 3; start_bulk_load -a t -c onebox -p local -r {root}"))?;
    ensure!(ok, "{err}");

    for cycle in 0..cycles {
        let node = format!("replica{}", cycle % 3 + 1);
        wingkv_tests::onebox::onebox(&dir, &["restart", &node]).with_context(|| format!("cycle {cycle}"))?;
    }
    // The node restarted last has surely not finished its download: the restarts did land in
    // the middle of it.
    let (ok, out, err) = shell(&meta, "query_bulk_load_status -a t")?;
    ensure!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim())?;
    assert_eq!(v["status"], "BLS_DOWNLOADING", "the restarts did not happen during the download: {v}");
    wait_bulk_load_success(&meta, "t", Duration::from_secs(180)).await?;

    // No crash: the supervisor saw no unexpected exit.
    ensure_no_crash(&dir)?;
    // No leftover files of any attempt: once every member applied the ingestion, the files
    // kept for members are released too.
    wait_for("every bulk-load file to be released", Duration::from_secs(60), || async {
        leftover_files(&dir).is_empty().then_some(())
    })
    .await
    .with_context(|| format!("left behind: {:?}", leftover_files(&dir)))?;
    let client = Client::connect([meta]).await?;
    let t = client.open_table("t").await?;
    let n = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() }).count().await;
    assert_eq!(n, 60_000);
    Ok(())
}

fn leftover_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut left = Vec::new();
    for r in ["replica1", "replica2", "replica3"] {
        let replicas = dir.join(r).join("data").join("replica");
        for entry in std::fs::read_dir(&replicas).into_iter().flatten().flatten() {
            if let Ok(d) = std::fs::read_dir(entry.path().join("bulk_load")) {
                left.extend(d.flatten().map(|e| e.path()));
            }
        }
    }
    left
}

/// Cancel, pause/restart and a meta crash in the middle of a download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_pause_restart_and_meta_crash_mid_download() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) = slow_onebox_with_layout(tmp.path(), "")?;
    let _guard = Guard(dir.clone());
    let start = format!("start_bulk_load -a t -c onebox -p local -r {root}");
    let (ok, _, err) = shell(&meta, &format!("create t -p 8 -r 3; {start}"))?;
    ensure!(ok, "{err}");

    // Cancel mid-download: CANCELED at once, every local file gone within 5 s.
    wait_for("download progress", Duration::from_secs(30), || async {
        (!leftover_files(&dir).is_empty()).then_some(())
    })
    .await?;
    let (ok, out, err) = shell(&meta, "cancel_bulk_load -a t")?;
    ensure!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim())?["status"], "BLS_CANCELED");
    wait_for("every file of the canceled job to be removed", Duration::from_secs(5), || async {
        leftover_files(&dir).is_empty().then_some(())
    })
    .await?;
    // Every replica reports, after awaiting its tracker, that no download task is left.
    wait_for("every replica to report 0 live download tasks", Duration::from_secs(5), || async {
        let (ok, out, _) = shell(&meta, "query_bulk_load_status -a t -d").ok()?;
        let v: Value = serde_json::from_str(out.trim()).ok().filter(|_| ok)?;
        let replicas: Vec<&Value> =
            v["partitions"].as_array()?.iter().flat_map(|p| p["replicas"].as_array().into_iter().flatten()).collect();
        let done = replicas.len() == 8 * 3
            && replicas.iter().all(|r| r["status"] == "BLS_CANCELED" && r["live_tasks"].as_u64() == Some(0));
        done.then_some(())
    })
    .await?;
    let (ok, _, err) = shell(&meta, "pause_bulk_load -a t")?;
    ensure!(!ok && err.contains("BLS_CANCELED"), "pausing a canceled job must be refused: {err}");

    // A new job: pause, restart, then kill -9 the meta in the middle of the download.
    let (ok, _, err) = shell(&meta, &format!("clear_bulk_load -a t; {start}"))?;
    ensure!(ok, "{err}");
    let (ok, _, err) = shell(&meta, "pause_bulk_load -a t")?;
    ensure!(ok, "{err}");
    wait_bulk_load(&meta, "t", "BLS_PAUSED", Duration::from_secs(30)).await?;
    let (ok, _, err) = shell(&meta, "restart_bulk_load -a t")?;
    ensure!(ok, "{err}");
    wait_bulk_load(&meta, "t", "BLS_DOWNLOADING", Duration::from_secs(10)).await?;
    wingkv_tests::onebox::onebox(&dir, &["kill", "meta1"])?;
    wait_bulk_load(&meta, "t", "BLS_SUCCEED", Duration::from_secs(180)).await?;
    let client = Client::connect([meta]).await?;
    let t = client.open_table("t").await?;
    let n = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() }).count().await;
    assert_eq!(n, 60_000);
    Ok(())
}

/// The `bulk_load_metadata` of a hand-made layout.
enum Metadata {
    /// One that describes the files truly.
    Truthful,
    /// None at all.
    Missing,
    /// This JSON.
    Json(String),
}

/// Writes a hand-made 1-partition layout for `table`: `files` (name, content) in partition 0
/// and its `metadata`.
fn hand_made_layout(root: &std::path::Path, table: &str, files: &[(&str, &[u8])], metadata: Metadata) -> Result<()> {
    let dir = root.join("onebox").join(table);
    std::fs::create_dir_all(dir.join("0"))?;
    std::fs::write(dir.join("bulk_load_info"), format!(r#"{{"app_name":"{table}","partition_count":1}}"#))?;
    let mut entries = Vec::new();
    let mut total = 0;
    for (name, content) in files {
        std::fs::write(dir.join("0").join(name), content)?;
        let md5 = wingkv_common::file_digest::FileDigest::md5_of(content);
        let md5 = md5.hex();
        entries.push(format!(r#"{{"name":"{name}","size":{},"md5":"{md5}"}}"#, content.len()));
        total += content.len();
    }
    let meta = match metadata {
        Metadata::Truthful => format!(r#"{{"files":[{}],"file_total_size":{total}}}"#, entries.join(",")),
        Metadata::Json(j) => j,
        Metadata::Missing => return Ok(()),
    };
    std::fs::write(dir.join("0").join("bulk_load_metadata"), meta)?;
    Ok(())
}

/// Bad files fail the job with a reason naming the problem; the table keeps its data and takes
/// writes; a dropped table's job answers TableDropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_fail_the_job_and_leave_the_table_intact() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    // Small limits, so that oversized inputs are cheap to make.
    let meta = wingkv_tests::onebox::start_with(
        &dir,
        "[bulk_load]\nmax_files_per_partition = 3\nmax_metadata_bytes = 2000\n",
    )?;
    let remote = tmp.path().join("remote");

    // A real SST file to truncate.
    let sst_dir = tmp.path().join("real");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "real", "--partitions", "1", "--generate", "2000", "--root"])
        .arg(&sst_dir)
        .output()?;
    ensure!(out.status.success(), "bulkgen: {}", String::from_utf8_lossy(&out.stderr));
    let sst = std::fs::read(sst_dir.join("onebox/real/0/0.sst"))?;
    let half = &sst[..sst.len() / 2];
    let junk: &[u8] = b"definitely not an sst file";
    let md5_of = |b: &[u8]| wingkv_common::file_digest::FileDigest::md5_of(b).hex().to_string();
    let describe = |content: &[u8], md5: &str| {
        Metadata::Json(format!(
            r#"{{"files":[{{"name":"0.sst","size":{},"md5":"{md5}"}}],"file_total_size":{}}}"#,
            content.len(),
            content.len()
        ))
    };
    // (table, files, metadata, what the failure reason must say)
    let cases = vec![
        ("notsst", vec![("0.sst", junk)], Metadata::Truthful, "not an SST"),
        ("badmd5", vec![("0.sst", junk)], describe(junk, &"0".repeat(32)), "md5"),
        // Metadata of the whole file, half of it on the provider.
        ("truncated", vec![("0.sst", half)], describe(&sst, &md5_of(&sst)), "metadata says"),
        // Metadata that matches the truncated file: the SST itself is refused.
        ("truncmeta", vec![("0.sst", half)], Metadata::Truthful, "not an SST"),
        ("nometa", vec![("0.sst", &sst)], Metadata::Missing, "bulk_load_metadata does not exist"),
        (
            "escape",
            vec![("0.sst", &sst)],
            Metadata::Json(format!(
                r#"{{"files":[{{"name":"../0.sst","size":{},"md5":"{}"}}],"file_total_size":{}}}"#,
                sst.len(),
                md5_of(&sst),
                sst.len()
            )),
            "'../0.sst' contains a path separator",
        ),
        (
            "toomany",
            vec![("0.sst", &sst), ("1.sst", &sst), ("2.sst", &sst), ("3.sst", &sst)],
            Metadata::Truthful,
            "4 files, over the limit of 3 (bulk_load.max_files_per_partition)",
        ),
        (
            "bigmeta",
            vec![("0.sst", &sst)],
            Metadata::Json(format!(
                r#"{{"files":[{{"name":"0.sst","size":{},"md5":"{}"}}],"file_total_size":{},"pad":"{}"}}"#,
                sst.len(),
                md5_of(&sst),
                sst.len(),
                "x".repeat(3000)
            )),
            "over the limit of 2000 (bulk_load.max_metadata_bytes)",
        ),
    ];
    let root = remote.display().to_string();
    for (table, files, metadata, want) in cases {
        hand_made_layout(&remote, table, &files, metadata)?;
        let (ok, _, err) = shell(&meta, &format!("create {table} -p 1 -r 3; use {table}; set k s before"))?;
        ensure!(ok, "{err}");
        let (ok, _, err) = shell(&meta, &format!("start_bulk_load -a {table} -c onebox -p local -r {root}"))?;
        ensure!(ok, "{err}");
        let v = wait_for(&format!("{table} to fail"), Duration::from_secs(60), || async {
            let (ok, out, _) = shell(&meta, &format!("query_bulk_load_status -a {table}")).ok()?;
            let v: Value = serde_json::from_str(out.trim()).ok().filter(|_| ok)?;
            (v["status"] == "BLS_FAILED" || v["status"] == "BLS_SUCCEED").then_some(v)
        })
        .await?;
        ensure!(
            v["status"] == "BLS_FAILED" && v["reason"].as_str().is_some_and(|r| r.contains(want)),
            "{table}: expected BLS_FAILED with a reason that says '{want}': {v}"
        );
        let (ok, out, err) = shell(&meta, &format!("use {table}; get k s; set k s2 after; get k s2; count_data"))?;
        ensure!(ok && out.contains("before") && out.contains("after"), "{table} not intact: {out}{err}");
        // Nothing of the bad file reached the table: exactly the two rows written here.
        let counted: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        ensure!(counted.last().is_some_and(|c| c["count"] == 2), "{table} holds other rows: {out}");
    }
    // Dropping a table cancels its job; queries then answer TableDropped.
    let small = tmp.path().join("small");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "gone", "--partitions", "1", "--generate", "10", "--root"])
        .arg(&small)
        .output()?;
    ensure!(out.status.success());
    let script =
        format!("create gone -p 1 -r 3; start_bulk_load -a gone -c onebox -p local -r {}; drop gone", small.display());
    let (ok, _, err) = shell(&meta, &script)?;
    ensure!(ok, "{err}");
    let (ok, _, err) = shell(&meta, "query_bulk_load_status -a gone")?;
    ensure!(!ok && err.contains("table dropped"), "a dropped table's job must answer TableDropped: {err}");
    Ok(())
}

/// Raft apply never depends on the provider: a job succeeds, the provider loses its files, and a
/// replica server loses its disk. It comes back, the meta makes it a member again, and it ends
/// with every loaded row (from a member, or in a snapshot): its checksum equals the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_catches_up_after_the_provider_lost_the_files() -> Result<()> {
    let mut c = wingkv_tests::cluster::Cluster::start(1, 3).await?;
    let meta = c.meta_addrs()[0].clone();
    let tmp = tempfile::tempdir()?;
    let remote = tmp.path().join("remote");
    bulkgen(&remote, &["--table", "t", "--partitions", "4", "--generate", "30000"])?;
    c.create("t", 4, 3).await?;
    let (ok, _, err) = shell(&meta, &format!("start_bulk_load -a t -c onebox -p local -r {}", remote.display()))?;
    ensure!(ok, "{err}");
    wait_bulk_load_success(&meta, "t", Duration::from_secs(120)).await?;
    std::fs::remove_dir_all(&remote)?;

    c.replicas[2].stop().await?;
    c.replicas[2].wipe()?;
    c.replicas[2].restart().await?;
    let sums = match wait_for("every partition to have 3 members with the same rows", Duration::from_secs(120), || {
        agreed_rows(&c, "t")
    })
    .await
    {
        Ok(sums) => sums,
        Err(e) => return Err(e.context(describe_members(&c, "t").await).context(c.replicas[2].tail_log(40))),
    };
    ensure!(sums == 30_000, "the members agree on {sums} rows, not 30000");
    Ok(())
}

/// `--ingest_behind` on a table created with `rocksdb.allow_ingest_behind=true`: rows written
/// before the load keep their values, keys only in the load appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_behind_keeps_existing_values_and_adds_new_keys() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;
    let csv = tmp.path().join("rows.csv");
    let text: String = (0..2_000).map(|i| format!("user{i},s,loaded{i}\n")).collect();
    std::fs::write(&csv, text)?;
    let remote = tmp.path().join("remote");
    let input = csv.display().to_string();
    bulkgen(&remote, &["--table", "behind", "--partitions", "4", "--input", &input])?;
    let writes: String = (0..1_000).step_by(10).map(|i| format!("set user{i} s old{i}; ")).collect();
    let (ok, _, err) =
        shell(&meta, &format!("create behind -p 4 -r 3 -e rocksdb.allow_ingest_behind=true; use behind; {writes}"))?;
    ensure!(ok, "{err}");
    let (ok, _, err) =
        shell(&meta, &format!("start_bulk_load -a behind -c onebox -p local -r {} -i", remote.display()))?;
    ensure!(ok, "{err}");
    wait_bulk_load_success(&meta, "behind", Duration::from_secs(120)).await?;
    let client = Client::connect([meta.clone()]).await?;
    let t = client.open_table("behind").await?;
    for i in (0..2_000).step_by(10) {
        let want = if i < 1_000 { format!("old{i}") } else { format!("loaded{i}") };
        let got = t.get(format!("user{i}"), "s").await?;
        ensure!(got.as_deref() == Some(want.as_bytes()), "user{i}: {got:?}, expected {want}");
    }
    let n = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() }).count().await;
    ensure!(n == 2_000, "{n} rows, expected 2000");
    Ok(())
}

/// The members of every partition of `table` agree on their rows (same checksum); answers the
/// total of rows, or `None` while a partition is short of members or they disagree.
async fn agreed_rows(c: &wingkv_tests::cluster::Cluster, table: &str) -> Option<u64> {
    use wingkv_tests::cluster::{alive_nodes, fully_healthy};
    let alive = alive_nodes(&c.admin).await.ok()?;
    let cfg = c.admin.query_table(table).await.ok()?;
    if !fully_healthy(&cfg, &alive) {
        return None;
    }
    let mut total = 0;
    for p in &cfg.partitions {
        let pid = PartitionId::new(cfg.app_id, p.partition_index);
        let mut sums = BTreeSet::new();
        for m in &p.members {
            let mut admin = ReplicaAdminClient::new(channel(&m.address).ok()?);
            let req = PartitionRequest { partition: Some(pid.to_proto()), ..Default::default() };
            let s = admin.checksum(req).await.ok()?.into_inner();
            sums.insert((s.record_count, s.digest));
        }
        if sums.len() != 1 {
            return None;
        }
        total += sums.first()?.0;
    }
    Some(total)
}

/// Every partition of `table` with its members' row counts, applied index and digest (for
/// failure messages).
async fn describe_members(c: &wingkv_tests::cluster::Cluster, table: &str) -> String {
    let alive = wingkv_tests::cluster::alive_nodes(&c.admin).await;
    let Ok(cfg) = c.admin.query_table(table).await else {
        return "no configuration".into();
    };
    let mut out = format!("alive nodes {alive:?}\n");
    for p in &cfg.partitions {
        let pid = PartitionId::new(cfg.app_id, p.partition_index);
        out.push_str(&format!("partition {pid} primary {:?}:\n", p.primary.as_ref().map(|m| m.node_id)));
        for m in &p.members {
            let sum = match channel(&m.address) {
                Ok(ch) => {
                    let req = PartitionRequest { partition: Some(pid.to_proto()), ..Default::default() };
                    match ReplicaAdminClient::new(ch).checksum(req).await {
                        Ok(s) => format!("{:?}", s.into_inner()),
                        Err(e) => format!("error {}", e.message()),
                    }
                }
                Err(e) => format!("{e}"),
            };
            out.push_str(&format!("  node {} {}: {sum}\n", m.node_id, m.address));
        }
    }
    out
}

/// Bulk-load jobs one after another while replica servers restart, or lose their disk, in the
/// middle of downloads and ingestions: no process panics, every job succeeds, the members of
/// every partition end with the same rows, and no job directory is left behind. 4 cycles in
/// CI; `./run.sh test --long` runs 100; WINGKV_BULK_FAULT_CYCLES picks any number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_replica_restarts_and_wipes_mid_download_and_ingestion() -> Result<()> {
    let default = if std::env::var_os("WINGKV_LONG_TESTS").is_some() { 100 } else { 4 };
    let cycles: u64 = wingkv_tests::env_or("WINGKV_BULK_FAULT_CYCLES", default);
    // ~1.2 MB per replica at 1 MB/s: a fault lands in a download or an ingestion.
    let mut c = wingkv_tests::cluster::Cluster::start_with(
        1,
        4,
        "[bulk_load]\ndownload_bytes_per_sec = 1000000\nmin_free_disk_bytes = 0\n",
    )
    .await?;
    let meta = c.meta_addrs()[0].clone();
    let tmp = tempfile::tempdir()?;
    let remote = tmp.path().join("remote");
    bulkgen(&remote, &["--table", "t", "--partitions", "4", "--generate", "20000", "--value-size", "200"])?;
    c.create("t", 4, 3).await?;
    let start = format!("start_bulk_load -a t -c onebox -p local -r {}", remote.display());
    for cycle in 0..cycles {
        let (ok, _, err) = shell(&meta, &start)?;
        ensure!(ok, "cycle {cycle}: {err}");
        // A pseudo-random node and moment, the same for every run of a cycle number.
        let mix = cycle.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7;
        let victim = (mix % 4) as usize;
        tokio::time::sleep(Duration::from_millis(mix % 1_500)).await;
        if cycle % 2 == 0 {
            c.replicas[victim].restart().await.with_context(|| format!("cycle {cycle}: restart"))?;
        } else {
            c.replicas[victim].stop().await?;
            c.replicas[victim].wipe()?;
            c.replicas[victim].restart().await.with_context(|| format!("cycle {cycle}: wipe"))?;
        }
        wait_bulk_load_success(&meta, "t", Duration::from_secs(180)).await.with_context(|| format!("cycle {cycle}"))?;
        let rows = match wait_for("the members to agree", Duration::from_secs(120), || agreed_rows(&c, "t")).await {
            Ok(rows) => rows,
            Err(e) => return Err(e.context(format!("cycle {cycle}:\n{}", describe_members(&c, "t").await))),
        };
        ensure!(rows == 20_000, "cycle {cycle}: the members agree on {rows} rows, not 20000");
        let (ok, _, err) = shell(&meta, "clear_bulk_load -a t")?;
        ensure!(ok, "cycle {cycle}: {err}");
    }
    let job_dirs = || {
        let mut left = Vec::new();
        for r in &c.replicas {
            for entry in std::fs::read_dir(r.data_dir().join("replica")).into_iter().flatten().flatten() {
                if let Ok(d) = std::fs::read_dir(entry.path().join("bulk_load")) {
                    left.extend(d.flatten().map(|e| e.path()));
                }
            }
        }
        left
    };
    wait_for("every job directory to be released", Duration::from_secs(120), || async {
        job_dirs().is_empty().then_some(())
    })
    .await
    .with_context(|| format!("left behind: {:?}", job_dirs()))?;
    for r in &c.replicas {
        let log = std::fs::read_to_string(r.log_path())?;
        ensure!(!log.contains("panicked"), "a replica server panicked: {}", r.tail_log(40));
    }
    Ok(())
}
