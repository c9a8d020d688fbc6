//! Hostile input on the wire (test-matrix A1, A2, A6, A7, A8, A11, A12 and the connection
//! limits): a device written in the test code sends what no honest device would. Each
//! bad input must close its connection (or have its change refused) with a reason in the
//! server's log, write nothing outside the folder, and leave the server serving the
//! well-behaved clients, which sync a file afterwards.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use filesync_proto::auth::{AuthRequest, MAX_AUTH_FRAME};
use filesync_proto::frame::encode_payload;
use filesync_proto::handshake::MAGIC;
use filesync_proto::wire::{
    BlockInfo, BlockListPiece, Change, ClientMsg, EntryKind, Hello, PushOutcome, ServerMsg,
};
use filesync_proto::{DeviceId, FolderName, Handshake, MAX_WIRE_FRAME};
use filesync_tests::cluster::DOCS;
use filesync_tests::exec::Scratch;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::hostile::{
    self, PLACEHOLDER, Raw, all_paths, create, file_entry, frame, serve_from, splice_path,
    wait_for_log_line,
};
use filesync_tests::{Cluster, Node, manifest, server_store};

/// How long the server may take to log why it closed a connection.
pub(super) const LOG_WAIT: Duration = Duration::from_secs(10);
/// Longer than the server's deadline for everything before Hello (10 s).
const PRE_HELLO_WAIT: Duration = Duration::from_secs(20);

/// The server's data dir without its index files, which SQLite rewrites at will: what a
/// hostile device might manage to write into.
fn data_snapshot(data_dir: &Path) -> BTreeSet<String> {
    all_paths(data_dir)
        .into_iter()
        .filter(|p| !p.starts_with(".filesync/index/"))
        .collect()
}

/// A cluster whose clients have synced one file, so the server's folder exists.
pub(super) fn started() -> Cluster {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "before.txt"), b"before the attack\n");
    cl.settle(DOCS);
    cl
}

/// Ends a scenario: the well-behaved clients still sync a new file both ways, and
/// the common oracle (canary dir untouched, nothing next to the folders) holds.
pub(super) fn still_syncs(cl: &Cluster, name: &str) {
    let content = pseudo_random(91, 70_000);
    files::write(&cl.path_on(1, DOCS, name), &content);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, name, &content);
}

/// The server logs a closed connection with the peer's address and the reason.
fn closed_with(cl: &Cluster, peer: std::net::SocketAddr, reason: &str) {
    let peer = peer.to_string();
    wait_for_log_line(
        || cl.server().log_text(),
        &[&peer, "connection closed", reason],
        LOG_WAIT,
    )
    .unwrap_or_else(|why| panic!("no logged reason {reason:?} for {peer}: {why}"));
}

/// Sends `bytes` after Hello and checks that the server closes the connection and logs
/// `reason`.
fn after_hello(cl: &Cluster, what: &str, bytes: &[u8], reason: &str) {
    let (mut dev, _) = hostile::connect(&cl.server().server_addr(), "hostile", DOCS)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let peer = dev.local_addr();
    // The server may close before it has read everything: a failed write is fine.
    let _ = dev.send_raw(bytes);
    dev.into_raw()
        .wait_closed(LOG_WAIT)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    closed_with(cl, peer, reason);
}

