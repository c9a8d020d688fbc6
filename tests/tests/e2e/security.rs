//! TLS, pinning, enrolment, credentials and account isolation (brief §2 item 9,
//! test-matrix section d): invite tokens enrol exactly once and expire, a server without
//! a `registration` key refuses tokenless devices, open registration shares one
//! account, accounts never see each other's folders, revoking cuts a live session,
//! a changed server certificate is refused until trusted again, plain TCP is closed,
//! and secrets stay in 0600 files and out of the logs.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::node::describe;
use filesync_tests::{Cluster, Node, SYNC_TIMEOUT, files, poll_until};
use serde_json::Value;

const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// The device-to-server protocol version, as its one postcard byte.
const PROTOCOL_VERSION: u8 = 5;

/// `add` of client `i`'s `folder` with `token`; must succeed.
fn enrol(cl: &Cluster, i: usize, folder: &str, token: &str) {
    cl.client(i)
        .ctl_ok(cl.add_args_with_token(i, folder, token));
}

/// `add` of client `i`'s `folder` (with `token` if any) must fail with exit 1, say
/// `expected`, and leave the client's config file byte for byte as it was.
fn refused_add(cl: &Cluster, i: usize, token: Option<&str>, expected: &str) {
    let node = cl.client(i);
    let before = fs::read(node.config_path()).unwrap();
    let args = match token {
        Some(t) => cl.add_args_with_token(i, DOCS, t),
        None => cl.add_args(i, DOCS),
    };
    let out = node.ctl(args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(expected), "want {expected:?} in: {stderr}");
    assert_eq!(
        fs::read(node.config_path()).unwrap(),
        before,
        "a failed add changed the config"
    );
    assert!(node.folder_names().is_empty());
}

/// This device's entry for `server` in `status --json`'s `servers`.
fn trust_entry(node: &Node, server: &str) -> Value {
    let status = node.status_json();
    status["servers"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["server"] == server))
        .cloned()
        .unwrap_or_else(|| panic!("{}: no servers entry for {server}: {status}", node.name()))
}

fn server_fingerprint(server: &Node) -> String {
    let status = server.status_json();
    status["server"]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("server status has no fingerprint: {status}"))
        .to_owned()
}

fn assert_private(path: &Path) {
    let mode = files::mode(path);
    assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
}

/// The credential secret client `node` keeps for `server` (its only one there), hex.
fn stored_secret(node: &Node, server: &str) -> String {
    let db = rusqlite::Connection::open(node.state_dir().join("servers.db")).unwrap();
    let secret: Vec<u8> = db
        .query_row(
            "SELECT secret FROM credentials WHERE server = ?1",
            [server],
            |r| r.get(0),
        )
        .unwrap();
    hex::encode(secret)
}

