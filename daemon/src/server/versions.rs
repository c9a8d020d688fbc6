//! Versions and trash: the server's store of the files it replaced or deleted.
//!
//! Before the sequencer overwrites or removes a regular file in a folder's tree, it moves
//! that file here, out of the tree, so that `filesyncctl versions` can list it and
//! `filesyncctl restore` can bring it back (the caller copies [`VersionInfo::file`] into
//! the tree as a new change). [`Versions::expire`] drops what is older than the
//! configured `keep_versions`.
//!
//! # Layout
//!
//! One store per server folder, in `DATA_DIR/.filesync/versions/ACCOUNT/FOLDER/` (the
//! caller's choice; no synced tree can reach it):
//!
//! ```text
//! VERSIONS/
//!   .tmp/                  copies in progress (cross-filesystem fallback, path records)
//!   3f/3fa9…e1/            one slot per path: the hex SHA-256 of the RelPath
//!     path                 the RelPath itself, UTF-8: the slot's record
//!     17.1767225600        a version: `<seq it had>.<kept at, unix secs>`
//!     17.1767225600.1      the same seq kept again in the same second
//! ```
//!
//! Every name on disk is short ASCII whatever the path, so a 255-byte file name or a
//! 4096-byte path cannot overflow `NAME_MAX`, and no component of a synced path ever
//! becomes a component here. A version's size and mtime are those of the stored file
//! itself: a rename keeps them and the copy fallback sets them.
//!
//! # Crash safety
//!
//! Keeping is one `rename` from the tree straight to the version's final name, and that
//! name carries the sequence number and the time it was kept, so no moment exists where
//! the content is here without them. The slot's `path` record is written after the
//! rename; a crash in between leaves a version without a record, which [`Versions::list`]
//! still finds (the slot is derived from the path) and which [`Versions::expire`] ages by
//! its name like any other. `expire` deletes only names it can parse, and removes a
//! record only once its slot holds no version. When [`Versions::keep`] fails, the file is
//! still in the tree.
//!
//! # What is kept
//!
//! Only regular files. A symlink holds no content of its own, and a directory is removed
//! only once empty, after its files went through here one by one; neither is versioned.
//! `keep` takes the file as a name in a directory handle opened beneath the folder's
//! root ([`crate::fs::beneath`]), so it never follows a symlink, on the way or at the end.
//!
//! One `Versions` per folder, driven by that folder's sequencer: `keep` picks a free name
//! by looking first, which is race-free only with a single writer. `expire` may run
//! beside it: a slot it empties as `keep` fills it only makes that `keep` fail.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use filesync_proto::RelPath;
use filesync_proto::wire::EntryKind;

use crate::fs::beneath::{self, Dir};
use crate::fs::{private, stat, tree};

/// Where copies are assembled before they are renamed into a slot.
const TMP_DIR: &str = ".tmp";
/// The record of which path a slot belongs to.
const RECORD: &str = "path";

/// One kept version of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub path: RelPath,
    /// The sequence number the file had in the folder when it was replaced or deleted.
    pub version: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// When it was moved aside, in unix seconds.
    pub kept_at: i64,
    /// The stored content, for the caller to copy back on restore.
    pub file: PathBuf,
}

/// The versions store of one server folder.
#[derive(Debug)]
pub struct Versions {
    dir: PathBuf,
    tmp: PathBuf,
}

/// What a version's file name says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Name {
    version: u64,
    kept_at: i64,
    /// 0 for the first version of a seq kept in a given second, then 1, 2, …
    dup: u32,
}

impl Name {
    /// Only the exact form `render` writes, so that no foreign file is taken for a
    /// version (and then deleted by `expire`).
    fn parse(s: &str) -> Option<Name> {
        let mut parts = s.split('.');
        let version = parts.next()?.parse().ok()?;
        let kept_at = parts.next()?.parse().ok()?;
        let dup = match parts.next() {
            None => 0,
            Some(d) => d.parse().ok()?,
        };
        if parts.next().is_some() {
            return None;
        }
        let name = Name {
            version,
            kept_at,
            dup,
        };
        (name.render() == s).then_some(name)
    }

