//! The folder task's state and its event loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::control::{EventKind, FolderMode, FolderStatus, ScanReport, Unsyncable};
use filesync_proto::wire::Entry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::guard::Hold;
use super::inline::{INLINE_HELD, InlineStore};
use super::session::{self, SessionConfig, SessionEvent, SessionHandle};
use super::{ClientIdentity, FolderCmd, meter, stream};
use crate::config::FolderConfig;
use crate::conn::Counters;
use crate::events::Events;
use crate::fs::IGNORE_FILE;
use crate::fs::beneath::Root;
use crate::fs::ignore::IgnoreRules;
use crate::fs::temp;
use crate::fs::watch::{self as watcher, WatchEvent};
use crate::index::Index;
use partials::Partials;

mod commands;
mod content;
mod failed;
mod land;
mod local_changes;
mod names;
mod partials;
mod phase;
mod pull;
mod push;
mod renames;
mod scan;
mod scanning;
mod status;

/// Server entries applied per step, so that commands and events are served in between.
const PULL_BATCH: usize = 256;
/// Files fetched at the same time: enough that the block requests of many files are
/// in flight at once.
const PULL_FILES: usize = 32;
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
/// The shortest time between two re-reads of the server's whole index (see `refresh`):
/// a server that lists content it cannot serve must not keep a device re-reading.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How long a push refused as a conflict may wait, caught up, for the server's version
/// of its path before the device takes it that its view of the server is wrong: the
/// stream brings that version right after the answer.
const BLOCKED_TOO_LONG: Duration = Duration::from_secs(30);

/// What the folder task's loop acts on, one at a time, between steps.
enum Event {
    /// A command from the supervisor.
    Cmd(FolderCmd),
    /// What a session reports, tagged with its generation: events of an earlier
    /// session are stale and dropped.
    Session(u64, SessionEvent),
    /// The watcher saw changes, or asks for a full rescan.
    Watch(WatchEvent),
    /// A rescan interval passed since the last full scan.
    RescanDue,
    /// Something set aside is due again (see [`FolderTask::next_retry`]).
    RetryDue,
    /// The running full scan sent a piece or its end.
    Scan(scanning::ScanMsg),
    /// The last step left work ready: go straight on to the next.
    MoreWork,
}

