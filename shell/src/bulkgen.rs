//! `wingkv bulkgen`: turns rows into the bulk-load layout of DESIGN §5 — partitioned with the
//! servers' hash, sorted, written as SST files with RocksDB's `SstFileWriter` (rolled at a size
//! limit), with each partition's `bulk_load_metadata` and the table's `bulk_load_info`, on a
//! provider. `bulk_load_info` is written last, so a reader never sees a half-written layout.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rand::{RngCore, SeedableRng};
use wingkv_common::bulk_load::{table_dir, BulkLoadInfo, BulkLoadMetadata};
use wingkv_common::bulk_writer::{upload_partition, write_info, PartitionWriter};
use wingkv_common::hash::partition_index;
use wingkv_common::key::encode_key;
use wingkv_common::naming::{validate_partition_count, validate_table_name};
use wingkv_common::provider::{open_provider, ProviderConfig};
use wingkv_common::value::{encode_value, expire_ts_for_ttl, now_epoch_seconds};

/// Arguments of `wingkv bulkgen`.
#[derive(Args, Debug)]
pub struct BulkgenArgs {
    /// Its closing summary goes to stderr (a caller whose stdout is its own report).
    #[arg(skip)]
    pub summary_to_stderr: bool,
    /// Table name (must match the table the files are loaded into).
    #[arg(long)]
    pub table: String,
    /// Partition count of that table.
    #[arg(long)]
    pub partitions: u32,
    /// Cluster name (the onebox's is `onebox`).
    #[arg(long, default_value = "onebox")]
    pub cluster: String,
    /// Provider: local, s3 or memory.
    #[arg(long, default_value = "local")]
    pub provider: String,
    /// Root directory on the provider.
    #[arg(long)]
    pub root: String,
    /// Input rows, CSV or TSV: hash_key,sort_key,value[,ttl_seconds].
    #[arg(long, conflicts_with = "generate")]
    pub input: Option<PathBuf>,
    /// Generate this many rows instead (keys `k{i}`, sort key `s`, random values).
    #[arg(long)]
    pub generate: Option<u64>,
    /// Value size of generated rows.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Roll to a new SST file after this many MiB.
    #[arg(long, default_value_t = 64)]
    pub file_size_mb: u64,
    /// Seed of generated values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Provider config file (TOML: local_root, [s3] endpoint, bucket, ...).
    #[arg(long)]
    pub provider_config: Option<PathBuf>,
    /// Table id written into bulk_load_info (informational).
    #[arg(long, default_value_t = 0)]
    pub app_id: u32,
}

/// A row: encoded key and stored value.
type Row = (Vec<u8>, Vec<u8>);

