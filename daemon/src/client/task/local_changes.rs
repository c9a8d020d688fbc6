//! A receive-only folder's local changes: kept on this device, listed in status, never
//! sent; `filesyncctl revert` puts the server's version back, and moves every local
//! version it replaces or removes aside into the folder's `.filesync-reverted/`.
//! The decisions are [`crate::client::plan::receive_only`]'s.

use std::cmp::Reverse;

use anyhow::{Result, bail};
use filesync_proto::RelPath;
use filesync_proto::control::{FolderMode, LOCAL_CHANGES_LISTED, LocalChanges};
use tokio::sync::oneshot;

use super::FolderTask;
use crate::client::plan::{self, receive_only::Revert, receive_only::Unsent};
use crate::events::unix_secs;
use crate::fs::REVERTED_DIR;
use crate::fs::beneath::Root;
use crate::fs::stat;
use crate::fs::tree;
use crate::index::LocalRow;
use crate::scan;

/// At most this many bytes of paths are listed per folder, whatever their length: a
/// status answer must stay far below the control frame limit with many folders.
const LISTED_BYTES: usize = 8 * 1024;

/// What one revert did, for its answer.
#[derive(Default)]
struct Reverted {
    /// Local changes undone.
    undone: u64,
    /// Of those, paths where the server's version comes back.
    restored: u64,
    /// Local versions moved aside, and into which directory of the folder.
    moved: u64,
    aside: Option<RelPath>,
    /// Paths left as they are, each with why.
    left: Vec<String>,
}

impl FolderTask {
    /// Whether this folder keeps its local changes to itself. The only place that says
    /// so: whatever else makes a folder receive-only for this device gets the same
    /// behaviour by answering here.
    pub(super) fn receive_only(&self) -> bool {
        self.effective_mode() == FolderMode::ReceiveOnly
    }

    /// Why this folder keeps its local changes: its own mode, or a read-only grant.
    fn unsent_reason(&self) -> String {
        if self.read_only_share {
            format!(
                "folder {} is shared read-only with this account: ask its owner for \
                 `filesyncctl share {} --with ACCOUNT` without --read-only, or revert them",
                self.cfg.name,
                self.cfg
                    .name
                    .shared()
                    .map_or_else(|| "FOLDER".to_owned(), |(_, f)| f.to_string())
            )
        } else {
            format!("this folder is {}", FolderMode::ReceiveOnly.as_str())
        }
    }

    /// After a scan of a receive-only folder recorded `changes` (a full scan: every local
    /// change): a directory rename is split into paths (it is never sent, so nothing may
    /// wait for the server to take it), and what is no change after all is settled.
    pub(super) fn settle_unsent(&mut self, changes: &[LocalRow]) -> Result<()> {
        for row in changes.iter().filter(|r| r.dirty) {
            if let Some(src) = &row.entry.renamed_from {
                self.unpair_rename(src, &row.entry.path)?;
            }
        }
        for change in changes.iter().filter(|r| r.dirty) {
            let Some(mut row) = self.index().local(&change.entry.path)? else {
                continue;
            };
            if !row.dirty {
                continue;
            }
            let remote = self.index().remote(&row.entry.path)?;
            match plan::receive_only::unsent(&row, remote.as_ref()) {
                Unsent::Kept => {}
                Unsent::MarkSynced { seq } => {
                    row.entry.seq = seq;
                    row.dirty = false;
                    self.index().put_local(&row)?;
                }
                Unsent::Forget => self.index().remove_local(&row.entry.path)?,
            }
        }
        Ok(())
    }

    /// The local changes for status, `count` of them (the dirty rows), with the first
    /// paths; nothing for a folder that sends its changes.
    pub(super) fn local_changes(&self, count: u64) -> LocalChanges {
        if !self.receive_only() || count == 0 {
            return LocalChanges::default();
        }
        let listed = (self.index.as_ref())
            .and_then(|ix| ix.dirty_paths(LOCAL_CHANGES_LISTED).ok())
            .unwrap_or_default();
        LocalChanges {
            count,
            paths: within_listed_bytes(listed),
            reason: self.unsent_reason(),
        }
    }

    /// `filesyncctl revert`: refused unless the folder is receive-only. The folder is
    /// scanned first, so that a change made just before the request is reverted too;
    /// the answer comes from [`Self::finish_reverts`], in the step of that scan.
    pub(super) fn ask_revert(&mut self, reply: oneshot::Sender<Result<String, String>>) {
        if !self.receive_only() {
            let _ = reply.send(Err(format!(
                "folder {} is {}: it sends its changes to the server, so it has no local \
                 changes to revert; `revert` is for receive-only folders",
                self.cfg.name,
                self.effective_mode().as_str()
            )));
            return;
        }
        self.full_scan("requested by revert");
        self.revert_waiters.push(reply);
    }

    /// Answers the reverts asked for before this step's scan.
    pub(super) fn finish_reverts(&mut self) {
        if self.revert_waiters.is_empty() {
            return;
        }
        let problem = (self.rules_error.clone())
            .or_else(|| self.marker_error.clone())
            .or_else(|| self.root_error.clone());
        let answer = match problem {
            Some(why) => Err(format!("cannot revert folder {}: {why}", self.cfg.name)),
            None => self.revert(),
        };
        for waiter in std::mem::take(&mut self.revert_waiters) {
            let _ = waiter.send(answer.clone());
        }
    }

