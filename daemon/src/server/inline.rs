//! Small files' whole content for a device, read off the async threads beneath the
//! folder root: attached to the index stream's batches ([`attach`]) and in answer to a
//! device's `Fetch` ([`answer_fetch`]). What is read is checked against the version it
//! is sent for (size and hash), so a file changed or gone since goes without content.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use filesync_proto::wire::{
    BlockError, Entry, EntryKind, FETCH_MAX_FILES, FetchedFile, INLINE_BUDGET, INLINE_MAX, Inline,
    ServerMsg, Want,
};
use filesync_proto::{DeviceId, Hash, RelPath};
use tokio::sync::mpsc;

use crate::fs::beneath::Root;
use crate::fs::{is_reserved, tree};
use crate::index::Index;

/// Adds to each `Index` batch of `messages` the content of its small live files, except
/// those `device` made (it has them), up to [`INLINE_BUDGET`] bytes per message. One
/// blocking job for all of `messages`.
pub async fn attach(
    root: PathBuf,
    device: DeviceId,
    mut messages: Vec<ServerMsg>,
) -> Result<Vec<ServerMsg>> {
    if !any_worth_sending(&messages, &device) {
        return Ok(messages);
    }
    tokio::task::spawn_blocking(move || {
        let root = Root::open_folder(&root)?;
        for msg in &mut messages {
            if let ServerMsg::Index {
                entries, inline, ..
            } = msg
            {
                *inline = read_batch(&root, &device, entries);
            }
        }
        Ok(messages)
    })
    .await?
}

/// Whether `entry`'s content goes with it to `device`: a live, non-empty file small
/// enough, made by another device.
fn worth_sending(entry: &Entry, device: &DeviceId) -> bool {
    entry.kind == EntryKind::File
        && !entry.deleted
        && entry.size > 0
        && entry.size <= INLINE_MAX
        && entry.origin != *device
}

/// The content of the entries worth sending, in order, while the budget lasts; an
/// entry whose file no longer holds its version is left out.
fn read_batch(root: &Root, device: &DeviceId, entries: &[Entry]) -> Vec<Inline> {
    to_attach(entries, device)
        .into_iter()
        .filter_map(|i| {
            let entry = &entries[i];
            let data = read_current(root, &entry.path, entry.size, &entry.hash)?;
            Some(Inline {
                entry: i as u32,
                data,
            })
        })
        .collect()
}

/// The entries of a batch whose content goes with it to `device`, in order, while
/// [`INLINE_BUDGET`] lasts (counted at their sizes: a file that turns out not to hold
/// its version any more goes without, and its share of the budget unused).
pub fn to_attach(entries: &[Entry], device: &DeviceId) -> Vec<usize> {
    let mut budget = INLINE_BUDGET;
    let mut chosen = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if worth_sending(entry, device) && entry.size as usize <= budget {
            budget -= entry.size as usize;
            chosen.push(i);
        }
    }
    chosen
}

/// Whether any batch of `messages` has content worth attaching for `device`.
pub fn any_worth_sending(messages: &[ServerMsg], device: &DeviceId) -> bool {
    messages.iter().any(|m| {
        matches!(m, ServerMsg::Index { entries, .. } if entries.iter().any(|e| worth_sending(e, device)))
    })
}

/// The whole content of the small file at `path`, if it still is `size` bytes hashing
/// to `hash`; never a reserved name, never through a symlink.
fn read_current(root: &Root, path: &RelPath, size: u64, hash: &Hash) -> Option<Vec<u8>> {
    if path.components().any(is_reserved) {
        return None;
    }
    tree::read_version(root, path, size, hash).ok().flatten()
}

/// Checks a device's `Fetch` against the protocol's limits: an error ends the
/// connection (an honest device never asks for more).
pub fn check_fetch(files: &[Want]) -> Result<()> {
    if files.len() > FETCH_MAX_FILES {
        bail!(
            "protocol error: a Fetch of {} files is over the limit of {FETCH_MAX_FILES}",
            files.len()
        );
    }
    if let Some(big) = files.iter().find(|w| w.size > INLINE_MAX) {
        bail!(
            "protocol error: a Fetch asks for {} of {} bytes, over the inline limit of {INLINE_MAX}",
            big.path,
            big.size
        );
    }
    let total: u64 = files.iter().map(|w| w.size).sum();
    if total > INLINE_BUDGET as u64 {
        bail!("protocol error: a Fetch of {total} bytes is over the limit of {INLINE_BUDGET}");
    }
    Ok(())
}

