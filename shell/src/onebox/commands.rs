//! The subcommands people run (`start`, `stop`, `status`, `restart`, `kill`): each one a short
//! conversation with the supervisor through the files under DIR and signals.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use wingkv_common::meta_client::MetaClient;
use wingkv_common::raft::network::ChannelPool;
use wingkv_proto::meta::{ListNodesRequest, ListNodesResponse};

use super::layout::{
    ClusterPlan, Layout, NodeRole, NodeState, OneboxState, RunState, CLUSTER_NAME,
    DEFAULT_BASE_PORT_META, DEFAULT_BASE_PORT_REPLICA, DEFAULT_METAS, DEFAULT_REPLICAS,
};
use super::process::{self, wait_until};
use super::supervisor::{timestamp, unix_ms, Binaries};
use super::StartArgs;

/// How long `start` waits for the cluster to serve.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long `restart` waits for one node to serve again.
const RESTART_DEADLINE: Duration = Duration::from_secs(60);
/// How long `stop` waits for the supervisor and every node to be gone.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// When `stop` stops asking: the supervisor gives its children 10 s after SIGTERM; if it
/// still runs 15 s after it, SIGKILL (its children then die by PDEATHSIG).
const SUPERVISOR_KILL_AFTER: Duration = Duration::from_secs(15);
/// How long the pid file may lag behind the lock of a starting supervisor.
const PID_FILE_PATIENCE: Duration = Duration::from_secs(2);
/// Deadline of one meta call while polling (the poll itself has the real deadline).
const META_CALL_DEADLINE: Duration = Duration::from_secs(2);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(100);

/// The pid of the supervisor running for `layout`, if one runs.
fn running_supervisor(layout: &Layout) -> Result<Option<u32>> {
    if !process::is_locked(&layout.lock_file())? {
        return Ok(None);
    }
    // The lock is held. A supervisor that is just starting writes its pid file a moment after
    // taking the lock; anything else holding it is not ours to signal.
    let mut pid = None;
    wait_until(PID_FILE_PATIENCE, || {
        pid = std::fs::read_to_string(layout.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|p| process::runs_supervisor(*p));
        pid.is_some()
    });
    match pid {
        Some(pid) => Ok(Some(pid)),
        None => bail!(
            "{} is locked but {} names no running supervisor; is another program using {}?",
            layout.lock_file().display(),
            layout.pid_file().display(),
            layout.dir().display()
        ),
    }
}

fn not_running(layout: &Layout) -> anyhow::Error {
    anyhow!(
        "no onebox is running in {}; start it with `wingkv onebox start --dir {}`",
        layout.dir().display(),
        layout.dir().display()
    )
}

/// A current-thread runtime for the few meta calls a command makes (the commands themselves
/// are synchronous: they mostly wait on files and processes).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build a tokio runtime")
}

fn meta_client(metas: &[String]) -> Result<MetaClient> {
    let mut client = MetaClient::new(metas.to_vec(), ChannelPool::default())
        .map_err(|e| anyhow!("cannot make a meta client: {e}"))?;
    client.deadline = META_CALL_DEADLINE;
    Ok(client)
}

