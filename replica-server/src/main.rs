//! `replica-server`: runs one wingkv replica server.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use wingkv_replica_server::config::ReplicaServerConfig;
use wingkv_replica_server::server::ReplicaServer;

/// wingkv replica server.
#[derive(Parser, Debug)]
#[command(name = "replica-server", version)]
struct Args {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's raft node id (> 0).
    #[arg(long)]
    node_id: Option<u64>,
    /// gRPC listen address, host:port.
    #[arg(long)]
    listen: Option<String>,
    /// Address other nodes reach this one at (default: the bound address).
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    wingkv_common::telemetry::init_tracing(args.log_json);
    let mut config: ReplicaServerConfig = match &args.config {
        Some(path) => wingkv_common::config::load_toml(path)?,
        None => ReplicaServerConfig::default(),
    };
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.advertise {
        config.advertise = Some(v);
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async move {
        let server = ReplicaServer::start(config).await?;
        server.run_until(wingkv_common::net::shutdown_signal()).await?;
        Ok(())
    })
}
