//! Process lifecycle: signals, logging, systemd notification and detaching.
//!
//! * Signals: SIGTERM and SIGINT cancel the shutdown token, SIGHUP asks for a reload.
//!   This is the only place that listens for signals.
//! * Logs go to the journal when stderr is connected to it (systemd sets
//!   `JOURNAL_STREAM`) or when a detached daemon finds the journal socket; else to stderr.
//! * systemd (`Type=notify`): [`ready`] sends `READY=1` once the control socket and the
//!   listener are bound; [`heartbeat`], called from the supervisor's loop, keeps `STATUS=`
//!   current and sends `WATCHDOG=1` while `WATCHDOG_USEC` is set. Without
//!   `NOTIFY_SOCKET` these send nothing.
//! * `--daemon` ([`detach`]): fork, `setsid`, fork again, before the async runtime
//!   exists. The first process waits until the daemon is ready (or has failed) so that
//!   its exit code tells whether the start worked; the daemon writes its pid file at
//!   [`ready`] and removes it at [`stopping`]. On Windows (`windows.rs`) the first
//!   process starts the program again, detached, and waits for its pid file; that
//!   daemon logs to a file of bounded size (`logfile.rs`) instead of stderr.
//! * Memory: [`limit_malloc_arenas`] before the runtime starts, and
//!   [`release_free_memory`] whenever the daemon goes quiet after work
//!   ([`ReleaseWhenQuiet`], ticked by the supervisor), so that an idle daemon's resident
//!   memory falls back to what it holds (glibc only; elsewhere no-ops).
//! * [`metrics`]: `/metrics` for Prometheus, when `daemon.metrics_listen` asks for it.
//! * [`web`]: the web page, on `daemon.web_listen` unless the config turns it off.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[cfg(windows)]
use anyhow::Context;
use anyhow::Result;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) mod http_listener;
mod logfile;
pub mod metrics;
pub mod web;
#[cfg(windows)]
mod windows;

/// Turns signals into a cancelled `shutdown` token and reload requests on `reload`.
#[cfg(unix)]
pub fn handle_signals(shutdown: CancellationToken, reload: mpsc::Sender<()>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); shutdown.cancel(); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); shutdown.cancel(); break; }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading config"); let _ = reload.try_send(()); }
                _ = shutdown.cancelled() => break,
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub fn handle_signals(shutdown: CancellationToken, _reload: mpsc::Sender<()>) -> Result<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            shutdown.cancel();
        }
    });
    Ok(())
}

/// Logs at the level `FILESYNC_LOG` sets (EnvFilter syntax, default `info`): to the
/// journal when `journal` is true and the journal takes it, else to stderr.
pub fn init_logging(journal: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("FILESYNC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    #[cfg(unix)]
    if journal && let Ok(layer) = tracing_journald::layer() {
        let _ = tracing_subscriber::registry()
            .with(filter())
            .with(layer)
            .try_init();
        return;
    }
    let _ = journal;
    #[cfg(windows)]
    if let Some(path) = windows::log_file() {
        match logfile::SizeCapped::open(path, logfile::LOG_LIMIT) {
            Ok(file) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(false)
                            .with_writer(Mutex::new(file)),
                    )
                    .try_init();
                return;
            }
            Err(e) => eprintln!("filesyncd: {e:#}; logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
}

/// Whether systemd connected our stderr to the journal: `JOURNAL_STREAM` names its
/// device and inode.
#[cfg(unix)]
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stat.st_dev, stat.st_ino)
}

#[cfg(not(unix))]
pub fn stderr_is_journal() -> bool {
    false
}

/// Whether the journal's socket exists, for a detached daemon choosing where to log.
pub fn journal_available() -> bool {
    cfg!(unix) && Path::new("/run/systemd/journal/socket").exists()
}

/// What a detached daemon still owes the process that started it.
struct Detached {
    pid_file: PathBuf,
    /// Set once we wrote it: a daemon that failed to start must not remove the pid
    /// file of the one already running.
    pid_written: bool,
    /// Written to once ready; closing it unwritten tells the first process we failed.
    #[cfg(unix)]
    ready: Option<std::os::fd::OwnedFd>,
}

static DETACHED: Mutex<Option<Detached>> = Mutex::new(None);

