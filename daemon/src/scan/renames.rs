//! Directory renames found by a scan: a directory gone from disk and a new one with the
//! same inode are one rename, and the old directory's rows move below the new path
//! keeping their history, so a rename is one change rather than a delete and a create
//! per file.

use std::collections::HashMap;
use std::fs;

use anyhow::Result;
use filesync_proto::RelPath;
use filesync_proto::wire::EntryKind;

use super::{Known, Scanner};
use crate::index::{Index, LocalRow};

impl Scanner<'_> {
    /// Takes into a scan of some paths the rows of each directory that a new directory
    /// was moved from, when that old path is outside the scanned ones: the watcher may
    /// hand over a move's new path a batch before its old one (a new parent is scanned
    /// whole as soon as it appears), and a rename is only seen with both sides in one
    /// scan. An old path that is still on disk is left alone.
    pub(super) fn add_moved_in(&mut self, index: &Index) -> Result<()> {
        let new: Vec<(u64, RelPath)> = self
            .new_dirs
            .iter()
            .map(|(inode, path)| (*inode, path.clone()))
            .collect();
        for (inode, dst) in new {
            let Some(src) = index.live_dir_with_inode(inode)? else {
                continue;
            };
            if self.known.contains_key(&src)
                || src.starts_with(&dst)
                || dst.starts_with(&src)
                || fs::symlink_metadata(src.to_path(self.root)).is_ok()
            {
                continue;
            }
            let known = &mut self.known;
            index.each_local_stat(Some(&src), |path, row| {
                known.entry(path).or_insert(Known { row, seen: false });
            })?;
        }
        Ok(())
    }

    /// Pairs each directory that is gone with a new one of the same inode: it was renamed.
    /// Its rows move below the new path keeping their history, so that the rename is
    /// reported as one change (the new directory, with `renamed_from`) rather than a
    /// delete and a create per file. A directory the server never had, or a new path
    /// with old rows below it, is left to the per-file path.
    pub(super) fn pair_renames(&mut self) -> Result<()> {
        if self.new_dirs.is_empty() {
            return Ok(());
        }
        let mut gone: Vec<(&RelPath, u64)> = self
            .known
            .iter()
            .filter(|(_, k)| {
                !k.row.deleted && k.row.stat.kind == EntryKind::Dir && !k.seen && k.row.shared
            })
            .map(|(path, k)| (path, k.row.stat.inode))
            .collect();
        gone.sort();
        let mut pairs: Vec<(RelPath, RelPath)> = Vec::new();
        for (src, inode) in gone {
            if pairs.iter().any(|(done, _)| src.starts_with(done)) {
                continue;
            }
            let Some(dst) = self.new_dirs.get(&inode) else {
                continue;
            };
            let clash = src.starts_with(dst)
                || dst.starts_with(src)
                || self.known.keys().any(|k| k.starts_with(dst));
            if !clash {
                pairs.push((src.clone(), dst.clone()));
            }
        }
        for (src, dst) in pairs {
            self.move_subtree(&src, &dst)?;
        }
        Ok(())
    }

    /// Moves the known rows at `src` and below to `dst`, matching each with what the walk
    /// found at its new path.
    fn move_subtree(&mut self, src: &RelPath, dst: &RelPath) -> Result<()> {
        let mut olds: Vec<LocalRow> = self.index.local_under(src)?;
        olds.retain(|r| self.known.get(&r.entry.path).is_some_and(|k| !k.seen));
        olds.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
        let mut found: HashMap<RelPath, LocalRow> = HashMap::new();
        self.out.changes.retain(|r| {
            if r.entry.path.starts_with(dst) && !r.entry.deleted {
                found.insert(r.entry.path.clone(), r.clone());
                false
            } else {
                true
            }
        });
        for old in olds {
            let path = old.entry.path.rebase(src, dst).expect("row is below src");
            if let Some(known) = self.known.get_mut(&old.entry.path) {
                known.seen = true;
            }
            self.out.forget.push(old.entry.path.clone());
            match found.remove(&path) {
                Some(mut new) if path == *dst => {
                    // The directory itself carries the rename, as a change the server
                    // has not seen (a rename of a rename not yet sent keeps its source).
                    new.entry.renamed_from = old.entry.renamed_from.or(Some(src.clone()));
                    self.out.changes.push(new);
                }
                Some(mut new)
                    if !old.entry.deleted
                        && old.entry.same_content(&new.entry)
                        && (new.entry.kind != EntryKind::File
                            || old.entry.mtime_ns == new.entry.mtime_ns) =>
                {
                    new.entry.seq = old.entry.seq;
                    new.entry.origin = old.entry.origin;
                    new.entry.conflict = old.entry.conflict;
                    new.entry.renamed_from = old.entry.renamed_from;
                    new.dirty = old.dirty;
                    self.out.refreshed.push(new);
                }
                Some(mut new) => {
                    // Changed as well as moved: a change based on the moved version.
                    new.entry.seq = old.entry.seq;
                    self.out.changes.push(new);
                }
                None if self.seen(&path) && !old.entry.deleted => {
                    // Present but unreadable at the new path: keep the old state there
                    // until it can be read; the stat mismatch brings it back to a scan.
                    let mut row = old;
                    row.entry.path = path;
                    self.out.refreshed.push(row);
                }
                None if self
                    .rules
                    .is_ignored(&path, old.entry.kind == EntryKind::Dir) => {}
                None if old.entry.deleted => {
                    let mut row = old;
                    row.entry.path = path;
                    self.out.refreshed.push(row);
                }
                None => {
                    // Deleted while it was moved: a tombstone at the new path.
                    let mut entry = old.entry;
                    entry.path = path;
                    let tombstone = self.tombstone(entry);
                    self.out.changes.push(tombstone);
                }
            }
        }
        // New paths below `dst` that had no old row: plain new entries.
        self.out.changes.extend(found.into_values());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use filesync_proto::RelPath;

    use super::super::Scope;
    use super::super::tests::Fixture;

    /// Marks every row as accepted by a server at sequence number 7.
    fn mark_synced(f: &Fixture) {
        for (_, mut row) in f.index.all_local().unwrap() {
            row.entry.seq = 7;
            row.dirty = false;
            f.index.put_local(&row).unwrap();
        }
    }

    #[test]
    fn a_renamed_directory_is_one_change_and_its_rows_move_with_their_history() {
        let f = Fixture::new();
        fs::create_dir_all(f.root().join("old/sub")).unwrap();
        for name in ["a", "b", "sub/c"] {
            fs::write(f.root().join("old").join(name), name).unwrap();
        }
        f.scan(&Scope::All);
        mark_synced(&f);
        fs::rename(f.root().join("old"), f.root().join("new")).unwrap();
        fs::write(f.root().join("new/b"), b"edited").unwrap();
        let scope = Scope::Paths(vec![
            RelPath::new("old").unwrap(),
            RelPath::new("new").unwrap(),
        ]);
        assert_eq!(
            f.scan(&scope),
            ["new", "new/b"],
            "only the rename and the edit"
        );
        let p = |s: &str| RelPath::new(s).unwrap();
        let top = f.index.local(&p("new")).unwrap().unwrap();
        assert_eq!(top.entry.renamed_from, Some(p("old")));
        assert!(top.dirty);
        let moved = f.index.local(&p("new/sub/c")).unwrap().unwrap();
        assert_eq!((moved.entry.seq, moved.dirty), (7, false), "moved, not new");
        let edited = f.index.local(&p("new/b")).unwrap().unwrap();
        assert_eq!(
            (edited.entry.seq, edited.dirty),
            (7, true),
            "an edit of the moved file"
        );
        assert!(f.index.local_under(&p("old")).unwrap().is_empty());
    }

    #[test]
    fn a_directory_moved_into_a_new_parent_pairs_when_only_the_new_parent_is_scanned() {
        let f = Fixture::new();
        fs::create_dir_all(f.root().join("old/sub")).unwrap();
        fs::write(f.root().join("old/sub/c"), b"c").unwrap();
        fs::create_dir(f.root().join("kept")).unwrap();
        f.scan(&Scope::All);
        mark_synced(&f);
        fs::create_dir(f.root().join("archive")).unwrap();
        fs::rename(f.root().join("old"), f.root().join("archive/old")).unwrap();
        let p = |s: &str| RelPath::new(s).unwrap();
        // The watcher's first batch names only the new parent.
        assert_eq!(
            f.scan(&Scope::Paths(vec![p("archive")])),
            ["archive", "archive/old"],
            "the new parent and the rename, no file re-sent"
        );
        let top = f.index.local(&p("archive/old")).unwrap().unwrap();
        assert_eq!(top.entry.renamed_from, Some(p("old")));
        let moved = f.index.local(&p("archive/old/sub/c")).unwrap().unwrap();
        assert_eq!((moved.entry.seq, moved.dirty), (7, false), "moved, not new");
        assert!(f.index.local_under(&p("old")).unwrap().is_empty());
        // The next batch names the old path and the new one: nothing more to report.
        assert!(
            f.scan(&Scope::Paths(vec![p("old"), p("archive/old")]))
                .is_empty()
        );
        // A directory that is still at its old path is not taken for a move.
        fs::create_dir(f.root().join("copy")).unwrap();
        let kept = f.index.local(&p("kept")).unwrap().unwrap();
        assert_eq!(f.scan(&Scope::Paths(vec![p("copy")])), ["copy"]);
        assert_eq!(
            f.index.local(&p("kept")).unwrap().unwrap().entry,
            kept.entry
        );
    }

    #[test]
    fn a_directory_the_server_never_had_is_not_paired() {
        let f = Fixture::new();
        fs::create_dir_all(f.root().join("fresh")).unwrap();
        fs::write(f.root().join("fresh/a"), b"a").unwrap();
        f.scan(&Scope::All);
        fs::rename(f.root().join("fresh"), f.root().join("moved")).unwrap();
        assert_eq!(
            f.scan(&Scope::All),
            ["fresh (deleted)", "fresh/a (deleted)", "moved", "moved/a"]
        );
    }
}
