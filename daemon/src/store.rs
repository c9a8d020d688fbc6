//! Writing into a folder: every file lands through a temp file that is verified,
//! fsynced and renamed into place, so a reader sees the old content or the new, never
//! a mix. Temp files are named `.filesync-tmp-*` inside the target directory (same
//! filesystem, so the rename is atomic) and are never synced.
//!
//! A large file is received into `.filesync-partial-*` instead, a name derived from the
//! target's name, and that file outlives an interrupted transfer: the next transfer of
//! the same target finds it and keeps the blocks it already holds (see
//! [`TempFile::resumable`] and [`TempFile::resume`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{BlockInfo, Entry, EntryKind};
use filesync_proto::{Hash, RelPath};
use sha2::{Digest, Sha256};

/// Prefix of everything the daemon keeps inside a synced folder.
pub const RESERVED_PREFIX: &str = ".filesync";
const TEMP_PREFIX: &str = ".filesync-tmp-";
const PARTIAL_PREFIX: &str = ".filesync-partial-";
/// A partial transfer nobody resumed for this long is removed by the start-up sweep.
const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether a name belongs to the daemon and must never be synced. The ignore file is
/// the user's, not the daemon's: it syncs like any file.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX) && name != crate::ignore::IGNORE_FILE
}

/// The facts about a file on disk that tell whether it changed since we looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: EntryKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub inode: u64,
}

pub fn stat(path: &Path) -> io::Result<Option<Stat>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(stat_of(&m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
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
        mode: m.mode() & 0o777,
        inode: m.ino(),
    })
}

/// Whether the disk still holds what the index recorded for a path.
pub fn matches_index(disk: Option<&Stat>, entry: &Entry, inode: u64) -> bool {
    match disk {
        None => entry.deleted,
        Some(_) if entry.deleted => false,
        Some(s) => {
            s.kind == entry.kind
                && match s.kind {
                    EntryKind::File => {
                        s.size == entry.size
                            && s.mtime_ns == entry.mtime_ns
                            && s.inode == inode
                            && s.mode == entry.mode
                    }
                    EntryKind::Dir => true,
                    EntryKind::Symlink => true,
                }
        }
    }
}

/// Where the partial transfer of `target` is kept: beside it, named after a digest of
/// its file name, so that the next transfer of that path finds it.
pub fn partial_path(target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?;
    let digest = crate::chunk::sha256(name.as_encoded_bytes());
    Some(target.with_file_name(format!("{PARTIAL_PREFIX}{}", &digest.to_hex()[..32])))
}

/// A temp file being filled with new content for `target`, front to back.
pub struct TempFile {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    written: u64,
    /// A partial transfer not yet [`TempFile::prepare`]d: kept when dropped, for resuming.
    keep: bool,
}

