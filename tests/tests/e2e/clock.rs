//! Clock skew (shared/test-matrix.md F17): files whose mtimes are hours in the future or
//! the past, and a device whose clock runs five hours behind. The server's order of
//! changes decides which version keeps a name, never an mtime or a device's clock; an
//! mtime is data that syncs as it is.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::{Cluster, SYNC_TIMEOUT, poll_until};

use crate::conflicts::{copies, days_from_civil};
use crate::unix_now;

const HOUR_NS: i64 = 3600 * 1_000_000_000;

/// Now, in nanoseconds since the epoch, shifted by `hours`.
fn now_plus_hours(hours: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as i64;
    now + hours * HOUR_NS
}

/// Writes `content` to `path` with the mtime `mtime_ns` in one step, as an editor saves:
/// written as an ignored `*.part` beside it, given its mtime, then renamed over `path`,
/// so no daemon ever sees the content with another mtime.
fn save_with_mtime(path: &Path, content: &[u8], mtime_ns: i64) {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    files::write(&part, content);
    files::set_mtime_ns(&part, mtime_ns);
    fs::rename(&part, path).expect("cannot rename the saved file into place");
}

/// A file with an mtime five hours ahead is not "newer" than a later edit whose mtime is
/// five hours behind, nor than one after it ten hours behind: each later edit reaches
/// every replica with its own mtime, and no conflict is made.
#[test]
fn the_later_edit_wins_whatever_the_mtimes_say() {
    let cl = Cluster::new(2);
    let notes = |i: usize| cl.path_on(i, DOCS, "notes.txt");

    let future = now_plus_hours(5);
    save_with_mtime(&notes(0), b"A's first, dated 5 h ahead\n", future);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes.txt", b"A's first, dated 5 h ahead\n");
    assert_eq!(files::mtime_ns(&notes(1)), future, "B must keep A's mtime");

    let past = now_plus_hours(-5);
    save_with_mtime(&notes(1), b"B's edit, after it, dated 5 h back\n", past);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes.txt", b"B's edit, after it, dated 5 h back\n");
    assert_eq!(
        files::mtime_ns(&notes(0)),
        past,
        "A must take B's older mtime"
    );

    let older = now_plus_hours(-10);
    save_with_mtime(&notes(0), b"A's edit, last, dated 10 h back\n", older);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes.txt", b"A's edit, last, dated 10 h back\n");
    assert_eq!(files::mtime_ns(&notes(1)), older);
    assert_eq!(
        crate::paths(&common),
        ["notes.txt"],
        "sequential edits are no conflict"
    );
}

/// Two devices edit the same file before either sees the other's change. A's edit, dated
/// five hours back, reaches the server first; B's, dated five hours ahead, comes later.
/// A's keeps the name, B's is the conflict copy: the order decides, not the mtimes.
#[test]
fn concurrent_edits_conflict_and_the_first_to_arrive_wins_whatever_the_mtimes() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "report.txt"), b"the original\n");
    cl.settle(DOCS);

    cl.pause(1, DOCS);
    let from_a = b"A's edit, first at the server, dated 5 h back\n";
    save_with_mtime(
        &cl.path_on(0, DOCS, "report.txt"),
        from_a,
        now_plus_hours(-5),
    );
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);

    let from_b = b"B's concurrent edit, dated 5 h ahead\n";
    let b_mtime = now_plus_hours(5);
    save_with_mtime(&cl.path_on(1, DOCS, "report.txt"), from_b, b_mtime);
    cl.resume(1, DOCS);
    let common = cl.settle(DOCS);

    let copy = assert_one_copy(&cl, &common, ("report.txt", from_a), from_b);
    assert_eq!(
        files::mtime_ns(&cl.path_on(0, DOCS, &copy)),
        b_mtime,
        "the conflict copy keeps B's mtime"
    );
}

