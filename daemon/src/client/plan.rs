//! What a client does about one path, given its local row and the server's entry.
//!
//! Pure: no I/O, so every case is a unit test. The rule that keeps data safe: a local
//! change the server has not seen is never overwritten or deleted. When both sides
//! changed, the server's version wins the name and the local one is moved to a conflict
//! copy, except that an edit always beats a delete, whichever side made it.

use filesync_proto::RelPath;
use filesync_proto::wire::{Entry, EntryKind};

use crate::index::LocalRow;

pub mod receive_only;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// In sync, or waiting for the server to confirm something.
    Nothing,
    /// Send the local version, based on server version `base`.
    Push { base: u64 },
    /// Make the local replica match the server's entry.
    Pull,
    /// Local already equals the server's version `seq`: just record that.
    MarkSynced { seq: u64 },
    /// Both changed differently: keep the local version as a conflict copy, then pull.
    ConflictThenPull,
    /// A local tombstone for a path the server never had: nothing to tell anyone.
    Forget,
    /// Our directory rename, not sent yet, targets a path the server has history at: it
    /// cannot be one rename there, so it is sent path by path (`renamed_from` is the
    /// source). Never marked synced, or the source's entries would stay held back.
    SplitRename,
}

pub fn decide(local: Option<&LocalRow>, remote: Option<&Entry>) -> Action {
    match (local, remote) {
        (None, None) => Action::Nothing,
        (None, Some(r)) if r.deleted => Action::Nothing,
        (None, Some(_)) => Action::Pull,
        (Some(l), None) if l.entry.deleted => Action::Forget,
        (Some(_), None) => Action::Push { base: 0 },
        (Some(l), Some(_)) if l.dirty && l.entry.renamed_from.is_some() => Action::SplitRename,
        (Some(l), Some(r)) => decide_both(l, r),
    }
}

fn decide_both(l: &LocalRow, r: &Entry) -> Action {
    let base = l.entry.seq;
    if !l.dirty {
        return if base == r.seq {
            Action::Nothing
        } else if base < r.seq {
            Action::Pull
        } else if l.entry.same_content(r) || both_dirs(&l.entry, r) {
            // A directory rename carried an older number to this path: what the server
            // has here now is what we hold (or both say it is gone); only the number is
            // recorded.
            Action::MarkSynced { seq: r.seq }
        } else {
            // The server's entry was read after our version (a rename moved another one
            // here); our copy is one the server had, so nothing of ours is lost.
            Action::Pull
        };
    }
    if l.entry.deleted && r.deleted {
        // Both sides say the path is gone: in sync, whatever the sequence numbers say
        // (a directory rename may have carried a tombstone's number to another path).
        return Action::MarkSynced { seq: r.seq };
    }
    if base == r.seq {
        return Action::Push { base };
    }
    if base > r.seq {
        // Our push was accepted and the server's echo has not arrived yet.
        return Action::Nothing;
    }
    // Both sides changed the path since `base`.
    if l.entry.same_content(r) || (both_dirs(&l.entry, r)) {
        return Action::MarkSynced { seq: r.seq };
    }
    if l.entry.deleted {
        return Action::Pull;
    }
    if r.deleted {
        return Action::Push { base: r.seq };
    }
    Action::ConflictThenPull
}

fn both_dirs(a: &Entry, b: &Entry) -> bool {
    !a.deleted && !b.deleted && a.kind == EntryKind::Dir && b.kind == EntryKind::Dir
}

/// `dir/NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT` for a local version made by
/// `device`, at Unix time `now`.
pub fn conflict_path(path: &RelPath, now_secs: i64, device: &str) -> RelPath {
    let (stem, ext) = stem_and_ext(path.file_name());
    let short: String = device.chars().take(7).collect();
    let new_name = format!("{stem}.sync-conflict-{}-{short}{ext}", format_utc(now_secs));
    let joined = match path.parent() {
        Some(p) => p.join(&new_name),
        None => RelPath::new(new_name.clone()),
    };
    // The stem may have been cut to fit: fall back to a shorter name if too long.
    joined.unwrap_or_else(|_| {
        RelPath::new(format!("sync-conflict-{}-{short}", format_utc(now_secs))).expect("valid name")
    })
}

/// How many conflict copy names (one per second) [`free_conflict_path`] tries.
pub const CONFLICT_NAME_TRIES: i64 = 60;

