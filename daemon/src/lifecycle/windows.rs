//! `--daemon` on Windows, and the log file of a daemon without a console.
//!
//! There is no fork: [`detach`] starts the same program again with the same arguments
//! as a detached process (`DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP`: no console, no
//! Ctrl+C from the one it came from), marked by [`CHILD_ENV`], and waits until that
//! process has written its pid file (it does at `ready`) or has exited, so that its exit
//! code tells whether the start worked, as on Unix. The detached daemon logs to a file
//! (`logfile::SizeCapped`): standard error reaches no one there.

use std::os::windows::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS};

/// Set in the environment of the detached daemon, so that it runs instead of detaching
/// again.
const CHILD_ENV: &str = "FILESYNC_DETACHED_DAEMON";

/// How long the first process waits for the detached daemon to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The log file of the detached daemon, set by [`detach`] in that process.
static LOG_FILE: OnceLock<PathBuf> = OnceLock::new();

/// In the first process: starts the detached daemon and exits once it is ready (0) or
/// has failed (1); never returns. In the detached daemon: notes `log` as its log file
/// and returns.
pub(super) fn detach(pid_file: &Path, log: &Path) -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        let _ = LOG_FILE.set(log.to_owned());
        return Ok(());
    }
    let stderr = super::logfile::open_append(log)?;
    let exe = std::env::current_exe().context("cannot find filesyncd's own path")?;
    let mut child = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {} detached", exe.display()))?;
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(_)) | Err(_) = child.try_wait() {
            eprintln!(
                "filesyncd: error: the daemon did not start; see {}",
                log.display()
            );
            break 1;
        }
        // Only our child's pid counts: the file may be another daemon's, left or live.
        let written = std::fs::read_to_string(pid_file).unwrap_or_default();
        if written.trim() == child.id().to_string() {
            break 0;
        }
        if started.elapsed() > READY_TIMEOUT {
            eprintln!(
                "filesyncd: error: the daemon (pid {}) did not report ready within {} s; \
                 see {}",
                child.id(),
                READY_TIMEOUT.as_secs(),
                log.display()
            );
            break 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::exit(code);
}

/// Where the detached daemon logs, `None` in every other process.
pub(super) fn log_file() -> Option<&'static Path> {
    LOG_FILE.get().map(PathBuf::as_path)
}
