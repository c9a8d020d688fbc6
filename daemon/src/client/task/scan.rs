//! Taking in what changed on disk: the watcher and when full rescans are due, the scan
//! itself, the ignore rules it reads first (and a fixed rule file from the server while
//! ours is broken), and the folder's side
//! of [`crate::client::guard`]: the folder marker checked before each scan and the
//! deletes judged before they are pushed.

use std::time::Duration;

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::control::{EventKind, ScanReport};
use filesync_proto::wire::EntryKind;
use tokio::time::Instant;

use super::{DELETE_BURST, FolderTask, RENAME_WINDOW, scanning};
use crate::client::guard::{self, Hold, Marker};
use crate::client::plan::{self, Action};
use crate::conn::Counters;
use crate::events::unix_ms;
use crate::fs::ignore::IgnoreRules;
use crate::fs::watch::{self as watcher, WatchEvent};
use crate::fs::{IGNORE_FILE, MARKER};
use crate::index::{LocalRow, Meta};
use crate::lifecycle::metrics;
use crate::scan::{self, ScanOutcome, Scope};

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
                    self.forget_unholdable();
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

    pub(super) fn run_scan(&mut self) {
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
        // What a receive-only folder scans is never pushed: no content kept for it.
        let keep = if self.receive_only() {
            0
        } else {
            self.contents.room()
        };
        if full {
            self.start_full_scan(reason, keep);
            return;
        }
        let started = Instant::now();
        let result = tokio::task::block_in_place(|| {
            let out = scan::scan_keeping(
                &self.cfg.path,
                self.index(),
                &scope,
                &self.id.device,
                &self.rules,
                keep,
                None,
            )?;
            if !self.marker_still_there() {
                return Ok(None);
            }
            scanning::record(self.index(), &out)?;
            Ok::<_, anyhow::Error>(Some(out))
        });
        self.took_in(result, false, reason, started);
    }

    /// What every recorded piece of local changes starts: rules reloaded if the ignore
    /// file changed, the delete guard told, and a `Scanned` event.
    pub(super) fn took_changes(&mut self, changes: &[LocalRow]) {
        if changes.iter().any(|r| r.entry.path.as_str() == IGNORE_FILE) {
            self.rules_stale = true;
        }
        self.deletes_changed(changes);
        if !changes.is_empty() {
            tracing::debug!(folder = %self.cfg.name, changes = changes.len(), "scanned");
            let n = changes.len();
            let what = format!("{n} local change{}", if n == 1 { "" } else { "s" });
            self.emit(EventKind::Scanned, None, Some(what));
        }
    }

    /// Takes in the end of a scan that began at `started`, `full` or of some paths: what
    /// it found is recorded by now; `None` when the folder's directory changed under it.
    pub(super) fn took_in(
        &mut self,
        result: Result<Option<ScanOutcome>>,
        full: bool,
        reason: Option<String>,
        started: Instant,
    ) {
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
            Ok(Some(mut out)) => {
                self.contents.keep(std::mem::take(&mut out.contents));
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
                    self.last_full_scan = Instant::now();
                    let (name, server) = (self.cfg.name.as_str(), &self.cfg.server);
                    metrics::recorded::scan_finished(name, server, started.elapsed());
                    self.last_scan = Some(ScanReport {
                        at_ms: unix_ms(),
                        reason: reason.unwrap_or_else(|| "requested".into()),
                        entries: out.entries,
                        hashed_files: out.hashed_files,
                        hashed_bytes: out.hashed_bytes,
                        millis: started.elapsed().as_millis() as u64,
                    });
                }
                self.hold_fresh_deletes(&out.changes);
                self.took_changes(&out.changes);
                if full {
                    self.unsyncable = out.unsyncable;
                    if let Err(e) = self.judge_names_again() {
                        self.error(format!("cannot update the index: {e:#}"));
                    }
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

    /// While our rule file is broken, applies a newer one from the server, unless the
    /// local file has changes of its own (the user is fixing it here).
    pub(super) async fn pull_rules_file(&mut self) -> Result<()> {
        // Nothing is pulled while a full scan runs (see `scanning`).
        if self.session.is_none() || !self.caught_up || self.scanning.is_some() {
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

    pub(super) fn on_watch(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Changed(paths) => self.scan_paths.extend(paths),
            WatchEvent::Rescan(why) => {
                tracing::info!(folder = %self.cfg.name, "full rescan: {why}");
                self.full_scan(&why);
            }
        }
    }

    /// Asks for a scan of the whole folder, for `why` (shown in status).
    pub(super) fn full_scan(&mut self, why: &str) {
        self.scan_all = true;
        self.scan_reason.get_or_insert_with(|| why.to_string());
    }

    /// Starts the watcher; what it cannot see is left to [`Self::rescan_every`].
    pub(super) fn start_watching(&mut self) {
        // The old watcher's watches go first: they count against the same limit.
        self.watcher = None;
        let w = watcher::watch(&self.cfg.path);
        if let Some(problem) = w.problem() {
            tracing::warn!(folder = %self.cfg.name, "{problem}; rescanning every {} s meanwhile", self.rescan_every().as_secs());
        }
        self.watcher = Some(w);
    }

    /// Why the watcher does not see every change, if it does not.
    pub(super) fn watch_problem(&self) -> Option<String> {
        self.watcher.as_ref().and_then(watcher::Watcher::problem)
    }

    /// How long after a full scan the next one is due.
    pub(super) fn rescan_every(&self) -> Duration {
        match self.watch_problem() {
            Some(_) => watcher::fallback_rescan(self.cfg.rescan_interval),
            None => self.cfg.rescan_interval,
        }
    }

    /// The periodic rescan; a watcher that could not see everything is started again
    /// first, so that it recovers once the limit is raised.
    pub(super) fn periodic_rescan(&mut self) {
        if self.watch_problem().is_some() {
            self.start_watching();
            self.full_scan("periodic, the watcher does not see every change");
        } else {
            self.full_scan("periodic");
        }
        // Not due again before this scan has run.
        self.last_full_scan = Instant::now();
    }
}

impl FolderTask {
    /// Checks the folder marker before a scan; false while it is missing, and then
    /// nothing may be scanned, sent or applied.
    pub(super) fn marker_ok(&mut self) -> bool {
        let root = self.cfg.path.clone();
        // A missing root is the scan's to report.
        if !root.is_dir() {
            return true;
        }
        let present = root.join(MARKER).symlink_metadata().is_ok();
        let made = self.index().meta(Meta::MarkerMade).ok().flatten() == Some(1);
        let decision = if present {
            Marker::Present
        } else {
            // When in doubt, the folder counts as synced and non-empty is not assumed:
            // both lean towards stopping rather than sending deletes.
            let synced = self.index().has_local().unwrap_or(true);
            let empty = std::fs::read_dir(&root).map_or(true, |mut d| d.next().is_none());
            guard::check_marker(false, made, synced, empty)
        };
        match decision {
            Marker::Present => {
                if !made {
                    self.note_marker_made();
                }
                if self.marker_error.take().is_some() {
                    tracing::info!(folder = %self.cfg.name, "the folder marker is back; syncing again");
                    self.scan_all = true;
                    self.start_watching();
                }
                true
            }
            Marker::Create { upgrade } => {
                if let Err(e) = self.write_marker() {
                    self.error(e);
                } else if upgrade {
                    tracing::info!(folder = %self.cfg.name, "wrote the folder marker {} in a folder that synced before markers existed", root.join(MARKER).display());
                }
                true
            }
            Marker::Missing => {
                let msg = guard::marker_missing(self.cfg.name.as_str(), &root);
                if self.marker_error.as_ref() != Some(&msg) {
                    tracing::error!(folder = %self.cfg.name, "{msg}");
                    self.emit(EventKind::Error, None, Some(msg.clone()));
                }
                self.marker_error = Some(msg);
                false
            }
        }
    }

    /// After a scan, before anything it found is recorded: whether the marker is still
    /// there, when this device made one. The directory may have been replaced between
    /// the check before the scan and the walk (a directory moved away and an empty one
    /// made in its place): then the walk saw another directory, whose missing files are
    /// no deletes.
    pub(super) fn marker_still_there(&self) -> bool {
        let made = self.index().meta(Meta::MarkerMade).ok().flatten() == Some(1);
        !made || self.cfg.path.join(MARKER).symlink_metadata().is_ok()
    }

    /// Writes the marker and records that it was made.
    fn write_marker(&mut self) -> Result<(), String> {
        let path = self.cfg.path.join(MARKER);
        std::fs::write(&path, guard::marker_text(self.cfg.name.as_str())).map_err(|e| {
            format!(
                "cannot write the folder marker {}: {e}; check the folder's permissions",
                path.display()
            )
        })?;
        self.note_marker_made();
        Ok(())
    }

    fn note_marker_made(&mut self) {
        if let Err(e) = self.index().set_meta(Meta::MarkerMade, 1) {
            self.error(format!(
                "cannot record the folder marker in the index: {e:#}"
            ));
        }
    }

    /// `filesyncctl rescan FOLDER --recreate-marker`: the user says this directory is
    /// the folder. It is taken in like a folder added on a new device: what it holds is
    /// merged with the server's (differences become conflicts), and what it lacks comes
    /// back from the server, so an emptied directory deletes nothing anywhere.
    pub(super) fn recreate_marker(&mut self) -> Result<String, String> {
        if !self.cfg.path.is_dir() {
            return Err(format!(
                "folder root {} does not exist; mount or create it first",
                self.cfg.path.display()
            ));
        }
        // What a running scan found is of the index about to be forgotten.
        self.stop_scan();
        self.index()
            .forget_local()
            .map_err(|e| format!("cannot reset the index of folder {}: {e:#}", self.cfg.name))?;
        self.write_marker()?;
        self.marker_error = None;
        self.hold = None;
        self.hold_deletes.clear();
        self.scan_all = true;
        tracing::info!(folder = %self.cfg.name, "folder marker written again on request; merging the folder with the server's copy");
        Ok(format!(
            "wrote {}; folder {} syncs again: what it lacks comes back from the server, \
             nothing is deleted",
            self.cfg.path.join(MARKER).display(),
            self.cfg.name
        ))
    }

    /// Before a push: holds the pending deletes back when too many of the folder's files
    /// went at once, and lets go when the files are back. The hold is decided only when
    /// deletes are about to be pushed: while every pending delete is still in the rename
    /// window, any of them may yet turn out to be a move (a directory moved in two
    /// watcher batches, whose content then lives on and no longer counts). Once one is
    /// due, all the pending deletes count, those of the same burst still in the window
    /// too, so that a mass delete the watcher saw in several batches is judged whole.
    /// Judged when `judge_due` says something changed; the first scan after a start
    /// judges whatever is pending, since a hold is not kept across restarts.
    pub(super) fn judge_deletes(&mut self) {
        if !std::mem::take(&mut self.judge_due) {
            return;
        }
        // A receive-only folder sends no delete: nothing to hold back.
        if self.receive_only() {
            self.hold = None;
            return;
        }
        let counts = self
            .index()
            .pending_file_deletes()
            .and_then(|d| Ok((d, self.index().totals()?.files)));
        let (pending, live) = match counts {
            Ok(c) => c,
            Err(e) => {
                self.error(format!("cannot count the folder's deletes: {e:#}"));
                return;
            }
        };
        let due = self.hold.is_some() || pending.iter().any(|p| !self.hold_deletes.contains_key(p));
        let deleted = pending.len() as u64;
        let hold = if !due || self.deletes_confirmed {
            None
        } else {
            Hold::judge(
                deleted,
                live + deleted,
                self.cfg.max_delete_percent,
                self.cfg.max_delete_min,
            )
        };
        match (&self.hold, &hold) {
            (None, Some(h)) => {
                let msg = h.message(self.cfg.name.as_str());
                tracing::warn!(folder = %self.cfg.name, "{msg}");
                self.emit(EventKind::Error, None, Some(msg));
            }
            (Some(_), None) => {
                tracing::info!(folder = %self.cfg.name, deleted, "the mass delete is no longer held back");
            }
            _ => {}
        }
        self.hold = hold;
    }

    /// Holds the deletes among a scan's `changes` back for the rename window. Deletes
    /// already waiting wait as long as the new ones, up to DELETE_BURST after the first of
    /// them: a mass delete the watcher hands over in several batches (a slow `rm -r`)
    /// is judged by the guard whole, instead of its first batches leaving on their own.
    pub(super) fn hold_fresh_deletes(&mut self, changes: &[LocalRow]) {
        let now = Instant::now();
        let until = now + RENAME_WINDOW;
        let mut fresh = changes.iter().filter(|r| r.entry.deleted).peekable();
        if fresh.peek().is_none() {
            return;
        }
        if self.hold_deletes.is_empty() {
            self.burst_start = now;
        }
        let longest = until.min(self.burst_start + DELETE_BURST);
        for at in self.hold_deletes.values_mut() {
            *at = (*at).max(longest);
        }
        for row in fresh {
            self.hold_deletes.insert(row.entry.path.clone(), until);
        }
    }

    /// After a scan that found `changes`: the deletes are judged again before the next
    /// push, and new file deletes need a confirmation of their own.
    pub(super) fn deletes_changed(&mut self, changes: &[LocalRow]) {
        if changes
            .iter()
            .any(|r| r.entry.deleted && r.entry.kind == EntryKind::File)
        {
            self.deletes_confirmed = false;
        }
        self.judge_due |= !changes.is_empty() || !self.scanned;
    }

    /// `filesyncctl resume FOLDER --confirm-deletes`: the held deletes go out.
    pub(super) fn confirm_deletes(&mut self) {
        if let Some(h) = self.hold.take() {
            tracing::info!(folder = %self.cfg.name, deleted = h.deleted, "deletes confirmed; sending them");
            self.deletes_confirmed = true;
        }
    }
}
