//! What confined access does alike on every platform, on top of the platform's
//! [`beneath`](crate::fs::beneath) (Unix: `fs/beneath.rs`; Windows:
//! `fs/windows/beneath.rs`): a folder's root opened with an error that names it, the
//! directory holding a path (made on the way when asked), and the opens that are one
//! platform open and a check.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use filesync_proto::RelPath;

use crate::fs::beneath::{Dir, OFlags, Root, walk};

impl Root {
    /// [`Root::open`] for a synced folder, with an error that names it.
    pub fn open_folder(path: &Path) -> anyhow::Result<Root> {
        use anyhow::Context;
        Root::open(path).with_context(|| format!("cannot open folder root {}", path.display()))
    }

    pub fn path(&self) -> &Path {
        self.top().path()
    }

    /// The directory that holds `path`, and `path`'s name in it.
    pub fn parent<'p>(&self, path: &'p RelPath) -> io::Result<(Dir, &'p str)> {
        let (dirs, name) = split(path);
        Ok((self.dir_at(&dirs)?, name))
    }

    /// Like [`Root::parent`], creating the missing directories on the way.
    pub fn parent_creating<'p>(&self, path: &'p RelPath) -> io::Result<(Dir, &'p str)> {
        let (dirs, name) = split(path);
        match self.dir_at(&dirs) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok((walk(self.top(), &dirs, true)?, name))
            }
            other => Ok((other?, name)),
        }
    }
}

fn split(path: &RelPath) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = path.components().collect();
    let name = parts.pop().unwrap_or_default();
    (parts, name)
}

impl Dir {
    /// The full path of `name` in this directory, for messages and logs.
    pub fn display(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Opens `name` for reading; a link there is refused
    /// ([`is_symlink`](crate::fs::beneath::is_symlink)), anything else is opened.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open(name, OFlags::RDONLY, 0)
    }

    /// Opens the regular file `name` for reading; a link or anything else is refused.
    pub fn open_regular(&self, name: &str) -> io::Result<File> {
        let file = self.open(name, OFlags::RDONLY, 0)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    /// Opens the directory `name` in this one.
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        walk(self, &[name], false)
    }
}
