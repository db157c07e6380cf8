//! Processes seen from outside: liveness, command lines, signals, and the supervisor's lock.
//! Linux only (`/proc`, `flock`, `prctl`), like the onebox itself.

use std::ffi::OsStr;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::layout::NodeState;

/// Whether `pid` is a live process. A zombie (exited, not yet reaped by its parent — which
/// may be an init that never reaps) is not: it runs no code and holds no port.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses and may itself
        // contain spaces and parentheses: hence the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// The command line of `pid`, if it is alive and readable.
fn cmdline(pid: u32) -> Option<Vec<Vec<u8>>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// Whether `pid` is a live process whose command line has the argument `arg`.
fn has_arg(pid: u32, arg: &OsStr) -> bool {
    alive(pid)
        && cmdline(pid).is_some_and(|args| args.iter().any(|a| a.as_slice() == arg.as_bytes()))
}

/// Whether `pid` is a live server process of `node`. Pids are reused: before signalling a pid
/// read from a file, check that it still is the node (its command line names the node's
/// config, which lives under the onebox dir).
pub fn runs_node(pid: u32, node: &NodeState) -> bool {
    has_arg(pid, node.config.as_os_str())
}

/// Whether `pid` is a live onebox supervisor (its command line has `supervise`).
pub fn runs_supervisor(pid: u32) -> bool {
    has_arg(pid, OsStr::new("supervise"))
}

/// Every live process that runs one of `nodes` (by command line), whoever started it:
/// what `stop` must leave none of.
pub fn node_processes<'a>(nodes: &'a [NodeState]) -> Vec<(&'a NodeState, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Some(args) = cmdline(pid) else { continue };
        for node in nodes {
            let config = node.config.as_os_str().as_bytes();
            if args.iter().any(|a| a.as_slice() == config) && alive(pid) {
                found.push((node, pid));
            }
        }
    }
    found
}

/// Sends `sig` to `pid`; `Ok(false)` when there is no such process.
pub fn signal(pid: u32, sig: libc::c_int) -> Result<bool> {
    let target = libc::pid_t::try_from(pid).map_err(|_| anyhow!("pid {pid} is out of range"))?;
    if target <= 0 {
        // kill(0 or negative) would signal a whole process group: never what we mean.
        return Err(anyhow!("refusing to signal pid {pid}"));
    }
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    if unsafe { libc::kill(target, sig) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(false);
    }
    Err(anyhow!("cannot signal pid {pid}: {err}"))
}

/// Polls `done` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An exclusive `flock` on a file, released when dropped or when the process dies (however it
/// dies). The descriptor is close-on-exec, so children never inherit the lock.
pub struct DirLock {
    _file: File,
}

fn open_lock(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// `flock(mode | LOCK_NB)`: `Ok(true)` when taken, `Ok(false)` when someone else holds it.
fn flock(file: &File, mode: libc::c_int, path: &Path) -> Result<bool> {
    // SAFETY: flock(2) on a descriptor this `File` owns.
    if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == ErrorKind::WouldBlock {
        return Ok(false);
    }
    Err(anyhow!("cannot lock {}: {err}", path.display()))
}

impl DirLock {
    /// Takes the lock, waiting up to `patience` for a holder to let go; `Ok(None)` when it is
    /// still held then. Waiting covers the instant during which a `status` or `stop` probes
    /// the lock ([`is_locked`]), which must not make a starting supervisor give up.
    pub fn acquire(path: &Path, patience: Duration) -> Result<Option<DirLock>> {
        let file = open_lock(path)?;
        let deadline = Instant::now() + patience;
        loop {
            if flock(&file, libc::LOCK_EX, path)? {
                return Ok(Some(DirLock { _file: file }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether someone (a running supervisor) holds the lock at `path`.
pub fn is_locked(path: &Path) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(anyhow!("cannot open {}: {e}", path.display())),
    };
    // A shared probe: it fails only against the supervisor's exclusive lock, and dropping the
    // file releases it at once.
    Ok(!flock(&file, libc::LOCK_SH, path)?)
}
