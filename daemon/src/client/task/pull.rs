//! Applying what the server has that this device lacks: a round of the index's needed
//! entries (directories, deletes and conflict copies here, files fetched several at
//! a time), and making one server entry real on disk.
//!
//! A small file's whole content comes at once ([`crate::transfer::from_bytes`]): with the
//! index batch that announced it (held in
//! [`InlineStore`](crate::client::inline::InlineStore)), else fetched together with
//! the other small files of the round that lack theirs. A larger file is assembled
//! block by block into a temp file ([`crate::transfer::assemble`]): what an interrupted
//! download left, blocks the folder already has in any indexed file, and the rest from
//! the server, several at a time. The result is verified whole and sealed; a batch's
//! files are then made durable together, renamed in (unless the user wrote the path
//! meanwhile) and their directories fsynced once each (`land.rs`, through
//! [`crate::fs::durable`]).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use filesync_proto::RelPath;
use filesync_proto::control::{EventKind, FolderMode};
use filesync_proto::wire::{
    ConflictNote, Entry, EntryKind, FETCH_MAX_FILES, INLINE_BUDGET, INLINE_MAX, Want,
};
use futures::StreamExt;

use super::land::{Landing, land_group, receive_entry, same_file_content};
use super::names::RoundNames;
use super::{FolderTask, PULL_BATCH, PULL_FILES};
use crate::client::plan::{self, Action};
use crate::client::session::{self, SessionHandle};
use crate::conn::Counters;
use crate::events::unix_secs;
use crate::fs::IGNORE_FILE;
use crate::fs::beneath::Root;
use crate::fs::stat::{self, Stat};
use crate::fs::tree;
use crate::index::LocalRow;
use crate::scan::{self};

/// How long content from an index batch may wait once nothing is needed: far longer
/// than a batch takes from the session's hands to the index.
const INLINE_STALE: Duration = Duration::from_secs(5);

