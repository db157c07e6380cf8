//! Scale out under load: servers added to a running onebox get their share of replicas and
//! primaries once the meta level is `lively`, while a register workload stays linearizable and
//! no request fails beyond the SDK's own retries; every row survives the moves and the replicas
//! left behind are removed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::StatusRequest;
use wingkv_tests::cli::{shell, shell_ok};
use wingkv_tests::faults::{self, Fault, Workload};
use wingkv_tests::linearizability::{self, Verdict};
use wingkv_tests::onebox::{onebox, Guard};
use wingkv_tests::{channel, wait_for};

/// Rows written before the scale-out, read back after it.
const ROWS: usize = 2_000;

/// `SCRIPT`'s JSON answer (one document).
fn json(meta: &str, script: &str) -> Result<Value> {
    let out = shell_ok(meta, script)?;
    serde_json::from_str(out.trim()).with_context(|| format!("`{script}` answered {out}"))
}

/// Replicas and primaries per node address of `table`, every alive node listed (0 if none),
/// from `app TABLE -d` and `nodes -d` (what an operator sees).
fn shares(meta: &str, table: &str) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>)> {
    let nodes = json(meta, "nodes -d")?;
    let mut replicas: BTreeMap<String, i64> = BTreeMap::new();
    for n in nodes["nodes"].as_array().context("nodes")? {
        if n["status"] == "ALIVE" {
            replicas.insert(n["address"].as_str().context("address")?.to_string(), 0);
        }
    }
    let mut primaries = replicas.clone();
    let app = json(meta, &format!("app {table} -d"))?;
    for p in app["partitions"].as_array().context("partitions")? {
        for m in p["members"].as_array().context("members")? {
            *replicas.entry(m.as_str().context("member")?.to_string()).or_default() += 1;
        }
        if let Some(primary) = p["primary"].as_str() {
            *primaries.entry(primary.to_string()).or_default() += 1;
        }
    }
    Ok((replicas, primaries))
}

/// Writes `count` rows `PREFIX{i}` / `s` = `v{i}` into `table`.
async fn write_rows(meta: &str, table: &str, prefix: &str, count: usize) -> Result<()> {
    let t = faults::open_table(meta, table, Duration::from_secs(10)).await?;
    for i in 0..count {
        t.set(format!("{prefix}{i}"), "s", format!("v{i}")).await?;
    }
    Ok(())
}

/// Fails unless every row [`write_rows`] wrote reads back whole.
async fn check_rows(meta: &str, table: &str, prefix: &str, count: usize) -> Result<()> {
    let t = faults::open_table(meta, table, Duration::from_secs(10)).await?;
    for i in 0..count {
        let v = t.get(format!("{prefix}{i}"), "s").await?;
        ensure!(v.as_deref() == Some(format!("v{i}").as_bytes()), "{prefix}{i} of {table} after the moves: {v:?}");
    }
    Ok(())
}

fn spread(counts: &BTreeMap<String, i64>) -> i64 {
    counts.values().max().copied().unwrap_or(0) - counts.values().min().copied().unwrap_or(0)
}

