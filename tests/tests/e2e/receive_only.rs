//! Receive-only folders: what the device changes stays on it, as local changes that
//! status lists and that are never pending, so `wait` returns once everything from the
//! server is applied; the server and the other devices never get them; and
//! `filesyncctl revert` puts the server's version back, moving the local versions into
//! the folder's `.filesync-reverted/` instead of deleting them.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::node::describe;
use filesync_tests::{Cluster, poll_until};
use serde_json::Value;

/// The receive-only client.
const B: usize = 1;

/// Adds client `i`'s `docs` with `--mode receive-only`.
fn add_receive_only(cl: &Cluster, i: usize) {
    let mut args = cl.add_args(i, DOCS);
    args.extend(["--mode".into(), "receive-only".into()]);
    cl.client(i).ctl_ok(args);
}

/// `wait` on the receive-only client must exit 0 although it has local changes.
fn wait_on_b(cl: &Cluster) {
    let out = cl.client(B).wait(DOCS, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "wait on the receive-only folder failed: {}",
        describe(&out)
    );
}

/// B's status of docs: idle, nothing pending up, and exactly `paths` as local changes.
fn assert_local_changes(cl: &Cluster, paths: &[&str]) -> Value {
    let status = cl.client(B).folder_status(DOCS);
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["pending_up_files"], 0, "{status}");
    assert_eq!(status["local_changes"]["count"], paths.len(), "{status}");
    assert_eq!(
        status["local_changes"]["paths"],
        serde_json::json!(paths),
        "{status}"
    );
    let reason = match paths {
        [] => "",
        _ => "this folder is receive-only",
    };
    assert_eq!(status["local_changes"]["reason"], reason, "{status}");
    status
}

/// B never pushed anything, nor sent file content: its counters since it started.
fn assert_b_never_pushed(cl: &Cluster) {
    let sent = cl.client(B).counters(DOCS);
    assert_eq!(
        (sent.pushes, sent.files_uploaded, sent.content_bytes_sent),
        (0, 0, 0),
        "the receive-only device sent something: {sent:?}"
    );
}

/// Nothing of B's changes reached the server or A.
fn assert_not_sent(cl: &Cluster, edit: &[u8], gone: &[u8]) {
    assert_b_never_pushed(cl);
    for path in [
        cl.server_path(DOCS, "edit.txt"),
        cl.path_on(0, DOCS, "edit.txt"),
    ] {
        files::assert_file(&path, edit);
    }
    for path in [
        cl.server_path(DOCS, "gone.txt"),
        cl.path_on(0, DOCS, "gone.txt"),
    ] {
        files::assert_file(&path, gone);
    }
    files::assert_absent(&cl.server_path(DOCS, "new.txt"));
    files::assert_absent(&cl.path_on(0, DOCS, "new.txt"));
}

/// Waits until B has received every change the server has of docs (B's `seq` is the
/// server's), applied or not: `wait` alone could pass before a change reaches B.
fn received_all(cl: &Cluster) {
    poll_until(Duration::from_secs(20), || {
        let server = cl.server().status_json();
        let latest = server["server"]["folders"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == DOCS))
            .map(|f| f["seq"].clone());
        let on_b = cl.client(B).folder_status(DOCS)["seq"].clone();
        match latest {
            Some(seq) if seq == on_b => Ok(()),
            other => Err(format!("B is at {on_b}, the server at {other:?}")),
        }
    })
    .unwrap_or_else(|why| panic!("B did not receive the server's changes: {why}"));
}

/// The directories `revert` made in B's folder.
fn reverted_dirs(cl: &Cluster) -> Vec<PathBuf> {
    let top = cl.path_on(B, DOCS, ".filesync-reverted");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&top)
        .unwrap_or_else(|e| panic!("revert made no {}: {e}", top.display()))
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