async fn list_nodes(client: &MetaClient) -> Result<ListNodesResponse> {
    client
        .call(|mut c| async move { c.list_nodes(ListNodesRequest {}).await })
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// The last `n` lines of a log file, indented, for error messages.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("    (cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!("  last lines of {}:", path.display());
    for line in &lines[lines.len().saturating_sub(n)..] {
        let _ = write!(out, "\n    {line}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// start

/// `wingkv onebox start`.
pub fn start(layout: &Layout, args: StartArgs) -> Result<ExitCode> {
    if let Some(pid) = running_supervisor(layout)? {
        bail!(
            "a onebox is already running in {} (supervisor pid {pid}); stop it first with \
             `wingkv onebox stop --dir {}`",
            layout.dir().display(),
            layout.dir().display()
        );
    }
    // Before touching anything: a missing server binary is the most likely first-run problem.
    Binaries::locate()?;
    std::fs::create_dir_all(layout.dir())
        .with_context(|| format!("cannot create {}", layout.dir().display()))?;
    // Absolute from here on: configs, the state file and the supervisor must not depend on
    // the directory `start` ran in.
    let dir = layout
        .dir()
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", layout.dir().display()))?;
    let layout = Layout::new(dir);
    let previous = layout.read_state_opt()?.and_then(|s| s.plan());
    let plan = resolve_plan(&layout, args, previous)?;
    plan.validate()?;
    let nodes = plan.nodes(layout.dir());
    let strays = process::node_processes(&nodes);
    if !strays.is_empty() {
        let list: Vec<String> = strays
            .iter()
            .map(|(n, pid)| format!("{} (pid {pid})", n.name))
            .collect();
        bail!(
            "servers of this onebox run without a supervisor: {}; `wingkv onebox stop --dir {}` \
             ends them",
            list.join(", "),
            layout.dir().display()
        );
    }
    for node in &nodes {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", node.port)) {
            bail!(
                "port {} of {} is taken ({e}): another onebox or server uses it; stop it, or \
                 choose other ports with --base-port-meta / --base-port-replica",
                node.port,
                node.name
            );
        }
    }
    plan.write_configs(&nodes)?;
    // Stale address files would make a node look up before it is.
    for node in &nodes {
        remove_if_there(&node.address_file())?;
    }
    if layout.control_dir().exists() {
        std::fs::remove_dir_all(layout.control_dir())
            .with_context(|| format!("cannot clear {}", layout.control_dir().display()))?;
    }
    remove_if_there(&layout.pid_file())?;
    let meta_addrs = plan.meta_addrs();
    layout.write_state(&OneboxState {
        cluster_name: CLUSTER_NAME.into(),
        supervisor_pid: None,
        metas: meta_addrs.clone(),
        nodes,
    })?;

    let mut supervisor = launch_supervisor(&layout)?;
    if let Err(e) = wait_until_serving(&layout, &mut supervisor, &meta_addrs) {
        // Leave nothing half-started behind; only the supervisor this command launched.
        let cleanup = shut_down(&layout, supervisor.id(), Some(&mut supervisor));
        let mut err = e.context(format!(
            "the onebox in {} did not come up",
            layout.dir().display()
        ));
        if let Err(c) = cleanup {
            err = err.context(format!("and stopping it failed too: {c:#}"));
        }
        return Err(err);
    }
    // Not waited for: the supervisor runs on in the background by design (it is in its own
    // session); `stop` ends it. Dropping a `Child` neither kills nor waits.
    drop(supervisor);
    println!(
        "onebox started in {}: {} meta server{}, {} replica server{} (supervisor log: {})",
        layout.dir().display(),
        plan.metas,
        if plan.metas == 1 { "" } else { "s" },
        plan.replicas,
        if plan.replicas == 1 { "" } else { "s" },
        layout.log_file().display()
    );
    println!("meta servers: {}", meta_addrs.join(","));
    Ok(ExitCode::SUCCESS)
}

fn remove_if_there(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => bail!("cannot remove {}: {e}", path.display()),
    }
}

/// The cluster to start: the options given, the rest from the onebox already in DIR (its data
/// is tied to its shape: node ids, raft members, addresses), or the defaults.
fn resolve_plan(
    layout: &Layout,
    args: StartArgs,
    previous: Option<ClusterPlan>,
) -> Result<ClusterPlan> {
    let Some(prev) = previous else {
        return Ok(ClusterPlan {
            metas: args.metas.unwrap_or(DEFAULT_METAS),
            replicas: args.replicas.unwrap_or(DEFAULT_REPLICAS),
            base_port_meta: args.base_port_meta.unwrap_or(DEFAULT_BASE_PORT_META),
            base_port_replica: args.base_port_replica.unwrap_or(DEFAULT_BASE_PORT_REPLICA),
        });
    };
    let keep = |given: Option<u16>, had: u16, option: &str| -> Result<u16> {
        match given {
            Some(v) if v != had => bail!(
                "{dir} holds a onebox started with {option} {had}, not {v}: its data belongs to \
                 that shape. Start it with the same options (or none), or remove {dir} for a new \
                 cluster",
                dir = layout.dir().display()
            ),
            _ => Ok(had),
        }
    };
    Ok(ClusterPlan {
        metas: keep(args.metas, prev.metas, "--metas")?,
        replicas: keep(args.replicas, prev.replicas, "--replicas")?,
        base_port_meta: keep(args.base_port_meta, prev.base_port_meta, "--base-port-meta")?,
        base_port_replica: keep(
            args.base_port_replica,
            prev.base_port_replica,
            "--base-port-replica",
        )?,
    })
}

/// Re-runs this executable as `onebox supervise` in a new session, detached from the terminal
/// and from this command, with its output in `DIR/supervisor.log`.
fn launch_supervisor(layout: &Layout) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot locate the wingkv executable")?;
    let log_path = layout.log_file();
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    writeln!(log, "===== {} wingkv onebox start =====", timestamp())
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let stderr = log
        .try_clone()
        .with_context(|| format!("cannot reopen {}", log_path.display()))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["onebox", "supervise", "--dir"])
        .arg(layout.dir())
        // Its own directory: the supervisor must not pin (or depend on) the caller's cwd.
        .current_dir(layout.dir())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // A session of its own: no terminal's SIGINT/SIGHUP reaches it, and it outlives
            // this command and the shell that ran it.
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot launch the supervisor ({})", exe.display()))
}

