//! Committing to a cluster folder: the same decisions as the embedded sequencer
//! ([`crate::server::sequencer::commit`]: the base check, a directory delete that would
//! lose unseen files, directory renames, versions), made in one PostgreSQL transaction
//! per group of changes that holds the folder row's lock. Numbers are taken from the
//! row while it is locked, so every node's commits to a folder get one sequence with no
//! holes, in commit order. The content was stored in the bucket before ([`super::upload`]),
//! so the transaction only adds references; a node that dies before it commits leaves
//! unreferenced blocks, which garbage collection removes after its grace.
//!
//! References: an entry or a kept version refers to its content (`contents.refs`); a
//! content refers to each of its distinct blocks (`blocks.refs`). A block's count
//! reaching 0 stamps its `touched_at`, from which the grace is counted.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use deadpool_postgres::Transaction;
use filesync_proto::wire::{Change, Entry, EntryKind, PushOutcome, VersionInfo};
use filesync_proto::{DeviceId, Hash, RelPath};

use super::folder::ClusterFolder;
use super::rows::{self, Cached, EntryRow};
use crate::events::unix_secs;
use crate::index::{fresh_epoch, subtree_bounds};
use crate::server::decide::{self, refusal, stale_base};
use crate::server::history;

use crate::server::cluster::schema::LIVE;

/// A pushed file's content when it is small enough to be kept with its row: its bytes
/// (`None` when it is stored in the bucket).
pub type Small = Option<Vec<u8>>;

/// The folder row as a commit holds it locked.
struct Locked {
    next_seq: i64,
    last_seq: i64,
    epoch: i64,
    files: i64,
    bytes: i64,
}

/// A group's transaction and what it changed.
struct Group<'a, 'b> {
    folder: &'a ClusterFolder,
    tx: &'a Transaction<'b>,
    row: Locked,
    now: i64,
}

impl ClusterFolder {
    /// Commits pushed changes in order in one transaction; each change's content, if it
    /// has new content (`Some`), is in the bucket already, or is small and given here to
    /// be kept with its row (`Some(Some(bytes))`). A failed transaction fails
    /// every change of the group (the devices send them again); nothing is half
    /// recorded.
    pub async fn commit(
        &self,
        changes: Vec<(Change, Option<Small>)>,
        device: &DeviceId,
    ) -> Vec<PushOutcome> {
        let n = changes.len();
        let group = self.in_group(async |group| {
            let mut outcomes = Vec::with_capacity(n);
            for (change, content) in changes {
                outcomes.push(group.apply(change, content, device).await?);
            }
            Ok(outcomes)
        });
        match group.await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::warn!(folder = %self.label(), changes = n, "commit failed: {e:#}");
                let reason = format!("{}; the change is sent again", refusal(&e));
                vec![PushOutcome::Failed { reason }; n]
            }
        }
    }

    /// Runs `work` in one transaction holding the folder row's lock (and this node's
    /// commit lock), then writes the row back, commits, and moves the folder on.
    async fn in_group<T>(
        &self,
        work: impl AsyncFnOnce(&mut Group<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        let _one = self.commits.lock().await;
        let mut db = self.node.db().await?;
        let tx = db
            .transaction()
            .await
            .context("cannot start a commit in the cluster's database")?;
        let mut group = Group::lock(self, &tx).await?;
        let out = work(&mut group).await?;
        let row = group.finish().await?;
        tx.commit()
            .await
            .context("cannot commit to the cluster's database")?;
        self.advance(row.last_seq as u64, row.files, row.bytes);
        Ok(out)
    }

    /// The versions kept of `path`, newest first.
    pub async fn versions(&self, path: &RelPath) -> Result<Vec<VersionInfo>> {
        let db = self.node.db().await?;
        let rows = db
            .query_c(
                "SELECT seq, size, mtime_ns, kept_at FROM versions WHERE folder_id = $1 \
                 AND path = $2 ORDER BY kept_at DESC, seq DESC, id DESC",
                &[&self.id, &path.as_str()],
            )
            .await
            .with_context(|| format!("cannot read the versions of {path}"))?;
        Ok(rows
            .iter()
            .map(|r| VersionInfo {
                version: r.get::<_, i64>(0) as u64,
                size: r.get::<_, i64>(1) as u64,
                mtime_ns: r.get(2),
                kept_at: r.get(3),
            })
            .collect())
    }

    /// Brings a kept version back as a new change by `device` (the newest without
    /// `version`): its number.
    pub async fn restore(
        &self,
        path: &RelPath,
        version: Option<u64>,
        device: DeviceId,
    ) -> Result<u64> {
        let seq = (self.in_group(async |group| group.restore(path, version, device).await)).await?;
        tracing::info!(folder = %self.label(), path = %path, seq, "restored a kept version");
        Ok(seq)
    }

    /// A device of this folder's epoch has seen number `seen`, past its end: the
    /// folder's history went back in time (the database was restored from a backup).
    /// The folder gets a new epoch and numbering moves past what the device saw, as in
    /// [`crate::server::sequencer`].
    pub async fn rolled_back(&self, device: &DeviceId, seen: u64) -> Result<()> {
        let moved = self.in_group(async |group| {
            let next = history::next_after_rollback(group.row.next_seq as u64, seen) as i64;
            if next > group.row.next_seq {
                group.skip_to(next).await?;
            }
            let old = group.row.epoch;
            group.row.epoch = fresh_epoch(old as u64) as i64;
            Ok((old, group.row.epoch, group.row.last_seq))
        });
        let (old, epoch, last) = moved.await?;
        tracing::warn!(
            folder = %self.label(), device = %device, seen, last, old_epoch = old, epoch,
            "the folder's history went back in time (the database restored from a backup?): \
             the folder gets a new epoch, so every device merges with it without deleting anything"
        );
        self.reload_lineage().await
    }
}

