//! Hard cases of what a folder may hold: symlinks (synced as links, never followed),
//! mode bits and mtimes, case-only renames, Unicode names in both normal forms, a name
//! that is not UTF-8, and a FIFO. Whatever cannot sync is listed in `status --json`
//! folders[].unsyncable, and everything else syncs.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::{Cluster, Kind, poll_until};
use serde_json::Value;

use crate::paths;

/// Every replica of `rel` is a symlink to exactly `target`.
fn assert_link_everywhere(cl: &Cluster, rel: &str, target: &str) {
    let mut places: Vec<_> = cl
        .all_clients()
        .into_iter()
        .map(|i| cl.path_on(i, DOCS, rel))
        .collect();
    places.push(cl.server_path(DOCS, rel));
    for p in places {
        let meta = fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{} should be a symlink: {e}", p.display()));
        assert!(
            meta.file_type().is_symlink(),
            "{} is a {:?}, not a symlink",
            p.display(),
            meta.file_type()
        );
        let got = fs::read_link(&p).unwrap();
        assert_eq!(
            got.as_os_str(),
            OsStr::new(target),
            "{} points elsewhere",
            p.display()
        );
    }
}

/// The `unsyncable` list of A's docs folder.
fn unsyncable(cl: &Cluster) -> Vec<Value> {
    cl.a().folder_status(DOCS)["unsyncable"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no unsyncable list"))
        .clone()
}

/// Waits until A lists an unsyncable item whose path contains `needle`, with a reason.
fn wait_unsyncable(cl: &Cluster, needle: &str) -> Value {
    poll_until(Duration::from_secs(20), || {
        let list = unsyncable(cl);
        list.iter()
            .find(|u| u["path"].as_str().is_some_and(|p| p.contains(needle)))
            .cloned()
            .ok_or_else(|| format!("A's unsyncable list: {list:?}"))
    })
    .map(|u| {
        assert!(
            u["reason"].as_str().is_some_and(|r| !r.trim().is_empty()),
            "unsyncable {needle} has no reason: {u}"
        );
        u
    })
    .unwrap_or_else(|why| panic!("{needle} was never reported unsyncable: {why}"))
}

/// Waits until A's unsyncable list is empty.
fn wait_no_unsyncable(cl: &Cluster) {
    poll_until(Duration::from_secs(20), || {
        let list = unsyncable(cl);
        if list.is_empty() {
            Ok(())
        } else {
            Err(format!("A still lists unsyncable items: {list:?}"))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
}

/// Symlinks with a relative target inside the folder (to a file and to a directory), an
/// absolute target outside it (`/etc`), and one into the cluster's canary dir, sync as
/// links with the same target, and nothing is read or written through them: no
/// replica holds anything under a link, the canary is untouched (the oracle checks),
/// and replacing a link with a file on A replaces the link on B, not its target.
#[test]
fn symlinks_sync_as_links_and_are_never_followed() {
    let cl = Cluster::new(2);
    let canary = cl.root().join("canary");
    let canary_target = canary.to_str().unwrap().to_owned();
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    files::write(&a("sub/target.txt"), b"the target\n");
    symlink("sub/target.txt", a("link-file")).unwrap();
    symlink("sub", a("link-dir")).unwrap();
    symlink("/etc", a("link-etc")).unwrap();
    symlink(&canary, a("link-canary")).unwrap();
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        [
            "link-canary",
            "link-dir",
            "link-etc",
            "link-file",
            "sub",
            "sub/target.txt"
        ],
        "a replica holds something under a link"
    );
    for (rel, target) in [
        ("link-file", "sub/target.txt"),
        ("link-dir", "sub"),
        ("link-etc", "/etc"),
        ("link-canary", canary_target.as_str()),
    ] {
        assert_eq!(common[rel].kind, Kind::Symlink, "{rel}");
        assert_link_everywhere(&cl, rel, target);
    }

    // The target changes: the link stays a link everywhere.
    files::write(&a("sub/target.txt"), b"the target, edited\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "sub/target.txt", b"the target, edited\n");
    assert_link_everywhere(&cl, "link-file", "sub/target.txt");

    // A link replaced by a file: on B the link itself is replaced; writing through
    // it would change sub/target.txt.
    fs::remove_file(a("link-file")).unwrap();
    files::write(&a("link-file"), b"now a regular file\n");
    fs::remove_file(a("link-etc")).unwrap();
    fs::remove_file(a("link-canary")).unwrap();
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        ["link-dir", "link-file", "sub", "sub/target.txt"]
    );
    cl.assert_file_everywhere(DOCS, "link-file", b"now a regular file\n");
    cl.assert_file_everywhere(DOCS, "sub/target.txt", b"the target, edited\n");
    assert_link_everywhere(&cl, "link-dir", "sub");
    assert!(fs::metadata("/etc/passwd").is_ok(), "/etc lost passwd");
}

/// A symlink to a directory inside the folder replaced by a real directory with a
/// file in it (a type switch): every replica gets the directory and the file, and
/// nothing lands in the old link's target.
#[test]
fn symlink_replaced_by_a_directory() {
    let cl = Cluster::new(2);
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    files::write(&a("sub/target.txt"), b"the target\n");
    symlink("sub", a("link-dir")).unwrap();
    cl.settle(DOCS);
    assert_link_everywhere(&cl, "link-dir", "sub");

    fs::remove_file(a("link-dir")).unwrap();
    files::write(&a("link-dir/inner.txt"), b"now a directory\n");
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        ["link-dir", "link-dir/inner.txt", "sub", "sub/target.txt"]
    );
    cl.assert_file_everywhere(DOCS, "link-dir/inner.txt", b"now a directory\n");
    for dir in [cl.b().folder_dir(DOCS), cl.server_path(DOCS, "")] {
        assert_eq!(
            files::list_dir(&dir.join("sub")),
            ["target.txt"],
            "{}",
            dir.display()
        );
    }
}

/// `files::mode & 0o777` and the mtime of `rel` on B and on the server, against
/// the expected values (`what` says when, for the message). An mtime-only change does
/// not change the manifest that `settle` compares, so mtimes get a deadline of their
/// own.
fn check_meta(cl: &Cluster, what: &str, expect: &[(&str, u32, i64)]) {
    for &(rel, mode, mtime) in expect {
        for (who, p) in [
            ("B", cl.path_on(1, DOCS, rel)),
            ("the server", cl.server_path(DOCS, rel)),
        ] {
            assert_eq!(
                files::mode(&p) & 0o777,
                mode,
                "{what}: mode of {rel} on {who} is {:o}",
                files::mode(&p)
            );
            poll_until(Duration::from_secs(20), || {
                let got = files::mtime_ns(&p);
                if got == mtime {
                    Ok(())
                } else {
                    Err(format!(
                        "{what}: mtime of {rel} on {who} is {got}, A's is {mtime}"
                    ))
                }
            })
            .unwrap_or_else(|why| panic!("{why}"));
        }
    }
}

const OLD: i64 = 1_000_000_000_123_456_789; // 2001-09-09
const OLDER: i64 = 900_000_000_987_654_321; // 1998-07-09

/// Mode bits 0755 and 0644, and mtimes to the nanosecond (old ones set with
/// `File::set_modified`, i.e. `utimensat`), arrive on B and the server as on A; a later
/// chmod each way follows and leaves the mtimes alone.
#[test]
fn mode_bits_and_mtimes_are_preserved() {
    let cl = Cluster::new(2);
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    files::write(&a("run.sh"), b"#!/bin/sh\necho run\n");
    files::set_mode(&a("run.sh"), 0o755);
    files::write(&a("data.txt"), b"data\n");
    files::set_mode(&a("data.txt"), 0o644);
    files::set_mtime_ns(&a("data.txt"), OLD);
    files::write(&a("dir/old.txt"), b"old\n");
    files::set_mtime_ns(&a("dir/old.txt"), OLDER);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["data.txt", "dir", "dir/old.txt", "run.sh"]);
    let run_mtime = files::mtime_ns(&a("run.sh"));
    check_meta(
        &cl,
        "after creation",
        &[
            ("run.sh", 0o755, run_mtime),
            ("data.txt", 0o644, OLD),
            ("dir/old.txt", 0o644, OLDER),
        ],
    );

    files::set_mode(&a("run.sh"), 0o644);
    files::set_mode(&a("data.txt"), 0o755);
    let common = cl.settle(DOCS);
    assert!(common["data.txt"].exec && !common["run.sh"].exec);
    check_meta(
        &cl,
        "after chmod",
        &[
            ("run.sh", 0o644, run_mtime),
            ("data.txt", 0o755, OLD),
            ("dir/old.txt", 0o644, OLDER),
        ],
    );
}

/// `touch -d` on a synced file (the content unchanged) moves its mtime on every replica,
/// as Syncthing does: a user who sets a date expects to see it everywhere, and
/// replicas that disagree on mtimes disagree on "newer" (e.g. `resolve --keep newer`).
#[test]
fn mtime_only_change_propagates() {
    let cl = Cluster::new(2);
    let path = cl.path_on(0, DOCS, "dated.txt");
    files::write(&path, b"dated\n");
    files::set_mtime_ns(&path, OLDER);
    cl.settle(DOCS);
    check_meta(&cl, "after creation", &[("dated.txt", 0o644, OLDER)]);

    files::set_mtime_ns(&path, OLD);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["dated.txt"]);
    check_meta(&cl, "after touch -d", &[("dated.txt", 0o644, OLD)]);
    cl.assert_file_everywhere(DOCS, "dated.txt", b"dated\n");
}

