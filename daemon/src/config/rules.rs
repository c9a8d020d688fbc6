//! The rules a folder must pass both when the file is read and when `filesyncctl add` asks
//! for a new one: what a server address looks like, what a folder is called by default, and
//! which folders may not sit next to each other or next to the daemon's own directories.
//!
//! Nesting is refused because the outer folder's scanner would sync the inner folder's files
//! a second time (and its `.filesync*` metadata with them); the state and data directories
//! are refused because the daemon would sync its own database while writing it.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use filesync_proto::FolderName;

use super::{DEFAULT_PORT, FolderConfig};

/// The name a folder gets on the server when the user does not give one: the last
/// component of its path.
pub fn default_folder_name(path: &Path) -> Result<FolderName, String> {
    let last = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    FolderName::new(last).map_err(|e| {
        format!(
            "the folder name defaults to the last part of the path, but {e}; set `name` \
             (filesyncctl add --name) to a valid one"
        )
    })
}

/// Checks `HOST:PORT`, where HOST is a name, an IPv4 address or a bracketed IPv6 address.
/// `Err` reads after the word "server", e.g. `server "files.example" has no port; …`.
pub(super) fn check_server_addr(addr: &str) -> Result<(), String> {
    let no_port = || {
        let host = addr.trim_end_matches(':');
        format!(
            "{addr:?} has no port; write it as \"{host}:{DEFAULT_PORT}\" \
             ({DEFAULT_PORT} is the default port)"
        )
    };
    let port = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{addr:?} has no closing ']' after the IPv6 address"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{addr:?}: {host:?} is not an IPv6 address"));
        }
        after.strip_prefix(':').ok_or_else(no_port)?
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or_else(no_port)?;
        if host.contains(':') {
            return Err(format!(
                "{addr:?}: write an IPv6 address in brackets, like \"[::1]:{DEFAULT_PORT}\""
            ));
        }
        if !is_host_name(host) {
            return Err(format!(
                "{addr:?}: {host:?} is not a host name or IP address"
            ));
        }
        port
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ if port.is_empty() => Err(no_port()),
        _ => Err(format!(
            "{addr:?}: the port {port:?} is not a number from 1 to 65535"
        )),
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels that neither are empty nor start or
/// end with `-`; this covers IPv4 addresses too.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        })
}

/// Why a folder may not join the others. Indices point into the slice of other folders
/// given to [`find_clash`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Clash {
    SamePath(usize),
    SameName(usize),
    /// `inside`: the new folder is inside the other one; otherwise it contains it.
    Nested {
        other: usize,
        inside: bool,
    },
    StateDir {
        dir: PathBuf,
        inside: bool,
    },
    DataDir {
        dir: PathBuf,
        inside: bool,
    },
}

/// The first rule `new` breaks against `others`, the state directory and, for a server,
/// its data directory. Paths are compared component by component as given.
pub(super) fn find_clash(
    new: &FolderConfig,
    others: &[FolderConfig],
    state_dir: &Path,
    data_dir: Option<&Path>,
) -> Option<Clash> {
    let same_server = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    for (i, other) in others.iter().enumerate() {
        if other.path == new.path {
            return Some(Clash::SamePath(i));
        }
        if let Some(inside) = nesting(&new.path, &other.path) {
            return Some(Clash::Nested { other: i, inside });
        }
        if other.name == new.name && same_server(&other.server, &new.server) {
            return Some(Clash::SameName(i));
        }
    }
    if let Some(inside) = nesting(&new.path, state_dir) {
        let dir = state_dir.to_owned();
        return Some(Clash::StateDir { dir, inside });
    }
    let data_dir = data_dir?;
    nesting(&new.path, data_dir).map(|inside| Clash::DataDir {
        dir: data_dir.to_owned(),
        inside,
    })
}

/// `Some(true)` if `path` is inside `dir` or is `dir`, `Some(false)` if it contains `dir`.
fn nesting(path: &Path, dir: &Path) -> Option<bool> {
    if path.starts_with(dir) {
        Some(true)
    } else if dir.starts_with(path) {
        Some(false)
    } else {
        None
    }
}

impl Clash {
    /// Whether the fix is a different `name` rather than a different `path`.
    pub(super) fn is_about_name(&self) -> bool {
        matches!(self, Clash::SameName(_))
    }

