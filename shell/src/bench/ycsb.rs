//! `wingkv bench ycsb`: YCSB's core workloads against a wingkv cluster through the SDK.
//!
//! Record `i` is `(hash_key, sort_key)` per [`KeyLayout`]: `--records-per-hash-key` consecutive
//! records share a hash key, because wingkv (like Pegasus) scans within one hash key. A YCSB
//! scan reads up to `--max-scan-length` records of a hash key from a chosen record on, in one
//! `multi_get` request. Reads are linearizable gets; updates and inserts are replicated sets.
//! `--system etcd` runs the same phases against etcd v3 (see [`super::system`]), and every
//! phase reports the CPU the servers and this client spent per operation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wingkv_client::{Client, ClientConfig};

use super::cpu::CpuProbe;
use super::keys::{Distribution, KeyChooser, KeyLayout};
use super::stats::Stats;
use super::system::{EtcdKv, System, SystemKind};

/// Which phase to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Insert records `0..--records`.
    Load,
    /// Run `--operations` operations of the workload's mix.
    Run,
}

/// YCSB's core workload presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Update heavy: 50% reads, 50% updates.
    A,
    /// Read mostly: 95% reads, 5% updates.
    B,
    /// Read only.
    C,
    /// Short ranges: 95% scans, 5% inserts.
    E,
}

/// The operation mix, as proportions that add up to 1.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mix {
    read: f64,
    update: f64,
    insert: f64,
    scan: f64,
}

impl Workload {
    fn mix(self) -> Mix {
        let (read, update, insert, scan) = match self {
            Workload::A => (0.5, 0.5, 0.0, 0.0),
            Workload::B => (0.95, 0.05, 0.0, 0.0),
            Workload::C => (1.0, 0.0, 0.0, 0.0),
            Workload::E => (0.0, 0.0, 0.05, 0.95),
        };
        Mix { read, update, insert, scan }
    }
}

/// Arguments of `wingkv bench ycsb`.
#[derive(Args, Debug, Clone)]
pub struct YcsbArgs {
    /// `load` inserts the records; `run` runs the workload on them.
    #[arg(value_enum)]
    pub phase: Phase,
    /// Meta server addresses, comma separated (with `--system etcd`: etcd's client endpoints).
    #[arg(long, default_value = "127.0.0.1:34601", value_delimiter = ',')]
    pub meta: Vec<String>,
    /// The system measured.
    #[arg(long, value_enum, default_value = "wingkv")]
    pub system: SystemKind,
    #[command(flatten)]
    pub tls: crate::tls_args::TlsArgs,
    /// Target table.
    #[arg(long, default_value = "usertable")]
    pub table: String,
    /// Create the table when it does not exist, with `--partitions` and `--replicas`.
    #[arg(long)]
    pub create: bool,
    /// Partitions of a table `--create` makes.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Replicas per partition of a table `--create` makes.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Records in the table (what `load` inserts, what `run` picks from).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Operations of `run`.
    #[arg(long, default_value_t = 100_000)]
    pub operations: u64,
    /// Stop a phase after this many seconds even if operations remain.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Workload preset.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// Override the preset's read proportion (0..1); likewise --update, --insert, --scan.
    #[arg(long)]
    pub read: Option<f64>,
    /// Override the update proportion.
    #[arg(long)]
    pub update: Option<f64>,
    /// Override the insert proportion.
    #[arg(long)]
    pub insert: Option<f64>,
    /// Override the scan proportion.
    #[arg(long)]
    pub scan: Option<f64>,
    /// How records are picked.
    #[arg(long, value_enum, default_value = "zipfian")]
    pub distribution: Distribution,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Concurrent requests (client tasks).
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// SDK clients the tasks share (each has its own connections).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// OS threads the bench client's tasks run on (tokio workers); 0 = one per core. On a
    /// machine whose cores the servers share, 1 keeps the client's wakeups on one thread.
    #[arg(long, default_value_t = 0)]
    pub client_threads: usize,
    /// Total operations per second to aim at (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub target: u64,
    /// Longest scan, in records (each scan reads 1..=this).
    #[arg(long, default_value_t = 10)]
    pub max_scan_length: u64,
    /// Records under one hash key (load and run must agree).
    #[arg(long, default_value_t = 10)]
    pub records_per_hash_key: u64,
    /// Seed of key choices and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print nothing (a caller reports).
    #[arg(skip)]
    pub quiet: bool,
    /// Also report, per second of the run, the operations that ended in it and their longest
    /// latency and service time (from the request's send).
    #[arg(skip)]
    pub timeline: bool,
}