impl Group<'_, '_> {
    /// Numbering goes on from `next`: the numbers between the last and it are never
    /// given (a gap devices are told of), and stay so after a restart (`next_floor`).
    async fn skip_to(&mut self, next: i64) -> Result<()> {
        self.tx
            .execute_c(
                "INSERT INTO gaps (folder_id, after, start) VALUES ($1, $2, $3) \
                 ON CONFLICT (folder_id, after) DO UPDATE SET start = GREATEST(gaps.start, $3)",
                &[&self.folder.id, &self.row.last_seq, &next],
            )
            .await?;
        self.tx
            .execute_c(
                "UPDATE folders SET next_floor = $2 WHERE id = $1",
                &[&self.folder.id, &next],
            )
            .await?;
        self.row.next_seq = next;
        Ok(())
    }
}

impl<'a, 'b> Group<'a, 'b> {
    async fn lock(folder: &'a ClusterFolder, tx: &'a Transaction<'b>) -> Result<Group<'a, 'b>> {
        let r = tx
            .query_one_c(
                "SELECT next_seq, last_seq, epoch, files, bytes FROM folders WHERE id = $1 \
                 FOR UPDATE",
                &[&folder.id],
            )
            .await
            .with_context(|| format!("cannot lock folder {} in the database", folder.label()))?;
        Ok(Group {
            folder,
            tx,
            row: Locked {
                next_seq: r.get(0),
                last_seq: r.get(1),
                epoch: r.get(2),
                files: r.get(3),
                bytes: r.get(4),
            },
            now: unix_secs(),
        })
    }

