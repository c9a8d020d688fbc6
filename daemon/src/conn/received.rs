//! Checks on entries that arrive from the network, before anything acts on them.
//!
//! Decoding already guarantees the shape: every path is a [`filesync_proto::RelPath`]
//! (no `..`, absolute, drive, backslash, NUL or empty component) and every name is
//! validated. What decoding cannot know is what a path or a block list means to this
//! daemon: a name in its reserved namespace, a block list that does not describe the
//! file, a link target that no system call can take. Those are refused here, on the
//! server for every pushed change and on the client for every index entry, with an
//! error naming the field. Mode bits are not refused but narrowed: setuid, setgid and
//! sticky never arrive.

use filesync_proto::RelPath;
use filesync_proto::path::MAX_PATH_LEN;
use filesync_proto::wire::{Entry, EntryKind, MAX_BLOCK_SIZE};

use crate::fs::{RESERVED_PREFIX, is_reserved};

/// Checks the conflict note `entry` carries, if any, and drops one that could aim
/// `resolve` anywhere but at the copy's own original: `rules_ignore` says whether the
/// receiver's rules ignore a path. The entry itself goes on as a plain file; the reason
/// is returned, for the log.
///
/// A note is kept only when the original is no reserved and no ignored path, and the
/// entry's path is a conflict copy's name for it ([`crate::client::plan::is_conflict_copy_of`]).
/// A copy whose directory was renamed after it was made no longer passes (its note still
/// names the old path); it then syncs as a plain file, which is what it has become.
pub fn check_note(entry: &mut Entry, rules_ignore: impl Fn(&RelPath) -> bool) -> Option<String> {
    let note = entry.conflict.as_ref()?;
    let why = if let Err(why) = check_path("entry.conflict.original", &note.original) {
        why
    } else if rules_ignore(&note.original) {
        format!("its original {:?} is ignored here", note.original.as_str())
    } else if !crate::client::plan::is_conflict_copy_of(&entry.path, &note.original) {
        format!(
            "it is not a conflict copy's name for its original {:?}",
            note.original.as_str()
        )
    } else {
        return None;
    };
    entry.conflict = None;
    Some(format!(
        "dropped the conflict note of {:?}, which syncs as a plain file: {why}",
        entry.path.as_str()
    ))
}

/// Checks `entry` as received from a peer and strips the mode bits it must not carry.
/// The error names the field and says why it is refused.
pub fn check_entry(entry: &mut Entry) -> Result<(), String> {
    check_path("entry.path", &entry.path)?;
    if let Some(from) = &entry.renamed_from {
        check_path("entry.renamed_from", from)?;
    }
    entry.mode &= 0o777;
    if entry.deleted {
        return Ok(());
    }
    match entry.kind {
        EntryKind::File => check_blocks(entry),
        EntryKind::Symlink => check_target(entry),
        EntryKind::Dir => Ok(()),
    }
}

fn check_path(field: &str, path: &RelPath) -> Result<(), String> {
    match path.components().find(|c| is_reserved(c)) {
        Some(name) => Err(format!(
            "{field} {path:?} is refused: {name:?} is in the daemon's reserved namespace \
             ({}*), which is never synced",
            RESERVED_PREFIX
        )),
        None => Ok(()),
    }
}

/// A file's blocks must describe exactly its bytes: every block between 1 byte and the
/// block limit, their sizes adding up to the file's size. Every block holds at least one
/// byte, so a file of N bytes has at most N blocks: an absurd count is refused before
/// any of its blocks is looked at.
fn check_blocks(entry: &Entry) -> Result<(), String> {
    let (path, count) = (&entry.path, entry.blocks.len() as u64);
    if count > entry.size {
        return Err(format!(
            "entry.blocks of {path} lists {count} blocks for {} bytes",
            entry.size
        ));
    }
    let mut total = 0u64;
    for (i, block) in entry.blocks.iter().enumerate() {
        if block.size == 0 || block.size > MAX_BLOCK_SIZE {
            return Err(format!(
                "entry.blocks[{i}].size of {path} is {}, outside 1..={MAX_BLOCK_SIZE}",
                block.size
            ));
        }
        total += u64::from(block.size);
    }
    if total != entry.size {
        return Err(format!(
            "entry.blocks of {path} add up to {total} bytes, not entry.size {}",
            entry.size
        ));
    }
    Ok(())
}

