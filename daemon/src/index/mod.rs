//! The on-disk index of one replica: an embedded SQLite database per folder.
//!
//! Both roles use the same schema. `local` holds what the replica's directory contains,
//! as last scanned or written, with a stat fingerprint so that a rescan of an unchanged
//! file never reads it. On a server, `local.seq` is the sequence number the server gave
//! that version; on a client it is the server version the local content derives from,
//! and `dirty` marks content the server has not accepted yet. A client also keeps
//! `remote`, the server's index as received, and in `meta` the last sequence it has
//! received and the server folder's epoch. `blocks` maps content hashes to where they
//! sit in local files, so that content already on disk is copied, never fetched.

mod history;
mod local;
mod remote;
mod schema;

use std::path::Path;

use anyhow::{Context, Result, bail};
use filesync_proto::RelPath;
use filesync_proto::wire::Entry;
use rusqlite::{Connection, OptionalExtension, params};

pub use history::{StreamRead, fresh_epoch, rename_record};
pub use local::{BlockSource, Totals, kind_code, kind_from};
pub use remote::moved_by;

use crate::events::unix_secs;
use crate::fs::stat::Stat;

/// The keys of the `meta` table, each holding one integer. The strings they are stored
/// under ([`Meta::key`]) are in every existing index and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// The layout version of the index ([`schema::FORMAT`]).
    Format,
    /// A random id made when the index was created; a server folder's epoch.
    Epoch,
    /// The highest sequence number of a row since forgotten ([`Index::remove_local`]).
    RemovedSeq,
    /// Server: the lowest number the folder may give next, raised when a rollback skips
    /// numbers, so that a restart never hands them out.
    NextFloor,
    /// Client: the epoch of the server folder this index follows.
    ServerEpoch,
    /// Client: the server's sequence number up to which entries were received.
    Since,
    /// Client: the server's sequence number up to which rename records were taken in.
    /// Every remote entry is at its path as of it (see [`crate::server::stream`]).
    Renamed,
    /// Client: a re-read of the server's whole index, asked for or under way.
    Refresh,
    /// Client: set once this device has written the folder's marker.
    MarkerMade,
}

impl Meta {
    /// The key as stored in the table.
    pub const fn key(self) -> &'static str {
        match self {
            Meta::Format => "format",
            Meta::Epoch => "epoch",
            Meta::RemovedSeq => "removed_seq",
            Meta::NextFloor => "next_floor",
            Meta::ServerEpoch => "server_epoch",
            Meta::Since => "since",
            Meta::Renamed => "renamed",
            Meta::Refresh => "refresh",
            Meta::MarkerMade => "marker",
        }
    }
}

/// What a local row records besides the entry: enough to tell whether the file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRow {
    pub entry: Entry,
    pub inode: u64,
    /// Client only: local content the server has not accepted yet.
    pub dirty: bool,
}

/// A local row as a scan compares it with the disk (see [`Index::each_local_stat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatRow {
    /// Kind, size, mtime, mode and inode as last scanned or written.
    pub stat: Stat,
    pub deleted: bool,
    pub dirty: bool,
    /// The server has a version of this path, or the row carries a rename not pushed yet
    /// (`seq > 0` or `renamed_from` set): a directory a rename can be paired with.
    pub shared: bool,
}

/// One connection to a replica's index. The connection sits behind a mutex only so
/// that an `Index` can be held across awaits; each `Index` has a single user.
pub struct Index {
    conn: std::sync::Mutex<Connection>,
    /// Open transactions: the outermost is `BEGIN IMMEDIATE`, inner ones savepoints.
    depth: std::sync::atomic::AtomicU32,
}

/// Whether `error` says the database file is damaged or not a database at all.
fn is_corruption(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause
                .downcast_ref::<rusqlite::Error>()
                .and_then(|e| e.sqlite_error_code()),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    })
}