/// A receive-only device with an edited file and a new one is idle with two local
/// changes, `wait` exits 0, and neither reaches the server or the other device; a later
/// change from the server still arrives; a local delete is one more local change; and
/// `revert` brings back the server's content of the edited and the deleted file and
/// moves the new file (and the edited version) aside with their content intact.
#[test]
fn local_changes_of_a_receive_only_folder_stay_local_until_reverted() {
    let cl = Cluster::without_folders(2, Some("open"));
    cl.add_folder(0, DOCS);
    add_receive_only(&cl, B);
    let (edit_v1, gone_v1) = (b"edit, as the server has it\n", b"deleted on B only\n");
    files::write(&cl.path_on(0, DOCS, "edit.txt"), edit_v1);
    files::write(&cl.path_on(0, DOCS, "gone.txt"), gone_v1);
    files::write(&cl.path_on(0, DOCS, "keep.txt"), b"keep v1\n");
    cl.settle(DOCS);

    cl.note("B edits edit.txt and makes new.txt");
    let (edit_b, new_b) = (b"edited on B\n", b"made on B\n");
    files::write(&cl.path_on(B, DOCS, "edit.txt"), edit_b);
    files::write(&cl.path_on(B, DOCS, "new.txt"), new_b);
    wait_on_b(&cl);
    assert_local_changes(&cl, &["edit.txt", "new.txt"]);
    let human = cl.client(B).ctl_ok(["status", DOCS]);
    assert!(
        human.contains("2 changes not uploaded: this folder is receive-only"),
        "{human}"
    );
    assert!(cl.a().wait(DOCS, Duration::from_secs(20)).status.success());
    assert_not_sent(&cl, edit_v1, gone_v1);

    cl.note("A changes keep.txt and makes later.txt");
    files::write(&cl.path_on(0, DOCS, "keep.txt"), b"keep v2\n");
    files::write(&cl.path_on(0, DOCS, "later.txt"), b"later from A\n");
    let on_b_only = |p: &str| p == "edit.txt" || p == "new.txt";
    cl.settle_excluding(DOCS, &on_b_only);
    files::assert_file(&cl.path_on(B, DOCS, "keep.txt"), b"keep v2\n");
    files::assert_file(&cl.path_on(B, DOCS, "later.txt"), b"later from A\n");
    files::assert_file(&cl.path_on(B, DOCS, "edit.txt"), edit_b);
    files::assert_file(&cl.path_on(B, DOCS, "new.txt"), new_b);
    assert_not_sent(&cl, edit_v1, gone_v1);

    cl.note("B deletes gone.txt");
    fs::remove_file(cl.path_on(B, DOCS, "gone.txt")).unwrap();
    wait_on_b(&cl);
    assert_local_changes(&cl, &["edit.txt", "gone.txt", "new.txt"]);
    assert!(cl.a().wait(DOCS, Duration::from_secs(20)).status.success());
    assert_not_sent(&cl, edit_v1, gone_v1);

    cl.note("B reverts");
    let said = cl.client(B).ctl_ok(["revert", DOCS]);
    let dirs = reverted_dirs(&cl);
    assert_eq!(dirs.len(), 1, "one revert, one directory: {dirs:?}");
    let aside = &dirs[0];
    assert!(
        said.contains(&aside.display().to_string()),
        "revert does not say where the local versions went ({}): {said}",
        aside.display()
    );
    files::assert_file(&aside.join("new.txt"), new_b);
    files::assert_file(&aside.join("edit.txt"), edit_b);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "edit.txt", edit_v1);
    cl.assert_file_everywhere(DOCS, "gone.txt", gone_v1);
    cl.assert_absent_everywhere(DOCS, "new.txt");
    assert_local_changes(&cl, &[]);
    // What went aside stays there, out of sync.
    files::assert_file(&aside.join("new.txt"), new_b);
    files::assert_absent(&cl.server_path(DOCS, ".filesync-reverted"));
    assert_b_never_pushed(&cl);
}

