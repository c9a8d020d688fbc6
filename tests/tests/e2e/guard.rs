//! The guards against spreading a loss (issue 8, faults F10 and F11): a folder whose
//! directory or marker vanished (an unmounted, deleted or moved disk) stops instead of
//! sending deletes, and a scan that finds most of a large folder deleted holds those
//! deletes until the user confirms.

use std::fs;
use std::path::Path;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::{Cluster, SYNC_TIMEOUT, converge, manifest, poll_until};

use crate::paths;

const MARKER: &str = ".filesync-folder";

/// A server and clients A and B that share `n` small distinct files `f000.txt`…
fn cluster_with_files(n: usize) -> Cluster {
    let cl = Cluster::new(2);
    for k in 0..n {
        let rel = format!("f{k:03}.txt");
        files::write(&cl.path_on(0, DOCS, &rel), format!("file {k}\n"));
    }
    cl.settle(DOCS);
    cl
}

/// Deletes the first `n` of those files on A.
fn delete_files(cl: &Cluster, n: usize) {
    for k in 0..n {
        fs::remove_file(cl.path_on(0, DOCS, &format!("f{k:03}.txt"))).unwrap();
    }
}

/// Waits until client `i`'s folder is in `state` with a last error containing `why`.
fn wait_state(cl: &Cluster, i: usize, state: &str, why: &str) -> String {
    let node = cl.client(i);
    poll_until(SYNC_TIMEOUT, || {
        let status = node.folder_status(DOCS);
        let error = status["last_error"].as_str().unwrap_or_default().to_owned();
        if status["state"] == state && error.contains(why) {
            Ok(error)
        } else {
            Err(format!("{}'s {DOCS} is {status}", node.name()))
        }
    })
    .unwrap_or_else(|e| panic!("the folder never became {state} ({why}): {e}"))
}

/// `filesyncctl wait` on client `i` gives up (for a while longer than a fresh delete
/// waits before it is pushed) and names the hold.
fn assert_still_held(cl: &Cluster, i: usize) {
    let out = cl.client(i).wait(DOCS, Duration::from_secs(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("held") && stderr.contains("deleted at once"),
        "wait should fail on the held folder: {stderr}"
    );
}

/// Moves every entry of `from` into `to`, `first` (when it is there) before the others.
fn move_all(from: &Path, to: &Path, first: &str) {
    if from.join(first).exists() {
        fs::rename(from.join(first), to.join(first)).unwrap();
    }
    for name in files::list_dir(from) {
        fs::rename(from.join(&name), to.join(&name)).unwrap();
    }
}

/// B writes a file while A's folder is stopped: it reaches the server, proving B and the
/// server live, and nothing of A's was deleted on either.
fn b_and_server_go_on_without_a(cl: &Cluster) {
    files::write(&cl.path_on(1, DOCS, "from-b.txt"), b"b\n");
    let server = cl.server_dir(DOCS).expect("the server has the folder");
    let common = converge(&[cl.path_on(1, DOCS, ""), server], SYNC_TIMEOUT)
        .unwrap_or_else(|e| panic!("B and the server disagree: {e}"));
    assert_eq!(common.len(), 11, "B or the server lost files: {common:?}");
    assert_eq!(
        cl.b().counters(DOCS).deletes_applied,
        0,
        "a delete reached B"
    );
}

/// Waits for `file` to appear (A is given no command meanwhile).
fn wait_for_file(cl: &Cluster, file: &Path) {
    poll_until(SYNC_TIMEOUT, || {
        file.is_file()
            .then_some(())
            .ok_or_else(|| format!("A's status: {}", cl.a().folder_status(DOCS)))
    })
    .unwrap_or_else(|e| panic!("{} never appeared: {e}", file.display()));
}

/// F10: A's folder loses its whole content at once, marker included, as when the disk
/// it lives on is unmounted. A stops with an error that says what to do, sends no delete,
/// applies nothing there, and syncs again by itself once the content is back.
#[test]
fn vanished_folder_content_stops_the_folder_until_it_is_back() {
    let cl = cluster_with_files(10);
    for i in cl.all_clients() {
        assert!(
            cl.path_on(i, DOCS, MARKER).is_file(),
            "client {i} has no folder marker"
        );
    }

    let root = cl.path_on(0, DOCS, "");
    let away = cl.folder_dir(0, "away");
    move_all(&root, &away, MARKER);
    let error = wait_state(&cl, 0, "error", ".filesync-folder is missing");
    assert!(
        error.contains("filesyncctl rescan docs --recreate-marker"),
        "{error}"
    );

    // A's empty directory takes nothing in and gives nothing away.
    b_and_server_go_on_without_a(&cl);
    cl.b().assert_in_sync(DOCS, SYNC_TIMEOUT);
    assert_eq!(files::list_dir(&root), Vec::<String>::new());
    assert!(!root.join(MARKER).exists(), "the marker was written again");
    assert_eq!(cl.a().folder_status(DOCS)["state"], "error");

    move_all(&away, &root, MARKER);
    let common = cl.settle(DOCS);
    assert_eq!(common.len(), 11, "{:?}", paths(&common));
    files::assert_file(&cl.path_on(0, DOCS, "from-b.txt"), b"b\n");
}

/// How client A's folder directory goes away in [`root_goes_away_and_comes_back`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Away {
    /// Deleted; a backup copy (a new directory) comes back.
    Deleted,
    /// `mv root root.gone`, then moved back.
    Renamed,
    /// Moved away and an empty directory made in its place (a mount point with the disk
    /// unmounted); the real one comes back over it.
    Replaced,
}

