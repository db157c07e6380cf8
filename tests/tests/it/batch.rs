//! The `Batch` stream: many requests per message, each answered on its own (an error is the
//! request's, never the stream's), and the stream ends cleanly when the client ends it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::SinkExt;
use wingkv_common::{ErrorCode, PartitionId, WingError};
use wingkv_proto::data::batch_op::Op;
use wingkv_proto::data::batch_result::Result as Answer;
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::*;
use wingkv_tests::channel;
use wingkv_tests::cluster::Cluster;

const PARTITIONS: u32 = 4;

fn hash_key_in(pidx: u32) -> Result<Bytes> {
    wingkv_tests::hash_key_in(pidx, PARTITIONS).map(Bytes::from)
}

/// The answers of `ops`, by id, read off `inbound` until each is answered once.
async fn answers(
    outbound: &mut futures::channel::mpsc::Sender<BatchRequest>,
    inbound: &mut tonic::Streaming<BatchResponse>,
    ops: Vec<BatchOp>,
) -> Result<BTreeMap<u64, Answer>> {
    let ids: Vec<u64> = ops.iter().map(|o| o.id).collect();
    outbound.send(BatchRequest { ops }).await?;
    let mut got = BTreeMap::new();
    while got.len() < ids.len() {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .context("no answer within 10 s")??
            .context("the server ended the stream with requests unanswered")?;
        for r in msg.results {
            ensure!(ids.contains(&r.id), "an answer to request {} nobody sent", r.id);
            let answer = r.result.with_context(|| format!("request {} answered with nothing", r.id))?;
            ensure!(got.insert(r.id, answer).is_none(), "request {} answered twice", r.id);
        }
    }
    Ok(got)
}

/// A batched set of `hash_key`/`s` = `value` in `partition`, with a 5 s deadline.
fn set_op(id: u64, partition: PartitionId, hash_key: &Bytes, value: &'static str) -> BatchOp {
    BatchOp {
        id,
        timeout_ms: 5_000,
        op: Some(Op::Set(SetRequest {
            partition: Some(partition.to_proto()),
            hash_key: hash_key.clone(),
            sort_key: Bytes::from_static(b"s"),
            value: Bytes::from_static(value.as_bytes()),
            ttl_seconds: 0,
        })),
    }
}

