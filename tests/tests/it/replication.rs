//! Replication of partition groups across three real replica-server processes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use wingkv_common::{ErrorCode, PartitionId};
use wingkv_proto::common::ReplicaRole;
use wingkv_proto::data::{GetRequest, IncrRequest, SetRequest};
use wingkv_proto::raft::raft_transport_client::RaftTransportClient;
use wingkv_proto::raft::RaftMessage;
use wingkv_proto::replica_admin::{AddLearnerRequest, ChangeMembershipRequest, CreateReplicaRequest, PartitionRequest};
use wingkv_tests::faults::Stopped;
use wingkv_tests::{create_group, members, wait_for, wait_leader, wing_error, ReplicaProcess};

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

/// Three nodes under `root` serving partition `p` (created on the first), and the index of its
/// leader.
async fn group_of_three(root: &std::path::Path, p: PartitionId) -> Result<(Vec<ReplicaProcess>, usize)> {
    let nodes = start_nodes(root, 3).await?;
    create_group(&refs(&nodes), 0, p).await?;
    let leader = wait_leader(&refs(&nodes), p, TIMEOUT).await?;
    Ok((nodes, leader))
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
    let p = PartitionId::new(2, 0);
    let (mut nodes, leader) = group_of_three(tmp.path(), p).await?;

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
    leader_node
        .admin()
        .await?
        .trigger_snapshot(PartitionRequest { partition: Some(p.to_proto()), ..Default::default() })
        .await?;
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
        .create_replica(CreateReplicaRequest {
            partition: Some(p.to_proto()),
            initial_members: vec![],
            ..Default::default()
        })
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

/// Group commit: concurrent writes to one partition share raft entries, and each write of a
/// shared entry is answered with its own result, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_result() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let nodes = start_nodes(tmp.path(), 3).await?;
    let p = PartitionId::new(4, 0);
    create_group(&refs(&nodes), 0, p).await?;
    let leader = &nodes[wait_leader(&refs(&nodes), p, TIMEOUT).await?];
    const WRITERS: usize = 64;
    const EACH: usize = 20;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let mut c = leader.data().await?;
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for i in 0..EACH {
                // A record of its own per write, and one counter every writer increments.
                c.set(SetRequest {
                    partition: Some(p.to_proto()),
                    hash_key: Bytes::from(format!("w{w}")),
                    sort_key: Bytes::from(format!("{i}")),
                    value: Bytes::from(format!("v{w}.{i}")),
                    ttl_seconds: 0,
                })
                .await?;
                let r = c
                    .incr(IncrRequest {
                        partition: Some(p.to_proto()),
                        hash_key: Bytes::from_static(b"counter"),
                        sort_key: Bytes::new(),
                        increment: 1,
                        ttl_seconds: 0,
                    })
                    .await?
                    .into_inner();
                seen.push((r.log_index, r.new_value));
            }
            Ok::<_, tonic::Status>(seen)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.extend(r??);
    }
    // Every increment saw a value of its own: 1..=N, each once.
    results.sort_by_key(|(_, v)| *v);
    let values: Vec<i64> = results.iter().map(|(_, v)| *v).collect();
    let expected: Vec<i64> = (1..=(WRITERS * EACH) as i64).collect();
    ensure!(values == expected, "increments were lost or answered twice");
    // Shared entries answer in log order: a later entry never holds a smaller value.
    ensure!(results.windows(2).all(|w| w[0].0 <= w[1].0), "values out of log order: {results:?}");
    let entries = results.iter().map(|(i, _)| *i).collect::<std::collections::BTreeSet<_>>().len();
    ensure!(
        entries < WRITERS * EACH,
        "{entries} entries for {} concurrent increments: no write shared an entry",
        WRITERS * EACH
    );
    for w in [0, WRITERS - 1] {
        for i in [0, EACH - 1] {
            let mut c = leader.data().await?;
            let got = c
                .get(GetRequest {
                    partition: Some(p.to_proto()),
                    hash_key: Bytes::from(format!("w{w}")),
                    sort_key: Bytes::from(format!("{i}")),
                })
                .await?
                .into_inner();
            ensure!(got.found && got.value == format!("v{w}.{i}"), "w{w}/{i}: {got:?}");
        }
    }
    wait_converged(&refs(&nodes), p).await?;
    Ok(())
}

