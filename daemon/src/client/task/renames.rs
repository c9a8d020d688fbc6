//! Directory renames between this device and the server: the server's rename record
//! applied here as one move, our own rename confirmed, and one the server did not take
//! sent path by path instead.

use std::path::Path;

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::wire::EntryKind;

use super::FolderTask;
use crate::fs::ignore::IgnoreRules;
use crate::fs::tree;
use crate::index::{self, LocalRow};

/// Whether the directory `dir` under the folder at `root` holds anything `rules` ignore,
/// at any depth, or a name that is no path of ours (which a scan skips as well). Lists
/// without following symlinks; a directory that cannot be listed counts as holding
/// something, since what it holds is unknown.
fn holds_ignored(root: &Path, dir: &RelPath, rules: &IgnoreRules) -> bool {
    let mut todo = vec![dir.clone()];
    // Bounded by the tree: each directory is listed once.
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(dir.as_str())) else {
            return true;
        };
        for entry in entries {
            let Ok(entry) = entry else { return true };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let path = (entry.file_name().to_str())
                .and_then(|name| RelPath::new(format!("{dir}/{name}")).ok());
            let Some(path) = path else { return true };
            if rules.is_ignored(&path, is_dir) {
                return true;
            }
            if is_dir {
                todo.push(path);
            }
        }
    }
    false
}

impl FolderTask {
    /// Whether the server's rename of `src` to `dst` is our own; if so it is confirmed:
    /// the old paths' entries have moved, and they are no longer held back.
    pub(super) fn confirm_own_rename(&mut self, src: &RelPath, dst: &RelPath) -> Result<bool> {
        match self.index().local(dst)? {
            Some(mut own) if own.entry.renamed_from.as_ref() == Some(src) => {
                own.entry.renamed_from = None;
                self.index().put_local(&own)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Applies a directory rename the server made at `seq`: one rename on disk when the
    /// local directory is the one the server renamed, with nothing in the way; otherwise
    /// path by path (what the old directory holds here gets the server's tombstones, and
    /// the new paths are pulled like any entry, from local copies). False when a local
    /// change must be scanned first.
    pub(super) async fn apply_rename(
        &mut self,
        seq: u64,
        src: &RelPath,
        dst: &RelPath,
    ) -> Result<bool> {
        let local_src = self.index().local(src)?;
        let local_dst = self.index().local(dst)?;
        let root = self.root()?;
        // A path that cannot even be looked at (a parent of it here is a file or a
        // symlink: made by this device, in conflict with the server's directory) rules
        // out a rename on disk; path by path, that conflict is settled like any other.
        let looked = [(src, local_src.as_ref()), (dst, local_dst.as_ref())]
            .into_iter()
            .map(|(path, local)| self.disk_matches(&root, path, local))
            .collect::<Vec<_>>();
        if looked.iter().any(|m| matches!(m, Ok(false))) {
            return Ok(false);
        }
        let blocked = looked.into_iter().find_map(Result::err);
        if let Some(e) = &blocked {
            tracing::info!(folder = %self.cfg.name, from = %src, to = %dst, "cannot rename here ({e:#}); moving it path by path");
        }
        let below_src = self.index().local_under(src)?;
        let whole = local_src
            .as_ref()
            .is_some_and(|r| !r.entry.deleted && r.entry.kind == EntryKind::Dir)
            && !self.index().local_under(dst)?.iter().any(|r| !r.entry.deleted)
            && !self.rules.is_ignored(dst, true)
            // A version newer than the rename was made at the old path afterwards.
            && below_src.iter().all(|r| r.entry.seq < seq)
            && blocked.is_none()
            // Ignored files would move along, to where a rule anchored at the old path
            // no longer holds them back, and the next scan would upload them. Path by
            // path, they stay where they are.
            && !holds_ignored(&self.cfg.path, src, &self.rules);
        if whole && self.make_parents(dst).await {
            match self
                .root()
                .and_then(|root| tree::rename_dir(&root, src, dst))
            {
                Ok(_) => {
                    self.index().batch(|ix| ix.move_local(src, dst))?;
                    self.scan_paths.push(dst.clone());
                    tracing::info!(folder = %self.cfg.name, from = %src, to = %dst, "renamed a directory");
                    return Ok(true);
                }
                Err(e) => {
                    tracing::warn!(folder = %self.cfg.name, from = %src, to = %dst, "cannot rename here ({e:#}); moving it path by path")
                }
            }
        }
        self.index().batch(|ix| {
            // Later renames were taken into the server's entries when they arrived, and
            // moved what was below their old paths then: a tombstone made now at an old
            // path goes where they took the rest, or the next rename would carry the
            // local row alone to a path the server has nothing at.
            let renames = ix.renames(seq, u64::MAX)?;
            for row in below_src.iter().filter(|r| !r.entry.deleted) {
                let mut gone = row.entry.clone();
                gone.deleted = true;
                gone.seq = seq;
                gone.renamed_from = None;
                let (path, as_of) = index::moved_by(&gone.path, seq, &renames);
                gone.path = path;
                ix.put_remote(&gone, as_of)?;
            }
            Ok(())
        })?;
        Ok(true)
    }

    /// The server did not take our rename of `src` to `dst`: it is sent path by path
    /// instead. What came from the old directory gets a tombstone there, based on the
    /// version it was, and is new at its new path.
    pub(super) fn unpair_rename(&mut self, src: &RelPath, dst: &RelPath) -> Result<()> {
        let rows = self.index().local_under(dst)?;
        let src_seq = self.index().remote(src)?.map_or(0, |r| r.seq);
        let me = self.id.device.clone();
        self.index().batch(|ix| {
            for mut row in rows {
                let Some(old_path) = row.entry.path.rebase(dst, src) else {
                    continue;
                };
                let base = if old_path == *src {
                    src_seq
                } else {
                    row.entry.seq
                };
                if base > 0 {
                    let mut gone = row.entry.clone();
                    gone.path = old_path;
                    gone.deleted = true;
                    gone.seq = base;
                    gone.origin = me.clone();
                    gone.renamed_from = None;
                    ix.put_local(&LocalRow {
                        entry: gone,
                        inode: 0,
                        dirty: true,
                    })?;
                }
                if row.entry.deleted {
                    ix.remove_local(&row.entry.path)?;
                } else {
                    row.entry.seq = 0;
                    row.entry.renamed_from = None;
                    row.dirty = true;
                    ix.put_local(&row)?;
                }
            }
            Ok(())
        })
    }
}