/// A conflict copy name for `path` made by `device` that `taken` says is free, and the
/// time it names: the first second from `now_secs` on. A second copy of one path made
/// within a second of the first would otherwise get the first one's name, and with it
/// that name's history. `None` if the next [`CONFLICT_NAME_TRIES`] names are all taken.
pub fn free_conflict_path<E>(
    path: &RelPath,
    now_secs: i64,
    device: &str,
    mut taken: impl FnMut(&RelPath) -> Result<bool, E>,
) -> Result<Option<(RelPath, i64)>, E> {
    for at in now_secs..now_secs + CONFLICT_NAME_TRIES {
        let aside = conflict_path(path, at, device);
        if !taken(&aside)? {
            return Ok(Some((aside, at)));
        }
    }
    Ok(None)
}

/// A name's stem and extension (with its dot). A leading dot starts a hidden name, not
/// an extension.
fn stem_and_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// Whether `copy` is a name [`conflict_path`] can give a conflict copy of `original`:
/// beside it with its stem and extension around the conflict mark, or the short name
/// at the top of the folder that a path too long for that gets. A conflict note from a
/// peer that fails this aims `resolve` at some other path, which it must never write.
pub fn is_conflict_copy_of(copy: &RelPath, original: &RelPath) -> bool {
    let mark = |middle: &str| {
        let b = middle.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        b.len() > 16
            && b.len() <= 23
            && digits(0..8)
            && b[8] == b'-'
            && digits(9..15)
            && b[15] == b'-'
    };
    let name = copy.file_name();
    if copy.parent().is_none()
        && let Some(middle) = name.strip_prefix("sync-conflict-")
        && mark(middle)
    {
        return true;
    }
    let (stem, ext) = stem_and_ext(original.file_name());
    copy.parent() == original.parent()
        && (name.strip_prefix(stem))
            .and_then(|rest| rest.strip_prefix(".sync-conflict-"))
            .and_then(|rest| rest.strip_suffix(ext))
            .is_some_and(mark)
}