    /// Writes the folder row back and tells every node (delivered at commit).
    async fn finish(self) -> Result<Locked> {
        let r = &self.row;
        let (id, folder) = (self.folder.id, self.folder);
        self.tx
            .execute_c(
                "UPDATE folders SET next_seq = $2, last_seq = $3, epoch = $4, files = $5, \
                 bytes = $6 WHERE id = $1",
                &[&id, &r.next_seq, &r.last_seq, &r.epoch, &r.files, &r.bytes],
            )
            .await?;
        self.tx
            .execute_c(
                "SELECT pg_notify($1, $2)",
                &[
                    &super::notify::CHANNEL,
                    &super::notify::payload(id, r.last_seq, r.epoch, r.files, r.bytes),
                ],
            )
            .await
            .with_context(|| format!("cannot announce a commit to folder {}", folder.label()))?;
        Ok(self.row)
    }

    async fn current(&self, path: &RelPath) -> Result<Option<Entry>> {
        rows::entry_at(self.tx, self.folder.id, self.folder.account_id, path).await
    }

    /// Whether a live entry lies strictly below `path`.
    async fn live_below(&self, path: &RelPath) -> Result<bool> {
        let (lo, hi) = subtree_bounds(path);
        Ok(self
            .tx
            .query_one_c(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE folder_id = $1 AND path > $2 \
                 AND path < $3 AND NOT deleted)",
                &[&self.folder.id, &lo, &hi],
            )
            .await?
            .get(0))
    }

    /// Whether any row, live or not, lies at or below `path`.
    async fn any_at_or_below(&self, path: &RelPath) -> Result<bool> {
        let (lo, hi) = subtree_bounds(path);
        Ok(self
            .tx
            .query_one_c(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE folder_id = $1 AND (path = $2 \
                 OR (path > $3 AND path < $4)))",
                &[&self.folder.id, &path.as_str(), &lo, &hi],
            )
            .await?
            .get(0))
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.row.next_seq;
        self.row.next_seq += 1;
        self.row.last_seq = seq;
        seq as u64
    }

    /// Records `entry` under the next number, replacing `before` in the totals.
    async fn record(&mut self, mut entry: Entry, before: Option<&Entry>) -> Result<u64> {
        let seq = self.take_seq();
        entry.seq = seq;
        let live = |e: &Entry| e.kind == EntryKind::File && !e.deleted;
        if let Some(b) = before.filter(|b| live(b)) {
            self.row.files -= 1;
            self.row.bytes -= b.size as i64;
        }
        if live(&entry) {
            self.row.files += 1;
            self.row.bytes += entry.size as i64;
        }
        EntryRow::of(&entry)?
            .put(self.tx, self.folder.id, &entry)
            .await?;
        Ok(seq)
    }

    /// One change of a group (see the embedded sequencer's `try_commit`).
    async fn apply(
        &mut self,
        change: Change,
        content: Option<Small>,
        device: &DeviceId,
    ) -> Result<PushOutcome> {
        let stored = content.is_some();
        if let Some(from) = change.entry.renamed_from.clone() {
            return self.rename(change, &from, device).await;
        }
        let path = change.entry.path.clone();
        let current = self.current(&path).await?;
        let current_seq = current.as_ref().map_or(0, |e| e.seq);
        if current
            .as_ref()
            .is_some_and(|c| c.same_version(&change.entry))
        {
            return Ok(PushOutcome::Accepted { seq: current_seq });
        }
        if let Some(current_seq) = stale_base(current.as_ref(), &change) {
            return Ok(PushOutcome::Conflict { current_seq });
        }
        let same = current
            .as_ref()
            .is_some_and(|c| c.same_content(&change.entry));
        let mut entry = change.entry;
        entry.origin = device.clone();
        match (entry.deleted, entry.kind) {
            (true, _) => {
                if current
                    .as_ref()
                    .is_some_and(|c| !c.deleted && c.kind == EntryKind::Dir)
                    && self.live_below(&path).await?
                {
                    return self.keep_dir(current).await;
                }
                self.retire(current.as_ref()).await?;
            }
            (false, EntryKind::File) if same && !stored => {}
            (false, EntryKind::File) => {
                let Some(small) = content else {
                    bail!("no content was stored for {path}");
                };
                self.hold(&entry, small.as_deref()).await?;
                self.retire(current.as_ref()).await?;
            }
            (false, EntryKind::Dir | EntryKind::Symlink) => self.retire(current.as_ref()).await?,
        }
        let seq = self.record(entry, current.as_ref()).await?;
        Ok(PushOutcome::Accepted { seq })
    }

    /// A device deleted a directory that still holds files it has not seen: the
    /// directory lives on as a new version, which the device will take back.
    async fn keep_dir(&mut self, current: Option<Entry>) -> Result<PushOutcome> {
        let Some(mut entry) = current else {
            bail!("directory not empty")
        };
        entry.origin = self.folder.node.server_device.clone();
        let before = entry.clone();
        let seq = self.record(entry, Some(&before)).await?;
        Ok(PushOutcome::Conflict { current_seq: seq })
    }

    /// A directory rename as one move (see the embedded sequencer's `try_rename`):
    /// every row below keeps its number, the history gets one rename record.
    async fn rename(
        &mut self,
        change: Change,
        from: &RelPath,
        device: &DeviceId,
    ) -> Result<PushOutcome> {
        let to = change.entry.path.clone();
        let src = self.current(from).await?;
        let may = decide::may_rename(src.as_ref(), from, &change.entry)
            && !self.any_at_or_below(&to).await?;
        if !may {
            let current_seq = self.current(&to).await?.map_or(0, |e| e.seq);
            return Ok(PushOutcome::Conflict { current_seq });
        }
        let (lo, hi) = subtree_bounds(from);
        let cut = from.as_str().chars().count() as i32 + 1;
        self.tx
            .execute_c(
                "UPDATE entries SET path = $2 || substr(path, $5) WHERE folder_id = $1 AND \
                 (path = $6 OR (path > $3 AND path < $4))",
                &[
                    &self.folder.id,
                    &to.as_str(),
                    &lo,
                    &hi,
                    &cut,
                    &from.as_str(),
                ],
            )
            .await
            .with_context(|| format!("cannot move {from} to {to} in the database"))?;
        let rename_seq = self.take_seq() as i64;
        self.tx
            .execute_c(
                "INSERT INTO renames (folder_id, seq, src, dst) VALUES ($1, $2, $3, $4)",
                &[&self.folder.id, &rename_seq, &from.as_str(), &to.as_str()],
            )
            .await?;
        tracing::info!(folder = %self.folder.label(), from = %from, to = %to, "renamed a directory");
        let mut entry = change.entry;
        entry.renamed_from = None;
        entry.origin = device.clone();
        let moved = self.current(&to).await?;
        let seq = self.record(entry, moved.as_ref()).await?;
        Ok(PushOutcome::Accepted { seq })
    }

    /// Keeps the file `current` among the versions when it is replaced or deleted (its
    /// reference moves to the version), or lets go of its content when versions are
    /// not kept.
    async fn retire(&mut self, current: Option<&Entry>) -> Result<()> {
        let Some(e) = current.filter(|e| !e.deleted && e.kind == EntryKind::File) else {
            return Ok(());
        };
        if self.folder.node.keep_versions.is_zero() {
            return super::refs::release(self.tx, self.folder.account_id, &e.hash, self.now).await;
        }
        self.tx
            .execute_c(
                "INSERT INTO versions (folder_id, path, seq, kept_at, hash, size, mtime_ns, \
                 mode) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &self.folder.id,
                    &e.path.as_str(),
                    &(e.seq as i64),
                    &self.now,
                    &e.hash.0.as_slice(),
                    &(e.size as i64),
                    &e.mtime_ns,
                    &(e.mode as i32),
                ],
            )
            .await
            .with_context(|| format!("cannot keep the old version of {}", e.path))?;
        Ok(())
    }

    /// Adds a reference to `entry`'s content, recording the content the first time:
    /// with `small`, its bytes in the row; else a reference to each of its blocks, which
    /// must be stored and not being collected.
    async fn hold(&mut self, entry: &Entry, small: Option<&[u8]>) -> Result<()> {
        let account = self.folder.account_id;
        let blocks = rows::encode_blocks(&entry.blocks)?;
        let inserted: bool = self
            .tx
            .query_one_c(
                "INSERT INTO contents (account_id, hash, size, blocks, refs, data) \
                 VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (account_id, hash) \
                 DO UPDATE SET refs = contents.refs + 1 RETURNING (xmax = 0)",
                &[
                    &account,
                    &entry.hash.0.as_slice(),
                    &(entry.size as i64),
                    &blocks,
                    &small,
                ],
            )
            .await
            .with_context(|| format!("cannot record the content of {}", entry.path))?
            .get(0);
        if !inserted || small.is_some() {
            return Ok(());
        }
        let distinct: HashSet<Hash> = entry.blocks.iter().map(|b| b.hash).collect();
        let hashes: Vec<&[u8]> = distinct.iter().map(|h| h.0.as_slice()).collect();
        let held = self
            .tx
            .execute_c(
                "UPDATE blocks SET refs = refs + 1 WHERE account_id = $1 AND hash = ANY($2) \
                 AND state = $3",
                &[&account, &hashes, &LIVE],
            )
            .await?;
        if held != distinct.len() as u64 {
            bail!(
                "{} of the {} blocks of {} are not stored in the bucket (collected \
                 meanwhile?)",
                distinct.len() as u64 - held,
                distinct.len(),
                entry.path
            );
        }
        Ok(())
    }

    async fn restore(
        &mut self,
        path: &RelPath,
        version: Option<u64>,
        device: DeviceId,
    ) -> Result<u64> {
        let chosen = self
            .tx
            .query_opt_c(
                "SELECT v.seq, v.hash, v.size, v.mtime_ns, c.blocks, v.mode FROM versions v \
                 JOIN contents c ON c.account_id = $3 AND c.hash = v.hash \
                 WHERE v.folder_id = $1 AND v.path = $2 AND ($4::bigint IS NULL OR v.seq = $4) \
                 ORDER BY v.kept_at DESC, v.seq DESC, v.id DESC LIMIT 1",
                &[
                    &self.folder.id,
                    &path.as_str(),
                    &self.folder.account_id,
                    &version.map(|v| v as i64),
                ],
            )
            .await?;
        let Some(chosen) = chosen else {
            match version {
                None => bail!("the server keeps no versions of {path}"),
                Some(v) => bail!(
                    "the server keeps no version {v} of {path}; `filesyncctl versions` lists them"
                ),
            }
        };
        let hash = Hash::from_slice(chosen.get::<_, &[u8]>(1)).unwrap_or_default();
        let current = self.current(path).await?;
        if let Some(cur) = &current
            && !cur.deleted
        {
            if cur.kind != EntryKind::File {
                bail!("{path} is now a directory or symlink; move it away first");
            }
            if cur.hash == hash {
                return Ok(cur.seq);
            }
        }
        let entry = Entry {
            path: path.clone(),
            kind: EntryKind::File,
            deleted: false,
            size: chosen.get::<_, i64>(2) as u64,
            mtime_ns: chosen.get(3),
            // The mode the file had, as the embedded server keeps it with the version's
            // file; a version recorded without one gets the current file's.
            mode: chosen.get::<_, Option<i32>>(5).map_or_else(
                || {
                    current
                        .as_ref()
                        .filter(|c| !c.deleted)
                        .map_or(0o644, |c| c.mode)
                },
                |m| m as u32,
            ),
            hash,
            blocks: rows::decode_blocks(chosen.get(4))?,
            target: String::new(),
            seq: 0,
            origin: device,
            conflict: None,
            renamed_from: None,
        };
        self.hold(&entry, None).await?;
        self.retire(current.as_ref()).await?;
        self.record(entry, current.as_ref()).await
    }
}
