//! Writing into a folder: every file lands through a temp file that is verified,
//! fsynced and renamed into place, so a reader sees the old content or the new, never
//! a mix. Temp files are named `.filesync-tmp-*` inside the target directory (same
//! filesystem, so the rename is atomic) and are never synced.
//!
//! A large file is received into `.filesync-partial-*` instead, a name derived from the
//! target's name, and that file outlives an interrupted transfer: the next transfer of
//! the same target finds it and keeps the blocks it already holds (see
//! [`TempFile::resumable`] and [`TempFile::resume`]).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{BlockInfo, Entry};
use filesync_proto::{Hash, RelPath};
use sha2::{Digest, Sha256};

use crate::fs::beneath::{Dir, FileType, OFlags, RawStat, Root, try_lock};
use crate::fs::partial::Partial;
use crate::fs::stat::{Stat, parent_creating, parent_error, raw_mtime_and_size, stat_in};
use crate::fs::tree::{clear_dir_for, set_mode, set_mtime};
use crate::fs::{FileExt, PARTIAL_PREFIX, TEMP_PREFIX, is_reserved};

/// A partial download nobody resumed for this long is removed by a device's start-up
/// sweep (the server keeps uploads for [`UPLOAD_MAX_AGE`]).
const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The directory where a temp file for `target` is made, and whether it is `target`'s
/// own parent: beside it when that exists, else in the root. A transfer never makes
/// directories: a file sent "inside" a symlink that an earlier change of the same batch
/// makes would otherwise turn that name into a real directory before the link is
/// committed. The missing parents are made when the file is installed, in order.
fn staging_dir(root: &Root, target: &RelPath) -> Result<(Dir, bool)> {
    match root.parent(target) {
        Ok((dir, _)) => Ok((dir, true)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((
            root.dir_at(&[])
                .with_context(|| format!("cannot open {}", root.path().display()))?,
            false,
        )),
        Err(e) => Err(parent_error(target, e)),
    }
}

/// A temp file being filled with new content for a target, front to back.
///
/// [`TempFile::seal`] checks the content one of three ways, by how it was written.
/// Bytes appended with [`TempFile::write`] are hashed as they go and must hash to the
/// entry's whole-file hash; content written at once with [`TempFile::write_verified`]
/// must have been hashed to it by the caller. Whole blocks appended with the `*_block` methods (and those
/// [`TempFile::resume`] keeps) were checked by the caller against the entry's block
/// list, or copied from a source it trusts, so they are not hashed again: there must be
/// exactly as many as the entry lists. A file written more than one way is refused.
pub struct TempFile {
    /// The directory that holds it, opened beneath the folder's root.
    dir: Dir,
    name: String,
    file: File,
    /// The bytes appended with [`TempFile::write`], hashed.
    hasher: Sha256,
    hashed: u64,
    /// The blocks appended already checked.
    blocks: usize,
    /// The hash of the whole content, when the caller verified it before writing it
    /// ([`TempFile::write_verified`]): then `hasher` is left unused.
    verified: Option<Hash>,
    written: u64,
    /// How far the file held bytes of an earlier transfer when opened: a zero block
    /// below it must be zeroed, beyond it is a hole already ([`TempFile::zero_block`]).
    stale: u64,
    /// A partial transfer not yet [`TempFile::seal`]ed: kept when dropped, for resuming.
    keep: bool,
}

impl TempFile {
    /// Creates a temp file for `target` in the folder at `root` ([`staging_dir`]); it is
    /// removed when dropped unless it was renamed into place.
    pub fn create(root: &Root, target: &RelPath) -> Result<TempFile> {
        TempFile::create_in(staging_dir(root, target)?.0)
    }

    fn create_in(dir: Dir) -> Result<TempFile> {
        let name = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
        let file = dir
            .open(&name, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, 0o600)
            .with_context(|| format!("cannot create temp file {}", dir.display(&name).display()))?;
        Ok(TempFile::new(dir, name, file, false))
    }

    /// Opens the partial transfer of `target` (see [`Partial::of`]), creating it if
    /// there is none, and locks it. Until [`TempFile::seal`] it outlives a failure,
    /// so that a later transfer can [`TempFile::resume`] it. When another transfer of the
    /// same target holds the lock, this falls back to a plain temp file.
    /// A target whose parent is missing has its partial file in the root
    /// ([`staging_dir`]), named after its whole path.
    pub fn resumable(root: &Root, target: &RelPath) -> Result<TempFile> {
        let (dir, beside) = staging_dir(root, target)?;
        let name = if beside {
            Partial::of(target).name
        } else {
            Partial::in_root(target).name
        };
        let file = dir
            .open(&name, OFlags::RDWR | OFlags::CREATE, 0o600)
            .with_context(|| {
                format!(
                    "cannot open partial transfer {}",
                    dir.display(&name).display()
                )
            })?;
        if !file.metadata()?.is_file() {
            bail!(
                "{} is in the way of a transfer and is not a regular file; remove it",
                dir.display(&name).display()
            );
        }
        if !try_lock(&file) {
            return TempFile::create_in(dir);
        }
        let mut tmp = TempFile::new(dir, name, file, true);
        // Read under the lock: no other transfer writes it now.
        tmp.stale = tmp.file.metadata()?.len();
        Ok(tmp)
    }

    fn new(dir: Dir, name: String, file: File, keep: bool) -> TempFile {
        TempFile {
            dir,
            name,
            file,
            hasher: Sha256::new(),
            hashed: 0,
            blocks: 0,
            verified: None,
            written: 0,
            stale: 0,
            keep,
        }
    }

    /// Its full path, for messages.
    fn path(&self) -> PathBuf {
        self.dir.display(&self.name)
    }

    /// Keeps the blocks an interrupted transfer already wrote: from the start, each block
    /// of `blocks` that the file holds at its offset and that hashes as expected counts
    /// as written, up to the first that does not. Beyond that gap, the blocks that the
    /// file holds at their offsets and that verify ([`TempFile::write_ahead`] put them
    /// there) are listed, to be read back instead of fetched. Only at the start of a
    /// transfer; reads as much as the file holds, so call it off the async threads.
    pub fn resume(&mut self, blocks: &[BlockInfo]) -> Result<Resumed> {
        let len = self.file.metadata()?.len();
        // A zero block in a hole holds: not read, so a sparse file resumes quickly.
        let zero = crate::fs::chunk::zero_block();
        let mut extents = crate::fs::sparse::Extents::new(&self.file)?;
        let mut buf = Vec::new();
        let mut resumed = Resumed::default();
        let mut offset = 0;
        for (i, block) in blocks.iter().enumerate() {
            let end = offset + u64::from(block.size);
            if end > len {
                break;
            }
            let holds = if *block == zero && extents.is_hole(offset, u64::from(block.size))? {
                true
            } else {
                buf.resize(block.size as usize, 0);
                self.file
                    .read_exact_at(&mut buf, offset)
                    .with_context(|| format!("cannot read {}", self.path().display()))?;
                crate::fs::chunk::sha256(&buf) == block.hash
            };
            if holds && resumed.kept == i {
                self.blocks += 1;
                self.written = end;
                resumed.kept += 1;
            } else if holds {
                resumed.ahead.push(i);
            }
            offset = end;
        }
        Ok(resumed)
    }

    /// Writes a verified block at its `offset` beyond what is written so far, without
    /// counting it as written: a block that arrived before its turn waits there for it,
    /// and in a partial transfer that fails first, for [`TempFile::resume`].
    pub fn write_ahead(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset < self.written {
            bail!(
                "{} already holds the bytes at offset {offset}",
                self.path().display()
            );
        }
        self.write_at(offset, data)
    }

    /// Writes `data` at `offset`. When the disk is full, a partial transfer is not kept:
    /// its blocks would hold on to the space the user frees for it, and the next attempt
    /// fetches them again instead.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if let Err(e) = self.file.write_all_at(data, offset) {
            if crate::fs::space::is_full_io(&e) {
                self.keep = false;
            }
            return Err(e).with_context(|| format!("cannot write {}", self.path().display()));
        }
        Ok(())
    }

    /// Appends `data` after what is written so far, to be checked against the entry's
    /// whole-file hash.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.write_at(self.written, data)?;
        self.hasher.update(data);
        self.hashed += data.len() as u64;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Appends the next block of the entry, which the caller checked against its hash.
    pub fn write_block(&mut self, data: &[u8]) -> Result<()> {
        self.write_at(self.written, data)?;
        self.blocks += 1;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Appends the next block of the entry, `size` bytes copied from `offset` of `src`,
    /// a file the caller trusts to hold that block there ([`crate::fs::copy`]: no byte
    /// passes through the process, and none is hashed).
    pub fn copy_block(&mut self, src: &File, offset: u64, size: u32) -> Result<()> {
        self.copy_in(src, offset, size)
            .with_context(|| format!("cannot copy into {}", self.path().display()))
    }

    fn copy_in(&mut self, src: &File, offset: u64, size: u32) -> io::Result<()> {
        let copied =
            crate::fs::copy::copy_range(src, offset, &self.file, self.written, u64::from(size));
        if let Err(e) = copied {
            if crate::fs::space::is_full_io(&e) {
                self.keep = false;
            }
            return Err(e);
        }
        self.blocks += 1;
        self.written += u64::from(size);
        Ok(())
    }

    /// Appends the next block of the entry, the all-zero [`crate::fs::chunk::zero_block`]
    /// of `size` bytes, as a hole: nothing is written (bytes an interrupted transfer left
    /// there are punched out), and [`TempFile::seal`] sets the file's length.
    pub fn zero_block(&mut self, size: u32) -> Result<()> {
        if self.written < self.stale {
            crate::fs::sparse::zero_range(&self.file, self.written, u64::from(size))
                .with_context(|| format!("cannot write {}", self.path().display()))?;
        }
        self.blocks += 1;
        self.written += u64::from(size);
        Ok(())
    }

    /// Appends the next block of the entry, a repeat of the block written at `offset`.
    pub fn repeat_block(&mut self, offset: u64, size: u32) -> Result<()> {
        let file = self.file.try_clone()?;
        self.copy_block(&file, offset, size)
    }

    /// Writes the whole content at once, already checked by the caller to hash to
    /// `hash`: it is not hashed again. Only into a temp file with nothing written yet.
    pub fn write_verified(&mut self, data: &[u8], hash: Hash) -> Result<()> {
        if self.written != 0 {
            bail!("{} already holds content", self.path().display());
        }
        self.write_at(0, data)?;
        self.verified = Some(hash);
        self.written = data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Reads back `size` bytes written earlier at `offset`: a block that repeats within
    /// the file is copied, not fetched again.
    pub fn read_back(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0; size as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .with_context(|| format!("cannot read {}", self.path().display()))?;
        Ok(buf)
    }

    /// Counts as written the next block, `size` bytes that the file already holds there,
    /// checked when they were written ([`TempFile::write_ahead`]) or found by
    /// [`TempFile::resume`].
    pub fn adopt_block(&mut self, size: u32) {
        self.blocks += 1;
        self.written += u64::from(size);
    }

    /// Checks the content against `entry`, applies its mode and mtime, fsyncs, and
    /// renames it over the entry's path in the folder at `root` (and fsyncs the
    /// directory). On any failure the temp file is removed and the target is untouched.
    pub fn commit(self, root: &Root, entry: &Entry) -> Result<Stat> {
        self.seal(entry)?.durable()?.install(root, &entry.path)
    }

    /// Verifies the content against `entry` and gives it the entry's mode and mtime,
    /// without making it durable yet ([`Sealed::durable`], or a group's
    /// [`crate::fs::durable::data_barrier`], does) and without touching the target.
    /// Anything an earlier transfer left beyond what was written is cut off, and zero
    /// blocks at the end become a hole up to the entry's size. From here
    /// on a partial transfer goes when dropped too: content that fails this check must
    /// not be resumed. The file stays open, so that its fsync reports any write-back
    /// error.
    pub fn seal(mut self, entry: &Entry) -> Result<Sealed> {
        self.keep = false;
        self.check(entry)?;
        self.file
            .set_len(self.written)
            .with_context(|| format!("cannot truncate {}", self.path().display()))?;
        set_mode(&self.file, entry.mode)?;
        // Before the fsync, so that it covers the mtime too.
        set_mtime(&self.file, entry.mtime_ns)
            .with_context(|| format!("cannot set mtime of {}", self.path().display()))?;
        Ok(Sealed(self))
    }
}

/// Content verified against its entry, with its mode and mtime, not durable yet.
pub struct Sealed(TempFile);

impl Sealed {
    /// Fsyncs the content: after this it survives a crash.
    pub(super) fn sync(&self) -> Result<()> {
        self.0
            .file
            .sync_all()
            .with_context(|| format!("cannot fsync {}", self.0.path().display()))
    }

    /// Makes this one file durable on its own; a group goes through
    /// [`crate::fs::durable::data_barrier`] instead, which fsyncs its files together.
    /// Blocks for as long as the disk takes.
    pub fn durable(self) -> Result<Prepared> {
        self.sync()?;
        Ok(Prepared(self.0))
    }

    /// Reads back `size` bytes at `offset` (a cluster node storing the content's blocks).
    pub fn read_back(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.0.read_back(offset, size)
    }

    /// Removes the file, even one kept to resume: its content is stored elsewhere now.
    pub fn discard(mut self) {
        self.0.keep = false;
    }

    /// What [`Sealed::sync`] made durable.
    pub(super) fn synced(self) -> Prepared {
        Prepared(self.0)
    }
}

impl TempFile {
    /// The check of [`TempFile::seal`] (see [`TempFile`]): by the whole-file hash, or
    /// by the block list, whose every block was checked as it came in. A one-block file's
    /// block hash is its whole-file hash, so that much of an entry is checked too.
    fn check(&mut self, entry: &Entry) -> Result<()> {
        let hashed = Hash(std::mem::take(&mut self.hasher).finalize().into());
        let (fits, got) = match (self.verified.take(), self.blocks) {
            (None, 0) => (hashed == entry.hash, hashed.short()),
            (Some(verified), 0) if self.hashed == 0 => (verified == entry.hash, verified.short()),
            (None, n) if self.hashed == 0 => (
                n == entry.blocks.len()
                    && (entry.blocks.len() > 1 || entry.blocks[0].hash == entry.hash),
                format!("{n} blocks"),
            ),
            _ => (false, "checked and unchecked bytes mixed".to_string()),
        };
        if !fits || self.written != entry.size {
            bail!(
                "content of {} does not match its announced hash (got {} bytes, {got}; expected {} bytes, {} in {} blocks)",
                entry.path,
                self.written,
                entry.size,
                entry.hash.short(),
                entry.blocks.len()
            );
        }
        Ok(())
    }
}

/// What [`TempFile::resume`] found of an interrupted transfer.
#[derive(Debug, Default, PartialEq)]
pub struct Resumed {
    /// The blocks from the start that count as written.
    pub kept: usize,
    /// The later blocks, in order, that the file holds at their offsets.
    pub ahead: Vec<usize>,
}

/// Content verified against its entry and durable, ready to be renamed into place.
pub struct Prepared(TempFile);

/// A [`Prepared`] file renamed into place, and the directories whose entries changed:
/// its parent, and when that had to be made, every directory above it (each new
/// directory is an entry of the one above). They must be fsynced
/// ([`crate::fs::durable::DirBarrier`]) before the new name counts as durable.
pub struct Renamed {
    pub stat: Stat,
    pub dirs: Vec<Dir>,
}

impl Prepared {
    /// Renames the content over `path` in the folder at `root` and fsyncs the directory:
    /// one file on its own ([`Prepared::rename`] for a group).
    pub fn install(self, root: &Root, path: &RelPath) -> Result<Stat> {
        let renamed = self.rename(root, path)?;
        for dir in &renamed.dirs {
            dir.sync_checked()
                .with_context(|| format!("cannot fsync {}", dir.path().display()))?;
        }
        Ok(renamed.stat)
    }

    /// Renames the content over `path` in the folder at `root`, whose parent directory is
    /// opened again beneath the root (made if missing): if it is a symlink (swapped in
    /// since the transfer began, or made by an earlier change), this is refused. An empty
    /// directory in the way goes (the caller decided the path becomes a file); a
    /// non-empty one is an error, so nothing inside it is lost. The directories are not
    /// fsynced: the caller does, once for a whole group.
    pub fn rename(self, root: &Root, path: &RelPath) -> Result<Renamed> {
        self.rename_as(root, path, true)
    }

    /// [`Prepared::rename`] to a path where nothing is expected: whatever appeared there
    /// since the caller looked (a file the user just created) stays, and this fails.
    pub fn rename_new(self, root: &Root, path: &RelPath) -> Result<Renamed> {
        self.rename_as(root, path, false)
    }

    fn rename_as(self, root: &Root, path: &RelPath, replace: bool) -> Result<Renamed> {
        let (dir, name, made) = match root.parent(path) {
            Ok((dir, name)) => (dir, name, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (dir, name) = parent_creating(root, path)?;
                (dir, name, true)
            }
            Err(e) => return Err(parent_error(path, e)),
        };
        let renamed = if replace {
            clear_dir_for(&dir, name)?;
            self.0.dir.rename(&self.0.name, &dir, name)
        } else {
            self.0.dir.rename_noreplace(&self.0.name, &dir, name)
        };
        match renamed {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                bail!("{path} appeared here while its new version was on its way; both are kept")
            }
            r => r.with_context(|| {
                format!("cannot rename into place {}", dir.display(name).display())
            })?,
        }
        let stat = stat_in(&dir, name)?.context("file vanished right after it was written")?;
        let mut dirs = vec![dir];
        if made {
            let parts: Vec<&str> = path.components().collect();
            for depth in 0..parts.len().saturating_sub(1) {
                dirs.push(
                    root.dir_at(&parts[..depth])
                        .map_err(|e| parent_error(path, e))?,
                );
            }
        }
        Ok(Renamed { stat, dirs })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // After a successful rename the temp name no longer exists; otherwise this
        // removes the incomplete content, unless it is a partial transfer to resume.
        // One that got no byte (the content was not to be had) has nothing to resume.
        let empty = || self.file.metadata().is_ok_and(|m| m.len() == 0);
        if !self.keep || empty() {
            let _ = self.dir.unlink(&self.name);
        }
    }
}

