//! Driving `wingkv onebox` from tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::bin_path;

/// Runs `wingkv onebox ARGS --dir DIR`.
pub fn onebox(dir: &Path, args: &[&str]) -> Result<String> {
    onebox_env(dir, args, &[])
}

/// [`onebox`] with extra environment variables (a `start` passes them on to every server).
pub fn onebox_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = Command::new(bin_path("wingkv"));
    cmd.arg("onebox").args(args).arg("--dir").arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "onebox {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Stops the onebox when the test ends, however it ends.
pub struct Guard(pub PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = onebox(&self.0, &["stop"]);
    }
}

/// `n` consecutive free loopback ports.
pub fn free_ports(n: u16) -> Result<u16> {
    for _ in 0..50 {
        let base = crate::free_port()?;
        if base > u16::MAX - n {
            continue;
        }
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    bail!("no {n} consecutive free ports")
}

/// Starts a onebox (1 meta, 3 replicas) in `dir` on free ports; returns the meta address.
pub fn start(dir: &Path) -> Result<String> {
    start_with(dir, "")
}

/// Like [`start`], appending `replica_config` (TOML) to every replica server's config.
pub fn start_with(dir: &Path, replica_config: &str) -> Result<String> {
    start_configured(dir, "", replica_config)
}

/// Like [`start`], appending `meta_config` to every meta server's config and `replica_config`
/// to every replica server's (TOML).
pub fn start_configured(dir: &Path, meta_config: &str, replica_config: &str) -> Result<String> {
    start_configured_env(dir, meta_config, replica_config, &[])
}

/// Like [`start_configured`], with extra environment variables for every server.
pub fn start_configured_env(
    dir: &Path,
    meta_config: &str,
    replica_config: &str,
    env: &[(&str, &str)],
) -> Result<String> {
    start_onebox(dir, meta_config, replica_config, env, &[])
}

/// Starts a secure onebox (`--secure`: mutual TLS, certificates under `DIR/tls`, users `admin`
/// and `user1`) on free ports; returns the meta address.
pub fn start_secure(dir: &Path) -> Result<String> {
    start_onebox(dir, "", "", &[], &["--secure"])
}

/// Starts a onebox of 3 replica servers whose ports are the first of `replica_ports` free
/// ones, so that `onebox add` finds the next ones free; returns the meta address.
pub fn start_reserving(dir: &Path, replica_ports: u16, replica_config: &str) -> Result<String> {
    start_onebox_on(dir, "", replica_config, &[], &[], replica_ports)
}

/// [`start_reserving`] with `env` set for the onebox (its servers inherit it, e.g. `FAILPOINTS`,
/// including those `onebox add` starts later).
pub fn start_reserving_with_env(
    dir: &Path,
    replica_ports: u16,
    replica_config: &str,
    env: &[(&str, &str)],
) -> Result<String> {
    start_onebox_on(dir, "", replica_config, env, &[], replica_ports)
}

fn start_onebox(
    dir: &Path,
    meta_config: &str,
    replica_config: &str,
    env: &[(&str, &str)],
    flags: &[&str],
) -> Result<String> {
    start_onebox_on(dir, meta_config, replica_config, env, flags, 3)
}

fn start_onebox_on(
    dir: &Path,
    meta_config: &str,
    replica_config: &str,
    env: &[(&str, &str)],
    flags: &[&str],
    replica_ports: u16,
) -> Result<String> {
    // One run of free ports for all: two runs chosen apart could overlap (the meta's port is not
    // bound yet when the replicas' are chosen), and a replica server would then never come up.
    let base = free_ports(replica_ports.max(3) + 1)?;
    let meta_port = base.to_string();
    let replica = (base + 1).to_string();
    std::fs::create_dir_all(dir)?;
    let meta_extra = dir.join("meta-extra.toml");
    std::fs::write(&meta_extra, meta_config)?;
    let replica_extra = dir.join("replica-extra.toml");
    std::fs::write(&replica_extra, replica_config)?;
    let (meta_extra, replica_extra) = (meta_extra.display().to_string(), replica_extra.display().to_string());
    let mut args = vec![
        "start",
        "--base-port-meta",
        &meta_port,
        "--base-port-replica",
        &replica,
        "--meta-config",
        &meta_extra,
        "--replica-config",
        &replica_extra,
        // Tests find the HTTP endpoints through `http.addr`: no port clash with anything.
        "--http-port-offset",
        "0",
    ];
    args.extend_from_slice(flags);
    onebox_env(dir, &args, env)?;
    Ok(format!("127.0.0.1:{base}"))
}
