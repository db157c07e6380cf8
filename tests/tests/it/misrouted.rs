//! Keys sent to a partition they do not hash to: refused with `WrongPartition`, nothing stored;
//! operations on a whole hash key refuse the empty hash key; a partition index beyond the
//! table's count is a non-retryable error, not "not hosted".

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use wingkv_client::ScanOptions;
use wingkv_common::hash::partition_index;
use wingkv_common::{ErrorCode, PartitionId};
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::data::*;
use wingkv_tests::cluster::Cluster;
use wingkv_tests::{channel, wait_for, wing_error};

const PARTITIONS: u32 = 4;

fn hash_key_in(pidx: u32) -> Result<String> {
    wingkv_tests::hash_key_in(pidx, PARTITIONS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misrouted_requests_are_refused_and_store_nothing() -> Result<()> {
    let c = Cluster::start(1, 1).await?;
    let cfg = c.create("t", PARTITIONS, 1).await?;
    let p0 = PartitionId::new(cfg.app_id, 0);
    let primary = cfg.partitions[0].primary.as_ref().context("partition 0 has a primary")?;
    let mut data = DataClient::new(channel(&primary.address)?);
    let elsewhere = hash_key_in(1)?;
    let home = hash_key_in(0)?;
    let key = |hk: &str| Bytes::copy_from_slice(hk.as_bytes());

    // Single-key writes and reads, and multi-key ones, to the wrong partition.
    let set = SetRequest {
        partition: Some(p0.to_proto()),
        hash_key: key(&elsewhere),
        sort_key: key("s"),
        value: key("v"),
        ttl_seconds: 0,
    };
    let err = wing_error(&data.set(set.clone()).await.expect_err("a misrouted set"));
    assert_eq!(err.code(), ErrorCode::WrongPartition, "{err}");
    assert!(err.to_string().contains(&format!("{}.1 of {PARTITIONS}", cfg.app_id)), "{err}");
    let get = GetRequest { partition: Some(p0.to_proto()), hash_key: key(&elsewhere), sort_key: key("s") };
    let err = wing_error(&data.get(get).await.expect_err("a misrouted get"));
    assert_eq!(err.code(), ErrorCode::WrongPartition, "{err}");
    let multi_set = MultiSetRequest {
        partition: Some(p0.to_proto()),
        hash_key: key(&elsewhere),
        kvs: vec![KeyValue { sort_key: key("a"), value: key("1") }],
        ttl_seconds: 0,
    };
    let err = wing_error(&data.multi_set(multi_set.clone()).await.expect_err("a misrouted multi_set"));
    assert_eq!(err.code(), ErrorCode::WrongPartition, "{err}");
    // An empty hash key: `set` routes by the sort key, so a sort key of the right partition is
    // served; a multi-key operation cannot be routed and is refused for what it is.
    let sk_home = (0..10_000)
        .map(|i| format!("sk{i}"))
        .find(|sk| partition_index(b"", sk.as_bytes(), PARTITIONS) == 0)
        .context("a sort key of partition 0")?;
    data.set(SetRequest { hash_key: Bytes::new(), sort_key: key(&sk_home), ..set.clone() }).await?;
    let err = wing_error(
        &data
            .multi_set(MultiSetRequest { hash_key: Bytes::new(), ..multi_set.clone() })
            .await
            .expect_err("multi_set of the empty hash key"),
    );
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(err.to_string().contains("non-empty hash key"), "{err}");
    // The right partition still serves.
    data.set(SetRequest { hash_key: key(&home), ..set.clone() }).await?;

    // A partition index beyond the table's count: known once the meta's heartbeat told the
    // node the table's shape, and then refused as such, never "not hosted".
    let beyond = PartitionId::new(cfg.app_id, PARTITIONS);
    wait_for("the out-of-range partition refused as such", Duration::from_secs(30), || {
        let mut data = data.clone();
        let set = SetRequest { partition: Some(beyond.to_proto()), ..set.clone() };
        async move {
            let err = wing_error(&data.set(set).await.err()?);
            (err.code() == ErrorCode::InvalidArgument && err.to_string().contains("has 4 partitions")).then_some(())
        }
    })
    .await?;

    // Nothing of the refused requests was stored anywhere: a full scan sees the two good rows.
    let table = c.table("t").await?;
    let mut rows = Vec::new();
    let mut scan = table.full_scan(ScanOptions::default());
    while let Some(r) = scan.next().await {
        let r = r?;
        rows.push((String::from_utf8_lossy(&r.hash_key).to_string(), String::from_utf8_lossy(&r.sort_key).to_string()));
    }
    rows.sort();
    let mut want = vec![(String::new(), sk_home.clone()), (home.clone(), "s".to_string())];
    want.sort();
    ensure!(rows == want, "stored rows {rows:?}, expected only {want:?}");
    // The SDK routes by the same hash and is never refused.
    table.set(&elsewhere, "s", "through the sdk").await?;
    ensure!(table.get(&elsewhere, "s").await?.as_deref() == Some(&b"through the sdk"[..]));
    Ok(())
}
