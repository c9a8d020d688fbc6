//! A pushed file's content on its way into the bucket: assembled and checked in a temp
//! file in the node's staging directory (from the content sent inline, from blocks the
//! account already stores, the rest asked of the device), then each block the account
//! does not store yet written to the bucket. Only then may a commit refer to it.
//!
//! Before a block is written its row is stamped (`touched_at`), which keeps garbage
//! collection away from it for the grace; a row that collection has marked `DOOMED`
//! is refused, and the push is answered `Failed` and sent again after the row is gone.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use filesync_proto::Hash;
use filesync_proto::wire::{BlockRequest, Entry};
use futures::{StreamExt, TryStreamExt};

use super::commit::Small;
use super::folder::ClusterFolder;
use super::rows::Cached;
use crate::events::unix_secs;
use crate::fs::beneath::Root;
use crate::fs::temp::Sealed;
use crate::server::cluster::schema::{LIVE, SMALL_MAX};
use crate::transfer;

/// Blocks written to the bucket at once for one file.
const WRITES_AT_ONCE: usize = 8;

impl ClusterFolder {
    /// The directory this node stages pushes to the folder in.
    fn staging_root(&self) -> Result<Root> {
        let dir = self
            .node
            .staging
            .join(self.account_id.to_string())
            .join(self.id.to_string());
        crate::fs::private::create_dir(&dir)?;
        Root::open_folder(&dir)
    }

    /// Stores the content of `entry`, a pushed live file, in the bucket: from `data`
    /// when the device sent it inline, else assembled from the blocks the account
    /// stores already and those `fetch` asks the device for. Content of at most
    /// [`SMALL_MAX`] bytes is checked the same way but not stored: its bytes are
    /// returned, for the commit to keep with its row.
    pub async fn store_pushed<F, Fut>(
        &self,
        entry: &Entry,
        data: Option<Vec<u8>>,
        fetch: F,
    ) -> Result<Small>
    where
        F: Fn(BlockRequest) -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let small = entry.size <= SMALL_MAX;
        if small && let Some(data) = data {
            // Sent whole: checked as it is, never written here.
            transfer::check_inline(entry, &data)?;
            return Ok(Some(data));
        }
        let root = self.staging_root()?;
        let stored = if small {
            HashSet::new()
        } else {
            let distinct: HashSet<Hash> = entry.blocks.iter().map(|b| b.hash).collect();
            self.stored_blocks(&distinct.into_iter().collect::<Vec<_>>())
                .await?
        };
        let tmp = match data {
            Some(data) => transfer::from_sent(root, entry, data).await?,
            None => {
                let stored = &stored;
                transfer::assemble(&root, None, entry, |request| {
                    let known = stored.contains(&request.hash);
                    let hash = request.hash;
                    let asked = fetch(request);
                    async move {
                        if known {
                            Ok(Vec::from(
                                self.node.chunks.get(self.account_id, &hash).await?,
                            ))
                        } else {
                            asked.await
                        }
                    }
                })
                .await?
            }
        }
        .tmp;
        let sealed = transfer::seal(tmp, entry).await?;
        if small {
            let size = entry.size as u32;
            let read = tokio::task::spawn_blocking(move || {
                let bytes = sealed.read_back(0, size);
                sealed.discard();
                bytes
            });
            let bytes = read.await.context("the read of a staged file stopped")??;
            return Ok(Some(bytes));
        }
        self.upload(sealed, entry, &stored).await?;
        Ok(None)
    }

    /// Writes every block of `sealed` that the account does not store yet, then
    /// removes the temp file.
    async fn upload(&self, sealed: Sealed, entry: &Entry, stored: &HashSet<Hash>) -> Result<()> {
        let mut seen = HashSet::new();
        let mut at = 0u64;
        let mut todo = Vec::new();
        for b in &entry.blocks {
            if !stored.contains(&b.hash) && seen.insert(b.hash) {
                todo.push((b.hash, at, b.size));
            }
            at += u64::from(b.size);
        }
        self.claim(&todo).await?;
        let sealed = Arc::new(sealed);
        futures::stream::iter(todo)
            .map(|(hash, offset, size)| {
                let sealed = sealed.clone();
                async move {
                    let data = tokio::task::spawn_blocking(move || sealed.read_back(offset, size))
                        .await
                        .context("the read of a staged file stopped")??;
                    self.node
                        .chunks
                        .put(self.account_id, &hash, Bytes::from(data))
                        .await
                        .with_context(|| format!("cannot store a block of {}", entry.path))
                }
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .try_collect::<()>()
            .await?;
        if let Ok(sealed) = Arc::try_unwrap(sealed) {
            sealed.discard();
        }
        Ok(())
    }

    /// Records that the blocks `todo` (hash, offset, size) are being written now, in one
    /// statement, which keeps garbage collection from them for the grace; refused while
    /// collection is deleting one.
    async fn claim(&self, todo: &[(Hash, u64, u32)]) -> Result<()> {
        if todo.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&[u8]> = todo.iter().map(|(h, _, _)| h.0.as_slice()).collect();
        let sizes: Vec<i32> = todo.iter().map(|&(_, _, s)| s as i32).collect();
        let db = self.node.db().await?;
        let claimed = db
            .query_c(
                "INSERT INTO blocks (account_id, hash, size, refs, state, touched_at) \
                 SELECT $1, h, s, 0, $4, $5 FROM unnest($2::bytea[], $3::int[]) AS t(h, s) \
                 ON CONFLICT (account_id, hash) \
                 DO UPDATE SET touched_at = $5 WHERE blocks.state = $4 RETURNING hash",
                &[&self.account_id, &hashes, &sizes, &LIVE, &unix_secs()],
            )
            .await
            .context("cannot record blocks in the cluster's database")?;
        if claimed.len() != todo.len() {
            let got: HashSet<&[u8]> = claimed.iter().map(|r| r.get(0)).collect();
            let doomed = todo.iter().find(|(h, _, _)| !got.contains(h.0.as_slice()));
            bail!(
                "block {} is being deleted by garbage collection right now; the push is \
                 sent again once it is gone",
                doomed.map_or_else(String::new, |(h, _, _)| h.to_string())
            );
        }
        Ok(())
    }
}
