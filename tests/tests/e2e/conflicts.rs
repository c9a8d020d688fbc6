//! Conflicts: the same path changed on two clients before either saw the other's change
//! (B's folder is paused meanwhile, B's daemon staying up). The server's version (A's,
//! pushed first) keeps the name; B's is kept beside it as
//! `NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT` on every replica, listed by
//! `filesyncctl conflicts` on every client, and settled with `filesyncctl resolve`. An
//! edit beats a delete; identical content is no conflict.

use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::node::{Conflict, describe};
use filesync_tests::{Cluster, Manifest, SYNC_TIMEOUT};

use crate::{paths, unix_now};

/// What every conflict copy's name holds after the original's stem.
const MARK: &str = ".sync-conflict-";

/// `names` in manifest order, to compare with [`paths`].
fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut v = names.to_vec();
    v.sort_unstable();
    v
}

/// The conflict copies in a manifest.
pub(crate) fn copies(common: &Manifest) -> Vec<String> {
    common
        .keys()
        .filter(|k| k.contains(MARK))
        .cloned()
        .collect()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checks that `copy` is `original`'s conflict copy made by `loser` (a device id as
/// `status --json` prints it) around Unix time `made_at`:
/// `DIR/STEM.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT`, DEVICE a short form (a prefix)
/// of the loser's id.
fn check_copy_name(original: &str, copy: &str, loser: &str, made_at: i64) {
    let (dir, name) = match original.rfind('/') {
        Some(i) => (&original[..=i], &original[i + 1..]),
        None => ("", original),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let prefix = format!("{dir}{stem}{MARK}");
    let middle = copy
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(ext))
        .unwrap_or_else(|| panic!("conflict copy {copy:?} of {original:?} is not {prefix}….{ext}"));
    let fields: Vec<&str> = middle.splitn(3, '-').collect();
    let [date, time, device] = fields[..] else {
        panic!("conflict copy {copy:?}: {middle:?} is not YYYYMMDD-HHMMSS-DEVICE");
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    assert!(
        digits(date, 8) && digits(time, 6),
        "conflict copy {copy:?}: {date}-{time} is not YYYYMMDD-HHMMSS"
    );
    assert!(
        !device.is_empty() && loser.starts_with(device),
        "conflict copy {copy:?} names device {device:?}, but the losing device is {loser:?}"
    );
    let num = |s: &str| s.parse::<i64>().unwrap();
    let named = days_from_civil(num(&date[..4]), num(&date[4..6]), num(&date[6..])) * 86_400
        + num(&time[..2]) * 3600
        + num(&time[2..4]) * 60
        + num(&time[4..]);
    // The contract does not say UTC or local time (Syncthing uses local time): accept
    // the copy's own made_at give or take a few seconds, shifted by a whole time zone.
    let off = named - made_at;
    let tz = (off + 450).div_euclid(900) * 900;
    assert!(
        tz.abs() <= 14 * 3600 && (off - tz).abs() <= 3,
        "conflict copy {copy:?} names time {date}-{time}, but the conflict was made at \
         Unix time {made_at}"
    );
}

/// Pauses B's folder, lets `a` and `b` change the files on each side (B first when
/// `b_first`: its change is then the older one), lets A's change reach the server, and
/// resumes B. The caller settles.
fn diverge(cl: &Cluster, b_first: bool, a: impl FnOnce(), b: impl FnOnce()) {
    cl.pause(1, DOCS);
    if b_first {
        b();
        a();
        cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    } else {
        a();
        cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
        b();
    }
    cl.resume(1, DOCS);
}

/// After a settle: `rel` holds `winner` (A's version) on every replica and exactly one
/// conflict copy of it holds `loser` (B's version); both clients list exactly that
/// conflict with every field right, and count it in `status`. Returns the conflict.
fn assert_one_conflict(
    cl: &Cluster,
    common: &Manifest,
    rel: &str,
    winner: &[u8],
    loser: &[u8],
    since: i64,
) -> Conflict {
    let found = copies(common);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one conflict copy of {rel}, found {:?}",
        paths(common)
    );
    let copy = found[0].clone();
    cl.assert_file_everywhere(DOCS, rel, winner);
    cl.assert_file_everywhere(DOCS, &copy, loser);

    let on_b = cl.b().conflicts(DOCS);
    assert_eq!(
        on_b.len(),
        1,
        "B should list exactly one conflict: {on_b:#?}"
    );
    let c = on_b[0].clone();
    let (a_dev, b_dev) = (cl.a().device(), cl.b().device());
    assert_eq!(c.folder, DOCS);
    assert_eq!(c.path, rel, "conflict path");
    assert_eq!(c.copy, copy, "conflict copy");
    assert_eq!(
        c.winner, a_dev,
        "the winner is A, whose version the server took first"
    );
    assert_eq!(
        c.loser, b_dev,
        "the loser is B, whose version is in the copy"
    );
    assert!(c.winner_seq > 0, "winner_seq {}", c.winner_seq);
    let now = unix_now();
    assert!(
        (since - 2..=now + 2).contains(&c.made_at),
        "made_at {} is not between the step's start {since} and now {now}",
        c.made_at
    );
    assert_eq!(c.copy_size, loser.len() as u64, "copy_size");
    assert_eq!(
        c.copy_mtime_ns,
        files::mtime_ns(&cl.path_on(1, DOCS, &copy)),
        "copy_mtime_ns is not the mtime of B's copy"
    );
    check_copy_name(rel, &copy, &b_dev, c.made_at);

    // The copy carries its note to every device: A lists the same conflict.
    let on_a = cl.a().conflicts(DOCS);
    assert_eq!(on_a, on_b, "A and B list different conflicts");
    c
}

/// Both clients list no conflict.
fn assert_no_conflicts(cl: &Cluster) {
    for node in [cl.a(), cl.b()] {
        let listed = node.conflicts(DOCS);
        assert!(
            listed.is_empty(),
            "{} still lists conflicts: {listed:#?}",
            node.name()
        );
    }
}

/// `status --json` folders[].conflicts on each client, with what `conflicts` lists.
fn status_counts(cl: &Cluster) -> Vec<(String, u64, usize)> {
    [cl.a(), cl.b()]
        .into_iter()
        .map(|node| {
            let counted = node.folder_status(DOCS)["conflicts"]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: status has no conflicts count", node.name()));
            (node.name().to_owned(), counted, node.conflicts(DOCS).len())
        })
        .collect()
}

/// Creates `rel` with `base` on A, settles, then edits it on both sides while B is
/// paused; returns the settled manifest.
fn edit_both(cl: &Cluster, rel: &str, b_first: bool, from_a: &[u8], from_b: &[u8]) -> Manifest {
    files::write(&cl.path_on(0, DOCS, rel), b"the original\n");
    cl.settle(DOCS);
    diverge(
        cl,
        b_first,
        || files::write(&cl.path_on(0, DOCS, rel), from_a),
        || files::write(&cl.path_on(1, DOCS, rel), from_b),
    );
    cl.settle(DOCS)
}

/// B edits first (its version is older), A's edit reaches the server first: A's keeps
/// the name everywhere. The conflict stays one conflict: a rescan on both clients and a
/// restart of B make no second copy and no second listing.
#[test]
fn edit_edit_b_first_server_version_keeps_the_name() {
    edit_edit_b_first_server_version_keeps_the_name_on(&Cluster::new(2));
}

/// The body of [`edit_edit_b_first_server_version_keeps_the_name`], on any backend.
pub(crate) fn edit_edit_b_first_server_version_keeps_the_name_on(cl: &Cluster) {
    let since = unix_now();
    let (from_a, from_b) = (b"A's edit\n", b"B's edit, made first\n");
    let common = edit_both(cl, "notes.txt", true, from_a, from_b);
    let c = assert_one_conflict(cl, &common, "notes.txt", from_a, from_b, since);
    assert_eq!(paths(&common), sorted(&["notes.txt", &c.copy]));

    cl.a().ctl_ok(["rescan", DOCS]);
    cl.b().ctl_ok(["rescan", DOCS]);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), sorted(&["notes.txt", &c.copy]));
    cl.b().stop();
    cl.b().start();
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        sorted(&["notes.txt", &c.copy]),
        "a restart of B made another copy"
    );
    let again = assert_one_conflict(cl, &common, "notes.txt", from_a, from_b, since);
    assert_eq!(
        again, c,
        "the conflict changed after a rescan and a restart"
    );
}