    fn revert(&mut self) -> Result<String, String> {
        let mut done = Reverted::default();
        let result = self.revert_rows(&mut done);
        let name = &self.cfg.name;
        let mut text = if done.undone == 0 {
            format!("folder {name} has no local changes to revert")
        } else {
            format!(
                "reverted {} in folder {name}: {} the server's version again",
                count(done.undone, "local change", "local changes"),
                count(done.restored, "path gets", "paths get"),
            )
        };
        if let Some(aside) = &done.aside {
            text.push_str(&format!(
                "; {} moved to {}",
                count(done.moved, "local version", "local versions"),
                aside.to_path(&self.cfg.path).display()
            ));
        }
        if !done.left.is_empty() {
            text.push_str(&format!("; left as they are: {}", done.left.join(", ")));
        }
        tracing::info!(folder = %name, "{text}");
        match result {
            Ok(()) if done.left.is_empty() => Ok(text),
            Ok(()) => Err(format!("{text}; run `filesyncctl revert {name}` again")),
            Err(e) => Err(format!("{text}; then stopped: {e:#}")),
        }
    }

    /// Undoes each local change, children before their directories; what it did goes
    /// into `done`.
    fn revert_rows(&mut self, done: &mut Reverted) -> Result<()> {
        for (src, dst) in self.index().pending_renames()? {
            self.unpair_rename(&src, &dst)?;
        }
        let mut rows = self.index().dirty(usize::MAX >> 1, true)?;
        rows.sort_by_key(|r| Reverse(r.entry.path.depth()));
        let root = self.root()?;
        for mut row in rows {
            let path = row.entry.path.clone();
            let remote = self.index().remote(&path)?;
            match plan::receive_only::revert(&row, remote.as_ref()) {
                Revert::MarkSynced { seq } => {
                    row.entry.seq = seq;
                    row.dirty = false;
                    self.index().put_local(&row)?;
                    continue;
                }
                // A file made here since the delete was scanned is found by the pull's
                // check of the disk, and scanned instead of overwritten.
                Revert::Forget => self.index().remove_local(&path)?,
                Revert::RemoveDir => match tree::remove(&root, &path) {
                    Ok(true) => self.index().remove_local(&path)?,
                    Ok(false) => {
                        done.left.push(format!(
                            "{path} (a directory still holding files revert leaves alone, \
                             such as ignored ones: move them out first)"
                        ));
                        continue;
                    }
                    Err(e) => {
                        done.left.push(format!("{path} ({e:#})"));
                        continue;
                    }
                },
                Revert::MoveAside => {
                    // The user may have written it since the scan: that version is
                    // theirs, and stays a local change, as the pull treats a file
                    // written during its download.
                    if !scan::unchanged_since_scan(&root, &path, Some(&row))? {
                        self.scan_paths.push(path.clone());
                        done.left
                            .push(format!("{path} (changed since the revert began)"));
                        continue;
                    }
                    let aside = match &done.aside {
                        Some(aside) => aside.clone(),
                        None => done.aside.insert(aside_dir(&root)?).clone(),
                    };
                    let moved = RelPath::new(format!("{aside}/{path}"))
                        .map_err(anyhow::Error::from)
                        .and_then(|to| tree::move_into(&root, &path, &to));
                    if let Err(e) = moved {
                        done.left.push(format!("{path} ({e:#})"));
                        continue;
                    }
                    self.index().remove_local(&path)?;
                    done.moved += 1;
                }
            }
            done.undone += 1;
            if remote.is_some_and(|r| !r.deleted) {
                done.restored += 1;
            }
        }
        Ok(())
    }
}

/// A directory of [`REVERTED_DIR`] named after the time (UTC) that does not exist yet.
fn aside_dir(root: &Root) -> Result<RelPath> {
    let stamp = plan::format_utc(unix_secs());
    for n in 1..=100 {
        let name = match n {
            1 => stamp.clone(),
            n => format!("{stamp}-{n}"),
        };
        let dir = RelPath::new(format!("{REVERTED_DIR}/{name}"))?;
        if stat::stat(root, &dir)?.is_none() {
            return Ok(dir);
        }
    }
    bail!("{REVERTED_DIR}/{stamp} and the next 99 names are taken; move some of them away")
}

/// The first of `paths` that fit in [`LISTED_BYTES`] together.
fn within_listed_bytes(paths: Vec<RelPath>) -> Vec<String> {
    let mut bytes = 0;
    paths
        .into_iter()
        .map(|p| p.to_string())
        .take_while(|p| {
            bytes += p.len();
            bytes <= LISTED_BYTES
        })
        .collect()
}

/// `n` with the singular or plural words.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_paths_stay_within_their_bytes() {
        // `n` components of 99 bytes: `n * 100 - 1` bytes in all.
        let path = |c: char, n: usize| {
            let part = c.to_string().repeat(99);
            RelPath::new(vec![part; n].join("/")).unwrap()
        };
        let short = vec![RelPath::new("a").unwrap(), RelPath::new("b/c").unwrap()];
        assert_eq!(within_listed_bytes(short), ["a", "b/c"]);
        // Three paths of 2999 bytes: the third would pass 8 KiB.
        let long: Vec<RelPath> = ['a', 'b', 'c'].map(|c| path(c, 30)).into();
        let listed = within_listed_bytes(long);
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().map(String::len).sum::<usize>() <= LISTED_BYTES);
        assert_eq!(within_listed_bytes(vec![path('a', 40); 50]).len(), 2);
    }
}
