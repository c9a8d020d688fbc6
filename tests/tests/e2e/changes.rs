//! Every kind of change made on one device (or in the server's copy) reaches every other
//! replica, and renames and copies move no file content over the wire.

use std::fs;

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::{Cluster, Counters, Kind, tree};

use crate::paths;

/// Content, counted per client before and after a step.
fn counters(cl: &Cluster) -> (Counters, Counters) {
    (cl.a().counters(DOCS), cl.b().counters(DOCS))
}

/// How much a counter grew over a step; counters only ever grow while a daemon runs.
fn grew(what: &str, before: u64, after: u64) -> u64 {
    after
        .checked_sub(before)
        .unwrap_or_else(|| panic!("{what} went backwards: {before} -> {after}"))
}

/// Creates `rel` on A with `len` fresh bytes and settles; checks that the counters the
/// no-transfer tests rely on do count a real upload, so those tests cannot pass merely
/// because nothing counts.
fn upload_fresh(cl: &Cluster, rel: &str, seed: u64, len: usize) -> Vec<u8> {
    let content = pseudo_random(seed, len);
    let (a0, b0) = counters(cl);
    files::write(&cl.path_on(0, DOCS, rel), &content);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, rel, &content);
    let (a1, b1) = counters(cl);
    let len = len as u64;
    for (what, before, after) in [
        (
            "A content_bytes_sent",
            a0.content_bytes_sent,
            a1.content_bytes_sent,
        ),
        ("A wire_bytes_sent", a0.wire_bytes_sent, a1.wire_bytes_sent),
        (
            "B content_bytes_received",
            b0.content_bytes_received,
            b1.content_bytes_received,
        ),
        (
            "B wire_bytes_received",
            b0.wire_bytes_received,
            b1.wire_bytes_received,
        ),
    ] {
        assert!(
            grew(what, before, after) >= len,
            "a new {len}-byte file went from A to B but {what} went {before} -> {after}"
        );
    }
    assert!(
        a1.files_uploaded > a0.files_uploaded,
        "A's files_uploaded did not count: {a1:?}"
    );
    assert!(
        b1.files_downloaded > b0.files_downloaded,
        "B's files_downloaded did not count: {b1:?}"
    );
    content
}

/// Scenario 1: A new file on A reaches the server's copy and B, byte for byte.
#[test]
fn new_file_reaches_server_and_other_client() {
    new_file_reaches_server_and_other_client_on(&Cluster::new(2));
}

/// The body of [`new_file_reaches_server_and_other_client`], on any backend.
pub(crate) fn new_file_reaches_server_and_other_client_on(cl: &Cluster) {
    let content = upload_fresh(cl, "hello.bin", 1, 100_000);
    let small = b"hello, world\n";
    files::write(&cl.path_on(0, DOCS, "notes/hello.txt"), small);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes/hello.txt", small);
    cl.assert_file_everywhere(DOCS, "hello.bin", &content);
    assert_eq!(paths(&common), ["hello.bin", "notes", "notes/hello.txt"]);
}

/// Scenario 2: A file deleted on A is deleted on the server and on B, and nothing else is.
#[test]
fn deleted_file_is_removed_everywhere() {
    deleted_file_is_removed_everywhere_on(&Cluster::new(2));
}

/// The body of [`deleted_file_is_removed_everywhere`], on any backend.
pub(crate) fn deleted_file_is_removed_everywhere_on(cl: &Cluster) {
    files::write(&cl.path_on(0, DOCS, "doomed.txt"), b"delete me\n");
    files::write(&cl.path_on(0, DOCS, "keep.txt"), b"keep me\n");
    cl.settle(DOCS);
    let b0 = cl.b().counters(DOCS);

    fs::remove_file(cl.path_on(0, DOCS, "doomed.txt")).unwrap();
    let common = cl.settle(DOCS);
    cl.assert_absent_everywhere(DOCS, "doomed.txt");
    cl.assert_file_everywhere(DOCS, "keep.txt", b"keep me\n");
    assert_eq!(paths(&common), ["keep.txt"]);
    let b1 = cl.b().counters(DOCS);
    assert!(
        b1.deletes_applied > b0.deletes_applied,
        "B's deletes_applied did not count: {b1:?}"
    );
}

