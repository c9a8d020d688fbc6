//! The sequencer of one server folder: the only writer of its index and its tree.
//!
//! Every change, pushed by a device or made directly in the server's copy, is committed
//! here one at a time and gets the folder's next sequence number. A push is checked
//! against the version it was based on; a stale base is a conflict and changes nothing.
//! New sequence numbers are announced on a watch channel that every session follows.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use filesync_proto::control::ServerFolderStatus;
use filesync_proto::wire::{Change, Entry, EntryKind, PushOutcome};
use filesync_proto::{AccountName, DeviceId, FolderName};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::index::{Index, LocalRow};
use crate::scan::{self, Scope};
use crate::store::{self, Stat, TempFile};
use crate::watch::{self as watcher, WatchEvent};

/// How often the server rescans its copy in full, behind the watcher.
const RESCAN_EVERY: Duration = Duration::from_secs(3600);

pub enum FolderCmd {
    /// Commit a pushed change; a file's content arrives already staged in a temp file.
    Commit {
        change: Change,
        device: DeviceId,
        staged: Option<TempFile>,
        reply: oneshot::Sender<PushOutcome>,
    },
}

/// What sessions hold to reach a folder.
#[derive(Clone)]
pub struct ServerFolderHandle {
    pub account: AccountName,
    pub name: FolderName,
    pub root: PathBuf,
    pub index_file: PathBuf,
    pub epoch: u64,
    pub cmd: mpsc::Sender<FolderCmd>,
    /// The folder's highest committed sequence number.
    pub seq: watch::Receiver<u64>,
    pub status: watch::Receiver<ServerFolderStatus>,
}

struct Sequencer {
    root: PathBuf,
    index: Index,
    server: DeviceId,
    next_seq: u64,
    seq_tx: watch::Sender<u64>,
    status_tx: watch::Sender<ServerFolderStatus>,
    name: String,
}

