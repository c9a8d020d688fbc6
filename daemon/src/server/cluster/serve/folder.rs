//! One folder as a node serves it from the cluster: what sessions read (entries, the
//! index stream, blocks and small files' content) and the watch channels it announces
//! on, which follow commits made on every node ([`super::notify`]).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use filesync_proto::control::ServerFolderStatus;
use filesync_proto::wire::{
    BlockError, BlockRequest, Entry, EntryKind, FetchedFile, Inline, ServerMsg, Want,
};
use filesync_proto::{AccountName, DeviceId, FolderName, Hash, RelPath};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;

use super::Node;
use super::rows::{self, Cached, ENTRY_COLS, ENTRY_FROM};
use crate::conn::{self, BlockResult};
use crate::index::{StreamRead, rename_record};
use crate::server::cluster::schema::SMALL_MAX;
use crate::server::history::Lineage;
use crate::server::inline;

/// Blocks read from the bucket at once for one file or one batch.
const READS_AT_ONCE: usize = 16;

/// A folder of the cluster, open on this node.
pub struct ClusterFolder {
    pub(super) node: Arc<Node>,
    pub id: i64,
    pub account_id: i64,
    pub account: AccountName,
    pub name: FolderName,
    /// Commits of this node to the folder, one at a time: the folder row's lock orders
    /// them with other nodes' commits, this keeps this node's from queueing on it.
    pub(super) commits: tokio::sync::Mutex<()>,
    pub(super) seq_tx: watch::Sender<u64>,
    pub(super) lineage_tx: watch::Sender<Lineage>,
    pub(super) status_tx: watch::Sender<ServerFolderStatus>,
}

