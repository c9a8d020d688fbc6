//! Listing and settling a folder's conflicts.
//!
//! A conflict copy is recorded in the index (its entry carries a [`ConflictNote`]), so
//! the list comes from the index, never from file names. Settling one is a local change
//! like any other: the copy is moved over the original or deleted, and the next scan
//! pushes the result, so the other devices follow and the server keeps what was
//! replaced among its versions.

use anyhow::{Result, bail};
use filesync_proto::RelPath;
use filesync_proto::control::{ConflictInfo, Keep};
use filesync_proto::wire::ConflictNote;

use crate::fs::beneath::Root;
use crate::fs::ignore::IgnoreRules;
use crate::fs::is_reserved;
use crate::fs::tree;
use crate::index::{Index, LocalRow};
use crate::scan;

pub(super) fn list(index: &Index, folder: &str) -> Result<Vec<ConflictInfo>> {
    Ok(index
        .conflicts()?
        .into_iter()
        .filter_map(|row| {
            let note = row.entry.conflict.clone()?;
            Some(ConflictInfo {
                folder: folder.to_string(),
                path: note.original.to_string(),
                copy: row.entry.path.to_string(),
                winner: note.winner.to_string(),
                winner_seq: note.winner_seq,
                loser: row.entry.origin.to_string(),
                made_at: note.made_at,
                copy_size: row.entry.size,
                copy_mtime_ns: row.entry.mtime_ns,
            })
        })
        .collect())
}

/// What `resolve` was asked to settle: a path, or a glob over paths.
struct Pattern<'a> {
    text: &'a str,
    /// Compiled once. A pattern that is not a valid glob can still name a path exactly.
    glob: Result<globset::GlobMatcher, globset::Error>,
}

