//! How the sequencer applies a change: the base check, the change on disk (the replaced
//! file kept among the versions first), and its row under the next sequence number. Also
//! directory renames and restores of kept versions, which are changes like any other.

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{Change, Entry, EntryKind, PushOutcome};
use filesync_proto::{DeviceId, RelPath};

use super::Sequencer;
use crate::events::unix_secs;
use crate::fs::IGNORE_FILE;
use crate::fs::beneath::{Dir, Root};
use crate::fs::chunk;
use crate::fs::durable::{CrashPoint, DirBarrier, DirKey};
use crate::fs::stat::{self, Stat};
use crate::fs::temp::{Prepared, TempFile};
use crate::fs::tree;
use crate::index::{Index, LocalRow};
use crate::scan;
use crate::scan::Scope;
use crate::server::decide::{self, refusal, stale_base};

impl Sequencer {
    /// The current row at `path`, after taking in any change made there in the server
    /// copy that the watcher has not reported yet: that change must become a version of
    /// its own before anything replaces it.
    fn current(&mut self, root: &Root, path: &RelPath) -> Result<Option<LocalRow>> {
        let current = self.index.local(path)?;
        if scan::unchanged_since_scan(root, path, current.as_ref())? {
            return Ok(current);
        }
        self.scan_sync(Scope::Paths(vec![path.clone()]));
        self.index.local(path)
    }

    /// Applies one change of a group, adding to `dirs` the directories whose entries it
    /// changed, for the group's barrier M: nothing it did counts as durable before that.
    fn try_commit(
        &mut self,
        change: Change,
        device: DeviceId,
        staged: Option<Prepared>,
        dirs: &mut Vec<Dir>,
    ) -> Result<PushOutcome> {
        if let Some(from) = change.entry.renamed_from.clone() {
            return self.try_rename(change, &from, device);
        }
        let path = change.entry.path.clone();
        let root = self.open_root()?;
        let current = self.current(&root, &path)?;
        let current_seq = current.as_ref().map_or(0, |r| r.entry.seq);
        let same = current
            .as_ref()
            .is_some_and(|c| c.entry.same_content(&change.entry));
        if current
            .as_ref()
            .is_some_and(|c| c.entry.same_version(&change.entry))
        {
            if !change.entry.deleted {
                // Sent again, maybe because its directory's fsync failed last time: it
                // is answered only once that name is durable.
                dirs.push(stat::parent(&root, &path)?.0);
            }
            return Ok(PushOutcome::Accepted { seq: current_seq });
        }
        if let Some(current_seq) = stale_base(current.as_ref().map(|r| &r.entry), &change) {
            return Ok(PushOutcome::Conflict { current_seq });
        }
        let mut entry = change.entry;
        let stat = match (entry.deleted, entry.kind) {
            (true, _) => {
                self.retire(&root, current.as_ref(), false)?;
                if !tree::remove(&root, &path)? {
                    return self.keep_dir(current);
                }
                Stat {
                    kind: entry.kind,
                    size: 0,
                    mtime_ns: 0,
                    mode: 0,
                    inode: 0,
                }
            }
            (false, EntryKind::Dir) => {
                self.retire(&root, current.as_ref(), false)?;
                let made = tree::make_dir(&root, &entry)?;
                dirs.push(stat::parent(&root, &path)?.0);
                made
            }
            (false, EntryKind::Symlink) => {
                self.retire(&root, current.as_ref(), false)?;
                let made = tree::make_symlink(&root, &entry)?;
                dirs.push(stat::parent(&root, &path)?.0);
                made
            }
            // The content is already here: only the mtime changed.
            (false, EntryKind::File) if same && staged.is_none() => {
                tree::set_file_meta(&root, &entry)?
            }
            (false, EntryKind::File) => {
                let tmp = staged.with_context(|| format!("no content was staged for {path}"))?;
                self.retire(&root, current.as_ref(), true)?;
                // A file made in the server copy since `current` looked stays.
                let renamed = if current.as_ref().is_some_and(|c| !c.entry.deleted) {
                    tmp.rename(&root, &path)?
                } else {
                    tmp.rename_new(&root, &path)?
                };
                dirs.extend(renamed.dirs);
                renamed.stat
            }
        };
        entry.origin = device;
        if path.as_str() == IGNORE_FILE {
            self.reload_rules();
        }
        Ok(PushOutcome::Accepted {
            seq: self.record(entry, stat),
        })
    }