/// Answers a checked `Fetch` in the background: every file read in one blocking job,
/// from the folder's current live versions only. A file whose version is not the one
/// asked for (replaced, deleted, never there) or whose content changed on disk is
/// [`BlockError::NotAvailable`]; a reserved name is refused.
pub fn answer_fetch(
    index: Arc<Index>,
    root: PathBuf,
    id: u64,
    files: Vec<Want>,
    out: mpsc::Sender<ServerMsg>,
) {
    tokio::spawn(async move {
        let read = tokio::task::spawn_blocking(move || {
            let root = Root::open(&root).ok();
            files
                .iter()
                .map(|want| FetchedFile {
                    result: read_wanted(&index, root.as_ref(), want),
                })
                .collect::<Vec<_>>()
        })
        .await;
        match read {
            Ok(files) => {
                let _ = out.send(ServerMsg::Fetched { id, files }).await;
            }
            Err(e) => tracing::warn!("cannot answer a device's Fetch: {e}"),
        }
    });
}

fn read_wanted(index: &Index, root: Option<&Root>, want: &Want) -> Result<Vec<u8>, BlockError> {
    let current = match index.local(&want.path) {
        Ok(row) => row.map(|r| r.entry),
        Err(e) => {
            tracing::warn!(path = %want.path, "cannot read the index to answer a Fetch: {e:#}");
            None
        }
    };
    check_wanted(want, current.as_ref())?;
    if want.size == 0 {
        return Ok(Vec::new());
    }
    root.and_then(|root| read_current(root, &want.path, want.size, &want.hash))
        .ok_or(BlockError::NotAvailable)
}

/// Refuses a `Fetch` of a reserved name, and of anything but the folder's `current`
/// live version of the path.
pub fn check_wanted(want: &Want, current: Option<&Entry>) -> Result<(), BlockError> {
    if want.path.components().any(is_reserved) {
        return Err(BlockError::Refused(format!(
            "{} is not a synced path",
            want.path
        )));
    }
    let listed = current.is_some_and(|e| {
        e.kind == EntryKind::File && !e.deleted && e.size == want.size && e.hash == want.hash
    });
    if !listed {
        tracing::debug!(path = %want.path, "a device fetched a version that is not the live one here");
        return Err(BlockError::NotAvailable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::chunk::tests::pseudo_random;
    use crate::fs::temp::tests::entry_for;

    #[test]
    fn a_batch_carries_what_others_made_and_still_holds_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let (me, other) = (
            DeviceId::new("me").unwrap(),
            DeviceId::new("other").unwrap(),
        );
        let mut entries = Vec::new();
        let mut add = |name: &str, content: &[u8], origin: &DeviceId, on_disk: &[u8]| {
            std::fs::write(dir.path().join(name), on_disk).unwrap();
            let mut e = entry_for(name, content);
            e.origin = origin.clone();
            entries.push(e);
        };
        let small = pseudo_random(1000, 1);
        let big = pseudo_random(INLINE_MAX as usize + 1, 2);
        add("mine", &small, &me, &small);
        add("theirs", &small, &other, &small);
        add("changed", &small, &other, b"changed since");
        add("big", &big, &other, &big);
        add("empty", b"", &other, b"");
        let inline = read_batch(&root, &me, &entries);
        assert_eq!(
            inline,
            [Inline {
                entry: 1,
                data: small.clone()
            }]
        );

        let piece = pseudo_random(INLINE_MAX as usize, 3);
        let many: Vec<Entry> = (0..INLINE_BUDGET / piece.len() + 3)
            .map(|i| {
                let name = format!("f{i}");
                std::fs::write(dir.path().join(&name), &piece).unwrap();
                let mut e = entry_for(&name, &piece);
                e.origin = other.clone();
                e
            })
            .collect();
        let inline = read_batch(&root, &me, &many);
        assert_eq!(
            inline.len(),
            INLINE_BUDGET / piece.len(),
            "within the budget"
        );
    }

    #[test]
    fn a_fetch_past_the_limits_is_a_protocol_error() {
        let want = |size: u64| Want {
            path: RelPath::new("f").unwrap(),
            hash: Hash([0; 32]),
            size,
        };
        assert!(check_fetch(&vec![want(1); FETCH_MAX_FILES]).is_ok());
        let refused = [
            vec![want(1); FETCH_MAX_FILES + 1],
            vec![want(INLINE_MAX + 1)],
            vec![want(INLINE_MAX); INLINE_BUDGET / INLINE_MAX as usize + 1],
        ];
        for files in refused {
            let err = check_fetch(&files).unwrap_err();
            assert!(format!("{err:#}").contains("protocol error"), "{err:#}");
        }
    }
}
