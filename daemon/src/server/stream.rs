//! A device's index stream: every version it has not seen, then each new one as it is
//! committed.
//!
//! Entries keep their sequence numbers when a directory rename moves them, and the
//! stream sends each at its path as of when it was read. So a device must apply every
//! rename committed up to that read before it takes the entries in: otherwise it cannot
//! tell an entry that was below a renamed directory when the rename happened from one a
//! later rename moved there (and moving that one too made it expect a file the server
//! never had there). Each batch therefore goes out after the rename records it depends
//! on, and says up to which sequence number it was read (`as_of`).
//!
//! A batch also carries the content of its small files, except to the device that
//! made them ([`super::inline::attach`]).

use anyhow::Result;
use filesync_proto::DeviceId;
use filesync_proto::wire::{Entry, MAX_BATCH, ServerMsg};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::sequencer::ServerFolderHandle;
use super::store::FolderReader;
use crate::conn;

/// Index bytes per message to a device.
const INDEX_BYTES: usize = 4 * 1024 * 1024;
/// Entries read per batch.
const READ_BATCH: usize = 1000;

/// Sends every version above `since`, then follows the folder's sequence; the stream
/// goes to `device`.
pub async fn run(
    folder: ServerFolderHandle,
    device: DeviceId,
    since: u64,
    out: mpsc::Sender<ServerMsg>,
    cancel: CancellationToken,
) -> Result<()> {
    let store = FolderReader::open(&folder.store)?;
    let mut seq = folder.seq.clone();
    let mut cursor = Cursor::new(since);
    loop {
        let (messages, more) = cursor.next(&store).await?;
        let messages = store.attach(device.clone(), messages).await?;
        for msg in messages {
            out.send(msg).await?;
        }
        if !more {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = seq.changed() => r?,
            }
        }
    }
}

/// Where one connection's index stream stands.
pub struct Cursor {
    /// The highest sequence number of the entries sent.
    since: u64,
    /// The highest sequence number up to which rename records were sent.
    renamed: u64,
    /// The device was told it is caught up.
    announced: bool,
}

impl Cursor {
    pub fn new(since: u64) -> Cursor {
        Cursor {
            since,
            renamed: since,
            announced: false,
        }
    }

    /// What to send next: rename records not sent yet, then a batch of entries. The
    /// rename records travel in the entries' message when they fit, so that a device
    /// stores them together and never applies a rename before the entries read with it
    /// (its new parent directory); else first, in batches whose `as_of` is their last
    /// one. True if there may be more to read at once.
    pub async fn next(&mut self, store: &FolderReader) -> Result<(Vec<ServerMsg>, bool)> {
        let read = store
            .stream_read(self.since, self.renamed, READ_BATCH)
            .await?;
        let entries = cut_batch(read.entries, INDEX_BYTES);
        let mut renames = read.renames;
        let mut out = Vec::new();
        if entries.is_empty() || renames.len() + entries.len() > MAX_BATCH {
            out.extend(renames.chunks(MAX_BATCH).map(|chunk| ServerMsg::Index {
                inline: Vec::new(),
                entries: chunk.to_vec(),
                up_to: self.since,
                as_of: chunk.last().map_or(self.renamed, |e| e.seq),
                caught_up: false,
            }));
            renames.clear();
        }
        self.renamed = self.renamed.max(read.as_of);
        let Some(last) = entries.last() else {
            if !self.announced {
                self.announced = true;
                out.push(ServerMsg::Index {
                    inline: Vec::new(),
                    entries,
                    up_to: self.since,
                    as_of: read.as_of,
                    caught_up: true,
                });
            }
            return Ok((out, false));
        };
        self.since = last.seq;
        let caught_up = !store.any_after(self.since).await?;
        self.announced |= caught_up;
        renames.extend(entries);
        out.push(ServerMsg::Index {
            inline: Vec::new(),
            entries: renames,
            up_to: self.since,
            as_of: read.as_of,
            caught_up,
        });
        Ok((out, true))
    }
}

/// Entries for a device, cut so that one message stays well under the frame limit.
fn cut_batch(mut entries: Vec<Entry>, max_bytes: usize) -> Vec<Entry> {
    let mut size = 0usize;
    let mut keep = 0usize;
    for e in &entries {
        size += conn::entry_size(e);
        if keep > 0 && size > max_bytes {
            break;
        }
        keep += 1;
    }
    entries.truncate(keep);
    entries
}
