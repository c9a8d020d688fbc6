//! The daemon's configuration: the one TOML file that says which local folders sync with
//! which servers, whether this process also serves, and where the daemon keeps its state.
//!
//! * this module: the typed [`Config`], [`ConfigError`], and the questions the rest of the
//!   daemon asks of a config ([`Config::check_new_folder`],
//!   [`Config::find_folder`]);
//! * `parse`: TOML text to [`Config`], every error carrying the file, a line and the key,
//!   over `spanned`, the view of the TOML document that knows where each key was written;
//! * `rules`: the rules shared by parsing and `filesyncctl add` (server addresses, default
//!   folder names, and which folders may not sit next to each other);
//! * `cluster`: `server.backend` and the `[server.cluster]` table;
//! * `env`: what the defaults depend on (home, XDG variables, root);
//! * `persist`: comment-preserving edits of the file for add, remove, pause and resume,
//!   written through `atomic`.
//!
//! In keys of errors, `folder[N]` is the N-th `[[folder]]` table of the file, counted from 1
//! like the line numbers next to it.

mod atomic;
mod cluster;
mod env;
mod parse;
mod persist;
mod rules;
mod spanned;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use filesync_proto::control::FolderMode;
use filesync_proto::{AccountName, FolderName};

use env::Env;

pub use cluster::{Backend, ClusterSection, Hidden, S3Secret};
pub use persist::{
    persist_add_folder, persist_remove_folder, persist_set_account, persist_set_paused,
};
pub use rules::default_folder_name;

/// The TCP port of the server role when nobody says otherwise.
pub const DEFAULT_PORT: u16 = 7101;
/// How often a folder is walked in full when its `rescan_interval` is not set.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(3600);
/// The mass-delete guard's defaults: a scan that finds more than this percentage of a
/// folder's files deleted holds those deletes back, in a folder of at least
/// DEFAULT_MAX_DELETE_MIN files.
pub const DEFAULT_MAX_DELETE_PERCENT: u32 = 50;
pub const DEFAULT_MAX_DELETE_MIN: u64 = 100;
/// How long a cluster keeps content that nothing refers to when `gc_grace` is not set.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(7 * 86_400);
/// Days the server keeps replaced and deleted files when `keep_versions` is not set.
pub const DEFAULT_KEEP_VERSIONS_DAYS: u32 = 30;
/// Connections the server serves at once from one source address when
/// `max_connections_per_address` is not set.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 32;
/// Connections the server serves at once in all; `max_connections_per_address` cannot
/// exceed it.
pub const MAX_CONNECTIONS: u32 = 1024;
/// Bytes the server keeps free on its data filesystem when `min_free_space` is not set.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;
/// Folders one account may have on the server when `max_folders_per_account` is not set.
pub const DEFAULT_MAX_FOLDERS_PER_ACCOUNT: u32 = 256;
/// The highest `max_folders_per_account`: each open folder costs an inotify instance
/// and a few file descriptors.
pub const MAX_FOLDERS_PER_ACCOUNT: u32 = 100_000;
/// Below this, full rescans would run back to back and starve the watcher path.
pub const MIN_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// How a device without credentials may join the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Only with a one-time token from `filesyncctl server invite`.
    Invite,
    /// Any device may enrol itself, into the one shared account `open`.
    Open,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSection {
    pub state_dir: PathBuf,
    /// `None` means [`filesync_proto::control::default_socket_path`].
    pub control_socket: Option<PathBuf>,
    /// Where `/metrics` listens; `None` (the default) serves no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the web page listens ([`DEFAULT_WEB_LISTEN`] unless set); `None` when the
    /// config turns it off with `web_listen = ""`. A non-loopback address is served
    /// over TLS only.
    pub web_listen: Option<SocketAddr>,
}

/// Where the web page listens unless `daemon.web_listen` says otherwise.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:7102";

