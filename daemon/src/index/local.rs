//! Both roles: the `local` rows (what the replica's directory holds, with its stat
//! fingerprint), the `blocks` they are made of, and the totals status shows.

use anyhow::{Context, Result};
use filesync_proto::wire::{BlockInfo, Entry, EntryKind};
use filesync_proto::{DeviceId, Hash, RelPath};
use rusqlite::{OptionalExtension, Row, params};

use super::{Index, LocalRow, Meta, StatRow, subtree_bounds};
use crate::fs::stat::Stat;

/// Where a block of content can be read locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSource {
    pub path: RelPath,
    pub offset: u64,
    /// The file as the index recorded it when its blocks were hashed: while the disk
    /// still matches this, the file holds the blocks the index lists for it.
    pub recorded: Stat,
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

pub fn kind_code(k: EntryKind) -> i64 {
    match k {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
    }
}

pub fn kind_from(code: i64) -> EntryKind {
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

pub(super) const LOCAL_COLS: &str = "path, kind, deleted, size, mtime_ns, mode, hash, blocks, target, seq, origin, inode, dirty, conflict, renamed_from";

pub(super) fn row_to_local(row: &Row) -> rusqlite::Result<LocalRow> {
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

impl Index {
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
            "INSERT INTO meta (key, value) SELECT ?2, seq FROM local WHERE path = ?1 \
             ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
        )?
        .execute([path.as_str(), Meta::RemovedSeq.key()])?;
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

    /// Local files that hold a block with `hash`.
    pub fn block_sources(&self, hash: &Hash, limit: usize) -> Result<Vec<BlockSource>> {
        let conn = self.c();
        let mut stmt = conn.prepare_cached(
            "SELECT b.path, b.offset, l.size, l.mtime_ns, l.mode, l.inode FROM blocks b \
             JOIN local l ON l.path = b.path WHERE b.hash = ?1 LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![hash.0.as_slice(), limit as i64], |r| {
            let recorded = Stat {
                kind: EntryKind::File,
                size: r.get::<_, i64>(2)? as u64,
                mtime_ns: r.get(3)?,
                mode: r.get(4)?,
                inode: r.get::<_, i64>(5)? as u64,
            };
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, recorded))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (path, offset, recorded) = row?;
            if let Ok(path) = RelPath::new(path) {
                out.push(BlockSource {
                    path,
                    offset: offset as u64,
                    recorded,
                });
            }
        }
        Ok(out)
    }

    /// The folder's live and pending totals, kept by triggers: reading them costs the
    /// same whatever the size of the folder and of what is pending.
    pub fn totals(&self) -> Result<Totals> {
        let (files, bytes) =
            self.c()
                .query_row("SELECT files, bytes FROM live WHERE id = 0", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?;
        let (up_files, up_bytes, down_files, down_bytes, conflicts) = self.c().query_row(
            "SELECT up_files, up_bytes, down_files, down_bytes, conflicts FROM pending WHERE id = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
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