/// A case-only rename of a file and of a directory (`a.txt` → `A.txt`,
/// `Photos` → `photos`) is a rename everywhere: the old name is gone, the content kept.
#[test]
fn case_only_rename() {
    let cl = Cluster::new(2);
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    files::write(&a("a.txt"), b"lower\n");
    files::write(&a("Photos/x.jpg"), b"jpeg\n");
    cl.settle(DOCS);
    fs::rename(a("a.txt"), a("A.txt")).unwrap();
    fs::rename(a("Photos"), a("photos")).unwrap();
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["A.txt", "photos", "photos/x.jpg"]);
    cl.assert_file_everywhere(DOCS, "A.txt", b"lower\n");
    cl.assert_file_everywhere(DOCS, "photos/x.jpg", b"jpeg\n");
    cl.assert_absent_everywhere(DOCS, "a.txt");
    cl.assert_absent_everywhere(DOCS, "Photos");
}

/// Unicode names sync byte for byte: CJK in a directory and a file name, an emoji, and
/// "café" both precomposed (NFC) and decomposed (NFD). On Linux the two forms are two
/// different names, so both files must arrive, each with its own content, and deleting
/// one leaves the other (no normalisation merges them).
#[test]
fn unicode_names_sync_byte_for_byte() {
    let cl = Cluster::new(2);
    let nfc = "caf\u{e9}.txt";
    let nfd = "cafe\u{301}.txt";
    let names = [
        ("日本語/ファイル.txt", "japanese\n"),
        ("emoji-🎉.txt", "party\n"),
        (nfc, "NFC\n"),
        (nfd, "NFD\n"),
    ];
    for (rel, content) in names {
        files::write(&cl.path_on(0, DOCS, rel), content);
    }
    let common = cl.settle(DOCS);
    let mut expected = vec!["日本語", "日本語/ファイル.txt", "emoji-🎉.txt", nfc, nfd];
    expected.sort_unstable();
    assert_eq!(paths(&common), expected);
    for (rel, content) in names {
        cl.assert_file_everywhere(DOCS, rel, content.as_bytes());
    }

    fs::remove_file(cl.path_on(0, DOCS, nfd)).unwrap();
    let common = cl.settle(DOCS);
    assert!(common.contains_key(nfc) && !common.contains_key(nfd));
    cl.assert_file_everywhere(DOCS, nfc, b"NFC\n");
    cl.assert_absent_everywhere(DOCS, nfd);
}