/// Renames a damaged index and its sidecar files out of the way, keeping them; returns
/// the new name of the index.
fn set_aside(file: &Path) -> Result<std::path::PathBuf> {
    let secs = unix_secs();
    let with = |path: &Path, suffix: &str| {
        let mut to = path.as_os_str().to_owned();
        to.push(suffix);
        std::path::PathBuf::from(to)
    };
    // A name already taken (a second rebuild within the second) gets a number: nothing
    // kept before is overwritten.
    let suffix = (0..1000)
        .map(|n| match n {
            0 => format!(".corrupt-{secs}"),
            n => format!(".corrupt-{secs}.{n}"),
        })
        .find(|suffix| !with(file, suffix).exists())
        .with_context(|| format!("cannot find a free name to keep {} aside", file.display()))?;
    let kept = with(file, &suffix);
    std::fs::rename(file, &kept)
        .with_context(|| format!("cannot move the damaged index {} aside", file.display()))?;
    for sidecar in ["-wal", "-shm"] {
        let side = with(file, sidecar);
        if side.exists() {
            std::fs::rename(&side, with(&side, &suffix)).with_context(|| {
                format!("cannot move the damaged index's {} aside", side.display())
            })?;
        }
    }
    Ok(kept)
}

/// Bounds of the paths strictly below `path`: every one sorts between `path/` and
/// `path0` ('0' follows '/').
pub(crate) fn subtree_bounds(path: &RelPath) -> (String, String) {
    (format!("{}/", path.as_str()), format!("{}0", path.as_str()))
}

