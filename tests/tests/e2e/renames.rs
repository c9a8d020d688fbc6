//! Renaming or moving a directory is one operation: one rename on the server and on
//! every device, and a few hundred bytes on the wire, whatever the directory holds.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::tree::conflict_copies;
use filesync_tests::{Cluster, Counters, SYNC_TIMEOUT, files};

use crate::paths;

const BIG_SYNC: Duration = Duration::from_secs(300);

/// Writes `dirs` × `per_dir` small files under `top` on client 0; returns the count.
fn fill(cl: &Cluster, top: &str, dirs: usize, per_dir: usize) -> usize {
    let root = cl.a().folder_dir(DOCS);
    for d in 0..dirs {
        fs::create_dir_all(root.join(format!("{top}/d{d:03}"))).unwrap();
        for f in 0..per_dir {
            let rel = format!("{top}/d{d:03}/f{f:03}.txt");
            files::write(&root.join(&rel), format!("{rel}\n"));
        }
    }
    dirs * per_dir
}

fn inode(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .ino()
}

/// Wire bytes a counter pair grew by over a step.
fn wire(before: &Counters, after: &Counters) -> (u64, u64) {
    (
        after.wire_bytes_sent - before.wire_bytes_sent,
        after.wire_bytes_received - before.wire_bytes_received,
    )
}

/// The test: a directory of 10,000 files renamed on A costs a few kilobytes on
/// the wire each way, and every replica (server and B) renamed its own directory: the
/// files there keep their inodes.
#[test]
fn renaming_a_directory_of_10000_files_sends_a_few_kilobytes() {
    let cl = Cluster::new(2);
    let n = fill(&cl, "photos", 100, 100);
    assert_eq!(n, 10_000);
    cl.settle_clients(DOCS, &cl.all_clients(), BIG_SYNC);
    let probe = "d042/f042.txt";
    let b_inode = inode(&cl.path_on(1, DOCS, &format!("photos/{probe}")));
    let server_inode = inode(&cl.server_path(DOCS, &format!("photos/{probe}")));
    let (a0, b0) = (cl.a().counters(DOCS), cl.b().counters(DOCS));

    fs::rename(
        cl.path_on(0, DOCS, "photos"),
        cl.path_on(0, DOCS, "photos-2024"),
    )
    .unwrap();
    let common = cl.settle_clients(DOCS, &cl.all_clients(), BIG_SYNC);

    assert!(!common.keys().any(|p| p.starts_with("photos/")));
    let moved = common
        .keys()
        .filter(|p| p.starts_with("photos-2024/") && p.ends_with(".txt"))
        .count();
    assert_eq!(moved, n, "not every file arrived under the new name");
    cl.assert_file_everywhere(
        DOCS,
        &format!("photos-2024/{probe}"),
        format!("photos/{probe}\n").as_bytes(),
    );
    let (a1, b1) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    let (a_sent, a_received) = wire(&a0, &a1);
    let (b_sent, b_received) = wire(&b0, &b1);
    // The rename must cross A's link and B's: nothing counted there would mean the
    // counters count nothing, and the budget below would prove nothing.
    assert!(
        a_sent > 0 && b_received > 0,
        "the rename was not counted on the wire: A sent {a_sent}, B received {b_received}"
    );
    let budget = 16 * 1024;
    for (what, bytes) in [
        ("A sent", a_sent),
        ("A received", a_received),
        ("B sent", b_sent),
        ("B received", b_received),
    ] {
        assert!(
            bytes < budget,
            "{what} {bytes} wire bytes for renaming a directory of {n} files (budget {budget})"
        );
    }
    assert_eq!(
        inode(&cl.path_on(1, DOCS, &format!("photos-2024/{probe}"))),
        b_inode,
        "B re-created the files instead of renaming its directory"
    );
    assert_eq!(
        inode(&cl.server_path(DOCS, &format!("photos-2024/{probe}"))),
        server_inode,
        "the server re-created the files instead of renaming its directory"
    );
}

