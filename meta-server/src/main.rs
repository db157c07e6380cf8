//! `meta-server`: runs one wingkv meta server.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use wingkv_meta_server::config::{MetaPeer, MetaServerConfig};
use wingkv_meta_server::server::MetaServer;

/// wingkv meta server.
#[derive(Parser, Debug)]
#[command(name = "meta-server", version)]
struct Args {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This meta's raft id (> 0).
    #[arg(long)]
    id: Option<u64>,
    /// gRPC listen address, host:port.
    #[arg(long)]
    listen: Option<String>,
    /// Address other metas and clients reach this one at (default: the bound address).
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Members of the meta group as ID=HOST:PORT, comma separated (this one included).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Cluster name.
    #[arg(long)]
    cluster_name: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn parse_peer(s: &str) -> anyhow::Result<MetaPeer> {
    let (id, address) = s.split_once('=').with_context(|| format!("peer '{s}' is not ID=HOST:PORT"))?;
    Ok(MetaPeer { id: id.parse().with_context(|| format!("peer id '{id}' is not a number"))?, address: address.into() })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    wingkv_common::telemetry::init_tracing(args.log_json);
    let mut config: MetaServerConfig = match &args.config {
        Some(path) => wingkv_common::config::load_toml(path)?,
        None => MetaServerConfig::default(),
    };
    if let Some(v) = args.id {
        config.id = v;
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
    if let Some(v) = args.cluster_name {
        config.cluster_name = v;
    }
    if !args.peers.is_empty() {
        config.peers = args.peers.iter().map(|p| parse_peer(p)).collect::<anyhow::Result<_>>()?;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async move {
        let server = MetaServer::start(config).await?;
        server.run_until(wingkv_common::net::shutdown_signal()).await?;
        Ok(())
    })
}
