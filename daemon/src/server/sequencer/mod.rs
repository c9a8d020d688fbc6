//! The sequencer of one server folder: the only writer of its index, its tree and its
//! versions.
//!
//! Every change, pushed by a device or made directly in the server's copy, is committed
//! here one at a time and gets the folder's next sequence number. A push is checked
//! against the version it was based on; a stale base is a conflict and changes nothing.
//! A regular file that a commit replaces or deletes is first moved to the folder's
//! versions, and only once the new content is verified and durable. New sequence numbers
//! are announced on a watch channel that every session follows.
//!
//! This file holds the sequencer's life: opening, its loop, scans of the server's copy,
//! history and status. Sessions reach it through [`handle`]; how a change is applied is
//! [`commit`].

pub(crate) mod commit;
mod handle;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use filesync_proto::control::ServerFolderStatus;
use filesync_proto::wire::{Hello, VersionInfo};
use filesync_proto::{AccountName, DeviceId, FolderName};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::history::{self, Lineage};
use super::quota::Quotas;
use super::versions::Versions;
use crate::events::unix_secs;
use crate::fs::IGNORE_FILE;
use crate::fs::beneath::Root;
use crate::fs::ignore::IgnoreRules;
use crate::fs::temp;
use crate::fs::watch::{self as watcher, WatchEvent};
use crate::index::{Index, Meta};
use crate::scan::{self, Scope};

use handle::SequencerCmd;
pub use handle::{Answer, Joined, ServerFolderHandle};

/// How often the server rescans its copy in full, behind the watcher, and expires old
/// versions.
pub(super) const RESCAN_EVERY: Duration = Duration::from_secs(3600);

/// Where a server folder keeps its parts.
pub struct FolderPlace {
    pub root: PathBuf,
    pub index_file: PathBuf,
    pub versions_dir: PathBuf,
    /// How long replaced and deleted files are kept; zero keeps none.
    pub keep_versions: Duration,
    /// Where the folder's bytes are charged to its account.
    pub quotas: Arc<Quotas>,
}

/// How long an open folder lives: the server opens folders on demand and closes those
/// that nobody uses, so the folders open at once stay within its file-descriptor and
/// inotify budget.
pub struct Lifetime {
    /// Asked when the folder has been idle for `idle_after`: true when the server has
    /// let go of the folder (no session holds it), and the sequencer then ends, closing
    /// its index and its watcher.
    pub release: Box<dyn Fn() -> bool + Send + Sync>,
    pub idle_after: Duration,
    /// Opened only to take in what changed in the server's copy while it was closed:
    /// it scans, and closes at once unless a device came meanwhile (no watcher then).
    pub visit: bool,
    /// The first open of the folder since the server started: no transfer can be in
    /// progress yet, so every temp file in it is a crash's leftover.
    pub first_open: bool,
}

struct Sequencer {
    root: PathBuf,
    index: Index,
    /// Where `index` lives, for its size on disk in status.
    index_file: PathBuf,
    versions: Versions,
    keep_secs: i64,
    server: DeviceId,
    /// The folder's ignore rules, so editor files made in the server's copy stay out of
    /// it like anywhere else. A broken rule file keeps the last good rules.
    rules: IgnoreRules,
    /// The number the next version gets; see [`history`] for how it starts.
    next_seq: u64,
    /// The highest number given to a version (what sessions are told), which is below
    /// `next_seq - 1` when numbering skipped a gap.
    last: u64,
    /// The folder's epoch and skipped numbers, for sessions to place devices by; the
    /// epoch changes when the folder's history went back in time.
    lineage_tx: watch::Sender<Lineage>,
    seq_tx: watch::Sender<u64>,
    status_tx: watch::Sender<ServerFolderStatus>,
    name: String,
    /// Where the folder's files and unfinished uploads are charged to `account`.
    quotas: Arc<Quotas>,
    account: AccountName,
    folder: FolderName,
    /// What the last sweep found in unfinished uploads, and when it ran: while there are
    /// some, a commit (which may have finished one) sweeps again, at most once a minute,
    /// so a resumed upload is not charged twice for long.
    partial_bytes: u64,
    swept_at: Option<std::time::Instant>,
}

