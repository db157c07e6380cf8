//! What a onebox is made of: where its files live under DIR, which nodes it has on which ports,
//! their config files, and the state file the supervisor keeps up to date.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Most meta servers in a onebox (a raft group; more would only slow elections down).
pub const MAX_METAS: u16 = 7;
/// Most replica servers in a onebox.
pub const MAX_REPLICAS: u16 = 64;
/// Port of meta1 unless told otherwise (as Pegasus's onebox).
pub const DEFAULT_BASE_PORT_META: u16 = 34601;
/// Port of replica1 unless told otherwise (as Pegasus's onebox).
pub const DEFAULT_BASE_PORT_REPLICA: u16 = 34801;
/// Meta servers unless told otherwise.
pub const DEFAULT_METAS: u16 = 1;
/// Replica servers unless told otherwise.
pub const DEFAULT_REPLICAS: u16 = 3;
/// The onebox's cluster name (DESIGN §5: bulk-load paths of a onebox use it).
pub const CLUSTER_NAME: &str = "onebox";
/// Liveness timeout of the meta (DESIGN §4 default).
const NODE_TIMEOUT_MS: u64 = 10_000;
/// Heartbeat period of the replica servers (DESIGN §4 default).
const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// The file a server writes once it serves (`wingkv_common::net::ADDRESS_FILE`).
pub const ADDRESS_FILE: &str = wingkv_common::net::ADDRESS_FILE;

/// The files of one onebox under its directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The onebox in `dir` (which need not exist yet).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The onebox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The nodes and their processes, as the supervisor last wrote them.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The supervisor's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }

    /// Held (`flock`) by the running supervisor for its whole life.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("supervisor.lock")
    }

    /// The supervisor's log (its stdout and stderr).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    /// Where requests to the supervisor are dropped.
    pub fn control_dir(&self) -> PathBuf {
        self.dir.join("control")
    }

    /// The file that asks the supervisor for a graceful restart of `node`.
    pub fn restart_request(&self, node: &str) -> PathBuf {
        self.control_dir().join(format!("{RESTART_PREFIX}{node}"))
    }

    /// Reads the state file; an error when there is none.
    pub fn read_state(&self) -> Result<OneboxState> {
        self.read_state_opt()?.ok_or_else(|| {
            anyhow!(
                "no onebox in {} (no state.json); start one with `wingkv onebox start --dir {}`",
                self.dir.display(),
                self.dir.display()
            )
        })
    }

    /// Reads the state file; `None` when there is none (no onebox was ever started here).
    pub fn read_state_opt(&self) -> Result<Option<OneboxState>> {
        let path = self.state_file();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .with_context(|| format!("{} is not a onebox state file", path.display()))
    }

    /// Replaces the state file at once (readers see the old or the new one, never half).
    pub fn write_state(&self, state: &OneboxState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state).context("encode the onebox state")?;
        write_atomic(&self.state_file(), &json)
    }
}

/// Name prefix of the restart requests in the control dir.
pub const RESTART_PREFIX: &str = "restart-";

/// Writes `path` through a temporary file and a rename, so nobody reads it half written.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A `meta-server`.
    Meta,
    /// A `replica-server`.
    Replica,
}

impl NodeRole {
    /// The server binary of this role.
    pub fn binary(self) -> &'static str {
        match self {
            NodeRole::Meta => "meta-server",
            NodeRole::Replica => "replica-server",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Meta => "meta",
            NodeRole::Replica => "replica",
        })
    }
}

/// Where a node is in its life, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// No process, and none is coming (not started yet, or the onebox is stopped).
    Stopped,
    /// The process runs.
    Running,
    /// The process exited or is being restarted; a new one is coming.
    Restarting,
    /// The onebox is shutting down; the process was asked to exit.
    Stopping,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Stopped => "stopped",
            RunState::Running => "running",
            RunState::Restarting => "restarting",
            RunState::Stopping => "stopping",
        })
    }
}

/// One node of the onebox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    /// `meta1..metaM`, `replica1..replicaN`.
    pub name: String,
    /// What it runs.
    pub role: NodeRole,
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
    /// `127.0.0.1:PORT`, the address the others and the clients use.
    pub address: String,
    /// The node's directory (config, data, log).
    pub dir: PathBuf,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// The server's config file.
    pub config: PathBuf,
    /// The server's stdout and stderr.
    pub log: PathBuf,
    /// Pid of the current process, while there is one.
    pub pid: Option<u32>,
    /// Where the node is in its life.
    pub state: RunState,
    /// Unexpected exits (crashes, kills) the supervisor restarted it after.
    pub restarts: u32,
    /// Restarts asked for with `wingkv onebox restart`.
    pub graceful_restarts: u32,
    /// When the current process started (Unix milliseconds).
    pub started_at_ms: Option<u64>,
    /// How the previous process ended, when one did.
    pub last_exit: Option<String>,
}

