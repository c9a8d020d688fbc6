//! Block lists longer than a frame holds: a file's block list grows with its size (36
//! bytes per block of 64 KiB on average, so a 16 MiB frame would end at about 30 GiB),
//! so the writer of a connection sends the head of a long list ahead of its message in
//! `BlockList` pieces, and the reader puts it back before the role sees the message.
//!
//! The pieces of one message go out right before it, in the order of its entries, with
//! nothing between them (one writer task sends both); the reader holds them, at most
//! [`MAX_FILE_BLOCKS`] blocks, until that message comes. Anything else is a protocol
//! error naming the path: a piece out of order, a piece for a path already complete, a
//! message that has no entry for a piece, another message between pieces and theirs.

use std::sync::OnceLock;

use filesync_proto::wire::{BlockInfo, BlockListPiece, Entry, MAX_FILE_BLOCKS};
use filesync_proto::{MAX_WIRE_FRAME, RelPath};

/// The test-only variable that lowers the frame limit of device-to-server connections
/// (a number of bytes), so that a test can send a block list in pieces without a file
/// of many gigabytes. It must leave room for a block (256 KiB) and an index batch; it is
/// read once and never raises the limit.
const TEST_MAX_FRAME: &str = "FILESYNC_TEST_MAX_FRAME";

/// The frame limit of device-to-server connections: [`MAX_WIRE_FRAME`], unless
/// [`TEST_MAX_FRAME`] lowers it.
pub fn max_frame() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var(TEST_MAX_FRAME)
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(MAX_WIRE_FRAME, |v: usize| v.min(MAX_WIRE_FRAME))
    })
}

/// Most blocks of one list sent in one message: a 32nd of the frame limit (about 13,000
/// blocks in 512 KiB), so that a piece never holds the connection up for long and the
/// message after the pieces keeps room for its other entries.
pub fn piece_blocks() -> usize {
    (max_frame() / 32 / BLOCK_BYTES).max(1)
}

/// A generous size of one block in a list on the wire (a 32-byte hash and a size).
const BLOCK_BYTES: usize = 40;

/// Takes the head of every block list of `entries` longer than `piece` blocks out of
/// it, and returns it as the pieces to send before the message that holds them: each
/// entry keeps its last `piece` blocks at most.
pub fn split<'a>(
    entries: impl Iterator<Item = &'a mut Entry>,
    piece: usize,
) -> Vec<BlockListPiece> {
    let mut pieces = Vec::new();
    for entry in entries.filter(|e| e.blocks.len() > piece) {
        let keep = (entry.blocks.len() - 1) % piece + 1;
        let head: Vec<BlockInfo> = entry.blocks.drain(..entry.blocks.len() - keep).collect();
        tracing::debug!(
            path = %entry.path,
            blocks = head.len() + keep,
            pieces = head.len().div_ceil(piece),
            "the block list goes ahead in pieces"
        );
        for (i, blocks) in head.chunks(piece).enumerate() {
            pieces.push(BlockListPiece {
                path: entry.path.clone(),
                first: (i * piece) as u64,
                blocks: blocks.to_vec(),
            });
        }
    }
    pieces
}

/// The pieces a connection's reader holds for the message that comes next.
#[derive(Default)]
pub struct Joiner {
    /// Per path, in the order the pieces came, the head of its block list.
    heads: Vec<(RelPath, Vec<BlockInfo>)>,
    /// Blocks held, all paths together.
    held: usize,
}

impl Joiner {
    /// Whether pieces wait for their message: then only more pieces or that message
    /// may come.
    pub fn waiting(&self) -> bool {
        !self.heads.is_empty()
    }

    /// Holds `piece`, checked to continue the list of its path.
    pub fn add(&mut self, piece: BlockListPiece) -> Result<(), String> {
        let path = piece.path;
        let have = match self.heads.last_mut() {
            Some((last, blocks)) if *last == path => blocks,
            _ => {
                if self.heads.iter().any(|(p, _)| *p == path) {
                    return Err(format!(
                        "the block list of {path} came in pieces for another path between its own"
                    ));
                }
                self.heads.push((path.clone(), Vec::new()));
                &mut self.heads.last_mut().expect("just pushed").1
            }
        };
        if piece.first != have.len() as u64 {
            return Err(format!(
                "a piece of the block list of {path} starts at block {}, not at block {}",
                piece.first,
                have.len()
            ));
        }
        self.held += piece.blocks.len();
        if self.held > MAX_FILE_BLOCKS {
            return Err(format!(
                "the block list of {path} is over the limit of {MAX_FILE_BLOCKS} blocks"
            ));
        }
        have.extend(piece.blocks);
        Ok(())
    }

