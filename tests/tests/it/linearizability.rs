//! Linearizability under faults: a onebox (1 meta, 3 replica servers) serves a register workload
//! of concurrent clients while a seeded schedule kills, restarts and pauses its servers; the
//! recorded history must be linearizable, no acknowledged write may be lost, and every replica
//! must converge once the faults stop. A deliberately broken build (acknowledging writes before
//! they commit) must be caught by the same checker.
//!
//! CI runs one short schedule; `./run.sh test --long` (WINGKV_LONG_TESTS) runs 50.
//! `WINGKV_FAULT_SCHEDULES`, `WINGKV_FAULT_SEED` and `WINGKV_FAULT_SECONDS` pick other runs.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use wingkv_tests::cli::shell_ok;
use wingkv_tests::env_or;
use wingkv_tests::faults::{self, Workload};
use wingkv_tests::linearizability::{self, Verdict};
use wingkv_tests::onebox::Guard;

/// Search states the checker may spend per key before it answers Unknown.
const CHECK_BUDGET: usize = 20_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_workload_stays_linearizable_under_faults() -> Result<()> {
    let long = std::env::var_os("WINGKV_LONG_TESTS").is_some();
    let schedules: u64 = env_or("WINGKV_FAULT_SCHEDULES", if long { 50 } else { 1 });
    let first_seed: u64 = env_or("WINGKV_FAULT_SEED", 20_261_124);
    let seconds: u64 = env_or("WINGKV_FAULT_SECONDS", 40);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start(&dir)?;
    shell_ok(&meta, "create lin -p 4 -r 3")?;
    let nodes: Vec<String> = ["meta1", "replica1", "replica2", "replica3"].map(String::from).to_vec();
    let workload = Workload::default();

    let (mut total_ops, mut total_faults) = (0usize, 0usize);
    for seed in first_seed..first_seed + schedules {
        let schedule = faults::schedule(seed, &nodes, 100);
        let run = faults::run(&dir, &meta, "lin", &workload, seed, Duration::from_secs(seconds), &schedule).await?;
        let report = linearizability::check(&run.history, CHECK_BUDGET);
        let lost = linearizability::lost_acknowledged_writes(&run.history, &run.final_values);
        let injected: Vec<String> = run.faults.iter().map(ToString::to_string).collect();
        println!(
            "schedule seed {seed}: {} ops ({} of unknown outcome), {} faults [{}]: {report}",
            run.history.events.len(),
            run.history.events.iter().filter(|e| e.complete.is_none()).count(),
            injected.len(),
            injected.join(", ")
        );
        total_ops += run.history.events.len();
        total_faults += injected.len();
        match report.verdict {
            Verdict::Ok => {}
            Verdict::Violation(v) => bail!("schedule seed {seed}: not linearizable:\n{v}"),
            Verdict::Unknown => bail!("schedule seed {seed}: the checker ran out of budget: {report}"),
        }
        ensure!(lost.is_empty(), "schedule seed {seed}: acknowledged writes lost on keys {lost:?}");
        ensure!(!injected.is_empty(), "schedule seed {seed}: no fault was injected");
        faults::wait_converged(&meta, "lin", Duration::from_secs(120)).await?;
    }
    println!(
        "fault suite: {schedules} schedules, {total_ops} ops, {total_faults} faults, 0 violations, 0 lost acknowledged writes"
    );
    Ok(())
}

/// Proof that the checker can see a violation: the same workload against replica servers that
/// acknowledge a write before it commits must fail the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_build_that_acknowledges_before_commit() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_with(&dir, "unsafe_ack_before_commit = true\n")?;
    shell_ok(&meta, "create lin -p 2 -r 3")?;
    // Sets and gets only: a check_and_set's answer needs the real apply.
    let workload =
        Workload { clients: 4, keys: 2, set_percent: 50, del_percent: 0, cas_percent: 0, ..Default::default() };
    let run = faults::run(&dir, &meta, "lin", &workload, 7, Duration::from_secs(10), &[]).await?;
    let report = linearizability::check(&run.history, CHECK_BUDGET);
    println!("broken build: {report}");
    match report.verdict {
        Verdict::Violation(v) => {
            println!("{v}");
            Ok(())
        }
        other => bail!("the checker did not see the broken build: {other:?}"),
    }
}

/// One schedule on a secure onebox (mutual TLS, the workload as `user1`): kills, restarts and
/// pauses reconnect over TLS, and the history stays linearizable with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_onebox_stays_linearizable_under_faults() -> Result<()> {
    let seconds: u64 = env_or("WINGKV_FAULT_SECONDS", 40) / 2;
    let seed = env_or("WINGKV_FAULT_SEED", 20_261_124u64) + 1_000;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("onebox");
    let _guard = Guard(dir.clone());
    let meta = wingkv_tests::onebox::start_secure(&dir)?;
    let tls = dir.join("tls");
    let as_user = |user: &str| wingkv_security::TlsConfig {
        ca_file: tls.join("ca.crt"),
        cert_file: tls.join(format!("{user}.crt")),
        key_file: tls.join(format!("{user}.key")),
    };
    let mut admin_config = wingkv_client::ClientConfig::new([meta.clone()]);
    admin_config.tls = Some(as_user("admin"));
    let opts =
        wingkv_client::CreateTableOptions { partition_count: Some(4), replica_count: Some(3), ..Default::default() };
    wingkv_client::Admin::new(admin_config)?.create_table("lin", opts).await?;
    let nodes: Vec<String> = ["meta1", "replica1", "replica2", "replica3"].map(String::from).to_vec();
    let workload = Workload { tls: Some(as_user("user1")), ..Default::default() };
    let schedule = faults::schedule(seed, &nodes, 100);
    let run = faults::run(&dir, &meta, "lin", &workload, seed, Duration::from_secs(seconds), &schedule).await?;
    let report = linearizability::check(&run.history, CHECK_BUDGET);
    let lost = linearizability::lost_acknowledged_writes(&run.history, &run.final_values);
    let metas = [meta.clone()];
    faults::wait_converged_as(&metas, "lin", Duration::from_secs(120), Some(as_user("meta1"))).await?;
    println!("secure schedule seed {seed}: {} ops, {} faults: {report}", run.history.events.len(), run.faults.len());
    match report.verdict {
        Verdict::Ok => {}
        Verdict::Violation(v) => bail!("secure schedule seed {seed}: not linearizable:\n{v}"),
        Verdict::Unknown => bail!("secure schedule seed {seed}: the checker ran out of budget: {report}"),
    }
    ensure!(lost.is_empty(), "secure schedule seed {seed}: acknowledged writes lost on keys {lost:?}");
    ensure!(!run.faults.is_empty(), "secure schedule seed {seed}: no fault was injected");
    ensure!(run.history.events.len() > 100, "secure schedule seed {seed}: too few operations to mean anything");
    Ok(())
}