    /// A sentence for the user; `label` names another folder the way the caller's user
    /// knows it (a line of the file, or a folder name for the CLI).
    pub(super) fn message(
        &self,
        new: &FolderConfig,
        others: &[FolderConfig],
        label: &dyn Fn(usize) -> String,
    ) -> String {
        let path = new.path.display();
        match self {
            Clash::SamePath(i) => format!(
                "{path} is already synced as {}; a directory can be synced only once",
                label(*i)
            ),
            Clash::SameName(i) => format!(
                "{} already syncs the folder name \"{}\" with server {}; set a different `name`",
                label(*i),
                new.name,
                new.server
            ),
            Clash::Nested { other, inside } => format!(
                "{path} {} {}, which is synced as {}; synced folders cannot be nested, so \
                 choose another path",
                if *inside { "is inside" } else { "contains" },
                others[*other].path.display(),
                label(*other)
            ),
            Clash::StateDir { dir, inside } => format!(
                "{path} {} the daemon's state directory {}, where filesyncd keeps its own \
                 data; choose another path, or move `state_dir` in [daemon]",
                relation(&new.path, dir, *inside),
                dir.display()
            ),
            Clash::DataDir { dir, inside } => format!(
                "{path} {} the server's data directory {}; choose another path, or move \
                 `data_dir` in [server]",
                relation(&new.path, dir, *inside),
                dir.display()
            ),
        }
    }
}

fn relation(path: &Path, dir: &Path, inside: bool) -> &'static str {
    match inside {
        _ if path == dir => "is",
        true => "is inside",
        false => "contains",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        for ok in [
            "files.example.org:7101",
            "localhost:1",
            "10.0.0.1:65535",
            "[::1]:7101",
            "[2001:db8::10]:7101",
            "my_host-2:80",
        ] {
            assert_eq!(check_server_addr(ok), Ok(()), "{ok}");
        }
        for (bad, said) in [
            ("files.example.org", "has no port"),
            (
                "files.example.org:",
                "write it as \"files.example.org:7101\"",
            ),
            ("[::1]", "has no port"),
            (":7101", "is not a host name"),
            ("::1:7101", "in brackets"),
            ("[::1:7101", "closing ']'"),
            ("[nope]:7101", "not an IPv6 address"),
            ("host:0", "from 1 to 65535"),
            ("host:99999", "from 1 to 65535"),
            ("host:http", "from 1 to 65535"),
            ("bad host:7101", "not a host name"),
            ("-host:7101", "not a host name"),
            ("a..b:7101", "not a host name"),
        ] {
            let err = check_server_addr(bad).unwrap_err();
            assert!(err.contains(said), "{bad}: {err}");
        }
    }

    #[test]
    fn default_names() {
        assert_eq!(
            default_folder_name(Path::new("/home/a/Docs"))
                .unwrap()
                .as_str(),
            "Docs"
        );
        let err = default_folder_name(Path::new("/home/a/My Docs")).unwrap_err();
        assert!(
            err.contains("\"My Docs\" may only") && err.contains("set `name`"),
            "{err}"
        );
    }

    #[test]
    fn clashes() {
        let folder = |path: &str, name: &str| {
            FolderConfig::new(path.into(), "h:1".into(), FolderName::new(name).unwrap())
        };
        let others = [folder("/a/b", "b"), folder("/c", "c")];
        let state = Path::new("/s/state");
        let data = Some(Path::new("/d/data"));
        let check = |path: &str, name: &str| find_clash(&folder(path, name), &others, state, data);
        assert_eq!(check("/x", "x"), None);
        assert_eq!(check("/a/bc", "bc"), None, "a shared prefix is not nesting");
        assert_eq!(check("/a/b", "z"), Some(Clash::SamePath(0)));
        assert_eq!(check("/x", "c"), Some(Clash::SameName(1)));
        assert_eq!(
            check("/a/b/c", "z"),
            Some(Clash::Nested {
                other: 0,
                inside: true
            })
        );
        assert_eq!(
            check("/a", "z"),
            Some(Clash::Nested {
                other: 0,
                inside: false
            })
        );
        assert!(matches!(
            check("/s/state/x", "z"),
            Some(Clash::StateDir { inside: true, .. })
        ));
        assert!(matches!(
            check("/s", "z"),
            Some(Clash::StateDir { inside: false, .. })
        ));
        assert!(matches!(
            check("/d/data", "z"),
            Some(Clash::DataDir { inside: true, .. })
        ));
        assert!(matches!(
            check("/d", "z"),
            Some(Clash::DataDir { inside: false, .. })
        ));
        let other_server = FolderConfig {
            server: "H:1".into(),
            ..folder("/x", "c")
        };
        assert_eq!(
            find_clash(&other_server, &others, state, data),
            Some(Clash::SameName(1)),
            "host names compare without case"
        );
    }
}
