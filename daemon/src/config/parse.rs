//! TOML text to [`Config`]. The text is read into a span-keeping `toml_edit` document and
//! walked by hand rather than through serde, so that every error (syntax, type, unknown key,
//! bad value, or a rule between folders) names the line and the full key, and says what to
//! write instead.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use filesync_proto::control::FolderMode;
use filesync_proto::{AccountName, FolderName};
use toml_edit::{Document, Item, Table};

use super::rules::{self, check_server_addr, default_folder_name};
use super::spanned::{Cx, Section};
use super::{
    Config, ConfigError, DEFAULT_KEEP_VERSIONS_DAYS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_DELETE_MIN, DEFAULT_MAX_DELETE_PERCENT, DEFAULT_MAX_FOLDERS_PER_ACCOUNT,
    DEFAULT_MIN_FREE_SPACE, DEFAULT_PORT, DEFAULT_RESCAN_INTERVAL, DEFAULT_WEB_LISTEN,
    DaemonSection, Env, FolderConfig, MAX_CONNECTIONS, MAX_FOLDERS_PER_ACCOUNT,
    MIN_RESCAN_INTERVAL, Registration, ServerSection,
};

const DAEMON_KEYS: &[&str] = &[
    "state_dir",
    "control_socket",
    "metrics_listen",
    "web_listen",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "public_address",
    "data_dir",
    "registration",
    "keep_versions",
    "max_connections_per_address",
    "default_quota",
    "min_free_space",
    "max_folders_per_account",
    "backend",
    "cluster",
];
const FOLDER_KEYS: &[&str] = &[
    "path",
    "server",
    "name",
    "account",
    "mode",
    "rescan_interval",
    "paused",
    "max_delete_percent",
    "max_delete_min",
];
const SECTIONS: &str = "[daemon], [server] and [[folder]]";

pub(super) fn parse(file: &Path, text: &str, env: &Env) -> Result<Config, ConfigError> {
    let cx = Cx { file, text, env };
    let doc = Document::parse(text).map_err(|e| {
        // The offending text, when it is short enough to quote: the key of "duplicate key".
        let near = e.span().and_then(|span| text.get(span));
        let near = match near {
            Some(near) if !near.is_empty() && near.len() <= 40 && !near.contains('\n') => {
                format!(" (at `{near}`)")
            }
            _ => String::new(),
        };
        ConfigError {
            file: file.to_owned(),
            line: cx.line(e.span()),
            key: None,
            message: format!("this is not valid TOML: {}{near}", e.message()),
        }
    })?;
    let root = doc.as_table();
    let no_daemon_table = Table::new();
    let mut daemon = Section {
        path: "daemon".into(),
        header: "[daemon]",
        table: &no_daemon_table,
        line: None,
    };
    let mut server = None;
    let mut folders = Vec::new();
    for (key, item) in root.iter() {
        let line = cx.key_line(root, key);
        match key {
            "daemon" => daemon = cx.section("daemon", "[daemon]", item, line)?,
            "server" => server = Some(cx.section("server", "[server]", item, line)?),
            "folder" => folders = cx.folders(item, line)?,
            _ => return Err(unknown_top_level(&cx, key, item, line)),
        }
    }

    let daemon = daemon_section(&cx, &daemon)?;
    let server = server
        .map(|s| server_section(&cx, &s, &daemon))
        .transpose()?;
    let data_dir = server.as_ref().map(|s| s.data_dir.as_path());
    let mut done: Vec<FolderConfig> = Vec::new();
    let mut path_lines: Vec<Option<usize>> = Vec::new();
    for section in &folders {
        let (folder, at) = folder(&cx, section)?;
        if let Some(clash) = rules::find_clash(&folder, &done, &daemon.state_dir, data_dir) {
            let label = |i: usize| match path_lines[i] {
                Some(line) => format!("folder[{}] on line {line}", i + 1),
                None => format!("folder[{}]", i + 1),
            };
            let (line, key) = match clash.is_about_name() {
                true => (at.name, "name"),
                false => (at.path, "path"),
            };
            let message = clash.message(&folder, &done, &label);
            return Err(cx.err(line, section.key(key), message));
        }
        done.push(folder);
        path_lines.push(at.path);
    }
    Ok(Config {
        file: file.to_owned(),
        daemon,
        server,
        folders: done,
    })
}

