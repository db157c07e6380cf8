//! Python arguments into bytes: keys and values are `bytes` (or `bytearray`), or `str` taken
//! as UTF-8; anything else is a `TypeError` that names the argument.

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

/// The bytes of `obj`, the argument called `what`.
pub fn to_vec(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    Err(PyTypeError::new_err(format!("{what} must be bytes or str, not {type_name}")))
}

/// [`to_vec`] as `Bytes`.
pub fn to_bytes(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    to_vec(obj, what).map(Bytes::from)
}

/// An optional TTL in whole seconds (`None` or 0: no TTL); negative is a `ValueError`.
pub fn ttl(seconds: Option<i64>) -> PyResult<Option<std::time::Duration>> {
    match seconds {
        None | Some(0) => Ok(None),
        Some(s) if s < 0 => Err(pyo3::exceptions::PyValueError::new_err(format!("ttl must be >= 0 seconds, not {s}"))),
        Some(s) => Ok(Some(std::time::Duration::from_secs(s as u64))),
    }
}
