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
use wingkv_tests::faults::{self, Fault, Stopped, Workload};
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

    run.ensure_linearizable_with_its_action(20_000_000)?;
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

/// A new table's primaries follow placement's would-be primaries, spread evenly, at the
/// default meta level (no balancer): left to election timers, a node led none (11, 5, 0 for 16
/// partitions). Best effort under load (a handover may fail; the group has a primary anyway):
/// one partition off its place is allowed, a node leading none is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_s_primaries_are_spread_over_the_nodes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;
    for (table, partitions) in [("pa", 16), ("pb", 8)] {
        shell_ok(&meta, &format!("create {table} -p {partitions} -r 3"))?;
        let (replicas, primaries) = shares(&meta, table)?;
        ensure!(replicas.len() == 3 && spread(&replicas) == 0, "{table}: replicas per node {replicas:?}");
        // Placement's would-be primary of each partition (its first member) and the primary.
        let app = json(&meta, &format!("app {table} -d"))?;
        let mut placed: BTreeMap<String, i64> = replicas.keys().map(|n| (n.clone(), 0)).collect();
        let mut off = Vec::new();
        for (i, p) in app["partitions"].as_array().context("partitions")?.iter().enumerate() {
            let first = p["members"][0].as_str().context("first member")?;
            *placed.entry(first.to_string()).or_default() += 1;
            if p["primary"].as_str() != Some(first) {
                off.push(format!("{i}: placed on {first}, primary {}", p["primary"]));
            }
        }
        ensure!(spread(&placed) <= 1, "{table}: would-be primaries per node {placed:?}");
        ensure!(
            primaries.values().sum::<i64>() == partitions && primaries.values().all(|p| *p > 0) && off.len() <= 1,
            "{table}: primaries per node {primaries:?}, off their place: {off:?}"
        );
        println!("{table}: primaries per node {primaries:?}, off their place: {off:?}");
    }
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
    run.ensure_linearizable_with_its_action(20_000_000)?;
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

