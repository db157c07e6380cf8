//! `wingkv onebox`: a local cluster of `meta-server` and `replica-server` child processes under
//! one supervisor (DESIGN §8).
//!
//! `start` writes every node's config under DIR and launches the supervisor as a detached
//! process (`onebox supervise`), then returns once the cluster serves. The supervisor is
//! single-threaded on purpose: children are spawned from its main thread with
//! `PR_SET_PDEATHSIG(SIGKILL)`, so they die with it even after `kill -9`. It restarts a child
//! that exits unexpectedly with exponential backoff, takes restart requests through
//! `DIR/control/` plus SIGHUP, and on SIGTERM/SIGINT stops every child gracefully and waits for
//! them. Its view of the nodes is in `DIR/state.json`.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use wingkv_common::backoff::{Backoff, BackoffPolicy};

/// Arguments of `wingkv onebox`.
#[derive(Args, Debug)]
pub struct OneboxArgs {
    #[command(subcommand)]
    command: OneboxCommand,
    /// Directory of the onebox (configs, data, logs, state).
    #[arg(long, global = true, default_value = "./onebox")]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum OneboxCommand {
    /// Start a local cluster and return once it serves.
    Start {
        /// Meta servers.
        #[arg(long, default_value_t = 1)]
        metas: u32,
        /// Replica servers.
        #[arg(long, default_value_t = 3)]
        replicas: u32,
        /// Port of meta1 (meta2 gets the next one, ...).
        #[arg(long, default_value_t = 34601)]
        base_port_meta: u16,
        /// Port of replica1 (replica2 gets the next one, ...).
        #[arg(long, default_value_t = 34801)]
        base_port_replica: u16,
        /// A TOML file appended to every replica server's config (e.g. bulk-load limits).
        #[arg(long)]
        replica_config: Option<PathBuf>,
        /// A TOML file appended to every meta server's config (e.g. the bulk-load provider).
        #[arg(long)]
        meta_config: Option<PathBuf>,
        /// Each server serves `/metrics` and `/health` on its gRPC port + this offset; 0 picks
        /// any free port (`onebox status` shows where).
        #[arg(long, default_value_t = 10_000)]
        http_port_offset: u16,
        /// Mutual TLS everywhere: a CA and certificates for every server and for the users
        /// `admin` (in the metas' `admin_users`) and `user1` are made under `DIR/tls/` (kept
        /// across starts); the shell connects with `--tls-dir DIR/tls`.
        #[arg(long)]
        secure: bool,
    },
    /// Stop the cluster and wait until no process of it is left.
    Stop,
    /// Show the nodes.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Gracefully restart one node (or every node, one at a time).
    Restart {
        /// Node name (meta1, replica2, ...).
        node: Option<String>,
    },
    /// Kill a node with SIGKILL (simulates a crash; the supervisor restarts it).
    Kill {
        /// Node name.
        node: String,
    },
    /// Add replica servers to the running onebox, with the next names and ports; they register
    /// with the meta, and at meta level `lively` get their share of replicas and primaries.
    Add {
        /// How many replica servers.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
    },
    /// Stop a replica server for good and forget it, once it is decommissioned and drained
    /// (`decommission ADDRESS` in the shell; `nodes -d` shows it `drained`).
    Remove {
        /// Node name (replica4, ...).
        node: String,
    },
    /// Run the supervisor (started by `start`).
    #[command(hide = true)]
    Supervise,
}

/// One node as the supervisor reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    /// meta1.., replica1..
    pub name: String,
    /// `meta` or `replica`.
    pub role: String,
    /// gRPC port.
    pub port: u16,
    /// The node's directory.
    pub dir: PathBuf,
    /// Process id while running.
    pub pid: Option<u32>,
    /// running, restarting, stopped.
    pub state: String,
    /// Unexpected exits so far.
    pub restarts: u32,
}