/// Sends a vote request with an undecodable payload: a replica that takes votes answers that it
/// is malformed; one that holds its votes refuses it before reading it.
async fn probe_vote(node: &ReplicaProcess, p: PartitionId) -> Result<tonic::Status> {
    let mut c = RaftTransportClient::new(wingkv_tests::channel(&node.addr)?);
    let msg = RaftMessage { partition: Some(p.to_proto()), payload: Bytes::from_static(b"not a vote") };
    match c.vote(msg).await {
        Ok(_) => anyhow::bail!("an undecodable vote request was answered"),
        Err(s) => Ok(s),
    }
}

/// A replica that followed a leader and restarts holds its votes for the followers' lease, so a
/// leader serving lease reads cannot be replaced behind its back through a quick restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_holds_its_votes_for_a_lease() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = PartitionId::new(5, 0);
    let (mut nodes, leader) = group_of_three(tmp.path(), p).await?;
    put(&refs(&nodes), p, "k", b"v1").await?;
    wait_converged(&refs(&nodes), p).await?;
    let (restarted, other) = ((leader + 1) % 3, (leader + 2) % 3);

    let s = probe_vote(&nodes[other], p).await?;
    ensure!(s.code() == tonic::Code::InvalidArgument && s.message().contains("malformed"), "{s:?}");

    nodes[restarted].kill();
    nodes[restarted].restart().await?;
    let s = probe_vote(&nodes[restarted], p).await?;
    ensure!(s.code() == tonic::Code::Unavailable && s.message().contains("holds its votes"), "{s:?}");
    // The hold ends after election_timeout_max (800 ms here).
    wait_for("the restarted replica to take votes again", TIMEOUT, || async {
        let s = probe_vote(&nodes[restarted], p).await.ok()?;
        (s.code() == tonic::Code::InvalidArgument).then_some(())
    })
    .await?;
    put(&refs(&nodes), p, "k", b"v2").await?;
    wait_converged(&refs(&nodes), p).await?;
    Ok(())
}

/// A creation whose caller gives up (a meta killed, or its request timing out) still ends: the
/// replica is open and answers, never a directory on disk that no map knows, answering "not
/// hosted" while a new creation says "already exists" (what sent a rejoin into a loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_creation_its_caller_gave_up_on_still_ends_open() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = PartitionId::new(6, 0);
    let node =
        ReplicaProcess::start_with_failpoints(1, &tmp.path().join("node1"), "", "replica::create=return(2000)").await?;
    let mut req = tonic::Request::new(CreateReplicaRequest { partition: Some(p.to_proto()), ..Default::default() });
    req.set_timeout(Duration::from_millis(300));
    let gave_up = node.admin().await?.create_replica(req).await;
    ensure!(gave_up.is_err(), "answered within 300 ms despite a 2 s creation: {gave_up:?}");
    wait_for("the abandoned creation to end with the replica open", TIMEOUT, || async {
        node.status(p).await.filter(|s| s.partition.is_some()).map(|_| ())
    })
    .await?;
    let again = CreateReplicaRequest { partition: Some(p.to_proto()), ..Default::default() };
    let s = node.admin().await?.create_replica(again).await.err().context("a second creation succeeded")?;
    ensure!(wing_error(&s).code() == ErrorCode::AlreadyExists, "{s:?}");
    Ok(())
}

