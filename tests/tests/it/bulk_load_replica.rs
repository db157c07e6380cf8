//! The replica side of bulk load, driven through the admin RPCs as the meta will drive it:
//! download on every replica, ingest through raft, cancel with every task ended and every file
//! gone.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use wingkv_common::PartitionId;
use wingkv_proto::data::GetRequest;
use wingkv_proto::replica_admin::{
    AddLearnerRequest, BulkLoadAction, BulkLoadJobSpec, BulkLoadRequest, BulkLoadResponse, CreateReplicaRequest,
};
use wingkv_tests::{bin_path, create_group, members, wait_for, wait_leader, ReplicaProcess};

const TIMEOUT: Duration = Duration::from_secs(30);
const P: PartitionId = PartitionId { app_id: 1, partition_index: 0 };

/// Writes `rows` generated rows for table `t` with one partition under `root`.
fn bulkgen(root: &std::path::Path, rows: u64, value_size: usize) -> Result<()> {
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "t", "--partitions", "1", "--cluster", "onebox", "--provider", "local"])
        .args(["--generate", &rows.to_string(), "--value-size", &value_size.to_string(), "--file-size-mb", "1"])
        .arg("--root")
        .arg(root)
        .output()?;
    ensure!(out.status.success(), "bulkgen: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn spec(root: &std::path::Path, job_id: u64) -> BulkLoadJobSpec {
    let dir = format!("{}/onebox/t/0", root.display()).trim_start_matches('/').to_string();
    BulkLoadJobSpec { job_id, provider: "local".into(), partition_dir: dir, ingest_behind: false }
}

async fn act(primary: &ReplicaProcess, spec: &BulkLoadJobSpec, action: BulkLoadAction) -> Result<BulkLoadResponse> {
    let req = BulkLoadRequest { partition: Some(P.to_proto()), job: Some(spec.clone()), action: action as i32 };
    Ok(primary.admin().await?.bulk_load(req).await?.into_inner())
}

async fn group(root: &std::path::Path, extra: &str) -> Result<(Vec<ReplicaProcess>, usize)> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(ReplicaProcess::start(id, &root.join(format!("node{id}")), extra).await?);
    }
    let refs: Vec<&ReplicaProcess> = nodes.iter().collect();
    create_group(&refs, 0, P).await?;
    let leader = wait_leader(&refs, P, TIMEOUT).await?;
    Ok((nodes, leader))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_downloads_then_ingests_at_the_same_log_index() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let remote = tmp.path().join("remote");
    bulkgen(&remote, 20_000, 100)?;
    let (nodes, leader) = group(tmp.path(), "").await?;
    let primary = &nodes[leader];
    let job = spec(&remote, 11);
    wait_for("every replica to download its files", TIMEOUT, || async {
        let r = act(primary, &job, BulkLoadAction::BlDownload).await.ok()?;
        r.replicas.iter().all(|x| x.status().as_str_name() == "BLS_DOWNLOADED").then_some(())
    })
    .await?;
    let r = act(primary, &job, BulkLoadAction::BlIngest).await?;
    ensure!(r.ingested, "not ingested: {r:?}");
    // A second ingest of the same job is a no-op.
    ensure!(act(primary, &job, BulkLoadAction::BlIngest).await?.ingested);

    let mut data = primary.data().await?;
    for i in [0u64, 777, 19_999] {
        let req = GetRequest {
            partition: Some(P.to_proto()),
            hash_key: Bytes::from(format!("k{i}")),
            sort_key: Bytes::from_static(b"s"),
        };
        let got = data.get(req).await?.into_inner();
        ensure!(got.found && got.value.len() == 100, "k{i} missing after ingestion");
    }
    wait_for("replicas to converge on 20000 rows", TIMEOUT, || async {
        let mut sums = Vec::new();
        for n in &nodes {
            sums.push(n.checksum(P).await.ok()?);
        }
        (sums.iter().all(|s| *s == sums[0]) && sums[0].record_count == 20_000).then_some(())
    })
    .await?;
    // Every member applied the ingestion: the files kept for members are released.
    wait_for("every replica to release the ingested files", TIMEOUT, || async {
        nodes.iter().all(|n| !job_dir(n, 11).exists()).then_some(())
    })
    .await?;
    Ok(())
}

fn job_dir(n: &ReplicaProcess, job: u64) -> std::path::PathBuf {
    n.data_dir().join("replica").join(P.to_string()).join("bulk_load").join(job.to_string())
}