impl ClusterFolder {
    /// `account/folder`, for messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.account, self.name)
    }

    pub fn seq(&self) -> watch::Receiver<u64> {
        self.seq_tx.subscribe()
    }

    pub fn lineage(&self) -> watch::Receiver<Lineage> {
        self.lineage_tx.subscribe()
    }

    pub fn status(&self) -> watch::Receiver<ServerFolderStatus> {
        self.status_tx.subscribe()
    }

    /// The folder's current row at `path`.
    pub async fn current(&self, path: &RelPath) -> Result<Option<Entry>> {
        let db = self.node.db().await?;
        rows::entry_at(&db, self.id, self.account_id, path).await
    }

    /// What a device's index stream sends next (see [`crate::index::Index::stream_read`]),
    /// read in one snapshot: up to `limit` entries above `since`, the rename records
    /// above `renamed`, and the folder's last number at that moment.
    pub async fn stream_read(&self, since: u64, renamed: u64, limit: usize) -> Result<StreamRead> {
        let mut db = self.node.db().await?;
        let tx = db
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .context("cannot start reading the index stream")?;
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM {ENTRY_FROM} WHERE e.folder_id = $1 AND e.seq > $3 \
             ORDER BY e.seq LIMIT $4"
        );
        let entries = tx
            .query_c(
                &sql,
                &[&self.id, &self.account_id, &(since as i64), &(limit as i64)],
            )
            .await
            .with_context(|| format!("cannot read the entries of {}", self.label()))?
            .iter()
            .map(rows::entry)
            .collect::<Result<Vec<_>>>()?;
        let as_of: i64 = tx
            .query_one_c("SELECT last_seq FROM folders WHERE id = $1", &[&self.id])
            .await?
            .get(0);
        let mut renames = Vec::new();
        for row in tx
            .query_c(
                "SELECT seq, src, dst FROM renames WHERE folder_id = $1 AND seq > $2 \
                 AND seq <= $3 ORDER BY seq",
                &[&self.id, &(renamed as i64), &as_of],
            )
            .await?
        {
            let (src, dst): (String, String) = (row.get(1), row.get(2));
            renames.push(rename_record(
                row.get::<_, i64>(0) as u64,
                RelPath::new(src)?,
                RelPath::new(dst)?,
            ));
        }
        tx.commit().await?;
        Ok(StreamRead {
            entries,
            renames,
            as_of: as_of as u64,
        })
    }

    /// Whether any entry has a number above `seq`.
    pub async fn any_after(&self, seq: u64) -> Result<bool> {
        let db = self.node.db().await?;
        Ok(db
            .query_one_c(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE folder_id = $1 AND seq > $2)",
                &[&self.id, &(seq as i64)],
            )
            .await?
            .get(0))
    }

    /// A block of a live file of the folder, from the bucket; anything else is "not
    /// available", as from the embedded server.
    pub async fn block(&self, req: &BlockRequest) -> BlockResult {
        let current = self.current(&req.path).await.map_err(|e| {
            tracing::warn!(folder = %self.label(), path = %req.path, "cannot read the index to serve a block: {e:#}");
            BlockError::NotAvailable
        })?;
        match current {
            Some(e) if e.kind == EntryKind::File && !e.deleted && conn::is_block_of(&e, req) => {
                let read = async {
                    if e.size <= SMALL_MAX
                        && let Some(data) =
                            self.in_rows(&[e.hash.0.as_slice()]).await?.remove(&e.hash)
                    {
                        let block = (data.get(req.offset as usize..))
                            .and_then(|rest| rest.get(..req.size as usize))
                            .filter(|b| crate::fs::chunk::sha256(b) == req.hash);
                        return block.map(<[u8]>::to_vec).context(
                            "a block of a small file kept in its row does not match its hash",
                        );
                    }
                    Ok(Vec::from(
                        self.node.chunks.get(self.account_id, &req.hash).await?,
                    ))
                };
                read.await.map_err(|err: anyhow::Error| {
                    tracing::error!(folder = %self.label(), path = %req.path, "cannot read a block: {err:#}");
                    BlockError::NotAvailable
                })
            }
            _ => Err(BlockError::NotAvailable),
        }
    }

    /// The bytes of the small contents among `hashes` that are kept in their rows.
    async fn in_rows(&self, hashes: &[&[u8]]) -> Result<HashMap<Hash, Vec<u8>>> {
        let db = self.node.db().await?;
        let rows = db
            .query_c(
                "SELECT hash, data FROM contents WHERE account_id = $1 AND hash = ANY($2) \
                 AND data IS NOT NULL",
                &[&self.account_id, &hashes],
            )
            .await
            .context("cannot read small files' content from the database")?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((Hash::from_slice(r.get::<_, &[u8]>(0))?, r.get(1))))
            .collect())
    }

    /// The whole content of `entry`, a live file: from its row if it is kept there,
    /// else from its blocks in the bucket; checked against its hash.
    pub async fn content(&self, entry: &Entry) -> Result<Vec<u8>> {
        let in_row = match entry.size <= SMALL_MAX {
            true => self
                .in_rows(&[entry.hash.0.as_slice()])
                .await?
                .remove(&entry.hash),
            false => None,
        };
        self.checked(entry, in_row).await
    }

    /// `entry`'s content, `in_row` if it was read from its row already, else from the
    /// bucket, checked against its hash.
    async fn checked(&self, entry: &Entry, in_row: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let data = match in_row {
            Some(data) => data,
            None => self.read_bucket(entry).await?,
        };
        if crate::fs::chunk::sha256(&data) != entry.hash {
            bail!(
                "the content of {} of {} read from the cluster does not match its hash",
                entry.path,
                self.label()
            );
        }
        Ok(data)
    }

    /// `entry`'s blocks from the bucket, in order.
    async fn read_bucket(&self, entry: &Entry) -> Result<Vec<u8>> {
        let reads: Vec<_> = (entry.blocks.iter())
            .map(|b| self.node.chunks.get(self.account_id, &b.hash))
            .collect();
        let parts: Vec<Bytes> = futures::stream::iter(reads)
            .buffered(READS_AT_ONCE)
            .try_collect()
            .await
            .with_context(|| format!("cannot read {} of {}", entry.path, self.label()))?;
        Ok(parts.concat())
    }

    /// Of `hashes`, the blocks the account already stores with a reference: their
    /// objects are in the bucket and stay there while the reference lasts.
    pub async fn stored_blocks(&self, hashes: &[Hash]) -> Result<std::collections::HashSet<Hash>> {
        let db = self.node.db().await?;
        let wanted: Vec<&[u8]> = hashes.iter().map(|h| h.0.as_slice()).collect();
        let rows = db
            .query_c(
                "SELECT hash FROM blocks WHERE account_id = $1 AND hash = ANY($2) AND refs > 0",
                &[&self.account_id, &wanted],
            )
            .await
            .context("cannot read the account's blocks from the database")?;
        Ok(rows
            .iter()
            .filter_map(|r| Hash::from_slice(r.get::<_, &[u8]>(0)))
            .collect())
    }
}

