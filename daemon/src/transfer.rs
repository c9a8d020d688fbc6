//! Receiving a file's content, at either end of a connection: a client applying a server
//! version, the server staging a device's push.
//!
//! The new content is written front to back into a temp file beside the target. Each
//! block comes from the first of: nowhere, for the all-zero block that fills long runs
//! of zeros ([`chunk::zero_block`]), left as a hole so a sparse file stays sparse; what
//! an interrupted transfer of the same target already wrote ([`TempFile::resume`]); an
//! earlier block of the same file (a repeated block is fetched once); a local file that
//! holds it (the index knows where: see [`Sources`]); the peer, asked for [`PIPELINE`]
//! blocks ahead so that throughput is not bound by round trips. A block from the peer that arrives ahead of its turn is
//! verified and written at its offset at once, so that a transfer cut off while an
//! earlier block is on its way does not fetch it again. Memory stays at [`PIPELINE`]
//! blocks whatever the file's size, plus one small record per distinct block.
//!
//! Every block is checked once, as it comes in, against the entry's block list: a block
//! from the peer or from a local file that may have changed is hashed; a block copied
//! from a local file whose stat still matches its index row is not, because the index
//! vouches for it (see [`Sources`]); a repeated or resumed block was checked when it was
//! first written; a hole reads as the zeros a zero block is. So [`TempFile::seal`] checks the file by its block list and no byte
//! is hashed twice.
//!
//! A small file's whole content may come at once instead ([`from_bytes`]): sent inline
//! by the peer, checked against its entry before a byte of it is written. Either way
//! the caller then verifies, makes durable and renames the temp file the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use filesync_proto::Hash;
use filesync_proto::RelPath;
use filesync_proto::wire::{BlockInfo, BlockRequest, Entry, EntryKind, INLINE_MAX};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::fs::beneath::Root;
use crate::fs::chunk;
use crate::fs::stat::{Stat, matches_stat, stat_of};
use crate::fs::temp::{Resumed, Sealed, TempFile};
use crate::index::{BlockSource, Index};

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
    /// From a local file that may have changed since the index saw it, read and
    /// verified.
    Local(Vec<u8>),
    /// From a local file whose stat matches its index row, to be copied at its turn
    /// from this offset.
    Copy(Arc<Source>, u64),
    /// From the peer, not verified yet.
    Fetched(Vec<u8>),
    /// The same content as the block written earlier at this offset of the temp file.
    Repeat(u64),
    /// Already in the temp file at its own offset, left there by an interrupted transfer
    /// ([`TempFile::resume`]).
    Resumed,
    /// From the peer before its turn, verified and already written at its own offset.
    Early,
    /// The all-zero [`chunk::zero_block`]: made here as a hole, neither fetched nor
    /// written.
    Zero,
}

/// Builds `entry`'s content (a live file inside `root`) in a temp file beside its
/// target. `fetch` asks the peer for one block. The temp file is complete, each block
/// checked against the entry's block list, but not renamed: the caller does that
/// ([`seal`], then the group's barriers in [`crate::fs::durable`]).
///
/// Blocks are asked for up to [`PIPELINE`] ahead and arrive in any order; one that
/// arrives before its turn is written at its offset at once, so that a transfer that
/// ends before its turn (a cut connection) does not have to ask for it again.
pub async fn assemble<F, Fut>(
    root: &Root,
    index: Option<&Index>,
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
    let (mut tmp, resumed) = if entry.size >= RESUMABLE_SIZE {
        let tmp = TempFile::resumable(root, &entry.path)?;
        // Reads back what an interrupted transfer left: off the async threads.
        let blocks = entry.blocks.clone();
        let (tmp, resumed) = tokio::task::spawn_blocking(move || {
            let mut tmp = tmp;
            let resumed = tmp.resume(&blocks);
            (tmp, resumed)
        })
        .await
        .context("the resume check stopped")?;
        let resumed =
            resumed.with_context(|| format!("cannot resume the transfer of {}", entry.path))?;
        (tmp, resumed)
    } else {
        // A new, empty temp file: nothing to resume.
        (TempFile::create(root, &entry.path)?, Resumed::default())
    };
    if resumed.kept > 0 || !resumed.ahead.is_empty() {
        tracing::info!(
            path = %entry.path,
            bytes = tmp.written(),
            blocks_ahead = resumed.ahead.len(),
            of = entry.size,
            "resuming an interrupted transfer"
        );
    }
    let offsets: Vec<u64> = entry
        .blocks
        .iter()
        .scan(0, |at, b| {
            let start = *at;
            *at += u64::from(b.size);
            Some(start)
        })
        .collect();
    let job = Job {
        root,
        index,
        entry,
        offsets: &offsets,
        fetch: &fetch,
    };
    let reused = job.fill(&resumed, &mut tmp).await?;
    Ok(Assembled { tmp, reused })
}

