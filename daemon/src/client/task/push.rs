//! Sending what this device has that the server lacks, and recording the server's
//! answers: accepted versions, refusals as conflicts, and our own pushes coming back.

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::control::EventKind;
use filesync_proto::wire::{Change, Entry, EntryKind, INLINE_BUDGET, MAX_BATCH, PushOutcome};
use tokio::time::Instant;

use super::content;
use super::{BLOCKED_TOO_LONG, FolderTask, MAX_INFLIGHT, PUSH_BYTES};
use crate::client::plan::{self, Action};
use crate::conn::{self, Counters};
use crate::fs::beneath::Root;
use crate::index::{self, LocalRow};

impl FolderTask {
    /// Sends local changes the server lacks; true if a full batch went out.
    pub(super) async fn push_round(&mut self) -> Result<bool> {
        // Nothing of a receive-only folder is ever sent: its changes stay local changes.
        if self.receive_only() || self.inflight.len() >= MAX_INFLIGHT {
            return Ok(false);
        }
        // What lies below a directory whose rename the server has not taken yet waits:
        // the server has it at the new path only once the rename is in. So does what was
        // made at the old path since: sent before the rename, it would land in the old
        // directory there and move with it.
        let mut renaming = Vec::new();
        let mut vacated = Vec::new();
        for (src, dst) in self.index().pending_renames()? {
            let dirty = self.index().local(&dst)?.is_some_and(|r| r.dirty);
            if dirty || self.inflight_paths.contains(&dst) {
                renaming.push(dst);
                vacated.push(src);
            }
        }
        // While the mass-delete guard holds, only live changes go out.
        let dirty = self.index().dirty(MAX_BATCH * 2, self.hold.is_none())?;
        if dirty.is_empty() {
            // Nothing left to send: what the scans read is of no more use.
            self.contents.clear();
        }
        // A wait ends when the server's version arrives, or once the row it held back is
        // no longer a change to send (the server's version was pulled, ours kept as a
        // conflict copy): a later change of that path is a push of its own, which must
        // not wait for a version a directory rename may since have moved away.
        let waiting: Vec<RelPath> = self.blocked.keys().cloned().collect();
        for path in waiting {
            if !self.index().local(&path)?.is_some_and(|r| r.dirty) {
                self.blocked.remove(&path);
            }
        }
        let mut live = Vec::new();
        let mut deletes = Vec::new();
        let mut bytes = 0usize;
        // Small files' content sent inline, within INLINE_BUDGET, and the root it is read
        // again from when no scan kept it, opened on first need.
        let mut inline = 0usize;
        let mut root = None;
        for mut row in dirty {
            let path = row.entry.path.clone();
            if self.inflight_paths.contains(&path)
                || self.retrying(&path)
                || self.hold_deletes.contains_key(&path)
                || renaming.iter().any(|d| path != *d && path.starts_with(d))
                || vacated.iter().any(|s| path.starts_with(s))
            {
                continue;
            }
            let remote = self.index().remote(&path)?;
            if let Some(&(wait_for, since)) = self.blocked.get(&path) {
                // No remote row is sequence 0: the server answers a push of a path it has
                // no row for (a tombstone whose path a rename moved away) with 0, and the
                // path must then go on, to be forgotten or pushed anew, not wait forever.
                if remote.as_ref().map_or(0, |r| r.seq) < wait_for {
                    if since.elapsed() >= BLOCKED_TOO_LONG {
                        self.refresh_due = Some(format!(
                            "the server's version {wait_for} of {path} never arrived"
                        ));
                        // Asked again only after as long once more.
                        (self.blocked).insert(path.clone(), (wait_for, Instant::now()));
                    }
                    continue;
                }
                self.blocked.remove(&path);
            }
            if let Some(remote) = &remote {
                self.rebase_on_own_push(&mut row, remote)?;
            }
            match plan::decide(Some(&row), remote.as_ref()) {
                Action::Push { base } => {
                    let mut entry = row.entry;
                    entry.seq = 0;
                    let data = if content::inlinable(&entry) {
                        if inline + entry.size as usize > INLINE_BUDGET {
                            // The next push takes it, with its content.
                            break;
                        }
                        self.content_for(&entry, &mut root)
                    } else {
                        None
                    };
                    inline += data.as_ref().map_or(0, Vec::len);
                    bytes += conn::entry_size(&entry);
                    let change = Change {
                        entry,
                        base_seq: base,
                        data,
                    };
                    if change.entry.deleted {
                        deletes.push(change)
                    } else {
                        live.push(change)
                    }
                }
                Action::Forget => self.index().remove_local(&path)?,
                Action::SplitRename => {
                    if let Some(src) = &row.entry.renamed_from {
                        self.unpair_rename(src, &path)?;
                    }
                }
                Action::MarkSynced { seq } => {
                    let mut row = row;
                    row.entry.seq = seq;
                    row.dirty = false;
                    self.index().put_local(&row)?;
                }
                Action::Nothing | Action::Pull | Action::ConflictThenPull => {}
            }
            if live.len() + deletes.len() >= MAX_BATCH || bytes >= PUSH_BYTES {
                break;
            }
        }
        if live.is_empty() && deletes.is_empty() {
            return Ok(false);
        }
        // Parents before children for new paths; children before parents for deletes.
        deletes.sort_by_key(|c| std::cmp::Reverse(c.entry.path.depth()));
        live.extend(deletes);
        let id = self.next_push;
        self.next_push += 1;
        let entries: Vec<Entry> = live.iter().map(|c| c.entry.clone()).collect();
        Counters::add(&self.counters.content_sent, inline as u64);
        let session = self
            .session
            .clone()
            .expect("pushes run only while connected");
        session.push(id, live).await?;
        Counters::add(&self.counters.pushes, 1);
        tracing::debug!(folder = %self.cfg.name, id, changes = entries.len(), "pushed");
        self.inflight_paths
            .extend(entries.iter().map(|e| e.path.clone()));
        self.inflight.insert(id, entries);
        Ok(self.inflight.len() < MAX_INFLIGHT)
    }