/// Removes temp files a crash left behind in the folder at `root`, and partial transfers
/// nobody resumed for [`PARTIAL_MAX_AGE`]; returns the partial transfers it kept. Each
/// directory is opened beneath the root; symlinks are not followed.
pub fn clean_temp_files(root: &Root) -> Vec<Partial> {
    sweep(root, PARTIAL_MAX_AGE, None).kept
}

/// How long the server keeps an upload that nobody resumed. Shorter than a device's
/// [`PARTIAL_MAX_AGE`]: abandoned uploads count against their account's quota, and a
/// device that was cut off resumes within minutes when it is still there.
pub const UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The server's sweep of the folder at `root`: removes partial uploads and temp files
/// untouched for [`UPLOAD_MAX_AGE`] (with `at_start`, every temp file, since only a
/// crash leaves one then), and returns the bytes of the partial uploads kept. While
/// the server runs, a transfer in progress writes its file all the time, so its age
/// stays low and it is left alone.
pub fn sweep_uploads(root: &Root, at_start: bool) -> u64 {
    let temps = if at_start { None } else { Some(UPLOAD_MAX_AGE) };
    sweep(root, UPLOAD_MAX_AGE, temps).kept_bytes
}

/// What a sweep kept.
struct Swept {
    kept: Vec<Partial>,
    kept_bytes: u64,
}

