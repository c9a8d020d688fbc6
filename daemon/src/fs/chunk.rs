//! Content-defined chunking and hashing of file content.
//!
//! Files are cut with FastCDC (2020 variant) so that an insertion shifts only the
//! blocks around it; every block is named by its SHA-256 and the whole file has one
//! too. The sizes below are part of the on-disk and wire format: changing them makes
//! every existing block list stale (it still works, it just stops deduplicating).

use std::fs::File;
use std::io::{self, Read};
use std::sync::OnceLock;

use fastcdc::v2020::FastCDC;
use filesync_proto::Hash;
use filesync_proto::wire::{BlockInfo, INLINE_MAX, MAX_FILE_BLOCKS};
use sha2::{Digest, Sha256};

use crate::fs::sparse::{Extents, ZEROS};

pub const MIN_BLOCK: usize = 16 * 1024;
pub const AVG_BLOCK: usize = 64 * 1024;
pub const MAX_BLOCK: usize = 256 * 1024;

/// The result of reading a file once: its whole hash, its blocks and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    pub hash: Hash,
    pub blocks: Vec<BlockInfo>,
    pub size: u64,
}

pub fn sha256(bytes: &[u8]) -> Hash {
    Hash(Sha256::digest(bytes).into())
}

/// The block every run of at least [`MAX_BLOCK`] zeros starts with: the chunker's cut
/// depends only on the bytes from the block's start, so inside a long hole every block
/// is this one. Hashing skips such blocks ([`hash_open`]) and a receiver makes them
/// itself, as a hole, instead of fetching them ([`crate::fs::temp::TempFile::zero_block`]).
pub fn zero_block() -> BlockInfo {
    static ZERO: OnceLock<BlockInfo> = OnceLock::new();
    *ZERO.get_or_init(|| {
        let zeros = &ZEROS[..MAX_BLOCK];
        let size = first_cut(zeros);
        BlockInfo {
            hash: sha256(&zeros[..size]),
            size: size as u32,
        }
    })
}

/// Bytes a file of these blocks takes on disk once received: all but its zero blocks,
/// which stay holes.
pub fn stored_size(blocks: &[BlockInfo]) -> u64 {
    let zero = zero_block();
    blocks
        .iter()
        .filter(|b| **b != zero)
        .map(|b| u64::from(b.size))
        .sum()
}

/// Where the chunker ends the block that starts `window`, which holds at least
/// [`MAX_BLOCK`] bytes or the rest of the file.
fn first_cut(window: &[u8]) -> usize {
    FastCDC::new(window, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK)
        .next()
        .map_or(window.len(), |c| c.length)
}

/// Appends a block to a file's list, refusing content of more blocks than a peer takes
/// ([`MAX_FILE_BLOCKS`], about 1 TiB): such a file cannot sync.
fn push_block(blocks: &mut Vec<BlockInfo>, block: BlockInfo) -> io::Result<()> {
    if blocks.len() == MAX_FILE_BLOCKS {
        return Err(io::Error::other(format!(
            "too large to sync: over {MAX_FILE_BLOCKS} blocks (about 1 TiB)"
        )));
    }
    blocks.push(block);
    Ok(())
}

/// Reads `file` to its end, cutting and hashing as it goes; memory stays at one block.
/// Holes are not read ([`Extents`]): a block inside one is the [`zero_block`], neither
/// cut nor hashed again, and only the whole-file hash goes over its zeros. Blocks and
/// hashes are those of the same bytes read in full.
pub fn hash_open(file: &File) -> io::Result<Hashed> {
    let mut extents = Extents::new(file)?;
    let zero = zero_block();
    let mut whole = Sha256::new();
    let mut blocks = Vec::new();
    // The bytes from `at` on, up to one block's most.
    let mut window = Vec::with_capacity(MAX_BLOCK);
    let mut at = 0u64;
    loop {
        if extents.is_hole(at, MAX_BLOCK as u64)? {
            window.clear();
            whole.update(&ZEROS[..zero.size as usize]);
            push_block(&mut blocks, zero)?;
            at += u64::from(zero.size);
            continue;
        }
        extents.fill(&mut window, at, MAX_BLOCK)?;
        if window.is_empty() {
            break;
        }
        let len = first_cut(&window);
        let block = &window[..len];
        whole.update(block);
        push_block(
            &mut blocks,
            BlockInfo {
                hash: sha256(block),
                size: len as u32,
            },
        )?;
        window.drain(..len);
        at += len as u64;
    }
    Ok(Hashed {
        hash: Hash(whole.finalize().into()),
        blocks,
        size: at,
    })
}

