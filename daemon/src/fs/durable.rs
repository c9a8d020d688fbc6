//! Durability barriers for a group of received files, the one place that decides when
//! content and names reach the disk. A group (a push on the server, a pull batch on a
//! device) lands in this order:
//!
//! 1. each file is assembled and sealed ([`crate::fs::temp::TempFile::seal`]: verified,
//!    truncated, mode and mtime set), its temp file kept open;
//! 2. **barrier D** ([`data_barrier`]): every temp of the group is fsynced, up to
//!    [`AT_ONCE`] at a time, so the group costs a few flush latencies instead of one per
//!    file; a file whose fsync fails fails alone, and is never renamed;
//! 3. the durable temps are renamed into place ([`crate::fs::temp::Prepared::rename`]),
//!    each right after its last check, and the directories they changed are collected
//!    in a [`DirBarrier`];
//! 4. **barrier M** ([`DirBarrier::sync`]): each distinct directory is fsynced once, up
//!    to [`AT_ONCE`] at a time; a file whose directory failed is not acknowledged;
//! 5. only then the caller commits its index transaction and tells anyone.
//!
//! Also the process-wide settings this needs, read once at start-up ([`at_start`]): the
//! open-file limit (a group keeps its temps open until barrier D) and the test-only
//! crash points ([`CrashPoint`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

use crate::fs::beneath::Dir;
use crate::fs::temp::{Prepared, Sealed};

/// Files or directories fsynced at the same time: concurrent fsyncs share journal
/// commits and device flushes, so a group costs about as much as a few files.
pub const AT_ONCE: usize = 16;

/// The most files a group makes durable together: their temp files stay open until
/// barrier D, so this bounds the descriptors a group holds.
pub const GROUP_MAX: usize = 512;

/// Barrier D: makes every sealed file durable, up to [`AT_ONCE`] at a time, on threads
/// of its own (call it off the async threads). The answers are in the order of
/// `sealed`; a file whose fsync failed is an error and its temp file is removed.
pub fn data_barrier(sealed: Vec<Sealed>) -> Vec<Result<Prepared>> {
    let synced = concurrently(&sealed, Sealed::sync);
    sealed
        .into_iter()
        .zip(synced)
        .map(|(file, synced)| synced.map(|()| file.synced()))
        .collect()
}

/// A directory of a [`DirBarrier`], the same for every handle of that directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirKey(u64, u64);

/// The distinct directories whose entries a group changed, to be fsynced once each
/// (barrier M).
#[derive(Default)]
pub struct DirBarrier {
    dirs: HashMap<DirKey, Dir>,
}

impl DirBarrier {
    /// Adds a directory (a second handle of one already here is dropped) and returns
    /// its key, by which [`Failures::failed`] tells whether it was made durable.
    pub fn add(&mut self, dir: Dir) -> Result<DirKey> {
        let (dev, ino) = dir
            .id()
            .with_context(|| format!("cannot stat {}", dir.path().display()))?;
        let key = DirKey(dev, ino);
        self.dirs.entry(key).or_insert(dir);
        Ok(key)
    }

    /// Adds every directory of `dirs`; their keys, or the first error.
    pub fn add_all(&mut self, dirs: Vec<Dir>) -> Result<Vec<DirKey>> {
        dirs.into_iter().map(|d| self.add(d)).collect()
    }

    /// The number of distinct directories.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Barrier M: fsyncs each directory once, up to [`AT_ONCE`] at a time, on threads of
    /// its own (call it off the async threads). Returns those that failed.
    pub fn sync(self) -> Failures {
        let dirs: Vec<(DirKey, Dir)> = self.dirs.into_iter().collect();
        let synced = concurrently(&dirs, |(_, dir)| {
            dir.sync_checked()
                .map_err(|e| format!("cannot fsync directory {}: {e}", dir.path().display()))
        });
        let failed = dirs
            .into_iter()
            .zip(synced)
            .filter_map(|((key, _), synced)| synced.err().map(|why| (key, why)))
            .collect();
        Failures(failed)
    }
}

