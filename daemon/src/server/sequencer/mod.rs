//! The sequencer of one server folder: the only writer of its index, its tree and its
//! versions.
//!
//! Every change, pushed by a device or made directly in the server's copy, is committed
//! here one at a time and gets the folder's next sequence number. A push is checked
//! against the version it was based on; a stale base is a conflict and changes nothing.
//! A regular file that a commit replaces or deletes is first moved to the folder's
//! versions, and only once the new content is verified and durable. New sequence numbers
//! are announced on a watch channel that every session follows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use filesync_proto::control::ServerFolderStatus;
use filesync_proto::wire::{Change, Entry, EntryKind, Hello, PushOutcome, VersionInfo};
use filesync_proto::{AccountName, DeviceId, FolderName, RelPath};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::history::{self, Lineage};
use super::quota::Quotas;
use super::versions::Versions;
use crate::events::unix_secs;
use crate::fs::IGNORE_FILE;
use crate::fs::beneath::Root;
use crate::fs::chunk;
use crate::fs::ignore::IgnoreRules;
use crate::fs::watch::{self as watcher, WatchEvent};
use crate::index::{Index, LocalRow, Meta};
use crate::scan::{self, Scope};
use crate::store::{self, Prepared, Stat, TempFile};

/// How often the server rescans its copy in full, behind the watcher, and expires old
/// versions.
pub(super) const RESCAN_EVERY: Duration = Duration::from_secs(3600);

/// What sessions ask of the sequencer, through [`ServerFolderHandle`]'s methods.
enum SequencerCmd {
    /// Commit pushed changes in order, in one index transaction; a file's content
    /// arrives staged and prepared (verified, fsynced) in a temp file.
    Commit {
        changes: Vec<(Change, Option<Prepared>)>,
        device: DeviceId,
        reply: oneshot::Sender<Vec<PushOutcome>>,
    },
    ListVersions {
        path: RelPath,
        reply: oneshot::Sender<Result<Vec<VersionInfo>, String>>,
    },
    Restore {
        path: RelPath,
        version: Option<u64>,
        device: DeviceId,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// A device said hello: where its index stream starts, in which epoch.
    Join {
        hello: Hello,
        reply: oneshot::Sender<Result<Joined, String>>,
    },
}

/// Where a device's index stream starts, in which epoch: the answer to its hello.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    pub epoch: u64,
    /// The device gets every version above this.
    pub since: u64,
    /// The folder's highest committed sequence number.
    pub current: u64,
}

impl Joined {
    /// The answer to `hello` when it does not show that the folder went back in time
    /// (sessions answer those themselves, so a busy sequencer does not hold up a
    /// connection); else the number from the lost history that the device saw, which only
    /// the sequencer may act on.
    pub fn without_rollback(hello: &Hello, lineage: &Lineage, last: u64) -> Result<Joined, u64> {
        let since = match history::standing(hello, lineage, last) {
            history::Standing::Follows { since } => since,
            history::Standing::Stranger => 0,
            history::Standing::Ahead { seen } => return Err(seen),
        };
        Ok(Joined {
            epoch: lineage.epoch,
            since,
            current: last,
        })
    }
}

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

/// What sessions hold to reach a folder.
#[derive(Clone)]
pub struct ServerFolderHandle {
    pub account: AccountName,
    pub name: FolderName,
    pub root: PathBuf,
    pub index_file: PathBuf,
    cmd: mpsc::Sender<SequencerCmd>,
    /// The folder's highest committed sequence number.
    pub seq: watch::Receiver<u64>,
    pub lineage: watch::Receiver<Lineage>,
    pub status: watch::Receiver<ServerFolderStatus>,
    /// Where pushes to the folder are charged before they are staged.
    pub quotas: Arc<Quotas>,
    /// One count per clone of the handle: while anyone but the server's own map holds
    /// one (a session, its streams), the folder is in use and stays open.
    pub users: Arc<()>,
}

/// Why a call to the sequencer got no answer.
const CLOSING: &str = "the folder is shutting down";