/// A file whose name is not UTF-8 is listed in `status --json` folders[].unsyncable
/// with a reason and stays on A; everything else syncs. Renamed to a valid name, it
/// syncs and leaves the list.
#[test]
fn non_utf8_name_is_unsyncable_and_the_rest_syncs() {
    let cl = Cluster::new(2);
    let bad = cl
        .a()
        .folder_dir(DOCS)
        .join(OsStr::from_bytes(b"bad-\xff\xfe.txt"));
    files::write(&bad, b"latin-1 name\n");
    files::write(&cl.path_on(0, DOCS, "good.txt"), b"good\n");
    let skip = |rel: &str| rel.contains('\u{FFFD}');
    let common = cl.settle_excluding(DOCS, &skip);
    assert_eq!(paths(&common), ["good.txt"]);
    cl.assert_file_everywhere(DOCS, "good.txt", b"good\n");
    wait_unsyncable(&cl, "bad-");
    for dir in [cl.b().folder_dir(DOCS), cl.server_path(DOCS, "")] {
        assert_eq!(files::list_dir(&dir), ["good.txt"], "{}", dir.display());
    }

    fs::rename(&bad, cl.path_on(0, DOCS, "fixed.txt")).unwrap();
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["fixed.txt", "good.txt"]);
    cl.assert_file_everywhere(DOCS, "fixed.txt", b"latin-1 name\n");
    wait_no_unsyncable(&cl);
}

