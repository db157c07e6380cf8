//! The onebox supervisor: crash restarts, graceful restarts, stop, and no orphans ever.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use wingkv_tests::onebox::{onebox, Guard};
use wingkv_tests::wait_for;

fn state(dir: &Path) -> Result<Value> {
    Ok(serde_json::from_str(onebox(dir, &["status", "--json"])?.trim())?)
}

fn pid_of(state: &Value, node: &str) -> Option<u64> {
    state["nodes"].as_array()?.iter().find(|n| n["name"] == node)?["pid"].as_u64()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with(['Z', 'X'])))
        .is_some_and(|zombie| !zombie)
}

fn child_pids(dir: &Path) -> Result<Vec<u64>> {
    let s = state(dir)?;
    Ok(s["nodes"].as_array().context("nodes")?.iter().filter_map(|n| n["pid"].as_u64()).collect())
}

fn start(dir: &Path) -> Result<()> {
    wingkv_tests::onebox::start(dir).map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_restarts_crashed_children_and_leaves_no_orphans() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    start(&dir)?;
    let s = state(&dir)?;
    assert_eq!(s["nodes"].as_array().map(|a| a.len()), Some(4), "{s}");

    // kill -9 of a child: back (new pid, serving) within 10 s.
    let old = pid_of(&s, "replica1").context("replica1 pid")?;
    onebox(&dir, &["kill", "replica1"])?;
    wait_for("replica1 to be restarted", Duration::from_secs(10), || async {
        let s = state(&dir).ok()?;
        let new = pid_of(&s, "replica1")?;
        (new != old && alive(new) && dir.join("replica1/data/server.addr").exists()).then_some(())
    })
    .await?;
    let s = state(&dir)?;
    let restarts =
        s["nodes"].as_array().and_then(|a| a.iter().find(|n| n["name"] == "replica1")).map(|n| n["restarts"].clone());
    assert_eq!(restarts, Some(Value::from(1)));

    // Graceful restart of one node.
    let old = pid_of(&state(&dir)?, "replica2").context("replica2 pid")?;
    onebox(&dir, &["restart", "replica2"])?;
    let new = pid_of(&state(&dir)?, "replica2").context("replica2 pid")?;
    ensure!(new != old && !alive(old), "replica2 was not restarted");
    let err = onebox(&dir, &["restart", "replica9"]).expect_err("unknown node");
    ensure!(err.to_string().contains("no node named 'replica9'"), "{err}");

    // SIGTERM to the supervisor: every child gone within 15 s.
    let children = child_pids(&dir)?;
    let sup: i32 = std::fs::read_to_string(dir.join("supervisor.pid"))?.trim().parse()?;
    unsafe { libc::kill(sup, libc::SIGTERM) };
    wait_for("every child to exit after SIGTERM", Duration::from_secs(15), || async {
        (!alive(sup as u64) && children.iter().all(|p| !alive(*p))).then_some(())
    })
    .await?;

    // kill -9 of the supervisor: no child left after 5 s.
    start(&dir)?;
    let children = child_pids(&dir)?;
    ensure!(children.len() == 4 && children.iter().all(|p| alive(*p)), "{children:?}");
    let sup: i32 = std::fs::read_to_string(dir.join("supervisor.pid"))?.trim().parse()?;
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_for("no orphan after kill -9 of the supervisor", Duration::from_secs(5), || async {
        children.iter().all(|p| !alive(*p)).then_some(())
    })
    .await?;
    Ok(())
}

/// `onebox add` takes the next port, unless something outside the onebox holds it (another
/// test's server, an outgoing connection's ephemeral port): then the next free one, and the
/// server comes up instead of failing to bind until the command gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_server_skips_a_port_another_process_holds() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    wingkv_tests::onebox::start_reserving(&dir, 6, "")?;
    let port_of = |s: &Value, node: &str| {
        s["nodes"].as_array().and_then(|a| a.iter().find(|n| n["name"] == node)).and_then(|n| n["port"].as_u64())
    };
    let last = port_of(&state(&dir)?, "replica3").context("replica3's port")?;
    let next = u16::try_from(last + 1)?;
    let _held = std::net::TcpListener::bind(("127.0.0.1", next)).with_context(|| format!("hold port {next}"))?;
    onebox(&dir, &["add", "--replicas", "1"])?;
    let port = port_of(&state(&dir)?, "replica4").context("replica4's port")?;
    ensure!(port == last + 2, "replica4 took port {port}, not {} (after the held {next})", last + 2);
    ensure!(dir.join("replica4/data/server.addr").exists(), "replica4 is not serving");
    Ok(())
}
