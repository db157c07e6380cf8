//! What a scrape of a meta server's `/metrics` reads: the meta group's raft state, the catalog
//! (tables, nodes, partition health) and the progress of every bulk-load job. Liveness and the
//! bulk-load driver's state are only kept by the leader: on a follower those read empty.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wingkv_common::metrics::{MetricsSource, Scrape};
use wingkv_common::sync::MutexExt;
use wingkv_common::PartitionId;

use crate::liveness::NodeState;
use crate::node::MetaNode;

/// Reads a meta server's state for `/metrics`.
pub struct MetaMetricsSource {
    node: Arc<MetaNode>,
}

impl MetaMetricsSource {
    /// A source over `node`.
    pub fn new(node: Arc<MetaNode>) -> Self {
        Self { node }
    }
}

impl MetricsSource for MetaMetricsSource {
    fn collect(&self, out: &mut Scrape) {
        let m = self.node.raft.metrics().borrow().clone();
        let leader = self.node.is_leader();
        out.gauge("wingkv_meta_raft_term", "Raft term of the meta group", &[], m.current_term as f64);
        out.gauge(
            "wingkv_meta_raft_leader_id",
            "Meta id of the meta leader (0: none)",
            &[],
            m.current_leader.unwrap_or(0) as f64,
        );
        out.gauge("wingkv_meta_is_leader", "1 when this meta is the leader", &[], f64::from(u8::from(leader)));
        let last = m.last_log_index.unwrap_or(0);
        out.gauge("wingkv_meta_raft_last_log_index", "Last raft log index of the meta group here", &[], last as f64);
        out.gauge(
            "wingkv_meta_raft_applied_index",
            "Last meta raft log index applied to the catalog",
            &[],
            m.last_applied.map(|l| l.index).unwrap_or(0) as f64,
        );
        let purged = m.purged.map(|l| l.index).unwrap_or(0);
        out.gauge(
            "wingkv_meta_raft_log_entries",
            "Meta raft log entries kept",
            &[],
            last.saturating_sub(purged) as f64,
        );

        let catalog = self.node.catalog();
        let live: Vec<_> = catalog.apps.values().filter(|a| !a.is_dropped()).collect();
        out.gauge("wingkv_meta_tables", "Tables, dropped ones not counted", &[], live.len() as f64);
        out.gauge(
            "wingkv_meta_partitions",
            "Partitions of the tables",
            &[],
            live.iter().map(|a| a.partition_count as u64).sum::<u64>() as f64,
        );
        for state in [NodeState::Alive, NodeState::Dead, NodeState::Unknown] {
            let n = catalog.nodes.keys().filter(|id| self.node.liveness.state(**id) == state).count();
            out.gauge(
                "wingkv_meta_nodes",
                "Replica servers by liveness (as the leader sees them)",
                &[("state", state.as_str())],
                n as f64,
            );
        }
        if leader {
            // A partition is unhealthy while it has fewer members than its table asks for, or
            // a member that is not alive.
            for app in &live {
                let unhealthy = app
                    .partitions
                    .iter()
                    .filter(|p| {
                        p.members.len() < app.replica_count as usize
                            || p.members.iter().any(|n| self.node.liveness.state(*n) != NodeState::Alive)
                    })
                    .count();
                out.gauge(
                    "wingkv_meta_unhealthy_partitions",
                    "Partitions short of members or with a member not alive",
                    &[("table", app.name.as_str())],
                    unhealthy as f64,
                );
            }
        }

        if leader {
            let (replica_moves, primary_moves, failed) = self.node.balancer.counts();
            let help = "Balancer moves since this meta became leader, by kind and result";
            out.counter("wingkv_balance_moves_total", help, &[("kind", "replica"), ("result", "done")], replica_moves);
            out.counter("wingkv_balance_moves_total", help, &[("kind", "primary"), ("result", "done")], primary_moves);
            out.counter("wingkv_balance_moves_total", help, &[("kind", "any"), ("result", "failed")], failed);
            out.gauge(
                "wingkv_balance_moves_in_flight",
                "Balancer moves running",
                &[],
                f64::from(self.node.balancer.in_flight()),
            );
        }
        let stall = Duration::from_millis(self.node.config.bulk_load_stall_timeout_ms);
        let drives = self.node.bulk_drive.locked().clone();
        for (app_id, job) in &catalog.bulk_loads {
            let Some(app) = catalog.apps.get(app_id) else { continue };
            let table = app.name.as_str();
            let job_id = job.job_id.to_string();
            out.gauge(
                "wingkv_bulk_load_job",
                "The bulk-load job of a table, labelled with its status (always 1)",
                &[("table", table), ("job", job_id.as_str()), ("status", job.status.as_str())],
                1.0,
            );
            let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
            for s in &job.partitions {
                *by_status.entry(s.as_str()).or_default() += 1;
            }
            for (status, n) in by_status {
                out.gauge(
                    "wingkv_bulk_load_partitions",
                    "Partitions of a table's bulk-load job in each status",
                    &[("table", table), ("status", status)],
                    n as f64,
                );
            }
            let (mut attempts, mut stalled) = (0u64, 0u64);
            for pidx in 0..job.partitions.len() as u32 {
                let Some(d) = drives.get(&PartitionId::new(*app_id, pidx)).filter(|d| d.job_id() == job.job_id) else {
                    continue;
                };
                attempts += u64::from(d.retry().attempts());
                stalled += u64::from(!job.status.is_terminal() && d.stalled_since_ms(stall).is_some());
            }
            out.gauge(
                "wingkv_bulk_load_drive_retries",
                "Transient failures in a row of the driver's calls, summed over the partitions",
                &[("table", table)],
                attempts as f64,
            );
            out.gauge(
                "wingkv_bulk_load_stalled_partitions",
                "Partitions that have not moved for the stall timeout",
                &[("table", table)],
                stalled as f64,
            );
        }
    }
}