/// The server role; present only when the file has a `[server]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSection {
    /// `IP:PORT`, already checked to parse as a `SocketAddr`.
    pub listen: String,
    /// `HOST:PORT` that invite tokens carry (`public_address`); `None`: the address the
    /// listener is bound to.
    pub public_address: Option<String>,
    pub data_dir: PathBuf,
    pub registration: Registration,
    /// Days a replaced or deleted file is kept in the server's versions; 0 keeps none.
    pub keep_versions: u32,
    /// Connections served at once from one source address, 1 to [`MAX_CONNECTIONS`].
    pub max_connections_per_address: u32,
    /// Bytes an account may store when the admin set no quota of its own; `None`: no limit.
    pub default_quota: Option<u64>,
    /// Bytes kept free on the data filesystem: a push that would go below is refused.
    pub min_free_space: u64,
    /// Folders one account may have; a Hello for one more is refused.
    pub max_folders_per_account: u32,
    /// Where accounts, folders and content live (`backend`, `[server.cluster]`).
    pub backend: Backend,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FolderConfig {
    /// Absolute and normalised; it need not exist (a removable disk may be absent).
    pub path: PathBuf,
    /// `HOST:PORT`, with an IPv6 host in brackets.
    pub server: String,
    pub name: FolderName,
    /// The account the folder syncs as (`account`): only this account's credential is
    /// ever used for it. `None` in a config from before accounts were recorded: the
    /// folder then takes the device's only credential for its server, and the daemon
    /// writes that account into the file.
    pub account: Option<AccountName>,
    pub mode: FolderMode,
    pub rescan_interval: Duration,
    pub paused: bool,
    /// Deletes found at once above this percentage of the folder's files wait for a
    /// confirmation (`max_delete_percent`; 100 turns the guard off).
    pub max_delete_percent: u32,
    /// Folders with fewer files than this are never held (`max_delete_min`).
    pub max_delete_min: u64,
}

impl FolderConfig {
    /// A folder with the defaults for everything the user did not choose.
    pub fn new(path: PathBuf, server: String, name: FolderName) -> FolderConfig {
        FolderConfig {
            path,
            server,
            name,
            account: None,
            mode: FolderMode::TwoWay,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            paused: false,
            max_delete_percent: DEFAULT_MAX_DELETE_PERCENT,
            max_delete_min: DEFAULT_MAX_DELETE_MIN,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from, and where `persist_*` writes.
    pub file: PathBuf,
    pub daemon: DaemonSection,
    pub server: Option<ServerSection>,
    pub folders: Vec<FolderConfig>,
}

/// A config the daemon refuses, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// The full key, e.g. `folder[2].mode`.
    pub key: Option<String>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigError {
    /// `FILE:LINE: key `KEY`: MESSAGE`, leaving out the parts that are unknown.
    pub fn render(&self) -> String {
        let mut out = self.file.display().to_string();
        if let Some(line) = self.line {
            let _ = write!(out, ":{line}");
        }
        out.push_str(": ");
        if let Some(key) = &self.key {
            let _ = write!(out, "key `{key}`: ");
        }
        out.push_str(&self.message);
        out
    }

    fn io(file: &Path, what: &str, err: &io::Error) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            line: None,
            key: None,
            message: format!("{what}: {err}"),
        }
    }
}