/// Detaches from the terminal and the session: fork, `setsid`, fork. Only the daemon
/// returns; the first process exits 0 once the daemon reports [`ready`], or 1 if it
/// ends before that. stdin goes to `/dev/null`, stdout and stderr to `log` (appended)
/// or to `/dev/null` when the journal takes the logs.
///
/// Must run before any thread is started: a fork copies only the calling thread.
#[cfg(unix)]
pub fn detach(pid_file: PathBuf, log: Option<&Path>) -> Result<()> {
    use anyhow::Context;
    use nix::unistd::{ForkResult, fork, setsid};
    use std::io::Read;
    use std::os::fd::AsFd;

    let out = match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?,
        None => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
    };
    let null = std::fs::File::open("/dev/null")?;
    let (read_end, write_end) = nix::unistd::pipe().context("cannot make a pipe")?;
    // SAFETY: no other thread exists yet (the runtime starts after this), so the child
    // is a complete copy of the process.
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut byte = [0u8; 1];
            let mut pipe = std::fs::File::from(read_end);
            let code = match pipe.read(&mut byte) {
                Ok(1) => 0,
                _ => {
                    let log = log.map_or("the journal".to_owned(), |p| p.display().to_string());
                    eprintln!("filesyncd: error: the daemon did not start; see {log}");
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Child => {}
    }
    drop(read_end);
    setsid().context("cannot start a new session")?;
    // SAFETY: as above; the child is still single-threaded.
    if let ForkResult::Parent { .. } = unsafe { fork() }.context("cannot fork")? {
        // The session leader goes, so the daemon can never reacquire a terminal.
        std::process::exit(0);
    }
    std::env::set_current_dir("/").context("cannot change directory to /")?;
    nix::unistd::dup2_stdin(null.as_fd())?;
    nix::unistd::dup2_stdout(out.as_fd())?;
    nix::unistd::dup2_stderr(out.as_fd())?;
    *DETACHED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Detached {
        pid_file,
        pid_written: false,
        ready: Some(write_end),
    });
    Ok(())
}

/// Starts the daemon again as a detached process and exits once it is ready (see
/// `windows.rs`); returns only in that detached daemon, which logs to `log` from
/// [`init_logging`] on.
#[cfg(windows)]
pub fn detach(pid_file: PathBuf, log: Option<&Path>) -> Result<()> {
    let log = log.context("a detached daemon needs a log file on Windows")?;
    windows::detach(&pid_file, log)?;
    *DETACHED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Detached {
        pid_file,
        pid_written: false,
    });
    Ok(())
}

/// Where `--daemon` writes the pid file unless `--pid-file` says: beside the control
/// socket on Unix, in the state directory on Windows (a pipe has no directory).
pub fn default_pid_file(socket: &Path, state_dir: &Path) -> PathBuf {
    if cfg!(windows) {
        state_dir.join("filesyncd.pid")
    } else {
        socket.with_file_name("filesyncd.pid")
    }
}

/// The control socket and the listener are bound: tell systemd, write the pid file and
/// release the process that started a detached daemon.
pub fn ready(status: &str) -> Result<()> {
    if let Some(detached) = DETACHED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        write_pid_file(&detached.pid_file)?;
        detached.pid_written = true;
        #[cfg(unix)]
        if let Some(fd) = detached.ready.take() {
            use std::io::Write;
            let _ = std::fs::File::from(fd).write_all(b"R");
        }
    }
    notify(&[
        SdState::Ready,
        SdState::Status(status),
        SdState::MainPid(std::process::id()),
    ]);
    Ok(())
}

fn write_pid_file(path: &Path) -> Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the pid file's directory {}", dir.display()))?;
    }
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// The daemon is stopping: tell systemd and remove the pid file.
pub fn stopping() {
    notify(&[SdState::Stopping]);
    if let Some(detached) = DETACHED.lock().unwrap_or_else(|e| e.into_inner()).take()
        && detached.pid_written
    {
        let _ = std::fs::remove_file(&detached.pid_file);
    }
}

