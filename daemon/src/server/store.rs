//! The storage boundary of a served folder. Sessions, the index stream and the push
//! pipeline are the same for both backends; what they reach through here differs:
//!
//! - **embedded**: the folder's sequencer task, the only writer of its SQLite index,
//!   its tree under `DATA_DIR` and its versions ([`super::sequencer`]), and the index
//!   and tree read directly;
//! - **cluster**: the folder's rows in PostgreSQL and its content as blocks in the
//!   bucket, committed by whichever node a device pushes through
//!   ([`super::cluster::serve`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use filesync_proto::wire::{BlockError, BlockRequest, Entry, EntryKind, ServerMsg, Want};
use filesync_proto::{DeviceId, RelPath};
use tokio::sync::mpsc;

use crate::conn::{self, BlockResult};
use crate::fs::temp::Prepared;
use crate::index::{Index, StreamRead};

#[cfg(unix)]
use super::cluster::serve::ClusterFolder;

/// Where a folder's changes are committed.
#[derive(Clone)]
pub enum FolderStore {
    /// The sequencer's tree and index.
    Embedded { root: PathBuf, index_file: PathBuf },
    #[cfg(unix)]
    Cluster(Arc<ClusterFolder>),
}

/// A pushed file's new content, ready for the commit: durable in a temp file beside its
/// target (embedded), or stored in the bucket (cluster).
pub enum Landed {
    Prepared(Box<Prepared>),
    #[cfg(unix)]
    Stored,
}

/// What a session reads of its folder: current rows, the index stream, blocks and
/// small files' content. Opened once per session (each flow its own for the embedded
/// index, whose connection is not shared with the sequencer's).
#[derive(Clone)]
pub enum FolderReader {
    Embedded {
        index: Arc<Index>,
        root: PathBuf,
    },
    #[cfg(unix)]
    Cluster(Arc<ClusterFolder>),
}

impl FolderReader {
    pub fn open(store: &FolderStore) -> Result<FolderReader> {
        Ok(match store {
            FolderStore::Embedded { root, index_file } => FolderReader::Embedded {
                index: Arc::new(Index::open(index_file)?),
                root: root.clone(),
            },
            #[cfg(unix)]
            FolderStore::Cluster(c) => FolderReader::Cluster(c.clone()),
        })
    }

    /// The embedded index, where local copies of blocks are looked up while a push is
    /// staged; none in a cluster.
    pub fn index(&self) -> Option<&Index> {
        match self {
            FolderReader::Embedded { index, .. } => Some(index),
            #[cfg(unix)]
            FolderReader::Cluster(_) => None,
        }
    }

    /// The folder's current version of `path`.
    pub async fn current(&self, path: &RelPath) -> Result<Option<Entry>> {
        match self {
            FolderReader::Embedded { index, .. } => Ok(index.local(path)?.map(|r| r.entry)),
            #[cfg(unix)]
            FolderReader::Cluster(c) => c.current(path).await,
        }
    }

    /// See [`Index::stream_read`].
    pub async fn stream_read(&self, since: u64, renamed: u64, limit: usize) -> Result<StreamRead> {
        match self {
            FolderReader::Embedded { index, .. } => index.stream_read(since, renamed, limit),
            #[cfg(unix)]
            FolderReader::Cluster(c) => c.stream_read(since, renamed, limit).await,
        }
    }

    /// Whether any version has a number above `seq`.
    pub async fn any_after(&self, seq: u64) -> Result<bool> {
        match self {
            FolderReader::Embedded { index, .. } => Ok(!index.entries_since(seq, 1)?.is_empty()),
            #[cfg(unix)]
            FolderReader::Cluster(c) => c.any_after(seq).await,
        }
    }

    /// Answers a device's block request with a block of a live file of the folder,
    /// never anything else. Runs on the blocking pool (see [`crate::conn::Reader`]).
    pub fn serve_block(&self, req: &BlockRequest) -> BlockResult {
        match self {
            FolderReader::Embedded { index, root } => serve_listed_block(index, root, req),
            #[cfg(unix)]
            FolderReader::Cluster(c) => tokio::runtime::Handle::current().block_on(c.block(req)),
        }
    }

    /// Adds small files' content to the index batches of `messages`
    /// ([`super::inline::attach`]).
    pub async fn attach(
        &self,
        device: DeviceId,
        messages: Vec<ServerMsg>,
    ) -> Result<Vec<ServerMsg>> {
        match self {
            FolderReader::Embedded { root, .. } => {
                super::inline::attach(root.clone(), device, messages).await
            }
            #[cfg(unix)]
            FolderReader::Cluster(c) => c.attach(&device, messages).await,
        }
    }

    /// Answers a checked `Fetch` in the background ([`super::inline::answer_fetch`]).
    pub fn answer_fetch(&self, id: u64, files: Vec<Want>, out: mpsc::Sender<ServerMsg>) {
        match self {
            FolderReader::Embedded { index, root } => {
                super::inline::answer_fetch(index.clone(), root.clone(), id, files, out)
            }
            #[cfg(unix)]
            FolderReader::Cluster(c) => {
                let c = c.clone();
                tokio::spawn(async move {
                    let files = c.fetch(&files).await;
                    let _ = out.send(ServerMsg::Fetched { id, files }).await;
                });
            }
        }
    }
}

/// Answers a device's block request with a block of a live file of the folder's index,
/// never anything else under the folder: files the server's rules ignore, or that no
/// version recorded, stay unreadable. Anything else is "not available" (the device
/// asked for a version replaced or deleted since, the honest reason to miss).
fn serve_listed_block(index: &Index, root: &std::path::Path, req: &BlockRequest) -> BlockResult {
    match index.local(&req.path) {
        Ok(Some(row))
            if row.entry.kind == EntryKind::File
                && !row.entry.deleted
                && conn::is_block_of(&row.entry, req) =>
        {
            conn::serve_block_from(root, req)
        }
        Ok(_) => {
            tracing::debug!(path = ?req.path.as_str(), offset = req.offset, "a device asked for a block that is not one of a live file here");
            Err(BlockError::NotAvailable)
        }
        Err(e) => {
            tracing::warn!(path = ?req.path.as_str(), "cannot read the index to serve a block: {e:#}");
            Err(BlockError::NotAvailable)
        }
    }
}
