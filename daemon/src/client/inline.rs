//! Small files' content that came with the server's index batches, held in memory
//! between the session that received it and the pull that applies it. Keyed by path
//! and hash, so the pull takes only the content of the very version it applies (and
//! still verifies it, [`crate::transfer::from_bytes`]); bounded in bytes, the oldest
//! dropped first: a file whose content went is fetched instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use filesync_proto::{Hash, RelPath};

/// Content held for one folder; shared by its task and its sessions.
pub struct InlineStore {
    held: Mutex<Held>,
    /// Most bytes held at once.
    cap: usize,
}

type Key = (RelPath, Hash);

#[derive(Default)]
struct Held {
    content: HashMap<Key, Vec<u8>>,
    /// Keys in the order they came, oldest first; a key taken since may linger here
    /// until it is dropped or swept.
    order: VecDeque<Key>,
    bytes: usize,
}

/// The default bound of an [`InlineStore`]: eight index batches' worth.
pub const INLINE_HELD: usize = 64 * 1024 * 1024;

impl InlineStore {
    pub fn new(cap: usize) -> InlineStore {
        InlineStore {
            held: Mutex::default(),
            cap,
        }
    }

    /// Holds `data`, the content of `path` at the version hashing to `hash`, dropping
    /// the oldest content held if the bound is reached.
    pub fn put(&self, path: RelPath, hash: Hash, data: Vec<u8>) {
        let mut held = self.lock();
        let key = (path, hash);
        held.bytes += data.len();
        if let Some(old) = held.content.insert(key.clone(), data) {
            held.bytes -= old.len();
        } else {
            held.order.push_back(key);
        }
        while held.bytes > self.cap {
            let Some(oldest) = held.order.pop_front() else {
                break;
            };
            if let Some(gone) = held.content.remove(&oldest) {
                held.bytes -= gone.len();
            }
        }
        // Keys taken since they came: swept once they outnumber what is held.
        if held.order.len() > 2 * held.content.len() + 1024 {
            let Held { content, order, .. } = &mut *held;
            order.retain(|k| content.contains_key(k));
        }
    }

    /// The content held for `path` at the version hashing to `hash`, no longer held.
    pub fn take(&self, path: &RelPath, hash: &Hash) -> Option<Vec<u8>> {
        let mut held = self.lock();
        let data = held.content.remove(&(path.clone(), *hash))?;
        held.bytes -= data.len();
        Some(data)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Every change to `Held` keeps it consistent before it can panic.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    #[test]
    fn content_is_taken_once_and_only_for_its_version() {
        let store = InlineStore::new(100);
        store.put(path("a"), Hash([1; 32]), b"one".to_vec());
        assert_eq!(store.take(&path("a"), &Hash([2; 32])), None);
        assert_eq!(
            store.take(&path("a"), &Hash([1; 32])),
            Some(b"one".to_vec())
        );
        assert_eq!(store.take(&path("a"), &Hash([1; 32])), None);
    }

    #[test]
    fn the_oldest_content_goes_past_the_bound() {
        let store = InlineStore::new(10);
        for (i, p) in ["a", "b", "c"].into_iter().enumerate() {
            store.put(path(p), Hash([i as u8; 32]), vec![0; 4]);
        }
        assert_eq!(store.take(&path("a"), &Hash([0; 32])), None, "dropped");
        assert!(store.take(&path("b"), &Hash([1; 32])).is_some());
        assert!(store.take(&path("c"), &Hash([2; 32])).is_some());
        assert_eq!(store.lock().bytes, 0);
    }

    #[test]
    fn taken_keys_do_not_pile_up() {
        let store = InlineStore::new(1 << 20);
        for i in 0..10_000u32 {
            let p = path(&format!("f{i}"));
            store.put(p.clone(), Hash([0; 32]), vec![1]);
            store.take(&p, &Hash([0; 32]));
        }
        assert!(store.lock().order.len() <= 1025);
    }
}