impl TempFile {
    /// Creates a temp file next to `target`, creating missing parent directories; it is
    /// removed when dropped unless it was renamed into place.
    pub fn create(target: &Path) -> Result<TempFile> {
        let dir = make_parent(target)?;
        let path = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("cannot create temp file {}", path.display()))?;
        Ok(TempFile::new(path, file, false))
    }

    /// Opens the partial transfer of `target` (see [`partial_path`]), creating it if
    /// there is none, and locks it. Until [`TempFile::prepare`] it outlives a failure,
    /// so that a later transfer can [`TempFile::resume`] it. When another transfer of the
    /// same target holds the lock, this falls back to a plain temp file.
    pub fn resumable(target: &Path) -> Result<TempFile> {
        make_parent(target)?;
        let path = partial_path(target).context("target has no file name")?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("cannot open partial transfer {}", path.display()))?;
        if !file.metadata()?.is_file() {
            bail!(
                "{} is in the way of a transfer and is not a regular file; remove it",
                path.display()
            );
        }
        // SAFETY: the descriptor is open for as long as `file` lives; flock only reads it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return TempFile::create(target);
        }
        Ok(TempFile::new(path, file, true))
    }

    fn new(path: PathBuf, file: File, keep: bool) -> TempFile {
        TempFile {
            path,
            file,
            hasher: Sha256::new(),
            written: 0,
            keep,
        }
    }

    /// Keeps the blocks an interrupted transfer already wrote: from the start, each block
    /// of `blocks` that the file holds at its offset and that hashes as expected counts
    /// as written. Stops at the first that does not; returns how many were kept. Only at
    /// the start of a transfer; reads as much as the file holds, so call it off the
    /// async threads.
    pub fn resume(&mut self, blocks: &[BlockInfo]) -> Result<usize> {
        let len = self.file.metadata()?.len();
        let mut buf = Vec::new();
        let mut kept = 0;
        for block in blocks {
            let end = self.written + u64::from(block.size);
            if end > len {
                break;
            }
            buf.resize(block.size as usize, 0);
            self.file
                .read_exact_at(&mut buf, self.written)
                .with_context(|| format!("cannot read {}", self.path.display()))?;
            if crate::chunk::sha256(&buf) != block.hash {
                break;
            }
            self.hasher.update(&buf);
            self.written = end;
            kept += 1;
        }
        Ok(kept)
    }

    /// Appends `data` after what is written so far.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, self.written)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Reads back `size` bytes written earlier at `offset`: a block that repeats within
    /// the file is copied, not fetched again.
    pub fn read_back(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        if offset + u64::from(size) > self.written {
            bail!(
                "{} has no block at offset {offset} yet",
                self.path.display()
            );
        }
        let mut buf = vec![0; size as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(buf)
    }

    /// Checks the content against `entry`, applies its mode and mtime, fsyncs, and
    /// renames over `target`. On any failure the temp file is removed and the target is
    /// untouched.
    pub fn commit(self, target: &Path, entry: &Entry) -> Result<Stat> {
        self.prepare(entry)?.install(target)
    }

    /// Verifies the content against `entry` and makes it durable, without touching the
    /// target yet: a caller may move the old version aside only once this succeeded.
    /// Anything an earlier transfer left beyond what was written is cut off. From here
    /// on a partial transfer goes when dropped too: content that fails this check must
    /// not be resumed.
    pub fn prepare(mut self, entry: &Entry) -> Result<Prepared> {
        self.keep = false;
        let got = Hash(std::mem::take(&mut self.hasher).finalize().into());
        if got != entry.hash || self.written != entry.size {
            bail!(
                "content of {} does not match its announced hash (got {} bytes, {}; expected {} bytes, {})",
                entry.path,
                self.written,
                got.short(),
                entry.size,
                entry.hash.short()
            );
        }
        self.file
            .set_len(self.written)
            .with_context(|| format!("cannot truncate {}", self.path.display()))?;
        self.file
            .set_permissions(fs::Permissions::from_mode(entry.mode & 0o777))?;
        self.file
            .sync_all()
            .with_context(|| format!("cannot fsync {}", self.path.display()))?;
        set_mtime(&self.path, entry.mtime_ns)?;
        Ok(Prepared(self))
    }
}

/// Content verified against its entry and durable, ready to be renamed into place.
pub struct Prepared(TempFile);

impl Prepared {
    /// Renames the content over `target`. An empty directory in the way goes (the caller
    /// decided the path becomes a file); a non-empty one is an error, so nothing inside it
    /// is lost.
    pub fn install(self, target: &Path) -> Result<Stat> {
        clear_dir_for(target)?;
        fs::rename(&self.0.path, target)
            .with_context(|| format!("cannot rename into place {}", target.display()))?;
        sync_parent(target);
        stat(target)?.context("file vanished right after it was written")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // After a successful rename the temp path no longer exists; otherwise this
        // removes the incomplete content, unless it is a partial transfer to resume.
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates the parent directory of `target` if it is missing, and returns it.
fn make_parent(target: &Path) -> Result<&Path> {
    let dir = target.parent().context("target has no parent directory")?;
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    Ok(dir)
}

fn set_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let t = filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t)
        .with_context(|| format!("cannot set mtime of {}", path.display()))
}

/// Persists a rename or unlink in the directory that holds `path`; best effort.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
}

/// Persists renames and unlinks in the directory `dir` itself; best effort, as some
/// filesystems refuse to fsync directories.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Gives the file at `path` the mode and mtime of `entry`, for a change of metadata
/// only; never follows a symlink.
pub fn set_file_meta(root: &Path, entry: &Entry) -> Result<Stat> {
    let path = entry.path.to_path(root);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o777))?;
    set_mtime(&path, entry.mtime_ns)?;
    stat(&path)?.context("file vanished while its metadata was set")
}