    fn render(&self) -> String {
        match self.dup {
            0 => format!("{}.{}", self.version, self.kept_at),
            d => format!("{}.{}.{d}", self.version, self.kept_at),
        }
    }
}

impl Versions {
    /// Opens the store in `dir`, creating it (private to the daemon) if needed, and
    /// removes copies a crash interrupted: their source was still in the tree, because a
    /// source is removed only after its copy is in place.
    pub fn open(dir: PathBuf) -> Result<Versions> {
        let tmp = dir.join(TMP_DIR);
        make_dir(&tmp)?;
        let leftovers = fs::read_dir(&tmp)
            .with_context(|| format!("cannot read versions directory {}", tmp.display()))?;
        for item in leftovers.flatten() {
            let _ = fs::remove_file(item.path());
        }
        Ok(Versions { dir, tmp })
    }

    /// Moves the regular file `name` in `dir` (inside the folder tree, for `path`,
    /// currently version `version`) into the store. Ok(false) if there was nothing to
    /// keep (missing, not a regular file). On error the file is still in the tree.
    pub fn keep(
        &self,
        dir: &Dir,
        name: &str,
        path: &RelPath,
        version: u64,
        now_secs: i64,
    ) -> Result<bool> {
        self.store(dir, name, path, (version, now_secs), false)
    }

    /// Keeps the regular file `name` in `dir` by linking it into the store, leaving it in
    /// the tree: for a file about to be replaced by a rename over it, so that readers of
    /// the tree never see the path missing. Ok(false) if there was nothing to keep.
    pub fn keep_linked(
        &self,
        dir: &Dir,
        name: &str,
        path: &RelPath,
        version: u64,
        now_secs: i64,
    ) -> Result<bool> {
        self.store(dir, name, path, (version, now_secs), true)
    }