/// Verifies and seals assembled content ([`TempFile::seal`]) off the async threads.
pub async fn seal(tmp: TempFile, entry: &Entry) -> Result<Sealed> {
    let entry = entry.clone();
    tokio::task::spawn_blocking(move || tmp.seal(&entry))
        .await
        .context("the check of a received file stopped")?
}

/// Builds `entry`'s content in a temp file beside its target from `data`, its whole
/// content as the peer sent it inline. Refused before anything is written unless
/// `entry` is a live file of at most [`INLINE_MAX`] bytes, `data` is that long, the
/// block list adds up to it and `data` hashes to `entry.hash`. The content is hashed
/// once: a one-block file's block hash is its hash; the blocks of a file of several are
/// checked too, since the index lends them to other transfers. Call it off the async
/// threads.
pub fn from_bytes(root: &Root, entry: &Entry, data: &[u8]) -> Result<Assembled> {
    check_inline(entry, data)?;
    let mut tmp = TempFile::create(root, &entry.path)?;
    tmp.write_verified(data, entry.hash)?;
    Ok(Assembled { tmp, reused: 0 })
}

/// [`from_bytes`], off the async threads.
pub async fn from_sent(root: Root, entry: &Entry, data: Vec<u8>) -> Result<Assembled> {
    let entry = entry.clone();
    tokio::task::spawn_blocking(move || from_bytes(&root, &entry, &data))
        .await
        .context("the write of a received file stopped")?
}

/// The checks of [`from_bytes`], hashing `data` once (more for a file of several
/// blocks).
pub fn check_inline(entry: &Entry, data: &[u8]) -> Result<()> {
    let path = &entry.path;
    if entry.kind != EntryKind::File || entry.deleted {
        bail!("content was sent inline for {path}, which is not a live file");
    }
    if data.len() as u64 != entry.size || entry.size > INLINE_MAX {
        bail!(
            "{} bytes of content were sent inline for {path} of {} bytes (at most {INLINE_MAX} travel inline)",
            data.len(),
            entry.size
        );
    }
    let total: u64 = entry.blocks.iter().map(|b| u64::from(b.size)).sum();
    if total != entry.size {
        bail!(
            "block sizes of {path} add up to {total} bytes, not its size {}",
            entry.size
        );
    }
    if chunk::sha256(data) != entry.hash {
        bail!("the content sent inline for {path} does not match its hash; it was discarded");
    }
    match entry.blocks.as_slice() {
        [] => Ok(()),
        [one] if one.hash == entry.hash => Ok(()),
        [_] => bail!("the block list of {path} does not match its hash"),
        blocks => {
            let mut at = 0;
            for (i, block) in blocks.iter().enumerate() {
                let end = at + block.size as usize;
                verify(entry, i, at as u64, &data[at..end])?;
                at = end;
            }
            Ok(())
        }
    }
}