impl NodeState {
    /// The file the server writes once it serves.
    pub fn address_file(&self) -> PathBuf {
        self.data_dir.join(ADDRESS_FILE)
    }

    /// Whether the current process has written its address file (so it serves).
    pub fn serving(&self) -> bool {
        self.address_file().exists()
    }
}

/// The state file of a onebox (`DIR/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OneboxState {
    /// Cluster name the metas report.
    pub cluster_name: String,
    /// Pid of the supervisor that wrote this, while it runs.
    pub supervisor_pid: Option<u32>,
    /// The meta servers' addresses (what a client connects to).
    pub metas: Vec<String>,
    /// Every node, metas first.
    pub nodes: Vec<NodeState>,
}

impl OneboxState {
    /// The node named `name`, or an error naming the nodes there are.
    pub fn node(&self, name: &str) -> Result<&NodeState> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            anyhow!(
                "no node named '{name}' in this onebox (nodes: {})",
                self.node_names().join(", ")
            )
        })
    }

    /// Every node's name, in order.
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// The shape of the cluster this state describes, if it is one `start` could have written.
    pub fn plan(&self) -> Option<ClusterPlan> {
        let first_port = |role: NodeRole| {
            self.nodes
                .iter()
                .find(|n| n.role == role)
                .map(|n| n.port)
        };
        let count = |role: NodeRole| self.nodes.iter().filter(|n| n.role == role).count();
        Some(ClusterPlan {
            metas: u16::try_from(count(NodeRole::Meta)).ok()?,
            replicas: u16::try_from(count(NodeRole::Replica)).ok()?,
            base_port_meta: first_port(NodeRole::Meta)?,
            base_port_replica: first_port(NodeRole::Replica)?,
        })
    }
}

/// The shape of a onebox: how many servers of each role, on which ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterPlan {
    /// Meta servers (`meta1..`).
    pub metas: u16,
    /// Replica servers (`replica1..`).
    pub replicas: u16,
    /// Port of meta1; the others follow.
    pub base_port_meta: u16,
    /// Port of replica1; the others follow.
    pub base_port_replica: u16,
}

impl ClusterPlan {
    /// Checks the counts and that every port exists and no two nodes share one.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_METAS).contains(&self.metas) {
            bail!("--metas must be 1..={MAX_METAS} (got {})", self.metas);
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            bail!("--replicas must be 1..={MAX_REPLICAS} (got {})", self.replicas);
        }
        let range = |base: u16, n: u16, what: &str| -> Result<(u32, u32)> {
            let last = u32::from(base) + u32::from(n) - 1;
            if base == 0 || last > u32::from(u16::MAX) {
                bail!("{what} ports {base}..={last} are not all valid TCP ports");
            }
            Ok((u32::from(base), last))
        };
        let (m0, m1) = range(self.base_port_meta, self.metas, "meta")?;
        let (r0, r1) = range(self.base_port_replica, self.replicas, "replica")?;
        if m0 <= r1 && r0 <= m1 {
            bail!(
                "meta ports {m0}..={m1} overlap replica ports {r0}..={r1}; choose other base ports"
            );
        }
        Ok(())
    }

    /// The meta servers' addresses.
    pub fn meta_addrs(&self) -> Vec<String> {
        (0..self.metas)
            .map(|i| format!("127.0.0.1:{}", self.base_port_meta + i))
            .collect()
    }

    /// Every node of this plan under `dir` (an absolute path), not started.
    pub fn nodes(&self, dir: &Path) -> Vec<NodeState> {
        let node = |role: NodeRole, name: String, port: u16| {
            let ndir = dir.join(&name);
            NodeState {
                address: format!("127.0.0.1:{port}"),
                data_dir: ndir.join("data"),
                config: ndir.join("config.toml"),
                log: ndir.join("server.log"),
                dir: ndir,
                name,
                role,
                port,
                pid: None,
                state: RunState::Stopped,
                restarts: 0,
                graceful_restarts: 0,
                started_at_ms: None,
                last_exit: None,
            }
        };
        let metas = (0..self.metas).map(|i| {
            node(
                NodeRole::Meta,
                format!("meta{}", i + 1),
                self.base_port_meta + i,
            )
        });
        let replicas = (0..self.replicas).map(|i| {
            node(
                NodeRole::Replica,
                format!("replica{}", i + 1),
                self.base_port_replica + i,
            )
        });
        metas.chain(replicas).collect()
    }

    /// Creates every node's directory and writes its config file.
    pub fn write_configs(&self, nodes: &[NodeState]) -> Result<()> {
        let meta_addrs = self.meta_addrs();
        // Every meta gets the same member list; a group of one needs none.
        let peers: Vec<PeerEntry> = if self.metas > 1 {
            meta_addrs
                .iter()
                .zip(1u64..)
                .map(|(address, id)| PeerEntry { id, address })
                .collect()
        } else {
            Vec::new()
        };
        let mut meta_id = 0u64;
        for node in nodes {
            std::fs::create_dir_all(&node.data_dir)
                .with_context(|| format!("cannot create {}", node.data_dir.display()))?;
            let data_dir = node.data_dir.to_str().ok_or_else(|| {
                anyhow!(
                    "{} is not valid UTF-8, which a TOML config cannot hold",
                    node.data_dir.display()
                )
            })?;
            let toml = match node.role {
                NodeRole::Meta => {
                    meta_id += 1;
                    toml::to_string(&MetaConfigFile {
                        id: meta_id,
                        listen: &node.address,
                        data_dir,
                        cluster_name: CLUSTER_NAME,
                        node_timeout_ms: NODE_TIMEOUT_MS,
                        peers: &peers,
                    })
                }
                NodeRole::Replica => toml::to_string(&ReplicaConfigFile {
                    listen: &node.address,
                    data_dir,
                    meta_servers: &meta_addrs,
                    heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
                }),
            }
            .with_context(|| format!("encode the config of {}", node.name))?;
            let text = format!(
                "# {} of onebox node {}; written by `wingkv onebox start` at every start.\n{toml}",
                node.role.binary(),
                node.name
            );
            write_atomic(&node.config, text.as_bytes())?;
        }
        Ok(())
    }
}

