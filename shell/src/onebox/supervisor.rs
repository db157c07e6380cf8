//! The supervisor (`wingkv onebox supervise`): runs every node of a onebox as its child,
//! restarts a child that exits unexpectedly, and takes every child down with it.
//!
//! It is one thread on purpose. `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//! child exits, not the process; spawning from the main thread, which lives exactly as long as
//! the supervisor, makes "the supervisor died" and "the children get SIGKILL" the same event —
//! including after `kill -9` of the supervisor. The loop waits in `sigtimedwait` with SIGTERM,
//! SIGINT, SIGHUP and SIGCHLD blocked, so signals are handled synchronously (no handler races)
//! and a child's exit wakes it at once.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use wingkv_common::backoff::{Backoff, BackoffPolicy};

use super::layout::{
    write_atomic, Layout, NodeRole, NodeState, OneboxState, RunState, RESTART_PREFIX,
};
use super::process::{self, DirLock};

/// How long a child may take to exit after SIGTERM (shutdown or graceful restart) before it
/// gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A child that ran this long before it died starts over with the shortest backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Replica servers wait for the metas to serve at most this long before starting anyway (they
/// register with a meta at their first start; earlier they would only retry).
const META_HEAD_START: Duration = Duration::from_secs(15);
/// Longest sleep of the loop when no timer is due: a safety net for anything a signal would
/// have announced.
const TICK: Duration = Duration::from_millis(500);
/// How long a new supervisor waits for the lock (see [`DirLock::acquire`]).
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Delays between restarts of a crashing child.
fn restart_backoff() -> BackoffPolicy {
    BackoffPolicy::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// Runs the supervisor of the onebox in `layout` until SIGTERM or SIGINT.
pub fn supervise(layout: &Layout) -> Result<ExitCode> {
    // Before anything else: a SIGTERM that comes while children start must be handled by the
    // loop (which stops them), not kill the supervisor with its default action.
    let signals = SignalSet::block(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD])?;
    let Some(lock) = DirLock::acquire(&layout.lock_file(), LOCK_PATIENCE)? else {
        bail!(
            "another supervisor runs for {} (it holds {})",
            layout.dir().display(),
            layout.lock_file().display()
        );
    };
    let mut state = layout.read_state()?;
    let binaries = Binaries::locate()?;
    let pid = std::process::id();
    state.supervisor_pid = Some(pid);
    write_atomic(&layout.pid_file(), pid.to_string().as_bytes())?;
    log(format!(
        "supervisor pid {pid} starts {} nodes in {}",
        state.nodes.len(),
        layout.dir().display()
    ));
    let mut sup = Supervisor::new(layout, state, binaries, pid);
    let result = sup.run(&signals);
    // Whatever ended the loop, no child outlives the supervisor's exit.
    sup.kill_and_reap_all();
    sup.state.supervisor_pid = None;
    sup.publish();
    if let Err(e) = std::fs::remove_file(layout.pid_file()) {
        log(format!("cannot remove {}: {e}", layout.pid_file().display()));
    }
    drop(lock);
    match result {
        Ok(()) => {
            log("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            log(format!("stopped after an error: {e:#}"));
            Err(e)
        }
    }
}

/// The server binaries, next to the running `wingkv`.
pub struct Binaries {
    meta: PathBuf,
    replica: PathBuf,
}

impl Binaries {
    /// Finds both binaries, or names the one that is missing.
    pub fn locate() -> Result<Self> {
        let exe = std::env::current_exe().context("cannot locate the wingkv executable")?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
        let find = |role: NodeRole| -> Result<PathBuf> {
            let path = dir.join(role.binary());
            if !path.is_file() {
                bail!(
                    "{} is missing: the onebox runs the {} binary next to wingkv; build every \
                     binary with `./run.sh build` (or `cargo build --workspace --bins`)",
                    path.display(),
                    role.binary()
                );
            }
            Ok(path)
        };
        Ok(Self {
            meta: find(NodeRole::Meta)?,
            replica: find(NodeRole::Replica)?,
        })
    }

    fn of(&self, role: NodeRole) -> &Path {
        match role {
            NodeRole::Meta => &self.meta,
            NodeRole::Replica => &self.replica,
        }
    }
}

/// Signals taken out of asynchronous delivery and read with `sigtimedwait`.
struct SignalSet {
    set: libc::sigset_t,
}

impl SignalSet {
    /// Blocks `signals` for this (single) thread; children get an empty mask back (std resets
    /// it before exec, and [`spawn_child`] does it again to be independent of that).
    fn block(signals: &[libc::c_int]) -> Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned by this frame.
        unsafe {
            libc::sigemptyset(&mut set);
            for &sig in signals {
                libc::sigaddset(&mut set, sig);
            }
        }
        // SAFETY: a valid set; the old mask is not wanted.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            bail!(
                "cannot block signals: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok(Self { set })
    }

    /// The next pending signal of the set, waiting at most `timeout`.
    fn wait(&self, timeout: Duration) -> Option<libc::c_int> {
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below 10^9: fits every c_long.
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: siginfo_t is plain data the kernel fills.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to a set, an info buffer and a timeout, all live for the call.
        let sig = unsafe { libc::sigtimedwait(&self.set, &mut info, &ts) };
        // -1: the timeout passed (EAGAIN) or another signal interrupted (EINTR); the loop
        // looks at everything again either way.
        (sig > 0).then_some(sig)
    }
}

/// What comes after a child that was asked to exit has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterExit {
    /// A graceful restart: start it again at once.
    StartAgain,
    /// Shutdown: leave it down.
    StayDown,
}

