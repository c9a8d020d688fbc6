//! The command line: every subcommand, flag and help text, as clap derive types.
//!
//! Parsing only; turning a parsed command into a request is `commands`' job. A value
//! clap refuses here (an unknown `--mode`, `pause` with neither FOLDER nor `--all`) is
//! a usage error and exits with code 2 before any socket is opened.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use filesync_proto::control::{FolderMode, Keep, QuotaChange};

const AFTER_HELP: &str = "\
The daemon is reached through its control socket: --socket PATH, else $FILESYNC_SOCKET,
else $XDG_RUNTIME_DIR/filesync/filesyncd.sock (/run/filesyncd/filesyncd.sock for root).

Every connection to a server is TLS. A device pins the server's certificate fingerprint
(from the invite token, or on first use); if it changes, the folder stops with \"server
identity changed\". Re-trust deliberately, after checking the new fingerprint with the
server's admin (`filesyncctl status` on the server shows it):
  filesyncctl trust HOST:PORT FINGERPRINT

FOLDER is a folder name or a local path; an existing path is sent in its absolute form.
A shared folder's name is OWNER/FOLDER; write ./OWNER/FOLDER for a relative path.
PATH (of `resolve`, `versions` and `restore`) is relative to the folder's root, e.g.
`notes/todo.txt`, whatever the current directory.

Exit codes:
  0  success
  1  the operation failed (the reason is printed on stderr)
  2  usage error (bad arguments)
  3  the daemon is not reachable (not running, or no access to its socket)";

