//! A device's pushes, in order, as a two-stage pipeline: each change checked, its content
//! charged against the account's quota and staged here (through [`crate::transfer`]:
//! from the content the device sent inline, else asking it for the blocks the server
//! lacks) and sealed; meanwhile the changes
//! staged so far are committed as a group: their files made durable together (barrier D,
//! [`crate::fs::durable`]), then handed to the sequencer in one command.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use filesync_proto::wire::{BlockRequest, Change, EntryKind, Hello, PushOutcome, ServerMsg};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::decide::{refusal, stale_base};
use super::quota::Reservation;
use super::sequencer::ServerFolderHandle;
use crate::conn::received;
use crate::conn::{self, Pending};
use crate::fs::beneath::Root;
use crate::fs::chunk;
use crate::fs::durable::{self, CrashPoint, GROUP_MAX};
use crate::fs::temp::Sealed;
use crate::lifecycle::metrics;
use crate::server::store::{FolderReader, FolderStore, Landed};
use crate::transfer;

/// Handles a device's pushes in order: one stage stages changes, several at once, while
/// the other commits what is staged so far as one group (at most [`GROUP_MAX`] changes,
/// which may span pushes) and answers each push once its last change is committed. The
/// group grows while the one before it commits: each costs one barrier D, one sequencer
/// command and one barrier M, and a cut connection loses only what was staged and not
/// committed yet.
pub(super) async fn process_pushes(
    folder: ServerFolderHandle,
    hello: Hello,
    pushes: mpsc::Receiver<(u64, Vec<Change>)>,
    out: mpsc::Sender<ServerMsg>,
    pending: Arc<Pending>,
) -> Result<()> {
    let index = FolderReader::open(&folder.store)?;
    // Staged changes waiting for the committing stage: at most one group's worth, so
    // with the group committing and the files being staged, a device holds at most
    // about 2 × GROUP_MAX temp files open.
    let (staged_tx, staged_rx) = mpsc::channel(GROUP_MAX);
    let staging = stage_pushes(&folder, &index, pushes, staged_tx, &out, &pending);
    tokio::try_join!(staging, commit_groups(&folder, &hello, staged_rx, &out))?;
    Ok(())
}

/// Files of one device staged at the same time, so that block requests and the files'
/// writes overlap instead of waiting for each other.
const STAGING: usize = 8;

/// A change of a push on its way from the staging stage to the committing one.
struct Slot {
    /// The push it belongs to.
    id: u64,
    /// Whether it is the push's last change, whose commit answers the push.
    last: bool,
    /// When the push came in, for its push-to-fan-out latency.
    arrived: Instant,
    /// The change, staged; `None` for an empty push, which is answered as it comes.
    staged: Option<Staged>,
}

/// What staging made of a change ([`prepare`]): the change left for the sequencer, with
/// its content if it has new content and its charge against quota and free space
/// (held until it is committed); or its outcome, settled without the sequencer.
type Staged = Result<(Change, Option<Content>, Option<Reservation>), PushOutcome>;

/// A pushed file's new content after staging: sealed in a temp file beside its target
/// (embedded: made durable with its group next), or stored in the cluster's bucket.
enum Content {
    Sealed(Box<Sealed>),
    #[cfg(unix)]
    Stored(Option<Vec<u8>>),
}

/// Where a change's content stands while its group is made durable.
enum Waiting {
    /// It has no new content.
    Nothing,
    /// Its sealed file is in the group's barrier D; the barrier's outcome says.
    InBarrier,
    /// Ready for the commit as it is (stored in the cluster).
    #[cfg(unix)]
    Ready(Landed),
}

