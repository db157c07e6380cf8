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