/// Local changes that meet the server's own: an edit of a file the server then
/// deletes, an edit of a file the server then changes, a directory renamed here, a new
/// directory with a file. None of them keeps the folder from being idle, none is sent,
/// and `revert` undoes each: the edited file goes aside (the server has none), the
/// server's edit wins the name and B's is a conflict copy (a local change) that goes
/// aside, the renamed directory is back under its old name and gone from the new one,
/// the new directory's file goes aside.
#[test]
fn local_changes_meeting_server_changes_never_block_wait() {
    let cl = Cluster::without_folders(2, Some("open"));
    cl.add_folder(0, DOCS);
    add_receive_only(&cl, B);
    files::write(&cl.path_on(0, DOCS, "x.txt"), b"x from A\n");
    files::write(&cl.path_on(0, DOCS, "d/f.txt"), b"f from A\n");
    files::write(&cl.path_on(0, DOCS, "c.txt"), b"c v1 from A\n");
    cl.settle(DOCS);

    cl.note("B edits x.txt and c.txt, renames d to e, makes n/g.txt");
    files::write(&cl.path_on(B, DOCS, "x.txt"), b"x edited on B\n");
    files::write(&cl.path_on(B, DOCS, "c.txt"), b"c edited on B\n");
    fs::rename(cl.path_on(B, DOCS, "d"), cl.path_on(B, DOCS, "e")).unwrap();
    files::write(&cl.path_on(B, DOCS, "n/g.txt"), b"g made on B\n");
    wait_on_b(&cl);
    cl.note("A deletes x.txt and edits c.txt");
    fs::remove_file(cl.path_on(0, DOCS, "x.txt")).unwrap();
    files::write(&cl.path_on(0, DOCS, "c.txt"), b"c v2 from A\n");
    assert!(cl.a().wait(DOCS, Duration::from_secs(20)).status.success());
    files::assert_absent(&cl.server_path(DOCS, "x.txt"));
    received_all(&cl);
    wait_on_b(&cl);
    files::assert_file(&cl.path_on(B, DOCS, "c.txt"), b"c v2 from A\n");
    let copies: Vec<String> = files::list_dir(&cl.path_on(B, DOCS, ""))
        .into_iter()
        .filter(|name| name.starts_with("c.sync-conflict-"))
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "B's edit of c.txt as one conflict copy: {copies:?}"
    );
    let copy = copies[0].as_str();
    files::assert_file(&cl.path_on(B, DOCS, copy), b"c edited on B\n");
    let mut changed = vec![
        copy, "d", "d/f.txt", "e", "e/f.txt", "n", "n/g.txt", "x.txt",
    ];
    changed.sort();
    assert_local_changes(&cl, &changed);
    assert_eq!(cl.client(B).folder_status(DOCS)["conflicts"], 1);
    files::assert_absent(&cl.server_path(DOCS, copy));
    files::assert_absent(&cl.path_on(0, DOCS, copy));
    files::assert_file(&cl.path_on(B, DOCS, "x.txt"), b"x edited on B\n");
    for absent in ["e", "n", "x.txt"] {
        files::assert_absent(&cl.server_path(DOCS, absent));
        files::assert_absent(&cl.path_on(0, DOCS, absent));
    }
    files::assert_file(&cl.server_path(DOCS, "d/f.txt"), b"f from A\n");
    assert_b_never_pushed(&cl);

    cl.note("B reverts");
    cl.client(B).ctl_ok(["revert", DOCS]);
    let dirs = reverted_dirs(&cl);
    assert_eq!(dirs.len(), 1, "one revert, one directory: {dirs:?}");
    files::assert_file(&dirs[0].join("x.txt"), b"x edited on B\n");
    files::assert_file(&dirs[0].join("e/f.txt"), b"f from A\n");
    files::assert_file(&dirs[0].join("n/g.txt"), b"g made on B\n");
    files::assert_file(&dirs[0].join(copy), b"c edited on B\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "d/f.txt", b"f from A\n");
    cl.assert_file_everywhere(DOCS, "c.txt", b"c v2 from A\n");
    for absent in ["e", "n", "x.txt", copy] {
        cl.assert_absent_everywhere(DOCS, absent);
    }
    assert_local_changes(&cl, &[]);
}

/// `revert` of a folder that sends its changes is refused, saying why, and changes
/// nothing.
#[test]
fn revert_is_refused_for_a_two_way_folder() {
    let cl = Cluster::new(1);
    files::write(&cl.path_on(0, DOCS, "mine.txt"), b"two-way\n");
    cl.settle(DOCS);
    let out = cl.a().ctl(["revert", DOCS]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("folder docs is two-way") && stderr.contains("receive-only"),
        "{stderr}"
    );
    files::assert_file(&cl.path_on(0, DOCS, "mine.txt"), b"two-way\n");
    files::assert_absent(&cl.path_on(0, DOCS, ".filesync-reverted"));
    cl.settle(DOCS);
}
