//! Driving a cluster the way an operator does: `wingkv shell --json -e`, bulk-load status
//! polling, and the onebox supervisor's view of its nodes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;

use crate::{bin_path, wait_for};

/// Runs `wingkv bulkgen ARGS --root ROOT`.
pub fn bulkgen(root: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(bin_path("wingkv")).arg("bulkgen").args(args).arg("--root").arg(root).output()?;
    ensure!(out.status.success(), "bulkgen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Runs `wingkv shell --json --meta META -e SCRIPT`: (success, stdout, stderr).
pub fn shell(meta: &str, script: &str) -> Result<(bool, String, String)> {
    let out = Command::new(bin_path("wingkv")).args(["shell", "--json", "--meta", meta, "-e", script]).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

/// Like [`shell`], failing unless the script succeeds; answers its stdout.
pub fn shell_ok(meta: &str, script: &str) -> Result<String> {
    let (ok, out, err) = shell(meta, script)?;
    ensure!(ok, "`{script}` failed: {err}");
    Ok(out)
}

/// `query_bulk_load_status -a TABLE -d` as JSON, or `None` when the query fails.
pub fn bulk_load_status(meta: &str, table: &str) -> Option<Value> {
    let (ok, out, _) = shell(meta, &format!("query_bulk_load_status -a {table} -d")).ok()?;
    serde_json::from_str(out.trim()).ok().filter(|_| ok)
}

/// Waits until the bulk load of `table` is in status `want`; answers that status.
pub async fn wait_bulk_load(meta: &str, table: &str, want: &str, timeout: Duration) -> Result<Value> {
    wait_for(&format!("the bulk load of {table} to be {want}"), timeout, || async {
        bulk_load_status(meta, table).filter(|v| v["status"] == want)
    })
    .await
}

/// Waits until the bulk load of `table` ends: Ok on BLS_SUCCEED, an error with the status on
/// BLS_FAILED or BLS_CANCELED.
pub async fn wait_bulk_load_success(meta: &str, table: &str, timeout: Duration) -> Result<Value> {
    let end = wait_for(&format!("the bulk load of {table} to end"), timeout, || async {
        let v = bulk_load_status(meta, table)?;
        matches!(v["status"].as_str()?, "BLS_SUCCEED" | "BLS_FAILED" | "BLS_CANCELED").then_some(v)
    })
    .await?;
    if end["status"] == "BLS_SUCCEED" {
        Ok(end)
    } else {
        Err(anyhow!("the bulk load of {table} did not succeed: {end}"))
    }
}

/// The onebox in `dir` as its supervisor reports it (`onebox status --json`).
pub fn onebox_state(dir: &Path) -> Result<Value> {
    Ok(serde_json::from_str(crate::onebox::onebox(dir, &["status", "--json"])?.trim())?)
}

/// The gRPC address and pid of onebox node `name` (meta1, replica2, ...).
pub fn onebox_node(dir: &Path, name: &str) -> Result<(String, Option<u32>)> {
    let state = onebox_state(dir)?;
    let node = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|x| x["name"] == name))
        .with_context(|| format!("the onebox has no node {name}"))?;
    let port = node["port"].as_u64().context("a node without a port")?;
    Ok((format!("127.0.0.1:{port}"), node["pid"].as_u64().map(|p| p as u32)))
}

/// Fails when a onebox node exited without being asked to (a crash the supervisor restarted).
pub fn ensure_no_crash(dir: &Path) -> Result<()> {
    for n in onebox_state(dir)?["nodes"].as_array().context("onebox status has no nodes")? {
        ensure!(n["restarts"] == 0, "{} exited unexpectedly: {n}", n["name"]);
    }
    Ok(())
}

/// A onebox under `tmp/onebox` whose replica servers download at 1 MB/s each (so a load takes
/// seconds: restarts, cancels and freezes land mid-download), with `meta_config` appended to
/// the meta's config, and a 60 000-row layout for table `t` (8 partitions) under `tmp/remote`.
/// Answers (onebox dir, meta address, layout root). The onebox is stopped if the layout fails.
pub fn slow_onebox_with_layout(tmp: &Path, meta_config: &str) -> Result<(PathBuf, String, String)> {
    let dir = tmp.join("onebox");
    let meta = crate::onebox::start_configured(
        &dir,
        meta_config,
        "[bulk_load]\ndownload_bytes_per_sec = 1000000\nmin_free_disk_bytes = 0\n",
    )?;
    let remote = tmp.join("remote");
    let out = Command::new(bin_path("wingkv"))
        .args(["bulkgen", "--table", "t", "--partitions", "8", "--generate", "60000", "--value-size", "100", "--root"])
        .arg(&remote)
        .output()?;
    if !out.status.success() {
        let _ = crate::onebox::onebox(&dir, &["stop"]);
        bail!("bulkgen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((dir, meta, remote.display().to_string()))
}
