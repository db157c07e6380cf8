//! `wingkv._native`'s bulk-load half: the partition hash, the key encoding and the writer of
//! one partition's SST files, all `wingkv-common`'s own, so files made in Python (or on Spark
//! executors) are the files `wingkv bulkgen` makes for the same rows.

use std::path::PathBuf;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use wingkv_common::bulk_load::{table_dir, BulkLoadInfo};
use wingkv_common::bulk_writer::{upload_partition, write_info, PartitionSlot, PartitionWriter};
use wingkv_common::provider::{open_provider, ProviderConfig};
use wingkv_common::value::{expire_ts_for_ttl, now_epoch_seconds};
use wingkv_common::WingError;

use crate::convert::to_vec;
use crate::errors::IntoPyResult;
use crate::runtime::block_on;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(partition_of, m)?)?;
    m.add_function(wrap_pyfunction!(encode_key, m)?)?;
    m.add_function(wrap_pyfunction!(partition_and_key, m)?)?;
    m.add_function(wrap_pyfunction!(check_table_name, m)?)?;
    m.add_function(wrap_pyfunction!(check_partition_count, m)?)?;
    m.add_function(wrap_pyfunction!(write_partition, m)?)?;
    m.add_function(wrap_pyfunction!(write_bulk_load_info, m)?)?;
    m.add_function(wrap_pyfunction!(read_partition, m)?)?;
    Ok(())
}

/// Raises `InvalidArgumentError` (a `ValueError`) unless `count` is a power of two in
/// `1..=65536`.
#[pyfunction]
fn check_partition_count(py: Python<'_>, count: u32) -> PyResult<()> {
    wingkv_common::naming::validate_partition_count(count).py_err(py)
}

/// Raises `InvalidArgumentError` unless `name` is a valid table name.
#[pyfunction]
fn check_table_name(py: Python<'_>, name: &str) -> PyResult<()> {
    wingkv_common::naming::validate_table_name(name).py_err(py)
}

/// The partition of `(hash_key, sort_key)` in a table of `partition_count` partitions: the
/// servers' CRC-64 of the hash key (of the sort key when the hash key is empty).
#[pyfunction]
fn partition_of(
    py: Python<'_>,
    hash_key: &Bound<'_, PyAny>,
    sort_key: &Bound<'_, PyAny>,
    partition_count: u32,
) -> PyResult<u32> {
    Ok(partition_and_key_of(py, hash_key, sort_key, partition_count)?.0)
}

/// The key as stored: `u16 BE len(hash_key) ++ hash_key ++ sort_key`; sorting these bytes is
/// sorting the records as a partition stores them.
#[pyfunction]
fn encode_key<'py>(
    py: Python<'py>,
    hash_key: &Bound<'py, PyAny>,
    sort_key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let (hk, sk) = (to_vec(hash_key, "hash_key")?, to_vec(sort_key, "sort_key")?);
    let key = wingkv_common::key::encode_key(&hk, &sk).py_err(py)?;
    Ok(PyBytes::new(py, &key))
}

/// `(partition_of(...), encode_key(...))` in one call (what a Spark job keys its rows by).
#[pyfunction]
fn partition_and_key<'py>(
    py: Python<'py>,
    hash_key: &Bound<'py, PyAny>,
    sort_key: &Bound<'py, PyAny>,
    partition_count: u32,
) -> PyResult<(u32, Bound<'py, PyBytes>)> {
    let (pidx, key) = partition_and_key_of(py, hash_key, sort_key, partition_count)?;
    Ok((pidx, PyBytes::new(py, &key)))
}

fn partition_and_key_of(
    py: Python<'_>,
    hash_key: &Bound<'_, PyAny>,
    sort_key: &Bound<'_, PyAny>,
    partition_count: u32,
) -> PyResult<(u32, Vec<u8>)> {
    wingkv_common::naming::validate_partition_count(partition_count).py_err(py)?;
    let (hk, sk) = (to_vec(hash_key, "hash_key")?, to_vec(sort_key, "sort_key")?);
    let key = wingkv_common::key::encode_key(&hk, &sk).py_err(py)?;
    Ok((wingkv_common::hash::partition_index(&hk, &sk, partition_count), key))
}