/// Waits until every node hosts exactly the replicas of `app_id` the catalog gives it: the
/// replicas moved away are removed by the nodes' heartbeats.
async fn wait_left_replicas_removed(meta: &str, table: &str) -> Result<()> {
    wait_for("the replicas moved away to be removed", Duration::from_secs(120), || async {
        let app = json(meta, &format!("app {table} -d")).ok()?;
        let app_id = app["app_id"].as_u64()? as u32;
        let mut expected: BTreeMap<String, usize> = BTreeMap::new();
        for p in app["partitions"].as_array()? {
            for m in p["members"].as_array()? {
                *expected.entry(m.as_str()?.to_string()).or_default() += 1;
            }
        }
        let nodes = json(meta, "nodes").ok()?;
        for n in nodes["nodes"].as_array()? {
            let addr = n["address"].as_str()?.to_string();
            let mut admin = ReplicaAdminClient::new(channel(&addr).ok()?);
            let status = admin.status(StatusRequest { partition: None }).await.ok()?.into_inner();
            let hosted =
                status.replicas.iter().filter(|r| r.partition.as_ref().is_some_and(|p| p.app_id == app_id)).count();
            if hosted != expected.get(&addr).copied().unwrap_or(0) {
                return None;
            }
        }
        Some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_servers_get_their_share_under_a_linearizable_workload() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_reserving(&dir, 5, "")?;
    shell_ok(&meta, "create bal -p 16 -r 3")?;
    write_rows(&meta, "bal", "row", ROWS).await?;
    let (_, level, _) = shell(&meta, "get_meta_level")?;
    ensure!(level.contains("steady"), "the default meta level: {level}");

    // Primary handovers pause a partition's writes for about an election timeout: the SDK's
    // deadline covers that, so no request may fail.
    let workload = Workload { clients: 4, keys: 32, request_timeout: Duration::from_secs(10), ..Default::default() };
    let action = Fault::Action("add 2 replica servers, set_meta_level lively, wait until balanced".into());
    let (dir2, meta2) = (dir.clone(), meta.clone());
    let run = faults::run_with(
        std::slice::from_ref(&meta),
        "bal",
        &workload,
        20_261_204,
        Duration::from_secs(15),
        &[(Duration::from_secs(3), action)],
        move |_| {
            let (dir, meta) = (dir2.clone(), meta2.clone());
            async move {
                onebox(&dir, &["add", "--replicas", "2"])?;
                shell_ok(&meta, "set_meta_level lively")?;
                wait_for("replicas and primaries to be balanced", Duration::from_secs(300), || async {
                    let info = json(&meta, "cluster_info").ok()?;
                    let b = &info["balance_status"];
                    let done = info["alive_nodes"] == 5
                        && b["replicas_balanced"] == true
                        && b["primaries_balanced"] == true
                        && b["moves_in_flight"] == 0;
                    done.then_some(())
                })
                .await
            }
        },
    )
    .await?;

    let report = linearizability::check(&run.history, 20_000_000);
    ensure!(matches!(report.verdict, Verdict::Ok), "not linearizable: {report}");
    let lost = linearizability::lost_acknowledged_writes(&run.history, &run.final_values);
    ensure!(lost.is_empty(), "acknowledged writes lost on keys {lost:?}");
    ensure!(run.faults.len() == 1, "the scale-out did not run: {:?}", run.faults);
    ensure!(
        run.failures.is_empty(),
        "{} requests failed during the moves, e.g. {:?}",
        run.failures.len(),
        &run.failures[..run.failures.len().min(5)]
    );

    // What an operator sees: 48 replicas over 5 nodes (9 or 10 each), 16 primaries (3 or 4).
    let (replicas, primaries) = shares(&meta, "bal")?;
    ensure!(replicas.len() == 5, "nodes: {replicas:?}");
    ensure!(spread(&replicas) <= 1 && replicas.values().all(|c| *c >= 9), "replicas per node: {replicas:?}");
    ensure!(spread(&primaries) <= 1, "primaries per node: {primaries:?}");
    let info = json(&meta, "cluster_info")?;
    ensure!(info["meta_level"] == "lively", "{info}");
    ensure!(info["balance_status"]["replica_moves_done"].as_u64().unwrap_or(0) >= 18, "{info}");

    faults::wait_converged(&meta, "bal", Duration::from_secs(120)).await?;
    wait_left_replicas_removed(&meta, "bal").await?;
    check_rows(&meta, "bal", "row", ROWS).await?;
    println!(
        "scale-out 3 -> 5: {} ops, linearizable; replicas {replicas:?}, primaries {primaries:?}; {}",
        run.history.events.len(),
        info["balance"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_level_names_are_checked_and_kept() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;
    let (ok, _, err) = shell(&meta, "set_meta_level busy")?;
    ensure!(!ok && err.contains("unknown meta level 'busy'"), "{err}");
    shell_ok(&meta, "set_meta_level freezed")?;
    ensure!(json(&meta, "get_meta_level")?["meta_level"] == "freezed");
    // Kept across a meta restart (from the log, or a snapshot).
    onebox(&dir, &["restart", "meta1"])?;
    let level =
        wait_for("the meta to answer again", Duration::from_secs(60), || async { json(&meta, "get_meta_level").ok() })
            .await?;
    ensure!(level["meta_level"] == "freezed", "{level}");
    Ok(())
}

/// The ballot of every partition of `table` (bumped by each membership change).
fn ballots(meta: &str, table: &str) -> Result<Vec<u64>> {
    let app = json(meta, &format!("app {table} -d"))?;
    app["partitions"].as_array().context("partitions")?.iter().map(|p| p["ballot"].as_u64().context("ballot")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_leaves_a_bulk_loading_table_alone_and_resumes_after() -> Result<()> {
    const ROWS: u64 = 60_000;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    // Downloads at 1 MB/s per server: the load lasts seconds.
    let slow = "[bulk_load]\ndownload_bytes_per_sec = 1000000\nmin_free_disk_bytes = 0\n";
    let meta = wingkv_tests::onebox::start_reserving(&dir, 4, slow)?;
    let remote = tmp.path().join("remote");
    wingkv_tests::cli::bulkgen(
        &remote,
        &["--table", "t", "--partitions", "8", "--cluster", "onebox", "--generate", &ROWS.to_string()],
    )?;
    shell_ok(&meta, "create t -p 8 -r 3")?;
    let before = ballots(&meta, "t")?;
    shell_ok(&meta, &format!("start_bulk_load -a t -c onebox -p local -r {}", remote.display()))?;
    onebox(&dir, &["add", "--replicas", "1"])?;
    shell_ok(&meta, "set_meta_level lively")?;

    // While the load runs, the table is left alone, and says so.
    let mut seen_skipped = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        ensure!(std::time::Instant::now() < deadline, "the bulk load did not end within 180 s");
        let status = wingkv_tests::cli::bulk_load_status(&meta, "t").context("query_bulk_load_status")?;
        let info = json(&meta, "cluster_info")?;
        let running = !matches!(status["status"].as_str(), Some("BLS_SUCCEED" | "BLS_FAILED" | "BLS_CANCELED"));
        if !running {
            ensure!(status["status"] == "BLS_SUCCEED", "the bulk load ended {status}");
            break;
        }
        // Sampled while the job still ran: no membership of its table changed.
        ensure!(ballots(&meta, "t")? == before, "a partition of the loading table moved: {info}");
        seen_skipped |= info["balance_status"]["skipped_tables"] == serde_json::json!(["t"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(seen_skipped, "cluster_info never said the loading table was left alone");

    // Then it is balanced onto the new server.
    wait_for("the table to be balanced after its load", Duration::from_secs(300), || async {
        let (replicas, primaries) = shares(&meta, "t").ok()?;
        (replicas.len() == 4 && spread(&replicas) <= 1 && spread(&primaries) <= 1).then_some(())
    })
    .await?;
    ensure!(ballots(&meta, "t")? != before, "nothing moved after the load");
    faults::wait_converged(&meta, "t", Duration::from_secs(120)).await?;
    let reader = faults::open_table(&meta, "t", Duration::from_secs(10)).await?;
    let mut scan = reader.full_scan(wingkv_client::ScanOptions { batch_size: 5_000, ..Default::default() });
    let mut rows = 0u64;
    while let Some(r) = futures::StreamExt::next(&mut scan).await {
        r?;
        rows += 1;
    }
    ensure!(rows == ROWS, "{rows} rows of {ROWS} after the load and the moves");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_moves_one_replica_and_one_primary() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_reserving(&dir, 4, "")?;
    onebox(&dir, &["add", "--replicas", "1"])?;
    shell_ok(&meta, "create p -p 4 -r 3")?;
    write_rows(&meta, "p", "k", 200).await?;
    let partition = |meta: &str| -> Result<(Vec<String>, String)> {
        let app = json(meta, "app p -d")?;
        let p = &app["partitions"][0];
        let members = p["members"].as_array().context("members")?.iter().filter_map(|m| m.as_str()).map(String::from);
        Ok((members.collect(), p["primary"].as_str().unwrap_or_default().to_string()))
    };
    let (members, primary) = wait_for("partition p.0 to have a primary", Duration::from_secs(30), || async {
        partition(&meta).ok().filter(|(_, p)| !p.is_empty())
    })
    .await?;
    let nodes = json(&meta, "nodes")?;
    let outsider = nodes["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .filter_map(|n| n["address"].as_str())
        .find(|a| !members.iter().any(|m| m == a))
        .context("a node outside p.0")?
        .to_string();
    let leaving = members.iter().find(|m| **m != primary).context("a secondary")?.clone();

    // Refused with what is wrong.
    let (ok, _, err) = shell(&meta, &format!("propose -g p.0 -p move_replica -f {primary} -t {outsider}"))?;
    ensure!(!ok && err.contains("hand its primary over first"), "{err}");
    let (ok, _, err) = shell(&meta, &format!("propose -g p.9 -p move_primary -t {outsider}"))?;
    ensure!(!ok && err.contains("no partition 9"), "{err}");
    let (ok, _, err) = shell(&meta, &format!("propose -g p.0 -p move_primary -t {outsider}"))?;
    ensure!(!ok && err.contains("is not a member"), "{err}");

    let moved = json(&meta, &format!("propose -g p.0 -p move_replica -f {leaving} -t {outsider}"))?;
    let (after, _) = partition(&meta)?;
    ensure!(after.contains(&outsider) && !after.contains(&leaving) && after.len() == 3, "{moved} / {after:?}");
    let moved = json(&meta, &format!("propose -g p.0 -p move_primary -t {outsider}"))?;
    ensure!(moved["primary"] == outsider.as_str(), "{moved}");
    let (_, primary_now) = wait_for("the catalog to show the new primary", Duration::from_secs(30), || async {
        partition(&meta).ok().filter(|(_, p)| *p == outsider)
    })
    .await?;
    ensure!(primary_now == outsider);
    faults::wait_converged(&meta, "p", Duration::from_secs(60)).await?;
    check_rows(&meta, "p", "k", 200).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_server_drains_under_load_and_leaves() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_reserving(&dir, 5, "")?;
    onebox(&dir, &["add", "--replicas", "2"])?;
    wait_for("5 alive replica servers", Duration::from_secs(60), || async {
        (json(&meta, "cluster_info").ok()?["alive_nodes"] == 5).then_some(())
    })
    .await?;
    shell_ok(&meta, "create dec -p 16 -r 3")?;
    write_rows(&meta, "dec", "row", ROWS).await?;
    let state = wingkv_tests::cli::onebox_state(&dir)?;
    let port = state["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .find(|n| n["name"] == "replica5")
        .and_then(|n| n["port"].as_u64())
        .context("replica5's port")?;
    let leaving = format!("127.0.0.1:{port}");
    let (ok, _, err) = shell(&meta, "decommission 127.0.0.1:1")?;
    ensure!(!ok && err.contains("no replica server has the id or address"), "{err}");
    let (dir2, meta2, leaving2) = (dir.clone(), meta.clone(), leaving.clone());
    let workload = Workload { clients: 4, keys: 32, request_timeout: Duration::from_secs(10), ..Default::default() };
    let action = Fault::Action(format!("decommission {leaving}, wait until drained, remove it"));
    let run = faults::run_with(
        std::slice::from_ref(&meta),
        "dec",
        &workload,
        20_261_205,
        Duration::from_secs(15),
        &[(Duration::from_secs(3), action)],
        move |_| {
            let (dir, meta, leaving) = (dir2.clone(), meta2.clone(), leaving2.clone());
            async move {
                let (ok, _, err) = shell(&meta, "decommission replica5")?;
                ensure!(!ok, "a name that is not an id or address was taken: {err}");
                shell_ok(&meta, &format!("decommission {leaving}"))?;
                // Until it is drained, sampled: no partition ever below 3 members.
                let under = wait_for("the decommissioned server to be drained", Duration::from_secs(300), || async {
                    let app = json(&meta, "app dec -d").ok()?;
                    for p in app["partitions"].as_array()? {
                        if p["members"].as_array()?.len() < 3 {
                            return Some(Some(p.to_string()));
                        }
                    }
                    let nodes = json(&meta, "nodes -d").ok()?;
                    let me = nodes["nodes"].as_array()?.iter().find(|n| n["address"] == leaving.as_str())?.clone();
                    let drained = me["drain"] == "drained" && me["replica_count"] == 0 && me["primary_count"] == 0;
                    drained.then_some(None)
                })
                .await?;
                ensure!(under.is_none(), "a partition went under 3 replicas: {}", under.unwrap_or_default());
                onebox(&dir, &["remove", "replica5"])?;
                Ok(())
            }
        },
    )
    .await?;
    let report = linearizability::check(&run.history, 20_000_000);
    ensure!(matches!(report.verdict, Verdict::Ok), "not linearizable: {report}");
    let lost = linearizability::lost_acknowledged_writes(&run.history, &run.final_values);
    ensure!(lost.is_empty(), "acknowledged writes lost on keys {lost:?}");
    ensure!(run.faults.len() == 1, "the decommission did not run: {:?}", run.faults);
    ensure!(run.failures.is_empty(), "{} requests failed, e.g. {:?}", run.failures.len(), run.failures.first());

    // Stopped and gone: the table stays whole on the four others.
    let state = wingkv_tests::cli::onebox_state(&dir)?;
    ensure!(!state["nodes"].as_array().context("nodes")?.iter().any(|n| n["name"] == "replica5"), "{state}");
    let app = json(&meta, "app dec -d")?;
    for p in app["partitions"].as_array().context("partitions")? {
        let members = p["members"].as_array().context("members")?;
        ensure!(members.len() == 3 && !members.iter().any(|m| m == leaving.as_str()), "{p}");
    }
    faults::wait_converged(&meta, "dec", Duration::from_secs(120)).await?;
    check_rows(&meta, "dec", "row", ROWS).await?;
    Ok(())
}