/// Sends `bytes` on `raw` (a connection before Hello), then EOF, and checks that the
/// server closes the connection and logs `reason`.
fn before_hello(cl: &Cluster, what: &str, raw: Result<Raw, String>, bytes: &[u8], reason: &str) {
    let mut raw = raw.unwrap_or_else(|e| panic!("{what}: {e}"));
    let peer = raw.local_addr();
    raw.write(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    raw.shutdown_write();
    raw.wait_closed(LOG_WAIT)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    closed_with(cl, peer, reason);
}

fn push_of(changes: Vec<Change>) -> ClientMsg {
    ClientMsg::Push { id: 1, changes }
}

/// A8 and the handshake: bytes without TLS, bad frames inside TLS before and after
/// Hello (handshake, credentials, wire messages), a wrong protocol version, a connection
/// that never starts TLS, a 1-byte-per-second trickle, and one address opening too many
/// connections.
#[test]
fn hostile_frames_close_the_connection_with_a_logged_reason() {
    let cl = started();
    let addr = cl.server().server_addr();
    let data_dir = cl.server().data_dir().to_owned();
    let before = data_snapshot(&data_dir);

    // Slow attackers run while the others go on: each must be cut at the deadline.
    let silent = {
        let addr = addr.clone();
        thread::spawn(move || {
            let mut raw = Raw::connect(&addr).expect("connect");
            let peer = raw.local_addr();
            (peer, raw.wait_closed(PRE_HELLO_WAIT))
        })
    };
    let trickle = {
        let addr = addr.clone();
        thread::spawn(move || {
            let mut raw = Raw::connect_tls(&addr).expect("connect");
            let peer = raw.local_addr();
            let mut bytes = frame(&encode_payload(&Handshake::current()).unwrap());
            bytes.extend(frame(&encode_payload(&register()).unwrap()));
            bytes.extend(frame(&encode_payload(&hello()).unwrap()));
            // One byte a second inside TLS, until the server gives up on us (or all are
            // sent): the deadline covers TLS, the handshake, credentials and Hello.
            for b in bytes {
                if raw.write(&[b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_secs(1));
            }
            (peer, raw.wait_closed(PRE_HELLO_WAIT))
        })
    };

    // Without TLS: an HTTP request and garbage never reach the handshake.
    for (what, bytes) in [
        ("HTTP request", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("garbage", vec![0xff; 64]),
    ] {
        before_hello(
            &cl,
            what,
            Raw::connect(&addr),
            &bytes,
            "TLS handshake failed",
        );
    }

    // Inside TLS, before Hello: not our protocol, a wrong magic, a wrong version, a frame
    // over the handshake's limit, a truncated handshake.
    let wrong_version = Handshake {
        magic: MAGIC,
        version: filesync_proto::PROTOCOL_VERSION + 7,
    };
    let wrong_magic = Handshake {
        magic: *b"HTTP",
        version: filesync_proto::PROTOCOL_VERSION,
    };
    let handshakes: [(&str, Vec<u8>, &str); 5] = [
        (
            "HTTP request inside TLS",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "bad handshake",
        ),
        (
            "wrong magic",
            frame(&encode_payload(&wrong_magic).unwrap()),
            "not a filesync client (bad magic bytes)",
        ),
        (
            "wrong protocol version",
            frame(&encode_payload(&wrong_version).unwrap()),
            "protocol version mismatch",
        ),
        (
            "2^32-1 handshake",
            u32::MAX.to_be_bytes().to_vec(),
            "larger than the limit",
        ),
        (
            "truncated handshake",
            vec![0, 0, 0, 5, b'F'],
            "in the middle of a frame",
        ),
    ];
    for (what, bytes, reason) in handshakes {
        before_hello(&cl, what, Raw::connect_tls(&addr), &bytes, reason);
    }
    // After the handshake, instead of credentials: garbage, a frame over the auth
    // limit, a truncated frame.
    let credentials: [(&str, Vec<u8>, &str); 3] = [
        (
            "garbage credentials",
            frame(&[0xff; 64]),
            "bad credentials message",
        ),
        (
            "credentials over the limit",
            (MAX_AUTH_FRAME as u32 + 1).to_be_bytes().to_vec(),
            "larger than the limit",
        ),
        (
            "truncated credentials",
            vec![0, 0, 0, 40, 2, 1],
            "in the middle of a frame",
        ),
    ];
    for (what, bytes, reason) in credentials {
        let raw = hostile::handshaken(&addr).map(|(raw, _)| raw);
        before_hello(&cl, what, raw, &bytes, reason);
    }

    // After Hello: every frame case of A8, an unknown message, a second Hello, a push
    // over the batch limit.
    let bad_frames: [(&str, Vec<u8>, &str); 7] = [
        ("length 0", frame(&[]), "bad message from device"),
        (
            "length 1, unknown tag",
            frame(&[0x7f]),
            "bad message from device",
        ),
        (
            "max + 1",
            (MAX_WIRE_FRAME as u32 + 1).to_be_bytes().to_vec(),
            "larger than the limit",
        ),
        (
            "2^32 - 1",
            u32::MAX.to_be_bytes().to_vec(),
            "larger than the limit",
        ),
        (
            "valid length, garbage",
            frame(&[0xff; 64]),
            "bad message from device",
        ),
        (
            "second Hello",
            frame(&encode_payload(&hello()).unwrap()),
            "second Hello",
        ),
        (
            "1001 changes in one push",
            frame(
                &encode_payload(&push_of(
                    (0..1001)
                        .map(|i| create(file_entry(&format!("f{i}"), b"x")))
                        .collect(),
                ))
                .unwrap(),
            ),
            "over the limit of 1000",
        ),
    ];
    for (what, bytes, reason) in &bad_frames {
        after_hello(&cl, what, bytes, reason);
    }
    // A truncated frame, then EOF.
    let mut cut = 100u32.to_be_bytes().to_vec();
    cut.extend([1; 10]);
    let (mut dev, _) = hostile::connect(&addr, "hostile", DOCS).unwrap();
    let peer = dev.local_addr();
    dev.send_raw(&cut).unwrap();
    let mut raw = dev.into_raw();
    raw.shutdown_write();
    raw.wait_closed(LOG_WAIT).unwrap();
    closed_with(&cl, peer, "in the middle of a frame");

    for (what, handle, reason) in [
        ("silent", silent, "no TLS handshake within 10s"),
        ("trickle", trickle, "within 10s"),
    ] {
        let (peer, closed) = handle.join().expect("attacker thread");
        let after = closed.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            after < Duration::from_secs(15),
            "{what}: closed only after {after:?}"
        );
        closed_with(&cl, peer, reason);
    }

    // Too many connections from one address: the clients hold one each; the server
    // takes 30 more and closes the rest at once with a reason.
    let crowd: Vec<Raw> = (0..40).map(|_| Raw::connect(&addr).unwrap()).collect();
    let refused = "connection refused: 32 connections from that address already";
    filesync_tests::poll_until(LOG_WAIT, || {
        let n = cl.server().log_text().matches(refused).count();
        if n == 10 {
            Ok(())
        } else {
            Err(format!("{n} refusals logged, expected 10"))
        }
    })
    .unwrap();
    drop(crowd);

    assert_eq!(
        data_snapshot(&data_dir),
        before,
        "the server's data dir changed"
    );
    still_syncs(&cl, "after-frames.bin");
}

/// Review finding M6: at most 128 connections may be authenticating at once, so
/// connections that say nothing (they cost an attacker nothing) can never hold the
/// slots devices sync through. Four sources hold 32 silent connections each (the
/// per-address limit): the 129th and later are closed at once with a logged reason;
/// devices already connected sync throughout; the server closes the silent ones at
/// their 10 s deadline, and a device that reconnects meanwhile gets in right after.
#[test]
fn silent_connections_hold_at_most_the_unauthenticated_budget() {
    const BUDGET: usize = 128;
    const PER_SOURCE: usize = 32;
    let cl = started();
    let addr = cl.server().server_addr();
    let source = |i: u8| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, i));
    let mut crowd: Vec<Raw> = (0..BUDGET / PER_SOURCE)
        .flat_map(|s| (0..PER_SOURCE).map(move |_| source(2 + s as u8)))
        .map(|from| Raw::connect_from(&addr, from).expect("connect"))
        .collect();
    let refused = "connection refused: 128 connections are authenticating already";
    for _ in 0..4 {
        let mut late = Raw::connect_from(&addr, source(10)).expect("connect");
        let peer = late.local_addr().to_string();
        let after = late
            .wait_closed(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("a connection past the budget: {e}"));
        assert!(
            after < Duration::from_secs(2),
            "closed only after {after:?}"
        );
        wait_for_log_line(|| cl.server().log_text(), &[&peer, refused], LOG_WAIT)
            .unwrap_or_else(|why| panic!("no logged refusal for {peer}: {why}"));
    }

    // The devices' sessions are not part of the budget: they go on syncing.
    let during = pseudo_random(17, 20_000);
    files::write(&cl.path_on(0, DOCS, "during.bin"), &during);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "during.bin", &during);

    // A device that connects anew: refused while the budget is still full, it gets in
    // once the server has closed the silent connections at their deadline.
    cl.b().stop();
    cl.b().start();
    for (i, raw) in crowd.iter_mut().enumerate() {
        raw.wait_closed(PRE_HELLO_WAIT)
            .unwrap_or_else(|e| panic!("silent connection {i}: {e}"));
    }
    drop(crowd);
    still_syncs(&cl, "after-the-crowd.bin");
    assert!(
        cl.server()
            .log_text()
            .contains("no TLS handshake within 10s"),
        "the silent connections were not cut at their deadline"
    );
}

