//! `wingkv bulkgen` writes the layout of DESIGN §5: every row in the partition its hash picks,
//! sorted, with the §2 encodings, and metadata whose sizes and md5s match the files.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{ensure, Result};
use wingkv_common::bulk_load::{BulkLoadInfo, BulkLoadMetadata};
use wingkv_common::file_digest::FileDigest;
use wingkv_common::hash::partition_index;
use wingkv_common::key::decode_key;
use wingkv_common::value::decode_value;
use wingkv_tests::bin_path;

#[test]
fn bulkgen_writes_the_design_layout() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let input = tmp.path().join("rows.csv");
    let mut rows = String::new();
    let mut want = BTreeMap::new();
    for i in 0..500 {
        rows.push_str(&format!("user{i},profile,value-{i}\n"));
        want.insert(format!("user{i}"), format!("value-{i}"));
    }
    rows.push_str("user7,profile,overwritten\n");
    want.insert("user7".into(), "overwritten".into());
    std::fs::write(&input, rows)?;
    let root = tmp.path().join("remote");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "t", "--partitions", "4", "--cluster", "onebox", "--provider", "local"])
        .arg("--root")
        .arg(&root)
        .arg("--input")
        .arg(&input)
        .output()?;
    ensure!(out.status.success(), "bulkgen failed: {}", String::from_utf8_lossy(&out.stderr));

    let dir = root.join("onebox").join("t");
    let info = BulkLoadInfo::parse(&std::fs::read(dir.join("bulk_load_info"))?)?;
    info.check_matches("t", 4)?;
    let mut seen = BTreeMap::new();
    for pidx in 0..4u32 {
        let pdir = dir.join(pidx.to_string());
        let meta = BulkLoadMetadata::parse(&std::fs::read(pdir.join("bulk_load_metadata"))?)?;
        for f in &meta.files {
            let bytes = std::fs::read(pdir.join(&f.name))?;
            assert_eq!(bytes.len() as u64, f.size);
            assert_eq!(FileDigest::md5_of(&bytes), f.digest);
            // Read the SST back by ingesting it into a scratch RocksDB.
            let db_dir = tempfile::tempdir()?;
            let db = rocksdb::DB::open_default(db_dir.path())?;
            db.ingest_external_file(vec![pdir.join(&f.name)])?;
            let mut last: Option<Vec<u8>> = None;
            for kv in db.iterator(rocksdb::IteratorMode::Start) {
                let (k, v) = kv?;
                ensure!(last.as_deref() < Some(&k[..]), "keys are not sorted and unique");
                last = Some(k.to_vec());
                let (hk, sk) = decode_key(&k)?;
                let (ts, value) = decode_value(&v)?;
                assert_eq!((sk, ts), (&b"profile"[..], 0));
                assert_eq!(partition_index(hk, sk, 4), pidx, "row in the wrong partition");
                seen.insert(String::from_utf8(hk.to_vec())?, String::from_utf8(value.to_vec())?);
            }
        }
    }
    assert_eq!(seen, want);

    // Bad input: a clear error and a non-zero exit.
    std::fs::write(&input, "only,two\n")?;
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "t", "--partitions", "4", "--root"])
        .arg(&root)
        .arg("--input")
        .arg(&input)
        .output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("got 2 fields"), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