/// The supervisor's state file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct OneboxState {
    /// The process that restarts the onebox's servers; `onebox stop` ends it first.
    pub supervisor_pid: u32,
    /// Meta addresses.
    pub metas: Vec<String>,
    /// Every node.
    pub nodes: Vec<NodeState>,
    /// Whether the servers run with mutual TLS (certificates under `DIR/tls/`).
    #[serde(default)]
    pub secure: bool,
    /// The TOML added to every replica server's config (`--replica-config`), for the ones
    /// `onebox add` starts later.
    #[serde(default)]
    pub replica_config: String,
    /// `--http-port-offset` of the start.
    #[serde(default)]
    pub http_port_offset: u16,
}

/// Runs `wingkv onebox`.
pub fn run(args: OneboxArgs) -> Result<ExitCode> {
    let dir = args.dir;
    match args.command {
        OneboxCommand::Start {
            metas,
            replicas,
            base_port_meta,
            base_port_replica,
            replica_config,
            meta_config,
            http_port_offset,
            secure,
        } => {
            let read_extra = |file: Option<PathBuf>| match file {
                Some(p) => std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display())),
                None => Ok(String::new()),
            };
            let extra = ExtraConfig {
                meta: read_extra(meta_config)?,
                replica: read_extra(replica_config)?,
                http_port_offset,
                secure,
            };
            start(&dir, metas, replicas, base_port_meta, base_port_replica, &extra)
        }
        OneboxCommand::Stop => stop(&dir),
        OneboxCommand::Status { json } => status(&dir, json),
        OneboxCommand::Restart { node } => restart(&dir, node.as_deref()),
        OneboxCommand::Kill { node } => kill_node(&dir, &node),
        OneboxCommand::Add { replicas } => add(&dir, replicas),
        OneboxCommand::Remove { node } => remove(&dir, &node),
        OneboxCommand::Supervise => supervise(&dir),
    }
}

/// Whether `pid` is a live process (a zombie, dead but not yet reaped, is not).
fn pid_alive(pid: u32) -> bool {
    if unsafe { libc::kill(pid as i32, 0) } != 0 {
        return false;
    }
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The state letter and the parent pid of `pid`, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // They follow the command name, in parentheses (which may hold spaces and parentheses).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Whether the live process `pid` runs `wingkv onebox supervise` (a pid in a stale file may
/// name another program by now).
fn is_supervisor(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w == [b"onebox".as_slice(), b"supervise".as_slice()])
}

fn signal(pid: u32, sig: i32) {
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn read_state(dir: &Path) -> Result<OneboxState> {
    let path = dir.join("state.json");
    let text = std::fs::read(&path).with_context(|| format!("no onebox at {} (no state.json)", dir.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a onebox state file", path.display()))
}

fn write_state(dir: &Path, state: &OneboxState) -> Result<()> {
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, dir.join("state.json"))?;
    Ok(())
}

fn supervisor_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("supervisor.pid")).ok()?.trim().parse().ok()?;
    (pid_alive(pid) && is_supervisor(pid)).then_some(pid)
}

fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the wingkv executable")?;
    let path = exe.parent().map(|d| d.join(name)).ok_or_else(|| anyhow!("wingkv has no directory"))?;
    if !path.exists() {
        bail!("{} is missing; build it with `./run.sh build`", path.display());
    }
    Ok(path)
}

/// TOML appended to the generated configs of the nodes, and whether they run with TLS.
struct ExtraConfig {
    meta: String,
    replica: String,
    http_port_offset: u16,
    secure: bool,
}

/// The users a secure onebox makes certificates for; the first is its admin.
const ONEBOX_USERS: [&str; 2] = ["admin", "user1"];

