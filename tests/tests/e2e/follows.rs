//! What the daemon follows and what it carries along: a symlink is never walked by a
//! watcher, and a directory rename never carries ignored files out of their rule.

use std::fs;
use std::path::Path;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::exec::Scratch;
use filesync_tests::files;
use filesync_tests::{Cluster, poll_until};

/// The inotify watches the process `pid` holds, over all its inotify instances.
fn inotify_watches(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fdinfo");
    let Ok(fds) = fs::read_dir(&dir) else {
        panic!("cannot list {dir}");
    };
    (fds.flatten())
        .filter_map(|fd| fs::read_to_string(fd.path()).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

/// `n` × `n` directories under `root`.
fn big_tree(root: &Path, n: usize) -> usize {
    for i in 0..n {
        for j in 0..n {
            fs::create_dir_all(root.join(format!("d{i}/d{j}"))).unwrap();
        }
    }
    n * n + n
}

/// M1: a device syncs a directory holding a symlink to a big tree outside the folder,
/// then renames the directory. The server's watcher sees the rename arrive but walks
/// nothing through the link: its watch count stays near the folder's own directories.
#[test]
fn a_synced_link_to_a_big_tree_is_never_watched() {
    let cl = Cluster::new(1);
    let scratch = Scratch::new();
    let outside = scratch.path().join("big");
    let dirs = big_tree(&outside, 20);
    files::write(&cl.path_on(0, DOCS, "a/f.txt"), b"beside the link\n");
    std::os::unix::fs::symlink(&outside, cl.path_on(0, DOCS, "a/l")).unwrap();
    cl.settle(DOCS);
    let pid = cl.server().pid().expect("the server runs");
    let before = inotify_watches(pid);

    fs::rename(cl.path_on(0, DOCS, "a"), cl.path_on(0, DOCS, "b")).unwrap();
    cl.settle(DOCS);
    assert!(cl.server_path(DOCS, "b/l").is_symlink());
    // The server's watcher handles its events in order: once it has seen a file made in
    // its copy after the rename, it has handled the rename's arrival too.
    files::write(&cl.server_path(DOCS, "probe.txt"), b"after the rename\n");
    let probe = cl.path_on(0, DOCS, "probe.txt");
    poll_until(Duration::from_secs(30), || {
        probe
            .exists()
            .then_some(())
            .ok_or_else(|| "the server's change did not reach the client".to_owned())
    })
    .unwrap();
    let after = inotify_watches(pid);
    assert!(
        after < before + dirs / 4,
        "the server watches {after} directories after the rename, {before} before: it \
         followed the link into the {dirs} directories outside the folder"
    );
}