/// A device that sends but never reads: once the server's queue to it is full, the
/// server closes the connection after the idle timeout (30 s) instead of holding it,
/// and says why.
#[test]
fn hostile_device_that_never_reads_is_cut_off() {
    let cl = started();
    let (dev, _) = hostile::connect(&cl.server().server_addr(), "hostile", DOCS).unwrap();
    let peer = dev.local_addr();
    let mut raw = dev.into_raw();
    let pings: Vec<u8> = (0..10_000u64)
        .flat_map(|nonce| frame(&encode_payload(&ClientMsg::Ping { nonce }).unwrap()))
        .collect();
    let sent = raw.fill(&pings, 10_000).unwrap();
    assert!(sent > 0, "the server stopped reading at once");
    // Reading now would unblock the server: wait for its verdict first.
    wait_for_log_line(
        || cl.server().log_text(),
        &[
            &peer.to_string(),
            "connection closed: the peer read nothing for 30s",
        ],
        Duration::from_secs(90),
    )
    .unwrap();
    raw.wait_closed(LOG_WAIT).unwrap();
    still_syncs(&cl, "after-never-reads.bin");
}

/// A1: every path form of the matrix, spliced into a push, fails to decode: the
/// connection is closed with a logged reason and nothing is written.
#[test]
fn hostile_paths_in_a_push_close_the_connection() {
    let cl = started();
    let data_dir = cl.server().data_dir().to_owned();
    let before = data_snapshot(&data_dir);
    let long_path = vec!["x".repeat(240); 17].join("/") + "y";
    let long_component = "x".repeat(256);
    let bad: Vec<&[u8]> = vec![
        b"../x",
        b"..",
        b"a/../../x",
        b"a/./../..",
        b"bar/../../foo/bar",
        b"/etc/passwd",
        b"//x",
        b"\\x",
        b"a\\..\\..\\x",
        b"C:\\x",
        b"C:x",
        b"\\\\?\\C:\\x",
        b"\\\\server\\share",
        b"",
        b".",
        b"a//b",
        b"a/",
        b"a\0b",
        b"\xff\xfe",
        long_path.as_bytes(),
        long_component.as_bytes(),
    ];
    for path in bad {
        let msg = push_of(vec![create(file_entry(PLACEHOLDER, b"evil"))]);
        after_hello(
            &cl,
            &String::from_utf8_lossy(path),
            &frame(&splice_path(&msg, path)),
            "bad message from device",
        );
    }
    // The same in the other places a path travels: a rename's source, a block request,
    // a versions listing.
    let mut moved = file_entry("moved", b"");
    moved.kind = EntryKind::Dir;
    moved.renamed_from = Some(filesync_proto::RelPath::new(PLACEHOLDER).unwrap());
    let request = filesync_proto::wire::BlockRequest {
        path: filesync_proto::RelPath::new(PLACEHOLDER).unwrap(),
        offset: 0,
        size: 4,
        hash: hostile::sha256(b"root"),
    };
    for msg in [
        push_of(vec![create(moved)]),
        ClientMsg::BlockRequest { id: 1, request },
        ClientMsg::ListVersions {
            id: 2,
            path: filesync_proto::RelPath::new(PLACEHOLDER).unwrap(),
        },
    ] {
        after_hello(
            &cl,
            "../../etc/passwd elsewhere",
            &frame(&splice_path(&msg, b"../../etc/passwd")),
            "bad message from device",
        );
    }
    assert_eq!(
        data_snapshot(&data_dir),
        before,
        "the server's data dir changed"
    );
    still_syncs(&cl, "after-paths.bin");
}

