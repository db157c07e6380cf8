//! Placeholder until the shell lands.
use clap::Args;

/// Arguments of `wingkv shell`.
#[derive(Args, Debug)]
pub struct ShellArgs {}

/// Runs `wingkv shell`.
pub fn run(_args: ShellArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the shell is not built yet")
}