/// A FIFO is listed as unsyncable and does not block the scan: a file made after it
/// syncs and `wait` returns. Removed, it leaves the list.
#[test]
fn fifo_is_unsyncable_and_does_not_block_the_scan() {
    let cl = Cluster::new(2);
    files::mkfifo(&cl.path_on(0, DOCS, "pipe"));
    files::write(&cl.path_on(0, DOCS, "after.txt"), b"made after the FIFO\n");
    let common = cl.settle_excluding(DOCS, &|rel| rel == "pipe");
    assert_eq!(paths(&common), ["after.txt"]);
    cl.assert_file_everywhere(DOCS, "after.txt", b"made after the FIFO\n");
    let listed = wait_unsyncable(&cl, "pipe");
    assert_eq!(listed["path"], "pipe", "{listed}");
    files::assert_absent(&cl.path_on(1, DOCS, "pipe"));
    files::assert_absent(&cl.server_path(DOCS, "pipe"));

    fs::remove_file(cl.path_on(0, DOCS, "pipe")).unwrap();
    files::write(&cl.path_on(0, DOCS, "later.txt"), b"later\n");
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["after.txt", "later.txt"]);
    wait_no_unsyncable(&cl);
}

/// Type switches of a plain path: a file replaced by a directory with a file in it,
/// then that directory replaced by a file again. Every replica follows each switch.
#[test]
fn file_replaced_by_a_directory_and_back() {
    let cl = Cluster::new(2);
    let p = cl.path_on(0, DOCS, "thing");
    files::write(&p, b"a file first\n");
    cl.settle(DOCS);

    fs::remove_file(&p).unwrap();
    files::write(&p.join("inside.txt"), b"then a directory\n");
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["thing", "thing/inside.txt"]);
    cl.assert_file_everywhere(DOCS, "thing/inside.txt", b"then a directory\n");

    fs::remove_dir_all(&p).unwrap();
    files::write(&p, b"a file again\n");
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["thing"]);
    cl.assert_file_everywhere(DOCS, "thing", b"a file again\n");
}

/// A file A's daemon may not read (mode 000, the daemon running with a user's powers) is
/// reported by name in `status` with a reason; the rest of the folder goes on syncing;
/// once readable again, it syncs too.
#[test]
fn unreadable_file_is_reported_and_the_rest_syncs() {
    let cl = Cluster::new(2);
    cl.a().stop();
    cl.a().run_unprivileged();
    cl.a().start();
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    // Made unreadable outside the folder and moved in: written in place, the daemon
    // could scan it (close-write) before the chmod and sync it while readable.
    let outside = cl.root().join("secret.txt");
    files::write(&outside, b"not for the daemon\n");
    files::set_mode(&outside, 0o000);
    fs::rename(&outside, a("secret.txt")).unwrap();
    files::write(&a("fine.txt"), b"readable\n");
    let common = cl.settle_excluding(DOCS, &|p| p == "secret.txt");
    assert_eq!(paths(&common), ["fine.txt"]);
    let u = wait_unsyncable(&cl, "secret.txt");
    assert!(
        u["reason"].as_str().is_some_and(|r| r.contains("denied")),
        "the reason does not say why: {u}"
    );
    files::assert_absent(&cl.path_on(1, DOCS, "secret.txt"));

    files::write(&a("more.txt"), b"still syncing\n");
    cl.settle_excluding(DOCS, &|p| p == "secret.txt");
    cl.assert_file_everywhere(DOCS, "more.txt", b"still syncing\n");

    files::set_mode(&a("secret.txt"), 0o644);
    cl.a().ctl_ok(["rescan", DOCS]);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "secret.txt", b"not for the daemon\n");
    wait_no_unsyncable(&cl);
}