/// Where one node is, with the process handle when there is one.
enum Phase {
    /// Not started yet: a replica server waits for the metas to serve.
    AwaitMetas,
    /// No process; start one at `at`.
    Scheduled { at: Instant },
    /// The process runs.
    Running { child: Child, since: Instant },
    /// The process was sent SIGTERM; it gets SIGKILL at `kill_at` if still there.
    Stopping {
        child: Child,
        kill_at: Instant,
        killed: bool,
        then: AfterExit,
    },
    /// No process, and none is coming.
    Down,
}

impl Phase {
    fn child(&self) -> Option<&Child> {
        match self {
            Phase::Running { child, .. } | Phase::Stopping { child, .. } => Some(child),
            _ => None,
        }
    }
}

/// A supervised node.
struct Node {
    state: NodeState,
    phase: Phase,
    backoff: Backoff,
}

struct Supervisor<'a> {
    layout: &'a Layout,
    /// The published state; its `nodes` are refreshed from `nodes` at every publish.
    state: OneboxState,
    nodes: Vec<Node>,
    binaries: Binaries,
    my_pid: u32,
    born: Instant,
    /// Set once SIGTERM/SIGINT came: then nothing starts any more.
    shutting_down: bool,
    /// Something in `nodes` changed since the last publish.
    dirty: bool,
}

impl<'a> Supervisor<'a> {
    fn new(layout: &'a Layout, mut state: OneboxState, binaries: Binaries, my_pid: u32) -> Self {
        let now = Instant::now();
        let nodes = std::mem::take(&mut state.nodes)
            .into_iter()
            .map(|mut s| {
                s.pid = None;
                s.state = RunState::Stopped;
                Node {
                    phase: match s.role {
                        NodeRole::Meta => Phase::Scheduled { at: now },
                        NodeRole::Replica => Phase::AwaitMetas,
                    },
                    state: s,
                    backoff: restart_backoff().start(),
                }
            })
            .collect();
        Self {
            layout,
            state,
            nodes,
            binaries,
            my_pid,
            born: now,
            shutting_down: false,
            dirty: true,
        }
    }