impl FolderTask {
    /// Applies server entries we lack; true if a full batch was taken.
    pub(super) async fn pull_round(&mut self) -> Result<bool> {
        let send_only = self.effective_mode() == FolderMode::SendOnly;
        let mut progress = false;
        // Paths whose entries are moving by a rename not applied yet: left alone.
        let mut moving: Vec<RelPath> = Vec::new();
        for (seq, src, dst) in self.index().renames(0, u64::MAX)? {
            let done = moving.is_empty()
                && (self.confirm_own_rename(&src, &dst)?
                    || send_only
                    || self.apply_rename(seq, &src, &dst).await?);
            if done {
                self.index().remove_rename(seq)?;
                progress = true;
            } else {
                // Renames apply in order: the rest wait behind this one.
                moving.extend([src, dst]);
            }
        }
        if send_only {
            self.drop_stale_inline();
            return Ok(false);
        }
        moving.extend(
            self.index()
                .pending_renames()?
                .into_iter()
                .map(|(src, _)| src),
        );
        self.forget_gone_unholdable()?;
        let needed = self.index().needed(PULL_BATCH)?;
        if needed.is_empty() {
            self.drop_stale_inline();
        }
        let full = needed.len() == PULL_BATCH;
        let root = self.root()?;
        let mut deletes = Vec::new();
        let mut files = Vec::new();
        let mut round = RoundNames::default();
        for remote in needed {
            self.unholdable.remove(&remote.path);
            if self.retrying(&remote.path)
                || self.inflight_paths.contains(&remote.path)
                || moving.iter().any(|m| remote.path.starts_with(m))
            {
                continue;
            }
            if self
                .rules
                .is_ignored(&remote.path, remote.kind == EntryKind::Dir)
            {
                // Never written, replaced or deleted here, and not counted as pending.
                self.index().set_remote_ignored(&remote.path)?;
                progress = true;
                continue;
            }
            let mut local = self.index().local(&remote.path)?;
            match self.set_aside_unholdable(&root, &remote, local.is_some(), &mut round) {
                Ok(false) => {}
                Ok(true) => {
                    progress = true;
                    continue;
                }
                Err(e) => {
                    self.fail_path(&remote.path, format!("cannot apply {}: {e:#}", remote.path));
                    continue;
                }
            }
            if let Some(row) = local.as_mut() {
                self.rebase_on_own_push(row, &remote)?;
            }
            // A path that cannot be looked at (its parent is a symlink here) is refused
            // alone: the rest of the batch goes on.
            match self.disk_matches(&root, &remote.path, local.as_ref()) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    self.fail_path(&remote.path, format!("cannot apply {}: {e:#}", remote.path));
                    continue;
                }
            }
            let action = plan::decide(local.as_ref(), Some(&remote));
            match action {
                Action::Pull if remote.deleted => deletes.push((remote, local)),
                // Files are fetched together after the directories they go into.
                Action::Pull if remote.kind == EntryKind::File => files.push((remote, local)),
                Action::Pull => progress |= self.apply(&remote).await,
                Action::ConflictThenPull => {
                    if self.keep_conflict(&remote)? {
                        progress |= self.apply(&remote).await;
                    }
                }
                Action::MarkSynced { seq } => {
                    if let Some(mut row) = local {
                        row.entry.seq = seq;
                        row.dirty = false;
                        self.index().put_local(&row)?;
                        progress = true;
                    }
                }
                Action::SplitRename => {
                    if let Some(src) = local.and_then(|l| l.entry.renamed_from) {
                        self.unpair_rename(&src, &remote.path)?;
                        progress = true;
                    }
                }
                // A local change of a receive-only folder, against a delete on the
                // server: it stays here, based on that delete, so it is no longer needed.
                Action::Push { base } if self.receive_only() => {
                    if let Some(mut row) = local {
                        row.entry.seq = base;
                        self.index().put_local(&row)?;
                        progress = true;
                    }
                }
                Action::Nothing | Action::Push { .. } | Action::Forget => {}
            }
        }
        progress |= self.apply_files(files).await?;
        deletes.sort_by_key(|(r, _)| std::cmp::Reverse(r.path.depth()));
        for (remote, local) in deletes {
            progress |= self.apply_delete(&remote, local)?;
        }
        Ok(full && progress)
    }

    /// Drops the content from index batches held for longer than [`INLINE_STALE`].
    fn drop_stale_inline(&self) {
        if let Some(cutoff) = Instant::now().checked_sub(INLINE_STALE) {
            self.inline.drop_before(cutoff);
        }
    }

    /// Creates the directories above `path` that the server has and this disk lacks;
    /// false if one cannot be made.
    pub(super) async fn make_parents(&mut self, path: &RelPath) -> bool {
        let Ok(root) = self.root() else { return false };
        let mut missing = Vec::new();
        let mut at = path.parent();
        while let Some(dir) = at {
            match stat::stat(&root, &dir) {
                Ok(Some(s)) if s.kind == EntryKind::Dir => break,
                Ok(None) => {
                    at = dir.parent();
                    missing.push(dir);
                }
                _ => return false,
            }
        }
        for dir in missing.into_iter().rev() {
            let remote = match self.index().remote(&dir) {
                Ok(Some(r)) if !r.deleted && r.kind == EntryKind::Dir => r,
                _ => return false,
            };
            if self.rules.is_ignored(&dir, true) || !self.apply(&remote).await {
                return false;
            }
        }
        true
    }

    /// Whether the disk still shows what the index says at `path`. If not, a local change
    /// has not been scanned yet: scan it before anything overwrites it.
    pub(super) fn disk_matches(
        &mut self,
        root: &Root,
        path: &RelPath,
        local: Option<&LocalRow>,
    ) -> Result<bool> {
        let ok = scan::unchanged_since_scan(root, path, local)?;
        if !ok {
            self.scan_paths.push(path.clone());
        }
        Ok(ok)
    }

    pub(super) async fn apply(&mut self, remote: &Entry) -> bool {
        let session = self
            .session
            .clone()
            .expect("pulls run only while connected");
        let root = match self.root() {
            Ok(root) => root,
            Err(e) => return self.applied(remote, Err(e)),
        };
        let content = (remote.kind == EntryKind::File)
            .then(|| self.inline.take(&remote.path, &remote.hash).map(Ok))
            .flatten();
        let index = self.index();
        let decided_on = match index.local(&remote.path) {
            Ok(row) => row,
            Err(e) => return self.applied(remote, Err(e)),
        };
        let received = receive_entry(
            &root,
            index,
            &session,
            remote,
            content,
            &self.counters,
            &self.partials,
        )
        .await;
        // A group of one: the same steps as a batch's files.
        let landing = Landing {
            entry: remote.clone(),
            decided_on,
            received,
        };
        let result = match land_group(&root, index, vec![landing]).await {
            Ok(mut landed) => landed
                .pop()
                .map_or_else(|| Err(anyhow!("{} was not applied", remote.path)), |l| l.1),
            Err(e) => Err(e),
        };
        self.applied(remote, result)
    }

    /// Applies a batch of files as one group: their content fetched and sealed several
    /// at once, made durable together (barrier D), each renamed in right after checking
    /// that the user did not write its path meanwhile, their directories fsynced once
    /// each (barrier M), and only then recorded, in one index transaction.
    /// Each file comes with the local row its pull was decided on.
    async fn apply_files(&mut self, files: Vec<(Entry, Option<LocalRow>)>) -> Result<bool> {
        if files.is_empty() {
            return Ok(false);
        }
        let session = self
            .session
            .clone()
            .expect("pulls run only while connected");
        let root = &self.root()?;
        let (files, decided_on): (Vec<Entry>, Vec<Option<LocalRow>>) = files.into_iter().unzip();
        let contents = self.whole_contents(&session, &files).await?;
        let (index, counters, partials) = (self.index(), &self.counters, &self.partials);
        let received: Vec<Landing> = futures::stream::iter(files.into_iter().zip(contents))
            .zip(futures::stream::iter(decided_on))
            .map(|((remote, content), decided_on)| {
                let session = &session;
                async move {
                    let received =
                        receive_entry(root, index, session, &remote, content, counters, partials)
                            .await;
                    Landing {
                        entry: remote,
                        decided_on,
                        received,
                    }
                }
            })
            .buffered(PULL_FILES)
            .collect()
            .await;
        let landed = land_group(root, index, received).await?;
        self.index().begin()?;
        let mut progress = false;
        for (remote, result) in landed {
            progress |= self.applied(&remote, result);
        }
        self.index().commit()?;
        Ok(progress)
    }

    /// The whole content of each of `files` small enough for it, in order: held from
    /// the index stream, else fetched with the others that lack theirs, one `Fetch` per
    /// [`FETCH_MAX_FILES`] files or [`INLINE_BUDGET`] bytes, all at once. `None` for the
    /// files that go by blocks, and for those whose content is here already.
    async fn whole_contents(
        &self,
        session: &SessionHandle,
        files: &[Entry],
    ) -> Result<Vec<Option<Result<Vec<u8>>>>> {
        let mut contents = Vec::with_capacity(files.len());
        let mut wanted = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let held = self.inline.take(&f.path, &f.hash);
            if held.is_none()
                && (1..=INLINE_MAX).contains(&f.size)
                && !same_file_content(self.index(), f)?
            {
                wanted.push(i);
            }
            contents.push(held.map(Ok));
        }
        let fetches = fetch_groups(files, wanted).into_iter().map(|group| {
            let wants = (group.iter().map(|&i| &files[i]))
                .map(|f| Want {
                    path: f.path.clone(),
                    hash: f.hash,
                    size: f.size,
                })
                .collect::<Vec<_>>();
            tracing::debug!(folder = %self.cfg.name, files = wants.len(), "fetching small files whole");
            async move { (group, session.fetch(wants).await) }
        });
        for (group, fetched) in futures::future::join_all(fetches).await {
            match fetched {
                Ok(got) => {
                    for (i, result) in group.into_iter().zip(got) {
                        if let Ok(data) = &result {
                            Counters::add(&self.counters.content_received, data.len() as u64);
                        }
                        contents[i] = Some(result);
                    }
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    for i in group {
                        contents[i] = Some(Err(anyhow!("cannot fetch {}: {why}", files[i].path)));
                    }
                }
            }
        }
        Ok(contents)
    }

    /// Records the outcome of applying `remote`; true if it was applied, or if a newer
    /// version of it is to be pulled right away.
    fn applied(&mut self, remote: &Entry, result: Result<Stat>) -> bool {
        match result {
            Ok(stat) => {
                let mut entry = remote.clone();
                entry.mtime_ns = stat.mtime_ns;
                let row = LocalRow {
                    entry,
                    inode: stat.inode,
                    dirty: false,
                };
                if let Err(e) = self.index().put_local(&row) {
                    let why = self.explain(&e);
                    self.fail_path(
                        &remote.path,
                        format!("cannot record {}: {why}", remote.path),
                    );
                    return false;
                }
                self.retry_delay.remove(&remote.path);
                if remote.kind == EntryKind::File {
                    Counters::add(&self.counters.files_downloaded, 1);
                }
                if remote.path.as_str() == IGNORE_FILE {
                    self.rules_stale = true;
                }
                tracing::debug!(folder = %self.cfg.name, path = %remote.path, seq = remote.seq, "downloaded");
                if remote.kind == EntryKind::File {
                    self.emit(EventKind::Downloaded, Some(&remote.path), None);
                }
                true
            }
            Err(e) if self.cannot_hold(remote, &e) => true,
            Err(e) => {
                let lacks = e.chain().any(|c| c.is::<session::ServerLacks>());
                let newer = self.index().remote(&remote.path).ok().flatten();
                if lacks && newer.is_some_and(|r| r.seq > remote.seq) {
                    // Replaced on the server during the download, and its newer version
                    // is here: that one is pulled next, without a failure's wait.
                    return true;
                }
                if lacks && self.retry_delay.contains_key(&remote.path) {
                    self.refresh_due = Some(format!(
                        "the server again has no content for {} as this device knows it",
                        remote.path
                    ));
                }
                let why = self.explain(&e);
                self.fail_path(&remote.path, format!("cannot apply {}: {why}", remote.path));
                false
            }
        }
    }

    /// Records the server's tombstone as the local state of its path.
    fn record_deleted(&self, remote: &Entry) -> Result<()> {
        self.index().put_local(&LocalRow {
            entry: remote.clone(),
            inode: 0,
            dirty: false,
        })
    }

    fn apply_delete(&mut self, remote: &Entry, local: Option<LocalRow>) -> Result<bool> {
        let Some(local) = local else {
            self.record_deleted(remote)?;
            return Ok(true);
        };
        if local.entry.kind == EntryKind::Dir
            && self
                .index()
                .local_under(&remote.path)?
                .iter()
                .any(|r| !r.entry.deleted && r.entry.path != remote.path)
        {
            // Children are still live in the index: they are deleted first.
            return Ok(false);
        }
        // The disk was checked when the batch was read, but the batch's downloads ran
        // since: a file edited meanwhile is a change the server has not seen, which a
        // delete must never remove. Checked again right before it goes; a changed file
        // is rescanned instead (`None`).
        let removed = self.root().and_then(|root| {
            if !self.disk_matches(&root, &remote.path, Some(&local))? {
                return Ok(None);
            }
            tree::remove(&root, &remote.path).map(Some)
        });
        match removed {
            Ok(None) => Ok(false),
            Ok(Some(true)) => {
                self.record_deleted(remote)?;
                Counters::add(&self.counters.deletes_applied, 1);
                tracing::debug!(folder = %self.cfg.name, path = %remote.path, "deleted");
                self.emit(
                    EventKind::Deleted,
                    Some(&remote.path),
                    Some("by the server".into()),
                );
                Ok(true)
            }
            Ok(Some(false))
                if scan::holds_only_ignored(
                    &remote.path.to_path(&self.cfg.path),
                    &remote.path,
                    &self.rules,
                ) =>
            {
                // Only ignored files are left: the directory stays here for them, is
                // recorded as deleted, and is not offered back to anyone.
                self.record_deleted(remote)?;
                Ok(true)
            }
            Ok(Some(false)) => {
                // The directory holds files the server has never seen: keep it, and tell
                // the server it still exists.
                let mut row = local;
                row.entry.seq = remote.seq;
                row.dirty = true;
                self.index().put_local(&row)?;
                self.scan_paths.push(remote.path.clone());
                Ok(true)
            }
            Err(e) => {
                let why = self.explain(&e);
                self.fail_path(
                    &remote.path,
                    format!("cannot delete {}: {why}", remote.path),
                );
                Ok(false)
            }
        }
    }

    /// Moves the local version of a conflicting path aside; it is then pushed as a new file.
    fn keep_conflict(&mut self, remote: &Entry) -> Result<bool> {
        let (aside, now) = self.free_conflict_path(&remote.path)?;
        match self
            .root()
            .and_then(|root| tree::move_aside(&root, &remote.path, &aside))
        {
            Ok(()) => {
                tracing::warn!(folder = %self.cfg.name, path = %remote.path, copy = %aside, "conflict: both sides changed; kept the local version as a conflict copy");
                self.emit(
                    EventKind::Conflict,
                    Some(&remote.path),
                    Some(format!("local version kept as {aside}")),
                );
                let local = self.index().local(&remote.path)?;
                for row in self.index().local_under(&remote.path)? {
                    self.index().remove_local(&row.entry.path)?;
                }
                match local {
                    // The moved file keeps its inode and mtime: record it as the copy,
                    // with its note, so the next scan need not read it.
                    Some(mut row) if row.entry.kind != EntryKind::Dir => {
                        row.entry.path = aside;
                        row.entry.seq = 0;
                        row.entry.origin = self.id.device.clone();
                        row.entry.conflict = Some(ConflictNote {
                            original: remote.path.clone(),
                            winner_seq: remote.seq,
                            winner: remote.origin.clone(),
                            made_at: now,
                        });
                        row.dirty = true;
                        self.index().put_local(&row)?;
                    }
                    _ => self.scan_paths.push(aside),
                }
                Ok(true)
            }
            Err(e) => {
                let why = self.explain(&e);
                self.fail_path(
                    &remote.path,
                    format!("cannot keep conflicting {}: {why}", remote.path),
                );
                Ok(false)
            }
        }
    }
}

