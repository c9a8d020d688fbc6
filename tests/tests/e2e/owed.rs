//! A server gets from a device only what the device offered it (the class of rsync
//! CVE-2024-12086): a fake server in the test code asks a real client for blocks it was
//! never offered. Each such request is refused, the client closes the connection and
//! logs why, naming the folder and the path, and the content never crosses the wire.

use std::net::TcpListener;
use std::thread;

use filesync_proto::RelPath;
use filesync_proto::wire::{BlockRequest, ServerMsg};
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::hostile::{self, ServerEnd, sha256, wait_for_log_line};

use super::hostile::{FakeServer, LOG_WAIT, add_evil};

/// A request for `len` bytes of `path` at `offset` holding `content`'s bytes there.
fn request(path: &str, content: &[u8], offset: usize, len: usize) -> BlockRequest {
    let bytes = &content[offset..offset + len];
    BlockRequest {
        path: RelPath::new(path).unwrap(),
        offset: offset as u64,
        size: len as u32,
        hash: sha256(bytes),
    }
}

/// Tells the client that the server has nothing, so it pushes what it has.
fn welcome_empty(conn: &mut ServerEnd) -> Result<(), String> {
    conn.send(ServerMsg::Index {
        inline: Vec::new(),
        entries: Vec::new(),
        up_to: 0,
        as_of: 0,
        caught_up: true,
    })
}

/// Asks for `request` as a block the client must refuse (no content, at most a
/// refusal), and waits until it closes the connection.
fn refused(mut conn: ServerEnd, request: BlockRequest) -> Result<(), String> {
    let what = format!("{} at {}+{}", request.path, request.offset, request.size);
    let answer = conn.ask_block(900, request)?;
    if let Some(Ok(data)) = &answer {
        return Err(format!(
            "the client sent {what}: {} bytes it never offered",
            data.len()
        ));
    }
    conn.into_raw()
        .wait_closed(LOG_WAIT)
        .map_err(|e| format!("after asking for {what} ({answer:?}): {e}"))?;
    Ok(())
}

/// The fake server asks a two-way client for the block of a file it pushed (served),
/// then for an ignored file's content, then (after the client reconnects) for one byte
/// of the pushed file under a hash the push never listed; and it asks a receive-only
/// client for a local file. Every one but the first is refused, closes the connection
/// and is logged; the client keeps running.
#[test]
fn a_device_serves_only_blocks_it_offered() {
    // `scratch` first: locals drop in reverse, so the daemon goes before its directory.
    let FakeServer {
        scratch: _scratch,
        client,
        folder,
        listener,
        addr,
    } = FakeServer::new();
    let plain = pseudo_random(5, 3000);
    let secret = b"the key that never leaves this device\n".to_vec();
    files::write(&folder.join(".filesyncignore"), b"secret.txt\n");
    files::write(&folder.join("plain.txt"), &plain);
    files::write(&folder.join("secret.txt"), &secret);

    let identity = hostile::FakeIdentity::new().unwrap();
    let two_way = {
        let plain = plain.clone();
        thread::spawn(move || -> Result<(), String> {
            let mut conn =
                hostile::accept_device_as(&identity, &listener, "evil-server", 0, "fake")?;
            welcome_empty(&mut conn.0)?;
            let (_, changes) = conn.0.next_push()?;
            let pushed = (changes.iter())
                .find(|c| c.entry.path.as_str() == "plain.txt")
                .ok_or_else(|| format!("plain.txt is not in the first push: {changes:?}"))?;
            let block = &pushed.entry.blocks[0];
            let offered = BlockRequest {
                path: pushed.entry.path.clone(),
                offset: 0,
                size: block.size,
                hash: block.hash,
            };
            match conn.0.ask_block(1, offered)? {
                Some(Ok(data)) if data == plain[..block.size as usize] => {}
                other => return Err(format!("an offered block was not served: {other:?}")),
            }
            refused(conn.0, request("secret.txt", &secret, 0, secret.len()))?;
            let mut again =
                hostile::accept_device_as(&identity, &listener, "evil-server", 0, "fake")?;
            welcome_empty(&mut again.0)?;
            again.0.next_push()?;
            refused(again.0, request("plain.txt", &plain, 10, 1))
        })
    };
    add_evil(&client, &folder, &addr);
    two_way.join().expect("fake server thread").unwrap();
    for path in ["secret.txt", "plain.txt"] {
        wait_for_log_line(
            || client.log_text(),
            &["refused the server's request for a block", "evil", path],
            LOG_WAIT,
        )
        .unwrap_or_else(|why| panic!("the client did not log refusing {path}: {why}"));
    }

    let receive_only = client.folder_dir("ro");
    let local = b"a local change of a receive-only folder\n".to_vec();
    files::write(&receive_only.join("local.txt"), &local);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ro_addr = listener.local_addr().unwrap().to_string();
    let fake = {
        let local = local.clone();
        thread::spawn(move || -> Result<(), String> {
            let (mut conn, _) = hostile::accept_device(&listener, "evil-server", 0)?;
            welcome_empty(&mut conn)?;
            refused(conn, request("local.txt", &local, 0, local.len()))
        })
    };
    client.ctl_ok([
        "add".as_ref(),
        receive_only.as_os_str(),
        "--server".as_ref(),
        ro_addr.as_ref(),
        "--name".as_ref(),
        "ro".as_ref(),
        "--mode".as_ref(),
        "receive-only".as_ref(),
    ]);
    fake.join().expect("fake server thread").unwrap();
    wait_for_log_line(
        || client.log_text(),
        &[
            "refused the server's request for a block",
            "ro",
            "receive-only",
        ],
        LOG_WAIT,
    )
    .unwrap();
    client.check_running().unwrap();
}