/// `YYYYMMDD-HHMMSS` in UTC, from days-since-epoch arithmetic (proleptic Gregorian).
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use filesync_proto::{DeviceId, Hash};

    pub(crate) fn entry(seq: u64, content: u8, deleted: bool) -> Entry {
        Entry {
            path: RelPath::new("f.txt").unwrap(),
            kind: EntryKind::File,
            deleted,
            size: 1,
            mtime_ns: 0,
            mode: 0o644,
            hash: Hash([content; 32]),
            blocks: vec![],
            target: String::new(),
            seq,
            origin: DeviceId::new("d").unwrap(),
            conflict: None,
            renamed_from: None,
        }
    }

    pub(crate) fn local(seq: u64, content: u8, deleted: bool, dirty: bool) -> LocalRow {
        LocalRow {
            entry: entry(seq, content, deleted),
            inode: 1,
            dirty,
        }
    }

    #[test]
    fn decisions() {
        use Action::*;
        let check = |l: Option<LocalRow>, r: Option<Entry>, want: Action| {
            assert_eq!(
                decide(l.as_ref(), r.as_ref()),
                want,
                "local {l:?} remote {r:?}"
            );
        };
        check(None, None, Nothing);
        check(None, Some(entry(3, 1, false)), Pull);
        check(None, Some(entry(3, 1, true)), Nothing);
        check(Some(local(0, 1, false, true)), None, Push { base: 0 });
        check(Some(local(0, 1, true, true)), None, Forget);
        let mut renamed = local(0, 1, false, true);
        renamed.entry.renamed_from = Some(RelPath::new("old").unwrap());
        check(Some(renamed.clone()), None, Push { base: 0 });
        check(Some(renamed.clone()), Some(entry(3, 1, true)), SplitRename);
        renamed.dirty = false;
        check(Some(renamed), Some(entry(3, 1, false)), Pull);
        // Clean local: follow the server.
        check(
            Some(local(2, 1, false, false)),
            Some(entry(2, 1, false)),
            Nothing,
        );
        check(
            Some(local(2, 1, false, false)),
            Some(entry(5, 2, false)),
            Pull,
        );
        check(
            Some(local(2, 1, false, false)),
            Some(entry(5, 1, true)),
            Pull,
        );
        // Clean local above the server's number: a rename carried an older entry here.
        check(
            Some(local(9, 1, true, false)),
            Some(entry(5, 2, true)),
            MarkSynced { seq: 5 },
        );
        check(
            Some(local(9, 1, false, false)),
            Some(entry(5, 1, false)),
            MarkSynced { seq: 5 },
        );
        check(
            Some(local(9, 1, false, false)),
            Some(entry(5, 2, false)),
            Pull,
        );
        check(
            Some(local(9, 1, false, false)),
            Some(entry(5, 1, true)),
            Pull,
        );
        // Dirty local on the current base: push it.
        check(
            Some(local(5, 2, false, true)),
            Some(entry(5, 1, false)),
            Push { base: 5 },
        );
        check(
            Some(local(5, 2, true, true)),
            Some(entry(5, 1, false)),
            Push { base: 5 },
        );
        // Both deleted: in sync on any base, even one above the server's number.
        check(
            Some(local(5, 2, true, true)),
            Some(entry(5, 1, true)),
            MarkSynced { seq: 5 },
        );
        check(
            Some(local(9, 2, true, true)),
            Some(entry(5, 1, true)),
            MarkSynced { seq: 5 },
        );
        // Accepted, echo pending.
        check(
            Some(local(7, 2, false, true)),
            Some(entry(5, 1, false)),
            Nothing,
        );
        // Both changed.
        check(
            Some(local(2, 9, false, true)),
            Some(entry(5, 9, false)),
            MarkSynced { seq: 5 },
        );
        check(
            Some(local(2, 1, false, true)),
            Some(entry(5, 2, false)),
            ConflictThenPull,
        );
        check(
            Some(local(2, 1, true, true)),
            Some(entry(5, 2, false)),
            Pull,
        );
        check(
            Some(local(2, 1, false, true)),
            Some(entry(5, 2, true)),
            Push { base: 5 },
        );
        check(
            Some(local(2, 1, true, true)),
            Some(entry(5, 2, true)),
            MarkSynced { seq: 5 },
        );
        // Both created the same path with different content.
        check(
            Some(local(0, 1, false, true)),
            Some(entry(4, 2, false)),
            ConflictThenPull,
        );
    }

    #[test]
    fn conflict_names() {
        let at = 1_790_000_000; // 2026-09-21 14:13:20 UTC
        let check = |path: &str, want: &str| {
            assert_eq!(
                conflict_path(&RelPath::new(path).unwrap(), at, "ABCDEFGHIJ").as_str(),
                want
            );
        };
        check(
            "a/report.txt",
            "a/report.sync-conflict-20260921-141320-ABCDEFG.txt",
        );
        check("Makefile", "Makefile.sync-conflict-20260921-141320-ABCDEFG");
        check(".bashrc", ".bashrc.sync-conflict-20260921-141320-ABCDEFG");
        check("x.tar.gz", "x.tar.sync-conflict-20260921-141320-ABCDEFG.gz");
    }

    #[test]
    fn a_conflict_copy_name_already_known_is_not_given_again() {
        let at = 1_790_000_000;
        let path = RelPath::new("a/report.txt").unwrap();
        let first = conflict_path(&path, at, "ABCDEFGHIJ");
        let second = conflict_path(&path, at + 1, "ABCDEFGHIJ");
        let free = |taken: &[&RelPath]| {
            free_conflict_path(&path, at, "ABCDEFGHIJ", |p| Ok::<_, ()>(taken.contains(&p)))
                .unwrap()
        };
        assert_eq!(free(&[]), Some((first.clone(), at)));
        // Made within the same second as the first copy: the next second's name.
        assert_eq!(free(&[&first]), Some((second.clone(), at + 1)));
        let all: Vec<RelPath> = (at..at + CONFLICT_NAME_TRIES)
            .map(|t| conflict_path(&path, t, "ABCDEFGHIJ"))
            .collect();
        assert_eq!(free(&all.iter().collect::<Vec<_>>()), None);
    }

    #[test]
    fn conflict_copies_are_recognised_beside_their_original_only() {
        let at = 1_790_000_000;
        let p = |s: &str| RelPath::new(s).unwrap();
        for original in [
            "a/report.txt",
            "Makefile",
            ".bashrc",
            "x.tar.gz",
            &"n".repeat(250),
        ] {
            let original = p(original);
            let copy = conflict_path(&original, at, "ABCDEFGHIJ");
            assert!(is_conflict_copy_of(&copy, &original), "{copy}");
        }
        for (copy, original) in [
            (
                "x.sync-conflict-20260101-000000-EVIL.sh",
                ".git/hooks/pre-commit",
            ),
            (
                "b/report.sync-conflict-20260921-141320-ABCDEFG.txt",
                "a/report.txt",
            ),
            (
                "a/report.sync-conflict-2026092-141320-ABCDEFG.txt",
                "a/report.txt",
            ),
            (
                "a/report.sync-conflict-20260921-141320-ABCDEFG.txt",
                "a/other.txt",
            ),
            ("a/report.txt", "a/report.txt"),
            ("a/sync-conflict-20260921-141320-ABCDEFG", "a/report.txt"),
        ] {
            assert!(
                !is_conflict_copy_of(&p(copy), &p(original)),
                "{copy} of {original}"
            );
        }
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "19700101-000000");
        assert_eq!(format_utc(951_782_400), "20000229-000000");
        assert_eq!(format_utc(-1), "19691231-235959");
    }
}