/// A provider config from Python: a dict (`{"local_root": ..., "s3": {"endpoint": ...}}`), or
/// the path (`str` or `os.PathLike`) of a TOML file like `wingkv bulkgen --provider-config` takes.
fn parse_provider_config(py: Python<'_>, config: Option<&Bound<'_, PyAny>>) -> PyResult<ProviderConfig> {
    let mut parsed = match config {
        None => ProviderConfig::default(),
        Some(c) if c.is_none() => ProviderConfig::default(),
        Some(c) if c.cast::<PyDict>().is_err() && c.extract::<PathBuf>().is_ok() => {
            let path: PathBuf = c.extract()?;
            wingkv_common::config::load_toml(&path)
                .map_err(|e| PyValueError::new_err(format!("provider_config {}: {e}", path.display())))?
        }
        Some(c) if c.cast::<PyDict>().is_ok() => {
            let json: String = py.import("json")?.call_method1("dumps", (c,))?.extract()?;
            serde_json::from_str(&json).map_err(|e| PyValueError::new_err(format!("provider_config: {e}")))?
        }
        Some(_) => return Err(PyTypeError::new_err("provider_config must be a dict or the path of a TOML file")),
    };
    // A producer writes as its user, with that user's rights: `/` is the natural local root.
    parsed.default_local_root(false);
    Ok(parsed)
}

/// One row of `write_partition`, as bytes.
struct Row {
    hash_key: Vec<u8>,
    sort_key: Vec<u8>,
    value: Vec<u8>,
    /// Seconds to live; 0: never expires.
    ttl: u32,
}

/// Row `n` of `write_partition`: `(hash_key, sort_key, value)` or with a fourth item, the TTL
/// in seconds (`None` or 0: never expires).
fn row_fields(row: &Bound<'_, PyAny>, n: u64) -> PyResult<Row> {
    let tuple = row
        .cast::<PyTuple>()
        .map_err(|_| PyTypeError::new_err(format!("row {n}: must be a tuple (hash_key, sort_key, value[, ttl])")))?;
    let len = tuple.len();
    if !(3..=4).contains(&len) {
        return Err(PyValueError::new_err(format!(
            "row {n}: has {len} items; expected (hash_key, sort_key, value[, ttl])"
        )));
    }
    let hk = to_vec(&tuple.get_item(0)?, &format!("row {n}: hash_key"))?;
    let sk = to_vec(&tuple.get_item(1)?, &format!("row {n}: sort_key"))?;
    let v = to_vec(&tuple.get_item(2)?, &format!("row {n}: value"))?;
    let ttl = if len == 4 {
        let t = tuple.get_item(3)?;
        if t.is_none() {
            0
        } else {
            let secs: i64 = t.extract().map_err(|_| PyTypeError::new_err(format!("row {n}: ttl must be an int")))?;
            u32::try_from(secs)
                .map_err(|_| PyValueError::new_err(format!("row {n}: ttl {secs} is not in 0..=4294967295 seconds")))?
        }
    } else {
        0
    };
    Ok(Row { hash_key: hk, sort_key: sk, value: v, ttl })
}

fn at_row(n: u64) -> impl Fn(WingError) -> WingError {
    move |e| WingError::with_code(e.code(), format!("row {n}: {}", e.message()))
}

