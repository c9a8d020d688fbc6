//! What this device offered its server, and so the only content the server may read
//! back: the blocks of a push the device sent that is not settled yet, or of the synced
//! version of a path in the index that the folder's rules do not ignore. A block request
//! for anything else (an ignored file, a file the index does not hold, a local change
//! of a receive-only folder, a hash never offered for that path) is refused. Without
//! this a server could read any file under the folder byte by byte, through one-byte
//! requests with guessed hashes (the class of rsync CVE-2024-12086).

use std::collections::HashMap;
use std::sync::Mutex;

use filesync_proto::control::FolderMode;
use filesync_proto::wire::{BlockRequest, Change, Entry, EntryKind};

use crate::conn;
use crate::fs::ignore::IgnoreRules;
use crate::index::Index;

/// The pushes a session sent whose results have not come yet, by push id. A push is
/// recorded before it is sent, so the server cannot ask for its blocks first.
#[derive(Debug, Default)]
pub struct Offers {
    pushes: Mutex<HashMap<u64, Vec<Entry>>>,
}

impl Offers {
    /// Records the live files of push `id`, about to be sent.
    pub fn pushed(&self, id: u64, changes: &[Change]) {
        let files: Vec<Entry> = (changes.iter())
            .filter(|c| c.entry.kind == EntryKind::File && !c.entry.deleted)
            .map(|c| c.entry.clone())
            .collect();
        self.lock().insert(id, files);
    }

    /// The result of push `id` came: the server has all it asked for.
    pub fn settled(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn holds(&self, req: &BlockRequest) -> bool {
        (self.lock().values().flatten()).any(|e| e.path == req.path && conn::is_block_of(e, req))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Entry>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.pushes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the server may have the block `req` asks for; the reason when it may not.
/// Whether the bytes on disk still are that block is for [`conn::serve_block`] to say.
pub fn check(
    req: &BlockRequest,
    mode: FolderMode,
    rules: &IgnoreRules,
    offers: &Offers,
    index: &Index,
) -> Result<(), String> {
    let path = &req.path;
    if mode == FolderMode::ReceiveOnly {
        return Err(format!(
            "{path} is in a receive-only folder, which offers the server nothing"
        ));
    }
    if rules.is_ignored(path, false) {
        return Err(format!("{path} is ignored, and never leaves this device"));
    }
    if offers.holds(req) {
        return Ok(());
    }
    let row = index
        .local(path)
        .map_err(|e| format!("cannot read the index for {path}: {e:#}"))?;
    match row {
        Some(row)
            if !row.dirty
                && !row.entry.deleted
                && row.entry.kind == EntryKind::File
                && conn::is_block_of(&row.entry, req) =>
        {
            Ok(())
        }
        Some(row) if !row.dirty && !row.entry.deleted => Err(format!(
            "no block of {path} at offset {} holds {} bytes with that hash",
            req.offset, req.size
        )),
        Some(_) => Err(format!("{path} was not offered to the server")),
        None => Err(format!("{path} is not in this device's index")),
    }
}

#[cfg(test)]
mod tests {
    use filesync_proto::RelPath;

    use super::*;
    use crate::index::LocalRow;
    use crate::index::tests::file_entry;

    fn request(path: &str, offset: u64, bytes: &[u8]) -> BlockRequest {
        BlockRequest {
            path: RelPath::new(path).unwrap(),
            offset,
            size: bytes.len() as u32,
            hash: crate::fs::chunk::sha256(bytes),
        }
    }

    /// A file entry of one block holding `content`.
    fn entry(path: &str, content: &[u8]) -> Entry {
        let mut entry = file_entry(path, 1, content);
        entry.blocks[0].hash = crate::fs::chunk::sha256(content);
        entry
    }

    fn put(index: &Index, path: &str, content: &[u8], dirty: bool) {
        let row = LocalRow {
            entry: entry(path, content),
            inode: 1,
            dirty,
        };
        index.put_local(&row).unwrap();
    }

    /// Every way a request can miss what was offered, beside the two ways it can hit.
    #[test]
    fn only_offered_blocks_are_owed() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.db")).unwrap();
        let rules = IgnoreRules::parse(b"secret.txt\n").unwrap();
        let offers = Offers::default();
        put(&index, "synced.txt", b"synced", false);
        put(&index, "secret.txt", b"secret", false);
        put(&index, "edited.txt", b"edited", true);
        put(&index, "pushed.txt", b"pushed", true);
        let two_way = |req: &BlockRequest| check(req, FolderMode::TwoWay, &rules, &offers, &index);

        assert_eq!(two_way(&request("synced.txt", 0, b"synced")), Ok(()));
        for (req, why) in [
            (request("secret.txt", 0, b"secret"), "ignored"),
            (request("synced.txt", 0, b"s"), "no block"),
            (request("synced.txt", 1, b"ynced"), "no block"),
            (request("edited.txt", 0, b"edited"), "not offered"),
            (request("pushed.txt", 0, b"pushed"), "not offered"),
            (
                request("elsewhere.txt", 0, b"x"),
                "not in this device's index",
            ),
        ] {
            let got = two_way(&req).expect_err(req.path.as_str());
            assert!(got.contains(why), "{}: {got}", req.path);
        }

        let change = Change {
            entry: entry("pushed.txt", b"pushed"),
            base_seq: 0,
            data: None,
        };
        offers.pushed(7, &[change]);
        assert_eq!(two_way(&request("pushed.txt", 0, b"pushed")), Ok(()));
        assert!(two_way(&request("pushed.txt", 0, b"p")).is_err());
        offers.settled(7);
        assert!(two_way(&request("pushed.txt", 0, b"pushed")).is_err());

        let receive_only = check(
            &request("synced.txt", 0, b"synced"),
            FolderMode::ReceiveOnly,
            &rules,
            &offers,
            &index,
        );
        assert!(receive_only.unwrap_err().contains("receive-only"));
    }
}
