//! The folder task's side of [`crate::client::guard`]: checks the folder marker before
//! each scan and judges the deletes about to be pushed, keeping the task's state about
//! both.

use filesync_proto::control::EventKind;
use filesync_proto::wire::EntryKind;
use tokio::time::Instant;

use super::{DELETE_BURST, FolderTask, RENAME_WINDOW};
use crate::client::guard::{self, Hold, Marker};
use crate::fs::MARKER;
use crate::index::{LocalRow, Meta};

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
