//! Admission of client requests on a replica: the table envs' request denial
//! (`replica.deny_client_request`, `replica.deny_client_write`) and write throttling
//! (`replica.write_throttling`, `replica.write_throttling_by_size`), DESIGN §6. The meta sends
//! every hosted table's envs with each heartbeat answer; [`TableEnvs`] keeps them and every
//! replica's [`Admission`] is updated live, without a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use wingkv_common::sync::RwLockExt;
use wingkv_common::throttling::{DenyKind, TableThrottling};
use wingkv_common::{PartitionId, WingError};
use wingkv_security::Peer;

use crate::write_throttle::{ThrottlingDecision, WriteThrottle};

/// Node-wide counters of what admission did (reported in the replica admin `Status`).
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    /// Writes held by a `delay` rule, then served.
    pub writes_delayed: AtomicU64,
    /// Writes refused with `Busy` by a `reject` rule.
    pub writes_rejected: AtomicU64,
    /// Requests refused by a deny env.
    pub requests_denied: AtomicU64,
    /// Requests of users a table's `replica_access_controller.allowed_users` leaves out.
    pub requests_refused_by_acl: AtomicU64,
}

/// The settings of every table this node hosts, as the meta last sent them.
#[derive(Debug, Default)]
pub struct TableEnvs {
    tables: RwLock<HashMap<u32, TableThrottling>>,
    /// Partition count of each table the meta told about.
    partition_counts: RwLock<HashMap<u32, u32>>,
    /// The users each table allows, when it lists them (absent: every authenticated user).
    allowed_users: RwLock<HashMap<u32, Arc<BTreeSet<String>>>>,
    /// What admission did on this node.
    pub counters: Arc<AdmissionCounters>,
}

impl TableEnvs {
    /// The settings of table `app_id` (none known yet: no limit, no denial).
    pub fn get(&self, app_id: u32) -> TableThrottling {
        self.tables.read_locked().get(&app_id).copied().unwrap_or_default()
    }

    /// The partition count of table `app_id`, once the meta has told it.
    pub fn partition_count(&self, app_id: u32) -> Option<u32> {
        self.partition_counts.read_locked().get(&app_id).copied()
    }

    /// Records the envs of table `app_id` (of `partition_count` partitions) and answers its
    /// settings, or keeps the previous ones when the envs do not parse (the meta validates them,
    /// so that would be an older meta or a hand-edited catalog: logged, never fatal).
    pub fn set(&self, app_id: u32, partition_count: u32, envs: &BTreeMap<String, String>) -> TableThrottling {
        if partition_count > 0 {
            self.partition_counts.write_locked().insert(app_id, partition_count);
        }
        match wingkv_common::table_acl::allowed_users(envs) {
            Ok(Some(users)) => {
                self.allowed_users.write_locked().insert(app_id, Arc::new(users));
            }
            Ok(None) => {
                self.allowed_users.write_locked().remove(&app_id);
            }
            // Kept as it was, like the other envs: the meta refuses such a value.
            Err(e) => tracing::warn!(app_id, "ignoring a table access list that does not parse: {e}"),
        }
        match TableThrottling::from_envs(envs, partition_count.max(1)) {
            Ok(t) => {
                self.tables.write_locked().insert(app_id, t);
                t
            }
            Err(e) => {
                tracing::warn!(app_id, "ignoring table envs that do not parse: {e}");
                self.get(app_id)
            }
        }
    }
}

impl TableEnvs {
    /// Refuses `peer` on table `app_id` when the table lists its allowed users and the peer is
    /// not one of them. Without TLS ([`Peer::Unsecured`]) nobody is identified, and nothing is
    /// checked.
    pub fn check_access(&self, app_id: u32, peer: &Peer) -> Result<(), WingError> {
        let Peer::Certified(identity) = peer else { return Ok(()) };
        let Some(users) = self.allowed_users.read_locked().get(&app_id).cloned() else { return Ok(()) };
        if identity.user().is_some_and(|u| users.contains(u)) {
            return Ok(());
        }
        self.counters.requests_refused_by_acl.fetch_add(1, Ordering::Relaxed);
        Err(WingError::PermissionDenied(format!(
            "{identity} may not use the table with app_id {app_id}: it is not in the table's {} ({})",
            wingkv_common::table_acl::ALLOWED_USERS,
            users.iter().cloned().collect::<Vec<_>>().join(",")
        )))
    }
}

/// Admission of one replica's client requests.
#[derive(Debug)]
pub struct Admission {
    throttle: WriteThrottle,
    settings: RwLock<TableThrottling>,
    counters: Arc<AdmissionCounters>,
}