    /// Puts the pieces held back at the front of the block lists of `entries`, the
    /// message they came before, in order.
    pub fn join<'a>(&mut self, entries: impl Iterator<Item = &'a mut Entry>) -> Result<(), String> {
        self.held = 0;
        let mut heads = std::mem::take(&mut self.heads).into_iter().peekable();
        for entry in entries {
            if heads.peek().is_some_and(|(path, _)| *path == entry.path) {
                let (_, mut blocks) = heads.next().expect("peeked");
                blocks.append(&mut entry.blocks);
                entry.blocks = blocks;
            }
        }
        match heads.next() {
            None => Ok(()),
            Some((path, _)) => Err(format!(
                "pieces of the block list of {path} came before a message without its entry"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesync_proto::Hash;
    use filesync_proto::wire::EntryKind;

    fn entry(path: &str, blocks: usize) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            deleted: false,
            size: blocks as u64,
            mtime_ns: 0,
            mode: 0o644,
            hash: Hash([0; 32]),
            blocks: (0..blocks)
                .map(|i| BlockInfo {
                    hash: Hash([i as u8; 32]),
                    size: 1 + i as u32,
                })
                .collect(),
            target: String::new(),
            seq: 1,
            origin: filesync_proto::DeviceId::new("d").unwrap(),
            conflict: None,
            renamed_from: None,
        }
    }

    #[test]
    fn long_lists_travel_in_pieces_and_come_back_whole() {
        for (sizes, piece, pieces) in [
            (vec![3, 10, 1], 3, 3),
            (vec![9], 3, 2),
            (vec![0, 2], 3, 0),
            (vec![7, 7], 1, 12),
        ] {
            let sent: Vec<Entry> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| entry(&format!("f{i}"), n))
                .collect();
            let mut message = sent.clone();
            let split = split(message.iter_mut(), piece);
            assert_eq!(split.len(), pieces, "{sizes:?} by {piece}");
            assert!(message.iter().all(|e| e.blocks.len() <= piece));
            let mut joiner = Joiner::default();
            for p in split {
                joiner.add(p).unwrap();
            }
            joiner.join(message.iter_mut()).unwrap();
            assert_eq!(message, sent);
            assert!(!joiner.waiting());
        }
    }

    #[test]
    fn malformed_pieces_are_refused_with_their_path() {
        let piece = |path: &str, first: u64, n: usize| BlockListPiece {
            path: RelPath::new(path).unwrap(),
            first,
            blocks: entry(path, n).blocks,
        };
        let add_all = |pieces: Vec<BlockListPiece>| {
            let mut joiner = Joiner::default();
            pieces
                .into_iter()
                .try_for_each(|p| joiner.add(p))
                .map(|()| joiner)
        };
        for (pieces, why) in [
            (vec![piece("a", 1, 2)], "starts at block 1, not at block 0"),
            (
                vec![piece("a", 0, 2), piece("a", 3, 2)],
                "starts at block 3, not at block 2",
            ),
            (
                vec![piece("a", 0, 2), piece("b", 0, 2), piece("a", 2, 2)],
                "another path between its own",
            ),
        ] {
            let err = add_all(pieces).err().unwrap();
            assert!(err.contains(why) && err.contains(" a "), "{err}");
        }
        let mut joiner = add_all(vec![piece("a", 0, 2)]).unwrap();
        let err = joiner.join([entry("b", 1)].iter_mut()).unwrap_err();
        assert!(err.contains("before a message without its entry"), "{err}");
        let mut joiner = Joiner {
            held: MAX_FILE_BLOCKS - 1,
            ..Joiner::default()
        };
        let err = joiner.add(piece("a", 0, 2)).unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
    }
}
