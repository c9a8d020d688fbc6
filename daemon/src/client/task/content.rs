//! Small files' content for pushes (`Change::data`): kept from the read of the scan that
//! hashed it, or read again beneath the root when a push finds none kept, and sent only
//! while it is still the content the index row describes.

use std::collections::HashMap;

use filesync_proto::wire::{Entry, EntryKind, INLINE_MAX};
use filesync_proto::{Hash, RelPath};

use crate::fs::beneath::Root;
use crate::fs::tree;

/// Most bytes of content held for pushes to come: what the scan read beyond it is read
/// again when pushed.
pub(super) const KEEP: usize = 32 * 1024 * 1024;

/// Content read by scans, by path, with the hash of those bytes.
#[derive(Default)]
pub(super) struct Contents {
    by_path: HashMap<RelPath, (Hash, Vec<u8>)>,
    /// Bytes held in `by_path`.
    bytes: usize,
}

impl Contents {
    /// How many more bytes the next scan may keep.
    pub(super) fn room(&self) -> usize {
        KEEP.saturating_sub(self.bytes)
    }

    /// Holds what a scan read, in place of an older read of the same path.
    pub(super) fn keep(&mut self, read: Vec<(RelPath, Hash, Vec<u8>)>) {
        for (path, hash, data) in read {
            self.bytes += data.len();
            if let Some((_, old)) = self.by_path.insert(path, (hash, data)) {
                self.bytes -= old.len();
            }
        }
    }

    /// The content of `path` if what is held is the version `hash` names; it is no
    /// longer held either way.
    pub(super) fn take(&mut self, path: &RelPath, hash: &Hash) -> Option<Vec<u8>> {
        let (held, data) = self.by_path.remove(path)?;
        self.bytes -= data.len();
        (held == *hash).then_some(data)
    }

    pub(super) fn clear(&mut self) {
        self.by_path.clear();
        self.bytes = 0;
    }
}

/// Whether `entry`'s content may travel inline in a push.
pub(super) fn inlinable(entry: &Entry) -> bool {
    entry.kind == EntryKind::File && !entry.deleted && entry.size <= INLINE_MAX
}

/// Reads the file `entry` describes beneath `root` again: its bytes if they still are
/// what `entry` records (size and hash), `None` if the file changed or went since.
pub(super) fn read_again(root: &Root, entry: &Entry) -> std::io::Result<Option<Vec<u8>>> {
    tree::read_version(root, &entry.path, entry.size, &entry.hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::chunk;
    use crate::index::tests::file_entry;

    #[test]
    fn kept_content_is_given_once_and_only_for_its_version() {
        let mut kept = Contents::default();
        let (a, b) = (RelPath::new("a").unwrap(), RelPath::new("b").unwrap());
        let (one, two) = (chunk::sha256(b"one"), chunk::sha256(b"two"));
        kept.keep(vec![
            (a.clone(), one, b"one".to_vec()),
            (b.clone(), one, b"one".to_vec()),
        ]);
        kept.keep(vec![(a.clone(), two, b"two!".to_vec())]);
        assert_eq!(kept.room(), KEEP - 7);
        assert_eq!(kept.take(&a, &one), None, "an older read is replaced");
        assert_eq!(kept.take(&b, &one), Some(b"one".to_vec()));
        assert_eq!(kept.take(&b, &one), None);
        assert_eq!(kept.room(), KEEP);
    }

    #[test]
    fn content_read_again_is_sent_only_while_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut entry = file_entry("f", 0, b"hello");
        entry.hash = chunk::sha256(b"hello");
        assert!(inlinable(&entry));
        assert_eq!(read_again(&root, &entry).unwrap(), Some(b"hello".to_vec()));
        std::fs::write(dir.path().join("f"), b"HELLO").unwrap();
        assert_eq!(read_again(&root, &entry).unwrap(), None);
        entry.size = INLINE_MAX + 1;
        assert!(!inlinable(&entry));
    }
}