/// The directories barrier M could not make durable, and why.
#[derive(Debug, Default)]
pub struct Failures(HashMap<DirKey, String>);

impl Failures {
    /// Why a file whose directories are `keys` is not durable, if it is not.
    pub fn failed(&self, keys: &[DirKey]) -> Option<&str> {
        keys.iter().find_map(|k| self.0.get(k).map(String::as_str))
    }
}

/// Runs `f` on every item, up to [`AT_ONCE`] at a time: the calling thread and up to
/// `AT_ONCE - 1` scoped threads take items in turn. The answers are in item order.
fn concurrently<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let next = AtomicUsize::new(0);
    let answers: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let answer = f(item);
            answers.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(answer);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..items.len().min(AT_ONCE) {
            // A thread that cannot be made leaves its share to the others.
            if std::thread::Builder::new()
                .name("fsync".into())
                .spawn_scoped(scope, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
    answers
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|a| a.expect("every item is taken by one thread, which answers it"))
        .collect()
}

/// Points in a group's landing where a test may make the process abort, to check what
/// a crash there leaves (test-only; see [`CrashPoint::reached`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After barrier D, before any rename.
    AfterDataBarrier,
    /// After all renames of the group, before barrier M.
    AfterRenames,
    /// After barrier M, before the index transaction commits.
    AfterDirBarrier,
    /// `migrate-to-cluster`: after every block is in the bucket, before any row.
    ImportAfterUpload,
    /// `migrate-to-cluster`: after every row is written, before the commit.
    ImportBeforeCommit,
}

/// The crash point `FILESYNC_CRASH_AT` names, read once by [`at_start`].
static CRASH_AT: OnceLock<Option<CrashPoint>> = OnceLock::new();

impl CrashPoint {
    const ALL: [CrashPoint; 5] = [
        CrashPoint::AfterDataBarrier,
        CrashPoint::AfterRenames,
        CrashPoint::AfterDirBarrier,
        CrashPoint::ImportAfterUpload,
        CrashPoint::ImportBeforeCommit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::AfterDataBarrier => "after-data-barrier",
            CrashPoint::AfterRenames => "after-renames",
            CrashPoint::AfterDirBarrier => "after-dir-barrier",
            CrashPoint::ImportAfterUpload => "import-after-upload",
            CrashPoint::ImportBeforeCommit => "import-before-commit",
        }
    }

    fn named(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Test-only: aborts the process (after one `info` line `crash point reached: NAME`)
    /// when `FILESYNC_CRASH_AT` named this point at start-up and the group has at least
    /// one file. Otherwise nothing.
    pub fn reached(self, files: usize) {
        if files > 0 && CRASH_AT.get().copied().flatten() == Some(self) {
            tracing::info!("crash point reached: {}", self.name());
            std::process::abort();
        }
    }
}

