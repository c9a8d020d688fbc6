//! A full scan running beside the folder task: it walks and hashes on a blocking thread
//! with its own connection to the index and hands its pieces ([`scan::scan_streaming`])
//! over a bounded channel; the task records each piece in one transaction and pushes it
//! while the walk goes on. The end of the scan brings the deletes and the renames, and
//! is taken in as a scan of some paths is.
//!
//! While it runs, nothing is pulled: a file written here by a pull would be new to the
//! walk, which read the index before it began, and so look like a local change.

use anyhow::{Result, anyhow};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::FolderTask;
use crate::index::Index;
use crate::scan::{self, ScanOutcome};

/// Pieces waiting for the task at most: the walk waits beyond that.
const PIECES_QUEUED: usize = 2;

/// What the scan's thread sends: pieces, then its end.
pub(super) enum ScanMsg {
    Piece(ScanOutcome),
    Done(Result<ScanOutcome>),
}

/// A full scan under way.
pub(super) struct Running {
    /// Pieces and then the end, from the scan's thread. Dropping it stops the scan at
    /// its next piece (PIECE_EVERY at most).
    rx: mpsc::Receiver<ScanMsg>,
    /// Why it runs, for status.
    reason: Option<String>,
    started: Instant,
    /// Flushes asked for before it began, answered when it ends; those asked for
    /// meanwhile wait for the next scan, which sees what they wrote.
    waiters: Vec<oneshot::Sender<()>>,
}

/// The next message of the running scan; never, with none running.
pub(super) async fn next(running: Option<&mut Running>) -> ScanMsg {
    match running {
        Some(r) => r.rx.recv().await.unwrap_or_else(|| {
            ScanMsg::Done(Err(anyhow!(
                "the scan ended without an answer; it runs again"
            )))
        }),
        None => std::future::pending().await,
    }
}

/// Writes what a scan found to the index, in one transaction.
pub(super) fn record(index: &Index, out: &ScanOutcome) -> Result<()> {
    index.batch(|ix| {
        for row in out.changes.iter().chain(&out.refreshed) {
            ix.put_local(row)?;
        }
        for path in &out.forget {
            ix.remove_local(path)?;
        }
        Ok(())
    })
}

impl FolderTask {
    /// Starts a full scan on its own thread, keeping up to `keep` bytes of content.
    pub(super) fn start_full_scan(&mut self, reason: Option<String>, keep: usize) {
        let (tx, rx) = mpsc::channel(PIECES_QUEUED);
        let index_file = super::super::index_file(&self.id.state_dir, &self.cfg);
        let root = self.cfg.path.clone();
        let origin = self.id.device.clone();
        let rules = self.rules.clone();
        tokio::task::spawn_blocking(move || {
            let result = Index::open(&index_file).and_then(|index| {
                let mut sink = |piece| tx.blocking_send(ScanMsg::Piece(piece)).is_ok();
                scan::scan_streaming(&root, &index, &origin, &rules, keep, &mut sink)
            });
            let _ = tx.blocking_send(ScanMsg::Done(result));
        });
        self.scanning = Some(Running {
            rx,
            reason,
            started: Instant::now(),
            waiters: std::mem::take(&mut self.flush_waiters),
        });
    }

    /// Takes in a message of the running scan.
    pub(super) fn on_scan(&mut self, msg: ScanMsg) {
        match msg {
            ScanMsg::Piece(piece) => match self.take_piece(piece) {
                Ok(true) => {}
                Ok(false) => self.end_full_scan(Ok(None)),
                Err(e) => self.end_full_scan(Err(e)),
            },
            ScanMsg::Done(result) => {
                let result = result.and_then(|out| {
                    if !self.marker_still_there() {
                        return Ok(None);
                    }
                    record(self.index(), &out)?;
                    Ok(Some(out))
                });
                self.end_full_scan(result);
            }
        }
    }

    /// Records a piece and lets the next step push it; false when the folder's
    /// directory changed under the scan. Unless true, the scan ends.
    fn take_piece(&mut self, mut piece: ScanOutcome) -> Result<bool> {
        if piece.changes.is_empty() && piece.refreshed.is_empty() {
            return Ok(true);
        }
        if !self.marker_still_there() {
            return Ok(false);
        }
        record(self.index(), &piece)?;
        tracing::debug!(folder = %self.cfg.name, changes = piece.changes.len(), refreshed = piece.refreshed.len(), "recorded a piece of the scan");
        self.contents.keep(std::mem::take(&mut piece.contents));
        self.took_changes(&piece.changes);
        Ok(true)
    }

    /// Ends the running scan with `result` (`None`: the folder's directory changed
    /// under it), answering the flushes that waited for it.
    fn end_full_scan(&mut self, result: Result<Option<ScanOutcome>>) {
        let Some(running) = self.scanning.take() else {
            return;
        };
        let later = std::mem::replace(&mut self.flush_waiters, running.waiters);
        self.took_in(result, true, running.reason, running.started);
        self.flush_waiters.extend(later);
    }

    /// Stops the running scan, if any, without taking in what it found; a full scan
    /// runs again.
    pub(super) fn stop_scan(&mut self) {
        if let Some(running) = self.scanning.take() {
            self.flush_waiters.extend(running.waiters);
            self.full_scan(running.reason.as_deref().unwrap_or("requested"));
        }
    }
}
