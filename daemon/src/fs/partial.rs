//! The name of a large file's interrupted transfer, kept beside its target to be
//! resumed ([`crate::fs::temp::TempFile::resumable`]), and removing it.

use std::io;

use filesync_proto::RelPath;

use crate::fs::PARTIAL_PREFIX;
use crate::fs::beneath::Root;

/// The name of the partial transfer of a target named `name`: beside it, named after a
/// digest of its name, so that the next transfer of that path finds it.
fn partial_name(name: &str) -> String {
    let digest = crate::fs::chunk::sha256(name.as_bytes());
    format!("{PARTIAL_PREFIX}{}", &digest.to_hex()[..32])
}

/// A partial transfer on disk: the directory that holds it and its name there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partial {
    pub(super) dir: Vec<String>,
    pub(super) name: String,
}

impl Partial {
    /// The partial transfer of `target`, if there is one.
    pub fn of(target: &RelPath) -> Partial {
        let mut dir: Vec<String> = target.components().map(str::to_string).collect();
        let name = partial_name(&dir.pop().unwrap_or_default());
        Partial { dir, name }
    }

    /// Where the partial transfer of `target` is kept while its parent directory does
    /// not exist yet: in the root, named after the whole path ([`TempFile::resumable`]).
    pub fn in_root(target: &RelPath) -> Partial {
        Partial {
            dir: Vec::new(),
            name: partial_name(target.as_str()),
        }
    }

    /// Removes it from the folder at `root`: Ok(false) when it was not there.
    pub fn remove(&self, root: &Root) -> io::Result<bool> {
        let dirs: Vec<&str> = self.dir.iter().map(String::as_str).collect();
        match root.dir_at(&dirs).and_then(|d| d.unlink(&self.name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.dir {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.name)
    }
}