/// A2, A6, A7, A11, A12: changes that decode but must be refused (reserved names, block
/// lists that do not describe the file, blocks that do not match), base and sequence
/// anomalies, and mode bits and mtimes that are stored narrowed or as they are.
#[test]
fn hostile_pushes_are_refused_and_odd_metadata_is_tamed() {
    let cl = started();
    let (mut dev, welcome) = hostile::connect(&cl.server().server_addr(), "hostile", DOCS).unwrap();
    let server_docs = cl.server_dir(DOCS).unwrap();

    // A2: the daemon's reserved namespace, anywhere in a path.
    let reserved = [
        ".filesync-tmp-0000000000000000",
        "sub/.filesync-partial-0123",
        ".filesync/versions/x",
        ".filesync",
    ];
    let changes = reserved
        .iter()
        .map(|p| create(file_entry(p, b"evil")))
        .collect();
    let outcomes = dev.push(1, changes, &|r| serve_from(b"evil", r)).unwrap();
    for (path, outcome) in reserved.iter().zip(&outcomes) {
        assert!(
            matches!(outcome, PushOutcome::Failed { reason } if reason.contains("reserved namespace")),
            "{path}: {outcome:?}"
        );
    }

    // A6: block lists and blocks that do not describe the content.
    let content = pseudo_random(5, 3000);
    let refusals: Vec<(&str, filesync_proto::wire::Entry, Vec<u8>, &str)> = vec![
        {
            let e = file_entry("bad-bytes.bin", &content);
            (
                "bytes not matching the hash",
                e,
                vec![0; 3000],
                "does not match its hash",
            )
        },
        {
            let mut e = file_entry("short.bin", &content);
            e.size += 1;
            ("sizes not adding up", e, content.clone(), "entry.size")
        },
        {
            let mut e = file_entry("zero.bin", &content);
            e.blocks.push(BlockInfo {
                hash: hostile::sha256(b""),
                size: 0,
            });
            ("zero-length block", e, content.clone(), "entry.blocks")
        },
        {
            let big = vec![1u8; filesync_proto::wire::MAX_BLOCK_SIZE as usize + 1];
            let mut e = file_entry("huge-block.bin", &big);
            e.blocks = vec![BlockInfo {
                hash: hostile::sha256(&big),
                size: filesync_proto::wire::MAX_BLOCK_SIZE + 1,
            }];
            ("block over the limit", e, big, "entry.blocks[0].size")
        },
        {
            let mut e = file_entry("tiny.bin", b"x");
            e.blocks = vec![
                BlockInfo {
                    hash: hostile::sha256(b"x"),
                    size: 1,
                };
                100_000
            ];
            (
                "100000 blocks for 1 byte",
                e,
                b"x".to_vec(),
                "100000 blocks",
            )
        },
        (
            "a path below a file",
            file_entry("before.txt/child", b"evil"),
            b"evil".to_vec(),
            "not a directory",
        ),
        {
            let mut e = file_entry("link", b"");
            e.kind = EntryKind::Symlink;
            e.blocks.clear();
            ("empty link target", e, Vec::new(), "entry.target")
        },
    ];
    for (what, entry, serve, reason) in refusals {
        let outcomes = dev
            .push(2, vec![create(entry)], &|r| serve_from(&serve, r))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            matches!(&outcomes[..], [PushOutcome::Failed { reason: r }] if r.contains(reason)),
            "{what}: {outcomes:?}"
        );
    }

    // A7: a new file, the same change again, a base from the future, a good edit.
    let v1 = file_entry("a7.txt", b"one\n");
    let push = |dev: &mut hostile::Device, change: Change, bytes: &[u8]| {
        let outcomes = dev
            .push(3, vec![change], &|r| serve_from(bytes, r))
            .unwrap();
        assert_eq!(outcomes.len(), 1);
        outcomes[0].clone()
    };
    let PushOutcome::Accepted { seq: s1 } = push(&mut dev, create(v1.clone()), b"one\n") else {
        panic!("a new file was not accepted")
    };
    assert!(
        s1 > welcome.current_seq,
        "{s1} after {}",
        welcome.current_seq
    );
    assert_eq!(
        push(&mut dev, create(v1.clone()), b"one\n"),
        PushOutcome::Accepted { seq: s1 },
        "the same change twice is one version"
    );
    let v2 = file_entry("a7.txt", b"two\n");
    let future = Change {
        entry: v2.clone(),
        base_seq: s1 + 1000,
        data: None,
    };
    assert_eq!(
        push(&mut dev, future, b"two\n"),
        PushOutcome::Conflict { current_seq: s1 }
    );
    let good = Change {
        entry: v2,
        base_seq: s1,
        data: None,
    };
    let PushOutcome::Accepted { seq: s2 } = push(&mut dev, good.clone(), b"two\n") else {
        panic!("an edit on the current version was not accepted")
    };
    assert!(s2 > s1);
    assert_eq!(
        push(&mut dev, good, b"two\n"),
        PushOutcome::Accepted { seq: s2 },
        "the same update twice is one version"
    );

    // A Hello from a sequence the folder never reached gets the whole index.
    for since_seq in [s2 + 1000, u64::MAX] {
        let (mut ahead, _) = hostile::connect_with(
            &cl.server().server_addr(),
            Hello {
                since_seq,
                epoch: welcome.epoch,
                ..hello_msg()
            },
        )
        .unwrap();
        let streamed = ahead.read_index().unwrap();
        assert!(
            ["before.txt", "a7.txt"]
                .iter()
                .all(|want| streamed.iter().any(|p| p == want)),
            "since {since_seq}: {streamed:?}"
        );
    }

    // A11 and A12: narrowed mode bits, a mode that forbids everything, extreme mtimes.
    let odd_files = [
        ("setuid.sh", 0o4755, 0o755, 1_700_000_000_000_000_000),
        ("sticky.txt", 0o1777, 0o777, 1_700_000_000_000_000_000),
        ("locked.txt", 0o000, 0o000, 1_700_000_000_000_000_000),
        ("epoch.txt", 0o644, 0o644, 0),
        ("before-1970.txt", 0o644, 0o644, -1_500_000_000_000_000_000),
        ("year-2262.txt", 0o644, 0o644, i64::MAX),
    ];
    let odd = odd_files
        .iter()
        .map(|&(name, mode, _, mtime_ns)| {
            let mut e = file_entry(name, name.as_bytes());
            e.mode = mode;
            e.mtime_ns = mtime_ns;
            create(e)
        })
        .collect();
    let outcomes = dev
        .push(4, odd, &|r| serve_from(r.path.as_str().as_bytes(), r))
        .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Accepted { .. })),
        "{outcomes:?}"
    );
    drop(dev);

    let common = cl.settle(DOCS);
    for (name, _, want, mtime_ns) in odd_files {
        cl.assert_file_everywhere(DOCS, name, name.as_bytes());
        let copies = cl
            .all_clients()
            .into_iter()
            .map(|i| (format!("client {i}"), cl.path_on(i, DOCS, name)))
            .chain([("the server".to_owned(), server_docs.join(name))]);
        for (on, path) in copies {
            assert_eq!(files::mode(&path), want, "{name}'s mode on {on}");
            assert_eq!(files::mtime_ns(&path), mtime_ns, "{name}'s mtime on {on}");
        }
    }
    cl.assert_file_everywhere(DOCS, "a7.txt", b"two\n");
    for path in reserved
        .iter()
        .chain(&["bad-bytes.bin", "short.bin", "tiny.bin", "link"])
    {
        assert!(
            !all_paths(&server_docs).contains(*path),
            "{path} appeared on the server"
        );
    }
    assert!(!common.contains_key("huge-block.bin"));
    // The account is the server's choice: the folder's parent in the data dir.
    let account = server_docs
        .parent()
        .and_then(Path::file_name)
        .and_then(|a| a.to_str())
        .expect("the server's folder lies in an account dir");
    let summary = server_store::check_index(
        &server_store::index_file(cl.server().data_dir(), account, DOCS),
        &manifest(&server_docs).unwrap(),
    )
    .unwrap();
    assert!(summary.max_seq >= s2);
    still_syncs(&cl, "after-pushes.bin");
}

