//! What the folder shows: its status, published after every step, with the state its
//! [`Phase`] gives and the totals counted from its index; and its events and errors.

use filesync_proto::RelPath;
use filesync_proto::control::{EventKind, FolderState, FolderStatus};

use super::FolderTask;
use super::phase::{Inputs, Phase};
use crate::events::unix_secs;
use crate::index::Meta;

impl FolderTask {
    /// Reports an event of this folder, about `path` when there is one.
    pub(super) fn emit(&self, kind: EventKind, path: Option<&RelPath>, detail: Option<String>) {
        self.events.emit(
            (self.cfg.name.as_str(), &self.cfg.path),
            kind,
            path.map(RelPath::as_str),
            detail,
        );
    }

    /// Reports an error of this folder: logged, an event, and its last error.
    pub(super) fn error(&mut self, msg: String) {
        tracing::warn!(folder = %self.cfg.name, "{msg}");
        self.emit(EventKind::Error, None, Some(msg.clone()));
        self.last_error = Some(msg);
    }

    /// The folder's phase now; `work_left` as [`Inputs::work_left`] says.
    pub(super) fn phase(&self, work_left: bool) -> Phase {
        Phase::of(Inputs {
            paused: self.paused,
            rules_broken: self.rules_error.is_some(),
            away: self.away(),
            scanned: self.scanned,
            held: self.hold.is_some(),
            connected: self.session.is_some(),
            caught_up: self.caught_up,
            work_left,
        })
    }

    pub(super) fn publish(&mut self) {
        self.publish_busy(false);
    }

    /// Publishes the status; `busy` when the loop goes straight on to more work: a busy
    /// folder is never shown idle. The totals are counters the index keeps, read at once
    /// whatever is pending.
    pub(super) fn publish_busy(&mut self, busy: bool) {
        let totals = self
            .index
            .as_ref()
            .and_then(|ix| ix.totals().ok())
            .unwrap_or_default();
        let seq = self
            .index
            .as_ref()
            .and_then(|ix| ix.meta(Meta::Since).ok().flatten())
            .unwrap_or(0) as u64;
        // What a receive-only folder does not send is not pending: its local changes.
        let (up_files, up_bytes, local_changes) = if self.receive_only() {
            (0, 0, self.local_changes(totals.up_files))
        } else {
            (totals.up_files, totals.up_bytes, Default::default())
        };
        let pending =
            up_files + totals.down_files > 0 || !self.scan_paths.is_empty() || self.scan_all;
        let state = self.phase(pending || busy).state();
        if state == FolderState::Idle {
            // In sync: no download is left to resume any partial one.
            self.partials.sweep(&self.cfg.path);
            self.last_sync = Some(unix_secs());
            self.last_error = None;
            self.retry_delay.clear();
        }
        // The meter keeps the rate; a step does not change it. One borrow at a time: a
        // second read of the watch while the meter waits to write would deadlock.
        let (rate_up_bps, rate_down_bps) = {
            let current = self.status.borrow();
            (current.rate_up_bps, current.rate_down_bps)
        };
        let status = FolderStatus {
            name: self.cfg.name.to_string(),
            path: self.cfg.path.display().to_string(),
            server: self.cfg.server.clone(),
            mode: self.effective_mode(),
            state,
            connected: self.session.is_some(),
            scanned: self.scanned,
            files: totals.files,
            bytes: totals.bytes,
            pending_up_files: up_files,
            pending_up_bytes: up_bytes,
            pending_down_files: totals.down_files,
            pending_down_bytes: totals.down_bytes,
            seq,
            last_sync: self.last_sync,
            // What `filesyncctl conflicts` lists: the copies recorded in the index.
            conflicts: totals.conflicts,
            last_error: self
                .rules_error
                .clone()
                .or_else(|| self.marker_error.clone())
                .or_else(|| self.root_error.clone())
                .or_else(|| self.hold.map(|h| h.message(self.cfg.name.as_str())))
                .or_else(|| self.last_error.clone()),
            unsyncable: self.unsyncable_all(),
            counters: self.counters.snapshot(),
            rate_up_bps,
            rate_down_bps,
            index_bytes: crate::index::size_on_disk(&crate::client::index_file(
                &self.id.state_dir,
                &self.cfg,
            )),
            last_scan: self.last_scan.clone(),
            watch_problem: self.watch_problem().map(|p| {
                format!(
                    "{p}; rescanning every {} s meanwhile",
                    self.rescan_every().as_secs()
                )
            }),
            account: self.cfg.account.as_ref().map(ToString::to_string),
            owner: crate::client::account::owner(&self.cfg.name, self.cfg.account.as_ref()),
            local_changes,
        };
        self.status.send_replace(status);
    }
}