/// A edits first and its edit reaches the server; B, paused, edits the old version:
/// A's keeps the name, B's is the copy.
#[test]
fn edit_edit_a_first_server_version_keeps_the_name() {
    let cl = Cluster::new(2);
    let since = unix_now();
    let (from_a, from_b) = (b"A's edit, made first\n", b"B's edit of the old version\n");
    let common = edit_both(&cl, "dir/report.md", false, from_a, from_b);
    let c = assert_one_conflict(&cl, &common, "dir/report.md", from_a, from_b, since);
    assert_eq!(paths(&common), sorted(&["dir", "dir/report.md", &c.copy]));
}

/// A deletes, paused B edits: the edit wins; B's content is at the path everywhere and
/// there is no conflict copy.
#[test]
fn edit_beats_delete_when_a_deletes_and_b_edits() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "plan.txt"), b"the plan\n");
    files::write(&cl.path_on(0, DOCS, "other.txt"), b"unrelated\n");
    cl.settle(DOCS);
    let from_b = b"B's edit of the plan\n";
    diverge(
        &cl,
        false,
        || std::fs::remove_file(cl.path_on(0, DOCS, "plan.txt")).unwrap(),
        || files::write(&cl.path_on(1, DOCS, "plan.txt"), from_b),
    );
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        ["other.txt", "plan.txt"],
        "no conflict copy"
    );
    cl.assert_file_everywhere(DOCS, "plan.txt", from_b);
    assert_no_conflicts(&cl);
}

