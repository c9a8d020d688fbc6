//! The filesystem watcher of one folder: raw notify events, debounced per path, handed
//! to the folder's task as batches of relative paths to scan.
//!
//! We do not use a debouncer that merges events: it turns "created, then removed" into
//! nothing, but in between our own apply may have put that file in the index, and then
//! its removal would go unseen. Here an event only says "look at this path"; the scan
//! compares the disk with the index and finds the net change itself.
//!
//! A path is handed over once it has been quiet for [`DEBOUNCE`], so a file written in
//! several bursts is scanned once, complete. The queue never drops anything and never
//! grows past a bound (beyond it, the paths are replaced by a full rescan). The watcher
//! is only a hint all the same: the periodic rescan catches what it cannot see.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use filesync_proto::RelPath;
use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store;

/// How long a path must be quiet before it is scanned: long enough for an editor's
/// save (temp file, rename) or a write in bursts to finish, short enough to feel instant.
pub const DEBOUNCE: Duration = Duration::from_millis(30);
/// Most paths queued before the queue turns into a full rescan.
const MAX_QUEUED: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Changed(Vec<RelPath>),
    /// Events were lost or cannot be trusted: scan everything.
    Rescan(String),
}

#[derive(Default)]
struct Queued {
    /// Each path with the time of its latest event.
    paths: HashMap<RelPath, Instant>,
    rescan: Option<String>,
}

/// Changes seen by the watcher and not yet taken by the folder's task.
#[derive(Default)]
pub struct WatchQueue {
    queued: Mutex<Queued>,
    ready: Notify,
}

impl WatchQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, paths: impl IntoIterator<Item = RelPath>, at: Instant) {
        let mut q = self.lock();
        if q.rescan.is_none() {
            q.paths.extend(paths.into_iter().map(|p| (p, at)));
            if q.paths.len() > MAX_QUEUED {
                q.paths.clear();
                q.rescan = Some("too many changes at once".into());
            }
        }
        drop(q);
        self.ready.notify_one();
    }

    fn rescan(&self, why: String) {
        let mut q = self.lock();
        q.paths.clear();
        q.rescan.get_or_insert(why);
        drop(q);
        self.ready.notify_one();
    }

    /// Waits until something is due, then takes it.
    pub async fn next(&self) -> WatchEvent {
        loop {
            let wake = match self.take(Instant::now()) {
                Ok(ev) => return ev,
                Err(wake) => wake,
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.ready.notified() => {}
                    }
                }
                None => self.ready.notified().await,
            }
        }
    }

    /// The due paths (quiet for DEBOUNCE), or when to look again (`None`: nothing queued).
    fn take(&self, now: Instant) -> Result<WatchEvent, Option<Instant>> {
        let mut q = self.lock();
        if let Some(why) = q.rescan.take() {
            q.paths.clear();
            return Ok(WatchEvent::Rescan(why));
        }
        let mut due: Vec<RelPath> = Vec::new();
        let mut wake: Option<Instant> = None;
        q.paths.retain(|path, at| {
            let ready_at = *at + DEBOUNCE;
            if ready_at <= now {
                due.push(path.clone());
                false
            } else {
                wake = Some(wake.map_or(ready_at, |w| w.min(ready_at)));
                true
            }
        });
        if due.is_empty() {
            return Err(wake);
        }
        due.sort();
        Ok(WatchEvent::Changed(due))
    }
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    pub queue: Arc<WatchQueue>,
}

/// Starts watching `root`.
pub fn watch(root: &Path) -> notify::Result<Watcher> {
    let queue = Arc::new(WatchQueue::default());
    let q = queue.clone();
    let root_buf: PathBuf = root.to_path_buf();
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) if event.need_rescan() => {
                q.rescan("the watcher lost events (queue overflow)".into())
            }
            // Reads (open, close-without-write) change nothing; a reader polling the
            // folder must not turn into a stream of scans.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            // The folder's directory itself moved away or deleted: its paths say nothing
            // of it, and only a scan of the whole folder finds out what is there now.
            Ok(event) if moved_or_removed(&event.kind) && event.paths.contains(&root_buf) => {
                q.rescan("the folder's directory was moved or deleted".into())
            }
            Ok(event) => q.push(
                event.paths.iter().filter_map(|p| relative(&root_buf, p)),
                Instant::now(),
            ),
            Err(e) => q.rescan(format!("watcher error: {e}")),
        })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(Watcher {
        _watcher: watcher,
        queue,
    })
}

/// The next watcher event, or never when there is no watcher.
pub async fn next_event(watcher: Option<&Watcher>) -> WatchEvent {
    match watcher {
        Some(w) => w.queue.next().await,
        None => std::future::pending().await,
    }
}

fn moved_or_removed(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn paths_are_due_once_quiet_and_never_dropped() {
        let q = WatchQueue::default();
        let t0 = Instant::now();
        assert_eq!(q.take(t0), Err(None));
        q.push([p("b"), p("a")], t0);
        q.push([p("a")], t0 + DEBOUNCE / 2);
        // "b" is due after one window; "a" had a later event and waits for its own.
        assert_eq!(q.take(t0 + DEBOUNCE), Ok(WatchEvent::Changed(vec![p("b")])));
        assert_eq!(
            q.take(t0 + DEBOUNCE),
            Err(Some(t0 + DEBOUNCE / 2 + DEBOUNCE))
        );
        assert_eq!(
            q.take(t0 + 2 * DEBOUNCE),
            Ok(WatchEvent::Changed(vec![p("a")]))
        );
    }

    #[test]
    fn overflow_and_errors_become_a_rescan() {
        let q = WatchQueue::default();
        let t0 = Instant::now();
        q.push((0..=MAX_QUEUED).map(|i| p(&format!("f{i}"))), t0);
        assert!(matches!(q.take(t0), Ok(WatchEvent::Rescan(_))));
        q.rescan("x".into());
        q.push([p("later")], t0);
        assert!(
            matches!(q.take(t0), Ok(WatchEvent::Rescan(_))),
            "a pending rescan covers later paths"
        );
        assert_eq!(q.take(t0 + DEBOUNCE), Err(None));
    }
}
