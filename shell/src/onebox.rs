//! Placeholder until the onebox supervisor lands (being written now).
use clap::Args;

/// Arguments of `wingkv onebox`.
#[derive(Args, Debug)]
pub struct OneboxArgs {}

/// Runs `wingkv onebox`.
pub fn run(_args: OneboxArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the onebox is not built yet")
}