/// Walks the folder at `root` for the daemon's own files: partial transfers older than
/// `partial_max_age` are removed, and temp files older than `temp_max_age` (all of
/// them for `None`).
fn sweep(root: &Root, partial_max_age: Duration, temp_max_age: Option<Duration>) -> Swept {
    let mut swept = Swept {
        kept: Vec::new(),
        kept_bytes: 0,
    };
    let mut dirs: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(rel) = dirs.pop() {
        let parts: Vec<&str> = rel.iter().map(String::as_str).collect();
        let Ok(dir) = root.dir_at(&parts) else {
            continue;
        };
        let Ok(items) = dir.names() else { continue };
        for (name, ft) in items {
            let Some(name) = name.to_str() else { continue };
            let stat = || dir.stat(name).ok().flatten();
            let age = |st: &RawStat| {
                let secs = u64::try_from(raw_mtime_and_size(st).0).ok()?;
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                SystemTime::now().duration_since(at).ok()
            };
            if name.starts_with(TEMP_PREFIX) {
                let old = match temp_max_age {
                    None => true,
                    Some(max) => stat().and_then(|st| age(&st)).is_some_and(|a| a > max),
                };
                if old {
                    let _ = dir.unlink(name);
                }
            } else if name.starts_with(PARTIAL_PREFIX) {
                let st = stat();
                if st
                    .as_ref()
                    .and_then(age)
                    .is_some_and(|a| a > partial_max_age)
                {
                    let _ = dir.unlink(name);
                } else {
                    let bytes = st.map_or(0, |st| {
                        u64::try_from(raw_mtime_and_size(&st).1).unwrap_or(0)
                    });
                    swept.kept_bytes = swept.kept_bytes.saturating_add(bytes);
                    swept.kept.push(Partial {
                        dir: rel.clone(),
                        name: name.to_string(),
                    });
                }
            } else if !is_reserved(name) && is_dir(&dir, name, ft) {
                let mut sub = rel.clone();
                sub.push(name.to_string());
                dirs.push(sub);
            }
        }
    }
    swept
}