/// Removes an empty directory at `target` so a file or symlink can take its place.
fn clear_dir_for(target: &Path) -> Result<()> {
    match stat(target)? {
        Some(s) if s.kind == EntryKind::Dir => match fs::remove_dir(target) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                bail!("{} is a directory that is not empty yet", target.display())
            }
            Err(e) => {
                Err(e).with_context(|| format!("cannot remove directory {}", target.display()))
            }
        },
        _ => Ok(()),
    }
}

/// Reads `size` bytes at `offset` of `path`, refusing to follow a symlink at the end.
pub fn read_block(path: &Path, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; size as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Makes sure the directory for `entry` exists with its mode.
pub fn make_dir(root: &Path, entry: &Entry) -> Result<Stat> {
    let path = entry.path.to_path(root);
    match stat(&path)? {
        Some(s) if s.kind == EntryKind::Dir => {}
        // The caller checked that what is here is what the index knows and decided the
        // path becomes a directory: a file or symlink in the way is replaced.
        Some(_) => {
            fs::remove_file(&path)
                .with_context(|| format!("cannot replace {} with a directory", entry.path))?;
            fs::create_dir(&path)
                .with_context(|| format!("cannot create directory {}", path.display()))?;
        }
        None => fs::create_dir_all(&path)
            .with_context(|| format!("cannot create directory {}", path.display()))?,
    }
    fs::set_permissions(
        &path,
        fs::Permissions::from_mode((entry.mode & 0o777) | 0o700),
    )?;
    stat(&path)?.context("directory vanished right after it was made")
}

/// Creates or replaces the symlink for `entry`; the target is stored, never followed.
pub fn make_symlink(root: &Path, entry: &Entry) -> Result<Stat> {
    let path = entry.path.to_path(root);
    clear_dir_for(&path)?;
    let dir = path.parent().context("symlink has no parent")?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    std::os::unix::fs::symlink(&entry.target, &tmp)
        .with_context(|| format!("cannot create symlink {}", path.display()))?;
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot rename symlink into place {}", path.display()));
    }
    stat(&path)?.context("symlink vanished right after it was made")
}

