//! Landing what a pull receives: each entry received ([`receive_entry`]: a directory or
//! symlink made, a file's content whole or from blocks into a sealed temp file), then a
//! group of them made durable, renamed in and recorded by the caller ([`land_group`],
//! through [`crate::fs::durable`]'s barriers).

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use filesync_proto::wire::{Entry, EntryKind};

use super::partials::Partials;
use crate::client::session::SessionHandle;
use crate::conn::Counters;
use crate::fs::beneath::Root;
use crate::fs::durable::{self, CrashPoint, DirBarrier, DirKey};
use crate::fs::partial::Partial;
use crate::fs::stat::Stat;
use crate::fs::temp::{Sealed, TempFile};
use crate::fs::tree;
use crate::index::{Index, LocalRow};
use crate::scan;
use crate::transfer;

/// A server entry received here, its file not renamed in yet.
// A sealed temp file is a few bytes over the lint's limit on Windows (wider handles and
// paths), where it is moved as often as on Unix: once per entry.
#[cfg_attr(windows, allow(clippy::large_enum_variant))]
pub(super) enum Received {
    /// Done in place: a directory or symlink made, or a local file that already held
    /// the content given its mode and mtime.
    Meta(Stat),
    /// Its content, verified and sealed in a temp file.
    Sealed(Sealed),
}

/// Receives a live entry: a directory or symlink is made at once (a path whose parent is
/// a symlink or a file here is refused), a file's content goes into a sealed temp file,
/// unless the local file already holds it (a change of mode or mtime only), which is
/// then applied in place. `content` is a file's whole content, when it came whole (or
/// why it could not).
pub(super) async fn receive_entry(
    root: &Root,
    index: &Index,
    session: &SessionHandle,
    entry: &Entry,
    content: Option<Result<Vec<u8>>>,
    counters: &Arc<Counters>,
    partials: &Partials,
) -> Result<Received> {
    match entry.kind {
        EntryKind::Dir => return tree::make_dir(root, entry).map(Received::Meta),
        EntryKind::Symlink => return tree::make_symlink(root, entry).map(Received::Meta),
        EntryKind::File if same_file_content(index, entry)? => {
            return tree::set_file_meta(root, entry).map(Received::Meta);
        }
        EntryKind::File => {}
    }
    let tmp = fetch_file(root, index, session, entry, content, counters, partials).await?;
    transfer::seal(tmp, entry).await.map(Received::Sealed)
}

/// Whether the local file at the entry's path already holds its content (a change of
/// mode or mtime only). The caller checked that the disk matches the index.
pub(super) fn same_file_content(index: &Index, entry: &Entry) -> Result<bool> {
    Ok(index.local(&entry.path)?.is_some_and(|l| {
        !l.entry.deleted && l.entry.kind == EntryKind::File && l.entry.hash == entry.hash
    }))
}

/// Where a file's content comes from: whole (`content`), else assembled block by block,
/// into a temp file.
async fn fetch_file(
    root: &Root,
    index: &Index,
    session: &SessionHandle,
    entry: &Entry,
    content: Option<Result<Vec<u8>>>,
    counters: &Arc<Counters>,
    partials: &Partials,
) -> Result<TempFile> {
    let assembled = match content {
        Some(data) => {
            let data = data?;
            let (root, entry) = (root.try_clone()?, entry.clone());
            tokio::task::spawn_blocking(move || transfer::from_bytes(&root, &entry, &data))
                .await
                .context("the write of a received file stopped")??
        }
        None => {
            if entry.size >= transfer::RESUMABLE_SIZE {
                partials.note(Partial::of(&entry.path));
                partials.note(Partial::in_root(&entry.path));
            }
            tracing::debug!(path = %entry.path, size = entry.size, "downloading by blocks");
            transfer::assemble(root, Some(index), entry, |request| {
                session.request_block(request)
            })
            .await?
        }
    };
    Counters::add(&counters.content_reused, assembled.reused);
    Ok(assembled.tmp)
}

/// A server entry received here, with the local row its pull was decided on.
pub(super) struct Landing {
    pub entry: Entry,
    /// The local row when the pull was decided: the disk must still show it at the
    /// rename (a conflict copy moved to this path since then must not be replaced).
    pub decided_on: Option<LocalRow>,
    pub received: Result<Received>,
}