impl ClusterFolder {
    /// Adds small files' content, read from their rows (one query per batch) or the
    /// bucket, to the index batches of `messages` (see
    /// [`crate::server::inline::attach`]); a file that cannot be read goes without it
    /// (the device asks for its blocks).
    pub async fn attach(
        &self,
        device: &DeviceId,
        mut messages: Vec<ServerMsg>,
    ) -> Result<Vec<ServerMsg>> {
        if !inline::any_worth_sending(&messages, device) {
            return Ok(messages);
        }
        for msg in &mut messages {
            if let ServerMsg::Index {
                entries,
                inline: attached,
                ..
            } = msg
            {
                let chosen = inline::to_attach(entries, device);
                let hashes: Vec<&[u8]> = chosen
                    .iter()
                    .map(|&i| entries[i].hash.0.as_slice())
                    .collect();
                // The small files kept in their rows, in one query for the batch.
                let kept = self.in_rows(&hashes).await.unwrap_or_else(|e| {
                    tracing::warn!(folder = %self.label(), "{e:#}");
                    HashMap::new()
                });
                let reads: Vec<_> = chosen
                    .into_iter()
                    .map(|i| self.attached(i, &entries[i], kept.get(&entries[i].hash).cloned()))
                    .collect();
                *attached = futures::stream::iter(reads)
                    .buffered(READS_AT_ONCE)
                    .filter_map(std::future::ready)
                    .collect()
                    .await;
            }
        }
        Ok(messages)
    }

    /// The content of `entry`, the `i`th of its batch, to travel with it: `in_row`, or
    /// else read from the bucket; `None` when it cannot be read (the device then asks
    /// for its blocks).
    async fn attached(&self, i: usize, entry: &Entry, in_row: Option<Vec<u8>>) -> Option<Inline> {
        match self.checked(entry, in_row).await {
            Ok(data) => Some(Inline {
                entry: i as u32,
                data,
            }),
            Err(e) => {
                tracing::warn!(folder = %self.label(), "cannot attach a small file's content: {e:#}");
                None
            }
        }
    }

    /// Answers a checked `Fetch` from the folder's live versions only.
    pub async fn fetch(&self, files: &[Want]) -> Vec<FetchedFile> {
        let reads: Vec<_> = files.iter().map(|want| self.fetched(want)).collect();
        futures::stream::iter(reads)
            .buffered(READS_AT_ONCE)
            .collect()
            .await
    }

    async fn fetched(&self, want: &Want) -> FetchedFile {
        let current = self.current(&want.path).await.unwrap_or_else(|e| {
            tracing::warn!(folder = %self.label(), path = %want.path, "cannot read the index to answer a Fetch: {e:#}");
            None
        });
        let result = match (inline::check_wanted(want, current.as_ref()), current) {
            (Err(e), _) => Err(e),
            (Ok(()), _) if want.size == 0 => Ok(Vec::new()),
            (Ok(()), Some(entry)) => self.content(&entry).await.map_err(|e| {
                tracing::warn!(folder = %self.label(), "cannot answer a Fetch: {e:#}");
                BlockError::NotAvailable
            }),
            (Ok(()), None) => Err(BlockError::NotAvailable),
        };
        FetchedFile { result }
    }
}