    /// The content of the small file `entry` describes, to send inline: kept from its
    /// scan, or read again beneath `root` (opened here on first need). A file that
    /// changed since its scan goes without, and is scanned again; so does one whose
    /// content another path here already holds (a move, a copy): the server has it or
    /// gets it once, and it does not cross the wire again.
    fn content_for(&mut self, entry: &Entry, root: &mut Option<Root>) -> Option<Vec<u8>> {
        let kept = self.contents.take(&entry.path, &entry.hash);
        if self.held_elsewhere(entry) {
            return None;
        }
        if kept.is_some() {
            return kept;
        }
        if root.is_none() {
            *root = self.root().ok();
        }
        match content::read_again(root.as_ref()?, entry) {
            Ok(Some(data)) => Some(data),
            Ok(None) | Err(_) => {
                self.scan_paths.push(entry.path.clone());
                None
            }
        }
    }

    /// Whether every block of `entry` is in a file at another path in the index.
    fn held_elsewhere(&self, entry: &Entry) -> bool {
        entry.blocks.iter().all(|b| {
            self.index()
                .block_sources(&b.hash, 2)
                .is_ok_and(|sources| sources.iter().any(|s| s.path != entry.path))
        })
    }

    /// Records the server's answer to push `id`: every outcome in one index
    /// transaction, not a few autocommit writes per file. Should the transaction fail,
    /// nothing of it is recorded and the push counts as one whose answer was lost with
    /// its connection ([`FolderTask::rebase_on_own_push`]).
    pub(super) fn on_push_result(&mut self, id: u64, outcomes: Vec<PushOutcome>) -> Result<()> {
        let Some(entries) = self.inflight.remove(&id) else {
            return Ok(());
        };
        for e in &entries {
            self.inflight_paths.remove(&e.path);
            self.unconfirmed.remove(&e.path);
        }
        self.index().begin()?;
        let recorded = match self.record_outcomes(entries.clone(), outcomes) {
            Ok(()) => self.index().commit(),
            Err(e) => {
                self.index().rollback();
                Err(e)
            }
        };
        if recorded.is_err() {
            self.unconfirm(entries);
        }
        recorded
    }

