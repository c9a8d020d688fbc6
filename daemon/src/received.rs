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

use crate::store;

/// Checks `entry` as received from a peer and strips the mode bits it must not carry.
/// The error names the field and says why it is refused.
pub fn check_entry(entry: &mut Entry) -> Result<(), String> {
    check_path("entry.path", &entry.path)?;
    if let Some(from) = &entry.renamed_from {
        check_path("entry.renamed_from", from)?;
    }
    if let Some(note) = &entry.conflict {
        check_path("entry.conflict.original", &note.original)?;
        if !crate::plan::is_conflict_copy_of(&entry.path, &note.original) {
            return Err(format!(
                "entry.conflict of {:?} is refused: it is not a conflict copy's name for \
                 its original {:?}",
                entry.path.as_str(),
                note.original.as_str()
            ));
        }
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
    match path.components().find(|c| store::is_reserved(c)) {
        Some(name) => Err(format!(
            "{field} {path:?} is refused: {name:?} is in the daemon's reserved namespace \
             ({}*), which is never synced",
            store::RESERVED_PREFIX
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
