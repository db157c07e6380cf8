//! `wingkv.Table`: the data operations of one table, bytes in and bytes out (`str` arguments
//! are taken as UTF-8), `None` for a record that is not there.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use wingkv_client::{CheckType, MultiGetOptions, Record, ScanOptions, Ttl};
use wingkv_common::WingError;

use crate::convert::to_bytes;
use crate::errors::{to_py, IntoPyResult};
use crate::runtime::block_on;

/// One table of a cluster, from `Client.table(name)`. Thread-safe.
#[pyclass(frozen, module = "wingkv._native")]
pub struct Table {
    inner: wingkv_client::Table,
}

impl Table {
    pub fn new(inner: wingkv_client::Table) -> Self {
        Self { inner }
    }
}

fn py_bytes(py: Python<'_>, b: &[u8]) -> Py<PyBytes> {
    PyBytes::new(py, b).unbind()
}

/// `check_and_set`'s check, by its name without the `CT_` prefix, any case
/// (`"value_not_exist"`, `"VALUE_BYTES_EQUAL"`, `"no_check"`, ...).
fn check_type(name: &str) -> PyResult<CheckType> {
    let full = format!("CT_{}", name.trim().to_ascii_uppercase());
    CheckType::from_str_name(&full).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown check_type '{name}' (one of value_not_exist, value_not_exist_or_empty, value_exist, \
             value_not_empty, value_match_anywhere, value_match_prefix, value_match_postfix, value_bytes_less, \
             value_bytes_less_or_equal, value_bytes_equal, value_bytes_greater_or_equal, value_bytes_greater, \
             value_int_less, value_int_less_or_equal, value_int_equal, value_int_greater_or_equal, \
             value_int_greater, no_check)"
        ))
    })
}

/// The range and limits of a scan or a range `multi_get`; an unset bound is the end.
#[allow(clippy::too_many_arguments)]
fn scan_options(
    start_sort_key: Option<&Bound<'_, PyAny>>,
    stop_sort_key: Option<&Bound<'_, PyAny>>,
    start_inclusive: bool,
    stop_inclusive: bool,
    batch_size: u32,
    limit: u64,
    no_value: bool,
) -> PyResult<ScanOptions> {
    let bound = |b: Option<&Bound<'_, PyAny>>, what| b.map(|b| to_bytes(b, what)).transpose();
    Ok(ScanOptions {
        start_sort_key: bound(start_sort_key, "start_sort_key")?.unwrap_or_default(),
        stop_sort_key: bound(stop_sort_key, "stop_sort_key")?.unwrap_or_default(),
        start_exclusive: !start_inclusive,
        stop_inclusive,
        batch_size,
        limit,
        no_value,
    })
}

fn sort_keys(keys: &Bound<'_, PyAny>) -> PyResult<Vec<Bytes>> {
    keys.try_iter()?.map(|k| to_bytes(&k?, "sort key")).collect()
}

#[pymethods]
impl Table {
    /// The table's name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// The table's partition count.
    #[getter]
    fn partition_count(&self) -> u32 {
        self.inner.partition_count()
    }

