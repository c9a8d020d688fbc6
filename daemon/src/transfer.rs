//! Receiving a file's content, at either end of a connection: a client applying a server
//! version, the server staging a device's push.
//!
//! The new content is written front to back into a temp file beside the target. Each
//! block comes from the first of: what an interrupted transfer of the same target
//! already wrote ([`TempFile::resume`]); an earlier block of the same file (a repeated
//! block is fetched once); a local file that holds it (the index knows where, and the
//! bytes are verified); the peer, asked for [`PIPELINE`] blocks ahead so that
//! throughput is not bound by round trips. Memory stays at a few blocks whatever the
//! file's size, plus one small record per distinct block.

use std::collections::HashMap;
use std::future::Future;

use anyhow::{Context, Result, bail};
use filesync_proto::Hash;
use filesync_proto::wire::{BlockRequest, Entry};
use futures::StreamExt;

use crate::beneath::Root;
use crate::chunk;
use crate::conn;
use crate::index::{BlockSource, Index};
use crate::store::TempFile;

/// Blocks asked for or read ahead at once, so throughput is not bound by round trips.
const PIPELINE: usize = 16;

/// From this size on, an interrupted transfer keeps what it received for the next one;
/// smaller files are quicker to fetch again than to look for leftovers.
pub const RESUMABLE_SIZE: u64 = 1024 * 1024;

/// Content assembled in a temp file, with where it came from.
pub struct Assembled {
    pub tmp: TempFile,
    /// Bytes copied from local files or from earlier in the same file.
    pub reused: u64,
}

/// Where one block comes from, decided while the blocks before it are still arriving.
enum Got {
    /// From a local file, verified as it was read.
    Local(Vec<u8>),
    /// From the peer, not verified yet.
    Fetched(Vec<u8>),
    /// The same content as the block written at this offset of the temp file.
    Repeat(u64),
}

/// Builds `entry`'s content (a live file inside `root`) in a temp file beside its
/// target. `fetch` asks the peer for one block. The temp file is complete but neither
/// verified as a whole nor renamed: the caller does that ([`TempFile::prepare`]).
pub async fn assemble<F, Fut>(
    root: &Root,
    index: &Index,
    entry: &Entry,
    fetch: F,
) -> Result<Assembled>
where
    F: Fn(BlockRequest) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let total: u64 = entry.blocks.iter().map(|b| u64::from(b.size)).sum();
    if total != entry.size {
        bail!(
            "block sizes of {} add up to {total} bytes, not its size {}",
            entry.path,
            entry.size
        );
    }
    let mut tmp = if entry.size >= RESUMABLE_SIZE {
        TempFile::resumable(root, &entry.path)?
    } else {
        TempFile::create(root, &entry.path)?
    };
    let kept = tokio::task::block_in_place(|| tmp.resume(&entry.blocks))
        .with_context(|| format!("cannot resume the transfer of {}", entry.path))?;
    let resumed = tmp.written();
    if resumed > 0 {
        tracing::info!(path = %entry.path, bytes = resumed, of = entry.size, "resuming an interrupted transfer");
    }
    // The first offset of every distinct block written or about to be, so that a
    // repeated block is copied within the file rather than fetched again.
    let mut first_at: HashMap<Hash, u64> = HashMap::new();
    let mut offset = 0u64;
    for block in &entry.blocks[..kept] {
        first_at.entry(block.hash).or_insert(offset);
        offset += u64::from(block.size);
    }
    let fetch = &fetch;
    let mut stream = futures::stream::iter(kept..entry.blocks.len())
        .map(|i| {
            let block = &entry.blocks[i];
            let at = offset;
            offset += u64::from(block.size);
            let earlier = *first_at.entry(block.hash).or_insert(at);
            // Looked up when the block is about to be fetched, so the sources of a huge
            // file are never all held at once.
            let sources = (earlier == at).then(|| index.block_sources(&block.hash, 4));
            let request = BlockRequest {
                path: entry.path.clone(),
                offset: at,
                size: block.size,
                hash: block.hash,
            };
            async move {
                let Some(sources) = sources else {
                    return Ok(Got::Repeat(earlier));
                };
                if let Some(data) = read_local(root, sources?, &request) {
                    return Ok(Got::Local(data));
                }
                Ok::<_, anyhow::Error>(Got::Fetched(fetch(request).await?))
            }
        })
        .buffered(PIPELINE);
    let mut reused = 0;
    for block in &entry.blocks[kept..] {
        let got = stream
            .next()
            .await
            .context("the block stream ended early")?
            .with_context(|| format!("cannot fetch {}", entry.path))?;
        // Only what the peer sent is hashed here: a local block was verified as it was
        // read, a repeat copies a block verified before, and the whole-file hash that
        // `TempFile::prepare` checks covers every byte again.
        let data = match got {
            Got::Local(data) => {
                reused += data.len() as u64;
                data
            }
            Got::Repeat(earlier) => {
                reused += u64::from(block.size);
                tmp.read_back(earlier, block.size)?
            }
            Got::Fetched(data) => {
                if data.len() != block.size as usize || chunk::sha256(&data) != block.hash {
                    bail!(
                        "the block of {} at offset {} does not match its hash; it was discarded",
                        entry.path,
                        tmp.written()
                    );
                }
                data
            }
        };
        tmp.write(&data)?;
    }
    Ok(Assembled { tmp, reused })
}

