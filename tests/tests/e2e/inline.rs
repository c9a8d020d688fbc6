//! Small files' content inline (protocol v6): in a device's push, in the server's index
//! stream (never back to the device that made the version), and in answer to a `Fetch`.
//! A file that comes whole is never asked for by blocks; content that does not match
//! its hash is refused and never written, at either end; a `Fetch` past the limits, or
//! content that points past its batch, ends the connection.

use std::collections::HashMap;
use std::thread;

use filesync_proto::RelPath;
use filesync_proto::wire::{
    BlockError, Change, ClientMsg, FETCH_MAX_FILES, Inline, PushOutcome, ServerMsg, Want,
};
use filesync_tests::Node;
use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::hostile::{
    self, Device, all_paths, create, dir_entry, file_entry, wait_for_log_line,
};

use super::hostile::{FakeServer, LOG_WAIT, add_evil, started};

/// What a receiving daemon logs for each file it asks for by blocks.
const BY_BLOCKS: &str = "downloading by blocks";
/// What a receiving daemon logs for each `Fetch` of small files.
const FETCHING: &str = "fetching small files whole";

/// A change creating `path` with `content`, the content inline.
fn inline(path: &str, content: &[u8]) -> Change {
    Change {
        data: Some(content.to_vec()),
        ..create(file_entry(path, content))
    }
}

/// Pushes `changes` from `dev` and returns the outcomes; the test fails if the server
/// asks for any block.
fn push_inline(dev: &mut Device, id: u64, changes: Vec<Change>) -> Vec<PushOutcome> {
    dev.push(id, changes, &|r| {
        panic!("the server asked for a block of {} sent inline", r.path)
    })
    .unwrap()
}

fn all_accepted(outcomes: &[PushOutcome]) {
    for outcome in outcomes {
        assert!(
            matches!(outcome, PushOutcome::Accepted { .. }),
            "{outcome:?}"
        );
    }
}

/// Reads what the server sends `dev` until `done` holds for a message (pings are
/// answered); returns every message read.
fn read_until(dev: &mut Device, mut done: impl FnMut(&ServerMsg) -> bool) -> Vec<ServerMsg> {
    let mut read = Vec::new();
    // Bounded by count, and each read by the connection's read timeout.
    for _ in 0..10_000 {
        let msg = dev
            .recv()
            .unwrap()
            .expect("the server closed the connection");
        if let ServerMsg::Ping { nonce } = msg {
            dev.send(ClientMsg::Pong { nonce }).unwrap();
            continue;
        }
        let stop = done(&msg);
        read.push(msg);
        if stop {
            return read;
        }
    }
    panic!("no awaited message in 10000");
}

/// Every path of the index batches in `msgs`, with the content that came with it.
fn index_content(msgs: &[ServerMsg]) -> HashMap<String, Option<Vec<u8>>> {
    let mut out = HashMap::new();
    for msg in msgs {
        if let ServerMsg::Index {
            entries, inline, ..
        } = msg
        {
            for (i, e) in entries.iter().enumerate() {
                let data = inline.iter().find(|c| c.entry as usize == i);
                out.insert(e.path.to_string(), data.map(|c| c.data.clone()));
            }
        }
    }
    out
}

fn has_path(msg: &ServerMsg, path: &str) -> bool {
    matches!(msg, ServerMsg::Index { entries, .. } if entries.iter().any(|e| e.path.as_str() == path))
}

/// Waits until `node` logged that it applied `path`, then checks that it never asked
/// for it by blocks.
fn came_whole(node: &Node, path: &str) {
    wait_for_log_line(|| node.log_text(), &["downloaded", path], LOG_WAIT)
        .unwrap_or_else(|why| panic!("{} did not apply {path}: {why}", node.name()));
    let log = node.log_text();
    if let Some(line) = log
        .lines()
        .find(|l| l.contains(BY_BLOCKS) && l.contains(path))
    {
        panic!("{} fetched {path} by blocks: {line}", node.name());
    }
}

