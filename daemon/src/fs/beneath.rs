//! Every file operation inside a synced folder goes through here: relative to an open
//! handle of the folder's root directory, never following a symlink on the way, so that
//! a directory swapped for a symlink while a transfer runs cannot redirect a read or a
//! write outside the folder.
//!
//! [`Root::parent`] opens the directory that holds a path, below the root: on Linux with
//! one `openat2` and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`;
//! where the kernel lacks it (ENOSYS, before 5.6) and on other systems, by opening one
//! component at a time with `O_DIRECTORY | O_NOFOLLOW` ([`walk`]). The operation on the
//! last component is then relative to that [`Dir`] and never follows a symlink either:
//! `openat` with `O_NOFOLLOW`, `renameat2`, `unlinkat`, `mkdirat`, `fchmod`, `symlinkat`,
//! `readlinkat`, `linkat`; a file's mode and times are then set on its open handle.
//!
//! A path whose parent is a symlink (or a file) fails with [`is_refused`] true. The root
//! itself is opened by its configured path, symlinks and all: that is the user's choice.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, RenameFlags};

pub use rustix::fs::{FileType, OFlags, Stat as RawStat};

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

/// An open directory handle of a folder's root.
pub struct Root {
    dir: Dir,
}

/// An open directory inside a folder (or its root), and its path for messages.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR_FLAGS.difference(OFlags::NOFOLLOW), Mode::empty())?;
        Ok(Root {
            dir: Dir {
                fd,
                path: path.to_path_buf(),
            },
        })
    }

    /// Another handle of the same root, for work on another thread.
    pub fn try_clone(&self) -> io::Result<Root> {
        Ok(Root {
            dir: self.dir.try_clone()?,
        })
    }

    /// The root's own directory handle.
    pub(in crate::fs) fn top(&self) -> &Dir {
        &self.dir
    }

    /// The directory `components` below the root (the root itself when empty).
    pub fn dir_at(&self, components: &[&str]) -> io::Result<Dir> {
        #[cfg(target_os = "linux")]
        if !components.is_empty() && openat2_works() {
            let rel = components.join("/");
            let resolve = rustix::fs::ResolveFlags::BENEATH
                | rustix::fs::ResolveFlags::NO_SYMLINKS
                | rustix::fs::ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.dir.fd, &rel, DIR_FLAGS, Mode::empty(), resolve) {
                Ok(fd) => {
                    return Ok(Dir {
                        fd,
                        path: self.dir.path.join(rel),
                    });
                }
                Err(rustix::io::Errno::NOSYS) => {
                    OPENAT2_MISSING.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        walk(&self.dir, components, false)
    }
}

#[cfg(target_os = "linux")]
static OPENAT2_MISSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(target_os = "linux")]
fn openat2_works() -> bool {
    !OPENAT2_MISSING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Opens `components` below `from` one at a time, never following a symlink and refusing
/// `..`, `.` and anything that is not one plain name; with `create`, makes the missing
/// ones. The fallback of [`Root::parent`] where `openat2` is missing.
pub fn walk(from: &Dir, components: &[&str], create: bool) -> io::Result<Dir> {
    let mut dir = from.try_clone()?;
    for &part in components {
        if part.is_empty() || part == "." || part == ".." || part.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{part:?} is not a plain name"),
            ));
        }
        let fd = match rustix::fs::openat(&dir.fd, part, DIR_FLAGS, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&dir.fd, part, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&dir.fd, part, DIR_FLAGS, Mode::empty())?
            }
            other => other?,
        };
        dir = Dir {
            fd,
            path: dir.path.join(part),
        };
    }
    Ok(dir)
}

