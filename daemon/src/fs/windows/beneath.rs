//! Confined access below a folder root on Windows, with the guarantees of the Unix
//! module (`fs/beneath.rs`): every operation is relative to an open handle of the
//! folder's root directory, and no link, junction or other reparse point is ever
//! followed, so that a directory swapped for a junction while a transfer runs cannot
//! redirect a read or a write outside the folder.
//!
//! Each component is opened relative to its parent's handle with `NtCreateFile`
//! (`OBJECT_ATTRIBUTES.RootDirectory`, one plain name: [`rules::check_name`] refuses
//! separators, `:` streams, `.` and `..`) and `FILE_OPEN_REPARSE_POINT`; a reparse point
//! on the way, or as the name operated on, is refused with `ERROR_CANT_RESOLVE_FILENAME`
//! ([`is_symlink`]), a file on the way with `ERROR_DIRECTORY` ([`is_refused`]). Delete,
//! rename and hard link work on the handle of the name (`NtSetInformationFile`), a
//! rename's target relative to the target directory's handle. The root itself is opened
//! by its configured path, links and all: that is the user's choice.
//!
//! What Windows does not have: permission bits ([`Dir::chmod`] and the `mode` of
//! [`Dir::open`] are not applied; the index keeps the modes), and an `fsync` of a
//! directory entry ([`Dir::sync_checked`]).

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::{AsHandle, OwnedHandle};
use std::path::{Path, PathBuf};

use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_ADD_FILE, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_LIST_DIRECTORY,
    FILE_READ_ATTRIBUTES, FILE_TRAVERSE, FILE_WRITE_ATTRIBUTES, SYNCHRONIZE,
};

use super::nt::{self, Want};
use super::rules::{self, Disposition};
use super::{ERROR_CANT_RESOLVE_FILENAME, ERROR_NOT_SAME_DEVICE};

pub use super::rules::OFlags;

/// What a directory listing says of a name, with the Unix names: a reparse point is
/// `Unknown` (its [`Dir::stat`] says what it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Directory,
    RegularFile,
    Unknown,
}

/// What [`Dir::stat`] answers: `lstat`'s result on Unix.
pub type RawStat = Metadata;

/// `ERROR_DIRECTORY`: a file where a directory was expected, `ENOTDIR` on Unix.
const ERROR_DIRECTORY: i32 = 267;

/// The rights a directory on the way is opened with: to list it and open names in it.
const DIR_ACCESS: u32 = FILE_LIST_DIRECTORY | FILE_TRAVERSE | FILE_READ_ATTRIBUTES;

/// An open directory handle of a folder's root.
pub struct Root {
    dir: Dir,
}

/// An open directory inside a folder (or its root), and its path for messages.
pub struct Dir {
    handle: OwnedHandle,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let file = OpenOptions::new()
            .access_mode(DIR_ACCESS | SYNCHRONIZE)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
            .open(path)?;
        if !file.metadata()?.is_dir() {
            return Err(io::Error::from_raw_os_error(ERROR_DIRECTORY));
        }
        Ok(Root {
            dir: Dir {
                handle: file.into(),
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
        walk(&self.dir, components, false)
    }
}

/// Opens `components` below `from` one at a time, each relative to the handle of the
/// one before, refusing reparse points, files, and anything that is not one plain name;
/// with `create`, makes the missing ones.
pub fn walk(from: &Dir, components: &[&str], create: bool) -> io::Result<Dir> {
    let mut dir = from.try_clone()?;
    for &part in components {
        rules::check_name(part)?;
        let want = Want::existing(DIR_ACCESS).dir();
        let handle = match nt::open_no_reparse(dir.handle.as_handle(), part, want) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                match dir.mkdir(part, 0o777) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                nt::open_no_reparse(dir.handle.as_handle(), part, want)?
            }
            other => other?,
        };
        dir = Dir {
            handle,
            path: dir.path.join(part),
        };
    }
    Ok(dir)
}

/// Takes the exclusive lock of an open file (a partial transfer's) without waiting:
/// whether nobody else holds it. The lock is on one byte far beyond the data, so that
/// it blocks no read or write of the file (locks are mandatory on Windows).
pub fn try_lock(file: &File) -> bool {
    nt::try_lock(file.as_handle())
}

/// Whether opening a name failed because the name is a link (a reparse point).
pub fn is_symlink(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_CANT_RESOLVE_FILENAME)
}