/// Paused B deletes, A edits: A's edit survives everywhere; no conflict copy.
#[test]
fn edit_beats_delete_when_b_deletes_and_a_edits() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "plan.txt"), b"the plan\n");
    cl.settle(DOCS);
    let from_a = b"A's edit of the plan\n";
    diverge(
        &cl,
        true,
        || files::write(&cl.path_on(0, DOCS, "plan.txt"), from_a),
        || std::fs::remove_file(cl.path_on(1, DOCS, "plan.txt")).unwrap(),
    );
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["plan.txt"], "no conflict copy");
    cl.assert_file_everywhere(DOCS, "plan.txt", from_a);
    assert_no_conflicts(&cl);
}

/// Both create the same new path: with different content, A's (first at the server)
/// keeps the name and B's is one conflict copy; with the same content, nothing
/// conflicts.
#[test]
fn both_create_same_path() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "seed.txt"), b"seed\n");
    cl.settle(DOCS);
    let since = unix_now();
    let (from_a, from_b) = (b"new on A\n", b"new on B, different\n");
    let same = b"the same new content on both\n";
    diverge(
        &cl,
        true,
        || {
            files::write(&cl.path_on(0, DOCS, "new.txt"), from_a);
            files::write(&cl.path_on(0, DOCS, "same.txt"), same);
        },
        || {
            files::write(&cl.path_on(1, DOCS, "new.txt"), from_b);
            files::write(&cl.path_on(1, DOCS, "same.txt"), same);
        },
    );
    let common = cl.settle(DOCS);
    let c = assert_one_conflict(&cl, &common, "new.txt", from_a, from_b, since);
    assert_eq!(
        paths(&common),
        sorted(&["new.txt", &c.copy, "same.txt", "seed.txt"]),
        "same.txt, created with equal content on both, must not conflict"
    );
    cl.assert_file_everywhere(DOCS, "same.txt", same);
}

/// `resolve PATH --keep local` on B: the copy's content (B's) moves to the path on
/// every replica and the copy is gone everywhere; no conflict is left on either client.
#[test]
fn resolve_keep_local_moves_the_copy_over_the_original() {
    let cl = Cluster::new(2);
    let since = unix_now();
    let (from_a, from_b) = (b"A wins the race\n", b"B's version, to be kept\n");
    let common = edit_both(&cl, "notes.txt", false, from_a, from_b);
    let c = assert_one_conflict(&cl, &common, "notes.txt", from_a, from_b, since);

    cl.b()
        .ctl_ok(["resolve", DOCS, "notes.txt", "--keep", "local"]);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["notes.txt"]);
    cl.assert_file_everywhere(DOCS, "notes.txt", from_b);
    cl.assert_absent_everywhere(DOCS, &c.copy);
    assert_no_conflicts(&cl);
}

/// `resolve PATH --keep remote`, run on A (the copy and its note are on every device):
/// the copy is deleted everywhere, the server's version stays; no conflict is left.
#[test]
fn resolve_keep_remote_deletes_the_copy_everywhere() {
    let cl = Cluster::new(2);
    let since = unix_now();
    let (from_a, from_b) = (b"A's version, to be kept\n", b"B's version, dropped\n");
    let common = edit_both(&cl, "notes.txt", true, from_a, from_b);
    let c = assert_one_conflict(&cl, &common, "notes.txt", from_a, from_b, since);

    cl.a()
        .ctl_ok(["resolve", DOCS, "notes.txt", "--keep", "remote"]);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["notes.txt"]);
    cl.assert_file_everywhere(DOCS, "notes.txt", from_a);
    cl.assert_absent_everywhere(DOCS, &c.copy);
    assert_no_conflicts(&cl);
}

