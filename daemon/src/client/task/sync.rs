//! One round of a folder's sync work: scan what changed, apply what the server has that
//! we lack, push what we have that the server lacks, and record the server's answers.
//! Split from the task's event loop, whose state it works on.

use std::path::Path;

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::control::{EventKind, FolderMode, ScanReport};
use filesync_proto::wire::{Change, ConflictNote, Entry, EntryKind, MAX_BATCH, PushOutcome};
use futures::StreamExt;
use tokio::time::Instant;

use super::{
    BLOCKED_TOO_LONG, FolderTask, MAX_INFLIGHT, PULL_BATCH, PULL_FILES, PUSH_BYTES, RETRY_AFTER,
    RETRY_MAX,
};
use crate::client::plan::{self, Action};
use crate::client::{guard, pull, session};
use crate::conn::{self, Counters};
use crate::events::{unix_ms, unix_secs};
use crate::fs::IGNORE_FILE;
use crate::fs::beneath::Root;
use crate::fs::ignore::IgnoreRules;
use crate::fs::stat;
use crate::fs::tree;
use crate::index::{self, LocalRow};
use crate::scan::{self, Scope};

/// Whether the directory `dir` under the folder at `root` holds anything `rules` ignore,
/// at any depth, or a name that is no path of ours (which a scan skips as well). Lists
/// without following symlinks; a directory that cannot be listed counts as holding
/// something, since what it holds is unknown.
fn holds_ignored(root: &Path, dir: &RelPath, rules: &IgnoreRules) -> bool {
    let mut todo = vec![dir.clone()];
    // Bounded by the tree: each directory is listed once.
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(dir.as_str())) else {
            return true;
        };
        for entry in entries {
            let Ok(entry) = entry else { return true };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let path = (entry.file_name().to_str())
                .and_then(|name| RelPath::new(format!("{dir}/{name}")).ok());
            let Some(path) = path else { return true };
            if rules.is_ignored(&path, is_dir) {
                return true;
            }
            if is_dir {
                todo.push(path);
            }
        }
    }
    false
}

impl FolderTask {
    /// Reads `.filesyncignore` again; when the rules changed, every path is judged anew.
    pub(super) fn reload_rules(&mut self) {
        self.rules_stale = false;
        match IgnoreRules::load(&self.cfg.path) {
            Ok(rules) => {
                if self.rules_error.take().is_some() {
                    tracing::info!(folder = %self.cfg.name, "{IGNORE_FILE} is valid again");
                }
                if rules.fingerprint() != self.rules.fingerprint() {
                    self.shared_rules.send_replace(rules.clone());
                    self.rules = rules;
                    if let Err(e) = self.index().clear_remote_ignored() {
                        self.error(format!(
                            "cannot update the index for new ignore rules: {e:#}"
                        ));
                    }
                    self.full_scan("the ignore rules changed");
                }
            }
            Err(e) => {
                let msg = format!("{e}; this folder does not sync until it is fixed");
                if self.rules_error.as_ref() != Some(&msg) {
                    tracing::error!(folder = %self.cfg.name, "{msg}");
                }
                self.rules_error = Some(msg);
            }
        }
    }

    /// One round of work; true when more is ready to do without waiting for an event.
    pub(super) async fn step(&mut self) -> bool {
        // Read new rules before scanning, so a broken rule file is caught here and is
        // never pushed to the other devices.
        let rules_touched = self.scan_paths.iter().any(|p| p.as_str() == IGNORE_FILE);
        if self.rules_stale || rules_touched || self.rules_error.is_some() || self.scan_all {
            self.reload_rules();
        }
        if self.rules_error.is_some() {
            self.scan_paths.clear();
            self.scan_all = false;
            self.flushed.append(&mut self.flush_waiters);
            // A fixed rule file may come from another device: take that one path in.
            if let Err(e) = self.pull_rules_file().await {
                self.error(format!("{e:#}"));
            }
            self.finish_reverts();
            return false;
        }
        if self.scan_all || !self.scan_paths.is_empty() {
            self.run_scan();
        }
        self.finish_reverts();
        self.judge_deletes();
        if self.root_error.is_some()
            || self.marker_error.is_some()
            || self.paused
            || self.session.is_none()
            || !self.caught_up
        {
            return false;
        }
        let pulled = match self.pull_round().await {
            Ok(more) => more,
            Err(e) => {
                self.error(self.explain(&e));
                false
            }
        };
        let pushed = match self.push_round().await {
            Ok(more) => more,
            Err(e) => {
                self.error(self.explain(&e));
                false
            }
        };
        pulled || pushed || !self.scan_paths.is_empty()
    }