/// Lands a group of received files: barrier D over the sealed ones, then each renamed in
/// right after [`check_unchanged`], then barrier M over their directories. Each file's
/// outcome, in order; nothing is recorded here.
pub(super) async fn land_group(
    root: &Root,
    index: &Index,
    received: Vec<Landing>,
) -> Result<Vec<(Entry, Result<Stat>)>> {
    let mut sealed = Vec::new();
    let received: Vec<(Entry, Option<LocalRow>, Result<Option<Stat>>)> = received
        .into_iter()
        .map(|landing| {
            let r = landing.received.map(|r| match r {
                Received::Meta(stat) => Some(stat),
                Received::Sealed(s) => {
                    sealed.push(s);
                    None
                }
            });
            (landing.entry, landing.decided_on, r)
        })
        .collect();
    let files = sealed.len();
    let mut durable = tokio::task::spawn_blocking(move || durable::data_barrier(sealed))
        .await
        .context("the fsync of received files stopped")?
        .into_iter();
    CrashPoint::AfterDataBarrier.reached(files);
    let mut barrier = DirBarrier::default();
    let mut renamed = 0;
    let landed: Vec<(Entry, Result<Stat>, Vec<DirKey>)> = received
        .into_iter()
        .map(|(entry, decided_on, r)| {
            let landed = match r {
                Err(e) => Err(e),
                Ok(Some(stat)) => Ok((stat, Vec::new())),
                Ok(None) => durable
                    .next()
                    .context("a received file went missing before its rename")
                    .and_then(|prepared| {
                        let prepared = prepared?;
                        let live = check_unchanged(root, index, &entry, decided_on.as_ref())?;
                        let done = if live {
                            prepared.rename(root, &entry.path)?
                        } else {
                            prepared.rename_new(root, &entry.path)?
                        };
                        renamed += 1;
                        Ok((done.stat, barrier.add_all(done.dirs)?))
                    }),
            };
            match landed {
                Ok((stat, keys)) => (entry, Ok(stat), keys),
                Err(e) => (entry, Err(e), Vec::new()),
            }
        })
        .collect();
    CrashPoint::AfterRenames.reached(renamed);
    let failures = tokio::task::spawn_blocking(move || barrier.sync())
        .await
        .context("the fsync of directories stopped")?;
    CrashPoint::AfterDirBarrier.reached(renamed);
    Ok(landed
        .into_iter()
        .map(|(entry, r, keys)| match failures.failed(&keys) {
            Some(why) => (entry, Err(anyhow!("{why}"))),
            None => (entry, r),
        })
        .collect())
}

/// The download took a while: if the user wrote the path meanwhile, that file is theirs
/// and must not be replaced. Giving up here lets the scan take it in as a local change,
/// which then meets this version as an ordinary conflict. Called right before the rename.
///
/// The disk must still show both the row the pull was decided on and the row the index
/// holds now: they differ when something was recorded at the path since the decision,
/// such as a conflict copy of another path moved here under the same name. Whether
/// either row has something there: if not, the rename must not replace a file the user
/// makes between this look and the rename ([`Prepared::rename_new`](crate::fs::temp::Prepared::rename_new)).
fn check_unchanged(
    root: &Root,
    index: &Index,
    entry: &Entry,
    decided_on: Option<&LocalRow>,
) -> Result<bool> {
    let now = index.local(&entry.path)?;
    let rows = [decided_on, now.as_ref()];
    if !scan::unchanged_since(root, &entry.path, &rows)? {
        bail!(
            "{} changed here while its new version was downloading; both are kept",
            entry.path
        );
    }
    Ok(rows.iter().flatten().any(|row| !row.entry.deleted))
}

#[cfg(test)]
mod tests {
    use filesync_proto::{DeviceId, Hash, RelPath};

    use super::*;
    use crate::fs::stat;

    /// A file entry at `path` as the disk shows it in `root`, or an arbitrary one when
    /// nothing is there, and the inode.
    fn entry_at(root: &Root, path: &RelPath) -> (Entry, u64) {
        let st = stat::stat(root, path).unwrap();
        let entry = Entry {
            path: path.clone(),
            kind: EntryKind::File,
            deleted: false,
            size: st.as_ref().map_or(3, |s| s.size),
            mtime_ns: st.as_ref().map_or(1, |s| s.mtime_ns),
            mode: st.as_ref().map_or(0o644, |s| s.mode),
            hash: Hash([1; 32]),
            blocks: Vec::new(),
            target: String::new(),
            seq: 7,
            origin: DeviceId::new("other").unwrap(),
            conflict: None,
            renamed_from: None,
        };
        (entry, st.map_or(0, |s| s.inode))
    }

    /// A pull decided while nothing was at the path must not land once something was
    /// recorded there since (a conflict copy of another path moved in under the same
    /// name), even though the disk matches what the index holds now; decided on that
    /// row, it lands, and says a live row is replaced.
    #[test]
    fn a_row_recorded_since_the_decision_stops_the_landing() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir(&root_path).unwrap();
        let root = Root::open(&root_path).unwrap();
        let index = Index::open(&dir.path().join("index.db")).unwrap();
        let path = RelPath::new("copy.txt").unwrap();
        let (incoming, _) = entry_at(&root, &path);
        assert!(!check_unchanged(&root, &index, &incoming, None).unwrap());

        std::fs::write(root_path.join("copy.txt"), b"mine").unwrap();
        let (mine, inode) = entry_at(&root, &path);
        let row = LocalRow {
            entry: mine,
            inode,
            dirty: true,
        };
        index.put_local(&row).unwrap();
        let err = check_unchanged(&root, &index, &incoming, None).unwrap_err();
        assert!(err.to_string().contains("changed here"), "{err:#}");
        assert!(check_unchanged(&root, &index, &incoming, Some(&row)).unwrap());
    }
}
