//! The tokio runtime the package's blocking calls run on: one per process, made on first use.
//!
//! A process that forks after using it (PySpark's workers are forked from a daemon) would
//! inherit a runtime whose threads do not exist in the child: a runtime is tied to the pid
//! that made it, and a child makes its own (the parent's is leaked, never dropped, since
//! dropping it would wait for threads that are not there).

use std::future::Future;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The runtime of this process.
fn runtime() -> PyResult<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wingkv-python")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("start the wingkv runtime: {e}")))?;
    let rt = Arc::new(rt);
    if let Some(inherited) = slot.replace((pid, rt.clone())) {
        std::mem::forget(inherited);
    }
    Ok(rt)
}

/// Runs `fut` to completion detached from the interpreter.
pub fn block_on<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    Ok(py.detach(|| rt.block_on(fut)))
}