impl YcsbArgs {
    fn mix(&self) -> Result<Mix> {
        let base = self.workload.mix();
        let m = Mix {
            read: self.read.unwrap_or(base.read),
            update: self.update.unwrap_or(base.update),
            insert: self.insert.unwrap_or(base.insert),
            scan: self.scan.unwrap_or(base.scan),
        };
        let all = [m.read, m.update, m.insert, m.scan];
        if all.iter().any(|p| !(0.0..=1.0).contains(p)) {
            bail!("operation proportions must be between 0 and 1 (got {m:?})");
        }
        let sum: f64 = all.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            bail!("operation proportions must add up to 1 (read+update+insert+scan = {sum})");
        }
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        if self.threads == 0 || self.connections == 0 {
            bail!("--threads and --connections must be at least 1");
        }
        if self.records == 0 || self.records_per_hash_key == 0 || self.max_scan_length == 0 {
            bail!("--records, --records-per-hash-key and --max-scan-length must be at least 1");
        }
        Ok(())
    }
}

/// One operation of the mix.
#[derive(Debug, Clone, Copy)]
enum Op {
    Read,
    Update,
    Insert,
    Scan,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Scan => "scan",
        }
    }

    fn pick(mix: &Mix, rng: &mut impl Rng) -> Op {
        let u: f64 = rng.gen();
        if u < mix.read {
            Op::Read
        } else if u < mix.read + mix.update {
            Op::Update
        } else if u < mix.read + mix.update + mix.insert {
            Op::Insert
        } else {
            Op::Scan
        }
    }
}

/// What every worker of a phase shares.
struct Plan {
    phase: Phase,
    mix: Mix,
    layout: KeyLayout,
    chooser: KeyChooser,
    value_size: usize,
    max_scan: u64,
    /// Operations to issue in all.
    limit: u64,
    /// Operations issued so far (for `load`: the next record number).
    issued: AtomicU64,
    /// Record number of the next insert of `run`.
    next_insert: AtomicU64,
    deadline: Option<Instant>,
    stop: AtomicBool,
    /// Delay between two operations of one worker (0 = none), from `--target`.
    pace: Duration,
    /// When the run started, and per second since: (operations, longest latency µs, longest
    /// service time µs), if asked for.
    started: Instant,
    timeline: Option<std::sync::Mutex<Vec<[u64; 3]>>>,
}

/// Runs `wingkv bench ycsb`; prints the report and answers it as JSON.
pub async fn run(args: YcsbArgs) -> Result<Value> {
    run_until(args, CancellationToken::new()).await
}

