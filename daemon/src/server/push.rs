//! A device's pushes, in order: each change checked, its content charged against the
//! account's quota and staged here (through [`crate::transfer`]: from the content the
//! device sent inline, else asking it for the blocks the server lacks), then handed to
//! the sequencer to commit.

use std::sync::Arc;

use anyhow::{Result, bail};
use filesync_proto::wire::{BlockRequest, Change, EntryKind, Hello, PushOutcome, ServerMsg};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::quota::Reservation;
use super::sequencer::ServerFolderHandle;
use super::sequencer::commit::{refusal, stale_base};
use crate::conn::received;
use crate::conn::{self, Pending};
use crate::fs::beneath::Root;
use crate::fs::temp::Prepared;
use crate::index::Index;
use crate::transfer;

/// Handles a device's pushes in order: stage content, then ask the sequencer to commit.
pub(super) async fn process_pushes(
    folder: ServerFolderHandle,
    hello: Hello,
    mut pushes: mpsc::Receiver<(u64, Vec<Change>)>,
    out: mpsc::Sender<ServerMsg>,
    pending: Arc<Pending>,
) -> Result<()> {
    let index = Index::open(&folder.index_file)?;
    while let Some((id, changes)) = pushes.recv().await {
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let part: Vec<Change> = changes.by_ref().take(COMMIT_BATCH).collect();
            outcomes.extend(push_part(&folder, &index, &hello, part, &out, &pending).await?);
        }
        out.send(ServerMsg::PushResult { id, outcomes }).await?;
    }
    Ok(())
}

/// Changes committed together; their files are staged at once, so it also bounds the
/// temp files open per device.
const COMMIT_BATCH: usize = 64;
/// Files of one device staged at the same time, so that block requests and fsyncs
/// overlap instead of waiting for each other.
const STAGING: usize = 8;

/// Stages the files of `part` (several at once), then commits them all in order with
/// one request to the sequencer.
async fn push_part(
    folder: &ServerFolderHandle,
    index: &Index,
    hello: &Hello,
    part: Vec<Change>,
    out: &mpsc::Sender<ServerMsg>,
    pending: &Pending,
) -> Result<Vec<PushOutcome>> {
    let prepared: Vec<_> = futures::stream::iter(part)
        .map(|change| prepare(folder, index, change, out, pending))
        .buffered(STAGING)
        .collect()
        .await;
    let mut ready = Vec::new();
    // The pushes' charges against quota and free space, held until they are committed.
    let mut charged = Vec::new();
    let settled: Vec<Option<PushOutcome>> = prepared
        .into_iter()
        .map(|p| match p {
            Ok((change, charge)) => {
                ready.push(change);
                charged.push(charge);
                None
            }
            Err(outcome) => Some(outcome),
        })
        .collect();
    let mut committed = if ready.is_empty() {
        Vec::new()
    } else {
        folder.commit(ready, hello.device.clone()).await?
    }
    .into_iter();
    drop(charged);
    Ok(settled
        .into_iter()
        .map(|slot| {
            slot.or_else(|| committed.next())
                .unwrap_or(PushOutcome::Failed {
                    reason: "the server lost track of this change; it is retried".into(),
                })
        })
        .collect())
}

/// A pushed change ready for the sequencer, with its content staged if it has new
/// content, and the charge of that content against the account's quota and the
/// server's free space; or its outcome, when it is settled here (a stale base, content
/// over the quota or the free space, or content that could not be staged).
async fn prepare(
    folder: &ServerFolderHandle,
    index: &Index,
    change: Change,
    out: &mpsc::Sender<ServerMsg>,
    pending: &Pending,
) -> Result<((Change, Option<Prepared>), Option<Reservation>), PushOutcome> {
    let failed = |e: anyhow::Error| PushOutcome::Failed {
        reason: refusal(&e),
    };
    let mut change = change;
    // Staged below, not carried on to the sequencer.
    let data = change.data.take();
    if let Err(reason) = received::check_entry(&mut change.entry) {
        tracing::warn!(folder = %folder.name, "refused a pushed change: {reason}");
        return Err(PushOutcome::Failed { reason });
    }
    if let Some(why) = received::check_note(&mut change.entry, |_| false) {
        tracing::warn!(folder = %folder.name, "{why}");
    }
    let current = index.local(&change.entry.path).map_err(failed)?;
    let same = current
        .as_ref()
        .is_some_and(|c| c.entry.same_content(&change.entry));
    if let Some(current_seq) = stale_base(current.as_ref(), &change).filter(|_| !same) {
        // Settled without staging anything; the sequencer would say the same.
        tracing::debug!(folder = %folder.name, path = %change.entry.path, base = change.base_seq, current_seq, "refused a push made on an older version");
        return Err(PushOutcome::Conflict { current_seq });
    }
    let live_file = change.entry.kind == EntryKind::File && !change.entry.deleted;
    if data.is_some() && !live_file {
        let reason = format!(
            "content was sent inline for {}, which is not a live file",
            change.entry.path
        );
        tracing::warn!(folder = %folder.name, "refused a pushed change: {reason}");
        return Err(PushOutcome::Failed { reason });
    }
    if !live_file || same {
        return Ok(((change, None), None));
    }
    // Charged at its declared size before anything is written: what the blocks repeat
    // or the server already has is written in full all the same.
    let replaced = current
        .filter(|c| !c.entry.deleted && c.entry.kind == EntryKind::File)
        .map_or(0, |c| c.entry.size);
    let charge = folder
        .quotas
        .reserve(
            &folder.account,
            &folder.name,
            &change.entry.path,
            change.entry.size,
            replaced,
        )
        .map_err(|reason| PushOutcome::Failed { reason })?;
    let staged = stage(folder, index, &change, data, out, pending)
        .await
        .map_err(|e| {
            tracing::warn!(folder = %folder.name, path = %change.entry.path, "cannot stage a pushed change: {e:#}");
            failed(e)
        })?;
    Ok(((change, Some(staged)), Some(charge)))
}

/// Builds the pushed file's content in a temp file beside its target: from `data`, the
/// content the device sent inline, checked before it is written; else from what an
/// interrupted upload of it left, blocks the server already has, the rest asked of the
/// device, several at a time. It is verified and fsynced here, several files at once,
/// so that the sequencer only has to rename it.
async fn stage(
    folder: &ServerFolderHandle,
    index: &Index,
    change: &Change,
    data: Option<Vec<u8>>,
    out: &mpsc::Sender<ServerMsg>,
    pending: &Pending,
) -> Result<Prepared> {
    let entry = &change.entry;
    let root = Root::open_folder(&folder.root)?;
    let tmp = match data {
        Some(data) => tokio::task::block_in_place(|| transfer::from_bytes(&root, entry, &data))?,
        None => {
            tracing::debug!(folder = %folder.name, path = %entry.path, "staging a pushed file from blocks");
            transfer::assemble(&root, index, entry, |request| {
                request_block(out, pending, request)
            })
            .await?
        }
    }
    .tmp;
    tokio::task::block_in_place(|| tmp.prepare(entry))
}

async fn request_block(
    out: &mpsc::Sender<ServerMsg>,
    pending: &Pending,
    request: BlockRequest,
) -> Result<Vec<u8>> {
    match conn::request_block(out, pending, request, "the device").await? {
        Some(data) => Ok(data),
        None => bail!("the file changed on the device while it was being uploaded"),
    }
}
