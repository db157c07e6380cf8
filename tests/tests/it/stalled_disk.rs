//! A disk that stalls under some partitions' writes does not cost the other partitions their
//! leader. A fail point sleeps 2 s in every apply of client writes of two partitions of four on
//! every node; writers keep those two busy for 8 s. Storage work runs on blocking threads, so
//! each node's async runtime keeps sending every group's heartbeats: the other two partitions
//! keep their leader and term throughout.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use wingkv_common::PartitionId;
use wingkv_proto::data::SetRequest;
use wingkv_tests::cluster::REPLICA_CONFIG;
use wingkv_tests::{create_group, wait_leader, ReplicaProcess};

const TIMEOUT: Duration = Duration::from_secs(30);
const STALLED: [u32; 2] = [0, 1];
const HEALTHY: [u32; 2] = [2, 3];
const WRITING: Duration = Duration::from_secs(8);

fn pid(index: u32) -> PartitionId {
    PartitionId::new(1, index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partition_does_not_cost_the_others_their_leader() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // Every node stalls under the two partitions' writes, whether it leads or follows them: so
    // whichever node leads the healthy partitions has stalled applies of its own.
    let stall = STALLED.map(|p| format!("apply::1.{p}=sleep(2000)")).join(";");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let root = tmp.path().join(format!("n{id}"));
        nodes.push(ReplicaProcess::start_with_failpoints(id, &root, REPLICA_CONFIG, &stall).await?);
    }
    let refs: Vec<&ReplicaProcess> = nodes.iter().collect();
    let mut leaders = Vec::new();
    for p in STALLED.iter().chain(&HEALTHY) {
        create_group(&refs, 0, pid(*p)).await?;
        leaders.push(wait_leader(&refs, pid(*p), TIMEOUT).await?);
    }
    // Every healthy partition's leader and term as each node knows them.
    let mut before = Vec::new();
    for p in HEALTHY {
        for n in &refs {
            let s = n.status(pid(p)).await.context("a replica's status")?;
            before.push((s.term, s.leader_id));
        }
    }

    let end = Instant::now() + WRITING;
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let k = i % STALLED.len();
            let p = pid(STALLED[k]);
            let node = refs[leaders[k]].addr.clone();
            tokio::spawn(async move {
                let mut data = wingkv_proto::data::data_client::DataClient::new(wingkv_tests::channel(&node)?);
                let (mut done, mut slowest) = (0u32, Duration::ZERO);
                while Instant::now() < end {
                    let started = Instant::now();
                    let req = SetRequest {
                        partition: Some(p.to_proto()),
                        // Routing is not checked on a group created without a table.
                        hash_key: Bytes::from(format!("w{i}")),
                        sort_key: Bytes::from(format!("{done}")),
                        value: Bytes::from_static(b"v"),
                        ttl_seconds: 0,
                    };
                    // A write may fail over (its own partition stalls); what this test checks is
                    // the other partitions.
                    match data.set(req).await {
                        Ok(_) => done += 1,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                    slowest = slowest.max(started.elapsed());
                }
                anyhow::Ok((done, slowest))
            })
        })
        .collect();

    // Meanwhile the healthy partitions keep their leader and term on every node.
    let mut changes = Vec::new();
    while Instant::now() < end {
        for (k, p) in HEALTHY.iter().enumerate() {
            for (j, n) in refs.iter().enumerate() {
                let Some(s) = n.status(pid(*p)).await else { continue };
                let (term, leader) = before[k * refs.len() + j];
                if s.term != term || s.leader_id != leader {
                    changes.push(format!(
                        "{} on node {}: term {term} → {}, leader {leader:?} → {:?}",
                        pid(*p),
                        n.node_id,
                        s.term,
                        s.leader_id
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(changes.is_empty(), "a healthy partition lost its leader while others stalled:\n{}", changes.join("\n"));
    let mut written = 0;
    for w in writers {
        let (done, slowest) = w.await??;
        ensure!(slowest >= Duration::from_millis(1_500), "a writer never met the stall (slowest write {slowest:?})");
        written += done;
    }
    ensure!(written > 0, "no write to a stalled partition completed");
    Ok(())
}