/// `resolve '*.txt' --keep newer` settles every conflict of a `.txt` file, each by the
/// later mtime (set explicitly, years apart; this relies on mtimes being preserved), and
/// leaves the `.md` conflict alone. A pattern matching no conflict exits 1.
#[test]
fn resolve_glob_keep_newer_settles_several() {
    let cl = Cluster::new(2);
    let names = ["x.txt", "y.txt", "z.md"];
    for rel in names {
        files::write(&cl.path_on(0, DOCS, rel), b"the original\n");
    }
    cl.settle(DOCS);
    const OLD: i64 = 1_500_000_000_000_000_000; // 2017
    const NEW: i64 = 1_600_000_000_000_000_000; // 2020
    let a_content = |rel: &str| format!("A's {rel}\n").into_bytes();
    let b_content = |rel: &str| format!("B's {rel}, longer\n").into_bytes();
    // x.txt: B's version is newer; y.txt: A's is; z.md: B's, but not matched.
    let a_mtime = |rel: &str| if rel == "y.txt" { NEW } else { OLD };
    let b_mtime = |rel: &str| if rel == "y.txt" { OLD } else { NEW };
    diverge(
        &cl,
        true,
        || {
            for rel in names {
                let p = cl.path_on(0, DOCS, rel);
                files::write(&p, a_content(rel));
                files::set_mtime_ns(&p, a_mtime(rel));
            }
        },
        || {
            for rel in names {
                let p = cl.path_on(1, DOCS, rel);
                files::write(&p, b_content(rel));
                files::set_mtime_ns(&p, b_mtime(rel));
            }
        },
    );
    let common = cl.settle(DOCS);
    assert_eq!(copies(&common).len(), 3, "{:?}", paths(&common));
    let listed = cl.b().conflicts(DOCS);
    let mut originals: Vec<&str> = listed.iter().map(|c| c.path.as_str()).collect();
    originals.sort();
    assert_eq!(originals, names, "B's conflicts: {listed:#?}");
    assert_eq!(cl.a().conflicts(DOCS).len(), 3, "A lists every conflict");

    let out = cl
        .b()
        .ctl(["resolve", DOCS, "nothing-*", "--keep", "local"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "resolve of a pattern that matches no conflict should exit 1: {}",
        describe(&out)
    );

    cl.b().ctl_ok(["resolve", DOCS, "*.txt", "--keep", "newer"]);
    let common = cl.settle(DOCS);
    let left = copies(&common);
    assert_eq!(
        left.len(),
        1,
        "only z.md's copy stays: {:?}",
        paths(&common)
    );
    assert!(left[0].starts_with("z.sync-conflict-"), "{left:?}");
    cl.assert_file_everywhere(DOCS, "x.txt", &b_content("x.txt"));
    cl.assert_file_everywhere(DOCS, "y.txt", &a_content("y.txt"));
    cl.assert_file_everywhere(DOCS, "z.md", &a_content("z.md"));
    cl.assert_file_everywhere(DOCS, &left[0], &b_content("z.md"));
    for node in [cl.a(), cl.b()] {
        let listed = node.conflicts(DOCS);
        assert_eq!(
            listed.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
            ["z.md"],
            "{} after resolving *.txt: {listed:#?}",
            node.name()
        );
    }

    cl.a().ctl_ok(["resolve", DOCS, "z.md", "--keep", "remote"]);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), names);
    assert_no_conflicts(&cl);
}

/// `status` counts the unresolved conflicts of a folder, on every client, as
/// `conflicts` lists them: one on A and B while the copy exists (the note travels with
/// the copy), none once it is resolved. The contract only says status shows
/// "conflicts"; a user reads that number as "conflicts to look at", so it must agree
/// with `filesyncctl conflicts` on every device, not count events on one.
#[test]
fn status_counts_the_unresolved_conflicts() {
    let cl = Cluster::new(2);
    let since = unix_now();
    let (from_a, from_b) = (b"A's edit\n", b"B's edit\n");
    let common = edit_both(&cl, "notes.txt", false, from_a, from_b);
    assert_one_conflict(&cl, &common, "notes.txt", from_a, from_b, since);
    assert_eq!(
        status_counts(&cl),
        [("a".to_owned(), 1, 1), ("b".to_owned(), 1, 1)],
        "(client, status conflicts, listed conflicts) with one unresolved conflict"
    );

    cl.b()
        .ctl_ok(["resolve", DOCS, "notes.txt", "--keep", "remote"]);
    cl.settle(DOCS);
    assert_eq!(
        status_counts(&cl),
        [("a".to_owned(), 0, 0), ("b".to_owned(), 0, 0)],
        "(client, status conflicts, listed conflicts) after resolving the only conflict"
    );
}