/// Scenario 3: A rename into a new subdirectory on A is a rename everywhere, and no file content
/// crosses the wire for it: neither from A to the server nor from the server to B.
#[test]
fn rename_into_new_subdir_sends_no_content() {
    let cl = Cluster::new(2);
    let len = 512 * 1024;
    let content = upload_fresh(&cl, "report.bin", 3, len);
    let (a0, b0) = counters(&cl);

    let target = cl.path_on(0, DOCS, "archive/2024/report-final.bin");
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::rename(cl.path_on(0, DOCS, "report.bin"), &target).unwrap();
    let common = cl.settle(DOCS);
    cl.assert_absent_everywhere(DOCS, "report.bin");
    cl.assert_file_everywhere(DOCS, "archive/2024/report-final.bin", &content);
    assert_eq!(
        paths(&common),
        ["archive", "archive/2024", "archive/2024/report-final.bin"]
    );

    let (a1, b1) = counters(&cl);
    assert_eq!(
        a1.content_bytes_sent, a0.content_bytes_sent,
        "A re-sent content for a rename"
    );
    assert_eq!(
        b1.content_bytes_received, b0.content_bytes_received,
        "B downloaded content for a rename"
    );
    // The same on the raw connections, which also covers the server's side of both:
    // a rename is a few hundred bytes of metadata, not the file again.
    let budget = (len / 4) as u64;
    let sent = grew("A wire_bytes_sent", a0.wire_bytes_sent, a1.wire_bytes_sent);
    assert!(
        sent < budget,
        "A sent {sent} wire bytes for renaming a {len}-byte file"
    );
    let received = grew(
        "B wire_bytes_received",
        b0.wire_bytes_received,
        b1.wire_bytes_received,
    );
    assert!(
        received < budget,
        "B received {received} wire bytes for renaming a {len}-byte file"
    );
}

/// Scenario 4: A file rewritten on A, then edited in place (same size), has the new content
/// everywhere after each step.
#[test]
fn modified_file_propagates_new_content() {
    modified_file_propagates_new_content_on(&Cluster::new(2));
}

/// The body of [`modified_file_propagates_new_content`], on any backend.
pub(crate) fn modified_file_propagates_new_content_on(cl: &Cluster) {
    let path = cl.path_on(0, DOCS, "draft.bin");
    files::write(&path, pseudo_random(40, 40_000));
    cl.settle(DOCS);

    let v2 = pseudo_random(41, 60_000);
    files::write(&path, &v2);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "draft.bin", &v2);

    // An in-place edit keeps size and inode: only the content and mtime tell.
    let mut v3 = v2.clone();
    v3[30_000..30_016].copy_from_slice(b"edited in place!");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(30_000)).unwrap();
        f.write_all(b"edited in place!").unwrap();
    }
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "draft.bin", &v3);
    assert_eq!(paths(&common), ["draft.bin"]);
}

/// Scenario 5: A new file whose content already exists elsewhere in the folder arrives without
/// its content crossing the wire: B builds it from bytes it already has.
#[test]
fn copy_of_existing_content_sends_no_content() {
    let cl = Cluster::new(2);
    let len = 512 * 1024;
    let content = upload_fresh(&cl, "originals/photo.raw", 5, len);
    let (a0, b0) = counters(&cl);

    files::write(&cl.path_on(0, DOCS, "copies/photo-copy.raw"), &content);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "copies/photo-copy.raw", &content);
    cl.assert_file_everywhere(DOCS, "originals/photo.raw", &content);
    assert_eq!(
        paths(&common),
        [
            "copies",
            "copies/photo-copy.raw",
            "originals",
            "originals/photo.raw"
        ]
    );

    let (a1, b1) = counters(&cl);
    assert_eq!(
        a1.content_bytes_sent, a0.content_bytes_sent,
        "A uploaded a copy's content"
    );
    assert_eq!(
        b1.content_bytes_received, b0.content_bytes_received,
        "B downloaded a copy's content"
    );
    assert!(
        grew(
            "B content_bytes_reused",
            b0.content_bytes_reused,
            b1.content_bytes_reused
        ) >= len as u64,
        "B built a {len}-byte copy from local bytes but content_bytes_reused went {} -> {}",
        b0.content_bytes_reused,
        b1.content_bytes_reused
    );
}

/// Scenario 6: A file written directly into the server's browsable copy reaches both clients.
#[test]
fn file_added_in_server_copy_reaches_clients() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "seed.txt"), b"seed\n");
    cl.settle(DOCS);

    let content = pseudo_random(6, 20_000);
    files::write(&cl.server_path(DOCS, "from-server/upload.bin"), &content);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "from-server/upload.bin", &content);
    assert_eq!(
        paths(&common),
        ["from-server", "from-server/upload.bin", "seed.txt"]
    );
}

/// Scenario 7: A file deleted directly in the server's copy is deleted on both clients.
#[test]
fn file_deleted_in_server_copy_is_removed_on_clients() {
    let cl = Cluster::new(2);
    files::write(
        &cl.path_on(0, DOCS, "gone.txt"),
        b"to be deleted on the server\n",
    );
    files::write(&cl.path_on(0, DOCS, "stays.txt"), b"stays\n");
    cl.settle(DOCS);

    fs::remove_file(cl.server_path(DOCS, "gone.txt")).unwrap();
    let common = cl.settle(DOCS);
    cl.assert_absent_everywhere(DOCS, "gone.txt");
    cl.assert_file_everywhere(DOCS, "stays.txt", b"stays\n");
    assert_eq!(paths(&common), ["stays.txt"]);
}