/// Files of a few KiB from a device that refuses to serve blocks reach both clients,
/// and files written on a client reach the other: no receiver asks for a block.
#[test]
fn small_files_sync_without_a_single_block_request() {
    let cl = started();
    let (mut dev, _) = hostile::connect(&cl.server().server_addr(), "pusher", DOCS).unwrap();
    let sent: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("small/{i}.txt"),
                pseudo_random(i, 1000 + 300 * i as usize),
            )
        })
        .collect();
    let mut changes = vec![create(dir_entry("small"))];
    changes.extend(sent.iter().map(|(p, c)| inline(p, c)));
    all_accepted(&push_inline(&mut dev, 1, changes));
    for i in 0..2 {
        files::write(
            &cl.path_on(i, DOCS, &format!("from-{i}.txt")),
            pseudo_random(100 + i as u64, 5000),
        );
    }
    cl.settle(DOCS);
    for (path, content) in &sent {
        cl.assert_file_everywhere(DOCS, path, content);
        came_whole(cl.a(), path);
        came_whole(cl.b(), path);
    }
    came_whole(cl.b(), "from-0.txt");
    came_whole(cl.a(), "from-1.txt");
    // Connected all along, both got every file with its index batch: none was fetched.
    for node in [cl.a(), cl.b()] {
        let log = node.log_text();
        if let Some(line) = log.lines().find(|l| l.contains(FETCHING)) {
            panic!("{} fetched small files: {line}", node.name());
        }
    }
}

/// More small files than one index batch carries content for reach a client that was
/// away: the rest come by `Fetch`, still not one by blocks.
#[test]
fn small_files_past_the_batch_budget_are_fetched_whole() {
    let cl = started();
    cl.pause(1, DOCS);
    let (mut dev, _) = hostile::connect(&cl.server().server_addr(), "pusher", DOCS).unwrap();
    // 12 MB of 60 KB files: more than the 8 MiB a batch carries.
    let sent: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("f{i:03}.bin"), pseudo_random(1000 + i, 60_000)))
        .collect();
    for (n, part) in sent.chunks(100).enumerate() {
        let changes = part.iter().map(|(p, c)| inline(p, c)).collect();
        all_accepted(&push_inline(&mut dev, n as u64 + 1, changes));
    }
    cl.resume(1, DOCS);
    cl.settle(DOCS);
    for (path, content) in &sent {
        cl.assert_file_everywhere(DOCS, path, content);
        came_whole(cl.b(), path);
    }
    wait_for_log_line(|| cl.b().log_text(), &[FETCHING], LOG_WAIT)
        .expect("B fetched what came without content");
}

/// Content that does not describe its entry is refused, with the path and the reason,
/// before anything is written: bytes that do not hash to it, a length other than the
/// entry's size, content for a directory.
#[test]
fn inline_content_that_does_not_match_is_refused_and_writes_nothing() {
    let cl = started();
    let server_docs = cl.server_dir(DOCS).unwrap();
    let before = all_paths(&server_docs);
    let (mut dev, _) = hostile::connect(&cl.server().server_addr(), "hostile", DOCS).unwrap();
    let content = pseudo_random(7, 4000);
    let mut lying = inline("lying.txt", &content);
    lying.data = Some(pseudo_random(8, 4000));
    let mut short = inline("short.txt", &content);
    short.data = Some(content[..100].to_vec());
    let dir = Change {
        data: Some(b"x".to_vec()),
        ..create(dir_entry("adir"))
    };
    let outcomes = push_inline(&mut dev, 1, vec![lying, short, dir]);
    let expected = [
        ("lying.txt", "does not match its hash"),
        ("short.txt", "100 bytes"),
        ("adir", "not a live file"),
    ];
    for ((path, why), outcome) in expected.iter().zip(&outcomes) {
        assert!(
            matches!(outcome, PushOutcome::Failed { reason } if reason.contains(path) && reason.contains(why)),
            "{path}: {outcome:?}"
        );
        wait_for_log_line(|| cl.server().log_text(), &[path, why], LOG_WAIT).unwrap();
    }
    assert_eq!(
        all_paths(&server_docs),
        before,
        "the server's folder changed"
    );
    super::hostile::still_syncs(&cl, "after.bin");
}