/// The bytes the index at `file` takes on disk: the database and its write-ahead log.
pub fn size_on_disk(file: &Path) -> u64 {
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    [file.as_os_str(), &wal]
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

impl Index {
    /// Opens the index at `file` as its owner does when a folder starts: an index that
    /// SQLite finds damaged is moved aside (with its `-wal` and `-shm`, as
    /// `FILE.corrupt-SECONDS`, kept for inspection) and a new, empty one is made, which
    /// the folder then rebuilds from its directory (and a client from its server).
    /// `folder` names the folder in the warning. Other errors (permissions, a full disk)
    /// are returned: only corruption is worth a rebuild.
    pub fn open_or_rebuild(file: &Path, folder: &str) -> Result<Index> {
        let damage = match Index::open(file) {
            Ok(index) => match index.quick_check() {
                Ok(()) => return Ok(index),
                Err(e) => e,
            },
            Err(e) if is_corruption(&e) => e,
            Err(e) => return Err(e),
        };
        let kept = set_aside(file)?;
        tracing::warn!(folder, kept = %kept.display(), "the folder's index is damaged ({damage:#}); kept it aside and rebuilding the index from the folder");
        Index::open(file)
    }

    /// SQLite's `quick_check` of the whole file: `Ok` when it finds nothing wrong.
    fn quick_check(&self) -> Result<()> {
        let verdict: String = self
            .c()
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if verdict != "ok" {
            bail!("integrity check failed: {verdict}");
        }
        Ok(())
    }

    /// Opens (creating if needed) the index at `file`.
    pub fn open(file: &Path) -> Result<Index> {
        // Made private before SQLite opens it: its journal files take its permissions.
        crate::fs::private::touch(file)
            .with_context(|| format!("cannot create index {}", file.display()))?;
        let conn = Connection::open(file)
            .with_context(|| format!("cannot open index {}", file.display()))?;
        // WAL lets session tasks read while the folder task writes; NORMAL sync is safe in
        // WAL mode (a crash can lose the last commits, never corrupt), and the files
        // themselves are fsynced before the index records them.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "recursive_triggers", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let index = Index {
            conn: std::sync::Mutex::new(conn),
            depth: std::sync::atomic::AtomicU32::new(0),
        };
        index.set_up(file)?;
        if index.meta(Meta::Epoch)?.is_none() {
            index.set_meta(Meta::Epoch, (rand::random::<u64>() >> 1) as i64)?;
        }
        Ok(index)
    }

    fn c(&self) -> std::sync::MutexGuard<'_, Connection> {
        // No code path panics while holding the guard in a way that breaks the connection.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn meta(&self, key: Meta) -> Result<Option<i64>> {
        Ok(self
            .c()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key.key()], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: Meta, value: i64) -> Result<()> {
        self.c().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key.key(), value],
        )?;
        Ok(())
    }

    pub fn delete_meta(&self, key: Meta) -> Result<()> {
        self.c()
            .execute("DELETE FROM meta WHERE key = ?1", [key.key()])?;
        Ok(())
    }

    /// Runs `f` inside one transaction: all its writes land together or not at all.
    /// Inside another transaction, it is a savepoint of that one.
    pub fn batch<R>(&self, f: impl FnOnce(&Index) -> Result<R>) -> Result<R> {
        self.begin()?;
        match f(self) {
            Ok(r) => {
                self.commit()?;
                Ok(r)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Opens a transaction (or a savepoint inside one); pair with `commit` or `rollback`.
    pub fn begin(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let sql = match self.depth.load(SeqCst) {
            0 => "BEGIN IMMEDIATE",
            _ => "SAVEPOINT nested",
        };
        self.c().execute_batch(sql)?;
        self.depth.fetch_add(1, SeqCst);
        Ok(())
    }

    pub fn commit(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.depth.fetch_sub(1, SeqCst) > 1 {
            self.c().execute_batch("RELEASE nested")?;
            return Ok(());
        }
        let done = self.c().execute_batch("COMMIT");
        if done.is_err() {
            let _ = self.c().execute_batch("ROLLBACK");
        }
        Ok(done?)
    }

    pub fn rollback(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let sql = match self.depth.fetch_sub(1, SeqCst) {
            1 => "ROLLBACK",
            _ => "ROLLBACK TO nested; RELEASE nested",
        };
        let _ = self.c().execute_batch(sql);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use filesync_proto::wire::{BlockInfo, ConflictNote, EntryKind};
    use filesync_proto::{DeviceId, Hash};

    use super::local::LOCAL_COLS;
    use super::schema::{FORMAT, NEEDED};
    use super::*;

    #[test]
    fn an_entry_learned_before_later_renames_goes_where_they_took_its_path() {
        let p = |s: &str| RelPath::new(s).unwrap();
        let later = vec![
            (9, p("d/s"), p("z")),
            (11, p("d"), p("m")),
            (12, p("m/s"), p("q")),
            (13, p("x"), p("y")),
        ];
        // Both renames above it carry it; the last one that did is when it is as of.
        assert_eq!(moved_by(&p("d/s/f"), 10, &later), (p("q/f"), 12));
        assert_eq!(moved_by(&p("d/g"), 10, &later), (p("m/g"), 11));
        // Renames up to its own number were there before it: they do not move it.
        // A path no rename touches stays, as of its own number.
        assert_eq!(moved_by(&p("dd/f"), 10, &later), (p("dd/f"), 10));
        assert_eq!(moved_by(&p("d/s/f"), 10, &[]), (p("d/s/f"), 10));
    }

    /// Counts the transactions `index` commits from now on, autocommit writes included.
    pub(crate) fn count_commits(index: &Index) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = n.clone();
        let hook = move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            false
        };
        index.c().commit_hook(Some(hook)).unwrap();
        n
    }

    pub(crate) fn file_entry(path: &str, seq: u64, content: &[u8]) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            deleted: false,
            size: content.len() as u64,
            mtime_ns: 1,
            mode: 0o644,
            hash: Hash([content.first().copied().unwrap_or(0); 32]),
            blocks: vec![BlockInfo {
                hash: Hash([9; 32]),
                size: content.len() as u32,
            }],
            target: String::new(),
            seq,
            origin: DeviceId::new("dev").unwrap(),
            conflict: None,
            renamed_from: None,
        }
    }

    fn open() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.db")).unwrap();
        (dir, index)
    }

    #[test]
    fn max_seq_never_goes_back_when_rows_are_forgotten() {
        let (_d, index) = open();
        for (path, seq) in [("a", 3), ("b", 7), ("c", 5)] {
            index
                .put_local(&LocalRow {
                    entry: file_entry(path, seq, b"x"),
                    inode: 0,
                    dirty: false,
                })
                .unwrap();
        }
        index
            .add_rename(4, &RelPath::new("d").unwrap(), &RelPath::new("e").unwrap())
            .unwrap();
        assert_eq!(index.max_seq().unwrap(), 7);
        index.remove_local(&RelPath::new("b").unwrap()).unwrap();
        assert_eq!(index.max_seq().unwrap(), 7, "forgetting the latest row");
        index.remove_local(&RelPath::new("a").unwrap()).unwrap();
        assert_eq!(
            index.max_seq().unwrap(),
            7,
            "forgetting an older row after it"
        );
        index
            .remove_local(&RelPath::new("nothing").unwrap())
            .unwrap();
        assert_eq!(index.max_seq().unwrap(), 7);
    }

    #[test]
    fn local_rows_round_trip_with_blocks() {
        let (_d, index) = open();
        let row = LocalRow {
            entry: file_entry("a/b", 3, b"xyz"),
            inode: 42,
            dirty: true,
        };
        index.put_local(&row).unwrap();
        assert_eq!(index.local(&row.entry.path).unwrap().unwrap(), row);
        let sources = index.block_sources(&Hash([9; 32]), 5).unwrap();
        assert_eq!(
            sources,
            vec![BlockSource {
                path: row.entry.path.clone(),
                offset: 0,
                recorded: Stat {
                    kind: EntryKind::File,
                    size: row.entry.size,
                    mtime_ns: row.entry.mtime_ns,
                    mode: row.entry.mode,
                    inode: 42,
                },
            }]
        );
        assert_eq!(index.dirty(10, true).unwrap().len(), 1);
        index.remove_local(&row.entry.path).unwrap();
        assert!(index.block_sources(&Hash([9; 32]), 5).unwrap().is_empty());
    }

    #[test]
    fn local_under_matches_prefix_only() {
        let (_d, index) = open();
        for p in ["a", "a/x", "a/y/z", "ab", "a0", "b"] {
            index
                .put_local(&LocalRow {
                    entry: file_entry(p, 1, b"q"),
                    inode: 0,
                    dirty: false,
                })
                .unwrap();
        }
        let mut got: Vec<String> = index
            .local_under(&RelPath::new("a").unwrap())
            .unwrap()
            .into_iter()
            .map(|r| r.entry.path.to_string())
            .collect();
        got.sort();
        assert_eq!(got, ["a", "a/x", "a/y/z"]);
    }

    #[test]
    fn local_stats_carry_the_stat_fingerprint_in_scope() {
        let (_d, index) = open();
        for (p, seq, inode, dirty) in [("a", 0, 5, true), ("a/x", 3, 6, false), ("ab", 0, 7, false)]
        {
            index
                .put_local(&LocalRow {
                    entry: file_entry(p, seq, b"abc"),
                    inode,
                    dirty,
                })
                .unwrap();
        }
        let stats = |under: Option<&RelPath>| {
            let mut got = Vec::new();
            index
                .each_local_stat(under, |path, row| got.push((path.to_string(), row)))
                .unwrap();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            got
        };
        let row = |inode, dirty, shared| StatRow {
            stat: Stat {
                kind: EntryKind::File,
                size: 3,
                mtime_ns: 1,
                mode: 0o644,
                inode,
            },
            deleted: false,
            dirty,
            shared,
        };
        let all = stats(None);
        assert_eq!(
            all,
            [
                ("a".to_string(), row(5, true, false)),
                ("a/x".to_string(), row(6, false, true)),
                ("ab".to_string(), row(7, false, false)),
            ]
        );
        assert_eq!(stats(Some(&RelPath::new("a").unwrap())), all[..2]);
    }

    #[test]
    fn remote_keeps_the_latest_read_and_needed_compares_seq() {
        let (_d, index) = open();
        let f = RelPath::new("f").unwrap();
        index.put_remote(&file_entry("f", 5, b"new"), 5).unwrap();
        index.put_remote(&file_entry("f", 3, b"old"), 4).unwrap();
        assert_eq!(index.remote(&f).unwrap().unwrap().seq, 5);
        // A rename brought an older number to the path after the last read: it is what
        // the server has there now.
        index.put_remote(&file_entry("f", 3, b"moved"), 6).unwrap();
        assert_eq!(index.remote(&f).unwrap().unwrap().seq, 3);
        index.put_remote(&file_entry("f", 5, b"new"), 7).unwrap();
        assert_eq!(index.needed(10).unwrap().len(), 1);
        index
            .put_local(&LocalRow {
                entry: file_entry("f", 5, b"new"),
                inode: 0,
                dirty: false,
            })
            .unwrap();
        assert!(index.needed(10).unwrap().is_empty());
        let mut gone = file_entry("g", 6, b"");
        gone.deleted = true;
        index.put_remote(&gone, 6).unwrap();
        assert!(
            index.needed(10).unwrap().is_empty(),
            "a tombstone for a path we never had needs nothing"
        );
    }

    /// `needed` through the `have` mirror gives what the plain join of `remote` and
    /// `local` gives, after every kind of change to `local`, and reads only the index.
    #[test]
    fn needed_follows_every_change_of_local_rows() {
        let (_d, index) = open();
        let joined = |index: &Index| -> Vec<String> {
            let conn = index.c();
            let mut stmt = conn
                .prepare(
                    "SELECT r.path FROM remote r LEFT JOIN local l ON l.path = r.path
                     WHERE r.ignored = 0 AND ((l.path IS NULL AND r.deleted = 0)
                        OR (l.path IS NOT NULL AND l.seq != r.seq)) ORDER BY r.path",
                )
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let check = |index: &Index, expect: &[&str]| {
            let got: Vec<String> = index
                .needed(100)
                .unwrap()
                .into_iter()
                .map(|e| e.path.to_string())
                .collect();
            assert_eq!(got, expect);
            assert_eq!(joined(index), expect);
            let totals = index.totals().unwrap();
            assert_eq!(totals.down_files, expect.len() as u64);
            let counted: (u64, u64) = index
                .c()
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM local WHERE deleted = 0 AND kind = 0",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                )
                .unwrap();
            assert_eq!((totals.files, totals.bytes), counted);
        };
        let local = |path: &str, seq: u64| LocalRow {
            entry: file_entry(path, seq, b"x"),
            inode: 0,
            dirty: false,
        };
        // A local row that exists before the remote entry arrives.
        index.put_local(&local("d/a", 1)).unwrap();
        for (path, seq) in [("d/a", 1), ("d/b", 2), ("e", 3)] {
            index.put_remote(&file_entry(path, seq, b"x"), seq).unwrap();
        }
        check(&index, &["d/b", "e"]);
        index.put_local(&local("d/b", 2)).unwrap();
        check(&index, &["e"]);
        index.put_local(&local("d/b", 7)).unwrap();
        check(&index, &["d/b", "e"]);
        index.remove_local(&RelPath::new("d/a").unwrap()).unwrap();
        check(&index, &["d/a", "d/b", "e"]);
        index.put_local(&local("x/a", 1)).unwrap();
        index.put_local(&local("x/b", 2)).unwrap();
        index
            .move_local(&RelPath::new("x").unwrap(), &RelPath::new("d").unwrap())
            .unwrap();
        check(&index, &["e"]);
        index
            .set_remote_ignored(&RelPath::new("e").unwrap())
            .unwrap();
        check(&index, &[]);
        // The same version again stays skipped; a new one is judged again.
        index.put_remote(&file_entry("e", 3, b"x"), 4).unwrap();
        check(&index, &[]);
        index.put_remote(&file_entry("e", 8, b"y"), 8).unwrap();
        check(&index, &["e"]);
        index
            .set_remote_ignored(&RelPath::new("e").unwrap())
            .unwrap();
        let plan = |query: String| -> String {
            index
                .c()
                .query_row(&format!("EXPLAIN QUERY PLAN {query}"), [], |r| r.get(3))
                .unwrap()
        };
        let needed = plan(format!(
            "SELECT entry FROM remote WHERE {NEEDED} ORDER BY path LIMIT 1"
        ));
        assert!(needed.contains("remote_needed"), "{needed}");
        let dirty = plan(format!(
            "SELECT {LOCAL_COLS} FROM local WHERE dirty = 1 ORDER BY path LIMIT 1"
        ));
        assert!(
            dirty.contains("local_dirty_path"),
            "pushes page through an index: {dirty}"
        );
    }

    /// The live file count and size kept by triggers agree with counting the table
    /// after replacements, tombstones, directories, moves and a reset.
    #[test]
    fn live_totals_follow_every_change() {
        let (_d, index) = open();
        let counted = |index: &Index| -> (u64, u64) {
            index
                .c()
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM local WHERE deleted = 0 AND kind = 0",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                )
                .unwrap()
        };
        let row = |path: &str, content: &[u8], deleted: bool, kind: EntryKind| {
            let mut entry = file_entry(path, 1, content);
            entry.deleted = deleted;
            entry.kind = kind;
            LocalRow {
                entry,
                inode: 0,
                dirty: true,
            }
        };
        let steps: [&dyn Fn(&Index); 9] = [
            &|ix| {
                ix.put_local(&row("a", b"12345", false, EntryKind::File))
                    .unwrap()
            },
            &|ix| {
                ix.put_local(&row("a", b"1", false, EntryKind::File))
                    .unwrap()
            },
            &|ix| ix.put_local(&row("d", b"", false, EntryKind::Dir)).unwrap(),
            &|ix| {
                ix.put_local(&row("d/x", b"xyz", false, EntryKind::File))
                    .unwrap()
            },
            &|ix| ix.put_local(&row("a", b"", true, EntryKind::File)).unwrap(),
            &|ix| {
                ix.move_local(&RelPath::new("d").unwrap(), &RelPath::new("e").unwrap())
                    .unwrap()
            },
            &|ix| ix.remove_local(&RelPath::new("e/x").unwrap()).unwrap(),
            &|ix| {
                ix.put_local(&row("f", b"0123456789", false, EntryKind::File))
                    .unwrap()
            },
            &|ix| ix.reset_to_unsynced().unwrap(),
        ];
        for step in steps {
            step(&index);
            let t = index.totals().unwrap();
            assert_eq!((t.files, t.bytes), counted(&index));
        }
        assert_eq!(counted(&index), (1, 10));
    }

    /// The pending totals kept by triggers agree with counting the tables after every
    /// kind of change to local and remote rows, from every writer of them.
    #[test]
    fn pending_totals_equal_a_recount_after_every_change() {
        let (_d, index) = open();
        let recount = |index: &Index| -> [u64; 5] {
            let one = |sql: &str| -> u64 {
                let v: i64 = index.c().query_row(sql, [], |r| r.get(0)).unwrap();
                v as u64
            };
            [
                one("SELECT COUNT(*) FROM local WHERE dirty = 1"),
                one("SELECT COALESCE(SUM(size), 0) FROM local WHERE dirty = 1"),
                one(&format!("SELECT COUNT(*) FROM remote WHERE {NEEDED}")),
                one(&format!(
                    "SELECT COALESCE(SUM(CASE WHEN deleted = 0 THEN size ELSE 0 END), 0)
                     FROM remote WHERE {NEEDED}"
                )),
                one("SELECT COUNT(*) FROM local WHERE conflict IS NOT NULL AND deleted = 0"),
            ]
        };
        let p = |s: &str| RelPath::new(s).unwrap();
        let local = |path: &str, seq: u64, content: &[u8], dirty: bool| LocalRow {
            entry: file_entry(path, seq, content),
            inode: 0,
            dirty,
        };
        let conflict = |path: &str, deleted: bool| {
            let mut row = local(path, 0, b"copy", true);
            row.entry.deleted = deleted;
            row.entry.conflict = Some(ConflictNote {
                original: p("a"),
                winner_seq: 1,
                winner: DeviceId::new("other").unwrap(),
                made_at: 0,
            });
            row
        };
        let tombstone = |path: &str, seq: u64| {
            let mut e = file_entry(path, seq, b"");
            e.deleted = true;
            e
        };
        type Step<'a> = Box<dyn Fn(&Index) + 'a>;
        let steps: Vec<Step> = vec![
            Box::new(|ix| ix.put_local(&local("a", 0, b"12345", true)).unwrap()),
            Box::new(|ix| ix.put_local(&local("a", 0, b"1", true)).unwrap()),
            Box::new(|ix| ix.put_remote(&file_entry("b", 2, b"remote"), 2).unwrap()),
            Box::new(|ix| ix.put_remote(&file_entry("a", 3, b"abc"), 3).unwrap()),
            Box::new(|ix| ix.put_local(&local("a", 3, b"abc", false)).unwrap()),
            Box::new(|ix| ix.put_remote(&tombstone("c", 4), 4).unwrap()),
            Box::new(|ix| ix.put_local(&local("c", 1, b"old", false)).unwrap()),
            Box::new(|ix| ix.put_local(&conflict("a.sync-conflict", false)).unwrap()),
            Box::new(|ix| ix.put_local(&conflict("a.sync-conflict", true)).unwrap()),
            Box::new(|ix| ix.put_local(&conflict("x.sync-conflict", false)).unwrap()),
            Box::new(|ix| ix.set_remote_ignored(&p("b")).unwrap()),
            Box::new(|ix| ix.clear_remote_ignored().unwrap()),
            Box::new(|ix| ix.put_local(&local("d/e", 0, b"new", true)).unwrap()),
            Box::new(|ix| ix.move_local(&p("d"), &p("m")).unwrap()),
            Box::new(|ix| ix.take_remote_rename(5, &p("a"), &p("z")).unwrap()),
            Box::new(|ix| ix.remove_local(&p("c")).unwrap()),
            Box::new(|ix| {
                ix.start_refresh().unwrap();
                ix.put_remote(&file_entry("b", 6, b"again"), 6).unwrap();
                ix.end_refresh(6).unwrap();
            }),
            Box::new(|ix| ix.reset_to_unsynced().unwrap()),
            Box::new(|ix| ix.forget_local().unwrap()),
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&index);
            let t = index.totals().unwrap();
            let kept = [
                t.up_files,
                t.up_bytes,
                t.down_files,
                t.down_bytes,
                t.conflicts,
            ];
            assert_eq!(kept, recount(&index), "after step {i}");
        }
    }

    /// An index of format 2 (no `remote.have`) keeps its remote entries and needs
    /// exactly what it needed before.
    #[test]
    fn format_2_index_gains_the_have_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.db");
        {
            let index = Index::open(&file).unwrap();
            index
                .put_local(&LocalRow {
                    entry: file_entry("a", 1, b"x"),
                    inode: 0,
                    dirty: false,
                })
                .unwrap();
            index.put_remote(&file_entry("a", 1, b"x"), 1).unwrap();
            index.put_remote(&file_entry("b", 2, b"x"), 2).unwrap();
            index
                .c()
                .execute_batch(
                    "DROP INDEX remote_needed; DROP TRIGGER local_have_insert;
                     DROP TRIGGER local_have_update; DROP TRIGGER local_have_delete;
                     DROP TRIGGER remote_pending_insert; DROP TRIGGER remote_pending_update;
                     DROP TRIGGER remote_pending_delete; DROP TRIGGER local_pending_insert;
                     DROP TRIGGER local_pending_update; DROP TRIGGER local_pending_delete;
                     DROP TABLE pending;
                     ALTER TABLE remote DROP COLUMN have;",
                )
                .unwrap();
            index.set_meta(Meta::Format, 2).unwrap();
        }
        let index = Index::open(&file).unwrap();
        assert_eq!(index.meta(Meta::Format).unwrap(), Some(FORMAT));
        let needed: Vec<String> = index
            .needed(10)
            .unwrap()
            .into_iter()
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(needed, ["b"]);
        let t = index.totals().unwrap();
        assert_eq!(
            (t.down_files, t.down_bytes),
            (1, 1),
            "filled when first made"
        );
    }

    #[test]
    fn batch_rolls_back_on_error() {
        let (_d, index) = open();
        let r: Result<()> = index.batch(|ix| {
            ix.put_local(&LocalRow {
                entry: file_entry("f", 1, b"x"),
                inode: 0,
                dirty: false,
            })?;
            anyhow::bail!("boom")
        });
        assert!(r.is_err());
        assert!(index.local(&RelPath::new("f").unwrap()).unwrap().is_none());
        assert!(index.epoch().unwrap() > 0);
    }

    #[test]
    fn pending_file_deletes_leave_out_moves_and_sent_deletes() {
        let (_d, index) = open();
        assert!(!index.has_local().unwrap());
        let row = |path: &str, content: &[u8], deleted: bool, dirty: bool| {
            let mut entry = file_entry(path, 1, content);
            entry.deleted = deleted;
            LocalRow {
                entry,
                inode: 0,
                dirty,
            }
        };
        for r in [
            row("kept", b"k", false, false),
            row("gone", b"g", true, true),
            row("sent", b"s", true, false),
            row("moved-from", b"m", true, true),
            row("moved-to", b"m", false, true),
            // Deletes the server has nothing to apply to: they can wipe no device.
            row("never-sent", b"n", true, true),
            row("gone-there-too", b"t", true, true),
        ] {
            index.put_local(&r).unwrap();
        }
        for (path, deleted) in [
            ("kept", false),
            ("gone", false),
            ("sent", false),
            ("moved-from", false),
            ("gone-there-too", true),
        ] {
            let mut e = file_entry(path, 1, path.as_bytes());
            e.deleted = deleted;
            index.put_remote(&e, 1).unwrap();
        }
        assert!(index.has_local().unwrap());
        assert_eq!(
            index.pending_file_deletes().unwrap(),
            [RelPath::new("gone").unwrap()]
        );
        let live: Vec<String> = index
            .dirty(10, false)
            .unwrap()
            .into_iter()
            .map(|r| r.entry.path.to_string())
            .collect();
        assert_eq!(live, ["moved-to"]);
        assert_eq!(index.dirty(10, true).unwrap().len(), 5);
        index.forget_local().unwrap();
        assert!(!index.has_local().unwrap());
        assert!(index.pending_file_deletes().unwrap().is_empty());
        assert_eq!(index.totals().unwrap().files, 0);
    }

    #[test]
    fn gaps_and_new_epochs() {
        let (_d, index) = open();
        index.add_gap(10, 1000).unwrap();
        index.add_gap(10, 500).unwrap();
        index.add_gap(2000, 3000).unwrap();
        assert_eq!(index.gaps().unwrap(), [(10, 1000), (2000, 3000)]);
        let old = index.epoch().unwrap();
        let new = index.new_epoch().unwrap();
        assert_ne!(old, new);
        assert_eq!(index.epoch().unwrap(), new);
    }

    /// An index damaged in the ways a disk or a person damages one: each is kept aside
    /// and replaced by an empty index; a sound one is opened as it is.
    #[test]
    fn damaged_index_is_kept_aside_and_rebuilt() {
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 3] = [
            ("sound", |_| {}),
            ("truncated", |b| b.truncate(b.len() / 2 + 100)),
            ("flipped", |b| {
                let mid = b.len() / 2;
                b[mid..mid + 64].iter_mut().for_each(|x| *x ^= 0x5a);
            }),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("f.db");
            {
                let index = Index::open(&file).unwrap();
                index
                    .batch(|ix| {
                        for i in 0..300 {
                            ix.put_local(&LocalRow {
                                entry: file_entry(&format!("file-{i:04}"), i + 1, &[i as u8; 9]),
                                inode: i,
                                dirty: false,
                            })?;
                        }
                        Ok(())
                    })
                    .unwrap();
            }
            let mut bytes = std::fs::read(&file).unwrap();
            damage(&mut bytes);
            std::fs::write(&file, &bytes).unwrap();
            let index = Index::open_or_rebuild(&file, "docs").unwrap();
            let kept: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("f.db.corrupt-"))
                .collect();
            let rows = index.all_local().unwrap().len();
            if what == "sound" {
                assert_eq!((rows, kept.len()), (300, 0), "{what}");
            } else {
                assert_eq!((rows, kept.len()), (0, 1), "{what}: kept {kept:?}");
                assert_eq!(std::fs::read(dir.path().join(&kept[0])).unwrap(), bytes);
                // Damaged again within the same second: the first kept file stays.
                drop(index);
                std::fs::write(&file, b"not a database at all").unwrap();
                Index::open_or_rebuild(&file, "docs").unwrap();
                let kept_now = std::fs::read_dir(dir.path())
                    .unwrap()
                    .filter(|e| {
                        let name = e.as_ref().unwrap().file_name();
                        name.to_string_lossy().starts_with("f.db.corrupt-")
                    })
                    .count();
                assert_eq!(kept_now, 2, "{what}");
                assert_eq!(std::fs::read(dir.path().join(&kept[0])).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn dirty_paths_lists_the_first_local_changes_in_path_order() {
        let (_d, index) = open();
        for (path, dirty) in [("b", true), ("a", false), ("c/d", true), ("c", true)] {
            let entry = file_entry(path, 3, b"x");
            index
                .put_local(&LocalRow {
                    entry,
                    inode: 1,
                    dirty,
                })
                .unwrap();
        }
        let paths = |limit| -> Vec<String> {
            let listed = index.dirty_paths(limit).unwrap();
            listed.iter().map(RelPath::to_string).collect()
        };
        assert_eq!(paths(10), ["b", "c", "c/d"]);
        assert_eq!(paths(2), ["b", "c"]);
        assert_eq!(index.totals().unwrap().up_files, 3);
    }
}
