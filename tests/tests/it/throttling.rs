//! Write throttling and request denial by table envs (DESIGN §6), applied live by every replica,
//! and bulk loads that cannot get stuck: under reject-throttling with a saturating writer, and
//! through a replica server frozen (SIGSTOP) for longer than the stall timeout.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use serde_json::Value;
use wingkv_client::{ErrorCode, ScanOptions};
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::StatusRequest;
use wingkv_tests::cli::{
    bulk_load_status, ensure_no_crash, onebox_node, shell, shell_ok, slow_onebox_with_layout, wait_bulk_load_success,
};
use wingkv_tests::faults::open_table;
use wingkv_tests::onebox::Guard;
use wingkv_tests::{channel, wait_for};

/// (delayed, rejected, denied) writes summed over the replica servers.
async fn admission_counters(dir: &Path) -> Result<(u64, u64, u64)> {
    let mut sum = (0, 0, 0);
    for name in ["replica1", "replica2", "replica3"] {
        let (addr, _) = onebox_node(dir, name)?;
        let mut admin = ReplicaAdminClient::new(channel(&addr)?);
        let s = admin.status(StatusRequest { partition: None }).await?.into_inner();
        sum = (sum.0 + s.writes_delayed, sum.1 + s.writes_rejected, sum.2 + s.requests_denied);
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_envs_delay_reject_deny_and_lift_live() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;
    shell_ok(&meta, "create t -p 1 -r 3; use t; set k s v")?;
    let deadline = Duration::from_secs(2);
    let t = open_table(&meta, "t", deadline).await?;

    // Bad values are refused, naming the problem, and change nothing.
    for (value, want) in [("fast", "fast"), ("1*delay*10,2*delay*20", "delay"), ("0*reject*5", "0")] {
        let (ok, _, err) = shell(&meta, &format!("use t; set_app_envs replica.write_throttling {value}"))?;
        ensure!(!ok && err.contains("replica.write_throttling") && err.contains(want), "'{value}' accepted: {err}");
    }
    let (ok, _, err) = shell(&meta, "use t; set_app_envs replica.deny_client_request sometimes*all")?;
    ensure!(!ok && err.contains("replica.deny_client_request"), "{err}");
    let envs: Value = serde_json::from_str(shell_ok(&meta, "use t; get_app_envs")?.lines().last().context("envs")?)?;
    ensure!(envs["envs"].as_object().is_some_and(|m| m.is_empty()), "a refused env was stored: {envs}");

    // A byte limit below any request: every write is rejected; the writer retries with backoff
    // and sees Busy only once its deadline is spent. Reads are not throttled.
    shell_ok(&meta, "use t; set_app_envs replica.write_throttling_by_size 1*reject*50")?;
    wait_for("the reject rule to reach the primary", Duration::from_secs(20), || async {
        t.set("probe", "s", "x").await.err().filter(|e| e.code() == ErrorCode::Busy).map(|_| ())
    })
    .await?;
    let started = Instant::now();
    let e = t.set("k", "s", "x").await.err().context("a write passed a reject rule")?;
    ensure!(e.code() == ErrorCode::Busy, "expected Busy, got {e}");
    ensure!(started.elapsed() >= deadline, "Busy came after {:?}, before the {deadline:?} deadline", started.elapsed());
    assert_eq!(t.get("k", "s").await?.as_deref(), Some(&b"v"[..]), "a rejected write changed the data");

    // Delay: every write is held ≥ 300 ms, then served.
    shell_ok(&meta, "use t; set_app_envs replica.write_throttling_by_size 1*delay*300")?;
    wait_for("the delay rule to reach the primary", Duration::from_secs(20), || async {
        t.set("k", "s", "d").await.ok()
    })
    .await?;
    for i in 0..5 {
        let started = Instant::now();
        t.set("k", format!("d{i}"), "delayed").await?;
        ensure!(started.elapsed() >= Duration::from_millis(300), "write {i} was not held: {:?}", started.elapsed());
    }

    // Per-request limit: 1 write/s for the table (2 per partition per second) with a short
    // client deadline; 6 quick writes cannot all pass within the windows they span.
    shell_ok(&meta, "use t; del_app_envs replica.write_throttling_by_size")?;
    shell_ok(&meta, "use t; set_app_envs replica.write_throttling 1*reject*100")?;
    let quick = open_table(&meta, "t", Duration::from_millis(300)).await?;
    let busy = wait_for("the QPS rule to reject a write", Duration::from_secs(20), || async {
        let mut busy = 0;
        for i in 0..6 {
            match quick.set("q", format!("{i}"), "x").await {
                Ok(()) => {}
                Err(e) if e.code() == ErrorCode::Busy => busy += 1,
                Err(_) => return None,
            }
        }
        (busy > 0).then_some(busy)
    })
    .await?;
    ensure!(busy >= 1);

    // Deny writes: OperationDisabled at once; reads go on.
    shell_ok(&meta, "use t; del_app_envs replica.write_throttling; set_app_envs replica.deny_client_write true")?;
    wait_for("writes to be denied", Duration::from_secs(20), || async {
        t.set("k", "s", "x").await.err().filter(|e| e.code() == ErrorCode::OperationDisabled).map(|_| ())
    })
    .await?;
    assert_eq!(t.get("k", "s0").await?, None);

    // Every env removed: writes pass untouched again (no hold, no refusal on any node).
    shell_ok(&meta, "use t; del_app_envs replica.deny_client_write")?;
    wait_for("writes to pass again", Duration::from_secs(20), || async { t.set("k", "s", "back").await.ok() }).await?;
    let before = admission_counters(&dir).await?;
    for i in 0..50 {
        t.set("free", format!("{i}"), "x").await?;
    }
    let after = admission_counters(&dir).await?;
    ensure!(before == after, "writes were still throttled or denied after del_app_envs: {before:?} -> {after:?}");
    ensure!(after.0 >= 5 && after.1 >= 2 && after.2 >= 1, "the counters missed the throttling: {after:?}");
    ensure_no_crash(&dir)
}

/// The seed scenario of throttling: a table under reject-throttling with a writer saturating
/// it; a bulk load started then never reaches a state that needs `cancel -f`, and succeeds
/// within its download time plus the backoff cap + 30 s, with the throttling still on (client
/// write throttling never holds the load back). Five times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_under_write_throttling_never_gets_stuck() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, meta, root) =
        slow_onebox_with_layout(tmp.path(), "bulk_load_retry = { base_ms = 100, cap_ms = 2000 }\n")?;
    let _guard = Guard(dir.clone());
    shell_ok(&meta, "create t -p 8 -r 3")?;
    let t = Arc::new(open_table(&meta, "t", Duration::from_millis(500)).await?);
    for round in 0..5 {
        shell_ok(&meta, "use t; set_app_envs replica.write_throttling 8*reject*20")?;
        // The writer saturates the limit for as long as the round lasts.
        let stop = Arc::new(AtomicBool::new(false));
        let (written, rejected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let writer = {
            let (t, stop, written, rejected) = (t.clone(), stop.clone(), written.clone(), rejected.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                // Bounded: a round lasts at most a few minutes.
                while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                    match t.set(format!("w{round}-{i}"), "s", "v").await {
                        Ok(()) => written.fetch_add(1, Ordering::Relaxed),
                        Err(_) => rejected.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            })
        };
        let started = shell(&meta, &format!("start_bulk_load -a t -c onebox -p local -r {root}"));
        // The whole load runs under the pressure: it moves or waits, never fails or needs a
        // cancel, and it finishes while the writer is still being rejected. Bounded by the
        // download at 1 MB/s per node plus the backoff cap (2 s) + 30 s.
        let deadline = Instant::now() + Duration::from_secs(40 + 32);
        let mut result = Err(anyhow::anyhow!("round {round}: not done within the deadline"));
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some(v) = bulk_load_status(&meta, "t") else { continue };
            match v["status"].as_str() {
                Some("BLS_SUCCEED") => {
                    result = Ok(());
                    break;
                }
                Some("BLS_DOWNLOADING" | "BLS_DOWNLOADED" | "BLS_INGESTING") => {}
                _ => {
                    result = Err(anyhow::anyhow!("round {round}: the job went to {v}"));
                    break;
                }
            }
        }
        let rejected_during_load = rejected.load(Ordering::Relaxed);
        shell_ok(&meta, "use t; del_app_envs replica.write_throttling")?;
        stop.store(true, Ordering::Relaxed);
        writer.await?;
        let (ok, _, err) = started?;
        ensure!(ok, "round {round}: start: {err}");
        result?;
        ensure!(rejected_during_load > 0, "round {round}: the writer was never throttled during the load");
        ensure!(written.load(Ordering::Relaxed) > 0, "round {round}: the writer never got through");
        shell_ok(&meta, "clear_bulk_load -a t")?;
    }
    let n = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() }).count().await;
    ensure!(n >= 60_000, "only {n} rows after the loads");
    ensure_no_crash(&dir)
}