    fn store(
        &self,
        dir: &Dir,
        name: &str,
        path: &RelPath,
        (version, now_secs): (u64, i64),
        link: bool,
    ) -> Result<bool> {
        let full = dir.display(name);
        if !is_regular_file(dir, name)? {
            return Ok(false);
        }
        let slot = self.slot(path);
        make_dir(&slot)?;
        let dest = free_name(&slot, version, now_secs)?;
        let moved = if link {
            dir.link_out(name, &dest)
        } else {
            dir.rename_out(name, &dest)
        };
        match moved {
            Ok(()) => {}
            // The file went between the look and the move: nothing left to keep.
            Err(e) if is_missing(&e) && !is_regular_file(dir, name)? => return Ok(false),
            Err(e) if beneath::is_cross_device(&e) && !link => {
                if !self.copy_in(dir, name, &dest)? {
                    return Ok(false);
                }
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot move {} to {}", full.display(), dest.display())
                });
            }
        }
        tree::sync_dir(&slot);
        // A link leaves the tree's directory as it was; a move took the file out of it.
        if !link {
            dir.sync();
        }
        // The content is safe under its final name; a missing record only costs the
        // reverse lookup from slot to path, so it must not turn a done keep into an error.
        if let Err(e) = self.write_record(&slot, path) {
            tracing::warn!(path = %path, "version kept without its path record: {e:#}");
        }
        Ok(true)
    }

    /// Versions of `path`, newest first.
    pub fn list(&self, path: &RelPath) -> Result<Vec<VersionInfo>> {
        let slot = self.slot(path);
        let items = match fs::read_dir(&slot) {
            Ok(items) => items,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", slot.display()));
            }
        };
        check_record(&slot, path)?;
        let mut found = Vec::new();
        for item in items {
            let item = item.with_context(|| format!("cannot read {}", slot.display()))?;
            let Some(name) = item.file_name().to_str().and_then(Name::parse) else {
                continue;
            };
            // Does not follow symlinks, so only what `keep` put here is listed.
            let meta = match item.metadata() {
                Ok(m) => m,
                Err(e) if is_missing(&e) => continue, // expired meanwhile
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot stat {}", item.path().display()));
                }
            };
            let Some(st) = stat::stat_of(&meta).filter(|s| s.kind == EntryKind::File) else {
                continue;
            };
            found.push((
                name,
                VersionInfo {
                    path: path.clone(),
                    version: name.version,
                    size: st.size,
                    mtime_ns: st.mtime_ns,
                    kept_at: name.kept_at,
                    file: item.path(),
                },
            ));
        }
        // The time kept comes first because sequence numbers restart when a folder's
        // index is recreated; the seq orders versions kept within the same second.
        found.sort_by_key(|(n, _)| std::cmp::Reverse((n.kept_at, n.version, n.dup)));
        Ok(found.into_iter().map(|(_, v)| v).collect())
    }

    /// Every version of every path, found through the slots' path records (for moving
    /// a folder into a cluster). A slot without its record (a crash between keeping and
    /// recording) cannot be tied to its path: it is left out, with a warning.
    pub fn all(&self) -> Result<Vec<VersionInfo>> {
        let fans = match fs::read_dir(&self.dir) {
            Ok(fans) => fans,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.dir.display())),
        };
        let mut found = Vec::new();
        for fan in fans {
            let fan = fan.with_context(|| format!("cannot read {}", self.dir.display()))?;
            if !is_hex_dir(&fan, 2) {
                continue;
            }
            let slots = fs::read_dir(fan.path())
                .with_context(|| format!("cannot read {}", fan.path().display()))?;
            for slot in slots {
                let slot = slot.with_context(|| format!("cannot read {}", fan.path().display()))?;
                if !is_hex_dir(&slot, 64) {
                    continue;
                }
                let record = fs::read(slot.path().join(RECORD)).ok();
                let path = record
                    .and_then(|r| String::from_utf8(r).ok())
                    .and_then(|r| RelPath::new(r).ok());
                match path {
                    Some(path) => found.extend(self.list(&path)?),
                    None => tracing::warn!(
                        slot = %slot.path().display(),
                        "versions without a readable path record are left out"
                    ),
                }
            }
        }
        Ok(found)
    }

    /// Versions of every path whose kept_at is older than `now_secs - keep_secs` are
    /// deleted; returns how many. A file that cannot be removed is logged and skipped.
    pub fn expire(&self, now_secs: i64, keep_secs: i64) -> Result<usize> {
        let cutoff = now_secs.saturating_sub(keep_secs);
        let fans = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read {}", self.dir.display()))?;
        let mut removed = 0;
        for fan in fans {
            let fan = fan.with_context(|| format!("cannot read {}", self.dir.display()))?;
            if !is_hex_dir(&fan, 2) {
                continue;
            }
            let slots = match fs::read_dir(fan.path()) {
                Ok(slots) => slots,
                Err(e) => {
                    tracing::warn!(dir = %fan.path().display(), "cannot read versions: {e}");
                    continue;
                }
            };
            for slot in slots.flatten() {
                if is_hex_dir(&slot, 64) {
                    removed += expire_slot(&slot.path(), cutoff);
                }
            }
            // Succeeds only once the fan-out directory is empty.
            let _ = fs::remove_dir(fan.path());
        }
        Ok(removed)
    }

    fn slot(&self, path: &RelPath) -> PathBuf {
        let hash = crate::fs::chunk::sha256(path.as_str().as_bytes()).to_hex();
        self.dir.join(&hash[..2]).join(hash)
    }

    fn temp_path(&self) -> PathBuf {
        self.tmp.join(format!("{:016x}", rand::random::<u64>()))
    }

    /// The fallback when the tree and the store are on different filesystems: copy,
    /// fsync, rename into place, and only then remove the original. Ok(false) when
    /// `full` is no longer a regular file.
    fn copy_in(&self, dir: &Dir, name: &str, dest: &Path) -> Result<bool> {
        let full = dir.display(name);
        let mut src = match dir.open_read(name) {
            Ok(f) => f,
            Err(e) if is_missing(&e) || beneath::is_symlink(&e) => {
                return Ok(false);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", full.display())),
        };
        let before = src.metadata()?;
        if !before.is_file() {
            return Ok(false);
        }
        let tmp = self.temp_path();
        let copied = (|| -> Result<()> {
            let mut out = private::create_new(&tmp)?;
            io::copy(&mut src, &mut out)?;
            tree::set_mode(&out, stat::mode_of(&before))?;
            let mtime = filetime::FileTime::from_last_modification_time(&before);
            filetime::set_file_handle_times(&out, None, Some(mtime))?;
            out.sync_all()?;
            fs::rename(&tmp, dest)?;
            Ok(())
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!("cannot copy {} to the versions", full.display())));
        }
        // A file written over meanwhile holds newer content, and a copy of one written
        // into meanwhile may be torn: either way the tree keeps its file and the
        // sequencer's next look at it decides.
        match dir.stat(name) {
            Ok(Some(now)) if stat::same_file(&before, &now) => {
                dir.unlink(name)
                    .with_context(|| format!("cannot remove {} after copying it", full.display()))
                    .inspect_err(|_| {
                        let _ = fs::remove_file(dest);
                    })?;
            }
            Ok(Some(_)) => {
                let _ = fs::remove_file(dest);
                bail!("{} changed while it was being kept", full.display());
            }
            Ok(None) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", full.display())),
        }
        Ok(true)
    }

    /// Records which path a slot belongs to, once; through a temp file so that a record
    /// is whole or absent.
    fn write_record(&self, slot: &Path, path: &RelPath) -> Result<()> {
        let target = slot.join(RECORD);
        if fs::symlink_metadata(&target).is_ok() {
            return Ok(());
        }
        let tmp = self.temp_path();
        let written = (|| -> Result<()> {
            let mut f = private::create_new(&tmp)?;
            f.write_all(path.as_str().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        tree::sync_dir(slot);
        written
    }
}

/// Deletes the expired versions in one slot and the slot itself once nothing is left;
/// returns how many versions went.
fn expire_slot(slot: &Path, cutoff: i64) -> usize {
    let items = match fs::read_dir(slot) {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(dir = %slot.display(), "cannot read versions: {e}");
            return 0;
        }
    };
    let (mut removed, mut left) = (0, 0);
    for item in items {
        let Ok(item) = item else {
            // Unknown content counts as kept, so the record stays.
            left += 1;
            continue;
        };
        let name = item.file_name();
        match name.to_str().and_then(Name::parse) {
            Some(n) if n.kept_at < cutoff => match fs::remove_file(item.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(file = %item.path().display(), "cannot expire version: {e}");
                    left += 1;
                }
            },
            _ if name == RECORD => {}
            _ => left += 1,
        }
    }
    if left == 0 {
        let _ = fs::remove_file(slot.join(RECORD));
        // Fails harmlessly if a `keep` has just put a version here.
        let _ = fs::remove_dir(slot);
    } else if removed > 0 {
        tree::sync_dir(slot);
    }
    removed
}