/// A top-level key that is no section, with a hint where it belongs if it is a known key.
fn unknown_top_level(cx: &Cx, key: &str, item: &Item, line: Option<usize>) -> ConfigError {
    let tables = [
        ("[daemon]", DAEMON_KEYS),
        ("[server]", SERVER_KEYS),
        ("[[folder]]", FOLDER_KEYS),
    ];
    let belongs = tables.iter().find(|(_, keys)| keys.contains(&key));
    let message = match belongs {
        Some((header, _)) => {
            format!("`{key}` belongs in a {header} table; move it below a {header} line")
        }
        None if matches!(item, Item::Table(_) | Item::ArrayOfTables(_)) => {
            format!("unknown section `{key}`; the valid sections are {SECTIONS}")
        }
        None => format!("unknown key `{key}`; the valid sections are {SECTIONS}"),
    };
    cx.err(line, key.into(), message)
}

fn daemon_section(cx: &Cx, s: &Section) -> Result<DaemonSection, ConfigError> {
    s.check_keys(cx, DAEMON_KEYS)?;
    let state_dir = match s.path(cx, "state_dir")? {
        Some((path, _)) => path,
        None => cx.env.default_state_dir().ok_or_else(|| {
            let message = "there is no default state directory because the home directory \
                           is unknown ($HOME is not set); set `state_dir` in [daemon]";
            cx.err(s.line, s.key("state_dir"), message)
        })?,
    };
    let control_socket = s.path(cx, "control_socket")?.map(|(path, _)| path);
    let metrics_listen = listen_addr(cx, s, "metrics_listen", "\"127.0.0.1:7103\"", "")?;
    let web_listen = match s.string(cx, "web_listen", "\"127.0.0.1:7102\"")? {
        Some(("", _)) => None,
        Some(_) => listen_addr(cx, s, "web_listen", "\"127.0.0.1:7102\"", WEB_HINT)?,
        None => Some(
            DEFAULT_WEB_LISTEN
                .parse()
                .expect("the default is an address"),
        ),
    };
    Ok(DaemonSection {
        state_dir,
        control_socket,
        metrics_listen,
        web_listen,
    })
}

const WEB_HINT: &str = ", or \"\" to serve no web page";

/// The `IP:PORT` at `key`, if given; else an error naming the key and its line that
/// shows `example` and ends with `hint`.
fn listen_addr(
    cx: &Cx,
    s: &Section,
    key: &str,
    example: &str,
    hint: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    match s.string(cx, key, example)? {
        None => Ok(None),
        Some((text, line)) => text.parse::<SocketAddr>().map(Some).map_err(|_| {
            let message = format!(
                "{text:?} is not an address to listen on; write IP:PORT, e.g. {example}{hint}"
            );
            cx.err(line, s.key(key), message)
        }),
    }
}

