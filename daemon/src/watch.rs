//! The filesystem watcher of one folder: notify with a short debounce, turned into
//! batches of relative paths for the folder's task to scan.
//!
//! The watcher is only a hint. When it loses events (queue overflow) or cannot watch
//! everything, it asks for a full scan, and the periodic rescan catches anything else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use filesync_proto::RelPath;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::store;

/// How long the debouncer waits for a burst of events (an editor's save) to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(30);

#[derive(Debug)]
pub enum WatchEvent {
    Changed(Vec<RelPath>),
    /// Events were lost or cannot be trusted: scan everything.
    Rescan(String),
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Starts watching `root`; events arrive on `tx`. If the channel is full the batch is
/// replaced by a rescan request rather than blocking the watcher thread.
pub fn watch(root: &Path, tx: mpsc::Sender<WatchEvent>) -> notify::Result<Watcher> {
    let root_buf: PathBuf = root.to_path_buf();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let event = match result {
            Ok(events) => {
                if events.iter().any(|e| e.need_rescan()) {
                    WatchEvent::Rescan("the watcher lost events (queue overflow)".into())
                } else {
                    let mut paths: Vec<RelPath> = events
                        .iter()
                        .flat_map(|e| e.paths.iter())
                        .filter_map(|p| relative(&root_buf, p))
                        .collect();
                    paths.sort();
                    paths.dedup();
                    if paths.is_empty() {
                        return;
                    }
                    WatchEvent::Changed(paths)
                }
            }
            Err(errors) => WatchEvent::Rescan(format!("watcher error: {}", errors[0])),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
            let _ = tx.try_send(WatchEvent::Rescan("too many changes at once".into()));
        }
    })?;
    debouncer.watch(root, RecursiveMode::Recursive)?;
    Ok(Watcher {
        _debouncer: debouncer,
    })
}

/// The folder-relative path of an event, or `None` for the root itself, the daemon's
/// own files, and names that cannot be synced (the scan reports those).
fn relative(root: &Path, path: &Path) -> Option<RelPath> {
    let rel = RelPath::from_local(root, path).ok()?;
    if rel.components().any(store::is_reserved) {
        return None;
    }
    Some(rel)
}
