//! Changes made while a device is away, and the same file changed on two devices: the
//! replicas merge and no version anyone wrote is lost.

use std::fs;

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::tree::conflict_copies;
use filesync_tests::{Cluster, SYNC_TIMEOUT};

use crate::paths;

/// Scenario 8: B is stopped; A adds a file and edits another; B's folder, while its daemon is
/// down, gets a new file, an edit and a delete. When B starts again, every replica holds
/// the union of both sides' changes, with no conflict: they touched different files.
#[test]
fn offline_changes_on_both_sides_merge_after_restart() {
    let cl = Cluster::new(2);
    for (rel, seed) in [
        ("a-edits.bin", 80),
        ("b-edits.bin", 81),
        ("b-deletes.bin", 82),
    ] {
        files::write(&cl.path_on(0, DOCS, rel), pseudo_random(seed, 10_000));
    }
    cl.settle(DOCS);

    let status = cl.b().stop();
    assert_eq!(
        status.code(),
        Some(0),
        "B did not exit 0 on SIGTERM: {status}"
    );

    let from_a = pseudo_random(83, 15_000);
    let a_edit = pseudo_random(84, 12_000);
    files::write(&cl.path_on(0, DOCS, "from-a.bin"), &from_a);
    files::write(&cl.path_on(0, DOCS, "a-edits.bin"), &a_edit);
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);

    // B's daemon is down: only its start-up scan can find these (sizes change on
    // purpose, so this does not hinge on mtime granularity).
    let from_b = pseudo_random(85, 16_000);
    let b_edit = pseudo_random(86, 13_000);
    files::write(&cl.path_on(1, DOCS, "from-b.bin"), &from_b);
    files::write(&cl.path_on(1, DOCS, "b-edits.bin"), &b_edit);
    fs::remove_file(cl.path_on(1, DOCS, "b-deletes.bin")).unwrap();

    cl.b().start();
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        ["a-edits.bin", "b-edits.bin", "from-a.bin", "from-b.bin"],
        "expected both sides' changes and B's delete, with no conflict copies"
    );
    cl.assert_file_everywhere(DOCS, "from-a.bin", &from_a);
    cl.assert_file_everywhere(DOCS, "a-edits.bin", &a_edit);
    cl.assert_file_everywhere(DOCS, "from-b.bin", &from_b);
    cl.assert_file_everywhere(DOCS, "b-edits.bin", &b_edit);
    cl.assert_absent_everywhere(DOCS, "b-deletes.bin");
}

/// Scenario 11: The same file edited on A and on B while B's folder is paused (B stays connected):
/// after B resumes, both versions exist on every replica, one at the original path and
/// the other as `notes.sync-conflict-….txt` (design brief §2.6).
#[test]
fn concurrent_edits_keep_both_versions_as_conflict_copy() {
    let cl = Cluster::new(2);
    let original = b"the original\n".to_vec();
    files::write(&cl.path_on(0, DOCS, "notes.txt"), &original);
    cl.settle(DOCS);

    cl.pause(1, DOCS);

    let from_a = b"edited on A while B was paused\n".to_vec();
    files::write(&cl.path_on(0, DOCS, "notes.txt"), &from_a);
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    // Paused means paused: A's edit must not have been applied on B.
    files::assert_file(&cl.path_on(1, DOCS, "notes.txt"), &original);

    let from_b = b"edited on B, while paused, based on the original\n".to_vec();
    files::write(&cl.path_on(1, DOCS, "notes.txt"), &from_b);
    cl.resume(1, DOCS);
    let common = cl.settle(DOCS);

    let copies = conflict_copies(&common);
    assert_eq!(
        copies.len(),
        1,
        "expected one conflict copy, found {:?}",
        paths(&common)
    );
    // `settle` proved every replica holds the same two files; A's copy speaks for all.
    let copy = copies[0].to_owned();
    assert!(
        copy.starts_with("notes.sync-conflict-") && copy.ends_with(".txt"),
        "conflict copy {copy:?} is not named NAME.sync-conflict-….EXT"
    );
    let mut expected = vec!["notes.txt", copy.as_str()];
    expected.sort();
    assert_eq!(paths(&common), expected);

    let mut kept = vec![
        fs::read(cl.path_on(0, DOCS, "notes.txt")).unwrap(),
        fs::read(cl.path_on(0, DOCS, &copy)).unwrap(),
    ];
    kept.sort();
    let mut written = vec![from_a, from_b];
    written.sort();
    assert_eq!(
        kept, written,
        "the original path and the conflict copy must hold A's and B's versions"
    );
}