/// `s` as a TOML string (quoted and escaped: a path may hold quotes or backslashes).
fn toml_str(s: &str) -> String {
    // A JSON string is a valid TOML basic string for every character serde_json emits.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The `[tls]` section of a node of a secure onebox named `name`, issuing its certificate
/// (role `role`) with the onebox's CA.
fn tls_section(tls_dir: &Path, role: wingkv_security::Role, name: &str) -> Result<String> {
    use wingkv_security::certs;
    let ca = certs::load(&tls_dir.join("ca.crt"), &tls_dir.join("ca.key"))?;
    let (cert, key) =
        certs::write(&certs::issue_server(&ca, role, name, &["localhost".into(), "127.0.0.1".into()])?, tls_dir, name)?;
    Ok(format!(
        "[tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
        toml_str(&tls_dir.join("ca.crt").to_string_lossy()),
        toml_str(&cert.to_string_lossy()),
        toml_str(&key.to_string_lossy())
    ))
}

/// The provider section `section` of a secure onebox's server, naming the `local` provider's
/// root, which a secure server does not default.
fn local_root_section(section: &str) -> String {
    format!(
        "[{section}]\n# One developer's machine: bulk-load files may be anywhere on it. A real secure\n\
         # cluster names the directory its bulk-load files are under.\nlocal_root = \"/\"\n"
    )
}

/// Makes the CA (unless the onebox has one) and the users' certificates of a secure onebox.
fn make_onebox_ca(tls_dir: &Path) -> Result<()> {
    use wingkv_security::certs;
    if !tls_dir.join("ca.key").exists() {
        certs::write(&certs::new_ca("wingkv onebox CA")?, tls_dir, "ca")?;
    }
    let ca = certs::load(&tls_dir.join("ca.crt"), &tls_dir.join("ca.key"))?;
    for user in ONEBOX_USERS {
        certs::write(&certs::issue_user(&ca, user)?, tls_dir, user)?;
    }
    Ok(())
}

impl ExtraConfig {
    /// The `http_listen` line of the server whose gRPC port is `port`.
    fn http_listen(&self, port: u16) -> Result<String> {
        let http = match self.http_port_offset {
            0 => 0,
            off => port.checked_add(off).ok_or_else(|| {
                anyhow!("port {port} + --http-port-offset {off} is not a port; pick a smaller offset, or 0 for any free port")
            })?,
        };
        Ok(format!("http_listen = \"127.0.0.1:{http}\""))
    }
}

/// Writes the config of replica server `replicaN` (gRPC port `port`) under `dir` and answers
/// its state, stopped.
fn replica_node(dir: &Path, n: u32, port: u16, metas: &[String], extra: &ExtraConfig) -> Result<NodeState> {
    let name = format!("replica{n}");
    let ndir = dir.join(&name);
    std::fs::create_dir_all(&ndir)?;
    let security = if extra.secure {
        local_root_section("bulk_load.provider")
            + &tls_section(&dir.join("tls"), wingkv_security::Role::Replica, &name)?
    } else {
        String::new()
    };
    let meta_list: Vec<String> = metas.iter().map(|a| toml_str(a)).collect();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n{}\ndata_dir = {}\nmeta_servers = [{}]\n{}\n{security}",
        extra.http_listen(port)?,
        toml_str(&ndir.join("data").to_string_lossy()),
        meta_list.join(","),
        extra.replica
    );
    std::fs::write(ndir.join("config.toml"), config)?;
    Ok(NodeState { name, role: "replica".into(), port, dir: ndir, pid: None, state: "stopped".into(), restarts: 0 })
}