impl Admission {
    /// Admission under `settings`, counting into `counters`.
    pub fn new(settings: TableThrottling, counters: Arc<AdmissionCounters>) -> Self {
        Self {
            throttle: WriteThrottle::new(settings.write_qps, settings.write_bytes),
            settings: RwLock::new(settings),
            counters,
        }
    }

    /// Applies new settings live (the current throttling window keeps its counts).
    pub fn update(&self, settings: TableThrottling) {
        self.throttle.set_policy(settings.write_qps, settings.write_bytes);
        *self.settings.write_locked() = settings;
    }

    fn settings(&self) -> TableThrottling {
        *self.settings.read_locked()
    }

    fn denied(&self, id: PartitionId, what: &str, kind: DenyKind) -> WingError {
        self.counters.requests_denied.fetch_add(1, Ordering::Relaxed);
        WingError::OperationDisabled(format!(
            "partition {id}: client {what}s are denied by the table env ({kind:?}); del_app_envs lifts it"
        ))
    }

    /// Refuses a read when the table denies reads.
    pub fn check_read(&self, id: PartitionId) -> Result<(), WingError> {
        match self.settings().deny_read() {
            Some(kind) => Err(self.denied(id, "read", kind)),
            None => Ok(()),
        }
    }

    /// Admits a write of `request_bytes`: refused when the table denies writes; otherwise
    /// counted in the partition's throttling window, and held (`delay`) or held and refused
    /// with `Busy` (`reject`) when the window is over a limit. `client_timeout` (the request's
    /// deadline, when it sent one) caps the hold at half of it, so the answer is in time.
    pub async fn admit_write(
        &self,
        id: PartitionId,
        request_bytes: u64,
        client_timeout: Option<Duration>,
    ) -> Result<(), WingError> {
        if let Some(kind) = self.settings().deny_write() {
            return Err(self.denied(id, "write", kind));
        }
        match self.throttle.check(Instant::now(), request_bytes, client_timeout.unwrap_or_default()) {
            ThrottlingDecision::Pass => Ok(()),
            ThrottlingDecision::Delay(hold) => {
                self.counters.writes_delayed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold).await;
                Ok(())
            }
            ThrottlingDecision::Reject(hold) => {
                self.counters.writes_rejected.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold).await;
                Err(WingError::Busy(format!("partition {id}: write rejected by the table's write throttling")))
            }
        }
    }
}

/// The deadline a gRPC client sent with its request (`grpc-timeout`: up to 8 digits and a unit,
/// `H`, `M`, `S`, `m`, `u` or `n`), if any.
pub fn client_timeout<T>(req: &tonic::Request<T>) -> Option<Duration> {
    let value = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("4999m"), Some(Duration::from_millis(4999)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "12", "12x", "-1S", "123456789S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn envs_deny_delay_and_reject_live() {
        let envs = TableEnvs::default();
        let id = PartitionId::new(1, 0);
        let admission = Admission::new(envs.get(1), envs.counters.clone());
        admission.admit_write(id, 10, None).await.unwrap();

        let mut map = BTreeMap::new();
        map.insert("replica.deny_client_write".to_string(), "true".to_string());
        admission.update(envs.set(1, 1, &map));
        let e = admission.admit_write(id, 10, None).await.unwrap_err();
        assert_eq!(e.code(), wingkv_common::ErrorCode::OperationDisabled, "{e}");
        admission.check_read(id).unwrap();

        // 1 write per second for the table, then reject after 20 ms.
        map.clear();
        map.insert("replica.write_throttling".to_string(), "1*reject*20".to_string());
        admission.update(envs.set(1, 1, &map));
        let mut busy = 0;
        for _ in 0..5 {
            let started = Instant::now();
            if let Err(e) = admission.admit_write(id, 10, Some(Duration::from_secs(5))).await {
                assert_eq!(e.code(), wingkv_common::ErrorCode::Busy);
                assert!(started.elapsed() >= Duration::from_millis(20), "a reject holds the request first");
                busy += 1;
            }
        }
        assert!(busy >= 3, "only {busy} of 5 writes were rejected");
        assert_eq!(envs.counters.writes_rejected.load(Ordering::Relaxed), busy);

        // A bad value keeps the settings in force.
        map.insert("replica.write_throttling".to_string(), "fast".to_string());
        assert_eq!(envs.set(1, 1, &map), envs.get(1));
        // Envs removed: everything passes again.
        admission.update(envs.set(1, 1, &BTreeMap::new()));
        for _ in 0..5 {
            admission.admit_write(id, 10, None).await.unwrap();
        }
    }
}