    /// Commits a directory rename: the subtree moves by one rename on disk and in the
    /// index, every entry keeping its sequence number, and the folder's history gets one
    /// rename record, which is all that devices receive about it. Refused as a conflict
    /// (the device then sends the move file by file) unless [`may_rename`].
    fn try_rename(
        &mut self,
        change: Change,
        from: &RelPath,
        device: DeviceId,
    ) -> Result<PushOutcome> {
        let to = change.entry.path.clone();
        // Changes made in the server's copy below either path become versions first.
        self.scan_sync(Scope::Paths(vec![from.clone(), to.clone()]));
        if !may_rename(&self.index, from, &change.entry)? {
            let current_seq = self.index.local(&to)?.map_or(0, |r| r.entry.seq);
            return Ok(PushOutcome::Conflict { current_seq });
        }
        let stat = tree::rename_dir(&self.open_root()?, from, &to)?;
        let rename_seq = self.take_seq();
        let moved = self.index.batch(|ix| {
            ix.move_local(from, &to)?;
            ix.add_rename(rename_seq, from, &to)
        });
        if let Err(e) = moved {
            // The tree already changed: the next scan pairs the two directories and
            // records the rename itself.
            tracing::error!(folder = %self.name, from = %from, to = %to, "cannot record a rename in the index: {e:#}");
        }
        tracing::info!(folder = %self.name, from = %from, to = %to, "renamed a directory");
        let mut entry = change.entry;
        entry.renamed_from = None;
        entry.origin = device;
        Ok(PushOutcome::Accepted {
            seq: self.record(entry, stat),
        })
    }

    /// Keeps the regular file a commit is about to replace or delete among the versions.
    /// A file that will be replaced by another file stays in the tree (linked into the
    /// versions) so the rename over it is atomic for readers; one that will be deleted or
    /// replaced by a directory or symlink is moved out.
    fn retire(
        &self,
        root: &Root,
        current: Option<&LocalRow>,
        replaced_by_file: bool,
    ) -> Result<()> {
        let Some(row) = current else { return Ok(()) };
        if self.keep_secs == 0 || row.entry.deleted || row.entry.kind != EntryKind::File {
            return Ok(());
        }
        let (path, seq, now) = (&row.entry.path, row.entry.seq, unix_secs());
        let (dir, name) = stat::parent(root, path)?;
        let kept = if replaced_by_file {
            self.versions.keep_linked(&dir, name, path, seq, now)
        } else {
            self.versions.keep(&dir, name, path, seq, now)
        };
        kept.with_context(|| format!("cannot keep the old version of {path}"))?;
        Ok(())
    }

    /// Records a committed entry under the next sequence number and announces it.
    fn record(&mut self, mut entry: Entry, stat: Stat) -> u64 {
        let seq = self.take_seq();
        entry.seq = seq;
        if !entry.deleted {
            entry.mtime_ns = stat.mtime_ns;
        }
        if let Err(e) = self.index.put_local(&LocalRow {
            entry,
            inode: stat.inode,
            dirty: false,
        }) {
            // The tree already changed: a rescan will take the change in as its own
            // version, so the folder stays consistent; the sequence number is not reused.
            tracing::error!(folder = %self.name, "cannot record a commit in the index: {e:#}");
        }
        seq
    }

