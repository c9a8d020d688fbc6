//! Versions and trash on the server: what a change replaces or deletes is kept (for
//! `[server] keep_versions` days, 30 by default, which the fixture's server uses) in
//! `DATA_DIR/.filesync/versions/`, outside every synced tree; `filesyncctl versions`
//! lists it from any client and `filesyncctl restore` brings it back everywhere.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use filesync_tests::Cluster;
use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::node::Version;
use filesync_tests::node::describe;
use filesync_tests::tree::sha256;

use crate::{paths, unix_now};

/// The SHA-256 of every regular file under `dir`, at any depth, dot names included.
fn contents_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(items) = fs::read_dir(&d) else {
            continue;
        };
        for item in items.flatten() {
            let meta = fs::symlink_metadata(item.path()).unwrap();
            if meta.is_dir() {
                stack.push(item.path());
            } else if meta.is_file() {
                out.insert(sha256(&fs::read(item.path()).unwrap()));
            }
        }
    }
    out
}

/// `versions` answers the same on both clients; returns A's answer.
fn versions_on_both(cl: &Cluster, rel: &str) -> Vec<Version> {
    let on_a = cl.a().versions(DOCS, rel);
    let on_b = cl.b().versions(DOCS, rel);
    assert_eq!(on_a, on_b, "A and B list different versions of {rel}");
    on_a
}

/// A modifies then deletes a file: both replaced versions are listed newest first, with
/// their size and mtime, on A and on B; they are kept in the server's version store and
/// nowhere in its browsable tree. `restore` brings back the newest on every replica,
/// `restore --version V` a chosen one, and what a restore replaces is kept in turn.
#[test]
fn versions_are_listed_kept_outside_the_tree_and_restored() {
    versions_are_listed_kept_outside_the_tree_and_restored_on(&Cluster::new(2));
}

/// The SHA-256 of every content the server keeps as a version: the files in the
/// embedded server's version store, the `versions` rows of the cluster backend; and
/// where that is, for a failure message.
fn kept_versions(cl: &Cluster) -> (BTreeSet<String>, String) {
    match cl.engines() {
        None => {
            let store = cl.server().data_dir().join(".filesync/versions");
            (contents_under(&store), store.display().to_string())
        }
        Some(engines) => {
            let rows = engines.psql("SELECT encode(hash, 'hex') FROM versions");
            let kept = rows.lines().map(str::to_owned).collect();
            (kept, "the cluster's versions table".to_owned())
        }
    }
}

/// The body of [`versions_are_listed_kept_outside_the_tree_and_restored`], on any
/// backend.
pub(crate) fn versions_are_listed_kept_outside_the_tree_and_restored_on(cl: &Cluster) {
    let since = unix_now();
    let path = cl.path_on(0, DOCS, "notes.txt");
    let v1 = pseudo_random(201, 3_000);
    let v2 = pseudo_random(202, 5_000);
    let v3 = pseudo_random(203, 7_000);
    const M1: i64 = 1_600_000_000_123_456_789;
    const M2: i64 = 1_650_000_000_987_654_321;
    files::write(&path, &v1);
    files::set_mtime_ns(&path, M1);
    cl.settle(DOCS);
    files::write(&path, &v2);
    files::set_mtime_ns(&path, M2);
    cl.settle(DOCS);
    files::write(&path, &v3);
    cl.settle(DOCS);
    fs::remove_file(&path).unwrap();
    let common = cl.settle(DOCS);
    assert!(common.is_empty(), "left over: {:?}", paths(&common));

    let listed = versions_on_both(cl, "notes.txt");
    let now = unix_now();
    assert_eq!(
        listed.iter().map(|v| v.size).collect::<Vec<_>>(),
        [v3.len() as u64, v2.len() as u64, v1.len() as u64],
        "sizes of the kept versions, newest first: {listed:#?}"
    );
    assert!(
        listed.windows(2).all(|w| w[0].version > w[1].version),
        "versions are not newest first: {listed:#?}"
    );
    assert!(
        listed.windows(2).all(|w| w[0].kept_at >= w[1].kept_at),
        "kept_at is not newest first: {listed:#?}"
    );
    for v in &listed {
        assert!(
            (since - 2..=now + 2).contains(&v.kept_at),
            "kept_at {} is not between the test's start {since} and now {now}",
            v.kept_at
        );
    }
    assert_eq!(
        (listed[1].mtime_ns, listed[2].mtime_ns),
        (M2, M1),
        "the kept versions do not have the mtimes the file had"
    );

    // Kept on the server, outside the browsable tree: no file in the folder's copy
    // (dot names included) holds an old version, the version store holds them all.
    let in_tree = contents_under(&cl.server_path(DOCS, ""));
    let (kept, store) = kept_versions(cl);
    for (name, v) in [("v1", &v1), ("v2", &v2), ("v3", &v3)] {
        assert!(
            !in_tree.contains(&sha256(v)),
            "{name} of notes.txt is kept inside the server's synced tree"
        );
        assert!(
            kept.contains(&sha256(v)),
            "{name} of notes.txt is not in {store}"
        );
    }

    cl.b().ctl_ok(["restore", DOCS, "notes.txt"]);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["notes.txt"]);
    cl.assert_file_everywhere(DOCS, "notes.txt", &v3);

    let v1_id = listed[2].version.to_string();
    cl.a()
        .ctl_ok(["restore", DOCS, "notes.txt", "--version", &v1_id]);
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["notes.txt"]);
    cl.assert_file_everywhere(DOCS, "notes.txt", &v1);

    // The restored v3 that v1 replaced is now the newest kept version.
    let listed = versions_on_both(cl, "notes.txt");
    assert_eq!(
        listed.first().map(|v| v.size),
        Some(v3.len() as u64),
        "the content a restore replaced is not the newest kept version: {listed:#?}"
    );
}

/// `restore` of a path the server keeps no version of (one that never existed, and one
/// that was created and never changed) exits 1 with a message naming the path, and
/// changes nothing.
#[test]
fn restore_without_versions_fails_naming_the_path() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "untouched.txt"), b"never changed\n");
    cl.settle(DOCS);
    for rel in ["never-existed.txt", "untouched.txt"] {
        let out = cl.b().ctl(["restore", DOCS, rel]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "restore of {rel}, which has no kept version, should exit 1: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(rel),
            "the error of restore {rel} does not name the path: {stderr}"
        );
        let out = cl.b().ctl(["restore", DOCS, rel, "--version", "1"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "restore --version 1 of {rel} should exit 1: {}",
            describe(&out)
        );
    }
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["untouched.txt"]);
    cl.assert_file_everywhere(DOCS, "untouched.txt", b"never changed\n");
}