/// Scenario 9: A nested tree of 1,000 files in 100 directories, plus 10 empty directories,
/// created on A arrives whole everywhere.
#[test]
fn thousand_files_in_nested_tree_converge() {
    let cl = Cluster::new(2);
    let root = cl.a().folder_dir(DOCS);
    let mut expected = filesync_tests::Manifest::new();
    let dir_entry = || filesync_tests::Entry {
        kind: Kind::Dir,
        digest: String::new(),
        exec: false,
    };
    for t in 0..10u64 {
        expected.insert(format!("t{t}"), dir_entry());
        expected.insert(format!("t{t}/empty"), dir_entry());
        fs::create_dir_all(root.join(format!("t{t}/empty"))).unwrap();
        for s in 0..10u64 {
            let dir = if s == 0 {
                format!("t{t}")
            } else {
                format!("t{t}/s{s}")
            };
            expected.insert(dir.clone(), dir_entry());
            for f in 0..10u64 {
                let rel = format!("{dir}/f{f}.dat");
                let seed = t * 100 + s * 10 + f;
                let mut content = rel.clone().into_bytes();
                content.extend(pseudo_random(seed, 100 + (seed as usize * 37) % 2000));
                files::write(&root.join(&rel), &content);
                expected.insert(
                    rel,
                    filesync_tests::Entry {
                        kind: Kind::File,
                        digest: tree::sha256(&content),
                        exec: false,
                    },
                );
            }
        }
    }
    assert_eq!(
        expected.values().filter(|e| e.kind == Kind::File).count(),
        1000
    );
    assert_eq!(
        expected.values().filter(|e| e.kind == Kind::Dir).count(),
        110
    );

    let common = cl.settle_clients(DOCS, &cl.all_clients(), std::time::Duration::from_secs(180));
    if common != expected {
        panic!(
            "the synced tree is not the tree written on A: {}",
            tree::diff(&expected, &common)
        );
    }
}

/// Scenario 14: An empty directory created on one client appears on the others, and its delete
/// follows it; in both directions (A to B, B to A).
#[test]
fn empty_directory_create_and_delete_propagate() {
    let cl = Cluster::new(2);
    fs::create_dir(cl.path_on(0, DOCS, "empty-from-a")).unwrap();
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["empty-from-a"]);
    assert!(files::list_dir(&cl.path_on(1, DOCS, "empty-from-a")).is_empty());
    assert!(cl.server_path(DOCS, "empty-from-a").is_dir());

    fs::remove_dir(cl.path_on(0, DOCS, "empty-from-a")).unwrap();
    let common = cl.settle(DOCS);
    assert!(common.is_empty(), "left over: {:?}", paths(&common));
    cl.assert_absent_everywhere(DOCS, "empty-from-a");

    fs::create_dir_all(cl.path_on(1, DOCS, "from-b/inner")).unwrap();
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["from-b", "from-b/inner"]);
    assert!(cl.path_on(0, DOCS, "from-b/inner").is_dir());

    fs::remove_dir_all(cl.path_on(1, DOCS, "from-b")).unwrap();
    let common = cl.settle(DOCS);
    assert!(common.is_empty(), "left over: {:?}", paths(&common));
    cl.assert_absent_everywhere(DOCS, "from-b");
}

/// Scenario 15: The executable bit follows the file: set at creation, set later, cleared later.
#[test]
fn executable_bit_propagates() {
    let cl = Cluster::new(2);
    let tool = cl.path_on(0, DOCS, "tool.sh");
    let born = cl.path_on(0, DOCS, "born-exec.sh");
    files::write(&tool, b"#!/bin/sh\necho tool\n");
    files::set_exec(&tool, false);
    files::write(&born, b"#!/bin/sh\necho born\n");
    files::set_exec(&born, true);
    let common = cl.settle(DOCS);
    assert!(common["born-exec.sh"].exec, "born-exec.sh lost its +x");
    assert!(!common["tool.sh"].exec, "tool.sh gained +x");

    files::set_exec(&tool, true);
    let common = cl.settle(DOCS);
    assert!(
        common["tool.sh"].exec,
        "chmod +x on A did not reach B and the server"
    );

    files::set_exec(&tool, false);
    let common = cl.settle(DOCS);
    assert!(
        !common["tool.sh"].exec,
        "chmod -x on A did not reach B and the server"
    );
    cl.assert_file_everywhere(DOCS, "tool.sh", b"#!/bin/sh\necho tool\n");
}
