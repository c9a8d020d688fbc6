//! The receiving end of the index stream ([`crate::server::stream`] is the sending
//! one): each batch stored in the `remote` table, rename records first, with where the
//! stream stands; and the refresh that reads the server's whole index again.

use anyhow::Result;
use filesync_proto::wire::Entry;

use crate::index::{Index, Meta};

/// Asks the next session to read the server's whole index again. The folder task calls
/// it with no session running, so that no index batch lands in between.
///
/// The session that starts it marks every server entry we hold unconfirmed and says
/// hello from sequence 0 (the server then sends every entry it has, at its current
/// path); renames this device already took in are skipped as always. Once caught up,
/// what was not sent again is what the server no longer has: dropped, or a tombstone
/// where a local copy derives from it ([`Index::end_refresh`]). A refresh cut off by a
/// disconnect goes on from where it was.
pub fn request_refresh(index: &Index) -> Result<()> {
    index.set_meta(Meta::Refresh, REFRESH_ASKED)
}

/// Starts the refresh asked for, if any: every remote entry unconfirmed, the stream back
/// to sequence 0, where rename records stand kept. True if it started.
pub(super) fn begin_refresh(index: &Index) -> Result<bool> {
    if index.meta(Meta::Refresh)? != Some(REFRESH_ASKED) {
        return Ok(false);
    }
    index.batch(|ix| {
        ix.start_refresh()?;
        ix.set_meta(Meta::Renamed, renamed(ix)? as i64)?;
        ix.set_meta(Meta::Refresh, REFRESH_UNDER_WAY)?;
        ix.set_meta(Meta::Since, 0)
    })?;
    Ok(true)
}

/// The values of [`Meta::Refresh`]: asked for, or under way.
const REFRESH_ASKED: i64 = 1;
const REFRESH_UNDER_WAY: i64 = 2;

/// Whether a refresh is under way (see [`request_refresh`]).
pub(super) fn refresh_under_way(index: &Index) -> Result<bool> {
    Ok(index.meta(Meta::Refresh)? == Some(REFRESH_UNDER_WAY))
}

/// Where an index batch brings the device (see [`ServerMsg::Index`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Batch {
    pub up_to: u64,
    pub as_of: u64,
    pub caught_up: bool,
}

/// Where the rename records taken in stand: before this layout kept it, the received
/// sequence.
fn renamed(ix: &Index) -> Result<u64> {
    match ix.meta(Meta::Renamed)? {
        Some(r) => Ok(r as u64),
        None => Ok(ix.meta(Meta::Since)?.unwrap_or(0) as u64),
    }
}

