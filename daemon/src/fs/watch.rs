//! The filesystem watcher of one folder: raw notify events, debounced per path, handed
//! to the folder's task as batches of relative paths to scan.
//!
//! We do not use a debouncer that merges events: it turns "created, then removed" into
//! nothing, but in between our own apply may have put that file in the index, and then
//! its removal would go unseen. Here an event only says "look at this path"; the scan
//! compares the disk with the index and finds the net change itself.
//!
//! A path is handed over once it has been quiet for [`DEBOUNCE`], so a file written in
//! several bursts is scanned once, complete; a file whose writer has just closed it
//! (inotify's close-write, with no event after it) is handed over at once, since that
//! writer has nothing more to add; and a file that is never quiet (a log, a long
//! download) is handed over at the latest [`MAX_DELAY`] after the first event it was
//! queued for, so that its other replicas follow it while it grows. The scan reads a
//! consistent snapshot of it or none (`scan::hash_stable`), and a write that overlapped
//! the read queued the path again. The queue never drops anything and never grows past a
//! bound (beyond it, the paths are replaced by a full rescan). The watcher is only a hint
//! all the same: the periodic rescan catches what it cannot see.
//!
//! notify's recursive inotify watcher can lose a directory: its walk of a directory just
//! created (or moved in) registers a directory moved below it a moment before under its
//! new path, with the watch descriptor its old path still holds; handling the move away
//! from the old path then removes that descriptor, and the directory is watched no more
//! (`mkdir new && mv old new/`, or our own apply of such a rename, hit it in a few
//! percent of tries here). Such a move away has no arrival in the tree (the new parent
//! was not watched yet), so each move away without one re-watches the directories added
//! in the last [`REWATCH_WINDOW`], once notify has handled it, and has them scanned for
//! what changed while they were not watched ([`Rewatch`]). Paired moves, every editor's
//! save and every download among them, cost a no-op round trip to notify's loop. On
//! Windows the root's one `ReadDirectoryChangesW` handle watches the whole subtree, so
//! nothing is lost and nothing is re-watched: a watch added there would hold a handle of
//! the directory open for good, and a directory deleted while a handle of it is open
//! stays until that handle closes.
//!
//! When the watcher cannot see everything — the tree needs more inotify watches than the
//! system allows (`fs.inotify.max_user_watches`), or it cannot start at all — it says so
//! ([`Watcher::problem`]) and the folder rescans often instead ([`fallback_rescan`]).
//! `FILESYNC_MAX_WATCHES=N`, a test and operations knob, makes a tree of more than N
//! directories count as over the limit, without touching the system-wide setting.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use filesync_proto::RelPath;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fs::is_reserved;

/// How long a path must be quiet before it is scanned: long enough for an editor's
/// save (temp file, rename) or a write in bursts to finish, short enough to feel instant.
/// A file its writer closed waits for nothing.
pub const DEBOUNCE: Duration = Duration::from_millis(30);
/// The longest a path waits to be scanned after the first event it was queued for, however
/// busy it stays: a file written without pause still reaches the other replicas, at
/// least one consistent version per MAX_DELAY (issue 17's goal for a file appended every
/// 10 ms: no replica more than 2.5 s behind).
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// Most paths queued before the queue turns into a full rescan.
const MAX_QUEUED: usize = 10_000;
/// How often a folder the watcher cannot fully see is rescanned (at most).
const FALLBACK_RESCAN: Duration = Duration::from_secs(60);
/// How long after notify added a directory's watches the handling of a move away
/// elsewhere may still take one of them away (see the module docs).
const REWATCH_WINDOW: Duration = Duration::from_secs(2);
/// Whether notify watches each directory of a recursive watch on its own, and can lose
/// one (inotify), rather than the whole subtree at once (Windows).
const WATCHES_EACH_DIRECTORY: bool = cfg!(not(windows));
/// The environment variable that caps the directories a folder's watcher may watch.
pub const MAX_WATCHES_ENV: &str = "FILESYNC_MAX_WATCHES";
const MAX_WATCHES_SYSCTL: &str = "/proc/sys/fs/inotify/max_user_watches";

