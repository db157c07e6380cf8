//! [`MetaNode`]: one meta server's handle on the meta group — raft, the catalog, the liveness
//! view — with the operations the service and the reconciler share.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;
use wingkv_common::channel::ChannelPool;
use wingkv_common::raft::network::leader_address;
use wingkv_common::raft::read_barrier::ReadBarrier;
use wingkv_common::raft::versioned::Versioned;
use wingkv_common::sync::MutexExt;
use wingkv_common::sync::RwLockExt;
use wingkv_common::{PartitionId, WingError};
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;

use crate::catalog::{Catalog, MetaCommand, MetaValue};
use crate::config::MetaServerConfig;
use crate::liveness::Liveness;
use crate::raft_types::MetaRaft;
use crate::state_machine::SharedMeta;

/// The raft group id the meta group uses on the shared raft transport.
pub const META_GROUP: PartitionId = PartitionId { app_id: 0, partition_index: 0 };

/// How long a node that refused a creation of a partition is not a target for it.
pub const REFUSED_TARGET_FOR: Duration = Duration::from_secs(120);

/// One meta server's view of and handle on the meta group.
pub struct MetaNode {
    /// Configuration.
    pub config: Arc<MetaServerConfig>,
    /// The meta group's raft.
    pub raft: MetaRaft,
    /// The applied catalog.
    pub data: SharedMeta,
    /// Liveness and replica reports (meaningful on the leader).
    pub liveness: Liveness,
    /// Connections to replica servers and metas.
    pub pool: ChannelPool,
    /// Partitions whose repair is in flight, or finished after the reconcile loop last read the
    /// catalog (a repair is planned only on a catalog read after the last one ended).
    pub repairs: Mutex<HashSet<PartitionId>>,
    /// Partitions whose repair ended; they leave `repairs` once the catalog is read again.
    pub repairs_done: Mutex<Vec<PartitionId>>,
    /// Partitions whose group is being bootstrapped (replicas of its members being created, by
    /// a table creation or the reconcile loop): no repair is planned for them meanwhile, since
    /// a member whose creation is still on its way has lost nothing.
    pub bootstrapping: Mutex<HashSet<PartitionId>>,
    /// Partitions a repair is adding a member to because they are below their replica count
    /// (`set_replica_count` grew it): each copies a whole partition, so at most
    /// `balance_max_moves` run at once (a budget apart from the balancer's moves).
    pub adding: Mutex<HashSet<PartitionId>>,
    /// Nodes that answered a creation of a partition with "already exists" though they report no
    /// replica of it (a directory that is not open), and when: not a target for that partition
    /// for [`REFUSED_TARGET_FOR`], so that a repair or move picks another node.
    pub refused_targets: Mutex<HashMap<(PartitionId, u64), Instant>>,
    /// Latest per-replica bulk-load progress of each partition (volatile, for status queries).
    pub bulk_progress:
        Mutex<std::collections::HashMap<PartitionId, Vec<wingkv_proto::replica_admin::ReplicaBulkLoadState>>>,
    /// Finished jobs whose replicas were told to clean up.
    pub bulk_cleaned: Mutex<HashSet<u64>>,
    /// The driver's retry and stall state of each partition of a running job (volatile: a new
    /// leader starts afresh, and re-drives every partition at once).
    pub bulk_drive: Mutex<std::collections::HashMap<PartitionId, crate::bulk_driver::PartitionDrive>>,
    /// The backup driver's retry state and the primaries' last answers, per partition of each
    /// running backup (volatile).
    pub backup_drive:
        Mutex<std::collections::HashMap<crate::backup_driver::DriveKey, crate::backup_driver::BackupDrive>>,
    /// Wakes the backup driver before its next tick (a backup just started, a restore's load
    /// just ended).
    pub backup_wake: tokio::sync::Notify,
    /// Wakes the bulk-load driver before its next tick (a job just started).
    pub bulk_wake: tokio::sync::Notify,
    /// The balancer's moves in flight and its counts.
    pub balancer: crate::balancer::Progress,
    /// Manual moves on their way to the reconcile loop, which runs them.
    pub manual_moves: crate::balancer::ManualMoves,
    /// When this meta server started.
    pub started: std::time::Instant,
    /// Where this meta serves `/metrics` (set once the endpoint is bound).
    pub http_address: std::sync::OnceLock<String>,
    reads: ReadBarrier,
}

impl MetaNode {
    /// Wraps a started raft; the read barrier runs on `tracker` until `cancel`.
    pub fn new(
        config: Arc<MetaServerConfig>,
        raft: MetaRaft,
        data: SharedMeta,
        pool: ChannelPool,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let reads = ReadBarrier::start(META_GROUP, raft.clone(), Duration::from_secs(5), None, tracker, cancel);
        Self {
            liveness: Liveness::new(Duration::from_millis(config.node_timeout_ms)),
            config,
            raft,
            data,
            pool,
            repairs: Mutex::new(HashSet::new()),
            repairs_done: Mutex::new(Vec::new()),
            bootstrapping: Mutex::new(HashSet::new()),
            adding: Mutex::new(HashSet::new()),
            refused_targets: Mutex::new(HashMap::new()),
            bulk_progress: Mutex::new(Default::default()),
            bulk_cleaned: Mutex::new(HashSet::new()),
            bulk_drive: Mutex::new(Default::default()),
            backup_drive: Mutex::new(Default::default()),
            backup_wake: tokio::sync::Notify::new(),
            bulk_wake: tokio::sync::Notify::new(),
            balancer: Default::default(),
            manual_moves: Default::default(),
            started: std::time::Instant::now(),
            http_address: std::sync::OnceLock::new(),
            reads,
        }
    }

