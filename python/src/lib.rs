//! `wingkv._native`: the Rust half of the `wingkv` Python package. It wraps the Rust SDK (the
//! client and its admin calls) and the bulk-load writer of `wingkv-common`, so a Python
//! producer hashes, encodes and writes SST files with the servers' own code. The Python half
//! (`python/wingkv`) adds the exception classes, `wingkv.bulkload` and `wingkv.spark`.
//!
//! Every blocking call detaches from the interpreter while it waits (other Python threads
//! run), on a tokio runtime owned by the process (see [`runtime`]).

use pyo3::prelude::*;

mod bulkload;
mod client;
mod convert;
mod errors;
mod runtime;
mod table;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<table::Table>()?;
    m.add_class::<table::ScanIterator>()?;
    m.add_function(wrap_pyfunction!(errors::error_codes, m)?)?;
    bulkload::register(m)?;
    Ok(())
}
