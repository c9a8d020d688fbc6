//! The server's side: the folder's epoch and skipped sequence numbers, the highest
//! number ever given, the directory renames it recorded, and what a device's index stream
//! reads next.

use anyhow::Result;
use filesync_proto::wire::{Entry, EntryKind};
use filesync_proto::{DeviceId, Hash, RelPath};
use rusqlite::params;

use super::local::{LOCAL_COLS, row_to_local};
use super::{Index, Meta};

/// What a device's index stream sends next (see [`Index::stream_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead {
    pub entries: Vec<Entry>,
    /// Rename records, in order; a device applies them before `entries`, which are at
    /// their paths as of after them.
    pub renames: Vec<Entry>,
    pub as_of: u64,
}

/// A random epoch other than `old` and 0, that fits an `i64` column.
pub fn fresh_epoch(old: u64) -> u64 {
    std::iter::repeat_with(|| rand::random::<u64>() >> 1)
        .find(|&e| e != old && e != 0)
        .unwrap_or(old ^ 1)
}

/// The entry that carries a directory rename in a server's index stream.
pub fn rename_record(seq: u64, src: RelPath, dst: RelPath) -> Entry {
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

impl Index {
    /// A random id made when this index was created; a server folder's epoch.
    pub fn epoch(&self) -> Result<u64> {
        Ok(self.meta(Meta::Epoch)?.unwrap_or(0) as u64)
    }

    /// Server: gives the folder a new random epoch, different from the current one.
    pub fn new_epoch(&self) -> Result<u64> {
        let epoch = fresh_epoch(self.epoch()?);
        self.set_meta(Meta::Epoch, epoch as i64)?;
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
                        (SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = ?1))",
            [Meta::RemovedSeq.key()],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}