fn hello_msg() -> Hello {
    Hello {
        device: DeviceId::new("hostile").unwrap(),
        device_name: "hostile".into(),
        folder: FolderName::new(DOCS).unwrap(),
        since_seq: 0,
        epoch: 0,
    }
}

fn register() -> AuthRequest {
    AuthRequest::Register {
        device: DeviceId::new("hostile").unwrap(),
        device_name: "hostile".into(),
    }
}

fn hello() -> ClientMsg {
    ClientMsg::Hello(hello_msg())
}

/// A running client `a` with a folder dir `evil` not added yet, and a listener on
/// which the test plays the server.
pub(super) struct FakeServer {
    // Field order is drop order: the daemon goes before its directory.
    pub(super) client: Node,
    pub(super) folder: PathBuf,
    pub(super) listener: TcpListener,
    pub(super) addr: String,
    pub(super) scratch: Scratch,
}

impl FakeServer {
    pub(super) fn new() -> FakeServer {
        let scratch = Scratch::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let client = Node::client(scratch.path(), "a");
        client.start();
        let folder = client.folder_dir("evil");
        std::fs::create_dir_all(&folder).unwrap();
        FakeServer {
            client,
            folder,
            listener,
            addr,
            scratch,
        }
    }
}

/// `filesyncctl add` of `folder` as `evil` on the server at `addr`.
pub(super) fn add_evil(client: &Node, folder: &Path, addr: &str) {
    client.ctl_ok([
        "add".as_ref(),
        folder.as_os_str(),
        "--server".as_ref(),
        addr.as_ref(),
        "--name".as_ref(),
        "evil".as_ref(),
    ]);
}

