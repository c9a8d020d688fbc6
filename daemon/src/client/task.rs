//! The folder task's state and its event loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::control::{
    EventKind, FolderMode, FolderState, FolderStatus, ScanReport, Unsyncable, VersionEntry,
};
use filesync_proto::wire::Entry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::guard::Hold;
use super::pull::Partials;
use super::session::{self, SessionConfig, SessionEvent, SessionHandle};
use super::{ClientIdentity, FolderCmd, conflicts, meter, stream};
use crate::config::FolderConfig;
use crate::conn::Counters;
use crate::events::{Events, unix_secs};
use crate::fs::beneath::Root;
use crate::fs::ignore::IgnoreRules;
use crate::fs::watch::{self as watcher, WatchEvent};
use crate::index::{Index, Meta, Totals};
use crate::store;

mod guards;
mod local_changes;
mod sync;

/// Server entries applied per step, so that commands and events are served in between.
const PULL_BATCH: usize = 256;
/// Files fetched at the same time.
const PULL_FILES: usize = 8;
/// Pushes awaiting their result at once.
const MAX_INFLIGHT: usize = 2;
/// Rough cap on one push message, well under the frame limit.
const PUSH_BYTES: usize = 4 * 1024 * 1024;
/// How long a path that failed waits before it is tried again; each further failure
/// doubles the wait, up to RETRY_MAX.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest wait between two attempts at a path that keeps failing (a full disk, a
/// server refusing it): freed space is used within this long.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a fresh delete waits before it is pushed. A rename or move often reaches us
/// as two watcher batches, the delete first; holding the delete back lets the new path
/// travel in the same push, so the server still has the content to reuse.
const RENAME_WINDOW: Duration = Duration::from_millis(300);
/// The longest a burst of fresh deletes is held back as one (see `hold_fresh_deletes`).
const DELETE_BURST: Duration = Duration::from_secs(5);
/// How often a folder whose root or marker is missing looks for it again: a disk mounted
/// back, or a directory moved back, over the folder's path sends the watcher no event.
const AWAY_POLL: Duration = Duration::from_secs(5);
/// How old the totals in a busy folder's status may be (see `publish_busy`).
const TOTALS_EVERY: Duration = Duration::from_millis(100);
/// The shortest time between two re-reads of the server's whole index (see `refresh`):
/// a server that lists content it cannot serve must not keep a device re-reading.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How long a push refused as a conflict may wait, caught up, for the server's version
/// of its path before the device takes it that its view of the server is wrong: the
/// stream brings that version right after the answer.
const BLOCKED_TOO_LONG: Duration = Duration::from_secs(30);

