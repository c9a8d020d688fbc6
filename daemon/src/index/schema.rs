//! The index's SQL: its tables, the triggers and partial indexes that keep the needed
//! entries, the live totals and the pending totals cheap to read, and bringing an older
//! layout up to date.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Index, Meta};

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

/// What status shows as pending, kept by triggers like [`LIVE_SCHEMA`] so that a status
/// costs the same whatever is pending: the local changes to send (`dirty`), the server
/// entries still needed ([`NEEDED`], spelled over `OLD`/`NEW` by [`pending_schema`]) and
/// the live conflict copies. Filled from the tables when first created.
const PENDING_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY CHECK (id = 0),
    up_files INTEGER NOT NULL, up_bytes INTEGER NOT NULL,
    down_files INTEGER NOT NULL, down_bytes INTEGER NOT NULL, conflicts INTEGER NOT NULL);
INSERT OR IGNORE INTO pending (id, up_files, up_bytes, down_files, down_bytes, conflicts)
    SELECT 0, COUNT(*), COALESCE(SUM(size), 0),
        (SELECT COUNT(*) FROM remote WHERE @NEEDED),
        (SELECT COALESCE(SUM(CASE WHEN deleted = 0 THEN size ELSE 0 END), 0)
            FROM remote WHERE @NEEDED),
        (SELECT COUNT(*) FROM local WHERE conflict IS NOT NULL AND deleted = 0)
    FROM local WHERE dirty = 1;
CREATE TRIGGER IF NOT EXISTS local_pending_insert AFTER INSERT ON local BEGIN
    UPDATE pending SET up_files = up_files + @UP(NEW), up_bytes = up_bytes + @UP(NEW) * NEW.size,
        conflicts = conflicts + @CONFLICT(NEW);
END;
CREATE TRIGGER IF NOT EXISTS local_pending_delete AFTER DELETE ON local BEGIN
    UPDATE pending SET up_files = up_files - @UP(OLD), up_bytes = up_bytes - @UP(OLD) * OLD.size,
        conflicts = conflicts - @CONFLICT(OLD);
END;
CREATE TRIGGER IF NOT EXISTS local_pending_update
    AFTER UPDATE OF dirty, size, conflict, deleted ON local BEGIN
    UPDATE pending SET
        up_files = up_files - @UP(OLD) + @UP(NEW),
        up_bytes = up_bytes - @UP(OLD) * OLD.size + @UP(NEW) * NEW.size,
        conflicts = conflicts - @CONFLICT(OLD) + @CONFLICT(NEW);
END;
CREATE TRIGGER IF NOT EXISTS remote_pending_insert AFTER INSERT ON remote BEGIN
    UPDATE pending SET down_files = down_files + @DOWN(NEW),
        down_bytes = down_bytes + @DOWN(NEW) * @LIVE_SIZE(NEW);
END;
CREATE TRIGGER IF NOT EXISTS remote_pending_delete AFTER DELETE ON remote BEGIN
    UPDATE pending SET down_files = down_files - @DOWN(OLD),
        down_bytes = down_bytes - @DOWN(OLD) * @LIVE_SIZE(OLD);
END;
CREATE TRIGGER IF NOT EXISTS remote_pending_update
    AFTER UPDATE OF ignored, have, deleted, seq, size ON remote BEGIN
    UPDATE pending SET
        down_files = down_files - @DOWN(OLD) + @DOWN(NEW),
        down_bytes = down_bytes - @DOWN(OLD) * @LIVE_SIZE(OLD) + @DOWN(NEW) * @LIVE_SIZE(NEW);
END;
";

/// [`PENDING_SCHEMA`] with its shorthands spelled out: `@UP(R)`, `@CONFLICT(R)` and
/// `@DOWN(R)` are 1 when row `R` counts as a change to send, a conflict copy or a needed
/// entry, else 0 (never NULL: `have` may be); `@LIVE_SIZE(R)` is the size of a live entry.
fn pending_schema() -> String {
    let mut sql = PENDING_SCHEMA.replace("@NEEDED", NEEDED);
    for row in ["OLD", "NEW"] {
        let needed = NEEDED
            .replace("ignored", &format!("{row}.ignored"))
            .replace("have", &format!("{row}.have"))
            .replace("deleted", &format!("{row}.deleted"))
            .replace("seq", &format!("{row}.seq"));
        for (short, long) in [
            ("UP", format!("{row}.dirty = 1")),
            (
                "CONFLICT",
                format!("{row}.conflict IS NOT NULL AND {row}.deleted = 0"),
            ),
            ("DOWN", needed),
        ] {
            let case = format!("(CASE WHEN {long} THEN 1 ELSE 0 END)");
            sql = sql.replace(&format!("@{short}({row})"), &case);
        }
        let size = format!("(CASE WHEN {row}.deleted = 0 THEN {row}.size ELSE 0 END)");
        sql = sql.replace(&format!("@LIVE_SIZE({row})"), &size);
    }
    sql
}

/// The condition of the `remote_needed` index: a server entry the local replica does not
/// match yet. Queries must spell it the same way for SQLite to use the index.
pub(super) const NEEDED: &str = "ignored = 0 AND ((have IS NULL AND deleted = 0) OR have != seq)";

/// Version of the layout above; an index of an older layout is brought up to date when
/// opened. 2: `local.renamed_from`, `renames`, and remote entries that carry
/// `renamed_from` (older ones are dropped and fetched again). 3: `remote.have`.
/// 4: `remote.as_of`.
pub(super) const FORMAT: i64 = 4;

impl Index {
    /// Creates what a new index lacks, brings an older one to [`FORMAT`], then makes
    /// this version's indexes and triggers; `file` names the index in errors.
    pub(super) fn set_up(&self, file: &Path) -> Result<()> {
        self.c()
            .execute_batch(SCHEMA)
            .with_context(|| format!("cannot initialise index {}", file.display()))?;
        self.migrate()
            .with_context(|| format!("cannot update index {} to this version", file.display()))?;
        self.c()
            // IMMEDIATE: other connections open the same index at the same time (the
            // sequencer and each session); a deferred transaction that read first could
            // not take the write lock after another one wrote, and would fail at once.
            .execute_batch(&format!(
                "BEGIN IMMEDIATE; {NEEDED_SCHEMA} {LIVE_SCHEMA} {} COMMIT;",
                pending_schema()
            ))
            .with_context(|| format!("cannot initialise index {}", file.display()))
    }

    /// Brings an index written by an older version to [`FORMAT`].
    fn migrate(&self) -> Result<()> {
        let format = self.meta(Meta::Format)?;
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
            self.c().execute_batch(&format!(
                "DELETE FROM remote; DELETE FROM meta WHERE key = '{}';",
                Meta::Since.key()
            ))?;
        }
        self.set_meta(Meta::Format, FORMAT)
    }
}