/// Runs `wingkv bulkgen`.
pub fn run(args: BulkgenArgs) -> Result<ExitCode> {
    validate_table_name(&args.table)?;
    validate_partition_count(args.partitions)?;
    let mut config: ProviderConfig = match &args.provider_config {
        Some(p) => wingkv_common::config::load_toml(p)?,
        None => ProviderConfig::default(),
    };
    // The generator writes as its user, with that user's rights: `/` is the natural root.
    config.default_local_root(false);
    let store = open_provider(&args.provider, &config)?;
    let started = Instant::now();
    let parts = match (&args.input, args.generate) {
        (Some(path), None) => read_rows(path, args.partitions)?,
        (None, Some(n)) => generate_rows(n, args.value_size, args.seed, args.partitions),
        _ => bail!("give either --input FILE or --generate N"),
    };
    let rows: usize = parts.iter().map(Vec::len).sum();
    eprintln!("bulkgen: {rows} rows partitioned in {:.1?}", started.elapsed());
    let staging = tempfile_dir()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dir = table_dir(&args.root, &args.cluster, &args.table)?;
    let mut total_bytes = 0u64;
    for (pidx, mut rows) in parts.into_iter().enumerate() {
        sort_dedup(&mut rows);
        let local = staging.path().join(pidx.to_string());
        let meta = write_ssts(&local, &rows, args.file_size_mb << 20)?;
        total_bytes += meta.file_total_size;
        rt.block_on(upload_partition(&store, &dir, pidx as u32, &local, &meta))?;
        eprintln!(
            "bulkgen: partition {pidx}/{}: {} rows, {} files, {} bytes",
            args.partitions,
            rows.len(),
            meta.files.len(),
            meta.file_total_size
        );
    }
    let info = BulkLoadInfo { app_id: args.app_id, app_name: args.table.clone(), partition_count: args.partitions };
    rt.block_on(write_info(&store, &dir, &info))?;
    let summary = format!(
        "bulkgen: wrote {rows} rows in {} partitions ({total_bytes} bytes of SST) to {}://{} in {:.1?}",
        args.partitions,
        args.provider,
        dir,
        started.elapsed()
    );
    if args.summary_to_stderr {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("wingkv-bulkgen-").tempdir().context("create a staging directory")
}

fn sort_dedup(rows: &mut Vec<Row>) {
    // Stable sort keeps input order among equal keys; the last one wins.
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for row in rows.drain(..) {
        match out.last_mut() {
            Some(last) if last.0 == row.0 => *last = row,
            _ => out.push(row),
        }
    }
    *rows = out;
}

/// The rows `bulkgen --generate` writes, in order: hash key `k{i}`, sort key `s`, a printable
/// random value from a seeded RNG, so `wingkv bench bulkload` can write the very same rows
/// through the SDK.
pub struct GeneratedRows {
    next: u64,
    end: u64,
    rng: rand::rngs::StdRng,
    value: Vec<u8>,
}

impl GeneratedRows {
    /// Rows `0..n` with values of `value_size` bytes from `seed`.
    pub fn new(n: u64, value_size: usize, seed: u64) -> Self {
        Self { next: 0, end: n, rng: rand::rngs::StdRng::seed_from_u64(seed), value: vec![0u8; value_size] }
    }
}

impl Iterator for GeneratedRows {
    /// `(hash_key, value)`; the sort key is always `s`.
    type Item = (String, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let hk = format!("k{}", self.next);
        self.next += 1;
        self.rng.fill_bytes(&mut self.value);
        // Printable values keep the shell's output readable.
        for b in self.value.iter_mut() {
            *b = b'a' + (*b % 26);
        }
        Some((hk, self.value.clone()))
    }
}

/// The sort key of every generated row.
pub const GENERATED_SORT_KEY: &[u8] = b"s";

fn generate_rows(n: u64, value_size: usize, seed: u64, partitions: u32) -> Vec<Vec<Row>> {
    let mut parts: Vec<Vec<Row>> = (0..partitions).map(|_| Vec::new()).collect();
    for (i, (hk, value)) in GeneratedRows::new(n, value_size, seed).enumerate() {
        let pidx = partition_index(hk.as_bytes(), GENERATED_SORT_KEY, partitions) as usize;
        if let Ok(key) = encode_key(hk.as_bytes(), GENERATED_SORT_KEY) {
            parts[pidx].push((key, encode_value(0, &value)));
        }
        if (i + 1) % 1_000_000 == 0 {
            eprintln!("bulkgen: generated {} rows", i + 1);
        }
    }
    parts
}

fn read_rows(path: &Path, partitions: u32) -> Result<Vec<Vec<Row>>> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut first = [0u8; 4096];
    let n = file.read(&mut first)?;
    let tab = first[..n].contains(&b'\t') || path.extension().is_some_and(|e| e == "tsv");
    let file = std::fs::File::open(path)?;
    let sep = if tab { '\t' } else { ',' };
    let now = now_epoch_seconds();
    let mut parts: Vec<Vec<Row>> = (0..partitions).map(|_| Vec::new()).collect();
    for (lineno, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), lineno + 1))?;
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(sep).collect();
        let (hk, sk, v, ttl) = match fields.as_slice() {
            [hk, sk, v] => (*hk, *sk, *v, 0u32),
            [hk, sk, v, ttl] => (
                *hk,
                *sk,
                *v,
                ttl.trim()
                    .parse()
                    .map_err(|_| anyhow!("{}:{}: ttl '{ttl}' is not a number", path.display(), lineno + 1))?,
            ),
            _ => bail!(
                "{}:{}: expected hash_key{sep}sort_key{sep}value[{sep}ttl], got {} fields",
                path.display(),
                lineno + 1,
                fields.len()
            ),
        };
        let key =
            encode_key(hk.as_bytes(), sk.as_bytes()).map_err(|e| anyhow!("{}:{}: {e}", path.display(), lineno + 1))?;
        let pidx = partition_index(hk.as_bytes(), sk.as_bytes(), partitions) as usize;
        parts[pidx].push((key, encode_value(expire_ts_for_ttl(now, ttl), v.as_bytes())));
    }
    Ok(parts)
}

/// Writes sorted, deduplicated `rows` into SST files of about `limit` bytes under `dir`.
fn write_ssts(dir: &Path, rows: &[Row], limit: u64) -> Result<BulkLoadMetadata> {
    let mut writer = PartitionWriter::new(dir, limit, None)?;
    for (key, value) in rows {
        writer.put(key, value)?;
    }
    Ok(writer.finish()?)
}
