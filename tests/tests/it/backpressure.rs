//! Backpressure on a replica server: a write still queued for raft when its deadline passes is
//! dropped, never committed later; and a burst of 2,000 writers against a throttled partition
//! is answered `Busy` past the server's limits instead of growing its memory.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures::future::join_all;
use wingkv_common::{ErrorCode, PartitionId};
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::*;
use wingkv_tests::cluster::Cluster;
use wingkv_tests::metrics::{scrape, sum};
use wingkv_tests::{channel, create_group, wait_for, wait_leader, wing_error, ReplicaProcess};

const P: PartitionId = PartitionId { app_id: 1, partition_index: 0 };
const TIMEOUT: Duration = Duration::from_secs(30);

fn set_request(p: PartitionId, hash_key: &str, value: Bytes) -> SetRequest {
    SetRequest {
        partition: Some(p.to_proto()),
        hash_key: Bytes::copy_from_slice(hash_key.as_bytes()),
        sort_key: Bytes::from_static(b"s"),
        value,
        ttl_seconds: 0,
    }
}

async fn metric(http: &str, name: &str) -> Result<f64> {
    Ok(sum(&scrape(http).await?, name, &[]))
}

/// Every apply of client writes takes 3 s (a stalled disk, through a fail point): one write is
/// in flight, ten more queue behind it with a 500 ms deadline, and their clients give up. When
/// the stall ends none of the ten is proposed: they were answered "not applied" and stay absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_past_its_deadline_never_commits() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = ReplicaProcess::start_with_failpoints(1, tmp.path(), "", "apply::1.0=sleep(3000)").await?;
    create_group(&[&node], 0, P).await?;
    wait_leader(&[&node], P, TIMEOUT).await?;
    let http = node.http_addr()?;
    let data = DataClient::new(channel(&node.addr)?);

    let first = {
        let mut c = data.clone();
        tokio::spawn(async move { c.set(set_request(P, "k0", Bytes::from_static(b"v"))).await })
    };
    wait_for("the first write to be proposed", TIMEOUT, || async {
        (metric(&http, "wingkv_raft_proposed_entries_total").await.ok()? >= 1.0).then_some(())
    })
    .await?;
    let queued = (1..=10).map(|i| {
        let mut c = data.clone();
        async move {
            let mut req = tonic::Request::new(set_request(P, &format!("k{i}"), Bytes::from_static(b"v")));
            req.set_timeout(Duration::from_millis(500));
            c.set(req).await
        }
    });
    for (i, r) in join_all(queued).await.into_iter().enumerate() {
        ensure!(r.is_err(), "write k{} was answered within 500 ms while the partition's apply stalls", i + 1);
    }
    first.await?.context("the write in flight")?;
    // A write sent now queues behind nothing and commits.
    let mut c = data.clone();
    c.set(set_request(P, "k11", Bytes::from_static(b"v"))).await.context("a write after the stall")?;

    for i in 0..=11 {
        let req = GetRequest {
            partition: Some(P.to_proto()),
            hash_key: Bytes::from(format!("k{i}")),
            sort_key: Bytes::from_static(b"s"),
        };
        let found = c.get(req).await?.into_inner().found;
        let expected = i == 0 || i == 11;
        ensure!(found == expected, "k{i}: found = {found}; a write dropped at its deadline must never commit");
    }
    let expired = metric(&http, "wingkv_write_queue_expired_total").await?;
    ensure!(expired == 10.0, "{expired} queued writes were counted as dropped, not 10");
    Ok(())
}

/// Peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")?;
    Ok(kib << 10)
}

/// 2,000 writers of 64 KiB each at once against a partition whose throttling holds every write
/// 2 s: without limits the server would hold all 125 MiB of them (and their copies in the
/// memtables); with 64 requests at most in progress the rest are answered `Busy` before their
/// bodies are read, and the peak RSS grows by far less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_writers_get_busy_instead_of_growing_memory() -> Result<()> {
    const WRITERS: usize = 2_000;
    const VALUE: usize = 64 << 10;
    let c = Cluster::start_with(1, 1, "max_concurrent_requests = 64\nmax_inflight_request_bytes = 33554432\n").await?;
    let cfg = c.create("t", 1, 1).await?;
    c.admin.set_envs("t", [("replica.write_throttling_by_size", "1*delay*2000")]).await?;
    let table = c.table("t").await?;
    wait_for("the throttling to hold writes", TIMEOUT, || async {
        let started = Instant::now();
        table.set("probe", "s", "x").await.ok()?;
        (started.elapsed() >= Duration::from_millis(1_500)).then_some(())
    })
    .await?;
    let primary = cfg.partitions[0].primary.as_ref().context("a primary")?;
    let pid = c.replicas[0].pid().context("the replica server runs")?;
    let before = peak_rss(pid)?;

    // 20 connections of 100 streams each, like 2,000 clients behind a few proxies.
    let clients: Vec<_> = (0..20).map(|_| channel(&primary.address).map(DataClient::new)).collect::<Result<_>>()?;
    let value = Bytes::from(vec![b'v'; VALUE]);
    let p = PartitionId::new(cfg.app_id, 0);
    let writes = (0..WRITERS).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        let req = set_request(p, &format!("w{i}"), value.clone());
        async move {
            let mut req = tonic::Request::new(req);
            req.set_timeout(Duration::from_secs(10));
            client.set(req).await
        }
    });
    let results = join_all(writes).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let busy =
        results.iter().filter(|r| r.as_ref().err().is_some_and(|s| wing_error(s).code() == ErrorCode::Busy)).count();
    let other: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| wing_error(s).code() != ErrorCode::Busy)
        .take(3)
        .map(|s| format!("{s:?}"))
        .collect();
    let grown = peak_rss(pid)?.saturating_sub(before);
    eprintln!(
        "{WRITERS} writers of {VALUE} bytes: {ok} served, {busy} Busy; the replica's peak RSS grew by {} MiB",
        grown >> 20
    );
    ensure!(other.is_empty(), "answers other than success or Busy: {other:?}");
    ensure!(busy > 0 && ok > 0, "{ok} served and {busy} Busy: load shedding did not act");
    let held = (WRITERS * VALUE) as u64;
    // Each served write is held as a request, a raft entry and in two memtables (raft log and
    // data): about 0.4 MiB per 64 KiB write, some 30 MiB for the 64 admitted at a time. Without
    // limits the 2,000 writes grew it by about 445 MiB (BENCHMARKS.md).
    ensure!(
        grown < held / 2,
        "peak RSS grew by {} MiB, half of what the writers sent ({} MiB)",
        grown >> 20,
        held >> 20
    );
    let http = c.replicas[0].http_addr()?;
    let shed = sum(&scrape(&http).await?, "wingkv_shed_requests_total", &[]);
    ensure!(shed as usize == busy, "/metrics counts {shed} shed requests, the writers saw {busy} Busy");
    Ok(())
}