/// One transfer under way: the file it builds and where its blocks can come from.
struct Job<'a, F> {
    root: &'a Root,
    /// Where local copies of blocks are looked up; none where there is no local tree
    /// (a cluster node staging a push).
    index: Option<&'a Index>,
    entry: &'a Entry,
    /// Where each block of `entry` starts.
    offsets: &'a [u64],
    /// Asks the peer for one block.
    fetch: &'a F,
}

/// Where a block will come from, decided when it is asked for.
enum Plan {
    Settled(Got),
    /// Not in the temp file nor in a local file: to be asked of the peer.
    Fetch,
}

impl<F, Fut> Job<'_, F>
where
    F: Fn(BlockRequest) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    /// Writes the blocks after the resumed ones into `tmp` in order, from where each can
    /// be had, asking the peer for up to [`PIPELINE`] at once. Returns the bytes that did
    /// not cross the wire.
    async fn fill(&self, resumed: &Resumed, tmp: &mut TempFile) -> Result<u64> {
        let Job {
            root,
            index,
            entry,
            offsets,
            fetch,
        } = *self;
        let blocks = &entry.blocks;
        // The first offset of every distinct block written or about to be, so that a
        // repeated block is copied within the file rather than fetched again.
        let mut first_at: HashMap<Hash, u64> = HashMap::new();
        for (block, &at) in blocks.iter().zip(offsets).take(resumed.kept) {
            first_at.entry(block.hash).or_insert(at);
        }
        let mut sources = Sources::default();
        let resumed_ahead: HashSet<usize> = resumed.ahead.iter().copied().collect();
        let mut source = |i: usize, first_at: &mut HashMap<Hash, u64>| -> Result<_> {
            let (block, at) = (&blocks[i], offsets[i]);
            let earlier = *first_at.entry(block.hash).or_insert(at);
            let plan = if *block == chunk::zero_block() {
                Plan::Settled(Got::Zero)
            } else if resumed_ahead.contains(&i) {
                Plan::Settled(Got::Resumed)
            } else if earlier != at {
                Plan::Settled(Got::Repeat(earlier))
            } else {
                // Looked up when the block is about to be fetched, so the sources of a
                // huge file are never all held at once.
                match index {
                    Some(index) => {
                        let local = index.block_sources(&block.hash, 4)?;
                        sources
                            .find(root, local, block)
                            .map_or(Plan::Fetch, Plan::Settled)
                    }
                    None => Plan::Fetch,
                }
            };
            let request = BlockRequest {
                path: entry.path.clone(),
                offset: at,
                size: block.size,
                hash: block.hash,
            };
            Ok(async move {
                let got = match plan {
                    Plan::Settled(got) => Ok(got),
                    Plan::Fetch => fetch(request).await.map(Got::Fetched),
                };
                (i, got)
            })
        };
        let mut in_flight = FuturesUnordered::new();
        // The blocks that came before their turn, at most PIPELINE.
        let mut arrived = BTreeMap::new();
        let mut next = resumed.kept;
        let mut reused = 0;
        for i in resumed.kept..blocks.len() {
            while next < blocks.len() && next < i + PIPELINE {
                in_flight.push(source(next, &mut first_at)?);
                next += 1;
            }
            let got = loop {
                if let Some(got) = arrived.remove(&i) {
                    break got;
                }
                let (at, got) = in_flight
                    .next()
                    .await
                    .context("the block stream ended early")?;
                let got = got.with_context(|| format!("cannot fetch {}", entry.path))?;
                // A block from the peer that came before its turn is verified and written
                // at its offset now: if the transfer ends before its turn (a connection
                // cut while an earlier block is on its way), a resumed one finds it.
                let got = match got {
                    Got::Fetched(data) if at != i => {
                        verify(entry, at, offsets[at], &data)?;
                        tmp.write_ahead(offsets[at], &data)?;
                        Got::Early
                    }
                    got => got,
                };
                arrived.insert(at, got);
            };
            let block = &blocks[i];
            match got {
                Got::Local(data) => {
                    reused += data.len() as u64;
                    tmp.write_block(&data)?;
                }
                Got::Copy(source, offset) => {
                    reused += u64::from(block.size);
                    copy(tmp, &source, offset, entry, i)?;
                }
                Got::Repeat(at) => {
                    reused += u64::from(block.size);
                    tmp.repeat_block(at, block.size)?;
                }
                Got::Resumed => {
                    reused += u64::from(block.size);
                    tmp.adopt_block(block.size);
                }
                Got::Early => tmp.adopt_block(block.size),
                Got::Zero => {
                    reused += u64::from(block.size);
                    tmp.zero_block(block.size)?;
                }
                Got::Fetched(data) => {
                    verify(entry, i, tmp.written(), &data)?;
                    tmp.write_block(&data)?;
                }
            }
        }
        Ok(reused)
    }
}