/// Control the filesync daemon (filesyncd): add and remove folders, pause and resume
/// them, show status, wait until everything is in sync, settle conflicts, bring back
/// old versions of files, and enrol and administer devices.
#[derive(Debug, Parser)]
#[command(name = "filesyncctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Path of the daemon's control socket [default: $FILESYNC_SOCKET, else
    /// $XDG_RUNTIME_DIR/filesync/filesyncd.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start syncing a local folder with a folder on a server, and save it in the config.
    Add(AddArgs),
    /// Stop syncing a folder and remove it from the config.
    Remove {
        /// The folder to remove: its name or its local path.
        folder: String,
    },
    /// Pause syncing of one folder, or of every folder with --all.
    Pause(Target),
    /// Resume syncing of one paused folder, or of every folder with --all.
    ///
    /// With --confirm-deletes, also send the deletes the mass-delete guard holds back
    /// (status shows the folder as `held` when one scan found more than
    /// `max_delete_percent` of its files deleted).
    Resume {
        #[command(flatten)]
        target: Target,
        /// Send the deletes held back by the mass-delete guard to the server.
        #[arg(long)]
        confirm_deletes: bool,
    },
    /// Show the state of every folder (or of one), and of the server role if enabled.
    Status {
        /// Print the status as JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// Show only this folder: its name or its local path.
        folder: Option<String>,
    },
    /// Wait until every folder (or one) is connected, scanned and has nothing pending.
    ///
    /// First asks the daemon to scan, so every change made before `wait` started is
    /// taken into account, then polls the status until all is in sync. Exits 0 once in
    /// sync, 1 with the reason per folder if the timeout passes first.
    Wait {
        /// Give up after this long, e.g. `30s`, `5m`, `1h 30m` [default: wait forever].
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Wait only for this folder: its name or its local path.
        folder: Option<String>,
    },
    /// Scan every folder (or one) for changes now, instead of at the next interval.
    Rescan {
        /// Scan only this folder: its name or its local path.
        folder: Option<String>,
        /// Write the folder marker `.filesync-folder` again first: the folder's
        /// directory is really the folder, although its marker went missing.
        #[arg(long, requires = "folder")]
        recreate_marker: bool,
    },
    /// Make the daemon read its config file again.
    Reload,
    /// List the unresolved conflicts of every folder (or of one).
    ///
    /// A conflict is left when two devices changed the same file before either saw the
    /// other's change: the server's version stays at the file's path, and the other one
    /// is kept next to it in a conflict copy,
    /// `NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT`. Settle them with
    /// `filesyncctl resolve`.
    Conflicts {
        /// Print the conflicts as a JSON array, for scripts.
        #[arg(long)]
        json: bool,
        /// List only this folder's conflicts: its name or its local path.
        folder: Option<String>,
    },
    /// Settle conflicts by keeping one of the two versions of each file.
    ///
    /// Every unresolved conflict whose original path matches PATH_OR_GLOB is settled:
    /// the version chosen with --keep ends up at the original path, the conflict copy
    /// goes away, and the other version is deleted. The deleted version stays among the
    /// server's kept versions for the retention period, so `filesyncctl versions` and
    /// `filesyncctl restore` can still bring it back.
    Resolve(ResolveArgs),
    /// List the versions of a file that the server keeps, newest first.
    ///
    /// The server keeps a file's previous content when it is replaced or deleted, for
    /// the retention period. Bring one back with `filesyncctl restore`.
    Versions {
        /// Print the versions as a JSON array, for scripts.
        #[arg(long)]
        json: bool,
        /// The folder: its name or its local path.
        folder: String,
        /// The file, relative to the folder's root, e.g. `notes/todo.txt`.
        path: String,
    },
    /// Bring back a version of a file that the server keeps.
    ///
    /// The chosen version becomes the content of PATH again and syncs like any other
    /// change. PATH may also be a file that was deleted. `filesyncctl versions` lists
    /// the versions there are.
    Restore {
        /// The folder: its name or its local path.
        folder: String,
        /// The file, relative to the folder's root, e.g. `notes/todo.txt`.
        path: String,
        /// The version to bring back, as listed by `filesyncctl versions` [default: the
        /// newest kept version].
        #[arg(long, value_name = "V")]
        version: Option<u64>,
    },
    /// Put the server's version back in a receive-only folder, undoing its local changes.
    ///
    /// A receive-only folder never sends its local changes; `status` lists them. This
    /// undoes them: edited and deleted files get the server's version again, and every
    /// local version that is replaced or removed (edited files, files the server never
    /// had) is moved to `FOLDER/.filesync-reverted/YYYYMMDD-HHMMSS/` (UTC) under its
    /// own path, never deleted. The folder is scanned first, so a change made just
    /// before counts (the answer waits for that scan); a file written while the revert
    /// runs is left alone. Refused for a folder that sends its changes.
    Revert {
        /// The folder: its name or its local path.
        folder: String,
    },
    /// Show what the daemon did lately (scanned, uploaded, downloaded, deleted,
    /// conflict, error), one line per event; with --follow, keep printing new events.
    ///
    /// The daemon keeps the last 100 events; --follow prints those, then every new one
    /// until interrupted (Ctrl-C).
    Events {
        /// Keep printing new events as they happen.
        #[arg(long, short)]
        follow: bool,
        /// Print one JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
        /// Only this folder's events: its name or its local path.
        folder: Option<String>,
    },
    /// Print a one-time URL that logs a browser in to the daemon's web page.
    ///
    /// The URL works once, for five minutes; the browser then holds a session cookie.
    /// The page is served on `daemon.web_listen` (default 127.0.0.1:7102).
    Web {
        /// Also open the URL with the desktop's browser (xdg-open), when there is one.
        #[arg(long)]
        open: bool,
    },
    /// Start the daemon when you log on (Windows): enable, disable, or show it.
    ///
    /// `enable` registers `filesyncd.exe --daemon` (the one beside filesyncctl.exe) in
    /// your user's Run key; the daemon then logs to its state directory. On Linux use
    /// the user unit instead: `systemctl --user enable --now filesyncd`.
    #[command(subcommand)]
    Autostart(AutostartCommand),
    /// Print the completion script for a shell to stdout (used by the packages).
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory (used by the packages).
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Pin a server's certificate fingerprint, replacing the pin this device had.
    ///
    /// For a server whose key was replaced on purpose: its folders stop with "server
    /// identity changed" until the new fingerprint is trusted. Check it with the
    /// server's admin first (`filesyncctl status` on the server shows it).
    Trust {
        /// The server, exactly as the folders' `--server` names it.
        #[arg(value_name = "HOST:PORT")]
        server: String,
        /// The certificate's SHA-256 fingerprint: 64 hex digits (`:` between is fine).
        fingerprint: String,
    },
    /// Share a folder of this device's account with another account on its server.
    ///
    /// The other account's devices then add it with their own credential:
    /// `filesyncctl add PATH --server HOST:PORT --name OWNER/FOLDER`. With --read-only
    /// they receive every change and send none. Sharing again changes the mode.
    Share {
        /// The folder: its name or its local path. It must be one of this account's own
        /// folders, not one shared with it.
        folder: String,
        /// The account to share it with.
        #[arg(long, value_name = "ACCOUNT")]
        with: String,
        /// The other account may read the folder but not change it.
        #[arg(long)]
        read_only: bool,
    },
    /// Take another account's access to a folder back, at once: its devices'
    /// connections to the folder are closed, and later ones are refused.
    Unshare {
        /// The folder: its name or its local path.
        folder: String,
        /// The account whose access to take back.
        #[arg(long, value_name = "ACCOUNT")]
        with: String,
    },
    /// List the shares of this device's account (or of one folder): the accounts it
    /// shares its folders with, and the folders other accounts share with it.
    Shares {
        /// Print the shares as a JSON array, for scripts.
        #[arg(long)]
        json: bool,
        /// Only this folder's shares: its name or its local path.
        folder: Option<String>,
    },
    /// Administer this daemon's server role: invite devices, list them, revoke them.
    #[command(subcommand)]
    Server(ServerCommand),
    /// This device's enrolment with a server.
    #[command(subcommand)]
    Device(DeviceCommand),
}