impl Config {
    /// Reads `file`; a missing file gives the defaults (empty client-only daemon), not an error.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let bytes = match fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Config::parse(file, ""),
            Err(e) => return Err(ConfigError::io(file, "cannot read the config file", &e)),
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError {
                file: file.to_owned(),
                line: Some(valid.iter().filter(|&&b| b == b'\n').count() + 1),
                key: None,
                message: "this line is not valid UTF-8 text, which TOML requires".into(),
            }
        })?;
        Config::parse(file, &text)
    }

    /// Parses text as if read from `file`; pure apart from the environment that defaults
    /// and `~` depend on.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        parse::parse(file, text, &Env::current())
    }

    /// `$XDG_CONFIG_HOME/filesync/filesyncd.toml` (or `~/.config/…`), and
    /// `/etc/filesync/filesyncd.toml` for root, where the system unit points too.
    pub fn default_path() -> PathBuf {
        Env::current().config_file()
    }

    /// Checks a folder about to be added with `filesyncctl add` against this config: the
    /// rules of the file, plus what only the disk can tell. `Err` is a message for the user.
    pub fn check_new_folder(&self, folder: &FolderConfig) -> Result<(), String> {
        let path = &folder.path;
        let shown = path.display();
        if !path.is_absolute() {
            return Err(format!("{shown} is a relative path; pass an absolute one"));
        }
        if normalize(path) != *path {
            return Err(format!(
                "{shown} is not in normal form; pass it as {}",
                normalize(path).display()
            ));
        }
        if path.parent().is_none() {
            return Err(format!(
                "{shown} cannot be synced; choose a directory below it"
            ));
        }
        if path.to_str().is_none() {
            return Err(format!(
                "{shown} is not valid UTF-8, so it cannot be written to the config file; rename it"
            ));
        }
        rules::check_server_addr(&folder.server).map_err(|m| format!("server {m}"))?;
        if folder.rescan_interval < MIN_RESCAN_INTERVAL {
            return Err("the rescan interval must be at least 1s".into());
        }
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("{shown} is a file, not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!("{shown} does not exist; create it first"));
            }
            Err(e) => return Err(format!("cannot use {shown}: {e}")),
        }

        let label = |i: usize| format!("folder \"{}\"", self.folders[i].name);
        let data_dir = self.server.as_ref().map(|s| s.data_dir.as_path());
        if let Some(clash) =
            rules::find_clash(folder, &self.folders, &self.daemon.state_dir, data_dir)
        {
            return Err(clash.message(folder, &self.folders, &label));
        }

        // A symlink can hide nesting that comparing the written paths cannot see, e.g.
        // `~/sync` pointing into the state directory; compare where the paths lead too.
        let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let real_new = FolderConfig {
            path: real(path),
            ..folder.clone()
        };
        let real_folders: Vec<FolderConfig> = self
            .folders
            .iter()
            .map(|f| FolderConfig {
                path: real(&f.path),
                ..f.clone()
            })
            .collect();
        let real_data_dir = data_dir.map(real);
        if let Some(clash) = rules::find_clash(
            &real_new,
            &real_folders,
            &real(&self.daemon.state_dir),
            real_data_dir.as_deref(),
        ) {
            let message = clash.message(&real_new, &real_folders, &label);
            return Err(if real_new.path == *path {
                message
            } else {
                format!(
                    "{shown} resolves to {}, and {message}",
                    real_new.path.display()
                )
            });
        }
        Ok(())
    }

    /// Finds a configured folder by absolute path, else by name. A name two folders share
    /// (on different servers) finds neither: the user must then give the path.
    pub fn find_folder(&self, name_or_path: &str) -> Option<&FolderConfig> {
        let path = Path::new(name_or_path);
        if path.is_absolute() {
            let path = normalize(path);
            return self.folders.iter().find(|f| f.path == path);
        }
        let mut named = self
            .folders
            .iter()
            .filter(|f| f.name.as_str() == name_or_path);
        match (named.next(), named.next()) {
            (Some(folder), None) => Some(folder),
            _ => None,
        }
    }
}