/// Polls `folder`'s status on `node` until `check` accepts it.
fn wait_for_folder(node: &Node, folder: &str, what: &str, check: impl Fn(&Value) -> bool) {
    poll_until(STATUS_TIMEOUT, || {
        let status = node.folder_status(folder);
        if check(&status) {
            Ok(())
        } else {
            Err(format!("{}: {what}: {status}", node.name()))
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
}

fn last_error(status: &Value) -> String {
    status["last_error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn invite_token_enrols_a_device_that_then_adds_folders_without_one() {
    let cl = Cluster::without_folders(2, None);
    let addr = cl.server().server_addr();
    let token_a = cl.server().server_invite("alice", None);
    let token_b = cl.server().server_invite("alice", None);
    assert!(token_a.starts_with("fs1-"), "{token_a}");
    enrol(&cl, 0, DOCS, &token_a);
    enrol(&cl, 1, DOCS, &token_b);
    files::write(&cl.path_on(0, DOCS, "hello.txt"), b"hello alice\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "hello.txt", b"hello alice\n");
    assert!(cl.server().data_dir().join("alice").join(DOCS).is_dir());

    // The device is enrolled: another folder of the same server needs no token.
    cl.folder_dir(0, "notes");
    cl.client(0).ctl_ok(cl.add_args(0, "notes"));
    files::write(&cl.path_on(0, "notes", "n.txt"), b"note\n");
    cl.client(0).assert_in_sync("notes", SYNC_TIMEOUT);
    files::assert_file(&cl.server().data_dir().join("alice/notes/n.txt"), b"note\n");

    let trust = trust_entry(cl.a(), &addr);
    assert_eq!(trust["account"], "alice");
    assert_eq!(trust["pinned_by"], "token");
    assert_eq!(trust["fingerprint"], server_fingerprint(cl.server()));
    let status_text = cl.a().status_json().to_string();

    // Keys, credentials and the account store are private, and no secret is logged.
    let meta = cl.server().data_dir().join(".filesync");
    assert_private(&meta.join("tls/key.der"));
    assert_private(&meta.join("accounts.db"));
    assert_private(&cl.a().state_dir().join("servers.db"));
    let secret = stored_secret(cl.a(), &addr);
    assert!(
        !status_text.contains(&secret),
        "the credential is in status"
    );
    for node in [cl.server(), cl.a(), cl.b()] {
        let log = node.log_text();
        for (what, needle) in [
            ("token", &token_a),
            ("token", &token_b),
            ("secret", &secret),
        ] {
            assert!(
                !log.contains(needle.as_str()),
                "{}'s log holds a {what}",
                node.name()
            );
        }
    }
}

#[test]
fn used_expired_and_malformed_tokens_are_refused() {
    let cl = Cluster::without_folders(3, None);
    let token = cl.server().server_invite("alice", None);
    enrol(&cl, 0, DOCS, &token);
    refused_add(&cl, 1, Some(&token), "already used");

    let expired = cl.server().server_invite("alice", Some("0s"));
    refused_add(&cl, 1, Some(&expired), "expired");

    // Refused by filesyncctl itself, before the daemon or the config is touched. (A
    // 1 MiB token cannot be an argument on Linux, whose limit is 128 KiB per argument;
    // proto's unit tests refuse one.)
    let fresh = cl.server().server_invite("alice", None);
    let huge = format!("fs1-{}", "A".repeat(120 * 1024));
    for (bad, why) in [
        (&fresh[..fresh.len() - 6], "damaged or cut short"),
        ("not-a-token", "not a filesync invite token"),
        (huge.as_str(), "more than any token"),
    ] {
        refused_add(&cl, 2, Some(bad), why);
    }
    // The untouched token still works.
    enrol(&cl, 2, DOCS, &fresh);
}

#[test]
fn two_devices_redeeming_one_token_at_once_enrol_exactly_one() {
    let cl = Cluster::without_folders(2, None);
    let token = cl.server().server_invite("alice", None);
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (cl, token) = (&cl, &token);
                s.spawn(move || cl.client(i).ctl(cl.add_args_with_token(i, DOCS, token)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        ok,
        1,
        "{}",
        outputs.iter().map(describe).collect::<Vec<_>>().join("\n")
    );
    let loser = outputs.iter().find(|o| !o.status.success()).unwrap();
    assert!(String::from_utf8_lossy(&loser.stderr).contains("already used"));
    assert_eq!(cl.server().server_devices().len(), 1);
}

#[test]
fn a_server_without_a_registration_key_refuses_tokenless_devices() {
    let cl = Cluster::without_folders(1, None);
    assert_eq!(
        cl.server().status_json()["server"]["registration"],
        "invite"
    );
    refused_add(
        &cl,
        0,
        None,
        "this server needs an invite token: ask its admin to run `filesyncctl server invite ACCOUNT`",
    );
    assert!(cl.server().server_devices().is_empty());
    // An account exists from its first invite, before any device joins it.
    cl.server().server_invite("carol", None);
    let accounts = cl.server().server_accounts();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["account"], "carol");
    assert_eq!(accounts[0]["devices"], serde_json::json!([]));
}

#[test]
fn open_registration_puts_tokenless_devices_in_the_open_account() {
    let cl = Cluster::new(2);
    let addr = cl.server().server_addr();
    files::write(&cl.path_on(1, DOCS, "shared.txt"), b"open\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "shared.txt", b"open\n");
    assert!(cl.server().data_dir().join("open").join(DOCS).is_dir());
    for node in [cl.a(), cl.b()] {
        let trust = trust_entry(node, &addr);
        assert_eq!(trust["account"], "open");
        assert_eq!(trust["pinned_by"], "first-use");
        assert!(trust["device"].is_string());
        let log = node.log_text();
        assert!(log.contains("trusting the server's certificate on first use"));
    }
    let devices = cl.server().server_devices();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().all(|d| d["account"] == "open"));
}

#[test]
fn device_invite_enrols_another_device_into_the_same_account() {
    let cl = Cluster::without_folders(2, None);
    let addr = cl.server().server_addr();
    enrol(&cl, 0, DOCS, &cl.server().server_invite("alice", None));
    let token = cl.a().ctl_ok(["device", "invite", "--server", &addr]);
    enrol(&cl, 1, DOCS, token.trim());
    files::write(&cl.path_on(0, DOCS, "from-a.txt"), b"a\n");
    files::write(&cl.path_on(1, DOCS, "from-b.txt"), b"b\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "from-a.txt", b"a\n");
    cl.assert_file_everywhere(DOCS, "from-b.txt", b"b\n");
    let devices = cl.server().server_devices();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert!(devices.iter().all(|d| d["account"] == "alice"));
    assert_eq!(trust_entry(cl.b(), &addr)["account"], "alice");
}

#[test]
fn accounts_with_the_same_folder_name_never_see_each_other() {
    let cl = Cluster::without_folders(2, None);
    enrol(&cl, 0, DOCS, &cl.server().server_invite("alice", None));
    enrol(&cl, 1, DOCS, &cl.server().server_invite("bob", None));
    files::write(&cl.path_on(0, DOCS, "alice.txt"), b"only alice\n");
    files::write(&cl.path_on(1, DOCS, "bob.txt"), b"only bob\n");
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    cl.b().assert_in_sync(DOCS, SYNC_TIMEOUT);
    // Both are in sync with the server: whatever the other account had would be here.
    let data = cl.server().data_dir();
    assert_eq!(
        files::list_dir(&data.join("alice").join(DOCS)),
        ["alice.txt"]
    );
    assert_eq!(files::list_dir(&data.join("bob").join(DOCS)), ["bob.txt"]);
    files::assert_absent(&cl.path_on(0, DOCS, "bob.txt"));
    files::assert_absent(&cl.path_on(1, DOCS, "alice.txt"));
    let accounts = cl.server().server_accounts();
    let names: Vec<_> = accounts.iter().map(|a| a["account"].clone()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(
        accounts
            .iter()
            .all(|a| a["devices"].as_array().unwrap().len() == 1),
        "{accounts:?}"
    );
}

#[test]
fn revoking_a_device_closes_its_session_and_refuses_it_from_then_on() {
    let cl = Cluster::without_folders(2, None);
    enrol(&cl, 0, DOCS, &cl.server().server_invite("alice", None));
    enrol(&cl, 1, DOCS, &cl.server().server_invite("alice", None));
    cl.settle(DOCS);
    let device = trust_entry(cl.a(), &cl.server().server_addr())["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = cl.server().server_devices();
    let entry = listed
        .iter()
        .find(|d| d["device"] == device.as_str())
        .unwrap();
    assert!(entry["connections"].as_u64().unwrap() >= 1, "{entry}");
    assert!(entry["last_seen"].is_i64(), "{entry}");

    cl.server().ctl_ok(["server", "revoke", &device]);
    wait_for_folder(cl.a(), DOCS, "still connected after revoke", |f| {
        f["connected"] == false && last_error(f).contains("revoked")
    });
    let listed = cl.server().server_devices();
    let entry = listed
        .iter()
        .find(|d| d["device"] == device.as_str())
        .unwrap();
    assert_eq!(entry["revoked"], true);

    // A change made now stays on the revoked device; the other device still syncs.
    files::write(&cl.path_on(0, DOCS, "after.txt"), b"kept here\n");
    wait_for_folder(cl.a(), DOCS, "the new file is not pending", |f| {
        f["pending_up_files"].as_u64() >= Some(1)
    });
    files::write(&cl.path_on(1, DOCS, "b.txt"), b"b\n");
    cl.b().assert_in_sync(DOCS, SYNC_TIMEOUT);
    files::assert_file(&cl.server_path(DOCS, "b.txt"), b"b\n");
    files::assert_absent(&cl.server_path(DOCS, "after.txt"));
    let status = cl.a().folder_status(DOCS);
    assert!(last_error(&status).contains("revoked"), "{status}");
}

#[test]
fn a_changed_server_certificate_is_refused_until_trusted_again() {
    let cl = Cluster::without_folders(1, None);
    let addr = cl.server().server_addr();
    enrol(&cl, 0, DOCS, &cl.server().server_invite("alice", None));
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
    let old = server_fingerprint(cl.server());

    // A new key and certificate, made by the server at its next start.
    cl.server().stop();
    fs::remove_dir_all(cl.server().data_dir().join(".filesync/tls")).unwrap();
    cl.server().start();
    let new = server_fingerprint(cl.server());
    assert_ne!(old, new);
    wait_for_folder(cl.a(), DOCS, "no identity error", |f| {
        last_error(f).contains("server identity changed")
    });
    let error = last_error(&cl.a().folder_status(DOCS));
    assert!(error.contains(&old) && error.contains(&new), "{error}");
    assert!(error.contains("filesyncctl trust"), "{error}");

    files::write(&cl.path_on(0, DOCS, "held.txt"), b"not sent\n");
    wait_for_folder(cl.a(), DOCS, "the new file is not pending", |f| {
        f["pending_up_files"].as_u64() >= Some(1)
    });
    files::assert_absent(&cl.server_path(DOCS, "held.txt"));
    assert_eq!(trust_entry(cl.a(), &addr)["fingerprint"], old.as_str());
    // Adding another folder of that server fails the same way and records nothing.
    cl.folder_dir(0, "notes");
    let before = fs::read(cl.a().config_path()).unwrap();
    let out = cl.a().ctl(cl.add_args(0, "notes"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server identity changed"));
    assert_eq!(fs::read(cl.a().config_path()).unwrap(), before);

    // Re-trusting deliberately: the same credential works again and the file goes up.
    cl.a().ctl_ok(["trust", &addr, &new]);
    cl.a().assert_in_sync(DOCS, SYNC_TIMEOUT);
    files::assert_file(&cl.server_path(DOCS, "held.txt"), b"not sent\n");
    assert_eq!(trust_entry(cl.a(), &addr)["pinned_by"], "manual");
}

#[test]
fn a_plain_tcp_client_is_closed_without_an_answer() {
    let cl = Cluster::new(1);
    let mut tcp = TcpStream::connect(cl.server().server_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The frozen handshake, framed as on the wire (u32 length, then postcard), no TLS.
    let mut frame = vec![0, 0, 0, 5];
    frame.extend_from_slice(b"FSYN");
    frame.push(PROTOCOL_VERSION);
    tcp.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    match tcp.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
    assert!(
        !answer.windows(4).any(|w| w == b"FSYN"),
        "the server answered the handshake without TLS: {answer:?}"
    );
    // The server still serves devices that speak TLS.
    files::write(&cl.path_on(0, DOCS, "still.txt"), b"fine\n");
    cl.settle(DOCS);
}

#[test]
fn a_token_only_works_against_the_server_that_made_it() {
    let cl = Cluster::without_folders(1, None);
    let other = Node::server(cl.root(), "other");
    other.start();
    let token = cl.server().server_invite("alice", None);
    let node = cl.a();
    let before = fs::read(node.config_path()).unwrap();
    let mut args = cl.add_args_with_token(0, DOCS, &token);
    let server_at = args.iter().position(|a| a == "--server").unwrap() + 1;
    args[server_at] = other.server_addr().into();
    let out = node.ctl(args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server identity changed"), "{stderr}");
    assert_eq!(fs::read(node.config_path()).unwrap(), before);
    // Nothing was sent: the other server enrolled nobody, though it is open.
    assert!(other.server_devices().is_empty());
    // The token was not spent either: it still enrols at its own server.
    enrol(&cl, 0, DOCS, &token);
}