/// Writes partition `partition_index` of table `table` (`partition_count` partitions) from
/// `rows`, an iterable of `(hash_key, sort_key, value[, ttl_seconds])`, to
/// `provider://root/cluster/table/{partition_index}/`: its SST files (a new one every
/// `file_size_mb`) and then its `bulk_load_metadata`.
///
/// The rows must be sorted by encoded key (`encode_key`) unless `sort` is true, in which
/// case they are sorted in memory. Every row must belong to the partition. A duplicate key, a
/// row out of order, a bad type or a hash key over 64 KiB raises an error naming the row before
/// anything is uploaded (files are staged locally until the partition is complete). Returns
/// `{"rows", "files", "bytes"}`.
#[pyfunction]
#[pyo3(signature = (rows, *, table, partition_index, partition_count, provider, root, cluster = "onebox".to_string(),
                    sort = false, file_size_mb = 64, provider_config = None))]
#[allow(clippy::too_many_arguments)]
fn write_partition<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyAny>,
    table: &str,
    partition_index: u32,
    partition_count: u32,
    provider: &str,
    root: &str,
    cluster: String,
    sort: bool,
    file_size_mb: u64,
    provider_config: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    wingkv_common::naming::validate_table_name(table).py_err(py)?;
    if file_size_mb == 0 {
        return Err(PyValueError::new_err("file_size_mb must be at least 1"));
    }
    let config = parse_provider_config(py, provider_config)?;
    let store = open_provider(provider, &config).py_err(py)?;
    let dir = table_dir(root, &cluster, table).py_err(py)?;
    let staging = tempfile::Builder::new()
        .prefix("wingkv-bulkload-")
        .tempdir()
        .map_err(|e| PyValueError::new_err(format!("create a staging directory: {e}")))?;
    let slot = PartitionSlot { index: partition_index, count: partition_count };
    let mut writer = PartitionWriter::new(staging.path(), file_size_mb << 20, Some(slot)).py_err(py)?;
    let now = now_epoch_seconds();
    let mut n = 0u64;
    if sort {
        // (key, stored value, row number), so a duplicate is named by its row too.
        let mut encoded = Vec::new();
        for row in rows.try_iter()? {
            let r = row_fields(&row?, n)?;
            let (key, stored) = writer
                .encode_record(&r.hash_key, &r.sort_key, &r.value, expire_ts_for_ttl(now, r.ttl))
                .map_err(at_row(n))
                .py_err(py)?;
            encoded.push((key, stored, n));
            n += 1;
        }
        py.detach(|| encoded.sort_by(|a, b| a.0.cmp(&b.0)));
        for (key, stored, row) in &encoded {
            writer.put(key, stored).map_err(at_row(*row)).py_err(py)?;
        }
    } else {
        for row in rows.try_iter()? {
            let r = row_fields(&row?, n)?;
            writer
                .put_record(&r.hash_key, &r.sort_key, &r.value, expire_ts_for_ttl(now, r.ttl))
                .map_err(at_row(n))
                .py_err(py)?;
            n += 1;
        }
    }
    let records = writer.records();
    let meta = py.detach(|| writer.finish()).py_err(py)?;
    block_on(py, upload_partition(&store, &dir, partition_index, staging.path(), &meta))?.py_err(py)?;
    let d = PyDict::new(py);
    d.set_item("rows", records)?;
    d.set_item("files", meta.files.len())?;
    d.set_item("bytes", meta.file_total_size)?;
    Ok(d)
}

/// Writes `provider://root/cluster/table/bulk_load_info`: the last step, once every partition
/// is written, after which `Client.start_bulk_load` can read the layout.
#[pyfunction]
#[pyo3(signature = (*, table, partition_count, provider, root, cluster = "onebox".to_string(), app_id = 0,
                    provider_config = None))]
#[allow(clippy::too_many_arguments)]
fn write_bulk_load_info(
    py: Python<'_>,
    table: &str,
    partition_count: u32,
    provider: &str,
    root: &str,
    cluster: String,
    app_id: u32,
    provider_config: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    wingkv_common::naming::validate_table_name(table).py_err(py)?;
    wingkv_common::naming::validate_partition_count(partition_count).py_err(py)?;
    let config = parse_provider_config(py, provider_config)?;
    let store = open_provider(provider, &config).py_err(py)?;
    let dir = table_dir(root, &cluster, table).py_err(py)?;
    let info = BulkLoadInfo { app_id, app_name: table.to_string(), partition_count };
    block_on(py, write_info(&store, &dir, &info))?.py_err(py)
}