/// Whether `name` in `dir` is a directory (not a symlink to one), asking the filesystem
/// when the listing does not say.
fn is_dir(dir: &Dir, name: &str, ft: FileType) -> bool {
    match ft {
        FileType::Unknown => {
            matches!(stat_in(dir, name), Ok(Some(s)) if s.kind == filesync_proto::wire::EntryKind::Dir)
        }
        ft => ft == FileType::Directory,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    use filesync_proto::wire::EntryKind;

    use crate::fs::chunk;
    use crate::fs::stat::matches_index;
    #[cfg(unix)]
    use crate::fs::stat::stat;
    use crate::fs::tree::remove;
    #[cfg(unix)]
    use crate::fs::tree::{
        make_dir, make_symlink, move_aside, read_block, rename_dir, set_file_meta,
    };
    use filesync_proto::DeviceId;

    /// The entry of a live file at `path` holding `content`.
    pub(crate) fn entry_for(path: &str, content: &[u8]) -> Entry {
        let h = chunk::hash_bytes(content);
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
        let root = Root::open(dir.path()).unwrap();
        let e = entry_for("sub/f", b"hello");
        let target = e.path.to_path(dir.path());
        let mut t = TempFile::create(&root, &e.path).unwrap();
        t.write(b"hello").unwrap();
        let st = t.commit(&root, &e).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert_eq!(st.mtime_ns, e.mtime_ns);
        assert_eq!(st.mode, 0o755);
        assert!(matches_index(Some(&st), &e, st.inode));
    }

    #[test]
    fn a_new_file_never_replaces_one_that_appeared_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let e = entry_for("f", b"from the server");
        let mut t = TempFile::create(&root, &e.path).unwrap();
        t.write(b"from the server").unwrap();
        let prepared = t.seal(&e).unwrap().durable().unwrap();
        // The user saves a file at that path after the last look, before the rename.
        fs::write(dir.path().join("f"), b"the user's").unwrap();
        let Err(err) = prepared.rename_new(&root, &e.path) else {
            panic!("the user's file was replaced");
        };
        assert!(err.to_string().contains("both are kept"), "{err:#}");
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"the user's");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temp file is removed: {left:?}");
    }

    #[test]
    fn bad_content_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let e = entry_for("f", b"hello");
        let target = e.path.to_path(dir.path());
        fs::write(&target, b"old").unwrap();
        let mut t = TempFile::create(&root, &e.path).unwrap();
        t.write(b"hellO").unwrap();
        assert!(t.commit(&root, &e).is_err());
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

    /// Appends the blocks of `content` that end at `ends`, after the first, as checked
    /// blocks: what a transfer does after [`TempFile::resume`].
    fn write_blocks(t: &mut TempFile, content: &[u8], ends: &[usize]) {
        for pair in ends.windows(2) {
            t.write_block(&content[pair[0]..pair[1]]).unwrap();
        }
    }

    #[test]
    fn a_partial_transfer_outlives_a_failure_and_resumes_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let (content, e, ends) = big("sub/big");
        assert!(e.blocks.len() > 4, "{} blocks", e.blocks.len());
        let target = e.path.to_path(dir.path());
        // A transfer makes no directory: its target's parent exists.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let partial = dir.path().join(Partial::of(&e.path).to_string());
        // A transfer that failed before its first byte leaves nothing behind.
        drop(TempFile::resumable(&root, &e.path).unwrap());
        assert!(!partial.exists(), "an empty partial is not kept");
        let mut t = TempFile::resumable(&root, &e.path).unwrap();
        assert_eq!(t.resume(&e.blocks).unwrap().kept, 0);
        t.write(&content[..ends[2]]).unwrap();
        drop(t);
        assert!(
            partial.is_file(),
            "an interrupted transfer keeps its partial"
        );

        let mut t = TempFile::resumable(&root, &e.path).unwrap();
        assert_eq!(t.resume(&e.blocks).unwrap().kept, 3);
        assert_eq!(t.written(), ends[2] as u64);
        write_blocks(&mut t, &content, &ends[2..]);
        t.commit(&root, &e).unwrap();
        assert_eq!(fs::read(&target).unwrap(), content);
        assert!(!partial.exists());
    }

    /// A large file bound for a directory that does not exist yet keeps its partial in
    /// the root, and a later transfer resumes it.
    #[test]
    fn a_partial_for_a_missing_directory_waits_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let (content, e, ends) = big("new/big");
        let mut t = TempFile::resumable(&root, &e.path).unwrap();
        t.write(&content[..ends[1]]).unwrap();
        drop(t);
        let partial = dir.path().join(Partial::in_root(&e.path).to_string());
        assert!(partial.is_file(), "the partial waits in the root");
        assert!(
            !dir.path().join("new").exists(),
            "a transfer makes no directory"
        );
        let mut t = TempFile::resumable(&root, &e.path).unwrap();
        assert_eq!(t.resume(&e.blocks).unwrap().kept, 2);
        write_blocks(&mut t, &content, &ends[1..]);
        t.commit(&root, &e).unwrap();
        assert_eq!(fs::read(e.path.to_path(dir.path())).unwrap(), content);
        assert!(!partial.exists());
    }

    #[test]
    fn resume_stops_at_the_first_block_that_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let (content, e, ends) = big("big");
        let target = e.path.to_path(dir.path());
        // Left by a longer version of the file, and spoiled in its second block.
        let mut spoiled = content.clone();
        spoiled.extend_from_slice(b"the tail of a longer version");
        spoiled[ends[0] + 5] ^= 1;
        fs::write(dir.path().join(Partial::of(&e.path).to_string()), &spoiled).unwrap();
        let mut t = TempFile::resumable(&root, &e.path).unwrap();
        let resumed = t.resume(&e.blocks).unwrap();
        assert_eq!(resumed.kept, 1);
        assert_eq!(
            resumed.ahead,
            (2..e.blocks.len()).collect::<Vec<_>>(),
            "the blocks after the spoiled one are found at their offsets"
        );
        write_blocks(&mut t, &content, &ends[0..]);
        // The leftover beyond what this transfer wrote is cut off.
        t.commit(&root, &e).unwrap();
        assert_eq!(fs::read(&target).unwrap(), content);
    }

    /// A sparse partial transfer resumes with its holes: the zero blocks in them count
    /// as written, and the file stays sparse.
    // Measures allocated blocks (`st_blocks`), a Unix stat field.
    #[cfg(unix)]
    #[test]
    fn a_sparse_partial_transfer_keeps_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut content = vec![0; 4 << 20];
        content[(2 << 20) + 5..(2 << 20) + 1000].fill(9);
        let e = entry_for("sparse.img", &content);
        let partial = dir.path().join(Partial::of(&e.path).to_string());
        let file = File::create(&partial).unwrap();
        file.set_len(content.len() as u64).unwrap();
        file.write_all_at(&content[(2 << 20)..(2 << 20) + 1000], 2 << 20)
            .unwrap();
        let mut t = TempFile::resumable(&root, &e.path).unwrap();
        let resumed = t.resume(&e.blocks).unwrap();
        assert_eq!(resumed.kept, e.blocks.len());
        t.commit(&root, &e).unwrap();
        let target = e.path.to_path(dir.path());
        assert_eq!(fs::read(&target).unwrap(), content);
        let on_disk = crate::fs::sparse::allocated(&File::open(&target).unwrap()).unwrap();
        assert!(on_disk < 1 << 20, "{on_disk} bytes on disk");
    }

    /// Content written as checked blocks is checked by the block list: every block of
    /// it, no more, no less, and never mixed with unchecked bytes. A one-block entry's
    /// block must be its whole content.
    #[test]
    fn content_of_checked_blocks_must_be_the_whole_block_list() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let (content, e, mut ends) = big("big");
        ends.insert(0, 0);
        let blocks = |upto: usize| {
            let mut t = TempFile::create(&root, &e.path).unwrap();
            write_blocks(&mut t, &content, &ends[..upto]);
            t
        };
        assert!(blocks(ends.len()).check(&e).is_ok());
        assert!(blocks(ends.len() - 1).check(&e).is_err(), "a block missing");
        let mut mixed = blocks(ends.len() - 1);
        mixed.write(&content[ends[ends.len() - 2]..]).unwrap();
        assert!(mixed.check(&e).is_err(), "checked and unchecked bytes");
        let one = entry_for("one", b"small");
        let mut t = TempFile::create(&root, &one.path).unwrap();
        t.write_block(b"small").unwrap();
        let lying = Entry {
            hash: chunk::sha256(b"other"),
            ..one
        };
        assert!(
            t.check(&lying).is_err(),
            "a one-block entry's hash is its block's"
        );
    }

    #[test]
    fn content_that_fails_its_final_check_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let (content, e, _) = big("big");
        let mut t = TempFile::resumable(&root, &e.path).unwrap();
        t.write(&content[1..]).unwrap();
        t.write(b"!").unwrap();
        assert!(t.commit(&root, &e).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_partial_in_use_is_left_to_its_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let target = RelPath::new("big").unwrap();
        let first = TempFile::resumable(&root, &target).unwrap();
        let second = TempFile::resumable(&root, &target).unwrap();
        assert_eq!(first.name, Partial::of(&target).name);
        assert_ne!(second.name, first.name);
        let second_path = second.path();
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
        let recent = Partial::of(&RelPath::new("a/b/new").unwrap());
        let old = dir
            .path()
            .join(Partial::of(&RelPath::new("old").unwrap()).to_string());
        let recent_path = dir.path().join(recent.to_string());
        let tmp = sub.join(format!("{TEMP_PREFIX}1"));
        for p in [&recent_path, &old, &tmp] {
            fs::write(p, b"x").unwrap();
        }
        let long_ago = SystemTime::now() - PARTIAL_MAX_AGE - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(clean_temp_files(&root), std::slice::from_ref(&recent));
        assert!(recent_path.exists() && !old.exists() && !tmp.exists());
        assert!(is_reserved(&recent.name));
        assert!(recent.remove(&root).unwrap());
        assert!(!recent_path.exists());
        assert!(!recent.remove(&root).unwrap(), "nothing left to remove");
    }

    #[test]
    fn the_server_sweep_keeps_uploads_a_day_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let recent = dir
            .path()
            .join(Partial::of(&RelPath::new("new").unwrap()).to_string());
        let old = dir
            .path()
            .join(Partial::of(&RelPath::new("old").unwrap()).to_string());
        let tmp = dir.path().join(format!("{TEMP_PREFIX}1"));
        fs::write(&recent, b"12345").unwrap();
        fs::write(&old, b"abandoned").unwrap();
        fs::write(&tmp, b"in use").unwrap();
        let two_days_ago = SystemTime::now() - UPLOAD_MAX_AGE * 2;
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(sweep_uploads(&root, false), 5, "the recent partial counts");
        assert!(recent.exists() && !old.exists());
        assert!(
            tmp.exists(),
            "a recent temp file belongs to a transfer in progress"
        );
        assert_eq!(sweep_uploads(&root, true), 5);
        assert!(!tmp.exists(), "at start no transfer is in progress");
    }

    /// A download cut off in a directory leaves its partial transfer there; when the
    /// directory is deleted (on the server, or by the server), the partial must not keep
    /// it alive. Anything else in it still does, and then the partial stays too.
    #[test]
    fn a_directory_holding_only_partial_transfers_is_removed_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let cut = Partial::of(&RelPath::new("d/big.bin").unwrap());
        fs::create_dir_all(dir.path().join("d")).unwrap();
        let partial = dir.path().join("d").join(&cut.name);
        fs::write(&partial, b"first blocks").unwrap();
        fs::write(dir.path().join("d/user.txt"), b"mine").unwrap();
        let d = RelPath::new("d").unwrap();
        assert!(
            !remove(&root, &d).unwrap(),
            "a user's file keeps the directory"
        );
        assert!(partial.exists(), "and its partial transfer stays");
        fs::remove_file(dir.path().join("d/user.txt")).unwrap();
        assert!(remove(&root, &d).unwrap());
        assert!(!dir.path().join("d").exists());
    }

    // Makes a symlink, a FIFO or a mode with Unix calls.
    #[cfg(unix)]
    #[test]
    fn kinds_replace_each_other_but_never_a_non_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut e = entry_for("x", b"");
        std::os::unix::fs::symlink("/etc", dir.path().join("x")).unwrap();
        e.kind = EntryKind::Dir;
        e.mode = 0o755;
        assert_eq!(make_dir(&root, &e).unwrap().kind, EntryKind::Dir);
        let f = entry_for("x", b"now a file");
        let mut t = TempFile::create(&root, &f.path).unwrap();
        t.write(b"now a file").unwrap();
        assert_eq!(t.commit(&root, &f).unwrap().kind, EntryKind::File);
        fs::remove_file(dir.path().join("x")).unwrap();
        fs::create_dir_all(dir.path().join("x/child")).unwrap();
        let mut t = TempFile::create(&root, &f.path).unwrap();
        t.write(b"now a file").unwrap();
        assert!(t.commit(&root, &f).is_err());
        assert!(
            dir.path().join("x/child").is_dir(),
            "a non-empty directory is never replaced"
        );
    }

    /// Nothing is written, removed, renamed or chmodded through a symlink inside the
    /// folder, even one that appears after the transfer began.
    // Makes a symlink, a FIFO or a mode with Unix calls.
    #[cfg(unix)]
    #[test]
    fn nothing_goes_through_a_symlinked_parent() {
        let dir = tempfile::tempdir().unwrap();
        let (canary, tree) = (dir.path().join("canary"), dir.path().join("root"));
        fs::create_dir_all(&canary).unwrap();
        fs::create_dir_all(tree.join("d")).unwrap();
        fs::write(canary.join("f"), b"canary").unwrap();
        let root = Root::open(&tree).unwrap();
        let e = entry_for("d/f", b"hello");
        let mut t = TempFile::create(&root, &e.path).unwrap();
        t.write(b"hello").unwrap();
        // The directory is swapped for a symlink to the canary while the file arrives.
        fs::rename(tree.join("d"), tree.join("d.old")).unwrap();
        std::os::unix::fs::symlink(&canary, tree.join("d")).unwrap();
        let err = t.commit(&root, &e).unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        let mut sub = entry_for("d/sub", b"");
        sub.kind = EntryKind::Dir;
        let mut link = entry_for("d/l", b"");
        link.kind = EntryKind::Symlink;
        link.target = "x".into();
        assert!(make_dir(&root, &sub).is_err());
        assert!(make_symlink(&root, &link).is_err());
        assert!(set_file_meta(&root, &e).is_err());
        assert!(remove(&root, &e.path).is_err());
        assert!(TempFile::create(&root, &e.path).is_err());
        assert!(read_block(&root, &e.path, 0, 1).is_err());
        assert!(stat(&root, &e.path).is_err());
        let moved = RelPath::new("moved").unwrap();
        assert!(move_aside(&root, &e.path, &moved).is_err());
        assert!(
            rename_dir(
                &root,
                &RelPath::new("d.old").unwrap(),
                &RelPath::new("d/x").unwrap()
            )
            .is_err()
        );
        let names: Vec<_> = fs::read_dir(&canary)
            .unwrap()
            .map(|i| i.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        assert_eq!(fs::read(canary.join("f")).unwrap(), b"canary");
    }
}