    /// The loop: until a stop signal came and every child is gone.
    fn run(&mut self, signals: &SignalSet) -> Result<()> {
        loop {
            if !self.shutting_down {
                // Read on every turn, not only on SIGHUP: a request is never lost to a
                // signal that was merged with another one.
                self.take_restart_requests();
            }
            self.reap();
            self.fire_timers();
            if self.dirty {
                self.publish();
            }
            if self.shutting_down && self.nodes.iter().all(|n| n.phase.child().is_none()) {
                return Ok(());
            }
            let now = Instant::now();
            let timeout = self
                .next_timer()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            match signals.wait(timeout) {
                Some(sig @ (libc::SIGTERM | libc::SIGINT)) => self.on_stop_signal(sig),
                // SIGHUP (a restart request) and SIGCHLD (a child exited) only wake the loop.
                _ => {}
            }
        }
    }

    fn on_stop_signal(&mut self, sig: libc::c_int) {
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        let now = Instant::now();
        if self.shutting_down {
            log(format!("{name} again: killing every node now"));
            for node in &mut self.nodes {
                if let Phase::Stopping { kill_at, .. } = &mut node.phase {
                    *kill_at = now;
                }
            }
            return;
        }
        log(format!(
            "{name}: stopping every node (SIGKILL after {STOP_GRACE:?})"
        ));
        self.shutting_down = true;
        for node in &mut self.nodes {
            let phase = std::mem::replace(&mut node.phase, Phase::Down);
            node.phase = match phase {
                Phase::Running { child, .. } => {
                    send(&node.state.name, &child, libc::SIGTERM);
                    node.state.state = RunState::Stopping;
                    Phase::Stopping {
                        child,
                        kill_at: now + STOP_GRACE,
                        killed: false,
                        then: AfterExit::StayDown,
                    }
                }
                Phase::Stopping {
                    child,
                    kill_at,
                    killed,
                    ..
                } => {
                    node.state.state = RunState::Stopping;
                    Phase::Stopping {
                        child,
                        kill_at: kill_at.min(now + STOP_GRACE),
                        killed,
                        then: AfterExit::StayDown,
                    }
                }
                Phase::AwaitMetas | Phase::Scheduled { .. } | Phase::Down => {
                    node.state.state = RunState::Stopped;
                    node.state.pid = None;
                    Phase::Down
                }
            };
        }
        self.dirty = true;
    }