#[derive(Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Changed(Vec<RelPath>),
    /// Events were lost or cannot be trusted: scan everything.
    Rescan(String),
}

#[derive(Default)]
struct Queued {
    /// Each path with when it is due.
    paths: HashMap<RelPath, Due>,
    rescan: Option<String>,
}

/// What an event says about its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Anything that may be one step of several: a write, a create, a rename, a delete.
    Changed,
    /// The path's writer closed it (inotify's close-write): the write is complete.
    Closed,
}

/// When a queued path is due: the sooner of the two.
#[derive(Debug, Clone, Copy)]
struct Due {
    /// Once quiet: DEBOUNCE after its latest event, or that event's time when its writer
    /// closed it then.
    quiet: Instant,
    /// At the latest: MAX_DELAY after the first event it was queued for.
    cap: Instant,
}

impl Due {
    fn new(at: Instant, seen: Seen) -> Due {
        Due {
            quiet: Due::quiet_after(at, seen),
            cap: at + MAX_DELAY,
        }
    }

    fn quiet_after(at: Instant, seen: Seen) -> Instant {
        match seen {
            Seen::Changed => at + DEBOUNCE,
            Seen::Closed => at,
        }
    }

    /// A later event: the quiet period starts again; the cap stays.
    fn again(&mut self, at: Instant, seen: Seen) {
        self.quiet = Due::quiet_after(at, seen);
    }

    fn at(&self) -> Instant {
        self.quiet.min(self.cap)
    }
}

/// Changes seen by the watcher and not yet taken by the folder's task.
#[derive(Default)]
pub struct WatchQueue {
    queued: Mutex<Queued>,
    ready: Notify,
    /// Set once a watch could not be added: part of the tree is not watched.
    incomplete: Mutex<Option<String>>,
}

