//! Content-defined chunking and hashing of file content.
//!
//! Files are cut with FastCDC (2020 variant) so that an insertion shifts only the
//! blocks around it; every block is named by its SHA-256 and the whole file has one
//! too. The sizes below are part of the on-disk and wire format: changing them makes
//! every existing block list stale (it still works, it just stops deduplicating).

use std::io::{self, Read};

use filesync_proto::Hash;
use filesync_proto::wire::BlockInfo;
use sha2::{Digest, Sha256};

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

/// Reads `source` to its end, cutting and hashing as it goes; memory stays at one block.
pub fn hash_reader(source: impl Read) -> io::Result<Hashed> {
    let mut whole = Sha256::new();
    let mut blocks = Vec::new();
    let mut size = 0u64;
    for chunk in fastcdc::v2020::StreamCDC::new(source, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK) {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

    #[test]
    fn an_insertion_changes_only_nearby_blocks() {
        let data = pseudo_random(4 * 1024 * 1024, 2);
        let mut edited = vec![0x42];
        edited.extend_from_slice(&data);
        let a = hash_reader(&data[..]).unwrap();
        let b = hash_reader(&edited[..]).unwrap();
        let known: std::collections::HashSet<_> = a.blocks.iter().map(|b| b.hash).collect();
        let new = b.blocks.iter().filter(|b| !known.contains(&b.hash)).count();
        assert!(new <= 2, "{new} blocks changed after a 1-byte insertion");
    }
}