    /// Graceful restarts asked for by `wingkv onebox restart` (files in the control dir).
    fn take_restart_requests(&mut self) {
        let dir = self.layout.control_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                log(format!("cannot read {}: {e}", dir.display()));
                return;
            }
        };
        let now = Instant::now();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix(RESTART_PREFIX))
            else {
                continue;
            };
            // Removing first makes the request count once, even if this turn fails below.
            if let Err(e) = std::fs::remove_file(entry.path()) {
                log(format!(
                    "cannot remove {}: {e}; ignoring it",
                    entry.path().display()
                ));
                continue;
            }
            let Some(node) = self.nodes.iter_mut().find(|n| n.state.name == name) else {
                log(format!("restart requested for unknown node '{name}'; ignored"));
                continue;
            };
            let phase = std::mem::replace(&mut node.phase, Phase::Down);
            node.phase = match phase {
                Phase::Running { child, .. } => {
                    log(format!(
                        "{name}: graceful restart requested; SIGTERM to pid {}",
                        child.id()
                    ));
                    send(name, &child, libc::SIGTERM);
                    node.state.state = RunState::Restarting;
                    node.state.graceful_restarts += 1;
                    Phase::Stopping {
                        child,
                        kill_at: now + STOP_GRACE,
                        killed: false,
                        then: AfterExit::StartAgain,
                    }
                }
                Phase::Scheduled { .. } => {
                    // Waiting out a crash backoff: the request means "now".
                    log(format!(
                        "{name}: restart requested while waiting to restart; starting it now"
                    ));
                    node.state.graceful_restarts += 1;
                    node.backoff.reset();
                    Phase::Scheduled { at: now }
                }
                other => {
                    log(format!(
                        "{name}: restart requested while it is {}; nothing to do",
                        node.state.state
                    ));
                    other
                }
            };
            self.dirty = true;
        }
    }

    /// Notices children that exited and decides what comes next for them.
    fn reap(&mut self) {
        let now = Instant::now();
        for node in &mut self.nodes {
            let exited = match &mut node.phase {
                Phase::Running { child, .. } | Phase::Stopping { child, .. } => {
                    match child.try_wait() {
                        Ok(Some(status)) => Some(describe_exit(status)),
                        Ok(None) => None,
                        // Only ECHILD is possible: the child is not ours to wait for any more,
                        // so it is gone as far as the supervisor can know.
                        Err(e) => Some(format!("lost track of it ({e})")),
                    }
                }
                _ => None,
            };
            let Some(how) = exited else { continue };
            let name = node.state.name.clone();
            let pid = node.state.pid.unwrap_or_default();
            let phase = std::mem::replace(&mut node.phase, Phase::Down);
            node.state.pid = None;
            node.state.started_at_ms = None;
            node.state.last_exit = Some(how.clone());
            node.phase = match phase {
                Phase::Running { since, .. } => {
                    if since.elapsed() >= STABLE_AFTER {
                        node.backoff.reset();
                    }
                    let delay = node.backoff.next_delay();
                    node.state.restarts += 1;
                    node.state.state = RunState::Restarting;
                    log(format!(
                        "{name} (pid {pid}) exited unexpectedly ({how}) after {:.1}s; restart #{} in {delay:?}",
                        since.elapsed().as_secs_f64(),
                        node.state.restarts
                    ));
                    Phase::Scheduled { at: now + delay }
                }
                Phase::Stopping {
                    then: AfterExit::StartAgain,
                    ..
                } => {
                    log(format!("{name} (pid {pid}) stopped ({how}); starting it again"));
                    node.state.state = RunState::Restarting;
                    Phase::Scheduled { at: now }
                }
                _ => {
                    log(format!("{name} (pid {pid}) stopped ({how})"));
                    node.state.state = RunState::Stopped;
                    Phase::Down
                }
            };
            self.dirty = true;
        }
    }

    /// Starts what is due and kills what overstayed its grace.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        let metas_serve = self
            .nodes
            .iter()
            .filter(|n| n.state.role == NodeRole::Meta)
            .all(|n| matches!(n.phase, Phase::Running { .. }) && n.state.serving());
        let metas_waited = self.born.elapsed() >= META_HEAD_START;
        for node in &mut self.nodes {
            match &mut node.phase {
                Phase::AwaitMetas if metas_serve || metas_waited => {
                    if !metas_serve {
                        log(format!(
                            "{}: the metas do not serve after {META_HEAD_START:?}; starting it anyway",
                            node.state.name
                        ));
                    }
                    node.phase = Phase::Scheduled { at: now };
                }
                Phase::Scheduled { at } if *at <= now && !self.shutting_down => {
                    node.phase = match spawn_child(&self.binaries, &node.state, self.my_pid) {
                        Ok(child) => {
                            log(format!("{} started (pid {})", node.state.name, child.id()));
                            node.state.pid = Some(child.id());
                            node.state.state = RunState::Running;
                            node.state.started_at_ms = Some(unix_ms());
                            Phase::Running { child, since: now }
                        }
                        Err(e) => {
                            let delay = node.backoff.next_delay();
                            log(format!(
                                "{}: cannot start: {e:#}; retrying in {delay:?}",
                                node.state.name
                            ));
                            node.state.state = RunState::Restarting;
                            node.state.last_exit = Some(format!("could not start: {e:#}"));
                            Phase::Scheduled { at: now + delay }
                        }
                    };
                    self.dirty = true;
                }
                Phase::Stopping {
                    child,
                    kill_at,
                    killed,
                    ..
                } if !*killed && *kill_at <= now => {
                    log(format!(
                        "{} (pid {}) still runs after SIGTERM; SIGKILL",
                        node.state.name,
                        child.id()
                    ));
                    send(&node.state.name, child, libc::SIGKILL);
                    *killed = true;
                }
                _ => {}
            }
        }
    }

    /// The earliest moment something is due.
    fn next_timer(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.phase {
                Phase::Scheduled { at } => Some(*at),
                Phase::Stopping {
                    kill_at,
                    killed: false,
                    ..
                } => Some(*kill_at),
                _ => None,
            })
            .min()
    }

    /// Writes the state file (failures are logged: the cluster runs on without it).
    fn publish(&mut self) {
        self.state.nodes = self.nodes.iter().map(|n| n.state.clone()).collect();
        if let Err(e) = self.layout.write_state(&self.state) {
            log(format!("cannot write the state file: {e:#}"));
        }
        self.dirty = false;
    }

    /// Last resort on the way out: SIGKILL every child still there and reap it.
    fn kill_and_reap_all(&mut self) {
        for node in &mut self.nodes {
            let phase = std::mem::replace(&mut node.phase, Phase::Down);
            if let Phase::Running { mut child, .. } | Phase::Stopping { mut child, .. } = phase {
                log(format!(
                    "{} (pid {}) still runs; SIGKILL",
                    node.state.name,
                    child.id()
                ));
                if let Err(e) = child.kill() {
                    log(format!("cannot kill {}: {e}", node.state.name));
                }
                if let Err(e) = child.wait() {
                    log(format!("cannot reap {}: {e}", node.state.name));
                }
            }
            node.state.pid = None;
            node.state.started_at_ms = None;
            node.state.state = RunState::Stopped;
        }
        self.dirty = true;
    }
}

