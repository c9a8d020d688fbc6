//! What is at a path in a folder, never following a symlink: [`Stat`], the facts that
//! tell whether a file changed since it was looked at, whether the disk still matches
//! what the index recorded, and the directory that holds a path.

use std::fs;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, anyhow};
use filesync_proto::RelPath;
use filesync_proto::wire::{Entry, EntryKind};

use crate::fs::beneath::{self, Dir, RawStat, Root};

/// The facts about a file on disk that tell whether it changed since we looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: EntryKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub inode: u64,
}

/// What is at `path` in the folder, never following a symlink; a symlink or file where
/// a parent directory should be is an error.
pub fn stat(root: &Root, path: &RelPath) -> Result<Option<Stat>> {
    match root.parent(path) {
        Ok((dir, name)) => stat_in(&dir, name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(parent_error(path, e)),
    }
}

/// `None` for FIFOs, sockets and devices: they cannot be synced.
pub fn stat_of(m: &fs::Metadata) -> Option<Stat> {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        return None;
    };
    Some(Stat {
        kind,
        size: if kind == EntryKind::File { m.len() } else { 0 },
        mtime_ns: mtime_ns(m),
        mode: mode_of(m),
        inode: inode(m),
    })
}

#[cfg(unix)]
fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

#[cfg(windows)]
use crate::fs::windows::mtime_ns;

#[cfg(unix)]
fn inode(m: &fs::Metadata) -> u64 {
    m.ino()
}

/// Windows' file index is not in stable Rust yet (`MetadataExt::file_index`): 0 for
/// every file, so a file replaced at the same size and mtime goes unnoticed there.
#[cfg(windows)]
fn inode(_: &fs::Metadata) -> u64 {
    0
}

/// The permission bits of a file's metadata.
#[cfg(unix)]
pub fn mode_of(m: &fs::Metadata) -> u32 {
    m.mode() & 0o777
}

#[cfg(windows)]
pub use crate::fs::windows::mode_of;

/// Whether `a` and what `lstat` returned as `b` are the same file with the same size
/// and mtime: nothing wrote into it or over it in between.
// The field types of `struct stat` differ between architectures.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
pub fn same_file(a: &fs::Metadata, b: &RawStat) -> bool {
    (a.dev(), a.ino(), a.len(), a.mtime(), a.mtime_nsec())
        == (
            b.st_dev as u64,
            b.st_ino as u64,
            b.st_size as u64,
            b.st_mtime as i64,
            b.st_mtime_nsec as i64,
        )
}

/// [`same_file`] on Windows, without a file index: the same size and mtime.
#[cfg(windows)]
pub fn same_file(a: &fs::Metadata, b: &RawStat) -> bool {
    (a.len(), mtime_ns(a)) == (b.len(), mtime_ns(b))
}

/// [`stat_of`] for what `lstat` returns.
// The field types of `struct stat` differ between architectures.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
fn stat_of_raw(st: &RawStat) -> Option<Stat> {
    use rustix::fs::FileType;
    let kind = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => return None,
    };
    Some(Stat {
        kind,
        size: if kind == EntryKind::File {
            st.st_size as u64
        } else {
            0
        },
        mtime_ns: (st.st_mtime as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec as i64),
        mode: st.st_mode as u32 & 0o777,
        inode: st.st_ino as u64,
    })
}

#[cfg(windows)]
fn stat_of_raw(st: &RawStat) -> Option<Stat> {
    stat_of(st)
}

/// The mtime in whole seconds since the epoch and the size of what [`Dir::stat`]
/// returned, whatever it is.
// The field types of `struct stat` differ between architectures.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
pub fn raw_mtime_and_size(st: &RawStat) -> (i64, i64) {
    (st.st_mtime as i64, st.st_size as i64)
}

#[cfg(windows)]
pub fn raw_mtime_and_size(st: &RawStat) -> (i64, i64) {
    let size = i64::try_from(st.len()).unwrap_or(i64::MAX);
    (mtime_ns(st).div_euclid(1_000_000_000), size)
}

/// What is at `name` in `dir`, never following a symlink.
pub fn stat_in(dir: &Dir, name: &str) -> Result<Option<Stat>> {
    let st = dir
        .stat(name)
        .with_context(|| format!("cannot stat {}", dir.display(name).display()))?;
    Ok(st.as_ref().and_then(stat_of_raw))
}

/// The error for a path whose parent directory cannot be opened: refused when a symlink
/// or a file is in the way, which is said plainly.
pub fn parent_error(path: &RelPath, e: io::Error) -> anyhow::Error {
    if beneath::is_refused(&e) {
        anyhow!(
            "a parent of {path} is a symlink or not a directory; nothing is read or written through it"
        )
    } else {
        anyhow!(e).context(format!("cannot open the directory of {path}"))
    }
}