/// Asserts that every replica holds `winner` at its path and exactly one conflict copy,
/// holding `loser`; returns the copy's path.
fn assert_one_copy(
    cl: &Cluster,
    common: &filesync_tests::Manifest,
    (path, winner): (&str, &[u8]),
    loser: &[u8],
) -> String {
    cl.assert_file_everywhere(DOCS, path, winner);
    let found = copies(common);
    assert_eq!(found.len(), 1, "expected one conflict copy: {common:?}");
    cl.assert_file_everywhere(DOCS, &found[0], loser);
    found[0].clone()
}

/// Where libfaketime sits once `apt-get install faketime` has run.
const LIBFAKETIME: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib64/faketime/libfaketime.so.1",
];

/// Two devices with folder `docs`, B's clock set by libfaketime's `FAKETIME=faketime`;
/// `None` (the test is skipped) where libfaketime is not installed, except under
/// `.ci/run` (`FILESYNC_REQUIRE_TOOLS` set), after `scripts/test-deps.sh` installed it: a
/// skip there would hide a missing install step.
fn cluster_with_b_clock(faketime: &str) -> Option<Cluster> {
    let Some(lib) = LIBFAKETIME.iter().find(|p| Path::new(p).is_file()) else {
        assert!(
            std::env::var_os("FILESYNC_REQUIRE_TOOLS").is_none(),
            "libfaketime is not installed, and CI must run the clock tests: \
             scripts/test-deps.sh installs it (apt-get install faketime)"
        );
        eprintln!("skipped: libfaketime is not installed (apt-get install faketime)");
        return None;
    };
    let cl = Cluster::without_folders(2, Some("open"));
    let b = cl.b();
    b.stop();
    b.set_daemon_env("LD_PRELOAD", lib);
    b.set_daemon_env("FAKETIME", faketime);
    // Timers and timeouts run on the monotonic clock, which stays true.
    b.set_daemon_env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    b.start();
    cl.add_folder(0, DOCS);
    cl.add_folder(1, DOCS);
    Some(cl)
}

/// Device B's whole clock runs five hours behind (libfaketime, when installed): it still
/// connects (the server's certificate is pinned, its validity dates do not matter), its
/// edits sync, and in a conflict the server's order decides. Its conflict copy is named
/// after B's own clock, since B makes it.
#[test]
fn a_device_five_hours_behind_syncs_and_conflicts_by_the_servers_order() {
    let Some(cl) = cluster_with_b_clock("-5h") else {
        return;
    };

    files::write(
        &cl.path_on(1, DOCS, "from-b.txt"),
        b"made on the slow clock\n",
    );
    files::write(&cl.path_on(0, DOCS, "shared.txt"), b"the original\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "from-b.txt", b"made on the slow clock\n");

    cl.pause(0, DOCS);
    let from_b = b"B's edit, first at the server\n";
    files::write(&cl.path_on(1, DOCS, "shared.txt"), from_b);
    cl.settle_clients(DOCS, &[1], SYNC_TIMEOUT);
    let from_a = b"A's concurrent edit, later at the server\n";
    files::write(&cl.path_on(0, DOCS, "shared.txt"), from_a);
    cl.resume(0, DOCS);
    let common = cl.settle(DOCS);
    let copy = assert_one_copy(&cl, &common, ("shared.txt", from_b), from_a);
    assert!(
        copy.contains(&cl.a().device()[..7]),
        "A lost, so the copy names A: {copy}"
    );

    // Now B loses a conflict: its copy carries B's clock, five hours behind.
    cl.pause(1, DOCS);
    files::write(&cl.path_on(0, DOCS, "late.txt"), b"A, first\n");
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    files::write(&cl.path_on(1, DOCS, "late.txt"), b"B, second\n");
    cl.resume(1, DOCS);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "late.txt", b"A, first\n");
    let b_copy = copies(&common)
        .into_iter()
        .find(|c| c.starts_with("late.sync-conflict-"))
        .unwrap_or_else(|| panic!("no conflict copy of late.txt: {common:?}"));
    cl.assert_file_everywhere(DOCS, &b_copy, b"B, second\n");
    let named = stamp_secs(&b_copy["late.sync-conflict-".len()..][..15]);
    let behind = unix_now() - named;
    assert!(
        (5 * 3600 - 600..=5 * 3600 + 600).contains(&behind),
        "B's conflict copy {b_copy} should carry B's clock, 5 h behind, not {behind} s"
    );
}

