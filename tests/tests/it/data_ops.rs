//! Every data operation, TTL, and bad input against a real single-replica group.

use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use wingkv_common::{ErrorCode, PartitionId};
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::*;
use wingkv_proto::raft::RaftMessage;
use wingkv_tests::raw::call_raw;
use wingkv_tests::{create_group, wait_for, wait_leader, wing_error, ReplicaProcess};

const TIMEOUT: Duration = Duration::from_secs(30);
const P: PartitionId = PartitionId { app_id: 1, partition_index: 0 };

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn single_node(root: &std::path::Path) -> Result<ReplicaProcess> {
    let node = ReplicaProcess::start(1, root, "").await?;
    create_group(&[&node], 0, P).await?;
    wait_leader(&[&node], P, TIMEOUT).await?;
    Ok(node)
}

async fn set(c: &mut DataClient<tonic::transport::Channel>, hk: &str, sk: &str, v: &str, ttl: u32) -> Result<()> {
    c.set(SetRequest {
        partition: Some(P.to_proto()),
        hash_key: b(hk),
        sort_key: b(sk),
        value: b(v),
        ttl_seconds: ttl,
    })
    .await?;
    Ok(())
}

async fn get(c: &mut DataClient<tonic::transport::Channel>, hk: &str, sk: &str) -> Result<Option<Bytes>> {
    let r = c.get(GetRequest { partition: Some(P.to_proto()), hash_key: b(hk), sort_key: b(sk) }).await?.into_inner();
    Ok(r.found.then_some(r.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_operations() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = single_node(tmp.path()).await?;
    let mut c = node.data().await?;
    let key = |hk: &str, sk: &str| KeyRequest { partition: Some(P.to_proto()), hash_key: b(hk), sort_key: b(sk) };

    set(&mut c, "user", "name", "alice", 0).await?;
    assert_eq!(get(&mut c, "user", "name").await?, Some(b("alice")));
    assert_eq!(get(&mut c, "user", "none").await?, None);
    assert!(c.exist(key("user", "name")).await?.into_inner().exists);
    assert_eq!(c.ttl(key("user", "name")).await?.into_inner().ttl_seconds, -1);
    assert_eq!(c.ttl(key("user", "none")).await?.into_inner().ttl_seconds, -2);
    c.del(DelRequest { partition: Some(P.to_proto()), hash_key: b("user"), sort_key: b("name") }).await?;
    assert_eq!(get(&mut c, "user", "name").await?, None);

    // multi_set / multi_get / sortkey_count / multi_del
    let kvs: Vec<KeyValue> =
        (0..10).map(|i| KeyValue { sort_key: b(&format!("s{i}")), value: b(&format!("v{i}")) }).collect();
    c.multi_set(MultiSetRequest { partition: Some(P.to_proto()), hash_key: b("h"), kvs, ttl_seconds: 0 }).await?;
    set(&mut c, "h2", "s0", "other", 0).await?;
    let all = c
        .multi_get(MultiGetRequest { partition: Some(P.to_proto()), hash_key: b("h"), ..Default::default() })
        .await?
        .into_inner();
    assert_eq!(all.kvs.len(), 10);
    assert_eq!(all.kvs[3].value, b("v3"));
    let some = c
        .multi_get(MultiGetRequest {
            partition: Some(P.to_proto()),
            hash_key: b("h"),
            sort_keys: vec![b("s1"), b("missing"), b("s9")],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(some.kvs.iter().map(|kv| kv.sort_key.clone()).collect::<Vec<_>>(), vec![b("s1"), b("s9")]);
    let limited = c
        .multi_get(MultiGetRequest {
            partition: Some(P.to_proto()),
            hash_key: b("h"),
            max_kv_count: 4,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(limited.kvs.len(), 4);
    assert!(limited.incomplete);
    let count = c.sort_key_count(SortKeyCountRequest { partition: Some(P.to_proto()), hash_key: b("h") }).await?;
    assert_eq!(count.into_inner().count, 10);
    let del = c
        .multi_del(MultiDelRequest {
            partition: Some(P.to_proto()),
            hash_key: b("h"),
            sort_keys: vec![b("s0"), b("s1"), b("nope")],
        })
        .await?;
    assert_eq!(del.into_inner().deleted, 2);

    // scans: one hash key with bounds, and the whole partition in small batches
    let mut stream = c
        .scan(ScanRequest {
            partition: Some(P.to_proto()),
            hash_key: Some(b("h")),
            start_sort_key: b("s3"),
            start_inclusive: true,
            stop_sort_key: b("s6"),
            stop_inclusive: false,
            batch_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(batch) = stream.next().await {
        seen.extend(batch?.records.into_iter().map(|r| r.sort_key));
    }
    assert_eq!(seen, vec![b("s3"), b("s4"), b("s5")]);
    let mut stream =
        c.scan(ScanRequest { partition: Some(P.to_proto()), batch_size: 3, ..Default::default() }).await?.into_inner();
    let mut total = 0;
    while let Some(batch) = stream.next().await {
        total += batch?.records.len();
    }
    assert_eq!(total, 9, "8 left under h, 1 under h2");

    // incr
    let incr = |delta: i64| IncrRequest {
        partition: Some(P.to_proto()),
        hash_key: b("c"),
        sort_key: b("n"),
        increment: delta,
        ttl_seconds: 0,
    };
    assert_eq!(c.incr(incr(5)).await?.into_inner().new_value, 5);
    assert_eq!(c.incr(incr(-7)).await?.into_inner().new_value, -2);
    set(&mut c, "c", "text", "abc", 0).await?;
    let mut not_int = incr(1);
    not_int.sort_key = b("text");
    let status = c.incr(not_int).await.expect_err("incr of text");
    assert_eq!(wing_error(&status).code(), ErrorCode::InvalidArgument);
    assert_eq!(get(&mut c, "c", "text").await?, Some(b("abc")), "refused incr must not write");

    // check_and_set
    let cas = |check_type: CheckType, operand: &str, value: &str| CheckAndSetRequest {
        partition: Some(P.to_proto()),
        hash_key: b("cas"),
        check_sort_key: b("k"),
        check_type: check_type as i32,
        check_operand: b(operand),
        set_value: b(value),
        return_check_value: true,
        ..Default::default()
    };
    let r = c.check_and_set(cas(CheckType::CtValueNotExist, "", "1")).await?.into_inner();
    assert!(r.set_succeeded && !r.check_value_exist);
    let r = c.check_and_set(cas(CheckType::CtValueNotExist, "", "2")).await?.into_inner();
    assert!(!r.set_succeeded && r.check_value == b("1"));
    let r = c.check_and_set(cas(CheckType::CtValueIntLess, "5", "3")).await?.into_inner();
    assert!(r.set_succeeded);
    assert_eq!(get(&mut c, "cas", "k").await?, Some(b("3")));
    let mut bad = cas(CheckType::CtNoCheck, "", "x");
    bad.check_type = 99;
    assert_eq!(wing_error(&c.check_and_set(bad).await.expect_err("bad check type")).code(), ErrorCode::InvalidArgument);

    // TTL: visible while alive, reported, then invisible.
    set(&mut c, "t", "k", "short", 2).await?;
    let ttl = c.ttl(key("t", "k")).await?.into_inner().ttl_seconds;
    ensure!((0..=2).contains(&ttl), "ttl {ttl}");
    wait_for("the record to expire", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move { get(&mut c, "t", "k").await.ok().flatten().is_none().then_some(()) }
    })
    .await?;
    assert_eq!(c.ttl(key("t", "k")).await?.into_inner().ttl_seconds, -2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = single_node(tmp.path()).await?;
    let mut c = node.data().await?;
    set(&mut c, "keep", "me", "intact", 0).await?;

    // Over-long hash key.
    let long = Bytes::from(vec![b'a'; 70_000]);
    let s = c
        .set(SetRequest {
            partition: Some(P.to_proto()),
            hash_key: long.clone(),
            sort_key: b("s"),
            value: b("v"),
            ttl_seconds: 0,
        })
        .await
        .expect_err("over-long hash key");
    assert_eq!(wing_error(&s).code(), ErrorCode::InvalidArgument);
    assert!(s.message().contains("70000 bytes"), "{}", s.message());
    let s =
        c.get(GetRequest { partition: Some(P.to_proto()), hash_key: long, sort_key: b("s") }).await.expect_err("long");
    assert_eq!(wing_error(&s).code(), ErrorCode::InvalidArgument);

    // Unknown partition, and none at all.
    let s = c
        .get(GetRequest { partition: Some(PartitionId::new(9, 9).to_proto()), hash_key: b("k"), sort_key: b("s") })
        .await
        .expect_err("unknown partition");
    assert_eq!(wing_error(&s).code(), ErrorCode::NotFound);
    assert!(s.message().contains("9.9"), "{}", s.message());
    let s = c.get(GetRequest { partition: None, hash_key: b("k"), sort_key: b("s") }).await.expect_err("no partition");
    assert_eq!(wing_error(&s).code(), ErrorCode::InvalidArgument);

    // Bytes that are not a protobuf message at all.
    let s = call_raw(&node.addr, "/wingkv.data.Data/Set", vec![0xFF, 0xFF, 0xFF, 0x07]).await.expect_err("garbage");
    assert_ne!(s.code(), tonic::Code::Ok);
    // A raft message whose payload is garbage.
    let msg = RaftMessage { partition: Some(P.to_proto()), payload: Bytes::from_static(b"\x01\x02garbage") };
    let s = call_raw(&node.addr, "/wingkv.raft.RaftTransport/AppendEntries", msg.encode_to_vec())
        .await
        .expect_err("garbage raft payload");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("malformed raft"), "{}", s.message());
    // An incr TTL below -1 (0 keeps, -1 clears, > 0 sets).
    let s = c
        .incr(IncrRequest {
            partition: Some(P.to_proto()),
            hash_key: b("n"),
            sort_key: b("s"),
            increment: 1,
            ttl_seconds: -5,
        })
        .await
        .expect_err("incr ttl -5");
    assert_eq!(wing_error(&s).code(), ErrorCode::InvalidArgument);
    assert!(s.message().contains("ttl_seconds -5"), "{}", s.message());
    // A check operand over the cap: the check runs in raft apply on every replica.
    let s = c
        .check_and_set(CheckAndSetRequest {
            partition: Some(P.to_proto()),
            hash_key: b("keep"),
            check_sort_key: b("me"),
            check_type: 5,
            check_operand: Bytes::from(vec![b'x'; 70_000]),
            set_value: b("overwritten"),
            ..Default::default()
        })
        .await
        .expect_err("operand over 64 KiB");
    assert_eq!(wing_error(&s).code(), ErrorCode::InvalidArgument);
    assert!(s.message().contains("check operand is 70000 bytes"), "{}", s.message());
    // More sort keys in one request than the limit.
    let many = (0..100_001).map(|i| Bytes::from(format!("{i}"))).collect();
    let s = c
        .multi_get(MultiGetRequest {
            partition: Some(P.to_proto()),
            hash_key: b("keep"),
            sort_keys: many,
            ..Default::default()
        })
        .await
        .expect_err("100,001 sort keys");
    assert_eq!(wing_error(&s).code(), ErrorCode::InvalidArgument);
    assert!(s.message().contains("the limit is 100000"), "{}", s.message());
    // A sort key named twice is answered once.
    let r = c
        .multi_get(MultiGetRequest {
            partition: Some(P.to_proto()),
            hash_key: b("keep"),
            sort_keys: vec![b("me"), b("absent"), b("me")],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(r.kvs.len(), 1, "{:?}", r.kvs);
    assert!(!r.incomplete);
    // Empty multi-writes.
    let s = c
        .multi_set(MultiSetRequest { partition: Some(P.to_proto()), hash_key: b("h"), kvs: vec![], ttl_seconds: 0 })
        .await
        .expect_err("empty multi_set");
    assert_eq!(wing_error(&s).code(), ErrorCode::InvalidArgument);

    // The server still serves, and the data is intact.
    assert_eq!(get(&mut c, "keep", "me").await?, Some(b("intact")));
    set(&mut c, "after", "bad", "input", 0).await?;
    assert_eq!(get(&mut c, "after", "bad").await?, Some(b("input")));
    Ok(())
}

/// A count or scan whose caller gave up stops within one slice instead of running on through
/// the whole hash key (`wingkv_range_read_steps_total` shows how far it got).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_count_stops() -> Result<()> {
    const RECORDS: usize = 400_000;
    let tmp = tempfile::tempdir()?;
    let node = single_node(tmp.path()).await?;
    let mut c = node.data().await?;
    for chunk in 0..RECORDS / 100_000 {
        let kvs = (0..100_000)
            .map(|i| KeyValue { sort_key: Bytes::from(format!("{chunk}-{i:06}")), value: b("v") })
            .collect();
        c.multi_set(MultiSetRequest { partition: Some(P.to_proto()), hash_key: b("big"), kvs, ttl_seconds: 0 }).await?;
    }
    let http = node.http_addr()?;
    let steps = || async {
        let samples = wingkv_tests::metrics::scrape(&http).await?;
        Ok::<_, anyhow::Error>(wingkv_tests::metrics::sum(&samples, "wingkv_range_read_steps_total", &[]))
    };
    let before = steps().await?;

    let mut req = tonic::Request::new(SortKeyCountRequest { partition: Some(P.to_proto()), hash_key: b("big") });
    req.set_timeout(Duration::from_millis(1));
    let s = c.sort_key_count(req).await.expect_err("a 1 ms deadline for 400,000 records");
    // The server enforces the deadline itself (Cancelled) or the client gives up first.
    assert!(matches!(s.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded), "{s:?}");

    // Wait until the server has stopped reading (the figure is unchanged over half a second),
    // then check it read a slice or two, not the hash key.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut last = steps().await?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = steps().await?;
        if now == last {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "range reads go on {TIMEOUT:?} after the count was abandoned");
        last = now;
    }
    let read = last - before;
    assert!(read < (RECORDS / 4) as f64, "the abandoned count read {read} of {RECORDS} records");

    // A count that is waited for reads them all.
    let r = c.sort_key_count(SortKeyCountRequest { partition: Some(P.to_proto()), hash_key: b("big") }).await?;
    assert_eq!(r.into_inner().count, RECORDS as u64);
    Ok(())
}

/// A scan crosses a run of expired records longer than one read slice (each slice examines
/// at most 10,000 records) and finds the live records after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_crosses_a_long_run_of_expired_records() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = single_node(tmp.path()).await?;
    let mut c = node.data().await?;
    let expiring = (0..25_000).map(|i| KeyValue { sort_key: Bytes::from(format!("a{i:06}")), value: b("v") }).collect();
    c.multi_set(MultiSetRequest { partition: Some(P.to_proto()), hash_key: b("h"), kvs: expiring, ttl_seconds: 1 })
        .await?;
    let live = (0..10).map(|i| KeyValue { sort_key: Bytes::from(format!("b{i}")), value: b("v") }).collect();
    c.multi_set(MultiSetRequest { partition: Some(P.to_proto()), hash_key: b("h"), kvs: live, ttl_seconds: 0 }).await?;
    wait_for("the first records to expire", TIMEOUT, || {
        let mut c = c.clone();
        async move { get(&mut c, "h", "a000000").await.ok()?.is_none().then_some(()) }
    })
    .await?;

    let req = ScanRequest { partition: Some(P.to_proto()), hash_key: Some(b("h")), ..Default::default() };
    let mut stream = c.scan(req).await?.into_inner();
    let mut found = Vec::new();
    while let Some(batch) = stream.next().await {
        found.extend(batch?.records.into_iter().map(|r| r.sort_key));
    }
    assert_eq!(found, (0..10).map(|i| Bytes::from(format!("b{i}"))).collect::<Vec<_>>());
    let r = c
        .multi_get(MultiGetRequest { partition: Some(P.to_proto()), hash_key: b("h"), ..Default::default() })
        .await?
        .into_inner();
    assert_eq!((r.kvs.len(), r.incomplete), (10, false));
    // By name: more names than are read on the runtime (64), so the reads go to a blocking
    // thread; the 10 live records come back in request order.
    let names: Vec<Bytes> = (0..100).rev().map(|i| Bytes::from(format!("b{i}"))).collect();
    let r = c
        .multi_get(MultiGetRequest {
            partition: Some(P.to_proto()),
            hash_key: b("h"),
            sort_keys: names,
            ..Default::default()
        })
        .await?
        .into_inner();
    let got: Vec<Bytes> = r.kvs.into_iter().map(|kv| kv.sort_key).collect();
    assert_eq!(got, (0..10).rev().map(|i| Bytes::from(format!("b{i}"))).collect::<Vec<_>>());
    Ok(())
}