/// Checks that `data`, from the peer, is block `i` of `entry` (at `offset`).
fn verify(entry: &Entry, i: usize, offset: u64, data: &[u8]) -> Result<()> {
    let block = &entry.blocks[i];
    if data.len() != block.size as usize || chunk::sha256(data) != block.hash {
        bail!(
            "the block of {} at offset {offset} does not match its hash; it was discarded",
            entry.path
        );
    }
    Ok(())
}

/// Appends block `i` of `entry` to `tmp`, copied from `offset` of `source`. The source's
/// stat is looked at again once the bytes are copied: if it changed (the user is writing
/// that file now), the copy may hold some of the new bytes, so it is read back and
/// verified like a block from the peer.
fn copy(tmp: &mut TempFile, source: &Source, offset: u64, entry: &Entry, i: usize) -> Result<()> {
    let (at, size) = (tmp.written(), entry.blocks[i].size);
    tmp.copy_block(&source.file, offset, size)?;
    if !source.unchanged() {
        let data = tmp.read_back(at, size)?;
        if chunk::sha256(&data) != entry.blocks[i].hash {
            bail!(
                "{} changed while a block of {} was copied from it; the transfer is tried again",
                source.path,
                entry.path
            );
        }
    }
    Ok(())
}

/// Most local files held open by one transfer at once.
const OPEN_SOURCES: usize = 64;

/// The local files a transfer takes blocks from, each opened once (beneath the root,
/// never through a symlink) however many blocks it gives.
///
/// A file whose stat (size, mtime, inode, mode) still matches the row the index recorded
/// when it hashed the file holds the blocks the index lists for it: the scan relies on
/// exactly this to skip unchanged files. Such a block is copied without being read or
/// hashed ([`crate::fs::copy`]), and the stat is looked at again after the copy. Any
/// doubt (a file that changed, or that the index knows under another stat) and the block
/// is read and hashed instead.
#[derive(Default)]
struct Sources {
    /// By path; `None` for a file that could not be opened.
    open: HashMap<RelPath, Option<Arc<Source>>>,
}

/// One local file open for reading, and what the index recorded of it.
struct Source {
    path: RelPath,
    file: File,
    recorded: Stat,
}

impl Source {
    /// Whether the file is still as the index recorded it.
    fn unchanged(&self) -> bool {
        let now = self.file.metadata().ok().and_then(|m| stat_of(&m));
        matches_stat(now.as_ref(), &self.recorded, false)
    }
}

impl Sources {
    /// Where `block` can be had from the first of `candidates` that holds it, if any.
    fn find(
        &mut self,
        root: &Root,
        candidates: Vec<BlockSource>,
        block: &BlockInfo,
    ) -> Option<Got> {
        candidates.into_iter().find_map(|c| {
            let source = self.open(root, &c)?;
            if source.unchanged() {
                return Some(Got::Copy(source, c.offset));
            }
            let mut data = vec![0; block.size as usize];
            use crate::fs::FileExt;
            source.file.read_exact_at(&mut data, c.offset).ok()?;
            (chunk::sha256(&data) == block.hash).then_some(Got::Local(data))
        })
    }