#[derive(Debug, Subcommand)]
pub enum AutostartCommand {
    /// Start the daemon at logon from now on.
    Enable,
    /// Stop starting the daemon at logon (a running daemon keeps running).
    Disable,
    /// Say whether the daemon starts at logon, and with which command.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Print a one-time invite token that enrols one device into ACCOUNT.
    ///
    /// The account is created if new. On the device:
    /// `filesyncctl add PATH --server HOST:PORT --token TOKEN`.
    Invite {
        /// The account the device will belong to.
        account: String,
        /// How long the token stays valid, e.g. `1h`, `7days` [default: 24h].
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List every account's devices, with when each was last seen.
    Devices {
        /// Print the devices as a JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Cut a device off now: its connections are closed and it is refused from then on.
    ///
    /// The invite tokens it made (`device invite`) that nobody used yet are cancelled.
    Revoke {
        /// The device id, as `filesyncctl server devices` lists it.
        device: String,
    },
    /// Share account OWNER's folder FOLDER with another account.
    Share {
        /// The folder, as `OWNER/FOLDER`: its owner's account and its name there.
        #[arg(value_name = "OWNER/FOLDER")]
        folder: String,
        /// The account to share it with.
        #[arg(long, value_name = "ACCOUNT")]
        with: String,
        /// The other account may read the folder but not change it.
        #[arg(long)]
        read_only: bool,
    },
    /// Take an account's access to a folder back, closing its connections at once.
    Unshare {
        /// The folder, as `OWNER/FOLDER`.
        #[arg(value_name = "OWNER/FOLDER")]
        folder: String,
        /// The account whose access to take back.
        #[arg(long, value_name = "ACCOUNT")]
        with: String,
    },
    /// List every folder shared across accounts (or the shares of one).
    Shares {
        /// Print the shares as a JSON array, for scripts.
        #[arg(long)]
        json: bool,
        /// Only this folder's shares, as `OWNER/FOLDER`.
        #[arg(value_name = "OWNER/FOLDER")]
        folder: Option<String>,
    },
    /// List the invite tokens that can still enrol a device, or cancel one.
    ///
    /// Each with its id, account, who made it (the admin, or the device that ran
    /// `device invite`) and when it expires. `server invites cancel ID` cancels one.
    #[command(args_conflicts_with_subcommands = true)]
    Invites {
        /// Print the tokens as a JSON array, for scripts.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<InvitesCommand>,
    },
    /// Limit how many bytes ACCOUNT may store on this server.
    ///
    /// Its folders' files and unfinished uploads count; a push that would go over is
    /// refused before anything is written, and the device's status says so.
    /// `server devices` shows each account's usage.
    Quota {
        /// The account, as `filesyncctl server devices` lists it.
        account: String,
        /// `10GiB`, `500MB`, …; `none` for no limit; `default` for the config's
        /// `server.default_quota`.
        #[arg(value_name = "SIZE|none|default", value_parser = parse_quota)]
        quota: QuotaChange,
    },
    /// Write the current tree of a folder into a directory (cluster nodes, which keep
    /// no browsable tree; an embedded server keeps one in its data directory). Every
    /// file is checked against its hash before it gets its name.
    Export {
        /// `ACCOUNT/FOLDER`, as `filesyncctl server status` lists it.
        folder: String,
        /// A new or empty directory on the node; the daemon writes it as its own user.
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum InvitesCommand {
    /// Cancel a pending invite token: from now on it enrols no device.
    Cancel {
        /// The token's id, as `filesyncctl server invites` lists it.
        id: String,
    },
}

/// A quota as written on the command line.
fn parse_quota(text: &str) -> Result<QuotaChange, String> {
    match text {
        "none" => Ok(QuotaChange::Unlimited),
        "default" => Ok(QuotaChange::Default),
        size => size
            .parse::<bytesize::ByteSize>()
            .map(|b| QuotaChange::Bytes(b.as_u64()))
            .map_err(|_| {
                format!("{size:?} is not a size; write e.g. 10GiB or 500MB, or none, or default")
            }),
    }
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Print a one-time invite token that enrols another device into this device's
    /// account on SERVER. A device may make 10 an hour.
    Invite {
        /// The server this device is enrolled with.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// The account to invite into, when this device holds credentials for several
        /// accounts on SERVER.
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The folder: its name or its local path.
    pub folder: String,
    /// The conflicted file, relative to the folder's root (`notes/todo.txt`), or a glob
    /// over such paths (`docs/*.txt`; quote it so that the shell leaves it alone). It is
    /// the original path, not the conflict copy's.
    #[arg(value_name = "PATH_OR_GLOB")]
    pub pattern: String,
    /// Which version to keep; the other one is deleted.
    #[arg(long, value_enum)]
    pub keep: KeepSide,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The local folder to sync; a relative path is taken from the current directory.
    pub path: PathBuf,
    /// The server to sync with [default with --token: the address the token carries,
    /// the server's `public_address`].
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "token")]
    pub server: Option<String>,
    /// The folder's name on the server [default: the local directory's name].
    #[arg(long)]
    pub name: Option<String>,
    /// A one-time invite token from `filesyncctl server invite` or `device invite`, to
    /// enrol this device in the token's account; `-` reads it from standard input. When
    /// not given, $FILESYNC_TOKEN is used if set, so that the token need not appear in
    /// the process list or the shell history.
    #[arg(
        long,
        value_name = "TOKEN|-",
        env = "FILESYNC_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The account the folder syncs as, among this device's credentials for the server
    /// (required once it holds more than one there; `filesyncctl status` lists them).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Which way changes flow [default: two-way].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
}

/// Exactly one of a folder or `--all`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The folder: its name or its local path.
    pub folder: Option<String>,
    /// Every folder.
    #[arg(long)]
    pub all: bool,
}

/// The command-line spelling of [`FolderMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Local and remote changes both sync.
    TwoWay,
    /// Only local changes are sent; remote changes are not applied here.
    SendOnly,
    /// Only remote changes are applied; local changes are not sent.
    ReceiveOnly,
}

impl From<Mode> for FolderMode {
    fn from(mode: Mode) -> FolderMode {
        match mode {
            Mode::TwoWay => FolderMode::TwoWay,
            Mode::SendOnly => FolderMode::SendOnly,
            Mode::ReceiveOnly => FolderMode::ReceiveOnly,
        }
    }
}

/// The command-line spelling of [`Keep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeepSide {
    /// The version in the conflict copy: the one that lost.
    Local,
    /// The version at the original path: the server's, the one that won.
    Remote,
    /// Whichever of the two has the later modification time.
    Newer,
}

