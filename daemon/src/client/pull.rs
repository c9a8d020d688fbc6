//! Making one server entry real on the client's disk.
//!
//! A file is assembled block by block into a temp file: blocks the folder already has
//! in any indexed file are copied (and verified), the rest are requested from the
//! server, several at a time. The result is verified whole, fsynced and renamed in.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{BlockRequest, Entry, EntryKind};
use futures::StreamExt;

use super::session::SessionHandle;
use crate::chunk;
use crate::conn::{self, Counters};
use crate::index::{BlockSource, Index};
use crate::store::{self, Stat, TempFile};

/// Blocks requested from the server at once, so throughput is not bound by round trips.
const PIPELINE: usize = 16;

/// Writes `entry` (a live file, dir or symlink) into the folder at `root`.
pub async fn apply(
    root: &Path,
    index: &Index,
    session: &SessionHandle,
    entry: &Entry,
    counters: &Arc<Counters>,
) -> Result<Stat> {
    if !conn::no_symlink_ancestors(root, &entry.path) {
        bail!(
            "a parent of {} is not a directory (a symlink or file is in the way)",
            entry.path
        );
    }
    match entry.kind {
        EntryKind::Dir => store::make_dir(root, entry),
        EntryKind::Symlink => store::make_symlink(root, entry),
        EntryKind::File if same_file_content(index, entry)? => store::set_file_meta(root, entry),
        EntryKind::File => fetch_file(root, index, session, entry, counters).await,
    }
}

/// Whether the local file at the entry's path already holds its content (a change of
/// mode or mtime only). The caller checked that the disk matches the index.
fn same_file_content(index: &Index, entry: &Entry) -> Result<bool> {
    Ok(index.local(&entry.path)?.is_some_and(|l| {
        !l.entry.deleted && l.entry.kind == EntryKind::File && l.entry.hash == entry.hash
    }))
}

async fn fetch_file(
    root: &Path,
    index: &Index,
    session: &SessionHandle,
    entry: &Entry,
    counters: &Arc<Counters>,
) -> Result<Stat> {
    let target = entry.path.to_path(root);
    // Sources are looked up first: the index is not shared with the fetching futures.
    let mut sources: Vec<Vec<BlockSource>> = Vec::with_capacity(entry.blocks.len());
    for b in &entry.blocks {
        sources.push(index.block_sources(&b.hash, 4)?);
    }
    let mut offsets = Vec::with_capacity(entry.blocks.len());
    let mut at = 0u64;
    for b in &entry.blocks {
        offsets.push(at);
        at += u64::from(b.size);
    }
    if at != entry.size {
        bail!(
            "block sizes of {} add up to {at} bytes, not its size {}",
            entry.path,
            entry.size
        );
    }
    let mut tmp = TempFile::create(&target)?;
    let wanted: Vec<(BlockRequest, Vec<BlockSource>)> = entry
        .blocks
        .iter()
        .zip(sources)
        .zip(offsets)
        .map(|((block, sources), offset)| {
            (
                BlockRequest {
                    path: entry.path.clone(),
                    offset,
                    size: block.size,
                    hash: block.hash,
                },
                sources,
            )
        })
        .collect();
    let mut stream = futures::stream::iter(wanted)
        .map(|(request, sources)| {
            fetch_block(root.to_path_buf(), session.clone(), request, sources)
        })
        .buffered(PIPELINE);
    let mut i = 0;
    while let Some(result) = stream.next().await {
        let (data, local) = result.with_context(|| format!("cannot fetch {}", entry.path))?;
        let block = &entry.blocks[i];
        if data.len() != block.size as usize || chunk::sha256(&data) != block.hash {
            bail!(
                "a block of {} does not match its hash; discarded",
                entry.path
            );
        }
        tmp.write(&data)?;
        if local {
            Counters::add(&counters.content_reused, data.len() as u64);
        }
        i += 1;
    }
    // Verify and fsync first, so the check below is the last thing before the rename.
    tmp.prepare(entry)?;
    // The download took a while: if the user wrote the path meanwhile, that file is
    // theirs and must not be replaced. Giving up here lets the scan take it in as a local
    // change, which then meets this version as an ordinary conflict.
    let local = index.local(&entry.path)?;
    let disk = store::stat(&target)?;
    let unchanged = match &local {
        Some(row) => store::matches_index(disk.as_ref(), &row.entry, row.inode),
        None => disk.is_none(),
    };
    if !unchanged {
        bail!(
            "{} changed here while its new version was downloading; both are kept",
            entry.path
        );
    }
    tmp.install(&target)
}

/// One block, from a local file when one still holds it, else from the server; the bool
/// says it was local.
async fn fetch_block(
    root: std::path::PathBuf,
    session: SessionHandle,
    request: BlockRequest,
    sources: Vec<BlockSource>,
) -> Result<(Vec<u8>, bool)> {
    if let Some(data) = read_local(&root, &sources, &request) {
        return Ok((data, true));
    }
    session.request_block(request).await.map(|d| (d, false))
}

/// The block from the first local file that still holds it, verified.
fn read_local(root: &Path, sources: &[BlockSource], want: &BlockRequest) -> Option<Vec<u8>> {
    sources.iter().find_map(|s| {
        if !conn::no_symlink_ancestors(root, &s.path) {
            return None;
        }
        let data = store::read_block(&s.path.to_path(root), s.offset, want.size).ok()?;
        (chunk::sha256(&data) == want.hash).then_some(data)
    })
}