/// The first name for this seq and time that no version holds yet: a version is never
/// replaced by another.
fn free_name(slot: &Path, version: u64, kept_at: i64) -> Result<PathBuf> {
    let mut name = Name {
        version,
        kept_at,
        dup: 0,
    };
    loop {
        let candidate = slot.join(name.render());
        match fs::symlink_metadata(&candidate) {
            Err(e) if is_missing(&e) => return Ok(candidate),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot stat {}", candidate.display()));
            }
            Ok(_) => name.dup += 1,
        }
    }
}

/// The path and its record must agree; they can differ only by tampering (or a SHA-256
/// collision), and then these versions are not the ones asked for.
fn check_record(slot: &Path, path: &RelPath) -> Result<()> {
    match fs::read(slot.join(RECORD)) {
        Ok(recorded) if recorded == path.as_str().as_bytes() => Ok(()),
        Ok(recorded) => bail!(
            "versions in {} belong to {:?}, not to {path}",
            slot.display(),
            String::from_utf8_lossy(&recorded)
        ),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read the record of {}", slot.display())),
    }
}

fn is_regular_file(dir: &Dir, name: &str) -> Result<bool> {
    Ok(stat::stat_in(dir, name)?.is_some_and(|s| s.kind == EntryKind::File))
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Whether a directory entry is one of ours: a real directory named by `len` hex digits.
fn is_hex_dir(item: &fs::DirEntry, len: usize) -> bool {
    let name = item.file_name();
    let Some(name) = name.to_str() else {
        return false;
    };
    name.len() == len
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && item.file_type().is_ok_and(|t| t.is_dir())
}

/// Versions hold the content of every account of the server: private to the daemon.
fn make_dir(dir: &Path) -> Result<()> {
    private::create_dir(dir)
}

#[cfg(test)]
// The server role is not run on Windows; these use Unix modes and symlinks.
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const MTIME_NS: i64 = 1_600_000_000_123_456_789;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        store: PathBuf,
        versions: Versions,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        let store = tmp.path().join("versions/acct/folder");
        fs::create_dir_all(&root).unwrap();
        let versions = Versions::open(store.clone()).unwrap();
        Fixture {
            _tmp: tmp,
            root,
            store,
            versions,
        }
    }

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    impl Fixture {
        /// Writes `content` at `path` in the tree with a known mtime.
        fn put(&self, path: &str, content: &[u8]) -> PathBuf {
            let full = rel(path).to_path(&self.root);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, content).unwrap();
            let t = filetime::FileTime::from_unix_time(
                MTIME_NS.div_euclid(1_000_000_000),
                MTIME_NS.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_file_mtime(&full, t).unwrap();
            full
        }

        /// The directory holding `path` in the tree, and its name there.
        fn at(&self, path: &str) -> (Dir, String) {
            let root = crate::fs::beneath::Root::open(&self.root).unwrap();
            let p = rel(path);
            let (dir, name) = root.parent(&p).unwrap();
            (dir, name.to_string())
        }

        fn keep(&self, path: &str, version: u64, now: i64) -> bool {
            let root = crate::fs::beneath::Root::open(&self.root).unwrap();
            let p = rel(path);
            match root.parent(&p) {
                Ok((dir, name)) => self.versions.keep(&dir, name, &p, version, now).unwrap(),
                // Nothing to keep where even the directory is missing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => panic!("{path}: {e}"),
            }
        }

        /// (version, kept_at, content) of each version of `path`, newest first.
        fn listed(&self, path: &str) -> Vec<(u64, i64, Vec<u8>)> {
            self.versions
                .list(&rel(path))
                .unwrap()
                .into_iter()
                .map(|v| (v.version, v.kept_at, fs::read(&v.file).unwrap()))
                .collect()
        }
    }

    #[test]
    fn keep_moves_the_file_and_list_reports_it() {
        let f = fixture();
        let full = f.put("dir/a.txt", b"hello");
        assert!(f.keep("dir/a.txt", 7, 1000));
        assert!(!full.exists(), "the file must have left the tree");
        let list = f.versions.list(&rel("dir/a.txt")).unwrap();
        assert_eq!(list.len(), 1);
        let v = &list[0];
        assert_eq!(
            (&v.path, v.version, v.size, v.mtime_ns, v.kept_at),
            (&rel("dir/a.txt"), 7, 5, MTIME_NS, 1000)
        );
        assert_eq!(fs::read(&v.file).unwrap(), b"hello");
        assert!(v.file.starts_with(&f.store));
    }

    #[test]
    fn versions_of_a_path_are_listed_newest_first() {
        let f = fixture();
        f.put("a", b"one");
        assert!(f.keep("a", 3, 100));
        f.put("a", b"two");
        assert!(f.keep("a", 5, 200));
        f.put("a", b"three");
        assert!(f.keep("a", 6, 200));
        assert_eq!(
            f.listed("a"),
            vec![
                (6, 200, b"three".to_vec()),
                (5, 200, b"two".to_vec()),
                (3, 100, b"one".to_vec())
            ]
        );
        assert!(f.listed("b").is_empty());
    }

    #[test]
    fn the_same_seq_kept_twice_in_one_second_keeps_both() {
        let f = fixture();
        f.put("a", b"one");
        assert!(f.keep("a", 4, 100));
        f.put("a", b"two");
        assert!(f.keep("a", 4, 100));
        let mut contents: Vec<_> = f.listed("a").into_iter().map(|(.., c)| c).collect();
        contents.sort();
        assert_eq!(contents, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn nothing_to_keep_is_not_an_error() {
        let f = fixture();
        assert!(!f.keep("missing", 1, 100));
        assert!(!f.keep("missing/below", 1, 100));
        fs::create_dir(f.root.join("dir")).unwrap();
        assert!(!f.keep("dir", 1, 100));
        assert!(f.root.join("dir").is_dir());
        assert!(f.listed("missing").is_empty());
        assert!(f.listed("dir").is_empty());
    }

    #[test]
    fn symlinks_are_not_kept_and_stay_untouched() {
        let f = fixture();
        let target = f.put("target", b"data");
        let link = f.root.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(!f.keep("link", 2, 100));
        assert_eq!(fs::read_link(&link).unwrap(), target);
        assert_eq!(fs::read(&target).unwrap(), b"data");
        assert!(f.listed("link").is_empty());
    }

    #[test]
    fn names_of_255_bytes_and_long_paths_fit() {
        let f = fixture();
        let long = format!("{}/{}", "d".repeat(200), "x".repeat(255));
        f.put(&long, b"long");
        assert!(f.keep(&long, 9, 100));
        assert_eq!(f.listed(&long), vec![(9, 100, b"long".to_vec())]);
    }

    #[test]
    fn expire_removes_only_what_is_older_than_the_window() {
        let f = fixture();
        for (path, seq, at) in [("a", 1, 100), ("a", 2, 150), ("a", 3, 200), ("b", 1, 100)] {
            f.put(path, b"x");
            assert!(f.keep(path, seq, at));
        }
        // Cutoff 150: kept_at 100 is older, 150 is not.
        assert_eq!(f.versions.expire(300, 150).unwrap(), 2);
        let seqs = |p| f.listed(p).into_iter().map(|(s, ..)| s).collect::<Vec<_>>();
        assert_eq!(seqs("a"), vec![3, 2]);
        assert!(seqs("b").is_empty());
        // A slot with nothing left goes entirely.
        assert!(!f.versions.slot(&rel("b")).exists());
        assert_eq!(f.versions.expire(1000, 0).unwrap(), 2);
        assert_eq!(
            fs::read_dir(&f.store).unwrap().count(),
            1,
            "only .tmp is left"
        );
    }

    #[test]
    fn a_version_without_its_record_is_listed_and_aged_normally() {
        // A crash between the rename and the record.
        let f = fixture();
        f.put("a", b"old");
        assert!(f.keep("a", 1, 100));
        let record = f.versions.slot(&rel("a")).join(RECORD);
        fs::remove_file(&record).unwrap();
        assert_eq!(f.listed("a"), vec![(1, 100, b"old".to_vec())]);
        assert_eq!(f.versions.expire(200, 150).unwrap(), 0);
        assert_eq!(f.listed("a").len(), 1);
        // The next keep of the path writes the record again.
        f.put("a", b"new");
        assert!(f.keep("a", 2, 110));
        assert_eq!(fs::read(&record).unwrap(), b"a");
    }

    #[test]
    fn a_record_without_versions_lists_nothing_and_is_cleaned() {
        // A crash in expire between the last version and the record.
        let f = fixture();
        f.put("a", b"old");
        assert!(f.keep("a", 1, 100));
        let v = f.versions.list(&rel("a")).unwrap().remove(0);
        fs::remove_file(&v.file).unwrap();
        assert!(f.listed("a").is_empty());
        assert_eq!(f.versions.expire(100, 0).unwrap(), 0);
        assert!(!f.versions.slot(&rel("a")).exists());
    }

    #[test]
    fn expire_never_deletes_what_it_did_not_write() {
        let f = fixture();
        f.put("a", b"old");
        assert!(f.keep("a", 1, 100));
        let slot = f.versions.slot(&rel("a"));
        fs::write(slot.join("notes"), b"admin's").unwrap();
        fs::write(slot.join("+1.100"), b"lookalike").unwrap();
        assert_eq!(f.versions.expire(1000, 0).unwrap(), 1);
        assert!(slot.join("notes").exists() && slot.join("+1.100").exists());
        assert!(
            slot.join(RECORD).exists(),
            "the record stays while the slot holds files"
        );
    }

    #[test]
    fn a_record_naming_another_path_is_an_error() {
        let f = fixture();
        f.put("a", b"old");
        assert!(f.keep("a", 1, 100));
        fs::write(f.versions.slot(&rel("a")).join(RECORD), b"b").unwrap();
        assert!(f.versions.list(&rel("a")).is_err());
    }

    #[test]
    fn the_copy_fallback_keeps_content_mode_and_mtime() {
        let f = fixture();
        let full = f.put("a", b"copied");
        fs::set_permissions(&full, fs::Permissions::from_mode(0o640)).unwrap();
        let slot = f.versions.slot(&rel("a"));
        make_dir(&slot).unwrap();
        let dest = slot.join(Name::parse("4.100").unwrap().render());
        let (dir, name) = f.at("a");
        assert!(f.versions.copy_in(&dir, &name, &dest).unwrap());
        assert!(!full.exists());
        let st = stat::stat_of(&fs::symlink_metadata(&dest).unwrap()).unwrap();
        assert_eq!((st.size, st.mtime_ns, st.mode), (6, MTIME_NS, 0o640));
        assert_eq!(f.listed("a"), vec![(4, 100, b"copied".to_vec())]);
        assert_eq!(fs::read_dir(&f.versions.tmp).unwrap().count(), 0);
    }

    #[test]
    fn the_copy_fallback_refuses_symlinks() {
        let f = fixture();
        let target = f.put("target", b"data");
        let link = f.root.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dest = f.store.join("dest");
        let (dir, name) = f.at("link");
        assert!(!f.versions.copy_in(&dir, &name, &dest).unwrap());
        assert!(fs::symlink_metadata(&link).is_ok() && !dest.exists());
    }

    #[test]
    fn open_removes_interrupted_copies() {
        let f = fixture();
        fs::write(f.versions.temp_path(), b"half").unwrap();
        let again = Versions::open(f.store.clone()).unwrap();
        assert_eq!(fs::read_dir(&again.tmp).unwrap().count(), 0);
    }

    #[test]
    fn version_names_parse_only_in_the_form_written() {
        let check = |s: &str, want: Option<(u64, i64, u32)>| {
            let got = Name::parse(s).map(|n| (n.version, n.kept_at, n.dup));
            assert_eq!(got, want, "{s:?}");
        };
        check("17.1767225600", Some((17, 1767225600, 0)));
        check("17.1767225600.2", Some((17, 1767225600, 2)));
        check("0.-5", Some((0, -5, 0)));
        check("17.100.0", None);
        check("+17.100", None);
        check("017.100", None);
        check("17.100.1.1", None);
        check("17", None);
        check("path", None);
        check("", None);
    }
}