/// The staging stage: every change of every push, in order, several at once.
async fn stage_pushes(
    folder: &ServerFolderHandle,
    index: &FolderReader,
    pushes: mpsc::Receiver<(u64, Vec<Change>)>,
    staged: mpsc::Sender<Slot>,
    out: &mpsc::Sender<ServerMsg>,
    pending: &Pending,
) -> Result<()> {
    let pushes = futures::stream::unfold(pushes, |mut rx| async move {
        rx.recv().await.map(|push| (push, rx))
    });
    let changes = pushes.flat_map(|(id, changes)| {
        let n = changes.len();
        let arrived = Instant::now();
        let slots: Vec<(u64, bool, Option<Change>, Instant)> = if n == 0 {
            vec![(id, true, None, arrived)]
        } else {
            let last = |i: usize| i + 1 == n;
            changes
                .into_iter()
                .enumerate()
                .map(|(i, c)| (id, last(i), Some(c), arrived))
                .collect()
        };
        futures::stream::iter(slots)
    });
    let slots = changes
        .map(|(id, last, change, arrived)| async move {
            let staged = match change {
                None => None,
                Some(change) => Some(prepare(folder, index, change, out, pending).await),
            };
            Slot {
                id,
                last,
                arrived,
                staged,
            }
        })
        .buffered(STAGING);
    let mut slots = std::pin::pin!(slots);
    while let Some(slot) = slots.next().await {
        if staged.send(slot).await.is_err() {
            // The committing stage stopped; its error ends the pipeline.
            break;
        }
    }
    Ok(())
}

/// The committing stage: takes everything staged so far (at most [`GROUP_MAX`]) as one
/// group, commits it, and answers each push after its last change.
async fn commit_groups(
    folder: &ServerFolderHandle,
    hello: &Hello,
    mut staged: mpsc::Receiver<Slot>,
    out: &mpsc::Sender<ServerMsg>,
) -> Result<()> {
    // The outcomes of the push being answered, so far.
    let mut outcomes = Vec::new();
    while let Some(first) = staged.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match staged.try_recv() {
                Ok(slot) => group.push(slot),
                Err(_) => break,
            }
        }
        let ends: Vec<(u64, bool, bool, Instant)> = group
            .iter()
            .map(|s| (s.id, s.last, s.staged.is_some(), s.arrived))
            .collect();
        let mut committed = commit_group(folder, hello, group.into_iter().filter_map(|s| s.staged))
            .await?
            .into_iter();
        for (id, last, change, arrived) in ends {
            if change {
                outcomes.push(committed.next().unwrap_or(PushOutcome::Failed {
                    reason: "the server lost track of this change; it is retried".into(),
                }));
            }
            if last {
                metrics::recorded::pushed(arrived.elapsed());
                let outcomes = std::mem::take(&mut outcomes);
                out.send(ServerMsg::PushResult { id, outcomes }).await?;
            }
        }
    }
    Ok(())
}