/// Reads partition `partition_index` back from `provider://root/cluster/table`: checks every
/// file against `bulk_load_metadata` (size, digest), then answers its records in key order as
/// `(hash_key, sort_key, value, expire_ts)` (`expire_ts`: seconds since 2016-01-01, 0 = never).
/// For checking a layout a job wrote; it holds the partition in memory.
#[pyfunction]
#[pyo3(signature = (*, table, partition_index, provider, root, cluster = "onebox".to_string(), provider_config = None))]
#[allow(clippy::type_complexity)]
fn read_partition<'py>(
    py: Python<'py>,
    table: &str,
    partition_index: u32,
    provider: &str,
    root: &str,
    cluster: String,
    provider_config: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyBytes>, u32)>> {
    let config = parse_provider_config(py, provider_config)?;
    let store = open_provider(provider, &config).py_err(py)?;
    let pdir = table_dir(root, &cluster, table).py_err(py)?.child(partition_index.to_string());
    let scratch = tempfile::Builder::new()
        .prefix("wingkv-read-partition-")
        .tempdir()
        .map_err(|e| PyValueError::new_err(format!("create a scratch directory: {e}")))?;
    let records = block_on(py, read_records(store, pdir, scratch.path().to_path_buf()))?.py_err(py)?;
    records
        .into_iter()
        .map(|(k, v)| {
            let (hk, sk) = wingkv_common::key::decode_key(&k).py_err(py)?;
            let (ts, value) = wingkv_common::value::decode_value(&v).py_err(py)?;
            Ok((PyBytes::new(py, hk), PyBytes::new(py, sk), PyBytes::new(py, value), ts))
        })
        .collect()
}

/// The records of the partition at `pdir`, read by ingesting its verified files into a scratch
/// RocksDB under `scratch` (RocksDB's Rust API has no SST reader).
async fn read_records(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    pdir: object_store::path::Path,
    scratch: PathBuf,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, WingError> {
    let get = |name: String| {
        let store = store.clone();
        let path = pdir.child(name.as_str());
        async move {
            let got = store.get(&path).await.map_err(|e| WingError::Io(format!("read {path}: {e}")))?;
            got.bytes().await.map_err(|e| WingError::Io(format!("read {path}: {e}")))
        }
    };
    let meta = wingkv_common::bulk_load::BulkLoadMetadata::parse(
        &get(wingkv_common::bulk_load::BULK_LOAD_METADATA.to_string()).await?,
    )?;
    let mut paths = Vec::new();
    for f in &meta.files {
        let bytes = get(f.name.clone()).await?;
        let digest = wingkv_common::file_digest::FileDigest::of(f.digest.kind(), &bytes);
        if bytes.len() as u64 != f.size || !digest.matches(&f.digest) {
            return Err(WingError::Corruption(format!(
                "{}: {} bytes with {digest}; bulk_load_metadata says {} bytes with {}",
                f.name,
                bytes.len(),
                f.size,
                f.digest
            )));
        }
        let path = scratch.join(&f.name);
        tokio::fs::write(&path, &bytes).await.map_err(|e| WingError::Io(format!("write {}: {e}", path.display())))?;
        paths.push(path);
    }
    tokio::task::spawn_blocking(move || {
        let storage = |e: rocksdb::Error| WingError::Storage(e.to_string());
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, scratch.join("db")).map_err(storage)?;
        if !paths.is_empty() {
            db.ingest_external_file(paths).map_err(storage)?;
        }
        db.iterator(rocksdb::IteratorMode::Start)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(storage))
            .collect()
    })
    .await
    .map_err(|e| WingError::Internal(format!("reading the partition stopped: {e}")))?
}