    /// Records that `node` refused a creation of `pid` ("already exists" with no replica of
    /// it reported); see [`Self::refused_targets`].
    pub fn refuse_target(&self, pid: PartitionId, node: u64) {
        let mut refused = self.refused_targets.locked();
        refused.retain(|_, at| at.elapsed() < REFUSED_TARGET_FOR);
        refused.insert((pid, node), Instant::now());
    }

    /// Whether `node` refused a creation of `pid` lately.
    pub fn refused_target(&self, pid: PartitionId, node: u64) -> bool {
        self.refused_targets.locked().get(&(pid, node)).is_some_and(|at| at.elapsed() < REFUSED_TARGET_FOR)
    }

    /// Whether this meta is the leader now: raft says so **and** a quorum acknowledged it
    /// within an election timeout. openraft 0.9 keeps a leader cut off from its peers in the
    /// `Leader` state for as long as the cut lasts; without the second condition such a deposed
    /// leader would go on answering heartbeats and driving repairs from a stale catalog.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader
            && m.millis_since_quorum_ack.is_some_and(|ms| ms < self.config.raft_election_timeout_ms)
    }

    /// The current raft term of the meta group.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The leader's address, if known.
    pub fn leader_address(&self) -> Option<String> {
        leader_address(&self.raft)
    }

    /// Fails with `NotLeader` (naming the leader) unless this meta leads.
    pub fn check_leader(&self) -> Result<(), WingError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(WingError::NotLeader { partition: "meta".into(), leader: self.leader_address() })
        }
    }

    /// Waits until the catalog may be read linearizably here.
    pub async fn read_barrier(&self) -> Result<(), WingError> {
        self.check_leader()?;
        self.reads.wait(META_GROUP).await.map_err(|e| match e {
            WingError::NotLeader { leader, .. } => WingError::NotLeader { partition: "meta".into(), leader },
            other => other,
        })
    }

    /// [`Self::read_barrier`], answering the term it confirmed leadership in: decisions taken
    /// on the catalog read after it carry that term, so replica servers can fence them.
    pub async fn read_barrier_term(&self) -> Result<u64, WingError> {
        let term = self.term();
        self.read_barrier().await?;
        if self.term() != term || !self.is_leader() {
            return Err(WingError::NotLeader { partition: "meta".into(), leader: self.leader_address() });
        }
        // What this meta knows of the nodes is of this term only (a new leadership starts with
        // every node unknown for a grace period, never dead).
        self.liveness.enter_term(term);
        Ok(term)
    }

    /// A copy of the applied catalog.
    pub fn catalog(&self) -> Catalog {
        self.data.read_locked().catalog.clone()
    }

    /// Reads the applied catalog through `f` without copying it.
    pub fn with_catalog<T>(&self, f: impl FnOnce(&Catalog) -> T) -> T {
        f(&self.data.read_locked().catalog)
    }

    /// Proposes `cmd` and answers its result once applied.
    pub async fn propose(&self, cmd: MetaCommand) -> Result<MetaValue, WingError> {
        self.check_leader()?;
        let write = self.raft.client_write(Versioned(cmd));
        let res = tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .map_err(|_| WingError::Timeout("meta change not committed within 10s".into()))?;
        match res {
            Ok(r) => r.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WingError::NotLeader { partition: "meta".into(), leader: f.leader_node.map(|n| n.addr) })
            }
            Err(RaftError::APIError(e)) => Err(WingError::Internal(format!("meta: {e}"))),
            Err(RaftError::Fatal(e)) => Err(WingError::Unavailable(format!("meta raft stopped: {e}"))),
        }
    }

    /// An admin client of replica server `node`.
    pub fn admin(&self, node: u64) -> Result<ReplicaAdminClient<Channel>, WingError> {
        let addr = self
            .with_catalog(|c| c.nodes.get(&node).map(|n| n.address.clone()))
            .ok_or_else(|| WingError::NotFound(format!("node {node} is not registered")))?;
        let channel = self
            .pool
            .get(&addr)
            .map_err(|e| WingError::InvalidArgument(format!("bad address {addr} of node {node}: {e}")))?;
        Ok(ReplicaAdminClient::new(channel))
    }

    /// The address of replica server `node`.
    pub fn node_address(&self, node: u64) -> String {
        self.with_catalog(|c| c.nodes.get(&node).map(|n| n.address.clone())).unwrap_or_default()
    }
}