/// Waits until every node serves and the meta lists every replica server ALIVE.
fn wait_until_serving(layout: &Layout, supervisor: &mut Child, metas: &[String]) -> Result<()> {
    let rt = runtime()?;
    let client = meta_client(metas)?;
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = supervisor.try_wait().context("cannot wait for the supervisor")? {
            bail!(
                "the supervisor exited ({status}) before the cluster served\n{}",
                tail(&layout.log_file(), 15)
            );
        }
        let state = layout.read_state()?;
        let down: Vec<&NodeState> = state
            .nodes
            .iter()
            .filter(|n| !(n.pid.is_some() && n.serving()))
            .collect();
        let problem = if down.is_empty() {
            match rt.block_on(list_nodes(&client)) {
                Ok(resp) => {
                    let alive: HashSet<&str> = resp
                        .nodes
                        .iter()
                        .filter(|n| n.status == "ALIVE")
                        .map(|n| n.address.as_str())
                        .collect();
                    let missing: Vec<&NodeState> = state
                        .nodes
                        .iter()
                        .filter(|n| n.role == NodeRole::Replica && !alive.contains(n.address.as_str()))
                        .collect();
                    if missing.is_empty() {
                        return Ok(());
                    }
                    Problem {
                        what: format!(
                            "the meta does not list {} as ALIVE",
                            names(&missing).join(", ")
                        ),
                        logs: missing.iter().map(|n| n.log.clone()).collect(),
                    }
                }
                Err(e) => Problem {
                    what: format!("the meta does not answer ListNodes: {e:#}"),
                    logs: state
                        .nodes
                        .iter()
                        .filter(|n| n.role == NodeRole::Meta)
                        .map(|n| n.log.clone())
                        .collect(),
                },
            }
        } else {
            Problem {
                what: format!("not serving: {}", names(&down).join(", ")),
                logs: down.iter().map(|n| n.log.clone()).collect(),
            }
        };
        if Instant::now() >= deadline {
            let mut msg = format!("not up after {START_DEADLINE:?}: {}", problem.what);
            for log in problem.logs.iter().take(3) {
                let _ = write!(msg, "\n{}", tail(log, 8));
            }
            let _ = write!(msg, "\n{}", tail(&layout.log_file(), 8));
            bail!(msg);
        }
        std::thread::sleep(POLL * 2);
    }
}