    /// The next sequence number, used up whether or not its version gets recorded.
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last = seq;
        seq
    }

    /// Commits a device's group of changes in order, all in one index transaction (one
    /// write and one wake-up of every session for the lot, not one per file). The files
    /// arrive durable (barrier D) and are renamed without an fsync each; then every
    /// directory the group changed is fsynced once (barrier M), and only then the
    /// transaction commits. A change whose directory could not be made durable is
    /// answered `Failed` (the device sends it again), never `Accepted`.
    pub(super) fn commit_all(
        &mut self,
        changes: Vec<(Change, Option<Prepared>)>,
        device: &DeviceId,
    ) -> Vec<PushOutcome> {
        let failed = |e: &anyhow::Error| PushOutcome::Failed { reason: refusal(e) };
        if let Err(e) = self.index.begin() {
            tracing::error!(folder = %self.name, "cannot start an index transaction: {e:#}");
            return changes.iter().map(|_| failed(&e)).collect();
        }
        let files = changes
            .iter()
            .filter(|(_, staged)| staged.is_some())
            .count();
        let mut barrier = DirBarrier::default();
        let outcomes: Vec<(PushOutcome, Vec<DirKey>)> = changes
            .into_iter()
            .map(|(change, staged)| {
                let mut dirs = Vec::new();
                self.try_commit(change, device.clone(), staged, &mut dirs)
                    .and_then(|outcome| Ok((outcome, barrier.add_all(dirs)?)))
                    .unwrap_or_else(|e| {
                        tracing::warn!(folder = %self.name, "commit failed: {e:#}");
                        (failed(&e), Vec::new())
                    })
            })
            .collect();
        CrashPoint::AfterRenames.reached(files);
        let durable = barrier.sync();
        CrashPoint::AfterDirBarrier.reached(files);
        let outcomes: Vec<PushOutcome> = outcomes
            .into_iter()
            .map(|(outcome, keys)| match (outcome, durable.failed(&keys)) {
                (PushOutcome::Accepted { .. }, Some(why)) => {
                    tracing::error!(folder = %self.name, "{why}; the change is not acknowledged");
                    PushOutcome::Failed {
                        reason: format!("{why} on the server; the change is sent again"),
                    }
                }
                (outcome, _) => outcome,
            })
            .collect();
        if let Err(e) = self.index.commit() {
            // The tree already changed: the next scan takes those changes in as versions
            // of its own, under new sequence numbers. Nothing was recorded, so no device
            // may take its change as accepted: each sends it again, and then finds it is
            // the server's content already.
            tracing::error!(folder = %self.name, "cannot record commits in the index: {e:#}; rescanning");
            self.scan_sync(Scope::All);
            return outcomes
                .into_iter()
                .map(|o| match o {
                    PushOutcome::Accepted { .. } => failed(&e),
                    other => other,
                })
                .collect();
        }
        outcomes
    }

    /// A device deleted a directory that still holds files it has not seen: the
    /// directory lives on as a new version, which the device will take back.
    fn keep_dir(&mut self, current: Option<LocalRow>) -> Result<PushOutcome> {
        let Some(row) = current else {
            bail!("directory not empty")
        };
        let path = row.entry.path.clone();
        let mut entry = row.entry;
        entry.origin = self.server.clone();
        let stat = Stat {
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: entry.mtime_ns,
            mode: entry.mode,
            inode: row.inode,
        };
        let seq = self.record(entry, stat);
        self.scan_sync(Scope::Paths(vec![path]));
        Ok(PushOutcome::Conflict { current_seq: seq })
    }

    /// Brings a kept version back into the tree as a new change by `device`.
    pub(super) fn restore(
        &mut self,
        path: &RelPath,
        version: Option<u64>,
        device: DeviceId,
    ) -> Result<u64> {
        let kept = self.versions.list(path)?;
        let chosen = match version {
            None => kept.first(),
            Some(v) => kept.iter().find(|k| k.version == v),
        };
        let Some(chosen) = chosen else {
            match version {
                None => bail!("the server keeps no versions of {path}"),
                Some(v) => bail!(
                    "the server keeps no version {v} of {path}; `filesyncctl versions` lists them"
                ),
            }
        };
        let source = std::fs::File::open(&chosen.file)
            .with_context(|| format!("cannot open kept version of {path}"))?;
        let mode = stat::mode_of(&source.metadata()?);
        let hashed = chunk::hash_open(&source)?;
        let root = self.open_root()?;
        let current = self.current(&root, path)?;
        if let Some(cur) = &current
            && !cur.entry.deleted
            && cur.entry.kind == EntryKind::File
            && cur.entry.hash == hashed.hash
        {
            return Ok(cur.entry.seq);
        }
        if current
            .as_ref()
            .is_some_and(|c| !c.entry.deleted && c.entry.kind != EntryKind::File)
        {
            bail!("{path} is now a directory or symlink; move it away first");
        }
        let entry = Entry {
            path: path.clone(),
            kind: EntryKind::File,
            deleted: false,
            size: hashed.size,
            mtime_ns: chosen.mtime_ns,
            mode,
            hash: hashed.hash,
            blocks: hashed.blocks,
            target: String::new(),
            seq: 0,
            origin: device,
            conflict: None,
            renamed_from: None,
        };
        let mut tmp = TempFile::create(&root, path)?;
        // Streamed in blocks; `seal` checks the copy against the hash taken above.
        let mut reader = std::io::BufReader::new(std::fs::File::open(&chosen.file)?);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf)?;
            if n == 0 {
                break;
            }
            tmp.write(&buf[..n])?;
        }
        let tmp = tmp.seal(&entry)?.durable()?;
        self.retire(&root, current.as_ref(), true)?;
        let stat = tmp.install(&root, path)?;
        tracing::info!(folder = %self.name, path = %path, version = chosen.version, "restored a kept version");
        Ok(self.record(entry, stat))
    }
}

/// Whether a directory rename from `from` to `to` may be committed as one move, as the
/// embedded index sees it (see [`decide::may_rename`]).
pub fn may_rename(index: &Index, from: &RelPath, to: &Entry) -> Result<bool> {
    let src = index.local(from)?.map(|r| r.entry);
    Ok(decide::may_rename(src.as_ref(), from, to) && !index.has_local_under(&to.path)?)
}
