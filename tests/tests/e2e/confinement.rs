//! Path confinement (test-matrix (d) S6/S7, (b) F19, (a) A9): every file operation inside a
//! folder is relative to the folder's directory handle and never follows a symlink, so
//! a directory replaced by a symlink on the receiving side — before a change arrives or
//! while it arrives — never redirects a write, delete, chmod or mtime outside the folder
//! nor to another place inside it; and a peer that sends a symlink, then files "inside"
//! it (the CVE-2024-12087 shape), gets the link made as a link and the files refused,
//! as server and as client. Each test ends with the cluster oracle, which checks
//! that the canary directory outside every folder is byte-for-byte unchanged.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use filesync_proto::RelPath;
use filesync_proto::wire::{Change, ClientMsg, PushOutcome, ServerMsg};
use filesync_tests::cluster::DOCS;
use filesync_tests::hostile::{
    self, create, dir_entry, file_entry, link_entry, serve_from, wait_for_log_line,
};
use filesync_tests::{Cluster, Manifest, files, manifest};

use super::hostile::{FakeServer, LOG_WAIT, add_evil, started, still_syncs};

/// Replaces the directory `dir` by a symlink to `target`, keeping the directory aside
/// (out of the folder, so that no scan pairs it as a rename) in `keep`.
fn swap_for_link(dir: &Path, target: &Path, keep: &Path) {
    fs::rename(dir, keep).unwrap();
    symlink(target, dir).unwrap();
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
    assert_eq!(files::list_dir(&b("sub")), ["own.txt"]);
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
    // `n` counts whole swaps, `placed` the links put in place: each one raced the
    // transfers under way, also one the daemon replaced before it was taken back.
    let (start, mut n, mut placed) = (Instant::now(), 0, 0);
    while n < 300 && start.elapsed() < Duration::from_secs(15) {
        files::write(&a(&format!("d/f{n}.txt")), format!("file {n}\n"));
        // The daemon may take the name back between two steps (a file arriving makes
        // its missing parent anew): the swapping ends there.
        if fs::rename(&dir, &keep).is_err() || symlink(&canary, &dir).is_err() {
            break;
        }
        placed += 1;
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
    // On a loaded machine the daemon may take the name back after the first link (seen
    // beside a busy core, where this asked for 3 whole swaps): one link raced enough.
    assert!(placed >= 1, "no link was put in place of d");
    cl.note(&format!("{n} swaps made, {placed} links placed"));
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

/// What a hostile peer puts "inside" its links.
const INSIDE: &[u8] = b"written through a link\n";

/// The links a hostile peer makes in the folder at `folder`: `d` to the canary by its
/// absolute path, `r` by a relative path that climbs out of the folder to it.
fn escaping_links(cl: &Cluster, folder: &Path) -> [(&'static str, String); 2] {
    let depth = folder
        .strip_prefix(cl.root())
        .expect("the folder lies in the cluster's dir")
        .components()
        .count();
    let climb = "../".repeat(depth);
    let canary = cl.root().join("canary");
    [
        ("d", canary.to_string_lossy().into_owned()),
        ("r", format!("{climb}canary")),
    ]
}

/// `path` is a symlink to `target`, not followed.
fn assert_link(path: &Path, target: &str) {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        meta.file_type().is_symlink(),
        "{} is not a link",
        path.display()
    );
    assert_eq!(fs::read_link(path).unwrap(), Path::new(target));
}

/// Every outcome of `paths` is a failure that says a parent is a symlink.
fn assert_refused_through_link(paths: &[String], outcomes: &[PushOutcome]) {
    assert_eq!(paths.len(), outcomes.len(), "{outcomes:?}");
    for (path, outcome) in paths.iter().zip(outcomes) {
        assert!(
            matches!(outcome, PushOutcome::Failed { reason } if reason.contains("is a symlink")),
            "{path}: {outcome:?}"
        );
    }
}

/// A9 (the CVE-2024-12087 shape), server role: in one push, a hostile device makes
/// links to the canary (absolute and relative) and then a file, a directory and a file
/// in it "inside" each link; in the next push, another file inside. The links are made
/// as links, every path under them is refused with a logged reason, nothing reaches the
/// canary, and the server goes on serving the well-behaved clients.
#[test]
fn files_pushed_inside_a_pushed_link_are_refused_on_the_server() {
    let cl = started();
    let before = canary_now(&cl);
    let server_docs = cl.server_dir(DOCS).expect("the server has the folder");
    let links = escaping_links(&cl, &server_docs);
    let (mut dev, _) = hostile::connect(&cl.server().server_addr(), "hostile", DOCS).unwrap();

    let inside: Vec<String> = links
        .iter()
        .flat_map(|(l, _)| [format!("{l}/x"), format!("{l}/sub"), format!("{l}/sub/f")])
        .collect();
    let mut changes: Vec<Change> = links
        .iter()
        .map(|(l, target)| create(link_entry(l, target)))
        .collect();
    changes.extend(inside.iter().map(|p| {
        create(if p.ends_with("/sub") {
            dir_entry(p)
        } else {
            file_entry(p, INSIDE)
        })
    }));
    let outcomes = dev.push(1, changes, &|r| serve_from(INSIDE, r)).unwrap();
    let (made, refused) = outcomes.split_at(links.len());
    assert!(
        made.iter()
            .all(|o| matches!(o, PushOutcome::Accepted { .. })),
        "the links themselves: {made:?}"
    );
    assert_refused_through_link(&inside, refused);

    let later: Vec<String> = links.iter().map(|(l, _)| format!("{l}/y")).collect();
    let changes = later
        .iter()
        .map(|p| create(file_entry(p, INSIDE)))
        .collect();
    let outcomes = dev.push(2, changes, &|r| serve_from(INSIDE, r)).unwrap();
    assert_refused_through_link(&later, &outcomes);
    drop(dev);

    for path in inside.iter().chain(&later) {
        wait_for_log_line(
            || cl.server().log_text(),
            &[&format!("a parent of {path} is a symlink")],
            LOG_WAIT,
        )
        .unwrap_or_else(|why| panic!("{path}: {why}"));
    }
    for (l, target) in &links {
        assert_link(&server_docs.join(l), target);
    }
    assert_eq!(
        canary_now(&cl),
        before,
        "something was written in the canary"
    );
    still_syncs(&cl, "after-links.bin");
    for (l, target) in &links {
        for i in cl.all_clients() {
            assert_link(&cl.path_on(i, DOCS, l), target);
        }
    }
    assert_confined(&cl, &before);
}

/// A9, renames: a hostile device's rename records move a real directory into a
/// link to the canary, and move the canary's `sub` (seen through the link) out into the
/// folder. Neither is accepted, the directory stays where it was and the canary is
/// untouched.
#[test]
fn renames_into_or_out_of_a_pushed_link_are_refused_on_the_server() {
    let cl = started();
    let before = canary_now(&cl);
    let server_docs = cl.server_dir(DOCS).expect("the server has the folder");
    let [(link, target), _] = escaping_links(&cl, &server_docs);
    let (mut dev, _) = hostile::connect(&cl.server().server_addr(), "hostile", DOCS).unwrap();
    let setup = vec![
        create(link_entry(link, &target)),
        create(dir_entry("real")),
        create(file_entry("real/f", INSIDE)),
    ];
    let outcomes = dev.push(1, setup, &|r| serve_from(INSIDE, r)).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Accepted { .. })),
        "{outcomes:?}"
    );

    let moves = [
        ("real", format!("{link}/real")),
        ("d/sub", "out".to_owned()),
    ];
    for (id, (from, to)) in (2..).zip(&moves) {
        let mut entry = dir_entry(to);
        entry.renamed_from = Some(RelPath::new(*from).unwrap());
        let outcomes = dev
            .push(id, vec![create(entry)], &|r| serve_from(INSIDE, r))
            .unwrap();
        assert!(
            matches!(
                &outcomes[..],
                [PushOutcome::Failed { .. } | PushOutcome::Conflict { .. }]
            ),
            "{from} -> {to}: {outcomes:?}"
        );
    }
    drop(dev);

    files::assert_file(&server_docs.join("real/f"), INSIDE);
    assert!(
        !server_docs.join("out").exists(),
        "the canary's sub came in"
    );
    assert_link(&server_docs.join(link), &target);
    assert_eq!(canary_now(&cl), before, "the canary changed");
    still_syncs(&cl, "after-renames.bin");
    assert_confined(&cl, &before);
}

