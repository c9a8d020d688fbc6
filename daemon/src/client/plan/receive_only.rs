//! What a receive-only folder does with the local changes it never sends.
//!
//! Pure, like the rest of [`crate::client::plan`]. A local change of a receive-only folder is a
//! dirty local row: an edit, a delete or a new path the server does not have. It stays
//! on this device, is listed in status, and is not pending: the folder is in sync
//! without it. `filesyncctl revert` puts the server's version back, and moves every
//! local version it replaces or removes aside, where the user can take it back.

use filesync_proto::wire::{Entry, EntryKind};

use super::both_dirs;
use crate::index::LocalRow;

/// What a scan's change of a receive-only folder is, next to the server's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsent {
    /// A change the server does not have: it stays here, a local change.
    Kept,
    /// Not a change after all: the server holds the same (the same content, both
    /// directories, or the path gone on both sides); only its number is recorded.
    MarkSynced { seq: u64 },
    /// The delete of a path the server never had: there is nothing to remember.
    Forget,
}

/// `local` is a dirty row, its directory rename (if any) already split into paths.
pub fn unsent(local: &LocalRow, remote: Option<&Entry>) -> Unsent {
    match remote {
        None if local.entry.deleted => Unsent::Forget,
        None => Unsent::Kept,
        Some(r) if local.entry.same_content(r) || both_dirs(&local.entry, r) => {
            Unsent::MarkSynced { seq: r.seq }
        }
        Some(_) => Unsent::Kept,
    }
}

/// What `revert` does with one local change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revert {
    /// Already the server's state: only its number is recorded.
    MarkSynced { seq: u64 },
    /// A local delete: its record goes, so the server's version (if it has a live one)
    /// is pulled back like any entry the device lacks.
    Forget,
    /// A local file or symlink (changed, or only here): moved aside, then the server's
    /// version, if any, is pulled back in its place.
    MoveAside,
    /// A local directory the server has no directory at: removed once empty (what it
    /// held went aside first); one that still holds something (ignored files) stays.
    RemoveDir,
}

/// `local` is a dirty row, its directory rename (if any) already split into paths.
pub fn revert(local: &LocalRow, remote: Option<&Entry>) -> Revert {
    match unsent(local, remote) {
        Unsent::MarkSynced { seq } => Revert::MarkSynced { seq },
        Unsent::Forget => Revert::Forget,
        Unsent::Kept if local.entry.deleted => Revert::Forget,
        Unsent::Kept if local.entry.kind == EntryKind::Dir => Revert::RemoveDir,
        Unsent::Kept => Revert::MoveAside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::plan::tests::{entry, local};

    fn dir(seq: u64, deleted: bool) -> Entry {
        Entry {
            kind: EntryKind::Dir,
            ..entry(seq, 0, deleted)
        }
    }

    fn local_dir(seq: u64) -> LocalRow {
        LocalRow {
            entry: dir(seq, false),
            inode: 1,
            dirty: true,
        }
    }

    #[test]
    fn unsent_changes() {
        use Unsent::*;
        let check = |l: LocalRow, r: Option<Entry>, want: Unsent| {
            assert_eq!(unsent(&l, r.as_ref()), want, "local {l:?} remote {r:?}");
        };
        // A new file, and a new directory: the server has nothing there.
        check(local(0, 1, false, true), None, Kept);
        check(local_dir(0), None, Kept);
        // Made and deleted again before the server heard of it.
        check(local(0, 1, true, true), None, Forget);
        // An edit, a delete, an edit of a path the server deleted since.
        check(local(5, 2, false, true), Some(entry(5, 1, false)), Kept);
        check(local(5, 1, true, true), Some(entry(5, 1, false)), Kept);
        check(local(5, 2, false, true), Some(entry(9, 1, true)), Kept);
        // Edited back to the server's content, or deleted where the server deleted.
        check(
            local(5, 1, false, true),
            Some(entry(5, 1, false)),
            MarkSynced { seq: 5 },
        );
        check(
            local(0, 3, false, true),
            Some(entry(7, 3, false)),
            MarkSynced { seq: 7 },
        );
        check(
            local(5, 1, true, true),
            Some(entry(8, 1, true)),
            MarkSynced { seq: 8 },
        );
        check(local_dir(0), Some(dir(4, false)), MarkSynced { seq: 4 });
        check(local_dir(0), Some(dir(4, true)), Kept);
    }

    #[test]
    fn reverting() {
        use Revert::*;
        let check = |l: LocalRow, r: Option<Entry>, want: Revert| {
            assert_eq!(revert(&l, r.as_ref()), want, "local {l:?} remote {r:?}");
        };
        // Only here: aside (a file), removed once empty (a directory).
        check(local(0, 1, false, true), None, MoveAside);
        check(local(5, 2, false, true), Some(entry(9, 1, true)), MoveAside);
        check(local_dir(0), None, RemoveDir);
        check(local_dir(0), Some(dir(4, true)), RemoveDir);
        check(local_dir(0), Some(entry(4, 1, false)), RemoveDir);
        // Changed here: the local version aside, the server's comes back.
        check(
            local(5, 2, false, true),
            Some(entry(5, 1, false)),
            MoveAside,
        );
        let mut file_over_dir = local(0, 2, false, true);
        file_over_dir.entry.kind = EntryKind::Symlink;
        check(file_over_dir, Some(dir(4, false)), MoveAside);
        // Deleted here: the server's version comes back; nothing anywhere: forgotten.
        check(local(5, 1, true, true), Some(entry(5, 1, false)), Forget);
        check(local(0, 1, true, true), None, Forget);
        // Nothing to undo.
        check(
            local(5, 1, false, true),
            Some(entry(6, 1, false)),
            MarkSynced { seq: 6 },
        );
        check(
            local(5, 1, true, true),
            Some(entry(6, 1, true)),
            MarkSynced { seq: 6 },
        );
    }
}
