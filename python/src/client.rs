//! `wingkv.Client`: a connection to a cluster's metas, the tables opened through it, and the
//! administrative calls a data engineer needs (tables, envs, bulk loads).

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use wingkv_client::{BulkLoadSource, BulkLoadStatusResponse, ClientConfig, CreateTableOptions};
use wingkv_proto::common::BulkLoadStatus;
use wingkv_proto::meta::TableStatus;

use crate::errors::IntoPyResult;
use crate::runtime::block_on;
use crate::table::Table;

/// A client of one wingkv cluster.
///
/// `Client(meta=["127.0.0.1:34601"], timeout=5.0)` connects to the metas (and fails if none
/// answers within `timeout`); each request is retried on `NotLeader`, `Busy` and unavailability
/// with backoff, within `timeout` seconds. For a secure cluster give `ca_file`, `cert_file` and
/// `key_file` (from `wingkv cert issue-client`). Thread-safe: share one per process.
#[pyclass(frozen, module = "wingkv._native")]
pub struct Client {
    inner: wingkv_client::Client,
}

fn dict<'py>(py: Python<'py>, items: &[(&str, Bound<'py, PyAny>)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(*k, v)?;
    }
    Ok(d)
}

/// A table as a dict: `app_id`, `name`, `partition_count`, `replica_count`, `envs`, and
/// `status` when the answer has one.
#[allow(clippy::too_many_arguments)]
fn table_dict<'py>(
    py: Python<'py>,
    app_id: u32,
    name: &str,
    partition_count: u32,
    replica_count: u32,
    envs: &BTreeMap<String, String>,
    status: Option<i32>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = dict(
        py,
        &[
            ("app_id", app_id.into_pyobject(py)?.into_any()),
            ("name", name.into_pyobject(py)?.into_any()),
            ("partition_count", partition_count.into_pyobject(py)?.into_any()),
            ("replica_count", replica_count.into_pyobject(py)?.into_any()),
            ("envs", envs.clone().into_pyobject(py)?.into_any()),
        ],
    )?;
    if let Some(status) = status {
        d.set_item("status", TableStatus::try_from(status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"))?;
    }
    Ok(d)
}

fn bulk_load_dict<'py>(py: Python<'py>, r: &BulkLoadStatusResponse) -> PyResult<Bound<'py, PyDict>> {
    let status = BulkLoadStatus::try_from(r.status).map(|s| s.as_str_name()).unwrap_or("BLS_UNKNOWN");
    let partitions: Vec<&str> = r
        .partitions
        .iter()
        .map(|p| BulkLoadStatus::try_from(p.status).map(|s| s.as_str_name()).unwrap_or("BLS_UNKNOWN"))
        .collect();
    dict(
        py,
        &[
            ("table", r.app_name.clone().into_pyobject(py)?.into_any()),
            ("job_id", r.job_id.into_pyobject(py)?.into_any()),
            ("status", status.into_pyobject(py)?.into_any()),
            ("reason", r.reason.clone().into_pyobject(py)?.into_any()),
            ("source", r.source.clone().into_pyobject(py)?.into_any()),
            ("partitions", partitions.into_pyobject(py)?.into_any()),
        ],
    )
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (meta, timeout = 5.0, batching = true, ca_file = None, cert_file = None, key_file = None))]
    fn new(
        py: Python<'_>,
        meta: Vec<String>,
        timeout: f64,
        batching: bool,
        ca_file: Option<String>,
        cert_file: Option<String>,
        key_file: Option<String>,
    ) -> PyResult<Self> {
        if meta.is_empty() {
            return Err(PyValueError::new_err("meta must name at least one meta server (host:port)"));
        }
        let request_timeout = Duration::try_from_secs_f64(timeout).ok().filter(|t| !t.is_zero()).ok_or_else(|| {
            PyValueError::new_err(format!("timeout must be a positive number of seconds, not {timeout}"))
        })?;
        let mut config = ClientConfig::new(meta);
        config.request_timeout = request_timeout;
        config.batching = batching;
        config.tls = match (ca_file, cert_file, key_file) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => {
                Some(wingkv_security::TlsConfig { ca_file: ca.into(), cert_file: cert.into(), key_file: key.into() })
            }
            _ => return Err(PyValueError::new_err("give all of ca_file, cert_file and key_file, or none")),
        };
        let inner = block_on(py, wingkv_client::Client::with_config(config))?.py_err(py)?;
        Ok(Self { inner })
    }

    /// The table `name` (raises `TableNotFoundError` when there is none).
    fn table(&self, py: Python<'_>, name: &str) -> PyResult<Table> {
        let t = block_on(py, self.inner.open_table(name))?.py_err(py)?;
        Ok(Table::new(t))
    }

    /// Creates the table `name` and returns its description once every partition serves.
    /// `partition_count` is a power of two (default 4), `replica_count` 1..=5 (default 3).
    #[pyo3(signature = (name, partition_count = None, replica_count = None, envs = None))]
    fn create_table<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        partition_count: Option<u32>,
        replica_count: Option<u32>,
        envs: Option<BTreeMap<String, String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let options = CreateTableOptions { partition_count, replica_count, envs: envs.unwrap_or_default() };
        let admin = self.inner.admin();
        let t = block_on(py, admin.create_table(name, options))?.py_err(py)?;
        table_dict(py, t.app_id, &t.name, t.partition_count, t.replica_count, &t.envs, None)
    }

    /// The live tables (with `include_dropped`, also the dropped ones that can be recalled), as
    /// dicts of `app_id`, `name`, `partition_count`, `replica_count`, `status`, `envs`.
    #[pyo3(signature = (include_dropped = false))]
    fn list_tables<'py>(&self, py: Python<'py>, include_dropped: bool) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let admin = self.inner.admin();
        let tables = block_on(py, admin.list_tables(include_dropped))?.py_err(py)?;
        tables
            .iter()
            .map(|t| table_dict(py, t.app_id, &t.name, t.partition_count, t.replica_count, &t.envs, Some(t.status)))
            .collect()
    }

    /// Drops the table `name`; it can be recalled for `reserve_seconds` (default: the meta's).
    /// Returns `{"app_id", "expire_time_ms"}`.
    #[pyo3(signature = (name, reserve_seconds = None))]
    fn drop_table<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        reserve_seconds: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let admin = self.inner.admin();
        let r = block_on(py, admin.drop_table(name, reserve_seconds))?.py_err(py)?;
        dict(
            py,
            &[
                ("app_id", r.app_id.into_pyobject(py)?.into_any()),
                ("expire_time_ms", r.expire_time_ms.into_pyobject(py)?.into_any()),
            ],
        )
    }

    /// The envs of table `table`.
    fn get_envs(&self, py: Python<'_>, table: &str) -> PyResult<BTreeMap<String, String>> {
        let admin = self.inner.admin();
        block_on(py, admin.get_envs(table))?.py_err(py)
    }

    /// Sets envs of table `table` (e.g. `{"replica.write_throttling": "1000*delay*100"}`);
    /// returns all its envs.
    fn set_envs(
        &self,
        py: Python<'_>,
        table: &str,
        envs: BTreeMap<String, String>,
    ) -> PyResult<BTreeMap<String, String>> {
        let admin = self.inner.admin();
        block_on(py, admin.set_envs(table, envs))?.py_err(py)
    }

    /// Removes envs `keys` of table `table`; returns what is left.
    fn del_envs(&self, py: Python<'_>, table: &str, keys: Vec<String>) -> PyResult<BTreeMap<String, String>> {
        let admin = self.inner.admin();
        block_on(py, admin.del_envs(table, keys))?.py_err(py)
    }

    /// Starts a bulk load of `table` from `provider://root/cluster/table` (the layout
    /// `wingkv.bulkload` and `wingkv.spark` write). Returns the job's status dict.
    #[pyo3(signature = (table, provider, root, cluster = "onebox".to_string(), ingest_behind = false))]
    fn start_bulk_load<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        provider: String,
        root: String,
        cluster: String,
        ingest_behind: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let source = BulkLoadSource { provider, root, cluster };
        let admin = self.inner.admin();
        let r = block_on(py, admin.start_bulk_load(table, &source, ingest_behind))?.py_err(py)?;
        bulk_load_dict(py, &r)
    }

    /// The bulk load of `table`: `{"status": "BLS_SUCCEED", "job_id", "reason", "source",
    /// "partitions": [status per partition]}` (`BLS_INVALID` when it has none).
    fn query_bulk_load<'py>(&self, py: Python<'py>, table: &str) -> PyResult<Bound<'py, PyDict>> {
        let admin = self.inner.admin();
        let r = block_on(py, admin.bulk_load_status(table, None, false))?.py_err(py)?;
        bulk_load_dict(py, &r)
    }

    /// Cancels the bulk load of `table` (`forced`: also while it ingests).
    #[pyo3(signature = (table, forced = false))]
    fn cancel_bulk_load<'py>(&self, py: Python<'py>, table: &str, forced: bool) -> PyResult<Bound<'py, PyDict>> {
        let admin = self.inner.admin();
        let r = block_on(py, admin.cancel_bulk_load(table, forced))?.py_err(py)?;
        bulk_load_dict(py, &r)
    }

    /// Removes the record of the finished bulk load of `table`, so another can start.
    fn clear_bulk_load<'py>(&self, py: Python<'py>, table: &str) -> PyResult<Bound<'py, PyDict>> {
        let admin = self.inner.admin();
        let r = block_on(py, admin.clear_bulk_load(table))?.py_err(py)?;
        bulk_load_dict(py, &r)
    }
}