/// Reads and hashes `file`, which its stat said holds `size` bytes, from its current
/// position (its start). A file of at most [`INLINE_MAX`] bytes is read whole and hashed
/// from memory, and its bytes come back to travel inline; a larger one, or one that
/// grew past the limit while read, is hashed by [`hash_open`].
pub fn hash_file(file: &File, size: u64) -> io::Result<(Hashed, Option<Vec<u8>>)> {
    if size > INLINE_MAX {
        return Ok((hash_open(file)?, None));
    }
    let mut data = Vec::with_capacity(size as usize + 1);
    file.take(INLINE_MAX + 1).read_to_end(&mut data)?;
    if data.len() as u64 > INLINE_MAX {
        return Ok((hash_open(file)?, None));
    }
    Ok((hash_bytes(&data), Some(data)))
}

/// Hashes a whole file held in memory: the same blocks and hashes as [`hash_open`]
/// gives over the same bytes. A file of at most [`MIN_BLOCK`] bytes is one block whose
/// hash is the file's, hashed once and never run through the chunker.
pub fn hash_bytes(data: &[u8]) -> Hashed {
    let size = data.len() as u64;
    if data.is_empty() {
        return Hashed {
            hash: sha256(data),
            blocks: Vec::new(),
            size,
        };
    }
    if data.len() <= MIN_BLOCK {
        let hash = sha256(data);
        return Hashed {
            hash,
            blocks: vec![BlockInfo {
                hash,
                size: data.len() as u32,
            }],
            size,
        };
    }
    let blocks = FastCDC::new(data, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK)
        .map(|c| BlockInfo {
            hash: sha256(&data[c.offset..c.offset + c.length]),
            size: c.length as u32,
        })
        .collect();
    Hashed {
        hash: sha256(data),
        blocks,
        size,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The reference [`hash_open`] and [`hash_bytes`] must agree with: the chunker's own
    /// streaming over every byte.
    pub(crate) fn hash_reader(source: impl Read) -> io::Result<Hashed> {
        let mut whole = Sha256::new();
        let mut blocks = Vec::new();
        let mut size = 0u64;
        for chunk in fastcdc::v2020::StreamCDC::new(source, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK) {
            let chunk = chunk.map_err(|e| io::Error::other(e.to_string()))?;
            whole.update(&chunk.data);
            blocks.push(BlockInfo {
                hash: sha256(&chunk.data),
                size: chunk.length as u32,
            });
            size += chunk.length as u64;
        }
        Ok(Hashed {
            hash: Hash(whole.finalize().into()),
            blocks,
            size,
        })
    }

    /// Deterministic bytes without repeats, so that no two blocks are alike.
    pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn empty_file_has_no_blocks() {
        let h = hash_reader(&[][..]).unwrap();
        assert!(h.blocks.is_empty());
        assert_eq!(h.size, 0);
        assert_eq!(h.hash, sha256(b""));
    }

    /// Hashing bytes held in memory gives what reading them as a stream gives, for
    /// one-block files, files at the block limits and files of several blocks.
    #[test]
    fn hashing_bytes_equals_hashing_the_stream() {
        let sizes = [
            0,
            1,
            4096,
            MIN_BLOCK - 1,
            MIN_BLOCK,
            MIN_BLOCK + 1,
            AVG_BLOCK,
            3 * AVG_BLOCK + 17,
            MAX_BLOCK + 1,
            2 * 1024 * 1024,
        ];
        for (seed, size) in sizes.into_iter().enumerate() {
            let data = pseudo_random(size, seed as u64 + 10);
            assert_eq!(hash_bytes(&data), hash_reader(&data[..]).unwrap(), "{size}");
        }
    }

    /// A file read whole gives its bytes and the stream's hashes; a larger one, or one
    /// that is longer than its stat said, is read by offset and gives the same hashes.
    #[test]
    fn hashing_a_file_keeps_the_bytes_of_small_ones_only() {
        let dir = tempfile::tempdir().unwrap();
        let small = pseudo_random(5000, 1);
        std::fs::write(dir.path().join("small"), &small).unwrap();
        let file = File::open(dir.path().join("small")).unwrap();
        let (hashed, data) = hash_file(&file, small.len() as u64).unwrap();
        assert_eq!((hashed, data), (hash_bytes(&small), Some(small.clone())));
        let big = pseudo_random(INLINE_MAX as usize + 1, 2);
        std::fs::write(dir.path().join("big"), &big).unwrap();
        for said in [big.len() as u64, 10] {
            let file = File::open(dir.path().join("big")).unwrap();
            let (hashed, data) = hash_file(&file, said).unwrap();
            assert_eq!((hashed, data), (hash_reader(&big[..]).unwrap(), None));
        }
    }

    /// A sparse file hashes as the same bytes written in full: holes at the start, in
    /// the middle (longer and shorter than a block) and at the end, data at odd offsets.
    #[test]
    fn a_sparse_file_hashes_as_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = pseudo_random(100_000, 3);
        let b = pseudo_random(5, 4);
        let c = pseudo_random(300_000, 5);
        // (size, data at offsets)
        type Layout<'a> = (u64, Vec<(u64, &'a [u8])>);
        let layouts: [Layout; 4] = [
            (5 << 20, vec![]),
            (5 << 20, vec![(0, &a), (3_000_001, &b)]),
            (
                6 << 20,
                vec![
                    (1 << 20, &a),
                    ((1 << 20) + 150_000, &c),
                    ((6 << 20) - 5, &b),
                ],
            ),
            ((4 << 20) + 77, vec![(12_345, &c), (2 << 20, &a)]),
        ];
        for (size, data) in layouts {
            let file = crate::fs::sparse::tests::sparse_file(dir.path(), size, &data);
            let mut dense = vec![0; size as usize];
            for (at, bytes) in &data {
                dense[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
            }
            let want = hash_reader(&dense[..]).unwrap();
            assert_eq!(hash_open(&file).unwrap(), want, "{size} {}", data.len());
            assert_eq!(want.hash, sha256(&dense));
        }
    }

    /// The block a long run of zeros starts with is what the chunker cuts there.
    #[test]
    fn the_zero_block_is_the_first_of_a_run_of_zeros() {
        let zeros = vec![0; 3 * MAX_BLOCK];
        let cut = hash_reader(&zeros[..]).unwrap();
        assert_eq!(cut.blocks[0], zero_block());
        assert!(cut.blocks.iter().take(2).all(|b| *b == zero_block()));
        // As docs/protocol.md gives it.
        assert_eq!(zero_block().size as usize, MAX_BLOCK);
        assert!(zero_block().hash.to_hex().starts_with("8a39d2ab"));
    }

    #[test]
    fn blocks_reassemble_to_the_whole() {
        let data = pseudo_random(3 * 1024 * 1024, 1);
        let h = hash_reader(&data[..]).unwrap();
        assert_eq!(h.hash, sha256(&data));
        let mut at = 0usize;
        for b in &h.blocks {
            assert!(b.size as usize <= MAX_BLOCK);
            assert_eq!(sha256(&data[at..at + b.size as usize]), b.hash);
            at += b.size as usize;
        }
        assert_eq!(at, data.len());
    }

    /// Cuts `data` and `edited` and checks that at most `max_new` blocks of `edited` are
    /// unknown in `data`: content-defined boundaries resynchronise right after an edit.
    fn check_edit(data: &[u8], edited: &[u8], max_new: usize) {
        let a = hash_reader(data).unwrap();
        let b = hash_reader(edited).unwrap();
        assert_eq!(b.hash, sha256(edited));
        let known: std::collections::HashSet<_> = a.blocks.iter().map(|b| b.hash).collect();
        let new = b.blocks.iter().filter(|b| !known.contains(&b.hash)).count();
        assert!(
            new <= max_new,
            "{new} of {} blocks changed, expected at most {max_new}",
            b.blocks.len()
        );
    }

    #[test]
    fn an_insertion_at_the_start_changes_only_nearby_blocks() {
        let data = pseudo_random(4 * 1024 * 1024, 2);
        let mut edited = vec![0x42];
        edited.extend_from_slice(&data);
        check_edit(&data, &edited, 2);
    }

    #[test]
    fn an_insertion_in_the_middle_changes_only_nearby_blocks() {
        let data = pseudo_random(4 * 1024 * 1024, 3);
        let mid = data.len() / 2 + 12_345;
        let mut edited = data[..mid].to_vec();
        edited.extend_from_slice(&pseudo_random(1000, 4));
        edited.extend_from_slice(&data[mid..]);
        check_edit(&data, &edited, 2);
    }

    #[test]
    fn an_overwrite_in_the_middle_changes_only_nearby_blocks() {
        let data = pseudo_random(8 * 1024 * 1024, 5);
        let mut edited = data.clone();
        let mid = data.len() / 2;
        edited[mid..mid + 1024 * 1024].copy_from_slice(&pseudo_random(1024 * 1024, 6));
        // One MiB holds about 16 average blocks; the boundaries on either side may move.
        check_edit(&data, &edited, 16 + 4);
    }

    #[test]
    fn a_deletion_and_an_append_keep_the_other_blocks() {
        let data = pseudo_random(4 * 1024 * 1024, 7);
        let mut cut = data[..1_000_000].to_vec();
        cut.extend_from_slice(&data[1_000_100..]);
        check_edit(&data, &cut, 2);
        let mut appended = data.clone();
        appended.extend_from_slice(&pseudo_random(100_000, 8));
        check_edit(&data, &appended, 3);
    }

    #[test]
    fn blocks_are_cut_the_same_way_every_time() {
        let data = pseudo_random(2 * 1024 * 1024, 9);
        let a = hash_reader(&data[..]).unwrap();
        // A reader that hands out odd-sized pieces must not move any boundary.
        let b = hash_reader(std::io::Read::chain(&data[..777], &data[777..])).unwrap();
        assert_eq!(a, b);
        assert!(
            a.blocks
                .iter()
                .all(|b| b.size as usize >= MIN_BLOCK || std::ptr::eq(b, a.blocks.last().unwrap()))
        );
    }
}