    fn run_scan(&mut self) {
        if self.root_error.is_some() && self.cfg.path.is_dir() {
            // The directory is back, maybe another one than was watched.
            self.start_watching();
        }
        if !self.marker_ok() {
            self.scan_all = false;
            self.scan_paths.clear();
            self.flushed.append(&mut self.flush_waiters);
            return;
        }
        let scope = if self.scan_all {
            Scope::All
        } else {
            Scope::Paths(std::mem::take(&mut self.scan_paths))
        };
        let full = self.scan_all;
        self.scan_all = false;
        let reason = self.scan_reason.take();
        if full {
            self.scan_paths.clear();
        }
        let started = Instant::now();
        let result = tokio::task::block_in_place(|| {
            let out = scan::scan(
                &self.cfg.path,
                self.index(),
                &scope,
                &self.id.device,
                &self.rules,
            )?;
            if !self.marker_still_there() {
                return Ok(None);
            }
            self.index().batch(|ix| {
                for row in out.changes.iter().chain(&out.refreshed) {
                    ix.put_local(row)?;
                }
                for path in &out.forget {
                    ix.remove_local(path)?;
                }
                Ok(())
            })?;
            Ok::<_, anyhow::Error>(Some(out))
        });
        match result {
            Ok(None) => {
                // Nothing the scan found is recorded: it may have walked another
                // directory. The folder looks again as it does for a missing root.
                self.root_error = Some(format!(
                    "the folder's directory {} changed during a scan; looking again",
                    self.cfg.path.display()
                ));
                self.marker_ok();
                self.flushed.append(&mut self.flush_waiters);
            }
            Ok(Some(out)) => {
                if self.receive_only() {
                    // A full scan settles every local change, those an earlier version
                    // of the daemon left too.
                    let settled = if full {
                        (self.index().dirty(usize::MAX >> 1, true))
                            .and_then(|all| self.settle_unsent(&all))
                    } else {
                        self.settle_unsent(&out.changes)
                    };
                    if let Err(e) = settled {
                        self.error(format!("cannot record the local changes: {e:#}"));
                    }
                }
                Counters::add(&self.counters.bytes_hashed, out.hashed_bytes);
                Counters::add(&self.counters.files_hashed, out.hashed_files);
                if full {
                    crate::lifecycle::release_free_memory();
                    self.last_full_scan = Instant::now();
                    self.last_scan = Some(ScanReport {
                        at_ms: unix_ms(),
                        reason: reason.unwrap_or_else(|| "requested".into()),
                        entries: out.entries,
                        hashed_files: out.hashed_files,
                        hashed_bytes: out.hashed_bytes,
                        millis: started.elapsed().as_millis() as u64,
                    });
                }
                if out
                    .changes
                    .iter()
                    .any(|r| r.entry.path.as_str() == IGNORE_FILE)
                {
                    self.rules_stale = true;
                }
                self.hold_fresh_deletes(&out.changes);
                self.deletes_changed(&out.changes);
                if !out.changes.is_empty() {
                    tracing::debug!(folder = %self.cfg.name, changes = out.changes.len(), "scanned");
                    let n = out.changes.len();
                    let what = format!("{n} local change{}", if n == 1 { "" } else { "s" });
                    self.emit(EventKind::Scanned, None, Some(what));
                }
                if full {
                    self.unsyncable = out.unsyncable;
                } else {
                    self.unsyncable
                        .retain(|u| !out.unsyncable.iter().any(|n| n.path == u.path));
                    self.unsyncable.extend(out.unsyncable);
                }
                self.root_error = None;
                self.scanned = true;
                self.flushed.append(&mut self.flush_waiters);
            }
            Err(e) => {
                let mut msg = self.explain(&e);
                if !self.cfg.path.is_dir() {
                    msg = guard::root_missing(self.cfg.name.as_str(), &msg);
                }
                if self.root_error.as_ref() != Some(&msg) {
                    tracing::error!(folder = %self.cfg.name, "{msg}");
                    self.emit(EventKind::Error, None, Some(msg.clone()));
                }
                self.root_error = Some(msg);
                self.flushed.append(&mut self.flush_waiters);
            }
        }
    }

