//! The Rust SDK against a real cluster: every operation, TTL expiry, full scans, and writers
//! that see no error while each replica server restarts in turn.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use futures::StreamExt;
use wingkv_client::{CheckType, Client, ErrorCode, ScanOptions, Ttl};
use wingkv_tests::cluster::Cluster;
use wingkv_tests::onebox::{onebox, Guard};
use wingkv_tests::wait_for;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_and_scans_across_partitions() -> Result<()> {
    let c = Cluster::start(1, 3).await?;
    c.create("t", 8, 3).await?;
    let client = Client::connect(c.meta_addrs()).await?;
    let t = client.open_table("t").await?;
    assert_eq!(t.partition_count(), 8);

    t.set("u", "name", "alice").await?;
    assert_eq!(t.get("u", "name").await?, Some(b("alice")));
    assert_eq!(t.get("u", "nobody").await?, None, "absent is Ok(None)");
    assert!(t.exist("u", "name").await?);
    assert_eq!(t.ttl("u", "name").await?, Some(Ttl::Infinite));
    assert_eq!(t.ttl("u", "nobody").await?, None);
    t.del("u", "name").await?;
    assert!(!t.exist("u", "name").await?);
    t.multi_set("m", vec![(b("a"), b("1")), (b("b"), b("2")), (b("c"), b("3"))], None).await?;
    assert_eq!(t.multi_get("m", None).await?.len(), 3);
    assert_eq!(t.multi_get("m", Some(vec![b("a"), b("z")])).await?, vec![(b("a"), b("1"))]);
    assert_eq!(t.sortkey_count("m").await?, 3);
    assert_eq!(t.multi_del("m", vec![b("a"), b("b")]).await?, 2);
    assert_eq!(t.incr("n", "c", 3).await?, 3);
    assert_eq!(t.incr("n", "c", -1).await?, 2);
    let err = t.incr("m", "c", 1).await;
    assert!(err.is_ok(), "'3' is an integer: {err:?}");
    t.set("m", "text", "abc").await?;
    assert_eq!(t.incr("m", "text", 1).await.map_err(|e| e.code()), Err(ErrorCode::InvalidArgument));
    let cas = t.check_and_set("k", "x", CheckType::CtValueNotExist, "", "x", "first", None).await?;
    assert!(cas.set && cas.check_value.is_none());
    let cas = t.check_and_set("k", "x", CheckType::CtValueNotExist, "", "x", "second", None).await?;
    assert!(!cas.set && cas.check_value == Some(b("first")));

    // TTL: alive, then gone.
    t.set_with_ttl("tmp", "k", "v", Some(Duration::from_secs(2))).await?;
    assert!(matches!(t.ttl("tmp", "k").await?, Some(Ttl::Seconds(s)) if s <= 2));
    wait_for("the record to expire", Duration::from_secs(10), || async {
        t.get("tmp", "k").await.ok().flatten().is_none().then_some(())
    })
    .await?;

    // 400 rows over 8 partitions: a full scan returns each exactly once.
    let before: u64 = t.full_scan(ScanOptions::default()).count().await as u64;
    for i in 0..400 {
        t.set(format!("row{i}"), "s", format!("{i}")).await?;
    }
    let mut seen = BTreeSet::new();
    let mut rows = t.full_scan(ScanOptions { batch_size: 7, ..Default::default() });
    let mut total = 0u64;
    while let Some(r) = rows.next().await {
        let r = r?;
        total += 1;
        if r.hash_key.starts_with(b"row") {
            ensure!(seen.insert(r.hash_key.clone()), "{:?} returned twice", r.hash_key);
        }
    }
    assert_eq!(seen.len(), 400);
    assert_eq!(total, before + 400);
    let one: Vec<_> = t.scan("m", ScanOptions::default()).collect().await;
    assert_eq!(one.len(), 2, "c and text remain under m: {one:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_see_no_error_during_onebox_restarts() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta_addr = wingkv_tests::onebox::start(&dir)?;
    let client = Client::connect([meta_addr]).await?;
    let options =
        wingkv_client::CreateTableOptions { partition_count: Some(8), replica_count: Some(3), ..Default::default() };
    client.admin().create_table("t", options).await?;
    let t = client.open_table("t").await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (t, stop, progress) = (t.clone(), stop.clone(), progress.clone());
        writers.spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{w}-{i}");
                t.set(&key, "s", &key).await.map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
                acked.push(key);
                progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(acked)
        });
    }
    for node in ["replica1", "replica2", "replica3"] {
        let before = progress.load(std::sync::atomic::Ordering::Relaxed);
        wait_for("writers to make progress", Duration::from_secs(30), || async {
            (progress.load(std::sync::atomic::Ordering::Relaxed) >= before + 50).then_some(())
        })
        .await?;
        // `onebox restart` drains the server (SIGTERM) and starts it again on the same data.
        onebox(&dir, &["restart", node])?;
    }
    let before = progress.load(std::sync::atomic::Ordering::Relaxed);
    wait_for("writers to make progress after the last restart", Duration::from_secs(30), || async {
        (progress.load(std::sync::atomic::Ordering::Relaxed) >= before + 50).then_some(())
    })
    .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    while let Some(r) = writers.join_next().await {
        acked.extend(r??);
    }
    for key in &acked {
        ensure!(t.get(key, "s").await?.as_deref() == Some(key.as_bytes()), "{key} acknowledged but lost");
    }
    println!("{} acknowledged writes across 3 restarts, all readable", acked.len());
    Ok(())
}
