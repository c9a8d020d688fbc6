//! Operations on a folder's tree other than writing content: directories, symlinks, a
//! file's mode and mtime, removing, moving and renaming, and reading a block of a file.
//! Every one goes through [`beneath`](crate::fs::beneath), so none passes a symlink.

use std::fs::File;
use std::io;

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{Entry, EntryKind};
use filesync_proto::{Hash, RelPath};

use crate::fs::FileExt;
use crate::fs::beneath::{self, Dir, OFlags, Root};
use crate::fs::stat::{Stat, parent, parent_creating, parent_error, stat_in, stat_of};
use crate::fs::{PARTIAL_PREFIX, TEMP_PREFIX};

/// A server entry this device cannot hold at all, with why: a symbolic link where the
/// system refuses to make one. The client lists it as unsyncable instead of retrying.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CannotHold(pub String);

/// Sets the access and modification times of an open file.
pub(super) fn set_mtime(file: &File, mtime_ns: i64) -> io::Result<()> {
    let t = filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_handle_times(file, Some(t), Some(t))
}

/// Gives an open file the permission bits `mode`.
#[cfg(unix)]
pub fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
}

/// Windows holds no permission bits: the mode stays in the index only.
#[cfg(windows)]
pub fn set_mode(_: &File, _: u32) -> io::Result<()> {
    Ok(())
}

/// Persists renames and unlinks in the directory `dir` itself; best effort, as some
/// filesystems refuse to fsync directories.
pub fn sync_dir(dir: &std::path::Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Gives the file at the entry's path the mode and mtime of `entry`, for a change of
/// metadata only; never follows a symlink.
pub fn set_file_meta(root: &Root, entry: &Entry) -> Result<Stat> {
    let (dir, name) = parent(root, &entry.path)?;
    let full = dir.display(name);
    let file = dir
        .open(name, OFlags::RDONLY, 0)
        .with_context(|| format!("cannot open {}", full.display()))?;
    if !file.metadata()?.is_file() {
        bail!("{} is no longer a regular file", full.display());
    }
    set_mode(&file, entry.mode)
        .with_context(|| format!("cannot set the mode of {}", full.display()))?;
    set_mtime(&file, entry.mtime_ns)
        .with_context(|| format!("cannot set mtime of {}", full.display()))?;
    stat_of(&file.metadata()?).context("file vanished while its metadata was set")
}

/// Removes an empty directory at `name` in `dir` so a file or symlink can take its place.
pub(super) fn clear_dir_for(dir: &Dir, name: &str) -> Result<()> {
    match stat_in(dir, name)? {
        Some(s) if s.kind == EntryKind::Dir => match dir.rmdir(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                bail!(
                    "{} is a directory that is not empty yet",
                    dir.display(name).display()
                )
            }
            Err(e) => Err(e).with_context(|| {
                format!("cannot remove directory {}", dir.display(name).display())
            }),
        },
        _ => Ok(()),
    }
}

/// Reads `size` bytes at `offset` of the regular file at `path` in the folder at `root`,
/// never through a symlink.
pub fn read_block(root: &Root, path: &RelPath, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let (dir, name) = root.parent(path)?;
    let f = dir.open_regular(name)?;
    let mut buf = vec![0; size as usize];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// The whole content of the regular file at `path` in the folder at `root`, if it is
/// still the version of `size` bytes hashing to `hash` (`None` if it changed since),
/// never through a symlink. For small files: the content is read into memory at once.
pub fn read_version(
    root: &Root,
    path: &RelPath,
    size: u64,
    hash: &Hash,
) -> io::Result<Option<Vec<u8>>> {
    let (dir, name) = root.parent(path)?;
    let file = dir.open_regular(name)?;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    io::Read::read_to_end(
        &mut io::Read::take(&file, size.saturating_add(1)),
        &mut data,
    )?;
    let same = data.len() as u64 == size && crate::fs::chunk::sha256(&data) == *hash;
    Ok(same.then_some(data))
}

/// Makes sure the directory for `entry` exists with its mode.
pub fn make_dir(root: &Root, entry: &Entry) -> Result<Stat> {
    let (dir, name) = parent_creating(root, &entry.path)?;
    let full = dir.display(name);
    match stat_in(&dir, name)? {
        Some(s) if s.kind == EntryKind::Dir => {}
        // The caller checked that what is here is what the index knows and decided the
        // path becomes a directory: a file or symlink in the way is replaced.
        Some(_) => {
            dir.unlink(name)
                .with_context(|| format!("cannot replace {} with a directory", entry.path))?;
            dir.mkdir(name, 0o777)
                .with_context(|| format!("cannot create directory {}", full.display()))?;
        }
        None => match dir.mkdir(name, 0o777) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(e)
                    .with_context(|| format!("cannot create directory {}", full.display()));
            }
            _ => {}
        },
    }
    let made = dir
        .open_dir(name)
        .map_err(|e| parent_error(&entry.path, e))?;
    made.chmod((entry.mode & 0o777) | 0o700)
        .with_context(|| format!("cannot set the mode of {}", full.display()))?;
    stat_in(&dir, name)?.context("directory vanished right after it was made")
}