    fn open(&mut self, root: &Root, candidate: &BlockSource) -> Option<Arc<Source>> {
        if let Some(known) = self.open.get(&candidate.path) {
            return known.clone();
        }
        if self.open.len() >= OPEN_SOURCES {
            self.open.clear();
        }
        let file = root
            .parent(&candidate.path)
            .and_then(|(dir, name)| dir.open_regular(name))
            .ok();
        let source = file.map(|file| {
            Arc::new(Source {
                path: candidate.path.clone(),
                file,
                recorded: candidate.recorded,
            })
        });
        self.open.insert(candidate.path.clone(), source.clone());
        source
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use anyhow::anyhow;

    use super::*;
    use crate::fs::chunk::tests::pseudo_random;
    use crate::fs::temp::tests::entry_for;

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
        cut_off(&root, &index, &entry, |r| flaky.fetch(r)).await;
        let asked = resume(&root, &index, &entry, &content).await;
        assert_eq!(
            asked.len(),
            n - 10,
            "blocks received before are asked again"
        );
        assert_eq!(
            std::fs::read_dir(&root_path).unwrap().count(),
            1,
            "partial left"
        );
    }

    /// A peer whose first block never comes: it fails once every other block of the
    /// pipeline has been answered, as a connection cut while a slow read of that block
    /// is under way.
    struct StuckFirst {
        content: Vec<u8>,
        answered: std::sync::atomic::AtomicUsize,
    }

