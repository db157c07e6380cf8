//! wingkv errors as Python exceptions: a `WingError` of code `Busy` raises
//! `wingkv.errors.BusyError`, and so on for every code (each class also derives from the
//! closest builtin: `InvalidArgumentError` is a `ValueError`, `TimeoutError` a `TimeoutError`).
//! The classes live in Python (`wingkv/errors.py`) and are looked up by the code's name, so
//! there is one list of codes: `wingkv-common`'s.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use wingkv_common::{ErrorCode, WingError};

/// The names of wingkv's error codes (`Busy`, `TableNotFound`, ...), each raised as
/// `wingkv.errors.{name}Error`.
#[pyfunction]
pub fn error_codes() -> Vec<&'static str> {
    ErrorCode::ALL.iter().map(|c| c.as_str()).collect()
}

/// The Python exception of `err`.
pub fn to_py(py: Python<'_>, err: WingError) -> PyErr {
    let code = err.code().as_str();
    let class = format!("{code}Error");
    let raised = py
        .import("wingkv.errors")
        .and_then(|m| m.getattr(class.as_str()))
        .and_then(|cls| cls.call1((err.to_string(), code)));
    match raised {
        Ok(exc) => PyErr::from_value(exc),
        // Only when the package is broken (errors.py missing a class): say so with the error.
        Err(lookup) => PyRuntimeError::new_err(format!("{err} (and raising {class} failed: {lookup})")),
    }
}

/// `Result<T, WingError>` into a Python result.
pub trait IntoPyResult<T> {
    /// The value, or the error raised as its Python exception.
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, WingError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
