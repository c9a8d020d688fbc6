//! Ignore rules: `.filesyncignore` at the folder root, gitignore syntax, synced to every
//! replica so every device applies the same rules; plus built-in names of editor,
//! download and OS temp files. An ignored file never leaves its device, and is never
//! deleted or overwritten there because of a change elsewhere.

use std::fs;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::node::describe;
use filesync_tests::{Cluster, poll_until};

use crate::paths;

const IGNORE_FILE: &str = ".filesyncignore";

/// Whether `rel` is `top` or below it.
fn under(rel: &str, top: &str) -> bool {
    rel == top || rel.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

/// A pattern in `.filesyncignore` keeps matching files (and a matching directory's
/// content) on A; the built-in temp names never leave A either; the ignore file itself
/// reaches every replica, so B applies the same rules to its own files. Changing an
/// ignored file on A, and having an ignored file at the same path on B, moves nothing.
#[test]
fn ignored_and_temp_files_never_leave_their_device() {
    let cl = Cluster::new(2);
    let rules = b"# logs and build output stay local\n*.log\nbuild/\n";
    files::write(&cl.path_on(0, DOCS, IGNORE_FILE), rules);
    let common = cl.settle(DOCS);
    assert!(common.is_empty(), "{:?}", paths(&common));
    cl.assert_file_everywhere(DOCS, IGNORE_FILE, rules);

    let ignored_on_a = [
        "debug.log",
        "sub/trace.log",
        "build/out.bin",
        "build/deep/x.txt",
        // Built-in rules: editor swap/lock files, partial downloads, OS litter.
        ".report.txt.swp",
        "~$budget.xlsx",
        "download.part",
        "x.crdownload",
        ".DS_Store",
    ];
    let content = |rel: &str| format!("{rel} on A\n").into_bytes();
    for rel in ignored_on_a {
        files::write(&cl.path_on(0, DOCS, rel), content(rel));
    }
    files::write(&cl.path_on(0, DOCS, "real.txt"), b"real\n");
    files::write(&cl.path_on(0, DOCS, "sub/real.txt"), b"real too\n");
    let skip =
        |rel: &str| under(rel, "build") || ignored_on_a.contains(&rel) || rel == "from-b.log";
    let common = cl.settle_excluding(DOCS, &skip);
    assert_eq!(paths(&common), ["real.txt", "sub", "sub/real.txt"]);
    let absent_elsewhere = |rel: &str| {
        files::assert_absent(&cl.path_on(1, DOCS, rel));
        files::assert_absent(&cl.server_path(DOCS, rel));
    };
    for rel in ignored_on_a {
        files::assert_file(&cl.path_on(0, DOCS, rel), &content(rel));
        absent_elsewhere(rel);
    }
    absent_elsewhere("build");

    // B got the rules: its own log stays on B. A's ignored log changes, and B holds an
    // ignored file at the same path: neither moves nor is overwritten.
    files::write(&cl.path_on(1, DOCS, "from-b.log"), b"B's log\n");
    files::write(&cl.path_on(1, DOCS, "debug.log"), b"B's own debug.log\n");
    files::write(
        &cl.path_on(0, DOCS, "debug.log"),
        b"A's debug.log, longer now\n",
    );
    fs::remove_file(cl.path_on(0, DOCS, ".DS_Store")).unwrap();
    files::write(&cl.path_on(1, DOCS, "real.txt"), b"real, edited on B\n");
    let common = cl.settle_excluding(DOCS, &skip);
    assert_eq!(paths(&common), ["real.txt", "sub", "sub/real.txt"]);
    cl.assert_file_everywhere(DOCS, "real.txt", b"real, edited on B\n");
    files::assert_file(&cl.path_on(1, DOCS, "from-b.log"), b"B's log\n");
    files::assert_absent(&cl.path_on(0, DOCS, "from-b.log"));
    files::assert_absent(&cl.server_path(DOCS, "from-b.log"));
    files::assert_file(&cl.path_on(1, DOCS, "debug.log"), b"B's own debug.log\n");
    files::assert_file(
        &cl.path_on(0, DOCS, "debug.log"),
        b"A's debug.log, longer now\n",
    );
    files::assert_absent(&cl.server_path(DOCS, "debug.log"));
    cl.assert_file_everywhere(DOCS, IGNORE_FILE, rules);
}

/// A deletes directory `cache`, which on A holds only synced files; on B it also holds
/// an ignored `x.log`. B deletes the synced files but keeps `cache/` with `x.log`
/// (Syncthing's "directory has ignored files"), and `cache` does not come back to A or
/// the server, not even after B rescans or changes something else.
#[test]
fn remote_dir_delete_keeps_local_ignored_files() {
    let cl = Cluster::new(2);
    let rules = b"*.log\n";
    files::write(&cl.path_on(0, DOCS, IGNORE_FILE), rules);
    files::write(&cl.path_on(0, DOCS, "cache/a.txt"), b"a\n");
    files::write(&cl.path_on(0, DOCS, "cache/sub/b.txt"), b"b\n");
    files::write(&cl.path_on(0, DOCS, "keep.txt"), b"keep\n");
    let common = cl.settle(DOCS);
    assert_eq!(
        paths(&common),
        [
            "cache",
            "cache/a.txt",
            "cache/sub",
            "cache/sub/b.txt",
            "keep.txt"
        ]
    );
    cl.assert_file_everywhere(DOCS, IGNORE_FILE, rules);

    let x_log = cl.path_on(1, DOCS, "cache/x.log");
    files::write(&x_log, b"B's cache log\n");
    // B has seen its ignored file before the delete arrives.
    cl.b().assert_in_sync(DOCS, filesync_tests::SYNC_TIMEOUT);

    fs::remove_dir_all(cl.path_on(0, DOCS, "cache")).unwrap();
    let skip = |rel: &str| under(rel, "cache");
    let common = cl.settle_excluding(DOCS, &skip);
    assert_eq!(paths(&common), ["keep.txt"]);
    let check = || {
        for (who, p) in [
            ("A", cl.path_on(0, DOCS, "cache")),
            ("the server", cl.server_path(DOCS, "cache")),
        ] {
            assert!(
                fs::symlink_metadata(&p).is_err(),
                "`cache`, deleted on A, came back on {who} ({}): B, which kept the \
                 directory only for its ignored x.log, must not offer it back",
                p.display()
            );
        }
        files::assert_file(&x_log, b"B's cache log\n");
        assert_eq!(
            files::list_dir(&cl.path_on(1, DOCS, "cache")),
            ["x.log"],
            "B's cache/ should hold only its ignored file"
        );
    };
    check();

    cl.b().ctl_ok(["rescan", DOCS]);
    files::write(&cl.path_on(1, DOCS, "later.txt"), b"later, from B\n");
    let common = cl.settle_excluding(DOCS, &skip);
    assert_eq!(paths(&common), ["keep.txt", "later.txt"]);
    cl.assert_file_everywhere(DOCS, "later.txt", b"later, from B\n");
    check();
}

/// Adding a pattern for a file that already synced stops syncing it, and deletes it
/// nowhere: A's later edit stays on A, B's later delete stays on B, the server keeps
/// the last synced content. Other files keep syncing.
#[test]
fn new_pattern_stops_syncing_a_synced_file_but_deletes_nothing() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "secret.txt"), b"v1\n");
    files::write(&cl.path_on(0, DOCS, "keep.txt"), b"keep v1\n");
    cl.settle(DOCS);

    files::write(&cl.path_on(0, DOCS, IGNORE_FILE), b"secret.txt\n");
    let common = cl.settle(DOCS);
    assert_eq!(paths(&common), ["keep.txt", "secret.txt"]);
    cl.assert_file_everywhere(DOCS, "secret.txt", b"v1\n");
    cl.assert_file_everywhere(DOCS, IGNORE_FILE, b"secret.txt\n");

    files::write(&cl.path_on(0, DOCS, "secret.txt"), b"v2, edited on A\n");
    fs::remove_file(cl.path_on(1, DOCS, "secret.txt")).unwrap();
    files::write(&cl.path_on(0, DOCS, "keep.txt"), b"keep v2\n");
    let common = cl.settle_excluding(DOCS, &|rel| rel == "secret.txt");
    assert_eq!(paths(&common), ["keep.txt"]);
    cl.assert_file_everywhere(DOCS, "keep.txt", b"keep v2\n");
    files::assert_file(&cl.path_on(0, DOCS, "secret.txt"), b"v2, edited on A\n");
    files::assert_file(&cl.server_path(DOCS, "secret.txt"), b"v1\n");
    files::assert_absent(&cl.path_on(1, DOCS, "secret.txt"));
}

