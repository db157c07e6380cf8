//! What operators see of a running onebox after a workload: every server's `/metrics` (request
//! rates and latencies, raft state per partition, RocksDB figures, bulk-load progress,
//! throttling counters, memory) with sane values, `/health`, gRPC health and reflection,
//! `server_info`/`nodes -d`, and JSON logs with a span per request naming its partition.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use wingkv_tests::bin_path;
use wingkv_tests::cli::{shell_ok, wait_bulk_load_success};
use wingkv_tests::metrics::{find, http_get, scrape, sum};
use wingkv_tests::onebox::{start_configured_env, Guard};

fn http_addr(dir: &Path, node: &str) -> Result<String> {
    let path = dir.join(node).join("data").join("http.addr");
    Ok(std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?.trim().to_string())
}

fn bench(args: &[&str]) -> Result<Value> {
    let out = Command::new(bin_path("wingkv")).arg("bench").args(args).output()?;
    ensure!(out.status.success(), "bench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_server_info_of_a_onebox_after_a_workload() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let env = [("WINGKV_LOG_JSON", "1"), ("RUST_LOG", "info,openraft=warn,wingkv_common::metrics=debug")];
    let meta = start_configured_env(&dir, "", "", &env)?;
    let _guard = Guard(dir.clone());
    let replicas: Vec<String> =
        ["replica1", "replica2", "replica3"].iter().map(|n| http_addr(&dir, n)).collect::<Result<_>>()?;
    let meta_http = http_addr(&dir, "meta1")?;

    // A workload: YCSB load and run through the bench (which checks its own reads), writes held
    // by a delay throttle, and a small bulk load.
    shell_ok(&meta, "create usertable -p 4 -r 3; use usertable; set_app_envs replica.write_throttling 100*delay*2")?;
    let load = bench(&["ycsb", "load", "--meta", &meta, "--records", "2000", "--threads", "16", "--json"])?;
    ensure!(load["operations"] == 2000 && load["errors"] == 0, "load: {load}");
    let run = bench(&[
        "ycsb",
        "run",
        "--meta",
        &meta,
        "--records",
        "2000",
        "--operations",
        "3000",
        "--threads",
        "16",
        "--workload",
        "a",
        "--json",
    ])?;
    ensure!(run["operations"] == 3000 && run["errors"] == 0, "run: {run}");
    ensure!(run["per_operation"]["read"]["misses"] == 0, "reads missed loaded records: {run}");
    ensure!(run["per_operation"]["read"]["p99_us"].as_u64().is_some_and(|p| p > 0), "{run}");
    // CPU per operation: every server's wingkv_process_cpu_seconds and the bench's own, in the run.
    let positive = |k: &str| run["cpu"][k].as_f64().is_some_and(|v| v > 0.0);
    ensure!(positive("servers_us_per_op") && positive("client_us_per_op"), "cpu per op: {}", run["cpu"]);
    let remote = tmp.path().join("remote");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "bl", "--partitions", "4", "--generate", "5000", "--root"])
        .arg(&remote)
        .output()?;
    ensure!(out.status.success(), "bulkgen: {}", String::from_utf8_lossy(&out.stderr));
    shell_ok(&meta, "create bl -p 4 -r 3")?;
    shell_ok(&meta, &format!("start_bulk_load -a bl -c onebox -p local -r {}", remote.display()))?;
    wait_bulk_load_success(&meta, "bl", Duration::from_secs(120)).await?;
    // A request for a partition the table does not have: refused as such (not "not hosted", which
    // a client would retry), and its failure is logged in the request's span.
    let mut data =
        wingkv_proto::data::data_client::DataClient::connect(format!("http://{}", onebox_replica(&dir)?)).await?;
    let bad = wingkv_proto::data::GetRequest {
        partition: Some(wingkv_proto::common::PartitionId { app_id: 1, partition_index: 99 }),
        hash_key: "h".into(),
        sort_key: "s".into(),
    };
    ensure!(data.get(bad).await.is_err(), "partition 99 of a 4-partition table answered");

    // Replica servers.
    let mut all = Vec::new();
    for addr in &replicas {
        let (code, body) = http_get(addr, "/health").await?;
        ensure!(code == 200 && body.trim() == "ok", "/health of {addr}: {code} {body}");
        all.push(scrape(addr).await?);
    }
    let total = |name: &str, labels: &[(&str, &str)]| all.iter().map(|s| sum(s, name, labels)).sum::<f64>();
    let sets = total("wingkv_requests_total", &[("service", "Data"), ("method", "Set"), ("code", "OK")]);
    ensure!(sets >= 2000.0 + 1000.0, "only {sets} successful sets counted (2000 loaded + ~1500 updates)");
    let gets = total("wingkv_request_duration_seconds_count", &[("service", "Data"), ("method", "Get")]);
    ensure!(gets >= 1000.0, "only {gets} gets timed");
    let slow =
        total("wingkv_request_duration_seconds_bucket", &[("service", "Data"), ("method", "Get"), ("le", "+Inf")]);
    ensure!(slow == gets, "histogram +Inf bucket {slow} != count {gets}");
    let refused =
        total("wingkv_requests_total", &[("service", "Data"), ("method", "Get"), ("code", "InvalidArgument")]);
    ensure!(refused >= 1.0, "the request for partition 1.99 is not counted as InvalidArgument");
    ensure!(total("wingkv_requests_total", &[("service", "RaftTransport")]) > 0.0, "raft traffic is not counted");
    ensure!(total("wingkv_process_cpu_seconds", &[]) > 0.0, "no CPU seconds exported");
    ensure!(total("wingkv_throttling_delayed_writes_total", &[]) > 0.0, "the delay throttle delayed nothing");
    let (entries, writes) =
        (total("wingkv_raft_proposed_entries_total", &[]), total("wingkv_raft_proposed_writes_total", &[]));
    ensure!(writes >= sets && entries >= 1.0 && entries <= writes, "{writes} writes proposed in {entries} entries");
    // Every server appended entries to its raft log, each made durable by an fsync.
    for s in &all {
        let fsyncs = sum(s, "wingkv_raft_log_fsyncs_total", &[]);
        let micros = sum(s, "wingkv_raft_log_fsync_microseconds_total", &[]);
        ensure!(fsyncs > 0.0 && micros > 0.0, "raft-log fsyncs {fsyncs}, taking {micros} µs in all");
    }

    for pidx in ["0", "1", "2", "3"] {
        let labels = [("table_id", "1"), ("partition", pidx)];
        let primaries = total("wingkv_raft_is_primary", &labels);
        ensure!(primaries == 1.0, "partition 1.{pidx} has {primaries} primaries");
        let applied: Vec<f64> =
            all.iter().flat_map(|s| find(s, "wingkv_raft_applied_index", &labels)).map(|s| s.value).collect();
        // Group commit packs concurrent writes into shared entries, hence the low bound.
        ensure!(applied.len() == 3 && applied.iter().all(|a| *a > 20.0), "applied indexes of 1.{pidx}: {applied:?}");
        ensure!(total("wingkv_raft_term", &labels) >= 3.0, "terms of 1.{pidx}");
        let keys = total("wingkv_rocksdb_estimate_num_keys", &labels);
        ensure!(keys > 0.0, "RocksDB of 1.{pidx} estimates {keys} keys");
        ensure!(find(&all[0], "wingkv_rocksdb_memtable_bytes", &labels).len() == 1, "no memtable figure");
        ensure!(find(&all[0], "wingkv_raft_log_entries", &labels).len() == 1, "no log size");
    }
    ensure!(total("wingkv_replicas", &[]) == 3.0 * 8.0, "24 replicas (2 tables x 4 partitions x 3)");
    ensure!(total("wingkv_primaries", &[]) == 8.0);
    // The bulk-loaded table's RocksDB holds the 5000 rows, on every replica.
    let bl_keys = total("wingkv_rocksdb_estimate_num_keys", &[("table_id", "2")]);
    ensure!((3.0 * 4000.0..=3.0 * 6000.0).contains(&bl_keys), "the bulk-loaded table holds {bl_keys} keys / 3");
    for s in &all {
        let rss = sum(s, "process_resident_memory_bytes", &[]);
        ensure!(rss > 1e6 && rss < 4e9, "replica server RSS {rss}");
        ensure!(sum(s, "wingkv_uptime_seconds", &[]) > 0.0);
        ensure!(
            find(s, "wingkv_build_info", &[("role", "replica"), ("version", env!("CARGO_PKG_VERSION"))]).len() == 1
        );
        ensure!(find(s, "wingkv_bulk_load_download_retries_total", &[]).len() == 1);
    }

    // The meta server.
    let (code, _) = http_get(&meta_http, "/health").await?;
    ensure!(code == 200);
    let m = scrape(&meta_http).await?;
    ensure!(sum(&m, "wingkv_meta_is_leader", &[]) == 1.0);
    ensure!(sum(&m, "wingkv_meta_tables", &[]) == 2.0);
    ensure!(sum(&m, "wingkv_meta_nodes", &[("state", "ALIVE")]) == 3.0);
    ensure!(sum(&m, "wingkv_meta_unhealthy_partitions", &[("table", "usertable")]) == 0.0);
    ensure!(find(&m, "wingkv_bulk_load_job", &[("table", "bl"), ("status", "BLS_SUCCEED")]).len() == 1);
    ensure!(sum(&m, "wingkv_bulk_load_partitions", &[("table", "bl"), ("status", "BLS_SUCCEED")]) == 4.0);
    ensure!(sum(&m, "wingkv_requests_total", &[("service", "Meta"), ("method", "Heartbeat"), ("code", "OK")]) > 3.0);
    ensure!(sum(&m, "wingkv_meta_raft_applied_index", &[]) > 0.0);

    // gRPC health and reflection.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", onebox_replica(&dir)?))?.connect().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "wingkv.data.Data", "wingkv.replica_admin.ReplicaAdmin"] {
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await?.into_inner();
        ensure!(r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service}: {r:?}");
    }
    let services = reflected_services(channel).await?;
    for want in ["wingkv.data.Data", "wingkv.raft.RaftTransport", "grpc.health.v1.Health"] {
        ensure!(services.iter().any(|s| s == want), "reflection lists {services:?}, not {want}");
    }
    ensure!(!services.iter().any(|s| s == "wingkv.meta.Meta"), "a replica server lists the meta service: {services:?}");

    // The shell.
    let info = shell_json(&meta, "server_info")?;
    let servers = info["servers"].as_array().context("server_info has no servers")?;
    ensure!(servers.len() == 4, "{info}");
    for s in servers {
        ensure!(s["version"] == env!("CARGO_PKG_VERSION") && s["uptime_ms"].as_u64().is_some_and(|u| u > 0), "{s}");
        ensure!(s["http_address"].as_str().is_some_and(|a| !a.is_empty()), "{s}");
    }
    ensure!(servers[0]["status"] == "leader", "{info}");
    let nodes = shell_json(&meta, "nodes -d")?;
    let nodes = nodes["nodes"].as_array().context("nodes -d has no nodes")?;
    let replicas_total: u64 = nodes.iter().filter_map(|n| n["replica_count"].as_u64()).sum();
    let primaries_total: u64 = nodes.iter().filter_map(|n| n["primary_count"].as_u64()).sum();
    ensure!(replicas_total == 24 && primaries_total == 8, "nodes -d: {nodes:?}");

    // JSON logs: the failed request's line carries its span, with the partition.
    let log = std::fs::read_to_string(dir.join("replica1").join("server.log"))?
        + &std::fs::read_to_string(dir.join("replica2").join("server.log"))?
        + &std::fs::read_to_string(dir.join("replica3").join("server.log"))?;
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["span"]["partition"] == "1.99")
        .with_context(|| "no JSON log line in the span of the request for partition 1.99".to_string())?;
    ensure!(line["span"]["name"] == "rpc" && line["span"]["method"] == "Get", "{line}");
    ensure!(line["fields"]["code"] == "InvalidArgument", "{line}");
    // Last (its dropped table keeps replicas the counts above exclude): the bulk-load bench
    // with a workload on another table alongside, both reported.
    let bulk = bench(&[
        "bulkload",
        "--meta",
        &meta,
        "--rows",
        "20000",
        "--partitions",
        "4",
        "--sdk-rows",
        "0",
        "--alongside",
        "usertable",
        "--alongside-records",
        "2000",
        "--alongside-target",
        "200",
        "--alongside-threads",
        "4",
        "--alongside-before-secs",
        "2",
        "--json",
    ])?;
    ensure!(bulk["rows_checked"].as_u64().is_some_and(|n| n > 0), "bulk bench: {bulk}");
    for phase in ["before", "during"] {
        let s = &bulk["alongside"][phase];
        ensure!(s["ops_per_sec"].as_f64().is_some_and(|r| r > 0.0) && s["errors"] == 0, "{phase}: {bulk}");
        ensure!(s["read_p99_us"].as_u64().is_some_and(|p| p > 0), "{phase}: {bulk}");
    }
    Ok(())
}

fn onebox_replica(dir: &Path) -> Result<String> {
    let (addr, _) = wingkv_tests::cli::onebox_node(dir, "replica1")?;
    Ok(addr)
}

fn shell_json(meta: &str, cmd: &str) -> Result<Value> {
    let out = Command::new(bin_path("wingkv")).args(["shell", "--meta", meta, "--json", "-e", cmd]).output()?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn reflected_services(channel: tonic::transport::Channel) -> Result<Vec<String>> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        ServerReflectionClient::new(channel).server_reflection_info(futures::stream::iter([req])).await?.into_inner();
    let first = answers.message().await?.context("reflection answered nothing")?;
    match first.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => Ok(l.service.into_iter().map(|s| s.name).collect()),
        other => bail!("reflection answered {other:?}"),
    }
}
