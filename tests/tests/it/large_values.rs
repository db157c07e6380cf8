//! A hash key of 100 values of 64 KiB (6.4 MB in all) read by a stock gRPC client, whose
//! messages are limited to 4 MiB: `multi_get` answers in parts (`incomplete`), a scan in
//! batches, and every record arrives.

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use wingkv_common::PartitionId;
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::*;
use wingkv_tests::channel;
use wingkv_tests::cluster::Cluster;

const RECORDS: usize = 100;
const VALUE_BYTES: usize = 64 << 10;
/// tonic's default, and that of most gRPC implementations.
const CLIENT_LIMIT: usize = 4 << 20;

fn sort_key(i: usize) -> Bytes {
    Bytes::from(format!("s{i:03}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_key_larger_than_a_message_is_read_in_parts() -> Result<()> {
    let c = Cluster::start(1, 1).await?;
    let cfg = c.create("big", 1, 1).await?;
    let table = c.table("big").await?;
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(10) {
        let kvs =
            chunk.iter().map(|i| (sort_key(*i), Bytes::from(vec![b'a' + (*i % 26) as u8; VALUE_BYTES]))).collect();
        table.multi_set("hk", kvs, None).await?;
    }
    let primary = cfg.partitions[0].primary.as_ref().context("a primary")?;
    let mut data = DataClient::new(channel(&primary.address)?).max_decoding_message_size(CLIENT_LIMIT);
    let pid = PartitionId::new(cfg.app_id, 0);

    // multi_get of the whole hash key with no limits asked: answered in parts.
    let mut got = Vec::new();
    let mut start = Bytes::new();
    let mut answers = 0;
    loop {
        answers += 1;
        ensure!(answers <= RECORDS, "multi_get does not advance");
        let req = MultiGetRequest {
            partition: Some(pid.to_proto()),
            hash_key: Bytes::from_static(b"hk"),
            start_sort_key: start.clone(),
            start_inclusive: start.is_empty(),
            ..Default::default()
        };
        let r = data.multi_get(req).await.context("a multi_get answer over the client's limit")?.into_inner();
        got.extend(r.kvs.iter().map(|kv| (kv.sort_key.clone(), kv.value.len())));
        match (r.incomplete, r.kvs.last()) {
            (true, Some(last)) => start = last.sort_key.clone(),
            _ => break,
        }
    }
    ensure!(answers > 1, "6.4 MB came in one answer");
    ensure!(got.len() == RECORDS, "multi_get returned {} of {RECORDS} records", got.len());
    ensure!(got.iter().enumerate().all(|(i, (sk, len))| *sk == sort_key(i) && *len == VALUE_BYTES));

    // The same hash key scanned with the default batch size.
    let req = ScanRequest {
        partition: Some(pid.to_proto()),
        hash_key: Some(Bytes::from_static(b"hk")),
        ..Default::default()
    };
    let mut stream = data.scan(req).await?.into_inner();
    let mut scanned = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.context("a scan batch over the client's limit")?;
        scanned += batch.records.len();
    }
    ensure!(scanned == RECORDS, "the scan returned {scanned} of {RECORDS} records");
    Ok(())
}