    /// Remembers pushed `entries` whose results are not recorded (see `unconfirmed`).
    pub(super) fn unconfirm(&mut self, entries: Vec<Entry>) {
        for pushed in entries {
            let at = pushed.path.clone();
            self.unconfirmed.entry(at).or_default().push(pushed);
        }
    }

    fn record_outcomes(&mut self, entries: Vec<Entry>, outcomes: Vec<PushOutcome>) -> Result<()> {
        let renames = self.index().renames(0, u64::MAX)?;
        for (pushed, outcome) in entries.into_iter().zip(outcomes) {
            let refused = !matches!(outcome, PushOutcome::Accepted { .. });
            if let Some(src) = pushed.renamed_from.as_ref().filter(|_| refused) {
                tracing::info!(folder = %self.cfg.name, from = %src, to = %pushed.path, "server did not take the rename ({outcome:?}); sending it path by path");
                self.unpair_rename(src, &pushed.path)?;
                continue;
            }
            match outcome {
                PushOutcome::Accepted { seq } => self.accepted(pushed, seq, &renames)?,
                PushOutcome::Conflict { current_seq } => {
                    (self.blocked).insert(pushed.path.clone(), (current_seq, Instant::now()));
                }
                PushOutcome::Failed { reason } => {
                    self.scan_paths.push(pushed.path.clone());
                    self.fail_path(
                        &pushed.path,
                        format!(
                            "server did not take {}: {}",
                            pushed.path,
                            crate::conn::peer_text(&reason)
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Makes `remote` the base of our dirty `row` when it is a version this device pushed
    /// whose result was lost with its connection (the server took it, the answer never
    /// came), and we have edited the path since: those edits derive from it, so they go
    /// to the server on top of it. Without this the device would find its own earlier
    /// version "changed on the server" and make a conflict copy against itself.
    ///
    /// The content decides, not the version's origin: a server killed between putting
    /// our file in place and recording it takes the file in at its restart as a change
    /// of its own. Whoever the server names, a version holding exactly what we pushed is
    /// one our later edits were made on, so nothing of it is lost under them.
    pub(super) fn rebase_on_own_push(&mut self, row: &mut LocalRow, remote: &Entry) -> Result<()> {
        let ours = self
            .unconfirmed
            .get(&remote.path)
            .is_some_and(|pushed| pushed.iter().any(|p| p.same_content(remote)));
        if !ours {
            return Ok(());
        }
        // The server has it: nothing more to remember about that push.
        self.unconfirmed.remove(&remote.path);
        if row.dirty && row.entry.seq < remote.seq && !row.entry.same_version(remote) {
            row.entry.seq = remote.seq;
            self.index().put_local(row)?;
            tracing::debug!(folder = %self.cfg.name, path = %remote.path, seq = remote.seq, "our earlier push was taken; pushing our later edit on top of it");
        }
        Ok(())
    }

    /// Records a push the server took as its version `seq`; `renames` are those taken in
    /// and not yet applied here ([`index::moved_by`]).
    fn accepted(
        &mut self,
        mut pushed: Entry,
        seq: u64,
        renames: &[(u64, RelPath, RelPath)],
    ) -> Result<()> {
        self.retry_delay.remove(&pushed.path);
        pushed.seq = seq;
        // The server's entry is the directory's state; the rename is confirmed when its
        // record arrives in the index.
        pushed.renamed_from = None;
        let index = self.index();
        // A rename of a directory above it may have reached us before this answer; the
        // server's entry is where that rename took it (the local row moves when the
        // rename is applied here).
        let (at, as_of) = index::moved_by(&pushed.path, seq, renames);
        let path = std::mem::replace(&mut pushed.path, at);
        index.put_remote(&pushed, as_of)?;
        pushed.path = path;
        if let Some(mut row) = index.local(&pushed.path)? {
            // If the file changed again since we pushed, it stays dirty, now based on `seq`.
            row.dirty = !row.entry.same_version(&pushed);
            row.entry.seq = seq;
            index.put_local(&row)?;
        }
        if pushed.kind == EntryKind::File && !pushed.deleted {
            Counters::add(&self.counters.files_uploaded, 1);
            self.emit(EventKind::Uploaded, Some(&pushed.path), None);
        } else if pushed.deleted {
            self.emit(
                EventKind::Deleted,
                Some(&pushed.path),
                Some("sent to the server".into()),
            );
        }
        tracing::debug!(folder = %self.cfg.name, path = %pushed.path, seq, "uploaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::index::tests::{count_commits, file_entry};

    /// A push sends the content a scan kept without reading the file; without it, the
    /// file is read again, and one that changed since its scan goes without and is
    /// scanned again.
    #[test]
    fn small_files_content_comes_from_the_scan_or_from_disk_while_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = super::super::tests::task(dir.path());
        let entry = |path: &str, content: &[u8]| {
            let mut e = file_entry(path, 0, content);
            e.hash = crate::fs::chunk::sha256(content);
            e
        };
        let (kept, on_disk) = (entry("kept", b"scanned"), entry("disk", b"on disk"));
        task.contents
            .keep(vec![(kept.path.clone(), kept.hash, b"scanned".to_vec())]);
        std::fs::write(task.cfg.path.join("disk"), b"on disk").unwrap();
        let mut root = None;
        assert_eq!(
            task.content_for(&kept, &mut root),
            Some(b"scanned".to_vec()),
            "not on disk: from the scan"
        );
        assert_eq!(
            task.content_for(&on_disk, &mut root),
            Some(b"on disk".to_vec())
        );
        std::fs::write(task.cfg.path.join("disk"), b"edited!").unwrap();
        assert_eq!(task.content_for(&on_disk, &mut root), None);
        assert_eq!(task.scan_paths, std::slice::from_ref(&on_disk.path));
        // The same content at another path (a copy, a move) is not sent again.
        let mut copy = entry("copy", b"scanned");
        copy.blocks[0].hash = copy.hash;
        let mut original = LocalRow {
            entry: copy.clone(),
            inode: 1,
            dirty: false,
        };
        original.entry.path = RelPath::new("original").unwrap();
        task.index().put_local(&original).unwrap();
        std::fs::write(task.cfg.path.join("copy"), b"scanned").unwrap();
        assert_eq!(task.content_for(&copy, &mut root), None);
    }

    #[test]
    fn a_push_result_is_recorded_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = super::super::tests::task(dir.path());
        let mut pushed = Vec::new();
        let mut outcomes = Vec::new();
        for i in 0..20u64 {
            let mut entry = file_entry(&format!("f{i}"), 0, b"content");
            task.index()
                .put_local(&LocalRow {
                    entry: entry.clone(),
                    inode: i,
                    dirty: true,
                })
                .unwrap();
            entry.origin = task.id.device.clone();
            pushed.push(entry);
            outcomes.push(PushOutcome::Accepted { seq: i + 1 });
        }
        task.inflight.insert(7, pushed);
        let commits = count_commits(task.index());
        task.on_push_result(7, outcomes).unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        assert!(task.inflight.is_empty());
        for i in 0..20u64 {
            let path = RelPath::new(format!("f{i}")).unwrap();
            let row = task.index().local(&path).unwrap().unwrap();
            assert_eq!((row.dirty, row.entry.seq), (false, i + 1), "{path}");
            assert_eq!(task.index().remote(&path).unwrap().unwrap().seq, i + 1);
        }
    }
}