/// Signals a child we still hold (so its pid cannot have been reused: it is not reaped).
fn send(name: &str, child: &Child, sig: libc::c_int) {
    if let Err(e) = process::signal(child.id(), sig) {
        log(format!("{name}: {e:#}"));
    }
}

/// Starts the server of `node`, its output appended to the node's log, tied to the supervisor
/// by `PR_SET_PDEATHSIG`.
fn spawn_child(binaries: &Binaries, node: &NodeState, supervisor_pid: u32) -> Result<Child> {
    // The address file tells `start`, `restart` and the tests that *this* process serves.
    match std::fs::remove_file(node.address_file()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot remove {}: {e}", node.address_file().display()),
    }
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("cannot create {}", node.data_dir.display()))?;
    let mut log_file = File::options()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("cannot open {}", node.log.display()))?;
    // A marker between the runs of the node, so a restart is visible in its log.
    writeln!(
        log_file,
        "----- {} wingkv onebox: starting {} -----",
        timestamp(),
        node.name
    )
    .with_context(|| format!("cannot write {}", node.log.display()))?;
    let stderr = log_file
        .try_clone()
        .with_context(|| format!("cannot reopen {}", node.log.display()))?;
    let parent = libc::pid_t::try_from(supervisor_pid)
        .map_err(|_| anyhow!("pid {supervisor_pid} is out of range"))?;
    let mut cmd = Command::new(binaries.of(node.role));
    // The data dir on the command line too (it is in the config already): `ps` then shows
    // which onebox a server belongs to.
    cmd.arg("--config")
        .arg(&node.config)
        .arg("--data-dir")
        .arg(&node.data_dir)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr);
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid,
    // sigemptyset, sigprocmask), no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor may have died between fork and prctl: then the death signal
            // was never armed for it, and the child must not run as an orphan.
            if libc::getppid() != parent {
                // (An errno, not a message: no allocation between fork and exec.)
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| {
        format!(
            "cannot run {} for {}",
            binaries.of(node.role).display(),
            node.name
        )
    })
}

/// "exit status 1", "killed by SIGKILL", ...
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => format!("killed by {}", signal_name(sig)),
        None => status.to_string(),
    }
}

fn signal_name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        other => format!("signal {other}"),
    }
}

/// A line of the supervisor log (its stderr is `DIR/supervisor.log`).
fn log(msg: impl AsRef<str>) {
    eprintln!("{} supervisor: {}", timestamp(), msg.as_ref());
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn timestamp() -> String {
    let ms = unix_ms();
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(16_801), (2016, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn exits_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit status 1");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "killed by SIGKILL");
    }
}