/// Takes the exclusive lock of an open file (a partial transfer's) without waiting:
/// whether nobody else holds it.
pub fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` lives; flock only reads it.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Whether opening a name with `O_NOFOLLOW` failed because the name is a symlink.
pub fn is_symlink(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Whether making a symlink failed because this system cannot hold one at all: never on
/// Unix, where a failure is an error like any other, retried.
pub fn cannot_hold_link(_: &io::Error) -> bool {
    false
}

/// Whether a rename failed because its two ends are on different filesystems.
pub fn is_cross_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EXDEV)
}

/// Whether an error means a symlink or a file stands where a directory was expected on
/// the way to a path: the path is refused, not merely missing.
pub fn is_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
    ) || e.kind() == io::ErrorKind::InvalidInput
}

impl Dir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Whether both handles are the same directory.
    #[cfg(test)]
    fn same_as(&self, other: &Dir) -> io::Result<bool> {
        Ok(self.id()? == other.id()?)
    }

    /// The directory's device and inode: the same for every handle of it.
    pub fn id(&self) -> io::Result<(u64, u64)> {
        let st = rustix::fs::fstat(&self.fd)?;
        Ok((st.st_dev, st.st_ino))
    }

    /// `lstat` of `name`: `None` when nothing is there.
    pub fn stat(&self, name: &str) -> io::Result<Option<rustix::fs::Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens `name` with `flags` (and `mode` if it is created), never through a symlink.
    pub fn open(&self, name: &str, flags: OFlags, mode: u32) -> io::Result<File> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode))?;
        Ok(File::from(fd))
    }

    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(
            &self.fd,
            name,
            Mode::from_raw_mode(mode),
        )?)
    }

    pub fn unlink(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    pub fn rmdir(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
    }

    /// Renames `name` to `to_name` in `to`, replacing what is there.
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, name, &to.fd, to_name)?)
    }

    /// Renames `name` to `to_name` in `to`, failing with `AlreadyExists` rather than
    /// replacing anything there, even something that appears at the last moment.
    pub fn rename_noreplace(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        match rustix::fs::renameat_with(&self.fd, name, &to.fd, to_name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            // A filesystem without the flag: check, then rename.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                if to.stat(to_name)?.is_some() {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                self.rename(name, to, to_name)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `name` in this directory to `to`, a path outside every folder.
    pub fn rename_out(&self, name: &str, to: &Path) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, name, rustix::fs::CWD, to)?)
    }

    /// Hard-links `name` (never through a symlink) as `to`, a path outside every folder.
    pub fn link_out(&self, name: &str, to: &Path) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.fd,
            name,
            rustix::fs::CWD,
            to,
            AtFlags::empty(),
        )?)
    }

    pub fn symlink(&self, target: &str, name: &str) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &self.fd, name)?)
    }

    pub fn read_link(&self, name: &str) -> io::Result<PathBuf> {
        let target = rustix::fs::readlinkat(&self.fd, name, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Sets the permission bits of this directory itself.
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))?)
    }

    /// Persists renames and unlinks in this directory; best effort, as some filesystems
    /// refuse to fsync directories.
    pub fn sync(&self) {
        let _ = self.sync_checked();
    }

    /// Persists renames and unlinks in this directory, reporting a failure (an I/O
    /// error) but not a filesystem that cannot fsync a directory at all.
    pub fn sync_checked(&self) -> io::Result<()> {
        match rustix::fs::fsync(&self.fd) {
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) => Ok(()),
            other => Ok(other?),
        }
    }

    /// The names in this directory (not `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<(std::ffi::OsString, rustix::fs::FileType)>> {
        let fd = rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        let mut out = Vec::new();
        for item in rustix::fs::Dir::read_from(&fd)? {
            let item = item?;
            let name = OsStr::from_bytes(item.file_name().to_bytes());
            if name != "." && name != ".." {
                out.push((name.to_os_string(), item.file_type()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_proto::RelPath;
    use std::fs;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A root holding `a/b/f`, a symlink `a/out` to a directory outside it, and a file
    /// `a/file`.
    fn tree() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"f").unwrap();
        fs::write(root.join("a/file"), b"x").unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("a/out")).unwrap();
        let r = Root::open(&root).unwrap();
        (dir, r)
    }

    #[test]
    fn plain_paths_resolve_to_their_parent() {
        let (_d, root) = tree();
        let (f, a) = (rel("a/b/f"), rel("a"));
        let (dir, name) = root.parent(&f).unwrap();
        assert_eq!(name, "f");
        assert!(dir.stat("f").unwrap().is_some());
        let (top, name) = root.parent(&a).unwrap();
        assert_eq!(name, "a");
        assert!(top.same_as(&root.dir).unwrap());
    }

    #[test]
    fn a_symlink_or_file_on_the_way_is_refused() {
        let (_d, root) = tree();
        for p in ["a/out/x", "a/out/deeper/x", "a/file/x"] {
            let e = root.parent(&rel(p)).err().expect(p);
            assert!(is_refused(&e), "{p}: {e}");
            let e = root.parent_creating(&rel(p)).err().expect(p);
            assert!(is_refused(&e), "{p}: {e}");
        }
        assert!(!_d.path().join("outside/deeper").exists());
    }

    #[test]
    fn missing_parents_are_created_as_real_directories() {
        let (_d, root) = tree();
        assert_eq!(
            root.parent(&rel("new/sub/f")).err().unwrap().kind(),
            io::ErrorKind::NotFound
        );
        let (dir, _) = root.parent_creating(&rel("new/sub/f")).unwrap();
        assert!(dir.path().ends_with("new/sub"));
        assert!(root.path().join("new/sub").is_dir());
    }

    #[test]
    fn the_walker_refuses_symlinks_and_dot_dot() {
        let (_d, root) = tree();
        assert!(walk(&root.dir, &["a", "b"], false).is_ok());
        for parts in [
            &["a", "out"][..],
            &["a", ".."],
            &[".."],
            &["a", "file"],
            &["a/b"],
            &["."],
        ] {
            let e = walk(&root.dir, parts, false).err().expect("refused");
            assert!(is_refused(&e), "{parts:?}: {e}");
            let e = walk(&root.dir, parts, true).err().expect("refused");
            assert!(is_refused(&e), "{parts:?}: {e}");
        }
        let made = walk(&root.dir, &["c", "d"], true).unwrap();
        assert!(made.path().ends_with("c/d") && root.path().join("c/d").is_dir());
    }

    #[test]
    fn operations_on_the_last_component_never_follow_it() {
        let (d, root) = tree();
        let (a, _) = root.parent(&rel("a/x")).unwrap();
        let e = a
            .open("out", OFlags::RDONLY | OFlags::DIRECTORY, 0)
            .unwrap_err();
        assert!(is_refused(&e), "{e}");
        assert!(a.open_regular("out").is_err());
        assert_eq!(a.read_link("out").unwrap(), d.path().join("outside"));
        a.unlink("out").unwrap();
        assert!(d.path().join("outside").is_dir());
    }
}