    /// The value of `(hash_key, sort_key)`, or `None`.
    fn get(
        &self,
        py: Python<'_>,
        hash_key: &Bound<'_, PyAny>,
        sort_key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyBytes>>> {
        let (hk, sk) = (to_bytes(hash_key, "hash_key")?, to_bytes(sort_key, "sort_key")?);
        let v = block_on(py, self.inner.get(hk, sk))?.py_err(py)?;
        Ok(v.map(|v| py_bytes(py, &v)))
    }

    /// Sets `(hash_key, sort_key)` to `value`, expiring after `ttl` seconds (`None`: never).
    #[pyo3(signature = (hash_key, sort_key, value, ttl = None))]
    fn set(
        &self,
        py: Python<'_>,
        hash_key: &Bound<'_, PyAny>,
        sort_key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<i64>,
    ) -> PyResult<()> {
        let (hk, sk, v) = (to_bytes(hash_key, "hash_key")?, to_bytes(sort_key, "sort_key")?, to_bytes(value, "value")?);
        let ttl = crate::convert::ttl(ttl)?;
        block_on(py, self.inner.set_with_ttl(hk, sk, v, ttl))?.py_err(py)
    }

    /// Deletes `(hash_key, sort_key)` (no error when it is not there).
    fn delete(&self, py: Python<'_>, hash_key: &Bound<'_, PyAny>, sort_key: &Bound<'_, PyAny>) -> PyResult<()> {
        let (hk, sk) = (to_bytes(hash_key, "hash_key")?, to_bytes(sort_key, "sort_key")?);
        block_on(py, self.inner.del(hk, sk))?.py_err(py)
    }

    /// Whether `(hash_key, sort_key)` exists.
    fn exist(&self, py: Python<'_>, hash_key: &Bound<'_, PyAny>, sort_key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (hk, sk) = (to_bytes(hash_key, "hash_key")?, to_bytes(sort_key, "sort_key")?);
        block_on(py, self.inner.exist(hk, sk))?.py_err(py)
    }

    /// Seconds `(hash_key, sort_key)` has left to live: `-1` when it never expires, `None` when
    /// it is not there.
    fn ttl(&self, py: Python<'_>, hash_key: &Bound<'_, PyAny>, sort_key: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
        let (hk, sk) = (to_bytes(hash_key, "hash_key")?, to_bytes(sort_key, "sort_key")?);
        let t = block_on(py, self.inner.ttl(hk, sk))?.py_err(py)?;
        Ok(t.map(|t| match t {
            Ttl::Infinite => -1,
            Ttl::Seconds(s) => s as i64,
        }))
    }

    /// Adds `delta` to the integer at `(hash_key, sort_key)` (absent: 0) and returns the new
    /// value; the record keeps its TTL. Raises `InvalidArgumentError` when the value is not an
    /// integer.
    #[pyo3(signature = (hash_key, sort_key, delta = 1))]
    fn incr(
        &self,
        py: Python<'_>,
        hash_key: &Bound<'_, PyAny>,
        sort_key: &Bound<'_, PyAny>,
        delta: i64,
    ) -> PyResult<i64> {
        let (hk, sk) = (to_bytes(hash_key, "hash_key")?, to_bytes(sort_key, "sort_key")?);
        block_on(py, self.inner.incr(hk, sk, delta))?.py_err(py)
    }

    /// Sets `(hash_key, set_sort_key)` to `set_value` if `check_type` (e.g.
    /// `"value_not_exist"`, `"value_bytes_equal"`) holds for the value at
    /// `(hash_key, check_sort_key)` and `check_operand`. Returns `(set, checked value or None)`.
    #[pyo3(signature = (hash_key, check_sort_key, check_type, check_operand, set_sort_key, set_value, ttl = None))]
    #[allow(clippy::too_many_arguments)]
    fn check_and_set(
        &self,
        py: Python<'_>,
        hash_key: &Bound<'_, PyAny>,
        check_sort_key: &Bound<'_, PyAny>,
        check_type: &str,
        check_operand: &Bound<'_, PyAny>,
        set_sort_key: &Bound<'_, PyAny>,
        set_value: &Bound<'_, PyAny>,
        ttl: Option<i64>,
    ) -> PyResult<(bool, Option<Py<PyBytes>>)> {
        let ct = self::check_type(check_type)?;
        let hk = to_bytes(hash_key, "hash_key")?;
        let csk = to_bytes(check_sort_key, "check_sort_key")?;
        let op = to_bytes(check_operand, "check_operand")?;
        let ssk = to_bytes(set_sort_key, "set_sort_key")?;
        let v = to_bytes(set_value, "set_value")?;
        let ttl = crate::convert::ttl(ttl)?;
        let r = block_on(py, self.inner.check_and_set(hk, csk, ct, op, ssk, v, ttl))?.py_err(py)?;
        Ok((r.set, r.check_value.map(|v| py_bytes(py, &v))))
    }

    /// The records of `hash_key` as a dict `{sort_key: value}` in sort-key order: the listed
    /// `sort_keys` that exist, or (without them) those in the range, up to `max_count` records
    /// and `max_bytes` (0: no limit). With `with_incomplete`, returns `(dict, incomplete)`,
    /// where `incomplete` says a limit cut the answer short.
    #[pyo3(signature = (hash_key, sort_keys = None, *, start_sort_key = None, stop_sort_key = None,
                        start_inclusive = true, stop_inclusive = false, max_count = 0, max_bytes = 0,
                        no_value = false, with_incomplete = false))]
    #[allow(clippy::too_many_arguments)]
    fn multi_get<'py>(
        &self,
        py: Python<'py>,
        hash_key: &Bound<'py, PyAny>,
        sort_keys: Option<&Bound<'py, PyAny>>,
        start_sort_key: Option<&Bound<'py, PyAny>>,
        stop_sort_key: Option<&Bound<'py, PyAny>>,
        start_inclusive: bool,
        stop_inclusive: bool,
        max_count: u32,
        max_bytes: u64,
        no_value: bool,
        with_incomplete: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hk = to_bytes(hash_key, "hash_key")?;
        let keys = sort_keys.map(self::sort_keys).transpose()?;
        let range = scan_options(start_sort_key, stop_sort_key, start_inclusive, stop_inclusive, 0, 0, no_value)?;
        let opts = MultiGetOptions { range, max_count, max_bytes };
        let (kvs, incomplete) = block_on(py, self.inner.multi_get_opts(hk, keys, opts))?.py_err(py)?;
        let d = PyDict::new(py);
        for (k, v) in kvs {
            d.set_item(PyBytes::new(py, &k), PyBytes::new(py, &v))?;
        }
        if with_incomplete {
            Ok(PyTuple::new(py, [d.into_any(), incomplete.into_pyobject(py)?.to_owned().into_any()])?.into_any())
        } else {
            Ok(d.into_any())
        }
    }

    /// Sets several sort keys of `hash_key` at once, atomically: `kvs` is a dict or an iterable
    /// of `(sort_key, value)` pairs; all expire after `ttl` seconds (`None`: never).
    #[pyo3(signature = (hash_key, kvs, ttl = None))]
    fn multi_set(
        &self,
        py: Python<'_>,
        hash_key: &Bound<'_, PyAny>,
        kvs: &Bound<'_, PyAny>,
        ttl: Option<i64>,
    ) -> PyResult<()> {
        let hk = to_bytes(hash_key, "hash_key")?;
        let pairs = match kvs.cast::<PyDict>() {
            Ok(d) => d.items().into_any(),
            Err(_) => kvs.clone(),
        };
        let mut out = Vec::new();
        for pair in pairs.try_iter()? {
            let (sk, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
            out.push((to_bytes(&sk, "sort key")?, to_bytes(&v, "value")?));
        }
        let ttl = crate::convert::ttl(ttl)?;
        block_on(py, self.inner.multi_set(hk, out, ttl))?.py_err(py)
    }

    /// Deletes the listed sort keys of `hash_key` atomically; returns how many existed.
    fn multi_delete(&self, py: Python<'_>, hash_key: &Bound<'_, PyAny>, sort_keys: &Bound<'_, PyAny>) -> PyResult<u64> {
        let hk = to_bytes(hash_key, "hash_key")?;
        let keys = self::sort_keys(sort_keys)?;
        block_on(py, self.inner.multi_del(hk, keys))?.py_err(py)
    }

    /// Number of live sort keys of `hash_key`.
    fn sortkey_count(&self, py: Python<'_>, hash_key: &Bound<'_, PyAny>) -> PyResult<u64> {
        let hk = to_bytes(hash_key, "hash_key")?;
        block_on(py, self.inner.sortkey_count(hk))?.py_err(py)
    }

    /// Iterates the records of `hash_key` in sort-key order as `(hash_key, sort_key, value)`,
    /// from `start_sort_key` to `stop_sort_key` (empty: the ends), at most `limit` (0: all).
    #[pyo3(signature = (hash_key, start_sort_key = None, stop_sort_key = None, *, start_inclusive = true,
                        stop_inclusive = false, batch_size = 0, limit = 0, no_value = false))]
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        hash_key: &Bound<'_, PyAny>,
        start_sort_key: Option<&Bound<'_, PyAny>>,
        stop_sort_key: Option<&Bound<'_, PyAny>>,
        start_inclusive: bool,
        stop_inclusive: bool,
        batch_size: u32,
        limit: u64,
        no_value: bool,
    ) -> PyResult<ScanIterator> {
        let hk = to_bytes(hash_key, "hash_key")?;
        let opts =
            scan_options(start_sort_key, stop_sort_key, start_inclusive, stop_inclusive, batch_size, limit, no_value)?;
        Ok(ScanIterator::new(self.inner.scan(hk, opts)))
    }

    /// Iterates every record of the table as `(hash_key, sort_key, value)`, partition after
    /// partition; `limit` (0: none) counts per partition.
    #[pyo3(signature = (*, batch_size = 0, limit = 0, no_value = false))]
    fn full_scan(&self, batch_size: u32, limit: u64, no_value: bool) -> ScanIterator {
        let opts = ScanOptions { batch_size, limit, no_value, ..Default::default() };
        ScanIterator::new(self.inner.full_scan(opts))
    }
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<Record, WingError>> + Send>>;

