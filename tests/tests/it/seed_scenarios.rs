//! The seed scenarios: the failures users brought from other systems, each as a named test.
//! Here: two tables that share a name. The others live next to their features:
//! - restart during download: `bulk_load::restarts_during_download_neither_crash_nor_stall_the_job`;
//! - throttling during bulk load: `throttling::bulk_load_under_write_throttling_never_gets_stuck`;
//! - a frozen node mid-load: `throttling::a_frozen_replica_server_stalls_the_job_only_while_frozen`;
//! - a restart of a replica server hosting many partitions (every one serves afterwards):
//!   `sdk::writers_see_no_error_during_onebox_restarts`, `replication::graceful_stop_and_restart_reopens_every_replica`;
//! - supervisor restart of a dead child: `onebox::supervisor_restarts_crashed_children_and_leaves_no_orphans`;
//! - the bulk loader's race windows, forced by fail points: `failpoint_*` in `replica-server`.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;
use wingkv_tests::cli::{ensure_no_crash, shell, shell_ok, wait_bulk_load_success};
use wingkv_tests::onebox::Guard;
use wingkv_tests::{bin_path, wait_for};

/// Concurrent creates of one name make exactly one table; a drop while its bulk load downloads
/// cancels the job, and queries then answer TableDropped, never an internal error; once the
/// name is free, a new table of that name loads its own data, and nothing of the old one leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_tables_never_confuse_the_meta() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_with(
        &dir,
        "[bulk_load]\ndownload_bytes_per_sec = 1000000\nmin_free_disk_bytes = 0\n",
    )?;
    let remote = tmp.path().join("remote");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "same", "--partitions", "4", "--generate", "40000", "--root"])
        .arg(&remote)
        .output()?;
    ensure!(out.status.success(), "bulkgen: {}", String::from_utf8_lossy(&out.stderr));
    let start = format!("start_bulk_load -a same -c onebox -p local -r {}", remote.display());

    // Eight shells create the same name at once: one table, seven clear refusals.
    let creates: Vec<_> = (0..8)
        .map(|_| {
            let meta = meta.clone();
            std::thread::spawn(move || shell(&meta, "create same -p 4 -r 3"))
        })
        .collect();
    let mut created = 0;
    for c in creates {
        let (ok, _, err) = c.join().map_err(|_| anyhow::anyhow!("a create thread panicked"))??;
        if ok {
            created += 1;
        } else {
            ensure!(err.contains("already exists"), "a refused create must say why: {err}");
        }
    }
    ensure!(created == 1, "{created} creates of one name succeeded");
    let ls: Value = serde_json::from_str(shell_ok(&meta, "ls")?.trim())?;
    let same = ls["tables"].as_array().map(|t| t.iter().filter(|a| a["name"] == "same").count());
    ensure!(same == Some(1), "ls: {ls}");

    // Drop the table in the middle of its bulk load.
    shell_ok(&meta, &start)?;
    wait_for("download progress", Duration::from_secs(30), || async {
        let v = wingkv_tests::cli::bulk_load_status(&meta, "same")?;
        v["partitions"].as_array()?.iter().any(|p| p["progress_percent"].as_u64() > Some(0)).then_some(())
    })
    .await?;
    shell_ok(&meta, "drop same -r 2")?;
    for query in ["query_bulk_load_status -a same", "pause_bulk_load -a same", "cancel_bulk_load -a same -f"] {
        let (ok, _, err) = shell(&meta, query)?;
        ensure!(!ok && err.contains("table dropped"), "`{query}` on a dropped table: {err}");
    }
    // The name stays reserved while the dropped table can be recalled.
    let (ok, _, err) = shell(&meta, "create same -p 4 -r 3")?;
    ensure!(!ok && err.contains("reserved"), "a dropped table's name must stay reserved: {err}");

    // Once the reservation ends, a new table of that name is a table of its own.
    wait_for("the name to be free", Duration::from_secs(30), || async {
        shell(&meta, "create same -p 4 -r 3").ok().filter(|r| r.0).map(|_| ())
    })
    .await?;
    let (ok, out, _) = shell(&meta, "query_bulk_load_status -a same")?;
    ensure!(ok && out.contains("BLS_INVALID"), "the new table must not inherit the old job: {out}");
    shell_ok(&meta, &start)?;
    wait_bulk_load_success(&meta, "same", Duration::from_secs(120)).await?;
    let count: Value = serde_json::from_str(shell_ok(&meta, "use same; count_data")?.lines().last().unwrap_or("{}"))?;
    ensure!(count["count"] == 40_000, "the new table holds {count}");
    ensure_no_crash(&dir)
}
