//! What the daemon follows and what it carries along: a symlink is never walked by a
//! watcher, a conflict note never aims `resolve` outside the note's own path, and a
//! directory rename never carries ignored files out of their rule.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::Duration;

use filesync_proto::wire::{ClientMsg, ConflictNote, Inline, ServerMsg};
use filesync_proto::{DeviceId, RelPath};
use filesync_tests::cluster::DOCS;
use filesync_tests::exec::Scratch;
use filesync_tests::files;
use filesync_tests::hostile::{self, file_entry, serve_from, wait_for_log_line};
use filesync_tests::node::describe;
use filesync_tests::{Cluster, poll_until};

use super::hostile::{FakeServer, LOG_WAIT, add_evil};

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
    cl.settle(DOCS);
    let pid = cl.server().pid().expect("the server runs");
    // Counted before the link exists, so that following it on its first sync shows too.
    let before = inotify_watches(pid);
    std::os::unix::fs::symlink(&outside, cl.path_on(0, DOCS, "a/l")).unwrap();
    cl.settle(DOCS);
    assert!(cl.server_path(DOCS, "a/l").is_symlink());
    let with_link = inotify_watches(pid);
    assert!(
        with_link < before + dirs / 4,
        "the server watches {with_link} directories once the link synced, {before} before: \
         it followed the link into the {dirs} directories outside the folder"
    );

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

/// M4: a hostile server sends a file whose conflict note names `.git/hooks/pre-commit`
/// as its original, with `.git/` ignored. The client drops the note and logs why (the
/// file arrives as a plain file), and `resolve '*' --keep newer` writes nothing into the
/// hook.
#[test]
fn a_conflict_note_never_aims_resolve_at_an_ignored_path() {
    // `scratch` first: locals drop in reverse, so the daemon goes before its directory.
    let FakeServer {
        scratch: _scratch,
        client,
        folder,
        listener,
        addr,
    } = FakeServer::new();
    files::write(&folder.join(".filesyncignore"), b".git/\n");
    fs::create_dir_all(folder.join(".git/hooks")).unwrap();
    const SCRIPT: &[u8] = b"#!/bin/sh\necho owned\n";
    let copy = "x.sync-conflict-20260101-000000-EVIL.sh";

    let fake = thread::spawn(move || -> Result<(), String> {
        let (mut conn, _) = hostile::accept_device(&listener, "evil-server", 1)?;
        let mut entry = file_entry(copy, SCRIPT);
        entry.mode = 0o755;
        entry.seq = 1;
        entry.conflict = Some(ConflictNote {
            original: RelPath::new(".git/hooks/pre-commit").unwrap(),
            winner_seq: 1,
            winner: DeviceId::new("victim").unwrap(),
            made_at: 1_767_225_600,
        });
        conn.send(ServerMsg::Index {
            inline: vec![Inline {
                entry: 0,
                data: SCRIPT.to_vec(),
            }],
            entries: vec![entry],
            up_to: 1,
            as_of: 1,
            caught_up: true,
        })?;
        // The script came whole; its blocks are served too, until the client goes away.
        // Bounded by count and by the read timeout of each message.
        for _ in 0..10_000 {
            match conn.recv()? {
                Some(ClientMsg::BlockRequest { id, request }) => {
                    conn.send(ServerMsg::BlockResponse {
                        id,
                        result: Ok(serve_from(SCRIPT, &request)),
                    })?;
                }
                Some(ClientMsg::Ping { nonce }) => conn.send(ServerMsg::Pong { nonce })?,
                Some(_) => {}
                None => return Ok(()),
            }
        }
        Err("the client sent 10000 messages".into())
    });
    add_evil(&client, &folder, &addr);
    poll_until(LOG_WAIT, || {
        (folder.join(copy).exists())
            .then_some(())
            .ok_or_else(|| format!("{copy} did not arrive"))
    })
    .unwrap();
    let resolved = client.ctl(["resolve", "evil", "*", "--keep", "newer"]);
    // Whatever resolve answers, it has finished: the copy must still be where it
    // arrived, and nothing may stand at the ignored hook.
    assert!(
        !folder.join(".git/hooks/pre-commit").exists(),
        "resolve moved the server's script into the ignored hook: {}",
        describe(&resolved)
    );
    files::assert_file(&folder.join(copy), SCRIPT);
    wait_for_log_line(
        || client.log_text(),
        &["dropped the conflict note", copy, ".git/hooks/pre-commit"],
        LOG_WAIT,
    )
    .unwrap();
    client.check_running().unwrap();
    client.stop();
    fake.join().expect("fake server thread").unwrap();
}

/// M5: with a rule anchored at a directory (`/work/*.pem`), another device renames the
/// directory. The ignored key stays in `work/` on the first device, where its rule
/// holds, and never reaches the server; everything else moves to `w2/`.
#[test]
fn a_directory_rename_leaves_ignored_files_under_their_rule() {
    const KEY: &[u8] = b"-----BEGIN PRIVATE KEY-----\n";
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, ".filesyncignore"), b"/work/*.pem\n");
    files::write(&cl.path_on(0, DOCS, "work/doc.txt"), b"a document\n");
    files::write(&cl.path_on(0, DOCS, "work/sub/notes.txt"), b"notes\n");
    files::write(&cl.path_on(0, DOCS, "work/k.pem"), KEY);
    cl.settle_excluding(DOCS, &|rel: &str| rel == "work/k.pem");
    files::assert_absent(&cl.path_on(1, DOCS, "work/k.pem"));

    fs::rename(cl.path_on(1, DOCS, "work"), cl.path_on(1, DOCS, "w2")).unwrap();
    let only_on_a = |rel: &str| rel == "work" || rel == "work/k.pem";
    cl.settle_excluding(DOCS, &only_on_a);
    files::assert_file(&cl.path_on(0, DOCS, "work/k.pem"), KEY);
    for rel in ["w2/k.pem", "work/k.pem"] {
        files::assert_absent(&cl.server_path(DOCS, rel));
        files::assert_absent(&cl.path_on(1, DOCS, rel));
    }
    files::assert_absent(&cl.path_on(0, DOCS, "w2/k.pem"));
    cl.assert_file_everywhere(DOCS, "w2/doc.txt", b"a document\n");
    cl.assert_file_everywhere(DOCS, "w2/sub/notes.txt", b"notes\n");
    files::assert_absent(&cl.path_on(0, DOCS, "work/doc.txt"));
    assert_eq!(files::list_dir(&cl.path_on(0, DOCS, "work")), ["k.pem"]);
    // The directory the first device keeps only for its ignored key is not offered back,
    // not even after a rescan there.
    cl.client(0).ctl_ok(["rescan", DOCS]);
    cl.settle_excluding(DOCS, &only_on_a);
    for at in [cl.server_path(DOCS, "work"), cl.path_on(1, DOCS, "work")] {
        assert!(
            fs::symlink_metadata(&at).is_err(),
            "{} came back",
            at.display()
        );
    }
}