pub(super) struct FolderTask {
    cfg: FolderConfig,
    id: ClientIdentity,
    counters: Arc<Counters>,
    status: watch::Sender<FolderStatus>,
    /// What happens here, for `filesyncctl events`.
    events: Events,
    index: Option<Index>,
    session: Option<SessionHandle>,
    /// The server said, when it last welcomed this device, that the folder is shared
    /// read-only with this device's account (see [`FolderTask::effective_mode`]).
    read_only_share: bool,
    /// Stops the current session (pause, shutdown).
    session_cancel: Option<CancellationToken>,
    /// The current session's task, awaited after `session_cancel` when nothing it had
    /// under way may land after what comes next (a refresh).
    session_task: Option<tokio::task::JoinHandle<()>>,
    /// This device's view of the server looks wrong (a fetch found twice that the server
    /// lacks what it lists, or a refused push waited too long for the server's version):
    /// why, to read its whole index again after this step (see `refresh`).
    refresh_due: Option<String>,
    /// When the last refresh began.
    last_refresh: Option<Instant>,
    events_tx: mpsc::UnboundedSender<(u64, SessionEvent)>,
    /// The current session's generation; events of earlier sessions are stale.
    session_gen: u64,
    caught_up: bool,
    scanned: bool,
    paused: bool,
    scan_all: bool,
    /// Why the pending full scan runs (the first reason given), for status.
    scan_reason: Option<String>,
    /// When the last full scan ended: the next periodic one is due a rescan interval
    /// later (a shorter one while the watcher cannot see everything).
    last_full_scan: Instant,
    last_scan: Option<ScanReport>,
    scan_paths: Vec<RelPath>,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Flushes whose scan is done; answered only after the status that reflects that
    /// scan is published, so `wait` never reads a status older than its own scan.
    flushed: Vec<oneshot::Sender<()>>,
    /// Reverts asked for, answered after the scan they asked for.
    revert_waiters: Vec<oneshot::Sender<Result<String, String>>>,
    root_error: Option<String>,
    /// Set while the folder marker is missing: nothing is scanned, sent or applied.
    marker_error: Option<String>,
    /// Deletes the mass-delete guard holds back until confirmed or undone.
    hold: Option<Hold>,
    /// The user confirmed the pending deletes; cleared when a scan finds new ones.
    deletes_confirmed: bool,
    /// The pending deletes must be judged again before the next push: a scan changed
    /// something, or deletes left the rename window.
    judge_due: bool,
    last_error: Option<String>,
    unsyncable: Vec<Unsyncable>,
    next_push: u64,
    inflight: HashMap<u64, Vec<Entry>>,
    inflight_paths: HashSet<RelPath>,
    /// Versions we pushed whose results were lost with their connection, by path. When
    /// the index brings one back as the server's current version of its path, made by
    /// this device, it is the base of what we hold now, not a change to conflict with
    /// (`sync::rebase_on_own_push`). Emptied for a path by its next push result.
    unconfirmed: HashMap<RelPath, Vec<Entry>>,
    /// Pushes refused as conflicts wait until the index brings the server's version
    /// (its sequence number), since the given instant.
    blocked: HashMap<RelPath, (u64, Instant)>,
    /// Paths that failed, and when each may be tried again.
    retry_at: HashMap<RelPath, Instant>,
    /// The wait after each failing path's last failure; forgotten on success and once
    /// the folder is in sync.
    retry_delay: HashMap<RelPath, Duration>,
    /// Deletes found by a scan, held back until the given instant (see RENAME_WINDOW).
    hold_deletes: HashMap<RelPath, Instant>,
    /// When the deletes now in `hold_deletes` began to come in (see DELETE_BURST).
    burst_start: Instant,
    last_sync: Option<i64>,
    watcher: Option<watcher::Watcher>,
    rules: IgnoreRules,
    /// The same rules for the sessions, which refuse the server any ignored path.
    shared_rules: watch::Sender<IgnoreRules>,
    /// Set when `.filesyncignore` may have changed and must be read again.
    rules_stale: bool,
    /// A `.filesyncignore` that does not parse stops the folder until it is fixed:
    /// syncing without the user's rules could spread files they meant to keep here.
    rules_error: Option<String>,
    /// Partial downloads to remove once the folder is in sync.
    partials: Partials,
    /// The index totals last published and when: counting the pending rows costs as
    /// many as there are (thousands in a big sync), so while the loop has more work
    /// they are counted at most every TOTALS_EVERY.
    totals: Option<(Instant, Totals)>,
}

impl FolderTask {
    /// The way changes flow, the one place that decides it: the configured mode, except
    /// that a folder shared read-only with this account is receive-only whatever the
    /// config says (the server refuses its pushes anyway).
    pub(super) fn effective_mode(&self) -> FolderMode {
        if self.read_only_share {
            FolderMode::ReceiveOnly
        } else {
            self.cfg.mode
        }
    }