fn error_of(answer: &Answer) -> Result<WingError> {
    match answer {
        Answer::Error(e) => Ok(WingError::from_status(&wingkv_common::error::batch_error_status(e))),
        other => bail!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batched_request_gets_its_own_answer_and_errors_stay_per_request() -> Result<()> {
    let c = Cluster::start(1, 1).await?;
    let cfg = c.create("t", PARTITIONS, 1).await?;
    let p0 = PartitionId::new(cfg.app_id, 0);
    let primary = cfg.partitions[0].primary.as_ref().context("partition 0 has a primary")?;
    let mut data = DataClient::new(channel(&primary.address)?);
    let (mut outbound, requests) = futures::channel::mpsc::channel::<BatchRequest>(4);
    let mut inbound = data.batch(requests).await?.into_inner();
    let (home, elsewhere) = (hash_key_in(0)?, hash_key_in(1)?);
    let set = |id, hash_key: &Bytes, value: &'static str| set_op(id, p0, hash_key, value);
    let get = |id, partition: PartitionId| BatchOp {
        id,
        timeout_ms: 5_000,
        op: Some(Op::Get(GetRequest {
            partition: Some(partition.to_proto()),
            hash_key: home.clone(),
            sort_key: Bytes::from_static(b"s"),
        })),
    };

    // One message: a good write among bad requests; each bad one is refused for what it is.
    let got = answers(
        &mut outbound,
        &mut inbound,
        vec![
            set(1, &home, "v1"),
            set(2, &elsewhere, "misrouted"),
            BatchOp { id: 3, timeout_ms: 5_000, op: None },
            BatchOp {
                id: 4,
                timeout_ms: 5_000,
                op: Some(Op::Get(GetRequest { partition: None, ..Default::default() })),
            },
            set(5, &Bytes::from(vec![b'h'; 70_000]), "long hash key"),
        ],
    )
    .await?;
    ensure!(matches!(got[&1], Answer::Write(ref w) if w.log_index > 0), "{:?}", got[&1]);
    ensure!(error_of(&got[&2])?.code() == ErrorCode::WrongPartition, "{:?}", got[&2]);
    let e = error_of(&got[&3])?;
    ensure!(e.code() == ErrorCode::InvalidArgument && e.to_string().contains("names no operation"), "{e}");
    ensure!(error_of(&got[&4])?.code() == ErrorCode::InvalidArgument, "{:?}", got[&4]);
    let e = error_of(&got[&5])?;
    ensure!(e.code() == ErrorCode::InvalidArgument && e.to_string().contains("hash_key is 70000 bytes"), "{e}");

    // The stream goes on after the errors: the write is read back, and the misrouted one
    // stored nothing.
    let got = answers(&mut outbound, &mut inbound, vec![get(6, p0)]).await?;
    ensure!(matches!(got[&6], Answer::Get(ref g) if g.found && g.value == "v1"), "{:?}", got[&6]);
    let misrouted = c.client.open_table("t").await?.get(&elsewhere, "s").await?;
    ensure!(misrouted.is_none(), "the misrouted write was stored: {misrouted:?}");

    // Gets of one partition in one message are served together (one lease check, one
    // multi-get), and still answered each for what it is.
    let get_key = |id, hash_key: &Bytes, sort_key: &'static str| BatchOp {
        id,
        timeout_ms: 5_000,
        op: Some(Op::Get(GetRequest {
            partition: Some(p0.to_proto()),
            hash_key: hash_key.clone(),
            sort_key: Bytes::from_static(sort_key.as_bytes()),
        })),
    };
    let mut short_lived = set(7, &home, "expires");
    if let Some(Op::Set(s)) = &mut short_lived.op {
        s.sort_key = Bytes::from_static(b"ttl");
        // Expiry counts whole seconds: a TTL of 1 s may end a moment after the write (it did,
        // under a full test run), 3 s leaves the reads below at least 2 s.
        s.ttl_seconds = 3;
    }
    let got = answers(&mut outbound, &mut inbound, vec![short_lived]).await?;
    ensure!(matches!(got[&7], Answer::Write(_)), "{:?}", got[&7]);
    let group = || {
        vec![
            get_key(10, &home, "s"),
            get_key(11, &home, "absent"),
            get_key(12, &elsewhere, "s"),
            get_key(13, &Bytes::from(vec![b'h'; 70_000]), "s"),
            get_key(14, &home, "s"),
            get_key(15, &home, "ttl"),
        ]
    };
    let got = answers(&mut outbound, &mut inbound, group()).await?;
    for id in [10, 14] {
        ensure!(matches!(got[&id], Answer::Get(ref g) if g.found && g.value == "v1"), "{id}: {:?}", got[&id]);
    }
    ensure!(matches!(got[&11], Answer::Get(ref g) if !g.found && g.value.is_empty()), "{:?}", got[&11]);
    ensure!(error_of(&got[&12])?.code() == ErrorCode::WrongPartition, "{:?}", got[&12]);
    ensure!(error_of(&got[&13])?.code() == ErrorCode::InvalidArgument, "{:?}", got[&13]);
    ensure!(matches!(got[&15], Answer::Get(ref g) if g.found && g.value == "expires"), "{:?}", got[&15]);
    // Once its TTL passed, the record is not found in a group either.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = answers(&mut outbound, &mut inbound, group()).await?;
        ensure!(matches!(got[&10], Answer::Get(ref g) if g.found), "{:?}", got[&10]);
        if matches!(got[&15], Answer::Get(ref g) if !g.found) {
            break;
        }
        ensure!(Instant::now() < deadline, "a record with a TTL of 3 s is still found after 10 s: {:?}", got[&15]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Many requests in one message, several partitions' keys through the SDK's routing
    // elsewhere: here, 200 writes of one partition, each answered once.
    let ops: Vec<BatchOp> = (100..300).map(|id| set(id, &home, "many")).collect();
    let got = answers(&mut outbound, &mut inbound, ops).await?;
    ensure!(got.values().all(|a| matches!(a, Answer::Write(_))), "{got:?}");

    // The client ends its half: the server ends the stream, with nothing left unanswered.
    drop(outbound);
    let end =
        tokio::time::timeout(Duration::from_secs(10), inbound.message()).await.context("the stream did not end")?;
    ensure!(matches!(end, Ok(None)), "the stream ended with {end:?}");
    Ok(())
}

/// Many large answers and large requests in flight on one client's stream at once: sending is
/// held by flow control while megabytes of answers wait to be read, and neither side may stop
/// the other (the stream's task reads answers while a send waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_and_requests_in_flight_together_all_finish() -> Result<()> {
    let c = Cluster::start(1, 1).await?;
    c.create("big", PARTITIONS, 1).await?;
    let table = c.client.open_table("big").await?;
    let value = Bytes::from(vec![b'v'; 60_000]);
    for i in 0..64 {
        table.set(format!("h{i}"), "s", &value).await?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..256 {
        let (table, value) = (table.clone(), value.clone());
        tasks.spawn(async move {
            for i in 0..8 {
                let hk = format!("h{}", (t * 8 + i) % 64);
                let got = table.get(&hk, "s").await?;
                ensure!(got.as_ref().is_some_and(|v| v.len() == 60_000), "{hk}: {:?}", got.map(|v| v.len()));
                table.set(&hk, "s", &value).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok::<_, anyhow::Error>(())
    });
    all.await.context("256 clients of 60 KB gets and sets did not finish within 120 s")??;
    Ok(())
}

/// A server that stops tells the client to close (`closing`), answers what it still reads `Busy`
/// (not applied), and ends the stream cleanly once the client has ended its half, so it never
/// closes the connection on unread requests (the kernel would reset it, and the reset can drop
/// answers already sent: the client would see writes of unknown fate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_has_the_client_close_first_and_answers_what_it_still_reads() -> Result<()> {
    let mut c = Cluster::start(1, 1).await?;
    let cfg = c.create("t", PARTITIONS, 1).await?;
    let p0 = PartitionId::new(cfg.app_id, 0);
    let primary = cfg.partitions[0].primary.as_ref().context("partition 0 has a primary")?;
    let mut data = DataClient::new(channel(&primary.address)?);
    let (mut outbound, requests) = futures::channel::mpsc::channel::<BatchRequest>(4);
    let mut inbound = data.batch(requests).await?.into_inner();
    let key = hash_key_in(0)?;
    let set = |id| set_op(id, p0, &key, "v");
    let got = answers(&mut outbound, &mut inbound, vec![set(1)]).await?;
    ensure!(matches!(got[&1], Answer::Write(_)), "{:?}", got[&1]);

    let stop = c.replicas[0].stop_within(Duration::from_secs(20));
    tokio::pin!(stop);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m?.context("the stream ended without telling the client to close")?,
            exited = &mut stop => bail!("the server exited ({exited:?}) before telling the client to close"),
            _ = tokio::time::sleep_until(deadline) => bail!("no closing message within 10 s of the stop"),
        };
        ensure!(msg.results.is_empty(), "answers nobody waited for: {:?}", msg.results);
        if msg.closing {
            break;
        }
    }
    // Sent after the notice: read and refused, not applied.
    let got = answers(&mut outbound, &mut inbound, vec![set(2)]).await?;
    let e = error_of(&got[&2])?;
    ensure!(e.code() == ErrorCode::Busy && e.to_string().contains("stopping"), "{e}");
    // The client ends its half: the stream ends cleanly, and the server exits by itself.
    drop(outbound);
    let end = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await.context("no end within 10 s")?;
    ensure!(matches!(end, Ok(None)), "the stream did not end cleanly: {end:?}");
    ensure!(stop.await?, "the server did not exit by itself after the stream ended");
    Ok(())
}