/// A link target is stored verbatim and never followed, but it must be something a
/// system call can create: not empty, no NUL, not longer than a path.
fn check_target(entry: &Entry) -> Result<(), String> {
    let (path, target) = (&entry.path, &entry.target);
    if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH_LEN {
        return Err(format!(
            "entry.target of symlink {path} is refused: it is empty, holds a NUL or is longer \
             than {MAX_PATH_LEN} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use filesync_proto::wire::BlockInfo;
    use filesync_proto::{DeviceId, Hash};

    use super::*;

    fn file(path: &str, size: u64, blocks: &[u32]) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            deleted: false,
            size,
            mtime_ns: 0,
            mode: 0o644,
            hash: Hash::ZERO,
            blocks: blocks
                .iter()
                .map(|&size| BlockInfo {
                    hash: Hash::ZERO,
                    size,
                })
                .collect(),
            target: String::new(),
            seq: 0,
            origin: DeviceId::new("d").unwrap(),
            conflict: None,
            renamed_from: None,
        }
    }

    fn symlink(target: &str) -> Entry {
        Entry {
            kind: EntryKind::Symlink,
            target: target.into(),
            ..file("link", 0, &[])
        }
    }

    /// `entry` is refused with an error that names `field`.
    fn refused(mut entry: Entry, field: &str) {
        let err = check_entry(&mut entry).expect_err("must be refused");
        assert!(err.contains(field), "{err:?} does not name {field}");
    }

    #[test]
    fn reserved_names_are_refused_anywhere_in_a_path() {
        for path in [
            ".filesync",
            ".filesync-tmp-0123456789abcdef",
            "a/.filesync-partial-00",
            ".filesync/versions/x",
            "a/.filesyncx/b",
        ] {
            refused(file(path, 0, &[]), "entry.path");
        }
        let mut moved = file("new", 0, &[]);
        moved.kind = EntryKind::Dir;
        moved.renamed_from = Some(RelPath::new("x/.filesync-tmp-1").unwrap());
        refused(moved, "entry.renamed_from");
        for ok in [
            ".filesyncignore",
            "a/.filesyncignore",
            "filesync",
            "a/x.filesync",
        ] {
            assert_eq!(check_entry(&mut file(ok, 0, &[])), Ok(()), "{ok}");
        }
    }

    #[test]
    fn block_lists_must_describe_the_file() {
        let max = MAX_BLOCK_SIZE;
        assert_eq!(check_entry(&mut file("a", 0, &[])), Ok(()));
        assert_eq!(check_entry(&mut file("a", 10, &[4, 6])), Ok(()));
        assert_eq!(
            check_entry(&mut file("a", u64::from(max) + 1, &[max, 1])),
            Ok(())
        );
        refused(file("a", 10, &[4, 5]), "entry.size");
        refused(file("a", 10, &[]), "entry.size");
        refused(file("a", 0, &[0]), "entry.blocks");
        refused(file("a", 4, &[4, 0]), "entry.blocks[1].size");
        refused(
            file("a", u64::from(max) + 1, &[max + 1]),
            "entry.blocks[0].size",
        );
        refused(file("a", 1, &[1, 1, 1, 1, 1]), "entry.blocks");
        // Sizes that would overflow a u32 sum still add up correctly.
        let many = vec![max; 5000];
        assert_eq!(
            check_entry(&mut file("a", u64::from(max) * 5000, &many)),
            Ok(())
        );
    }

    #[test]
    fn a_tombstone_or_directory_is_not_judged_by_its_blocks() {
        let mut gone = file("a", 3, &[1]);
        gone.deleted = true;
        assert_eq!(check_entry(&mut gone), Ok(()));
        let mut dir = file("d", 0, &[]);
        dir.kind = EntryKind::Dir;
        assert_eq!(check_entry(&mut dir), Ok(()));
    }

    /// A conflict note stays only on a copy named for its original, beside it, when the
    /// original is neither reserved nor ignored; otherwise the note goes, the entry stays.
    #[test]
    fn conflict_notes_that_aim_elsewhere_are_dropped() {
        let noted = |copy: &str, original: &str| Entry {
            conflict: Some(filesync_proto::wire::ConflictNote {
                original: RelPath::new(original).unwrap(),
                winner_seq: 1,
                winner: DeviceId::new("w").unwrap(),
                made_at: 0,
            }),
            ..file(copy, 0, &[])
        };
        let git = |p: &RelPath| p.as_str().starts_with(".git/");
        let mut good = noted("d/a.sync-conflict-20260101-000000-X.txt", "d/a.txt");
        assert_eq!(check_note(&mut good, git), None);
        assert!(good.conflict.is_some());
        for (copy, original, why) in [
            (
                "x.sync-conflict-20260101-000000-X.sh",
                ".git/hooks/pre-commit",
                "ignored here",
            ),
            (
                "x.sync-conflict-20260101-000000-X.sh",
                "hooks/pre-commit",
                "not a conflict copy's name",
            ),
            (
                ".git/hooks/pre-commit.sync-conflict-20260101-000000-X",
                ".git/hooks/pre-commit",
                "ignored here",
            ),
            (
                ".filesync-folder.sync-conflict-20260101-000000-X",
                ".filesync-folder",
                "reserved",
            ),
            (
                "e/a.sync-conflict-20260101-000000-X.txt",
                "d/a.txt",
                "not a conflict copy's name",
            ),
        ] {
            let mut entry = noted(copy, original);
            let got = check_note(&mut entry, git).expect(copy);
            assert!(got.contains(why), "{copy}: {got}");
            assert_eq!(entry.conflict, None, "{copy}");
        }
    }

    #[test]
    fn setuid_setgid_and_sticky_are_stripped() {
        for (mode, kept) in [
            (0o4755, 0o755),
            (0o2755, 0o755),
            (0o1777, 0o777),
            (0o7777, 0o777),
            (0o0000, 0o000),
            (u32::MAX, 0o777),
        ] {
            let mut e = file("a", 0, &[]);
            e.mode = mode;
            check_entry(&mut e).unwrap();
            assert_eq!(e.mode, kept, "{mode:o}");
        }
    }

    #[test]
    fn link_targets_must_be_creatable() {
        for ok in ["x", "/etc", "../../..", "a/b/../c"] {
            assert_eq!(check_entry(&mut symlink(ok)), Ok(()), "{ok}");
        }
        refused(symlink(""), "entry.target");
        refused(symlink("a\0b"), "entry.target");
        refused(symlink(&"x".repeat(MAX_PATH_LEN + 1)), "entry.target");
    }
}
