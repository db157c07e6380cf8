//! A steady YCSB workload that runs next to something else being measured (the balancer's
//! moves, a bulk load), at a fixed target rate, so that its latency before and during compare.

use serde_json::{json, Value};

use super::keys::Distribution;
use super::ycsb::{Phase, Workload, YcsbArgs};

/// The shape of a steady workload on a table loaded before (e.g. by `bench ycsb load`).
#[derive(Debug, Clone)]
pub struct SteadyWorkload {
    /// Meta server addresses.
    pub meta: Vec<String>,
    /// TLS of the bench's client, if any.
    pub tls: crate::tls_args::TlsArgs,
    /// The table it runs on.
    pub table: String,
    /// Records in that table.
    pub records: u64,
    /// YCSB preset.
    pub workload: Workload,
    /// Operations per second it aims at (0: as fast as possible).
    pub target: u64,
    /// Concurrent requests.
    pub threads: usize,
    /// Value size of its updates.
    pub value_size: usize,
}

impl SteadyWorkload {
    /// The `ycsb run` arguments of this workload for at most `duration_secs`, with a
    /// per-second timeline and no output of its own.
    pub fn ycsb(&self, duration_secs: u64) -> YcsbArgs {
        YcsbArgs {
            phase: Phase::Run,
            meta: self.meta.clone(),
            system: super::system::SystemKind::Wingkv,
            tls: self.tls.clone(),
            table: self.table.clone(),
            create: false,
            partitions: 0,
            replicas: 0,
            records: self.records,
            operations: u64::MAX,
            duration_secs: Some(duration_secs),
            workload: self.workload,
            read: None,
            update: None,
            insert: None,
            scan: None,
            distribution: Distribution::Zipfian,
            value_size: self.value_size,
            threads: self.threads,
            connections: 2,
            client_threads: 0,
            target: self.target,
            max_scan_length: 10,
            records_per_hash_key: 10,
            seed: 1,
            json: false,
            quiet: true,
            timeline: true,
        }
    }
}

/// Throughput, errors and per-operation p50/p99 of a workload report, with its timeline.
pub fn summary(report: &Value) -> Value {
    let mut s = json!({
        "ops_per_sec": report["ops_per_sec"],
        "errors": report["errors"],
        "elapsed_sec": report["elapsed_sec"],
        // Per second: [operations, longest latency µs, longest service time µs].
        "timeline": report["timeline"],
    });
    if let Some(ops) = report["per_operation"].as_object() {
        for (op, o) in ops {
            s[format!("{op}_p50_us")] = o["p50_us"].clone();
            s[format!("{op}_p99_us")] = o["p99_us"].clone();
        }
    }
    s
}

/// One line of a summary: throughput, errors and each operation's p99.
pub fn line(s: &Value) -> String {
    let mut out = format!("{:.0} ops/s, errors {}", s["ops_per_sec"].as_f64().unwrap_or(0.0), s["errors"]);
    if let Some(o) = s.as_object() {
        for (k, v) in o.iter().filter(|(k, _)| k.ends_with("_p99_us")) {
            out.push_str(&format!(", {} p99 {v} us", k.trim_end_matches("_p99_us")));
        }
    }
    out
}