/// F10: A's folder directory goes away `how`. A stops with an error that says what is
/// wrong and which command helps (in `status --json` and the human status), sends no
/// delete, and syncs again by itself, watcher included, once the directory is back.
fn root_goes_away_and_comes_back(how: Away) {
    let cl = cluster_with_files(10);
    let root = cl.path_on(0, DOCS, "");
    let parked = cl.folder_dir(0, "parked").join("docs");
    if how == Away::Deleted {
        fs::create_dir(&parked).unwrap();
        for name in files::list_dir(&root)
            .iter()
            .map(String::as_str)
            .chain([MARKER])
        {
            fs::copy(root.join(name), parked.join(name)).unwrap();
        }
        fs::remove_dir_all(&root).unwrap();
    } else {
        fs::rename(&root, &parked).unwrap();
    }
    if how == Away::Replaced {
        fs::create_dir(&root).unwrap();
    }
    let (why, command) = match how {
        Away::Replaced => (
            ".filesync-folder is missing",
            "filesyncctl rescan docs --recreate-marker",
        ),
        Away::Deleted | Away::Renamed => ("is missing", "filesyncctl remove docs"),
    };
    let error = wait_state(&cl, 0, "error", why);
    assert!(error.contains(command), "{how:?}: {error}");
    let human = cl.a().ctl_ok(["status", DOCS]);
    assert!(
        human.contains("error") && human.contains(why) && human.contains(command),
        "{how:?}: the human status does not say what is wrong and what to do:\n{human}"
    );

    b_and_server_go_on_without_a(&cl);
    assert_eq!(cl.a().folder_status(DOCS)["state"], "error", "{how:?}");
    if how == Away::Replaced {
        assert_eq!(files::list_dir(&root), Vec::<String>::new(), "{how:?}");
        fs::remove_dir(&root).unwrap();
    }
    fs::rename(&parked, &root).unwrap();

    // No command on A: it finds its directory again, takes B's file in, and its
    // watcher sends a new file of its own.
    wait_for_file(&cl, &root.join("from-b.txt"));
    files::write(&root.join("from-a.txt"), b"a\n");
    wait_for_file(&cl, &cl.path_on(1, DOCS, "from-a.txt"));
    let common = cl.settle(DOCS);
    assert_eq!(common.len(), 12, "{how:?}: {:?}", paths(&common));
}

#[test]
fn deleted_root_sends_no_deletes_and_resumes_when_restored() {
    root_goes_away_and_comes_back(Away::Deleted);
}

#[test]
fn renamed_away_root_sends_no_deletes_and_resumes_when_moved_back() {
    root_goes_away_and_comes_back(Away::Renamed);
}

#[test]
fn root_replaced_by_an_empty_dir_sends_no_deletes_and_resumes() {
    root_goes_away_and_comes_back(Away::Replaced);
}

/// The user says an empty directory really is the folder: `rescan --recreate-marker`
/// writes the marker, and the folder syncs into it again (nothing is deleted elsewhere).
#[test]
fn recreate_marker_takes_an_empty_folder_as_the_folder() {
    let cl = cluster_with_files(3);
    let root = cl.path_on(0, DOCS, "");
    let away = cl.folder_dir(0, "away");
    move_all(&root, &away, MARKER);
    wait_state(&cl, 0, "error", ".filesync-folder is missing");

    let out = cl.a().ctl_ok(["rescan", DOCS, "--recreate-marker"]);
    assert!(out.contains(MARKER), "{out}");
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        ["f000.txt", "f001.txt", "f002.txt"],
        "the files come back from the server"
    );
}

