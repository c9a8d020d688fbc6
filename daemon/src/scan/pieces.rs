//! A full scan handed over in pieces while it walks, so that what it found first can be
//! recorded and pushed while the rest of the folder is still walked and hashed.
//!
//! A piece holds only what the end of the walk cannot change: new and changed paths
//! and refreshed rows, with the content kept for them. Two things wait for the end:
//! every delete (a path is gone only once the whole walk has not seen it, so a path
//! not walked yet is never taken for deleted), and what lies at or below a new
//! directory that may be a renamed one (one with the inode of an indexed directory
//! the server knows), which [`Scanner::pair_renames`] may still turn into a move.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use filesync_proto::wire::EntryKind;
use filesync_proto::{DeviceId, RelPath};

use super::{Known, ScanOutcome, Scanner, Scope};
use crate::fs::ignore::IgnoreRules;
use crate::index::{Index, LocalRow};

/// Rows found that make a piece at once: one index transaction each.
const PIECE_ROWS: usize = 1000;
/// The longest the rows found wait before they go as a piece, however few.
const PIECE_EVERY: Duration = Duration::from_millis(500);

/// Takes each piece; false when nobody takes them any more, which stops the scan.
pub type Sink<'a> = &'a mut dyn FnMut(ScanOutcome) -> bool;

/// A scan's hand-over of pieces.
pub(super) struct Stream<'a> {
    sink: Sink<'a>,
    /// When the last piece went (or the scan began).
    last: Instant,
    /// Inodes of the indexed live directories a rename may be paired with.
    renamable: HashSet<u64>,
    /// New directories with one of those inodes: what is found at or below them waits
    /// for the end of the walk.
    pairable: Vec<RelPath>,
    /// Changes kept back for the end, below a `pairable` directory.
    held: Vec<LocalRow>,
    /// The sink took no more: the walk ends and the scan fails.
    stopped: bool,
}

