//! Bulk-load files from elsewhere: SST files written by another producer than `bulkgen` (this
//! test writes them with RocksDB's `SstFileWriter`, following only DESIGN §2 and §5), and the
//! `s3` provider against a local S3-compatible server (moto) started by the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use wingkv_client::{Client, ScanOptions, Ttl};
use wingkv_tests::bin_path;
use wingkv_tests::cli::{shell, wait_bulk_load_success};
use wingkv_tests::moto::Moto;
use wingkv_tests::onebox::Guard;

/// Pegasus's CRC-64 as DESIGN §2 states it (reflected polynomial 0x9a6c9329ac4bc9b5, init and
/// final xor all ones), written here from the page rather than taken from wingkv.
fn crc64(data: &[u8]) -> u64 {
    let mut crc = u64::MAX;
    for &b in data {
        crc ^= b as u64;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x9a6c_9329_ac4b_c9b5 } else { crc >> 1 };
        }
    }
    !crc
}

/// §2: `u16 BE len(hash_key) ++ hash_key ++ sort_key`.
fn key(hash_key: &[u8], sort_key: &[u8]) -> Vec<u8> {
    let mut k = (hash_key.len() as u16).to_be_bytes().to_vec();
    k.extend_from_slice(hash_key);
    k.extend_from_slice(sort_key);
    k
}

/// §2: `u32 BE expire_ts ++ value`, expire_ts in seconds since 2016-01-01.
fn stored(expire_ts: u32, value: &[u8]) -> Vec<u8> {
    let mut v = expire_ts.to_be_bytes().to_vec();
    v.extend_from_slice(value);
    v
}

fn pegasus_now() -> u32 {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (unix - 1_451_606_400) as u32
}

/// One row of the external producer: hash key, sort key, value, expire_ts.
type Row = (Vec<u8>, Vec<u8>, Vec<u8>, u32);

fn external_rows() -> Vec<Row> {
    let now = pegasus_now();
    let mut rows = Vec::new();
    for i in 0..3_000u32 {
        let hk = format!("ext{i}").into_bytes();
        // Every 7th row expires in an hour; every 11th expired long ago (never visible).
        let expire = if i % 11 == 0 {
            1
        } else if i % 7 == 0 {
            now + 3_600
        } else {
            0
        };
        rows.push((hk.clone(), b"a".to_vec(), format!("va{i}").into_bytes(), expire));
        rows.push((hk, b"b\xff\x00".to_vec(), format!("vb{i}").into_bytes(), 0));
    }
    // Binary hash keys, and the empty hash key (partitioned by the sort key's hash).
    rows.push((b"\xff\x00bin".to_vec(), b"\x00".to_vec(), b"binary".to_vec(), 0));
    rows.push((Vec::new(), b"only-sort-key".to_vec(), b"empty hash key".to_vec(), 0));
    rows
}

/// Writes `rows` as the §5 layout of `table` (`partitions` partitions) under `root/onebox`, each
/// partition's rows split over two SST files, with `SstFileWriter` directly.
fn write_external_layout(root: &Path, table: &str, partitions: u32, rows: &[Row]) -> Result<()> {
    let tdir = root.join("onebox").join(table);
    let mut parts: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = vec![BTreeMap::new(); partitions as usize];
    for (hk, sk, v, expire) in rows {
        let hash = if hk.is_empty() { crc64(sk) } else { crc64(hk) };
        parts[(hash % partitions as u64) as usize].insert(key(hk, sk), stored(*expire, v));
    }
    for (pidx, part) in parts.iter().enumerate() {
        let pdir = tdir.join(pidx.to_string());
        std::fs::create_dir_all(&pdir)?;
        let entries: Vec<(&Vec<u8>, &Vec<u8>)> = part.iter().collect();
        let mut files = Vec::new();
        let mut total = 0u64;
        for (n, chunk) in entries.chunks(entries.len().div_ceil(2).max(1)).enumerate() {
            let name = format!("part-{n}.sst");
            let path = pdir.join(&name);
            let opts = rocksdb::Options::default();
            let mut writer = rocksdb::SstFileWriter::create(&opts);
            writer.open(&path)?;
            for (k, v) in chunk {
                writer.put(k, v)?;
            }
            writer.finish()?;
            let bytes = std::fs::read(&path)?;
            total += bytes.len() as u64;
            files.push(serde_json::json!({
                "name": name, "size": bytes.len(), "md5": wingkv_common::file_digest::FileDigest::md5_of(&bytes).hex()
            }));
        }
        let meta = serde_json::json!({ "files": files, "file_total_size": total });
        std::fs::write(pdir.join("bulk_load_metadata"), serde_json::to_vec(&meta)?)?;
    }
    let info = serde_json::json!({ "app_name": table, "partition_count": partitions });
    std::fs::write(tdir.join("bulk_load_info"), serde_json::to_vec(&info)?)?;
    Ok(())
}

