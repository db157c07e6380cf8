//! Handing a partition's primary to another voter (the meta's balancer, `propose -p
//! move_primary`).
//!
//! openraft 0.9 has no leadership transfer, and a follower refuses every vote while the lease of
//! the leader it follows lasts (`election_timeout_max` after it last heard from it). So the
//! primary goes quiet: it stops admitting writes, waits until the target holds its whole log,
//! and stops its heartbeats; the target campaigns until it wins. No follower grants the target
//! its vote before the old leader's lease ran out on it — the same wait as any failover — so the
//! old primary's lease reads stay linearizable. Whatever the outcome, the primary resumes its
//! heartbeats and writes when the handover ends: if the target did not win, this replica never
//! stopped leading and nothing changed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::ServerState;
use wingkv_common::raft::NodeId;
use wingkv_common::WingError;
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::CampaignRequest;

use super::Replica;

/// How long the target may take to hold the primary's whole log once writes stopped.
const CATCH_UP: Duration = Duration::from_secs(2);

/// How long a candidate waits for its first election's outcome before it campaigns again; each
/// later round waits twice as long, up to [`MAX_ELECTION_ROUND`]. A new round makes the answers
/// to the last one void, so under load (vote answers slower than a round) a fixed short round
/// never wins: seen as a 5 s stall of a partition while replicas were being copied.
const ELECTION_ROUND: Duration = Duration::from_millis(200);

/// The longest wait for one election's outcome.
const MAX_ELECTION_ROUND: Duration = Duration::from_millis(800);

/// Longest campaign a request may ask for.
pub const MAX_CAMPAIGN: Duration = Duration::from_secs(30);

/// How long the old primary waits to learn that the target leads (the new leader's first
/// append), so that its answer already shows it as a secondary.
const STEP_DOWN: Duration = Duration::from_secs(2);

/// Ends a handover's quiet when dropped, however the handover ended.
struct Quiet<'a>(&'a Replica);

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.handing_to.store(0, Ordering::SeqCst);
    }
}

impl Replica {
    /// Hands this primary's role to the voter `to`, campaigning for at most `campaign`.
    /// Answers once `to` won; on any failure this replica is still the primary.
    pub async fn transfer_primary(
        &self,
        to: NodeId,
        meta_term: Option<u64>,
        campaign: Duration,
    ) -> Result<(), WingError> {
        if self.handing_to.load(Ordering::SeqCst) != 0 {
            return Err(WingError::Busy(format!("partition {} is already handing its primary over", self.id)));
        }
        self.check_primary()?;
        if to == self.node_id {
            return Ok(());
        }
        let address = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            let membership = m.membership();
            if !membership.voter_ids().any(|v| v == to) {
                let voters: Vec<String> = membership.voter_ids().map(|v| v.to_string()).collect();
                return Err(WingError::InvalidArgument(format!(
                    "node {to} is not a voter of partition {} (voters: {})",
                    self.id,
                    voters.join(",")
                )));
            }
            membership.get_node(&to).map(|n| n.addr.clone()).unwrap_or_default()
        };
        if self.handing_to.compare_exchange(0, to, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Err(WingError::Busy(format!("partition {} is already handing its primary over", self.id)));
        }
        let _quiet = Quiet(self);
        self.wait_caught_up(to).await?;
        self.raft.runtime_config().heartbeat(false);
        let channel = self.pool.get(&address).map_err(|e| WingError::Unavailable(format!("node {to}: {e}")))?;
        let campaign = campaign.min(MAX_CAMPAIGN);
        let mut req = tonic::Request::new(CampaignRequest {
            partition: Some(self.id.to_proto()),
            from: self.node_id,
            timeout_ms: campaign.as_millis() as u64,
            meta_term,
        });
        req.set_timeout(campaign + Duration::from_secs(1));
        let campaigned = ReplicaAdminClient::new(channel).campaign(req).await;
        if let Err(s) = campaigned {
            let e = WingError::from_status(&s);
            tracing::warn!(partition = %self.id, to, "primary handover failed, this replica stays primary: {e}");
            return Err(e);
        }
        let mut metrics = self.raft.metrics();
        let stepped_down = metrics.wait_for(|m| m.state != ServerState::Leader);
        let _ = tokio::time::timeout(STEP_DOWN, stepped_down).await;
        Ok(())
    }

    /// Waits until every write admitted before the handover is answered (no new one is admitted
    /// meanwhile: a write in flight when the target takes over could only answer "may or may not
    /// be applied") and `to` holds every entry of this primary's log, at most [`CATCH_UP`].
    async fn wait_caught_up(&self, to: NodeId) -> Result<(), WingError> {
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let (leads, stopped, done) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let matched = m.replication.as_ref().and_then(|r| r.get(&to).copied().flatten()).map(|l| l.index);
                let applied = m.last_applied.map(|l| l.index);
                let done = matched >= m.last_log_index && applied >= m.last_log_index;
                (m.state == ServerState::Leader, m.running_state.is_err(), done)
            };
            if stopped {
                return Err(WingError::Unavailable(format!("partition {}: its raft group stopped", self.id)));
            }
            if !leads {
                return Err(self.not_leader());
            }
            if done && self.proposals.pending() == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WingError::Busy(format!(
                    "partition {}: node {to} did not catch up with the primary's log (or writes in flight did \
                     not end) within {CATCH_UP:?}; the primary stays",
                    self.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Campaigns until this replica leads, for at most `timeout`: the primary `from` went quiet
    /// to hand over to it. Stops, failing, if a third member wins.
    pub async fn campaign(&self, from: NodeId, timeout: Duration) -> Result<(), WingError> {
        let deadline = Instant::now() + timeout.min(MAX_CAMPAIGN);
        let mut metrics = self.raft.metrics();
        let mut round = ELECTION_ROUND;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    return Ok(());
                }
                if !m.membership_config.membership().voter_ids().any(|v| v == self.node_id) {
                    return Err(WingError::InvalidState(format!(
                        "this replica of partition {} is not a voter: it cannot lead",
                        self.id
                    )));
                }
                if let Some(leader) = m.current_leader.filter(|l| *l != from && *l != self.node_id) {
                    return Err(WingError::InvalidState(format!(
                        "partition {}: node {leader} became primary instead",
                        self.id
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(WingError::Timeout(format!(
                    "partition {}: not elected within {timeout:?} (the other voters did not grant it)",
                    self.id
                )));
            }
            self.raft
                .trigger()
                .elect()
                .await
                .map_err(|e| WingError::Unavailable(format!("partition {}: its raft group stopped: {e}", self.id)))?;
            let round_end = (Instant::now() + round).min(deadline);
            let elected = metrics.wait_for(|m| m.state == ServerState::Leader);
            let _ = tokio::time::timeout_at(round_end.into(), elected).await;
            round = (round * 2).min(MAX_ELECTION_ROUND);
        }
    }
}