impl<'a> Stream<'a> {
    pub(super) fn new(sink: Sink<'a>, known: &HashMap<RelPath, Known>) -> Stream<'a> {
        let renamable = known
            .values()
            .filter(|k| !k.row.deleted && k.row.stat.kind == EntryKind::Dir && k.row.shared)
            .map(|k| k.row.stat.inode)
            .collect();
        Stream {
            sink,
            last: Instant::now(),
            renamable,
            pairable: Vec::new(),
            held: Vec::new(),
            stopped: false,
        }
    }
}

/// Scans the whole folder at `root` against `index` as [`super::scan_keeping`] does,
/// handing `sink` a piece every PIECE_ROWS rows found or PIECE_EVERY, whichever comes
/// first. Returns the rest: what was found since the last piece, what was held back,
/// the deletes, the paths to forget, the unsyncable ones, and the totals of the whole
/// scan. Fails when `sink` takes no more.
pub fn scan_streaming(
    root: &Path,
    index: &Index,
    origin: &DeviceId,
    rules: &IgnoreRules,
    keep: usize,
    sink: Sink<'_>,
) -> Result<ScanOutcome> {
    super::scan_keeping(root, index, &Scope::All, origin, rules, keep, Some(sink))
}

impl Scanner<'_> {
    /// Whether the sink took no more pieces: the walk stops.
    pub(super) fn stopped(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.stopped)
    }

    /// A new directory at `path` with `inode`: if an indexed directory the server
    /// knows has that inode, it may be that one renamed, and what is found below it
    /// waits for the end.
    pub(super) fn note_new_dir(&mut self, inode: u64, path: &RelPath) {
        if let Some(stream) = &mut self.stream
            && stream.renamable.contains(&inode)
        {
            stream.pairable.push(path.clone());
        }
    }

    /// Hands over what was found when enough is, or it waited long enough: then even
    /// nothing, so that a scan nobody waits for any more stops.
    pub(super) fn maybe_piece(&mut self) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        let found = self.out.changes.len() + self.out.refreshed.len();
        if found < PIECE_ROWS && stream.last.elapsed() < PIECE_EVERY {
            return;
        }
        let (held, changes): (Vec<LocalRow>, Vec<LocalRow>) = std::mem::take(&mut self.out.changes)
            .into_iter()
            .partition(|r| stream.pairable.iter().any(|d| r.entry.path.starts_with(d)));
        stream.held.extend(held);
        let piece = ScanOutcome {
            changes,
            refreshed: std::mem::take(&mut self.out.refreshed),
            contents: std::mem::take(&mut self.out.contents),
            ..ScanOutcome::default()
        };
        stream.last = Instant::now();
        if !(stream.sink)(piece) {
            stream.stopped = true;
        }
    }

    /// After the walk: what was held back joins the rest for the renames and deletes,
    /// unless the scan was stopped.
    pub(super) fn end_pieces(&mut self) -> Result<()> {
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        if stream.stopped {
            bail!("the scan of {} was stopped", self.root.display());
        }
        let mut held = std::mem::take(&mut stream.held);
        held.append(&mut self.out.changes);
        self.out.changes = held;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::tests::Fixture;
    use super::*;

    /// Runs a streaming scan and records it as the client does: each piece, then the
    /// rest. Returns the pieces and the rest.
    fn stream(f: &Fixture) -> (Vec<ScanOutcome>, ScanOutcome) {
        let mut pieces = Vec::new();
        let mut sink = |piece: ScanOutcome| {
            for row in piece.changes.iter().chain(&piece.refreshed) {
                f.index.put_local(row).unwrap();
            }
            pieces.push(piece);
            true
        };
        let rest = scan_streaming(&f.root(), &f.index, &f.origin, &f.rules, 0, &mut sink).unwrap();
        for row in rest.changes.iter().chain(&rest.refreshed) {
            f.index.put_local(row).unwrap();
        }
        for path in &rest.forget {
            f.index.remove_local(path).unwrap();
        }
        (pieces, rest)
    }

    fn paths(rows: &[LocalRow], deleted: bool) -> Vec<String> {
        let mut paths: Vec<String> = (rows.iter())
            .filter(|r| r.entry.deleted == deleted)
            .map(|r| r.entry.path.to_string())
            .collect();
        paths.sort();
        paths
    }

    fn write_many(f: &Fixture, dir: &str, n: usize) {
        fs::create_dir_all(f.root().join(dir)).unwrap();
        for i in 0..n {
            fs::write(f.root().join(format!("{dir}/f{i}")), i.to_string()).unwrap();
        }
    }

    /// A big first scan goes in pieces of new rows; nothing is a delete before the end,
    /// and the pieces and the rest together are the whole folder, once each.
    #[test]
    fn a_big_scan_comes_in_pieces_and_only_its_end_deletes() {
        let f = Fixture::new();
        write_many(&f, "old", 50);
        f.scan(&Scope::All);
        fs::remove_file(f.root().join("old/f7")).unwrap();
        write_many(&f, "new", PIECE_ROWS * 3 + 10);
        let (pieces, rest) = stream(&f);
        assert!(pieces.len() >= 2, "{} pieces", pieces.len());
        let mut found = Vec::new();
        for piece in &pieces {
            assert!(
                paths(&piece.changes, true).is_empty(),
                "a delete came before the end of the walk"
            );
            found.extend(paths(&piece.changes, false));
        }
        assert_eq!(paths(&rest.changes, true), ["old/f7"]);
        found.extend(paths(&rest.changes, false));
        found.sort();
        let mut expected: Vec<String> = (0..PIECE_ROWS * 3 + 10)
            .map(|i| format!("new/f{i}"))
            .chain(["new".to_string()])
            .collect();
        expected.sort();
        assert_eq!(found, expected);
        assert_eq!(rest.hashed_files, (PIECE_ROWS * 3 + 10) as u64);
        assert!(f.scan(&Scope::All).is_empty(), "everything was recorded");
    }

    /// While the walk has not reached a path, nothing recorded says it is gone: every
    /// indexed path is still live in the index when each piece is handed over.
    #[test]
    fn no_path_is_taken_for_deleted_before_the_walk_is_done() {
        let f = Fixture::new();
        write_many(&f, "a", 200);
        write_many(&f, "z", 200);
        f.scan(&Scope::All);
        write_many(&f, "m", PIECE_ROWS * 3);
        let mut pieces = 0;
        let mut sink = |piece: ScanOutcome| {
            for row in &piece.changes {
                assert!(!row.entry.deleted, "{} deleted mid-walk", row.entry.path);
                f.index.put_local(row).unwrap();
            }
            pieces += 1;
            true
        };
        let rest = scan_streaming(&f.root(), &f.index, &f.origin, &f.rules, 0, &mut sink).unwrap();
        assert!(pieces >= 2);
        assert!(paths(&rest.changes, true).is_empty(), "nothing was deleted");
    }

    /// A big directory renamed is still one rename in a streaming scan: what is found
    /// below its new path, pieces' worth of it, waits for the end, where it is paired
    /// with the old path; nothing is deleted and nothing is sent again.
    #[test]
    fn a_renamed_directory_waits_for_the_end_and_is_paired() {
        let f = Fixture::new();
        write_many(&f, "old", PIECE_ROWS * 3);
        f.scan(&Scope::All);
        for (_, mut row) in f.index.all_local().unwrap() {
            row.entry.seq = 7;
            row.dirty = false;
            f.index.put_local(&row).unwrap();
        }
        fs::rename(f.root().join("old"), f.root().join("renamed")).unwrap();
        let (pieces, rest) = stream(&f);
        assert!(!pieces.is_empty());
        for piece in &pieces {
            let early = paths(&piece.changes, false);
            assert!(early.is_empty(), "{} sent early", early.len());
        }
        assert_eq!(paths(&rest.changes, false), ["renamed"], "one change");
        assert!(paths(&rest.changes, true).is_empty(), "no delete");
        let p = RelPath::new("renamed/f3").unwrap();
        let moved = f.index.local(&p).unwrap().unwrap();
        assert_eq!((moved.entry.seq, moved.dirty), (7, false), "moved, not new");
    }

    /// A sink that takes no more stops the walk, and the scan fails without its end.
    #[test]
    fn a_sink_that_takes_no_more_stops_the_scan() {
        let f = Fixture::new();
        write_many(&f, "d", PIECE_ROWS * 3);
        let mut calls = 0;
        let mut sink = |_| {
            calls += 1;
            false
        };
        let err =
            scan_streaming(&f.root(), &f.index, &f.origin, &f.rules, 0, &mut sink).unwrap_err();
        assert!(err.to_string().contains("stopped"), "{err}");
        assert_eq!(calls, 1);
    }
}