    impl StuckFirst {
        async fn fetch(&self, request: BlockRequest) -> Result<Vec<u8>> {
            use std::sync::atomic::Ordering::SeqCst;
            if request.offset == 0 {
                for _ in 0..10_000 {
                    if self.answered.load(SeqCst) == PIPELINE - 1 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                return Err(anyhow!("connection closed"));
            }
            self.answered.fetch_add(1, SeqCst);
            let at = request.offset as usize;
            Ok(self.content[at..at + request.size as usize].to_vec())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_that_arrived_ahead_of_a_failed_one_are_not_fetched_again() {
        let (_dir, index, _, root) = folder();
        let content = pseudo_random(3 * 1024 * 1024, 23);
        let entry = entry_for("big.bin", &content);
        let n = entry.blocks.len();
        assert!(n > PIPELINE, "{n} blocks");
        let stuck = StuckFirst {
            content: content.clone(),
            answered: Default::default(),
        };
        cut_off(&root, &index, &entry, |r| stuck.fetch(r)).await;
        let asked = resume(&root, &index, &entry, &content).await;
        assert_eq!(asked.len(), n - (PIPELINE - 1), "asked again: {asked:?}");
        assert_eq!(asked[0], 0, "the missing first block is asked for");
    }

    /// Runs a transfer of `entry` that `fetch` cuts off.
    async fn cut_off<F, Fut>(root: &Root, index: &Index, entry: &Entry, fetch: F)
    where
        F: Fn(BlockRequest) -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let err = assemble(root, Some(index), entry, fetch)
            .await
            .err()
            .expect("the transfer fails once the peer is gone");
        assert!(format!("{err:#}").contains("connection closed"), "{err:#}");
    }

    /// Runs the transfer of `entry` again with a peer that answers everything, checks
    /// that it installs `content`, and returns the offsets it asked the peer for.
    async fn resume(root: &Root, index: &Index, entry: &Entry, content: &[u8]) -> Vec<u64> {
        assemble_from(root, index, entry, content).await.0
    }

    /// Writes `content` at `path` in the folder and records it in the index as it is on
    /// disk now, as a scan would.
    fn record(index: &Index, root: &Root, path: &str, content: &[u8]) -> Entry {
        let mut entry = entry_for(path, content);
        std::fs::write(entry.path.to_path(root.path()), content).unwrap();
        let disk = crate::fs::stat::stat(root, &entry.path).unwrap().unwrap();
        (entry.mtime_ns, entry.mode) = (disk.mtime_ns, disk.mode);
        let row = crate::index::LocalRow {
            entry: entry.clone(),
            inode: disk.inode,
            dirty: false,
        };
        index.put_local(&row).unwrap();
        entry
    }

    /// Assembles `entry` from the folder and a peer holding `content`, installs it, and
    /// returns the offsets asked of the peer and the bytes reused.
    async fn assemble_from(
        root: &Root,
        index: &Index,
        entry: &Entry,
        content: &[u8],
    ) -> (Vec<u64>, u64) {
        let peer = Peer::new(content, usize::MAX);
        let done = assemble(root, Some(index), entry, |r| peer.fetch(r))
            .await
            .unwrap();
        done.tmp.commit(root, entry).unwrap();
        assert_eq!(
            std::fs::read(entry.path.to_path(root.path())).unwrap(),
            content
        );
        let asked = peer.asked.lock().unwrap().clone();
        (asked, done.reused)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_of_a_local_file_that_matches_its_row_are_copied() {
        let (_dir, index, _, root) = folder();
        let content = pseudo_random(2 * 1024 * 1024, 22);
        let old = record(&index, &root, "old", &content);
        let mut sources = Sources::default();
        let found = sources.find(
            &root,
            index.block_sources(&old.blocks[1].hash, 4).unwrap(),
            &old.blocks[1],
        );
        assert!(matches!(found, Some(Got::Copy(_, at)) if at == u64::from(old.blocks[0].size)));
        let entry = entry_for("new", &content);
        let (asked, reused) = assemble_from(&root, &index, &entry, &content).await;
        assert!(asked.is_empty(), "asked the peer for {asked:?}");
        assert_eq!(reused, entry.size);
    }

    /// A local file written since the index recorded it is not trusted: its blocks are
    /// read and hashed, and the one that changed comes from the peer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_of_a_local_file_that_changed_are_read_and_hashed() {
        let (_dir, index, root_path, root) = folder();
        let content = pseudo_random(2 * 1024 * 1024, 22);
        let old = record(&index, &root, "old", &content);
        // The first block changes in place: same size and inode, a later mtime.
        let mut stale = content.clone();
        stale[10] ^= 1;
        std::fs::write(root_path.join("old"), &stale).unwrap();
        let later = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(old.mtime_ns as u64 + 1_000_000_000);
        let file = File::options()
            .write(true)
            .open(root_path.join("old"))
            .unwrap();
        file.set_modified(later).unwrap();
        let mut sources = Sources::default();
        let found = sources.find(
            &root,
            index.block_sources(&old.blocks[1].hash, 4).unwrap(),
            &old.blocks[1],
        );
        assert!(
            matches!(found, Some(Got::Local(_))),
            "a changed file is read"
        );
        let entry = entry_for("new", &content);
        let (asked, reused) = assemble_from(&root, &index, &entry, &content).await;
        assert_eq!(asked, [0], "only the stale block is fetched");
        assert_eq!(reused, entry.size - u64::from(entry.blocks[0].size));
    }

    /// Zero blocks are neither fetched nor written: the received file has holes where
    /// its content is zeros, also where a stale partial transfer held other bytes.
    // Measures allocated blocks (`st_blocks`), a Unix stat field.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_blocks_are_made_as_holes_not_fetched() {
        let (_dir, index, root_path, root) = folder();
        let mut content = vec![0; 8 << 20];
        content[3 << 20..(3 << 20) + 200_000].copy_from_slice(&pseudo_random(200_000, 25));
        for (name, stale) in [("fresh.img", false), ("stale.img", true)] {
            let entry = entry_for(name, &content);
            let zero = chunk::zero_block();
            let zeros = entry.blocks.iter().filter(|b| **b == zero).count();
            assert!(zeros > 20, "{zeros} zero blocks");
            if stale {
                let partial = crate::fs::partial::Partial::of(&entry.path).to_string();
                std::fs::write(root_path.join(partial), vec![0xff; 8 << 20]).unwrap();
            }
            let (asked, reused) = assemble_from(&root, &index, &entry, &content).await;
            assert_eq!(asked.len(), entry.blocks.len() - zeros, "{name}");
            assert_eq!(reused, entry.size - chunk::stored_size(&entry.blocks));
            let file = File::open(root_path.join(name)).unwrap();
            let on_disk = crate::fs::sparse::allocated(&file).unwrap();
            assert!(on_disk < 1 << 20, "{name} takes {on_disk} bytes");
        }
    }