/// `get_replica_count TABLE`: the catalog's count and the fewest and most members any
/// partition has now.
fn replica_count(meta: &str, table: &str) -> Result<Value> {
    json(meta, &format!("get_replica_count {table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_count_goes_from_3_to_5_and_back_under_load() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_reserving(&dir, 5, "")?;
    shell_ok(&meta, "create rc -p 8 -r 3")?;
    write_rows(&meta, "rc", "row", ROWS).await?;

    // Refused with what is wrong, and nothing changed.
    let (ok, _, err) = shell(&meta, "set_replica_count rc 5")?;
    ensure!(!ok && err.contains("3 replica servers are alive and not draining"), "{err}");
    let (ok, _, err) = shell(&meta, "set_replica_count rc 6")?;
    ensure!(!ok && err.contains("between 1 and 5"), "{err}");
    let (ok, _, err) = shell(&meta, "set_replica_count nope 3")?;
    ensure!(!ok && err.contains("no table named 'nope'"), "{err}");
    let count = replica_count(&meta, "rc")?;
    ensure!(count["replica_count"] == 3 && count["partitions_at_count"] == 8, "{count}");

    onebox(&dir, &["add", "--replicas", "2"])?;
    wait_for("5 alive replica servers", Duration::from_secs(60), || async {
        (json(&meta, "cluster_info").ok()?["alive_nodes"] == 5).then_some(())
    })
    .await?;
    let workload = Workload { clients: 4, keys: 32, request_timeout: Duration::from_secs(10), ..Default::default() };
    let action = Fault::Action("set_replica_count rc 5, wait, set_replica_count rc 3, wait".into());
    let meta2 = meta.clone();
    let run = faults::run_with(
        std::slice::from_ref(&meta),
        "rc",
        &workload,
        20_261_206,
        Duration::from_secs(15),
        &[(Duration::from_secs(2), action)],
        move |_| {
            let meta = meta2.clone();
            async move {
                for target in [5u64, 3] {
                    let set = json(&meta, &format!("set_replica_count rc {target}"))?;
                    ensure!(set["replica_count"] == target, "{set}");
                    // Sampled until every partition has the count: none ever under 3.
                    let under = wait_for(
                        &format!("every partition of rc to have {target} members"),
                        Duration::from_secs(240),
                        || async {
                            let count = replica_count(&meta, "rc").ok()?;
                            if count["min_members"].as_u64()? < 3 {
                                return Some(Some(count.to_string()));
                            }
                            (count["partitions_at_count"] == 8 && count["max_members"] == target).then_some(None)
                        },
                    )
                    .await?;
                    ensure!(under.is_none(), "a partition went under 3 members: {}", under.unwrap_or_default());
                }
                Ok(())
            }
        },
    )
    .await?;
    run.ensure_linearizable_with_its_action(20_000_000)?;
    ensure!(run.failures.is_empty(), "{} requests failed, e.g. {:?}", run.failures.len(), run.failures.first());

    let count = replica_count(&meta, "rc")?;
    ensure!(count["replica_count"] == 3 && count["partitions_at_count"] == 8 && count["max_members"] == 3, "{count}");
    faults::wait_converged(&meta, "rc", Duration::from_secs(120)).await?;
    // The members taken out lose their replicas: 24 left over 5 servers.
    wait_left_replicas_removed(&meta, "rc").await?;
    let (replicas, _) = shares(&meta, "rc")?;
    ensure!(replicas.values().sum::<i64>() == 24, "{replicas:?}");
    check_rows(&meta, "rc", "row", ROWS).await?;
    Ok(())
}

/// The id and address of every replica server `nodes` lists.
fn node_ids(meta: &str) -> Result<Vec<(u64, String)>> {
    let nodes = json(meta, "nodes")?;
    nodes["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .map(|n| Ok((n["node_id"].as_u64().context("node_id")?, n["address"].as_str().context("address")?.to_string())))
        .collect()
}

/// Partition 0 of `table` once it has a primary: its id, primary and members (addresses).
async fn first_partition(meta: &str, table: &str) -> Result<(wingkv_common::PartitionId, String, Vec<String>)> {
    let app = wait_for(&format!("{table}.0 to have a primary"), Duration::from_secs(30), || async {
        let app = json(meta, &format!("app {table} -d")).ok()?;
        app["partitions"][0]["primary"].as_str().is_some().then_some(app)
    })
    .await?;
    let pid = wingkv_common::PartitionId::new(app["app_id"].as_u64().context("app_id")? as u32, 0);
    let p = &app["partitions"][0];
    let primary = p["primary"].as_str().context("primary")?.to_string();
    let members =
        p["members"].as_array().context("members")?.iter().filter_map(|m| m.as_str()).map(String::from).collect();
    Ok((pid, primary, members))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_left_behind_is_taken_out_and_its_replica_removed() -> Result<()> {
    use wingkv_proto::replica_admin::{AddLearnerRequest, CreateReplicaRequest, Member};
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_reserving(&dir, 4, "")?;
    onebox(&dir, &["add", "--replicas", "1"])?;
    shell_ok(&meta, "create sl -p 2 -r 3")?;
    write_rows(&meta, "sl", "k", 100).await?;
    let (pid, primary, members) = first_partition(&meta, "sl").await?;
    let (outsider_id, outsider) =
        node_ids(&meta)?.into_iter().find(|(_, a)| !members.contains(a)).context("a node outside sl.0")?;

    // What a repair or move cut short (its meta killed) leaves: a learner in the group, with a
    // replica on its node. (The replica may be removed before the meta hears of the learner:
    // the meta's last report of the group does not list it. The learner stays all the same.)
    let mut primary_admin = ReplicaAdminClient::new(channel(&primary)?);
    let learner = Member { node_id: outsider_id, address: outsider.clone() };
    let added = primary_admin
        .add_learner(AddLearnerRequest {
            partition: Some(pid.to_proto()),
            learner: Some(learner),
            blocking: false,
            meta_term: None,
        })
        .await?
        .into_inner();
    ensure!(added.learners.iter().any(|l| l.node_id == outsider_id), "the learner was not added: {added:?}");
    let mut outsider_admin = ReplicaAdminClient::new(channel(&outsider)?);
    let created = outsider_admin
        .create_replica(CreateReplicaRequest {
            partition: Some(pid.to_proto()),
            partition_count: 2,
            ..Default::default()
        })
        .await;
    ensure!(created.is_ok(), "cannot create the learner's replica: {created:?}");

    wait_for("the left-behind learner and its replica to be removed", Duration::from_secs(60), || async {
        let (mut primary_admin, mut outsider_admin) = (primary_admin.clone(), outsider_admin.clone());
        let status = primary_admin.status(StatusRequest { partition: Some(pid.to_proto()) }).await.ok()?.into_inner();
        let listed = status.replicas.first()?.learners.iter().any(|l| l.node_id == outsider_id);
        let hosted = outsider_admin.status(StatusRequest { partition: None }).await.ok()?.into_inner();
        let hosts = hosted.replicas.iter().any(|r| r.partition.as_ref() == Some(&pid.to_proto()));
        (!listed && !hosts).then_some(())
    })
    .await?;
    let after = json(&meta, "app sl -d")?;
    ensure!(after["partitions"][0]["members"] == serde_json::json!(members), "the members changed: {after}");
    check_rows(&meta, "sl", "k", 100).await?;
    Ok(())
}

/// The onebox name and address of the replica server that hosts a replica of `table` it is
/// not a member of (a learner being copied to), among `names`.
async fn receiving(dir: &std::path::Path, meta: &str, table: &str, names: &[&str]) -> Option<(String, String)> {
    let app = json(meta, &format!("app {table} -d")).ok()?;
    let app_id = app["app_id"].as_u64()? as u32;
    let partitions = app["partitions"].as_array()?;
    let state = wingkv_tests::cli::onebox_state(dir).ok()?;
    for n in state["nodes"].as_array()? {
        let name = n["name"].as_str()?;
        if !names.contains(&name) {
            continue;
        }
        let addr = format!("127.0.0.1:{}", n["port"].as_u64()?);
        let Ok(ch) = channel(&addr) else { continue };
        let Ok(status) = ReplicaAdminClient::new(ch).status(StatusRequest { partition: None }).await else {
            continue;
        };
        for r in &status.into_inner().replicas {
            let Some(p) = r.partition.as_ref().filter(|p| p.app_id == app_id) else { continue };
            let members = partitions.get(p.partition_index as usize)?["members"].as_array()?;
            if !members.iter().any(|m| m == addr.as_str()) {
                return Some((name.to_string(), addr));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_survive_kills_of_the_receiving_server_and_of_the_meta() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    // Snapshots early and a short log behind them: a new replica is copied by a snapshot, and
    // every install takes 4 s, so a copy is in flight long enough to be killed in.
    let config = "[raft]\nsnapshot_after_logs = 100\nlogs_to_keep_after_snapshot = 10\n";
    let meta = wingkv_tests::onebox::start_reserving_with_env(
        &dir,
        5,
        config,
        &[("FAILPOINTS", "snapshot::install=sleep(4000)")],
    )?;
    shell_ok(&meta, "create km -p 8 -r 3")?;
    write_rows(&meta, "km", "row", 3_000).await?;
    onebox(&dir, &["add", "--replicas", "2"])?;

    let workload = Workload { clients: 4, keys: 32, request_timeout: Duration::from_secs(10), ..Default::default() };
    let action = Fault::Action(
        "set_meta_level lively; kill -9 a server receiving a replica mid-copy; kill -9 the meta mid-move; \
         wait until balanced"
            .into(),
    );
    let (dir2, meta2) = (dir.clone(), meta.clone());
    let run = faults::run_with(
        std::slice::from_ref(&meta),
        "km",
        &workload,
        20_261_207,
        Duration::from_secs(15),
        &[(Duration::from_secs(2), action)],
        move |_| {
            let (dir, meta) = (dir2.clone(), meta2.clone());
            async move {
                shell_ok(&meta, "set_meta_level lively")?;
                let added = ["replica4", "replica5"];
                let (name, addr) = wait_for("a replica copied to an added server", Duration::from_secs(60), || {
                    receiving(&dir, &meta, "km", &added)
                })
                .await?;
                onebox(&dir, &["kill", &name])?;
                println!("killed {name} ({addr}) while it received a replica");
                wait_for("another replica copied to an added server", Duration::from_secs(120), || {
                    receiving(&dir, &meta, "km", &added)
                })
                .await?;
                onebox(&dir, &["kill", "meta1"])?;
                println!("killed meta1 while a replica was being copied");
                // Sampled until balanced: no partition ever below 3 members.
                let under = wait_for("replicas and primaries to be balanced", Duration::from_secs(300), || async {
                    let count = replica_count(&meta, "km").ok()?;
                    if count["min_members"].as_u64()? < 3 {
                        return Some(Some(count.to_string()));
                    }
                    let info = json(&meta, "cluster_info").ok()?;
                    let b = &info["balance_status"];
                    let done = info["alive_nodes"] == 5
                        && b["replicas_balanced"] == true
                        && b["primaries_balanced"] == true
                        && b["moves_in_flight"] == 0;
                    done.then_some(None)
                })
                .await?;
                ensure!(under.is_none(), "a partition went under 3 members: {}", under.unwrap_or_default());
                Ok(())
            }
        },
    )
    .await?;
    run.ensure_linearizable_with_its_action(20_000_000)?;
    // A write in flight on a primary killed with its server may or may not have been applied:
    // the SDK answers so rather than retry it, and the checker takes it as either.
    println!("{} requests failed (a primary was killed under them): {:?}", run.failures.len(), run.failures);

    // Elections after the kills can still move a primary once the meta first saw the table
    // balanced; the balancer evens them out again, within a deadline.
    let spread_out = wait_for("replicas and primaries spread over the 5 nodes", Duration::from_secs(120), || async {
        let (replicas, primaries) = shares(&meta, "km").ok()?;
        (replicas.len() == 5 && spread(&replicas) <= 1 && spread(&primaries) <= 1).then_some(())
    })
    .await;
    spread_out.with_context(|| format!("replicas and primaries per node: {:?}", shares(&meta, "km").ok()))?;
    faults::wait_converged(&meta, "km", Duration::from_secs(120)).await?;
    // Nothing left behind by the moves cut short: every node hosts what the catalog says.
    wait_left_replicas_removed(&meta, "km").await?;
    check_rows(&meta, "km", "row", 3_000).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_moved_away_while_paused_loses_its_replica_when_it_returns() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_reserving(&dir, 4, "")?;
    onebox(&dir, &["add", "--replicas", "1"])?;
    shell_ok(&meta, "create pm -p 1 -r 3")?;
    write_rows(&meta, "pm", "k", 50).await?;
    let (pid, primary, members) = first_partition(&meta, "pm").await?;
    let leaving = members.iter().find(|m| **m != primary).context("a secondary")?.clone();
    let outsider = node_ids(&meta)?.into_iter().map(|(_, a)| a).find(|a| !members.contains(a)).context("outsider")?;
    let state = wingkv_tests::cli::onebox_state(&dir)?;
    let name = state["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .find(|n| n["port"].as_u64().is_some_and(|port| leaving.ends_with(&format!(":{port}"))))
        .and_then(|n| n["name"].as_str())
        .context("the leaving member's onebox name")?
        .to_string();
    let pid_of = wingkv_tests::cli::onebox_node(&dir, &name)?.1.context("its pid")? as i32;

    // The member is moved away while it is stopped: it never hears that it left, and once
    // resumed it campaigns alone, at ever higher terms, with no leader.
    let resume = Stopped::stop(pid_of);
    let moved = json(&meta, &format!("propose -g pm.0 -p move_replica -f {leaving} -t {outsider}"))?;
    ensure!(!moved["members"].as_array().context("members")?.iter().any(|m| m == leaving.as_str()), "{moved}");
    let group_term = {
        let mut admin = ReplicaAdminClient::new(channel(&primary)?);
        admin.status(StatusRequest { partition: Some(pid.to_proto()) }).await?.into_inner().replicas[0].term
    };
    let status = |addr: String| async move {
        let mut admin = ReplicaAdminClient::new(channel(&addr).ok()?);
        admin.status(StatusRequest { partition: Some(pid.to_proto()) }).await.ok().map(|s| s.into_inner())
    };
    // The meta stopped meanwhile, so that the member's first report after it resumes is one of
    // a term past the group's (it campaigns within an election timeout; the meta's pause stays
    // well under its node timeout).
    let meta_pid = wingkv_tests::cli::onebox_node(&dir, "meta1")?.1.context("meta1's pid")? as i32;
    let resume_meta = Stopped::stop(meta_pid);
    drop(resume);
    let campaigned = wait_for("the left member to campaign past the group's term", Duration::from_secs(8), || async {
        status(leaving.clone()).await?.replicas.first().is_some_and(|r| r.term > group_term).then_some(())
    })
    .await;
    drop(resume_meta);
    campaigned?;
    wait_for("the left member's replica to be removed", Duration::from_secs(60), || async {
        status(leaving.clone()).await.is_none().then_some(())
    })
    .await?;
    check_rows(&meta, "pm", "k", 50).await?;
    Ok(())
}