/// A replica server frozen (SIGSTOP) mid-download for longer than the stall timeout: the meta
/// shows the stall and retries with backoff, and after SIGCONT the job completes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_server_stalls_the_job_only_while_frozen() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // A long node timeout: the freeze must not turn into a re-replication.
    let meta_config = "node_timeout_ms = 120000\nbulk_load_stall_timeout_ms = 3000\n\
                       bulk_load_retry = { base_ms = 100, cap_ms = 2000 }\n";
    let (dir, meta, root) = slow_onebox_with_layout(tmp.path(), meta_config)?;
    let _guard = Guard(dir.clone());
    shell_ok(&meta, &format!("create t -p 8 -r 3; start_bulk_load -a t -c onebox -p local -r {root}"))?;
    wait_for("download progress", Duration::from_secs(30), || async {
        let v = bulk_load_status(&meta, "t")?;
        v["partitions"].as_array()?.iter().any(|p| p["progress_percent"].as_u64() > Some(0)).then_some(())
    })
    .await?;

    let pid = onebox_node(&dir, "replica2")?.1.context("replica2 is not running")?;
    // SAFETY: kill(2) on a pid of our onebox; no memory is touched.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) } == 0, "SIGSTOP failed");
    let stalled = wait_for("the meta to show a stalled partition", Duration::from_secs(60), || async {
        let v = bulk_load_status(&meta, "t")?;
        let parts = v["partitions"].as_array()?;
        let stalled = parts.iter().any(|p| p["stalled_since_ms"].as_u64() > Some(0));
        let retried = parts.iter().any(|p| p["drive_attempts"].as_u64() > Some(0));
        (stalled && retried).then_some(v)
    })
    .await;
    // SAFETY: as above; the node runs on whatever happened.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let stalled = stalled?;
    ensure!(stalled["status"] == "BLS_DOWNLOADING", "the freeze moved the job to {}", stalled["status"]);

    wait_bulk_load_success(&meta, "t", Duration::from_secs(180)).await?;
    let t = open_table(&meta, "t", Duration::from_secs(5)).await?;
    let n = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() }).count().await;
    assert_eq!(n, 60_000);
    ensure_no_crash(&dir)
}