fn server_section(
    cx: &Cx,
    s: &Section,
    daemon: &DaemonSection,
) -> Result<ServerSection, ConfigError> {
    s.check_keys(cx, SERVER_KEYS)?;
    let example = format!("\"0.0.0.0:{DEFAULT_PORT}\"");
    let hint = format!(" (every IPv4 address) or \"[::]:{DEFAULT_PORT}\" (every address)");
    let listen = match listen_addr(cx, s, "listen", &example, &hint)? {
        None => format!("0.0.0.0:{DEFAULT_PORT}"),
        Some(addr) => addr.to_string(),
    };
    let public_address = match s.string(cx, "public_address", "\"sync.example.com:7101\"")? {
        None => None,
        Some((text, line)) => match check_server_addr(text) {
            Ok(()) => Some(text.to_owned()),
            Err(why) => {
                let message = format!(
                    "{why}; this is the address invite tokens carry, so write the HOST:PORT \
                     devices reach this server at, e.g. \"sync.example.com:{DEFAULT_PORT}\""
                );
                return Err(cx.err(line, s.key("public_address"), message));
            }
        },
    };
    let data_dir = match s.path(cx, "data_dir")? {
        Some((path, _)) => path,
        None => cx.env.default_data_dir(&daemon.state_dir),
    };
    let registration = match s.string(cx, "registration", "\"invite\"")? {
        None | Some(("invite", _)) => Registration::Invite,
        Some(("open", _)) => Registration::Open,
        Some((other, line)) => {
            let message = format!("unknown registration {other:?}; use \"invite\" or \"open\"");
            return Err(cx.err(line, s.key("registration"), message));
        }
    };
    let keep_versions = match s.integer(cx, "keep_versions")? {
        None => DEFAULT_KEEP_VERSIONS_DAYS,
        Some((n, _)) if (0..=36_500).contains(&n) => n as u32,
        Some((n, line)) => {
            let message =
                format!("{n} is not a number of days from 0 to 36500 (0 keeps no versions)");
            return Err(cx.err(line, s.key("keep_versions"), message));
        }
    };
    let max_connections_per_address = match s.integer(cx, "max_connections_per_address")? {
        None => DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        Some((n, _)) if (1..=i64::from(MAX_CONNECTIONS)).contains(&n) => n as u32,
        Some((n, line)) => {
            let message = format!(
                "{n} is not a number of connections from 1 to {MAX_CONNECTIONS} \
                 (the server's limit for all addresses together)"
            );
            return Err(cx.err(line, s.key("max_connections_per_address"), message));
        }
    };
    let default_quota = match s.string(cx, "default_quota", "\"10GiB\"")? {
        None | Some(("none", _)) => None,
        Some((text, line)) => Some(size(cx, s, "default_quota", text, line, "or \"none\"")?),
    };
    let min_free_space = match s.string(cx, "min_free_space", "\"1GiB\"")? {
        None => DEFAULT_MIN_FREE_SPACE,
        Some((text, line)) => size(cx, s, "min_free_space", text, line, "or \"0\"")?,
    };
    let max_folders_per_account = match s.integer(cx, "max_folders_per_account")? {
        None => DEFAULT_MAX_FOLDERS_PER_ACCOUNT,
        Some((n, _)) if (1..=i64::from(MAX_FOLDERS_PER_ACCOUNT)).contains(&n) => n as u32,
        Some((n, line)) => {
            let message =
                format!("{n} is not a number of folders from 1 to {MAX_FOLDERS_PER_ACCOUNT}");
            return Err(cx.err(line, s.key("max_folders_per_account"), message));
        }
    };
    let backend = super::cluster::backend(cx, s)?;
    Ok(ServerSection {
        backend,
        listen,
        public_address,
        data_dir,
        registration,
        keep_versions,
        max_connections_per_address,
        default_quota,
        min_free_space,
        max_folders_per_account,
    })
}

/// A size in bytes as people write it: `10GiB`, `500MB`, `1.5 TiB`, `4096`.
fn size(
    cx: &Cx,
    s: &Section,
    key: &str,
    text: &str,
    line: Option<usize>,
    other: &str,
) -> Result<u64, ConfigError> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| {
            let message = format!(
                "{text:?} is not a size; write a number and a unit, e.g. \"10GiB\" or \"500MB\", {other}"
            );
            cx.err(line, s.key(key), message)
        })
}

/// The lines that rules between folders point at.
struct FolderLines {
    path: Option<usize>,
    /// Where `name` is written, or the path's line when the name comes from the path.
    name: Option<usize>,
}