/// SST files of another producer load and read back the same; with the default onebox config,
/// `-p local -r /abs/dir` reads `/abs/dir/onebox/T/...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sst_files_of_another_producer_load_and_read_back() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;
    let remote = tmp.path().join("external").canonicalize().or_else(|_| {
        std::fs::create_dir_all(tmp.path().join("external"))?;
        tmp.path().join("external").canonicalize()
    })?;
    let rows = external_rows();
    write_external_layout(&remote, "ext", 4, &rows)?;

    let (ok, _, err) = shell(&meta, "create ext -p 4 -r 3")?;
    ensure!(ok, "{err}");
    let (ok, _, err) = shell(&meta, &format!("start_bulk_load -a ext -c onebox -p local -r {}", remote.display()))?;
    ensure!(ok, "{err}");
    wait_bulk_load_success(&meta, "ext", Duration::from_secs(120)).await?;

    let client = Client::connect([meta.clone()]).await?;
    let t = client.open_table("ext").await?;
    let live: Vec<&Row> = rows.iter().filter(|r| r.3 != 1).collect();
    for (hk, sk, v, expire) in &rows {
        let got = t.get(hk.clone(), sk.clone()).await?;
        if *expire == 1 {
            ensure!(got.is_none(), "an expired row is visible: {hk:?}/{sk:?}");
        } else {
            ensure!(got.as_deref() == Some(v.as_slice()), "{hk:?}/{sk:?} reads {got:?}, not {v:?}");
        }
        if *expire > 1 {
            let ttl = t.ttl(hk.clone(), sk.clone()).await?;
            let in_range = matches!(ttl, Some(Ttl::Seconds(s)) if s > 3_000 && s <= 3_600);
            ensure!(in_range, "{hk:?}/{sk:?} has ttl {ttl:?}");
        }
    }
    let n = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() }).count().await;
    assert_eq!(n, live.len(), "a full scan must count exactly the live rows");
    Ok(())
}

/// The `s3` provider: bulkgen writes the layout to a local S3 server, the onebox loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_provider_loads_from_a_local_s3_server() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut moto = Moto::start(&tmp.path().join("moto.log")).await?;
    moto.create_bucket("wingkv-bl")?;
    let s3 = format!(
        "endpoint = \"http://{}\"\nbucket = \"wingkv-bl\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n",
        moto.endpoint
    );
    let provider_config = tmp.path().join("provider.toml");
    std::fs::write(&provider_config, format!("[s3]\n{s3}"))?;
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "t", "--partitions", "4", "--provider", "s3", "--root", "loads"])
        .args(["--generate", "20000", "--value-size", "64", "--provider-config"])
        .arg(&provider_config)
        .output()?;
    ensure!(out.status.success(), "bulkgen to s3: {}", String::from_utf8_lossy(&out.stderr));

    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_configured(
        &dir,
        &format!("[bulk_load_provider.s3]\n{s3}"),
        &format!("[bulk_load.provider.s3]\n{s3}"),
    )?;
    let (ok, _, err) = shell(&meta, "create t -p 4 -r 3")?;
    ensure!(ok, "{err}");
    let (ok, _, err) = shell(&meta, "start_bulk_load -a t -c onebox -p s3 -r elsewhere")?;
    ensure!(!ok && err.contains("does not exist"), "a root without a layout must be refused: {err}");
    let (ok, _, err) = shell(&meta, "start_bulk_load -a t -c onebox -p s3 -r loads")?;
    ensure!(ok, "{err}");
    wait_bulk_load_success(&meta, "t", Duration::from_secs(120)).await?;

    let client = Client::connect([meta]).await?;
    let t = client.open_table("t").await?;
    let n = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() }).count().await;
    assert_eq!(n, 20_000);
    let v = t.get("k123", "s").await?.context("k123 is missing")?;
    assert_eq!(v.len(), 64);
    Ok(())
}