/// Opens (creating if needed) the folder and starts its sequencer.
pub fn start(
    account: AccountName,
    name: FolderName,
    place: FolderPlace,
    server: DeviceId,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
    lifetime: Lifetime,
) -> Result<ServerFolderHandle> {
    // The account's directory too: other local users have no business in it.
    crate::fs::private::create_dir(&place.root)?;
    let index = Index::open_or_rebuild(&place.index_file, &format!("{account}/{name}"))?;
    let versions = Versions::open(place.versions_dir.clone())?;
    let max = index.max_seq()?;
    let floor = index.meta(Meta::NextFloor)?.unwrap_or(0) as u64;
    let next_seq = history::first_seq(max, history::now_us()).max(floor);
    if next_seq > max + 1 {
        index.add_gap(max, next_seq)?;
    }
    let (lineage_tx, lineage_rx) = watch::channel(Lineage {
        epoch: index.epoch()?,
        gaps: index.gaps()?.into(),
    });
    let (seq_tx, seq_rx) = watch::channel(max);
    let status = ServerFolderStatus {
        account: account.to_string(),
        name: name.to_string(),
        seq: max,
        files: 0,
        bytes: 0,
        index_bytes: 0,
    };
    let (status_tx, status_rx) = watch::channel(status);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let seq = Sequencer {
        root: place.root.clone(),
        index,
        index_file: place.index_file.clone(),
        versions,
        keep_secs: place.keep_versions.as_secs() as i64,
        server,
        rules: IgnoreRules::builtin(),
        next_seq,
        last: max,
        lineage_tx,
        seq_tx,
        status_tx,
        name: format!("{account}/{name}"),
        quotas: place.quotas.clone(),
        account: account.clone(),
        folder: name.clone(),
        partial_bytes: 0,
        swept_at: None,
    };
    tracker.spawn(seq.run(cmd_rx, cancel, lifetime));
    Ok(ServerFolderHandle {
        account,
        name,
        store: crate::server::store::FolderStore::Embedded {
            root: place.root,
            index_file: place.index_file,
        },
        cmd: cmd_tx,
        seq: seq_rx,
        lineage: lineage_rx,
        status: status_rx,
        quotas: place.quotas,
        users: Arc::new(()),
    })
}