/// Stores an index batch in `ix`: the rename records not taken in yet, then the entries
/// (at their paths as of after those renames), then where the stream stands. With
/// `refreshing`, the batch that catches up ends the refresh, and then the number of
/// entries it dropped is returned.
pub(super) fn store_batch(
    ix: &Index,
    entries: &[Entry],
    batch: Batch,
    refreshing: bool,
) -> Result<Option<usize>> {
    let renamed = renamed(ix)?;
    for e in entries {
        if let Some(src) = &e.renamed_from
            && e.seq > renamed
        {
            ix.take_remote_rename(e.seq, src, &e.path)?;
        }
    }
    for e in entries.iter().filter(|e| e.renamed_from.is_none()) {
        ix.put_remote(e, batch.as_of)?;
    }
    ix.set_meta(Meta::Renamed, renamed.max(batch.as_of) as i64)?;
    ix.set_meta(Meta::Since, batch.up_to as i64)?;
    if batch.caught_up && refreshing {
        ix.delete_meta(Meta::Refresh)?;
        return ix.end_refresh(batch.as_of).map(Some);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use filesync_proto::RelPath;
    use filesync_proto::wire::{EntryKind, ServerMsg};

    use super::*;
    use crate::index::LocalRow;
    use crate::index::tests::file_entry;
    use crate::server::sequencer::commit::may_rename;
    use crate::server::stream::Cursor;

    fn path(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    fn open(name: &str) -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join(name)).unwrap();
        (dir, ix)
    }

    /// A server folder's index, changed the way the sequencer changes it.
    struct Server {
        _dir: tempfile::TempDir,
        ix: std::sync::Arc<Index>,
        next: u64,
    }

    impl Server {
        fn new() -> Server {
            let (dir, ix) = open("server.db");
            Server {
                _dir: dir,
                ix: std::sync::Arc::new(ix),
                next: 1,
            }
        }

        /// The index as a session reads it.
        fn reader(&self) -> crate::server::store::FolderReader {
            crate::server::store::FolderReader::Embedded {
                index: self.ix.clone(),
                root: self._dir.path().to_owned(),
            }
        }

        fn commit(&mut self, at: &str, kind: EntryKind, deleted: bool) {
            let mut entry = file_entry(at, self.next, at.as_bytes());
            if kind == EntryKind::Dir {
                entry.kind = kind;
                entry.blocks.clear();
                entry.size = 0;
            }
            entry.deleted = deleted;
            self.next += 1;
            let row = LocalRow {
                entry,
                inode: 0,
                dirty: false,
            };
            self.ix.put_local(&row).unwrap();
        }

        /// `Sequencer::try_rename`, refusing what [`may_rename`] refuses.
        fn rename(&mut self, from: &str, to: &str) {
            let (from, to) = (path(from), path(to));
            let mut target = file_entry(to.as_str(), 0, b"");
            target.kind = EntryKind::Dir;
            if !may_rename(&self.ix, &from, &target).unwrap() {
                return;
            }
            let seq = self.next;
            self.next += 1;
            self.ix
                .batch(|ix| {
                    ix.move_local(&from, &to)?;
                    ix.add_rename(seq, &from, &to)
                })
                .unwrap();
            self.commit(to.as_str(), EntryKind::Dir, false);
        }

        fn live(&self, kind: Option<EntryKind>) -> Vec<String> {
            let mut live: Vec<String> = (self.ix.all_local().unwrap().into_values())
                .filter(|r| !r.entry.deleted && kind.is_none_or(|k| r.entry.kind == k))
                .map(|r| r.entry.path.to_string())
                .collect();
            live.sort();
            live
        }
    }

    /// A device's index and its connection's place in the server's stream.
    struct Device {
        _dir: tempfile::TempDir,
        ix: Index,
        stream: Option<Cursor>,
        refreshing: bool,
    }

    impl Device {
        fn new() -> Device {
            let (dir, ix) = open("device.db");
            Device {
                _dir: dir,
                ix,
                stream: None,
                refreshing: false,
            }
        }

        /// Takes in what the stream sends next, connecting first if need be; false once
        /// there is nothing more to read.
        fn receive(&mut self, server: &Server) -> bool {
            let since = self.ix.meta(Meta::Since).unwrap().unwrap_or(0) as u64;
            let cursor = self.stream.get_or_insert_with(|| Cursor::new(since));
            let (messages, more) =
                futures::executor::block_on(cursor.next(&server.reader())).unwrap();
            for msg in messages {
                let ServerMsg::Index {
                    entries,
                    inline: _,
                    up_to,
                    as_of,
                    caught_up: done,
                } = msg
                else {
                    panic!("not an index batch: {msg:?}");
                };
                let batch = Batch {
                    up_to,
                    as_of,
                    caught_up: done,
                };
                let refreshing = self.refreshing;
                let dropped = (self.ix)
                    .batch(|ix| store_batch(ix, &entries, batch, refreshing))
                    .unwrap();
                self.refreshing &= dropped.is_none();
            }
            more
        }

        fn catch_up(&mut self, server: &Server) {
            for _ in 0..10_000 {
                if !self.receive(server) {
                    return;
                }
            }
            panic!("the device never caught up");
        }

        /// The server entries this device holds as live (it has no local rows, or only
        /// ones that match, so every other one is needed).
        fn live(&self, kind: Option<EntryKind>) -> Vec<String> {
            let mut live: Vec<String> = (self.ix.needed(100_000).unwrap().into_iter())
                .filter(|e| !e.deleted && kind.is_none_or(|k| e.kind == k))
                .map(|e| e.path.to_string())
                .collect();
            live.sort();
            live
        }
    }

    /// The soak's failure in its smallest form: a directory renamed away, another one
    /// renamed into its old name. A device that joins afterwards gets the second one's
    /// entries at their new paths, with numbers from before the first rename.
    #[test]
    fn a_rename_does_not_move_entries_read_after_it() {
        let mut server = Server::new();
        server.commit("a", EntryKind::Dir, false);
        server.commit("a/x", EntryKind::File, false);
        server.commit("c", EntryKind::Dir, false);
        server.commit("c/y", EntryKind::File, false);
        let mut following = Device::new();
        following.catch_up(&server);
        server.rename("a", "b");
        server.rename("c", "a");
        following.catch_up(&server);
        let mut joining = Device::new();
        joining.catch_up(&server);
        let want = ["a", "a/y", "b", "b/x"];
        assert_eq!(server.live(None), want);
        assert_eq!(following.live(None), want, "a device that followed");
        assert_eq!(joining.live(None), want, "a device that joined after");
    }

    /// Random directory moves, creates and deletes among a few names, with devices
    /// reading the stream and reconnecting in between: every device ends with exactly
    /// the server's live entries.
    #[test]
    fn devices_follow_any_mix_of_renames() {
        let names = ["a", "b", "c"];
        let dirs: Vec<String> = (names.iter().map(|n| n.to_string()))
            .chain(
                names
                    .iter()
                    .flat_map(|p| names.iter().map(move |n| format!("{p}/{n}"))),
            )
            .collect();
        for seed in 1..=40u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = |n: usize| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % n as u64) as usize
            };
            let mut server = Server::new();
            let mut devices = [Device::new(), Device::new()];
            for _ in 0..200 {
                let live_dirs = server.live(Some(EntryKind::Dir));
                let parent_ok = |p: &str| {
                    path(p)
                        .parent()
                        .is_none_or(|d| live_dirs.contains(&d.to_string()))
                };
                match next(8) {
                    0 | 1 => {
                        let dir = &dirs[next(dirs.len())];
                        if !live_dirs.contains(dir) && parent_ok(dir) {
                            server.commit(dir, EntryKind::Dir, false);
                        }
                    }
                    2 if !live_dirs.is_empty() => {
                        let dir = &live_dirs[next(live_dirs.len())];
                        server.commit(&format!("{dir}/f{}", next(2)), EntryKind::File, false);
                    }
                    3 => {
                        let files = server.live(Some(EntryKind::File));
                        if !files.is_empty() {
                            server.commit(&files[next(files.len())], EntryKind::File, true);
                        }
                    }
                    4 if !live_dirs.is_empty() => {
                        let from = &live_dirs[next(live_dirs.len())];
                        let to = &dirs[next(dirs.len())];
                        if parent_ok(to) {
                            server.rename(from, to);
                        }
                    }
                    5 => devices[next(2)].stream = None,
                    _ => {
                        devices[next(2)].receive(&server);
                    }
                }
            }
            for (i, device) in devices.iter_mut().enumerate() {
                device.catch_up(&server);
                assert_eq!(
                    device.live(None),
                    server.live(None),
                    "seed {seed}, device {i}"
                );
            }
        }
    }

    /// A device whose view of the server drifted (entries the server never had) reads
    /// the whole index again: what the server lacks goes, as a tombstone where a local
    /// copy derives from it, and renames it took in before are not queued again.
    #[test]
    fn a_refresh_drops_what_the_server_lacks() {
        let mut server = Server::new();
        server.commit("a", EntryKind::Dir, false);
        server.commit("a/x", EntryKind::File, false);
        server.rename("a", "b");
        let mut device = Device::new();
        device.catch_up(&server);
        device.ix.remove_rename(3).unwrap();
        let mut ghost_dir = file_entry("g", 2, b"");
        ghost_dir.kind = EntryKind::Dir;
        ghost_dir.blocks.clear();
        device.ix.put_remote(&ghost_dir, 2).unwrap();
        device
            .ix
            .put_remote(&file_entry("g/f", 2, b"f"), 2)
            .unwrap();
        let row = LocalRow {
            entry: ghost_dir,
            inode: 0,
            dirty: false,
        };
        device.ix.put_local(&row).unwrap();

        request_refresh(&device.ix).unwrap();
        assert!(begin_refresh(&device.ix).unwrap());
        device.stream = None;
        device.refreshing = true;
        device.catch_up(&server);
        assert!(!device.refreshing, "the refresh ended");
        assert_eq!(device.ix.meta(Meta::Refresh).unwrap(), None);
        assert_eq!(device.live(None), server.live(None));
        let ghost = device.ix.remote(&path("g")).unwrap().unwrap();
        assert!(ghost.deleted && ghost.seq > 2, "{ghost:?}");
        assert_eq!(device.ix.remote(&path("g/f")).unwrap(), None);
        assert!(
            device.ix.renames(0, u64::MAX).unwrap().is_empty(),
            "a rename taken in before the refresh is not queued again"
        );
    }
}
