//! Fault injection in the manner of Jepsen: a onebox of real processes, concurrent clients running
//! a register workload (get, set, del, check_and_set on a few keys) that records a history with
//! invoke and complete times, and a seeded random schedule that kills (`-9`), restarts and pauses
//! (`SIGSTOP`/`SIGCONT`) meta and replica servers meanwhile. The history goes to
//! [`crate::linearizability`]; after the faults stop, every replica of every partition must
//! converge to the same content.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use wingkv_client::{CheckType, Client, ClientConfig, ErrorCode, PartitionId, Table};
use wingkv_common::sync::MutexExt;
use wingkv_proto::replica_admin::replica_admin_client::ReplicaAdminClient;
use wingkv_proto::replica_admin::PartitionRequest;

use crate::linearizability::{Event, History, Op, OpResult};
use crate::{channel, wait_for};

/// A small seeded PRNG (xorshift64*): schedules and workloads replay from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration between `lo` and `hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span + 1))
    }
}

/// What the register workload does.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys (hash keys; sort key `r`).
    pub keys: usize,
    /// Operations per client at most (the run also ends at its deadline).
    pub max_ops_per_client: usize,
    /// Shares (out of 100) of set, del and check_and_set; the rest are gets.
    pub set_percent: u64,
    /// See `set_percent`.
    pub del_percent: u64,
    /// See `set_percent`.
    pub cas_percent: u64,
    /// SDK request deadline.
    pub request_timeout: Duration,
    /// The clients' TLS files on a secure cluster (a user's certificate).
    pub tls: Option<wingkv_security::TlsConfig>,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            clients: 5,
            keys: 4,
            max_ops_per_client: 100_000,
            set_percent: 25,
            del_percent: 5,
            cas_percent: 20,
            request_timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` (the onebox supervisor, or the multi-host harness, starts it again).
    Kill(String),
    /// Graceful restart (drain, close every replica, reopen every replica).
    Restart(String),
    /// `SIGSTOP` for this long, then `SIGCONT`.
    Pause(String, Duration),
    /// These nodes cut off from every other node, both ways, for this long (multi-host only).
    Isolate(Vec<String>, Duration),
    /// Everything the first node sends the second is dropped for this long (multi-host only).
    OneWay(String, String, Duration),
    /// The meta leader of the moment cut off from the other metas, not from the replica
    /// servers, for this long (multi-host only).
    IsolateMetaLeader(Duration),
    /// The primary of one partition of the moment cut off from the other replica servers, not
    /// from clients or metas, for this long (multi-host only).
    IsolatePrimary(Duration),
    /// An operator's action, named; only the injector a test passes to [`run_with`] knows how
    /// to run it (adding servers and balancing, say).
    Action(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "kill -9 {n}"),
            Fault::Restart(n) => write!(f, "restart {n}"),
            Fault::Pause(n, d) => write!(f, "pause {n} for {d:?}"),
            Fault::Isolate(nodes, d) => write!(f, "isolate {} for {d:?}", nodes.join("+")),
            Fault::OneWay(a, b, d) => write!(f, "drop {a}->{b} for {d:?}"),
            Fault::IsolateMetaLeader(d) => write!(f, "isolate the meta leader from the metas for {d:?}"),
            Fault::IsolatePrimary(d) => write!(f, "isolate a primary from its group for {d:?}"),
            Fault::Action(a) => write!(f, "{a}"),
        }
    }
}

/// A seeded schedule: `count` faults on `nodes`, one at a time, a random gap before each.
pub fn schedule(seed: u64, nodes: &[String], count: usize) -> Vec<(Duration, Fault)> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let gap = rng.between(Duration::from_millis(500), Duration::from_millis(2_500));
            let node = nodes[rng.below(nodes.len() as u64) as usize].clone();
            let fault = match rng.below(3) {
                0 => Fault::Kill(node),
                1 => Fault::Restart(node),
                _ => Fault::Pause(node, rng.between(Duration::from_millis(500), Duration::from_millis(3_000))),
            };
            (gap, fault)
        })
        .collect()
}

/// A seeded schedule of network faults combined with process faults, for a multi-host cluster
/// of `metas` (`meta1..`) and `replicas` (`replica1..`): `count` faults, one at a time.
pub fn partition_schedule(seed: u64, metas: usize, replicas: usize, count: usize) -> Vec<(Duration, Fault)> {
    let mut rng = Rng::new(seed);
    let meta = |i: u64| format!("meta{}", i + 1);
    let replica = |i: u64| format!("replica{}", i + 1);
    (0..count)
        .map(|_| {
            let gap = rng.between(Duration::from_millis(500), Duration::from_millis(2_000));
            let d = rng.between(Duration::from_millis(1_000), Duration::from_millis(5_000));
            let any = |rng: &mut Rng| {
                let n = rng.below((metas + replicas) as u64);
                if n < metas as u64 {
                    meta(n)
                } else {
                    replica(n - metas as u64)
                }
            };
            let fault = match rng.below(10) {
                0 | 1 => Fault::IsolateMetaLeader(d),
                2 | 3 => Fault::IsolatePrimary(d),
                // A minority: one meta and one replica server.
                4 => Fault::Isolate(vec![meta(rng.below(metas as u64)), replica(rng.below(replicas as u64))], d),
                5 | 6 => {
                    let (a, b) = (any(&mut rng), any(&mut rng));
                    if a == b {
                        Fault::Isolate(vec![a], d)
                    } else {
                        Fault::OneWay(a, b, d)
                    }
                }
                7 => Fault::Kill(any(&mut rng)),
                8 => Fault::Restart(any(&mut rng)),
                _ => Fault::Pause(any(&mut rng), rng.between(Duration::from_millis(500), Duration::from_millis(3_000))),
            };
            (gap, fault)
        })
        .collect()
}

/// Injects `fault` into the onebox in `dir`; returns once it is over (a paused node resumed).
pub async fn inject(dir: &Path, fault: &Fault) -> Result<()> {
    // The node may still be coming back from an earlier fault (the supervisor restarts a killed
    // node after a backoff): a fault lands on a running node.
    let node = match fault {
        Fault::Kill(n) | Fault::Restart(n) | Fault::Pause(n, _) => n,
        other => anyhow::bail!("a onebox cannot inject '{other}' (network faults need the multi-host harness)"),
    };
    wait_for(&format!("{node} to be running"), Duration::from_secs(60), || async {
        crate::cli::onebox_node(dir, node).ok()?.1
    })
    .await?;
    match fault {
        Fault::Kill(n) => crate::onebox::onebox(dir, &["kill", n]).map(|_| ()),
        Fault::Restart(n) => crate::onebox::onebox(dir, &["restart", n]).map(|_| ()),
        Fault::Pause(n, d) => {
            let pid = crate::cli::onebox_node(dir, n)?.1.with_context(|| format!("{n} is not running"))? as i32;
            pause(pid, *d).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `SIGSTOP`s process `pid` for `d`, then `SIGCONT`s it.
pub async fn pause(pid: i32, d: Duration) {
    let _stopped = Stopped::stop(pid);
    tokio::time::sleep(d).await;
}

/// A process stopped (`SIGSTOP`) until this is dropped (`SIGCONT`), whatever the test's outcome.
pub struct Stopped(i32);

impl Stopped {
    /// Stops process `pid`, a child of the test or of its onebox.
    pub fn stop(pid: i32) -> Self {
        // SAFETY: kill(2) on the pid of a child of the test (or of its onebox); no memory involved.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Key `i` of the schedule `seed`: every schedule has keys of its own, so each starts from
/// absent values, as the checker's model does, even on a table an earlier schedule wrote.
fn key(seed: u64, i: usize) -> String {
    format!("s{seed}-k{i}")
}

const SORT_KEY: &str = "r";

/// Runs one client's share of the workload until `stop` (or its op budget), recording events
/// with times relative to `base`.
async fn client_loop(
    id: usize,
    table: Table,
    workload: Workload,
    seed: u64,
    base: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Event>, Vec<String>) {
    let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut events = Vec::new();
    let mut failures = Vec::new();
    let now = || base.elapsed().as_nanos() as u64;
    // The last value this client read per key: the expected value of its next CAS there.
    let mut seen: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for n in 0..workload.max_ops_per_client {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let k = key(seed, rng.below(workload.keys as u64) as usize);
        let roll = rng.below(100);
        let value = format!("c{id}-{n}").into_bytes();
        let (op, invoke) = if roll < workload.set_percent {
            (Op::Set(value.clone()), now())
        } else if roll < workload.set_percent + workload.del_percent {
            (Op::Del, now())
        } else if roll < workload.set_percent + workload.del_percent + workload.cas_percent {
            (Op::Cas { expected: seen.get(&k).cloned().flatten(), new: value.clone() }, now())
        } else {
            (Op::Get, now())
        };
        let outcome: Result<OpResult, wingkv_client::Error> = match &op {
            Op::Get => table.get(&k, SORT_KEY).await.map(|v| OpResult::Value(v.map(|b| b.to_vec()))),
            Op::Set(v) => table.set(&k, SORT_KEY, v).await.map(|_| OpResult::Done),
            Op::Del => table.del(&k, SORT_KEY).await.map(|_| OpResult::Done),
            Op::Cas { expected, new } => {
                let (check, operand) = match expected {
                    None => (CheckType::CtValueNotExist, Vec::new()),
                    Some(x) => (CheckType::CtValueBytesEqual, x.clone()),
                };
                table
                    .check_and_set(&k, SORT_KEY, check, operand, SORT_KEY, new, None)
                    .await
                    .map(|o| OpResult::Cas(o.set))
            }
        };
        let complete = now();
        match outcome {
            Ok(result) => {
                if let OpResult::Value(v) = &result {
                    seen.insert(k.clone(), v.clone());
                }
                events.push(Event { client: id, key: k, op, invoke, complete: Some((complete, result)) });
            }
            // A failed read changed nothing; a write refused before it was proposed neither.
            Err(e) if matches!(op, Op::Get) => failures.push(format!("{k}: {e}")),
            Err(e)
                if matches!(e.code(), ErrorCode::NotLeader | ErrorCode::Busy | ErrorCode::NotFound)
                    && matches!(op, Op::Cas { .. }) =>
            {
                failures.push(format!("{k}: {e}"))
            }
            // Anything else: the write may or may not have happened, at any time from now on.
            Err(e) => {
                failures.push(format!("{k}: {e}"));
                events.push(Event { client: id, key: k, op, invoke, complete: None })
            }
        }
    }
    (events, failures)
}

/// What one run did.
#[derive(Debug, Default)]
pub struct RunRecord {
    /// The recorded history.
    pub history: History,
    /// The faults injected, in order.
    pub faults: Vec<Fault>,
    /// The value of every key read after the faults stopped.
    pub final_values: BTreeMap<String, Option<Vec<u8>>>,
    /// Every request of the workload that failed (after the SDK's own retries), as
    /// `key: error`.
    pub failures: Vec<String>,
}

impl RunRecord {
    /// Fails unless the history is linearizable (checked with `budget`), no acknowledged write
    /// was lost, and the one scheduled action ran.
    pub fn ensure_linearizable_with_its_action(&self, budget: usize) -> Result<()> {
        let report = crate::linearizability::check(&self.history, budget);
        anyhow::ensure!(matches!(report.verdict, crate::linearizability::Verdict::Ok), "not linearizable: {report}");
        let lost = crate::linearizability::lost_acknowledged_writes(&self.history, &self.final_values);
        anyhow::ensure!(lost.is_empty(), "acknowledged writes lost on keys {lost:?}");
        anyhow::ensure!(self.faults.len() == 1, "the scheduled action did not run: {:?}", self.faults);
        Ok(())
    }
}

/// A client of `table` with `timeout` as its request deadline.
pub async fn open_table(meta: &str, table: &str, timeout: Duration) -> Result<Table> {
    open_table_on(&[meta.to_string()], table, timeout).await
}

/// [`open_table`] on a cluster of several metas.
pub async fn open_table_on(metas: &[String], table: &str, timeout: Duration) -> Result<Table> {
    open_table_as(metas, table, timeout, None).await
}

/// [`open_table_on`] over TLS with `tls` (a user's files) on a secure cluster.
pub async fn open_table_as(
    metas: &[String],
    table: &str,
    timeout: Duration,
    tls: Option<wingkv_security::TlsConfig>,
) -> Result<Table> {
    let mut config = ClientConfig::new(metas.to_vec());
    config.request_timeout = timeout;
    config.tls = tls;
    Ok(Client::with_config(config).await?.open_table(table).await?)
}

/// Runs the workload on `table` of the onebox in `dir` for `duration` while injecting `faults`,
/// then waits for the cluster to serve every key again and reads the final values.
pub async fn run(
    dir: &Path,
    meta: &str,
    table: &str,
    workload: &Workload,
    seed: u64,
    duration: Duration,
    faults: &[(Duration, Fault)],
) -> Result<RunRecord> {
    let metas = [meta.to_string()];
    let dir = dir.to_path_buf();
    run_with(&metas, table, workload, seed, duration, faults, |f| {
        let (dir, f) = (dir.clone(), f.clone());
        async move { inject(&dir, &f).await }
    })
    .await
}

/// [`run`] on any cluster whose metas are `metas`, with faults injected by `inject` (which
/// returns once its fault is over).
pub async fn run_with<F, Fut>(
    metas: &[String],
    table: &str,
    workload: &Workload,
    seed: u64,
    duration: Duration,
    faults: &[(Duration, Fault)],
    mut inject: F,
) -> Result<RunRecord>
where
    F: FnMut(&Fault) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..workload.clients {
        let t = open_table_as(metas, table, workload.request_timeout, workload.tls.clone()).await?;
        clients.spawn(client_loop(id, t, workload.clone(), seed, base, stop.clone()));
    }
    // Faults, one at a time, within the run's duration.
    let mut injected = Vec::new();
    let mut fault_result = Ok(());
    for (gap, fault) in faults {
        if base.elapsed() + *gap >= duration {
            break;
        }
        tokio::time::sleep(*gap).await;
        tracing::info!("injecting {fault}");
        if let Err(e) = inject(fault).await {
            fault_result = Err(e.context(format!("injecting {fault}")));
            break;
        }
        injected.push(fault.clone());
    }
    if let Some(left) = duration.checked_sub(base.elapsed()) {
        tokio::time::sleep(left).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut history = History::default();
    let mut failures = Vec::new();
    while let Some(joined) = clients.join_next().await {
        let (events, failed) = joined.map_err(|e| anyhow!("a workload client failed: {e}"))?;
        history.events.extend(events);
        failures.extend(failed);
    }
    fault_result?;

    // Faults over: every key must be served again; its value is what the checks compare.
    let reader = open_table_as(metas, table, Duration::from_secs(5), workload.tls.clone()).await?;
    let mut final_values = BTreeMap::new();
    for i in 0..workload.keys {
        let k = key(seed, i);
        let last_error = std::sync::Mutex::new(String::new());
        let v = wait_for(&format!("{k} to be readable after the faults"), Duration::from_secs(90), || async {
            match reader.get(&k, SORT_KEY).await {
                Ok(v) => Some(v.map(|b| b.to_vec())),
                Err(e) => {
                    *last_error.locked() = e.to_string();
                    None
                }
            }
        })
        .await
        .with_context(|| format!("last error: {}", last_error.locked()))?;
        final_values.insert(k, v);
    }
    Ok(RunRecord { history, faults: injected, final_values, failures })
}

/// Waits until every replica of every partition of `table` holds the same content (same
/// applied records, compared by checksum), or fails naming the partitions that differ.
pub async fn wait_converged(meta: &str, table: &str, timeout: Duration) -> Result<()> {
    wait_converged_on(&[meta.to_string()], table, timeout).await
}

/// [`wait_converged`] on a cluster of several metas.
pub async fn wait_converged_on(metas: &[String], table: &str, timeout: Duration) -> Result<()> {
    wait_converged_as(metas, table, timeout, None).await
}

/// [`wait_converged_on`] on a secure cluster: `server` are the files of a server certificate
/// of the cluster (checksums are replica administration, for servers only), used for the meta
/// too.
pub async fn wait_converged_as(
    metas: &[String],
    table: &str,
    timeout: Duration,
    server: Option<wingkv_security::TlsConfig>,
) -> Result<()> {
    let mut config = ClientConfig::new(metas.to_vec());
    config.request_timeout = Duration::from_secs(5);
    config.tls = server.clone();
    let client = Client::with_config(config).await?;
    let pool = match &server {
        Some(files) => {
            Some(wingkv_common::channel::ChannelPool::new(Some(wingkv_security::client::ClientTls::new(files)?)))
        }
        None => None,
    };
    wait_for(&format!("every replica of '{table}' to converge"), timeout, || async {
        // A fresh routing table each time: repairs may have moved replicas.
        let cfg = client.open_table(table).await.ok()?.configuration();
        for p in &cfg.partitions {
            let pid = PartitionId::new(cfg.app_id, p.partition_index);
            let mut sums = BTreeSet::new();
            for m in &p.members {
                let ch = match &pool {
                    Some(pool) => pool.get(&m.address).ok()?,
                    None => channel(&m.address).ok()?,
                };
                let mut admin = ReplicaAdminClient::new(ch);
                let s = admin
                    .checksum(PartitionRequest { partition: Some(pid.to_proto()), ..Default::default() })
                    .await
                    .ok()?
                    .into_inner();
                sums.insert((s.record_count, s.digest));
            }
            if sums.len() != 1 || p.members.is_empty() {
                return None;
            }
        }
        Some(())
    })
    .await
}
