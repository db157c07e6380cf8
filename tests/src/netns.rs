//! Test hosts in Linux network namespaces, for faults that cross a network: each host is a
//! namespace with its own address on a bridge the harness creates (in a private range used only
//! inside these namespaces), and partitions are `iptables` DROP rules inside the namespaces —
//! symmetric (both directions) or one-way. The test process reaches every host through the
//! bridge.
//!
//! Needs root with `ip` (iproute2) and `iptables`; `./run.sh test` installs both. If the hosts
//! cannot be made, [`Hosts::create`] fails with a message that names what is missing: a test
//! that needs them never skips silently. Everything made is removed on drop, even after a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cluster::{admin_client, alive_nodes, META_CONFIG, REPLICA_CONFIG};
use crate::faults::Fault;
use crate::{wait_for, MetaProcess, ReplicaProcess};
use wingkv_client::Admin;

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}` (is iproute2/iptables installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// A set of hosts (network namespaces) on one bridge.
pub struct Hosts {
    tag: String,
    subnet: u8,
    count: usize,
    bridge: String,
    forward_rule: bool,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Hosts {
    /// Makes `count` hosts (at most 200).
    pub fn create(count: usize) -> Result<Self> {
        if unsafe { libc::geteuid() } != 0 {
            bail!("network-namespace test hosts need root (CI and ./run.sh test run as root)");
        }
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
                bail!("`{tool}` is missing: install iproute2 and iptables (./run.sh test does)");
            }
        }
        // A subnet and names of its own: tests run in parallel processes.
        let seq = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id().wrapping_mul(7).wrapping_add(seq)) % 200;
        let mut hosts = None;
        for k in 0..200u32 {
            let subnet = ((id + k) % 200 + 20) as u8;
            let bridge = format!("wkbr{subnet}");
            // Creating the bridge claims the subnet: the kernel refuses a second link of the
            // name, so two test processes never share one. (Checking that it is absent first
            // and creating it after let two of them pick the same subnet.)
            if run(&["ip", "link", "add", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            hosts = Some(Self { tag: format!("wk{subnet}"), subnet, count, bridge, forward_rule: false });
            break;
        }
        let mut hosts = hosts.ok_or_else(|| anyhow!("no free test subnet"))?;
        hosts.build().context("making the test hosts")?;
        Ok(hosts)
    }

    fn build(&mut self) -> Result<()> {
        let br = self.bridge.clone();
        // Leftovers of a test run that was killed before it could clean up (its bridge was gone
        // and this run holds it now, so no live run uses this subnet).
        for i in 0..self.count {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
            // A namespace a leaked process still lives in outlives its name: its veth too.
            let _ = run(&["ip", "link", "del", &format!("{}v{i}", self.tag)]);
        }
        while run(&["iptables", "-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]).is_ok() {}
        run(&["ip", "addr", "add", &format!("10.201.{}.1/24", self.subnet), "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        // Bridged frames may pass the root namespace's FORWARD chain (br_netfilter).
        run(&["iptables", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"])?;
        self.forward_rule = true;
        for i in 0..self.count {
            let ns = self.ns(i);
            let veth = format!("{}v{i}", self.tag);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["ip", "link", "set", &veth, "master", &br, "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The namespace name of host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    /// The address of host `i`.
    pub fn ip(&self, i: usize) -> String {
        format!("10.201.{}.{}", self.subnet, 10 + i)
    }

    fn iptables(&self, host: usize, args: &[&str]) -> Result<()> {
        let ns = self.ns(host);
        let mut all = vec!["ip", "netns", "exec", &ns, "iptables"];
        all.extend_from_slice(args);
        run(&all).map(|_| ())
    }

    /// Drops every packet `from` sends to `to` (one way: `to` still reaches `from`).
    pub fn cut_one_way(&self, from: usize, to: usize) -> Result<()> {
        let src = self.ip(from);
        self.iptables(to, &["-A", "INPUT", "-s", &src, "-j", "DROP"])
    }

    /// Lets what `from` sends reach `to` again (undoes [`Self::cut_one_way`]).
    pub fn uncut_one_way(&self, from: usize, to: usize) -> Result<()> {
        let src = self.ip(from);
        self.iptables(to, &["-D", "INPUT", "-s", &src, "-j", "DROP"])
    }

    /// Undoes [`Self::cut`].
    pub fn uncut(&self, a: usize, b: usize) -> Result<()> {
        self.uncut_one_way(a, b)?;
        self.uncut_one_way(b, a)
    }

    /// Cuts `a` and `b` apart, both ways.
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Cuts `host` off from every host in `others`, both ways.
    pub fn isolate(&self, host: usize, others: impl IntoIterator<Item = usize>) -> Result<()> {
        for o in others {
            if o != host {
                self.cut(host, o)?;
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<()> {
        for i in 0..self.count {
            self.iptables(i, &["-F", "INPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.count {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        if self.forward_rule {
            let _ = run(&["iptables", "-D", "FORWARD", "-i", &self.bridge, "-o", &self.bridge, "-j", "ACCEPT"]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

/// Port every meta listens on (each host has an address of its own).
pub const META_PORT: u16 = 34601;
/// Port every replica server listens on.
pub const REPLICA_PORT: u16 = 34801;

/// A cluster with every server on a host of its own: metas on hosts `0..metas`, replica servers
/// on the hosts after them. Dropped in order: processes first, then the hosts.
pub struct NetCluster {
    /// The meta servers (host `i` for meta `i`).
    pub metas: Vec<MetaProcess>,
    /// The replica servers (host `metas.len() + i` for replica `i`).
    pub replicas: Vec<ReplicaProcess>,
    /// An admin client of every meta, from the test's own namespace.
    pub admin: Admin,
    /// The hosts.
    pub hosts: Hosts,
    _tmp: tempfile::TempDir,
}

impl NetCluster {
    /// Starts `metas` metas and `replicas` replica servers, each on its own host; `meta_extra`
    /// and `replica_extra` are appended to their configs. Returns once every replica server is
    /// alive.
    pub async fn start(metas: usize, replicas: usize, meta_extra: &str, replica_extra: &str) -> Result<Self> {
        let hosts = Hosts::create(metas + replicas)?;
        let tmp = tempfile::tempdir()?;
        let addrs: Vec<String> = (0..metas).map(|i| format!("{}:{META_PORT}", hosts.ip(i))).collect();
        let peers: String =
            addrs.iter().enumerate().map(|(i, a)| format!("[[peers]]\nid = {}\naddress = \"{a}\"\n", i + 1)).collect();
        let mut meta_procs = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let dir = tmp.path().join(format!("meta{}", i + 1));
            let config = format!("{META_CONFIG}{meta_extra}\n{peers}");
            meta_procs.push(MetaProcess::start_meta_in(&hosts.ns(i), i as u64 + 1, &dir, a, &config).await?);
        }
        let admin = admin_client(&addrs)?;
        wait_for("a meta leader", Duration::from_secs(30), || async { admin.cluster_info().await.ok() }).await?;
        let mut replica_procs = Vec::new();
        for i in 0..replicas {
            let host = metas + i;
            let dir = tmp.path().join(format!("replica{}", i + 1));
            let listen = format!("{}:{REPLICA_PORT}", hosts.ip(host));
            let config = format!("{REPLICA_CONFIG}{replica_extra}");
            replica_procs
                .push(ReplicaProcess::start_with_meta_in(&hosts.ns(host), &dir, &listen, &addrs, &config).await?);
        }
        let c = Self { metas: meta_procs, replicas: replica_procs, admin, hosts, _tmp: tmp };
        wait_for("every replica server alive", Duration::from_secs(60), || async {
            (alive_nodes(&c.admin).await.ok()?.len() == replicas).then_some(())
        })
        .await?;
        Ok(c)
    }

    /// The meta addresses.
    pub fn meta_addrs(&self) -> Vec<String> {
        self.metas.iter().map(|m| m.addr.clone()).collect()
    }

    /// The host of replica server `i`.
    pub fn replica_host(&self, i: usize) -> usize {
        self.metas.len() + i
    }

    /// The index of the meta that is leader now by its own account (`server_info`), if one is.
    pub async fn meta_leader(&self) -> Option<usize> {
        for (i, m) in self.metas.iter().enumerate() {
            let r = self.admin.server_info(&m.addr, Duration::from_secs(1)).await;
            if r.is_ok_and(|s| s.role == "leader") {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a meta other than `not` leads with a quorum (it answers `cluster_info`).
    pub async fn wait_new_meta_leader(&self, not: usize, timeout: Duration) -> Result<usize> {
        let others: BTreeSet<usize> = (0..self.metas.len()).filter(|i| *i != not).collect();
        wait_for("a new meta leader", timeout, || async {
            for &i in &others {
                if self.admin.cluster_info_at(&self.metas[i].addr, Duration::from_secs(1)).await.is_ok() {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    /// An admin client that talks to meta `i` only.
    pub fn meta_at(&self, i: usize) -> Result<Admin> {
        admin_client(std::slice::from_ref(&self.metas[i].addr))
    }

    /// Where the cluster's files are.
    pub fn root(&self) -> &Path {
        self._tmp.path()
    }

    /// The host and process of node `name` (`metaN` or `replicaN`, from 1).
    fn node(&mut self, name: &str) -> Result<(usize, &mut ReplicaProcess)> {
        let parse = |prefix: &str| name.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0);
        if let Some(i) = parse("meta") {
            let p = self.metas.get_mut(i - 1).with_context(|| format!("no node {name}"))?;
            return Ok((i - 1, p));
        }
        let i = parse("replica").with_context(|| format!("no node {name}"))?;
        let host = self.replica_host(i - 1);
        let p = self.replicas.get_mut(i - 1).with_context(|| format!("no node {name}"))?;
        Ok((host, p))
    }

    fn host_of(&mut self, name: &str) -> Result<usize> {
        Ok(self.node(name)?.0)
    }

    /// Injects `fault` (the primary of [`Fault::IsolatePrimary`] is one of `table`'s) and
    /// returns once it is over: the cut healed, the paused node resumed, the killed one started.
    pub async fn inject(&mut self, fault: &Fault, table: &str) -> Result<()> {
        match fault {
            Fault::Kill(n) => {
                let (_, p) = self.node(n)?;
                p.kill();
                // Down for a moment, as a supervisor would leave it.
                tokio::time::sleep(Duration::from_millis(500)).await;
                p.restart().await
            }
            Fault::Restart(n) => {
                let (_, p) = self.node(n)?;
                p.stop().await?;
                p.restart().await
            }
            Fault::Pause(n, d) => {
                let (_, p) = self.node(n)?;
                let pid = p.pid().with_context(|| format!("{n} is not running"))? as i32;
                crate::faults::pause(pid, *d).await;
                Ok(())
            }
            Fault::Isolate(nodes, d) => {
                let inside: Vec<usize> = nodes.iter().map(|n| self.host_of(n)).collect::<Result<_>>()?;
                let all = self.metas.len() + self.replicas.len();
                for &h in &inside {
                    self.hosts.isolate(h, (0..all).filter(|o| !inside.contains(o)))?;
                }
                self.hold_and_heal(*d).await
            }
            Fault::OneWay(a, b, d) => {
                let (a, b) = (self.host_of(a)?, self.host_of(b)?);
                self.hosts.cut_one_way(a, b)?;
                self.hold_and_heal(*d).await
            }
            Fault::IsolateMetaLeader(d) => {
                let Some(leader) = self.meta_leader().await else { return Ok(()) };
                self.hosts.isolate(leader, 0..self.metas.len())?;
                self.hold_and_heal(*d).await
            }
            Fault::Action(a) => anyhow::bail!("the multi-host harness cannot run the action '{a}'"),
            Fault::IsolatePrimary(d) => {
                let Ok(cfg) = self.admin.query_table(table).await else { return Ok(()) };
                let primaries: Vec<u64> =
                    cfg.partitions.iter().filter_map(|p| p.primary.as_ref().map(|pr| pr.node_id)).collect();
                let Some(node) = primaries.first() else { return Ok(()) };
                let Some(i) = self.replicas.iter().position(|r| r.node_id == *node) else { return Ok(()) };
                let host = self.replica_host(i);
                self.hosts.isolate(host, (0..self.replicas.len()).map(|r| self.metas.len() + r))?;
                self.hold_and_heal(*d).await
            }
        }
    }

    async fn hold_and_heal(&self, d: Duration) -> Result<()> {
        tokio::time::sleep(d).await;
        self.hosts.heal()
    }

    /// The gRPC addresses of the replica servers (fixed across restarts).
    pub fn replica_addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.clone()).collect()
    }
}

/// Leaders seen per raft group and term, sampled from every server's own raft state while a
/// schedule runs: two leaders in one term of one group is a safety violation.
#[derive(Debug, Default)]
pub struct LeaderSamples {
    /// `(group, term)` -> the nodes that said they led it. The meta group is `"meta"`.
    pub leaders: BTreeMap<(String, u64), BTreeSet<u64>>,
    /// Samples taken.
    pub samples: u64,
}

impl LeaderSamples {
    /// Every `(group, term)` with more than one leader.
    pub fn double_leaders(&self) -> Vec<String> {
        self.leaders
            .iter()
            .filter(|(_, l)| l.len() > 1)
            .map(|((g, t), l)| format!("group {g} term {t}: leaders {l:?}"))
            .collect()
    }
}

/// Samples the raft state of every meta (`metas`) and replica server (`replicas`) until `stop`.
pub async fn sample_leaders(
    metas: Vec<String>,
    replicas: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> LeaderSamples {
    use wingkv_proto::common::ReplicaRole;
    let mut out = LeaderSamples::default();
    let admin = admin_client(&metas).ok();
    while !stop.load(Ordering::Relaxed) {
        for addr in &replicas {
            let Ok(ch) = crate::channel(addr) else { continue };
            let mut admin = wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient::new(ch);
            let mut req = tonic::Request::new(wingkv_proto::replica_admin::StatusRequest { partition: None });
            req.set_timeout(Duration::from_millis(500));
            if let Ok(s) = admin.status(req).await {
                let s = s.into_inner();
                for r in s.replicas.iter().filter(|r| r.role == ReplicaRole::RolePrimary as i32) {
                    let group = r.partition.map(|p| format!("{}.{}", p.app_id, p.partition_index)).unwrap_or_default();
                    out.leaders.entry((group, r.term)).or_default().insert(s.node_id);
                }
            }
        }
        if let Some(admin) = &admin {
            for addr in &metas {
                if let Ok(s) = admin.server_info(addr, Duration::from_millis(500)).await {
                    if s.role == "leader" {
                        out.leaders.entry(("meta".into(), s.term)).or_default().insert(s.meta_id);
                    }
                }
            }
        }
        out.samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for p in self.replicas.iter_mut().chain(self.metas.iter_mut()) {
            p.kill();
        }
        // For a post-mortem: WINGKV_KEEP_TEST_DIR=1 keeps the servers' data and logs.
        if std::env::var_os("WINGKV_KEEP_TEST_DIR").is_some() {
            let kept = std::mem::replace(&mut self._tmp, tempfile::TempDir::new().expect("temp dir")).keep();
            eprintln!("test cluster files kept in {}", kept.display());
        }
    }
}
