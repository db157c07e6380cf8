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

/// Arms the fail points named in `FAILPOINTS` (`name=actions;…`, the `fail` crate's syntax), in
/// a build that has them (tests only); a build without them refuses the variable rather than
/// run a test that would silently inject nothing.
fn arm_failpoints() -> anyhow::Result<()> {
    let Ok(spec) = std::env::var("FAILPOINTS") else { return Ok(()) };
    #[cfg(feature = "failpoints")]
    for point in spec.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, actions) =
            point.split_once('=').with_context(|| format!("FAILPOINTS entry '{point}' is not name=actions"))?;
        fail::cfg(name.trim(), actions.trim()).map_err(|e| anyhow::anyhow!("FAILPOINTS entry '{point}': {e}"))?;
    }
    #[cfg(not(feature = "failpoints"))]
    anyhow::bail!(
        "FAILPOINTS is set ('{spec}') but this build has no fail points: build with \
         `--features wingkv-replica-server/failpoints` (the debug build of ./run.sh does)"
    );
    #[cfg(feature = "failpoints")]
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    wingkv_common::telemetry::init_tracing(args.log_json);
    arm_failpoints()?;
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
    wingkv_common::value::set_clock_offset_secs(config.test_clock_offset_secs);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async move {
        let server = ReplicaServer::start(config).await?;
        server.run_until(wingkv_common::net::shutdown_signal()).await?;
        Ok(())
    })
}
