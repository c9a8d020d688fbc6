//! Making one server entry real on the client's disk.
//!
//! A file is assembled block by block into a temp file ([`transfer::assemble`]): what an
//! interrupted download left, blocks the folder already has in any indexed file, and
//! the rest from the server, several at a time. The result is verified whole, fsynced
//! and renamed in, unless the user wrote the path meanwhile.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use filesync_proto::wire::{Entry, EntryKind};

use super::session::SessionHandle;
use crate::conn::Counters;
use crate::fs::beneath::Root;
use crate::fs::stat::Stat;
use crate::fs::temp::Partial;
use crate::fs::tree;
use crate::index::Index;
use crate::scan;
use crate::transfer;

/// Writes `entry` (a live file, dir or symlink) into the folder at `root`. A path whose
/// parent is a symlink or a file here is refused.
pub async fn apply(
    root: &Root,
    index: &Index,
    session: &SessionHandle,
    entry: &Entry,
    counters: &Arc<Counters>,
    partials: &Partials,
) -> Result<Stat> {
    match entry.kind {
        EntryKind::Dir => tree::make_dir(root, entry),
        EntryKind::Symlink => tree::make_symlink(root, entry),
        EntryKind::File if same_file_content(index, entry)? => tree::set_file_meta(root, entry),
        EntryKind::File => fetch_file(root, index, session, entry, counters, partials).await,
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
    root: &Root,
    index: &Index,
    session: &SessionHandle,
    entry: &Entry,
    counters: &Arc<Counters>,
    partials: &Partials,
) -> Result<Stat> {
    if entry.size >= transfer::RESUMABLE_SIZE {
        partials.note(Partial::of(&entry.path));
        partials.note(Partial::in_root(&entry.path));
    }
    let assembled =
        transfer::assemble(root, index, entry, |request| session.request_block(request)).await?;
    Counters::add(&counters.content_reused, assembled.reused);
    // Verify and fsync first, so the check below is the last thing before the rename.
    // The fsync of a large file takes a while: off the async threads, as on the server.
    let tmp = tokio::task::block_in_place(|| assembled.tmp.prepare(entry))?;
    // The download took a while: if the user wrote the path meanwhile, that file is
    // theirs and must not be replaced. Giving up here lets the scan take it in as a local
    // change, which then meets this version as an ordinary conflict.
    let local = index.local(&entry.path)?;
    if !scan::unchanged_since_scan(root, &entry.path, local.as_ref())? {
        bail!(
            "{} changed here while its new version was downloading; both are kept",
            entry.path
        );
    }
    tmp.install(root, &entry.path)
}

/// The partial downloads that may be on disk: left by a transfer that failed, or found
/// at start-up. Once the folder is in sync nothing will resume them, so they go.
#[derive(Default)]
pub(super) struct Partials {
    // Behind a mutex only so that a shared borrow can note one during a pull.
    paths: Mutex<HashSet<Partial>>,
}

impl Partials {
    pub(super) fn note(&self, partial: Partial) {
        self.lock().insert(partial);
    }

    /// Removes every partial download noted so far from the folder at `root`.
    pub(super) fn sweep(&self, root: &Path) {
        let partials: Vec<Partial> = self.lock().drain().collect();
        if partials.is_empty() {
            return;
        }
        let root = match Root::open(root) {
            Ok(root) => root,
            Err(e) => {
                tracing::warn!(
                    root = %root.display(),
                    "cannot open the folder to remove {} partial downloads: {e}",
                    partials.len()
                );
                return;
            }
        };
        for partial in partials {
            match partial.remove(&root) {
                Ok(true) => {
                    tracing::debug!(path = %partial, "removed a partial download nobody resumed")
                }
                // Each large file notes two places its partial may be; most are empty.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %partial, "cannot remove a partial download: {e}")
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Partial>> {
        // A panic while holding this lock cannot leave the set inconsistent.
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }
}
