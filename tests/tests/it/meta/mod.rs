//! The meta server with real replica servers: placement, re-replication after a node dies,
//! catalog rules, durability of the meta state, meta failover, bad input.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wingkv_common::ErrorCode;
use wingkv_proto::meta::*;
use wingkv_tests::cluster::{alive_nodes, fully_healthy};
use wingkv_tests::wait_for;

use wingkv_tests::cluster::Cluster;

mod partitions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_and_repair_after_a_replica_server_dies() -> Result<()> {
    let mut c = Cluster::start(1, 4).await?;
    let cfg = c.create("t", 8, 3).await?;
    assert_eq!(cfg.partitions.len(), 8);
    for p in &cfg.partitions {
        let members: BTreeSet<u64> = p.members.iter().map(|m| m.node_id).collect();
        ensure!(members.len() == 3, "partition {} members not distinct: {:?}", p.partition_index, p.members);
        ensure!(p.primary.is_some(), "partition {} has no primary", p.partition_index);
    }
    let table = c.table("t").await?;
    for i in 0..200 {
        table.set(&format!("user{i}"), "s", format!("v{i}").as_bytes()).await?;
    }

    // kill -9 one replica server: every partition must get 3 healthy members again.
    let victim = c.replicas[1].node_id;
    c.replicas[1].kill();
    let started = Instant::now();
    wait_for("every partition to have 3 healthy members again", Duration::from_secs(3 + 30), || async {
        let alive = alive_nodes(&c.admin).await.ok()?;
        if alive.contains(&victim) {
            return None;
        }
        let cfg = c.admin.query_table("t").await.ok()?;
        fully_healthy(&cfg, &alive).then_some(())
    })
    .await?;
    println!("re-replicated in {:?}", started.elapsed());
    for i in 0..200 {
        let got = table.get(&format!("user{i}"), "s").await?;
        ensure!(got.as_deref() == Some(format!("v{i}").as_bytes()), "user{i} lost after repair: {got:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_names_drop_and_recall() -> Result<()> {
    let c = Cluster::start(1, 2).await?;
    c.create("t", 2, 2).await?;
    let err = c.create("t", 2, 2).await.expect_err("a second table named t");
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");

    // Eight concurrent creates of one new name: exactly one table.
    let results = futures::future::join_all((0..8).map(|_| c.create("race", 1, 1))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    ensure!(ok == 1, "{ok} creates succeeded: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), ErrorCode::AlreadyExists, "{r}");
    }
    let tables = c.list().await?;
    assert_eq!(tables.iter().filter(|t| t.name == "race").count(), 1);

    // Data, drop, query, recall: the data comes back.
    let table = c.table("t").await?;
    table.set("k", "s", b"kept").await?;
    let dropped = c.admin.drop_table("t", Some(3600)).await?;
    let err = c.admin.query_table("t").await.expect_err("query of a dropped table");
    assert_eq!(err.code(), ErrorCode::TableNotFound, "{err}");
    let err = c.create("t", 1, 1).await.expect_err("the name is reserved");
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");
    let app_id = dropped.app_id;
    c.admin.recall_table(app_id, None).await?;
    assert_eq!(table.get("k", "s").await?.as_deref(), Some(&b"kept"[..]));

    // Envs round trip.
    c.admin.set_envs("t", [("a.b", "1")]).await?;
    let envs = c.admin.get_envs("t").await?;
    assert_eq!(envs.get("a.b").map(String::as_str), Some("1"));
    let envs = c.admin.del_envs("t", ["a.b"]).await?;
    assert!(envs.is_empty());

    // A table dropped with a short reserve is purged, and its replicas removed everywhere.
    let dropped = c.admin.drop_table("race", Some(1)).await?;
    wait_for("the expired table's replicas to be removed", Duration::from_secs(30), || async {
        for r in &c.replicas {
            let mut admin = r.admin().await.ok()?;
            let s =
                admin.status(wingkv_proto::replica_admin::StatusRequest { partition: None }).await.ok()?.into_inner();
            if s.replicas.iter().any(|x| x.partition.is_some_and(|p| p.app_id == dropped.app_id)) {
                return None;
            }
        }
        Some(())
    })
    .await?;
    c.create("race", 1, 1).await.context("the name is free after expiry")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_restart_loses_nothing() -> Result<()> {
    let mut c = Cluster::start(1, 2).await?;
    let before = c.create("a", 4, 2).await?;
    c.create("b", 2, 1).await?;
    c.table("a").await?.set("k", "s", b"v").await?;
    c.metas[0].kill();
    c.metas[0].restart().await?;
    let tables = c.list().await?;
    let names: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, BTreeSet::from(["a".to_string(), "b".to_string()]));
    let after = c.admin.query_table("a").await?;
    let members = |cfg: &TableConfiguration| -> Vec<Vec<u64>> {
        cfg.partitions.iter().map(|p| p.members.iter().map(|m| m.node_id).collect()).collect()
    };
    assert_eq!(members(&before), members(&after));
    assert_eq!(c.table("a").await?.get("k", "s").await?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_metas_survive_the_loss_of_the_leader() -> Result<()> {
    let mut c = Cluster::start(3, 2).await?;
    let before = c.create("t", 2, 2).await?;
    let table = c.table("t").await?;
    for i in 0..50 {
        table.set(&format!("k{i}"), "s", format!("v{i}").as_bytes()).await?;
    }
    let info = c.admin.cluster_info().await?;
    assert_eq!(info.meta_members.len(), 3);
    let leader = c.metas.iter().position(|m| m.addr == info.meta_leader).context("leader is one of the metas")?;
    c.metas[leader].kill();
    let started = Instant::now();
    let tables = wait_for("another meta to serve", Duration::from_secs(10), || async {
        let r = c.list().await.ok()?;
        Some(r)
    })
    .await?;
    println!("meta failover took {:?}", started.elapsed());
    ensure!(tables.iter().any(|t| t.name == "t"), "catalog lost the table: {tables:?}");
    let info = c.admin.cluster_info().await?;
    ensure!(info.meta_leader != c.metas[leader].addr, "the dead meta still leads");
    // Not only the names: the same replicas, all hosted, with every row.
    let after = c.admin.query_table("t").await?;
    let members = |cfg: &TableConfiguration| -> Vec<Vec<u64>> {
        cfg.partitions.iter().map(|p| p.members.iter().map(|m| m.node_id).collect()).collect()
    };
    assert_eq!(members(&before), members(&after), "the failover moved replicas");
    for p in &after.partitions {
        let pid = wingkv_common::PartitionId::new(after.app_id, p.partition_index);
        for m in &p.members {
            let r = c.replicas.iter().find(|r| r.node_id == m.node_id).context("member process")?;
            ensure!(r.status(pid).await.is_some(), "node {} no longer hosts {pid}", m.node_id);
        }
    }
    for i in 0..50 {
        let got = table.get(&format!("k{i}"), "s").await?;
        ensure!(got.as_deref() == Some(format!("v{i}").as_bytes()), "k{i} after the failover: {got:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() -> Result<()> {
    let c = Cluster::start(1, 2).await?;
    let cases: Vec<(&str, u32, u32, &str)> = vec![
        ("zero_partitions", 0, 1, "partition count 0"),
        ("too_many_partitions", 131_072, 1, "partition count 131072"),
        ("not_power_of_two", 6, 1, "power of two"),
        ("too_many_replicas", 2, 3, "2 are alive"),
        ("zero_replicas", 2, 0, "replica count 0"),
        ("", 1, 1, "empty"),
        ("bad name", 1, 1, "not allowed"),
        ("-dash", 1, 1, "must start"),
    ];
    for (name, p, r, want) in cases {
        let err = c.create(name, p, r).await.expect_err(name);
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{name}: {err}");
        ensure!(err.to_string().contains(want), "{name}: '{err}' does not say '{want}'");
    }
    ensure!(c.list().await?.is_empty(), "a refused create left a table behind");

    let unknown = "nope".to_string();
    let e1 = c.admin.query_table(&unknown).await.expect_err("query");
    let e2 = c.admin.drop_table("nope", Some(0)).await.expect_err("drop");
    let e3 = c.admin.get_envs("nope").await.expect_err("get envs");
    let e4 = c.admin.recall_table(999, None).await.expect_err("recall");
    for e in [e1, e2, e3, e4] {
        assert_eq!(e.code(), ErrorCode::TableNotFound, "{e}");
    }
    // Still serving.
    c.create("fine", 2, 2).await?;
    Ok(())
}

/// A replica server keeps the newest meta leader term across its restart: an order of an older
/// term (a deposed meta leader's) is refused before any heartbeat answer could teach it the term
/// again. Here the metas are stopped while the replica server restarts, so nothing can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_term_fence_survives_a_replica_server_restart() -> Result<()> {
    use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
    use wingkv_proto::replica_admin::RemoveLearnersRequest;

    let mut c = Cluster::start(3, 3).await?;
    let cfg = c.create("fence", 1, 3).await?;
    let partition = Some(wingkv_common::PartitionId::new(cfg.app_id, 0).to_proto());
    // A new meta leader: the term grows.
    let info = c.admin.cluster_info().await?;
    let old_term = info.meta_term;
    let leader = c.metas.iter().position(|m| m.addr == info.meta_leader).context("leader is one of the metas")?;
    c.metas[leader].kill();
    let new_term = wait_for("a new meta leader term", Duration::from_secs(60), || async {
        c.admin.cluster_info().await.ok().map(|i| i.meta_term).filter(|t| *t > old_term)
    })
    .await?;
    // An order of the old term that would change nothing if taken (no learner named): the
    // fence answers InvalidState, a server that takes it InvalidArgument.
    let addr = c.replicas[0].addr.clone();
    let probe = || async {
        let mut admin = ReplicaAdminClient::new(wingkv_tests::channel(&addr).ok()?);
        let req = RemoveLearnersRequest { partition, learners: vec![], meta_term: Some(old_term) };
        let status = admin.remove_learners(req).await.err()?;
        Some(wingkv_tests::wing_error(&status))
    };
    wait_for("the replica server to hear the new meta term", Duration::from_secs(30), || async {
        probe().await.filter(|e| e.code() == ErrorCode::InvalidState).map(|_| ())
    })
    .await?;

    let metas_stopped: Vec<_> =
        c.metas.iter().filter_map(|m| m.pid()).map(|pid| wingkv_tests::faults::Stopped::stop(pid as i32)).collect();
    c.replicas[0].kill();
    c.replicas[0].restart().await?;
    let answer = wait_for("the restarted replica server to answer", Duration::from_secs(60), probe).await?;
    drop(metas_stopped);
    ensure!(
        answer.code() == ErrorCode::InvalidState && answer.to_string().contains(&format!("seen meta term {new_term}")),
        "after a restart the replica server took an order of meta term {old_term} (the newest is {new_term}): {answer}"
    );
    Ok(())
}