/// Removes `.`, `..` and trailing slashes from an absolute path without touching the disk,
/// so that paths can be compared as written even when they do not exist (yet). `..` is
/// taken literally, as the shell's `cd` does, not through symlinks.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(text: &str) -> Config {
        parse::parse(Path::new("/c.toml"), text, &Env::for_tests()).unwrap()
    }

    #[cfg(unix)]
    fn folder(path: &Path, name: &str) -> FolderConfig {
        let name = FolderName::new(name).unwrap();
        FolderConfig::new(path.to_owned(), "h:7101".into(), name)
    }

    #[test]
    fn errors_render_what_they_know() {
        let err = |line, key: Option<&str>| ConfigError {
            file: "/c.toml".into(),
            line,
            key: key.map(String::from),
            message: "unknown mode \"both\"".into(),
        };
        let full = err(Some(3), Some("folder[1].mode")).to_string();
        assert_eq!(
            full,
            "/c.toml:3: key `folder[1].mode`: unknown mode \"both\""
        );
        assert_eq!(
            err(None, Some("k")).render(),
            "/c.toml: key `k`: unknown mode \"both\""
        );
        assert_eq!(
            err(Some(3), None).render(),
            "/c.toml:3: unknown mode \"both\""
        );
    }

    #[test]
    fn load_reads_the_file_or_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing/filesyncd.toml");
        let config = Config::load(&file).unwrap();
        assert_eq!(config.file, file);
        assert!(config.folders.is_empty() && config.server.is_none());

        let file = dir.path().join("filesyncd.toml");
        fs::write(&file, "[server]\nlisten = \"127.0.0.1:9\"\n").unwrap();
        assert_eq!(
            Config::load(&file).unwrap().server.unwrap().listen,
            "127.0.0.1:9"
        );

        fs::write(&file, b"# ok\n[[folder]]\npath = \"/a\xff\"\n").unwrap();
        let err = Config::load(&file).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn find_folder_by_path_or_unique_name() {
        let config = config_with(concat!(
            "[[folder]]\npath = \"/a/docs\"\nserver = \"h:1\"\n",
            "[[folder]]\npath = \"/b/music\"\nserver = \"h:1\"\n",
            "[[folder]]\npath = \"/c/music\"\nserver = \"g:1\"\n",
        ));
        let found = |s: &str| config.find_folder(s).map(|f| f.path.to_str().unwrap());
        assert_eq!(found("/a/docs"), Some("/a/docs"));
        assert_eq!(found("/a/docs/"), Some("/a/docs"));
        assert_eq!(found("/a/./x/../docs"), Some("/a/docs"));
        assert_eq!(found("docs"), Some("/a/docs"));
        assert_eq!(found("/b/music"), Some("/b/music"));
        assert_eq!(found("music"), None, "two folders are called music");
        assert_eq!(found("/a"), None);
        assert_eq!(found("nothing"), None);
    }

    #[cfg(unix)]
    #[test]
    fn check_new_folder_rules() {
        use std::os::unix::fs::symlink;

        let tmp = tempfile::tempdir().unwrap();
        let tmp = fs::canonicalize(tmp.path()).unwrap();
        let (state, synced, free) = (tmp.join("state"), tmp.join("synced"), tmp.join("free"));
        for dir in [&state, &synced, &free] {
            fs::create_dir(dir).unwrap();
        }
        fs::write(tmp.join("file"), "x").unwrap();
        symlink(&state, tmp.join("to-state")).unwrap();
        symlink(&synced, tmp.join("to-synced")).unwrap();
        let config = config_with(&format!(
            "[daemon]\nstate_dir = {state:?}\n[[folder]]\npath = {synced:?}\nserver = \"h:7101\"\n"
        ));

        assert_eq!(config.check_new_folder(&folder(&free, "free")), Ok(()));
        let cases = [
            (folder(&tmp.join("file"), "f"), "is a file, not a directory"),
            (
                folder(&tmp.join("nope"), "n"),
                "does not exist; create it first",
            ),
            (folder(Path::new("rel/dir"), "r"), "is a relative path"),
            (folder(&tmp.join("free/../free"), "f"), "pass it as"),
            (folder(Path::new("/"), "r"), "/ cannot be synced"),
            (
                folder(&synced, "again"),
                "is already synced as folder \"synced\"",
            ),
            (
                folder(&free, "synced"),
                "already syncs the folder name \"synced\"",
            ),
            (folder(&tmp, "tmp"), "contains"),
            (folder(&state, "state"), "is the daemon's state directory"),
            (folder(&tmp.join("to-state"), "s"), "resolves to"),
            (folder(&tmp.join("to-synced"), "s"), "is already synced"),
            (
                FolderConfig {
                    server: "h".into(),
                    ..folder(&free, "free")
                },
                "server \"h\" has no port",
            ),
        ];
        for (new, said) in cases {
            let err = config.check_new_folder(&new).unwrap_err();
            assert!(
                err.contains(said),
                "{}: {err}\n  expected it to say: {said}",
                new.path.display()
            );
        }
    }
}