/// Start-up, once per process: raises the open-file limit to its hard limit (a group
/// keeps up to [`GROUP_MAX`] temp files open until barrier D, per device on a server)
/// and reads the test-only crash point from `FILESYNC_CRASH_AT`.
pub fn at_start() {
    // Windows has no soft limit of open handles to raise.
    #[cfg(unix)]
    if let Err(e) = raise_open_files() {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    let value = std::env::var("FILESYNC_CRASH_AT").ok();
    let point = value.as_deref().and_then(CrashPoint::named);
    if let (Some(value), None) = (&value, point) {
        let names: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        tracing::warn!(
            "FILESYNC_CRASH_AT={value:?} names no crash point ({}); ignored",
            names.join(", ")
        );
    }
    if let Some(point) = point {
        tracing::warn!(
            "test-only crash point set: the process aborts {}",
            point.name()
        );
    }
    let _ = CRASH_AT.set(point);
}

/// Sets the soft limit of open files to the hard limit.
#[cfg(unix)]
fn raise_open_files() -> std::io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit, read above; only the soft limit changed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::beneath::Root;
    use crate::fs::temp::TempFile;
    use crate::fs::temp::tests::entry_for;

    /// Sealed files of a group in three directories, each holding its own path as
    /// content.
    fn group(root: &Root, dir: &std::path::Path, n: usize) -> Vec<(String, Sealed)> {
        for d in ["a", "b", "c"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        (0..n)
            .map(|i| {
                let path = format!("{}/f{i}", ["a", "b", "c"][i % 3]);
                let e = entry_for(&path, path.as_bytes());
                let mut t = TempFile::create(root, &e.path).unwrap();
                t.write(path.as_bytes()).unwrap();
                (path, t.seal(&e).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_group_is_made_durable_renamed_and_its_directories_synced_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let (paths, sealed): (Vec<_>, Vec<_>) = group(&root, dir.path(), 40).into_iter().unzip();
        let prepared = data_barrier(sealed);
        assert_eq!(prepared.len(), 40);
        let mut barrier = DirBarrier::default();
        let mut keys = Vec::new();
        for (path, p) in paths.iter().zip(prepared) {
            let rel = filesync_proto::RelPath::new(path).unwrap();
            let renamed = p.unwrap().rename(&root, &rel).unwrap();
            keys.push(barrier.add_all(renamed.dirs).unwrap());
        }
        assert_eq!(barrier.len(), 3, "one entry per distinct directory");
        let failures = barrier.sync();
        assert!(keys.iter().all(|k| failures.failed(k).is_none()));
        for path in &paths {
            assert_eq!(
                std::fs::read(dir.path().join(path)).unwrap(),
                path.as_bytes()
            );
        }
    }

    #[test]
    fn a_file_renamed_into_new_directories_brings_every_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let e = entry_for("x/y/z/f", b"deep");
        let mut t = TempFile::create(&root, &e.path).unwrap();
        t.write(b"deep").unwrap();
        let prepared = data_barrier(vec![t.seal(&e).unwrap()]).pop().unwrap();
        let renamed = prepared.unwrap().rename(&root, &e.path).unwrap();
        let mut barrier = DirBarrier::default();
        barrier.add_all(renamed.dirs).unwrap();
        // z (holds f), y (holds z), x (holds y), the root (holds x).
        assert_eq!(barrier.len(), 4);
        assert_eq!(std::fs::read(dir.path().join("x/y/z/f")).unwrap(), b"deep");
    }

    #[test]
    fn an_error_fails_only_its_own_item_and_every_item_is_answered_in_order() {
        let items: Vec<usize> = (0..100).collect();
        let answers = concurrently(&items, |&i| if i == 37 { Err(i) } else { Ok(i * 2) });
        for (i, a) in answers.iter().enumerate() {
            if i == 37 {
                assert_eq!(*a, Err(37));
            } else {
                assert_eq!(*a, Ok(i * 2));
            }
        }
        assert!(concurrently(&[] as &[u8], |_| ()).is_empty());
    }

    #[test]
    fn a_failed_directory_fails_only_the_files_in_it() {
        let (a, b) = (DirKey(1, 1), DirKey(1, 2));
        let failures = Failures(HashMap::from([(b, "disk gone".to_string())]));
        assert_eq!(failures.failed(&[a]), None);
        assert_eq!(failures.failed(&[a, b]), Some("disk gone"));
    }

    #[test]
    fn crash_points_are_named_as_the_fault_tests_expect() {
        for p in CrashPoint::ALL {
            assert_eq!(CrashPoint::named(p.name()), Some(p));
        }
        assert_eq!(
            CrashPoint::named("after-renames"),
            Some(CrashPoint::AfterRenames)
        );
        assert_eq!(CrashPoint::named("later"), None);
        // Not set in this process: nothing happens.
        CrashPoint::AfterRenames.reached(3);
    }
}
