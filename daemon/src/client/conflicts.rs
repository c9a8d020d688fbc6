//! Listing and settling a folder's conflicts.
//!
//! A conflict copy is recorded in the index (its entry carries a [`ConflictNote`]), so
//! the list comes from the index, never from file names. Settling one is a local change
//! like any other: the copy is moved over the original or deleted, and the next scan
//! pushes the result, so the other devices follow and the server keeps what was
//! replaced among its versions.

use std::path::Path;

use anyhow::{Context, Result, bail};
use filesync_proto::RelPath;
use filesync_proto::control::{ConflictInfo, Keep};
use filesync_proto::wire::ConflictNote;

use crate::index::{Index, LocalRow};
use crate::store;

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

/// Whether `pattern` (a path, or a glob over paths) names the conflict at `note`/`copy`.
fn matches(pattern: &str, note: &ConflictNote, copy: &RelPath) -> Result<bool> {
    if pattern == note.original.as_str() || pattern == copy.as_str() {
        return Ok(true);
    }
    let glob = globset::Glob::new(pattern)
        .with_context(|| format!("{pattern:?} is not a valid path or glob"))?;
    let m = glob.compile_matcher();
    Ok(m.is_match(note.original.as_str()) || m.is_match(copy.as_str()))
}

/// Settles every conflict `pattern` names; returns the paths it changed on disk (to be
/// scanned) and how many conflicts it settled.
pub(super) fn resolve(
    root: &Path,
    index: &Index,
    pattern: &str,
    keep: Keep,
) -> Result<(usize, Vec<RelPath>)> {
    let mut touched = Vec::new();
    let mut settled = 0;
    for copy in index.conflicts()? {
        let Some(note) = copy.entry.conflict.clone() else {
            continue;
        };
        if !matches(pattern, &note, &copy.entry.path)? {
            continue;
        }
        let original = index.local(&note.original)?;
        let keep_copy = match keep {
            Keep::Local => true,
            Keep::Remote => false,
            Keep::Newer => original
                .as_ref()
                .is_none_or(|o| o.entry.deleted || copy.entry.mtime_ns > o.entry.mtime_ns),
        };
        unchanged_on_disk(root, &copy)?;
        if keep_copy {
            if let Some(o) = &original {
                unchanged_on_disk(root, o)?;
            }
            let (from, to) = (copy.entry.path.to_path(root), note.original.to_path(root));
            std::fs::rename(&from, &to).with_context(|| {
                format!("cannot move {} over {}", copy.entry.path, note.original)
            })?;
        } else if !store::remove(root, &copy.entry.path)? {
            bail!(
                "cannot remove conflict copy {}: it is a non-empty directory",
                copy.entry.path
            );
        }
        touched.push(note.original.clone());
        touched.push(copy.entry.path.clone());
        settled += 1;
    }
    Ok((settled, touched))
}

/// Refuses to act on a file that changed since the index last saw it.
fn unchanged_on_disk(root: &Path, row: &LocalRow) -> Result<()> {
    let disk = store::stat(&row.entry.path.to_path(root))?;
    if !store::matches_index(disk.as_ref(), &row.entry, row.inode) {
        bail!(
            "{} changed since it was last scanned; wait a moment and try again",
            row.entry.path
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_proto::DeviceId;

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
        ] {
            assert_eq!(matches(pattern, &note, &copy).unwrap(), want, "{pattern}");
        }
        assert!(matches("a[", &note, &copy).is_err());
    }
}
