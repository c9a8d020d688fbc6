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

use std::path::Path;

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{BlockInfo, Entry, EntryKind};
use filesync_proto::{DeviceId, Hash, RelPath};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::store::Stat;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS local (
    path TEXT PRIMARY KEY, kind INTEGER NOT NULL, deleted INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL,
    hash BLOB NOT NULL, blocks BLOB NOT NULL, target TEXT NOT NULL,
    seq INTEGER NOT NULL, origin TEXT NOT NULL, inode INTEGER NOT NULL, dirty INTEGER NOT NULL,
    conflict BLOB, renamed_from TEXT);
CREATE INDEX IF NOT EXISTS local_seq ON local(seq);
DROP INDEX IF EXISTS local_dirty;
CREATE INDEX IF NOT EXISTS local_dirty_path ON local(path) WHERE dirty = 1;
CREATE INDEX IF NOT EXISTS local_renamed ON local(renamed_from) WHERE renamed_from IS NOT NULL;
CREATE INDEX IF NOT EXISTS local_conflict ON local(path) WHERE conflict IS NOT NULL AND deleted = 0;
CREATE INDEX IF NOT EXISTS local_dir_inode ON local(inode) WHERE kind = 1 AND deleted = 0;
CREATE TABLE IF NOT EXISTS blocks (hash BLOB NOT NULL, path TEXT NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS blocks_hash ON blocks(hash);
CREATE INDEX IF NOT EXISTS blocks_path ON blocks(path);
CREATE TABLE IF NOT EXISTS remote (path TEXT PRIMARY KEY, seq INTEGER NOT NULL, deleted INTEGER NOT NULL,
    size INTEGER NOT NULL, entry BLOB NOT NULL, ignored INTEGER NOT NULL DEFAULT 0, have INTEGER,
    as_of INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS renames (seq INTEGER PRIMARY KEY, src TEXT NOT NULL, dst TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gaps (after INTEGER PRIMARY KEY, start INTEGER NOT NULL);
";

/// What makes finding the entries a client still needs cost as much as there are of them,
/// not as the folder is big: `remote.have` mirrors the `local.seq` of the same path (NULL
/// when there is no local row), kept so by triggers on `local` and by `put_remote`, and a
/// partial index holds exactly the needed paths ([`NEEDED`]). Created after [`Index::migrate`],
/// which adds the column to older indexes.
const NEEDED_SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS remote_needed ON remote(path)
    WHERE ignored = 0 AND ((have IS NULL AND deleted = 0) OR have != seq);
CREATE TRIGGER IF NOT EXISTS local_have_insert AFTER INSERT ON local BEGIN
    UPDATE remote SET have = NEW.seq WHERE path = NEW.path;
END;
CREATE TRIGGER IF NOT EXISTS local_have_update AFTER UPDATE OF path, seq ON local BEGIN
    UPDATE remote SET have = NULL WHERE path = OLD.path;
    UPDATE remote SET have = NEW.seq WHERE path = NEW.path;
END;
CREATE TRIGGER IF NOT EXISTS local_have_delete AFTER DELETE ON local BEGIN
    UPDATE remote SET have = NULL WHERE path = OLD.path;
END;
";

/// The count and size of the live files of `local`, kept by triggers so that status
/// never counts a whole table (`recursive_triggers` makes the row an `INSERT OR REPLACE`
/// deletes fire its trigger). Filled from the table when first created.
const LIVE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS live (id INTEGER PRIMARY KEY CHECK (id = 0),
    files INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO live (id, files, bytes)
    SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM local WHERE deleted = 0 AND kind = 0;
CREATE TRIGGER IF NOT EXISTS local_live_insert AFTER INSERT ON local
    WHEN NEW.deleted = 0 AND NEW.kind = 0 BEGIN
    UPDATE live SET files = files + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS local_live_delete AFTER DELETE ON local
    WHEN OLD.deleted = 0 AND OLD.kind = 0 BEGIN
    UPDATE live SET files = files - 1, bytes = bytes - OLD.size;
END;
CREATE TRIGGER IF NOT EXISTS local_live_update AFTER UPDATE OF deleted, kind, size ON local BEGIN
    UPDATE live SET files = files - (OLD.deleted = 0 AND OLD.kind = 0) + (NEW.deleted = 0 AND NEW.kind = 0),
        bytes = bytes - CASE WHEN OLD.deleted = 0 AND OLD.kind = 0 THEN OLD.size ELSE 0 END
                      + CASE WHEN NEW.deleted = 0 AND NEW.kind = 0 THEN NEW.size ELSE 0 END;
END;
";

/// The condition of the `remote_needed` index: a server entry the local replica does not
/// match yet. Queries must spell it the same way for SQLite to use the index.
const NEEDED: &str = "ignored = 0 AND ((have IS NULL AND deleted = 0) OR have != seq)";

/// Version of the layout above; an index of an older layout is brought up to date when
/// opened. 2: `local.renamed_from`, `renames`, and remote entries that carry
/// `renamed_from` (older ones are dropped and fetched again). 3: `remote.have`.
/// 4: `remote.as_of`.
const FORMAT: i64 = 4;

/// `remote.as_of` of the entries a re-read of the server's index has not confirmed yet
/// (see [`Index::start_refresh`]).
const UNCONFIRMED: i64 = -1;

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

/// Where a block of content can be read locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSource {
    pub path: RelPath,
    pub offset: u64,
}

/// What a device's index stream sends next (see [`Index::stream_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead {
    pub entries: Vec<Entry>,
    /// Rename records, in order; a device applies them before `entries`, which are at
    /// their paths as of after them.
    pub renames: Vec<Entry>,
    pub as_of: u64,
}

/// Totals for status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub up_files: u64,
    pub up_bytes: u64,
    pub down_files: u64,
    pub down_bytes: u64,
    /// Live conflict copies.
    pub conflicts: u64,
}

/// One connection to a replica's index. The connection sits behind a mutex only so
/// that an `Index` can be held across awaits; each `Index` has a single user.
pub struct Index {
    conn: std::sync::Mutex<Connection>,
    /// Open transactions: the outermost is `BEGIN IMMEDIATE`, inner ones savepoints.
    depth: std::sync::atomic::AtomicU32,
}

fn kind_code(k: EntryKind) -> i64 {
    match k {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
    }
}

fn kind_from(code: i64) -> EntryKind {
    match code {
        1 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        _ => EntryKind::File,
    }
}

fn blocks_to_blob(blocks: &[BlockInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 36);
    for b in blocks {
        out.extend_from_slice(&b.hash.0);
        out.extend_from_slice(&b.size.to_be_bytes());
    }
    out
}

fn blocks_from_blob(blob: &[u8]) -> Vec<BlockInfo> {
    blob.chunks_exact(36)
        .map(|c| BlockInfo {
            hash: Hash::from_slice(&c[..32]).unwrap_or_default(),
            size: u32::from_be_bytes([c[32], c[33], c[34], c[35]]),
        })
        .collect()
}

const LOCAL_COLS: &str = "path, kind, deleted, size, mtime_ns, mode, hash, blocks, target, seq, origin, inode, dirty, conflict, renamed_from";

fn row_to_local(row: &Row) -> rusqlite::Result<LocalRow> {
    let path: String = row.get(0)?;
    let origin: String = row.get(10)?;
    let bad = |e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    };
    let hash: Vec<u8> = row.get(6)?;
    let conflict: Option<Vec<u8>> = row.get(13)?;
    let blocks: Vec<u8> = row.get(7)?;
    let renamed_from: Option<String> = row.get(14)?;
    Ok(LocalRow {
        entry: Entry {
            path: RelPath::new(path).map_err(|e| bad(e.to_string()))?,
            kind: kind_from(row.get(1)?),
            deleted: row.get(2)?,
            size: row.get::<_, i64>(3)? as u64,
            mtime_ns: row.get(4)?,
            mode: row.get(5)?,
            hash: Hash::from_slice(&hash).unwrap_or_default(),
            blocks: blocks_from_blob(&blocks),
            target: row.get(8)?,
            seq: row.get::<_, i64>(9)? as u64,
            origin: DeviceId::new(origin).map_err(|e| bad(e.to_string()))?,
            conflict: conflict.and_then(|b| postcard::from_bytes(&b).ok()),
            renamed_from: renamed_from.and_then(|p| RelPath::new(p).ok()),
        },
        inode: row.get::<_, i64>(11)? as u64,
        dirty: row.get(12)?,
    })
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
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
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

/// Where the server holds now what it held at `path` as of `seq`, and as of which
/// sequence: the renames taken in (`renames`, in order, as [`Index::renames`] gives
/// them) numbered above `seq` moved everything below their old paths. A client writing
/// an entry it learned of at `seq` after those renames arrived puts it there.
pub fn moved_by(path: &RelPath, seq: u64, renames: &[(u64, RelPath, RelPath)]) -> (RelPath, u64) {
    let mut at = (path.clone(), seq);
    for (rename, from, to) in renames.iter().filter(|(rename, ..)| *rename > seq) {
        if let Some(moved) = at.0.rebase(from, to) {
            at = (moved, *rename);
        }
    }
    at
}

/// Bounds of the paths strictly below `path`: every one sorts between `path/` and
/// `path0` ('0' follows '/').
fn subtree_bounds(path: &RelPath) -> (String, String) {
    (format!("{}/", path.as_str()), format!("{}0", path.as_str()))
}

/// The entry that carries a directory rename in a server's index stream.
fn rename_record(seq: u64, src: RelPath, dst: RelPath) -> Entry {
    Entry {
        path: dst,
        kind: EntryKind::Dir,
        deleted: false,
        size: 0,
        mtime_ns: 0,
        mode: 0,
        hash: Hash::ZERO,
        blocks: Vec::new(),
        target: String::new(),
        seq,
        origin: DeviceId::new("server").expect("valid id"),
        conflict: None,
        renamed_from: Some(src),
    }
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
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot initialise index {}", file.display()))?;
        let index = Index {
            conn: std::sync::Mutex::new(conn),
            depth: std::sync::atomic::AtomicU32::new(0),
        };
        index
            .migrate()
            .with_context(|| format!("cannot update index {} to this version", file.display()))?;
        index
            .c()
            // IMMEDIATE: other connections open the same index at the same time (the
            // sequencer and each session); a deferred transaction that read first could
            // not take the write lock after another one wrote, and would fail at once.
            .execute_batch(&format!(
                "BEGIN IMMEDIATE; {NEEDED_SCHEMA} {LIVE_SCHEMA} COMMIT;"
            ))
            .with_context(|| format!("cannot initialise index {}", file.display()))?;
        if index.meta("epoch")?.is_none() {
            index.set_meta("epoch", (rand::random::<u64>() >> 1) as i64)?;
        }
        Ok(index)
    }

    /// Brings an index written by an older version to [`FORMAT`].
    fn migrate(&self) -> Result<()> {
        let format = self.meta("format")?;
        if format.is_some_and(|f| f >= FORMAT) {
            return Ok(());
        }
        // Columns later layouts added: (table, column, how to add and fill it).
        let added = [
            (
                "local",
                "renamed_from",
                "ALTER TABLE local ADD COLUMN renamed_from TEXT",
            ),
            (
                "remote",
                "have",
                "ALTER TABLE remote ADD COLUMN have INTEGER;
                 UPDATE remote SET have = (SELECT seq FROM local WHERE local.path = remote.path);",
            ),
            // What an older index did: a rename moves every entry older than itself.
            (
                "remote",
                "as_of",
                "ALTER TABLE remote ADD COLUMN as_of INTEGER NOT NULL DEFAULT 0;
                 UPDATE remote SET as_of = seq;",
            ),
        ];
        for (table, column, add) in added {
            let has: bool = self.c().query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                [table, column],
                |r| r.get(0),
            )?;
            if !has {
                self.c().execute_batch(add)?;
            }
        }
        if format.is_none_or(|f| f < 2) {
            // Remote entries of an older layout do not decode: they are fetched again.
            self.c()
                .execute_batch("DELETE FROM remote; DELETE FROM meta WHERE key = 'since';")?;
        }
        self.set_meta("format", FORMAT)
    }

    fn c(&self) -> std::sync::MutexGuard<'_, Connection> {
        // No code path panics while holding the guard in a way that breaks the connection.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn meta(&self, key: &str) -> Result<Option<i64>> {
        Ok(self
            .c()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: i64) -> Result<()> {
        self.c().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.c().execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// A random id made when this index was created; a server folder's epoch.
    pub fn epoch(&self) -> Result<u64> {
        Ok(self.meta("epoch")?.unwrap_or(0) as u64)
    }

    /// Server: gives the folder a new random epoch, different from the current one.
    pub fn new_epoch(&self) -> Result<u64> {
        let old = self.epoch()?;
        let epoch = std::iter::repeat_with(|| rand::random::<u64>() >> 1)
            .find(|&e| e != old && e != 0)
            .unwrap_or(old ^ 1);
        self.set_meta("epoch", epoch as i64)?;
        Ok(epoch)
    }

    /// Server: records that the sequence numbers strictly between `after` and `start`
    /// were skipped, never given to any version of this history.
    pub fn add_gap(&self, after: u64, start: u64) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO gaps (after, start) VALUES (?1, ?2)
                 ON CONFLICT(after) DO UPDATE SET start = MAX(start, excluded.start)",
            )?
            .execute(params![after as i64, start as i64])?;
        Ok(())
    }

    /// Server: every skipped range (see [`Index::add_gap`]), as `(after, start)`.
    pub fn gaps(&self) -> Result<Vec<(u64, u64)>> {
        let conn = self.c();
        let mut stmt = conn.prepare_cached("SELECT after, start FROM gaps ORDER BY after")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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

    pub fn local(&self, path: &RelPath) -> Result<Option<LocalRow>> {
        let sql = format!("SELECT {LOCAL_COLS} FROM local WHERE path = ?1");
        Ok(self
            .c()
            .prepare_cached(&sql)?
            .query_row([path.as_str()], row_to_local)
            .optional()?)
    }

    /// The live directory recorded with `inode`: where a directory found under a new path
    /// may have been moved from.
    pub fn live_dir_with_inode(&self, inode: u64) -> Result<Option<RelPath>> {
        let path: Option<String> = self
            .c()
            .prepare_cached(
                "SELECT path FROM local WHERE inode = ?1 AND kind = 1 AND deleted = 0 LIMIT 1",
            )?
            .query_row([inode as i64], |r| r.get(0))
            .optional()?;
        Ok(path.and_then(|p| RelPath::new(p).ok()))
    }

    /// Every local row.
    #[cfg(test)]
    pub fn all_local(&self) -> Result<std::collections::HashMap<RelPath, LocalRow>> {
        let sql = format!("SELECT {LOCAL_COLS} FROM local");
        let conn = self.c();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], row_to_local)?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            let row = row?;
            out.insert(row.entry.path.clone(), row);
        }
        Ok(out)
    }

    /// What a scan compares the disk with: the stat fingerprint of every local row (or of
    /// the rows at `under` and below), handed to `f` one by one. No content, blocks or
    /// history is read, so that a scan of a big folder holds a few dozen bytes per path;
    /// it reads the whole row with [`Index::local`] only for a path that changed.
    pub fn each_local_stat(
        &self,
        under: Option<&RelPath>,
        mut f: impl FnMut(RelPath, StatRow),
    ) -> Result<()> {
        const COLS: &str = "path, kind, deleted, size, mtime_ns, mode, inode, dirty, seq > 0 OR renamed_from IS NOT NULL";
        let conn = self.c();
        let mut take = |row: &Row| -> Result<()> {
            let path: String = row.get(0)?;
            let path = RelPath::new(path).context("a path in the index is not valid")?;
            let stat = Stat {
                kind: kind_from(row.get(1)?),
                size: row.get::<_, i64>(3)? as u64,
                mtime_ns: row.get(4)?,
                mode: row.get(5)?,
                inode: row.get::<_, i64>(6)? as u64,
            };
            f(
                path,
                StatRow {
                    stat,
                    deleted: row.get(2)?,
                    dirty: row.get(7)?,
                    shared: row.get(8)?,
                },
            );
            Ok(())
        };
        match under {
            None => {
                let mut stmt = conn.prepare_cached(&format!("SELECT {COLS} FROM local"))?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    take(row)?;
                }
            }
            Some(path) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLS} FROM local WHERE path = ?1 OR (path > ?2 AND path < ?3)"
                ))?;
                let (lo, hi) = subtree_bounds(path);
                let mut rows = stmt.query(params![path.as_str(), lo, hi])?;
                while let Some(row) = rows.next()? {
                    take(row)?;
                }
            }
        }
        Ok(())
    }

    /// The rows at `path` and below it.
    pub fn local_under(&self, path: &RelPath) -> Result<Vec<LocalRow>> {
        let sql =
            format!("SELECT {LOCAL_COLS} FROM local WHERE path = ?1 OR (path > ?2 AND path < ?3)");
        let conn = self.c();
        let mut stmt = conn.prepare_cached(&sql)?;
        let (lo, hi) = subtree_bounds(path);
        let rows = stmt.query_map(params![path.as_str(), lo, hi], row_to_local)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Moves every local row at `src` and below to the same place below `dst`, with its
    /// blocks and any rename still waiting to be pushed. Rows at `dst` and below are
    /// dropped first: callers rename only onto a path with nothing live there.
    pub fn move_local(&self, src: &RelPath, dst: &RelPath) -> Result<()> {
        anyhow::ensure!(
            !src.starts_with(dst) && !dst.starts_with(src),
            "cannot move {src} to {dst}: one contains the other"
        );
        let (lo, hi) = subtree_bounds(src);
        let (dlo, dhi) = subtree_bounds(dst);
        let conn = self.c();
        for table in ["local", "blocks"] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE path = ?1 OR (path > ?2 AND path < ?3)"),
                params![dst.as_str(), dlo, dhi],
            )?;
            conn.execute(
                &format!(
                    "UPDATE {table} SET path = ?1 || substr(path, length(?2) + 1)
                     WHERE path = ?2 OR (path > ?3 AND path < ?4)"
                ),
                params![dst.as_str(), src.as_str(), lo, hi],
            )?;
        }
        conn.execute(
            "UPDATE local SET renamed_from = ?1 || substr(renamed_from, length(?2) + 1)
             WHERE renamed_from = ?2 OR (renamed_from > ?3 AND renamed_from < ?4)",
            params![dst.as_str(), src.as_str(), lo, hi],
        )?;
        Ok(())
    }

    /// Whether the index has any row, tombstones included, at `path` or below it.
    pub fn has_local_under(&self, path: &RelPath) -> Result<bool> {
        let (lo, hi) = subtree_bounds(path);
        Ok(self.c().query_row(
            "SELECT EXISTS (SELECT 1 FROM local WHERE path = ?1 OR (path > ?2 AND path < ?3))",
            params![path.as_str(), lo, hi],
            |r| r.get(0),
        )?)
    }

    /// Client: directory renames of our own that the server has not confirmed yet, as
    /// (old path, new path).
    pub fn pending_renames(&self) -> Result<Vec<(RelPath, RelPath)>> {
        let conn = self.c();
        let mut stmt = conn.prepare_cached(
            "SELECT renamed_from, path FROM local WHERE renamed_from IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (src, dst) = row?;
            if let (Ok(src), Ok(dst)) = (RelPath::new(src), RelPath::new(dst)) {
                out.push((src, dst));
            }
        }
        Ok(out)
    }

    /// Records a directory rename at `seq`: on a server, in the folder's history that
    /// devices receive; on a client, as one still to apply to the local disk.
    pub fn add_rename(&self, seq: u64, src: &RelPath, dst: &RelPath) -> Result<()> {
        self.c()
            .prepare_cached("INSERT OR REPLACE INTO renames (seq, src, dst) VALUES (?1, ?2, ?3)")?
            .execute(params![seq as i64, src.as_str(), dst.as_str()])?;
        Ok(())
    }

    /// Renames recorded with a sequence number in `(after, up_to]`, in order, as
    /// (seq, old path, new path).
    pub fn renames(&self, after: u64, up_to: u64) -> Result<Vec<(u64, RelPath, RelPath)>> {
        let conn = self.c();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, src, dst FROM renames WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(
            params![after as i64, up_to.min(i64::MAX as u64) as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, src, dst) = row?;
            if let (Ok(src), Ok(dst)) = (RelPath::new(src), RelPath::new(dst)) {
                out.push((seq as u64, src, dst));
            }
        }
        Ok(out)
    }

    pub fn remove_rename(&self, seq: u64) -> Result<()> {
        self.c()
            .prepare_cached("DELETE FROM renames WHERE seq = ?1")?
            .execute([seq as i64])?;
        Ok(())
    }

    /// Client: takes in a rename record from the server's index stream. The server's
    /// entries at `src` and below move below `dst`, as of the rename, unless read after
    /// it (a push's answer: already where the server has it); the rename is queued for
    /// the folder task, which applies it to the disk or confirms it as its own.
    ///
    /// Entries keep their own sequence numbers through a rename, so a number alone cannot
    /// tell an entry that was at `src` when the server renamed it from one a later rename
    /// moved into `src`. The stream sends a rename record before any entry read after it
    /// (see [`crate::server::stream`]), so what this moves was there.
    pub fn take_remote_rename(&self, seq: u64, src: &RelPath, dst: &RelPath) -> Result<()> {
        let (lo, hi) = subtree_bounds(src);
        let moving: Vec<(Vec<u8>, i64)> = {
            let conn = self.c();
            let mut stmt = conn.prepare_cached(
                "SELECT entry, as_of FROM remote WHERE (path = ?1 OR (path > ?2 AND path < ?3)) AND as_of < ?4",
            )?;
            let rows = stmt.query_map(params![src.as_str(), lo, hi, seq as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            let moving = rows.collect::<rusqlite::Result<_>>()?;
            conn.prepare_cached(
                "DELETE FROM remote WHERE (path = ?1 OR (path > ?2 AND path < ?3)) AND as_of < ?4",
            )?
            .execute(params![src.as_str(), lo, hi, seq as i64])?;
            moving
        };
        for (blob, as_of) in moving {
            let mut e: Entry =
                postcard::from_bytes(&blob).context("corrupt remote entry in index")?;
            if let Some(moved) = e.path.rebase(src, dst) {
                e.path = moved;
                // An entry a re-read has not confirmed stays unconfirmed wherever it goes.
                let as_of = if as_of == UNCONFIRMED {
                    as_of
                } else {
                    seq as i64
                };
                self.put_remote_as_of(&e, as_of)?;
            }
        }
        self.add_rename(seq, src, dst)
    }

    /// Records `row`, replacing what the index had at its path, blocks included.
    pub fn put_local(&self, row: &LocalRow) -> Result<()> {
        let e = &row.entry;
        let conn = self.c();
        let sql = format!(
            "INSERT OR REPLACE INTO local ({LOCAL_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)"
        );
        conn.prepare_cached(&sql)?.execute(params![
            e.path.as_str(),
            kind_code(e.kind),
            e.deleted,
            e.size as i64,
            e.mtime_ns,
            e.mode,
            e.hash.0.as_slice(),
            blocks_to_blob(&e.blocks),
            e.target,
            e.seq as i64,
            e.origin.as_str(),
            row.inode as i64,
            row.dirty,
            e.conflict
                .as_ref()
                .and_then(|c| postcard::to_stdvec(c).ok()),
            e.renamed_from.as_ref().map(RelPath::as_str),
        ])?;
        conn.prepare_cached("DELETE FROM blocks WHERE path = ?1")?
            .execute([e.path.as_str()])?;
        if e.kind == EntryKind::File && !e.deleted {
            let mut insert = conn.prepare_cached(
                "INSERT INTO blocks (hash, path, offset, size) VALUES (?1,?2,?3,?4)",
            )?;
            let mut offset = 0u64;
            for b in &e.blocks {
                insert.execute(params![
                    b.hash.0.as_slice(),
                    e.path.as_str(),
                    offset as i64,
                    b.size
                ])?;
                offset += u64::from(b.size);
            }
        }
        Ok(())
    }

    /// Forgets `path` (it became ignored). Its sequence number is kept in
    /// `meta.removed_seq` when it is the highest removed so far, so that
    /// [`Index::max_seq`] never goes back: a server that restarted after forgetting its
    /// latest row would otherwise hand that number out again, and a device that had
    /// received it would never ask for the new change.
    pub fn remove_local(&self, path: &RelPath) -> Result<()> {
        let conn = self.c();
        conn.prepare_cached(
            "INSERT INTO meta (key, value) SELECT 'removed_seq', seq FROM local WHERE path = ?1 \
             ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
        )?
        .execute([path.as_str()])?;
        conn.prepare_cached("DELETE FROM local WHERE path = ?1")?
            .execute([path.as_str()])?;
        conn.prepare_cached("DELETE FROM blocks WHERE path = ?1")?
            .execute([path.as_str()])?;
        Ok(())
    }

    /// Local changes not yet accepted by the server, by path (parents before children);
    /// without `deletes`, tombstones are left
    /// out (the mass-delete guard holds them back, and they must not fill the batch).
    pub fn dirty(&self, limit: usize, deletes: bool) -> Result<Vec<LocalRow>> {
        let only_live = if deletes { "" } else { "AND deleted = 0" };
        let sql = format!(
            "SELECT {LOCAL_COLS} FROM local WHERE dirty = 1 {only_live} ORDER BY path LIMIT ?1"
        );
        let conn = self.c();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([limit as i64], row_to_local)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The paths of the first `limit` local changes, in path order: what a receive-only
    /// folder lists in its status. Reads only those rows (`local_dirty_path`).
    pub fn dirty_paths(&self, limit: usize) -> Result<Vec<RelPath>> {
        let conn = self.c();
        let mut stmt =
            conn.prepare_cached("SELECT path FROM local WHERE dirty = 1 ORDER BY path LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for path in rows {
            out.push(RelPath::new(path?).context("corrupt local path in index")?);
        }
        Ok(out)
    }

    /// Forgets every local row, as on a device that never synced the folder: the next
    /// scan finds what is on disk as new, and what is missing is needed from the server
    /// instead of deleted there.
    pub fn forget_local(&self) -> Result<()> {
        self.c()
            .execute_batch("DELETE FROM local; DELETE FROM blocks;")?;
        Ok(())
    }

    /// Whether anything live was ever recorded here: a folder that synced before.
    pub fn has_local(&self) -> Result<bool> {
        Ok(self.c().query_row(
            "SELECT EXISTS (SELECT 1 FROM local WHERE deleted = 0)",
            [],
            |r| r.get(0),
        )?)
    }

    /// The paths of local file deletes the server has not taken yet, not counting those
    /// whose content lives on at a new path also waiting to be sent (files moved, not
    /// deleted), nor those of paths the server holds no file at: those delete nothing
    /// on any device, so they are no mass delete (the guard's only concern).
    pub fn pending_file_deletes(&self) -> Result<Vec<RelPath>> {
        let conn = self.c();
        let mut stmt = conn.prepare_cached(
            "SELECT path FROM local WHERE dirty = 1 AND deleted = 1 AND kind = 0
               AND hash NOT IN (SELECT hash FROM local WHERE dirty = 1 AND deleted = 0 AND kind = 0)
               AND EXISTS (SELECT 1 FROM remote r WHERE r.path = local.path AND r.deleted = 0)",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for path in rows {
            if let Ok(path) = RelPath::new(path?) {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// Live conflict copies.
    pub fn conflicts(&self) -> Result<Vec<LocalRow>> {
        let sql = format!(
            "SELECT {LOCAL_COLS} FROM local WHERE conflict IS NOT NULL AND deleted = 0 ORDER BY path"
        );
        let conn = self.c();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], row_to_local)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks every row as a local change based on nothing: used when the server's
    /// history no longer matches ours, so that every difference becomes a conflict and
    /// nothing is deleted. A re-read of the old history under way ends with it.
    pub fn reset_to_unsynced(&self) -> Result<()> {
        self.c().execute_batch("UPDATE local SET dirty = 1, seq = 0; DELETE FROM local WHERE deleted = 1; DELETE FROM remote; DELETE FROM renames;
             DELETE FROM meta WHERE key IN ('refresh', 'renamed');")?;
        Ok(())
    }

    /// Local files that hold a block with `hash`.
    pub fn block_sources(&self, hash: &Hash, limit: usize) -> Result<Vec<BlockSource>> {
        let conn = self.c();
        let mut stmt =
            conn.prepare_cached("SELECT path, offset FROM blocks WHERE hash = ?1 LIMIT ?2")?;
        let rows = stmt.query_map(params![hash.0.as_slice(), limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (path, offset) = row?;
            if let Ok(path) = RelPath::new(path) {
                out.push(BlockSource {
                    path,
                    offset: offset as u64,
                });
            }
        }
        Ok(out)
    }

    /// Server: what a device's index stream sends next, read in one snapshot: up to
    /// `limit` entries with a sequence number above `since`, in order, at their current
    /// paths; the folder's highest sequence number then (`as_of`); and the directory
    /// renames above `renamed` up to it, as rename records (see [`Entry::renamed_from`]).
    pub fn stream_read(&self, since: u64, renamed: u64, limit: usize) -> Result<StreamRead> {
        self.c().execute_batch("BEGIN DEFERRED")?;
        let read = (|| {
            let entries = self.entries_since(since, limit)?;
            let as_of = self.max_seq()?;
            let renames = (self.renames(renamed, as_of)?.into_iter())
                .map(|(seq, src, dst)| rename_record(seq, src, dst))
                .collect();
            Ok(StreamRead {
                entries,
                renames,
                as_of,
            })
        })();
        let done = self.c().execute_batch("COMMIT");
        if done.is_err() {
            let _ = self.c().execute_batch("ROLLBACK");
        }
        done?;
        read
    }

    /// Server: up to `limit` entries with a sequence number above `seq`, in order.
    pub fn entries_since(&self, seq: u64, limit: usize) -> Result<Vec<Entry>> {
        let sql = format!("SELECT {LOCAL_COLS} FROM local WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let conn = self.c();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![seq as i64, limit as i64], row_to_local)?;
        Ok(rows
            .map(|r| r.map(|r| r.entry))
            .collect::<rusqlite::Result<_>>()?)
    }

    /// The highest sequence number this index has ever held: in `local`, in `renames`,
    /// or on a row since forgotten ([`Index::remove_local`]). A server folder's next
    /// sequence number is one more.
    pub fn max_seq(&self) -> Result<u64> {
        Ok(self.c().query_row(
            "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM local),
                        (SELECT COALESCE(MAX(seq), 0) FROM renames),
                        (SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'removed_seq'))",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub fn remote(&self, path: &RelPath) -> Result<Option<Entry>> {
        let blob: Option<Vec<u8>> = self
            .c()
            .prepare_cached("SELECT entry FROM remote WHERE path = ?1")?
            .query_row([path.as_str()], |r| r.get(0))
            .optional()?;
        blob.map(|b| postcard::from_bytes(&b).context("corrupt remote entry in index"))
            .transpose()
    }

    /// Records the server's entry at its path as of the server's sequence `as_of` (the
    /// folder's highest number when it was read), unless we hold one read later. Not the
    /// entry's own number: a directory rename carries entries to new paths with their old
    /// numbers, so a lower number can be the newer state of a path.
    pub fn put_remote(&self, e: &Entry, as_of: u64) -> Result<()> {
        self.put_remote_as_of(e, as_of.min(i64::MAX as u64) as i64)
    }

    fn put_remote_as_of(&self, e: &Entry, as_of: i64) -> Result<()> {
        let blob = postcard::to_stdvec(e)?;
        self.c()
            .prepare_cached(
                "INSERT INTO remote (path, seq, deleted, size, entry, have, as_of)
                 VALUES (?1,?2,?3,?4,?5, (SELECT seq FROM local WHERE path = ?1), ?6)
                 ON CONFLICT(path) DO UPDATE SET seq = excluded.seq, deleted = excluded.deleted,
                 size = excluded.size, entry = excluded.entry, as_of = excluded.as_of
                 WHERE excluded.as_of >= remote.as_of",
            )?
            .execute(params![
                e.path.as_str(),
                e.seq as i64,
                e.deleted,
                e.size as i64,
                blob,
                as_of
            ])?;
        Ok(())
    }

    /// Client: a re-read of the server's whole index begins. Every entry we hold is
    /// unconfirmed until the server sends its path again ([`Index::end_refresh`]).
    pub fn start_refresh(&self) -> Result<()> {
        self.c()
            .prepare_cached("UPDATE remote SET as_of = ?1")?
            .execute([UNCONFIRMED])?;
        Ok(())
    }

    /// Client: the re-read is through, as of the server's sequence `as_of`: what it did
    /// not confirm, the server no longer has. Where a live local row derives from such an
    /// entry, it becomes the server's tombstone (numbered `as_of`, so the planner applies
    /// it, and a local change meets it as an edit beats a delete); any other is dropped.
    /// A local version newer than the re-read is left to the index stream. Returns how
    /// many entries were dropped or turned into tombstones.
    pub fn end_refresh(&self, as_of: u64) -> Result<usize> {
        let stale: Vec<Vec<u8>> = {
            let conn = self.c();
            let mut stmt = conn.prepare_cached("SELECT entry FROM remote WHERE as_of = ?1")?;
            let rows = stmt.query_map([UNCONFIRMED], |r| r.get(0))?;
            let stale = rows.collect::<rusqlite::Result<_>>()?;
            conn.prepare_cached("DELETE FROM remote WHERE as_of = ?1")?
                .execute([UNCONFIRMED])?;
            stale
        };
        for blob in &stale {
            let mut e: Entry =
                postcard::from_bytes(blob).context("corrupt remote entry in index")?;
            let local = self.local(&e.path)?;
            if local.is_some_and(|l| !l.entry.deleted && l.entry.seq < as_of) {
                e.deleted = true;
                e.seq = as_of;
                e.renamed_from = None;
                self.put_remote(&e, as_of)?;
            }
        }
        Ok(stale.len())
    }

    /// Client: the server's entry at `path` is ignored here; it is not needed.
    pub fn set_remote_ignored(&self, path: &RelPath) -> Result<()> {
        self.c()
            .prepare_cached("UPDATE remote SET ignored = 1 WHERE path = ?1")?
            .execute([path.as_str()])?;
        Ok(())
    }

    /// Client: the ignore rules changed; every server entry is judged again.
    pub fn clear_remote_ignored(&self) -> Result<()> {
        self.c()
            .execute("UPDATE remote SET ignored = 0 WHERE ignored = 1", [])?;
        Ok(())
    }

    /// Client: server entries the local replica does not match yet, parents first.
    pub fn needed(&self, limit: usize) -> Result<Vec<Entry>> {
        let conn = self.c();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT entry FROM remote WHERE {NEEDED} ORDER BY path LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for blob in rows {
            out.push(postcard::from_bytes(&blob?).context("corrupt remote entry in index")?);
        }
        Ok(out)
    }

    pub fn totals(&self) -> Result<Totals> {
        let (files, bytes) =
            self.c()
                .query_row("SELECT files, bytes FROM live WHERE id = 0", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?;
        let (up_files, up_bytes) = self.c().query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM local WHERE dirty = 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )?;
        let (down_files, down_bytes) = self.c().query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN deleted = 0 THEN size ELSE 0 END), 0)
                 FROM remote WHERE {NEEDED}"
            ),
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )?;
        let conflicts: i64 = self.c().query_row(
            "SELECT COUNT(*) FROM local WHERE conflict IS NOT NULL AND deleted = 0",
            [],
            |r| r.get(0),
        )?;
        let n = |v: i64| v.max(0) as u64;
        Ok(Totals {
            files: n(files),
            bytes: n(bytes),
            up_files: n(up_files),
            up_bytes: n(up_bytes),
            down_files: n(down_files),
            down_bytes: n(down_bytes),
            conflicts: n(conflicts),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
                offset: 0
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
                     ALTER TABLE remote DROP COLUMN have;",
                )
                .unwrap();
            index.set_meta("format", 2).unwrap();
        }
        let index = Index::open(&file).unwrap();
        assert_eq!(index.meta("format").unwrap(), Some(FORMAT));
        let needed: Vec<String> = index
            .needed(10)
            .unwrap()
            .into_iter()
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(needed, ["b"]);
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
