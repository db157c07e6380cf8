//! Replicas agree on TTL expiry whatever their clocks: one replica of three runs two hours
//! ahead (past the hour of grace expiry used to allow), and at the same applied index all three
//! count and digest the same live records, because expiry follows the log clock the primary
//! stamps into the log, not each machine's clock. (If the fast node leads, its stamps expire
//! the 10-minute records for everyone; otherwise none expire. Either way all three agree.)

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use wingkv_common::PartitionId;
use wingkv_proto::data::{KeyValue, MultiSetRequest};
use wingkv_tests::cluster::REPLICA_CONFIG;
use wingkv_tests::{create_group, wait_for, wait_leader, ReplicaProcess};

const P: PartitionId = PartitionId { app_id: 1, partition_index: 0 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_clock_two_hours_ahead_agrees_on_expiry() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let primary = ReplicaProcess::start(1, &tmp.path().join("n1"), REPLICA_CONFIG).await?;
    let follower = ReplicaProcess::start(2, &tmp.path().join("n2"), REPLICA_CONFIG).await?;
    let ahead =
        ReplicaProcess::start(3, &tmp.path().join("n3"), &format!("test_clock_offset_secs = 7200\n{REPLICA_CONFIG}"))
            .await?;
    let nodes = [&primary, &follower, &ahead];
    create_group(&nodes, 0, P).await?;
    let leader = wait_leader(&nodes, P, Duration::from_secs(30)).await?;

    // 100 records that expire in 10 minutes and 100 that never do.
    let mut data = nodes[leader].data().await?;
    for (ttl_seconds, prefix) in [(600, "ttl"), (0, "forever")] {
        for hk in 0..10 {
            let kvs =
                (0..10).map(|sk| KeyValue { sort_key: Bytes::from(format!("{sk}")), value: Bytes::from_static(b"v") });
            let req = MultiSetRequest {
                partition: Some(P.to_proto()),
                hash_key: Bytes::from(format!("{prefix}{hk}")),
                kvs: kvs.collect(),
                ttl_seconds,
            };
            data.multi_set(req).await?;
        }
    }
    let applied = nodes[leader].status(P).await.context("the primary's status")?.applied_index;
    wait_for("every replica to apply every write", Duration::from_secs(30), || async {
        for n in &nodes {
            if n.status(P).await?.applied_index < applied {
                return None;
            }
        }
        Some(())
    })
    .await?;

    let mut sums = Vec::new();
    for n in &nodes {
        let c = n.checksum(P).await?;
        sums.push((n.node_id, c.applied_index, c.record_count, c.digest));
    }
    let live = if nodes[leader].node_id == ahead.node_id { 100 } else { 200 };
    ensure!(sums.iter().all(|s| s.2 == live), "each replica should count {live} live records: {sums:?}");
    ensure!(
        sums.iter().all(|s| (s.1, s.2, s.3) == (sums[0].1, sums[0].2, sums[0].3)),
        "replicas at one applied index disagree on what is live: {sums:?}"
    );
    Ok(())
}