fn start(
    dir: &Path,
    metas: u32,
    replicas: u32,
    base_meta: u16,
    base_replica: u16,
    extra: &ExtraConfig,
) -> Result<ExitCode> {
    if !(1..=3).contains(&metas) {
        bail!("--metas must be 1, 2 or 3 (got {metas})");
    }
    if !(1..=16).contains(&replicas) {
        bail!("--replicas must be between 1 and 16 (got {replicas})");
    }
    if let Some(pid) = supervisor_pid(dir) {
        bail!(
            "a onebox is already running in {} (supervisor pid {pid}); `wingkv onebox stop --dir {}` first",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let meta_addrs: Vec<String> = (0..metas).map(|i| format!("127.0.0.1:{}", base_meta + i as u16)).collect();
    let peers: String = if metas > 1 {
        meta_addrs.iter().enumerate().map(|(i, a)| format!("[[peers]]\nid = {}\naddress = \"{a}\"\n", i + 1)).collect()
    } else {
        String::new()
    };
    let tls_dir = dir.join("tls");
    if extra.secure {
        make_onebox_ca(&tls_dir).context("make the onebox's certificates")?;
    }
    let mut nodes = Vec::new();
    for i in 0..metas {
        let name = format!("meta{}", i + 1);
        let ndir = dir.join(&name);
        std::fs::create_dir_all(&ndir)?;
        let security = if extra.secure {
            format!(
                "admin_users = [{}]\n{}{}",
                toml_str(ONEBOX_USERS[0]),
                local_root_section("bulk_load_provider"),
                tls_section(&tls_dir, wingkv_security::Role::Meta, &name)?
            )
        } else {
            String::new()
        };
        let config = format!(
            // The extra TOML goes before `[tls]` and `[[peers]]`, so its top-level keys stay
            // top-level.
            "id = {}\nlisten = \"{}\"\n{}\ndata_dir = {}\ncluster_name = \"onebox\"\n{}\n{security}{peers}",
            i + 1,
            meta_addrs[i as usize],
            extra.http_listen(base_meta + i as u16)?,
            toml_str(&ndir.join("data").to_string_lossy()),
            extra.meta
        );
        std::fs::write(ndir.join("config.toml"), config)?;
        nodes.push(NodeState {
            name,
            role: "meta".into(),
            port: base_meta + i as u16,
            dir: ndir,
            pid: None,
            state: "stopped".into(),
            restarts: 0,
        });
    }
    for i in 0..replicas {
        nodes.push(replica_node(&dir, i + 1, base_replica + i as u16, &meta_addrs, extra)?);
    }
    let state = OneboxState {
        supervisor_pid: 0,
        metas: meta_addrs.clone(),
        nodes,
        secure: extra.secure,
        replica_config: extra.replica.clone(),
        http_port_offset: extra.http_port_offset,
    };
    write_state(&dir, &state)?;
    let _ = std::fs::remove_file(dir.join("supervisor.pid"));

    let log = File::options().create(true).append(true).open(dir.join("supervisor.log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["onebox", "supervise", "--dir"]).arg(&dir).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // Its own session: the supervisor outlives this command and the terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().context("launch the onebox supervisor")?;
    let sup_pid = child.id();
    // Not waited for: the supervisor runs on in the background by design; `stop` ends it.
    drop(child);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let admin_tls = admin_tls(&dir, extra.secure);
    match rt.block_on(wait_serving(&dir, &meta_addrs, replicas as usize, sup_pid, admin_tls)) {
        Ok(()) => {
            println!("onebox started in {}: meta {}, {replicas} replica servers", dir.display(), meta_addrs.join(","));
            if extra.secure {
                println!("mutual TLS: connect with `wingkv shell --tls-dir {}` (user admin)", tls_dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = stop(&dir);
            Err(e.context(format!(
                "the onebox did not come up; see {}/supervisor.log and the nodes' server.log",
                dir.display()
            )))
        }
    }
}

/// The onebox admin's TLS files, on a secure onebox.
fn admin_tls(dir: &Path, secure: bool) -> Option<wingkv_security::TlsConfig> {
    let tls_dir = dir.join("tls");
    secure.then(|| wingkv_security::TlsConfig {
        ca_file: tls_dir.join("ca.crt"),
        cert_file: tls_dir.join(format!("{}.crt", ONEBOX_USERS[0])),
        key_file: tls_dir.join(format!("{}.key", ONEBOX_USERS[0])),
    })
}

async fn wait_serving(
    dir: &Path,
    metas: &[String],
    replicas: usize,
    sup_pid: u32,
    tls: Option<wingkv_security::TlsConfig>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut config = wingkv_client::ClientConfig::new(metas.to_vec());
    config.tls = tls;
    config.request_timeout = Duration::from_secs(2);
    config.backoff = wingkv_common::backoff::BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(1));
    let admin = wingkv_client::Admin::new(config)?;
    let mut last = String::from("nothing answered yet");
    while Instant::now() < deadline {
        if !pid_alive(sup_pid) {
            bail!("the supervisor exited");
        }
        let state = read_state(dir)?;
        let missing: Vec<&str> = state
            .nodes
            .iter()
            .filter(|n| !n.dir.join("data").join("server.addr").exists())
            .map(|n| n.name.as_str())
            .collect();
        if missing.is_empty() {
            match admin.list_nodes().await {
                Ok(nodes) => {
                    let alive = nodes.iter().filter(|x| x.status() == wingkv_client::NodeStatus::Alive).count();
                    if alive >= replicas {
                        return Ok(());
                    }
                    last = format!("{alive} of {replicas} replica servers alive");
                }
                Err(e) => last = e.to_string(),
            }
        } else {
            last = format!("not serving yet: {}", missing.join(","));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("not up after 60 s: {last}")
}

fn stop(dir: &Path) -> Result<ExitCode> {
    let Some(pid) = supervisor_pid(dir) else {
        println!("no onebox is running in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let children: Vec<u32> =
        read_state(dir).map(|s| s.nodes.iter().filter_map(|n| n.pid).collect()).unwrap_or_default();
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && (pid_alive(pid) || children.iter().any(|c| pid_alive(*c))) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_alive(pid) || children.iter().any(|c| pid_alive(*c)) {
        bail!("the onebox did not stop within 20 s (supervisor pid {pid})");
    }
    println!("onebox stopped");
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &Path, json: bool) -> Result<ExitCode> {
    let mut state = read_state(dir)?;
    let running = supervisor_pid(dir).is_some();
    for n in &mut state.nodes {
        if !running || !n.pid.is_some_and(pid_alive) {
            n.state = if running { n.state.clone() } else { "stopped".into() };
            if !running {
                n.pid = None;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&state)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "supervisor: {}",
        if running { format!("running (pid {})", state.supervisor_pid) } else { "not running".into() }
    );
    println!("{:<10} {:<8} {:<6} {:<8} {:<11} {:<8} metrics", "node", "role", "port", "pid", "state", "restarts");
    for n in &state.nodes {
        let pid = n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let http = std::fs::read_to_string(n.dir.join("data").join("http.addr"))
            .map(|a| format!("http://{}/metrics", a.trim()))
            .unwrap_or_else(|_| "-".into());
        println!("{:<10} {:<8} {:<6} {:<8} {:<11} {:<8} {http}", n.name, n.role, n.port, pid, n.state, n.restarts);
    }
    Ok(ExitCode::SUCCESS)
}

fn find_node<'a>(state: &'a OneboxState, name: &str) -> Result<&'a NodeState> {
    state.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
        let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
        anyhow!("no node named '{name}' (nodes: {})", names.join(", "))
    })
}

fn restart(dir: &Path, node: Option<&str>) -> Result<ExitCode> {
    let sup = supervisor_pid(dir).ok_or_else(|| anyhow!("no onebox is running in {}", dir.display()))?;
    let state = read_state(dir)?;
    let names: Vec<String> = match node {
        Some(n) => vec![find_node(&state, n)?.name.clone()],
        None => state.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    std::fs::create_dir_all(dir.join("control"))?;
    for name in names {
        let old = find_node(&read_state(dir)?, &name)?.pid;
        std::fs::write(dir.join("control").join(format!("restart-{name}")), b"")?;
        signal(sup, libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = read_state(dir)?;
            let n = find_node(&s, &name)?;
            if n.pid.is_some()
                && n.pid != old
                && n.state == "running"
                && n.dir.join("data").join("server.addr").exists()
            {
                println!("{name} restarted (pid {})", n.pid.unwrap_or_default());
                break;
            }
            if Instant::now() >= deadline {
                bail!("{name} did not come back within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn kill_node(dir: &Path, name: &str) -> Result<ExitCode> {
    let sup = supervisor_pid(dir).ok_or_else(|| anyhow!("no onebox is running in {}", dir.display()))?;
    let state = read_state(dir)?;
    let node = find_node(&state, name)?;
    let pid = node.pid.ok_or_else(|| anyhow!("{name} is not running"))?;
    // The state file may be older than the process table: never signal a pid the supervisor
    // does not own.
    ensure_child(name, pid, sup)?;
    signal(pid, libc::SIGKILL);
    println!("killed {name} (pid {pid}); the supervisor will restart it");
    Ok(ExitCode::SUCCESS)
}

/// Fails unless `pid` (recorded for node `name`) is a child of the supervisor `sup`.
fn ensure_child(name: &str, pid: u32, sup: u32) -> Result<()> {
    match proc_stat(pid) {
        Some((_, parent)) if parent == sup => Ok(()),
        _ => bail!(
            "{name}'s recorded pid {pid} is not a child of the onebox's supervisor (pid {sup}): \
             it exited and the state is stale; nothing was signalled"
        ),
    }
}

/// Most replica servers a onebox runs.
const MAX_ONEBOX_REPLICAS: usize = 32;

/// Runs `onebox add`: writes the new servers' configs, hands them to the supervisor (a file
/// per server under `control/`, then SIGHUP) and waits until each serves.
fn add(dir: &Path, replicas: u32) -> Result<ExitCode> {
    let sup = supervisor_pid(dir).ok_or_else(|| anyhow!("no onebox is running in {}", dir.display()))?;
    let state = read_state(dir)?;
    let existing: Vec<&NodeState> = state.nodes.iter().filter(|n| n.role == "replica").collect();
    if replicas == 0 || existing.len() + replicas as usize > MAX_ONEBOX_REPLICAS {
        bail!(
            "--replicas must be between 1 and {} (the onebox runs {} of at most {MAX_ONEBOX_REPLICAS})",
            MAX_ONEBOX_REPLICAS - existing.len(),
            existing.len()
        );
    }
    let dir = dir.canonicalize()?;
    let next_index = existing.iter().filter_map(|n| n.name.strip_prefix("replica")?.parse::<u32>().ok()).max();
    let next_port = existing.iter().map(|n| n.port).max();
    let (Some(index), Some(port)) = (next_index, next_port) else {
        bail!("the onebox in {} has no replica server to follow", dir.display());
    };
    let extra = ExtraConfig {
        meta: String::new(),
        replica: state.replica_config.clone(),
        http_port_offset: state.http_port_offset,
        secure: state.secure,
    };
    let control = dir.join("control");
    std::fs::create_dir_all(&control)?;
    let mut names = Vec::new();
    let mut port = port;
    for i in 1..=replicas {
        port = next_free_port(port, &state, &extra)?;
        let node = replica_node(&dir, index + i, port, &state.metas, &extra)?;
        // Whole or absent when the supervisor reads it.
        let file = control.join(format!("add-{}", node.name));
        let tmp = control.join(format!(".add-{}.tmp", node.name));
        std::fs::write(&tmp, serde_json::to_vec(&node)?)?;
        std::fs::rename(&tmp, &file)?;
        names.push(node.name);
    }
    signal(sup, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = read_state(&dir)?;
        let serving = |name: &String| {
            s.nodes
                .iter()
                .any(|n| &n.name == name && n.state == "running" && n.dir.join("data").join("server.addr").exists())
        };
        if names.iter().all(serving) {
            break;
        }
        if Instant::now() >= deadline {
            let down: Vec<&String> = names.iter().filter(|n| !serving(n)).collect();
            let logs: String = down
                .iter()
                .map(|name| {
                    let log = dir.join(name).join("server.log");
                    format!("\n--- last lines of {} ---\n{}", log.display(), tail_lines(&log, 20))
                })
                .collect();
            bail!(
                "the added servers {} did not come up within 60 s{logs}",
                down.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("added {}", names.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// The first port after `after` that no node of the onebox uses and that can be bound now (with
/// its HTTP port, when that is fixed by an offset): "the next port" unless a process outside
/// the onebox, e.g. an outgoing connection's ephemeral port, holds it.
fn next_free_port(after: u16, state: &OneboxState, extra: &ExtraConfig) -> Result<u16> {
    let bindable = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let mut port = after;
    for _ in 0..1000 {
        port = port.checked_add(1).ok_or_else(|| anyhow!("no free port left after {after}"))?;
        if state.nodes.iter().any(|n| n.port == port) {
            continue;
        }
        let http_free = match extra.http_port_offset {
            0 => true,
            off => port.checked_add(off).is_some_and(bindable),
        };
        if http_free && bindable(port) {
            return Ok(port);
        }
    }
    bail!("no free port among the 1000 after {after}")
}

/// The last `n` lines of the file at `path`, or why it cannot be read.
fn tail_lines(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

/// Runs `onebox remove NODE`: checks with the meta that the node holds nothing, then has the
/// supervisor stop it and forget it.
fn remove(dir: &Path, name: &str) -> Result<ExitCode> {
    let sup = supervisor_pid(dir).ok_or_else(|| anyhow!("no onebox is running in {}", dir.display()))?;
    let state = read_state(dir)?;
    let node = find_node(&state, name)?;
    if node.role != "replica" {
        bail!("{name} is a {} server; only replica servers can be removed", node.role);
    }
    let address = format!("127.0.0.1:{}", node.port);
    let mut config = wingkv_client::ClientConfig::new(state.metas.clone());
    config.tls = admin_tls(dir, state.secure);
    config.request_timeout = Duration::from_secs(5);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let nodes = rt.block_on(async { wingkv_client::Admin::new(config)?.list_nodes().await })?;
    let info = nodes.iter().find(|n| n.address == address);
    match info.map(|n| n.drain.as_str()) {
        Some("drained") => {}
        Some(drain) => bail!(
            "{name} ({address}) is not drained (drain: '{drain}'): run `decommission {address}` in the shell \
             and wait until `nodes -d` shows it drained; nothing was stopped"
        ),
        None => bail!("the meta does not know {name} ({address}); nothing was stopped"),
    }
    let control = dir.join("control");
    std::fs::create_dir_all(&control)?;
    std::fs::write(control.join(format!("remove-{name}")), b"")?;
    signal(sup, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_state(dir)?.nodes.iter().any(|n| n.name == name) {
        if Instant::now() >= deadline {
            bail!("the supervisor did not stop {name} within 60 s (see supervisor.log)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("removed {name} ({address})");
    Ok(ExitCode::SUCCESS)
}

/// The nodes `onebox add` handed to the supervisor (their `control/add-NAME` files, removed).
fn take_added(dir: &Path) -> Vec<NodeState> {
    let Ok(entries) = std::fs::read_dir(dir.join("control")) else {
        return Vec::new();
    };
    let mut added = Vec::new();
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("add-") {
            continue;
        }
        let parsed = std::fs::read(e.path())
            .map_err(anyhow::Error::from)
            .and_then(|b| serde_json::from_slice::<NodeState>(&b).map_err(anyhow::Error::from));
        let _ = std::fs::remove_file(e.path());
        match parsed {
            Ok(node) => added.push(node),
            Err(err) => log(&format!("ignoring {}: {err:#}", e.path().display())),
        }
    }
    added
}

static STOP: AtomicBool = AtomicBool::new(false);
static CONTROL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_hup(_: libc::c_int) {
    CONTROL.store(true, Ordering::SeqCst);
}

fn install_handlers() {
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
    }
}

/// A supervised child.
struct Supervised {
    state: NodeState,
    child: Option<Child>,
    started: Instant,
    backoff: Backoff,
    next_start: Option<Instant>,
}

fn log(msg: &str) {
    let now = wingkv_common::time::unix_secs();
    eprintln!("[{now}] supervisor: {msg}");
}

fn spawn_node(node: &NodeState) -> Result<Child> {
    let binary = sibling_binary(if node.role == "meta" { "meta-server" } else { "replica-server" })?;
    let _ = std::fs::remove_file(node.dir.join("data").join("server.addr"));
    let out = File::options().create(true).append(true).open(node.dir.join("server.log"))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--config").arg(node.dir.join("config.toml")).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // The child dies with the supervisor, even when the supervisor is killed with -9.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

fn stop_child(child: &mut Child, grace: Duration) {
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn supervise(dir: &Path) -> Result<ExitCode> {
    install_handlers();
    let mut state = read_state(dir)?;
    state.supervisor_pid = std::process::id();
    std::fs::write(dir.join("supervisor.pid"), state.supervisor_pid.to_string())?;
    let policy = BackoffPolicy::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut nodes: Vec<Supervised> = state
        .nodes
        .iter()
        .map(|n| Supervised {
            state: n.clone(),
            child: None,
            started: Instant::now(),
            backoff: policy.start(),
            next_start: Some(Instant::now()),
        })
        .collect();
    log(&format!("supervising {} nodes in {}", nodes.len(), dir.display()));
    let publish = |nodes: &[Supervised], state: &mut OneboxState| {
        state.nodes = nodes.iter().map(|n| n.state.clone()).collect();
        if let Err(e) = write_state(dir, state) {
            log(&format!("cannot write state.json: {e}"));
        }
    };
    while !STOP.load(Ordering::SeqCst) {
        let mut changed = false;
        if CONTROL.swap(false, Ordering::SeqCst) {
            nodes.retain_mut(|n| {
                let req = dir.join("control").join(format!("remove-{}", n.state.name));
                if std::fs::remove_file(&req).is_err() {
                    return true;
                }
                log(&format!("removing {} on request", n.state.name));
                if let Some(mut c) = n.child.take() {
                    stop_child(&mut c, Duration::from_secs(15));
                }
                changed = true;
                false
            });
            for node in take_added(dir) {
                if nodes.iter().any(|n| n.state.name == node.name) {
                    log(&format!("{} is supervised already; not added again", node.name));
                    continue;
                }
                log(&format!("adding {} on request", node.name));
                nodes.push(Supervised {
                    state: node,
                    child: None,
                    started: Instant::now(),
                    backoff: policy.start(),
                    next_start: Some(Instant::now()),
                });
                changed = true;
            }
            for n in nodes.iter_mut() {
                let req = dir.join("control").join(format!("restart-{}", n.state.name));
                if std::fs::remove_file(&req).is_ok() {
                    log(&format!("restarting {} on request", n.state.name));
                    if let Some(mut c) = n.child.take() {
                        stop_child(&mut c, Duration::from_secs(15));
                    }
                    n.next_start = Some(Instant::now());
                    n.backoff.reset();
                }
            }
        }
        for n in nodes.iter_mut() {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    n.child = None;
                    if n.started.elapsed() > Duration::from_secs(30) {
                        n.backoff.reset();
                    }
                    let delay = n.backoff.next_delay();
                    n.state.restarts += 1;
                    n.state.pid = None;
                    n.state.state = "restarting".into();
                    n.next_start = Some(Instant::now() + delay);
                    log(&format!("{} exited unexpectedly ({status}); restarting in {delay:?}", n.state.name));
                    changed = true;
                }
            }
            if n.child.is_none() && n.next_start.is_some_and(|t| Instant::now() >= t) {
                match spawn_node(&n.state) {
                    Ok(c) => {
                        n.state.pid = Some(c.id());
                        n.state.state = "running".into();
                        n.child = Some(c);
                        n.started = Instant::now();
                        n.next_start = None;
                        log(&format!("started {} (pid {})", n.state.name, n.state.pid.unwrap_or_default()));
                    }
                    Err(e) => {
                        let delay = n.backoff.next_delay();
                        n.next_start = Some(Instant::now() + delay);
                        log(&format!("cannot start {}: {e:#}; retrying in {delay:?}", n.state.name));
                    }
                }
                changed = true;
            }
        }
        if changed {
            publish(&nodes, &mut state);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    log("stopping every node");
    for n in nodes.iter_mut() {
        if let Some(c) = n.child.as_ref() {
            signal(c.id(), libc::SIGTERM);
        }
    }
    for n in nodes.iter_mut() {
        if let Some(mut c) = n.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
        n.state.pid = None;
        n.state.state = "stopped".into();
    }
    publish(&nodes, &mut state);
    let _ = std::fs::remove_file(dir.join("supervisor.pid"));
    log("stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_child_of_the_supervisor_is_signalled() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let me = std::process::id();
        let result = (ensure_child("replica1", child.id(), me), ensure_child("replica1", child.id(), me + 1));
        let _ = child.kill();
        let _ = child.wait();
        result.0.unwrap();
        let e = result.1.unwrap_err().to_string();
        assert!(e.contains("not a child") && e.contains("nothing was signalled"), "{e}");
        // A pid that is gone.
        assert!(ensure_child("replica1", child.id(), me).is_err());
        assert!(!is_supervisor(me));
    }
}