impl From<KeepSide> for Keep {
    fn from(side: KeepSide) -> Keep {
        match side {
            KeepSide::Local => Keep::Local,
            KeepSide::Remote => Keep::Remote,
            KeepSide::Newer => Keep::Newer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("filesyncctl").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_timeout_takes_human_durations() {
        let check = |arg: &str, want: Option<Duration>| {
            let got = match parse(&["wait", "--timeout", arg]) {
                Ok(Cli {
                    command: Command::Wait { timeout, .. },
                    ..
                }) => timeout,
                _ => None,
            };
            assert_eq!(got, want, "--timeout {arg}");
        };
        check("30s", Some(Duration::from_secs(30)));
        check("5m", Some(Duration::from_secs(300)));
        check("1h 30m", Some(Duration::from_secs(5400)));
        check("250ms", Some(Duration::from_millis(250)));
        check("soon", None);
        check("30", None);
    }

    #[test]
    fn modes_map_to_the_protocol() {
        for (arg, want) in [
            ("two-way", FolderMode::TwoWay),
            ("send-only", FolderMode::SendOnly),
            ("receive-only", FolderMode::ReceiveOnly),
        ] {
            let cli = parse(&["add", "x", "--server", "h:1", "--mode", arg]).unwrap();
            let Command::Add(add) = cli.command else {
                panic!("not add: {cli:?}");
            };
            assert_eq!(add.mode.map(FolderMode::from), Some(want));
            assert_eq!(want.as_str(), arg);
        }
    }

    #[test]
    fn keep_sides_map_to_the_protocol() {
        for (arg, want) in [
            ("local", Keep::Local),
            ("remote", Keep::Remote),
            ("newer", Keep::Newer),
        ] {
            let cli = parse(&["resolve", "docs", "*.txt", "--keep", arg]).unwrap();
            let Command::Resolve(resolve) = cli.command else {
                panic!("not resolve: {cli:?}");
            };
            assert_eq!(resolve.pattern, "*.txt");
            assert_eq!(Keep::from(resolve.keep), want);
        }
    }

    #[test]
    fn restore_takes_an_optional_version() {
        let version = |args: &[&str]| match parse(args).unwrap().command {
            Command::Restore { version, .. } => version,
            other => panic!("not restore: {other:?}"),
        };
        assert_eq!(version(&["restore", "docs", "a.txt"]), None);
        assert_eq!(
            version(&["restore", "docs", "a.txt", "--version", "7"]),
            Some(7)
        );
    }

    #[test]
    fn share_takes_an_account_and_a_mode() {
        match parse(&["share", "docs", "--with", "bob", "--read-only"])
            .unwrap()
            .command
        {
            Command::Share {
                folder,
                with,
                read_only,
            } => assert_eq!(
                (folder.as_str(), with.as_str(), read_only),
                ("docs", "bob", true)
            ),
            other => panic!("not share: {other:?}"),
        }
        for args in [
            &["share", "docs"][..],
            &["unshare", "docs"],
            &["server", "share", "alice/docs"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["pause"][..],
            &["resume", "docs", "--all"],
            &["resume", "--confirm-deletes"],
            &["rescan", "--recreate-marker"],
            &["add", "x"],
            &["add", "x", "--server", "h:1", "--mode", "both"],
            &["remove"],
            &["resolve", "docs", "a.txt"],
            &["resolve", "docs", "a.txt", "--keep", "mine"],
            &["resolve", "docs", "--keep", "newer"],
            &["versions", "docs"],
            &["restore", "docs", "a.txt", "--version", "latest"],
            &["revert"],
            &["revert", "docs", "more"],
        ] {
            let err = parse(args).expect_err("must be refused");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn server_invites_lists_or_cancels() {
        let invites = |args: &[&str]| match parse(args).map(|cli| cli.command) {
            Ok(Command::Server(ServerCommand::Invites { json, action })) => (json, action),
            other => panic!("{args:?}: {other:?}"),
        };
        assert!(matches!(invites(&["server", "invites"]), (false, None)));
        assert!(matches!(
            invites(&["server", "invites", "--json"]),
            (true, None)
        ));
        assert!(matches!(
            invites(&["server", "invites", "cancel", "0123456789abcdef"]),
            (false, Some(InvitesCommand::Cancel { id })) if id == "0123456789abcdef"
        ));
        for args in [
            &["server", "invites", "cancel"][..],
            &["server", "invites", "--json", "cancel", "x"],
        ] {
            let err = parse(args).expect_err("must be refused");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