impl FolderTask {
    /// A conflict copy name for `path` that no row of the index holds, and the time it
    /// names ([`plan::free_conflict_path`]).
    fn free_conflict_path(&self, path: &RelPath) -> Result<(RelPath, i64)> {
        let index = self.index();
        let taken = |p: &RelPath| -> Result<bool> {
            Ok(index.local(p)?.is_some() || index.remote(p)?.is_some())
        };
        plan::free_conflict_path(path, unix_secs(), self.id.device.as_str(), taken)?.ok_or_else(
            || {
                anyhow!(
                    "cannot keep the local version of {path} as a conflict copy: the next \
                     {} conflict copy names for it are taken; resolve or delete some of its \
                     conflict copies (`filesyncctl conflicts`)",
                    plan::CONFLICT_NAME_TRIES
                )
            },
        )
    }
}

/// The indexes in `files` of `wanted`, cut into the groups one `Fetch` may ask for.
fn fetch_groups(files: &[Entry], wanted: Vec<usize>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0u64;
    for i in wanted {
        let size = files[i].size;
        match groups.last_mut() {
            Some(group)
                if group.len() < FETCH_MAX_FILES && bytes + size <= INLINE_BUDGET as u64 =>
            {
                group.push(i);
                bytes += size;
            }
            _ => {
                groups.push(vec![i]);
                bytes = size;
            }
        }
    }
    groups
}
