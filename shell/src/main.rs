//! `wingkv`: the command line of wingkv — the interactive shell, the onebox supervisor, the
//! bulk-load generator and the benchmarks.

mod bench;
mod bulkgen;
mod cert;
mod shell;
mod supervisor;
mod tls_args;

use clap::{Parser, Subcommand};

/// wingkv command line.
#[derive(Parser, Debug)]
#[command(name = "wingkv", version, about = "wingkv: shell, local cluster (onebox), tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pegasus-style shell on a cluster.
    Shell(shell::ShellArgs),
    /// Write rows as the bulk-load layout on a provider: per-partition sorted SST files, their
    /// bulk_load_metadata and the table's bulk_load_info, ready for start_bulk_load.
    Bulkgen(bulkgen::BulkgenArgs),
    /// A local cluster of meta and replica servers under one supervisor.
    Onebox(supervisor::OneboxArgs),
    /// Benchmarks: YCSB workloads and bulk load, against any cluster.
    Bench(bench::BenchArgs),
    /// Certificates of a secure cluster: a CA, server and user certificates.
    Cert(cert::CertArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Shell(args) => shell::run(args),
        Command::Onebox(args) => supervisor::run(args),
        Command::Bulkgen(args) => bulkgen::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Cert(args) => cert::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