impl Sequencer {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<SequencerCmd>,
        cancel: CancellationToken,
        lifetime: Lifetime,
    ) {
        self.sweep(lifetime.first_open);
        if lifetime.visit {
            self.scan(Scope::All);
            self.expire();
            self.announce();
            self.publish();
            if (lifetime.release)() {
                tracing::debug!(folder = %self.name, "visited: scanned and closed");
                return;
            }
        }
        let watcher = watcher::watch(&self.root);
        let every = match watcher.problem() {
            Some(problem) => {
                let every = watcher::fallback_rescan(RESCAN_EVERY);
                tracing::warn!(folder = %self.name, "server copy: {problem}; rescanning every {} s meanwhile", every.as_secs());
                every
            }
            None => RESCAN_EVERY,
        };
        if !lifetime.visit {
            self.scan(Scope::All);
            self.expire();
        }
        let mut rescan = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let check_idle = (lifetime.idle_after / 2).max(Duration::from_millis(500));
        let mut idle_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + check_idle, check_idle);
        let mut busy_at = tokio::time::Instant::now();
        loop {
            self.announce();
            self.publish();
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = cmds.recv() => {
                    busy_at = tokio::time::Instant::now();
                    tokio::task::block_in_place(|| self.handle(cmd));
                }
                _ = idle_tick.tick() => {
                    if busy_at.elapsed() >= lifetime.idle_after && (lifetime.release)() {
                        tracing::info!(folder = %self.name, idle_secs = busy_at.elapsed().as_secs(), "folder closed: no device uses it; it opens again on the next device's Hello or the next hourly visit");
                        break;
                    }
                }
                ev = watcher::next_event(Some(&watcher)) => {
                    busy_at = tokio::time::Instant::now();
                    tracing::debug!(folder = %self.name, "watch: {ev:?}");
                    match ev {
                        WatchEvent::Changed(paths) => self.scan(Scope::Paths(paths)),
                        WatchEvent::Rescan(_) => self.scan(Scope::All),
                    }
                }
                _ = rescan.tick() => {
                    self.scan(Scope::All);
                    self.expire();
                    self.sweep(false);
                }
            }
        }
    }

    fn handle(&mut self, cmd: SequencerCmd) {
        match cmd {
            SequencerCmd::Commit {
                changes,
                device,
                reply,
            } => {
                let outcomes = self.commit_all(changes, &device);
                if self.partial_bytes > 0
                    && self
                        .swept_at
                        .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                {
                    self.sweep(false);
                }
                // Charged to the account before the push's reservation is given back, and
                // announced (after barrier M and the commit) before the device is answered.
                self.publish();
                self.announce();
                let _ = reply.send(outcomes);
            }
            SequencerCmd::ListVersions { path, reply } => {
                let list = self.versions.list(&path).map(|vs| {
                    vs.into_iter()
                        .map(|v| VersionInfo {
                            version: v.version,
                            size: v.size,
                            mtime_ns: v.mtime_ns,
                            kept_at: v.kept_at,
                        })
                        .collect()
                });
                let _ = reply.send(list.map_err(|e| format!("{e:#}")));
            }
            SequencerCmd::Restore {
                path,
                version,
                device,
                reply,
            } => {
                let result = self.restore(&path, version, device);
                if let Err(e) = &result {
                    tracing::warn!(folder = %self.name, path = %path, "restore failed: {e:#}");
                }
                let _ = reply.send(result.map_err(|e| format!("{e:#}")));
            }
            SequencerCmd::Join { hello, reply } => {
                let joined = self.join(&hello).inspect_err(|e| {
                    tracing::error!(folder = %self.name, device = %hello.device, "cannot place a device in the folder's history: {e:#}");
                });
                let _ = reply.send(joined.map_err(|e| format!("{e:#}")));
            }
        }
    }

    /// Where `hello`'s device stands in this folder's history. One from further along the
    /// same epoch than this history goes means the folder went back in time: the epoch
    /// changes and numbering moves past what the device saw (see [`history`]).
    fn join(&mut self, hello: &Hello) -> Result<Joined> {
        let lineage = self.lineage_tx.borrow().clone();
        let seen = match Joined::without_rollback(hello, &lineage, self.last) {
            Ok(joined) => return Ok(joined),
            Err(seen) => seen,
        };
        self.rolled_back(&hello.device, seen)?;
        Ok(Joined {
            epoch: self.lineage_tx.borrow().epoch,
            since: 0,
            current: self.last,
        })
    }

    fn rolled_back(&mut self, device: &DeviceId, seen: u64) -> Result<()> {
        let next = history::next_after_rollback(self.next_seq, seen);
        let (old, last) = (self.lineage_tx.borrow().epoch, self.last);
        let (epoch, gaps) = self.index.batch(|ix| {
            if next > self.next_seq {
                ix.add_gap(last, next)?;
                ix.set_meta(Meta::NextFloor, next as i64)?;
            }
            Ok((ix.new_epoch()?, ix.gaps()?))
        })?;
        tracing::warn!(
            folder = %self.name, device = %device, seen, last, old_epoch = old, epoch,
            "the folder's history went back in time (restored from a backup?): the device had seen \
             sequence {seen}, this copy ends at {last}; the folder gets a new epoch, so every device \
             merges with it without deleting anything"
        );
        self.lineage_tx.send_replace(Lineage {
            epoch,
            gaps: gaps.into(),
        });
        self.next_seq = next;
        Ok(())
    }

    fn scan(&mut self, scope: Scope) {
        tokio::task::block_in_place(|| self.scan_sync(scope));
    }

    fn reload_rules(&mut self) {
        match IgnoreRules::load(&self.root) {
            Ok(rules) => self.rules = rules,
            Err(e) => tracing::warn!(folder = %self.name, "{e}; keeping the previous rules"),
        }
    }

    /// Takes in changes made directly in the server's copy, each as a new version.
    fn scan_sync(&mut self, scope: Scope) {
        let touches_rules = match &scope {
            Scope::All => true,
            Scope::Paths(paths) => paths.iter().any(|p| p.as_str() == IGNORE_FILE),
        };
        if touches_rules {
            self.reload_rules();
        }
        let result = (|| {
            let out = scan::scan(&self.root, &self.index, &scope, &self.server, &self.rules)?;
            let mut next = self.next_seq;
            self.index.batch(|ix| {
                for row in &out.refreshed {
                    ix.put_local(row)?;
                }
                for path in &out.forget {
                    ix.remove_local(path)?;
                }
                for row in &out.changes {
                    let mut row = row.clone();
                    if let Some(src) = row.entry.renamed_from.take() {
                        // A directory renamed in the server's copy: its rows have moved
                        // (refreshed and forgotten above); devices get one record.
                        ix.add_rename(next, &src, &row.entry.path)?;
                        next += 1;
                    }
                    row.entry.seq = next;
                    row.dirty = false;
                    next += 1;
                    ix.put_local(&row)?;
                }
                Ok(())
            })?;
            Ok::<_, anyhow::Error>((out.changes.len(), next))
        })();
        match result {
            Ok((n, next)) => {
                if next > self.next_seq {
                    self.last = next - 1;
                }
                self.next_seq = next;
                if n > 0 {
                    tracing::info!(folder = %self.name, changes = n, "changes made in the server copy");
                }
            }
            Err(e) => tracing::error!(folder = %self.name, "scan of the server copy failed: {e:#}"),
        }
    }

    /// A handle of the folder's root: every change to the tree is made relative to it.
    fn open_root(&self) -> Result<Root> {
        Root::open_folder(&self.root)
    }

    /// Removes versions kept longer than `keep_versions`; with 0, those kept under an
    /// earlier setting too.
    fn expire(&self) {
        match self.versions.expire(unix_secs(), self.keep_secs) {
            Ok(0) => {}
            Ok(n) => tracing::info!(folder = %self.name, expired = n, "old versions removed"),
            Err(e) => tracing::warn!(folder = %self.name, "cannot expire old versions: {e:#}"),
        }
    }

    /// Removes the uploads nobody resumed for a day and charges the rest to the account
    /// ([`temp::sweep_uploads`]); `at_start` (of the server), every temp file too.
    fn sweep(&mut self, at_start: bool) {
        let partials = tokio::task::block_in_place(|| match self.open_root() {
            Ok(root) => temp::sweep_uploads(&root, at_start),
            Err(e) => {
                tracing::warn!(folder = %self.name, "cannot sweep unfinished uploads: {e:#}");
                0
            }
        });
        self.quotas
            .set_partials(&self.account, &self.folder, partials);
        self.partial_bytes = partials;
        self.swept_at = Some(std::time::Instant::now());
    }

    /// Tells the sessions about sequence numbers committed since the last call. Called
    /// between commands, never inside a transaction, so a session that wakes up reads
    /// every row it is told about.
    fn announce(&self) {
        let last = self.last;
        self.seq_tx.send_if_modified(|seq| {
            let changed = *seq != last;
            *seq = last;
            changed
        });
    }

    fn publish(&self) {
        let totals = self.index.totals().unwrap_or_default();
        self.quotas
            .set_files(&self.account, &self.folder, totals.bytes);
        self.status_tx.send_modify(|s| {
            s.seq = self.last;
            s.files = totals.files;
            s.bytes = totals.bytes;
            s.index_bytes = crate::index::size_on_disk(&self.index_file);
        });
    }
}