/// Raft apply never depends on the provider: after a job succeeded and the provider lost its
/// files, a learner added while one member is down (so no member may release the files yet)
/// replays the `IngestSst` entry, fetches the files from the other members, and ends with the
/// same rows. Once every member applied the ingestion, every replica releases the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_fetches_ingested_files_from_members_when_the_provider_lost_them() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let remote = tmp.path().join("remote");
    bulkgen(&remote, 20_000, 100)?;
    let (mut nodes, leader) = group(tmp.path(), "").await?;
    let job = spec(&remote, 21);
    wait_for("every replica to download its files", TIMEOUT, || async {
        let r = act(&nodes[leader], &job, BulkLoadAction::BlDownload).await.ok()?;
        r.replicas.iter().all(|x| x.status().as_str_name() == "BLS_DOWNLOADED").then_some(())
    })
    .await?;
    ensure!(act(&nodes[leader], &job, BulkLoadAction::BlIngest).await?.ingested);
    std::fs::remove_dir_all(&remote)?;
    let down = (0..nodes.len()).find(|i| *i != leader).context("no follower")?;
    nodes[down].stop().await?;

    let fourth = ReplicaProcess::start(4, &tmp.path().join("node4"), "").await?;
    let create = CreateReplicaRequest { partition: Some(P.to_proto()), ..Default::default() };
    fourth.admin().await?.create_replica(create).await?;
    let learner = members(&[&fourth]).pop();
    let add = AddLearnerRequest { partition: Some(P.to_proto()), learner, blocking: false, ..Default::default() };
    nodes[leader].admin().await?.add_learner(add).await?;
    let want = nodes[leader].checksum(P).await?;
    ensure!(want.record_count == 20_000, "{want:?}");
    wait_for("the learner to hold every row", Duration::from_secs(60), || async {
        let got = fourth.checksum(P).await.ok()?;
        (got.record_count == want.record_count && got.digest == want.digest).then_some(())
    })
    .await
    .with_context(|| fourth.tail_log(30))?;
    let log = std::fs::read_to_string(fourth.log_path())?;
    ensure!(log.contains("fetching bulk-load files from peers"), "the learner did not fetch from the members");
    // A member is down: nobody released the files it may need.
    ensure!(job_dir(&nodes[leader], 21).exists(), "files released while a member had not applied the ingestion");

    nodes[down].restart().await?;
    let all: Vec<&ReplicaProcess> = nodes.iter().chain(std::iter::once(&fourth)).collect();
    wait_for("every replica to release the ingested files", Duration::from_secs(60), || async {
        all.iter().all(|n| !job_dir(n, 21).exists()).then_some(())
    })
    .await?;
    for n in &all {
        let got = n.checksum(P).await?;
        ensure!(got.digest == want.digest, "node {} diverged: {got:?}", n.node_id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_download_ends_every_task_and_removes_every_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let remote = tmp.path().join("remote");
    bulkgen(&remote, 40_000, 200)?;
    // 200 KB/s per node: the ~8 MB download takes long enough to cancel in the middle.
    let (nodes, leader) =
        group(tmp.path(), "[bulk_load]\ndownload_bytes_per_sec = 200000\nmin_free_disk_bytes = 0\n").await?;
    let primary = &nodes[leader];
    let job = spec(&remote, 5);
    wait_for("downloads to be under way on every replica", TIMEOUT, || async {
        let r = act(primary, &job, BulkLoadAction::BlDownload).await.ok()?;
        r.replicas.iter().all(|x| x.status().as_str_name() == "BLS_DOWNLOADING" && x.downloaded_bytes > 0).then_some(())
    })
    .await?;
    let started = std::time::Instant::now();
    let r = act(primary, &job, BulkLoadAction::BlCancel).await?;
    ensure!(started.elapsed() < Duration::from_secs(5), "cancel took {:?}", started.elapsed());
    ensure!(r.replicas.iter().all(|x| x.status().as_str_name() == "BLS_CANCELED"), "{r:?}");
    for n in &nodes {
        let dir = n.data_dir().join("replica").join(P.to_string()).join("bulk_load").join("5");
        ensure!(!dir.exists(), "{} is left after cancel", dir.display());
    }
    // A new job on the same partition then succeeds (no limit issue: it just takes a while).
    let small = tmp.path().join("small");
    bulkgen(&small, 1_000, 10)?;
    let job2 = spec(&small, 6);
    wait_for("the next job to download", Duration::from_secs(60), || async {
        let r = act(primary, &job2, BulkLoadAction::BlDownload).await.ok()?;
        r.replicas.iter().all(|x| x.status().as_str_name() == "BLS_DOWNLOADED").then_some(())
    })
    .await?;
    ensure!(act(primary, &job2, BulkLoadAction::BlIngest).await?.ingested);
    let sum = nodes[leader].checksum(P).await.context("checksum")?;
    ensure!(sum.record_count == 1_000, "{sum:?}");
    Ok(())
}