impl<'a> Pattern<'a> {
    fn new(text: &'a str) -> Pattern<'a> {
        let glob = globset::Glob::new(text).map(|g| g.compile_matcher());
        Pattern { text, glob }
    }

    /// Whether it names the conflict whose copy is `copy`, by the copy or the original.
    fn matches(&self, note: &ConflictNote, copy: &RelPath) -> bool {
        [note.original.as_str(), copy.as_str()]
            .into_iter()
            .any(|path| path == self.text || self.glob.as_ref().is_ok_and(|g| g.is_match(path)))
    }
}

/// Settles every conflict `pattern` names; returns the paths it changed on disk (to be
/// scanned) and how many conflicts it settled.
pub(super) fn resolve(
    root: &Root,
    index: &Index,
    rules: &IgnoreRules,
    pattern: &str,
    keep: Keep,
) -> Result<(usize, Vec<RelPath>)> {
    let pattern = Pattern::new(pattern);
    let mut touched = Vec::new();
    let mut settled = 0;
    for copy in index.conflicts()? {
        let Some(note) = copy.entry.conflict.clone() else {
            continue;
        };
        if !pattern.matches(&note, &copy.entry.path) {
            continue;
        }
        // Checked when the note arrived too; a note recorded before that check, or rules
        // changed since, must still never move a peer's file into such a place.
        if note.original.components().any(is_reserved)
            || rules.is_ignored(&note.original, false)
            || !crate::client::plan::is_conflict_copy_of(&copy.entry.path, &note.original)
        {
            bail!(
                "conflict copy {} does not belong to {:?}, which is ignored or reserved \
                 here or not beside the copy (was its directory renamed?); move or delete \
                 the copy by hand",
                copy.entry.path,
                note.original.as_str()
            );
        }
        let original = index.local(&note.original)?;
        let keep_copy = match keep {
            Keep::Local => true,
            Keep::Remote => false,
            Keep::Newer => original
                .as_ref()
                .is_none_or(|o| o.entry.deleted || copy.entry.mtime_ns > o.entry.mtime_ns),
        };
        unchanged_on_disk(root, &copy.entry.path, Some(&copy))?;
        if keep_copy {
            unchanged_on_disk(root, &note.original, original.as_ref())?;
            tree::rename_over(root, &copy.entry.path, &note.original)?;
        } else if !tree::remove(root, &copy.entry.path)? {
            bail!(
                "cannot remove conflict copy {}: it is a non-empty directory",
                copy.entry.path
            );
        }
        touched.push(note.original.clone());
        touched.push(copy.entry.path.clone());
        settled += 1;
    }
    if settled == 0
        && let Err(e) = &pattern.glob
    {
        bail!("{:?} is not a valid path or glob: {e}", pattern.text);
    }
    Ok((settled, touched))
}

/// Refuses to act on a path that changed since the index last saw it; with no `row`, the
/// index knows nothing there, so nothing may be there (an ignored file, say, or one not
/// scanned yet, which moving the copy over it would destroy).
fn unchanged_on_disk(root: &Root, path: &RelPath, row: Option<&LocalRow>) -> Result<()> {
    if !scan::unchanged_since_scan(root, path, row)? {
        bail!("{path} changed since it was last scanned; wait a moment and try again");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{stat, temp};
    use filesync_proto::DeviceId;

    /// A folder on disk and its index.
    struct Folder {
        dir: tempfile::TempDir,
        index: Index,
    }

    impl Folder {
        fn new() -> Folder {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("root")).unwrap();
            let index = Index::open(&dir.path().join("index.db")).unwrap();
            Folder { dir, index }
        }

        fn root(&self) -> std::path::PathBuf {
            self.dir.path().join("root")
        }

        /// Writes `content` at `path` without telling the index.
        fn write(&self, path: &str, content: &str) {
            std::fs::write(self.root().join(path), content).unwrap();
        }

        /// Writes `content` at `path` and records it in the index as scanned.
        fn put(&self, path: &str, content: &str, conflict: Option<ConflictNote>) {
            self.write(path, content);
            let root = Root::open(&self.root()).unwrap();
            let st = stat::stat(&root, &RelPath::new(path).unwrap())
                .unwrap()
                .unwrap();
            let mut entry = temp::tests::entry_for(path, content.as_bytes());
            (entry.mtime_ns, entry.mode) = (st.mtime_ns, st.mode);
            entry.conflict = conflict;
            let row = LocalRow {
                entry,
                inode: st.inode,
                dirty: false,
            };
            self.index.put_local(&row).unwrap();
        }

        /// A conflict copy of `original` holding `content`.
        fn put_copy(&self, copy: &str, original: &str, content: &str) {
            let note = ConflictNote {
                original: RelPath::new(original).unwrap(),
                winner_seq: 1,
                winner: DeviceId::new("winner").unwrap(),
                made_at: 0,
            };
            self.put(copy, content, Some(note));
        }

        fn resolve(&self, pattern: &str, keep: Keep) -> Result<usize> {
            let root = Root::open(&self.root()).unwrap();
            resolve(&root, &self.index, &IgnoreRules::builtin(), pattern, keep).map(|(n, _)| n)
        }

        fn read(&self, path: &str) -> Option<String> {
            std::fs::read_to_string(self.root().join(path)).ok()
        }
    }

    #[test]
    fn a_pattern_that_is_no_glob_still_names_a_path_exactly() {
        let f = Folder::new();
        f.put("a[.txt", "theirs", None);
        f.put_copy("a[.sync-conflict-20260101-000000-X.txt", "a[.txt", "ours");
        let err = f.resolve("b[", Keep::Local).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"b[\" is not a valid path or glob"),
            "{err:#}"
        );
        assert_eq!(f.resolve("a[.txt", Keep::Local).unwrap(), 1);
        assert_eq!(f.read("a[.txt").as_deref(), Some("ours"));
        assert_eq!(f.read("a[.sync-conflict-20260101-000000-X.txt"), None);
    }

    #[test]
    fn keeping_the_copy_never_replaces_a_file_the_index_does_not_know() {
        let f = Folder::new();
        let copy = "a.sync-conflict-20260101-000000-X.txt";
        f.put_copy(copy, "a.txt", "ours");
        // Ignored here, or not scanned yet: either way not the server's version.
        f.write("a.txt", "unknown");
        for keep in [Keep::Local, Keep::Newer] {
            let err = f.resolve("a.txt", keep).unwrap_err();
            assert!(err.to_string().contains("a.txt changed since"), "{err:#}");
        }
        assert_eq!(f.read("a.txt").as_deref(), Some("unknown"));
        assert_eq!(f.read(copy).as_deref(), Some("ours"));

        std::fs::remove_file(f.root().join("a.txt")).unwrap();
        assert_eq!(f.resolve("a.txt", Keep::Local).unwrap(), 1);
        assert_eq!(f.read("a.txt").as_deref(), Some("ours"));
    }

    /// A note recorded before notes were checked, or under other rules: `resolve` still
    /// never moves the copy into an ignored or reserved path, or one the copy's name does
    /// not derive from.
    #[test]
    fn resolve_never_writes_into_an_ignored_or_reserved_original() {
        let f = Folder::new();
        std::fs::create_dir_all(f.root().join(".git/hooks")).unwrap();
        f.put_copy("x.sync-conflict-20260101-000000-X.sh", "x.sh", "#!/bin/sh");
        f.put_copy(
            "pre-commit.sync-conflict-20260101-000000-X",
            "pre-commit",
            "#!/bin/sh",
        );
        let root = Root::open(&f.root()).unwrap();
        let rules = IgnoreRules::parse(b".git/\n").unwrap();
        let note = |copy: &str, original: &str| {
            let path = RelPath::new(copy).unwrap();
            let mut row = f.index.local(&path).unwrap().unwrap();
            row.entry.conflict.as_mut().unwrap().original = RelPath::new(original).unwrap();
            f.index.put_local(&row).unwrap();
        };
        note(
            "x.sync-conflict-20260101-000000-X.sh",
            ".git/hooks/pre-commit",
        );
        note(
            "pre-commit.sync-conflict-20260101-000000-X",
            ".filesync-folder",
        );
        for keep in [Keep::Local, Keep::Newer] {
            let err = resolve(&root, &f.index, &rules, "*", keep).unwrap_err();
            assert!(err.to_string().contains("ignored or reserved"), "{err:#}");
        }
        assert_eq!(f.read(".git/hooks/pre-commit"), None);
        assert_eq!(f.read(".filesync-folder"), None);
    }

    #[test]
    fn patterns_match_original_copy_or_glob() {
        let note = ConflictNote {
            original: RelPath::new("docs/a.txt").unwrap(),
            winner_seq: 1,
            winner: DeviceId::new("w").unwrap(),
            made_at: 0,
        };
        let copy = RelPath::new("docs/a.sync-conflict-20260101-000000-X.txt").unwrap();
        for (pattern, want) in [
            ("docs/a.txt", true),
            ("docs/a.sync-conflict-20260101-000000-X.txt", true),
            ("docs/*.txt", true),
            ("**/*.txt", true),
            ("*.md", false),
            ("docs/b.txt", false),
            ("a[", false),
        ] {
            assert_eq!(
                Pattern::new(pattern).matches(&note, &copy),
                want,
                "{pattern}"
            );
        }
    }
}