    /// A source that changes while a block is copied from it: the copy is read back and
    /// checked, and a block that no longer matches fails the transfer.
    #[test]
    fn a_block_copied_from_a_file_that_changed_meanwhile_is_checked() {
        let (_dir, index, root_path, root) = folder();
        let content = pseudo_random(300 * 1024, 24);
        let entry = record(&index, &root, "f", &content);
        let copy_from = |bytes: &[u8]| {
            std::fs::write(root_path.join("f"), bytes).unwrap();
            let source = Source {
                path: entry.path.clone(),
                file: File::open(root_path.join("f")).unwrap(),
                // Not what the disk holds now: the file changed after it was opened.
                recorded: Stat {
                    size: 1,
                    ..crate::fs::stat::stat(&root, &entry.path).unwrap().unwrap()
                },
            };
            let mut tmp = TempFile::create(&root, &RelPath::new("g").unwrap()).unwrap();
            copy(&mut tmp, &source, 0, &entry, 0)
        };
        copy_from(&content).unwrap();
        let mut changed = content.clone();
        changed[0] ^= 1;
        let err = copy_from(&changed).unwrap_err();
        assert!(
            format!("{err:#}").contains("changed while a block"),
            "{err:#}"
        );
    }

    #[test]
    fn content_sent_inline_is_written_only_if_it_matches_its_entry() {
        let (_dir, _index, root_path, root) = folder();
        let content = pseudo_random(60_000, 24);
        let mut entry = entry_for("small", &content);
        // Cut in two, as a device's chunker may cut a file of this size.
        entry.blocks = [&content[..20_000], &content[20_000..]]
            .map(|b| filesync_proto::wire::BlockInfo {
                hash: chunk::sha256(b),
                size: b.len() as u32,
            })
            .to_vec();
        let mut other = content.clone();
        other[100] ^= 1;
        let mut lying_blocks = entry.clone();
        lying_blocks.blocks[1].hash = lying_blocks.blocks[0].hash;
        let mut dir = entry_for("small", b"");
        dir.kind = EntryKind::Dir;
        let refused: [(&Entry, &[u8], &str); 4] = [
            (&entry, &other, "does not match its hash"),
            (&entry, &content[..100], "100 bytes of content"),
            (&lying_blocks, &content, "does not match its hash"),
            (&dir, b"", "not a live file"),
        ];
        for (entry, data, why) in refused {
            let err = from_bytes(&root, entry, data).err().expect("refused");
            assert!(format!("{err:#}").contains(why), "{err:#}");
        }
        assert_eq!(std::fs::read_dir(&root_path).unwrap().count(), 0);
        let done = from_bytes(&root, &entry, &content).unwrap();
        done.tmp.commit(&root, &entry).unwrap();
        assert_eq!(std::fs::read(root_path.join("small")).unwrap(), content);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_block_is_fetched_once() {
        let (_dir, index, root_path, root) = folder();
        // A byte repeated cuts into identical blocks of the largest size (zeros would be
        // zero blocks, never fetched).
        let content = vec![7u8; 8 * chunk::MAX_BLOCK + 1000];
        let entry = entry_for("sevens", &content);
        assert!(entry.blocks.len() >= 9);
        let peer = Peer::new(&content, usize::MAX);
        let done = assemble(&root, Some(&index), &entry, |r| peer.fetch(r))
            .await
            .unwrap();
        assert_eq!(peer.asked(), 2, "one big block and the short last one");
        assert_eq!(done.reused, 7 * chunk::MAX_BLOCK as u64);
        let target = entry.path.to_path(&root_path);
        done.tmp.commit(&root, &entry).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), content);
    }
}
