//! One `filesyncd.exe` under Wine, a device of the cluster it joins: its config, state
//! and log under `<root>/<name>/` (a Linux dir the daemon sees on drive `Z:`), and its
//! control pipe `\\.\pipe\fse2e-PID-N`, driven with `filesyncctl.exe`.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use super::{Wine, run_to_end, windows_path};
use crate::exec::tail;
use crate::node::ctl::folder_entries;
use crate::node::{describe, kill_with_parent, print_log_tail};
use crate::poll_until;

/// How long the daemon may take under Wine from spawn until its pipe answers.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `filesyncctl.exe` call other than `wait` may take (Wine starts slowly).
const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of the daemon's log a failing test prints.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// A `filesyncd.exe` in a [`Wine`] prefix. Killed on drop, before the prefix's
/// wineserver is stopped; a failing test prints the tail of its log.
pub struct WinNode<'w> {
    wine: &'w Wine,
    name: String,
    root: PathBuf,
    home: PathBuf,
    pipe: String,
    log: PathBuf,
    /// The running `wine filesyncd.exe`; `None` before `start`.
    child: Mutex<Option<Child>>,
}

impl<'w> WinNode<'w> {
    /// A node named `name` under `root` with a config of its own; not started.
    pub fn new(wine: &'w Wine, root: &Path, name: &str) -> WinNode<'w> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let home = root.join(name);
        fs::create_dir_all(&home).expect("cannot create the Windows node's home");
        let pipe = format!(
            r"\\.\pipe\fse2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // TOML literal strings: Windows paths keep their backslashes as written.
        let config = format!(
            "# Written by filesync-tests for the Windows node {name}.\n\
             [daemon]\n\
             state_dir = '{}'\n\
             control_socket = '{pipe}'\n",
            windows_path(&home.join("state"))
        );
        fs::write(home.join("filesyncd.toml"), config).expect("cannot write the config");
        WinNode {
            wine,
            name: name.to_owned(),
            root: root.to_owned(),
            log: home.join("daemon.log"),
            home,
            pipe,
            child: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local (Linux) directory this node syncs as `folder`: `<root>/<name>-<folder>`.
    pub fn folder_dir(&self, folder: &str) -> PathBuf {
        self.root.join(format!("{}-{folder}", self.name))
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `filesyncd.exe --config Z:\…` and returns once `filesyncctl.exe status`
    /// answers over the pipe.
    pub fn start(&self) {
        let log = File::create(&self.log).expect("cannot create the daemon log");
        let mut cmd = self.wine.command(self.wine.tools().exe("filesyncd"));
        cmd.arg("--config")
            .arg(windows_path(&self.home.join("filesyncd.toml")))
            .env(
                "FILESYNC_LOG",
                std::env::var_os("FILESYNC_LOG").unwrap_or_else(|| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone the log handle"))
            .stderr(log);
        kill_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start filesyncd.exe: {e}", self.name));
        *self.lock_child() = Some(child);
        poll_until(START_TIMEOUT, || {
            self.check_running()?;
            let out = self.ctl(["status"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("filesyncctl.exe status: {}", describe(&out)))
            }
        })
        .unwrap_or_else(|why| {
            panic!(
                "{}: filesyncd.exe not ready within {START_TIMEOUT:?}: {why}",
                self.name
            )
        });
    }

    /// Starts `filesyncd.exe --daemon --config Z:\…`, which must exit 0 once the daemon
    /// it detached is ready, and checks that the pipe answers. That daemon is no child
    /// of the test: the prefix's `wineserver -k` ends it.
    pub fn start_in_background(&self) {
        let mut cmd = self.wine.command(self.wine.tools().exe("filesyncd"));
        cmd.arg("--daemon")
            .arg("--config")
            .arg(windows_path(&self.home.join("filesyncd.toml")));
        let out = run_to_end(&mut cmd, START_TIMEOUT);
        assert!(
            out.status.success(),
            "{}: filesyncd.exe --daemon failed: {}\nits log: {}",
            self.name,
            describe(&out),
            tail(&self.state_dir().join("filesyncd.log"), LOG_TAIL_BYTES)
        );
        self.ctl_ok(["status"]);
    }

    /// The daemon's state directory (`state_dir` in its config), as a Linux path.
    pub fn state_dir(&self) -> PathBuf {
        self.home.join("state")
    }

    /// `Err` with the exit status and the log when the daemon is no longer running.
    pub fn check_running(&self) -> Result<(), String> {
        let status = self
            .lock_child()
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten());
        match status {
            None => Ok(()),
            Some(status) => Err(format!(
                "{}: filesyncd.exe exited ({status}); log:\n{}",
                self.name,
                tail(&self.log, LOG_TAIL_BYTES)
            )),
        }
    }

    /// Runs `filesyncctl.exe --socket PIPE ARGS…` under Wine, whatever its exit code.
    pub fn ctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctl_with_timeout(args, CTL_TIMEOUT)
    }

    fn ctl_with_timeout<I, S>(&self, args: I, timeout: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.wine.command(self.wine.tools().exe("filesyncctl"));
        cmd.arg("--socket").arg(&self.pipe).args(args);
        run_to_end(&mut cmd, timeout)
    }

    /// [`WinNode::ctl`] that must succeed; returns its stdout.
    pub fn ctl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(&args);
        assert!(
            out.status.success(),
            "{}: filesyncctl.exe {args:?} failed: {}\n{}",
            self.name,
            describe(&out),
            self.check_running().err().unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `filesyncctl.exe add Z:\…\<name>-<folder> --server SERVER --name FOLDER`; returns
    /// the folder's Linux dir, created here.
    pub fn add_folder(&self, folder: &str, server: &str) -> PathBuf {
        let dir = self.folder_dir(folder);
        fs::create_dir_all(&dir).expect("cannot create the folder dir");
        self.ctl_ok([
            "add",
            &windows_path(&dir),
            "--server",
            server,
            "--name",
            folder,
        ]);
        dir
    }

    /// The entry of `folder` in `filesyncctl.exe status --json`.
    pub fn folder_status(&self, folder: &str) -> Value {
        let stdout = self.ctl_ok(["status", "--json"]);
        let status: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("{}: status --json is not JSON ({e}):\n{stdout}", self.name)
        });
        folder_entries(&status)
            .iter()
            .find(|f| f["name"] == folder)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no folder {folder:?} in status: {status}", self.name))
    }

    /// `filesyncctl.exe wait --timeout Ns FOLDER` must exit 0.
    pub fn assert_in_sync(&self, folder: &str, timeout: Duration) {
        let secs = format!("{}s", timeout.as_secs().max(1));
        let out =
            self.ctl_with_timeout(["wait", "--timeout", &secs, folder], timeout + CTL_TIMEOUT);
        assert!(
            out.status.success(),
            "{}: filesyncctl.exe wait {folder} failed: {}",
            self.name,
            describe(&out)
        );
    }
}

impl Drop for WinNode<'_> {
    fn drop(&mut self) {
        let child = self.lock_child().take();
        if let Some(mut child) = child {
            if std::thread::panicking() {
                print_log_tail(&self.name, &self.log);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