impl ServerFolderHandle {
    /// Commits pushed changes in order (see [`SequencerCmd::Commit`]).
    pub async fn commit(
        &self,
        changes: Vec<(Change, Option<Prepared>)>,
        device: DeviceId,
    ) -> Result<Vec<PushOutcome>> {
        let call = self.call(|reply| SequencerCmd::Commit {
            changes,
            device,
            reply,
        });
        call.await?.get().await
    }

    /// Where `hello`'s device stands in the folder's history; a Hello that shows the
    /// folder went back in time goes to the sequencer, which changes the epoch.
    pub async fn join(&self, hello: &Hello) -> Result<Joined> {
        let current = *self.seq.borrow();
        let lineage = self.lineage.borrow().clone();
        if let Ok(joined) = Joined::without_rollback(hello, &lineage, current) {
            return Ok(joined);
        }
        let hello = hello.clone();
        let call = self.call(|reply| SequencerCmd::Join { hello, reply });
        call.await?.get().await?.map_err(|e| anyhow!(e))
    }

    /// Asks for the versions kept of `path`; the answer comes later, so that a session
    /// reads on meanwhile.
    pub async fn versions(
        &self,
        path: RelPath,
    ) -> Result<Answer<Result<Vec<VersionInfo>, String>>> {
        self.call(|reply| SequencerCmd::ListVersions { path, reply })
            .await
    }

    /// Asks to bring a kept version back as a change by `device`; the answer comes later.
    pub async fn restore(
        &self,
        path: RelPath,
        version: Option<u64>,
        device: DeviceId,
    ) -> Result<Answer<Result<u64, String>>> {
        self.call(|reply| SequencerCmd::Restore {
            path,
            version,
            device,
            reply,
        })
        .await
    }

    /// Resolves once the sequencer has ended (the folder closed), without holding the
    /// folder open meanwhile.
    pub fn closed(&self) -> impl Future<Output = ()> + use<> {
        let cmd = self.cmd.clone();
        async move { cmd.closed().await }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> SequencerCmd,
    ) -> Result<Answer<T>> {
        let (reply, answer) = oneshot::channel();
        self.cmd
            .send(make(reply))
            .await
            .map_err(|_| anyhow!(CLOSING))?;
        Ok(Answer(answer))
    }
}

/// The sequencer's answer to a call it has taken.
pub struct Answer<T>(oneshot::Receiver<T>);

