//! Small files' content that came with the server's index batches, held in memory
//! between the session that received it and the pull that applies it. Keyed by path
//! and hash, so the pull takes only the content of the very version it applies (and
//! still verifies it, [`crate::transfer::from_bytes`]); bounded in bytes, the oldest
//! dropped first: a file whose content went is fetched instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

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
    /// The content by version, with the number of the `put` that brought it.
    content: HashMap<Key, (u64, Vec<u8>)>,
    /// Every `put` in order, oldest first: its number, when, and what it brought. One
    /// whose content was taken or replaced since lingers here until it is dropped or
    /// swept.
    order: VecDeque<(u64, Instant, Key)>,
    bytes: usize,
    puts: u64,
}

impl Held {
    /// Drops the oldest `put`'s content, if it is still held; false if there is none.
    fn drop_oldest(&mut self) -> bool {
        let Some((n, _, key)) = self.order.pop_front() else {
            return false;
        };
        if self.content.get(&key).is_some_and(|(held, _)| *held == n)
            && let Some((_, gone)) = self.content.remove(&key)
        {
            self.bytes -= gone.len();
        }
        true
    }
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
        held.puts += 1;
        let n = held.puts;
        held.bytes += data.len();
        if let Some((_, old)) = held.content.insert(key.clone(), (n, data)) {
            held.bytes -= old.len();
        }
        held.order.push_back((n, Instant::now(), key));
        while held.bytes > self.cap && held.drop_oldest() {}
        // Puts whose content went since: swept once they outnumber what is held.
        if held.order.len() > 2 * held.content.len() + 1024 {
            let Held { content, order, .. } = &mut *held;
            order.retain(|(n, _, k)| content.get(k).is_some_and(|(held, _)| held == n));
        }
    }

    /// The content held for `path` at the version hashing to `hash`, no longer held.
    pub fn take(&self, path: &RelPath, hash: &Hash) -> Option<Vec<u8>> {
        let mut held = self.lock();
        let (_, data) = held.content.remove(&(path.clone(), *hash))?;
        held.bytes -= data.len();
        Some(data)
    }

    /// Drops what came before `cutoff`. Called once nothing is needed: what is left
    /// then was for versions this device had already, and must not sit in memory until
    /// newer content pushes it out. Content that came since may belong to a batch the
    /// session is storing right now, and stays.
    pub fn drop_before(&self, cutoff: Instant) {
        let mut held = self.lock();
        while held.order.front().is_some_and(|(_, at, _)| *at < cutoff) {
            held.drop_oldest();
        }
        // A first sync's tables would keep their largest size for good.
        if held.content.is_empty() {
            held.content.shrink_to_fit();
            held.order.shrink_to_fit();
        }
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
    fn content_put_again_is_dropped_by_its_own_age() {
        let store = InlineStore::new(100);
        let (a, h) = (path("a"), Hash([1; 32]));
        store.put(a.clone(), h, vec![0; 4]);
        store.take(&a, &h);
        let cutoff = Instant::now();
        store.put(a.clone(), h, vec![1; 4]);
        store.drop_before(cutoff);
        assert_eq!(store.take(&a, &h), Some(vec![1; 4]));
    }

    #[test]
    fn content_held_too_long_is_dropped() {
        let store = InlineStore::new(100);
        store.put(path("a"), Hash([1; 32]), vec![0; 4]);
        store.drop_before(Instant::now() - std::time::Duration::from_secs(1));
        assert_eq!(store.lock().bytes, 4, "young content stays");
        store.drop_before(Instant::now());
        assert_eq!(store.take(&path("a"), &Hash([1; 32])), None);
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