fn folder(cx: &Cx, s: &Section) -> Result<(FolderConfig, FolderLines), ConfigError> {
    s.check_keys(cx, FOLDER_KEYS)?;
    let path_hint = "the local directory to sync, e.g. path = \"~/Documents\"";
    let (path, path_line) = s.required(cx, "path", s.path(cx, "path")?, path_hint)?;
    if path.parent().is_none() {
        let message = format!(
            "{} cannot be synced; choose a directory below it",
            path.display()
        );
        return Err(cx.err(path_line, s.key("path"), message));
    }

    let example = format!("\"files.example.org:{DEFAULT_PORT}\"");
    let server_hint = format!("the server to sync with, e.g. server = {example}");
    let server = s.string(cx, "server", &example)?;
    let (server, server_line) = s.required(cx, "server", server, &server_hint)?;
    check_server_addr(server).map_err(|m| cx.err(server_line, s.key("server"), m))?;

    let (name, name_line) = match s.string(cx, "name", "\"Documents\"")? {
        Some((name, line)) => match FolderName::new(name) {
            Ok(name) => (name, line),
            Err(e) => return Err(cx.err(line, s.key("name"), format!("{e}; choose another"))),
        },
        None => match default_folder_name(&path) {
            Ok(name) => (name, path_line),
            Err(message) => return Err(cx.err(path_line, s.key("name"), message)),
        },
    };

    let account = match s.string(cx, "account", "\"home\"")? {
        None => None,
        Some((text, line)) => Some(AccountName::new(text).map_err(|e| {
            let message = format!("{e}; write the account's name as the server knows it");
            cx.err(line, s.key("account"), message)
        })?),
    };

    let mode = match s.string(cx, "mode", "\"two-way\"")? {
        None => FolderMode::TwoWay,
        Some((text, line)) => FolderMode::parse(text).ok_or_else(|| {
            let message = format!(
                "unknown mode {text:?}; use \"two-way\", \"send-only\" or \"receive-only\""
            );
            cx.err(line, s.key("mode"), message)
        })?,
    };
    let rescan_interval = match s.string(cx, "rescan_interval", "\"1h\"")? {
        None => DEFAULT_RESCAN_INTERVAL,
        Some((text, line)) => {
            duration(text).map_err(|m| cx.err(line, s.key("rescan_interval"), m))?
        }
    };
    let paused = s.bool(cx, "paused")?.unwrap_or(false);
    let max_delete_percent = match s.integer(cx, "max_delete_percent")? {
        None => DEFAULT_MAX_DELETE_PERCENT,
        Some((n, _)) if (1..=100).contains(&n) => n as u32,
        Some((n, line)) => {
            let message = format!(
                "{n} is not a percentage from 1 to 100 (100 turns the mass-delete guard off)"
            );
            return Err(cx.err(line, s.key("max_delete_percent"), message));
        }
    };
    let max_delete_min = match s.integer(cx, "max_delete_min")? {
        None => DEFAULT_MAX_DELETE_MIN,
        Some((n, _)) if n >= 0 => n as u64,
        Some((n, line)) => {
            let message = format!("{n} is not a number of files (0 or more)");
            return Err(cx.err(line, s.key("max_delete_min"), message));
        }
    };

    let folder = FolderConfig {
        path,
        server: server.to_owned(),
        name,
        account,
        mode,
        rescan_interval,
        paused,
        max_delete_percent,
        max_delete_min,
    };
    let lines = FolderLines {
        path: path_line,
        name: name_line,
    };
    Ok((folder, lines))
}

fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"10m\" or \"1h\"")
    })?;
    if duration < MIN_RESCAN_INTERVAL {
        return Err(format!("{text:?} is too short; the minimum is \"1s\""));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::config::Backend;

    const FILE: &str = "/etc/filesync/filesyncd.toml";

    /// A valid first folder on lines 1 to 3, for cases that add one key or a second folder.
    macro_rules! docs {
        () => {
            "[[folder]]\npath = \"/data/docs\"\nserver = \"h:7101\"\n"
        };
    }

    fn parse_text(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new(FILE), text, &Env::for_tests())
    }

    /// Expects `text` to be refused at `line` with a key containing `key` (`""`: no key).
    fn check_err(text: &str, line: usize, key: &str) -> ConfigError {
        let err = match parse_text(text) {
            Ok(config) => panic!("accepted:\n{text}\n{config:#?}"),
            Err(err) => err,
        };
        assert_eq!(err.line, Some(line), "{err}\n---\n{text}");
        match (&err.key, key) {
            (None, "") => {}
            (Some(found), _) if !key.is_empty() && found.contains(key) => {}
            _ => panic!("key {:?}, expected {key:?}: {err}", err.key),
        }
        assert!(
            err.render().starts_with(&format!("{FILE}:{line}: ")),
            "{err}"
        );
        err
    }

    #[test]
    fn bad_configs() {
        // (text, line, key, part of the message)
        #[rustfmt::skip]
        let cases: &[(&str, usize, &str, &str)] = &[
            // syntax
            ("[daemon]\nstate_dir = \n", 2, "", "not valid TOML"),
            (concat!(docs!(), "path = \"/b\"\n"), 4, "", "duplicate key (at `path`)"),
            // unknown sections and keys
            ("[client]\nx = 1\n", 1, "client", "unknown section `client`"),
            ("[[peer]]\nx = 1\n", 1, "peer", "unknown section `peer`"),
            ("verbose = true\n", 1, "verbose", "unknown key `verbose`"),
            ("path = \"/a\"\n", 1, "path", "belongs in a [[folder]] table"),
            ("[daemon]\nstatedir = \"/x\"\n", 2, "daemon.statedir", "`state_dir`, `control_socket`"),
            ("[server]\n\nport = 7101\n", 3, "server.port", "valid keys are `listen`"),
            (concat!(docs!(), "mdoe = \"send-only\"\n"), 4, "folder[1].mdoe", "`mode`, `rescan_interval`, `paused`"),
            ("[daemon.extra]\nx = 1\n", 1, "daemon.extra", "unknown key `extra` in [daemon]"),
            // wrong types
            ("daemon = 5\n", 1, "daemon", "expected a table, found integer 5"),
            ("[folder]\npath = \"/a\"\n", 1, "folder", "[[folder]] (with double brackets)"),
            ("folder = [1]\n", 1, "folder[1]", "expected a table, found integer"),
            ("[daemon]\nstate_dir = 5\n", 2, "daemon.state_dir", "expected a string"),
            ("[server]\nlisten = 7101\n", 2, "server.listen", "found integer 7101"),
            (concat!(docs!(), "paused = \"yes\"\n"), 4, "folder[1].paused", "expected true or false"),
            (concat!(docs!(), "rescan_interval = 60\n"), 4, "folder[1].rescan_interval", "like \"1h\""),
            (concat!(docs!(), "mode = [\"two-way\"]\n"), 4, "folder[1].mode", "found array"),
            // values
            (concat!(docs!(), "mode = \"both\"\n"), 4, "folder[1].mode", "unknown mode \"both\"; use \"two-way\", \"send-only\" or \"receive-only\""),
            ("[server]\nregistration = \"closed\"\n", 2, "server.registration", "use \"invite\" or \"open\""),
            ("[server]\nkeep_versions = -1\n", 2, "server.keep_versions", "0 to 36500"),
            ("[server]\nkeep_versions = \"30d\"\n", 2, "server.keep_versions", "whole number"),
            ("[server]\nmax_connections_per_address = 0\n", 2, "server.max_connections_per_address", "from 1 to 1024"),
            ("[server]\ndefault_quota = \"lots\"\n", 2, "server.default_quota", "is not a size"),
            ("[server]\ndefault_quota = 10\n", 2, "server.default_quota", "expected a string"),
            ("[server]\nmin_free_space = \"-1GiB\"\n", 2, "server.min_free_space", "is not a size"),
            ("[server]\nmax_folders_per_account = 0\n", 2, "server.max_folders_per_account", "from 1 to"),
            ("[server]\nmax_connections_per_address = \"many\"\n", 2, "server.max_connections_per_address", "whole number"),
            (concat!(docs!(), "rescan_interval = \"often\"\n"), 4, "folder[1].rescan_interval", "is not a duration"),
            (concat!(docs!(), "rescan_interval = \"500ms\"\n"), 4, "folder[1].rescan_interval", "minimum is \"1s\""),
            (concat!(docs!(), "max_delete_percent = 0\n"), 4, "folder[1].max_delete_percent", "from 1 to 100"),
            (concat!(docs!(), "max_delete_percent = \"50%\"\n"), 4, "folder[1].max_delete_percent", "whole number"),
            (concat!(docs!(), "max_delete_min = -1\n"), 4, "folder[1].max_delete_min", "0 or more"),
            (concat!(docs!(), "account = \"my home\"\n"), 4, "folder[1].account", "may only contain letters"),
            (concat!(docs!(), "account = 5\n"), 4, "folder[1].account", "expected a string"),
            ("[server]\nlisten = \"localhost:7101\"\n", 2, "server.listen", "not an address to listen on"),
            ("[server]\nlisten = \"0.0.0.0\"\n", 2, "server.listen", "write IP:PORT"),
            ("[daemon]\nmetrics_listen = \"localhost:7103\"\n", 2, "daemon.metrics_listen", "not an address to listen on; write IP:PORT, e.g. \"127.0.0.1:7103\""),
            ("[daemon]\nmetrics_listen = 7103\n", 2, "daemon.metrics_listen", "expected a string"),
            ("[daemon]\nweb_listen = \"7102\"\n", 2, "daemon.web_listen", "write IP:PORT, e.g. \"127.0.0.1:7102\", or \"\" to serve no web page"),
            ("[server]\npublic_address = \"sync.example.com\"\n", 2, "server.public_address", "has no port"),
            ("[server]\nbackend = \"s3\"\n", 2, "server.backend", "use \"embedded\" or \"cluster\""),
            ("[server]\nbackend = \"cluster\"\n", 2, "server.backend", "needs a [server.cluster] table"),
            ("[server]\n[server.cluster]\nnode_name = \"n\"\n", 2, "server.cluster", "read only with backend = \"cluster\""),
            ("[server]\nbackend = \"cluster\"\n[server.cluster]\nnode_name = \"n\"\n", 3, "server.cluster.postgres", "has no `postgres`"),
            ("[server]\nbackend = \"cluster\"\n[server.cluster]\nnode = \"n\"\n", 4, "server.cluster.node", "valid keys are `node_name`"),
            ("[server]\npublic_address = \"sync example:7101\"\n", 2, "server.public_address", "devices reach this server at"),
            ("[[folder]]\npath = \"/a\"\nserver = \"files.example.org\"\n", 3, "folder[1].server", "has no port; write it as \"files.example.org:7101\""),
            ("[[folder]]\npath = \"/a\"\nserver = \"::1:7101\"\n", 3, "folder[1].server", "in brackets"),
            ("[[folder]]\npath = \"/a\"\nserver = \"h:70000\"\n", 3, "folder[1].server", "from 1 to 65535"),
            // paths
            ("[daemon]\nstate_dir = \"state\"\n", 2, "daemon.state_dir", "relative path"),
            ("[daemon]\ncontrol_socket = \"./s.sock\"\n", 2, "daemon.control_socket", "relative path"),
            ("[server]\ndata_dir = \"~bob/data\"\n", 2, "server.data_dir", "relative path"),
            ("[[folder]]\npath = \"Docs\"\nserver = \"h:1\"\n", 2, "folder[1].path", "starts with \"~/\""),
            ("[[folder]]\npath = \"\"\nserver = \"h:1\"\n", 2, "folder[1].path", "the path is empty"),
            ("[[folder]]\npath = \"/\"\nserver = \"h:1\"\n", 2, "folder[1].path", "choose a directory below it"),
            ("[[folder]]\npath = \"/a/..\"\nserver = \"h:1\"\n", 2, "folder[1].path", "/ cannot be synced"),
            // missing keys and bad names
            ("[[folder]]\nserver = \"h:1\"\n", 1, "folder[1].path", "has no `path`"),
            ("\n[[folder]]\npath = \"/a\"\n", 2, "folder[1].server", "has no `server`"),
            (concat!(docs!(), "name = \".hidden\"\n"), 4, "folder[1].name", "may not start with '.'"),
            ("[[folder]]\npath = \"/data/My Docs\"\nserver = \"h:1\"\n", 2, "folder[1].name", "set `name`"),
            // rules between folders; folder[1] is /data/docs with its path on line 2
            (concat!(docs!(), "[[folder]]\npath = \"/data/docs/\"\nserver = \"h:2\"\n"), 5, "folder[2].path", "/data/docs is already synced as folder[1] on line 2"),
            (concat!(docs!(), "[[folder]]\npath = \"/data/./x/../docs\"\nserver = \"h:2\"\n"), 5, "folder[2].path", "already synced"),
            (concat!(docs!(), "[[folder]]\npath = \"/elsewhere/docs\"\nserver = \"H:7101\"\n"), 5, "folder[2].name", "folder[1] on line 2 already syncs the folder name \"docs\""),
            (concat!(docs!(), "[[folder]]\npath = \"/e/d\"\nserver = \"h:7101\"\n\nname = \"docs\"\n"), 8, "folder[2].name", "set a different `name`"),
            (concat!(docs!(), "[[folder]]\npath = \"/data/docs/sub\"\nserver = \"h:1\"\n"), 5, "folder[2].path", "/data/docs/sub is inside /data/docs"),
            (concat!(docs!(), "[[folder]]\npath = \"/data\"\nserver = \"h:1\"\n"), 5, "folder[2].path", "/data contains /data/docs"),
            // the test environment's state directory is /home/alice/.local/state/filesync
            ("[[folder]]\npath = \"~/.local/state/filesync/x\"\nserver = \"h:1\"\n", 2, "folder[1].path", "is inside the daemon's state directory"),
            ("[[folder]]\npath = \"~\"\nserver = \"h:1\"\n", 2, "folder[1].path", "/home/alice contains the daemon's state directory"),
            (concat!("[daemon]\nstate_dir = \"/data/docs/.state\"\n", docs!()), 4, "folder[1].path", "contains the daemon's state directory"),
            (concat!("[daemon]\nstate_dir = \"/data/docs\"\n", docs!()), 4, "folder[1].path", "/data/docs is the daemon's state directory"),
            (concat!("[server]\ndata_dir = \"/data/docs/srv\"\n", docs!()), 4, "folder[1].path", "contains the server's data directory"),
            (concat!("[server]\ndata_dir = \"/data\"\n", docs!()), 4, "folder[1].path", "is inside the server's data directory"),
            // the inline form of the folder list obeys the same rules
            ("folder = [{ path = \"/a\", server = \"h:1\" },\n  { path = \"/a/b\", server = \"h:1\" }]\n", 2, "folder[2].path", "is inside /a"),
            ("folder = [\n  { path = \"/a\", server = \"h:1\", mode = \"x\" }]\n", 2, "folder[1].mode", "unknown mode"),
        ];
        for (text, line, key, said) in cases {
            let err = check_err(text, *line, key);
            assert!(
                err.message.contains(said),
                "{err}\n  expected it to say: {said}"
            );
        }
    }

    #[test]
    fn defaults_for_an_empty_file() {
        let config = parse_text("# nothing yet\n").unwrap();
        let state_dir = PathBuf::from("/home/alice/.local/state/filesync");
        let daemon = DaemonSection {
            state_dir,
            control_socket: None,
            metrics_listen: None,
            web_listen: Some("127.0.0.1:7102".parse().unwrap()),
        };
        assert_eq!(config.daemon, daemon);
        assert_eq!(config.server, None);
        let metrics = parse_text("[daemon]\nmetrics_listen = \"[::1]:7103\"\n").unwrap();
        assert_eq!(
            metrics.daemon.metrics_listen,
            Some("[::1]:7103".parse().unwrap())
        );
        assert!(config.folders.is_empty());
        let off = parse_text("[daemon]\nweb_listen = \"\"\n").unwrap();
        assert_eq!(off.daemon.web_listen, None);

        let config = parse_text("[server]\n").unwrap();
        let server = config.server.unwrap();
        assert_eq!(server.listen, "0.0.0.0:7101");
        assert_eq!(
            server.data_dir,
            Path::new("/home/alice/.local/state/filesync/server")
        );
        assert_eq!(server.registration, Registration::Invite);
        assert_eq!(server.keep_versions, DEFAULT_KEEP_VERSIONS_DAYS);
        assert_eq!(
            server.max_connections_per_address,
            DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
        );
        assert_eq!(server.default_quota, None);
        assert_eq!(server.min_free_space, DEFAULT_MIN_FREE_SPACE);
        assert_eq!(
            server.max_folders_per_account,
            DEFAULT_MAX_FOLDERS_PER_ACCOUNT
        );
    }

    #[test]
    fn sizes_take_units() {
        let text = "[server]\ndefault_quota = \"10GiB\"\nmin_free_space = \"500MB\"\n";
        let server = parse_text(text).unwrap().server.unwrap();
        assert_eq!(server.default_quota, Some(10 << 30));
        assert_eq!(server.min_free_space, 500_000_000);
        let text = "[server]\ndefault_quota = \"none\"\nmin_free_space = \"0\"\n";
        let server = parse_text(text).unwrap().server.unwrap();
        assert_eq!((server.default_quota, server.min_free_space), (None, 0));
    }

    #[test]
    fn max_connections_per_address_takes_1_to_the_server_limit() {
        for n in [1, 200, MAX_CONNECTIONS] {
            let text = format!("[server]\nmax_connections_per_address = {n}\n");
            let config = parse_text(&text).unwrap();
            assert_eq!(config.server.unwrap().max_connections_per_address, n);
        }
        check_err(
            "[server]\nmax_connections_per_address = 1025\n",
            2,
            "server.max_connections_per_address",
        );
    }

    #[test]
    fn keep_versions_takes_days_from_0_to_36500() {
        for days in [0, 7, 36_500] {
            let config = parse_text(&format!("[server]\nkeep_versions = {days}\n")).unwrap();
            assert_eq!(config.server.unwrap().keep_versions, days);
        }
        check_err(
            "[server]\nkeep_versions = 36501\n",
            2,
            "server.keep_versions",
        );
    }

    #[test]
    fn defaults_follow_the_environment() {
        let root = Env {
            root: true,
            ..Env::for_tests()
        };
        let config = parse(Path::new(FILE), "[server]\n", &root).unwrap();
        assert_eq!(config.daemon.state_dir, Path::new("/var/lib/filesyncd"));
        assert_eq!(
            config.server.unwrap().data_dir,
            Path::new("/var/lib/filesyncd/data")
        );

        let xdg = Env {
            xdg_state_home: Some("/xdg/state".into()),
            ..Env::for_tests()
        };
        let config = parse(Path::new(FILE), "", &xdg).unwrap();
        assert_eq!(config.daemon.state_dir, Path::new("/xdg/state/filesync"));

        let homeless = Env {
            home: None,
            ..Env::for_tests()
        };
        let err = parse(Path::new(FILE), "", &homeless).unwrap_err();
        assert!(err.message.contains("set `state_dir`"), "{err}");
        let err = parse(
            Path::new(FILE),
            "[daemon]\nstate_dir = \"~/s\"\n",
            &homeless,
        )
        .unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("($HOME is not set)"), "{err}");
    }

    #[test]
    fn folders_are_normalised_and_named() {
        let text = concat!(
            "folder = [\n",
            "  { path = \"~/a/./b/../Music/\", server = \"[::1]:7101\" },\n",
            "  { path = \"/x/Music\", server = \"other:7101\" },\n",
            "]\n",
        );
        let config = parse_text(text).unwrap();
        let paths: Vec<_> = config.folders.iter().map(|f| f.path.as_path()).collect();
        assert_eq!(
            paths,
            [Path::new("/home/alice/a/Music"), Path::new("/x/Music")]
        );
        assert!(config.folders.iter().all(|f| f.name.as_str() == "Music"));
        assert_eq!(config.folders[0].rescan_interval, Duration::from_secs(3600));
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("example.toml");
        let config = parse_text(text).unwrap();
        let state_dir = PathBuf::from("/home/alice/.local/state/filesync");
        let expected = Config {
            file: FILE.into(),
            daemon: DaemonSection {
                state_dir: state_dir.clone(),
                control_socket: None,
                metrics_listen: None,
                web_listen: Some("127.0.0.1:7102".parse().unwrap()),
            },
            server: Some(ServerSection {
                listen: "0.0.0.0:7101".into(),
                public_address: None,
                data_dir: state_dir.join("server"),
                registration: Registration::Invite,
                keep_versions: 30,
                max_connections_per_address: 32,
                default_quota: None,
                min_free_space: 1 << 30,
                max_folders_per_account: 256,
                backend: Backend::Embedded,
            }),
            folders: vec![
                FolderConfig {
                    account: Some(AccountName::new("home").unwrap()),
                    ..FolderConfig::new(
                        "/home/alice/Documents".into(),
                        "files.example.org:7101".into(),
                        FolderName::new("Documents").unwrap(),
                    )
                },
                FolderConfig {
                    mode: FolderMode::SendOnly,
                    rescan_interval: Duration::from_secs(6 * 3600),
                    paused: true,
                    ..FolderConfig::new(
                        "/srv/photos".into(),
                        "[2001:db8::10]:7101".into(),
                        FolderName::new("photos").unwrap(),
                    )
                },
            ],
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn the_packaged_default_config_parses() {
        let config = parse_text(include_str!("../../../packaging/filesyncd.toml")).unwrap();
        assert_eq!(config.daemon.state_dir, Path::new("/var/lib/filesyncd"));
        assert_eq!(
            config.daemon.control_socket.as_deref(),
            Some(Path::new("/run/filesyncd/filesyncd.sock"))
        );
        let server = config
            .server
            .expect("the package configures the server role");
        assert_eq!(server.data_dir, Path::new("/var/lib/filesyncd/data"));
        assert_eq!(server.registration, Registration::Invite);
        assert!(config.folders.is_empty());
    }
}
