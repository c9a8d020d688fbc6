//! The client's side: `remote`, the server's index as received; what the local replica
//! still needs from it; re-reading it whole; and the server's directory renames taken in.

use anyhow::{Context, Result};
use filesync_proto::RelPath;
use filesync_proto::wire::Entry;
use rusqlite::{OptionalExtension, params};

use super::schema::NEEDED;
use super::{Index, Meta, subtree_bounds};

/// `remote.as_of` of the entries a re-read of the server's index has not confirmed yet
/// (see [`Index::start_refresh`]).
const UNCONFIRMED: i64 = -1;

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

impl Index {
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
                 size = excluded.size, entry = excluded.entry, as_of = excluded.as_of,
                 ignored = CASE WHEN excluded.seq = remote.seq THEN remote.ignored ELSE 0 END
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

    /// Client: the server's entries at `paths`, set aside as ones this device cannot
    /// hold, are judged again.
    pub fn clear_remote_ignored_at(&self, paths: &[RelPath]) -> Result<()> {
        let conn = self.c();
        let mut stmt = conn.prepare_cached("UPDATE remote SET ignored = 0 WHERE path = ?1")?;
        for path in paths {
            stmt.execute([path.as_str()])?;
        }
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

    /// Marks every row as a local change based on nothing: used when the server's
    /// history no longer matches ours, so that every difference becomes a conflict and
    /// nothing is deleted. A re-read of the old history under way ends with it.
    pub fn reset_to_unsynced(&self) -> Result<()> {
        self.c().execute_batch(&format!(
            "UPDATE local SET dirty = 1, seq = 0; DELETE FROM local WHERE deleted = 1; DELETE FROM remote; DELETE FROM renames;
             DELETE FROM meta WHERE key IN ('{}', '{}');",
            Meta::Refresh.key(),
            Meta::Renamed.key()
        ))?;
        Ok(())
    }
}