/// A hostile *server*: a fake one in the test code welcomes a real client, then sends
/// entries the client must not apply (a reserved name, a block list that does not add
/// up, an empty link target) beside a good one, and then an entry whose path leaves the
/// folder. The client applies only the good entry, logs each refusal, drops the
/// connection on the bad path, and writes nothing outside its folder.
#[test]
fn hostile_server_entries_are_refused_by_the_client() {
    // `scratch` first: locals drop in reverse, so the daemon goes before its directory.
    let FakeServer {
        scratch,
        client,
        folder,
        listener,
        addr,
    } = FakeServer::new();
    let root = scratch.path();
    files::write(&root.join("canary/keep.txt"), b"no daemon writes here\n");
    let before = all_paths(root);

    let applied = folder.clone();
    let fake = thread::spawn(move || -> Result<(), String> {
        let (mut conn, hello) = hostile::accept_device(&listener, "evil-server", 10)?;
        assert_eq!(hello.folder.as_str(), "evil");
        let reserved = file_entry(".filesync-tmp-0000000000000001", b"evil");
        let mut short = file_entry("short.txt", b"evil");
        short.size = 1;
        let mut link = file_entry("bad-link", b"");
        link.kind = EntryKind::Symlink;
        let mut good = file_entry("good-dir", b"");
        good.kind = EntryKind::Dir;
        let mut entries = vec![reserved, short, link, good];
        for (i, e) in entries.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        conn.send(ServerMsg::Index {
            inline: Vec::new(),
            entries,
            up_to: 4,
            as_of: 4,
            caught_up: true,
        })?;
        // The good entry is applied while the connection lives on.
        let good_dir = applied.join("good-dir");
        filesync_tests::poll_until(LOG_WAIT, || {
            if good_dir.is_dir() {
                Ok(())
            } else {
                Err("good-dir was not applied".to_owned())
            }
        })?;
        let mut escape = file_entry(PLACEHOLDER, b"evil");
        escape.seq = 5;
        let msg = ServerMsg::Index {
            inline: Vec::new(),
            entries: vec![escape],
            up_to: 5,
            as_of: 5,
            caught_up: true,
        };
        conn.send_raw(&frame(&splice_path(&msg, b"../escape.txt")))?;
        conn.into_raw().wait_closed(LOG_WAIT).map(drop)
    });
    add_evil(&client, &folder, &addr);
    fake.join().expect("fake server thread").unwrap();

    for reason in [
        "reserved namespace",
        "entry.size",
        "entry.target",
        "bad message from server",
    ] {
        wait_for_log_line(|| client.log_text(), &[reason], LOG_WAIT)
            .unwrap_or_else(|why| panic!("the client did not log {reason:?}: {why}"));
    }
    client.check_running().unwrap();
    // Besides the daemon's own folder marker, written at the first scan.
    assert_eq!(
        all_paths(&folder),
        BTreeSet::from([".filesync-folder".to_owned(), "good-dir".to_owned()]),
        "only the good entry is applied"
    );
    let outside: BTreeSet<String> = all_paths(root)
        .into_iter()
        .filter(|p| !p.starts_with("a/") && !p.starts_with("a-evil"))
        .collect();
    let before: BTreeSet<String> = before
        .into_iter()
        .filter(|p| !p.starts_with("a/") && !p.starts_with("a-evil"))
        .collect();
    assert_eq!(
        outside, before,
        "something appeared outside the client's folder"
    );
}