/// The channels the loop receives on, owned by `run` beside the task.
struct Inbox {
    /// Commands from the supervisor's handle.
    cmds: mpsc::Receiver<FolderCmd>,
    /// Events of this task's sessions; the sending side is `FolderTask::events_tx`.
    session_events: mpsc::UnboundedReceiver<(u64, SessionEvent)>,
}

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
    /// The full scan under way on its own thread, whose pieces are pushed while it
    /// walks; no other scan and no pull runs meanwhile.
    scanning: Option<scanning::Running>,
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
    /// Server entries this device cannot hold, with why ([`names`]).
    unholdable: BTreeMap<RelPath, String>,
    next_push: u64,
    inflight: HashMap<u64, Vec<Entry>>,
    inflight_paths: HashSet<RelPath>,
    /// Versions we pushed whose results were lost with their connection, by path. When
    /// the index brings one back as the server's current version of its path, made by
    /// this device, it is the base of what we hold now, not a change to conflict with
    /// (`push::rebase_on_own_push`). Emptied for a path by its next push result.
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
    /// Small files' content the scans read, for the pushes that send it inline.
    contents: content::Contents,
    /// Small files' content that came with index batches, until the pull applies it.
    inline: Arc<InlineStore>,
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
            scanning: None,
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
            unholdable: BTreeMap::new(),
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
            contents: content::Contents::default(),
            inline: Arc::new(InlineStore::new(INLINE_HELD)),
        }
    }

    pub(super) async fn run(mut self, cmds: mpsc::Receiver<FolderCmd>, cancel: CancellationToken) {
        let stop_meter = cancel.child_token();
        tokio::spawn(meter::run(
            self.counters.clone(),
            self.status.clone(),
            stop_meter.clone(),
        ));
        let _stop_meter = stop_meter.drop_guard();
        let index_file = super::index_file(&self.id.state_dir, &self.cfg);
        match Index::open_or_rebuild(&index_file, self.cfg.name.as_str()) {
            Ok(ix) => {
                self.index = Some(ix);
                self.judge_skipped_again();
            }
            Err(e) => {
                self.root_error = Some(format!("{e:#}"));
                self.publish();
                cancel.cancelled().await;
                return;
            }
        }
        // Partial downloads stay for the transfers that resume them.
        if let Ok(root) = self.root() {
            for partial in temp::clean_temp_files(&root) {
                self.partials.note(partial);
            }
        }
        self.start_watching();
        // Before any session: what it may serve the server depends on the rules.
        self.reload_rules();
        let (events_tx, session_events) = mpsc::unbounded_channel();
        self.events_tx = events_tx;
        let mut inbox = Inbox {
            cmds,
            session_events,
        };
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
            match self.next_event(&mut inbox, &cancel, more).await {
                Some(event) => self.handle_event(event, &cancel),
                None => break,
            }
        }
        if let Some(c) = self.session_cancel.take() {
            c.cancel();
        }
    }

    /// Waits for what the loop acts on next; `None` once the task is cancelled, which
    /// wins over everything else. With `more` work ready it waits for nothing, after
    /// letting other tasks run.
    async fn next_event(
        &mut self,
        inbox: &mut Inbox,
        cancel: &CancellationToken,
        more: bool,
    ) -> Option<Event> {
        let retry = self.next_retry();
        let rescan = self.last_full_scan + self.rescan_every();
        if more {
            tokio::task::yield_now().await;
        }
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            Some(cmd) = inbox.cmds.recv() => Event::Cmd(cmd),
            Some((generation, ev)) = inbox.session_events.recv() => Event::Session(generation, ev),
            msg = scanning::next(self.scanning.as_mut()) => Event::Scan(msg),
            ev = watcher::next_event(self.watcher.as_ref()) => Event::Watch(ev),
            _ = tokio::time::sleep_until(rescan) => Event::RescanDue,
            _ = tokio::time::sleep_until(retry) => Event::RetryDue,
            _ = std::future::ready(()), if more => Event::MoreWork,
        };
        Some(event)
    }

    /// When something set aside is due again: a failed path, a held delete, a refused
    /// push waiting for the server's version, or a look for a folder that is away.
    fn next_retry(&self) -> Instant {
        // A refused push that waits too long for the server's version is looked at
        // again then (see BLOCKED_TOO_LONG); one already past that waits for the
        // next step, so the loop never spins on it.
        let now = Instant::now();
        let blocked: Vec<Instant> = (self.blocked.values())
            .map(|(_, at)| *at + BLOCKED_TOO_LONG)
            .filter(|at| *at > now)
            .collect();
        self.retry_at
            .values()
            .chain(self.hold_deletes.values())
            .chain(&blocked)
            .min()
            .copied()
            .into_iter()
            .chain(self.away().then(|| Instant::now() + AWAY_POLL))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn handle_event(&mut self, event: Event, cancel: &CancellationToken) {
        match event {
            Event::Cmd(cmd) => self.on_cmd(cmd, cancel),
            Event::Session(generation, ev) => {
                if generation == self.session_gen {
                    self.on_session(ev);
                }
            }
            Event::Watch(ev) => self.on_watch(ev),
            Event::RescanDue => self.periodic_rescan(),
            Event::Scan(msg) => self.on_scan(msg),
            Event::RetryDue => {
                let now = Instant::now();
                self.retry_at.retain(|_, at| *at > now);
                let held = self.hold_deletes.len();
                self.hold_deletes.retain(|_, at| *at > now);
                self.judge_due |= self.hold_deletes.len() < held;
                self.scan_all |= self.away();
            }
            Event::MoreWork => {}
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
            inline: self.inline.clone(),
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

    fn disconnected(&mut self) {
        self.session = None;
        self.caught_up = false;
        let pushed: Vec<Entry> = self.inflight.drain().flat_map(|(_, e)| e).collect();
        self.unconfirm(pushed);
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

    /// Whether the folder's directory is gone or is not the folder (its marker is
    /// missing): then it is looked for every AWAY_POLL.
    fn away(&self) -> bool {
        self.root_error.is_some() || self.marker_error.is_some()
    }

    /// One round of work; true when more is ready to do without waiting for an event.
    pub(super) async fn step(&mut self) -> bool {
        // Read new rules before scanning, so a broken rule file is caught here and is
        // never pushed to the other devices.
        let rules_touched = self.scan_paths.iter().any(|p| p.as_str() == IGNORE_FILE);
        if self.rules_stale || rules_touched || self.rules_error.is_some() || self.scan_all {
            self.reload_rules();
        }
        // The step is about to work: `work_left` tells only syncing from idle, which
        // scan and exchange alike.
        if !self.phase(true).may_scan() {
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
        let scanning = self.scanning.is_some();
        if !scanning && (self.scan_all || !self.scan_paths.is_empty()) {
            self.run_scan();
        }
        // A revert waits for the scan it asked for.
        if self.scanning.is_none() {
            self.finish_reverts();
        }
        self.judge_deletes();
        if !self.phase(true).may_exchange() {
            return false;
        }
        let pulled = match self.scanning {
            Some(_) => false,
            None => self.pull_round().await.unwrap_or_else(|e| {
                self.error(self.explain(&e));
                false
            }),
        };
        let pushed = match self.push_round().await {
            Ok(more) => more,
            Err(e) => {
                self.error(self.explain(&e));
                false
            }
        };
        // Paths to scan wait for the end of a running full scan, which is an event.
        pulled || pushed || (self.scanning.is_none() && !self.scan_paths.is_empty())
    }

    /// `e` in words; a full disk says so and names this folder ([`crate::fs::space::explain`]).
    pub(super) fn explain(&self, e: &anyhow::Error) -> String {
        crate::fs::space::explain(e, self.cfg.name.as_str(), &self.cfg.path)
    }

    /// A handle of the folder's root: every change to the disk is made relative to it.
    fn root(&self) -> Result<Root> {
        Root::open_folder(&self.cfg.path)
    }

    fn index(&self) -> &Index {
        self.index
            .as_ref()
            .expect("index is opened before the loop starts")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::client::trust::TrustStore;
    use filesync_proto::{DeviceId, FolderName};

    /// A folder task on a folder and state directory in `dir`, its index open, not
    /// running: tests call its steps themselves.
    pub(in crate::client::task) fn task(dir: &std::path::Path) -> FolderTask {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let name = FolderName::new("f").unwrap();
        let cfg = FolderConfig::new(root, "127.0.0.1:1".into(), name);
        let id = ClientIdentity {
            device: DeviceId::new("me").unwrap(),
            device_name: "me".into(),
            state_dir: dir.to_path_buf(),
            trust: Arc::new(TrustStore::new(dir)),
        };
        let status = watch::channel(super::super::initial_status(&cfg)).0;
        let mut task = FolderTask::new(cfg, id, Arc::default(), status, Events::default());
        task.index = Some(Index::open(&dir.join("index.db")).unwrap());
        task
    }
}