/// Unix seconds of a conflict copy's `YYYYMMDD-HHMMSS` (UTC).
fn stamp_secs(stamp: &str) -> i64 {
    let num = |range: std::ops::Range<usize>| {
        stamp[range]
            .parse::<i64>()
            .unwrap_or_else(|e| panic!("{stamp:?} is not YYYYMMDD-HHMMSS: {e}"))
    };
    days_from_civil(num(0..4), num(4..6), num(6..8)) * 86_400
        + num(9..11) * 3600
        + num(11..13) * 60
        + num(13..15)
}

/// Device B's clock nearly stands still (libfaketime, a thousandth of real speed from a
/// fixed start), so every conflict copy B makes here is named in the same second. B
/// loses a conflict on `f.txt`; then, offline, B deletes that copy and edits `f.txt`
/// again while A edits both. B's second copy must get a name of its own: under the
/// first copy's name (still known to B and the server) the server's edit of that copy
/// would replace it. Nothing is lost: A's edits win both names, B's edit is a copy.
#[test]
fn two_conflict_copies_of_one_path_in_one_second_get_names_of_their_own() {
    let Some(cl) = cluster_with_b_clock("@2026-01-01 00:00:00 x0.001") else {
        return;
    };
    let b = cl.b();
    files::write(&cl.path_on(0, DOCS, "f.txt"), b"the original\n");
    cl.settle(DOCS);

    cl.pause(1, DOCS);
    let a1 = b"A's first edit\n";
    files::write(&cl.path_on(0, DOCS, "f.txt"), a1);
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    let b1 = b"B's first edit\n";
    files::write(&cl.path_on(1, DOCS, "f.txt"), b1);
    cl.resume(1, DOCS);
    let common = cl.settle(DOCS);
    let first = assert_one_copy(&cl, &common, ("f.txt", a1), b1);

    cl.pause(1, DOCS);
    let a2 = b"A's edit of B's first copy\n";
    files::write(&cl.path_on(0, DOCS, &first), a2);
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    let a3 = b"A's second edit\n";
    files::write(&cl.path_on(0, DOCS, "f.txt"), a3);
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    fs::remove_file(cl.path_on(1, DOCS, &first)).expect("cannot delete B's first copy");
    let b2 = b"B's second edit\n";
    files::write(&cl.path_on(1, DOCS, "f.txt"), b2);
    // Both local changes recorded before B meets the server's.
    poll_until(SYNC_TIMEOUT, || {
        let pending = b.folder_status(DOCS)["pending_up_files"].clone();
        if pending == 2 {
            Ok(())
        } else {
            Err(format!("B has {pending} changes to send, not 2"))
        }
    })
    .unwrap_or_else(|why| panic!("B did not scan its two changes: {why}"));
    cl.resume(1, DOCS);
    let common = cl.settle(DOCS);

    cl.assert_file_everywhere(DOCS, "f.txt", a3);
    // An edit beats a delete: A's edit of the first copy is back on B.
    cl.assert_file_everywhere(DOCS, &first, a2);
    let found = copies(&common);
    assert_eq!(found.len(), 2, "expected two conflict copies: {common:?}");
    let second = found
        .iter()
        .find(|c| **c != first)
        .expect("a second conflict copy");
    cl.assert_file_everywhere(DOCS, second, b2);
    assert!(
        second.starts_with("f.sync-conflict-20260101-0000"),
        "B's second copy {second} is named by B's clock, beside f.txt"
    );
}