/// A move into a new parent (`mkdir archive && mv project archive/old-project`) is one
/// rename too, and a file edited in the same breath travels as an edit of the moved file.
#[test]
fn move_into_new_parent_with_an_edit_inside() {
    move_into_new_parent_with_an_edit_inside_on(&Cluster::new(2));
}

/// The body of [`move_into_new_parent_with_an_edit_inside`], on any backend (the
/// cluster backend has no server tree whose inodes could tell a rename).
pub(crate) fn move_into_new_parent_with_an_edit_inside_on(cl: &Cluster) {
    fill(cl, "project", 5, 20);
    cl.settle(DOCS);
    let b_inode = inode(&cl.path_on(1, DOCS, "project/d001/f001.txt"));
    let server_inode = cl
        .engines()
        .is_none()
        .then(|| inode(&cl.server_path(DOCS, "project/d001/f001.txt")));
    let b0 = cl.b().counters(DOCS);

    let edit = b"edited after the move\n";
    fs::create_dir(cl.path_on(0, DOCS, "archive")).unwrap();
    fs::rename(
        cl.path_on(0, DOCS, "project"),
        cl.path_on(0, DOCS, "archive/old-project"),
    )
    .unwrap();
    files::write(
        &cl.path_on(0, DOCS, "archive/old-project/d002/f002.txt"),
        edit,
    );
    let common = cl.settle(DOCS);
    assert!(!common.keys().any(|p| p.starts_with("project")));
    cl.assert_file_everywhere(DOCS, "archive/old-project/d002/f002.txt", edit);
    cl.assert_file_everywhere(
        DOCS,
        "archive/old-project/d003/f004.txt",
        b"project/d003/f004.txt\n",
    );
    assert_eq!(
        inode(&cl.path_on(1, DOCS, "archive/old-project/d001/f001.txt")),
        b_inode,
        "B re-created the files instead of renaming its directory"
    );
    if let Some(server_inode) = server_inode {
        assert_eq!(
            inode(&cl.server_path(DOCS, "archive/old-project/d001/f001.txt")),
            server_inode,
            "the server re-created the files instead of renaming its directory"
        );
    }
    // B must download the edit (nowhere else to get it), and nothing more than about it.
    let received = cl.b().counters(DOCS).content_bytes_received - b0.content_bytes_received;
    assert!(
        (edit.len() as u64..1024).contains(&received),
        "B downloaded {received} content bytes; only the edited file's {} bytes were new",
        edit.len()
    );
}

/// While A renames a directory, B (offline) edits a file in it and adds one: after B
/// reconnects, both changes are in the renamed directory everywhere, nothing is left at
/// the old name, and no conflict copy appears. Both orders of reconnecting.
#[test]
fn rename_races_with_edits_on_another_device() {
    for b_first in [false, true] {
        let cl = Cluster::new(2);
        fill(&cl, "shared", 3, 10);
        cl.settle(DOCS);
        cl.pause(0, DOCS);
        cl.pause(1, DOCS);
        fs::rename(cl.path_on(0, DOCS, "shared"), cl.path_on(0, DOCS, "team")).unwrap();
        files::write(&cl.path_on(1, DOCS, "shared/d001/f005.txt"), b"B's edit\n");
        files::write(
            &cl.path_on(1, DOCS, "shared/d000/new.txt"),
            b"B's new file\n",
        );
        if b_first {
            cl.resume(1, DOCS);
            cl.settle_clients(DOCS, &[1], Duration::from_secs(60));
            cl.resume(0, DOCS);
        } else {
            cl.resume(0, DOCS);
            cl.settle_clients(DOCS, &[0], Duration::from_secs(60));
            cl.resume(1, DOCS);
        }
        let common = cl.settle(DOCS);
        cl.assert_file_everywhere(DOCS, "team/d001/f005.txt", b"B's edit\n");
        cl.assert_file_everywhere(DOCS, "team/d000/new.txt", b"B's new file\n");
        cl.assert_file_everywhere(DOCS, "team/d002/f009.txt", b"shared/d002/f009.txt\n");
        let stray: Vec<&str> = paths(&common)
            .into_iter()
            .filter(|p| p.starts_with("shared") || p.contains("sync-conflict"))
            .collect();
        assert!(
            stray.is_empty(),
            "b_first={b_first}: left at the old name or as conflicts: {stray:?}"
        );
    }
}

