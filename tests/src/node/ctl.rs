//! The `filesyncctl` side of a [`Node`]: running commands against its control socket,
//! reading `status --json`, and `wait`.

use std::ffi::{OsStr, OsString};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::Node;
use crate::exec::{bin, run_with_input, run_with_timeout};

/// How long one `filesyncctl` call other than `wait` may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The per-folder counters of `status --json` (`proto::control::Counters`). Parsing into
/// this struct also checks that the daemon prints every one of these fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Counters {
    pub wire_bytes_sent: u64,
    pub wire_bytes_received: u64,
    pub content_bytes_sent: u64,
    pub content_bytes_received: u64,
    pub content_bytes_reused: u64,
    pub files_uploaded: u64,
    pub files_downloaded: u64,
    pub deletes_applied: u64,
    pub bytes_hashed: u64,
    pub files_hashed: u64,
    pub pushes: u64,
}

/// One unresolved conflict as `filesyncctl conflicts --json` prints it
/// (`proto::control::ConflictInfo`); parsing checks that every field is there.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Conflict {
    pub folder: String,
    /// The original path, holding the winning version.
    pub path: String,
    /// The conflict copy, holding the losing version.
    pub copy: String,
    pub winner: String,
    pub winner_seq: u64,
    pub loser: String,
    pub made_at: i64,
    pub copy_size: u64,
    pub copy_mtime_ns: i64,
}

/// One kept version as `filesyncctl versions --json` prints it
/// (`proto::control::VersionEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Version {
    pub version: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub kept_at: i64,
}

impl Node {
    /// Runs `filesyncctl --socket SOCK ARGS…` and returns its output, whatever the exit code.
    pub fn ctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctl_with_timeout(args, CTL_TIMEOUT)
    }

    pub(super) fn ctl_with_timeout<I, S>(&self, args: I, timeout: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_with_timeout(&mut self.ctl_command(args), timeout)
    }

    /// [`Node::ctl`] with `input` on standard input and the variables `env` set, for
    /// what must not be an argument (an invite token).
    pub fn ctl_with_input<I, S>(&self, args: I, input: &[u8], env: &[(&str, &str)]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.ctl_command(args);
        cmd.envs(env.iter().copied());
        run_with_input(&mut cmd, input, CTL_TIMEOUT)
    }

    /// `filesyncctl --socket SOCK ARGS…` in the node's hermetic environment, not started.
    fn ctl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin("filesyncctl"));
        cmd.arg("--socket").arg(&self.socket).args(args);
        self.hermetic_env(&mut cmd);
        cmd
    }

    /// Starts `filesyncctl --socket SOCK ARGS…` with stdout piped and returns at once,
    /// for commands that keep running (`events --follow`). The caller kills it.
    pub fn ctl_spawn<I, S>(&self, args: I) -> std::process::Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctl_command(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("cannot start filesyncctl")
    }

    /// Like [`Node::ctl`], but the call must succeed; returns its stdout.
    pub fn ctl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(&args);
        if !out.status.success() {
            // "Not reachable" usually means the daemon died: say so, with its log.
            let daemon = self.check_running().err().unwrap_or_default();
            panic!(
                "{}: filesyncctl {args:?} failed: {}\n{daemon}",
                self.name,
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `filesyncctl status --json`, parsed.
    pub fn status_json(&self) -> Value {
        let stdout = self.ctl_ok(["status", "--json"]);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{}: status --json is not JSON ({e}):\n{stdout}", self.name))
    }

    /// The entry of `folder` in `status --json`'s `folders`.
    pub fn folder_status(&self, folder: &str) -> Value {
        let status = self.status_json();
        folder_entries(&status)
            .iter()
            .find(|f| f["name"] == folder)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no folder {folder:?} in status: {status}", self.name))
    }

    /// The names of the folders `status --json` lists.
    pub fn folder_names(&self) -> Vec<String> {
        folder_entries(&self.status_json())
            .iter()
            .map(|f| f["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// This daemon's device id, as `status --json` prints it.
    pub fn device(&self) -> String {
        let status = self.status_json();
        status["device"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: status has no device: {status}", self.name))
            .to_owned()
    }

    /// `filesyncctl server invite ACCOUNT [--expires DURATION]`: the token it prints.
    pub fn server_invite(&self, account: &str, expires: Option<&str>) -> String {
        let mut args = vec!["server", "invite", account];
        if let Some(expires) = expires {
            args.extend(["--expires", expires]);
        }
        self.ctl_ok(args).trim().to_owned()
    }

    /// `filesyncctl server devices --json`, parsed: the accounts, each with its devices.
    pub fn server_accounts(&self) -> Vec<Value> {
        let stdout = self.ctl_ok(["server", "devices", "--json"]);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{}: server devices --json is not a list ({e}):\n{stdout}",
                self.name
            )
        })
    }

    /// Every device of [`Node::server_accounts`], each naming its `account`.
    pub fn server_devices(&self) -> Vec<Value> {
        self.server_accounts()
            .iter()
            .flat_map(|a| a["devices"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// `filesyncctl conflicts --json FOLDER`, parsed.
    pub fn conflicts(&self, folder: &str) -> Vec<Conflict> {
        let stdout = self.ctl_ok(["conflicts", "--json", folder]);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{}: conflicts --json is not a list of conflicts ({e}):\n{stdout}",
                self.name
            )
        })
    }

    /// `filesyncctl versions --json FOLDER PATH`, parsed.
    pub fn versions(&self, folder: &str, path: &str) -> Vec<Version> {
        let stdout = self.ctl_ok(["versions", "--json", folder, path]);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{}: versions --json is not a list of versions ({e}):\n{stdout}",
                self.name
            )
        })
    }

    /// The counters of `folder`.
    pub fn counters(&self, folder: &str) -> Counters {
        let status = self.folder_status(folder);
        serde_json::from_value(status["counters"].clone())
            .unwrap_or_else(|e| panic!("{}: bad counters for {folder} ({e}): {status}", self.name))
    }

    /// `filesyncctl wait --timeout Ns FOLDER`; the process gets 30 s more than that.
    pub fn wait(&self, folder: &str, timeout: Duration) -> Output {
        let secs = format!("{}s", timeout.as_secs().max(1));
        self.ctl_with_timeout(
            ["wait", "--timeout", &secs, folder],
            timeout + Duration::from_secs(30),
        )
    }

    /// `wait` must exit 0: `folder` is connected, scanned and has nothing pending.
    pub fn assert_in_sync(&self, folder: &str, timeout: Duration) {
        let out = self.wait(folder, timeout);
        assert!(
            out.status.success(),
            "{}: filesyncctl wait {folder} failed: {}",
            self.name,
            describe(&out)
        );
    }
}

pub(crate) fn folder_entries(status: &Value) -> &[Value] {
    status["folders"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("status has no folders array: {status}"))
}

/// Exit code, stdout and stderr of a command, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