/// Opens (creating if needed) the folder and starts its sequencer.
pub fn start(
    account: AccountName,
    name: FolderName,
    root: PathBuf,
    index_file: PathBuf,
    server: DeviceId,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> Result<ServerFolderHandle> {
    std::fs::create_dir_all(&root)?;
    let index = Index::open(&index_file)?;
    let epoch = index.epoch()?;
    let max = index.max_seq()?;
    let (seq_tx, seq_rx) = watch::channel(max);
    let status = ServerFolderStatus {
        account: account.to_string(),
        name: name.to_string(),
        seq: max,
        files: 0,
        bytes: 0,
    };
    let (status_tx, status_rx) = watch::channel(status);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let seq = Sequencer {
        root: root.clone(),
        index,
        server,
        next_seq: max + 1,
        seq_tx,
        status_tx,
        name: format!("{account}/{name}"),
    };
    tracker.spawn(seq.run(cmd_rx, cancel));
    Ok(ServerFolderHandle {
        account,
        name,
        root,
        index_file,
        epoch,
        cmd: cmd_tx,
        seq: seq_rx,
        status: status_rx,
    })
}

impl Sequencer {
    async fn run(mut self, mut cmds: mpsc::Receiver<FolderCmd>, cancel: CancellationToken) {
        store::clean_temp_files(&self.root);
        let watcher = watcher::watch(&self.root)
            .inspect_err(|e| tracing::warn!(folder = %self.name, "cannot watch the server copy: {e}; relying on rescans"))
            .ok();
        self.scan(Scope::All);
        let mut rescan =
            tokio::time::interval_at(tokio::time::Instant::now() + RESCAN_EVERY, RESCAN_EVERY);
        loop {
            self.publish();
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = cmds.recv() => match cmd {
                    FolderCmd::Commit { change, device, staged, reply } => {
                        let outcome = tokio::task::block_in_place(|| self.commit(change, device, staged));
                        let _ = reply.send(outcome);
                    }
                },
                ev = watcher::next_event(watcher.as_ref()) => {
                    tracing::debug!(folder = %self.name, "watch: {ev:?}");
                    match ev {
                        WatchEvent::Changed(paths) => self.scan(Scope::Paths(paths)),
                        WatchEvent::Rescan(_) => self.scan(Scope::All),
                    }
                }
                _ = rescan.tick() => self.scan(Scope::All),
            }
        }
    }

    fn scan(&mut self, scope: Scope) {
        tokio::task::block_in_place(|| self.scan_sync(scope));
    }

    /// Takes in changes made directly in the server's copy, each as a new version.
    fn scan_sync(&mut self, scope: Scope) {
        let result = (|| {
            let out = scan::scan(&self.root, &self.index, &scope, &self.server)?;
            let mut next = self.next_seq;
            self.index.batch(|ix| {
                for row in &out.refreshed {
                    ix.put_local(row)?;
                }
                for row in &out.changes {
                    let mut row = row.clone();
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
                self.next_seq = next;
                if n > 0 {
                    tracing::info!(folder = %self.name, changes = n, "changes made in the server copy");
                    self.seq_tx.send_replace(next - 1);
                }
            }
            Err(e) => tracing::error!(folder = %self.name, "scan of the server copy failed: {e:#}"),
        }
    }

    fn commit(
        &mut self,
        change: Change,
        device: DeviceId,
        staged: Option<TempFile>,
    ) -> PushOutcome {
        match self.try_commit(change, device, staged) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(folder = %self.name, "commit failed: {e:#}");
                PushOutcome::Failed {
                    reason: format!("{e:#}"),
                }
            }
        }
    }

    fn try_commit(
        &mut self,
        change: Change,
        device: DeviceId,
        staged: Option<TempFile>,
    ) -> Result<PushOutcome> {
        let path = change.entry.path.clone();
        let target = path.to_path(&self.root);
        let mut current = self.index.local(&path)?;
        // A change in the server copy that the watcher has not reported yet must become a
        // version of its own before anything replaces it.
        let disk = store::stat(&target)?;
        let known = match &current {
            Some(row) => store::matches_index(disk.as_ref(), &row.entry, row.inode),
            None => disk.is_none(),
        };
        if !known {
            self.scan_sync(Scope::Paths(vec![path.clone()]));
            current = self.index.local(&path)?;
        }
        let current_seq = current.as_ref().map_or(0, |r| r.entry.seq);
        if let Some(cur) = &current
            && cur.entry.same_content(&change.entry)
        {
            return Ok(PushOutcome::Accepted { seq: current_seq });
        }
        if change.base_seq != current_seq {
            return Ok(PushOutcome::Conflict { current_seq });
        }
        if !crate::conn::no_symlink_ancestors(&self.root, &path) {
            anyhow::bail!("a parent of {path} is not a directory on the server");
        }
        let mut entry = change.entry;
        let stat = match (entry.deleted, entry.kind) {
            (true, _) => match store::remove(&self.root, &path)? {
                true => Stat {
                    kind: entry.kind,
                    size: 0,
                    mtime_ns: 0,
                    mode: 0,
                    inode: 0,
                },
                false => return self.keep_dir(current),
            },
            (false, EntryKind::Dir) => store::make_dir(&self.root, &entry)?,
            (false, EntryKind::Symlink) => store::make_symlink(&self.root, &entry)?,
            (false, EntryKind::File) => match staged {
                Some(tmp) => tmp.commit(&target, &entry)?,
                None => anyhow::bail!("no content was staged for {path}"),
            },
        };
        entry.seq = self.next_seq;
        entry.origin = device;
        if !entry.deleted {
            entry.mtime_ns = stat.mtime_ns;
        }
        self.index.put_local(&LocalRow {
            entry,
            inode: stat.inode,
            dirty: false,
        })?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_tx.send_replace(seq);
        tracing::debug!(folder = %self.name, path = %path, seq, "committed");
        Ok(PushOutcome::Accepted { seq })
    }

    /// A device deleted a directory that still holds files it has not seen: the
    /// directory lives on as a new version, which the device will take back.
    fn keep_dir(&mut self, current: Option<LocalRow>) -> Result<PushOutcome> {
        let Some(mut row) = current else {
            anyhow::bail!("directory not empty")
        };
        row.entry.seq = self.next_seq;
        row.entry.origin = self.server.clone();
        self.index.put_local(&row)?;
        self.next_seq += 1;
        self.seq_tx.send_replace(row.entry.seq);
        self.scan_sync(Scope::Paths(vec![row.entry.path.clone()]));
        Ok(PushOutcome::Conflict {
            current_seq: row.entry.seq,
        })
    }

    fn publish(&self) {
        let totals = self.index.totals().unwrap_or_default();
        self.status_tx.send_modify(|s| {
            s.seq = self.next_seq - 1;
            s.files = totals.files;
            s.bytes = totals.bytes;
        });
    }
}

/// Entries for a device, cut so that one message stays well under the frame limit.
pub fn cut_batch(mut entries: Vec<Entry>, max_bytes: usize) -> Vec<Entry> {
    let mut size = 0usize;
    let mut keep = 0usize;
    for e in &entries {
        size += 256 + e.blocks.len() * 40;
        if keep > 0 && size > max_bytes {
            break;
        }
        keep += 1;
    }
    entries.truncate(keep);
    entries
}