/// Creates or replaces the symlink for `entry`; the target is stored, never followed.
pub fn make_symlink(root: &Root, entry: &Entry) -> Result<Stat> {
    let (dir, name) = parent_creating(root, &entry.path)?;
    clear_dir_for(&dir, name)?;
    let tmp = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
    if let Err(e) = dir.symlink(&entry.target, &tmp) {
        let full = dir.display(name);
        if beneath::cannot_hold_link(&e) {
            return Err(CannotHold(format!(
                "cannot create symlink {}: {e}; on Windows a user may create links with \
                     developer mode on (or the privilege to create symbolic links): turn it \
                     on, then `filesyncctl rescan`",
                full.display()
            ))
            .into());
        }
        return Err(e).with_context(|| format!("cannot create symlink {}", full.display()));
    }
    if let Err(e) = dir.rename(&tmp, &dir, name) {
        let _ = dir.unlink(&tmp);
        return Err(e).with_context(|| {
            format!(
                "cannot rename symlink into place {}",
                dir.display(name).display()
            )
        });
    }
    stat_in(&dir, name)?.context("symlink vanished right after it was made")
}

/// Removes the file or symlink at `path`, or the directory if it is empty. Returns
/// false, touching nothing, when a directory still holds something. Partial transfers
/// do not count: they are ours, of files that were in the directory, and go with it
/// (else a directory deleted everywhere else would stay here, or on the server come
/// back to every device, for a cache).
pub fn remove(root: &Root, path: &RelPath) -> Result<bool> {
    let (dir, name) = match root.parent(path) {
        Ok(found) => found,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(parent_error(path, e)),
    };
    let full = dir.display(name);
    match stat_in(&dir, name)? {
        None => return Ok(true),
        Some(s) if s.kind == EntryKind::Dir => {
            let not_empty = |r: &std::io::Result<()>| {
                r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::DirectoryNotEmpty)
            };
            let mut removed = dir.rmdir(name);
            if not_empty(&removed) && drop_partials(&dir, name) {
                removed = dir.rmdir(name);
            }
            if not_empty(&removed) {
                return Ok(false);
            }
            removed.with_context(|| format!("cannot remove directory {}", full.display()))?;
        }
        Some(_) => dir
            .unlink(name)
            .with_context(|| format!("cannot remove {}", full.display()))?,
    }
    dir.sync();
    Ok(true)
}

/// Removes the partial transfers in the directory `name` of `dir` if they are all it
/// holds; false, touching nothing, if it holds anything else (or cannot be listed).
fn drop_partials(dir: &Dir, name: &str) -> bool {
    let Ok(sub) = dir.open_dir(name) else {
        return false;
    };
    let Ok(items) = sub.names() else {
        return false;
    };
    let names: Option<Vec<&str>> = items
        .iter()
        .map(|(n, _)| n.to_str().filter(|n| n.starts_with(PARTIAL_PREFIX)))
        .collect();
    let Some(names) = names else {
        return false;
    };
    for n in names {
        if sub.unlink(n).is_err() {
            return false;
        }
    }
    true
}

/// Moves a local version aside to a conflict copy name, keeping it; nothing at `to` is
/// replaced.
pub fn move_aside(root: &Root, from: &RelPath, to: &RelPath) -> Result<()> {
    let ((a, a_name), (b, b_name)) = (parent(root, from)?, parent(root, to)?);
    a.rename_noreplace(a_name, &b, b_name)
        .with_context(|| format!("cannot move {from} aside to {to}"))?;
    b.sync();
    Ok(())
}

/// Moves `from` to `to` inside the folder, making the directories above `to` as real
/// directories; nothing at `to` is replaced, and no symlink is passed through.
pub fn move_into(root: &Root, from: &RelPath, to: &RelPath) -> Result<()> {
    let ((a, a_name), (b, b_name)) = (parent(root, from)?, parent_creating(root, to)?);
    a.rename_noreplace(a_name, &b, b_name)
        .with_context(|| format!("cannot move {from} to {to}"))?;
    a.sync();
    b.sync();
    Ok(())
}

/// Moves `from` over `to`, replacing what is there.
pub fn rename_over(root: &Root, from: &RelPath, to: &RelPath) -> Result<()> {
    let ((a, a_name), (b, b_name)) = (parent(root, from)?, parent(root, to)?);
    a.rename(a_name, &b, b_name)
        .with_context(|| format!("cannot move {from} over {to}"))?;
    b.sync();
    Ok(())
}

/// Renames the directory `from` to `to` inside the folder at `root`, subtree and all,
/// as one rename. Nothing at `to` is replaced, and no symlink is passed through.
pub fn rename_dir(root: &Root, from: &RelPath, to: &RelPath) -> Result<Stat> {
    let ((a, a_name), (b, b_name)) = (parent(root, from)?, parent(root, to)?);
    match stat_in(&a, a_name)? {
        Some(s) if s.kind == EntryKind::Dir => {}
        _ => bail!("{from} is no longer a directory here"),
    }
    a.rename_noreplace(a_name, &b, b_name)
        .with_context(|| format!("cannot rename {from} to {to}"))?;
    a.sync();
    b.sync();
    stat_in(&b, b_name)?.with_context(|| format!("{to} vanished right after the rename"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::fs::temp::tests::entry_for;

    #[test]
    fn remove_keeps_non_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("d/e")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let root = &root;
        assert!(!remove(root, &RelPath::new("d").unwrap()).unwrap());
        assert!(remove(root, &RelPath::new("d/e").unwrap()).unwrap());
        assert!(remove(root, &RelPath::new("d").unwrap()).unwrap());
        assert!(remove(root, &RelPath::new("missing").unwrap()).unwrap());
    }

    #[test]
    fn symlinks_are_made_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut e = entry_for("link", b"");
        e.kind = EntryKind::Symlink;
        e.target = "/etc/passwd".into();
        let st = make_symlink(&root, &e).unwrap();
        assert_eq!(st.kind, EntryKind::Symlink);
        assert_eq!(
            fs::read_link(dir.path().join("link")).unwrap(),
            std::path::Path::new("/etc/passwd")
        );
    }
}