/// Like [`run`], ending early (requests in flight finished) when `stop` fires.
pub async fn run_until(args: YcsbArgs, stop: CancellationToken) -> Result<Value> {
    args.validate()?;
    let mix = args.mix()?;
    let mut tables = Vec::with_capacity(args.connections);
    let mut probe: Result<CpuProbe> = Err(anyhow::anyhow!("no client was opened"));
    match args.system {
        SystemKind::Wingkv => {
            for _ in 0..args.connections {
                let mut config = ClientConfig::new(args.meta.clone());
                config.tls = args.tls.config()?;
                config.request_timeout = Duration::from_secs(10);
                let client = Client::with_config(config).await?;
                if tables.is_empty() {
                    if args.create {
                        super::ensure_table(&client, &args.table, args.partitions, args.replicas).await?;
                    }
                    probe = CpuProbe::wingkv(&client, &args.meta).await;
                }
                tables.push(System::Wingkv(client.open_table(&args.table).await?));
            }
        }
        SystemKind::Etcd => {
            tables.push(System::Etcd(EtcdKv::connect(&args.meta, args.connections).await?));
            probe = Ok(CpuProbe::etcd(&args.meta));
        }
    }
    // CPU per operation is reported when every server's /metrics answers; the phase runs
    // either way.
    let cpu_before = match &probe {
        Ok(p) => p.sample().await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let limit = match args.phase {
        Phase::Load => args.records,
        Phase::Run => args.operations,
    };
    let pace = match args.target {
        0 => Duration::ZERO,
        t => Duration::from_secs_f64(args.threads as f64 / t as f64),
    };
    let plan = Arc::new(Plan {
        phase: args.phase,
        mix,
        layout: KeyLayout { records_per_hash_key: args.records_per_hash_key },
        chooser: KeyChooser::new(args.distribution, args.records),
        value_size: args.value_size,
        max_scan: args.max_scan_length,
        limit,
        issued: AtomicU64::new(0),
        next_insert: AtomicU64::new(args.records),
        deadline: args.duration_secs.map(|s| Instant::now() + Duration::from_secs(s)),
        stop: AtomicBool::new(false),
        pace,
        started: Instant::now(),
        timeline: args.timeline.then(|| std::sync::Mutex::new(Vec::new())),
    });
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for w in 0..args.threads {
        let table = tables[w % tables.len()].clone();
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(w as u64);
        // Paced workers start spread over one period, so `--target` does not send in bursts.
        let offset = plan.pace.mul_f64(w as f64 / args.threads as f64);
        workers.spawn(worker(table, plan.clone(), seed, offset));
    }
    let mut stats = Stats::default();
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(r) => stats.merge(r??)?,
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                plan.stop.store(true, Ordering::Relaxed);
                eprintln!("interrupted: waiting for requests in flight");
            }
            _ = stop.cancelled(), if !interrupted => {
                interrupted = true;
                plan.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let elapsed = started.elapsed();
    let phase = match args.phase {
        Phase::Load => "load",
        Phase::Run => "run",
    };
    let mut report = stats.to_json(phase, elapsed);
    let cpu = match (&probe, cpu_before) {
        (Ok(p), Ok(before)) => p.sample().await.map(|after| before.report(&after, stats.total_ok())),
        (_, Err(e)) => Err(e),
        (Err(e), _) => Err(anyhow::anyhow!("{e:#}")),
    };
    report["cpu"] = match &cpu {
        Ok(c) => c.clone(),
        Err(e) => json!({ "error": format!("{e:#}") }),
    };
    if let Some(t) = &plan.timeline {
        let t = t.lock().map_err(|_| anyhow::anyhow!("a worker panicked while it held the timeline"))?;
        report["timeline"] = json!(*t);
    }
    report["config"] = json!({
        "table": args.table, "records": args.records, "operations": args.operations,
        "system": args.system, "workload": format!("{:?}", args.workload), "mix": mix, "distribution": args.distribution,
        "value_size": args.value_size, "threads": args.threads, "connections": args.connections,
        "client_threads": args.client_threads,
        "target": args.target, "records_per_hash_key": args.records_per_hash_key,
        "max_scan_length": args.max_scan_length, "interrupted": interrupted,
    });
    if args.json && !args.quiet {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !args.quiet {
        println!("{}", stats.to_text(phase, elapsed));
        match &cpu {
            Ok(c) => println!("{}", super::cpu::text(c)),
            Err(e) => println!("  cpu per op: unknown ({e:#})"),
        }
    }
    Ok(report)
}

async fn worker(table: System, plan: Arc<Plan>, seed: u64, offset: Duration) -> Result<Stats> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut stats = Stats::default();
    let mut value = vec![0u8; plan.value_size];
    let mut next_at = Instant::now() + offset;
    loop {
        if plan.stop.load(Ordering::Relaxed) || plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = plan.issued.fetch_add(1, Ordering::Relaxed);
        if n >= plan.limit {
            break;
        }
        // Paced, an operation's latency counts from when it was due, not from when a worker
        // that fell behind got to it (no coordinated omission).
        let due = next_at;
        if !plan.pace.is_zero() {
            tokio::time::sleep_until(due.into()).await;
            next_at += plan.pace;
        }
        let op = match plan.phase {
            Phase::Load => Op::Insert,
            Phase::Run => Op::pick(&plan.mix, &mut rng),
        };
        let record = match (plan.phase, op) {
            (Phase::Load, _) => n,
            (Phase::Run, Op::Insert) => plan.next_insert.fetch_add(1, Ordering::Relaxed),
            (Phase::Run, _) => plan.chooser.next(&mut rng),
        };
        let (hk, sk) = plan.layout.key(record);
        let sent = Instant::now();
        let started = if plan.pace.is_zero() { sent } else { due };
        let outcome = match op {
            Op::Read => table.get(&hk, &sk).await,
            Op::Update | Op::Insert => {
                rng.fill_bytes(&mut value);
                table.set(&hk, &sk, &value).await.map(|_| true)
            }
            Op::Scan => table.scan(&hk, &sk, rng.gen_range(1..=plan.max_scan) as u32).await,
        };
        if let Some(t) = &plan.timeline {
            let second = plan.started.elapsed().as_secs() as usize;
            let (latency, service) = (started.elapsed().as_micros() as u64, sent.elapsed().as_micros() as u64);
            if let Ok(mut t) = t.lock() {
                if t.len() <= second {
                    t.resize(second + 1, [0; 3]);
                }
                let slot = &mut t[second];
                slot[0] += 1;
                slot[1] = slot[1].max(latency);
                slot[2] = slot[2].max(service);
            }
        }
        match outcome {
            Ok(true) => stats.ok(op.name(), started.elapsed())?,
            Ok(false) => {
                stats.ok(op.name(), started.elapsed())?;
                stats.miss(op.name())?;
            }
            Err(e) => stats.error(op.name(), &e)?,
        }
    }
    Ok(stats)
}
