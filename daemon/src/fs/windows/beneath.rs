//! Confined access below a folder root on Windows: not implemented yet. The Unix
//! module (`fs/beneath.rs`) opens every path relative to a handle of the folder's root
//! and never follows a symlink; the same guarantee on Windows (no link or junction ever
//! followed out of the folder) needs handle-relative opens (`NtCreateFile` with a root
//! directory handle and `FILE_FLAG_OPEN_REPARSE_POINT`), which the `cap-std` crate
//! implements. Until that is done, [`Root::open`] fails with an error that says so, and
//! no [`Dir`] can exist: its methods have the Unix module's signatures, so the rest of
//! the daemon builds, and none of them can ever run.

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use filesync_proto::RelPath;

use super::{ERROR_CANT_RESOLVE_FILENAME, ERROR_NOT_SAME_DEVICE};

/// What a directory listing says of a name, with the Unix names: [`Dir::names`] answers
/// `Unknown` where the listing does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Directory,
    Unknown,
}

/// What [`Dir::stat`] answers: `lstat`'s result on Unix.
pub type RawStat = Metadata;

/// The open flags callers pass to [`Dir::open`], with the Unix names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OFlags(u32);

impl OFlags {
    pub const RDONLY: OFlags = OFlags(0);
    pub const RDWR: OFlags = OFlags(1);
    pub const CREATE: OFlags = OFlags(2);
    pub const EXCL: OFlags = OFlags(4);
    pub const DIRECTORY: OFlags = OFlags(8);
}

impl std::ops::BitOr for OFlags {
    type Output = OFlags;
    fn bitor(self, other: OFlags) -> OFlags {
        OFlags(self.0 | other.0)
    }
}

/// An open directory handle of a folder's root.
pub struct Root {
    dir: Dir,
}

/// An open directory inside a folder: none exists on Windows yet.
pub struct Dir {
    never: Infallible,
}

/// The error every folder gets on Windows for now.
fn unsupported(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "synced folders are not supported on Windows yet: confined access below {} \
             (never following a link or junction out of it) is not implemented",
            path.display()
        ),
    )
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        Err(unsupported(path))
    }

    pub fn try_clone(&self) -> io::Result<Root> {
        match self.dir.never {}
    }

    /// [`Root::open`] for a synced folder, with an error that names it.
    pub fn open_folder(path: &Path) -> anyhow::Result<Root> {
        use anyhow::Context;
        Root::open(path).with_context(|| format!("cannot open folder root {}", path.display()))
    }

    pub fn path(&self) -> &Path {
        match self.dir.never {}
    }

    pub fn parent<'p>(&self, _: &'p RelPath) -> io::Result<(Dir, &'p str)> {
        match self.dir.never {}
    }

    pub fn parent_creating<'p>(&self, _: &'p RelPath) -> io::Result<(Dir, &'p str)> {
        match self.dir.never {}
    }

    pub fn dir_at(&self, _: &[&str]) -> io::Result<Dir> {
        match self.dir.never {}
    }
}

pub fn walk(from: &Dir, _: &[&str], _: bool) -> io::Result<Dir> {
    match from.never {}
}

/// A partial transfer is never taken over on Windows (`LockFileEx` is not called yet):
/// the transfer starts afresh in a temp file of its own.
pub fn try_lock(_: &File) -> bool {
    false
}

/// Whether opening a name failed because the name is a link.
pub fn is_symlink(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_CANT_RESOLVE_FILENAME)
}

/// Whether a rename failed because its two ends are on different volumes.
pub fn is_cross_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_NOT_SAME_DEVICE)
}

/// Whether a link or a file stands where a directory was expected on the way to a path.
pub fn is_refused(e: &io::Error) -> bool {
    is_symlink(e) || is_cross_device(e) || e.kind() == io::ErrorKind::InvalidInput
}

impl Dir {
    pub fn path(&self) -> &Path {
        match self.never {}
    }

    pub fn display(&self, _: &str) -> PathBuf {
        match self.never {}
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        match self.never {}
    }

    pub fn id(&self) -> io::Result<(u64, u64)> {
        match self.never {}
    }

    pub fn stat(&self, _: &str) -> io::Result<Option<RawStat>> {
        match self.never {}
    }

    pub fn open(&self, _: &str, _: OFlags, _: u32) -> io::Result<File> {
        match self.never {}
    }

    pub fn open_read(&self, _: &str) -> io::Result<File> {
        match self.never {}
    }

    pub fn open_regular(&self, _: &str) -> io::Result<File> {
        match self.never {}
    }

    pub fn open_dir(&self, _: &str) -> io::Result<Dir> {
        match self.never {}
    }

    pub fn mkdir(&self, _: &str, _: u32) -> io::Result<()> {
        match self.never {}
    }

    pub fn unlink(&self, _: &str) -> io::Result<()> {
        match self.never {}
    }

    pub fn rmdir(&self, _: &str) -> io::Result<()> {
        match self.never {}
    }

    pub fn rename(&self, _: &str, _: &Dir, _: &str) -> io::Result<()> {
        match self.never {}
    }

    pub fn rename_noreplace(&self, _: &str, _: &Dir, _: &str) -> io::Result<()> {
        match self.never {}
    }

    pub fn rename_out(&self, _: &str, _: &Path) -> io::Result<()> {
        match self.never {}
    }

    pub fn link_out(&self, _: &str, _: &Path) -> io::Result<()> {
        match self.never {}
    }

    pub fn symlink(&self, _: &str, _: &str) -> io::Result<()> {
        match self.never {}
    }

    pub fn read_link(&self, _: &str) -> io::Result<PathBuf> {
        match self.never {}
    }

    pub fn chmod(&self, _: u32) -> io::Result<()> {
        match self.never {}
    }

    pub fn sync(&self) {
        match self.never {}
    }

    pub fn sync_checked(&self) -> io::Result<()> {
        match self.never {}
    }

    pub fn names(&self) -> io::Result<Vec<(OsString, FileType)>> {
        match self.never {}
    }
}