    pub(super) fn new(
        cfg: FolderConfig,
        id: ClientIdentity,
        counters: Arc<Counters>,
        status: watch::Sender<FolderStatus>,
        events: Events,
    ) -> Self {
        let paused = cfg.paused;
        FolderTask {
            cfg,
            id,
            counters,
            status,
            events,
            index: None,
            session: None,
            read_only_share: false,
            session_cancel: None,
            session_task: None,
            refresh_due: None,
            last_refresh: None,
            events_tx: mpsc::unbounded_channel().0,
            session_gen: 0,
            caught_up: false,
            scanned: false,
            paused,
            scan_all: true,
            scan_reason: Some("start-up".into()),
            last_full_scan: Instant::now(),
            last_scan: None,
            scan_paths: Vec::new(),
            flush_waiters: Vec::new(),
            flushed: Vec::new(),
            revert_waiters: Vec::new(),
            root_error: None,
            marker_error: None,
            hold: None,
            deletes_confirmed: false,
            judge_due: false,
            last_error: None,
            unsyncable: Vec::new(),
            next_push: 1,
            inflight: HashMap::new(),
            inflight_paths: HashSet::new(),
            unconfirmed: HashMap::new(),
            blocked: HashMap::new(),
            retry_at: HashMap::new(),
            retry_delay: HashMap::new(),
            hold_deletes: HashMap::new(),
            burst_start: Instant::now(),
            last_sync: None,
            watcher: None,
            rules: IgnoreRules::builtin(),
            shared_rules: watch::Sender::new(IgnoreRules::builtin()),
            rules_stale: true,
            rules_error: None,
            partials: Partials::default(),
            totals: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut cmds: mpsc::Receiver<FolderCmd>,
        cancel: CancellationToken,
    ) {
        let stop_meter = cancel.child_token();
        tokio::spawn(meter::run(
            self.counters.clone(),
            self.status.clone(),
            stop_meter.clone(),
        ));
        let _stop_meter = stop_meter.drop_guard();
        let index_file = super::index_file(&self.id.state_dir, &self.cfg);
        match Index::open_or_rebuild(&index_file, self.cfg.name.as_str()) {
            Ok(ix) => self.index = Some(ix),
            Err(e) => {
                self.root_error = Some(format!("{e:#}"));
                self.publish();
                cancel.cancelled().await;
                return;
            }
        }
        // Partial downloads stay for the transfers that resume them.
        if let Ok(root) = self.root() {
            for partial in store::clean_temp_files(&root) {
                self.partials.note(partial);
            }
        }
        self.start_watching();
        // Before any session: what it may serve the server depends on the rules.
        self.reload_rules();
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        self.events_tx = events_tx;
        if !self.paused {
            self.start_session(&cancel);
        }
        loop {
            let more = self.step().await;
            if let Some(why) = self.refresh_due.take() {
                self.refresh(&why, &cancel).await;
            }
            self.publish_busy(more);
            for w in self.flushed.drain(..) {
                let _ = w.send(());
            }
            // A refused push that waits too long for the server's version is looked at
            // again then (see BLOCKED_TOO_LONG); one already past that waits for the
            // next step, so the loop never spins on it.
            let now = Instant::now();
            let blocked: Vec<Instant> = (self.blocked.values())
                .map(|(_, at)| *at + BLOCKED_TOO_LONG)
                .filter(|at| *at > now)
                .collect();
            let retry = self
                .retry_at
                .values()
                .chain(self.hold_deletes.values())
                .chain(&blocked)
                .min()
                .copied()
                .into_iter()
                .chain(self.away().then(|| Instant::now() + AWAY_POLL))
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            if more {
                tokio::task::yield_now().await;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(cmd) = cmds.recv() => self.on_cmd(cmd, &cancel),
                Some((generation, ev)) = events_rx.recv() => {
                    if generation == self.session_gen {
                        self.on_session(ev);
                    }
                }
                ev = watcher::next_event(self.watcher.as_ref()) => self.on_watch(ev),
                _ = tokio::time::sleep_until(self.last_full_scan + self.rescan_every()) => {
                    self.periodic_rescan()
                }
                _ = tokio::time::sleep_until(retry) => {
                    let now = Instant::now();
                    self.retry_at.retain(|_, at| *at > now);
                    let held = self.hold_deletes.len();
                    self.hold_deletes.retain(|_, at| *at > now);
                    self.judge_due |= self.hold_deletes.len() < held;
                    self.scan_all |= self.away();
                }
                _ = std::future::ready(()), if more => {}
            }
        }
        if let Some(c) = self.session_cancel.take() {
            c.cancel();
        }
    }

    fn start_session(&mut self, parent: &CancellationToken) {
        let cancel = parent.child_token();
        let cfg = SessionConfig {
            server: self.cfg.server.clone(),
            folder: self.cfg.name.clone(),
            root: self.cfg.path.clone(),
            index_file: super::index_file(&self.id.state_dir, &self.cfg),
            device: self.id.device.clone(),
            device_name: self.id.device_name.clone(),
            counters: self.counters.clone(),
            trust: self.id.trust.clone(),
            account: self.cfg.account.clone(),
            mode: self.effective_mode(),
            rules: self.shared_rules.subscribe(),
        };
        self.session_gen += 1;
        let events = session::SessionEvents {
            tx: self.events_tx.clone(),
            generation: self.session_gen,
        };
        self.session_task = Some(tokio::spawn(session::run(cfg, events, cancel.clone())));
        self.session_cancel = Some(cancel);
    }

    /// Reads the server's whole index again ([`stream::request_refresh`]) because of
    /// `why`, at most once per REFRESH_EVERY. The running session is stopped and waited
    /// for first, so that none of its index batches lands after the request.
    async fn refresh(&mut self, why: &str, parent: &CancellationToken) {
        if self.paused
            || self
                .last_refresh
                .is_some_and(|at| at.elapsed() < REFRESH_EVERY)
        {
            return;
        }
        tracing::warn!(folder = %self.cfg.name, "{why}: reading the server's whole index again");
        self.last_refresh = Some(Instant::now());
        if let Some(c) = self.session_cancel.take() {
            c.cancel();
        }
        if let Some(task) = self.session_task.take() {
            let _ = task.await;
        }
        self.disconnected();
        if let Err(e) = stream::request_refresh(self.index()) {
            self.error(format!("cannot ask for the server's whole index: {e:#}"));
        }
        self.start_session(parent);
    }

    fn on_cmd(&mut self, cmd: FolderCmd, cancel: &CancellationToken) {
        match cmd {
            FolderCmd::Pause => {
                self.paused = true;
                if let Some(c) = self.session_cancel.take() {
                    c.cancel();
                }
                // Whatever the stopped session still sends is stale from now on.
                self.session_gen += 1;
                self.disconnected();
            }
            FolderCmd::Resume => {
                if self.paused {
                    self.paused = false;
                    self.full_scan("resumed");
                    self.start_session(cancel);
                }
            }
            FolderCmd::ConfirmDeletes => self.confirm_deletes(),
            FolderCmd::Rescan => self.full_scan("requested"),
            FolderCmd::RecreateMarker(reply) => {
                let _ = reply.send(self.recreate_marker());
            }
            FolderCmd::Flush(reply) => {
                self.full_scan("requested by wait");
                self.flush_waiters.push(reply);
            }
            FolderCmd::Revert(reply) => self.ask_revert(reply),
            FolderCmd::Conflicts(reply) => {
                let list = conflicts::list(self.index(), self.cfg.name.as_str())
                    .map_err(|e| format!("{e:#}"));
                let _ = reply.send(list);
            }
            FolderCmd::Resolve {
                pattern,
                keep,
                reply,
            } => {
                let result = self.root().and_then(|root| {
                    conflicts::resolve(&root, self.index(), &self.rules, &pattern, keep)
                });
                let _ = reply.send(match result {
                    Ok((0, _)) => Err(format!(
                        "no conflict in folder {} matches {pattern:?}",
                        self.cfg.name
                    )),
                    Ok((n, touched)) => {
                        self.scan_paths.extend(touched);
                        Ok(format!(
                            "resolved {n} conflict{} in folder {}",
                            if n == 1 { "" } else { "s" },
                            self.cfg.name
                        ))
                    }
                    Err(e) => Err(format!("{e:#}")),
                });
            }
            FolderCmd::Versions { path, reply } => {
                self.call_server(reply, path, |session, path| async move {
                    let list = session.list_versions(path).await?;
                    Ok(list
                        .into_iter()
                        .map(|v| VersionEntry {
                            version: v.version,
                            size: v.size,
                            mtime_ns: v.mtime_ns,
                            kept_at: v.kept_at,
                        })
                        .collect())
                })
            }
            FolderCmd::Restore {
                path,
                version,
                reply,
            } => self.call_server(reply, path, move |session, path| async move {
                let shown = path.to_string();
                let seq = session.restore(path, version).await?;
                Ok(format!(
                    "restored {shown} as version {seq}; it syncs to every device"
                ))
            }),
        }
    }

    /// Runs a call to the server on its own task, so the folder keeps working meanwhile.
    fn call_server<T, F, Fut>(
        &self,
        reply: oneshot::Sender<Result<T, String>>,
        path: String,
        call: F,
    ) where
        T: Send + 'static,
        F: FnOnce(SessionHandle, RelPath) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let Some(session) = self.session.clone() else {
            let _ = reply.send(Err(format!(
                "folder {} is not connected to its server {}; see `filesyncctl status`",
                self.cfg.name, self.cfg.server
            )));
            return;
        };
        let path = match RelPath::new(path.trim_matches('/').to_string()) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(format!(
                    "{e}; give the path relative to the folder root"
                )));
                return;
            }
        };
        tokio::spawn(async move {
            let _ = reply.send(call(session, path).await.map_err(|e| format!("{e:#}")));
        });
    }

    fn disconnected(&mut self) {
        self.session = None;
        self.caught_up = false;
        for pushed in self.inflight.drain().flat_map(|(_, entries)| entries) {
            self.unconfirmed
                .entry(pushed.path.clone())
                .or_default()
                .push(pushed);
        }
        self.inflight_paths.clear();
    }

    fn on_session(&mut self, ev: SessionEvent) {
        match ev {
            // The last error stays until the folder is in sync again: a connection that
            // keeps failing after it is made must still explain itself in status.
            SessionEvent::Connected(handle) => {
                self.read_only_share = handle.read_only;
                self.session = Some(handle);
            }
            SessionEvent::IndexUpdated { caught_up } => {
                self.caught_up |= caught_up;
                // The next step may be one long download: show what is pending now,
                // not only once it is done.
                self.publish();
            }
            SessionEvent::PushResult { id, outcomes } => {
                if let Err(e) = self.on_push_result(id, outcomes) {
                    self.error(format!("cannot record push result: {e:#}"));
                }
            }
            SessionEvent::Disconnected { reason } => {
                if !self.paused {
                    if self.last_error.as_ref() != Some(&reason) {
                        self.emit(EventKind::Error, None, Some(reason.clone()));
                    }
                    self.last_error = Some(reason);
                }
                self.disconnected();
            }
        }
    }

    fn on_watch(&mut self, ev: WatchEvent) {
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
    fn start_watching(&mut self) {
        // The old watcher's watches go first: they count against the same limit.
        self.watcher = None;
        let w = watcher::watch(&self.cfg.path);
        if let Some(problem) = w.problem() {
            tracing::warn!(folder = %self.cfg.name, "{problem}; rescanning every {} s meanwhile", self.rescan_every().as_secs());
        }
        self.watcher = Some(w);
    }

    /// Why the watcher does not see every change, if it does not.
    fn watch_problem(&self) -> Option<String> {
        self.watcher.as_ref().and_then(watcher::Watcher::problem)
    }

    /// How long after a full scan the next one is due.
    fn rescan_every(&self) -> Duration {
        match self.watch_problem() {
            Some(_) => watcher::fallback_rescan(self.cfg.rescan_interval),
            None => self.cfg.rescan_interval,
        }
    }

    /// The periodic rescan; a watcher that could not see everything is started again
    /// first, so that it recovers once the limit is raised.
    fn periodic_rescan(&mut self) {
        if self.watch_problem().is_some() {
            self.start_watching();
            self.full_scan("periodic, the watcher does not see every change");
        } else {
            self.full_scan("periodic");
        }
        // Not due again before this scan has run.
        self.last_full_scan = Instant::now();
    }

    /// Whether the folder's directory is gone or is not the folder (its marker is
    /// missing): then it is looked for every AWAY_POLL.
    fn away(&self) -> bool {
        self.root_error.is_some() || self.marker_error.is_some()
    }

    fn error(&mut self, msg: String) {
        tracing::warn!(folder = %self.cfg.name, "{msg}");
        self.emit(EventKind::Error, None, Some(msg.clone()));
        self.last_error = Some(msg);
    }

    /// A handle of the folder's root: every change to the disk is made relative to it.
    fn root(&self) -> Result<Root> {
        Root::open_folder(&self.cfg.path)
    }

    /// Reports an event of this folder, about `path` when there is one.
    fn emit(&self, kind: EventKind, path: Option<&RelPath>, detail: Option<String>) {
        self.events.emit(
            (self.cfg.name.as_str(), &self.cfg.path),
            kind,
            path.map(RelPath::as_str),
            detail,
        );
    }

    fn index(&self) -> &Index {
        self.index
            .as_ref()
            .expect("index is opened before the loop starts")
    }

    fn publish(&mut self) {
        self.publish_busy(false);
    }

    /// Publishes the status; `busy` when the loop goes straight on to more work, which
    /// lets it reuse totals counted less than TOTALS_EVERY ago. A busy folder is never
    /// shown idle, so the reused totals cannot make `wait` return early.
    fn publish_busy(&mut self, busy: bool) {
        let now = Instant::now();
        let totals = match &self.totals {
            Some((at, totals)) if busy && now.duration_since(*at) < TOTALS_EVERY => totals.clone(),
            _ => {
                let totals = self
                    .index
                    .as_ref()
                    .and_then(|ix| ix.totals().ok())
                    .unwrap_or_default();
                self.totals = Some((now, totals.clone()));
                totals
            }
        };
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
        let state = if self.paused {
            FolderState::Paused
        } else if self.root_error.is_some()
            || self.rules_error.is_some()
            || self.marker_error.is_some()
        {
            FolderState::Error
        } else if !self.scanned {
            FolderState::Scanning
        } else if self.hold.is_some() {
            FolderState::Held
        } else if self.session.is_none() {
            FolderState::Offline
        } else if pending || busy || !self.caught_up {
            FolderState::Syncing
        } else {
            FolderState::Idle
        };
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
            unsyncable: self.unsyncable.clone(),
            counters: self.counters.snapshot(),
            rate_up_bps,
            rate_down_bps,
            index_bytes: crate::index::size_on_disk(&super::index_file(
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
            owner: super::account::owner(&self.cfg.name, self.cfg.account.as_ref()),
            local_changes,
        };
        self.status.send_replace(status);
    }
}
