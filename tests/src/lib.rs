//! Harness for wingkv integration tests: real server processes on loopback, in temp dirs,
//! killed when the test ends (even by a panic), and helpers that wait on conditions with
//! deadlines instead of sleeping.

pub mod cli;
pub mod cluster;
pub mod faults;
pub mod linearizability;
pub mod metrics;
pub mod moto;
pub mod netns;
pub mod onebox;
pub mod raw;

use std::fs::File;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tonic::transport::Channel;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::common::ReplicaRole;
use wingkv_proto::data::data_client::DataClient;
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::{
    ChecksumResponse, CreateReplicaRequest, Member, PartitionRequest, ReplicaStatus, StatusRequest,
};

/// Path of a binary of this workspace, built into the same target dir as the test.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, or `./run.sh test`)",
        path.display()
    );
    path
}

/// Makes the child of `cmd` die with the test process, even when the test is killed.
pub fn die_with_test(cmd: &mut Command) {
    // SAFETY: prctl in the forked child before exec touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The value of environment variable `name`, or `default` when it is unset or does not parse
/// (test knobs such as the number of fault schedules).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Polls `f` until it yields `Some`, failing with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server child process (`replica-server` or `meta-server`) with its own data dir.
pub struct ServerProcess {
    /// Raft node id (for a meta-managed replica server: the id the meta assigned).
    pub node_id: u64,
    /// The directory of this node (data dir and log inside).
    pub root: PathBuf,
    /// Its gRPC address (fixed across restarts).
    pub addr: String,
    binary: &'static str,
    extra_config: String,
    /// The network namespace it runs in (see [`netns`]), if not the test's own.
    netns: Option<String>,
    /// Environment variables set for it (besides `RUST_LOG`), e.g. `FAILPOINTS`.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// A `replica-server` child process: the name tests use for that role.
pub type ReplicaProcess = ServerProcess;

/// A `meta-server` child process: the name tests use for that role.
pub type MetaProcess = ServerProcess;

/// The loopback ports servers get: below Linux's ephemeral range (32768 and up by default),
/// from which the kernel picks the ports of outgoing connections and of `:0` listeners. A
/// server keeps its port across restarts (its address is in raft memberships); a port in that
/// range could be handed to another test's process while the server is down, and the restart
/// would fail to bind it.
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A free loopback port for a server (for servers whose address others must know before they
/// start, and for every server the harness starts on loopback).
pub fn free_port() -> Result<u16> {
    let span = u32::from(SERVER_PORTS.end - SERVER_PORTS.start);
    // Parallel test processes start their search at different places.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    let seed = nanos.unwrap_or(0) ^ std::process::id().wrapping_mul(2_654_435_761);
    for i in 0..span {
        let port = SERVER_PORTS.start + (seed.wrapping_add(i) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {SERVER_PORTS:?}")
}

impl ServerProcess {
    /// Starts a standalone replica server with node id `node_id` under `root` on an ephemeral
    /// port; `extra_config` is appended to its TOML config.
    pub async fn start(node_id: u64, root: &Path, extra_config: &str) -> Result<Self> {
        let config = format!("node_id = {node_id}\n{extra_config}");
        Self::launch("replica-server", node_id, root, "127.0.0.1:0", &config, None).await
    }

    /// [`start`](Self::start) with fail points armed from its start: `failpoints` is the
    /// `FAILPOINTS` value, `name=action;…` (e.g. `apply::1.0=sleep(3000)`). The debug build of
    /// `./run.sh` compiles them in; a build without them refuses to start and says so.
    pub async fn start_with_failpoints(
        node_id: u64,
        root: &Path,
        extra_config: &str,
        failpoints: &str,
    ) -> Result<Self> {
        let mut p = Self {
            node_id,
            root: root.to_path_buf(),
            addr: "127.0.0.1:0".to_string(),
            binary: "replica-server",
            extra_config: format!("node_id = {node_id}\n{extra_config}"),
            netns: None,
            env: vec![("FAILPOINTS".to_string(), failpoints.to_string())],
            child: None,
        };
        std::fs::create_dir_all(root)?;
        p.spawn().await?;
        Ok(p)
    }

    /// Starts a replica server that registers with the metas at `metas`.
    pub async fn start_with_meta(root: &Path, metas: &[String], extra_config: &str) -> Result<Self> {
        let list: Vec<String> = metas.iter().map(|m| format!("\"{m}\"")).collect();
        let config = format!("meta_servers = [{}]\nheartbeat_interval_ms = 300\n{extra_config}", list.join(","));
        let mut p = Self::launch("replica-server", 0, root, "127.0.0.1:0", &config, None).await?;
        let id_file = p.data_dir().join("node_id");
        p.node_id = std::fs::read_to_string(&id_file)?.trim().parse()?;
        Ok(p)
    }

    /// Starts meta server `id` listening on `listen`; `extra_config` is appended to its config.
    pub async fn start_meta(id: u64, root: &Path, listen: &str, extra_config: &str) -> Result<MetaProcess> {
        Self::launch("meta-server", id, root, listen, &format!("id = {id}\n{extra_config}"), None).await
    }

    /// [`Self::start_meta`] inside network namespace `netns`.
    pub async fn start_meta_in(
        netns: &str,
        id: u64,
        root: &Path,
        listen: &str,
        extra_config: &str,
    ) -> Result<MetaProcess> {
        Self::launch("meta-server", id, root, listen, &format!("id = {id}\n{extra_config}"), Some(netns)).await
    }

    /// [`Self::start_with_meta`] inside network namespace `netns`, listening on `listen`.
    pub async fn start_with_meta_in(
        netns: &str,
        root: &Path,
        listen: &str,
        metas: &[String],
        extra_config: &str,
    ) -> Result<Self> {
        let list: Vec<String> = metas.iter().map(|m| format!("\"{m}\"")).collect();
        let config = format!("meta_servers = [{}]\nheartbeat_interval_ms = 300\n{extra_config}", list.join(","));
        let mut p = Self::launch("replica-server", 0, root, listen, &config, Some(netns)).await?;
        let id_file = p.data_dir().join("node_id");
        p.node_id = std::fs::read_to_string(&id_file)?.trim().parse()?;
        Ok(p)
    }

    async fn launch(
        binary: &'static str,
        node_id: u64,
        root: &Path,
        listen: &str,
        config: &str,
        netns: Option<&str>,
    ) -> Result<Self> {
        let mut p = Self {
            node_id,
            root: root.to_path_buf(),
            addr: listen.to_string(),
            binary,
            extra_config: config.to_string(),
            netns: netns.map(str::to_string),
            env: Vec::new(),
            child: None,
        };
        std::fs::create_dir_all(root)?;
        p.spawn().await?;
        Ok(p)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The address of its HTTP endpoint (`/metrics`, `/health`), as it wrote it on start.
    pub fn http_addr(&self) -> Result<String> {
        let path = self.data_dir().join("http.addr");
        Ok(std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?.trim().to_string())
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    async fn spawn(&mut self) -> Result<()> {
        if self.netns.is_none() && self.addr == "127.0.0.1:0" {
            self.addr = format!("127.0.0.1:{}", free_port()?);
        }
        let addr_file = self.data_dir().join("server.addr");
        let _ = std::fs::remove_file(&addr_file);
        // The HTTP endpoint's port follows the gRPC port (+10000) unless set: on loopback it is
        // any free port, which the server writes down at each start (`http_addr`).
        let http = if self.netns.is_none() && !self.extra_config.contains("http_listen") {
            "http_listen = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        let config = format!(
            "listen = \"{}\"\ndata_dir = \"{}\"\n{http}{}\n",
            self.addr,
            self.data_dir().display(),
            self.extra_config
        );
        let config_path = self.root.join(format!("{}.toml", self.binary));
        std::fs::write(&config_path, config)?;
        let log = File::options().create(true).append(true).open(self.log_path())?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the server in place: the child is the server itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin_path(self.binary));
                c
            }
            None => Command::new(bin_path(self.binary)),
        };
        cmd.arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", std::env::var("WINGKV_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_test(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("spawn {}", self.binary))?;
        self.child = Some(child);
        let addr = wait_for("the server to listen", Duration::from_secs(30), || {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let addr = std::fs::read_to_string(&addr_file).ok();
            async move {
                if let Some(status) = exited {
                    return Some(Err(anyhow!("the server exited at start: {status}")));
                }
                addr.filter(|a| !a.is_empty()).map(Ok)
            }
        })
        .await
        .and_then(|r| r)
        .with_context(|| format!("node {} (log: {})", self.node_id, self.start_failure_log()))?;
        self.addr = addr;
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` the process and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for a graceful exit; returns whether it exited by itself.
    pub async fn stop(&mut self) -> Result<bool> {
        self.stop_within(Duration::from_secs(20)).await
    }

    /// Sends SIGTERM and waits up to `limit` for a graceful exit (then kills it); returns
    /// whether it exited by itself in time.
    pub async fn stop_within(&mut self, limit: Duration) -> Result<bool> {
        let Some(mut c) = self.child.take() else {
            return Ok(true);
        };
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let res = wait_for("graceful exit", limit, || {
            let done = c.try_wait().ok().flatten();
            async move { done }
        })
        .await;
        if res.is_err() {
            let _ = c.kill();
            let _ = c.wait();
            return Ok(false);
        }
        Ok(true)
    }

    /// Starts the process again on the same address and data dir.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// Removes the node's data dir (the process must be stopped).
    pub fn wipe(&self) -> Result<()> {
        if self.child.is_some() {
            bail!("wipe of a running node");
        }
        std::fs::remove_dir_all(self.data_dir()).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(())
    }

    /// Why a start failed, from the log: the server's last `Error:` and its causes (the
    /// backtrace after them says where, not why), else the log's last lines.
    fn start_failure_log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        match lines.iter().rposition(|l| l.starts_with("Error:")) {
            Some(at) => {
                let cause: Vec<&str> =
                    lines[at..].iter().take(20).take_while(|l| !l.contains("Stack backtrace")).copied().collect();
                cause.join("\n")
            }
            None => self.tail_log(30),
        }
    }

    /// The last `n` lines of the server's log.
    pub fn tail_log(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A data-service client.
    pub async fn data(&self) -> Result<DataClient<Channel>> {
        Ok(DataClient::new(channel(&self.addr)?))
    }

    /// An admin client.
    pub async fn admin(&self) -> Result<ReplicaAdminClient<Channel>> {
        Ok(ReplicaAdminClient::new(channel(&self.addr)?))
    }

    /// This node's status of `partition`, or `None` when it does not answer.
    pub async fn status(&self, partition: PartitionId) -> Option<ReplicaStatus> {
        let mut admin = self.admin().await.ok()?;
        let resp = admin.status(StatusRequest { partition: Some(partition.to_proto()) }).await.ok()?;
        resp.into_inner().replicas.into_iter().next()
    }

    /// This node's checksum of `partition`.
    pub async fn checksum(&self, partition: PartitionId) -> Result<ChecksumResponse> {
        let mut admin = self.admin().await?;
        Ok(admin
            .checksum(PartitionRequest { partition: Some(partition.to_proto()), ..Default::default() })
            .await?
            .into_inner())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A lazily connected channel to `addr`.
pub fn channel(addr: &str) -> Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(15))
        .connect_lazy())
}

/// The members list of `nodes`.
pub fn members(nodes: &[&ReplicaProcess]) -> Vec<Member> {
    nodes.iter().map(|n| Member { node_id: n.node_id, address: n.addr.clone() }).collect()
}

/// Creates `partition` on every node of `nodes`, each initialized with all of them as voters
/// (a replica without a membership does not vote: see `Replica::check_may_vote`); node
/// `bootstrap` is created first.
pub async fn create_group(nodes: &[&ReplicaProcess], bootstrap: usize, partition: PartitionId) -> Result<()> {
    let all = members(nodes);
    let order = std::iter::once(bootstrap).chain((0..nodes.len()).filter(|i| *i != bootstrap));
    for i in order {
        let n = nodes.get(i).with_context(|| format!("no node {i} to create {partition} on"))?;
        let req = CreateReplicaRequest {
            partition: Some(partition.to_proto()),
            initial_members: all.clone(),
            ..Default::default()
        };
        n.admin()
            .await?
            .create_replica(req)
            .await
            .with_context(|| format!("create {partition} on node {}", n.node_id))?;
    }
    Ok(())
}

/// Waits until one of `nodes` is the primary of `partition` and every other live node agrees;
/// returns its index in `nodes`.
pub async fn wait_leader(nodes: &[&ReplicaProcess], partition: PartitionId, timeout: Duration) -> Result<usize> {
    wait_for(&format!("a primary of {partition}"), timeout, || async {
        let mut leader = None;
        for (i, n) in nodes.iter().enumerate() {
            if let Some(s) = n.status(partition).await {
                if s.role == ReplicaRole::RolePrimary as i32 {
                    leader = Some((i, n.node_id));
                }
            }
        }
        let (i, id) = leader?;
        for n in nodes {
            if let Some(s) = n.status(partition).await {
                if s.role != ReplicaRole::RolePrimary as i32 && s.leader_id != Some(id) {
                    return None;
                }
            }
        }
        Some(i)
    })
    .await
}

/// A hash key (with an empty sort key) that a table of `partitions` partitions puts in
/// partition `pidx` (found by counting up).
pub fn hash_key_in(pidx: u32, partitions: u32) -> Result<String> {
    (0..10_000)
        .map(|i| format!("user{i}"))
        .find(|hk| wingkv_common::hash::partition_index(hk.as_bytes(), b"", partitions) == pidx)
        .with_context(|| format!("no hash key of partition {pidx} of {partitions} among user0..user9999"))
}

/// Turns a gRPC status into the wingkv error it carries.
pub fn wing_error(status: &tonic::Status) -> WingError {
    WingError::from_status(status)
}