/// `meta-server --config` file (only keys the meta server knows: it denies unknown ones).
#[derive(Serialize)]
struct MetaConfigFile<'a> {
    id: u64,
    listen: &'a str,
    data_dir: &'a str,
    cluster_name: &'a str,
    node_timeout_ms: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    peers: &'a [PeerEntry<'a>],
}

/// One `[[peers]]` table of a meta config.
#[derive(Serialize)]
struct PeerEntry<'a> {
    id: u64,
    address: &'a str,
}

/// `replica-server --config` file.
#[derive(Serialize)]
struct ReplicaConfigFile<'a> {
    listen: &'a str,
    data_dir: &'a str,
    meta_servers: &'a [String],
    heartbeat_interval_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(metas: u16, replicas: u16) -> ClusterPlan {
        ClusterPlan {
            metas,
            replicas,
            base_port_meta: DEFAULT_BASE_PORT_META,
            base_port_replica: DEFAULT_BASE_PORT_REPLICA,
        }
    }

    #[test]
    fn nodes_are_named_and_numbered_in_order() {
        let nodes = plan(2, 3).nodes(Path::new("/ob"));
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["meta1", "meta2", "replica1", "replica2", "replica3"]
        );
        assert_eq!(nodes[1].port, 34602);
        assert_eq!(nodes[4].address, "127.0.0.1:34803");
        assert_eq!(nodes[4].data_dir, Path::new("/ob/replica3/data"));
        let state = OneboxState {
            cluster_name: CLUSTER_NAME.into(),
            supervisor_pid: None,
            metas: plan(2, 3).meta_addrs(),
            nodes,
        };
        assert_eq!(state.plan(), Some(plan(2, 3)));
        let err = state.node("replica9").unwrap_err().to_string();
        assert!(err.contains("meta1, meta2, replica1, replica2, replica3"), "{err}");
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(plan(1, 3).validate().is_ok());
        assert!(plan(0, 3).validate().is_err());
        assert!(plan(1, 0).validate().is_err());
        let overlap = ClusterPlan {
            base_port_replica: 34600,
            ..plan(3, 3)
        };
        assert!(overlap.validate().unwrap_err().to_string().contains("overlap"));
        let too_high = ClusterPlan {
            base_port_replica: 65534,
            ..plan(1, 3)
        };
        assert!(too_high.validate().is_err());
    }

    #[test]
    fn configs_carry_only_the_keys_the_servers_know() {
        let tmp = tempfile::tempdir().unwrap();
        let p = plan(3, 1);
        let nodes = p.nodes(tmp.path());
        p.write_configs(&nodes).unwrap();
        let meta2: toml::Value =
            toml::from_str(&std::fs::read_to_string(&nodes[1].config).unwrap()).unwrap();
        assert_eq!(meta2["id"].as_integer(), Some(2));
        assert_eq!(meta2["listen"].as_str(), Some("127.0.0.1:34602"));
        assert_eq!(meta2["cluster_name"].as_str(), Some("onebox"));
        let peers = meta2["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[2]["address"].as_str(), Some("127.0.0.1:34603"));
        let replica: toml::Value =
            toml::from_str(&std::fs::read_to_string(&nodes[3].config).unwrap()).unwrap();
        assert_eq!(replica["meta_servers"].as_array().map(|a| a.len()), Some(3));
        assert_eq!(
            replica["data_dir"].as_str().map(PathBuf::from),
            Some(nodes[3].data_dir.clone())
        );
        let single = plan(1, 1);
        let nodes = single.nodes(tmp.path());
        single.write_configs(&nodes).unwrap();
        let meta1: toml::Value =
            toml::from_str(&std::fs::read_to_string(&nodes[0].config).unwrap()).unwrap();
        assert!(meta1.get("peers").is_none(), "a group of one has no peers");
    }
}
