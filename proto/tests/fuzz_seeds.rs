//! The seed corpus of the fuzz targets in `fuzz/` (`fuzz/seeds/TARGET/NAME`): real
//! encoded messages, so that the fuzzer starts from inputs that get past the first
//! byte. This test fails when a seed no longer matches what the current types encode;
//! `FILESYNC_WRITE_FUZZ_SEEDS=1 cargo test -p filesync-proto --test fuzz_seeds` writes
//! them anew. The seeds of `ignore_parse` are text, written by hand.

use std::path::{Path, PathBuf};

use filesync_proto::control::{self, AddFolder, Keep, Request, Response};
use filesync_proto::frame::encode_payload;
use filesync_proto::wire::{
    BlockError, BlockInfo, BlockRequest, Change, ClientMsg, Entry, EntryKind, Hello, PushOutcome,
    ServerMsg, ShareRequest, Welcome,
};
use filesync_proto::{AccountName, DeviceId, FolderName, Handshake, Hash, RelPath};

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: RelPath::new(path).unwrap(),
        kind,
        deleted: false,
        size: 5,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: 0o644,
        hash: Hash([3; 32]),
        blocks: vec![BlockInfo {
            hash: Hash([3; 32]),
            size: 5,
        }],
        target: if kind == EntryKind::Symlink {
            "../t".into()
        } else {
            String::new()
        },
        seq: 7,
        origin: DeviceId::new("dev-a").unwrap(),
        conflict: None,
        renamed_from: None,
    }
}

fn client_messages() -> Vec<(&'static str, ClientMsg)> {
    let request = BlockRequest {
        path: RelPath::new("dir/file.txt").unwrap(),
        offset: 65536,
        size: 5,
        hash: Hash([3; 32]),
    };
    vec![
        (
            "sharing",
            ClientMsg::Sharing(ShareRequest::Share {
                folder: FolderName::new("docs").unwrap(),
                with: AccountName::new("bob").unwrap(),
                read_only: true,
            }),
        ),
        (
            "hello",
            ClientMsg::Hello(Hello {
                device: DeviceId::new("dev-a").unwrap(),
                device_name: "laptop".into(),
                folder: FolderName::new("docs").unwrap(),
                since_seq: 12,
                epoch: 99,
            }),
        ),
        (
            "push",
            ClientMsg::Push {
                id: 1,
                changes: vec![
                    Change {
                        entry: entry("dir/file.txt", EntryKind::File),
                        base_seq: 6,
                        data: None,
                    },
                    Change {
                        entry: entry("link", EntryKind::Symlink),
                        base_seq: 0,
                        data: None,
                    },
                ],
            },
        ),
        ("block-request", ClientMsg::BlockRequest { id: 2, request }),
        (
            "block-response",
            ClientMsg::BlockResponse {
                id: 2,
                result: Ok(b"hello".to_vec()),
            },
        ),
        (
            "block-refused",
            ClientMsg::BlockResponse {
                id: 3,
                result: Err(BlockError::Refused("no".into())),
            },
        ),
        ("ping", ClientMsg::Ping { nonce: 4 }),
        (
            "restore",
            ClientMsg::Restore {
                id: 5,
                path: RelPath::new("dir/file.txt").unwrap(),
                version: Some(3),
            },
        ),
    ]
}

fn server_messages() -> Vec<(&'static str, ServerMsg)> {
    vec![
        (
            "welcome",
            ServerMsg::Welcome(Welcome {
                server: DeviceId::new("srv").unwrap(),
                epoch: 99,
                current_seq: 20,
                read_only: true,
            }),
        ),
        (
            "index",
            ServerMsg::Index {
                inline: Vec::new(),
                entries: vec![
                    entry("dir/file.txt", EntryKind::File),
                    entry("dir", EntryKind::Dir),
                ],
                up_to: 20,
                as_of: 20,
                caught_up: true,
            },
        ),
        (
            "push-result",
            ServerMsg::PushResult {
                id: 1,
                outcomes: vec![
                    PushOutcome::Accepted { seq: 21 },
                    PushOutcome::Conflict { current_seq: 9 },
                ],
            },
        ),
    ]
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Every seed: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, msg) in client_messages() {
        let payload = encode_payload(&msg).unwrap();
        // The first byte of a frame seed is the size of the pieces it is fed in.
        let mut framed = vec![3u8];
        framed.extend(frame(&payload));
        out.push(("frame_decode", format!("client-{name}"), framed));
        out.push(("wire_decode", format!("client-{name}"), payload));
    }
    for (name, msg) in server_messages() {
        out.push((
            "wire_decode",
            format!("server-{name}"),
            encode_payload(&msg).unwrap(),
        ));
    }
    let mut session = vec![255u8];
    session.extend(frame(&encode_payload(&Handshake::current()).unwrap()));
    for (_, msg) in client_messages() {
        session.extend(frame(&encode_payload(&msg).unwrap()));
    }
    out.push(("frame_decode", "session".into(), session));
    let requests = [
        ("status", Request::Status { folder: None }),
        (
            "add",
            Request::Add(AddFolder {
                path: "/home/u/docs".into(),
                server: "127.0.0.1:7101".into(),
                name: Some("docs".into()),
                token: None,
                mode: None,
                account: None,
            }),
        ),
        (
            "resolve",
            Request::Resolve {
                folder: "docs".into(),
                pattern: "*.txt".into(),
                keep: Keep::Local,
            },
        ),
        ("reload", Request::Reload),
    ];
    for (name, request) in requests {
        out.push((
            "control_decode",
            format!("request-{name}"),
            control::encode(&request),
        ));
    }
    out.push((
        "control_decode",
        "response-ok".into(),
        control::encode(&Response::Ok {
            message: "done".into(),
        }),
    ));
    for (i, path) in [
        "a",
        "dir/file.txt",
        "../x",
        "a/./b",
        "C:x",
        "\\\\server\\share",
        "日本/ファイル",
        ".filesync-tmp-1",
    ]
    .iter()
    .enumerate()
    {
        out.push(("relpath", format!("path-{i}"), path.as_bytes().to_vec()));
    }
    out
}

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn committed_fuzz_seeds_are_current() {
    let write = std::env::var_os("FILESYNC_WRITE_FUZZ_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds() {
        let path = seed_dir().join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(format!("{target}/{name}"));
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds missing or out of date: {stale:?}; write them anew with \
         FILESYNC_WRITE_FUZZ_SEEDS=1 cargo test -p filesync-proto --test fuzz_seeds"
    );
}