/// A9, client role: a fake server sends a real client a link to the canary followed by
/// a file inside it in the same index message, and another file inside it in the next
/// one, and serves their blocks. The client makes the link as a link, refuses both
/// files naming them in its log, writes nothing in the canary and keeps running.
#[test]
fn files_sent_inside_a_sent_link_are_refused_by_the_client() {
    let FakeServer {
        scratch,
        client,
        folder,
        listener,
        addr,
    } = FakeServer::new();
    let canary = scratch.path().join("canary");
    files::write(&canary.join("keep.txt"), b"no daemon writes here\n");
    let before = manifest(&canary).unwrap();
    let target = canary.to_string_lossy().into_owned();

    let link_path = folder.join("d");
    let entries = |list: Vec<filesync_proto::wire::Entry>, first: u64| {
        list.into_iter()
            .zip(first..)
            .map(|(mut e, seq)| {
                e.seq = seq;
                e
            })
            .collect::<Vec<_>>()
    };
    let first = entries(vec![link_entry("d", &target), file_entry("d/x", INSIDE)], 1);
    let next = entries(vec![file_entry("d/y", INSIDE)], 3);
    let fake = {
        let link_path = link_path.clone();
        thread::spawn(move || -> Result<(), String> {
            let (mut conn, _) = hostile::accept_device(&listener, "evil-server", 3)?;
            conn.send(ServerMsg::Index {
                inline: Vec::new(),
                entries: first,
                up_to: 2,
                as_of: 2,
                caught_up: true,
            })?;
            // The next message once the link is there: a later batch for the client.
            filesync_tests::poll_until(LOG_WAIT, || {
                fs::symlink_metadata(&link_path)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })?;
            conn.send(ServerMsg::Index {
                inline: Vec::new(),
                entries: next,
                up_to: 3,
                as_of: 3,
                caught_up: true,
            })?;
            // Serves blocks until the client goes away.
            // Bounded by count and by the read timeout of each message.
            for _ in 0..10_000 {
                match conn.recv()? {
                    Some(ClientMsg::BlockRequest { id, request }) => {
                        conn.send(ServerMsg::BlockResponse {
                            id,
                            result: Ok(serve_from(INSIDE, &request)),
                        })?;
                    }
                    Some(ClientMsg::Ping { nonce }) => conn.send(ServerMsg::Pong { nonce })?,
                    Some(_) => {}
                    None => return Ok(()),
                }
            }
            Err("the client sent 10000 messages".into())
        })
    };
    add_evil(&client, &folder, &addr);

    for path in ["d/x", "d/y"] {
        wait_for_log_line(
            || client.log_text(),
            &[&format!("a parent of {path} is a symlink")],
            LOG_WAIT,
        )
        .unwrap_or_else(|why| panic!("the client did not refuse {path}: {why}"));
    }
    client.check_running().unwrap();
    assert_link(&link_path, &target);
    assert_eq!(manifest(&canary).unwrap(), before, "the canary changed");
    client.stop();
    fake.join().expect("fake server thread").unwrap();
}
