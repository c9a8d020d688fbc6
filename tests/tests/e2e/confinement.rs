//! Path confinement (test-matrix (d) S6/S7, (b) F19): every file operation inside a
//! folder is relative to the folder's directory handle and never follows a symlink, so
//! a directory replaced by a symlink on the receiving side — before a change arrives or
//! while it arrives — never redirects a write, delete, chmod or mtime outside the folder
//! nor to another place inside it. Each test ends with the cluster oracle, which checks
//! that the canary directory outside every folder is byte-for-byte unchanged.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use filesync_tests::cluster::DOCS;
use filesync_tests::{Cluster, Manifest, files, manifest};

/// Replaces the directory `dir` by a symlink to `target`, keeping the directory aside
/// (out of the folder, so that no scan pairs it as a rename) in `keep`.
fn swap_for_link(dir: &Path, target: &Path, keep: &Path) {
    fs::rename(dir, keep).unwrap();
    symlink(target, dir).unwrap();
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names = files::list_dir(dir);
    names.sort();
    names
}

/// The canary directory outside every folder, as the test found it.
fn canary_now(cl: &Cluster) -> Manifest {
    manifest(&cl.root().join("canary")).expect("the canary dir is readable")
}

/// Every daemon still runs and the canary holds exactly what it held at `before`.
fn assert_confined(cl: &Cluster, before: &Manifest) {
    for node in [cl.server(), cl.a(), cl.b()] {
        node.check_running().unwrap_or_else(|why| panic!("{why}"));
    }
    assert_eq!(
        &canary_now(cl),
        before,
        "something was written in the canary"
    );
}

/// A client whose directory became a symlink while it was paused (to the canary by an
/// absolute path, by an escaping relative path, and to another directory inside the
/// folder) receives a new file, an edit, a chmod and mtime change and a delete under
/// it: none goes through the link, and the daemon keeps running.
#[test]
fn a_link_made_on_a_paused_client_is_never_written_through() {
    let cl = Cluster::new(2);
    let canary = cl.root().join("canary");
    let before = canary_now(&cl);
    let targets: [(&str, PathBuf); 3] = [
        ("abs", canary.clone()),
        ("rel", PathBuf::from("../canary")),
        ("inside", PathBuf::from("sub")),
    ];
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    let b = |rel: &str| cl.path_on(1, DOCS, rel);
    files::write(&a("sub/own.txt"), b"sub's own file\n");
    for (d, _) in &targets {
        for name in ["keep.txt", "meta.txt", "gone.txt"] {
            files::write(&a(&format!("{d}/{name}")), format!("{d}/{name}\n"));
        }
    }
    cl.settle(DOCS);

    cl.pause(1, DOCS);
    // In b's home, outside every folder.
    let aside = cl.root().join("b/aside");
    fs::create_dir(&aside).unwrap();
    for (d, target) in &targets {
        swap_for_link(&b(d), target, &aside.join(d));
    }
    for (d, _) in &targets {
        files::write(&a(&format!("{d}/new.txt")), b"new\n");
        files::write(&a(&format!("{d}/keep.txt")), b"edited\n");
        files::set_mode(&a(&format!("{d}/meta.txt")), 0o600);
        files::set_mtime_ns(&a(&format!("{d}/meta.txt")), 1_000_000_000_000_000_000);
        fs::remove_file(a(&format!("{d}/gone.txt"))).unwrap();
    }
    cl.settle_clients(DOCS, &[0], filesync_tests::SYNC_TIMEOUT);
    cl.resume(1, DOCS);
    // B applies what it can; the paths under its links are refused. Whether it then
    // reports itself in sync does not matter here, only that nothing went through.
    let _ = cl.b().wait(DOCS, Duration::from_secs(15));
    assert_confined(&cl, &before);
    assert_eq!(names(&b("sub")), ["own.txt"]);
    for (d, _) in &targets {
        for name in ["keep.txt", "meta.txt", "gone.txt"] {
            files::assert_file(
                &aside.join(d).join(name),
                format!("{d}/{name}\n").as_bytes(),
            );
        }
    }
}

/// F19: while a peer sends files into `d/`, the receiver's `d` is swapped again and
/// again between the real directory and a symlink to the canary. Whatever moment each
/// write, rename or mtime change lands at, nothing appears in the canary. Run with the
/// swapping on a client's copy and on the server's copy. The receiver's own scans see
/// the link too and may act on it (it is a local change), so the swapper stops as soon
/// as the daemon replaced its link.
fn swap_race(on_server: bool) {
    let cl = Cluster::new(2);
    let canary = cl.root().join("canary");
    let before = canary_now(&cl);
    let a = |rel: &str| cl.path_on(0, DOCS, rel);
    files::write(&a("d/first.txt"), b"first\n");
    cl.settle(DOCS);
    let dir = if on_server {
        cl.server_path(DOCS, "d")
    } else {
        cl.path_on(1, DOCS, "d")
    };
    // In a's home, outside every folder.
    let keep = cl.root().join("a/d.kept");
    cl.note("swapping d for a link to the canary");
    let (start, mut n) = (Instant::now(), 0);
    while n < 300 && start.elapsed() < Duration::from_secs(15) {
        files::write(&a(&format!("d/f{n}.txt")), format!("file {n}\n"));
        // The daemon may take the name back between two steps (a file arriving makes
        // its missing parent anew): the swapping ends there.
        if fs::rename(&dir, &keep).is_err() || symlink(&canary, &dir).is_err() {
            break;
        }
        // The swap's cadence, not a wait: each state lasts a few ms, long enough for
        // some transfers to start in one and end in the other.
        std::thread::sleep(Duration::from_millis(n % 5));
        let ours = fs::read_link(&dir).is_ok_and(|t| t == canary);
        if !ours || fs::remove_file(&dir).is_err() || fs::rename(&keep, &dir).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(n % 3));
        n += 1;
    }
    assert!(n >= 3, "only {n} swaps were made");
    cl.note(&format!("{n} swaps made"));
    let _ = cl.a().wait(DOCS, Duration::from_secs(15));
    assert_confined(&cl, &before);
}

#[test]
fn a_directory_swapped_for_a_link_on_a_client_during_transfers() {
    swap_race(false);
}

#[test]
fn a_directory_swapped_for_a_link_on_the_server_during_transfers() {
    swap_race(true);
}
