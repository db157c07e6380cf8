//! Replication of partition groups across three real replica-server processes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use wingkv_common::{ErrorCode, PartitionId};
use wingkv_proto::data::{GetRequest, SetRequest};
use wingkv_proto::replica_admin::{CreateReplicaRequest, PartitionRequest};
use wingkv_tests::{create_group, wait_for, wait_leader, wing_error, ReplicaProcess};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Fast elections and tiny snapshots, so tests exercise failover and chunked snapshots quickly.
const FAST_RAFT: &str = "[raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n\
snapshot_after_logs = 100000\nlogs_to_keep_after_snapshot = 5\nsnapshot_chunk_bytes = 16384\n";

async fn start_nodes(root: &std::path::Path, n: u64) -> Result<Vec<ReplicaProcess>> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(ReplicaProcess::start(id, &root.join(format!("node{id}")), FAST_RAFT).await?);
    }
    Ok(nodes)
}

fn refs(nodes: &[ReplicaProcess]) -> Vec<&ReplicaProcess> {
    nodes.iter().collect()
}

/// Writes `key -> value` through whichever node is primary, retrying NotLeader/Unavailable
/// until the deadline. Returns once the write is acknowledged.
async fn put(nodes: &[&ReplicaProcess], p: PartitionId, key: &str, value: &[u8]) -> Result<()> {
    let mut last_err = String::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        for n in nodes {
            let Ok(mut c) = n.data().await else { continue };
            let req = SetRequest {
                partition: Some(p.to_proto()),
                hash_key: Bytes::copy_from_slice(key.as_bytes()),
                sort_key: Bytes::from_static(b"s"),
                value: Bytes::copy_from_slice(value),
                ttl_seconds: 0,
            };
            match c.set(req).await {
                Ok(_) => return Ok(()),
                Err(s) => last_err = format!("node {}: {}", n.node_id, s.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("write of {key} to {p} not acknowledged: {last_err}")
}

async fn get(node: &ReplicaProcess, p: PartitionId, key: &str) -> Result<Option<Bytes>> {
    let mut c = node.data().await?;
    let req = GetRequest {
        partition: Some(p.to_proto()),
        hash_key: Bytes::copy_from_slice(key.as_bytes()),
        sort_key: Bytes::from_static(b"s"),
    };
    let r = c.get(req).await?.into_inner();
    Ok(r.found.then_some(r.value))
}

/// Waits until every node in `nodes` reports the same applied index and content for `p`.
async fn wait_converged(nodes: &[&ReplicaProcess], p: PartitionId) -> Result<()> {
    wait_for(&format!("replicas of {p} to converge"), TIMEOUT, || async {
        let mut sums = Vec::new();
        for n in nodes {
            sums.push(n.checksum(p).await.ok()?);
        }
        let first = sums[0];
        sums.iter().all(|s| *s == first).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_acknowledged_writes_and_restarted_replica_catches_up() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut nodes = start_nodes(tmp.path(), 3).await?;
    let p1 = PartitionId::new(1, 0);
    let p2 = PartitionId::new(1, 1);
    create_group(&refs(&nodes), 0, p1).await?;
    create_group(&refs(&nodes), 1, p2).await?;
    let leader1 = wait_leader(&refs(&nodes), p1, TIMEOUT).await?;
    wait_leader(&refs(&nodes), p2, TIMEOUT).await?;

    // A write sent to a follower is refused with the leader's address.
    let follower = (leader1 + 1) % 3;
    let mut c = nodes[follower].data().await?;
    let status = c
        .set(SetRequest {
            partition: Some(p1.to_proto()),
            hash_key: Bytes::from_static(b"k"),
            sort_key: Bytes::from_static(b"s"),
            value: Bytes::from_static(b"v"),
            ttl_seconds: 0,
        })
        .await
        .expect_err("a follower must refuse writes");
    let err = wing_error(&status);
    assert_eq!(err.code(), ErrorCode::NotLeader, "{status:?}");
    assert_eq!(err.leader(), Some(nodes[leader1].addr.as_str()));

    // Acknowledged writes to both groups.
    let mut acked: BTreeMap<(PartitionId, String), Vec<u8>> = BTreeMap::new();
    for i in 0..150 {
        for p in [p1, p2] {
            let key = format!("key-{i}");
            let value = format!("value-{p}-{i}").into_bytes();
            put(&refs(&nodes), p, &key, &value).await?;
            acked.insert((p, key), value);
        }
    }

    // kill -9 the leader of p1: a new leader serves every acknowledged write.
    nodes[leader1].kill();
    let survivors: Vec<&ReplicaProcess> =
        nodes.iter().enumerate().filter(|(i, _)| *i != leader1).map(|(_, n)| n).collect();
    let new_leader = wait_leader(&survivors, p1, TIMEOUT).await?;
    for ((p, key), value) in acked.iter().filter(|((p, _), _)| *p == p1) {
        let got = get(survivors[new_leader], *p, key).await.with_context(|| format!("read {key}"))?;
        ensure!(got.as_deref() == Some(value.as_slice()), "{p} {key}: lost or wrong after failover: {got:?}");
    }
    // Both groups keep taking writes with one node down.
    for i in 150..250 {
        for p in [p1, p2] {
            let key = format!("key-{i}");
            let value = format!("value-{p}-{i}").into_bytes();
            put(&survivors, p, &key, &value).await?;
            acked.insert((p, key), value);
        }
    }
    let p2_leader = wait_leader(&survivors, p2, TIMEOUT).await?;
    for ((p, key), value) in acked.iter().filter(|((p, _), _)| *p == p2) {
        let got = get(survivors[p2_leader], *p, key).await?;
        ensure!(got.as_deref() == Some(value.as_slice()), "{p} {key}: lost or wrong: {got:?}");
    }

    // The killed node restarts, reopens both replicas from disk and catches up.
    nodes[leader1].restart().await?;
    for p in [p1, p2] {
        wait_converged(&refs(&nodes), p).await?;
        let sum = nodes[leader1].checksum(p).await?;
        assert_eq!(sum.record_count, 250, "{p}: {sum:?}");
    }
    Ok(())
}

/// `n` pseudo-random bytes (xorshift) from `seed`, so compression cannot shrink them.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_replica_rejoins_through_a_chunked_snapshot() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut nodes = start_nodes(tmp.path(), 3).await?;
    let p = PartitionId::new(2, 0);
    create_group(&refs(&nodes), 0, p).await?;
    let leader = wait_leader(&refs(&nodes), p, TIMEOUT).await?;

    // ~400 KB of incompressible data: the snapshot spans many 16 KiB chunks.
    let value = |i: u64| noise(i, 1000);
    for i in 0..400 {
        put(&refs(&nodes), p, &format!("key-{i:04}"), &value(i)).await?;
    }
    let victim = (leader + 1) % 3;
    nodes[victim].kill();
    nodes[victim].wipe()?;
    // More writes while it is gone, then a snapshot that purges the log behind it.
    for i in 400..450 {
        let alive: Vec<&ReplicaProcess> =
            nodes.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, n)| n).collect();
        put(&alive, p, &format!("key-{i:04}"), &value(i)).await?;
    }
    let leader_node = &nodes[leader];
    leader_node.admin().await?.trigger_snapshot(PartitionRequest { partition: Some(p.to_proto()) }).await?;
    wait_for("the leader to purge its log", TIMEOUT, || async {
        let s = leader_node.status(p).await?;
        (s.snapshot_index > 400 && s.purged_index > 400).then_some(())
    })
    .await?;
    let snap_dir = leader_node.data_dir().join("replica").join(p.to_string()).join("snapshot");
    let snap_bytes: u64 = std::fs::read_dir(&snap_dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    ensure!(snap_bytes > 16384 * 2, "snapshot of {snap_bytes} bytes fits in two chunks");

    // The wiped node comes back empty; its replica is created again (as the meta would) and
    // must be brought up to date by a snapshot, since the log it needs is gone.
    nodes[victim].restart().await?;
    nodes[victim]
        .admin()
        .await?
        .create_replica(CreateReplicaRequest { partition: Some(p.to_proto()), initial_members: vec![] })
        .await?;
    wait_converged(&refs(&nodes), p).await?;
    let s = nodes[victim].status(p).await.context("status of the rejoined replica")?;
    ensure!(s.snapshot_index > 400, "rejoined without a snapshot: {s:?}");
    assert_eq!(nodes[victim].checksum(p).await?.record_count, 450);

    // The rejoined replica can lead: kill the others' leader and read from the new one.
    nodes[leader].kill();
    let alive: Vec<&ReplicaProcess> = nodes.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, n)| n).collect();
    let l = wait_leader(&alive, p, TIMEOUT).await?;
    for i in [0, 199, 449] {
        let got = get(alive[l], p, &format!("key-{i:04}")).await?;
        ensure!(got.as_deref() == Some(value(i).as_slice()), "key-{i:04} missing after rejoin");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_and_restart_reopens_every_replica() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut nodes = start_nodes(tmp.path(), 1).await?;
    let parts: Vec<PartitionId> = (0..6).map(|i| PartitionId::new(3, i)).collect();
    for p in &parts {
        create_group(&refs(&nodes), 0, *p).await?;
        wait_leader(&refs(&nodes), *p, TIMEOUT).await?;
        put(&refs(&nodes), *p, "k", p.to_string().as_bytes()).await?;
    }
    ensure!(nodes[0].stop().await?, "replica-server did not exit on SIGTERM");
    nodes[0].restart().await?;
    for p in &parts {
        wait_leader(&refs(&nodes), *p, TIMEOUT).await?;
        let got = get(&nodes[0], *p, "k").await?;
        ensure!(got.as_deref() == Some(p.to_string().as_bytes()), "{p} lost its data: {got:?}");
    }
    Ok(())
}