/// An invalid pattern (`a[` on line 2) puts the folder in state "error" with a
/// last_error naming `.filesyncignore:2`; `wait` does not call it in sync. Fixing the
/// file resumes syncing: what was made meanwhile syncs, under the fixed rules.
#[test]
fn invalid_pattern_stops_the_folder_until_fixed() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "ok.txt"), b"ok\n");
    cl.settle(DOCS);

    files::write(&cl.path_on(0, DOCS, IGNORE_FILE), b"*.bak\na[\n");
    let status = poll_until(Duration::from_secs(20), || {
        let f = cl.a().folder_status(DOCS);
        let err = f["last_error"].as_str().unwrap_or_default().to_owned();
        if f["state"] == "error" && err.contains(".filesyncignore:2") {
            Ok(f)
        } else {
            Err(format!(
                "A's docs: state {}, last_error {err:?}",
                f["state"]
            ))
        }
    })
    .unwrap_or_else(|why| {
        panic!("an invalid pattern on line 2 did not put the folder in error: {why}")
    });
    cl.a()
        .note(&format!("folder in error: {}", status["last_error"]));

    files::write(&cl.path_on(0, DOCS, "during.txt"), b"made while in error\n");
    files::write(&cl.path_on(0, DOCS, "during.bak"), b"ignored once fixed\n");
    cl.a().ctl_ok(["rescan", DOCS]);
    let out = cl.a().wait(DOCS, Duration::from_secs(1));
    assert_eq!(
        out.status.code(),
        Some(1),
        "`wait` must not report a folder in error as in sync: {}",
        describe(&out)
    );
    let f = cl.a().folder_status(DOCS);
    assert_eq!(f["state"], "error", "a rescan cleared the error: {f}");

    let fixed = b"*.bak\nbuild/\n";
    files::write(&cl.path_on(0, DOCS, IGNORE_FILE), fixed);
    // Whether or not the broken file reached B meanwhile, the fix must: B holding the
    // broken rules and staying in error would never sync again.
    poll_until(Duration::from_secs(30), || {
        let f = cl.b().folder_status(DOCS);
        let held = fs::read(cl.path_on(1, DOCS, IGNORE_FILE)).unwrap_or_default();
        if held == fixed && f["state"] != "error" {
            Ok(())
        } else {
            Err(format!(
                "B holds .filesyncignore {:?}; B's docs: state {}, last_error {}",
                String::from_utf8_lossy(&held),
                f["state"],
                f["last_error"]
            ))
        }
    })
    .unwrap_or_else(|why| panic!("the fixed .filesyncignore did not reach B: {why}"));
    let common = cl.settle_excluding(DOCS, &|rel| rel == "during.bak");
    assert_eq!(paths(&common), ["during.txt", "ok.txt"]);
    cl.assert_file_everywhere(DOCS, "during.txt", b"made while in error\n");
    cl.assert_file_everywhere(DOCS, IGNORE_FILE, fixed);
    files::assert_file(&cl.path_on(0, DOCS, "during.bak"), b"ignored once fixed\n");
    files::assert_absent(&cl.path_on(1, DOCS, "during.bak"));
    files::assert_absent(&cl.server_path(DOCS, "during.bak"));
}
