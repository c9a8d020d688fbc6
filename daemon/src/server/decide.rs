//! The decisions a commit makes whatever stores the folder: the embedded sequencer
//! ([`super::sequencer::commit`]) and a cluster node
//! ([`super::cluster::serve`]) both ask these, so that a device sees one behaviour.

use filesync_proto::RelPath;
use filesync_proto::wire::{Change, Entry, EntryKind};

/// The base check: `Some(current sequence)` when `change` was based on a version of its
/// path that is no longer the server's current one, which makes it a conflict. A path
/// with no row at all was renamed away under the device, and a path whose current
/// version is a delete holds nothing to lose: new content lands there whatever its base
/// (an edit beats a delete, so the device would push it again on top of the delete).
pub fn stale_base(current: Option<&Entry>, change: &Change) -> Option<u64> {
    current
        .filter(|c| !c.deleted || change.entry.deleted)
        .map(|c| c.seq)
        .filter(|&seq| seq != change.base_seq)
}

/// Whether a directory rename from `from` to `to` may be committed as one move: the
/// source `src` is a live directory, `to` is a live directory outside it (and it outside
/// `to`). The store checks too that no history was ever recorded at or below `to`.
pub fn may_rename(src: Option<&Entry>, from: &RelPath, to: &Entry) -> bool {
    src.is_some_and(|s| !s.deleted && s.kind == EntryKind::Dir)
        && !to.deleted
        && to.kind == EntryKind::Dir
        && !to.path.starts_with(from)
        && !from.starts_with(&to.path)
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

    fn entry(seq: u64, deleted: bool) -> Entry {
        let mut entry = file_entry("f.txt", seq, b"old");
        entry.deleted = deleted;
        entry
    }

    fn change(base_seq: u64, deleted: bool) -> Change {
        let mut entry = file_entry("f.txt", 0, b"new");
        entry.deleted = deleted;
        Change {
            entry,
            base_seq,
            data: None,
        }
    }

    #[test]
    fn a_base_is_stale_unless_current_or_there_is_nothing_to_lose() {
        assert_eq!(stale_base(Some(&entry(5, false)), &change(5, false)), None);
        assert_eq!(
            stale_base(Some(&entry(5, false)), &change(3, false)),
            Some(5)
        );
        assert_eq!(
            stale_base(Some(&entry(5, false)), &change(9, false)),
            Some(5)
        );
        assert_eq!(
            stale_base(Some(&entry(5, false)), &change(3, true)),
            Some(5)
        );
        assert_eq!(stale_base(None, &change(7, false)), None);
        // New content over a delete lands whatever its base, even one the path never had.
        assert_eq!(stale_base(Some(&entry(5, true)), &change(3, false)), None);
        assert_eq!(stale_base(Some(&entry(5, true)), &change(9, false)), None);
        // A delete over a delete still needs the current base.
        assert_eq!(stale_base(Some(&entry(5, true)), &change(3, true)), Some(5));
    }
}
