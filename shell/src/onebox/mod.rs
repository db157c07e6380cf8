//! `wingkv onebox`: a local cluster of `meta-server` and `replica-server` child processes under
//! one supervisor (DESIGN §8).
//!
//! `start` writes every node's config under DIR and launches the supervisor as a detached
//! process (the hidden `onebox supervise`), then returns once the cluster serves. The other
//! subcommands talk to that supervisor through files under DIR and signals:
//!
//! | file | written by | meaning |
//! |---|---|---|
//! | `DIR/supervisor.lock` | supervisor (`flock`, held for its whole life) | a supervisor runs |
//! | `DIR/supervisor.pid` | supervisor | whom to signal |
//! | `DIR/state.json` | `start`, then the supervisor on every change | the nodes |
//! | `DIR/control/restart-NODE` | `restart` (followed by SIGHUP) | a graceful restart request |
//! | `DIR/supervisor.log` | supervisor | what it did and why |
//! | `DIR/NODE/{config.toml,data/,server.log}` | `start` / the node | one node |
//!
//! The lock, not the pid file, decides whether a supervisor runs: a pid file survives a
//! `kill -9` and its pid may be reused by an unrelated process, a `flock` dies with its holder.

mod commands;
mod layout;
mod process;
mod supervisor;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};


/// Arguments of `wingkv onebox`.
#[derive(Args, Debug)]
pub struct OneboxArgs {
    #[command(subcommand)]
    command: OneboxCommand,
    /// Directory of the onebox: configs, data, logs and the supervisor's state.
    #[arg(long, global = true, default_value = "./onebox")]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum OneboxCommand {
    /// Start a local cluster in the background; returns once it serves.
    Start(StartArgs),
    /// Stop the cluster and wait until none of its processes is left.
    Stop,
    /// Show the nodes: pid, port, state, restarts.
    Status {
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Gracefully restart one node, or every node one at a time; returns once it serves again.
    Restart {
        /// Node name (meta1.., replica1..); all nodes when omitted.
        node: Option<String>,
    },
    /// Kill a node with SIGKILL to simulate a crash; the supervisor restarts it with backoff.
    Kill {
        /// Node name (meta1.., replica1..).
        node: String,
    },
    /// Run the supervisor in the foreground (what `start` launches in the background).
    #[command(hide = true)]
    Supervise,
}

/// Options of `wingkv onebox start`. Omitted ones keep the values of the onebox already in DIR
/// (so a plain `start` brings back the cluster that was stopped), or take the defaults.
#[derive(Args, Debug, Clone, Copy)]
pub struct StartArgs {
    /// Meta servers (default 1).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=layout::MAX_METAS as i64))]
    metas: Option<u16>,
    /// Replica servers (default 3).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=layout::MAX_REPLICAS as i64))]
    replicas: Option<u16>,
    /// gRPC port of meta1; meta2 gets the next one, and so on (default 34601).
    #[arg(long)]
    base_port_meta: Option<u16>,
    /// gRPC port of replica1; replica2 gets the next one, and so on (default 34801).
    #[arg(long)]
    base_port_replica: Option<u16>,
}

/// Runs `wingkv onebox`.
pub fn run(args: OneboxArgs) -> Result<ExitCode> {
    let layout = layout::Layout::new(args.dir);
    match args.command {
        OneboxCommand::Start(start) => commands::start(&layout, start),
        OneboxCommand::Stop => commands::stop(&layout),
        OneboxCommand::Status { json } => commands::status(&layout, json),
        OneboxCommand::Restart { node } => commands::restart(&layout, node.as_deref()),
        OneboxCommand::Kill { node } => commands::kill(&layout, &node),
        OneboxCommand::Supervise => supervisor::supervise(&layout),
    }
}