/// Whether this process detached itself (so stderr may lead nowhere).
pub fn is_detached() -> bool {
    DETACHED.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// Caps glibc's malloc arenas at two. By default every thread that allocates at the
/// same time as another may get an arena of its own (up to eight per core), and memory
/// freed in one is never reused by another: a daemon whose scans hash on every core
/// would keep the high-water mark of each.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands memory that is free in the allocator back to the system.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Releases free memory ([`release_free_memory`]) once the daemon goes quiet after
/// work: at a [`tick`](Self::tick) (every [`RELEASE_EVERY`]) that finds less than
/// [`QUIET_CPU`] of CPU used since the last, after at least [`WORK_CPU`] since the last
/// release. A burst of syncing (a first sync of 100,000 files, on every role) frees tens
/// of MiB that glibc would otherwise keep, and an idle daemon's resident memory is what
/// people see; an idle daemon is never woken for it.
#[derive(Debug, Default)]
pub struct ReleaseWhenQuiet {
    last_cpu: Option<Duration>,
    worked: Duration,
}

/// How often [`ReleaseWhenQuiet::tick`] runs.
pub const RELEASE_EVERY: Duration = Duration::from_secs(1);
/// CPU time per [`RELEASE_EVERY`] below which the daemon counts as quiet.
const QUIET_CPU: Duration = Duration::from_millis(20);
/// CPU time since the last release that is worth a release.
const WORK_CPU: Duration = Duration::from_millis(200);

impl ReleaseWhenQuiet {
    pub fn tick(&mut self) {
        if let Some(cpu) = process_cpu()
            && self.due(cpu)
        {
            release_free_memory();
        }
    }

    /// Whether to release now, given the process's CPU time so far.
    fn due(&mut self, cpu: Duration) -> bool {
        let used = self
            .last_cpu
            .map_or(Duration::ZERO, |last| cpu.saturating_sub(last));
        self.last_cpu = Some(cpu);
        self.worked += used;
        let due = used < QUIET_CPU && self.worked >= WORK_CPU;
        if due {
            self.worked = Duration::ZERO;
        }
        due
    }
}

/// User and system CPU time of this process so far.
fn process_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Some(time(usage.ru_utime) + time(usage.ru_stime))
    }
    #[cfg(not(unix))]
    None
}

/// How often [`heartbeat`] should run: twice per watchdog period, else every 5 s.
pub fn heartbeat_interval() -> Duration {
    watchdog().map_or(Duration::from_secs(5), |w| w / 2)
}

/// Called from the supervisor's loop: a loop that stops turning stops the pings, and
/// systemd restarts the daemon. `status` makes the one-line summary for `systemctl
/// status`; it is not called when there is no systemd to tell (no `NOTIFY_SOCKET`).
pub fn heartbeat(status: impl FnOnce() -> String) {
    static LAST: Mutex<String> = Mutex::new(String::new());
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let status = status();
    let status = status.as_str();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let changed = *last != status;
    if changed {
        status.clone_into(&mut last);
    }
    match (watchdog().is_some(), changed) {
        (true, true) => notify(&[SdState::Watchdog, SdState::Status(status)]),
        (true, false) => notify(&[SdState::Watchdog]),
        (false, true) => notify(&[SdState::Status(status)]),
        (false, false) => {}
    }
}

#[cfg(unix)]
use sd_notify::NotifyState as SdState;

#[cfg(unix)]
fn notify(states: &[SdState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

#[cfg(unix)]
fn watchdog() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Without systemd there is nobody to notify.
#[cfg(not(unix))]
mod sd_stub {
    #[expect(dead_code, reason = "what would go to systemd is dropped")]
    pub enum NotifyState<'a> {
        Ready,
        Stopping,
        Watchdog,
        Status(&'a str),
        MainPid(u32),
    }
}

#[cfg(not(unix))]
use sd_stub::NotifyState as SdState;

#[cfg(not(unix))]
fn notify(_states: &[SdState]) {}

#[cfg(not(unix))]
fn watchdog() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_released_once_quiet_after_work_and_never_when_idle() {
        let ms = Duration::from_millis;
        let mut r = ReleaseWhenQuiet::default();
        assert!(!r.due(ms(1000)), "the first tick only takes the start");
        assert!(!r.due(ms(1005)), "idle: nothing worth releasing");
        assert!(!r.due(ms(1400)), "busy");
        assert!(r.due(ms(1405)), "quiet after work");
        assert!(!r.due(ms(1410)), "released already");
        assert!(!r.due(ms(1510)), "some work");
        assert!(!r.due(ms(1515)), "less than worth a release");
        assert!(!r.due(ms(1700)), "more work");
        assert!(r.due(ms(1701)), "now worth it");
    }
}