/// A rename onto a name that has history (a directory deleted there before) and a
/// rename made in the server's own copy both converge, and lose nothing.
#[test]
fn rename_onto_a_used_name_and_in_the_server_copy() {
    let cl = Cluster::new(2);
    fill(&cl, "src", 2, 5);
    fs::create_dir_all(cl.path_on(0, DOCS, "dst/old")).unwrap();
    files::write(
        &cl.path_on(0, DOCS, "dst/old/gone.txt"),
        b"deleted before\n",
    );
    cl.settle(DOCS);
    fs::remove_dir_all(cl.path_on(0, DOCS, "dst")).unwrap();
    cl.settle(DOCS);

    fs::rename(cl.path_on(0, DOCS, "src"), cl.path_on(0, DOCS, "dst")).unwrap();
    let common = cl.settle(DOCS);
    assert!(!common.keys().any(|p| p.starts_with("src")));
    assert!(!common.contains_key("dst/old/gone.txt"));
    cl.assert_file_everywhere(DOCS, "dst/d001/f004.txt", b"src/d001/f004.txt\n");

    let server_dir = cl.server_dir(DOCS).expect("server copy");
    fs::rename(server_dir.join("dst"), server_dir.join("renamed-on-server")).unwrap();
    let common = cl.settle(DOCS);
    assert!(!common.keys().any(|p| p.starts_with("dst")));
    cl.assert_file_everywhere(
        DOCS,
        "renamed-on-server/d000/f000.txt",
        b"src/d000/f000.txt\n",
    );
    let files_left = common
        .iter()
        .filter(|(_, e)| e.kind == filesync_tests::Kind::File)
        .count();
    assert_eq!(files_left, 10, "{:?}", paths(&common));
}

/// A renames a directory while offline onto a name that B has meanwhile created: the
/// server cannot take it as one rename, so it goes path by path, and both directories'
/// files end up under the name everywhere (found by the model test: the rename was once
/// marked synced and held the old paths forever).
#[test]
fn offline_rename_onto_a_name_created_elsewhere() {
    let cl = Cluster::new(2);
    fill(&cl, "src", 2, 3);
    cl.settle(DOCS);
    cl.pause(0, DOCS);
    files::write(&cl.path_on(1, DOCS, "target/from-b.txt"), b"B's file\n");
    cl.settle_clients(DOCS, &[1], Duration::from_secs(60));
    fs::rename(cl.path_on(0, DOCS, "src"), cl.path_on(0, DOCS, "target")).unwrap();
    cl.resume(0, DOCS);
    let common = cl.settle(DOCS);
    assert!(
        !common.keys().any(|p| p.starts_with("src")),
        "{:?}",
        paths(&common)
    );
    cl.assert_file_everywhere(DOCS, "target/from-b.txt", b"B's file\n");
    cl.assert_file_everywhere(DOCS, "target/d001/f002.txt", b"src/d001/f002.txt\n");
}