/// A server that sends but never reads: the client gives up on the connection after the
/// idle timeout (30 s) and says why, instead of leaving the folder stalled on it. Once
/// the client's writes are stuck it stops reading too, so the silence deadline and the
/// stuck-write deadline run out together: either reason is a right one.
#[test]
fn hostile_server_that_never_reads_is_cut_off() {
    let FakeServer {
        scratch: _scratch,
        client,
        folder,
        listener,
        addr,
    } = FakeServer::new();
    let fake = thread::spawn(move || -> Result<hostile::Raw, String> {
        let (conn, _) = hostile::accept_device(&listener, "evil-server", 0)?;
        let mut raw = conn.into_raw();
        let pings: Vec<u8> = (0..10_000u64)
            .flat_map(|nonce| frame(&encode_payload(&ServerMsg::Ping { nonce }).unwrap()))
            .collect();
        raw.fill(&pings, 10_000)?;
        Ok(raw)
    });
    add_evil(&client, &folder, &addr);
    let mut raw = fake.join().expect("fake server thread").unwrap();
    wait_for_log_line(
        || client.log_text(),
        &["disconnected", &addr, "nothing for 30s"],
        Duration::from_secs(90),
    )
    .unwrap();
    raw.wait_closed(LOG_WAIT).unwrap();
    client.check_running().unwrap();
}