/// The block from the first local file that still holds it, read as it would be served
/// to a peer: inside the folder, never through a symlink, and verified.
fn read_local(root: &Root, sources: Vec<BlockSource>, want: &BlockRequest) -> Option<Vec<u8>> {
    sources.into_iter().find_map(|s| {
        let at = BlockRequest {
            path: s.path,
            offset: s.offset,
            size: want.size,
            hash: want.hash,
        };
        conn::serve_block(root, &at).ok()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use anyhow::anyhow;

    use super::*;
    use crate::chunk::tests::pseudo_random;
    use crate::store::tests::entry_for;

    /// A peer that holds `content` and records the offsets it was asked for; it fails
    /// every request once it has answered `answers` of them.
    struct Peer {
        content: Vec<u8>,
        answers: usize,
        asked: Mutex<Vec<u64>>,
    }

    impl Peer {
        fn new(content: &[u8], answers: usize) -> Peer {
            Peer {
                content: content.to_vec(),
                answers,
                asked: Mutex::default(),
            }
        }

        async fn fetch(&self, request: BlockRequest) -> Result<Vec<u8>> {
            let mut asked = self.asked.lock().unwrap();
            asked.push(request.offset);
            if asked.len() > self.answers {
                return Err(anyhow!("connection closed"));
            }
            let at = request.offset as usize;
            Ok(self.content[at..at + request.size as usize].to_vec())
        }

        fn asked(&self) -> usize {
            self.asked.lock().unwrap().len()
        }
    }

    /// An empty folder and its index: (their temp dir, the index, the root's path, the
    /// root).
    fn folder() -> (tempfile::TempDir, Index, std::path::PathBuf, Root) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.db")).unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir(&root_path).unwrap();
        let root = Root::open(&root_path).unwrap();
        (dir, index, root_path, root)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_transfer_asks_only_for_what_it_lacks() {
        let (_dir, index, root_path, root) = folder();
        let content = pseudo_random(3 * 1024 * 1024, 21);
        let entry = entry_for("big.bin", &content);
        let n = entry.blocks.len();
        let flaky = Peer::new(&content, 10);
        let err = assemble(&root, &index, &entry, |r| flaky.fetch(r))
            .await
            .err()
            .expect("the transfer fails once the peer is gone");
        assert!(format!("{err:#}").contains("connection closed"), "{err:#}");

        let peer = Peer::new(&content, usize::MAX);
        let done = assemble(&root, &index, &entry, |r| peer.fetch(r))
            .await
            .unwrap();
        assert_eq!(
            peer.asked(),
            n - 10,
            "blocks received before are asked again"
        );
        let target = entry.path.to_path(&root_path);
        done.tmp.commit(&root, &entry).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), content);
        assert_eq!(
            std::fs::read_dir(&root_path).unwrap().count(),
            1,
            "partial left"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_come_from_local_files_that_still_hold_them() {
        let (_dir, index, root_path, root) = folder();
        let content = pseudo_random(2 * 1024 * 1024, 22);
        let old = entry_for("old", &content);
        index
            .put_local(&crate::index::LocalRow {
                entry: old.clone(),
                inode: 0,
                dirty: false,
            })
            .unwrap();
        // The first block of the local copy changed since the index saw it.
        let mut stale = content.clone();
        stale[10] ^= 1;
        std::fs::write(root_path.join("old"), &stale).unwrap();
        let entry = entry_for("new", &content);
        let peer = Peer::new(&content, usize::MAX);
        let done = assemble(&root, &index, &entry, |r| peer.fetch(r))
            .await
            .unwrap();
        assert_eq!(
            *peer.asked.lock().unwrap(),
            [0],
            "only the stale block is fetched"
        );
        let first = u64::from(entry.blocks[0].size);
        assert_eq!(done.reused, entry.size - first);
        let target = entry.path.to_path(&root_path);
        done.tmp.commit(&root, &entry).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), content);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_block_is_fetched_once() {
        let (_dir, index, root_path, root) = folder();
        // Zeros cut into identical blocks of the largest size.
        let content = vec![0u8; 8 * chunk::MAX_BLOCK + 1000];
        let entry = entry_for("zeros", &content);
        assert!(entry.blocks.len() >= 9);
        let peer = Peer::new(&content, usize::MAX);
        let done = assemble(&root, &index, &entry, |r| peer.fetch(r))
            .await
            .unwrap();
        assert_eq!(peer.asked(), 2, "one big block and the short last one");
        assert_eq!(done.reused, 7 * chunk::MAX_BLOCK as u64);
        let target = entry.path.to_path(&root_path);
        done.tmp.commit(&root, &entry).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), content);
    }
}
