//! Names a Windows device cannot hold, made on a Linux device: the receiving device
//! runs with `FILESYNC_TEST_WINDOWS_NAMES=1`, which applies Windows' name rules on
//! Linux (the Wine test, `windows::`, checks the same on a real Windows build). Such a
//! path is listed as unsyncable there with its reason, never written under another
//! name, never deleted anywhere, and the rest of the folder syncs.

use std::fs;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::{Cluster, files, poll_until};
use serde_json::Value;

/// The paths A makes that B, holding Windows' rules, cannot hold.
const UNHOLDABLE: [(&str, &str); 6] = [
    ("aux.txt", "AUX"),
    ("notes:v2.txt", "':'"),
    ("CON", "CON"),
    ("CON/inside.txt", "CON"),
    ("dots.", "trailing dot"),
    ("dots./x.txt", "trailing dot"),
];

/// The directories among them, which A makes by making what is inside.
const DIRS: [&str; 2] = ["CON", "dots."];

fn unholdable(path: &str) -> bool {
    UNHOLDABLE.iter().any(|(p, _)| *p == path) || path == DRIVE
}

/// A name every device refuses, Linux ones too: a first name of one letter and a colon
/// reads as a drive on Windows.
const DRIVE: &str = "a:b.txt";

/// B's unsyncable list as (path, reason) pairs.
fn unsyncable_on_b(cl: &Cluster) -> Vec<(String, String)> {
    let status = cl.b().folder_status(DOCS);
    let list = status["unsyncable"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|u: &Value| {
            (
                u["path"].as_str().unwrap_or_default().to_owned(),
                u["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until B lists exactly `expected` (paths, each reason containing its word).
fn wait_listed_on_b(cl: &Cluster, expected: &[(&str, &str)]) {
    poll_until(Duration::from_secs(20), || {
        let listed = unsyncable_on_b(cl);
        let matches = listed.len() == expected.len()
            && expected.iter().all(|(path, word)| {
                listed
                    .iter()
                    .any(|(p, why)| p == path && why.contains(word) && why.contains("rename"))
            });
        if matches {
            Ok(())
        } else {
            Err(format!("B lists {listed:?}"))
        }
    })
    .unwrap_or_else(|why| panic!("B never listed exactly {expected:?}: {why}"));
}

#[test]
fn names_windows_cannot_hold_are_listed_and_the_rest_syncs() {
    let cl = Cluster::new(2);
    cl.b().stop();
    cl.b().set_daemon_env("FILESYNC_TEST_WINDOWS_NAMES", "1");
    cl.b().start();
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    let b = |rel: &str| cl.path_on(1, DOCS, rel);
    for (path, _) in UNHOLDABLE.iter().filter(|(p, _)| !DIRS.contains(p)) {
        files::write(&a(path), format!("{path} from A\n"));
    }
    files::write(&a(DRIVE), b"a drive?\n");
    files::write(&a("fine/nested/ok.txt"), b"fine\n");
    cl.settle_excluding(DOCS, &unholdable);
    let on_a = cl.a().folder_status(DOCS)["unsyncable"].clone();
    assert!(
        on_a.as_array().is_some_and(|l| l.len() == 1
            && l[0]["path"].as_str().is_some_and(|p| p.ends_with(DRIVE))
            && l[0]["reason"].as_str().is_some_and(|r| r.contains("drive"))),
        "A should list only {DRIVE} as unsyncable: {on_a}"
    );
    cl.assert_file_everywhere(DOCS, "fine/nested/ok.txt", b"fine\n");
    wait_listed_on_b(&cl, &UNHOLDABLE);
    // Written under no name at all on B, and kept on A and the server.
    let on_b: Vec<String> = files::list_dir(&b(""))
        .into_iter()
        .filter(|n| !n.starts_with(".filesync"))
        .collect();
    assert_eq!(on_b, ["fine"], "B holds more than it can");
    for (path, _) in UNHOLDABLE.iter().filter(|(p, _)| !DIRS.contains(p)) {
        let content = format!("{path} from A\n");
        files::assert_file(&a(path), content.as_bytes());
        files::assert_file(&cl.server_path(DOCS, path), content.as_bytes());
    }

    // B's own changes still sync, and B's restart lists the same paths again.
    files::write(&b("fine/from-b.txt"), b"from B\n");
    cl.b().stop();
    cl.b().start();
    cl.settle_excluding(DOCS, &unholdable);
    cl.assert_file_everywhere(DOCS, "fine/from-b.txt", b"from B\n");
    wait_listed_on_b(&cl, &UNHOLDABLE);

    // Renamed on A to a name B can hold: it arrives on B and leaves B's list.
    fs::rename(a("aux.txt"), a("aux-notes.txt")).unwrap();
    cl.settle_excluding(DOCS, &unholdable);
    cl.assert_file_everywhere(DOCS, "aux-notes.txt", b"aux.txt from A\n");
    wait_listed_on_b(&cl, &UNHOLDABLE[1..]);
}