/// The soak's drift (issue 8): a directory renamed away and another renamed into its old
/// name while a device was away. Entries keep their sequence numbers through a rename,
/// so the device must take in both renames before the entries sent at their new paths:
/// it then holds exactly the server's tree, and never asks for content the server does
/// not have there.
#[test]
fn a_device_away_across_a_rename_out_and_in_gets_the_servers_tree() {
    let cl = Cluster::new(2);
    let a = cl.a().folder_dir(DOCS);
    fs::create_dir_all(a.join("old")).unwrap();
    files::write(&a.join("old/x.txt"), "x\n");
    cl.settle(DOCS);

    cl.pause(1, DOCS);
    fs::create_dir_all(a.join("other")).unwrap();
    files::write(&a.join("other/y.txt"), "y\n");
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    fs::rename(a.join("old"), a.join("new")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    fs::rename(a.join("other"), a.join("old")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    assert_server_renamed_dirs(&cl, 2);

    cl.resume(1, DOCS);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "new/x.txt", b"x\n");
    cl.assert_file_everywhere(DOCS, "old/y.txt", b"y\n");
    cl.assert_absent_everywhere(DOCS, "new/y.txt");
    let b_log = cl.b().log_text();
    assert!(
        !b_log.contains("no longer has that content"),
        "B asked for content the server does not have:\n{b_log}"
    );
}

/// The soak's last stuck client (issue 8): while a device was away, the server renamed a
/// directory to below a name where the device made a file of its own. The rename cannot
/// be applied whole there, so it is applied path by path; the device's file and the
/// server's directory of that name are kept both, and every replica converges.
#[test]
fn a_rename_to_below_a_file_made_while_away_is_applied_path_by_path() {
    let cl = Cluster::new(2);
    let a = cl.a().folder_dir(DOCS);
    fs::create_dir_all(a.join("m0/g")).unwrap();
    files::write(&a.join("m0/g/x.txt"), "x\n");
    fs::create_dir_all(a.join("d1")).unwrap();
    cl.settle(DOCS);

    cl.pause(1, DOCS);
    fs::create_dir(a.join("d1/f")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    fs::rename(a.join("m0/g"), a.join("d1/f/g")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    assert_server_renamed_dirs(&cl, 1);
    files::write(&cl.path_on(1, DOCS, "d1/f"), "B's file\n");

    cl.resume(1, DOCS);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "d1/f/g/x.txt", b"x\n");
    cl.assert_absent_everywhere(DOCS, "m0/g");
    let copies = conflict_copies(&common);
    assert!(
        copies.len() == 1 && copies[0].starts_with("d1/f.sync-conflict-"),
        "B's file is kept beside the directory: {common:?}"
    );
    cl.assert_file_everywhere(DOCS, copies[0], b"B's file\n");
}

/// Found by the 2-minute soak: while a device was away, the server renamed `d/s` to
/// `p/s`, then `d` to `q`, then deleted `p`. The device applies the first rename path by
/// path (its target's parent is gone), so `d/s` gets the server's tombstones; the second
/// rename, whole on disk, carries `d/s` to `q/s`. Those tombstones must go along to
/// `q/s`, or the device keeps there, for ever, a directory no one else has.
#[test]
fn tombstones_of_a_rename_applied_path_by_path_follow_a_later_rename_of_the_parent() {
    let cl = Cluster::new(2);
    let a = cl.a().folder_dir(DOCS);
    fs::create_dir_all(a.join("d/s")).unwrap();
    files::write(&a.join("d/s/x.txt"), "x\n");
    files::write(&a.join("d/y.txt"), "y\n");
    cl.settle(DOCS);

    cl.pause(1, DOCS);
    fs::create_dir(a.join("p")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    fs::rename(a.join("d/s"), a.join("p/s")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    fs::rename(a.join("d"), a.join("q")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    fs::remove_dir_all(a.join("p")).unwrap();
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    assert_server_renamed_dirs(&cl, 2);

    cl.resume(1, DOCS);
    let common = cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "q/y.txt", b"y\n");
    for gone in ["d", "p", "q/s"] {
        cl.assert_absent_everywhere(DOCS, gone);
    }
    assert_eq!(
        common.keys().collect::<Vec<_>>(),
        ["q", "q/y.txt"],
        "every replica holds exactly the server's tree"
    );
}

/// The server took `count` moves as directory renames (not as deletes and creates): the
/// tests above are about how a device applies those.
fn assert_server_renamed_dirs(cl: &Cluster, count: usize) {
    let renamed = cl
        .server()
        .log_text()
        .matches("renamed a directory")
        .count();
    assert_eq!(renamed, count, "directory renames on the server");
}