/// What is not up yet, and where to look.
struct Problem {
    what: String,
    logs: Vec<std::path::PathBuf>,
}

fn names<'a>(nodes: &[&'a NodeState]) -> Vec<&'a str> {
    nodes.iter().map(|n| n.name.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// stop

/// `wingkv onebox stop`.
pub fn stop(layout: &Layout) -> Result<ExitCode> {
    match running_supervisor(layout)? {
        Some(pid) => {
            shut_down(layout, pid, None)?;
            println!("onebox in {} stopped", layout.dir().display());
        }
        None => {
            // Nothing should run without a supervisor; a server started by hand from these
            // configs would still hold its port and data, so make sure.
            if let Some(state) = layout.read_state_opt()? {
                kill_strays(&state.nodes)?;
            }
            println!("no onebox is running in {}", layout.dir().display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM to the supervisor, then waits until it and every node process are gone.
/// `own` is the supervisor's `Child` when this process launched it (so it is reaped here).
fn shut_down(layout: &Layout, pid: u32, own: Option<&mut Child>) -> Result<()> {
    let nodes = layout
        .read_state_opt()?
        .map(|s| s.nodes)
        .unwrap_or_default();
    process::signal(pid, libc::SIGTERM)?;
    let started = Instant::now();
    let mut own = own;
    let mut supervisor_killed = false;
    let mut strays_killed = false;
    loop {
        // A launched supervisor is our child: reap it, or it lingers as a zombie.
        if let Some(child) = own.as_mut() {
            if child.try_wait().ok().flatten().is_some() {
                own = None;
            }
        }
        let supervisor_gone = !process::alive(pid);
        let left = process::node_processes(&nodes);
        if supervisor_gone && left.is_empty() {
            return Ok(());
        }
        let waited = started.elapsed();
        if !supervisor_gone && !supervisor_killed && waited >= SUPERVISOR_KILL_AFTER {
            eprintln!(
                "the supervisor (pid {pid}) still runs {waited:?} after SIGTERM; sending SIGKILL"
            );
            process::signal(pid, libc::SIGKILL)?;
            supervisor_killed = true;
        }
        if supervisor_gone && !left.is_empty() && !strays_killed {
            // The supervisor kills and reaps its children before it exits, and PDEATHSIG
            // covers a supervisor that died: whatever is left was not its child.
            for (node, p) in &left {
                eprintln!("{} (pid {p}) survived the supervisor; sending SIGKILL", node.name);
                process::signal(*p, libc::SIGKILL)?;
            }
            strays_killed = true;
        }
        if waited >= STOP_DEADLINE {
            let mut what = Vec::new();
            if !supervisor_gone {
                what.push(format!("the supervisor (pid {pid})"));
            }
            what.extend(left.iter().map(|(n, p)| format!("{} (pid {p})", n.name)));
            bail!(
                "after {STOP_DEADLINE:?} still running: {}; see {}",
                what.join(", "),
                layout.log_file().display()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// SIGKILLs node processes that run without a supervisor and waits for them to go.
fn kill_strays(nodes: &[NodeState]) -> Result<()> {
    let strays = process::node_processes(nodes);
    if strays.is_empty() {
        return Ok(());
    }
    for (node, pid) in &strays {
        eprintln!("{} (pid {pid}) runs without a supervisor; sending SIGKILL", node.name);
        process::signal(*pid, libc::SIGKILL)?;
    }
    let pids: Vec<u32> = strays.iter().map(|(_, p)| *p).collect();
    if !wait_until(Duration::from_secs(5), || {
        pids.iter().all(|p| !process::alive(*p))
    }) {
        bail!("pids {pids:?} are still alive 5 s after SIGKILL");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// status

/// What `status --json` prints: the state file, corrected by what `/proc` says.
#[derive(Serialize)]
struct StatusReport {
    dir: String,
    supervisor_running: bool,
    cluster_name: String,
    supervisor_pid: Option<u32>,
    metas: Vec<String>,
    nodes: Vec<NodeReport>,
}

#[derive(Serialize)]
struct NodeReport {
    #[serde(flatten)]
    node: NodeState,
    /// The process runs and has written its address file.
    serving: bool,
}

/// `wingkv onebox status`.
pub fn status(layout: &Layout, json: bool) -> Result<ExitCode> {
    let state = layout.read_state()?;
    let supervisor = running_supervisor(layout)?;
    let nodes: Vec<NodeReport> = state
        .nodes
        .into_iter()
        .map(|mut node| {
            // The state file may lag (or the supervisor may be gone): trust a pid only when
            // /proc shows it running this node.
            let alive = node.pid.is_some_and(|p| process::runs_node(p, &node));
            if !alive {
                node.pid = None;
                node.started_at_ms = None;
                node.state = match (supervisor, node.state) {
                    (None, _) => RunState::Stopped,
                    (Some(_), RunState::Running) => RunState::Restarting,
                    (Some(_), s) => s,
                };
            }
            let serving = alive && node.serving();
            NodeReport { node, serving }
        })
        .collect();
    let report = StatusReport {
        dir: layout.dir().display().to_string(),
        supervisor_running: supervisor.is_some(),
        cluster_name: state.cluster_name,
        supervisor_pid: supervisor,
        metas: state.metas,
        nodes,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encode the status")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    match report.supervisor_pid {
        Some(pid) => println!("onebox in {}: supervisor pid {pid}", report.dir),
        None => println!("onebox in {}: not running", report.dir),
    }
    println!("meta servers: {}", report.metas.join(","));
    println!();
    println!(
        "{:<10} {:<8} {:>8} {:>6}  {:<11} {:>8} {:>8}  {:<7}",
        "NODE", "ROLE", "PID", "PORT", "STATE", "RESTARTS", "UPTIME", "SERVING"
    );
    let now = unix_ms();
    for r in &report.nodes {
        let n = &r.node;
        let pid = n.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        let uptime = n
            .started_at_ms
            .map_or_else(|| "-".to_string(), |t| human(now.saturating_sub(t) / 1000));
        println!(
            "{:<10} {:<8} {:>8} {:>6}  {:<11} {:>8} {:>8}  {:<7}",
            n.name,
            n.role.to_string(),
            pid,
            n.port,
            n.state.to_string(),
            n.restarts,
            uptime,
            if r.serving { "yes" } else { "no" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `75` → `1m15s`.
fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

// ---------------------------------------------------------------------------------------------
// restart, kill

/// `wingkv onebox restart [NODE]`.
pub fn restart(layout: &Layout, node: Option<&str>) -> Result<ExitCode> {
    let state = layout.read_state()?;
    let names: Vec<String> = match node {
        Some(name) => vec![state.node(name)?.name.clone()],
        None => state.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    let supervisor = running_supervisor(layout)?.ok_or_else(|| not_running(layout))?;
    let rt = runtime()?;
    let client = meta_client(&state.metas)?;
    std::fs::create_dir_all(layout.control_dir())
        .with_context(|| format!("cannot create {}", layout.control_dir().display()))?;
    // One at a time: the cluster keeps serving while each node restarts.
    for name in names {
        let old = layout.read_state()?.node(&name)?.pid;
        let request = layout.restart_request(&name);
        // Created whole in one step (its content does not matter), so the supervisor, which
        // reads the directory at any time, never sees a partial name.
        File::create(&request)
            .with_context(|| format!("cannot write {}", request.display()))?;
        process::signal(supervisor, libc::SIGHUP)?;
        let new = wait_restarted(layout, &rt, &client, supervisor, &name, old)?;
        match old {
            Some(old) => println!("{name} restarted: pid {old} -> {new}"),
            None => println!("{name} started: pid {new}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until `name` runs as a new process that serves, and the meta has heard from it.
fn wait_restarted(
    layout: &Layout,
    rt: &tokio::runtime::Runtime,
    client: &MetaClient,
    supervisor: u32,
    name: &str,
    old: Option<u32>,
) -> Result<u32> {
    let deadline = Instant::now() + RESTART_DEADLINE;
    // When the new process was first seen serving: a heartbeat younger than that comes from
    // it (the old one was gone before the new one started).
    let mut serving_since: Option<(u32, Instant)> = None;
    loop {
        if !process::alive(supervisor) {
            bail!(
                "the supervisor exited while restarting {name}\n{}",
                tail(&layout.log_file(), 10)
            );
        }
        let state = layout.read_state()?;
        let node = state.node(name)?;
        let problem = match node.pid {
            Some(pid)
                if Some(pid) != old
                    && node.state == RunState::Running
                    && process::runs_node(pid, node)
                    && node.serving() =>
            {
                let since = match serving_since {
                    Some((p, t)) if p == pid => t,
                    _ => {
                        let t = Instant::now();
                        serving_since = Some((pid, t));
                        t
                    }
                };
                match rt.block_on(list_nodes(client)) {
                    Ok(resp) => {
                        let heard = match node.role {
                            // A meta that answers ListNodes (through the leader) is back.
                            NodeRole::Meta => true,
                            NodeRole::Replica => resp.nodes.iter().any(|n| {
                                n.address == node.address
                                    && n.status == "ALIVE"
                                    && u128::from(n.last_heartbeat_ms_ago)
                                        < since.elapsed().as_millis()
                            }),
                        };
                        if heard {
                            return Ok(pid);
                        }
                        "the meta has not heard from it since it restarted".to_string()
                    }
                    Err(e) => format!("the meta does not answer: {e:#}"),
                }
            }
            Some(pid) if Some(pid) == old => "the old process still runs".to_string(),
            _ => format!("it is {}", node.state),
        };
        if Instant::now() >= deadline {
            bail!(
                "{name} did not come back within {RESTART_DEADLINE:?}: {problem}\n{}",
                tail(&node.log, 10)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// `wingkv onebox kill NODE`.
pub fn kill(layout: &Layout, name: &str) -> Result<ExitCode> {
    let state = layout.read_state()?;
    let node = state.node(name)?;
    running_supervisor(layout)?.ok_or_else(|| not_running(layout))?;
    let pid = node
        .pid
        .filter(|p| process::runs_node(*p, node))
        .ok_or_else(|| {
            anyhow!(
                "{name} has no running process to kill (it is {})",
                node.state
            )
        })?;
    process::signal(pid, libc::SIGKILL)?;
    println!("killed {name} (pid {pid}) with SIGKILL; the supervisor restarts it");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(human(5), "5s");
        assert_eq!(human(75), "1m15s");
        assert_eq!(human(3 * 3600 + 120), "3h02m");
        assert_eq!(human(2 * 86_400 + 3600), "2d01h");
    }

    #[test]
    fn start_keeps_the_shape_of_an_existing_onebox() {
        let layout = Layout::new("/ob".into());
        let none = StartArgs {
            metas: None,
            replicas: None,
            base_port_meta: None,
            base_port_replica: None,
        };
        let fresh = resolve_plan(&layout, none, None).unwrap();
        assert_eq!((fresh.metas, fresh.replicas), (1, 3));
        assert_eq!(fresh.base_port_meta, 34601);
        let prev = ClusterPlan {
            metas: 3,
            replicas: 5,
            base_port_meta: 40000,
            base_port_replica: 41000,
        };
        assert_eq!(resolve_plan(&layout, none, Some(prev)).unwrap(), prev);
        let same = StartArgs {
            replicas: Some(5),
            ..none
        };
        assert_eq!(resolve_plan(&layout, same, Some(prev)).unwrap(), prev);
        let other = StartArgs {
            replicas: Some(3),
            ..none
        };
        let err = resolve_plan(&layout, other, Some(prev))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--replicas 5, not 3"), "{err}");
    }
}