    fn retrying(&self, path: &RelPath) -> bool {
        self.retry_at.contains_key(path)
    }

    /// Sets `path` aside after a failure, for twice as long as after its last one
    /// (RETRY_AFTER to RETRY_MAX), and reports `msg`.
    fn fail_path(&mut self, path: &RelPath, msg: String) {
        let delay = self
            .retry_delay
            .get(path)
            .map_or(RETRY_AFTER, |last| (*last * 2).min(RETRY_MAX));
        self.retry_delay.insert(path.clone(), delay);
        self.retry_at.insert(path.clone(), Instant::now() + delay);
        self.error(msg);
    }

    /// `e` in words; a full disk says so and names this folder ([`crate::fs::space::explain`]).
    pub(super) fn explain(&self, e: &anyhow::Error) -> String {
        crate::fs::space::explain(e, self.cfg.name.as_str(), &self.cfg.path)
    }

    /// Applies server entries we lack; true if a full batch was taken.
    async fn pull_round(&mut self) -> Result<bool> {
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
            return Ok(false);
        }
        moving.extend(
            self.index()
                .pending_renames()?
                .into_iter()
                .map(|(src, _)| src),
        );
        let needed = self.index().needed(PULL_BATCH)?;
        let full = needed.len() == PULL_BATCH;
        let root = self.root()?;
        let mut deletes = Vec::new();
        let mut files = Vec::new();
        for remote in needed {
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
                Action::Pull if remote.kind == EntryKind::File => files.push(remote),
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

    /// Whether the server's rename of `src` to `dst` is our own; if so it is confirmed:
    /// the old paths' entries have moved, and they are no longer held back.
    fn confirm_own_rename(&mut self, src: &RelPath, dst: &RelPath) -> Result<bool> {
        match self.index().local(dst)? {
            Some(mut own) if own.entry.renamed_from.as_ref() == Some(src) => {
                own.entry.renamed_from = None;
                self.index().put_local(&own)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Applies a directory rename the server made at `seq`: one rename on disk when the
    /// local directory is the one the server renamed, with nothing in the way; otherwise
    /// path by path (what the old directory holds here gets the server's tombstones, and
    /// the new paths are pulled like any entry, from local copies). False when a local
    /// change must be scanned first.
    async fn apply_rename(&mut self, seq: u64, src: &RelPath, dst: &RelPath) -> Result<bool> {
        let local_src = self.index().local(src)?;
        let local_dst = self.index().local(dst)?;
        let root = self.root()?;
        // A path that cannot even be looked at (a parent of it here is a file or a
        // symlink: made by this device, in conflict with the server's directory) rules
        // out a rename on disk; path by path, that conflict is settled like any other.
        let looked = [(src, local_src.as_ref()), (dst, local_dst.as_ref())]
            .into_iter()
            .map(|(path, local)| self.disk_matches(&root, path, local))
            .collect::<Vec<_>>();
        if looked.iter().any(|m| matches!(m, Ok(false))) {
            return Ok(false);
        }
        let blocked = looked.into_iter().find_map(Result::err);
        if let Some(e) = &blocked {
            tracing::info!(folder = %self.cfg.name, from = %src, to = %dst, "cannot rename here ({e:#}); moving it path by path");
        }
        let below_src = self.index().local_under(src)?;
        let whole = local_src
            .as_ref()
            .is_some_and(|r| !r.entry.deleted && r.entry.kind == EntryKind::Dir)
            && !self.index().local_under(dst)?.iter().any(|r| !r.entry.deleted)
            && !self.rules.is_ignored(dst, true)
            // A version newer than the rename was made at the old path afterwards.
            && below_src.iter().all(|r| r.entry.seq < seq)
            && blocked.is_none()
            // Ignored files would move along, to where a rule anchored at the old path
            // no longer holds them back, and the next scan would upload them. Path by
            // path, they stay where they are.
            && !holds_ignored(&self.cfg.path, src, &self.rules);
        if whole && self.make_parents(dst).await {
            match self
                .root()
                .and_then(|root| tree::rename_dir(&root, src, dst))
            {
                Ok(_) => {
                    self.index().batch(|ix| ix.move_local(src, dst))?;
                    self.scan_paths.push(dst.clone());
                    tracing::info!(folder = %self.cfg.name, from = %src, to = %dst, "renamed a directory");
                    return Ok(true);
                }
                Err(e) => {
                    tracing::warn!(folder = %self.cfg.name, from = %src, to = %dst, "cannot rename here ({e:#}); moving it path by path")
                }
            }
        }
        self.index().batch(|ix| {
            // Later renames were taken into the server's entries when they arrived, and
            // moved what was below their old paths then: a tombstone made now at an old
            // path goes where they took the rest, or the next rename would carry the
            // local row alone to a path the server has nothing at.
            let renames = ix.renames(seq, u64::MAX)?;
            for row in below_src.iter().filter(|r| !r.entry.deleted) {
                let mut gone = row.entry.clone();
                gone.deleted = true;
                gone.seq = seq;
                gone.renamed_from = None;
                let (path, as_of) = index::moved_by(&gone.path, seq, &renames);
                gone.path = path;
                ix.put_remote(&gone, as_of)?;
            }
            Ok(())
        })?;
        Ok(true)
    }

    /// Creates the directories above `path` that the server has and this disk lacks;
    /// false if one cannot be made.
    async fn make_parents(&mut self, path: &RelPath) -> bool {
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

    /// While our rule file is broken, applies a newer one from the server, unless the
    /// local file has changes of its own (the user is fixing it here).
    async fn pull_rules_file(&mut self) -> Result<()> {
        if self.session.is_none() || !self.caught_up {
            return Ok(());
        }
        let path = RelPath::new(IGNORE_FILE).expect("valid path");
        let (Some(remote), local) = (self.index().remote(&path)?, self.index().local(&path)?)
        else {
            return Ok(());
        };
        if plan::decide(local.as_ref(), Some(&remote)) == Action::Pull
            && !remote.deleted
            && self.disk_matches(&self.root()?, &path, local.as_ref())?
            && self.apply(&remote).await
        {
            self.reload_rules();
        }
        Ok(())
    }

    /// Whether the disk still shows what the index says at `path`. If not, a local change
    /// has not been scanned yet: scan it before anything overwrites it.
    fn disk_matches(
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

    async fn apply(&mut self, remote: &Entry) -> bool {
        let session = self
            .session
            .clone()
            .expect("pulls run only while connected");
        let root = match self.root() {
            Ok(root) => root,
            Err(e) => return self.applied(remote, Err(e)),
        };
        let result = pull::apply(
            &root,
            self.index(),
            &session,
            remote,
            &self.counters,
            &self.partials,
        )
        .await;
        self.applied(remote, result)
    }

    /// Fetches several files at once, so that small files do not wait for each other's
    /// round trips and fsyncs, and records them in one index transaction.
    async fn apply_files(&mut self, files: Vec<Entry>) -> Result<bool> {
        if files.is_empty() {
            return Ok(false);
        }
        let session = self
            .session
            .clone()
            .expect("pulls run only while connected");
        let root = &self.root()?;
        let (index, counters, partials) = (self.index(), &self.counters, &self.partials);
        let results: Vec<(Entry, Result<stat::Stat>)> = futures::stream::iter(files)
            .map(|remote| {
                let session = &session;
                async move {
                    let result =
                        pull::apply(root, index, session, &remote, counters, partials).await;
                    (remote, result)
                }
            })
            .buffered(PULL_FILES)
            .collect()
            .await;
        self.index().begin()?;
        let mut progress = false;
        for (remote, result) in results {
            progress |= self.applied(&remote, result);
        }
        self.index().commit()?;
        Ok(progress)
    }

    /// Records the outcome of applying `remote`; true if it was applied.
    fn applied(&mut self, remote: &Entry, result: Result<stat::Stat>) -> bool {
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
            Err(e) => {
                let lacks = e.chain().any(|c| c.is::<session::ServerLacks>());
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
        let now = unix_secs();
        let aside = plan::conflict_path(&remote.path, now, self.id.device.as_str());
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

    /// Sends local changes the server lacks; true if a full batch went out.
    async fn push_round(&mut self) -> Result<bool> {
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
                    bytes += conn::entry_size(&entry);
                    let change = Change {
                        entry,
                        base_seq: base,
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
        let session = self
            .session
            .clone()
            .expect("pushes run only while connected");
        session.push(id, live).await?;
        Counters::add(&self.counters.pushes, 1);
        self.inflight_paths
            .extend(entries.iter().map(|e| e.path.clone()));
        self.inflight.insert(id, entries);
        Ok(self.inflight.len() < MAX_INFLIGHT)
    }

    pub(super) fn on_push_result(&mut self, id: u64, outcomes: Vec<PushOutcome>) -> Result<()> {
        let Some(entries) = self.inflight.remove(&id) else {
            return Ok(());
        };
        for e in &entries {
            self.inflight_paths.remove(&e.path);
            self.unconfirmed.remove(&e.path);
        }
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
    fn rebase_on_own_push(&mut self, row: &mut LocalRow, remote: &Entry) -> Result<()> {
        let ours = self
            .unconfirmed
            .get(&remote.path)
            .is_some_and(|pushed| pushed.iter().any(|p| p.same_content(remote)));
        if !ours {
            return Ok(());
        }
        // The server has it: nothing more to remember about that push.
        self.unconfirmed.remove(&remote.path);
        if row.dirty && row.entry.seq < remote.seq && !row.entry.same_content(remote) {
            row.entry.seq = remote.seq;
            self.index().put_local(row)?;
            tracing::debug!(folder = %self.cfg.name, path = %remote.path, seq = remote.seq, "our earlier push was taken; pushing our later edit on top of it");
        }
        Ok(())
    }

    /// The server did not take our rename of `src` to `dst`: it is sent path by path
    /// instead. What came from the old directory gets a tombstone there, based on the
    /// version it was, and is new at its new path.
    pub(super) fn unpair_rename(&mut self, src: &RelPath, dst: &RelPath) -> Result<()> {
        let rows = self.index().local_under(dst)?;
        let src_seq = self.index().remote(src)?.map_or(0, |r| r.seq);
        let me = self.id.device.clone();
        self.index().batch(|ix| {
            for mut row in rows {
                let Some(old_path) = row.entry.path.rebase(dst, src) else {
                    continue;
                };
                let base = if old_path == *src {
                    src_seq
                } else {
                    row.entry.seq
                };
                if base > 0 {
                    let mut gone = row.entry.clone();
                    gone.path = old_path;
                    gone.deleted = true;
                    gone.seq = base;
                    gone.origin = me.clone();
                    gone.renamed_from = None;
                    ix.put_local(&LocalRow {
                        entry: gone,
                        inode: 0,
                        dirty: true,
                    })?;
                }
                if row.entry.deleted {
                    ix.remove_local(&row.entry.path)?;
                } else {
                    row.entry.seq = 0;
                    row.entry.renamed_from = None;
                    row.dirty = true;
                    ix.put_local(&row)?;
                }
            }
            Ok(())
        })
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
            row.dirty = !(row.entry.same_content(&pushed));
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
