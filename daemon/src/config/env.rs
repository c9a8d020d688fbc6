//! What the config's defaults and `~` depend on: the home directory, the XDG variables
//! and whether the daemon runs as root. Read once into [`Env`] so that parsing stays a pure
//! function of the text and this value, which tests build by hand.

use std::path::{Path, PathBuf};

/// The environment of the process, as far as the config cares.
#[derive(Debug, Clone)]
pub(super) struct Env {
    pub(super) home: Option<PathBuf>,
    pub(super) xdg_config_home: Option<PathBuf>,
    pub(super) xdg_state_home: Option<PathBuf>,
    pub(super) root: bool,
}

impl Env {
    #[cfg(unix)]
    pub(super) fn current() -> Env {
        // The XDG spec says relative values are invalid and must be ignored.
        let absolute = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Env {
            home: directories::BaseDirs::new().map(|d| d.home_dir().to_owned()),
            xdg_config_home: absolute("XDG_CONFIG_HOME"),
            xdg_state_home: absolute("XDG_STATE_HOME"),
            root: is_root(),
        }
    }

    /// On Windows `%APPDATA%` and `%LOCALAPPDATA%` take the places of the XDG
    /// directories: the config is `%APPDATA%\filesync\filesyncd.toml`, the state
    /// `%LOCALAPPDATA%\filesync`.
    #[cfg(windows)]
    pub(super) fn current() -> Env {
        let base = directories::BaseDirs::new();
        Env {
            home: base.as_ref().map(|d| d.home_dir().to_owned()),
            xdg_config_home: base.as_ref().map(|d| d.config_dir().to_owned()),
            xdg_state_home: base.as_ref().map(|d| d.data_local_dir().to_owned()),
            root: false,
        }
    }

    pub(super) fn config_file(&self) -> PathBuf {
        let config_home = match (&self.xdg_config_home, &self.home) {
            _ if self.root => None,
            (Some(dir), _) => Some(dir.clone()),
            (None, Some(home)) => Some(home.join(".config")),
            (None, None) => None,
        };
        match config_home {
            // Joined piece by piece, so that a Windows path gets `\` throughout.
            Some(dir) => dir.join("filesync").join("filesyncd.toml"),
            None => PathBuf::from("/etc/filesync/filesyncd.toml"),
        }
    }

    pub(super) fn default_state_dir(&self) -> Option<PathBuf> {
        if self.root {
            return Some(PathBuf::from("/var/lib/filesyncd"));
        }
        match (&self.xdg_state_home, &self.home) {
            (Some(dir), _) => Some(dir.join("filesync")),
            (None, Some(home)) => Some(home.join(".local").join("state").join("filesync")),
            (None, None) => None,
        }
    }

    pub(super) fn default_data_dir(&self, state_dir: &Path) -> PathBuf {
        if self.root {
            PathBuf::from("/var/lib/filesyncd/data")
        } else {
            state_dir.join("server")
        }
    }
}

#[cfg(unix)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
impl Env {
    /// Alice's session: no XDG variables, so every default derives from her home.
    pub(super) fn for_tests() -> Env {
        Env {
            home: Some("/home/alice".into()),
            xdg_config_home: None,
            xdg_state_home: None,
            root: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_file() {
        let env = Env::for_tests();
        let file = env.config_file();
        assert_eq!(
            file,
            Path::new("/home/alice/.config/filesync/filesyncd.toml")
        );
        let xdg = Env {
            xdg_config_home: Some("/xdg".into()),
            ..env.clone()
        };
        assert_eq!(xdg.config_file(), Path::new("/xdg/filesync/filesyncd.toml"));
        let root = Env { root: true, ..xdg };
        assert_eq!(
            root.config_file(),
            Path::new("/etc/filesync/filesyncd.toml")
        );
        assert!(crate::config::Config::default_path().ends_with("filesync/filesyncd.toml"));
    }
}