/// A voter change its caller gave up on before the joint config committed still ends in the
/// new uniform config: openraft 0.9 proposes that second phase from the caller's future, so a
/// meta killed or timing out mid-change used to leave the group joint, and nothing finished it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_change_its_caller_gave_up_on_still_ends_uniform() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let nodes = start_nodes(tmp.path(), 5).await?;
    let p = PartitionId::new(7, 0);
    let (group, joining) = (refs(&nodes[..3]), refs(&nodes[3..]));
    create_group(&group, 0, p).await?;
    let leader = wait_leader(&group, p, TIMEOUT).await?;
    put(&group, p, "k", b"v").await?;
    for n in &joining {
        let req = CreateReplicaRequest { partition: Some(p.to_proto()), ..Default::default() };
        n.admin().await?.create_replica(req).await?;
        let learner = members(&[*n]).pop();
        let add = AddLearnerRequest { partition: Some(p.to_proto()), learner, blocking: true, ..Default::default() };
        group[leader].admin().await?.add_learner(add).await?;
    }
    // The new voters: the leader and the two learners. With the learners paused the joint
    // config cannot commit, so the caller's deadline passes in the first phase.
    let goal: Vec<u64> = vec![group[leader].node_id, joining[0].node_id, joining[1].node_id];
    let pid = |n: &ReplicaProcess| n.pid().map(|p| p as i32).context("the node runs no process");
    let paused = (Stopped::stop(pid(joining[0])?), Stopped::stop(pid(joining[1])?));
    let mut req = tonic::Request::new(ChangeMembershipRequest {
        partition: Some(p.to_proto()),
        voters: goal.clone(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(500));
    let gave_up = group[leader].admin().await?.change_membership(req).await;
    ensure!(gave_up.is_err(), "the change answered with its new voters paused: {gave_up:?}");
    drop(paused);
    let mut want = goal.clone();
    want.sort();
    wait_for("the change to end in the new uniform config", TIMEOUT, || async {
        for n in &nodes {
            let Some(s) = n.status(p).await.filter(|s| s.role == ReplicaRole::RolePrimary as i32) else {
                continue;
            };
            let mut voters: Vec<u64> = s.voters.iter().map(|m| m.node_id).collect();
            voters.sort();
            return (s.settled == Some(true) && voters == want).then_some(());
        }
        None
    })
    .await?;
    Ok(())
}

/// Holds the raft-log fsyncs of the node whose fail point names `hold`, until it is released.
fn hold_fsyncs(hold: &std::path::Path) -> Result<()> {
    std::fs::write(hold, b"held by the test").with_context(|| format!("create {}", hold.display()))
}

fn release_fsyncs(hold: &std::path::Path) -> Result<()> {
    std::fs::remove_file(hold).with_context(|| format!("remove {}", hold.display()))
}

/// How many times `node`'s fsync thread began waiting on its hold file.
fn fsync_holds(node: &ReplicaProcess) -> usize {
    std::fs::read_to_string(node.log_path()).map(|log| log.matches(FSYNC_HELD).count()).unwrap_or(0)
}

/// What the replica server logs when a fail point begins holding its raft-log fsyncs
/// (`FSYNC_HELD` in its `raft_log.rs`).
const FSYNC_HELD: &str = "raft-log fsync held by a fail point";

/// A leader replicates an entry while its own raft-log fsync runs, and counts its own copy
/// towards the quorum only once that fsync is done. Each node holds its raft-log fsyncs while
/// a file of the test exists (a fail point on its sync thread).
/// - The leader's held: a write commits through the two followers (openraft 0.9 unpatched
///   waits for the leader's fsync before it replicates, and this write times out).
/// - The leader's and one follower's held: only the other follower has the write on disk. It
///   does not commit (the leader's unsynced copy does not count) until the follower's
///   fsyncs are released; then it commits without the leader's.
/// - A write acknowledged while the leader's fsyncs are held survives the leader's kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_replicates_before_its_own_fsync_and_counts_itself_after_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let holds: Vec<std::path::PathBuf> = (1..=3).map(|id| tmp.path().join(format!("hold-fsync-{id}"))).collect();
    let mut nodes = Vec::new();
    for (id, hold) in (1..=3u64).zip(&holds) {
        let failpoint = format!("raft_log::before_fsync=return({})", hold.display());
        let root = tmp.path().join(format!("node{id}"));
        nodes.push(ReplicaProcess::start_with_failpoints(id, &root, FAST_RAFT, &failpoint).await?);
    }
    let p = PartitionId::new(1, 0);
    create_group(&refs(&nodes), 0, p).await?;
    let l = wait_leader(&refs(&nodes), p, TIMEOUT).await?;
    let (f1, f2) = match l {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    put(&refs(&nodes), p, "before", b"v0").await?;
    let set = move |key: &str| SetRequest {
        partition: Some(p.to_proto()),
        hash_key: Bytes::copy_from_slice(key.as_bytes()),
        sort_key: Bytes::from_static(b"s"),
        value: Bytes::from_static(b"v"),
        ttl_seconds: 0,
    };

    // 1. The leader's fsyncs held: the write commits through the followers.
    hold_fsyncs(&holds[l])?;
    let mut leader = nodes[l].data().await?;
    let done = tokio::time::timeout(Duration::from_secs(10), leader.set(set("k1"))).await;
    ensure!(
        matches!(done, Ok(Ok(_))),
        "a write waited for the leader's own fsync (held): {done:?}; leader log:\n{}",
        nodes[l].tail_log(20)
    );
    ensure!(fsync_holds(&nodes[l]) >= 1, "the leader's fsync was not held: {}", nodes[l].tail_log(20));
    ensure!(nodes[l].status(p).await.map(|s| s.role) == Some(ReplicaRole::RolePrimary as i32), "the leader changed");

    // 2. The leader's and one follower's held: one copy on disk does not commit.
    hold_fsyncs(&holds[f1])?;
    let before = nodes[l].status(p).await.context("the leader's status")?;
    let mut writer = nodes[l].data().await?;
    let write = tokio::spawn(async move { writer.set(set("k2")).await });
    let entry = before.last_log_index + 1;
    wait_for("the unheld follower to append the write", TIMEOUT, || async {
        let s = nodes[f2].status(p).await?;
        (s.last_log_index >= entry).then_some(())
    })
    .await?;
    wait_for("the held follower's fsync to start waiting", TIMEOUT, || async {
        (fsync_holds(&nodes[f1]) >= 1).then_some(())
    })
    .await?;
    // A leader counting its unsynced copy commits at the unheld follower's answer, within
    // milliseconds: a second is ample to see it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = nodes[l].status(p).await.context("the leader's status")?;
    ensure!(
        !write.is_finished() && s.applied_index < entry,
        "entry {entry} committed with one copy on disk (applied {}, write finished: {})",
        s.applied_index,
        write.is_finished()
    );
    release_fsyncs(&holds[f1])?;
    let done = tokio::time::timeout(TIMEOUT, write).await.context("the write after the follower's release")??;
    done.context("the write after the follower's fsyncs were released")?;

    // 3. Acknowledged while the leader's copy waits for its fsync, it survives the leader.
    let mut leader = nodes[l].data().await?;
    leader.set(set("k3")).await.context("a write with the leader's fsyncs held")?;
    nodes[l].kill();
    release_fsyncs(&holds[l])?;
    let survivors = [&nodes[f1], &nodes[f2]];
    let new = wait_leader(&survivors, p, TIMEOUT).await?;
    for key in ["before", "k1", "k2", "k3"] {
        ensure!(get(survivors[new], p, key).await?.is_some(), "{key} lost with the leader");
    }
    nodes[l].restart().await?;
    wait_converged(&refs(&nodes), p).await
}

/// A leader replicates before its own fsync, so a crash can take entries from its log that its
/// followers hold. Restored as leader in its old term at restart (openraft 0.9's startup), it
/// would give new entries the ids of those, and a follower comparing ids only would keep the old
/// ones: the replicas would diverge. So a restarted leader starts as a follower and is elected
/// in a later term. Here it restarts alone (its followers stopped): it must campaign in a later
/// term, not lead in its old one; with its followers back, the group leads and writes in a later
/// term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_is_elected_again_in_a_later_term() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = PartitionId::new(1, 0);
    let (mut nodes, l) = group_of_three(tmp.path(), p).await?;
    put(&refs(&nodes), p, "before", b"v0").await?;
    let term = nodes[l].status(p).await.context("the leader's status")?.term;

    for n in nodes.iter_mut() {
        n.kill();
    }
    nodes[l].restart().await?;
    let campaigned = wait_for("the restarted leader to campaign in a later term", TIMEOUT, || async {
        let s = nodes[l].status(p).await?;
        (s.term > term || s.role == ReplicaRole::RolePrimary as i32).then_some(s)
    })
    .await?;
    ensure!(
        campaigned.role != ReplicaRole::RolePrimary as i32 && campaigned.term > term,
        "the restarted leader leads alone in term {} (it led term {term} before)",
        campaigned.term
    );

    for (i, n) in nodes.iter_mut().enumerate() {
        if i != l {
            n.restart().await?;
        }
    }
    let new = wait_leader(&refs(&nodes), p, TIMEOUT).await?;
    let s = nodes[new].status(p).await.context("the new leader's status")?;
    ensure!(s.term > term, "led in term {} again after term {term}", s.term);
    put(&refs(&nodes), p, "after", b"v1").await?;
    wait_converged(&refs(&nodes), p).await?;
    for key in ["before", "after"] {
        ensure!(get(&nodes[new], p, key).await?.is_some(), "{key} lost");
    }
    Ok(())
}