impl<T> Answer<T> {
    pub async fn get(self) -> Result<T> {
        self.0.await.map_err(|_| anyhow!(CLOSING))
    }
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
        root: place.root,
        index_file: place.index_file,
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
                // Charged to the account before the push's reservation is given back.
                self.publish();
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
        if matches!(scope, Scope::All) {
            crate::lifecycle::release_free_memory();
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
    /// ([`store::sweep_uploads`]); `at_start` (of the server), every temp file too.
    fn sweep(&mut self, at_start: bool) {
        let partials = tokio::task::block_in_place(|| match self.open_root() {
            Ok(root) => store::sweep_uploads(&root, at_start),
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

    /// The current row at `path`, after taking in any change made there in the server
    /// copy that the watcher has not reported yet: that change must become a version of
    /// its own before anything replaces it.
    fn current(&mut self, root: &Root, path: &RelPath) -> Result<Option<LocalRow>> {
        let current = self.index.local(path)?;
        if store::unchanged_since_scan(root, path, current.as_ref())? {
            return Ok(current);
        }
        self.scan_sync(Scope::Paths(vec![path.clone()]));
        self.index.local(path)
    }

    fn try_commit(
        &mut self,
        change: Change,
        device: DeviceId,
        staged: Option<Prepared>,
    ) -> Result<PushOutcome> {
        if let Some(from) = change.entry.renamed_from.clone() {
            return self.try_rename(change, &from, device);
        }
        let path = change.entry.path.clone();
        let root = self.open_root()?;
        let current = self.current(&root, &path)?;
        let current_seq = current.as_ref().map_or(0, |r| r.entry.seq);
        let same = current
            .as_ref()
            .is_some_and(|c| c.entry.same_content(&change.entry));
        let same_mtime = current
            .as_ref()
            .is_some_and(|c| c.entry.mtime_ns == change.entry.mtime_ns);
        if same && (change.entry.kind != EntryKind::File || change.entry.deleted || same_mtime) {
            return Ok(PushOutcome::Accepted { seq: current_seq });
        }
        if let Some(current_seq) = stale_base(current.as_ref(), &change) {
            return Ok(PushOutcome::Conflict { current_seq });
        }
        let mut entry = change.entry;
        let stat = match (entry.deleted, entry.kind) {
            (true, _) => {
                self.retire(&root, current.as_ref(), false)?;
                if !store::remove(&root, &path)? {
                    return self.keep_dir(current);
                }
                Stat {
                    kind: entry.kind,
                    size: 0,
                    mtime_ns: 0,
                    mode: 0,
                    inode: 0,
                }
            }
            (false, EntryKind::Dir) => {
                self.retire(&root, current.as_ref(), false)?;
                store::make_dir(&root, &entry)?
            }
            (false, EntryKind::Symlink) => {
                self.retire(&root, current.as_ref(), false)?;
                store::make_symlink(&root, &entry)?
            }
            // The content is already here: only the mtime changed.
            (false, EntryKind::File) if same && staged.is_none() => {
                store::set_file_meta(&root, &entry)?
            }
            (false, EntryKind::File) => {
                let tmp = staged.with_context(|| format!("no content was staged for {path}"))?;
                self.retire(&root, current.as_ref(), true)?;
                tmp.install(&root, &path)?
            }
        };
        entry.origin = device;
        if path.as_str() == IGNORE_FILE {
            self.reload_rules();
        }
        Ok(PushOutcome::Accepted {
            seq: self.record(entry, stat),
        })
    }

    /// Commits a directory rename: the subtree moves by one rename on disk and in the
    /// index, every entry keeping its sequence number, and the folder's history gets one
    /// rename record, which is all that devices receive about it. Refused as a conflict
    /// (the device then sends the move file by file) unless [`may_rename`].
    fn try_rename(
        &mut self,
        change: Change,
        from: &RelPath,
        device: DeviceId,
    ) -> Result<PushOutcome> {
        let to = change.entry.path.clone();
        // Changes made in the server's copy below either path become versions first.
        self.scan_sync(Scope::Paths(vec![from.clone(), to.clone()]));
        if !may_rename(&self.index, from, &change.entry)? {
            let current_seq = self.index.local(&to)?.map_or(0, |r| r.entry.seq);
            return Ok(PushOutcome::Conflict { current_seq });
        }
        let stat = store::rename_dir(&self.open_root()?, from, &to)?;
        let rename_seq = self.take_seq();
        let moved = self.index.batch(|ix| {
            ix.move_local(from, &to)?;
            ix.add_rename(rename_seq, from, &to)
        });
        if let Err(e) = moved {
            // The tree already changed: the next scan pairs the two directories and
            // records the rename itself.
            tracing::error!(folder = %self.name, from = %from, to = %to, "cannot record a rename in the index: {e:#}");
        }
        tracing::info!(folder = %self.name, from = %from, to = %to, "renamed a directory");
        let mut entry = change.entry;
        entry.renamed_from = None;
        entry.origin = device;
        Ok(PushOutcome::Accepted {
            seq: self.record(entry, stat),
        })
    }

    /// Keeps the regular file a commit is about to replace or delete among the versions.
    /// A file that will be replaced by another file stays in the tree (linked into the
    /// versions) so the rename over it is atomic for readers; one that will be deleted or
    /// replaced by a directory or symlink is moved out.
    fn retire(
        &self,
        root: &Root,
        current: Option<&LocalRow>,
        replaced_by_file: bool,
    ) -> Result<()> {
        let Some(row) = current else { return Ok(()) };
        if self.keep_secs == 0 || row.entry.deleted || row.entry.kind != EntryKind::File {
            return Ok(());
        }
        let (path, seq, now) = (&row.entry.path, row.entry.seq, unix_secs());
        let (dir, name) = store::parent(root, path)?;
        let kept = if replaced_by_file {
            self.versions.keep_linked(&dir, name, path, seq, now)
        } else {
            self.versions.keep(&dir, name, path, seq, now)
        };
        kept.with_context(|| format!("cannot keep the old version of {path}"))?;
        Ok(())
    }

    /// Records a committed entry under the next sequence number and announces it.
    fn record(&mut self, mut entry: Entry, stat: Stat) -> u64 {
        let seq = self.take_seq();
        entry.seq = seq;
        if !entry.deleted {
            entry.mtime_ns = stat.mtime_ns;
        }
        if let Err(e) = self.index.put_local(&LocalRow {
            entry,
            inode: stat.inode,
            dirty: false,
        }) {
            // The tree already changed: a rescan will take the change in as its own
            // version, so the folder stays consistent; the sequence number is not reused.
            tracing::error!(folder = %self.name, "cannot record a commit in the index: {e:#}");
        }
        seq
    }

    /// The next sequence number, used up whether or not its version gets recorded.
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last = seq;
        seq
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

    /// Commits a device's changes in order, all in one index transaction (one write and
    /// one wake-up of every session for the lot, not one per file).
    fn commit_all(
        &mut self,
        changes: Vec<(Change, Option<Prepared>)>,
        device: &DeviceId,
    ) -> Vec<PushOutcome> {
        let failed = |e: &anyhow::Error| PushOutcome::Failed { reason: refusal(e) };
        if let Err(e) = self.index.begin() {
            tracing::error!(folder = %self.name, "cannot start an index transaction: {e:#}");
            return changes.iter().map(|_| failed(&e)).collect();
        }
        let outcomes: Vec<PushOutcome> = changes
            .into_iter()
            .map(|(change, staged)| {
                self.try_commit(change, device.clone(), staged)
                    .unwrap_or_else(|e| {
                        tracing::warn!(folder = %self.name, "commit failed: {e:#}");
                        failed(&e)
                    })
            })
            .collect();
        if let Err(e) = self.index.commit() {
            // The tree already changed: the next scan takes those changes in as versions
            // of its own, under new sequence numbers. Nothing was recorded, so no device
            // may take its change as accepted: each sends it again, and then finds it is
            // the server's content already.
            tracing::error!(folder = %self.name, "cannot record commits in the index: {e:#}; rescanning");
            self.scan_sync(Scope::All);
            return outcomes
                .into_iter()
                .map(|o| match o {
                    PushOutcome::Accepted { .. } => failed(&e),
                    other => other,
                })
                .collect();
        }
        outcomes
    }

    /// A device deleted a directory that still holds files it has not seen: the
    /// directory lives on as a new version, which the device will take back.
    fn keep_dir(&mut self, current: Option<LocalRow>) -> Result<PushOutcome> {
        let Some(row) = current else {
            bail!("directory not empty")
        };
        let path = row.entry.path.clone();
        let mut entry = row.entry;
        entry.origin = self.server.clone();
        let stat = Stat {
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: entry.mtime_ns,
            mode: entry.mode,
            inode: row.inode,
        };
        let seq = self.record(entry, stat);
        self.scan_sync(Scope::Paths(vec![path]));
        Ok(PushOutcome::Conflict { current_seq: seq })
    }

    /// Brings a kept version back into the tree as a new change by `device`.
    fn restore(&mut self, path: &RelPath, version: Option<u64>, device: DeviceId) -> Result<u64> {
        let kept = self.versions.list(path)?;
        let chosen = match version {
            None => kept.first(),
            Some(v) => kept.iter().find(|k| k.version == v),
        };
        let Some(chosen) = chosen else {
            match version {
                None => bail!("the server keeps no versions of {path}"),
                Some(v) => bail!(
                    "the server keeps no version {v} of {path}; `filesyncctl versions` lists them"
                ),
            }
        };
        let source = std::fs::File::open(&chosen.file)
            .with_context(|| format!("cannot open kept version of {path}"))?;
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&source.metadata()?.permissions()) & 0o777;
        let hashed = chunk::hash_reader(&source)?;
        let root = self.open_root()?;
        let current = self.current(&root, path)?;
        if let Some(cur) = &current
            && !cur.entry.deleted
            && cur.entry.kind == EntryKind::File
            && cur.entry.hash == hashed.hash
        {
            return Ok(cur.entry.seq);
        }
        if current
            .as_ref()
            .is_some_and(|c| !c.entry.deleted && c.entry.kind != EntryKind::File)
        {
            bail!("{path} is now a directory or symlink; move it away first");
        }
        let entry = Entry {
            path: path.clone(),
            kind: EntryKind::File,
            deleted: false,
            size: hashed.size,
            mtime_ns: chosen.mtime_ns,
            mode,
            hash: hashed.hash,
            blocks: hashed.blocks,
            target: String::new(),
            seq: 0,
            origin: device,
            conflict: None,
            renamed_from: None,
        };
        let mut tmp = TempFile::create(&root, path)?;
        // Streamed in blocks; `prepare` checks the copy against the hash taken above.
        let mut reader = std::io::BufReader::new(std::fs::File::open(&chosen.file)?);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf)?;
            if n == 0 {
                break;
            }
            tmp.write(&buf[..n])?;
        }
        let tmp = tmp.prepare(&entry)?;
        self.retire(&root, current.as_ref(), true)?;
        let stat = tmp.install(&root, path)?;
        tracing::info!(folder = %self.name, path = %path, version = chosen.version, "restored a kept version");
        Ok(self.record(entry, stat))
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

/// The base check: `Some(current sequence)` when `change` was based on a version of its
/// path that is no longer the server's current one, which makes it a conflict. A path
/// with no row at all was renamed away under the device, and a path whose current
/// version is a delete holds nothing to lose: new content lands there whatever its base
/// (an edit beats a delete, so the device would push it again on top of the delete).
pub fn stale_base(current: Option<&LocalRow>, change: &Change) -> Option<u64> {
    current
        .filter(|c| !c.entry.deleted || change.entry.deleted)
        .map(|c| c.entry.seq)
        .filter(|&seq| seq != change.base_seq)
}

/// Whether a directory rename from `from` to `to` may be committed as one move: the
/// source is a live directory here, `to` is a live directory outside it (and it outside
/// `to`), and no history was ever recorded at or below `to`.
pub fn may_rename(index: &Index, from: &RelPath, to: &Entry) -> Result<bool> {
    let src_is_dir = index
        .local(from)?
        .is_some_and(|r| !r.entry.deleted && r.entry.kind == EntryKind::Dir);
    Ok(src_is_dir
        && !to.deleted
        && to.kind == EntryKind::Dir
        && !to.path.starts_with(from)
        && !from.starts_with(&to.path)
        && !index.has_local_under(&to.path)?)
}

/// Why a pushed change was refused, as the device shows it: a full disk here is said
/// in words, since only the server's admin can fix it and the device retries meanwhile.
pub fn refusal(e: &anyhow::Error) -> String {
    if crate::fs::space::is_full(e) {
        format!("server disk full ({e:#}); the change is sent again later")
    } else {
        format!("{e:#}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::file_entry;

    fn row(seq: u64, deleted: bool) -> LocalRow {
        let mut entry = file_entry("f.txt", seq, b"old");
        entry.deleted = deleted;
        LocalRow {
            entry,
            inode: 1,
            dirty: false,
        }
    }

    fn change(base_seq: u64, deleted: bool) -> Change {
        let mut entry = file_entry("f.txt", 0, b"new");
        entry.deleted = deleted;
        Change { entry, base_seq }
    }

    #[test]
    fn a_base_is_stale_unless_current_or_there_is_nothing_to_lose() {
        assert_eq!(stale_base(Some(&row(5, false)), &change(5, false)), None);
        assert_eq!(stale_base(Some(&row(5, false)), &change(3, false)), Some(5));
        assert_eq!(stale_base(Some(&row(5, false)), &change(9, false)), Some(5));
        assert_eq!(stale_base(Some(&row(5, false)), &change(3, true)), Some(5));
        assert_eq!(stale_base(None, &change(7, false)), None);
        // New content over a delete lands whatever its base, even one the path never had.
        assert_eq!(stale_base(Some(&row(5, true)), &change(3, false)), None);
        assert_eq!(stale_base(Some(&row(5, true)), &change(9, false)), None);
        // A delete over a delete still needs the current base.
        assert_eq!(stale_base(Some(&row(5, true)), &change(3, true)), Some(5));
    }
}