/// The directory holding `path` and its name there, refused through a symlink.
pub fn parent<'p>(root: &Root, path: &'p RelPath) -> Result<(Dir, &'p str)> {
    root.parent(path).map_err(|e| parent_error(path, e))
}

/// Like [`parent`], creating missing directories as real directories.
pub(super) fn parent_creating<'p>(root: &Root, path: &'p RelPath) -> Result<(Dir, &'p str)> {
    root.parent_creating(path)
        .map_err(|e| parent_error(path, e))
}

/// Whether the disk holds permission bits. Windows does not: there a file's mode lives
/// in the index only, and a Windows device never changes one for everyone.
const HOLDS_MODES: bool = cfg!(unix);

/// `st` with the mode the index `recorded`, where the disk holds none (Windows).
pub fn keep_mode(mut st: Stat, recorded: &Stat) -> Stat {
    if !HOLDS_MODES && st.kind == recorded.kind {
        st.mode = recorded.mode;
    }
    st
}

/// Whether the disk still holds what the index recorded for a path.
pub fn matches_index(disk: Option<&Stat>, entry: &Entry, inode: u64) -> bool {
    let recorded = Stat {
        kind: entry.kind,
        size: entry.size,
        mtime_ns: entry.mtime_ns,
        mode: entry.mode,
        inode,
    };
    matches_stat(disk, &recorded, entry.deleted)
}

/// [`matches_index`] for a row's stat fingerprint: what the index `recorded` (a
/// tombstone when `deleted`).
pub fn matches_stat(disk: Option<&Stat>, recorded: &Stat, deleted: bool) -> bool {
    match disk {
        None => deleted,
        Some(_) if deleted => false,
        Some(s) => {
            s.kind == recorded.kind
                && match s.kind {
                    EntryKind::File => {
                        s.size == recorded.size
                            && s.mtime_ns == recorded.mtime_ns
                            && s.inode == recorded.inode
                            && (s.mode == recorded.mode || !HOLDS_MODES)
                    }
                    EntryKind::Dir => true,
                    EntryKind::Symlink => true,
                }
        }
    }
}

/// Waits until the writes into `file` under way now have copied their bytes, and leaves
/// it open at its start. A write changes the file's mtime before it copies its bytes, so
/// a stat taken in between shows the new mtime while a read may still see old bytes:
/// equal stats around a read would pass a mix of two versions (seen here with another
/// process rewriting 64 KiB by single writes: 2 and 23 mixed reads in two runs of a few
/// hundred without this seek, none with it). Linux's
/// ext4, XFS, Btrfs and tmpfs hold the inode lock over the whole write, and take it to
/// answer SEEK_DATA: that seek returns only once those writes are done. A write that
/// begins later changes the mtime, which the stat after the read sees, unless it lands
/// in the same clock tick as the write before it: a file rewritten in place at the same
/// size many times a tick can still be read mid-write (sizes and appends are always
/// seen). Elsewhere the seek is a no-op and only the stats guard the read.
#[cfg(unix)]
pub fn writes_done(file: &fs::File) -> io::Result<()> {
    // An empty or all-hole file has no data (ENXIO): the lock was taken all the same.
    let _ = rustix::fs::seek(file, rustix::fs::SeekFrom::Data(0));
    rustix::fs::seek(file, rustix::fs::SeekFrom::Start(0))?;
    Ok(())
}

/// [`writes_done`] on Windows: the stats alone guard the read.
#[cfg(windows)]
pub fn writes_done(file: &fs::File) -> io::Result<()> {
    use std::io::Seek;
    (&*file).rewind()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Unix the disk's mode counts; on Windows, which reads every file as 0644, the
    /// index's mode (an executable bit from Linux) is kept and a mode alone is no change.
    #[test]
    fn a_mode_counts_only_where_the_disk_holds_one() {
        let file = |mode| Stat {
            kind: EntryKind::File,
            size: 1,
            mtime_ns: 7,
            mode,
            inode: 0,
        };
        let (disk, recorded) = (file(0o644), file(0o755));
        assert_eq!(
            keep_mode(disk, &recorded).mode,
            if HOLDS_MODES { 0o644 } else { 0o755 }
        );
        assert_eq!(matches_stat(Some(&disk), &recorded, false), !HOLDS_MODES);
        let dir = Stat {
            kind: EntryKind::Dir,
            ..recorded
        };
        assert_eq!(keep_mode(disk, &dir).mode, 0o644);
    }
}