/// Removes the file or symlink at `path`, or the directory if it is empty. Returns
/// false, touching nothing, when a directory still holds something.
pub fn remove(root: &Path, path: &RelPath) -> Result<bool> {
    let full = path.to_path(root);
    match stat(&full)? {
        None => Ok(true),
        Some(s) if s.kind == EntryKind::Dir => match fs::remove_dir(&full) {
            Ok(()) => {
                sync_parent(&full);
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot remove directory {}", full.display())),
        },
        Some(_) => {
            fs::remove_file(&full).with_context(|| format!("cannot remove {}", full.display()))?;
            sync_parent(&full);
            Ok(true)
        }
    }
}

/// Renames `a` to `b`, failing with `AlreadyExists` rather than replacing anything at
/// `b`, even something that appears there at the last moment.
fn rename_noreplace(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // A filesystem without the flag: check, then rename.
        Some(libc::EINVAL | libc::ENOSYS) => match fs::symlink_metadata(b) {
            Ok(_) => Err(io::ErrorKind::AlreadyExists.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::rename(a, b),
            Err(e) => Err(e),
        },
        _ => Err(err),
    }
}

/// Moves a local version aside to a conflict copy name, keeping it.
pub fn move_aside(root: &Path, from: &RelPath, to: &RelPath) -> Result<()> {
    if !crate::conn::no_symlink_ancestors(root, to) {
        bail!("a parent of {to} is not a directory (a symlink or file is in the way)");
    }
    let (a, b) = (from.to_path(root), to.to_path(root));
    rename_noreplace(&a, &b)
        .with_context(|| format!("cannot move {} aside to {}", a.display(), b.display()))?;
    sync_parent(&b);
    Ok(())
}

/// Renames the directory `from` to `to` inside the folder at `root`, subtree and all,
/// as one rename. Nothing at `to` is replaced, and no symlink is passed through.
pub fn rename_dir(root: &Path, from: &RelPath, to: &RelPath) -> Result<Stat> {
    for p in [from, to] {
        if !crate::conn::no_symlink_ancestors(root, p) {
            bail!("a parent of {p} is not a directory (a symlink or file is in the way)");
        }
    }
    let (a, b) = (from.to_path(root), to.to_path(root));
    match stat(&a)? {
        Some(s) if s.kind == EntryKind::Dir => {}
        _ => bail!("{from} is no longer a directory here"),
    }
    rename_noreplace(&a, &b)
        .with_context(|| format!("cannot rename {} to {}", a.display(), b.display()))?;
    sync_parent(&a);
    sync_parent(&b);
    stat(&b)?.with_context(|| format!("{} vanished right after the rename", b.display()))
}

/// Removes temp files a crash left behind in `dir` and below, and partial transfers
/// nobody resumed for [`PARTIAL_MAX_AGE`]; returns the partial transfers it kept.
pub fn clean_temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut kept = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(read) = fs::read_dir(&dir) else {
            continue;
        };
        for item in read.flatten() {
            let name = item.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = item.file_type() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(item.path());
            } else if name.starts_with(PARTIAL_PREFIX) {
                let age = item
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|a| a > PARTIAL_MAX_AGE) {
                    let _ = fs::remove_file(item.path());
                } else {
                    kept.push(item.path());
                }
            } else if ft.is_dir() && !is_reserved(&name) {
                dirs.push(item.path());
            }
        }
    }
    kept
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chunk;
    use filesync_proto::DeviceId;

    /// The entry of a live file at `path` holding `content`.
    pub(crate) fn entry_for(path: &str, content: &[u8]) -> Entry {
        let h = chunk::hash_reader(content).unwrap();
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            deleted: false,
            size: h.size,
            mtime_ns: 1_600_000_000_123_456_789,
            mode: 0o755,
            hash: h.hash,
            blocks: h.blocks,
            target: String::new(),
            seq: 1,
            origin: DeviceId::new("d").unwrap(),
            conflict: None,
            renamed_from: None,
        }
    }

    #[test]
    fn commit_verifies_then_renames() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry_for("sub/f", b"hello");
        let target = e.path.to_path(dir.path());
        let mut t = TempFile::create(&target).unwrap();
        t.write(b"hello").unwrap();
        let st = t.commit(&target, &e).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert_eq!(st.mtime_ns, e.mtime_ns);
        assert_eq!(st.mode, 0o755);
        assert!(matches_index(Some(&st), &e, st.inode));
    }

    #[test]
    fn bad_content_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry_for("f", b"hello");
        let target = e.path.to_path(dir.path());
        fs::write(&target, b"old").unwrap();
        let mut t = TempFile::create(&target).unwrap();
        t.write(b"hellO").unwrap();
        assert!(t.commit(&target, &e).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }

    /// A file of several blocks, its entry, and where each block ends.
    fn big(path: &str) -> (Vec<u8>, Entry, Vec<usize>) {
        let content = chunk::tests::pseudo_random(1024 * 1024, 11);
        let e = entry_for(path, &content);
        let ends = e
            .blocks
            .iter()
            .scan(0, |at, b| {
                *at += b.size as usize;
                Some(*at)
            })
            .collect();
        (content, e, ends)
    }

    #[test]
    fn a_partial_transfer_outlives_a_failure_and_resumes_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (content, e, ends) = big("sub/big");
        assert!(e.blocks.len() > 4, "{} blocks", e.blocks.len());
        let target = e.path.to_path(dir.path());
        let mut t = TempFile::resumable(&target).unwrap();
        assert_eq!(t.resume(&e.blocks).unwrap(), 0);
        t.write(&content[..ends[2]]).unwrap();
        drop(t);
        let partial = partial_path(&target).unwrap();
        assert!(
            partial.is_file(),
            "an interrupted transfer keeps its partial"
        );

        let mut t = TempFile::resumable(&target).unwrap();
        assert_eq!(t.resume(&e.blocks).unwrap(), 3);
        assert_eq!(t.written(), ends[2] as u64);
        t.write(&content[ends[2]..]).unwrap();
        t.commit(&target, &e).unwrap();
        assert_eq!(fs::read(&target).unwrap(), content);
        assert!(!partial.exists());
    }

    #[test]
    fn resume_stops_at_the_first_block_that_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (content, e, ends) = big("big");
        let target = e.path.to_path(dir.path());
        // Left by a longer version of the file, and spoiled in its second block.
        let mut spoiled = content.clone();
        spoiled.extend_from_slice(b"the tail of a longer version");
        spoiled[ends[0] + 5] ^= 1;
        fs::write(partial_path(&target).unwrap(), &spoiled).unwrap();
        let mut t = TempFile::resumable(&target).unwrap();
        assert_eq!(t.resume(&e.blocks).unwrap(), 1);
        t.write(&content[ends[0]..]).unwrap();
        // The leftover beyond what this transfer wrote is cut off.
        t.commit(&target, &e).unwrap();
        assert_eq!(fs::read(&target).unwrap(), content);
    }

    #[test]
    fn content_that_fails_its_final_check_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (content, e, _) = big("big");
        let target = e.path.to_path(dir.path());
        let mut t = TempFile::resumable(&target).unwrap();
        t.write(&content[1..]).unwrap();
        t.write(b"!").unwrap();
        assert!(t.commit(&target, &e).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_partial_in_use_is_left_to_its_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("big");
        let first = TempFile::resumable(&target).unwrap();
        let second = TempFile::resumable(&target).unwrap();
        assert_eq!(first.path, partial_path(&target).unwrap());
        assert_ne!(second.path, first.path);
        let second_path = second.path.clone();
        drop(second);
        assert!(
            !second_path.exists(),
            "the fallback is an ordinary temp file"
        );
    }

    #[test]
    fn the_start_up_sweep_keeps_recent_partials_only() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        fs::create_dir_all(&sub).unwrap();
        let recent = partial_path(&sub.join("new")).unwrap();
        let old = partial_path(&dir.path().join("old")).unwrap();
        let tmp = sub.join(format!("{TEMP_PREFIX}1"));
        for p in [&recent, &old, &tmp] {
            fs::write(p, b"x").unwrap();
        }
        let long_ago = SystemTime::now() - PARTIAL_MAX_AGE - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert_eq!(clean_temp_files(dir.path()), std::slice::from_ref(&recent));
        assert!(recent.exists() && !old.exists() && !tmp.exists());
        assert!(is_reserved(recent.file_name().unwrap().to_str().unwrap()));
    }

    #[test]
    fn remove_keeps_non_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("d/e")).unwrap();
        assert!(!remove(dir.path(), &RelPath::new("d").unwrap()).unwrap());
        assert!(remove(dir.path(), &RelPath::new("d/e").unwrap()).unwrap());
        assert!(remove(dir.path(), &RelPath::new("d").unwrap()).unwrap());
        assert!(remove(dir.path(), &RelPath::new("missing").unwrap()).unwrap());
    }

    #[test]
    fn kinds_replace_each_other_but_never_a_non_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = entry_for("x", b"");
        std::os::unix::fs::symlink("/etc", dir.path().join("x")).unwrap();
        e.kind = EntryKind::Dir;
        e.mode = 0o755;
        assert_eq!(make_dir(dir.path(), &e).unwrap().kind, EntryKind::Dir);
        let f = entry_for("x", b"now a file");
        let mut t = TempFile::create(&dir.path().join("x")).unwrap();
        t.write(b"now a file").unwrap();
        assert_eq!(
            t.commit(&dir.path().join("x"), &f).unwrap().kind,
            EntryKind::File
        );
        fs::remove_file(dir.path().join("x")).unwrap();
        fs::create_dir_all(dir.path().join("x/child")).unwrap();
        let mut t = TempFile::create(&dir.path().join("x")).unwrap();
        t.write(b"now a file").unwrap();
        assert!(t.commit(&dir.path().join("x"), &f).is_err());
        assert!(
            dir.path().join("x/child").is_dir(),
            "a non-empty directory is never replaced"
        );
    }

    #[test]
    fn symlinks_are_made_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = entry_for("link", b"");
        e.kind = EntryKind::Symlink;
        e.target = "/etc/passwd".into();
        let st = make_symlink(dir.path(), &e).unwrap();
        assert_eq!(st.kind, EntryKind::Symlink);
        assert_eq!(
            fs::read_link(dir.path().join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }
}