/// Records in the order a scan streams them; the records a server sent together are taken
/// together, so the interpreter is left once per server batch, not once per record.
#[pyclass(module = "wingkv._native")]
pub struct ScanIterator {
    stream: Mutex<Option<futures::stream::ReadyChunks<RecordStream>>>,
    ready: VecDeque<Result<Record, WingError>>,
}

/// `(hash_key, sort_key, value)` of a scanned record.
type ScanRecord = (Py<PyBytes>, Py<PyBytes>, Py<PyBytes>);

/// Most records taken out of a scan in one step.
const SCAN_CHUNK: usize = 1024;

impl ScanIterator {
    fn new(stream: RecordStream) -> Self {
        Self { stream: Mutex::new(Some(stream.ready_chunks(SCAN_CHUNK))), ready: VecDeque::new() }
    }
}

#[pymethods]
impl ScanIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<ScanRecord>> {
        if self.ready.is_empty() {
            let mut slot = self.stream.lock().unwrap_or_else(|p| p.into_inner());
            let Some(stream) = slot.as_mut() else { return Ok(None) };
            match block_on(py, stream.next())? {
                Some(chunk) => self.ready.extend(chunk),
                None => *slot = None,
            }
        }
        match self.ready.pop_front() {
            None => Ok(None),
            Some(Err(e)) => {
                // The stream ends with its error.
                self.ready.clear();
                *self.stream.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(to_py(py, e))
            }
            Some(Ok(r)) => Ok(Some((py_bytes(py, &r.hash_key), py_bytes(py, &r.sort_key), py_bytes(py, &r.value)))),
        }
    }
}