/// The index stream carries content for versions other devices made, never for the
/// device's own; and a `Fetch` gets live content, or "not available" for a version the
/// server does not hold, and one past the limits ends the connection.
#[test]
fn the_stream_sends_content_to_others_and_fetch_answers() {
    let cl = started();
    let addr = cl.server().server_addr();
    let (mut x, _) = hostile::connect(&addr, "device-x", DOCS).unwrap();
    let x_content = pseudo_random(11, 3000);
    all_accepted(&push_inline(&mut x, 1, vec![inline("x.txt", &x_content)]));

    let (mut y, _) = hostile::connect(&addr, "device-y", DOCS).unwrap();
    let caught_up = read_until(&mut y, |m| {
        matches!(
            m,
            ServerMsg::Index {
                caught_up: true,
                ..
            }
        )
    });
    let seen = index_content(&caught_up);
    assert_eq!(seen["x.txt"].as_deref(), Some(&x_content[..]), "x.txt to y");
    assert_eq!(
        seen["before.txt"].as_deref(),
        Some(&b"before the attack\n"[..]),
        "a client's file to y"
    );

    let y_content = pseudo_random(12, 2000);
    y.send(ClientMsg::Push {
        id: 1,
        changes: vec![inline("y.txt", &y_content)],
    })
    .unwrap();
    let own = read_until(&mut y, |m| has_path(m, "y.txt"));
    assert_eq!(
        index_content(&own)["y.txt"],
        None,
        "y's own file sent back to y"
    );
    let other = read_until(&mut x, |m| has_path(m, "y.txt"));
    assert_eq!(
        index_content(&other)["y.txt"].as_deref(),
        Some(&y_content[..]),
        "y.txt to x"
    );

    let want = |path: &str, content: &[u8]| Want {
        path: RelPath::new(path).unwrap(),
        hash: hostile::sha256(content),
        size: content.len() as u64,
    };
    let files = vec![
        want("x.txt", &x_content),
        want("x.txt", b"another version"),
        want("missing.txt", b"never there"),
    ];
    y.send(ClientMsg::Fetch { id: 7, files }).unwrap();
    let answer = read_until(&mut y, |m| matches!(m, ServerMsg::Fetched { .. }));
    let Some(ServerMsg::Fetched { id: 7, files }) = answer.last() else {
        panic!("not a Fetched answer: {:?}", answer.last());
    };
    let results: Vec<_> = files.iter().map(|f| f.result.clone()).collect();
    assert_eq!(
        results,
        [
            Ok(x_content.clone()),
            Err(BlockError::NotAvailable),
            Err(BlockError::NotAvailable)
        ]
    );

    let peer = y.local_addr().to_string();
    let too_many = vec![want("x.txt", &x_content); FETCH_MAX_FILES + 1];
    y.send(ClientMsg::Fetch {
        id: 8,
        files: too_many,
    })
    .unwrap();
    y.into_raw().wait_closed(LOG_WAIT).unwrap();
    wait_for_log_line(
        || cl.server().log_text(),
        &[&peer, "connection closed", "a Fetch of 257 files"],
        LOG_WAIT,
    )
    .unwrap();
}

/// A hostile server: content whose bytes do not hash to its entry is refused and never
/// written (beside a good file, which is), and an `Inline` pointing past its batch
/// ends the connection with a protocol error naming the server.
#[test]
fn a_client_refuses_content_that_does_not_match_its_entry() {
    // `scratch` first: locals drop in reverse, so the daemon goes before its directory.
    let FakeServer {
        scratch: _scratch,
        client,
        folder,
        listener,
        addr,
    } = FakeServer::new();
    let (good, lying) = (pseudo_random(21, 3000), pseudo_random(22, 3000));
    let (applied, good_copy) = (folder.join("good.txt"), good.clone());
    let fake = thread::spawn(move || -> Result<(), String> {
        let (mut conn, _) = hostile::accept_device(&listener, "evil-server", 2)?;
        let mut entries = vec![
            file_entry("lying.txt", &lying),
            file_entry("good.txt", &good),
        ];
        for (seq, e) in (1..).zip(&mut entries) {
            e.seq = seq;
        }
        let mut bad_bytes = lying.clone();
        bad_bytes[0] ^= 1;
        conn.send(ServerMsg::Index {
            entries: entries.clone(),
            inline: vec![
                Inline {
                    entry: 0,
                    data: bad_bytes,
                },
                Inline {
                    entry: 1,
                    data: good,
                },
            ],
            up_to: 2,
            as_of: 2,
            caught_up: true,
        })?;
        filesync_tests::poll_until(LOG_WAIT, || {
            (applied.exists())
                .then_some(())
                .ok_or_else(|| "good.txt was not applied".to_owned())
        })?;
        conn.send(ServerMsg::Index {
            entries,
            inline: vec![Inline {
                entry: 5,
                data: Vec::new(),
            }],
            up_to: 2,
            as_of: 2,
            caught_up: true,
        })?;
        conn.into_raw().wait_closed(LOG_WAIT).map(drop)
    });
    add_evil(&client, &folder, &addr);
    fake.join().expect("fake server thread").unwrap();
    wait_for_log_line(
        || client.log_text(),
        &["lying.txt", "does not match its hash"],
        LOG_WAIT,
    )
    .unwrap();
    wait_for_log_line(
        || client.log_text(),
        &["protocol error from server", "content for entry 5"],
        LOG_WAIT,
    )
    .unwrap();
    files::assert_file(&folder.join("good.txt"), &good_copy);
    let written: Vec<String> = (all_paths(&folder).into_iter())
        .filter(|p| p.contains("lying") || p.starts_with(".filesync-tmp"))
        .collect();
    assert!(written.is_empty(), "written: {written:?}");
    client.check_running().unwrap();
    client.stop();
}
