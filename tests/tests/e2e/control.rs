//! The control surface: adding folders to a running daemon, persistence across a
//! restart, and the exit codes and config safety of `filesyncctl`.

use std::fs;
use std::path::Path;

use filesync_tests::cluster::DOCS;
use filesync_tests::exec::Scratch;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::node::describe;
use filesync_tests::{Cluster, Node};

use crate::paths;

const EXTRA: &str = "extra";

/// Scenario 10: `filesyncctl add` on running daemons starts syncing a second folder, content that
/// was already in it included; after A restarts, `status --json` still lists the folder
/// (the add was persisted) and a new file in it still syncs.
#[test]
fn folder_added_at_runtime_syncs_and_survives_restart() {
    let cl = Cluster::new(2);
    let a_extra = cl.folder_dir(0, EXTRA);
    let seed = pseudo_random(10, 30_000);
    files::write(&a_extra.join("seed.bin"), &seed);
    cl.add_folder(0, EXTRA);
    cl.add_folder(1, EXTRA);
    let common = cl.settle(EXTRA);
    assert_eq!(paths(&common), ["seed.bin"]);
    cl.assert_file_everywhere(EXTRA, "seed.bin", &seed);
    // The new folder did not leak into the old one.
    for i in cl.all_clients() {
        assert_eq!(
            files::list_dir(&cl.client(i).folder_dir(DOCS)),
            Vec::<String>::new()
        );
    }

    let status = cl.a().stop();
    assert_eq!(
        status.code(),
        Some(0),
        "A did not exit 0 on SIGTERM: {status}"
    );
    cl.a().start();
    let mut names = cl.a().folder_names();
    names.sort();
    assert_eq!(names, [DOCS, EXTRA], "folders after restart");
    let listed = cl.a().folder_status(EXTRA)["path"].clone();
    assert_eq!(
        listed.as_str().map(Path::new),
        Some(a_extra.as_path()),
        "status path of {EXTRA}"
    );

    let later = pseudo_random(11, 25_000);
    files::write(&a_extra.join("after-restart/later.bin"), &later);
    let common = cl.settle(EXTRA);
    assert_eq!(
        paths(&common),
        ["after-restart", "after-restart/later.bin", "seed.bin"]
    );
    cl.assert_file_everywhere(EXTRA, "after-restart/later.bin", &later);
}

/// Runs `status` and `status --json` and expects exit code 3 with a reason on stderr.
fn assert_unreachable(node: &Node, when: &str) {
    for args in [&["status"][..], &["status", "--json"][..]] {
        let out = node.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "filesyncctl {args:?} {when} should exit 3: {}",
            describe(&out)
        );
        assert!(
            !out.stderr.is_empty(),
            "filesyncctl {args:?} {when} exited 3 without saying why"
        );
    }
}

/// Scenario 12: `filesyncctl` exits 3 when no daemon answers: never started, stopped cleanly
/// (socket removed), and killed (a stale socket file left behind). A daemon started
/// over a stale socket works.
#[test]
fn status_exits_3_when_daemon_is_not_running() {
    let scratch = Scratch::new();
    let node = Node::client(scratch.path(), "solo");
    assert_unreachable(&node, "before the daemon ever started");

    node.start();
    node.ctl_ok(["status"]);
    let status = node.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM should stop the daemon cleanly: {status}"
    );
    assert_unreachable(&node, "after SIGTERM");

    node.start();
    node.kill();
    assert_unreachable(&node, "after SIGKILL");

    node.start();
    node.ctl_ok(["status"]);
}

/// Scenario 13: `add` of a folder that is already configured exits 1 with a message and leaves
/// the config file byte for byte as it was; the folder keeps syncing.
#[test]
fn adding_an_already_configured_folder_fails_and_leaves_config_untouched() {
    let cl = Cluster::new(1);
    let a = cl.a();
    let before = fs::read(a.config_path()).unwrap();
    let text = String::from_utf8_lossy(&before);
    let a_docs = a.folder_dir(DOCS);
    assert!(
        text.contains(a_docs.to_str().unwrap()),
        "`add` did not persist the folder into the config:\n{text}"
    );
    assert!(
        text.contains("filesyncctl add/remove must keep this comment"),
        "`add` dropped the user's comment from the config:\n{text}"
    );

    let same = cl.add_args(0, DOCS);
    let mut renamed = same.clone();
    *renamed.last_mut().unwrap() = "other-name".into();
    for args in [same, renamed] {
        let out = a.ctl(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "filesyncctl {args:?} of a configured folder should exit 1: {}",
            describe(&out)
        );
        assert!(!out.stderr.is_empty(), "{args:?} failed without a message");
        let after = fs::read(a.config_path()).unwrap();
        assert!(
            after == before,
            "a failed {args:?} changed the config:\n--- before\n{text}\n--- after\n{}",
            String::from_utf8_lossy(&after)
        );
    }
    assert_eq!(a.folder_names(), [DOCS]);

    files::write(&a_docs.join("still-syncing.txt"), b"yes\n");
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["still-syncing.txt"]);
    cl.assert_file_everywhere(DOCS, "still-syncing.txt", b"yes\n");
}