/// L6: on the control socket, a request over 1 MiB, garbage, and a half request are each
/// answered with an error or a closed connection, and the daemon still answers `status`.
#[test]
fn hostile_control_requests_leave_the_daemon_serving() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let scratch = Scratch::new();
    let node = Node::client(scratch.path(), "a");
    node.start();
    let socket = node.config_path().with_file_name("ctl.sock");
    let over = (filesync_proto::MAX_CONTROL_REQUEST as u32 + 1).to_be_bytes();
    // (what, bytes, how long the daemon may take to close: a request over the limit is
    // refused from its length alone; a stalled one waits out its 10 s deadline).
    let cases: [(&str, Vec<u8>, Duration); 3] = [
        ("over 1 MiB", over.to_vec(), Duration::from_secs(5)),
        ("garbage", frame(&[0xff; 32]), Duration::from_secs(5)),
        (
            "half a request, then a stall",
            vec![0, 0, 0, 200, 1, 2, 3],
            PRE_HELLO_WAIT,
        ),
    ];
    for (what, bytes, within) in cases {
        let mut conn = UnixStream::connect(&socket).unwrap();
        conn.set_read_timeout(Some(within)).unwrap();
        conn.write_all(&bytes).unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap_or_else(|e| {
            panic!("{what}: the daemon kept the connection open for {within:?}: {e}")
        });
        assert!(
            answer.len() < 1024,
            "{what}: {} bytes of answer",
            answer.len()
        );
        assert!(
            node.status_json()["folders"].is_array(),
            "{what}: no status after it"
        );
    }
    node.check_running().unwrap();
}

/// Pieces of a block list that do not continue it, that another message interrupts, or
/// that come before a push without their entry close the connection with a reason naming
/// the path; the server goes on serving the others.
#[test]
fn malformed_block_list_pieces_are_refused_with_their_path() {
    let cl = started();
    let content = pseudo_random(7, 300_000);
    let entry = file_entry("long.bin", &content);
    let piece = |path: &str, first: u64| {
        let msg = ClientMsg::BlockList(BlockListPiece {
            path: filesync_proto::RelPath::new(path).unwrap(),
            first,
            blocks: entry.blocks.clone(),
        });
        frame(&encode_payload(&msg).unwrap())
    };
    let ping = frame(&encode_payload(&ClientMsg::Ping { nonce: 1 }).unwrap());
    let push =
        frame(&encode_payload(&push_of(vec![create(file_entry("other.bin", b"x"))])).unwrap());
    let cases: [(&str, Vec<Vec<u8>>, &str); 4] = [
        (
            "a piece out of order",
            vec![piece("long.bin", 0), piece("long.bin", 7)],
            "block list of long.bin starts at block 7",
        ),
        (
            "pieces of two paths interleaved",
            vec![
                piece("long.bin", 0),
                piece("b.bin", 0),
                piece("long.bin", 1),
            ],
            "block list of long.bin came in pieces for another path",
        ),
        (
            "another message between the pieces and theirs",
            vec![piece("long.bin", 0), ping],
            "another message between the pieces of a block list",
        ),
        (
            "a push without the piece's entry",
            vec![piece("long.bin", 0), push],
            "block list of long.bin came before a message without its entry",
        ),
    ];
    for (what, frames, reason) in cases {
        after_hello(&cl, what, &frames.concat(), reason);
    }
    still_syncs(&cl, "after-pieces.bin");
}
