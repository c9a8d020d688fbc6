//! What is at a path in a folder, never following a symlink: [`Stat`], the facts that
//! tell whether a file changed since it was looked at, whether the disk still matches
//! what the index recorded, and the directory that holds a path.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, anyhow};
use filesync_proto::RelPath;
use filesync_proto::wire::{Entry, EntryKind};
use rustix::fs::FileType;

use crate::fs::beneath::{self, Dir, Root};

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
        mtime_ns: m
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime_nsec()),
        mode: mode_of(m),
        inode: m.ino(),
    })
}

/// The permission bits of a file's metadata.
pub fn mode_of(m: &fs::Metadata) -> u32 {
    m.mode() & 0o777
}

/// Whether `a` and what `lstat` returned as `b` are the same file with the same size
/// and mtime: nothing wrote into it or over it in between.
// The field types of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
pub fn same_file(a: &fs::Metadata, b: &rustix::fs::Stat) -> bool {
    (a.dev(), a.ino(), a.len(), a.mtime(), a.mtime_nsec())
        == (
            b.st_dev as u64,
            b.st_ino as u64,
            b.st_size as u64,
            b.st_mtime as i64,
            b.st_mtime_nsec as i64,
        )
}

/// [`stat_of`] for what `lstat` returns.
// The field types of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn stat_of_raw(st: &rustix::fs::Stat) -> Option<Stat> {
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
                            && s.mode == recorded.mode
                    }
                    EntryKind::Dir => true,
                    EntryKind::Symlink => true,
                }
        }
    }
}