impl WatchQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, paths: impl IntoIterator<Item = RelPath>, at: Instant, seen: Seen) {
        self.queue(paths, at, Some(seen));
    }

    /// Queues `paths` like [`WatchQueue::push`], but a path already queued keeps its own
    /// time: a reminder must not split a batch that events made (a directory moved in
    /// and the move's old path belong in one scan, or the move is taken for a delete
    /// and a create).
    fn remind(&self, paths: impl IntoIterator<Item = RelPath>, at: Instant) {
        self.queue(paths, at, None);
    }

    /// Queues `paths` for an event `seen` at `at`, or for a reminder when `None`.
    fn queue(&self, paths: impl IntoIterator<Item = RelPath>, at: Instant, seen: Option<Seen>) {
        let mut q = self.lock();
        if q.rescan.is_none() {
            for path in paths {
                let queued = q.paths.entry(path);
                match seen {
                    Some(seen) => {
                        queued
                            .and_modify(|due| due.again(at, seen))
                            .or_insert(Due::new(at, seen));
                    }
                    None => {
                        queued.or_insert(Due::new(at, Seen::Changed));
                    }
                }
            }
            if q.paths.len() > MAX_QUEUED {
                q.paths.clear();
                q.rescan = Some("too many changes at once".into());
            }
        }
        drop(q);
        self.ready.notify_one();
    }

    fn set_incomplete(&self, why: String) {
        *self.incomplete.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
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

    /// The due paths (see [`Due`]), or when to look again (`None`: nothing queued).
    fn take(&self, now: Instant) -> Result<WatchEvent, Option<Instant>> {
        let mut q = self.lock();
        if let Some(why) = q.rescan.take() {
            q.paths.clear();
            return Ok(WatchEvent::Rescan(why));
        }
        let mut due: Vec<RelPath> = Vec::new();
        let mut wake: Option<Instant> = None;
        q.paths.retain(|path, at| {
            let ready_at = at.at();
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

type SharedNotify = Mutex<notify::RecommendedWatcher>;

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watcher {
    /// `None` when watching could not start at all.
    _watcher: Option<Arc<SharedNotify>>,
    pub queue: Arc<WatchQueue>,
}

/// What the re-watch needs to know (see the module docs), shared by notify's callback and
/// the short-lived thread that does it: the thread runs while there are moves to look
/// at, then ends.
struct Rewatch {
    root: PathBuf,
    queue: Arc<WatchQueue>,
    /// Directories notify added watches for lately, oldest first.
    added: Mutex<VecDeque<(PathBuf, Instant)>>,
    moves: Mutex<Moves>,
    running: AtomicBool,
    watcher: OnceLock<Weak<SharedNotify>>,
}

/// Moves away seen by the callback and not looked at yet, and the moves seen arriving.
#[derive(Default)]
struct Moves {
    /// The tracker (inotify cookie) of each move away; `None` when notify gives none.
    away: Vec<Option<usize>>,
    /// Trackers of moves seen arriving in the tree: their move away was paired.
    arrived: HashSet<usize>,
}

impl Rewatch {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes note of one of notify's events, from its callback.
    fn saw(self: &Arc<Self>, event: &notify::Event, now: Instant) {
        match event.kind {
            EventKind::Create(CreateKind::Folder | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                let mut added = Self::lock(&self.added);
                while added
                    .front()
                    .is_some_and(|(_, at)| now.duration_since(*at) >= REWATCH_WINDOW)
                {
                    added.pop_front();
                }
                let dirs = event.paths.iter().filter(|p| p.is_dir());
                added.extend(dirs.map(|p| (p.clone(), now)));
                drop(added);
                if let (EventKind::Modify(_), Some(tracker)) = (event.kind, event.tracker()) {
                    Self::lock(&self.moves).arrived.insert(tracker);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Any)) => {
                Self::lock(&self.moves).away.push(event.tracker());
                self.start();
            }
            _ => {}
        }
    }

    fn start(self: &Arc<Self>) {
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("filesync-rewatch".into())
            .spawn(move || this.run());
        if let Err(e) = spawned {
            self.running.store(false, Ordering::SeqCst);
            self.queue.rescan(format!(
                "cannot start a thread to re-watch directories: {e}"
            ));
        }
    }

    fn run(&self) {
        loop {
            let away = std::mem::take(&mut Self::lock(&self.moves).away);
            if away.is_empty() {
                self.running.store(false, Ordering::SeqCst);
                // A move that came in between found the thread still running.
                let more = !Self::lock(&self.moves).away.is_empty();
                if more && !self.running.swap(true, Ordering::SeqCst) {
                    continue;
                }
                return;
            }
            // Not set yet: the first watch is still being added, and the folder's
            // start-up scan, which follows it, covers what it misses. Gone: dropped.
            let Some(watcher) = self.watcher.get().and_then(Weak::upgrade) else {
                self.running.store(false, Ordering::SeqCst);
                return;
            };
            let mut w = Self::lock(&watcher);
            // A no-op that notify's loop answers only once it is through the events at
            // hand: a move's arrival, if any, has been seen then, and the watches notify
            // drops for the move away are gone.
            let _ = w.configure(notify_config());
            let unpaired = {
                let mut moves = Self::lock(&self.moves);
                let unpaired = away
                    .iter()
                    .filter(|t| t.is_none_or(|t| !moves.arrived.remove(&t)))
                    .count();
                if moves.arrived.len() > MAX_QUEUED {
                    moves.arrived.clear();
                }
                unpaired
            };
            if unpaired == 0 || !WATCHES_EACH_DIRECTORY {
                continue;
            }
            // A move away that arrived nowhere in the tree may have been a move into a
            // directory notify was not watching yet: the directories added lately are
            // watched again.
            let now = Instant::now();
            let mut dirs: Vec<PathBuf> = Self::lock(&self.added)
                .iter()
                .filter(|(_, at)| now.duration_since(*at) < REWATCH_WINDOW)
                .map(|(p, _)| p.clone())
                .collect();
            dirs.sort();
            dirs.dedup();
            dirs.retain(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()));
            for dir in &dirs {
                // A directory gone meanwhile needs no watch; its removal was an event.
                if let Err(e) = w.watch(dir, RecursiveMode::Recursive)
                    && matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
                {
                    self.queue.set_incomplete(over_limit(system_max_watches()));
                }
            }
            drop(w);
            // Whatever changed in them while they were not watched is found by a scan.
            self.queue.remind(
                dirs.iter().filter_map(|d| relative(&self.root, d)),
                Instant::now(),
            );
        }
    }
}

impl Watcher {
    /// Why this watcher does not see every change in the tree, or `None` when it does.
    pub fn problem(&self) -> Option<String> {
        self.queue
            .incomplete
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How often to rescan a folder whose watcher does not see everything: its own rescan
/// interval, or [`FALLBACK_RESCAN`] if that is sooner.
pub fn fallback_rescan(rescan_interval: Duration) -> Duration {
    rescan_interval.min(FALLBACK_RESCAN)
}

/// Starts watching `root`. Watching that fails in part or whole is reported by
/// [`Watcher::problem`]; what could be watched still is.
pub fn watch(root: &Path) -> Watcher {
    let queue = Arc::new(WatchQueue::default());
    let q = queue.clone();
    let root_buf: PathBuf = root.to_path_buf();
    let rewatch = Arc::new(Rewatch {
        root: root_buf.clone(),
        queue: queue.clone(),
        added: Mutex::new(VecDeque::new()),
        moves: Mutex::new(Moves::default()),
        running: AtomicBool::new(false),
        watcher: OnceLock::new(),
    });
    let rw = rewatch.clone();
    let started = notify::RecommendedWatcher::new(
        move |result: notify::Result<notify::Event>| match result {
            Ok(event) if event.need_rescan() => {
                q.rescan("the watcher lost events (queue overflow)".into())
            }
            // A writer closing its file: the path need not wait for a quiet period.
            Ok(event) if event.kind == EventKind::Access(AccessKind::Close(AccessMode::Write)) => q
                .push(
                    event.paths.iter().filter_map(|p| relative(&root_buf, p)),
                    Instant::now(),
                    Seen::Closed,
                ),
            // Reads (open, close-without-write) change nothing; a reader polling the
            // folder must not turn into a stream of scans.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            // The folder's directory itself moved away or deleted: its paths say nothing
            // of it, and only a scan of the whole folder finds out what is there now.
            Ok(event) if moved_or_removed(&event.kind) && event.paths.contains(&root_buf) => {
                q.rescan("the folder's directory was moved or deleted".into())
            }
            Ok(event) => {
                let now = Instant::now();
                rw.saw(&event, now);
                q.push(
                    event.paths.iter().filter_map(|p| relative(&root_buf, p)),
                    now,
                    Seen::Changed,
                )
            }
            Err(e) => {
                if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                    q.set_incomplete(over_limit(system_max_watches()));
                }
                q.rescan(format!("watcher error: {e}"))
            }
        },
        notify_config(),
    );
    let mut watcher = match started {
        Ok(w) => w,
        Err(e) => {
            queue.set_incomplete(format!("not watching: {e}"));
            return Watcher {
                _watcher: None,
                queue,
            };
        }
    };
    if let Some(cap) = watch_cap()
        && count_dirs(root, cap + 1) > cap
    {
        queue.set_incomplete(over_limit(cap));
        return Watcher {
            _watcher: None,
            queue,
        };
    }
    match watcher.watch(root, RecursiveMode::Recursive) {
        Ok(()) => {}
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
            queue.set_incomplete(over_limit(system_max_watches()))
        }
        Err(e) => queue.set_incomplete(format!("not watching: {e}")),
    }
    let watcher = Arc::new(Mutex::new(watcher));
    let _ = rewatch.watcher.set(Arc::downgrade(&watcher));
    Watcher {
        _watcher: Some(watcher),
        queue,
    }
}

/// How every watcher of the daemon is set up. notify follows symlinks by default: a link
/// to `/` that a peer pushed into a folder, then a rename of its parent, would make it
/// walk and watch the whole filesystem, using up the user's inotify watches. A link is
/// a file here, like everywhere else in the daemon.
fn notify_config() -> notify::Config {
    notify::Config::default().with_follow_symlinks(false)
}

/// What to tell the user when the tree needs more than `limit` watches.
fn over_limit(limit: u64) -> String {
    let raise = (limit.saturating_mul(2)).max(524_288);
    format!(
        "watching incomplete: the system allows {limit} inotify watches \
         (fs.inotify.max_user_watches) and this folder needs more; raise it with \
         `sysctl fs.inotify.max_user_watches={raise}`"
    )
}

/// The system's limit on inotify watches per user (0 when it cannot be read).
fn system_max_watches() -> u64 {
    std::fs::read_to_string(MAX_WATCHES_SYSCTL)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The per-folder cap on watches from [`MAX_WATCHES_ENV`], if set.
fn watch_cap() -> Option<u64> {
    let value = std::env::var(MAX_WATCHES_ENV).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            tracing::warn!("{MAX_WATCHES_ENV}={value:?} is not a number of watches; ignored");
            None
        }
    }
}

/// The directories of the tree at `root`, itself included, counting no further than
/// `stop`. Symbolic links are not followed.
fn count_dirs(root: &Path, stop: u64) -> u64 {
    let mut count = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        count += 1;
        if count >= stop {
            break;
        }
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        todo.extend(
            read.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    count
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
    if rel.components().any(is_reserved) {
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
        q.push([p("b"), p("a")], t0, Seen::Changed);
        q.push([p("a")], t0 + DEBOUNCE / 2, Seen::Changed);
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
    fn a_file_its_writer_closed_is_due_at_once() {
        let q = WatchQueue::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        // Created and written, then closed: due with the close, not a quiet period later.
        q.push([p("done"), p("open")], t0, Seen::Changed);
        q.push([p("done")], t0 + ms, Seen::Closed);
        assert_eq!(q.take(t0 + ms), Ok(WatchEvent::Changed(vec![p("done")])));
        assert_eq!(
            q.take(t0 + ms),
            Err(Some(t0 + DEBOUNCE)),
            "the open one waits"
        );
        // A write after the close makes it one being written again.
        q.push([p("done")], t0 + 2 * ms, Seen::Closed);
        q.push([p("done")], t0 + 3 * ms, Seen::Changed);
        assert_eq!(q.take(t0 + 3 * ms), Err(Some(t0 + DEBOUNCE)));
        assert_eq!(
            q.take(t0 + 3 * ms + DEBOUNCE),
            Ok(WatchEvent::Changed(vec![p("done"), p("open")]))
        );
    }

    /// A file written every 10 ms, never quiet for DEBOUNCE: handed over MAX_DELAY after
    /// the first event it was queued for, each time, and once more when the writes stop.
    #[test]
    fn a_path_written_without_pause_is_due_at_the_cap_and_never_dropped() {
        let q = WatchQueue::default();
        let t0 = Instant::now();
        let step = Duration::from_millis(10);
        let writes = 500; // 5 s
        let mut taken = Vec::new();
        for i in 0..writes {
            let now = t0 + step * i;
            q.push([p("log")], now, Seen::Changed);
            if let Ok(ev) = q.take(now) {
                assert_eq!(ev, WatchEvent::Changed(vec![p("log")]));
                taken.push(now - t0);
            }
        }
        // Queued again by the write right after each take: due a cap after that write.
        let cap = MAX_DELAY.as_millis() as u32;
        let expected: Vec<Duration> = [cap, 2 * cap + 10]
            .iter()
            .map(|ms| Duration::from_millis(u64::from(*ms)))
            .collect();
        assert_eq!(taken, expected);
        let last = t0 + step * (writes - 1);
        assert_eq!(
            q.take(last),
            Err(Some(last + DEBOUNCE)),
            "the last write waits"
        );
        assert_eq!(
            q.take(last + DEBOUNCE),
            Ok(WatchEvent::Changed(vec![p("log")]))
        );
        assert_eq!(q.take(last + MAX_DELAY), Err(None));
    }

    #[test]
    fn a_tree_over_the_watch_cap_is_reported_with_the_limit_and_how_to_raise_it() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a/b", "c"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        assert_eq!(count_dirs(dir.path(), 100), 4);
        assert_eq!(count_dirs(dir.path(), 2), 2, "stops counting at the cap");
        let msg = over_limit(8192);
        assert!(msg.contains("allows 8192 inotify watches"), "{msg}");
        assert!(
            msg.contains("sysctl fs.inotify.max_user_watches=524288"),
            "{msg}"
        );
        assert_eq!(
            fallback_rescan(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            fallback_rescan(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    /// The race of the module docs, many times over: a directory moved into one just
    /// made stays watched (without the re-watch, about one round in a hundred loses it).
    #[test]
    fn a_directory_moved_into_a_new_one_stays_watched() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..400 {
            let root = dir.path().join(format!("r{round}"));
            std::fs::create_dir_all(root.join("old/sub")).unwrap();
            let w = watch(&root);
            assert_eq!(w.problem(), None);
            std::fs::create_dir(root.join("new")).unwrap();
            // The loss needs notify to read the creation before the move and walk the
            // new directory after it: the gap between the two varies over the rounds.
            let gap = Duration::from_micros(20 * (round % 50));
            let made = std::time::Instant::now();
            while made.elapsed() < gap {
                std::hint::spin_loop();
            }
            std::fs::rename(root.join("old"), root.join("new/moved")).unwrap();
            // Once the watcher has reported the move away from `old` (notify drops that
            // path's watches right after), writes a new file in the moved directory until
            // the watcher reports one.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut moved_away = false;
            for probe in 0.. {
                if moved_away {
                    std::fs::write(root.join(format!("new/moved/probe{probe}")), b"x").unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
                let paths = match w.queue.take(Instant::now() + DEBOUNCE) {
                    Ok(WatchEvent::Changed(paths)) => paths,
                    _ => Vec::new(),
                };
                if moved_away
                    && paths
                        .iter()
                        .any(|p| p.as_str().starts_with("new/moved/probe"))
                {
                    break;
                }
                moved_away |= paths.contains(&p("old"));
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: no change in new/moved was seen after the move \
                     (move reported: {moved_away})"
                );
            }
        }
    }

    #[test]
    fn a_reminder_does_not_postpone_a_queued_path() {
        let q = WatchQueue::default();
        let t0 = Instant::now();
        q.push([p("archive"), p("project")], t0, Seen::Changed);
        q.remind([p("archive"), p("other")], t0 + DEBOUNCE / 2);
        // "archive" stays in the batch of the event it came with.
        assert_eq!(
            q.take(t0 + DEBOUNCE),
            Ok(WatchEvent::Changed(vec![p("archive"), p("project")]))
        );
        assert_eq!(
            q.take(t0 + DEBOUNCE + DEBOUNCE / 2),
            Ok(WatchEvent::Changed(vec![p("other")]))
        );
    }

    #[test]
    fn overflow_and_errors_become_a_rescan() {
        let q = WatchQueue::default();
        let t0 = Instant::now();
        q.push(
            (0..=MAX_QUEUED).map(|i| p(&format!("f{i}"))),
            t0,
            Seen::Changed,
        );
        assert!(matches!(q.take(t0), Ok(WatchEvent::Rescan(_))));
        q.rescan("x".into());
        q.push([p("later")], t0, Seen::Changed);
        assert!(
            matches!(q.take(t0), Ok(WatchEvent::Rescan(_))),
            "a pending rescan covers later paths"
        );
        assert_eq!(q.take(t0 + DEBOUNCE), Err(None));
    }
}