/// Whether making a link failed because this system cannot hold one: links not
/// supported (the filesystem, Wine), the privilege to make them missing, or a target
/// Windows cannot keep relative.
pub fn cannot_hold_link(e: &io::Error) -> bool {
    const ERROR_INVALID_FUNCTION: i32 = 1;
    const ERROR_NOT_SUPPORTED: i32 = 50;
    const ERROR_CALL_NOT_IMPLEMENTED: i32 = 120;
    matches!(
        e.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
    ) || matches!(
        e.raw_os_error(),
        Some(ERROR_INVALID_FUNCTION | ERROR_NOT_SUPPORTED | ERROR_CALL_NOT_IMPLEMENTED)
    )
}

/// Whether a rename failed because its two ends are on different volumes.
pub fn is_cross_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_NOT_SAME_DEVICE)
}

/// Whether a link or a file stands where a directory was expected on the way to a path.
pub fn is_refused(e: &io::Error) -> bool {
    is_symlink(e)
        || is_cross_device(e)
        || e.raw_os_error() == Some(ERROR_DIRECTORY)
        || e.kind() == io::ErrorKind::InvalidInput
}

impl Dir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            handle: self.handle.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The directory's volume serial number and file index: the same for every handle.
    pub fn id(&self) -> io::Result<(u64, u64)> {
        nt::file_id(self.handle.as_handle())
    }

    /// `name` itself opened with `want`, never through a reparse point on the way (the
    /// handle is one) nor at `name` (opened itself, not what it names).
    fn open_at(&self, name: &str, want: Want) -> io::Result<OwnedHandle> {
        rules::check_name(name)?;
        nt::open_at(self.handle.as_handle(), name, want)
    }

    /// The metadata of `name` itself (a link's, never its target's): `None` when
    /// nothing is there.
    pub fn stat(&self, name: &str) -> io::Result<Option<RawStat>> {
        match self.open_at(name, Want::existing(FILE_READ_ATTRIBUTES)) {
            Ok(handle) => Ok(Some(File::from(handle).metadata()?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens `name` with `flags`, never through a link; `mode` is not applied (Windows
    /// holds no permission bits). A read-only open also asks to set the file's times,
    /// as `futimens` may on Unix, where that is granted.
    pub fn open(&self, name: &str, flags: OFlags, _mode: u32) -> io::Result<File> {
        rules::check_name(name)?;
        let how = rules::open_as(flags);
        let want = Want {
            access: if how.write {
                FILE_GENERIC_READ | FILE_GENERIC_WRITE
            } else {
                FILE_GENERIC_READ | FILE_WRITE_ATTRIBUTES
            },
            disposition: how.disposition,
            directory: how.directory,
            non_directory: how.non_directory,
        };
        let h = self.handle.as_handle();
        let handle = match nt::open_no_reparse(h, name, want) {
            Err(e) if !how.write && e.kind() == io::ErrorKind::PermissionDenied => {
                let read = Want {
                    access: FILE_GENERIC_READ,
                    ..want
                };
                nt::open_no_reparse(h, name, read)?
            }
            other => other?,
        };
        Ok(File::from(handle))
    }

    /// Makes the directory `name`; `mode` is not applied.
    pub fn mkdir(&self, name: &str, _mode: u32) -> io::Result<()> {
        let want = Want {
            access: FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES,
            disposition: Disposition::Create,
            directory: true,
            non_directory: false,
        };
        self.open_at(name, want).map(drop)
    }

    /// Removes the file or link `name` (a link to a directory too, as on Unix), never
    /// what a link names; a directory is refused.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let handle = self.open_at(name, Want::existing(DELETE | FILE_READ_ATTRIBUTES))?;
        let attributes = nt::attributes(handle.as_handle())?;
        if attributes & FILE_ATTRIBUTE_DIRECTORY != 0
            && attributes & FILE_ATTRIBUTE_REPARSE_POINT == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", self.display(name).display()),
            ));
        }
        nt::delete(handle.as_handle())
    }

    /// Removes the empty directory `name` (`DirectoryNotEmpty` if it is not).
    pub fn rmdir(&self, name: &str) -> io::Result<()> {
        let want = Want::existing(DELETE | FILE_READ_ATTRIBUTES).dir();
        let handle = self.open_at(name, want)?;
        nt::delete(handle.as_handle())
    }

    fn rename_to(&self, name: &str, to: &Dir, to_name: &str, replace: bool) -> io::Result<()> {
        rules::check_name(to_name)?;
        let handle = self.open_at(name, Want::existing(DELETE | FILE_READ_ATTRIBUTES))?;
        nt::rename(
            handle.as_handle(),
            Some(to.handle.as_handle()),
            to_name,
            replace,
        )
    }

    /// Renames `name` to `to_name` in `to`, replacing what is there.
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        self.rename_to(name, to, to_name, true)
    }

    /// Renames `name` to `to_name` in `to`, failing with `AlreadyExists` rather than
    /// replacing anything there: one call, so even something that appears at the last
    /// moment is not replaced.
    pub fn rename_noreplace(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        self.rename_to(name, to, to_name, false)
    }

    /// Renames `name` in this directory to `to`, a path outside every folder.
    pub fn rename_out(&self, name: &str, to: &Path) -> io::Result<()> {
        let handle = self.open_at(name, Want::existing(DELETE | FILE_READ_ATTRIBUTES))?;
        nt::rename(handle.as_handle(), None, &nt_path(to)?, true)
    }

    /// Hard-links `name` (never through a link) as `to`, a path outside every folder.
    pub fn link_out(&self, name: &str, to: &Path) -> io::Result<()> {
        let want = Want::existing(FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES);
        let handle = self.open_at(name, want)?;
        nt::link(handle.as_handle(), &nt_path(to)?)
    }

    /// Windows holds no permission bits: nothing to set on a directory (its read-only
    /// attribute means something else there, and is left alone).
    pub fn chmod(&self, _mode: u32) -> io::Result<()> {
        Ok(())
    }

    /// Persists renames and unlinks in this directory; best effort.
    pub fn sync(&self) {
        let _ = self.sync_checked();
    }

    /// Persists renames and unlinks in this directory, as far as Windows can. There is
    /// no `fsync` of a directory entry: NTFS journals every change of a directory
    /// (create, rename, delete) and `FlushFileBuffers` on a directory handle opened for
    /// writing flushes the directory and that journal; a file system or a platform that
    /// refuses it (FAT, a network share, an ACL without the right to add files) is not
    /// an error, like a Linux filesystem that cannot fsync a directory.
    pub fn sync_checked(&self) -> io::Result<()> {
        const ERROR_INVALID_FUNCTION: i32 = 1;
        const ERROR_NOT_SUPPORTED: i32 = 50;
        const ERROR_INVALID_PARAMETER: i32 = 87;
        let flushed = nt::open_at(
            self.handle.as_handle(),
            "",
            Want::existing(FILE_ADD_FILE).dir(),
        )
        .and_then(|h| nt::flush(h.as_handle()));
        match flushed {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(ERROR_INVALID_FUNCTION | ERROR_NOT_SUPPORTED | ERROR_INVALID_PARAMETER)
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// The names in this directory (not `.` and `..`), listed on a handle of its own so
    /// that listings of one directory on two threads do not share a position.
    pub fn names(&self) -> io::Result<Vec<(OsString, FileType)>> {
        let want = Want::existing(FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES).dir();
        let handle = nt::open_at(self.handle.as_handle(), "", want)?;
        let mut buf = vec![0u64; 8 * 1024];
        let mut out = Vec::new();
        while nt::list_more(handle.as_handle(), &mut buf)? {
            for (name, attributes) in rules::parse_full_dir_info(nt::listing(&buf))? {
                let ft = if attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
                    FileType::Unknown
                } else if attributes & FILE_ATTRIBUTE_DIRECTORY != 0 {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                out.push((OsString::from_wide(&name), ft));
            }
        }
        Ok(out)
    }

    pub fn symlink(&self, target: &str, name: &str) -> io::Result<()> {
        rules::check_name(name)?;
        super::links::create(self.handle.as_handle(), target, name)
    }

    pub fn read_link(&self, name: &str) -> io::Result<PathBuf> {
        let handle = self.open_at(name, Want::existing(FILE_READ_ATTRIBUTES))?;
        super::links::target(handle.as_handle())
    }
}

/// The NT path of `to` (made absolute), for a rename or link out of a folder.
fn nt_path(to: &Path) -> io::Result<String> {
    let to = std::path::absolute(to)?;
    let to = to.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not valid Unicode", to.display()),
        )
    })?;
    rules::nt_path(to)
}

