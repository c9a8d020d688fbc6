//! A bare `filesyncd` process for the operations tests (socket security, systemd
//! notification, `--daemon`): the test chooses the arguments and the environment, where
//! [`crate::Node`] fixes them for sync scenarios.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use crate::exec::{bin, run_with_timeout, signal, tail};
use crate::poll_until;

/// How long a `filesyncctl` call may take here.
const CTL_TIMEOUT: Duration = Duration::from_secs(20);

/// A `filesyncd` started with a config of the test's own. Killed on drop.
pub struct Daemon {
    pub home: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// A client-only config under `home` (made 0700) with its control socket at
    /// `socket`; nothing is started.
    pub fn new(home: &Path, socket: &Path) -> Daemon {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .expect("cannot create the daemon's home");
        let config = home.join("filesyncd.toml");
        fs::write(
            &config,
            format!(
                "[daemon]\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n",
                home.join("state").display(),
                socket.display()
            ),
        )
        .expect("cannot write the config");
        Daemon {
            home: home.to_owned(),
            config,
            socket: socket.to_owned(),
            log: home.join("daemon.log"),
            child: None,
        }
    }

    /// `filesyncd --config CONFIG ARGS…` in a hermetic environment (no systemd variables),
    /// its output appended to the log; the caller may add to it before [`Daemon::spawn`].
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("cannot open the daemon log");
        let mut cmd = Command::new(bin("filesyncd"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("FILESYNC_LOG", "debug")
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", self.home.join("run"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone the log handle"))
            .stderr(log);
        cmd
    }

    /// Spawns `cmd` as this daemon's process.
    pub fn spawn(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "the daemon is already running");
        self.child = Some(cmd.spawn().expect("cannot spawn filesyncd"));
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not started").id()
    }

    /// Waits for the spawned process to exit within `timeout` and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("not started");
        let status = poll_until(timeout, || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_owned())
        })
        .unwrap_or_else(|why| panic!("filesyncd did not exit: {why}\n{}", self.log_tail()));
        self.child = None;
        status
    }

    /// Waits until `status` answers on the control socket.
    pub fn wait_ready(&mut self) {
        poll_until(Duration::from_secs(30), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("filesyncd exited ({status}):\n{}", self.log_tail());
            }
            let out = self.ctl(["status"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
        .unwrap_or_else(|why| panic!("filesyncd not ready: {why}\n{}", self.log_tail()));
    }

    /// `filesyncctl --socket SOCKET ARGS…`, whatever its exit code.
    pub fn ctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin("filesyncctl"));
        cmd.arg("--socket").arg(&self.socket).args(args);
        run_with_timeout(&mut cmd, CTL_TIMEOUT)
    }

    /// The last part of the daemon's log, for failure messages and checks.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 64 * 1024)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- {} -----\n{}", self.log.display(), self.log_tail());
        }
    }
}