/// Commits a group of staged changes: their files made durable together (barrier D; a
/// file whose fsync fails is settled as failed), then one request to the sequencer.
/// Their outcomes, in order.
async fn commit_group(
    folder: &ServerFolderHandle,
    hello: &Hello,
    group: impl Iterator<Item = Staged>,
) -> Result<Vec<PushOutcome>> {
    let mut settled = Vec::new();
    // The pushes' charges against quota and free space, held until they are committed.
    let mut charged = Vec::new();
    let mut sealed = Vec::new();
    // Each change left for the sequencer, with its slot and where its content stands.
    let mut waiting = Vec::new();
    for staged in group {
        match staged {
            Ok((change, content, charge)) => {
                let content = match content {
                    None => Waiting::Nothing,
                    Some(Content::Sealed(s)) => {
                        sealed.push(*s);
                        Waiting::InBarrier
                    }
                    #[cfg(unix)]
                    Some(Content::Stored(small)) => Waiting::Ready(Landed::Stored(small)),
                };
                waiting.push((settled.len(), change, content));
                charged.extend(charge);
                settled.push(None);
            }
            Err(outcome) => settled.push(Some(outcome)),
        }
    }
    let files = sealed.len();
    let mut durable = tokio::task::spawn_blocking(move || durable::data_barrier(sealed))
        .await
        .context("the fsync of staged files stopped")?
        .into_iter();
    let mut ready = Vec::with_capacity(waiting.len());
    for (slot, change, content) in waiting {
        let content = match content {
            Waiting::Nothing => None,
            #[cfg(unix)]
            Waiting::Ready(landed) => Some(landed),
            Waiting::InBarrier => match durable.next() {
                Some(Ok(prepared)) => Some(Landed::Prepared(Box::new(prepared))),
                Some(Err(e)) => {
                    tracing::warn!(folder = %folder.name, path = %change.entry.path, "cannot make a pushed file durable: {e:#}");
                    settled[slot] = Some(PushOutcome::Failed {
                        reason: refusal(&e),
                    });
                    continue;
                }
                None => None,
            },
        };
        ready.push((change, content));
    }
    CrashPoint::AfterDataBarrier.reached(files);
    let mut committed = if ready.is_empty() {
        Vec::new()
    } else {
        let outcomes = folder.commit(ready, hello.device.clone()).await?;
        let accepted = outcomes
            .iter()
            .filter(|o| matches!(o, PushOutcome::Accepted { .. }))
            .count();
        metrics::recorded::committed(
            folder.account.as_str(),
            folder.name.as_str(),
            accepted as u64,
        );
        outcomes
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
    index: &FolderReader,
    change: Change,
    out: &mpsc::Sender<ServerMsg>,
    pending: &Pending,
) -> Staged {
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
    let current = index.current(&change.entry.path).await.map_err(failed)?;
    let same = current
        .as_ref()
        .is_some_and(|c| c.same_content(&change.entry));
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
        return Ok((change, None, None));
    }
    // Charged at its declared size before anything is written: what the blocks repeat
    // or the server already has is written in full all the same, only zero blocks stay
    // holes (so the free-space check leaves them out).
    let replaced = current
        .filter(|c| !c.deleted && c.kind == EntryKind::File)
        .map_or(0, |c| c.size);
    let charge = folder
        .quotas
        .reserve(
            &folder.account,
            &folder.name,
            &change.entry.path,
            change.entry.size,
            chunk::stored_size(&change.entry.blocks),
            replaced,
        )
        .map_err(|reason| PushOutcome::Failed { reason })?;
    let staged = stage(folder, index, &change, data, out, pending)
        .await
        .map_err(|e| {
            tracing::warn!(folder = %folder.name, path = %change.entry.path, "cannot stage a pushed change: {e:#}");
            failed(e)
        })?;
    Ok((change, Some(staged), Some(charge)))
}

/// Builds the pushed file's content in a temp file beside its target: from `data`, the
/// content the device sent inline, checked before it is written; else from what an
/// interrupted upload of it left, blocks the server already has, the rest asked of the
/// device, several at a time. It is verified and sealed here, several files at once;
/// the group's barrier D makes it durable, so that the sequencer only has to rename it.
/// A cluster folder stores the content in the bucket instead
/// ([`crate::server::cluster::serve::ClusterFolder::store_pushed`]).
async fn stage(
    folder: &ServerFolderHandle,
    index: &FolderReader,
    change: &Change,
    data: Option<Vec<u8>>,
    out: &mpsc::Sender<ServerMsg>,
    pending: &Pending,
) -> Result<Content> {
    let entry = &change.entry;
    let root = match &folder.store {
        FolderStore::Embedded { root, .. } => Root::open_folder(root)?,
        #[cfg(unix)]
        FolderStore::Cluster(c) => {
            let small = c
                .store_pushed(entry, data, |request| request_block(out, pending, request))
                .await?;
            return Ok(Content::Stored(small));
        }
    };
    let tmp = match data {
        Some(data) => transfer::from_sent(root, entry, data).await?,
        None => {
            tracing::debug!(folder = %folder.name, path = %entry.path, "staging a pushed file from blocks");
            transfer::assemble(&root, index.index(), entry, |request| {
                request_block(out, pending, request)
            })
            .await?
        }
    }
    .tmp;
    Ok(Content::Sealed(Box::new(transfer::seal(tmp, entry).await?)))
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