/// Built and run for Windows only (under Wine in development: `cargo test --target
/// x86_64-pc-windows-gnu -p filesyncd --lib fs::windows` with Wine as the runner). Wine
/// has no reparse points, so a link on the way is not tried here.
#[cfg(test)]
mod tests {
    use super::*;
    use filesync_proto::RelPath;
    use std::fs;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A root holding `a/b/f` and a file `a/file`.
    fn tree() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("a").join("b")).unwrap();
        fs::write(root.join("a").join("b").join("f"), b"f").unwrap();
        fs::write(root.join("a").join("file"), b"x").unwrap();
        let r = Root::open(&root).unwrap();
        (dir, r)
    }

    #[test]
    fn paths_resolve_relative_to_handles_and_files_on_the_way_are_refused() {
        let (_d, root) = tree();
        let f = rel("a/b/f");
        let (dir, name) = root.parent(&f).unwrap();
        assert_eq!(name, "f");
        assert!(dir.stat("f").unwrap().unwrap().is_file());
        assert!(dir.stat("missing").unwrap().is_none());
        let (top, _) = root.parent(&rel("a")).unwrap();
        assert_eq!(top.id().unwrap(), root.dir.id().unwrap());
        assert_ne!(dir.id().unwrap(), root.dir.id().unwrap());
        let e = root.parent(&rel("a/file/x")).err().unwrap();
        assert!(is_refused(&e), "{e}");
        let e = root.parent(&rel("nope/x")).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        for parts in [&[".."][..], &["a", "."], &["a\\b"], &["a:b"], &[""]] {
            let e = walk(&root.dir, parts, true).err().expect("refused");
            assert!(is_refused(&e), "{parts:?}: {e}");
        }
        let (made, _) = root.parent_creating(&rel("n/m/f")).unwrap();
        assert!(made.path().ends_with("n/m") && root.path().join("n").join("m").is_dir());
    }

    #[test]
    fn files_are_created_renamed_listed_and_removed_by_handle() {
        let (_d, root) = tree();
        let (a, _) = root.parent(&rel("a/x")).unwrap();
        let b = a.open_dir("b").unwrap();
        let excl = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
        let f = a.open("t", excl, 0o600).unwrap();
        f.set_len(3).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let e = a.open("t", excl, 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let e = a.rename_noreplace("t", &b, "f").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        a.rename("t", &b, "f").unwrap();
        assert_eq!(
            fs::read(root.path().join("a").join("b").join("f"))
                .unwrap()
                .len(),
            3
        );
        a.mkdir("d", 0o777).unwrap();
        let mut names: Vec<(String, FileType)> = a
            .names()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n.into_string().unwrap(), t))
            .collect();
        names.sort_by(|x, y| x.0.cmp(&y.0));
        let want = [
            ("b", FileType::Directory),
            ("d", FileType::Directory),
            ("file", FileType::RegularFile),
        ];
        assert_eq!(names, want.map(|(n, t)| (n.to_string(), t)));
        assert_eq!(
            a.unlink("d").unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(
            a.rmdir("b").unwrap_err().kind(),
            io::ErrorKind::DirectoryNotEmpty
        );
        a.rmdir("d").unwrap();
        a.unlink("file").unwrap();
        assert!(a.stat("file").unwrap().is_none() && a.stat("d").unwrap().is_none());
        a.sync_checked().unwrap();
        let regular = a.open_regular("b");
        assert!(regular.is_err());
    }

    #[test]
    fn a_partial_lock_is_exclusive_and_blocks_no_read() {
        let (_d, root) = tree();
        let f = rel("a/b/f");
        let (b, name) = root.parent(&f).unwrap();
        let first = b.open(name, OFlags::RDWR | OFlags::CREATE, 0o600).unwrap();
        let second = b.open(name, OFlags::RDWR | OFlags::CREATE, 0o600).unwrap();
        assert!(try_lock(&first));
        assert!(!try_lock(&second));
        let mut buf = [0; 1];
        crate::fs::FileExt::read_exact_at(&b.open_read(name).unwrap(), &mut buf, 0).unwrap();
        assert_eq!(&buf, b"f");
    }

    #[test]
    fn files_move_and_link_out_of_the_folder_by_path() {
        let (d, root) = tree();
        let (b, _) = root.parent(&rel("a/b/f")).unwrap();
        let out = d.path().join("kept");
        b.link_out("f", &out.with_extension("link")).unwrap();
        b.rename_out("f", &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"f");
        assert_eq!(fs::read(out.with_extension("link")).unwrap(), b"f");
        assert!(b.stat("f").unwrap().is_none());
    }
}