/// F11: 150 of 200 files deleted at once are held: B keeps all 200, other changes keep
/// flowing both ways, status says why and how to go on; confirming sends the deletes.
#[test]
fn mass_delete_is_held_until_confirmed() {
    let cl = cluster_with_files(200);

    delete_files(&cl, 150);
    let why = wait_state(&cl, 0, "held", "150 of 200 files were deleted at once");
    assert!(
        why.contains("filesyncctl resume docs --confirm-deletes"),
        "{why}"
    );
    assert_still_held(&cl, 0);
    let human = cl.a().ctl_ok(["status", DOCS]);
    assert!(
        human.contains("held")
            && human.contains("150 of 200 files were deleted at once")
            && human.contains("filesyncctl resume docs --confirm-deletes"),
        "the human status does not say what waits and how to confirm:\n{human}"
    );

    // Other changes flow both ways meanwhile.
    let from_a = pseudo_random(1, 5000);
    files::write(&cl.path_on(0, DOCS, "new-on-a.bin"), &from_a);
    files::write(&cl.path_on(1, DOCS, "new-on-b.txt"), b"b\n");
    poll_until(SYNC_TIMEOUT, || {
        let on_b = cl.path_on(1, DOCS, "new-on-a.bin").is_file();
        let on_a = cl.path_on(0, DOCS, "new-on-b.txt").is_file();
        if on_a && on_b {
            Ok(())
        } else {
            Err(format!("new-on-a on B: {on_b}, new-on-b on A: {on_a}"))
        }
    })
    .unwrap_or_else(|e| panic!("changes stopped flowing while deletes are held: {e}"));
    let b_files = manifest(&cl.path_on(1, DOCS, "")).unwrap();
    assert_eq!(b_files.len(), 202, "B lost files: {:?}", paths(&b_files));
    assert_eq!(cl.a().folder_status(DOCS)["state"], "held");

    cl.a().ctl_ok(["resume", DOCS, "--confirm-deletes"]);
    let common = cl.settle(DOCS);
    assert_eq!(common.len(), 52, "{:?}", paths(&common));
    cl.assert_absent_everywhere(DOCS, "f000.txt");
    cl.assert_file_everywhere(DOCS, "f199.txt", b"file 199\n");
    files::assert_file(&cl.path_on(1, DOCS, "new-on-a.bin"), &from_a);
    // The server keeps what the confirmed deletes removed.
    for k in [0, 149] {
        let rel = format!("f{k:03}.txt");
        let kept = cl.b().versions(DOCS, &rel);
        let size = format!("file {k}\n").len() as u64;
        assert!(
            kept.iter().any(|v| v.size == size),
            "the server kept no version of the deleted {rel}: {kept:?}"
        );
    }
}

/// F11: files deleted en masse and then restored: the hold clears by itself and
/// nothing is deleted anywhere.
#[test]
fn mass_delete_then_restore_deletes_nothing() {
    let cl = cluster_with_files(200);

    let root = cl.path_on(0, DOCS, "");
    let away = cl.folder_dir(0, "away");
    for k in 0..150 {
        let name = format!("f{k:03}.txt");
        fs::rename(root.join(&name), away.join(&name)).unwrap();
    }
    wait_state(&cl, 0, "held", "150 of 200 files were deleted at once");
    assert_still_held(&cl, 0);
    move_all(&away, &root, MARKER);

    let common = cl.settle(DOCS);
    assert_eq!(common.len(), 200, "{:?}", paths(&common));
    cl.assert_file_everywhere(DOCS, "f000.txt", b"file 0\n");
    assert_eq!(
        cl.b().counters(DOCS).deletes_applied,
        0,
        "a held delete reached B"
    );
}

/// Below `max_delete_min` (100 files by default) nothing is held: deleting all 20
/// files of a small folder reaches every device.
#[test]
fn small_folder_deletes_are_not_held() {
    let cl = cluster_with_files(20);
    delete_files(&cl, 20);
    let common = cl.settle(DOCS);
    assert!(common.is_empty(), "{:?}", paths(&common));
    cl.assert_absent_everywhere(DOCS, "f019.txt");
}
